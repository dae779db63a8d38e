use rand_core::{CryptoRng, Error, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};

use super::*;
use crate::tls::DeviceKey;

const RSA_PKCS1: &[u8] = include_bytes!("../testdata/rsa2048.pkcs1.der");
const MESSAGE: &[u8] = b"TLS 1.3, client CertificateVerify\0transcript hash";

fn key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs1_der(RSA_PKCS1).unwrap()
}

/// Hands out the same bytes over and over: a fixed salt for both signers.
#[derive(Clone)]
struct FixedBytes(&'static [u8], usize);

impl RngCore for FixedBytes {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.0[self.1 % self.0.len()];
            self.1 += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedBytes {}

const SALT: &[u8; 32] = b"a fixed 32-byte salt, for tests!";

fn verifies_with_the_rsa_crate(key: &RsaPrivateKey, sig: &[u8]) -> bool {
    let public = rsa::pss::VerifyingKey::<Sha256>::new(key.to_public_key());
    let sig = rsa::pss::Signature::try_from(sig).unwrap();
    public.verify(MESSAGE, &sig).is_ok()
}

/// Computes the right answer, then spoils it as told.
struct Faulty(fn(&mut [u32]));

impl RsaExponentiator for Faulty {
    fn mod_exp(&mut self, op: &ModExpOperands<'_>, out: &mut [u32]) -> Result<(), Unsupported> {
        SoftwareExponentiator.mod_exp(op, out)?;
        (self.0)(out);
        Ok(())
    }
}

/// Records what it was given, then declines.
struct Declines(Option<(usize, u32)>);

impl RsaExponentiator for Declines {
    fn mod_exp(&mut self, op: &ModExpOperands<'_>, _: &mut [u32]) -> Result<(), Unsupported> {
        self.0 = Some((op.modulus.len(), op.m_prime));
        Err(Unsupported)
    }
}

#[test]
fn m_prime_is_the_negated_inverse_mod_2_32() {
    for n0 in [
        1u32,
        3,
        0xffff_ffff,
        0x8000_0001,
        0x1234_5679,
        0xdead_beef | 1,
    ] {
        // n0 * m' = -1 (mod 2^32)
        assert_eq!(
            n0.wrapping_mul(montgomery_m_prime(n0)),
            u32::MAX,
            "n0={n0:#x}"
        );
    }
}

#[test]
fn the_hook_signature_equals_the_rsa_crates_for_the_same_salt() {
    let key = key();
    let ours = match sign_pss_with_salt(&key, &mut SoftwareExponentiator, SALT, MESSAGE) {
        Signed::Accelerated(sig) => sig,
        other => panic!("{other:?}"),
    };
    let reference = rsa::pss::SigningKey::<Sha256>::new(key.clone())
        .sign_with_rng(&mut FixedBytes(SALT, 0), MESSAGE)
        .to_vec();
    assert_eq!(ours.len(), 256);
    assert_eq!(&ours[..], &reference[..]);
    assert!(verifies_with_the_rsa_crate(&key, &ours));
}

#[test]
fn a_key_without_crt_values_signs_with_the_full_exponent() {
    let mut key = key();
    key.clear_precomputed();
    let mut hw = Declines(None);
    let _ = sign_pss_with_salt(&key, &mut hw, SALT, MESSAGE);
    assert_eq!(hw.0.unwrap().0, 64, "one 2048-bit exponentiation");
    let Signed::Accelerated(sig) =
        sign_pss_with_salt(&key, &mut SoftwareExponentiator, SALT, MESSAGE)
    else {
        panic!("software hook signs");
    };
    assert!(verifies_with_the_rsa_crate(&key, &sig));
}

#[test]
fn signatures_with_a_random_salt_verify_and_differ() {
    let key = key();
    let mut rng = rand_core::OsRng;
    let sign =
        |rng: &mut rand_core::OsRng| match sign_pss(&key, &mut SoftwareExponentiator, rng, MESSAGE)
        {
            Signed::Accelerated(sig) => sig,
            other => panic!("{other:?}"),
        };
    let (a, b) = (sign(&mut rng), sign(&mut rng));
    assert!(verifies_with_the_rsa_crate(&key, &a));
    assert!(verifies_with_the_rsa_crate(&key, &b));
    assert_ne!(a, b, "PSS is randomised by its salt");
}

#[test]
fn the_encoding_is_rfc_8017_shaped() {
    let em = emsa_pss_encode(MESSAGE, SALT, 2048).unwrap();
    assert_eq!(em.len(), 256);
    assert_eq!(em[255], 0xbc);
    // emBits = 2047: the top bit is clear, so the integer is below any 2048-bit modulus.
    assert_eq!(em[0] & 0x80, 0);
    // Unmasking DB with MGF1(H) gives zeros, 0x01, then the salt.
    let (db, h) = em[..255].split_at(255 - 32);
    let mut db = db.to_vec();
    mgf1_xor(&mut db, h);
    db[0] &= 0x7f;
    let ps = db.len() - SALT.len() - 1;
    assert!(db[..ps].iter().all(|&b| b == 0));
    assert_eq!(db[ps], 0x01);
    assert_eq!(&db[ps + 1..], SALT);
    // A modulus with a bit count of 8k+1 has one byte less of encoded message.
    assert_eq!(emsa_pss_encode(MESSAGE, SALT, 2049).unwrap().len(), 256);
    // Too small for SHA-256 and a 32-byte salt.
    assert!(emsa_pss_encode(MESSAGE, SALT, 512).is_none());
}

#[test]
fn a_wrong_result_from_the_hook_is_caught() {
    let key = key();
    for spoil in [
        (|out: &mut [u32]| out[0] ^= 1) as fn(&mut [u32]),
        |out| out[out.len() - 1] ^= 0x8000_0000,
        |out| out.fill(0),
        |out| out.fill(u32::MAX),
    ] {
        let signed = sign_pss_with_salt(&key, &mut Faulty(spoil), SALT, MESSAGE);
        assert!(matches!(signed, Signed::AcceleratorFault), "{signed:?}");
    }
}

#[test]
fn a_declining_hook_gets_the_operands_and_leaves_signing_to_software() {
    let key = key();
    let mut hw = Declines(None);
    assert!(matches!(
        sign_pss_with_salt(&key, &mut hw, SALT, MESSAGE),
        Signed::Unsupported
    ));
    // The first CRT half: modulo the first prime, 1024 bits.
    let (words, m_prime) = hw.0.unwrap();
    assert_eq!(words, 32);
    let p0 = to_words(&key.primes()[0], 32).unwrap()[0];
    assert_eq!(m_prime, montgomery_m_prime(p0));
}

#[test]
fn the_tls_signer_falls_back_to_software_on_a_fault_and_says_so() {
    use p256::ecdsa::signature::SignerMut;
    let device = DeviceKey::from_der(RSA_PKCS1).unwrap();
    let DeviceKey::Rsa(signing) = &device else {
        panic!("RSA key");
    };
    let key: &RsaPrivateKey = signing.as_ref();
    for (mut hw, faults) in [
        (
            Box::new(Faulty(|out| out[7] ^= 4)) as Box<dyn RsaExponentiator>,
            true,
        ),
        (Box::new(SoftwareExponentiator), false),
        (Box::new(Declines(None)), false),
    ] {
        let mut fault = false;
        let mut signer = crate::tls::provider::DeviceSigner {
            key: &device,
            rng: rand_core::OsRng,
            rsa: Some(&mut *hw),
            rsa_fault: &mut fault,
        };
        let sig = signer.try_sign(MESSAGE).unwrap();
        assert!(verifies_with_the_rsa_crate(key, &sig));
        assert_eq!(fault, faults);
    }
}
