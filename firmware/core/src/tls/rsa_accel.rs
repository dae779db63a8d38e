//! RSA-PSS signing through a board's modular-exponentiation hardware (the ESP32-C3's RSA
//! accelerator), with the software path as the fallback.
//!
//! The core does everything but the exponentiation: the EMSA-PSS encoding (RFC 8017
//! §9.1.1, MGF1-SHA256, a 32-byte salt from the session's RNG as RFC 8446 §4.2.3 asks of
//! `rsa_pss_rsae_sha256`), the split into two half-size exponentiations by the Chinese
//! remainder theorem (a quarter of the work; the full private exponent for a key without
//! CRT values), the Montgomery constants the hardware needs, and a check of every
//! signature with the public key before it is sent. The board only raises a number to a
//! power ([`RsaExponentiator`]): for RSA-2048, twice with 1024-bit operands.
//!
//! Rules for an [`RsaExponentiator`]:
//! - operands are little-endian 32-bit words, all of the modulus's length; it computes
//!   `base^exponent mod modulus` into `out` (same length) and touches nothing else;
//! - it returns [`Unsupported`] for an operand length it cannot do (the core then signs
//!   in software), and never panics;
//! - it may block: two exponentiations per handshake (the CRT halves), tens of
//!   milliseconds each in hardware;
//! - it runs in constant time in the exponent (the ESP32-C3 accelerator's default mode:
//!   do not switch on its "acceleration" or "search" options, which leak the exponent).
//!
//! Why no blinding on this path: the software path blinds because its big-integer
//! arithmetic is not constant-time (RUSTSEC-2023-0071). The ESP32-C3 accelerator, in its
//! reset configuration, processes every exponent bit alike: Espressif's register
//! description of `RSA_CONSTANT_TIME_REG` reads "0: with acceleration, 1: without
//! acceleration (default)", reset value 1, the acceleration being the shortcut on 0 bits
//! (ESP32-C3 Technical Reference Manual, chapter "RSA Accelerator"; the board's on-target
//! test checks the timing). The operand is the PSS encoding the core built with a fresh
//! random salt, not attacker-chosen ciphertext.
//!
//! A result that does not verify (a faulted or broken accelerator, a glitch) is never
//! sent: with CRT, one wrong half would give the key's factors to anyone holding the
//! signature (the Boneh-DeMillo-Lipton fault attack). The signature is made again in
//! software and the fault is reported ([`Signed::AcceleratorFault`]) so the caller can
//! stop using the hardware.

use alloc::vec;
use alloc::vec::Vec;

use rand_core::{CryptoRng, RngCore};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use sha2::{Digest, Sha256};

use super::key::DeviceSignature;

/// Salt length of `rsa_pss_rsae_sha256`: the digest's length (RFC 8446 §4.2.3).
pub const PSS_SALT_LEN: usize = 32;
const HASH_LEN: usize = 32;

/// The operands of one `base^exponent mod modulus`, each in little-endian 32-bit words
/// of the modulus's length, with the Montgomery constants for the modulus.
pub struct ModExpOperands<'o> {
    pub base: &'o [u32],
    /// The private exponent: secret.
    pub exponent: &'o [u32],
    pub modulus: &'o [u32],
    /// `-modulus^-1 mod 2^32`.
    pub m_prime: u32,
    /// `R^2 mod modulus`, with `R = 2^(32 * words)`.
    pub r: &'o [u32],
}

impl core::fmt::Debug for ModExpOperands<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the exponent.
        write!(f, "ModExpOperands({} words)", self.modulus.len())
    }
}

/// The hardware cannot do an exponentiation of this length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// A board's modular exponentiation (see the module's rules).
pub trait RsaExponentiator {
    /// `out = base^exponent mod modulus`.
    ///
    /// # Errors
    /// [`Unsupported`] for an operand length the hardware does not do.
    fn mod_exp(
        &mut self,
        operands: &ModExpOperands<'_>,
        out: &mut [u32],
    ) -> Result<(), Unsupported>;
}

/// The exponentiation in software (the `rsa` crate's big integers, not constant-time):
/// the reference the hardware is tested against, and the hook on a host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftwareExponentiator;

