//! The command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use firmware_core::session::{BackoffConfig, Duration, JitterShape, Settings};

use crate::serial::Target;

/// The AWS IoT thing, running on the host over real TCP + TLS.
#[derive(Debug, Parser)]
#[command(name = "virtual-device", version)]
pub struct Args {
    /// The flash image (`certs image` output): credentials and config.
    #[arg(long, value_name = "FILE")]
    pub flash: PathBuf,
    /// Where the serial log goes: `-` for stdout, or a path such as a pseudo-terminal's
    /// slave (`/dev/pts/N`).
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub serial: Target,
    /// For tests of the test rig only: break one of Device Advisor's rules on purpose, so
    /// `hil qualify` can be shown to catch it (repeatable). Never use it otherwise.
    #[arg(long, value_enum, value_name = "RULE")]
    pub misbehave: Vec<Misbehave>,
    /// For tests: sign an RSA device key's CertificateVerify through the core's
    /// accelerator hook (as the ESP32-C3 does with its RSA peripheral), computed in
    /// software, or deliberately wrong to show the fallback. Without it the key signs in
    /// software directly, as before.
    #[arg(long, value_enum, value_name = "HOOK")]
    pub rsa_exponentiator: Option<RsaHook>,
}

/// What stands in for a board's RSA accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RsaHook {
    /// The core's software exponentiator: the accelerated signing path, exactly.
    Software,
    /// Every result off by one: the device must notice, sign in software and say so once.
    Faulty,
}

/// A Device Advisor rule the device can be told to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Misbehave {
    /// Retry every 5 s, as the original tutorial's sketch does (no backoff, no jitter).
    ConstantRetry,
    /// Reset the reconnect backoff on every CONNACK, even on a connection that drops at
    /// once.
    ResetBackoffOnConnack,
    /// Subscribe again when the broker resumed a session that holds the subscription.
    ResubscribeOnResume,
    /// Carry on without the subscription when SUBACK never comes.
    IgnoreSubackTimeout,
}

impl Misbehave {
    /// `settings` with this rule broken.
    pub fn apply(self, settings: &mut Settings) {
        match self {
            Self::ConstantRetry => {
                let five = Duration::from_secs(5);
                settings.backoff = BackoffConfig {
                    base: five,
                    cap: five,
                    floor: five,
                    shape: JitterShape::Fixed,
                    outage_cap: false,
                };
            }
            Self::ResetBackoffOnConnack => settings.stable_after = Duration::from_millis(0),
            Self::ResubscribeOnResume => settings.misbehaviour.resubscribe_on_resume = true,
            Self::IgnoreSubackTimeout => settings.misbehaviour.ignore_suback_timeout = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let a = Args::try_parse_from(["virtual-device", "--flash", "f.img"]).unwrap();
        assert_eq!(a.serial, Target::Stdout);
        let a = Args::try_parse_from(["vd", "--flash", "f.img", "--serial", "/dev/pts/3"]).unwrap();
        assert_eq!(a.serial, Target::Path("/dev/pts/3".into()));
        assert!(Args::try_parse_from(["vd"]).is_err());
        assert!(a.misbehave.is_empty());
        assert_eq!(a.rsa_exponentiator, None);
        let a = Args::try_parse_from(["vd", "--flash", "f", "--rsa-exponentiator", "faulty"]);
        assert_eq!(a.unwrap().rsa_exponentiator, Some(RsaHook::Faulty));
    }

    #[test]
    fn each_misbehaviour_changes_the_settings() {
        let a = Args::try_parse_from([
            "vd",
            "--flash",
            "f.img",
            "--misbehave",
            "constant-retry",
            "--misbehave",
            "ignore-suback-timeout",
        ])
        .unwrap();
        assert_eq!(
            a.misbehave,
            [Misbehave::ConstantRetry, Misbehave::IgnoreSubackTimeout]
        );
        let normal = Settings::new("0", "virtual");
        for m in Misbehave::value_variants() {
            let mut s = normal;
            m.apply(&mut s);
            assert_ne!(s, normal, "{m:?}");
        }
    }
}
