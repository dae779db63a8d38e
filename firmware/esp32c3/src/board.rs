//! The chip's peripherals, set up once at boot.

use esp_hal::clock::CpuClock;
use esp_hal::gpio::{Level, Output};
use esp_hal::rng::{Trng, TrngSource};
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::{ControllerConfig, Interface, WifiController, WifiError};
use esp_storage::FlashStorage;

use crate::heap;
use crate::rsa::RsaAccelerator;
use crate::serial::Serial;

/// Board name in the boot line.
pub const BOARD: &str = "esp32c3";
/// Firmware version in the boot line.
pub const FIRMWARE: &str = env!("CARGO_PKG_VERSION");

/// Everything the driver uses, owned for the life of the program.
pub struct Board {
    pub flash: FlashStorage<'static>,
    /// The log port (USB-Serial-JTAG).
    pub serial: Serial,
    /// The WiFi controller, or why it could not start (logged, and the network phase
    /// then fails and retries like any other network failure).
    pub wifi: Result<(WifiController<'static>, Interface), WifiError>,
    /// The hardware RNG (SAR ADC noise, and the radio once WiFi runs): TLS randoms,
    /// backoff jitter, SNTP request stamps, TCP/DNS seeds.
    pub rng: Trng,
    /// The RSA accelerator, for an RSA device key's TLS signature.
    pub rsa: RsaAccelerator,
    /// The status LED and the level that turns it off, if a `led-*` feature names a pin.
    pub led: Option<(Output<'static>, Level)>,
    // Keeps the TRNG entropy source enabled.
    _entropy: TrngSource<'static>,
}

impl Board {
    /// Clocks, heap, the esp-rtos scheduler (embassy time driver, WiFi tasks), the log
    /// port, RNG, flash, WiFi, the RSA accelerator and the LED pin.
    pub fn init() -> Self {
        let p = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
        heap::init();
        let timg0 = TimerGroup::new(p.TIMG0);
        esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);
        let serial = Serial::new(p.USB_DEVICE);

        let entropy = TrngSource::new(p.RNG, p.ADC1);
        // Cannot fail: the entropy source above is enabled.
        let rng = Trng::try_new().expect("TRNG entropy source enabled");

        let wifi = WifiController::new(p.WIFI, ControllerConfig::default())
            .map(|controller| (controller, Interface::station()));

        #[cfg(feature = "led-gpio8")]
        // Active low on the common boards (SuperMini, ESP32-C3 Zero-style).
        let led = Some((
            Output::new(p.GPIO8, Level::High, Default::default()),
            Level::High,
        ));
        #[cfg(all(feature = "led-gpio2", not(feature = "led-gpio8")))]
        let led = Some((
            Output::new(p.GPIO2, Level::Low, Default::default()),
            Level::Low,
        ));
        #[cfg(not(any(feature = "led-gpio8", feature = "led-gpio2")))]
        let led = None;

        Self {
            flash: FlashStorage::new(p.FLASH),
            serial,
            wifi,
            rng,
            rsa: RsaAccelerator::new(p.RSA),
            led,
            _entropy: entropy,
        }
    }
}