impl RsaExponentiator for SoftwareExponentiator {
    fn mod_exp(
        &mut self,
        operands: &ModExpOperands<'_>,
        out: &mut [u32],
    ) -> Result<(), Unsupported> {
        let modulus = BigUint::from_slice(operands.modulus);
        let result = BigUint::from_slice(operands.base)
            .modpow(&BigUint::from_slice(operands.exponent), &modulus);
        write_words(&result, out).ok_or(Unsupported)
    }
}

/// What [`sign_pss`] did.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per handshake, moved straight into CertificateVerify"
)]
pub enum Signed {
    /// The hardware's signature, checked with the public key.
    Accelerated(DeviceSignature),
    /// The hardware cannot do this key size: sign in software.
    Unsupported,
    /// The hardware's result did not verify: sign in software, stop trusting it.
    AcceleratorFault,
}

/// `-n0^-1 mod 2^32` for an odd `n0` (the modulus's lowest word): Newton's iteration
/// doubles the correct low bits each step, 1 -> 2 -> ... -> 32 bits in 5 steps.
#[must_use]
pub fn montgomery_m_prime(n0: u32) -> u32 {
    let mut inverse: u32 = 1;
    for _ in 0..5 {
        inverse = inverse.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inverse)));
    }
    inverse.wrapping_neg()
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) of `message` with SHA-256 and `salt`, for a
/// modulus of `mod_bits` bits; `em` gets the encoded message, `ceil((mod_bits-1)/8)` bytes.
///
/// Returns `None` if the modulus is too small for the digest and salt.
#[must_use]
pub fn emsa_pss_encode(message: &[u8], salt: &[u8], mod_bits: usize) -> Option<Vec<u8>> {
    let em_bits = mod_bits.checked_sub(1)?;
    let em_len = em_bits.div_ceil(8);
    if em_len < HASH_LEN + salt.len() + 2 {
        return None;
    }
    let m_hash = Sha256::digest(message);
    // H = Hash(0x00 * 8 || mHash || salt)
    let h = Sha256::new()
        .chain_update([0u8; 8])
        .chain_update(m_hash)
        .chain_update(salt)
        .finalize();
    let db_len = em_len - HASH_LEN - 1;
    // DB = PS || 0x01 || salt, masked with MGF1(H).
    let mut em = vec![0u8; em_len];
    let ps_len = db_len - salt.len() - 1;
    em[ps_len] = 0x01;
    em[ps_len + 1..db_len].copy_from_slice(salt);
    mgf1_xor(&mut em[..db_len], &h);
    // Clear the bits above em_bits so the encoded message is below the modulus.
    em[0] &= 0xff >> (8 * em_len - em_bits);
    em[db_len..db_len + HASH_LEN].copy_from_slice(&h);
    em[em_len - 1] = 0xbc;
    Some(em)
}

/// `out ^= MGF1-SHA256(seed)` (RFC 8017 appendix B.2.1).
fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(HASH_LEN)) {
        let mask = Sha256::new()
            .chain_update(seed)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (o, m) in chunk.iter_mut().zip(mask) {
            *o ^= m;
        }
    }
}

/// Signs `message` with RSA-PSS-SHA256 (salt from `rng`) through `hw`, and checks the
/// result with the public key before returning it.
pub fn sign_pss<R: CryptoRng + RngCore>(
    key: &RsaPrivateKey,
    hw: &mut dyn RsaExponentiator,
    rng: &mut R,
    message: &[u8],
) -> Signed {
    let mut salt = [0u8; PSS_SALT_LEN];
    rng.fill_bytes(&mut salt);
    sign_pss_with_salt(key, hw, &salt, message)
}

/// [`sign_pss`] with a given salt (the on-target test compares it with the `rsa` crate's
/// signature for the same salt).
pub fn sign_pss_with_salt(
    key: &RsaPrivateKey,
    hw: &mut dyn RsaExponentiator,
    salt: &[u8],
    message: &[u8],
) -> Signed {
    let Some(em) = emsa_pss_encode(message, salt, key.n().bits()) else {
        return Signed::Unsupported;
    };
    let em = BigUint::from_bytes_be(&em);
    let result = match crt_parts(key) {
        // Garner's recombination (RFC 8017 §5.1.2, 2.b): two half-size exponentiations,
        // about a quarter of the work of one with the full exponent.
        Some(Crt { p, q, dp, dq, qinv }) => exp_mod(hw, &(&em % p), dp, p).and_then(|m1| {
            let m2 = exp_mod(hw, &(&em % q), dq, q)?;
            let h = (&qinv * ((&m1 + p - (&m2 % p)) % p)) % p;
            Ok(m2 + h * q)
        }),
        None => exp_mod(hw, &em, key.d(), key.n()),
    };
    let Ok(result) = result else {
        return Signed::Unsupported;
    };
    // I2OSP to the modulus's length in bytes.
    let k = key.size();
    let mut signature = DeviceSignature::new();
    if signature.resize(k, 0).is_err() {
        return Signed::Unsupported;
    }
    let be = result.to_bytes_be();
    if be.len() > k {
        return Signed::AcceleratorFault;
    }
    signature[k - be.len()..].copy_from_slice(&be);
    if verifies(key, message, &signature) {
        Signed::Accelerated(signature)
    } else {
        Signed::AcceleratorFault
    }
}

