//! `index.html` of the report folder: one self-contained page (inline CSS and SVG, no
//! scripts, no external assets) with the summary table, a publish-interval plot and a
//! connection timeline per scenario, and each scenario's serial log.
//!
//! Everything shown is derived from what the scenario already recorded: the device's
//! `publish:` lines (host timestamps taken when each line was read) and, where the
//! broker saw them, the arrival times of the device's publishes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::RunInfo;
use crate::runner::ScenarioReport;
use crate::serial::SerialLine;

/// The cadence the device is configured for, and what the cadence scenario tolerates.
pub const TARGET_MS: f64 = 2000.0;
pub const TOLERANCE_MS: f64 = 150.0;

/// Escape text for HTML element content and attribute values: the XML escaping the
/// JUnit file uses (HTML5 knows `&apos;`), control characters shown as `\xNN`, so a
/// hostile log cannot smuggle markup or terminal escapes into the page.
pub fn escape(text: &str) -> String {
    super::xml_escape(text)
}

/// Milliseconds between consecutive instants, in order. A `None` entry breaks the run
/// (a device restart): no interval spans it.
fn intervals(times: &[Option<Instant>]) -> Vec<f64> {
    times
        .windows(2)
        .filter_map(|pair| match pair {
            [Some(a), Some(b)] => Some(b.saturating_duration_since(*a).as_secs_f64() * 1000.0),
            _ => None,
        })
        .collect()
}

/// Host read times of the device's `publish:` lines (new publishes, not `publish:
/// retry`, `skipped` or `refused`); a `boot:` line (the device was started again) breaks
/// the sequence.
fn device_publish_times(log: &[SerialLine]) -> Vec<Option<Instant>> {
    let mut times = Vec::new();
    for serial in log {
        let Some(line) = serial.line() else { continue };
        match (line.tag(), line.message()) {
            ("publish", "") => times.push(Some(serial.at)),
            ("boot", _) if !times.is_empty() => times.push(None),
            _ => {}
        }
    }
    times
}

/// Host read times of the device's `mqtt: disconnected` lines.
fn disconnect_times(log: &[SerialLine]) -> Vec<Instant> {
    log.iter()
        .filter(|s| {
            s.line()
                .is_some_and(|l| l.tag() == "mqtt" && l.message() == "disconnected")
        })
        .map(|s| s.at)
        .collect()
}

/// For each interval between consecutive `times`, whether it is an expected gap rather
/// than a cadence error: the device lost its connection within it (an outage the
/// scenario made), or it is the catch-up after such an outage (the drift-free cadence
/// publishes once on reconnect, then goes back to its grid, so the next interval is
/// shorter than a period).
fn expected_gaps(times: &[Option<Instant>], disconnects: &[Instant]) -> Vec<bool> {
    let mut gaps: Vec<bool> = times
        .windows(2)
        .filter_map(|pair| match pair {
            [Some(a), Some(b)] => Some(disconnects.iter().any(|d| d > a && d < b)),
            _ => None,
        })
        .collect();
    let ms = intervals(times);
    let across: Vec<bool> = gaps.clone();
    for i in 1..gaps.len() {
        if across[i - 1] && !across[i] && ms.get(i).is_some_and(|ms| *ms < TARGET_MS) {
            gaps[i] = true;
        }
    }
    gaps
}

/// The publish intervals of one scenario, as the device logged them and as the broker
/// received them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intervals {
    pub device_ms: Vec<f64>,
    pub broker_ms: Vec<f64>,
    /// Per device interval: it spans a disconnect (drawn as a gap, not an error).
    pub device_gap: Vec<bool>,
    /// Per broker interval: the same, by host time.
    pub broker_gap: Vec<bool>,
}

impl Intervals {
    pub fn of(report: &ScenarioReport) -> Self {
        let broker: Vec<Option<Instant>> =
            report.broker_publishes.iter().copied().map(Some).collect();
        let device = device_publish_times(&report.full_log);
        let disconnects = disconnect_times(&report.full_log);
        Self {
            device_ms: intervals(&device),
            broker_ms: intervals(&broker),
            device_gap: expected_gaps(&device, &disconnects),
            broker_gap: expected_gaps(&broker, &disconnects),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.device_ms.is_empty() && self.broker_ms.is_empty()
    }
}

/// Geometry of the interval plot: x is the interval's index, y its length in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalScale {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub top: f64,
    pub plot_width: f64,
    pub plot_height: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Between labelled ticks on the y axis (1-2-5 steps).
    pub step: f64,
    pub count: usize,
}

