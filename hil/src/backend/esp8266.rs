//! The ESP8266 (NodeMCU) backend: flashes a user-built Arduino sketch
//! (`firmware/esp8266-arduino`) and the flash image with esptool, and reads the sketch's
//! serial vocabulary as `firmware_core::log::Line`s.
//!
//! Rust cannot target the ESP8266, so this board runs the tutorial's reference sketch,
//! adapted to read the same LittleFS image, or (with `--no-flash`, see
//! [`super::monitor`]) the tutorial's original sketch as a user already has it. Their
//! lines (`Attempting MQTT connection...connected`, `Publish message: {...}`, `Message
//! arrived [inTopic] ...`) are translated into the lines the Rust firmware prints, so the
//! scenarios read one vocabulary; figures the sketch does not print (handshake time) are
//! left out, and lines the original never prints make the scenarios needing them skip
//! (`crate::vocabulary::Vocabulary`).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use firmware_core::config::DeviceConfig;
use firmware_core::log::{
    ConnectError, ConnectFailure, CredSource, DisconnectReason, FlashFile, Level, Line, LoadError,
    Stage, TimeError, TlsError,
};

use super::ports::{self, CH340, CP210X};
use super::{Backend, BoardDevice, Device};
use crate::error::BackendError;
use crate::serial::{SerialCapture, SerialLine, SerialText, Translate, Translation};

/// The board's name as `--board` spells it.
const BOARD: &str = "esp8266";

/// Where the LittleFS image goes: the NodeMCU 4 MB board with the "4MB (FS:2MB OTA:~1019KB)"
/// layout (Arduino ESP8266 core, boards.txt `nodemcuv2.menu.eesz.4M2M`, linker script
/// `eagle.flash.4m2m.ld`: `_FS_start = 0x40400000`, i.e. flash offset 0x200000,
/// `_FS_end = 0x405FA000`). The sketch's README prescribes this layout.
pub const LITTLEFS_OFFSET: u32 = 0x20_0000;
/// Room for the image in that layout (`_FS_end - _FS_start`).
pub const LITTLEFS_SIZE: u32 = 0x1F_A000;
/// Where the sketch's binary goes.
pub const FIRMWARE_OFFSET: u32 = 0x0;
/// esptool's baud rate while flashing (the CP210x and CH340 bridges manage it).
pub const FLASH_BAUD: u32 = 460_800;
/// The sketch's `Serial.begin`.
pub const LOG_BAUD: u32 = 115_200;
/// esptool writes ~2 MB at 460800 baud in under a minute; past this it has hung.
const FLASH_LIMIT: Duration = Duration::from_secs(180);
/// How long EN is held low to reset the board.
const RESET_PULSE: Duration = Duration::from_millis(100);
/// The publish topic when the sketch has not printed its config.
const DEFAULT_PUB_TOPIC: &str = "outTopic";

/// `python3 -m esptool ... write-flash [0x0 FIRMWARE] [0x200000 IMAGE]`, leaving the board
/// in the bootloader (the rig resets it once it listens, so no boot line is lost).
/// esptool 5's spellings (`write-flash`, `no-reset`; `make deps` pins esptool 5): the
/// underscore ones still work there but print a deprecation warning on every run.
pub fn esptool_command(
    python: &str,
    port: &Path,
    baud: u32,
    firmware: Option<&Path>,
    image: Option<&Path>,
) -> Command {
    let mut command = Command::new(python);
    command
        .args(["-m", "esptool", "--chip", "esp8266", "--port"])
        .arg(port)
        .args([
            "--baud",
            &baud.to_string(),
            "--after",
            "no-reset",
            "write-flash",
        ]);
    if let Some(firmware) = firmware {
        command.arg(format!("{FIRMWARE_OFFSET:#x}")).arg(firmware);
    }
    if let Some(image) = image {
        command.arg(format!("{LITTLEFS_OFFSET:#x}")).arg(image);
    }
    command
}

