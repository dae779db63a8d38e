//! The ESP8266 backend: esptool's command line, both sketches' serial vocabularies read
//! as `firmware_core::log::Line`s from transcripts replayed at their own pace through a
//! real pty and the serial capture (and what the rig concludes from them), and esptool
//! against a pseudo-terminal with no chip behind it.

use std::io::Write;

use serialport::SerialPort;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use firmware_core::log::{Level, Line};
use hil::backend::Backend;
use hil::backend::esp8266::{
    Esp8266Backend, LITTLEFS_OFFSET, Sketch, esptool_command, run_esptool, translator,
};
use hil::backend::monitor::MonitorBackend;
use hil::scenarios::backoff::{judge, one_outage};
use hil::scenarios::{self, Vocabulary};
use hil::serial::{SerialCapture, SerialLine, SerialText};

const TRANSCRIPT: &[u8] = include_bytes!("fixtures/esp8266-sketch.log");
const TUTORIAL: &[u8] = include_bytes!("fixtures/esp8266-tutorial.log");
const ADAPTED: &[u8] = include_bytes!("fixtures/esp8266-adapted.log");

/// A timed transcript's lines: milliseconds since the reset and the bytes printed (`#`
/// lines describe the transcript).
fn timed(transcript: &[u8]) -> Vec<(u64, Vec<u8>)> {
    transcript
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(|l| {
            let tab = l.iter().position(|&b| b == b'\t').expect("MS<tab>LINE");
            let ms = std::str::from_utf8(&l[..tab]).unwrap().parse().unwrap();
            (ms, l[tab + 1..].to_vec())
        })
        .collect()
}

