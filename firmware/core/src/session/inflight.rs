//! QoS 1 publishes waiting for their PUBACK, with the packet id each keeps across retries.

use heapless::String;

use super::hello::MAX_PAYLOAD;
use super::time::Instant;

/// QoS 1 publishes that may wait for PUBACK at once; a slot that finds them all busy is
/// skipped (logged) rather than queued, so memory stays fixed.
pub const MAX_IN_FLIGHT: usize = 4;

/// One QoS 1 publish sent and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InFlight {
    pub(super) seq: u32,
    pub(super) packet_id: u16,
    pub(super) payload: String<MAX_PAYLOAD>,
    pub(super) sent_at: Instant,
    pub(super) sends: u32,
}

/// The next packet id (1..=65535) not used by an in-flight publish.
pub(super) fn next_free_id(next: &mut u16, in_flight: &[InFlight]) -> u16 {
    loop {
        let id = (*next).max(1);
        *next = id.wrapping_add(1).max(1);
        // At most MAX_IN_FLIGHT ids are taken, so this ends within a few rounds.
        if !in_flight.iter().any(|f| f.packet_id == id) {
            return id;
        }
    }
}
