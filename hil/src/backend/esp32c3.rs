//! The ESP32-C3 backend: flashes the Rust firmware with the espflash library and reads
//! the board's USB-Serial-JTAG port.
//!
//! The first start writes the bootloader, the partition table, the application and the
//! scenario's flash image (into the `storage` data partition); later starts write only
//! the image. Every write ends with a hard reset, and the capture reads the very port
//! espflash used, so no boot line is lost.
//!
//! Where things go is read from the firmware's partition table (`partitions.csv`), the
//! one definition the firmware build uses too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use esp_idf_part::PartitionTable;
use espflash::connection::{Connection, ResetAfterOperation, ResetBeforeOperation};
use espflash::flasher::{FlashData, FlashSettings, Flasher};
use espflash::image_format::Segment;
use espflash::image_format::idf::IdfBootloaderFormat;
use espflash::target::{Chip, XtalFrequency};
use serialport::UsbPortInfo;

use super::flashing::ProgressBars;
use super::ports::{self, ESPRESSIF_USB_SERIAL_JTAG};
use super::{Backend, BoardDevice, Device};
use crate::error::BackendError;
use crate::serial::SerialCapture;

/// The board's name as `--board` spells it.
const BOARD: &str = "esp32c3";
pub const CHIP: Chip = Chip::Esp32c3;
/// `--firmware` when absent: the release build of `firmware/esp32c3`.
pub const DEFAULT_FIRMWARE: &str =
    "firmware/esp32c3/target/riscv32imc-unknown-none-elf/release/firmware-esp32c3";
/// The firmware's partition table.
pub const DEFAULT_PARTITIONS: &str = "firmware/esp32c3/partitions.csv";
/// The partition the application goes into.
pub const APP_PARTITION: &str = "factory";
/// The data partition that holds the LittleFS flash image.
pub const DATA_PARTITION: &str = "storage";
/// Where the partition table goes (ESP-IDF's and espflash's default).
pub const PARTITION_TABLE_OFFSET: u32 = 0x8000;
/// The ROM bootloader talks at this rate until told otherwise (USB-Serial-JTAG ignores it).
const CONNECT_BAUD: u32 = 115_200;
/// How long one read of the ROM bootloader's answer may take.
const PORT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a region of flash holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Bootloader,
    PartitionTable,
    App,
    Data,
}

/// One region a start writes: where, and how much room there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub part: Part,
    pub offset: u32,
    pub room: u32,
}

/// The parts of the partition table the backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    pub source: PathBuf,
    /// The application partition: (offset, size).
    pub app: (u32, u32),
    /// The data partition: (offset, size).
    pub data: (u32, u32),
    /// The lowest partition offset: the partition table's room ends there.
    pub first_offset: u32,
}

