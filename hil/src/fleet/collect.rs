//! The collector: the devices' [`Record`]s and the broker's observations in, the fleet's
//! figures out. One task owns all of it, so nothing here locks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mock_broker::{Event, Observer};
use tokio::sync::{mpsc, watch};

use super::device::{Happening, Record};
use super::stats::Histogram;
use super::target::client_of;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Connection attempts started (`mqtt: connecting`).
    pub connects: u64,
    /// Devices connected at the end of the second.
    pub connected: u64,
    /// Publishes the broker received.
    pub observed: u64,
    /// The largest publish-interval error of the intervals that ended in this second,
    /// in whole milliseconds (where in the run the tail is).
    pub worst_interval_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct DeviceState {
    /// When each connection attempt started: an interval near one is not the
    /// cadence's (judged at the end, as a device's record and the broker's observation
    /// of the same moment reach the collector in either order).
    attempts: Vec<Instant>,
    /// Consecutive publishes seen at the broker: (earlier, later).
    intervals: Vec<(Instant, Instant)>,
    connected: bool,
    ever_connected: bool,
    /// The last publish the broker saw: (seq, when).
    last_seen: Option<(u32, Instant)>,
    /// First connection after the broker came back (kill-broker runs).
    back_at: Option<Instant>,
}

/// Everything the fleet measured.
#[derive(Debug)]
pub struct Figures {
    pub started: Instant,
    pub seconds: Vec<Second>,
    pub interval_error: Histogram,
    /// The same, for intervals that began once every device had connected: the fleet's
    /// cadence without the connection ramp (every TLS handshake runs on the devices'
    /// thread, so publishes wait behind them while the fleet connects).
    pub interval_error_settled: Histogram,
    pub latency: Histogram,
    pub backoff: Histogram,
    pub published: u64,
    pub observed: u64,
    pub duplicates: u64,
    /// Publishes the devices logged that the broker never received.
    pub lost: u64,
    /// The first few lost publishes: (client id, seq).
    pub lost_examples: Vec<(String, u32)>,
    pub connects: u64,
    pub reconnects: u64,
    pub connected_at_end: u64,
    pub ever_connected: u64,
    /// Intervals left out because they span a reconnect or a skipped slot.
    pub intervals_excluded: u64,
    /// Observations the broker's event stream dropped (the collector fell behind).
    pub observer_lagged: u64,
    /// When every device had connected, from the start.
    pub all_connected_after: Option<Duration>,
    /// After the broker came back: when each device connected again, from its return.
    pub back_after: Vec<Duration>,
}

/// What the collector is told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// The broker came back at this time (kill-broker runs).
    BrokerBack(Instant),
    /// The devices were told to stop at `stopped`: wait for outstanding publishes until
    /// `deadline`.
    Draining {
        stopped: Instant,
        deadline: Instant,
    },
}

pub struct Collector {
    devices: Vec<DeviceState>,
    index_of: HashMap<String, u32>,
    client_ids: Vec<String>,
    period: Duration,
    /// Publishes logged and not yet seen at the broker: (device, seq) → when.
    outstanding: HashMap<(u32, u32), Instant>,
    /// Publishes seen at the broker before their record reached the collector (the two
    /// arrive on separate channels): (device, seq) → when seen.
    seen_first: HashMap<(u32, u32), Instant>,
    broker_back: Option<Instant>,
    stopped: Option<Instant>,
    progress_every: Option<Duration>,
    figures: Figures,
}

