//! The core on a 32-bit RISC-V CPU without a board: the core's own vectors and a full TLS
//! 1.3 + MQTT session run on `qemu-system-riscv32 -machine virt` (RV32IMC, the
//! ESP32-C3's ISA), and report instruction counts (`minstret`), the stack high-water mark
//! and the heap peak, over semihosting. Exit status 0 only if every vector passed and both
//! sessions replayed byte for byte.
//!
//! # Layout
//! - `main.rs` (this file): start-up (stack, `.bss`, trap), the counting allocator, the
//!   stack paint, the replay transport, the metered crypto provider, the report.
//! - [`session`]: the session itself (TLS handshake, CONNECT, SUBSCRIBE, PUBLISH), shared
//!   with the host recorder `firmware/core/tests/rv32_flights.rs`.
//! - [`rng`]: the fixed-seed RNG both sides draw from.
//! - [`vectors`]: a selection of the core's test vectors, each reported pass/fail.
//! - `flights/<key>/`: the recorded credentials and both directions' bytes; `link.x` the
//!   memory map; `budgets.py` turns the report into ms on the ESP32-C3 and checks budgets.
//!
//! Output lines are `vector <name> pass|FAIL ...` and `figure <key>.<name>=<value>`; the
//! Makefile's `rv32-budgets` target runs this under the emulator and `budgets.py` judges.
#![no_std]
#![no_main]

extern crate alloc;

mod libc;
mod rng;
mod session;
mod vectors;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{NonNull, addr_of_mut};

use embassy_futures::block_on;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CertificateRef, CertificateVerifyRef, CryptoProvider,
    SignatureScheme, TlsCipherSuite, TlsError, TlsVerifier,
};
use firmware_core::driver::buffers::{TLS_READ_BUF, TLS_WRITE_BUF};
use firmware_core::tls::rsa_accel::{
    ModExpOperands, RsaExponentiator, Signed, SoftwareExponentiator, Unsupported, sign_pss,
};
use firmware_core::tls::{CertVerifier, DeviceKey, DeviceSignature, MAX_RECORD_LEN};
use p256::ecdsa::signature::{Error as SignatureError, SignerMut};
use rand_core::CryptoRngCore;
use semihosting::println;

use rng::{FixedRng, SEED};

/// The synced clock the server chain is verified at (the recorder's `NOW`).
pub(crate) const NOW: u64 = 1_795_000_000;

// Start-up: global pointer, stack, zeroed `.bss`, a trap vector that fails the run.
core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    ".option push",
    ".option norelax",
    "la gp, __global_pointer$",
    ".option pop",
    "la sp, _stack_top",
    "la t0, _trap",
    ".option push",
    ".option arch, +zicsr",
    "csrw mtvec, t0",
    ".option pop",
    "la t0, _sbss",
    "la t1, _ebss",
    "1: bgeu t0, t1, 2f",
    "sw zero, 0(t0)",
    "addi t0, t0, 4",
    "j 1b",
    "2: call rv32_main",
    "3: j 3b",
    ".balign 4",
    "_trap: call rv32_trap",
);

/// Any trap (illegal instruction, misaligned or bad access) ends the run as a failure.
#[unsafe(no_mangle)]
extern "C" fn rv32_trap() -> ! {
    let cause: usize;
    // SAFETY: reading a machine-mode CSR; the run is in machine mode.
    unsafe {
        core::arch::asm!(".option push", ".option arch, +zicsr", "csrr {}, mcause", ".option pop", out(reg) cause)
    };
    println!("trap mcause={cause}");
    semihosting::process::exit(3)
}