/// A two-prime key's CRT values (RFC 8017 §3.2, second representation).
struct Crt<'k> {
    p: &'k BigUint,
    q: &'k BigUint,
    dp: &'k BigUint,
    dq: &'k BigUint,
    qinv: BigUint,
}

fn crt_parts(key: &RsaPrivateKey) -> Option<Crt<'_>> {
    let [p, q] = key.primes() else {
        return None;
    };
    Some(Crt {
        p,
        q,
        dp: key.dp()?,
        dq: key.dq()?,
        qinv: key.qinv()?.to_biguint()?,
    })
}

/// `base^exponent mod modulus` on `hw`, with the operands in words and the Montgomery
/// constants; the word copies are wiped afterwards.
fn exp_mod(
    hw: &mut dyn RsaExponentiator,
    base: &BigUint,
    exponent: &BigUint,
    modulus: &BigUint,
) -> Result<BigUint, Unsupported> {
    let words = modulus.bits().div_ceil(32);
    let (Some(modulus_words), Some(base), Some(r)) = (
        to_words(modulus, words),
        to_words(base, words),
        to_words(&((BigUint::from(1u8) << (64 * words)) % modulus), words),
    ) else {
        return Err(Unsupported);
    };
    let mut exponent = to_words(exponent, words).ok_or(Unsupported)?;
    let operands = ModExpOperands {
        base: &base,
        exponent: &exponent,
        modulus: &modulus_words,
        m_prime: montgomery_m_prime(modulus_words[0]),
        r: &r,
    };
    let mut out = vec![0u32; words];
    let result = hw.mod_exp(&operands, &mut out);
    let value = BigUint::from_slice(&out);
    // With CRT every one of these gives the prime away, not only the exponent. (The big
    // integers in between are freed without wiping, as in the `rsa` crate's own path.)
    let (mut modulus_words, mut base, mut r) = (modulus_words, base, r);
    for words in [
        &mut exponent,
        &mut out,
        &mut modulus_words,
        &mut base,
        &mut r,
    ] {
        wipe(words);
    }
    result.map(|()| value)
}

/// Whether `signature` is a valid RSA-PSS-SHA256 signature of `message` by `key`.
fn verifies(key: &RsaPrivateKey, message: &[u8], signature: &[u8]) -> bool {
    use rsa::signature::Verifier;
    let public = rsa::pss::VerifyingKey::<Sha256>::new(key.to_public_key());
    rsa::pss::Signature::try_from(signature).is_ok_and(|sig| public.verify(message, &sig).is_ok())
}

/// `x` as exactly `words` little-endian 32-bit words, `None` if it does not fit.
fn to_words(x: &BigUint, words: usize) -> Option<Vec<u32>> {
    let mut out = vec![0u32; words];
    write_words(x, &mut out)?;
    Some(out)
}

fn write_words(x: &BigUint, out: &mut [u32]) -> Option<()> {
    let mut bytes = x.to_bytes_le();
    if bytes.len() > out.len() * 4 {
        bytes.fill(0);
        return None;
    }
    out.fill(0);
    for (word, chunk) in out.iter_mut().zip(bytes.chunks(4)) {
        let mut le = [0u8; 4];
        le[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_le_bytes(le);
    }
    bytes.fill(0);
    core::hint::black_box(&bytes);
    Some(())
}

/// Overwrite a copy of the private exponent (`black_box` keeps the stores from being
/// optimised away as dead).
fn wipe(words: &mut [u32]) {
    words.fill(0);
    core::hint::black_box(words);
}

#[cfg(test)]
mod tests;