impl Collector {
    /// For devices with `client_ids` (index = device number) publishing every `period`.
    pub fn new(
        client_ids: &[String],
        period: Duration,
        started: Instant,
        progress_every: Option<Duration>,
    ) -> Self {
        Self {
            devices: vec![DeviceState::default(); client_ids.len()],
            index_of: client_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i as u32))
                .collect(),
            client_ids: client_ids.to_vec(),
            period,
            outstanding: HashMap::new(),
            seen_first: HashMap::new(),
            broker_back: None,
            stopped: None,
            progress_every,
            figures: Figures {
                started,
                seconds: Vec::new(),
                interval_error: Histogram::default(),
                interval_error_settled: Histogram::default(),
                latency: Histogram::default(),
                backoff: Histogram::default(),
                published: 0,
                observed: 0,
                duplicates: 0,
                lost: 0,
                lost_examples: Vec::new(),
                connects: 0,
                reconnects: 0,
                connected_at_end: 0,
                ever_connected: 0,
                intervals_excluded: 0,
                observer_lagged: 0,
                all_connected_after: None,
                back_after: Vec::new(),
            },
        }
    }

    /// Collect until told to drain and every publish is seen (or the drain deadline).
    pub async fn run(
        mut self,
        mut records: mpsc::UnboundedReceiver<Record>,
        mut observer: Observer,
        mut phase: watch::Receiver<Phase>,
    ) -> Figures {
        let started = self.figures.started;
        let mut progress = self.progress_every.map(|every| {
            tokio::time::interval_at(tokio::time::Instant::from_std(started) + every, every)
        });
        let mut last_progress = (started, 0u64);
        let mut records_open = true;
        loop {
            let draining = match *phase.borrow() {
                Phase::Draining { stopped, deadline } => {
                    self.stopped = Some(stopped);
                    Some(deadline)
                }
                _ => None,
            };
            if let Some(deadline) = draining
                && (self.outstanding.is_empty() || Instant::now() >= deadline)
                && !records_open
            {
                break;
            }
            let drain_timer = async {
                match draining {
                    Some(deadline) => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await
                    }
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match progress.as_mut() {
                    Some(p) => p.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                record = records.recv(), if records_open => match record {
                    Some(record) => self.record(record),
                    None => records_open = false,
                },
                event = observer.next() => match event {
                    Some(Ok(Event::Publish(p))) => {
                        if let Some(device) = client_of(&p.topic).and_then(|id| self.index_of.get(id)).copied() {
                            let seq = firmware_core::session::hello_seq(&p.payload);
                            if let Some(seq) = seq {
                                self.observed(device, seq, p.dup, p.received_at);
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(lagged)) => self.figures.observer_lagged += lagged.0,
                    // The broker's stream ended (shut down): nothing more to see.
                    None => if draining.is_some() { break } else { std::future::pending::<()>().await },
                },
                changed = phase.changed() => {
                    if changed.is_err() { break; }
                    if let Phase::BrokerBack(at) = *phase.borrow() {
                        self.broker_back = Some(at);
                    }
                }
                _ = tick => {
                    let now = Instant::now();
                    let observed = self.figures.observed;
                    let rate = (observed - last_progress.1) as f64
                        / now.duration_since(last_progress.0).as_secs_f64().max(1e-3);
                    last_progress = (now, observed);
                    eprintln!(
                        "fleet: {:>5.0}s connected {}/{} publishes/s {:.0} connects {} reconnects {} lost-so-far {}",
                        now.duration_since(started).as_secs_f64(),
                        self.connected_now(),
                        self.devices.len(),
                        rate,
                        self.figures.connects,
                        self.figures.reconnects,
                        self.outstanding.values().filter(|at| now.duration_since(**at) > Duration::from_secs(30)).count(),
                    );
                }
                _ = drain_timer => {}
            }
        }
        self.finish()
    }

    fn connected_now(&self) -> u64 {
        self.devices.iter().filter(|d| d.connected).count() as u64
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let index = at.saturating_duration_since(self.figures.started).as_secs() as usize;
        let carry = self.figures.seconds.last().map_or(0, |s| s.connected);
        while self.figures.seconds.len() <= index {
            self.figures.seconds.push(Second {
                connected: carry,
                ..Second::default()
            });
        }
        &mut self.figures.seconds[index]
    }

    fn record(&mut self, record: Record) {
        let total = self.devices.len() as u64;
        let Some(device) = self.devices.get_mut(record.device as usize) else {
            return;
        };
        match record.what {
            Happening::Connecting => {
                self.figures.connects += 1;
                if device.ever_connected {
                    self.figures.reconnects += 1;
                }
                device.connected = false;
                device.attempts.push(record.at);
                self.second(record.at).connects += 1;
            }
            Happening::Connected => {
                device.connected = true;
                if !device.ever_connected {
                    device.ever_connected = true;
                    self.figures.ever_connected += 1;
                    if self.figures.ever_connected == total {
                        self.figures.all_connected_after =
                            Some(record.at.saturating_duration_since(self.figures.started));
                    }
                }
                if let Some(back) = self.broker_back
                    && device.back_at.is_none()
                    && record.at >= back
                {
                    device.back_at = Some(record.at);
                    self.figures
                        .back_after
                        .push(record.at.saturating_duration_since(back));
                }
            }
            Happening::Disconnected => device.connected = false,
            Happening::Backoff { delay_ms } => {
                self.figures.backoff.add_us(delay_ms.saturating_mul(1000));
            }
            Happening::Published { seq } => {
                self.figures.published += 1;
                match self.seen_first.remove(&(record.device, seq)) {
                    Some(seen) => self
                        .figures
                        .latency
                        .add_us(seen.saturating_duration_since(record.at).as_micros() as u64),
                    None => {
                        self.outstanding.insert((record.device, seq), record.at);
                    }
                }
            }
        }
        let connected = self.connected_now();
        self.second(record.at).connected = connected;
    }

    fn observed(&mut self, device: u32, seq: u32, dup: bool, at: Instant) {
        self.figures.observed += 1;
        self.second(at).observed += 1;
        if let Some(published) = self.outstanding.remove(&(device, seq)) {
            self.figures
                .latency
                .add_us(at.saturating_duration_since(published).as_micros() as u64);
        } else if dup {
            self.figures.duplicates += 1;
        } else {
            self.seen_first.entry((device, seq)).or_insert(at);
        }
        if dup {
            return;
        }
        let Some(state) = self.devices.get_mut(device as usize) else {
            return;
        };
        if let Some((last_seq, last_at)) = state.last_seen {
            if seq == last_seq.wrapping_add(1) {
                state.intervals.push((last_at, at));
            } else {
                self.figures.intervals_excluded += 1;
            }
        }
        state.last_seen = Some((seq, at));
    }

    fn finish(mut self) -> Figures {
        let settled = self
            .figures
            .all_connected_after
            .map(|after| self.figures.started + after);
        let stopped = self.stopped;
        let devices = std::mem::take(&mut self.devices);
        for state in &devices {
            for (earlier, later) in &state.intervals {
                // The first publish after a reconnect may catch up a missed slot, so its
                // interval to the next slot is the cadence's realignment, not its error.
                // One that ends after every device was told to stop at once is the
                // goodbye's, not the cadence's (and lies past the per-second series).
                let from = earlier.checked_sub(self.period).unwrap_or(*earlier);
                if state.attempts.iter().any(|a| *a > from && a <= later)
                    || stopped.is_some_and(|at| *later >= at)
                {
                    self.figures.intervals_excluded += 1;
                    continue;
                }
                let error = later
                    .saturating_duration_since(*earlier)
                    .abs_diff(self.period);
                let us = error.as_micros() as u64;
                self.figures.interval_error.add_us(us);
                if settled.is_some_and(|at| *earlier >= at) {
                    self.figures.interval_error_settled.add_us(us);
                }
                let second = self.second(*later);
                second.worst_interval_ms = second.worst_interval_ms.max(us / 1000);
            }
        }
        self.devices = devices;
        self.figures.lost = self.outstanding.len() as u64;
        let mut lost: Vec<(u32, u32)> = self.outstanding.keys().copied().collect();
        lost.sort();
        self.figures.lost_examples = lost
            .into_iter()
            .take(10)
            .map(|(device, seq)| (self.client_ids[device as usize].clone(), seq))
            .collect();
        // Connected at the end of the last whole second before the devices were told to
        // stop (their goodbyes are not a loss of connection).
        let stopped = self.stopped.unwrap_or_else(Instant::now);
        let last_whole = stopped
            .saturating_duration_since(self.figures.started)
            .as_secs()
            .checked_sub(1);
        // The series runs to the stop even if nothing happened in its last seconds.
        if let Some(i) = last_whole {
            self.second(self.figures.started + Duration::from_secs(i));
        }
        self.figures.connected_at_end = last_whole
            .and_then(|i| self.figures.seconds.get(i as usize))
            .map_or(0, |s| s.connected);
        self.figures.seconds.truncate(
            stopped
                .saturating_duration_since(self.figures.started)
                .as_secs() as usize,
        );
        self.figures.back_after.sort();
        self.figures
    }
}