/// Run esptool, forwarding its output (its progress) to stderr, within [`FLASH_LIMIT`];
/// a failure says what went wrong in terms of the board.
pub fn run_esptool(mut command: Command, port: &Path) -> Result<(), BackendError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            BackendError::Esptool(format!(
                "esp8266: could not run {:?}: {e}; run `make deps`",
                command.get_program()
            ))
        })?;
    let (tx, lines) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let deadline = Instant::now() + FLASH_LIMIT;
    let mut output = Vec::new();
    let timed_out = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                eprintln!("  esptool: {line}");
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => break true,
        }
    };
    if timed_out {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| BackendError::Esptool(format!("esp8266: esptool: {e}")))?;
    for reader in readers {
        let _ = reader.join();
    }
    if timed_out {
        return Err(BackendError::Port {
            board: BOARD,
            port: port.to_path_buf(),
            problem: format!("esptool did not finish within {FLASH_LIMIT:?}"),
        });
    }
    if status.success() {
        return Ok(());
    }
    let text = output.join("\n");
    if text.contains("No module named") {
        return Err(BackendError::Esptool(
            "esp8266: esptool is not installed for python3; run `make deps` (it installs \
             esptool from PyPI)"
                .into(),
        ));
    }
    // esptool's own verdict, else its last words (stdout and stderr interleave).
    let last = output
        .iter()
        .find_map(|l| l.split_once("A fatal error occurred: ").map(|(_, why)| why))
        .or_else(|| {
            output
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(String::as_str)
        })
        .unwrap_or("no output");
    if text.contains("Failed to connect") || text.contains("No serial data received") {
        return Err(BackendError::Port {
            board: BOARD,
            port: port.to_path_buf(),
            problem: format!(
                "no chip answered, esptool could not connect ({last}). Is a NodeMCU \
                 connected to this port, and no serial monitor holding it?"
            ),
        });
    }
    Err(BackendError::Port {
        board: BOARD,
        port: port.to_path_buf(),
        problem: format!("esptool failed ({status}): {last}"),
    })
}

/// The NodeMCU's auto-reset circuit: RTS low pulls EN low while DTR (GPIO0) stays high,
/// so the board restarts into the flashed sketch.
fn reset_into_sketch(port: &mut dyn serialport::SerialPort) -> std::io::Result<()> {
    port.write_data_terminal_ready(false)?;
    port.write_request_to_send(true)?;
    // A pulse on a hardware line, not a wait for an event.
    std::thread::sleep(RESET_PULSE);
    port.write_request_to_send(false)?;
    Ok(())
}

/// Reset through the modem lines when the port has them. A port without them (a
/// pseudo-terminal, a bridge with only RX/TX wired) cannot reset the board: the board is
/// read as it runs, and a note says so.
pub fn reset_if_possible(
    port: &mut dyn serialport::SerialPort,
    name: &Path,
) -> std::io::Result<()> {
    match reset_into_sketch(port) {
        Err(e) if has_no_modem_lines(&e) => {
            eprintln!(
                "hil: {}: no modem lines ({e}), so the board was not reset; reading it as it runs",
                name.display()
            );
            Ok(())
        }
        other => other,
    }
}

/// ENOTTY from the RTS/DTR ioctl: the port has no modem lines. serialport passes the
/// errno on as its text only (nix's `Not a typewriter`, libc's `Inappropriate ioctl for
/// device`).
pub fn has_no_modem_lines(e: &std::io::Error) -> bool {
    let text = e.to_string();
    e.raw_os_error() == Some(25)
        || e.kind() == std::io::ErrorKind::Unsupported
        || text.contains("Not a typewriter")
        || text.contains("Inappropriate ioctl")
}

/// A NodeMCU ESP8266 on one serial port, running a user-built sketch.
pub struct Esp8266Backend {
    port: PathBuf,
    firmware: PathBuf,
    python: String,
    /// Set once the sketch is on the board; held while a start flashes.
    firmware_flashed: Mutex<bool>,
}

