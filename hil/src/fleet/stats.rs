//! The figures' building blocks: histograms that merge exactly (so several processes'
//! results combine into true percentiles), and the process's CPU time and memory.

use std::collections::BTreeMap;

/// Bucket width: 0.1 ms, well below the tolerances the figures are read against.
pub const BUCKET_US: u64 = 100;

/// Counts of values in 0.1 ms buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: BTreeMap<u64, u64>,
    count: u64,
    sum_us: u128,
}

impl Histogram {
    pub fn add_us(&mut self, us: u64) {
        *self.buckets.entry(us / BUCKET_US).or_default() += 1;
        self.count += 1;
        self.sum_us += u128::from(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, n) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += n;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }

    /// Mean in milliseconds (exact, from the sum).
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64 / 1000.0)
    }

    /// The `q` quantile in milliseconds: the upper edge of the bucket holding it.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(((bucket + 1) * BUCKET_US) as f64 / 1000.0);
            }
        }
        None
    }

    pub fn max_ms(&self) -> Option<f64> {
        self.buckets
            .keys()
            .next_back()
            .map(|b| ((b + 1) * BUCKET_US) as f64 / 1000.0)
    }

    /// `[[bucket_start_us, count], …]` and the exact sum, for the JSON file.
    pub fn to_json(&self) -> serde_json::Value {
        let buckets: Vec<[u64; 2]> = self
            .buckets
            .iter()
            .map(|(b, n)| [b * BUCKET_US, *n])
            .collect();
        serde_json::json!({
            "bucket_us": BUCKET_US,
            "sum_us": self.sum_us as u64,
            "buckets": buckets,
        })
    }

    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        if value.get("bucket_us").and_then(|v| v.as_u64()) != Some(BUCKET_US) {
            return Err(format!("bucket_us is not {BUCKET_US}"));
        }
        let sum_us = value
            .get("sum_us")
            .and_then(|v| v.as_u64())
            .ok_or("sum_us missing")?;
        let mut histogram = Histogram {
            sum_us: u128::from(sum_us),
            ..Histogram::default()
        };
        for pair in value
            .get("buckets")
            .and_then(|v| v.as_array())
            .ok_or("buckets missing")?
        {
            let (Some(start), Some(n)) = (
                pair.get(0).and_then(|v| v.as_u64()),
                pair.get(1).and_then(|v| v.as_u64()),
            ) else {
                return Err(format!("bucket {pair} is not [start_us, count]"));
            };
            *histogram.buckets.entry(start / BUCKET_US).or_default() += n;
            histogram.count += n;
        }
        Ok(histogram)
    }

    /// `{count, mean_ms, p50_ms, p99_ms, max_ms}`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_ms": self.mean_ms(),
            "p50_ms": self.quantile_ms(0.50),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": self.max_ms(),
        })
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory now and at its peak (kB), from `/proc/self/status`.
pub fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_and_merge_exactly() {
        let mut a = Histogram::default();
        for ms in 1..=99 {
            a.add_us(ms * 1000);
        }
        let mut b = Histogram::default();
        b.add_us(500_000);
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.quantile_ms(0.5), Some(50.1));
        assert_eq!(a.quantile_ms(0.99), Some(99.1));
        assert_eq!(a.max_ms(), Some(500.1));
        let back = Histogram::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
    }
}
