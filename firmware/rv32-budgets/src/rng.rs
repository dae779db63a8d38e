//! The fixed-seed random source of the budget run and of the host recorder.
//!
//! Both sides must draw the same bytes in the same order: the ClientHello (random, key
//! share) recorded on the host has to be the one the emulated CPU sends, or the recorded
//! server flight (whose Finished covers the ClientHello) would not verify. Not a secure
//! RNG: it exists so the replayed handshake is byte-for-byte repeatable.

use rand_core::{CryptoRng, RngCore};

/// The seed every recording and every replay uses.
pub const SEED: u64 = 0x5EED_C3C3_2026_0015;

/// SplitMix64: tiny, well mixed, and identical on every target.
pub struct FixedRng(u64);

impl FixedRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// Only so embedded-tls accepts it; see the module doc.
impl CryptoRng for FixedRng {}