impl Esp8266Backend {
    /// The board on `port` (found by USB id when absent), to run the sketch binary
    /// `firmware` (required: it is built with arduino-cli, not here).
    pub fn new(port: Option<PathBuf>, firmware: Option<PathBuf>) -> Result<Self, BackendError> {
        let port = match port {
            Some(port) => port,
            None => ports::detect(&[CP210X, CH340], BOARD)?.0,
        };
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
        let firmware = firmware.ok_or(BackendError::board(
            BOARD,
            "pass --firmware BIN, the sketch built with arduino-cli (see \
             firmware/esp8266-arduino/README.md), or --no-flash to use the board as it is",
        ))?;
        if !firmware.is_file() {
            return Err(BackendError::board(
                BOARD,
                format!("no firmware at {}", firmware.display()),
            ));
        }
        Ok(Self {
            port,
            firmware,
            python: "python3".into(),
            firmware_flashed: Mutex::new(false),
        })
    }

    pub fn port(&self) -> &Path {
        &self.port
    }
}

impl Backend for Esp8266Backend {
    fn board(&self) -> &'static str {
        BOARD
    }

    fn single_device(&self) -> bool {
        true
    }

    fn prepare(&self) -> Result<(), BackendError> {
        let mut flashed = self.lock()?;
        if !*flashed {
            self.flash(&mut flashed, None)?;
        }
        Ok(())
    }

    fn start(&self, image: &Path) -> Result<Box<dyn Device>, BackendError> {
        let len = std::fs::metadata(image)
            .map_err(|e| BackendError::file(image, e))?
            .len();
        if len > u64::from(LITTLEFS_SIZE) {
            return Err(BackendError::file(
                image,
                format!(
                    "the flash image is {len} bytes, larger than the NodeMCU 4M2M layout's \
                     LittleFS area ({LITTLEFS_SIZE} bytes at {LITTLEFS_OFFSET:#x})"
                ),
            ));
        }
        let mut flashed = self.lock()?;
        self.flash(&mut flashed, Some(image))?;
        self.listen()
    }
}

impl Esp8266Backend {
    /// Open the port, reset the board if the port can, and read it.
    fn listen(&self) -> Result<Box<dyn Device>, BackendError> {
        let serial = SerialCapture::open_port_with(
            &self.port,
            LOG_BAUD,
            |port| reset_if_possible(port, &self.port),
            Some(translator()),
        )
        .map_err(|e| BackendError::board(BOARD, e))?;
        Ok(Box::new(BoardDevice { serial }))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, bool>, BackendError> {
        self.firmware_flashed
            .lock()
            .map_err(|_| BackendError::board(BOARD, "an earlier start panicked while flashing"))
    }

    /// One esptool run: the sketch unless already on the board, and `image` if given.
    fn flash(&self, flashed: &mut bool, image: Option<&Path>) -> Result<(), BackendError> {
        let firmware = (!*flashed).then_some(self.firmware.as_path());
        let what: Vec<String> = [
            firmware.map(|f| format!("{} at {FIRMWARE_OFFSET:#x}", f.display())),
            image.map(|i| format!("{} at {LITTLEFS_OFFSET:#x}", i.display())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if what.is_empty() {
            return Ok(());
        }
        eprintln!(
            "hil: esp8266 on {}: flashing {}",
            self.port.display(),
            what.join(" and ")
        );
        let command = esptool_command(&self.python, &self.port, FLASH_BAUD, firmware, image);
        run_esptool(command, &self.port)?;
        *flashed = true;
        Ok(())
    }
}

/// Which sketch runs on the board: its lines differ, and so does what they can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Sketch {
    /// `firmware/esp8266-arduino`: reads the flash image, prints a banner, its config,
    /// file sizes, clock sync, subscription and lost connections.
    #[default]
    Adapted,
    /// The original tutorial's sketch as published: settings compiled in, certificates
    /// in SPIFFS, NTPClient from pool.ntp.org, and only the tutorial's few lines.
    Tutorial,
}

/// A [`SketchLog`] as a serial capture's translation.
pub fn translator() -> Translate {
    translator_for(None)
}

/// As [`translator`], knowing the endpoint and publish topic from the image's config
/// before the sketch prints them (the tutorial's never does).
pub fn translator_for(config: Option<&DeviceConfig>) -> Translate {
    let mut log = SketchLog::new(Instant::now());
    if let Some(config) = config {
        log.endpoint = Some((config.endpoint.host.to_string(), config.endpoint.port));
        log.pub_topic = config.pub_topic.to_string();
    }
    Box::new(move |raw| log.translate_said(raw, Instant::now()))
}

/// Reads the sketch's serial output as log lines, in either sketch's vocabulary (the
/// tutorial's lines are a subset of the adapted sketch's, with a few spelled
/// differently). Keeps what later lines need: the endpoint and topic from the config
/// line, the credentials loaded until all three are in, whether the last attempt
/// connected, the waits since the last connection, an `IP address: ` whose address is on
/// the next line. Uptime is the host's time since the capture started (the sketch prints
/// none).
#[derive(Debug, Clone)]
pub struct SketchLog {
    started: Instant,
    endpoint: Option<(String, u16)>,
    pub_topic: String,
    /// Per file: loaded (with its size, if the sketch printed one).
    creds: [Option<Option<usize>>; 3],
    /// Waits announced since the last connection.
    attempts: u32,
    /// The last attempt connected and no loss was reported since.
    up: bool,
    /// The adapted sketch reported the loss of the connection.
    lost: bool,
    /// The tutorial prints `IP address: ` and the address on a line of its own.
    ip_next: bool,
    published: u32,
}

impl SketchLog {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            endpoint: None,
            pub_topic: DEFAULT_PUB_TOPIC.into(),
            creds: [None; 3],
            attempts: 0,
            up: false,
            lost: false,
            ip_next: false,
            published: 0,
        }
    }

