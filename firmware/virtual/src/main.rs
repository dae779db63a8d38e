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
