//! The fleet's report: `fleet.json` (versioned, mergeable) and `fleet.html` (one page, an
//! inline SVG plot, no external assets), and `hil fleet merge` over several processes'
//! JSON files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::collect::{Figures, Second};
use super::stats::Histogram;
use super::target::TargetKind;
use crate::error::RigError;

/// The JSON file's schema name and version; bumped when a field changes meaning.
pub const SCHEMA: &str = "hil-fleet/2";

/// What the run was, besides what it measured.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: TargetKind,
    /// `HOST:PORT` of a broker this process did not start (`--broker`, AWS IoT); `None`:
    /// started by this process.
    pub shared_broker: Option<String>,
    pub devices: u32,
    pub id_offset: u32,
    pub period: Duration,
    pub duration: Duration,
    pub ramp: Duration,
    pub started_wall: SystemTime,
    /// Broker down and back, seconds from the start.
    pub outage: Option<(f64, f64)>,
    /// Seconds spent starting or reaching the broker, issuing identities and building
    /// images (before the start).
    pub issue_s: f64,
    pub cpu_s: f64,
    pub wall_s: f64,
    pub rss_before_kb: u64,
    pub rss_kb: u64,
    pub peak_kb: u64,
    /// Clients the broker itself counted at the end, if it can say.
    pub broker_clients: Option<usize>,
    /// The host's 1-minute load average at the end (the machine may be shared).
    pub load: Option<f64>,
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn quantile_s(sorted: &[Duration], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64())
}

/// The run as JSON (schema [`SCHEMA`]).
pub fn to_json(run: &RunInfo, f: &Figures) -> Value {
    let started_ms = run
        .started_wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let devices = f64::from(run.devices.max(1));
    let peak_connects = f.seconds.iter().map(|s| s.connects).max().unwrap_or(0);
    let storm = run.outage.map(|(down, back)| {
        let back_index = back as usize;
        let after: Vec<&Second> = f.seconds.iter().skip(back_index).collect();
        json!({
            "down_at_s": down,
            "back_at_s": back,
            "reconnected": f.back_after.len(),
            "peak_connects_per_s": after.iter().map(|s| s.connects).max().unwrap_or(0),
            "seconds_with_connects": after.iter().filter(|s| s.connects > 0).count(),
            // When devices were connected again, seconds after the broker's return.
            "back_after_s": {
                "first": f.back_after.first().map(Duration::as_secs_f64),
                "p10": quantile_s(&f.back_after, 0.10),
                "p50": quantile_s(&f.back_after, 0.50),
                "p90": quantile_s(&f.back_after, 0.90),
                "last": f.back_after.last().map(Duration::as_secs_f64),
            },
        })
    });
    json!({
        "schema": SCHEMA,
        "runs": [{
            "target": run.target.name(),
            "shared_broker": run.shared_broker,
            "devices": run.devices,
            "id_offset": run.id_offset,
            "started_unix_ms": started_ms,
            "period_ms": run.period.as_millis() as u64,
            "duration_s": run.duration.as_secs_f64(),
            "ramp_s": run.ramp.as_secs_f64(),
            "issue_s": run.issue_s,
            "load_average_1m": run.load,
            "broker_clients_at_end": run.broker_clients,
        }],
        "devices": run.devices,
        "connected_at_end": f.connected_at_end,
        "ever_connected": f.ever_connected,
        "all_connected_after_s": f.all_connected_after.map(|d| d.as_secs_f64()),
        "published": f.published,
        "observed": f.observed,
        "duplicates": f.duplicates,
        "lost_qos1": f.lost,
        "lost_examples": f.lost_examples.iter().map(|(id, seq)| json!({"client_id": id, "seq": seq})).collect::<Vec<_>>(),
        "observer_lagged": f.observer_lagged,
        "connects": f.connects,
        "reconnects": f.reconnects,
        "peak_connects_per_s": peak_connects,
        "interval_error": f.interval_error.summary(),
        "interval_error_histogram": f.interval_error.to_json(),
        "interval_error_settled": f.interval_error_settled.summary(),
        "interval_error_settled_histogram": f.interval_error_settled.to_json(),
        "intervals_excluded": f.intervals_excluded,
        "latency": f.latency.summary(),
        "latency_histogram": f.latency.to_json(),
        "backoff": f.backoff.summary(),
        "backoff_histogram": f.backoff.to_json(),
        "storm": storm,
        "host": {
            "cpu_s": run.cpu_s,
            "wall_s": run.wall_s,
            "cpu_percent_of_one_core": 100.0 * run.cpu_s / run.wall_s.max(1e-3),
            "cpu_ms_per_device_per_s": 1000.0 * run.cpu_s / run.wall_s.max(1e-3) / devices,
            "rss_kb": run.rss_kb,
            "peak_rss_kb": run.peak_kb,
            "rss_kb_per_device": run.rss_kb.saturating_sub(run.rss_before_kb) as f64 / devices,
        },
        // One entry per second from the start: [connects, connected at its end, publishes
        // seen, worst interval error (ms) of the intervals that ended in it].
        "seconds": f.seconds.iter().map(|s| [s.connects, s.connected, s.observed, s.worst_interval_ms]).collect::<Vec<_>>(),
    })
}

