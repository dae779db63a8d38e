//! `certs`: the thing's certificate tool.
//!
//! - `certs init` makes a self-signed test PKI for the mock broker and the rig.
//! - `certs import` turns the AWS IoT console's downloads into the DER files the device
//!   reads, replacing the tutorial's three openssl commands.
//! - `certs image` builds the LittleFS flash image (DESIGN.md section 3).
//! - `certs inspect` describes certificates, keys and images, never printing secrets.
//! - `certs aws provision|observer|deprovision` (cargo feature `aws`) makes the thing's
//!   or the observer's identity in an AWS account with the AWS SDK, and removes it.
//!
//! Bad input ends with exit status 2 and one line on stderr naming the file and the
//! problem. Outputs are all-or-nothing: files are written under temporary names and
//! renamed into place once everything is written, private keys with mode 0600; with
//! `--force`, the files being replaced are kept aside and put back if any file of the
//! new set cannot be renamed into place.
//!
//! # Layout
//!
//! `certs init --out DIR` writes:
//!
//! ```text
//! DIR/
//!   ca.pem ca.der ca.key.pem ca.key.der                  self-signed CA ("<thing> test CA")
//!   server.pem server.der server.key.pem server.key.der  broker: CN=endpoint, SANs endpoint,
//!                                                        localhost, 127.0.0.1, --san ...
//!   device.pem device.der device.key.pem device.key.der  the thing: CN=<thing>, no O=
//!   observer.pem observer.der observer.key.pem ...       the rig's client: CN=observer
//!   policy.json                                          AWS IoT policy, least privilege
//!   observer-policy.json                                 the observer's (hil --target aws)
//!   device/cert.der device/private.der device/ca.der     exactly what the flash image holds
//!   device/cert.pem device/private.pem                   PEM copies of the same
//! ```
//!
//! `*.key.pem`/`*.key.der` are PKCS#8. `device/private.der` is the form the device reads
//! and `certs import` writes: SEC1 `ECPrivateKey` (as `openssl ec -outform DER`) or
//! PKCS#1 `RSAPrivateKey` (as `openssl rsa -traditional -outform DER`).
//!
//! `certs aws provision --out DIR` (feature `aws`) writes `DIR/device/{cert,private,ca}.der`,
//! `DIR/flash.img`, `DIR/policy.json` and `DIR/aws-manifest.json` (the AWS objects it
//! created, which `certs aws deprovision` removes); `certs aws observer --out DIR` writes
//! `observer.pem observer.key.pem AmazonRootCA1.pem observer-policy.json aws-manifest.json`.
//!
//! `certs import --out DIR` writes `DIR/cert.der DIR/private.der DIR/ca.der`; `certs
//! image --creds DIR` reads them (or `DIR/device/` of an init output).
//!
//! # Library
//!
//! - [`pki`]: test PKIs from Rust — [`pki::Pki::generate`], [`pki::CertificateAuthority`],
//!   [`pki::aws_like_chain`], [`pki::server_cert_expired`], [`pki::server_cert_untrusted`].
//! - [`load`]: an existing CA (`ca.pem` + `ca.key.pem` of a `certs init` folder) that
//!   issues again: [`pki::CertificateAuthority::load_dir`].
//! - [`policy`]: the AWS IoT policies of the thing and of the rig's observer identity
//!   (`hil --target aws`).
//! - [`keys`]: key algorithms, private keys in every form and their conversion to the
//!   device's.
//! - [`creds`]: the three credential files, checked together.
//! - [`image`]: build and read flash images.
//! - [`x509`]: certificate facts and PEM/DER input.
//! - [`show`]: outside text (names, ids, topics) escaped for printing as the device log does.

#[cfg(feature = "aws")]
pub mod aws;
pub mod cli;
pub mod creds;
pub mod error;
pub mod image;
pub mod inspect;
pub mod keys;
pub mod load;
pub mod output;
pub mod pki;
pub mod policy;
pub mod show;
pub mod x509;

use std::io::Write;

use time::OffsetDateTime;

pub use cli::Cli;
pub use error::{CertsError, InputProblem, OutputProblem};

use cli::{Command, ImportArgs, InitArgs};
use creds::Credentials;
use pki::{InitOptions, Pki};

