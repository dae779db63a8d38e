//! Finding a board's serial port by its USB vendor and product id, when `--port` is not
//! given.

use std::path::{Path, PathBuf};

use serialport::{SerialPortInfo, SerialPortType, UsbPortInfo};

use crate::error::BackendError;

/// A USB serial device a board shows up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbId {
    pub vid: u16,
    pub pid: u16,
    pub name: &'static str,
}

impl std::fmt::Display for UsbId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x} {}", self.vid, self.pid, self.name)
    }
}

/// The ESP32-C3's built-in USB-Serial-JTAG.
pub const ESPRESSIF_USB_SERIAL_JTAG: UsbId = UsbId {
    vid: 0x303a,
    pid: 0x1001,
    name: "Espressif USB-Serial-JTAG",
};
/// The USB-UART bridges NodeMCU ESP8266 boards carry.
pub const CP210X: UsbId = UsbId {
    vid: 0x10c4,
    pid: 0xea60,
    name: "Silicon Labs CP210x",
};
pub const CH340: UsbId = UsbId {
    vid: 0x1a86,
    pid: 0x7523,
    name: "WCH CH340",
};

/// `/dev/ttyACM0 (USB 303a:1001 USB JTAG/serial debug unit)`, for listings.
pub fn describe(port: &SerialPortInfo) -> String {
    match &port.port_type {
        SerialPortType::UsbPort(usb) => format!(
            "{} (USB {:04x}:{:04x}{})",
            port.port_name,
            usb.vid,
            usb.pid,
            usb.product
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default()
        ),
        SerialPortType::PciPort => format!("{} (PCI)", port.port_name),
        SerialPortType::BluetoothPort => format!("{} (Bluetooth)", port.port_name),
        SerialPortType::Unknown => port.port_name.clone(),
    }
}

/// The one port in `ports` whose USB id is one of `ids`, with its USB details; otherwise
/// an error that lists what was seen and says what to do.
pub fn pick(
    ports: &[SerialPortInfo],
    ids: &[UsbId],
    board: &str,
) -> Result<(PathBuf, UsbPortInfo), BackendError> {
    let matching: Vec<(&SerialPortInfo, &UsbPortInfo)> = ports
        .iter()
        .filter_map(|port| match &port.port_type {
            SerialPortType::UsbPort(usb)
                if ids.iter().any(|id| id.vid == usb.vid && id.pid == usb.pid) =>
            {
                Some((port, usb))
            }
            _ => None,
        })
        .collect();
    let wanted = ids
        .iter()
        .map(UsbId::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    match matching.as_slice() {
        [(port, usb)] => Ok((PathBuf::from(&port.port_name), (*usb).clone())),
        [] => {
            let seen = if ports.is_empty() {
                "none".to_string()
            } else {
                ports.iter().map(describe).collect::<Vec<_>>().join(", ")
            };
            Err(BackendError::Ports(format!(
                "no {board} serial port found (looked for USB {wanted}); ports seen: {seen}. \
                 Connect the board, or pass --port DEV"
            )))
        }
        several => Err(BackendError::Ports(format!(
            "several {board} serial ports found (USB {wanted}): {}; pass --port DEV to choose one",
            several
                .iter()
                .map(|(port, _)| describe(port))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The system's serial ports, for an error message: `none`, or each described.
pub fn describe_available() -> String {
    match serialport::available_ports() {
        Ok(ports) if ports.is_empty() => "none".into(),
        Ok(ports) => ports.iter().map(describe).collect::<Vec<_>>().join(", "),
        Err(e) => format!("(cannot list them: {e})"),
    }
}

/// Find the board's port among the system's serial ports.
pub fn detect(ids: &[UsbId], board: &str) -> Result<(PathBuf, UsbPortInfo), BackendError> {
    let ports = serialport::available_ports()
        .map_err(|e| BackendError::Ports(format!("list the serial ports: {e}")))?;
    pick(&ports, ids, board)
}

/// The USB details of the port at `path`, if the system lists it as a USB port (an
/// explicit `--port`; a pseudo-terminal has none).
pub fn usb_info(path: &Path) -> Option<UsbPortInfo> {
    let ports = serialport::available_ports().ok()?;
    ports.into_iter().find_map(|port| match port.port_type {
        SerialPortType::UsbPort(usb) if Path::new(&port.port_name) == path => Some(usb),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb(name: &str, vid: u16, pid: u16, product: &str) -> SerialPortInfo {
        SerialPortInfo {
            port_name: name.into(),
            port_type: SerialPortType::UsbPort(UsbPortInfo {
                vid,
                pid,
                serial_number: None,
                manufacturer: None,
                product: Some(product.into()),
            }),
        }
    }

    fn uart(name: &str) -> SerialPortInfo {
        SerialPortInfo {
            port_name: name.into(),
            port_type: SerialPortType::PciPort,
        }
    }

    #[test]
    fn the_one_matching_port_is_picked_among_others() {
        let ports = [
            uart("/dev/ttyS0"),
            usb("/dev/ttyUSB0", 0x10c4, 0xea60, "CP2102 USB to UART"),
            usb("/dev/ttyACM0", 0x303a, 0x1001, "USB JTAG/serial debug unit"),
        ];
        let (path, info) = pick(&ports, &[ESPRESSIF_USB_SERIAL_JTAG], "esp32c3").unwrap();
        assert_eq!(path, Path::new("/dev/ttyACM0"));
        assert_eq!((info.vid, info.pid), (0x303a, 0x1001));
        let (path, _) = pick(&ports, &[CP210X, CH340], "esp8266").unwrap();
        assert_eq!(path, Path::new("/dev/ttyUSB0"));
    }

    #[test]
    fn no_match_lists_the_ports_seen_and_what_to_do() {
        let ports = [
            uart("/dev/ttyS0"),
            usb("/dev/ttyUSB0", 0x1a86, 0x7523, "USB Serial"),
        ];
        let why = pick(&ports, &[ESPRESSIF_USB_SERIAL_JTAG], "esp32c3")
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("no esp32c3 serial port found")
                && why.contains("303a:1001")
                && why.contains("/dev/ttyS0 (PCI)")
                && why.contains("/dev/ttyUSB0 (USB 1a86:7523 USB Serial)")
                && why.contains("--port"),
            "{why}"
        );
        let why = pick(&[], &[ESPRESSIF_USB_SERIAL_JTAG], "esp32c3")
            .unwrap_err()
            .to_string();
        assert!(why.contains("ports seen: none"), "{why}");
    }

    #[test]
    fn several_matches_are_listed_and_refused() {
        let ports = [
            usb("/dev/ttyACM0", 0x303a, 0x1001, "a"),
            usb("/dev/ttyACM1", 0x303a, 0x1001, "b"),
        ];
        let why = pick(&ports, &[ESPRESSIF_USB_SERIAL_JTAG], "esp32c3")
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("several esp32c3 serial ports")
                && why.contains("/dev/ttyACM0")
                && why.contains("/dev/ttyACM1")
                && why.contains("--port"),
            "{why}"
        );
    }

    #[test]
    fn a_matching_vendor_with_another_product_is_not_the_board() {
        // Espressif's vendor id with another product (e.g. an ESP32-S2's USB OTG).
        let ports = [usb("/dev/ttyACM0", 0x303a, 0x0002, "ESP32-S2")];
        assert!(pick(&ports, &[ESPRESSIF_USB_SERIAL_JTAG], "esp32c3").is_err());
    }
}
