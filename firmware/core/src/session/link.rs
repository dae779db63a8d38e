//! The MQTT link: CONNACK, SUBACK and how a connection ended; its liveness while
//! connected (when the broker was last heard from and when the device last sent, for
//! keep-alive pings and dead-link detection).

use super::*;

/// Link liveness while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) last_rx: Instant,
    pub(super) last_tx: Instant,
    pub(super) ping_sent: Option<Instant>,
}

/// No traffic from the broker for this long means the link is dead: 1.5x keep-alive.
pub(super) fn dead_after(keepalive: Duration) -> Duration {
    keepalive.mul_div(3, 2)
}

impl<R: RandomSource> Session<R> {
    /// The MQTT connection: CONNACK, SUBACK, and how it ended.
    pub(super) fn on_link_event(&mut self, now: Instant, event: Event<'_>, out: &mut Out<'_>) {
        let t = Self::uptime_ms(now);
        match event {
            Event::Connected {
                session_present,
                handshake_ms,
            } => {
                if self.phase != Phase::Connect {
                    return;
                }
                if let Some(p) = &self.profile {
                    Self::log(
                        out,
                        Line::mqtt_connected(t, &p.host, p.port, session_present, handshake_ms),
                    );
                }
                self.connected_since = Some(now);
                self.link_qos = self.profile.as_ref().map_or(Qos::AtLeastOnce, |p| p.qos);
                self.link = Link {
                    last_rx: now,
                    last_tx: now,
                    ping_sent: None,
                };
                // A fresh session holds no subscription; a resumed one holds what was
                // granted in it (MQTT 5 §3.2.2.1.1), and subscribing again would only
                // repeat the request (Device Advisor's persistent-session case).
                self.subscription_held &= session_present;
                if self.subscription_held && !self.settings.misbehaviour.resubscribe_on_resume {
                    if let Some(p) = &self.profile {
                        Self::log(
                            out,
                            Line::mqtt_subscription_resumed(t, &p.sub_topic, p.qos.as_u8()),
                        );
                    }
                    self.start_running(now, out);
                } else {
                    self.enter(Phase::Subscribe, now);
                }
            }
            Event::ConnectFailed(failure) if self.phase == Phase::Connect => {
                self.connect_failed(now, failure, out);
            }
            Event::MaxQos(max) => {
                if !self.is_connected() {
                    return;
                }
                if let Some(p) = &self.profile
                    && max.as_u8() < p.qos.as_u8()
                {
                    Self::log(
                        out,
                        Line::mqtt_qos_downgraded(t, max.as_u8(), p.qos.as_u8()),
                    );
                    self.link_qos = max;
                }
            }
            Event::Subscribed => {
                if self.phase != Phase::Subscribe {
                    return;
                }
                self.received(now);
                if let Some(p) = &self.profile {
                    Self::log(out, Line::mqtt_subscribed(t, &p.sub_topic, p.qos.as_u8()));
                }
                self.subscription_held = true;
                self.start_running(now, out);
            }
            Event::SubscribeFailed(error) => {
                if self.phase != Phase::Subscribe {
                    return;
                }
                self.subscribe_failed(now, error, out);
            }
            Event::Disconnected(reason) => self.closed_by_peer(now, Lost::Reason(reason), out),
            Event::ServerDisconnected { code } => {
                self.closed_by_peer(now, Lost::ServerDisconnect(code), out)
            }
            Event::ProtocolViolation(violation) => {
                Self::log(out, Line::mqtt_protocol_violation(t, violation));
                self.closed_by_peer(now, Lost::Reason(DisconnectReason::Protocol), out);
            }
            // Other kinds of event go to their own handler.
            _ => {}
        }
    }

    /// Subscribed (or the session kept the subscription): publish on the cadence and
    /// send again what is still unacknowledged.
    pub(super) fn start_running(&mut self, now: Instant, out: &mut Out<'_>) {
        self.request = Request::None;
        self.phase = Phase::Run;
        self.cadence.start(now);
        self.retransmit_all(now, out);
    }
}
