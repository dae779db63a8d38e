//! Traffic on the live connection: inbound messages, and the acks that settle QoS 1
//! publishes.

use super::*;

impl<R: RandomSource> Session<R> {
    /// Messages and acks on the live connection.
    pub(super) fn on_traffic_event(&mut self, now: Instant, event: Event<'_>, out: &mut Out<'_>) {
        let t = Self::uptime_ms(now);
        match event {
            Event::Inbound { topic, payload } => {
                self.received(now);
                let ours = self
                    .profile
                    .as_ref()
                    .is_some_and(|p| crate::topic::matches(&p.sub_topic, topic));
                if ours {
                    Self::log(out, Line::inbound(t, topic, payload));
                } else {
                    Self::log(out, Line::inbound_unsolicited(t, topic, payload.len()));
                }
            }
            Event::PublishSent { seq, packet_id } => {
                if let Some(f) = self.in_flight.iter_mut().find(|f| f.seq == seq) {
                    f.packet_id = packet_id;
                }
            }
            Event::PublishAcked(packet_id) => {
                self.received(now);
                if let Some(i) = self.in_flight.iter().position(|f| f.packet_id == packet_id) {
                    self.in_flight.remove(i);
                }
            }
            Event::PublishRefused { packet_id, code } => {
                self.received(now);
                // The exchange is over (MQTT 5 forbids sending it again on this
                // connection), and a broker that refused it once would refuse it again.
                if let Some(i) = self.in_flight.iter().position(|f| f.packet_id == packet_id) {
                    let f = self.in_flight.remove(i);
                    Self::log(out, Line::publish_refused(t, f.seq, packet_id, code));
                }
            }
            Event::Received => self.received(now),
            // Other kinds of event go to their own handler.
            _ => {}
        }
    }
}