/// Run a parsed command line. Summaries go to stdout, warnings to stderr; the error, if
/// any, is for the caller to print (one line) and turn into an exit status.
pub fn run(cli: Cli) -> Result<(), CertsError> {
    let now = OffsetDateTime::now_utc();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let warnings = match cli.command {
        Command::Init(args) => run_init(&args, &mut out)?,
        Command::Import(args) => run_import(&args, now, &mut out)?,
        Command::Image(mut args) => {
            let mut warnings = image::resolve_wifi_password(
                &mut args,
                &mut std::io::stdin().lock(),
                std::env::var_os(image::WIFI_PASSWORD_ENV),
            )?;
            warnings.extend(image::run_image(&args, now, &mut out)?);
            warnings
        }
        Command::Inspect(args) => {
            inspect::run_inspect(&args.files, args.cert.as_deref(), now, &mut out)?;
            Vec::new()
        }
        #[cfg(feature = "aws")]
        Command::Aws(args) => {
            aws::run(
                args.command,
                std::env::var(image::WIFI_PASSWORD_ENV).ok(),
                &mut out,
            )?;
            Vec::new()
        }
    };
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// `certs init`: generate everything in memory, check the output, then write it all.
pub fn run_init(args: &InitArgs, out: &mut dyn Write) -> Result<Vec<String>, CertsError> {
    if args.days == 0 {
        return Err(CertsError::argument("--days", "must be at least 1"));
    }
    if args.thing.is_empty() {
        return Err(CertsError::argument("--thing", "must not be empty"));
    }
    // The thing name is the MQTT client id: hold it to the device's limits up front.
    firmware_core::config::DeviceConfig::new("localhost", &args.thing)
        .map_err(|e| CertsError::argument("--thing", e))?;
    for san in &args.sans {
        if san.is_empty() || san.contains(char::is_whitespace) {
            return Err(CertsError::argument(
                "--san",
                format!("{san:?} is not a DNS name or IP address"),
            ));
        }
    }
    let options = InitOptions {
        thing: args.thing.clone(),
        key: args.key,
        endpoint: args.endpoint.clone(),
        extra_sans: args.sans.clone(),
        days: args.days,
        ..InitOptions::default()
    };
    // Refuse before generating anything.
    output::check_names(&args.out, &pki::layout(), args.force)?;
    let pki = Pki::generate(&options).map_err(|e| match e {
        pki::PkiError::InvalidName(msg) => CertsError::argument("--endpoint/--san", msg),
        other => CertsError::internal(other),
    })?;
    let files = pki.files();
    output::write_set(&args.out, &files, args.force)?;
    let dir = args.out.display();
    writeln!(out, "wrote test PKI ({}) to {dir}/", options.key).ok();
    let thing = show::text(&options.thing);
    writeln!(out, "  ca.pem        CA \"{thing} test CA\"").ok();
    writeln!(
        out,
        "  server.pem    broker, SANs {}",
        show::text(&options.server_names().join(", "))
    )
    .ok();
    writeln!(out, "  device.pem    thing CN={thing}").ok();
    writeln!(
        out,
        "  observer.pem  rig client CN={}",
        show::text(&options.observer)
    )
    .ok();
    writeln!(out, "  policy.json   AWS IoT policy for the thing").ok();
    writeln!(
        out,
        "  observer-policy.json  AWS IoT policy for the observer (hil --target aws)"
    )
    .ok();
    writeln!(
        out,
        "  device/       cert.der private.der ca.der for `certs image --creds {dir}/device`"
    )
    .ok();
    writeln!(
        out,
        "  (private keys *.key.*, device/private.* are mode 0600)"
    )
    .ok();
    Ok(Vec::new())
}

/// `certs import`: check the three downloads together, then write the DER set.
pub fn run_import(
    args: &ImportArgs,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<Vec<String>, CertsError> {
    let (creds, warnings) = Credentials::load(&args.cert, &args.key, &args.ca, now)?;
    creds.write(&args.out, args.force)?;
    let dir = args.out.display();
    writeln!(
        out,
        "wrote {dir}/cert.der ({} B, {}, {}, until {})",
        creds.cert_der.len(),
        show::text(&creds.cert.subject),
        creds.cert.public_key.key_type(),
        x509::format_time(creds.cert.not_after)
    )
    .ok();
    writeln!(
        out,
        "wrote {dir}/private.der ({} B, {}, matches the certificate, mode 0600)",
        creds.key_der().len(),
        creds.key.key_type()
    )
    .ok();
    writeln!(
        out,
        "wrote {dir}/ca.der ({} B, {})",
        creds.ca_der.len(),
        show::text(&creds.ca.subject)
    )
    .ok();
    Ok(warnings)
}
