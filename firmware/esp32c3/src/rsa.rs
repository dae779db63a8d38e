//! The chip's RSA accelerator as the core's
//! [`RsaExponentiator`](firmware_core::tls::rsa_accel::RsaExponentiator): the device-key
//! signature of every TLS handshake (RSA-2048, the AWS console's default key) is two
//! 1024-bit modular exponentiations in hardware instead of about a second of software
//! arithmetic.
//!
//! The core builds the operands (PSS encoding, CRT split, Montgomery constants) and
//! checks every signature with the public key; this only moves words in and out of the
//! peripheral.
//!
//! Constant time: the peripheral is used in its reset configuration, `RSA_CONSTANT_TIME_REG`
//! = 1 ("without acceleration (default)" in Espressif's register description: the
//! shortcut on the exponent's 0 bits is off) and `RSA_SEARCH_ENABLE_REG` = 0 (leading
//! zero bits are not skipped), so the exponentiation's time does not depend on the
//! private exponent (ESP32-C3 Technical Reference Manual, chapter "RSA Accelerator";
//! `the_rsa_accelerator_takes_as_long_for_any_exponent` checks it on a board). Do not
//! call esp-hal's `disable_constant_time` or `search_acceleration`: both options trade
//! the exponent's secrecy for speed (and esp-hal 1.2.2's `disable_constant_time(true)`
//! writes the register's 1, its constant-time value, contrary to its name).
//!
//! Sizes: the ESP32-C3 exponentiates up to 3072 bits; with the core's CRT split that
//! covers RSA-2048, 3072 and 4096 keys (1024-, 1536- and 2048-bit halves).

use esp_hal::Blocking;
use esp_hal::peripherals::RSA;
use esp_hal::rsa::operand_sizes::{Op1024, Op1536, Op2048, Op3072};
use esp_hal::rsa::{Rsa, RsaMode, RsaModularExponentiation, RsaModularMultiplication};
use firmware_core::tls::rsa_accel::{ModExpOperands, RsaExponentiator, Unsupported};

/// The RSA peripheral, owned for the program's life.
pub struct RsaAccelerator {
    rsa: Rsa<'static, Blocking>,
}

impl RsaAccelerator {
    /// Powers the peripheral up (esp-hal waits for its memory to be initialised).
    pub fn new(rsa: RSA<'static>) -> Self {
        Self { rsa: Rsa::new(rsa) }
    }
}

impl RsaExponentiator for RsaAccelerator {
    fn mod_exp(&mut self, op: &ModExpOperands<'_>, out: &mut [u32]) -> Result<(), Unsupported> {
        // The core's CRT halves of RSA-2048/3072/4096 keys (1024/1536/2048 bits), and the
        // full-exponent path of keys without CRT values.
        match op.modulus.len() {
            32 => mod_exp::<Op1024, 32>(&mut self.rsa, op, out),
            48 => mod_exp::<Op1536, 48>(&mut self.rsa, op, out),
            64 => mod_exp::<Op2048, 64>(&mut self.rsa, op, out),
            96 => mod_exp::<Op3072, 96>(&mut self.rsa, op, out),
            _ => Err(Unsupported),
        }
    }
}

/// One blocking exponentiation of `N` words (two per handshake, tens of milliseconds
/// where the software path takes about a second).
fn mod_exp<T, const N: usize>(
    rsa: &mut Rsa<'static, Blocking>,
    op: &ModExpOperands<'_>,
    out: &mut [u32],
) -> Result<(), Unsupported>
where
    T: RsaMode<InputType = [u32; N]>,
{
    let words = |s: &[u32]| <[u32; N]>::try_from(s).map_err(|_| Unsupported);
    let (mut base, mut modulus, mut r) = (words(op.base)?, words(op.modulus)?, words(op.r)?);
    let mut exponent = words(op.exponent)?;
    let out: &mut [u32; N] = out.try_into().map_err(|_| Unsupported)?;
    let mut exp =
        RsaModularExponentiation::<T, Blocking>::new(rsa, &exponent, &modulus, op.m_prime);
    exp.start_exponentiation(&base, &r);
    exp.read_results(out);
    // The stack copies: with CRT each of them gives the prime away, not only the exponent.
    for copy in [&mut exponent, &mut base, &mut modulus, &mut r] {
        copy.fill(0);
        core::hint::black_box(copy);
    }
    wipe(rsa);
    Ok(())
}

/// Zero the peripheral's four operand memories (X, Y, Z, M) at the largest size: with
/// CRT the modulus is a secret prime, and every operand and result of a half gives it
/// away. esp-hal 1.2.2 leaves them in place on this chip. Setting up an exponentiation
/// writes Y (exponent) and M, a modular multiplication X, M and Z; neither is started.
fn wipe(rsa: &mut Rsa<'static, Blocking>) {
    let zeros = [0u32; 96];
    let _ = RsaModularExponentiation::<Op3072, Blocking>::new(rsa, &zeros, &zeros, 0);
    let _ = RsaModularMultiplication::<Op3072, Blocking>::new(rsa, &zeros, &zeros, &zeros, 0);
}