    /// The log lines one sketch line stands for (none: not part of its vocabulary).
    pub fn translate(&mut self, raw: &[u8], now: Instant) -> Vec<Line> {
        self.translate_said(raw, now).lines
    }

    /// As [`Self::translate`], with the sketch's words explained where they are codes.
    pub fn translate_said(&mut self, raw: &[u8], now: Instant) -> Translation {
        let t = now.saturating_duration_since(self.started).as_millis() as u64;
        let ip_next = std::mem::take(&mut self.ip_next);
        // Payloads are raw bytes; the fixed words around them are ASCII.
        if let Some(rest) = raw.strip_prefix(b"Message arrived [")
            && let Some(close) = rest.windows(2).position(|w| w == b"] ")
        {
            let topic = String::from_utf8_lossy(&rest[..close]);
            return vec![Line::inbound(t, &topic, &rest[close + 2..])].into();
        }
        if let Some(payload) = raw.strip_prefix(b"Publish message: ") {
            self.published += 1;
            let seq = firmware_core::session::hello_seq(payload).unwrap_or(self.published);
            return vec![Line::publish(t, &self.pub_topic, seq, payload)].into();
        }
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if ip_next && let Ok(ip) = text.parse::<IpAddr>() {
            return vec![Line::wifi_up(t, ip)].into();
        }
        if let Some(rest) = text.strip_prefix("Attempting MQTT connection...") {
            return self.attempt(t, rest);
        }
        self.line(t, text).into()
    }

