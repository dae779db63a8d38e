//! On-target tests, run on a board by `probe-rs run` (`make hil-target`): each test
//! boots the chip afresh and gets the initialised [`Board`].
//!
//! The board's `storage` partition must hold the flash image the bench uses
//! (`certs/dev/flash.img`), and `SERVER_CERT_DER` names, at build time, the certificate
//! the bench's broker presents (`certs/dev/server.der`); `make hil-target` sees to both.
#![no_std]
#![no_main]

extern crate alloc;

esp_bootloader_esp_idf::esp_app_desc!();

/// The broker's certificate, checked on the chip as a handshake would.
const SERVER_CERT: &[u8] = include_bytes!(env!(
    "SERVER_CERT_DER",
    "set SERVER_CERT_DER to the broker's certificate in DER (make hil-target does)"
));

/// A fixed RSA-2048 key (the core's test key, not a device's) for the accelerator tests.
const RSA_TEST_KEY: &[u8] = include_bytes!("../../core/src/tls/testdata/rsa2048.pkcs1.der");

#[embedded_test::tests(default_timeout = 30, executor = esp_rtos::embassy::Executor::new())]
mod tests {
    use alloc::boxed::Box;

    use der::Decode;
    use der::referenced::OwnedToRef;
    use embassy_time::{Duration, Instant};
    use esp_radio::wifi::scan::ScanConfig;
    use firmware_core::driver::Jitter;
    use firmware_core::image::{self, CredentialBuffers};
    use firmware_core::session::{Backoff, BackoffConfig};
    use firmware_core::tls::rsa_accel::{
        ModExpOperands, PSS_SALT_LEN, RsaExponentiator, Signed, montgomery_m_prime,
        sign_pss_with_salt,
    };
    use firmware_core::tls::{DeviceKey, KeyAlgorithm, verify_server_chain};
    use firmware_esp32c3::board::Board;
    use firmware_esp32c3::storage::Partition;
    use x509_cert::Certificate;

    /// The credentials from the `storage` partition, as the firmware loads them.
    fn load(
        board: &mut Board,
    ) -> (
        Box<CredentialBuffers>,
        [usize; 3],
        firmware_core::config::DeviceConfig,
    ) {
        let mut files = Box::new(CredentialBuffers::new());
        let mut partition = Partition::find(&mut board.flash).expect("storage partition");
        let (lens, config) = image::mount(&mut partition, |fs| {
            let c = fs.load_credentials(&mut files)?;
            Ok(([c.cert.len(), c.key.len(), c.ca.len()], c.config))
        })
        .expect("credentials load from the storage partition");
        (files, lens, config)
    }

    /// The same salt for the software and the accelerated signer, so their signatures
    /// must be identical.
    const SALT: [u8; PSS_SALT_LEN] = *b"on-target fixed salt, 32 bytes!!";

    /// An RNG that hands out [`SALT`], then zeros: all the `rsa` crate's unblinded PSS
    /// signer draws is the salt.
    struct FixedSalt(usize);

    impl rand_core::RngCore for FixedSalt {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = SALT.get(self.0).copied().unwrap_or(0);
                self.0 += 1;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for FixedSalt {}

    fn rsa_test_key() -> rsa::RsaPrivateKey {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        rsa::RsaPrivateKey::from_pkcs1_der(crate::RSA_TEST_KEY).expect("RSA-2048 test key")
    }

    /// `x` as 64 little-endian words (2048 bits).
    fn words(x: &rsa::BigUint) -> [u32; 64] {
        let mut out = [0u32; 64];
        for (word, chunk) in out.iter_mut().zip(x.to_bytes_le().chunks(4)) {
            let mut le = [0u8; 4];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u32::from_le_bytes(le);
        }
        out
    }

    #[init]
    fn init() -> Board {
        Board::init()
    }

    #[test]
    fn storage_partition_holds_the_credentials(mut board: Board) {
        let (files, [cert, key, ca], config) = load(&mut board);
        assert!(cert > 0 && key > 0 && ca > 0);
        assert!(!config.client_id.is_empty());
        assert!(!config.endpoint.host.is_empty());
        // DER sequences, not empty files or PEM text.
        for der in [&files.cert[..cert], &files.key[..key], &files.ca[..ca]] {
            assert_eq!(der[0], 0x30);
        }
    }

    #[test]
    fn server_chain_verifies_against_the_image_ca(mut board: Board) {
        let (files, [_, _, ca], config) = load(&mut board);
        let server = Certificate::from_der(crate::SERVER_CERT).expect("server certificate");
        // A time inside the certificate's validity: the test has no SNTP.
        let now = server
            .tbs_certificate
            .validity
            .not_before
            .to_unix_duration()
            .as_secs()
            + 3600;
        let started = Instant::now();
        verify_server_chain(
            &files.ca[..ca],
            &[crate::SERVER_CERT],
            &config.endpoint.host,
            Some(now),
        )
        .expect("the broker's chain verifies for the configured endpoint");
        // Refusals still work on the chip: wrong name, and before validity.
        assert!(
            verify_server_chain(
                &files.ca[..ca],
                &[crate::SERVER_CERT],
                "wrong.invalid",
                Some(now)
            )
            .is_err()
        );
        assert!(
            verify_server_chain(
                &files.ca[..ca],
                &[crate::SERVER_CERT],
                &config.endpoint.host,
                Some(now - 7200)
            )
            .is_err()
        );
        // A full chain check must fit well inside the session's connect timeout.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn device_key_signs_and_the_certificate_verifies_it(mut board: Board) {
        let (files, [cert, key, _], _) = load(&mut board);
        let key = DeviceKey::from_der(&files.key[..key]).expect("device key");
        let cert = Certificate::from_der(&files.cert[..cert]).expect("device certificate");
        let spki = cert.tbs_certificate.subject_public_key_info.owned_to_ref();
        let message = b"TLS 1.3, client CertificateVerify";
        let signature = key.sign(&mut board.rng, message).expect("signature");
        match key.algorithm() {
            KeyAlgorithm::P256 => {
                use p256::ecdsa::signature::Verifier;
                let public = p256::ecdsa::VerifyingKey::try_from(spki).expect("P-256 key");
                let sig = p256::ecdsa::DerSignature::try_from(&signature[..]).expect("DER");
                public.verify(message, &sig).expect("signature verifies");
            }
            KeyAlgorithm::Rsa(_) => {
                use rsa::signature::Verifier;
                let public = rsa::RsaPublicKey::try_from(spki).expect("RSA key");
                let public = rsa::pss::VerifyingKey::<sha2::Sha256>::new(public);
                let sig = rsa::pss::Signature::try_from(&signature[..]).expect("PSS");
                public.verify(message, &sig).expect("signature verifies");
            }
        }
    }

