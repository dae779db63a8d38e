//! The boot phases: config, credentials, network and clock, before a connection.

use super::*;

impl<R: RandomSource> Session<R> {
    /// Config, credentials, network and clock: the phases before a connection.
    pub(super) fn on_boot_event(&mut self, now: Instant, event: Event<'_>, out: &mut Out<'_>) {
        let t = Self::uptime_ms(now);
        match event {
            Event::Start if self.phase == Phase::Idle => self.enter(Phase::Config, now),
            Event::ConfigLoaded(config) => {
                if self.phase != Phase::Config {
                    return;
                }
                if let Err(e) = config.validate() {
                    Self::log(out, Line::config_failed(t, ConfigFailure::Invalid(e)));
                    self.schedule_retry(now, Stage::Config, out);
                    return;
                }
                self.load_profile(config);
                Self::log(
                    out,
                    Line::boot(
                        t,
                        self.settings.firmware,
                        self.settings.board,
                        &config.client_id,
                    ),
                );
                Self::log(out, Line::config_loaded(t, config));
                self.retry.reset();
                self.enter(Phase::Creds, now);
            }
            Event::ConfigFailed(failure) => {
                Self::log(out, Line::config_failed(t, failure));
                if self.phase == Phase::Config {
                    self.schedule_retry(now, Stage::Config, out);
                }
            }
            Event::CredsLoaded {
                cert,
                key,
                ca,
                source,
                cert_not_after,
            } => {
                if self.phase != Phase::Creds {
                    return;
                }
                Self::log(out, Line::creds(t, cert, key, ca, source));
                self.cert_not_after = cert_not_after;
                self.retry.reset();
                self.after_creds(now);
            }
            Event::CredsFailed { file, error } => {
                Self::log(out, Line::creds_failed(t, file, error));
                if self.phase == Phase::Creds {
                    self.schedule_retry(now, Stage::Creds, out);
                }
            }
            Event::NetUp { local_addr } => {
                self.net_up = true;
                Self::log(out, Line::wifi_up(t, local_addr));
                if self.phase == Phase::Network {
                    self.retry.reset();
                    self.after_network(now);
                }
            }
            Event::NetDown(reason) => {
                self.net_up = false;
                Self::log(out, Line::wifi_down(t, reason));
                match self.phase {
                    Phase::Subscribe | Phase::Run => {
                        out(Action::Disconnect);
                        self.connection_lost(now, Lost::Reason(DisconnectReason::NetworkDown), out);
                    }
                    Phase::Connect => {
                        if matches!(self.request, Request::Awaiting(_)) {
                            out(Action::Disconnect);
                        }
                        self.enter(Phase::Network, now);
                    }
                    Phase::Time => self.enter(Phase::Network, now),
                    Phase::Network => self.schedule_retry(now, Stage::Wifi, out),
                    _ => {}
                }
            }
            Event::TimeSynced(epoch) => {
                if let Some(reason) = self.implausible(epoch) {
                    Self::log(out, Line::time_implausible(t, epoch, reason));
                    self.time_failed(now, Duration::ZERO, out);
                    return;
                }
                self.clock = Some((epoch, now));
                Self::log(out, Line::time_synced(t, epoch));
                self.resync_retry.reset();
                self.resync = match &self.profile {
                    Some(p) => Request::Due(now + p.resync),
                    None => Request::None,
                };
                if self.phase == Phase::Time {
                    self.retry.reset();
                    self.enter(Phase::Connect, now);
                }
            }
            Event::TimeSyncFailed(error) => {
                Self::log(out, Line::time_sync_failed(t, error, self.ntp_server()));
                self.time_failed(now, Duration::ZERO, out);
            }
            Event::TimeKissOfDeath(code) => {
                Self::log(out, Line::time_kiss_of_death(t, code));
                self.time_failed(now, KISS_OF_DEATH_BACKOFF, out);
            }
            // Other kinds of event go to their own handler.
            _ => {}
        }
    }
}
