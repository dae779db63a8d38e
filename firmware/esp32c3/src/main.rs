//! The firmware image: boot the board and run the device forever.
#![no_std]
#![no_main]

use esp_backtrace as _;

// The application descriptor the ESP-IDF second-stage bootloader checks.
esp_bootloader_esp_idf::esp_app_desc!();

/// After a panic is printed: restart, so a device in the field recovers instead of hanging.
#[unsafe(no_mangle)]
extern "Rust" fn custom_halt() -> ! {
    esp_hal::system::software_reset()
}

#[esp_rtos::main]
async fn main(spawner: embassy_executor::Spawner) -> ! {
    let board = firmware_esp32c3::board::Board::init();
    firmware_esp32c3::driver::run(spawner, board).await
}
