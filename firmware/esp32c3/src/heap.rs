//! The heap: two esp-alloc regions, and the figures for the `heap:` line.
//!
//! The WiFi driver allocates its buffers and tasks here; the `rsa` crate allocates its
//! big integers during a handshake with an RSA key or chain. TLS and MQTT buffers are
//! static (`firmware_core::driver::buffers`), not on the heap.

use firmware_core::log::HeapReport;

/// RAM the second-stage bootloader used, free once the app runs (not in `.bss`).
pub const RECLAIMED_BYTES: usize = 64 * 1024;
/// Heap in ordinary DRAM (counted in `.bss`).
pub const DRAM_BYTES: usize = 48 * 1024;
/// Total heap.
pub const HEAP_BYTES: usize = RECLAIMED_BYTES + DRAM_BYTES;

/// Give both regions to the global allocator. Call once, first thing after `esp_hal::init`.
pub fn init() {
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: RECLAIMED_BYTES);
    esp_alloc::heap_allocator!(size: DRAM_BYTES);
}

/// The heap figures now, with the static buffer sizes.
pub fn report(tls_buffers: usize, mqtt_buffers: usize) -> HeapReport {
    let stats = esp_alloc::HEAP.stats();
    HeapReport {
        free: stats.size.saturating_sub(stats.current_usage),
        min_free: stats.size.saturating_sub(stats.max_usage),
        used: stats.current_usage,
        peak: stats.max_usage,
        tls_buffers,
        mqtt_buffers,
    }
}