    #[test]
    fn the_rsa_accelerator_signs_like_software(mut board: Board) {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
        let key = rsa_test_key();
        let message = b"TLS 1.3, client CertificateVerify";

        let started = esp_hal::time::Instant::now();
        let software = rsa::pss::SigningKey::<sha2::Sha256>::new(key.clone())
            .sign_with_rng(&mut FixedSalt(0), message)
            .to_vec();
        let software_us = started.elapsed().as_micros();

        // The whole accelerated path: PSS encoding, Montgomery constants, the hardware's
        // two 1024-bit exponentiations (CRT halves), their recombination and the core's
        // public-key check of the result.
        let started = esp_hal::time::Instant::now();
        let signed = sign_pss_with_salt(&key, &mut board.rsa, &SALT, message);
        let hardware_us = started.elapsed().as_micros();
        let Signed::Accelerated(hardware) = signed else {
            panic!("the accelerator did not sign: {signed:?}");
        };

        assert_eq!(&hardware[..], &software[..], "same key, salt and message");
        let public = rsa::pss::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
        let sig = rsa::pss::Signature::try_from(&hardware[..]).expect("PSS");
        public
            .verify(message, &sig)
            .expect("the accelerator's signature verifies");

        let tenths = software_us * 10 / hardware_us.max(1);
        esp_println::println!(
            "rsa-2048 pss signature: software {} ms, accelerator {} ms ({}.{}x)",
            software_us / 1000,
            hardware_us / 1000,
            tenths / 10,
            tenths % 10
        );
        assert!(
            hardware_us < software_us,
            "{hardware_us} us >= {software_us} us"
        );
    }

    #[test]
    fn the_rsa_accelerator_takes_as_long_for_any_exponent(mut board: Board) {
        use rsa::traits::PublicKeyParts;
        let key = rsa_test_key();
        let n = key.n();
        let modulus = words(n);
        let r = words(&((rsa::BigUint::from(1u8) << 4096) % n));
        let base = words(&(n >> 1));
        let mut out = [0u32; 64];
        let mut time = |exponent: &[u32; 64]| {
            let op = ModExpOperands {
                base: &base,
                exponent,
                modulus: &modulus,
                m_prime: montgomery_m_prime(modulus[0]),
                r: &r,
            };
            // The fastest of three: the scheduler or an interrupt can only add time.
            (0..3)
                .map(|_| {
                    let started = esp_hal::time::Instant::now();
                    board
                        .rsa
                        .mod_exp(&op, &mut out)
                        .expect("2048-bit exponentiation");
                    started.elapsed().as_micros()
                })
                .min()
                .unwrap_or(u64::MAX)
        };
        // Hamming weight 1 and 2048, both with the top bit set (no leading zeros to skip).
        let mut sparse = [0u32; 64];
        sparse[63] = 0x8000_0000;
        let dense = [u32::MAX; 64];
        let (a, b) = (time(&sparse), time(&dense));
        esp_println::println!("rsa-2048 exponentiation: weight 1 {a} us, weight 2048 {b} us");
        // The chip's "acceleration" mode skips the multiply for each 0 bit (about half the
        // work for `sparse`); in constant-time mode both take the same time. Tolerance 5%
        // (polling and interrupt jitter), far below that halving.
        assert!(a.abs_diff(b) * 20 < a.max(b), "{a} us vs {b} us");
    }

    #[test]
    fn backoff_jitter_comes_from_the_hardware_rng(board: Board) {
        let mut rng = Jitter(board.rng);
        let mut backoff = Backoff::new(BackoffConfig::default());
        // Reach the cap, then draw: full jitter spreads delays over [0, cap].
        let mut delays = [0u64; 32];
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        let ceiling = backoff.ceiling().as_millis();
        for d in delays.iter_mut() {
            *d = backoff.next_delay(&mut rng).as_millis();
            assert!(*d <= ceiling, "{d} > {ceiling}");
        }
        delays.sort_unstable();
        let distinct = delays.windows(2).filter(|w| w[0] != w[1]).count() + 1;
        // 32 draws over ~60,000 values: repeats are rare; a stuck RNG gives 1.
        assert!(distinct >= 28, "only {distinct} distinct delays of 32");
        // Both halves of the range are hit (chance of failing: 2 * 2^-32).
        assert!(delays[0] < ceiling / 2 && delays[31] > ceiling / 2);
    }

    #[test]
    #[timeout(60)]
    async fn wifi_controller_starts_and_scans(board: Board) {
        let (mut controller, _interface) = board.wifi.expect("WiFi controller starts");
        // Any result, even no access point in range, proves the radio runs.
        let scan = ScanConfig::default().with_max(1);
        controller.scan_async(&scan).await.expect("scan completes");
    }
}
