//! A counting global allocator: current and peak heap bytes for the `heap:` log line.
//!
//! The ESP32-C3 reports free and minimum-free heap; the host has no fixed heap, so the
//! virtual device counts what it allocates and reports it against [`HEAP_BUDGET`], a
//! nominal heap size. The host figures include tokio, std and the heap-allocated TLS
//! and MQTT buffers (about 25 KiB that the board keeps in static RAM), so they show trends
//! and leaks, not whether the board fits; the rig redacts them in snapshots.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The nominal heap `free`/`min_free` are reported against.
pub const HEAP_BUDGET: usize = 256 * 1024;

/// [`System`] with byte counters. Install it in the binary with `#[global_allocator]`.
pub struct CountingAlloc {
    current: AtomicUsize,
    peak: AtomicUsize,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes allocated now.
    pub current: usize,
    /// Most bytes ever allocated at once (since start or the last [`CountingAlloc::reset_peak`]).
    pub peak: usize,
}

impl HeapStats {
    /// `(free, min_free)` against `budget`, as the board reports them; saturates at 0.
    pub fn free_of(&self, budget: usize) -> (usize, usize) {
        (
            budget.saturating_sub(self.current),
            budget.saturating_sub(self.peak),
        )
    }
}

impl CountingAlloc {
    pub const fn new() -> Self {
        Self {
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    pub fn stats(&self) -> HeapStats {
        HeapStats {
            current: self.current.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }

    /// Start a new peak from the current usage (to measure one phase, e.g. a handshake).
    pub fn reset_peak(&self) {
        self.peak
            .store(self.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn added(&self, n: usize) {
        let now = self.current.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn removed(&self, n: usize) {
        self.current.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        self.removed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Count the growth before the shrink so the peak sees the larger block.
            self.added(new_size);
            self.removed(layout.size());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A private instance, not the global one, so parallel tests cannot disturb the counts.
    #[test]
    fn counts_current_and_peak() {
        let a = CountingAlloc::new();
        let l100 = Layout::from_size_align(100, 8).unwrap();
        let l50 = Layout::from_size_align(50, 8).unwrap();
        // SAFETY: each block is freed once with the layout it was allocated with.
        unsafe {
            let p = a.alloc(l100);
            let q = a.alloc_zeroed(l50);
            assert_eq!(
                a.stats(),
                HeapStats {
                    current: 150,
                    peak: 150
                }
            );
            a.dealloc(p, l100);
            assert_eq!(
                a.stats(),
                HeapStats {
                    current: 50,
                    peak: 150
                }
            );
            let q = a.realloc(q, l50, 400);
            assert_eq!(
                a.stats(),
                HeapStats {
                    current: 400,
                    peak: 450
                }
            );
            a.reset_peak();
            assert_eq!(a.stats().peak, 400);
            a.dealloc(q, Layout::from_size_align(400, 8).unwrap());
        }
        assert_eq!(
            a.stats(),
            HeapStats {
                current: 0,
                peak: 400
            }
        );
    }

    #[test]
    fn free_saturates_against_the_budget() {
        let s = HeapStats {
            current: 1000,
            peak: HEAP_BUDGET + 1,
        };
        assert_eq!(s.free_of(HEAP_BUDGET), (HEAP_BUDGET - 1000, 0));
    }
}