/// Retired instructions since reset (`minstret`/`minstreth`, read consistently).
fn instret() -> u64 {
    loop {
        let (hi, lo, hi2): (u32, u32, u32);
        // SAFETY: reading machine-mode counters has no side effect.
        unsafe {
            core::arch::asm!(
                ".option push", ".option arch, +zicsr",
                "csrr {0}, minstreth", "csrr {1}, minstret", "csrr {2}, minstreth",
                ".option pop",
                out(reg) hi, out(reg) lo, out(reg) hi2,
            );
        }
        if hi == hi2 {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

// ---- heap: a first-fit heap with counters ----------------------------------------

const HEAP_BYTES: usize = 256 * 1024;

struct Counting {
    heap: UnsafeCell<linked_list_allocator::Heap>,
    current: UnsafeCell<usize>,
    peak: UnsafeCell<usize>,
    allocations: UnsafeCell<usize>,
}

// SAFETY: one hart, no interrupts: nothing runs concurrently with an allocation.
unsafe impl Sync for Counting {}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see the `Sync` impl).
        unsafe {
            match (*self.heap.get()).allocate_first_fit(layout) {
                Ok(p) => {
                    *self.current.get() += layout.size();
                    *self.allocations.get() += 1;
                    let current = *self.current.get();
                    if current > *self.peak.get() {
                        *self.peak.get() = current;
                    }
                    p.as_ptr()
                }
                Err(()) => core::ptr::null_mut(),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: single-threaded; `ptr` came from `alloc` with this layout.
        unsafe {
            (*self.heap.get()).deallocate(NonNull::new_unchecked(ptr), layout);
            *self.current.get() -= layout.size();
        }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting {
    heap: UnsafeCell::new(linked_list_allocator::Heap::empty()),
    current: UnsafeCell::new(0),
    peak: UnsafeCell::new(0),
    allocations: UnsafeCell::new(0),
};
static mut HEAP: [u8; HEAP_BYTES] = [0; HEAP_BYTES];

/// Heap counters: (bytes in use, peak bytes, allocations so far).
fn heap_figures() -> (usize, usize, usize) {
    // SAFETY: single-threaded; no allocation is under way.
    unsafe {
        (
            *ALLOCATOR.current.get(),
            *ALLOCATOR.peak.get(),
            *ALLOCATOR.allocations.get(),
        )
    }
}

/// Starts a new peak from what is in use now.
fn heap_reset_peak() {
    // SAFETY: as above.
    unsafe { *ALLOCATOR.peak.get() = *ALLOCATOR.current.get() };
}

// ---- stack: paint, then find the deepest word that changed ----------------------

const PAINT: u32 = 0x5A5A_C3C3;

unsafe extern "C" {
    static _stack_bottom: u32;
    static _stack_top: u32;
}

fn stack_bounds() -> (usize, usize) {
    // Linker symbols: only their addresses are taken.
    (
        &raw const _stack_bottom as usize,
        &raw const _stack_top as usize,
    )
}

/// Paints the free stack below the caller with [`PAINT`]. Inlined, and calls nothing,
/// so no frame of its own sits in the region it paints.
#[inline(always)]
fn stack_paint() {
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp) };
    let (bottom, _) = stack_bounds();
    let mut at = bottom;
    // 256 bytes of margin below the live frame.
    while at < sp - 256 {
        // SAFETY: inside the `.stack` section, below every live frame.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// Bytes of stack used at the deepest point since the last paint (from the top).
fn stack_high_water() -> usize {
    let (bottom, top) = stack_bounds();
    let mut at = bottom;
    // SAFETY: reads inside the `.stack` section.
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    top - at
}

// ---- the replayed peer ------------------------------------------------------------

/// The server side of a recorded session: serves the server's bytes in order and checks
/// that every byte the device writes is the recorded client's.
struct Replay {
    server: &'static [u8],
    served: usize,
    client: &'static [u8],
    matched: usize,
    diverged: bool,
}

impl embedded_io_async::ErrorType for Replay {
    type Error = embedded_io_async::ErrorKind;
}

impl embedded_io_async::Read for Replay {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.server.len() - self.served);
        buf[..n].copy_from_slice(&self.server[self.served..self.served + n]);
        self.served += n;
        Ok(n)
    }
}

impl embedded_io_async::Write for Replay {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let end = self.matched + buf.len();
        if end > self.client.len() || self.client[self.matched..end] != *buf {
            self.diverged = true;
            return Err(embedded_io_async::ErrorKind::InvalidData);
        }
        self.matched = end;
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

// ---- the device's crypto, metered ---------------------------------------------------

/// The core's `DeviceProvider`, with the instructions spent in the verifier and the
/// signer counted. It draws from the RNG exactly as `DeviceProvider` does (the recorder
/// uses that one), or the replay would diverge.
struct Metered<'a> {
    rng: FixedRng,
    key: DeviceKey,
    certificate: &'a [u8],
    verifier: MeteredVerifier<'a>,
    sign: u64,
}

struct MeteredVerifier<'a> {
    inner: CertVerifier<'a>,
    chain: u64,
    signature: u64,
}

type Suite = Aes128GcmSha256;

impl TlsVerifier<Suite> for MeteredVerifier<'_> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        <CertVerifier<'_> as TlsVerifier<Suite>>::set_hostname_verification(
            &mut self.inner,
            hostname,
        )
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Suite as TlsCipherSuite>::Hash,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        let start = instret();
        let r = <CertVerifier<'_> as TlsVerifier<Suite>>::verify_certificate(
            &mut self.inner,
            transcript,
            cert,
        );
        self.chain += instret() - start;
        r
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        let start = instret();
        let r = <CertVerifier<'_> as TlsVerifier<Suite>>::verify_signature(&mut self.inner, verify);
        self.signature += instret() - start;
        r
    }
}

