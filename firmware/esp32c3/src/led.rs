//! The status LED: blinks (100 ms on, 100 ms off) while the MQTT session is up, as the
//! original sketch's `loop()` does once connected, and stays off otherwise.

use core::sync::atomic::{AtomicBool, Ordering};

use embassy_time::{Duration, Timer};
use esp_hal::gpio::{Level, Output};

static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Half the blink period.
pub const BLINK: Duration = Duration::from_millis(100);

/// Tell the LED whether the session is connected.
pub fn set_connected(up: bool) {
    CONNECTED.store(up, Ordering::Relaxed);
}

/// Blink forever. `off` is the pin level that turns the LED off.
#[embassy_executor::task]
pub async fn blink(mut pin: Output<'static>, off: Level) {
    loop {
        if CONNECTED.load(Ordering::Relaxed) {
            pin.toggle();
        } else {
            pin.set_level(off);
        }
        Timer::after(BLINK).await;
    }
}