impl IntervalScale {
    /// Room for `count` intervals; the y range always shows the tolerance band with a
    /// margin and stretches to include every value.
    pub fn new(count: usize, values: impl Iterator<Item = f64>) -> Self {
        let (mut min_ms, mut max_ms) = (
            TARGET_MS - 3.0 * TOLERANCE_MS,
            TARGET_MS + 3.0 * TOLERANCE_MS,
        );
        for v in values {
            min_ms = min_ms.min(v);
            max_ms = max_ms.max(v);
        }
        // Round outwards to the tick step so the axis starts and ends on a label.
        let step = nice_step(max_ms - min_ms, MAX_TICKS);
        let min_ms = (min_ms / step).floor() * step;
        let max_ms = (max_ms / step).ceil() * step;
        let (width, height, left, top) = (720.0, 280.0, 64.0, 30.0);
        Self {
            width,
            height,
            left,
            top,
            plot_width: width - left - 16.0,
            plot_height: height - top - 40.0,
            min_ms,
            max_ms,
            step,
            count,
        }
    }

    /// x of the `index`th interval (0-based): evenly spread, centred in its slot.
    pub fn x(&self, index: usize) -> f64 {
        let slot = self.plot_width / self.count.max(1) as f64;
        self.left + slot * (index as f64 + 0.5)
    }

    /// y of `ms`: `max_ms` at the top of the plot area, `min_ms` at its bottom.
    pub fn y(&self, ms: f64) -> f64 {
        let span = (self.max_ms - self.min_ms).max(1.0);
        self.top + self.plot_height * (self.max_ms - ms) / span
    }
}

/// A round tick step (1, 2 or 5 times a power of ten) that cuts `span` into at most
/// `max_ticks` intervals, as plotting libraries choose them.
pub fn nice_step(span: f64, max_ticks: usize) -> f64 {
    let raw = (span / max_ticks.max(1) as f64).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// The ticks of a `step` grid from `lo` to `hi` (both multiples of `step`).
fn ticks(lo: f64, hi: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = ((hi - lo) / step).round().max(0.0) as usize;
    (0..=n).map(move |i| lo + step * i as f64)
}

/// Most labelled ticks on an axis.
const MAX_TICKS: usize = 6;

fn within_tolerance(ms: f64) -> bool {
    (ms - TARGET_MS).abs() <= TOLERANCE_MS
}

/// The interval plot: the target line, the tolerance band, one point per interval (a
/// circle per device-logged interval, a square per broker-observed one), red outside
/// the band.
pub fn interval_svg(intervals: &Intervals) -> String {
    let count = intervals.device_ms.len().max(intervals.broker_ms.len());
    let all = intervals
        .device_ms
        .iter()
        .chain(&intervals.broker_ms)
        .copied();
    let s = IntervalScale::new(count, all);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="publish intervals"><text class="title" x="{tx}" y="16">Publish intervals (ms)</text>"#,
        w = s.width,
        h = s.height,
        tx = s.left,
    );
    let band_top = s.y(TARGET_MS + TOLERANCE_MS);
    let band_bottom = s.y(TARGET_MS - TOLERANCE_MS);
    let _ = write!(
        svg,
        r#"<rect class="band" x="{x}" y="{y:.1}" width="{pw}" height="{bh:.1}"/>"#,
        x = s.left,
        y = band_top,
        pw = s.plot_width,
        bh = band_bottom - band_top
    );
    // One labelled grid line per tick (1-2-5 steps, at most MAX_TICKS intervals).
    for ms in ticks(s.min_ms, s.max_ms, s.step) {
        let y = s.y(ms);
        let _ = write!(
            svg,
            r#"<line class="grid major" x1="{x1}" y1="{y:.1}" x2="{x2}" y2="{y:.1}"/><text class="axis" x="{x}" y="{ty:.1}" text-anchor="end">{ms} ms</text>"#,
            x1 = s.left,
            x2 = s.left + s.plot_width,
            x = s.left - 6.0,
            ty = y + 4.0,
        );
    }
    let target = s.y(TARGET_MS);
    let _ = write!(
        svg,
        r#"<line class="target" x1="{x1}" y1="{target:.1}" x2="{x2}" y2="{target:.1}"/>"#,
        x1 = s.left,
        x2 = s.left + s.plot_width,
    );
    let gap = |gaps: &[bool], i: usize| gaps.get(i).copied().unwrap_or(false);
    for (i, ms) in intervals.broker_ms.iter().enumerate() {
        let class = if gap(&intervals.broker_gap, i) {
            "broker gap"
        } else if within_tolerance(*ms) {
            "broker"
        } else {
            "broker out"
        };
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="7" height="7"><title>broker interval {n}: {ms:.0} ms</title></rect>"#,
            x = s.x(i) - 3.5,
            y = s.y(*ms) - 3.5,
            n = i + 1,
        );
    }
    for (i, ms) in intervals.device_ms.iter().enumerate() {
        let class = if gap(&intervals.device_gap, i) {
            "device gap"
        } else if within_tolerance(*ms) {
            "device"
        } else {
            "device out"
        };
        let _ = write!(
            svg,
            r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="3.5"><title>device interval {n}: {ms:.0} ms</title></circle>"#,
            x = s.x(i),
            y = s.y(*ms),
            n = i + 1,
        );
    }
    // Name each expected gap once, above its markers.
    let gaps =
        (0..count).filter(|&i| gap(&intervals.device_gap, i) || gap(&intervals.broker_gap, i));
    for i in gaps {
        let ms = intervals
            .device_ms
            .get(i)
            .into_iter()
            .chain(intervals.broker_ms.get(i))
            .fold(f64::MIN, |a, b| a.max(*b));
        let _ = write!(
            svg,
            r#"<text class="gap-note" x="{x:.1}" y="{y:.1}" text-anchor="middle">reconnect</text>"#,
            x = s.x(i),
            y = (s.y(ms) - 8.0).max(s.top + 8.0),
        );
    }
    let axis_y = s.top + s.plot_height;
    let _ = write!(
        svg,
        r#"<text class="axis" x="{x:.1}" y="{y:.1}" text-anchor="middle">interval #1 … #{count}  (ms; band {lo:.0}–{hi:.0}, target {t:.0})</text>"#,
        x = s.left + s.plot_width / 2.0,
        y = axis_y + 28.0,
        lo = TARGET_MS - TOLERANCE_MS,
        hi = TARGET_MS + TOLERANCE_MS,
        t = TARGET_MS,
    );
    svg.push_str("</svg>");
    svg
}

