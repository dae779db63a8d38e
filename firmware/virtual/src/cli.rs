//! The command line.

use std::path::PathBuf;

use clap::Parser;

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
    }
}
