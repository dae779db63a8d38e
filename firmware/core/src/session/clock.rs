//! The wall clock: which SNTP times are believed, and the periodic re-sync while the
//! device runs.

use super::*;

impl<R: RandomSource> Session<R> {
    /// Whether a periodic re-sync may run now: only once the clock is in use (connecting
    /// or connected). Before that, the time phase is the one syncing.
    pub(super) fn resync_active(&self) -> bool {
        matches!(self.phase, Phase::Connect | Phase::Subscribe | Phase::Run)
    }

    /// Why a time from SNTP cannot be right, if it cannot.
    pub(super) fn implausible(&self, epoch: u64) -> Option<ImplausibleTime> {
        if epoch < self.settings.clock_floor {
            return Some(ImplausibleTime::BeforeBuild);
        }
        let margin = CERT_EXPIRY_MARGIN.as_millis() / 1000;
        match self.cert_not_after {
            Some(not_after) if epoch > not_after.saturating_add(margin) => {
                Some(ImplausibleTime::AfterCertExpiry)
            }
            _ => None,
        }
    }

    /// SNTP gave no usable time: retry after a backoff of at least `at_least`. In the
    /// time phase that is the phase's retry; later, the clock in use stays and the re-sync
    /// is retried on its own backoff.
    pub(super) fn time_failed(&mut self, now: Instant, at_least: Duration, out: &mut Out<'_>) {
        if self.phase == Phase::Time {
            self.schedule_retry_at_least(now, Stage::Time, at_least, out);
        } else if matches!(self.resync, Request::Awaiting(_)) {
            let delay = self.resync_retry.next_delay(&mut self.rng).max(at_least);
            Self::log(
                out,
                Line::backoff(
                    Self::uptime_ms(now),
                    Stage::Time,
                    self.resync_retry.attempt(),
                    delay.as_millis(),
                ),
            );
            self.resync = Request::Due(now + delay);
        }
    }

    /// The periodic clock re-sync: ask for it when due, retry it when it timed out.
    pub(super) fn service_resync(&mut self, now: Instant, out: &mut Out<'_>) {
        if !self.resync_active() {
            return;
        }
        match self.resync {
            Request::Due(t) if now >= t => {
                out(Action::SyncTime);
                self.resync = Request::Awaiting(now + self.settings.request_timeout);
            }
            Request::Awaiting(t) if now >= t => {
                Self::log(
                    out,
                    Line::time_sync_failed(
                        Self::uptime_ms(now),
                        TimeError::Timeout,
                        self.ntp_server(),
                    ),
                );
                self.time_failed(now, Duration::ZERO, out);
            }
            _ => {}
        }
    }
}