/// One point of the connection timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    /// Since the scenario's first serial line.
    pub at: Duration,
    pub kind: TimelineKind,
    /// The line's fields worth a tooltip (reason, error, delay).
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineKind {
    Boot,
    Connected,
    Disconnected,
    /// Waiting before the next attempt: drawn as a bar this long.
    Backoff(Duration),
    HandshakeFailed,
    /// A connection attempt that failed before TLS (TCP refused, DNS).
    ConnectFailed,
    /// A publish: a small tick, so cadence reads against the connection state.
    Publish,
    /// SNTP failed or gave a time the device refused.
    TimeSyncFailed,
    TimeSynced,
}

impl TimelineKind {
    fn class(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Backoff(_) => "backoff",
            Self::HandshakeFailed => "handshake-failed",
            Self::ConnectFailed => "connect-failed",
            Self::Publish => "publish",
            Self::TimeSyncFailed => "time-failed",
            Self::TimeSynced => "time-synced",
        }
    }
}

/// The connection events in a serial log, parsed with `firmware_core::log::Line`.
pub fn timeline(log: &[SerialLine]) -> Vec<TimelineEvent> {
    let Some(first) = log.first() else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for serial in log {
        let Some(line) = serial.line() else { continue };
        let kind = match (line.tag(), line.message()) {
            ("boot", _) => TimelineKind::Boot,
            ("mqtt", "connected") => TimelineKind::Connected,
            ("mqtt", "disconnected") => TimelineKind::Disconnected,
            ("mqtt", "backoff") => TimelineKind::Backoff(Duration::from_millis(
                line.field_as::<u64>("delay_ms").unwrap_or(0),
            )),
            ("tls", "handshake failed") => TimelineKind::HandshakeFailed,
            ("mqtt", "connect failed") => TimelineKind::ConnectFailed,
            ("publish", "") => TimelineKind::Publish,
            ("time", "sync failed" | "implausible") => TimelineKind::TimeSyncFailed,
            ("time", "synced") => TimelineKind::TimeSynced,
            _ => continue,
        };
        let detail = line
            .fields()
            .filter(|(key, _)| {
                matches!(
                    *key,
                    "reason"
                        | "error"
                        | "attempt"
                        | "delay_ms"
                        | "session"
                        | "seq"
                        | "epoch"
                        | "code"
                )
            })
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        events.push(TimelineEvent {
            at: serial.at.saturating_duration_since(first.at),
            kind,
            detail,
        });
    }
    events
}