/// Write `fleet.json` and `fleet.html` into `dir`.
pub fn write(dir: &Path, json: &Value) -> Result<(PathBuf, PathBuf), RigError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| RigError::io(format!("create {}", dir.display()), e))?;
    let json_path = dir.join("fleet.json");
    let text = serde_json::to_string_pretty(json).map_err(|e| RigError::make("fleet.json", e))?;
    std::fs::write(&json_path, text)
        .map_err(|e| RigError::io(format!("write {}", json_path.display()), e))?;
    let html_path = dir.join("fleet.html");
    std::fs::write(&html_path, html(json))
        .map_err(|e| RigError::io(format!("write {}", html_path.display()), e))?;
    Ok((json_path, html_path))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.1} ms"))
}

/// One summary line per figure, for the terminal and the page.
pub fn summary_rows(j: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "devices connected at end".into(),
            format!("{} / {}", j["connected_at_end"], j["devices"]),
        ),
        (
            "all connected after".into(),
            j["all_connected_after_s"]
                .as_f64()
                .map_or("never".into(), |s| format!("{s:.1} s")),
        ),
        (
            "publish interval error (broker)".into(),
            format!(
                "mean {} p99 {} max {} ({} intervals)",
                ms(&j["interval_error"]["mean_ms"]),
                ms(&j["interval_error"]["p99_ms"]),
                ms(&j["interval_error"]["max_ms"]),
                j["interval_error"]["count"]
            ),
        ),
        (
            "  once all were connected".into(),
            format!(
                "mean {} p99 {} max {} ({} intervals)",
                ms(&j["interval_error_settled"]["mean_ms"]),
                ms(&j["interval_error_settled"]["p99_ms"]),
                ms(&j["interval_error_settled"]["max_ms"]),
                j["interval_error_settled"]["count"]
            ),
        ),
        (
            "publish-to-observe latency".into(),
            format!(
                "p50 {} p99 {}",
                ms(&j["latency"]["p50_ms"]),
                ms(&j["latency"]["p99_ms"])
            ),
        ),
        (
            "QoS 1 publishes".into(),
            format!(
                "{} published, {} lost, {} duplicates",
                j["published"], j["lost_qos1"], j["duplicates"]
            ),
        ),
        (
            "CONNECTs".into(),
            format!(
                "{} ({} reconnects), peak {}/s",
                j["connects"], j["reconnects"], j["peak_connects_per_s"]
            ),
        ),
        (
            "host CPU".into(),
            format!(
                "{:.0}% of one core, {:.2} ms/s per device",
                j["host"]["cpu_percent_of_one_core"].as_f64().unwrap_or(0.0),
                j["host"]["cpu_ms_per_device_per_s"].as_f64().unwrap_or(0.0)
            ),
        ),
        (
            "host memory".into(),
            format!(
                "{:.0} kB per device ({} kB resident)",
                j["host"]["rss_kb_per_device"].as_f64().unwrap_or(0.0),
                j["host"]["rss_kb"]
            ),
        ),
    ];
    if !j["storm"].is_null() {
        let s = &j["storm"];
        let sec = |v: &Value| v.as_f64().map_or("–".into(), |x| format!("{x:.1} s"));
        rows.push((
            "reconnect storm".into(),
            format!(
                "broker down {} → back {}; peak {} CONNECTs/s over {} s; back after p10 {} p50 {} p90 {} last {}; backoff p50 {} max {}",
                sec(&s["down_at_s"]),
                sec(&s["back_at_s"]),
                s["peak_connects_per_s"],
                s["seconds_with_connects"],
                sec(&s["back_after_s"]["p10"]),
                sec(&s["back_after_s"]["p50"]),
                sec(&s["back_after_s"]["p90"]),
                sec(&s["back_after_s"]["last"]),
                ms(&j["backoff"]["p50_ms"]),
                ms(&j["backoff"]["max_ms"]),
            ),
        ));
    }
    rows
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plot: CONNECTs per second (bars, left axis) and devices connected (line, right
/// axis) over the run.
pub fn svg(seconds: &[[u64; 3]], devices: u64) -> String {
    let (w, h, left, bottom, top, right) = (900.0, 320.0, 50.0, 30.0, 20.0, 60.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let n = seconds.len().max(1) as f64;
    let max_connects = seconds.iter().map(|s| s[0]).max().unwrap_or(0).max(1) as f64;
    let max_connected = devices.max(1) as f64;
    let x = |i: f64| left + plot_w * i / n;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>"
    );
    for (i, s) in seconds.iter().enumerate() {
        if s[0] == 0 {
            continue;
        }
        let bar_h = plot_h * s[0] as f64 / max_connects;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\" fill=\"#e07b39\"><title>{i} s: {} CONNECTs</title></rect>",
            x(i as f64),
            top + plot_h - bar_h,
            (plot_w / n).max(1.0),
            s[0]
        );
    }
    let points: Vec<String> = seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{:.1},{:.1}",
                x(i as f64 + 1.0),
                top + plot_h - plot_h * s[1] as f64 / max_connected
            )
        })
        .collect();
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    );
    let _ = write!(
        out,
        "<text x=\"{left}\" y=\"{:.0}\">0 s</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{} s</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\" fill=\"#e07b39\">{max_connects:.0}/s</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" fill=\"#2a6fdb\">{max_connected:.0}</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" fill=\"#e07b39\">CONNECTs per second</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" fill=\"#2a6fdb\" text-anchor=\"end\">devices connected</text></svg>",
        h - 10.0,
        left + plot_w,
        h - 10.0,
        seconds.len(),
        left - 4.0,
        top + 10.0,
        left + plot_w + 4.0,
        top + 10.0,
        left + 6.0,
        top - 6.0,
        left + plot_w,
        top - 6.0,
    );
    out
}