/// Replay `transcript` into a translating pseudo-terminal capture at the transcript's own
/// pace (the board's, so the host timestamps are the ones a bench would see), and read
/// until its last line (unique in the transcript) has come through; returns every line
/// the capture produced.
async fn replay(transcript: &[u8]) -> (SerialCapture, Vec<SerialLine>) {
    let lines = timed(transcript);
    let last = String::from_utf8_lossy(&lines.last().unwrap().1).into_owned();
    let mut capture =
        SerialCapture::pseudo_terminal_translated(translator()).expect("pseudo-terminal");
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .open(capture.device_path().unwrap())
        .unwrap();
    let writer = std::thread::spawn(move || {
        let reset = Instant::now();
        for (ms, line) in lines {
            // The board's own pace, not a wait for the reader.
            std::thread::sleep(
                (reset + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
            );
            device.write_all(&line).unwrap();
            device.write_all(b"\r\n").unwrap();
        }
    });
    let transcript_ends = |l: &SerialLine| match &l.text {
        SerialText::Line(_) => l.said.as_deref() == Some(last.as_str()),
        SerialText::Unparsed(text) => *text == last,
    };
    let found = capture
        .until(Duration::from_secs(90), |l| {
            transcript_ends(l).then_some(())
        })
        .await;
    writer.join().unwrap();
    assert!(
        found.is_some(),
        "the transcript's last line `{last}` never came"
    );
    let seen = capture.seen();
    (capture, seen)
}

/// The translated lines of a log, as [`shown`] prints them.
fn translated(log: &[SerialLine]) -> Vec<String> {
    log.iter().filter_map(|l| l.line()).map(shown).collect()
}

/// The lines the capture produced, as `tag: message fields` text.
fn shown(line: &Line) -> String {
    let text = line.to_string();
    // Drop `I (  uptime) `: uptimes are the host's and vary.
    let body = text.split_once(") ").map(|(_, b)| b).unwrap_or(&text);
    format!("{} {body}", line.level)
}

#[tokio::test]
async fn the_sketch_transcript_reads_as_the_firmware_log() {
    let mut capture =
        SerialCapture::pseudo_terminal_translated(translator()).expect("pseudo-terminal");
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .open(capture.device_path().unwrap())
        .unwrap();
    device.write_all(TRANSCRIPT).unwrap();
    let expected_lines = TRANSCRIPT.split(|&b| b == b'\n').count() - 1;

    let mut lines = Vec::new();
    let mut unparsed = Vec::new();
    // Each transcript line gives one or more lines; the last one is the last publish.
    while let Some(line) = capture.next(Duration::from_secs(5)).await {
        match &line.text {
            SerialText::Line(l) => lines.push(shown(l)),
            SerialText::Unparsed(text) => unparsed.push(text.clone()),
        }
        if lines.last().is_some_and(|l| l.contains("hello world #4")) {
            break;
        }
    }
    assert!(
        lines.len() + unparsed.len() >= expected_lines - 5,
        "{lines:#?}"
    );
    let expected = [
        "I boot: firmware=0.1.0 board=esp8266 client_id=ESPthing",
        "I config: loaded endpoint=192.168.1.10:8883 pub_topic=outTopic sub_topic=inTopic period_ms=2000 keepalive_s=60 qos=1",
        "I creds: cert=812B key=121B ca=837B source=flash",
        "I wifi: up ip=192.168.1.23",
        "W time: sync failed error=timeout",
        "I time: synced epoch=1795000000",
        "I mqtt: connecting endpoint=192.168.1.10:8883",
        "E mqtt: connect failed error=tcp-failed",
        "I mqtt: backoff attempt=1 delay_ms=5000",
        "E tls: handshake failed error=unknown-ca",
        "I mqtt: connecting endpoint=192.168.1.10:8883",
        "I mqtt: connected endpoint=192.168.1.10:8883 session=new",
        "I mqtt: subscribed topic=inTopic qos=1",
        r#"I publish: topic=outTopic seq=1 bytes=29 payload={"message": "hello world #1"}"#,
        "I heap: free=18432",
        r#"I publish: topic=outTopic seq=2 bytes=29 payload={"message": "hello world #2"}"#,
        "I heap: free=18400",
        "I inbound: topic=inTopic bytes=5 payload=hello",
        r#"I inbound: topic=inTopic bytes=21 payload={"led": "on", "n": 2}"#,
        r#"I publish: topic=outTopic seq=3 bytes=29 payload={"message": "hello world #3"}"#,
        "I heap: free=18400",
        "W mqtt: disconnected reason=peer-closed",
        // The sketch retries at once after a lost connection.
        "I mqtt: backoff attempt=1 delay_ms=0",
        "I mqtt: connecting endpoint=192.168.1.10:8883",
        "E mqtt: connect failed error=tcp-failed",
        "I mqtt: backoff attempt=2 delay_ms=5000",
        "I mqtt: connecting endpoint=192.168.1.10:8883",
        "E mqtt: connect failed error=not-authorized",
        "I mqtt: backoff attempt=3 delay_ms=5000",
        "I mqtt: connecting endpoint=192.168.1.10:8883",
        "I mqtt: connected endpoint=192.168.1.10:8883 session=new",
        "I mqtt: subscribed topic=inTopic qos=1",
        r#"I publish: topic=outTopic seq=4 bytes=29 payload={"message": "hello world #4"}"#,
    ];
    assert_eq!(lines, expected);
    // The ROM's banner and the WiFi progress stay verbatim.
    assert!(
        unparsed.iter().any(|l| l.contains("rst cause:2")),
        "{unparsed:#?}"
    );
    assert!(
        unparsed.iter().any(|l| l == "WiFi connected"),
        "{unparsed:#?}"
    );
    // Levels follow the firmware's: a failed connect is an error.
    assert!(lines.iter().any(|l| l.starts_with(Level::Error.letter())));
}

#[tokio::test]
async fn the_tutorial_sketch_at_its_pace_boots_and_fails_backoff_as_constant() {
    let (capture, log) = replay(TUTORIAL).await;
    let lines = translated(&log);
    let connect = "I mqtt: connecting endpoint=?:0";
    let failed = "E mqtt: connect failed error=tcp-failed";
    let mut expected = vec![
        "I wifi: up ip=192.168.1.23".to_string(),
        "I heap: free=40104".into(),
        "I creds: source=flash".into(),
        "I heap: free=37920".into(),
    ];
    for attempt in 1..=5 {
        expected.extend([
            connect.into(),
            failed.into(),
            format!("I mqtt: backoff attempt={attempt} delay_ms=5000"),
        ]);
    }
    expected.extend([
        connect.into(),
        "I mqtt: connected endpoint=?:0 session=new".into(),
    ]);
    assert_eq!(lines[..expected.len()], expected[..], "{lines:#?}");
    let publishes = lines.iter().filter(|l| l.starts_with("I publish:")).count();
    assert_eq!(publishes, 5, "{lines:#?}");
    assert!(
        lines.contains(&"I inbound: topic=inTopic bytes=5 payload=hello".to_string()),
        "{lines:#?}"
    );

    // The fixed 5 s retry, timed by the host as it read the lines: constant.
    let outage = one_outage(&log);
    assert_eq!(outage.len(), 5, "{outage:?}");
    assert!(outage.iter().all(|r| r.delay_ms == 5000), "{outage:?}");
    // The pace came through: each retry about 5 s after the previous failure.
    assert!(
        outage[..4].iter().all(|r| (4900..5600).contains(&r.gap_ms)),
        "{outage:?}"
    );
    let why = judge(&outage).unwrap_err().0;
    assert!(
        why.starts_with("expected jittered reconnect delays, saw constant (5000 ms)"),
        "{why}"
    );

    // A failure quotes the sketch and says what PubSubClient's code means.
    let tail = capture.tail(usize::MAX);
    assert!(
        tail.contains(
            "(board: Attempting MQTT connection...failed, rc=-2 try again in 5 seconds \
             (PubSubClient rc=-2: network connect failed))"
        ),
        "{tail}"
    );
    // BearSSL's `OK` after a TCP failure is not a TLS failure.
    assert!(!lines.iter().any(|l| l.contains("tls:")), "{lines:#?}");

    // What the rig concludes per scenario: what the sketch never prints is skipped with
    // the reason, the rest runs.
    let mut skipped = Vec::new();
    for scenario in scenarios::all() {
        if let Some(why) = Vocabulary::TutorialSketch.skip_reason(scenario.needs_lines) {
            assert!(why.contains("the tutorial's sketch"), "{why}");
            skipped.push(scenario.name);
        }
    }
    assert_eq!(
        skipped,
        [
            "reconnect-after-restart",
            "qos1-retry",
            "dead-link",
            "sntp-silent",
            "sntp-bad-time",
            "duplicate-id"
        ]
    );
    assert!(
        scenarios::all()
            .iter()
            .all(|s| Vocabulary::Firmware.skip_reason(s.needs_lines).is_none())
    );
}

#[tokio::test]
async fn the_adapted_sketch_at_its_pace_reads_fully_and_fails_backoff_as_constant() {
    let (_capture, log) = replay(ADAPTED).await;
    let lines = translated(&log);
    for step in [
        "I boot: firmware=0.1.0 board=esp8266 client_id=ESPthing",
        "I creds: cert=812B key=121B ca=837B source=flash",
        "I wifi: up ip=192.168.1.23",
        "I time: synced epoch=1795000000",
        "I mqtt: subscribed topic=inTopic qos=1",
        "W mqtt: disconnected reason=peer-closed",
        // Reconnecting at once after the loss.
        "I mqtt: backoff attempt=1 delay_ms=0",
    ] {
        assert!(lines.iter().any(|l| l == step), "{step}: {lines:#?}");
    }
    let outage = one_outage(&log);
    assert_eq!(
        outage
            .iter()
            .map(|r| (r.attempt, r.delay_ms))
            .collect::<Vec<_>>(),
        (1..=5).map(|n| (n, 5000)).collect::<Vec<_>>()
    );
    let why = judge(&outage).unwrap_err().0;
    assert!(
        why.starts_with("expected jittered reconnect delays, saw constant (5000 ms)"),
        "{why}"
    );
}

#[tokio::test]
async fn no_flash_reads_a_board_on_a_pseudo_terminal_without_resetting_it() {
    // The rig reads the slave end, as it would a USB bridge; the "board" writes the master.
    let (mut board, slave) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
    let port = std::path::PathBuf::from(slave.name().expect("slave name"));
    let backend = MonitorBackend::esp8266(port.clone(), Sketch::Tutorial).expect("port exists");
    assert_eq!(backend.vocabulary(), Vocabulary::TutorialSketch);
    // A pseudo-terminal has no modem lines: no reset, no `Not a typewriter`, and nothing
    // is flashed (the image is the one the board holds).
    let mut device = backend
        .start(Path::new("the-image-on-the-board.img"))
        .expect("a pseudo-terminal is accepted");
    board
        .write_all(b"IP address: \r\n192.168.1.23\r\ncert loaded\r\n")
        .unwrap();
    let first = device
        .serial()
        .until(Duration::from_secs(10), |l| l.line().map(shown))
        .await
        .expect("a translated line");
    assert_eq!(first.1, "I wifi: up ip=192.168.1.23");

    let missing = MonitorBackend::esp8266("/dev/no-such-port".into(), Sketch::Adapted)
        .err()
        .expect("a missing port is refused")
        .to_string();
    assert!(
        missing.contains("no serial port /dev/no-such-port; ports seen:"),
        "{missing}"
    );
}

#[test]
fn esptool_writes_the_sketch_before_the_first_scenario_then_only_images() {
    let port = Path::new("/dev/ttyUSB0");
    let args = |command: &Command| -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    let first = esptool_command(
        "python3",
        port,
        460_800,
        Some(Path::new("sketch.bin")),
        Some(Path::new("flash.img")),
    );
    assert_eq!(first.get_program(), "python3");
    assert_eq!(
        args(&first),
        [
            "-m",
            "esptool",
            "--chip",
            "esp8266",
            "--port",
            "/dev/ttyUSB0",
            "--baud",
            "460800",
            "--after",
            "no-reset",
            "write-flash",
            "0x0",
            "sketch.bin",
            "0x200000",
            "flash.img"
        ]
    );
    let sketch_only = esptool_command(
        "python3",
        port,
        460_800,
        Some(Path::new("sketch.bin")),
        None,
    );
    assert_eq!(
        args(&sketch_only)[10..],
        ["write-flash", "0x0", "sketch.bin"]
    );
    let later = esptool_command("python3", port, 115_200, None, Some(Path::new("flash.img")));
    assert_eq!(
        args(&later)[8..],
        [
            "--after",
            "no-reset",
            "write-flash",
            "0x200000",
            "flash.img"
        ]
    );
    assert_eq!(LITTLEFS_OFFSET, 0x200000);
}

/// esptool is a dependency of the rig (`make deps`); without it this fails, saying so.
fn require_esptool() {
    let found = Command::new("python3")
        .args(["-m", "esptool", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "esptool is not installed for python3: run `make deps` (python3 -m pip install esptool)"
    );
}

#[test]
fn esptool_against_a_pseudo_terminal_with_no_chip_fails_naming_the_port() {
    require_esptool();
    let pty = SerialCapture::pseudo_terminal().expect("pseudo-terminal");
    let port = pty.device_path().expect("device path").to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flash.img");
    std::fs::write(&image, vec![0xff; 4096]).unwrap();
    let sketch = dir.path().join("sketch.bin");
    std::fs::write(&sketch, vec![0xe9; 4096]).unwrap();

    let backend =
        Esp8266Backend::new(Some(port.clone()), Some(sketch)).expect("port and sketch given");
    let started = Instant::now();
    let Err(why) = backend.start(&image) else {
        panic!("esptool flashed a pseudo-terminal");
    };
    let why = why.to_string();
    let took = started.elapsed();
    // esptool's own connect attempts (7 resets) take well under a minute.
    assert!(took < Duration::from_secs(90), "took {took:?}");
    assert!(
        why.contains(&port.display().to_string())
            && why.contains("no chip answered")
            && why.contains("Failed to connect to ESP8266"),
        "{why}"
    );
    println!("gave up after {took:?}: {why}");
}

#[test]
fn a_missing_esptool_module_says_to_run_make_deps() {
    let mut command = Command::new("python3");
    command.args(["-m", "esptool_that_is_not_installed"]);
    let why = run_esptool(command, Path::new("/dev/ttyUSB0"))
        .unwrap_err()
        .to_string();
    assert!(why.contains("make deps"), "{why}");
}

#[test]
fn hil_run_no_flash_on_the_tutorial_sketch_skips_what_it_cannot_show() {
    // A pseudo-terminal as the board's port; the scenarios asked for all need lines the
    // tutorial never prints, so the run names why and touches nothing.
    let pty = SerialCapture::pseudo_terminal().expect("pseudo-terminal");
    let port = pty.device_path().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::pki::Pki::generate(&certs::pki::InitOptions::default()).unwrap();
    for file in pki.files() {
        let path = dir.path().join("pki").join(&file.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &file.contents).unwrap();
    }
    // The settings the tutorial has compiled in. The rig's broker listens where the image
    // says: a port the system just handed out (an image cannot say port 0).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let json = format!(
        r#"{{"endpoint": {{"host": "127.0.0.1", "port": {}}}, "client_id": "ESPthing"}}"#,
        free.local_addr().unwrap().port()
    );
    drop(free);
    let image = dir.path().join("flash.img");
    std::fs::write(
        &image,
        certs::image::build_image_files(
            &[(certs::image::CONFIG_PATH, json.as_bytes())],
            certs::image::DEFAULT_IMAGE_SIZE,
        )
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args([
            "run",
            "--board",
            "esp8266",
            "--no-flash",
            "--sketch",
            "tutorial",
        ])
        .args(["--port", &port, "--flash"])
        .arg(&image)
        .arg("--pki")
        .arg(dir.path().join("pki"))
        .args(["--scenario", "dead-link", "--scenario", "sntp-silent"])
        .output()
        .expect("run hil");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("as it is (--no-flash)")
            && stderr.contains(
                "skipping dead-link: needs `mqtt: disconnected`, and the tutorial's sketch prints nothing"
            )
            && stderr.contains("skipping sntp-silent: needs `time: sync failed`"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn a_board_running_the_tutorial_read_as_the_adapted_sketch_gets_a_hint() {
    let (mut board, slave) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
    let port = std::path::PathBuf::from(slave.name().expect("slave name"));
    for (sketch, hinted) in [(Sketch::Adapted, true), (Sketch::Tutorial, false)] {
        let backend = MonitorBackend::esp8266(port.clone(), sketch).unwrap();
        let mut device = backend.start(Path::new("on-the-board.img")).unwrap();
        board
            .write_all(b"Success to open cert file\r\ncert loaded\r\n")
            .unwrap();
        device
            .serial()
            .until(Duration::from_secs(10), |l| {
                matches!(&l.text, SerialText::Unparsed(t) if t == "Success to open cert file")
                    .then_some(())
            })
            .await
            .expect("the line came through");
        let hint = backend.explain(&device.capture().seen());
        assert_eq!(
            hint.is_some_and(|h| h.contains("run with --sketch tutorial")),
            hinted,
            "{sketch:?}"
        );
    }
}