    /// The lines with no payload and no state across attempts.
    fn line(&mut self, t: u64, text: &str) -> Vec<Line> {
        if let Some(rest) = text.strip_prefix("esp8266-aws-iot ") {
            let field = |key: &str| word_value(rest, key).unwrap_or("?");
            return vec![Line::boot(
                t,
                field("firmware"),
                "esp8266",
                field("client_id"),
            )];
        }
        if let Some(rest) = text.strip_prefix("Config loaded: ") {
            return self.config(t, rest).into_iter().collect();
        }
        if text.starts_with("Failed to read /config.json") {
            return vec![Line::config_failed(
                t,
                firmware_core::log::ConfigFailure::Load(LoadError::Missing),
            )];
        }
        // The tutorial's `Failed to open cert file` / `private cert file` / `ca `.
        for (opened, file) in [
            ("Failed to open cert file", FlashFile::Cert),
            ("Failed to open private cert file", FlashFile::Key),
            ("Failed to open ca", FlashFile::Ca),
        ] {
            if text == opened {
                return vec![Line::creds_failed(t, file, LoadError::Missing)];
            }
        }
        for (slot, (name, file)) in [
            ("cert", FlashFile::Cert),
            ("private key", FlashFile::Key),
            ("ca", FlashFile::Ca),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(rest) = text.strip_prefix(name) else {
                continue;
            };
            // The adapted sketch: `cert loaded 812 bytes`; the tutorial: `cert loaded`.
            let loaded = match rest.strip_prefix(" loaded") {
                Some("") => Some(None),
                Some(size) => size
                    .strip_prefix(' ')
                    .and_then(|r| r.strip_suffix(" bytes"))
                    .and_then(|n| n.parse().ok())
                    .map(Some),
                None => None,
            };
            if let Some(size) = loaded {
                self.creds[slot] = Some(size);
                return self.creds_line(t);
            }
            // The file opened but BearSSL could not read it (`ca failed` in the
            // tutorial); the adapted sketch says `not loaded` for a missing file too.
            if rest == " not loaded" || (slot == 2 && rest == " failed") {
                return vec![Line::creds_failed(t, file, LoadError::Missing)];
            }
        }
        if let Some(ip) = text.strip_prefix("IP address:") {
            if ip.trim().is_empty() {
                self.ip_next = true;
                return Vec::new();
            }
            return ip
                .trim()
                .parse::<IpAddr>()
                .map(|ip| vec![Line::wifi_up(t, ip)])
                .unwrap_or_default();
        }
        if let Some(epoch) = text.strip_prefix("Time synced: ") {
            return epoch
                .trim()
                .parse()
                .map(|e| vec![Line::time_synced(t, e)])
                .unwrap_or_default();
        }
        if let Some(rest) = text.strip_prefix("Subscribed to ") {
            let mut words = rest.split(' ');
            let topic = words.next().unwrap_or_default();
            let qos = words
                .find_map(|w| w.strip_prefix("qos="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(0);
            return vec![Line::mqtt_subscribed(t, topic, qos)];
        }
        if text == "Time sync failed, retrying" {
            return vec![Line::time_sync_failed(t, TimeError::Timeout, None)];
        }
        if text == "Failed to mount file system" {
            return vec![Line::creds_failed(t, FlashFile::Image, LoadError::Io)];
        }
        if let Some(why) = text.strip_prefix("WiFiClientSecure SSL error: ") {
            // The tutorial prints BearSSL's last error after every failed attempt, also
            // when TLS was not the problem.
            if matches!(why.trim(), "" | "OK" | "No error") {
                return Vec::new();
            }
            return vec![Line::connect_failed(t, ConnectFailure::Tls(tls_error(why)))];
        }
        if let Some(rc) = text.strip_prefix("MQTT connection lost, rc=") {
            self.up = false;
            self.lost = true;
            let reason = match rc.trim().parse::<i32>() {
                Ok(-4) => DisconnectReason::KeepaliveTimeout,
                _ => DisconnectReason::PeerClosed,
            };
            return vec![Line::mqtt_disconnected(t, reason)];
        }
        if let Some(free) = text.strip_prefix("Heap: ") {
            return free
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(|free| {
                    let mut line = Line::new(Level::Info, t, "heap").ok()?;
                    line.field_display("free", free).ok()?;
                    Some(vec![line])
                })
                .unwrap_or_default();
        }
        Vec::new()
    }

    /// One `creds:` line once all three files are in: with their sizes when the sketch
    /// printed them (the adapted one), else only where they came from (the tutorial).
    fn creds_line(&mut self, t: u64) -> Vec<Line> {
        let [Some(cert), Some(key), Some(ca)] = self.creds else {
            return Vec::new();
        };
        self.creds = [None; 3];
        if let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) {
            return vec![Line::creds(t, cert, key, ca, CredSource::Flash)];
        }
        let Ok(mut line) = Line::new(Level::Info, t, "creds") else {
            return Vec::new();
        };
        match line.field_display("source", "flash") {
            Ok(_) => vec![line],
            Err(_) => Vec::new(),
        }
    }

    /// `Config loaded: endpoint=HOST:PORT client_id=ID pub=TOPIC sub=TOPIC period_ms=N
    /// keepalive_s=N qos=N`
    fn config(&mut self, t: u64, rest: &str) -> Option<Line> {
        let endpoint = word_value(rest, "endpoint")?;
        let (host, port) = endpoint.rsplit_once(':')?;
        self.endpoint = Some((host.to_string(), port.parse().ok()?));
        if let Some(topic) = word_value(rest, "pub") {
            self.pub_topic = topic.to_string();
        }
        let mut line = Line::new(Level::Info, t, "config").ok()?;
        line.message_text("loaded").ok()?;
        line.field_escaped("endpoint", endpoint.as_bytes()).ok()?;
        for (key, sketch_key) in [("pub_topic", "pub"), ("sub_topic", "sub")] {
            if let Some(value) = word_value(rest, sketch_key) {
                line.field_escaped(key, value.as_bytes()).ok()?;
            }
        }
        for key in ["period_ms", "keepalive_s", "qos"] {
            if let Some(value) = word_value(rest, key).and_then(|v| v.parse::<u32>().ok()) {
                line.field_display(key, value).ok()?;
            }
        }
        Some(line)
    }

    /// `Attempting MQTT connection...` followed, on the same line, by `connected` or
    /// `failed, rc=N try again in 5 seconds`. An attempt after a connection that was up
    /// is the sketch's reconnect, which waits for nothing: `backoff delay_ms=0`.
    fn attempt(&mut self, t: u64, outcome: &str) -> Translation {
        let (host, port) = self
            .endpoint
            .clone()
            .unwrap_or_else(|| ("?".to_string(), 0));
        let mut lines = Vec::new();
        if std::mem::take(&mut self.up) || std::mem::take(&mut self.lost) {
            self.attempts += 1;
            lines.push(Line::backoff(t, Stage::Mqtt, self.attempts, 0));
        }
        lines.push(Line::mqtt_connecting(t, &host, port));
        let mut said = None;
        if outcome == "connected" {
            self.attempts = 0;
            self.up = true;
            lines.push(Line::mqtt_connected(t, &host, port, false, None));
        } else if let Some(rest) = outcome.strip_prefix("failed, rc=") {
            let (rc, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let rc = rc.parse().unwrap_or(i32::MIN);
            lines.push(Line::connect_failed(
                t,
                ConnectFailure::Mqtt(connect_error(rc)),
            ));
            said = Some(format!(
                "Attempting MQTT connection...{outcome} (PubSubClient rc={rc}: {})",
                pubsubclient_state(rc)
            ));
            let delay_s = after
                .strip_prefix("try again in ")
                .and_then(|r| r.strip_suffix(" seconds"))
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(delay_s) = delay_s {
                self.attempts += 1;
                lines.push(Line::backoff(t, Stage::Mqtt, self.attempts, delay_s * 1000));
            }
        }
        Translation { lines, said }
    }
}

/// Whether `seen` holds a line only the tutorial's original sketch prints (the adapted
/// sketch reports its files as `cert loaded N bytes` and never opens them aloud).
pub fn looks_like_the_tutorial(seen: &[SerialLine]) -> bool {
    seen.iter().any(|l| {
        matches!(&l.text, SerialText::Unparsed(text)
            if text.starts_with("Success to open cert file")
                || text.starts_with("Success to open private cert file"))
    })
}

/// What PubSubClient's `state()` means, in its header's terms.
pub fn pubsubclient_state(rc: i32) -> &'static str {
    match rc {
        -4 => "connection timeout, no CONNACK within the keep-alive",
        -3 => "connection lost",
        -2 => "network connect failed",
        -1 => "disconnected",
        0 => "connected",
        1 => "bad protocol, the server refused MQTT 3.1.1",
        2 => "bad client id",
        3 => "server unavailable",
        4 => "bad credentials",
        5 => "not authorized",
        _ => "not a PubSubClient state",
    }
}

/// PubSubClient's `state()` after a failed connect.
pub fn connect_error(rc: i32) -> ConnectError {
    match rc {
        // MQTT_CONNECTION_TIMEOUT
        -4 => ConnectError::Timeout,
        // MQTT_CONNECT_FAILED: the TCP or TLS connection could not be made.
        -2 => ConnectError::Tcp,
        // MQTT_CONNECTION_LOST, MQTT_DISCONNECTED
        -3 | -1 => ConnectError::Io,
        // MQTT_CONNECT_BAD_PROTOCOL
        1 => ConnectError::Protocol,
        // MQTT_CONNECT_BAD_CLIENT_ID, MQTT_CONNECT_UNAVAILABLE
        2 | 3 => ConnectError::Refused,
        // MQTT_CONNECT_BAD_CREDENTIALS, MQTT_CONNECT_UNAUTHORIZED
        4 | 5 => ConnectError::NotAuthorized,
        _ => ConnectError::Protocol,
    }
}

/// BearSSL's error text (`WiFiClientSecure::getLastSSLError`) as the firmware's slug.
pub fn tls_error(text: &str) -> TlsError {
    let text = text.to_ascii_lowercase();
    if text.contains("trust anchor") {
        TlsError::UnknownCa
    } else if text.contains("server name") {
        TlsError::NameMismatch
    } else if text.contains("expired") || text.contains("not yet valid") {
        TlsError::CertificateExpired
    } else if text.contains("signature") {
        TlsError::BadSignature
    } else {
        TlsError::Other
    }
}

/// `value` of the `key=value` word in `text`.
fn word_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearssl_errors_of_the_device_advisor_tls_cases_get_their_slugs() {
        for (text, slug) in [
            (
                "Chain could not be linked to a trust anchor.",
                TlsError::UnknownCa,
            ),
            (
                "Expected server name was not found in the chain.",
                TlsError::NameMismatch,
            ),
            (
                "Server's certificate is expired or not yet valid.",
                TlsError::CertificateExpired,
            ),
            ("Unknown error code.", TlsError::Other),
        ] {
            assert_eq!(tls_error(text), slug, "{text}");
        }
    }