struct MeteredSigner<'k> {
    key: &'k DeviceKey,
    rng: &'k mut FixedRng,
    insns: &'k mut u64,
}

impl SignerMut<DeviceSignature> for MeteredSigner<'_> {
    fn try_sign(&mut self, message: &[u8]) -> Result<DeviceSignature, SignatureError> {
        let start = instret();
        let r = self.key.sign(self.rng, message);
        *self.insns += instret() - start;
        r
    }
}

impl CryptoProvider for Metered<'_> {
    type CipherSuite = Suite;
    type Signature = DeviceSignature;

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Suite>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(&mut self) -> Result<(impl SignerMut<DeviceSignature>, SignatureScheme), TlsError> {
        let scheme = self.key.signature_scheme();
        Ok((
            MeteredSigner {
                key: &self.key,
                rng: &mut self.rng,
                insns: &mut self.sign,
            },
            scheme,
        ))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        Some(Certificate::X509(self.certificate))
    }
}

// ---- the runs -------------------------------------------------------------------------

/// One recorded session: credentials and both directions' bytes.
struct Flight {
    name: &'static str,
    ca: &'static [u8],
    cert: &'static [u8],
    key: &'static [u8],
    server: &'static [u8],
    client: &'static [u8],
}

macro_rules! flight {
    ($name:literal) => {
        Flight {
            name: $name,
            ca: include_bytes!(concat!("../flights/", $name, "/ca.der")),
            cert: include_bytes!(concat!("../flights/", $name, "/cert.der")),
            key: include_bytes!(concat!("../flights/", $name, "/private.der")),
            server: include_bytes!(concat!("../flights/", $name, "/server.bin")),
            client: include_bytes!(concat!("../flights/", $name, "/client.bin")),
        }
    };
}

/// The board's TLS buffers, static as on the board (not on the stack).
static mut TLS_READ: [u8; TLS_READ_BUF] = [0; TLS_READ_BUF];
static mut TLS_WRITE: [u8; TLS_WRITE_BUF] = [0; TLS_WRITE_BUF];
static mut TLS_RECORD: [u8; MAX_RECORD_LEN] = [0; MAX_RECORD_LEN];

fn figure(key: &str, name: &str, value: impl core::fmt::Display) {
    println!("figure {key}.{name}={value}");
}

/// Replays one session and prints its figures; false if it failed or diverged.
#[inline(never)]
fn run_session(flight: &Flight) -> bool {
    let key = match DeviceKey::from_der(flight.key) {
        Ok(key) => key,
        Err(e) => {
            println!("session {} FAIL key: {e:?}", flight.name);
            return false;
        }
    };
    let mut provider = Metered {
        rng: FixedRng::new(SEED),
        key,
        certificate: flight.cert,
        verifier: MeteredVerifier {
            inner: CertVerifier::new(flight.ca, Some(NOW)),
            chain: 0,
            signature: 0,
        },
        sign: 0,
    };
    let mut replay = Replay {
        server: flight.server,
        served: 0,
        client: flight.client,
        matched: 0,
        diverged: false,
    };
    // SAFETY: the buffers are used by this one session at a time.
    let bufs: (&mut [u8], &mut [u8], &mut [u8]) = unsafe {
        (
            &mut *addr_of_mut!(TLS_READ),
            &mut *addr_of_mut!(TLS_WRITE),
            &mut *addr_of_mut!(TLS_RECORD),
        )
    };
    let (heap_before, _, allocs_before) = heap_figures();
    heap_reset_peak();
    let result = block_on(session::run(&mut replay, &mut provider, bufs, instret));
    let (heap_after, heap_peak, allocs_after) = heap_figures();
    let name = flight.name;
    match result {
        Ok(steps)
            if replay.matched == replay.client.len() && replay.served == replay.server.len() =>
        {
            figure(name, "handshake", steps.handshake);
            figure(name, "verify_chain", provider.verifier.chain);
            figure(name, "verify_server_signature", provider.verifier.signature);
            figure(name, "sign", provider.sign);
            figure(name, "connect", steps.connect);
            figure(name, "subscribe", steps.subscribe);
            figure(name, "publish", steps.publish);
            figure(name, "heap_peak", heap_peak - heap_before);
            figure(name, "heap_allocations", allocs_after - allocs_before);
            figure(name, "heap_leaked", heap_after - heap_before);
            println!(
                "session {name} pass (replayed {} B in, {} B out)",
                replay.served, replay.matched
            );
            true
        }
        Ok(_) => {
            println!(
                "session {name} FAIL: {} of {} server bytes read, {} of {} client bytes sent",
                replay.served,
                replay.server.len(),
                replay.matched,
                replay.client.len()
            );
            false
        }
        Err(e) => {
            println!(
                "session {name} FAIL {e:?} (client bytes diverged: {}, at {})",
                replay.diverged, replay.matched
            );
            false
        }
    }
}

