//! The HTML report as a person sees it: rendered by a real browser (Debian's Chromium,
//! headless, 1400 px wide; `make deps` installs it), with the browser's own computed
//! styles and layout checked, not the markup:
//!
//! - an out-of-band interval is drawn red, whatever its marker (a CSS precedence bug once
//!   drew it blue under a legend that said red);
//! - an expected gap (an interval across a disconnect) is not red;
//! - no two tick labels on an axis overlap, and each plot has a title.
//!
//! The checks run in the page (a script the test appends to the rendered report) and
//! write their findings into the DOM, which Chromium prints with `--dump-dom`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use firmware_core::log::Line;
use hil::report::{RunInfo, html};
use hil::runner::ScenarioReport;
use hil::serial::{SerialLine, SerialText};

/// The browser, or a failure that says how to get it.
fn chromium() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium is not installed: run `make deps` (Debian package `chromium`)"
    );
    "chromium"
}

fn line(base: Instant, ms: u64, text: &str) -> SerialLine {
    SerialLine {
        at: base + Duration::from_millis(ms),
        wall: SystemTime::UNIX_EPOCH,
        text: SerialText::Line(Box::new(text.parse::<Line>().unwrap())),
        said: None,
    }
}

fn publish(base: Instant, ms: u64, seq: u32) -> SerialLine {
    let payload = firmware_core::session::hello_payload(seq);
    line(
        base,
        ms,
        &Line::publish(ms, "outTopic", seq, payload.as_bytes()).to_string(),
    )
}

/// A cadence scenario with one late interval (2999 ms) and one across a disconnect,
/// then a 43 s gap as in dead-link.
fn report() -> ScenarioReport {
    let base = Instant::now();
    let mut log = vec![
        line(
            base,
            0,
            "I (       0) boot: firmware=0.1.0 board=virtual client_id=a",
        ),
        publish(base, 1000, 1),
        publish(base, 3000, 2),
        publish(base, 5999, 3),
        line(
            base,
            6500,
            "W (    6500) mqtt: disconnected reason=peer-closed",
        ),
        publish(base, 9000, 4),
        publish(base, 11_000, 5),
    ];
    log.push(publish(base, 54_000, 6));
    ScenarioReport {
        name: "cadence",
        tolerance: "2000 +- 150 ms",
        result: Err(hil::error::Failed::check(
            "expected every interval 2000 +- 150 ms, saw 2999 ms",
        )),
        duration: Duration::from_secs(54),
        log: log.clone(),
        full_log: log,
        skipped: None,
        broker_publishes: Vec::new(),
        broker_replays: Vec::new(),
    }
}

/// In-page checks; their findings go into `<pre id="checks">`, one `key=value` a line.
const CHECKS: &str = r#"<script>
const out = [];
const fill = (sel) => { const e = document.querySelector(sel); return e ? getComputedStyle(e).fill : 'missing'; };
out.push('out_fill=' + fill('circle.device.out'));
out.push('in_fill=' + fill('circle.device:not(.out):not(.gap)'));
out.push('gap_fill=' + fill('circle.device.gap'));
let overlaps = 0, labels = 0;
for (const svg of document.querySelectorAll('svg.plot')) {
  const boxes = [...svg.querySelectorAll('text.axis')].map(t => t.getBoundingClientRect());
  labels += boxes.length;
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) overlaps++;
  }
}
out.push('labels=' + labels);
out.push('overlaps=' + overlaps);
out.push('plots=' + document.querySelectorAll('svg.plot').length);
out.push('titled=' + document.querySelectorAll('svg.plot text.title').length);
const pre = document.createElement('pre'); pre.id = 'checks'; pre.textContent = out.join('\n');
document.body.appendChild(pre);
</script>"#;

fn findings(dom: &str) -> Vec<(String, String)> {
    const OPEN: &str = "<pre id=\"checks\">";
    let start = dom.find(OPEN).expect("the checks ran") + OPEN.len();
    let end = start + dom[start..].find("</pre>").unwrap();
    dom[start..end]
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn render_in_browser(dir: &Path, page: &str) -> String {
    let path = dir.join("index.html");
    let page = page.replace("</body>", &format!("{CHECKS}</body>"));
    std::fs::write(&path, page).unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_report_reads_right_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let info = RunInfo {
        started: SystemTime::UNIX_EPOCH,
        commit: Some("1a2b3c4".into()),
        board: "virtual".into(),
        target: "mock".into(),
        host: "bench".into(),
        firmware: Some("0.1.0".into()),
    };
    let dom = render_in_browser(dir.path(), &html::render(&[report()], &info));
    let found = findings(&dom);
    let get = |k: &str| {
        found
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {found:?}"))
    };
    // Red, and not the in-band blue.
    assert_eq!(get("out_fill"), "rgb(208, 2, 27)", "{found:?}");
    assert_ne!(get("in_fill"), get("out_fill"));
    assert_ne!(get("gap_fill"), get("out_fill"));
    assert!(get("labels").parse::<u32>().unwrap() >= 4);
    assert_eq!(get("overlaps"), "0", "{found:?}");
    assert_eq!(
        get("plots"),
        get("titled"),
        "every plot has a title: {found:?}"
    );
}
