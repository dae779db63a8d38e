//! Publishing on the cadence, and QoS 1 publishes sent again (same packet id, DUP) until
//! acknowledged.

use super::*;

impl<R: RandomSource> Session<R> {
    pub(super) fn publish_next(&mut self, now: Instant, out: &mut Out<'_>) {
        let Some(p) = &self.profile else { return };
        let t = Self::uptime_ms(now);
        let qos = self.link_qos;
        if qos == Qos::AtLeastOnce && self.in_flight.is_full() {
            Self::log(out, Line::publish_skipped(t, 1, SkipReason::InFlightFull));
            return;
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let payload = hello_payload(seq);
        Self::log(out, Line::publish(t, &p.pub_topic, seq, payload.as_bytes()));
        let packet_id = match qos {
            Qos::AtMostOnce => None,
            Qos::AtLeastOnce => {
                let id = next_free_id(&mut self.next_packet_id, &self.in_flight);
                let _ = self.in_flight.push(InFlight {
                    seq,
                    packet_id: id,
                    payload: payload.clone(),
                    sent_at: now,
                    sends: 1,
                });
                Some(id)
            }
        };
        out(Action::Publish(Publish {
            topic: &p.pub_topic,
            payload: payload.as_bytes(),
            qos,
            seq,
            packet_id,
            dup: false,
        }));
        self.link.last_tx = now;
    }

    pub(super) fn retransmit_due(&mut self, now: Instant, out: &mut Out<'_>) {
        let retry = self.settings.publish_retry;
        self.retransmit(now, out, |f| now >= f.sent_at + retry);
    }

    pub(super) fn retransmit_all(&mut self, now: Instant, out: &mut Out<'_>) {
        self.retransmit(now, out, |_| true);
    }

    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        out: &mut Out<'_>,
        due: impl Fn(&InFlight) -> bool,
    ) {
        let Some(p) = &self.profile else { return };
        // A broker that allows only QoS 0 on this connection would refuse them; they wait
        // for one that takes QoS 1.
        if self.link_qos != Qos::AtLeastOnce {
            return;
        }
        let mut sent = false;
        for f in self.in_flight.iter_mut().filter(|f| due(f)) {
            f.sends = f.sends.saturating_add(1);
            f.sent_at = now;
            Self::log(
                out,
                Line::publish_retry(
                    Self::uptime_ms(now),
                    &p.pub_topic,
                    f.seq,
                    f.packet_id,
                    f.sends,
                ),
            );
            out(Action::Publish(Publish {
                topic: &p.pub_topic,
                payload: f.payload.as_bytes(),
                qos: Qos::AtLeastOnce,
                seq: f.seq,
                packet_id: Some(f.packet_id),
                dup: true,
            }));
            sent = true;
        }
        if sent {
            self.link.last_tx = now;
        }
    }
}