/// ECDHE as embedded-tls does it: an ephemeral P-256 key, its public point encoded,
/// the peer's point decoded, the shared secret.
#[inline(never)]
fn ecdhe() -> u64 {
    let mut rng = FixedRng::new(SEED ^ 1);
    let peer = p256::ecdh::EphemeralSecret::random(&mut rng).public_key();
    let peer_bytes = p256::EncodedPoint::from(peer);
    let start = instret();
    let secret = p256::ecdh::EphemeralSecret::random(&mut rng);
    let public = p256::EncodedPoint::from(secret.public_key());
    let peer = p256::PublicKey::from_sec1_bytes(peer_bytes.as_bytes());
    let shared = peer.map(|peer| secret.diffie_hellman(&peer));
    let insns = instret() - start;
    core::hint::black_box((public, shared.is_ok()));
    insns
}

/// The board's RSA accelerator stood in for by software, with the instructions spent
/// inside it counted: what the chip's CPU still does on the accelerated path is the rest.
struct MeteredExponentiator {
    inside: u64,
}

impl RsaExponentiator for MeteredExponentiator {
    fn mod_exp(&mut self, op: &ModExpOperands<'_>, out: &mut [u32]) -> Result<(), Unsupported> {
        let start = instret();
        let r = SoftwareExponentiator.mod_exp(op, out);
        self.inside += instret() - start;
        r
    }
}

/// The RSA-2048 CertificateVerify signature on the board's accelerated path (PSS encoding,
/// CRT split and recombination, Montgomery constants, the public-key check): the CPU's
/// instructions outside the two exponentiations, and those the exponentiations cost in
/// software here. Outside the sessions, so their stack and heap figures are unchanged.
#[inline(never)]
fn accelerated_sign(key_der: &[u8]) -> Option<(u64, u64)> {
    let Ok(DeviceKey::Rsa(key)) = DeviceKey::from_der(key_der) else {
        return None;
    };
    let mut rng = FixedRng::new(SEED ^ 2);
    let mut hw = MeteredExponentiator { inside: 0 };
    let start = instret();
    let signed = sign_pss(
        key.as_ref(),
        &mut hw,
        &mut rng,
        b"TLS 1.3, client CertificateVerify",
    );
    let total = instret() - start;
    matches!(signed, Signed::Accelerated(_)).then_some((total - hw.inside, hw.inside))
}

#[unsafe(no_mangle)]
extern "C" fn rv32_main() -> ! {
    // SAFETY: called once, before the first allocation.
    unsafe { (*ALLOCATOR.heap.get()).init(addr_of_mut!(HEAP).cast(), HEAP_BYTES) };
    let start = instret();
    let mut ok = vectors::run_all();

    figure("p256", "ecdhe", ecdhe());
    for flight in [flight!("p256"), flight!("rsa2048")] {
        stack_paint();
        ok &= run_session(&flight);
        figure(flight.name, "stack", stack_high_water());
    }
    match accelerated_sign(flight!("rsa2048").key) {
        Some((cpu, exponentiations)) => {
            figure("rsa2048", "sign_accelerated_cpu", cpu);
            figure(
                "rsa2048",
                "sign_accelerated_exponentiations",
                exponentiations,
            );
        }
        None => {
            println!("accelerated-sign FAIL");
            ok = false;
        }
    }
    let (bottom, top) = stack_bounds();
    figure("run", "stack_size", top - bottom);
    figure("run", "instructions", instret() - start);
    println!("result {}", if ok { "pass" } else { "FAIL" });
    semihosting::process::exit(if ok { 0 } else { 1 })
}