/// The page: the figures as a table, the plot, the runs it came from.
pub fn html(j: &Value) -> String {
    let seconds: Vec<[u64; 3]> = j["seconds"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let at = |i: usize| s.get(i).and_then(Value::as_u64).unwrap_or(0);
                    [at(0), at(1), at(2)]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rows = String::new();
    for (name, value) in summary_rows(j) {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&name),
            escape(&value)
        );
    }
    let runs = serde_json::to_string_pretty(&j["runs"]).unwrap_or_default();
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hil fleet: {} devices</title>\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}\
         td,th{{vertical-align:top}}pre{{background:#f4f4f4;padding:1em}}</style></head><body>\
         <h1>Fleet of {} virtual devices</h1><table>{rows}</table>\
         <h2>CONNECTs per second and devices connected</h2>{}\
         <h2>Runs</h2><pre>{}</pre></body></html>\n",
        j["devices"],
        j["devices"],
        svg(&seconds, j["devices"].as_u64().unwrap_or(0)),
        escape(&runs)
    )
}

/// The histograms a fleet.json holds, each as `KEY` (summary) and `KEY_histogram`.
const HISTOGRAMS: [&str; 4] = [
    "interval_error",
    "interval_error_settled",
    "latency",
    "backoff",
];

/// Merge the JSON results of several `hil fleet` processes that ran against one broker
/// at the same time: counts add up, histograms merge (so percentiles are those of all
/// devices), the per-second series line up on the wall clock.
pub fn merge(files: &[(PathBuf, Value)]) -> Result<Value, RigError> {
    let bad = |path: &Path, problem: String| RigError::make(path.display().to_string(), problem);
    let Some(first) = files.first() else {
        return Err(RigError::make("hil fleet merge", "no files given"));
    };
    let mut start_ms = u64::MAX;
    for (path, j) in files {
        if j["schema"] != SCHEMA {
            return Err(bad(
                path,
                format!("schema is {}, expected \"{SCHEMA}\"", j["schema"]),
            ));
        }
        for run in j["runs"].as_array().into_iter().flatten() {
            let started = run["started_unix_ms"]
                .as_u64()
                .ok_or_else(|| bad(path, "runs[].started_unix_ms missing".into()))?;
            start_ms = start_ms.min(started);
        }
    }
    let mut out = first.1.clone();
    let sum = |key: &str| -> u64 {
        files
            .iter()
            .map(|(_, j)| j[key].as_u64().unwrap_or(0))
            .sum()
    };
    for key in [
        "devices",
        "connected_at_end",
        "ever_connected",
        "published",
        "observed",
        "duplicates",
        "lost_qos1",
        "observer_lagged",
        "connects",
        "reconnects",
        "intervals_excluded",
    ] {
        out[key] = json!(sum(key));
    }
    let mut runs = Vec::new();
    let mut series: Vec<[u64; 4]> = Vec::new();
    let (mut cpu_s, mut rss_kb, mut rss_per_device_sum) = (0.0, 0u64, 0.0);
    let mut all_connected_after: Option<f64> = Some(0.0);
    for (path, j) in files {
        runs.extend(j["runs"].as_array().cloned().unwrap_or_default());
        let started = j["runs"][0]["started_unix_ms"].as_u64().unwrap_or(start_ms);
        let shift = ((started - start_ms) / 1000) as usize;
        for (i, s) in j["seconds"].as_array().into_iter().flatten().enumerate() {
            if series.len() <= i + shift {
                series.resize(i + shift + 1, [0; 4]);
            }
            for (k, slot) in series[i + shift].iter_mut().enumerate() {
                let value = s.get(k).and_then(Value::as_u64).unwrap_or(0);
                // Counts add up; the worst interval error is the worst of them.
                *slot = if k == 3 {
                    (*slot).max(value)
                } else {
                    *slot + value
                };
            }
        }
        cpu_s += j["host"]["cpu_s"].as_f64().unwrap_or(0.0);
        rss_kb += j["host"]["rss_kb"].as_u64().unwrap_or(0);
        rss_per_device_sum += j["host"]["rss_kb_per_device"].as_f64().unwrap_or(0.0)
            * j["devices"].as_f64().unwrap_or(0.0);
        all_connected_after = match (all_connected_after, j["all_connected_after_s"].as_f64()) {
            (Some(a), Some(b)) => Some(a.max(b + (started - start_ms) as f64 / 1000.0)),
            _ => None,
        };
        for key in HISTOGRAMS {
            Histogram::from_json(&j[format!("{key}_histogram")])
                .map_err(|e| bad(path, format!("{key}_histogram: {e}")))?;
        }
    }
    for key in HISTOGRAMS {
        let mut h = Histogram::default();
        for (_, j) in files {
            h.merge(&Histogram::from_json(&j[format!("{key}_histogram")]).unwrap_or_default());
        }
        out[key] = h.summary();
        out[format!("{key}_histogram")] = h.to_json();
    }
    let devices = out["devices"].as_f64().unwrap_or(1.0).max(1.0);
    let wall_s = files
        .iter()
        .map(|(_, j)| j["host"]["wall_s"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    out["runs"] = json!(runs);
    out["all_connected_after_s"] = json!(all_connected_after);
    out["peak_connects_per_s"] = json!(series.iter().map(|s| s[0]).max().unwrap_or(0));
    out["seconds"] = json!(series);
    // Storms are per process (each saw its own outage); the merged file keeps the first
    // process's and every process's own remains in its file.
    out["host"] = json!({
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "cpu_percent_of_one_core": 100.0 * cpu_s / wall_s.max(1e-3),
        "cpu_ms_per_device_per_s": 1000.0 * cpu_s / wall_s.max(1e-3) / devices,
        "rss_kb": rss_kb,
        "peak_rss_kb": null,
        "rss_kb_per_device": rss_per_device_sum / devices,
    });
    Ok(out)
}
