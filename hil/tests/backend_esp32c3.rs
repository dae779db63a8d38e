//! The ESP32-C3 backend against a pseudo-terminal with no chip behind it: flashing fails
//! within a bounded time with a message that names the port and says no chip answered.
//! (Flashing a real board needs the bench; the flash plan, partition table and port
//! matching are unit-tested in `hil::backend`.)

use std::path::Path;
use std::time::{Duration, Instant};

use hil::backend::Backend;
use hil::backend::esp32c3::{DEFAULT_PARTITIONS, Esp32c3Backend};
use hil::serial::SerialCapture;

/// espflash tries 7 resets with 5 syncs of 100 ms each; far below this.
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn flashing_a_pseudo_terminal_with_no_chip_fails_in_time_naming_the_port() {
    // The rig's end of the pair stays open, as a board's USB port would, but nothing
    // answers the ROM bootloader's sync.
    let pty = SerialCapture::pseudo_terminal().expect("pseudo-terminal");
    let port = pty.device_path().expect("device path").to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("firmware.elf");
    // The header of a 32-bit little-endian RISC-V ELF (what the board runs), the rest
    // zeros: enough to get past the checks and on to the board.
    let mut elf = b"\x7fELF\x01\x01".to_vec();
    elf.resize(64, 0);
    elf[18..20].copy_from_slice(&243u16.to_le_bytes());
    std::fs::write(&firmware, elf).unwrap();
    let image = dir.path().join("flash.img");
    std::fs::write(&image, vec![0xff; 4096]).unwrap();
    let partitions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_PARTITIONS);

    let backend = Esp32c3Backend::new(Some(port.clone()), Some(firmware), &partitions)
        .expect("an explicit port and a firmware file are enough to set up");
    let started = Instant::now();
    // Before the first scenario (the app alone), then a scenario's start (app and image).
    let Err(why) = backend.prepare() else {
        panic!("flashing the app onto a pseudo-terminal succeeded");
    };
    let why = why.to_string();
    assert!(why.contains("no chip answered"), "{why}");
    let Err(why) = backend.start(&image) else {
        panic!("flashing a pseudo-terminal succeeded");
    };
    let why = why.to_string();
    let took = started.elapsed();
    assert!(took < LIMIT, "took {took:?} to give up (limit {LIMIT:?})");
    assert!(
        why.contains(&port.display().to_string()) && why.contains("no chip answered"),
        "{why}"
    );
    println!("gave up after {took:?}: {why}");
}

#[test]
fn a_firmware_that_is_not_an_elf_is_refused_before_touching_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("firmware.bin");
    std::fs::write(&firmware, [0xe9, 0, 0, 0]).unwrap();
    let partitions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_PARTITIONS);
    let Err(why) = Esp32c3Backend::new(
        Some("/dev/does-not-matter".into()),
        Some(firmware.clone()),
        &partitions,
    ) else {
        panic!("a non-ELF firmware was accepted");
    };
    let why = why.to_string();
    assert!(
        why.contains(&firmware.display().to_string()) && why.contains("not an ELF"),
        "{why}"
    );
}

#[tokio::test]
async fn no_flash_reads_the_board_as_it_runs_on_a_pseudo_terminal() {
    use serialport::SerialPort;
    use std::io::Write;
    // The rig reads the slave end, as it would the board's USB-Serial-JTAG.
    let (mut board, slave) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
    let port = std::path::PathBuf::from(slave.name().expect("slave name"));
    let backend = hil::backend::monitor::MonitorBackend::esp32c3(port).expect("port exists");
    // Nothing is flashed and no reset is possible: the image is the one on the board.
    let mut device = backend
        .start(Path::new("the-image-on-the-board.img"))
        .expect("a pseudo-terminal is accepted");
    board
        .write_all(b"I (     812) boot: firmware=0.1.0 board=esp32c3 client_id=ESPthing\r\n")
        .unwrap();
    let (line, ()) = device
        .serial()
        .until(Duration::from_secs(10), |l| l.line().map(|_| ()))
        .await
        .expect("the board's log line");
    assert_eq!(line.line().unwrap().field("board"), Some("esp32c3"));
}