/// The timeline strip: time on x, one marker per event, backoff as a bar of its length.
pub fn timeline_svg(events: &[TimelineEvent], span: Duration) -> String {
    let (width, height, left, right) = (720.0, 70.0, 60.0, 16.0);
    let plot = width - left - right;
    let end = events
        .iter()
        .map(|e| match e.kind {
            TimelineKind::Backoff(d) => e.at + d,
            _ => e.at,
        })
        .fold(span, Duration::max)
        .as_secs_f64()
        .max(1.0);
    // Round ticks (1-2-5 steps), at most MAX_TICKS intervals; the axis ends on a tick, so
    // every marker and backoff bar lies within it.
    let step = nice_step(end, MAX_TICKS);
    let end = (end / step - 1e-9).ceil() * step;
    let x = |t: f64| left + plot * t / end;
    let mid = 28.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="connection timeline">"#
    );
    let _ = write!(
        svg,
        r#"<text class="title" x="{left}" y="12">Connection timeline (s since the first serial line)</text><line class="grid major" x1="{left}" y1="{mid}" x2="{x2}" y2="{mid}"/>"#,
        x2 = left + plot
    );
    let decimals = if step < 1.0 { 1 } else { 0 };
    for t in ticks(0.0, end, step) {
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{tx:.1}" y1="{y1}" x2="{tx:.1}" y2="{y2}"/><text class="axis" x="{tx:.1}" y="62" text-anchor="middle">{t:.decimals$} s</text>"#,
            tx = x(t),
            y1 = mid - 14.0,
            y2 = mid + 14.0,
        );
    }
    for event in events {
        let at = event.at.as_secs_f64();
        let title = format!(
            "<title>{:.3} s {} {}</title>",
            at,
            event.kind.class(),
            escape(&event.detail)
        );
        let class = event.kind.class();
        let _ = match event.kind {
            TimelineKind::Backoff(d) => write!(
                svg,
                r#"<rect class="{class}" x="{bx:.1}" y="{y}" width="{bw:.1}" height="8">{title}</rect>"#,
                bx = x(at),
                y = mid - 4.0,
                bw = (x(at + d.as_secs_f64()) - x(at)).max(1.5),
            ),
            TimelineKind::HandshakeFailed => write!(
                svg,
                r#"<path class="{class}" d="M{a:.1},{b:.1}l10,10m0,-10l-10,10">{title}</path>"#,
                a = x(at) - 5.0,
                b = mid - 5.0,
            ),
            TimelineKind::Boot => write!(
                svg,
                r#"<line class="{class}" x1="{bx:.1}" y1="{y1}" x2="{bx:.1}" y2="{y2}">{title}</line>"#,
                bx = x(at),
                y1 = mid - 14.0,
                y2 = mid + 14.0,
            ),
            TimelineKind::TimeSyncFailed | TimelineKind::TimeSynced => write!(
                svg,
                r#"<path class="{class}" d="M{a:.1},{b:.1}l5,5l-5,5l-5,-5z">{title}</path>"#,
                a = x(at),
                b = mid + 4.0,
            ),
            TimelineKind::Publish => write!(
                svg,
                r#"<line class="{class}" x1="{px:.1}" y1="{y1}" x2="{px:.1}" y2="{y2}">{title}</line>"#,
                px = x(at),
                y1 = mid - 9.0,
                y2 = mid - 3.0,
            ),
            TimelineKind::Connected | TimelineKind::Disconnected | TimelineKind::ConnectFailed => {
                write!(
                    svg,
                    r#"<circle class="{class}" cx="{cx:.1}" cy="{mid}" r="5">{title}</circle>"#,
                    cx = x(at),
                )
            }
        };
    }
    svg.push_str("</svg>");
    svg
}

