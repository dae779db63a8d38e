//! The chip's RSA accelerator as the core's
//! [`RsaExponentiator`](firmware_core::tls::rsa_accel::RsaExponentiator): the device-key
//! signature of every TLS handshake (RSA-2048, the AWS console's default key) is one
//! modular exponentiation in hardware instead of seconds of software arithmetic.
//!
//! The core builds the operands (PSS encoding, Montgomery constants) and checks every
//! signature with the public key; this only moves words in and out of the peripheral.
//!
//! Constant time: the peripheral is used in its reset configuration, `RSA_CONSTANT_TIME_REG`
//! = 1 ("without acceleration", the default) and `RSA_SEARCH_ENABLE_REG` = 0, in which the
//! exponentiation's time does not depend on the exponent's bits (ESP32-C3 Technical
//! Reference Manual, "RSA Accelerator", "Acceleration Options"). Do not call esp-hal's
//! `disable_constant_time` or `search_acceleration`: both options trade the private
//! exponent's secrecy for speed (and esp-hal 1.2's `disable_constant_time(true)` writes
//! the register's 1, its constant-time value, contrary to its name).
//!
//! Sizes: the ESP32-C3 exponentiates up to 3072 bits; a 4096-bit key is left to software.

use esp_hal::Blocking;
use esp_hal::peripherals::RSA;
use esp_hal::rsa::operand_sizes::{Op2048, Op3072};
use esp_hal::rsa::{Rsa, RsaMode, RsaModularExponentiation};
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
        match op.modulus.len() {
            64 => mod_exp::<Op2048, 64>(&mut self.rsa, op, out),
            96 => mod_exp::<Op3072, 96>(&mut self.rsa, op, out),
            _ => Err(Unsupported),
        }
    }
}

/// One blocking exponentiation of `N` words (tens to hundreds of milliseconds: once per
/// handshake, where the software path blocks for seconds).
fn mod_exp<T, const N: usize>(
    rsa: &mut Rsa<'static, Blocking>,
    op: &ModExpOperands<'_>,
    out: &mut [u32],
) -> Result<(), Unsupported>
where
    T: RsaMode<InputType = [u32; N]>,
{
    let words = |s: &[u32]| <[u32; N]>::try_from(s).map_err(|_| Unsupported);
    let (base, modulus, r) = (words(op.base)?, words(op.modulus)?, words(op.r)?);
    let mut exponent = words(op.exponent)?;
    let out: &mut [u32; N] = out.try_into().map_err(|_| Unsupported)?;
    let mut exp =
        RsaModularExponentiation::<T, Blocking>::new(rsa, &exponent, &modulus, op.m_prime);
    exp.start_exponentiation(&base, &r);
    exp.read_results(out);
    // Wipe the private exponent: the stack copy, and the peripheral's operand memory
    // (esp-hal 1.2 leaves it there on this chip). Setting up an exponentiation with a zero
    // exponent overwrites it; nothing is started. The other operands are public.
    exponent.fill(0);
    core::hint::black_box(&exponent);
    let _ = RsaModularExponentiation::<T, Blocking>::new(rsa, &exponent, &modulus, 0);
    Ok(())
}