impl PartitionLayout {
    pub fn read(path: &Path) -> Result<Self, BackendError> {
        let csv = fs::read_to_string(path).map_err(|e| BackendError::PartitionTable {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Self::parse(&csv, path)
    }

    /// Parse `csv` (read from `source`, named in errors).
    pub fn parse(csv: &str, source: &Path) -> Result<Self, BackendError> {
        let invalid = |problem: String| BackendError::PartitionTable {
            path: source.to_path_buf(),
            problem,
        };
        let table = PartitionTable::try_from_str(csv).map_err(|e| invalid(e.to_string()))?;
        let find = |name: &str| {
            table
                .find(name)
                .map(|p| (p.offset(), p.size()))
                .ok_or_else(|| {
                    invalid(format!(
                        "no `{name}` partition (has: {})",
                        table
                            .partitions()
                            .iter()
                            .map(|p| p.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        let first_offset = table
            .partitions()
            .iter()
            .map(|p| p.offset())
            .min()
            .unwrap_or(u32::MAX);
        Ok(Self {
            source: source.to_path_buf(),
            app: find(APP_PARTITION)?,
            data: find(DATA_PARTITION)?,
            first_offset,
        })
    }
}

/// The regions one flashing session writes, in order: bootloader, partition table and
/// application when `with_app`, then the flash image of `image_len` bytes if any.
pub fn flash_plan(
    layout: &PartitionLayout,
    image_len: Option<usize>,
    with_app: bool,
) -> Result<Vec<Region>, BackendError> {
    let (data_offset, data_size) = layout.data;
    if let Some(image_len) = image_len
        && image_len > data_size as usize
    {
        return Err(BackendError::board(
            BOARD,
            format!(
                "the flash image is {image_len} bytes, larger than the `{DATA_PARTITION}` \
             partition ({data_size} bytes at {data_offset:#x} in {}); build a smaller image \
             (certs image --size) or grow the partition",
                layout.source.display()
            ),
        ));
    }
    let mut plan = Vec::with_capacity(4);
    if with_app {
        let boot = CHIP.boot_address();
        plan.push(Region {
            part: Part::Bootloader,
            offset: boot,
            room: PARTITION_TABLE_OFFSET - boot,
        });
        plan.push(Region {
            part: Part::PartitionTable,
            offset: PARTITION_TABLE_OFFSET,
            room: layout.first_offset.saturating_sub(PARTITION_TABLE_OFFSET),
        });
        plan.push(Region {
            part: Part::App,
            offset: layout.app.0,
            room: layout.app.1,
        });
    }
    if image_len.is_some() {
        plan.push(Region {
            part: Part::Data,
            offset: data_offset,
            room: data_size,
        });
    }
    Ok(plan)
}

/// What a non-ESP32-C3 ELF header (its first 20 bytes) was built for; `None` for a
/// 32-bit little-endian RISC-V ELF. Checked before anything touches the board.
pub fn foreign_elf(header: &[u8; 20]) -> Option<String> {
    const EM_RISCV: u16 = 243;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    let class32 = header[4] == 1;
    let little = header[5] == 1;
    if machine == EM_RISCV && class32 && little {
        return None;
    }
    Some(match (machine, class32) {
        (EM_RISCV, false) => "64-bit RISC-V".into(),
        (62, _) => "x86-64".into(),
        (3, _) => "x86".into(),
        (40, _) => "ARM".into(),
        (183, _) => "AArch64".into(),
        (94, _) => "Xtensa (an ESP32/ESP8266 build)".into(),
        (m, _) => format!("machine {m}"),
    })
}

/// Check that the segments espflash made from the ELF land where the plan says, each
/// within its room.
fn check_segments(plan: &[Region], segments: &[Segment<'_>]) -> Result<(), BackendError> {
    for (region, segment) in plan.iter().zip(segments) {
        if segment.addr != region.offset || segment.size() > region.room {
            return Err(BackendError::board(
                BOARD,
                format!(
                    "espflash placed the {:?} ({} bytes) at {:#x}, the partition table says {:#x} \
                 with room for {} bytes",
                    region.part,
                    segment.size(),
                    segment.addr,
                    region.offset,
                    region.room
                ),
            ));
        }
    }
    Ok(())
}

/// Connect to the ROM bootloader of the ESP32-C3 on `port`: a clear error when nothing
/// answers.
pub fn connect(port: &Path, usb: &UsbPortInfo) -> Result<Flasher, BackendError> {
    let serial = serialport::new(port.to_string_lossy(), CONNECT_BAUD)
        .timeout(PORT_TIMEOUT)
        .open_native()
        .map_err(|e| BackendError::board(BOARD, format!("open {}: {e}", port.display())))?;
    let connection = Connection::new(
        serial,
        usb.clone(),
        ResetAfterOperation::HardReset,
        ResetBeforeOperation::DefaultReset,
        CONNECT_BAUD,
    );
    Flasher::connect(connection, true, true, true, Some(CHIP), None).map_err(|e| {
        BackendError::Port {
            board: BOARD,
            port: port.to_path_buf(),
            problem: format!(
                "no chip answered, could not connect to its ROM bootloader ({e}). Is an \
                 ESP32-C3 connected to this port, and no serial monitor holding it?"
            ),
        }
    })
}

/// The ESP32-C3 board on one serial port.
pub struct Esp32c3Backend {
    port: PathBuf,
    usb: UsbPortInfo,
    firmware: PathBuf,
    partitions: PathBuf,
    layout: PartitionLayout,
    /// Set once the application is on the board; held while a start flashes, so two
    /// starts never talk to the board at once.
    app_flashed: Mutex<bool>,
}

impl Esp32c3Backend {
    /// The board on `port` (found by USB id when absent), to run `firmware` (default
    /// [`DEFAULT_FIRMWARE`]) with the partition table at `partitions`.
    pub fn new(
        port: Option<PathBuf>,
        firmware: Option<PathBuf>,
        partitions: &Path,
    ) -> Result<Self, BackendError> {
        let (port, usb) = match port {
            Some(port) => {
                // A port the system does not list as USB (a pseudo-terminal, a remote
                // bridge) is driven like the board's own USB-Serial-JTAG.
                let usb = ports::usb_info(&port).unwrap_or(UsbPortInfo {
                    vid: ESPRESSIF_USB_SERIAL_JTAG.vid,
                    pid: ESPRESSIF_USB_SERIAL_JTAG.pid,
                    serial_number: None,
                    manufacturer: None,
                    product: None,
                });
                (port, usb)
            }
            None => ports::detect(&[ESPRESSIF_USB_SERIAL_JTAG], BOARD)?,
        };
        let firmware = firmware.unwrap_or_else(|| PathBuf::from(DEFAULT_FIRMWARE));
        // The ELF header up to e_machine: magic, class, and the machine it was built for.
        let mut head = Vec::with_capacity(20);
        fs::File::open(&firmware)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 20), &mut head))
            .map_err(|e| {
                BackendError::board(
                    BOARD,
                    format!(
                        "no firmware at {} ({e}); build it (cargo build --release in \
                         firmware/esp32c3) or pass --firmware ELF",
                        firmware.display()
                    ),
                )
            })?;
        // Short files are padded: the checks below then name what is missing.
        let mut magic = [0u8; 20];
        magic[..head.len()].copy_from_slice(&head);
        if magic[..4] != *b"\x7fELF" {
            return Err(BackendError::board(
                BOARD,
                format!(
                    "{} is not an ELF file; pass the firmware's ELF (espflash makes the app \
                     image from it)",
                    firmware.display()
                ),
            ));
        }
        if let Some(machine) = foreign_elf(&magic) {
            return Err(BackendError::board(
                BOARD,
                format!(
                    "{} is an ELF for {machine}, not a 32-bit RISC-V one; build the firmware \
                     with `make firmware` (or pass its ELF, {DEFAULT_FIRMWARE})",
                    firmware.display()
                ),
            ));
        }
        if !port.exists() {
            return Err(BackendError::board(
                BOARD,
                format!(
                    "no serial port {}; ports seen: {}",
                    port.display(),
                    ports::describe_available()
                ),
            ));
        }
        let layout = PartitionLayout::read(partitions)?;
        Ok(Self {
            port,
            usb,
            firmware,
            partitions: partitions.to_path_buf(),
            layout,
            app_flashed: Mutex::new(false),
        })
    }

    pub fn port(&self) -> &Path {
        &self.port
    }
}

impl Backend for Esp32c3Backend {
    fn board(&self) -> &'static str {
        "esp32c3"
    }

    fn single_device(&self) -> bool {
        true
    }

    fn prepare(&self) -> Result<(), BackendError> {
        let mut app_flashed = self.lock()?;
        if !*app_flashed {
            self.flash(&mut app_flashed, None)?;
        }
        Ok(())
    }

    fn start(&self, image: &Path) -> Result<Box<dyn Device>, BackendError> {
        let data = fs::read(image).map_err(|e| BackendError::file(image, e))?;
        let mut app_flashed = self.lock()?;
        let flasher = self.flash(&mut app_flashed, Some(&data))?;
        // Writing ends with a hard reset (the connection's `HardReset`), so the board is
        // already booting: what it prints waits in the port's buffer for the capture.
        let serial = SerialCapture::from_serial(
            Box::new(flasher.into_connection().into_serial()),
            self.port.display().to_string(),
            None,
        );
        Ok(Box::new(BoardDevice { serial }))
    }
}

impl Esp32c3Backend {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, bool>, BackendError> {
        self.app_flashed
            .lock()
            .map_err(|_| BackendError::board(BOARD, "an earlier start panicked while flashing"))
    }

    /// One flashing session: bootloader, partition table and application unless already
    /// on the board, then `data` into the storage partition. Ends with a hard reset;
    /// returns the flasher, whose port the capture goes on reading.
    fn flash(&self, app_flashed: &mut bool, data: Option<&[u8]>) -> Result<Flasher, BackendError> {
        let with_app = !*app_flashed;
        let plan = flash_plan(&self.layout, data.map(<[u8]>::len), with_app)?;
        // Connected first: without the board nothing else matters, and the error says so.
        let mut flasher = connect(&self.port, &self.usb)?;
        let elf = if with_app {
            fs::read(&self.firmware).map_err(|e| BackendError::file(&self.firmware, e))?
        } else {
            Vec::new()
        };
        let mut segments: Vec<Segment<'_>> = Vec::with_capacity(plan.len());
        if with_app {
            let flash_data = FlashData::new(
                FlashSettings::default(),
                0,
                None,
                CHIP,
                XtalFrequency::_40Mhz,
            );
            let format = IdfBootloaderFormat::new(
                &elf,
                &flash_data,
                Some(&self.partitions),
                None,
                Some(PARTITION_TABLE_OFFSET),
                Some(APP_PARTITION),
            )
            .map_err(|e| {
                BackendError::board(BOARD, format!("firmware {}: {e}", self.firmware.display()))
            })?;
            segments.extend(format.flash_segments());
        }
        if let Some(data) = data {
            segments.push(Segment::new(self.layout.data.0, data));
        }
        check_segments(&plan, &segments)?;

        eprintln!(
            "hil: esp32c3 on {}: flashing {}",
            self.port.display(),
            plan.iter()
                .zip(&segments)
                .map(|(r, s)| format!("{:?} {} B at {:#x}", r.part, s.size(), r.offset))
                .collect::<Vec<_>>()
                .join(", ")
        );
        flasher
            .write_bins_to_flash(&segments, &mut ProgressBars::default())
            .map_err(|e| BackendError::Port {
                board: BOARD,
                port: self.port.clone(),
                problem: format!("flashing failed: {e}"),
            })?;
        *app_flashed = true;
        Ok(flasher)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_32_bit_risc_v_elf_is_taken_as_firmware() {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 1; // 32-bit
        header[5] = 1; // little-endian
        header[18..20].copy_from_slice(&243u16.to_le_bytes());
        assert_eq!(foreign_elf(&header), None);
        header[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert_eq!(foreign_elf(&header).as_deref(), Some("x86-64"));
        header[18..20].copy_from_slice(&94u16.to_le_bytes());
        assert!(foreign_elf(&header).unwrap().contains("Xtensa"));
        header[18..20].copy_from_slice(&243u16.to_le_bytes());
        header[4] = 2;
        assert_eq!(foreign_elf(&header).as_deref(), Some("64-bit RISC-V"));
    }

    use super::*;

    const CSV: &str = "\
# Name,   Type, SubType,  Offset,   Size
nvs,      data, nvs,      0x9000,   0x6000
phy_init, data, phy,      0xf000,   0x1000
factory,  app,  factory,  0x10000,  0x180000
storage,  data, littlefs, 0x190000, 0x70000
";

    fn layout() -> PartitionLayout {
        PartitionLayout::parse(CSV, Path::new("partitions.csv")).unwrap()
    }

    #[test]
    fn the_partition_table_gives_the_app_and_data_partitions() {
        let layout = layout();
        assert_eq!(layout.app, (0x10000, 0x180000));
        assert_eq!(layout.data, (0x190000, 0x70000));
        assert_eq!(layout.first_offset, 0x9000);
    }

    #[test]
    fn the_firmware_partition_table_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_PARTITIONS);
        let layout = PartitionLayout::read(&path).unwrap();
        assert!(layout.data.1 as usize >= certs::image::DEFAULT_IMAGE_SIZE);
        // Typed as what it holds, so tools that list partitions do not call it SPIFFS.
        let csv = std::fs::read_to_string(&path).unwrap();
        let table = PartitionTable::try_from_str(&csv).unwrap();
        let storage = table.find(DATA_PARTITION).unwrap();
        assert_eq!(
            storage.subtype(),
            esp_idf_part::SubType::Data(esp_idf_part::DataType::Littlefs)
        );
    }

    #[test]
    fn a_table_without_the_data_partition_is_refused_by_name() {
        let csv = "factory, app, factory, 0x10000, 0x180000\n";
        let why = PartitionLayout::parse(csv, Path::new("p.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("p.csv")
                && why.contains("no `storage` partition")
                && why.contains("factory"),
            "{why}"
        );
        let why =
            PartitionLayout::parse("storage, data, nope, 0x9000, 0x1000\n", Path::new("p.csv"))
                .unwrap_err()
                .to_string();
        assert!(why.starts_with("partition table p.csv:"), "{why}");
    }

    #[test]
    fn the_app_is_written_once_then_each_start_writes_only_its_image() {
        let app = [
            Region {
                part: Part::Bootloader,
                offset: 0x0,
                room: 0x8000,
            },
            Region {
                part: Part::PartitionTable,
                offset: 0x8000,
                room: 0x1000,
            },
            Region {
                part: Part::App,
                offset: 0x10000,
                room: 0x180000,
            },
        ];
        let data = Region {
            part: Part::Data,
            offset: 0x190000,
            room: 0x70000,
        };
        // Before the first scenario: the app alone.
        assert_eq!(flash_plan(&layout(), None, true).unwrap(), app);
        // A start on a board that has no app yet: everything in one session.
        let everything = flash_plan(&layout(), Some(65536), true).unwrap();
        assert_eq!(everything[..3], app);
        assert_eq!(everything[3..], [data]);
        // Every later start: the image alone.
        assert_eq!(flash_plan(&layout(), Some(65536), false).unwrap(), [data]);
    }

    #[test]
    fn an_image_larger_than_the_data_partition_is_refused() {
        assert!(flash_plan(&layout(), Some(0x70000), false).is_ok());
        let why = flash_plan(&layout(), Some(0x70001), false)
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("458753 bytes")
                && why.contains("`storage` partition (458752 bytes at 0x190000 in partitions.csv)"),
            "{why}"
        );
    }

    #[test]
    fn segments_outside_their_region_are_refused() {
        let plan = flash_plan(&layout(), Some(4), false).unwrap();
        let data = [0u8; 4];
        assert!(check_segments(&plan, &[Segment::new(0x190000, &data)]).is_ok());
        let why = check_segments(&plan, &[Segment::new(0x180000, &data)])
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("0x180000") && why.contains("0x190000"),
            "{why}"
        );
    }
}