pub const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
.run { color: #444; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.pass { color: #176c2b; font-weight: bold; }
td.fail { color: #b00020; font-weight: bold; }
td.skip, h2 span.skip { color: #777; font-weight: bold; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 8px; overflow-x: auto; font-size: 12px; }
pre.failure { background: #fff0f0; border-color: #e0a0a0; }
details { margin: 0.6em 0; } summary { cursor: pointer; }
.legend span { margin-right: 1.2em; } .note { color: #666; }
svg.plot { display: block; margin: 0.4em 0; }
svg .band { fill: #d9f2df; }
svg .grid { stroke: #eee; stroke-width: 1; } svg .grid.major { stroke: #ccc; }
svg .target { stroke: #176c2b; stroke-width: 1.5; stroke-dasharray: 6 3; }
svg .axis { font: 11px system-ui, sans-serif; fill: #555; }
svg circle.device { fill: #1f5fbf; } svg rect.broker { fill: none; stroke: #8a4baf; stroke-width: 1.5; }
svg .title { font: bold 12px system-ui, sans-serif; fill: #333; }
/* Out of the band is red, whatever the marker: these selectors outrank the per-marker
   colours above (a plain `.out` would lose to `circle.device`). */
svg circle.device.out { fill: #d0021b; } svg rect.broker.out { fill: none; stroke: #d0021b; }
/* An interval across a disconnect the scenario caused: expected, so grey and named. */
svg circle.device.gap { fill: #fff; stroke: #888; stroke-width: 1.5; }
svg rect.broker.gap { fill: none; stroke: #888; stroke-dasharray: 2 1; }
svg .gap-note { font: 10px system-ui, sans-serif; fill: #666; }
svg circle.connected { fill: #176c2b; } svg circle.disconnected { fill: #e08a00; }
svg rect.backoff { fill: #999; } svg path.handshake-failed { stroke: #b00020; stroke-width: 2.5; }
svg line.boot { stroke: #1f5fbf; stroke-width: 2; }
svg circle.connect-failed { fill: #fff; stroke: #b00020; stroke-width: 2; }
svg line.publish { stroke: #1f5fbf; stroke-width: 1; }
svg path.time-failed { fill: #e08a00; } svg path.time-synced { fill: #176c2b; }
h2 span.pass { color: #176c2b; } h2 span.fail { color: #b00020; }
"#;

fn result_cells(report: &ScenarioReport) -> (&'static str, String, String) {
    if let Some(why) = &report.skipped {
        return ("skip", "skipped".into(), why.clone());
    }
    match &report.result {
        Ok(figure) => ("pass", "pass".into(), figure.clone()),
        Err(failed) => ("fail", failed.label(), failed.headline().to_string()),
    }
}

/// The serial log as captured, each line prefixed with its host time since the first.
fn log_text(log: &[SerialLine]) -> String {
    let mut out = String::new();
    if let Some(first) = log.first() {
        for line in log {
            let at = line.at.saturating_duration_since(first.at).as_secs_f64();
            let _ = writeln!(out, "+{at:9.3}s {}", line.text);
        }
    }
    out
}

/// The whole page.
pub fn render(reports: &[ScenarioReport], info: &RunInfo) -> String {
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let skipped = reports.iter().filter(|r| r.skipped.is_some()).count();
    let mut page =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<title>hil report</title>\n<style>");
    page.push_str(STYLE);
    page.push_str("</style>\n</head>\n<body>\n<h1>hil report</h1>\n");
    let _ = writeln!(page, "<p class=\"run\">{}</p>", escape(&info.describe()));
    let _ = writeln!(
        page,
        "<p>{} scenario(s): {} passed, {failed} failed, {skipped} skipped.</p>",
        reports.len(),
        reports.len() - failed - skipped
    );
    page.push_str("<table>\n<tr><th>scenario</th><th>result</th><th>key figure</th><th>duration</th><th>tolerance</th></tr>\n");
    for r in reports {
        let (class, word, figure) = result_cells(r);
        let _ = writeln!(
            page,
            "<tr><td><a href=\"#{id}\">{name}</a></td><td class=\"{class}\">{word}</td><td>{figure}</td><td>{secs:.1} s</td><td>{tol}</td></tr>",
            id = escape(r.name),
            name = escape(r.name),
            figure = escape(&figure),
            secs = r.duration.as_secs_f64(),
            tol = escape(r.tolerance),
        );
    }
    page.push_str("</table>\n");
    page.push_str(
        "<p class=\"legend note\"><span>● device-logged interval</span><span>□ broker-observed interval</span>\
         <span>green band: 2000 ± 150 ms</span><span>red: outside the band</span>\
         <span>○ grey, \"reconnect\": spans a disconnect (expected gap)</span></p>\n\
         <p class=\"legend note\"><span>timeline: ● green connected</span><span>● orange disconnected</span>\
         <span>grey bar: backoff</span><span>✕ red: TLS handshake failed</span><span>○ red: connect failed</span>\
         <span>blue bar: boot</span><span>blue tick: publish</span>\
         <span>◆ orange: clock sync failed or refused</span><span>◆ green: clock synced</span></p>\n",
    );
    for r in reports {
        let (class, word, _) = result_cells(r);
        let _ = writeln!(
            page,
            "<h2 id=\"{id}\">{name} <span class=\"{class}\">{word}</span></h2>",
            id = escape(r.name),
            name = escape(r.name),
        );
        if let Err(failed) = &r.result {
            let _ = writeln!(
                page,
                "<pre class=\"failure\">{}</pre>",
                escape(&failed.message)
            );
        }
        let intervals = Intervals::of(r);
        if intervals.is_empty() {
            page.push_str(
                "<p class=\"note\">No publish intervals (fewer than two publishes).</p>\n",
            );
        } else {
            let _ = writeln!(
                page,
                "<p class=\"note\">Publish intervals: {} from the device log, {} at the broker{}.</p>",
                intervals.device_ms.len(),
                intervals.broker_ms.len(),
                match r.broker_replays.len() {
                    0 => String::new(),
                    n => format!(
                        "; {n} retransmission(s) (DUP) at the broker, replays rather than cadence slots"
                    ),
                }
            );
            page.push_str(&interval_svg(&intervals));
            page.push('\n');
        }
        let events = timeline(&r.full_log);
        if events.is_empty() {
            page.push_str("<p class=\"note\">No connection events in the log.</p>\n");
        } else {
            let span = match (r.full_log.first(), r.full_log.last()) {
                (Some(a), Some(b)) => b.at.saturating_duration_since(a.at),
                _ => Duration::ZERO,
            };
            page.push_str(&timeline_svg(&events, span));
            page.push('\n');
        }
        let _ = writeln!(
            page,
            "<details{open}><summary>serial log ({} lines)</summary>\n<pre>{}</pre>\n</details>",
            r.full_log.len(),
            escape(&log_text(&r.full_log)),
            open = if r.passed() { "" } else { " open" },
        );
    }
    page.push_str("</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::error::Failed;
    use crate::serial::SerialText;

    fn render_test(reports: &[ScenarioReport]) -> String {
        let info = RunInfo {
            started: SystemTime::UNIX_EPOCH,
            commit: None,
            board: "virtual".into(),
            target: "mock".into(),
            host: "test".into(),
            firmware: None,
        };
        render(reports, &info)
    }

    /// A serial line read `ms` after `base`.
    fn line(base: Instant, ms: u64, text: &str) -> SerialLine {
        let parsed = text
            .parse()
            .map(|l| SerialText::Line(Box::new(l)))
            .unwrap_or_else(|_| SerialText::Unparsed(text.to_string()));
        SerialLine {
            at: base + Duration::from_millis(ms),
            wall: SystemTime::UNIX_EPOCH,
            text: parsed,
            said: None,
        }
    }

    fn publish(base: Instant, ms: u64, seq: u32) -> SerialLine {
        line(
            base,
            ms,
            &format!("I ({ms:8}) publish: topic=outTopic seq={seq} bytes=30 payload=x"),
        )
    }

    fn report(result: Result<String, Failed>, full_log: Vec<SerialLine>) -> ScenarioReport {
        ScenarioReport {
            name: "cadence",
            tolerance: "2000 +- 150 ms",
            result,
            duration: Duration::from_secs(3),
            log: Vec::new(),
            full_log,
            broker_publishes: Vec::new(),
            broker_replays: Vec::new(),
            skipped: None,
        }
    }

    /// Tags open and close in order (void and self-closed elements aside): enough to
    /// catch a broken template or text that escaped into markup.
    fn assert_well_formed(page: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = page;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("unclosed tag");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(!name.is_empty(), "stray '<' before {tag:?}");
            if name == "meta" {
                continue;
            }
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
            } else {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "left open: {stack:?}");
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn hostile_log_text_and_failure_messages_are_escaped() {
        let base = Instant::now();
        let hostile = "<script>alert('x')</script> & \u{1b}[31m";
        let page = render_test(&[report(
            Err(Failed::check(format!("expected 2000 ms, saw {hostile}"))),
            vec![line(base, 0, hostile)],
        )]);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; \\x1b[31m"));
        assert_well_formed(&page);
    }

    #[test]
    fn one_point_per_interval_at_the_right_height() {
        let base = Instant::now();
        let log = vec![
            line(
                base,
                0,
                "I (       0) boot: firmware=0.1.0 board=virtual client_id=x",
            ),
            publish(base, 1000, 1),
            publish(base, 3000, 2),
            publish(base, 4900, 3),
            publish(base, 7200, 4),
        ];
        let mut r = report(Ok("3 intervals".into()), log);
        r.broker_publishes = vec![
            base + Duration::from_millis(1010),
            base + Duration::from_millis(3005),
        ];
        let intervals = Intervals::of(&r);
        assert_eq!(intervals.device_ms, [2000.0, 1900.0, 2300.0]);
        assert_eq!(intervals.broker_ms, [1995.0]);
        let svg = interval_svg(&intervals);
        assert_eq!(count(&svg, "<circle class=\"device\""), 2, "{svg}");
        assert_eq!(count(&svg, "<circle class=\"device out\""), 1, "{svg}");
        assert_eq!(count(&svg, "<rect class=\"broker\""), 1, "{svg}");
        // The default 1550..2450 range, rounded out to its 200 ms tick step.
        let s = IntervalScale::new(3, intervals.device_ms.iter().copied());
        assert_eq!((s.min_ms, s.max_ms, s.step), (1400.0, 2600.0, 200.0));
        assert_eq!(s.y(2600.0), s.top);
        assert_eq!(s.y(1400.0), s.top + s.plot_height);
        assert_eq!(s.y(2000.0), s.top + s.plot_height / 2.0);
        // The on-target point sits exactly on the target line.
        let target_y = format!("y1=\"{:.1}\"", s.y(2000.0));
        assert!(
            svg.contains(&format!(
                "<line class=\"target\" x1=\"{}\" {target_y}",
                s.left
            )),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("cx=\"{:.1}\" cy=\"{:.1}\"", s.x(0), s.y(2000.0))),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("cx=\"{:.1}\" cy=\"{:.1}\"", s.x(2), s.y(2300.0))),
            "{svg}"
        );
        assert!(s.x(0) > s.left && s.x(2) < s.left + s.plot_width);
        assert_well_formed(&svg);
    }

    #[test]
    fn a_restart_breaks_the_interval_sequence() {
        let base = Instant::now();
        let log = vec![
            publish(base, 0, 1),
            publish(base, 2000, 2),
            line(
                base,
                2500,
                "I (       0) boot: firmware=0.1.0 board=virtual client_id=x",
            ),
            publish(base, 60_000, 1),
            publish(base, 62_000, 2),
        ];
        assert_eq!(
            Intervals::of(&report(Ok(String::new()), log)).device_ms,
            [2000.0, 2000.0]
        );
    }

    #[test]
    fn scenarios_without_publishes_or_lines_still_render() {
        let base = Instant::now();
        let page = render_test(&[
            report(Err(Failed::check("no line at all")), Vec::new()),
            report(
                Ok("refused".into()),
                vec![
                    line(
                        base,
                        0,
                        "I (       0) boot: firmware=0.1.0 board=virtual client_id=x",
                    ),
                    line(base, 10, "garbage that is not a log line"),
                ],
            ),
        ]);
        assert_eq!(count(&page, "No publish intervals"), 2);
        assert_eq!(count(&page, "No connection events"), 1);
        assert_eq!(count(&page, "<details"), 2);
        assert!(page.contains("<details open>"), "a failure's log is open");
        assert!(page.contains("1 passed, 1 failed, 0 skipped"), "{page}");
        assert_well_formed(&page);
    }

    #[test]
    fn a_skipped_scenario_shows_its_reason_and_counts_as_skipped() {
        let mut skipped = report(Ok("skipped: needs <faults>".into()), Vec::new());
        skipped.skipped = Some("needs <faults>".into());
        let page = render_test(&[skipped]);
        assert!(
            page.contains("<td class=\"skip\">skipped</td><td>needs &lt;faults&gt;</td>"),
            "{page}"
        );
        assert!(page.contains("0 passed, 0 failed, 1 skipped"), "{page}");
        assert_well_formed(&page);
    }

    #[test]
    fn the_timeline_places_connection_events_and_backoff_bars() {
        let base = Instant::now();
        let log = vec![
            line(
                base,
                0,
                "I (       0) boot: firmware=0.1.0 board=virtual client_id=x",
            ),
            line(
                base,
                1000,
                "I (    1000) mqtt: connected endpoint=localhost:8883 session=new handshake_ms=3",
            ),
            publish(base, 3000, 1),
            line(
                base,
                5000,
                "W (    5000) mqtt: disconnected reason=peer-closed",
            ),
            line(
                base,
                5000,
                "I (    5000) mqtt: backoff attempt=1 delay_ms=734",
            ),
            line(
                base,
                5800,
                "E (    5800) tls: handshake failed error=unknown-ca",
            ),
            line(
                base,
                6100,
                "E (    6100) mqtt: connect failed error=tcp-failed",
            ),
        ];
        let events = timeline(&log);
        let kinds: Vec<TimelineKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                TimelineKind::Boot,
                TimelineKind::Connected,
                TimelineKind::Publish,
                TimelineKind::Disconnected,
                TimelineKind::Backoff(Duration::from_millis(734)),
                TimelineKind::HandshakeFailed,
                TimelineKind::ConnectFailed,
            ]
        );
        assert_eq!(events[2].detail, "seq=1");
        assert_eq!(events[3].detail, "reason=peer-closed");
        assert_eq!(events[5].at, Duration::from_millis(5800));
        let svg = timeline_svg(&events, Duration::from_secs(10));
        assert_eq!(count(&svg, "class=\"backoff\""), 1);
        assert_eq!(count(&svg, "class=\"handshake-failed\""), 1);
        assert_eq!(count(&svg, "class=\"connect-failed\""), 1);
        assert_eq!(count(&svg, "class=\"publish\""), 1);
        // 10 s: a tick every 2 s, 0 s to 10 s.
        assert_eq!(count(&svg, " s</text>"), 6, "{svg}");
        // 10 s over a 644 px wide plot: the 0.734 s bar is 47.3 px wide.
        assert!(svg.contains("width=\"47.3\""), "{svg}");
        assert_well_formed(&svg);
    }

    #[test]
    fn ticks_are_round_and_few_whatever_the_range() {
        assert_eq!(nice_step(900.0, 6), 200.0);
        assert_eq!(nice_step(10.0, 6), 2.0);
        assert_eq!(nice_step(43_000.0, 6), 10_000.0);
        assert_eq!(nice_step(0.3, 6), 0.05);
        // dead-link: a 43 s interval among 2 s ones.
        let intervals = Intervals {
            device_ms: vec![2000.0, 2001.0, 43_012.0, 1999.0],
            broker_ms: vec![2000.0, 43_020.0],
            ..Intervals::default()
        };
        let svg = interval_svg(&intervals);
        let labels = count(&svg, " ms</text>");
        assert!(
            (2..=MAX_TICKS + 1).contains(&labels),
            "{labels} labels: {svg}"
        );
        assert_eq!(count(&svg, "<line class=\"grid"), labels, "{svg}");
        // Long timelines too.
        let events = [TimelineEvent {
            at: Duration::from_secs(300),
            kind: TimelineKind::Publish,
            detail: String::new(),
        }];
        let svg = timeline_svg(&events, Duration::from_secs(301));
        assert!(count(&svg, " s</text>") <= MAX_TICKS + 1, "{svg}");
    }

    #[test]
    fn an_out_of_band_point_is_drawn_red_whatever_its_marker() {
        // The rule for out-of-band markers must outrank the markers' own colours: same
        // element and class plus `.out`, and later in the sheet.
        let device = STYLE.find("svg circle.device {").unwrap();
        let device_out = STYLE.find("svg circle.device.out {").unwrap();
        assert!(device_out > device);
        let broker = STYLE.find("svg rect.broker {").unwrap();
        let broker_out = STYLE.find("svg rect.broker.out {").unwrap();
        assert!(broker_out > broker);
        assert!(STYLE[device_out..].starts_with("svg circle.device.out { fill: #d0021b; }"));
    }

    #[test]
    fn an_interval_across_a_disconnect_is_an_expected_gap_not_an_error() {
        let base = Instant::now();
        let log = vec![
            publish(base, 1000, 1),
            publish(base, 3000, 2),
            line(
                base,
                3500,
                "W (    3500) mqtt: disconnected reason=peer-closed",
            ),
            line(
                base,
                3600,
                "W (    3600) publish: retry topic=t seq=2 id=1 attempt=2",
            ),
            publish(base, 6000, 3),
            publish(base, 8000, 4),
            publish(base, 11_000, 5),
        ];
        let mut r = report(Ok("x".into()), log);
        r.broker_publishes = [1010, 3010, 6010, 8010]
            .iter()
            .map(|ms| base + Duration::from_millis(*ms))
            .collect();
        let intervals = Intervals::of(&r);
        // `publish: retry` is not a new publish.
        assert_eq!(intervals.device_ms, [2000.0, 3000.0, 2000.0, 3000.0]);
        assert_eq!(intervals.device_gap, [false, true, false, false]);
        // A catch-up publish right after the reconnect makes the next interval short:
        // expected too, and only that one.
        let catch_up = [0, 2000, 5200, 6000, 7999, 9999];
        let times: Vec<Option<Instant>> = catch_up
            .iter()
            .map(|ms| Some(base + Duration::from_millis(*ms)))
            .collect();
        let gaps = expected_gaps(&times, &[base + Duration::from_millis(2100)]);
        assert_eq!(gaps, [false, true, true, false, false]);
        assert_eq!(intervals.broker_gap, [false, true, false]);
        let svg = interval_svg(&intervals);
        assert_eq!(count(&svg, "<circle class=\"device gap\""), 1, "{svg}");
        assert_eq!(count(&svg, "<rect class=\"broker gap\""), 1, "{svg}");
        // The 3000 ms interval that is neither across a disconnect nor a catch-up is
        // still an error.
        assert_eq!(count(&svg, "<circle class=\"device out\""), 1, "{svg}");
        assert_eq!(count(&svg, ">reconnect</text>"), 1, "{svg}");
    }
}
