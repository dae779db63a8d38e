use std::process::ExitCode;

use clap::Parser;
use virtual_device::cli::Args;
use virtual_device::device;
use virtual_device::heap::CountingAlloc;
use virtual_device::serial::Serial;

#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc::new();

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // A damaged image is the device's problem (logged and retried, as on the chip); no
    // image file at all is the user's: say which path and how to make one.
    if !args.flash.is_file() {
        eprintln!(
            "virtual-device: no flash image at {}: make one with `certs image` \
             (`make certs` writes the test PKI's to certs/dev/flash.img)",
            args.flash.display()
        );
        return ExitCode::from(2);
    }
    let serial = match Serial::open(&args.serial) {
        Ok(serial) => serial,
        Err(e) => {
            eprintln!("virtual-device: cannot open serial {:?}: {e}", args.serial);
            return ExitCode::FAILURE;
        }
    };
    device::run(&args, &serial, Some(&HEAP)).await;
    serial.close();
    ExitCode::SUCCESS
}