    #[test]
    fn enotty_from_the_modem_line_ioctl_means_no_modem_lines() {
        for e in [
            std::io::Error::from_raw_os_error(25),
            std::io::Error::other("Not a typewriter"),
        ] {
            assert!(has_no_modem_lines(&e), "{e}");
        }
        assert!(!has_no_modem_lines(&std::io::Error::other(
            "Input/output error"
        )));
    }

    #[test]
    fn pubsubclient_states_map_to_connect_errors() {
        assert_eq!(connect_error(-4), ConnectError::Timeout);
        assert_eq!(connect_error(-2), ConnectError::Tcp);
        assert_eq!(connect_error(4), ConnectError::NotAuthorized);
        assert_eq!(connect_error(5), ConnectError::NotAuthorized);
        assert_eq!(connect_error(2), ConnectError::Refused);
        assert_eq!(connect_error(42), ConnectError::Protocol);
    }

    #[test]
    fn the_images_endpoint_names_the_tutorials_attempts() {
        let config = DeviceConfig::from_json(
            br#"{"endpoint": {"host": "192.168.1.10", "port": 8883}, "client_id": "ESPthing"}"#,
        )
        .unwrap();
        let mut translate = translator_for(Some(&config));
        let read = translate(b"Attempting MQTT connection...failed, rc=5 try again in 5 seconds");
        let lines: Vec<String> = read.lines.iter().map(|l| l.to_string()).collect();
        assert!(
            lines[0].ends_with("mqtt: connecting endpoint=192.168.1.10:8883"),
            "{lines:?}"
        );
        assert_eq!(
            read.said.as_deref(),
            Some(
                "Attempting MQTT connection...failed, rc=5 try again in 5 seconds \
                 (PubSubClient rc=5: not authorized)"
            )
        );
    }

    #[test]
    fn lines_outside_the_vocabulary_are_left_alone() {
        let mut log = SketchLog::new(Instant::now());
        for line in [
            "WiFi connected",
            ".......",
            "Heap: lots",
            "IP address: nope",
            "",
        ] {
            assert!(
                log.translate(line.as_bytes(), Instant::now()).is_empty(),
                "{line}"
            );
        }
        // A binary inbound payload stays bytes, escaped by the log line.
        let lines = log.translate(b"Message arrived [in] \x00\xff", Instant::now());
        assert_eq!(lines[0].field("bytes"), Some("2"));
        assert_eq!(lines[0].payload(), Some("\\x00\\xff"));
    }
}
