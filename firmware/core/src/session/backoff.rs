//! Reconnect backoff: exponential with full jitter, from an injected random source.

use super::time::Duration;

/// The random source, injected so tests are deterministic and each board uses its own
/// (the ESP32-C3's hardware RNG, `rand` on the host).
pub trait RandomSource {
    fn next_u32(&mut self) -> u32;
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn next_u32(&mut self) -> u32 {
        (**self).next_u32()
    }
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
    /// Smallest delay ever returned (clamped to the current ceiling). Full jitter can
    /// draw 0; the floor keeps a run of zero draws from turning into a reconnect storm.
    pub floor: Duration,
}

impl Default for BackoffConfig {
    /// 1 s base, 60 s cap, 100 ms floor.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            floor: Duration::from_millis(100),
        }
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a uniformly random
/// `delay` in `[0, min(cap, base * 2^n)]`, raised to `floor` (itself at most the ceiling).
/// The attempt count only goes back to 0 on [`reset`](Self::reset), which the session
/// calls once a connection has stayed up for its stable period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Attempts made since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// `min(cap, base * 2^attempt)` for the next attempt.
    pub fn ceiling(&self) -> Duration {
        ceiling(&self.config, self.attempt)
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self, rng: &mut impl RandomSource) -> Duration {
        let ceiling = self.ceiling().as_millis();
        // Uniform in [0, ceiling] by scaling a 32-bit draw: no modulo bias worth noting.
        let wide = (u128::from(rng.next_u32()) * u128::from(ceiling.saturating_add(1))) >> 32;
        let draw = u64::try_from(wide).unwrap_or(ceiling);
        let floor = self.config.floor.as_millis().min(ceiling);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(draw.clamp(floor, ceiling))
    }
}

/// `min(cap, base * 2^attempt)`, saturating.
pub fn ceiling(config: &BackoffConfig, attempt: u32) -> Duration {
    let base = config.base.as_millis();
    let scaled = if attempt >= 63 {
        u64::MAX
    } else {
        base.saturating_mul(1u64 << attempt)
    };
    Duration::from_millis(scaled.min(config.cap.as_millis()))
}
