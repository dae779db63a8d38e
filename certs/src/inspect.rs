//! `certs inspect`: describe certificates, keys and flash images without ever printing a
//! secret (key bytes, the WiFi password).

use std::io::Write;
use std::path::Path;

use firmware_core::config::DeviceConfig;
use firmware_core::log::LoadError;
use time::OffsetDateTime;

use crate::error::{CertsError, InputProblem};
use crate::image::{self, BLOCK_SIZE, CA_PATH, CERT_PATH, CONFIG_PATH, KEY_PATH};
use crate::keys::{self, KeyError, PrivateKey};
use crate::show;
use crate::x509::{self, CertInfo, Object};

/// The LittleFS superblock names itself at this offset of block 0 (and of block 1).
const LFS_MAGIC: &[u8] = b"littlefs";
const LFS_MAGIC_OFFSET: usize = 8;

/// Describe each file on `out`. Returns the first problem found (expired certificate,
/// key that does not match `--cert`, corrupt image, ...) after describing everything.
pub fn run_inspect(
    files: &[impl AsRef<Path>],
    match_cert: Option<&Path>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let reference = match match_cert {
        Some(path) => Some((path, x509::read_certificate(path)?.1)),
        None => None,
    };
    let mut first_problem = None;
    for path in files {
        let path = path.as_ref();
        if let Err(e) = inspect_file(path, reference.as_ref(), now, out) {
            // Only the first problem reaches stderr; list every one next to its file.
            if files.len() > 1 {
                writeln!(out, "  problem: {e}").ok();
            }
            first_problem.get_or_insert(e);
        }
    }
    match first_problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn inspect_file(
    path: &Path,
    reference: Option<&(&Path, CertInfo)>,
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let bytes = x509::read_input(path)?;
    // The superblock magic first: an image may hold PEM text in a file (a `/private.der`
    // that is really PEM), which must not make the whole image read as a PEM file.
    if has_image_magic(&bytes) || (!x509::looks_like_pem(&bytes) && looks_like_image(&bytes)) {
        return inspect_image(path, &bytes, now, out);
    }
    let objects = x509::decode_objects(path, &bytes)?;
    let mut problem = None;
    for object in objects {
        let result = match object {
            Object::Certificate(der) => describe_cert(path, &der, now, out),
            Object::PrivateKey(key) => describe_key(path, &key, reference, out),
            Object::UnsupportedKey(t) => {
                writeln!(out, "{}: private key {t}", path.display()).ok();
                Err(CertsError::input(
                    path,
                    InputProblem::UnsupportedKey(t.to_string()),
                ))
            }
            Object::Other(tag) => {
                writeln!(out, "{}: PEM block {tag}", path.display()).ok();
                Ok(())
            }
        };
        if let Err(e) = result {
            problem.get_or_insert(e);
        }
    }
    match problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The LittleFS superblock names itself in block 0 or 1.
fn has_image_magic(bytes: &[u8]) -> bool {
    let magic_in_block = |block: usize| {
        let at = block * BLOCK_SIZE + LFS_MAGIC_OFFSET;
        bytes.get(at..at + LFS_MAGIC.len()) == Some(LFS_MAGIC)
    };
    magic_in_block(0) || magic_in_block(1)
}

/// Not PEM, not a DER certificate or key, and shaped like a LittleFS image.
fn looks_like_image(bytes: &[u8]) -> bool {
    if x509::is_der_certificate(bytes) || keys::parse_der_key(bytes).is_ok() {
        return false;
    }
    // Whole blocks are enough: a corrupted image may have lost its magic too, and must be
    // reported as corrupt rather than as "not PEM or DER".
    has_image_magic(bytes) || (!bytes.is_empty() && bytes.len().is_multiple_of(BLOCK_SIZE))
}

fn describe_cert(
    path: &Path,
    der: &[u8],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let info = CertInfo::from_der(der).map_err(|detail| {
        CertsError::input(
            path,
            InputProblem::Malformed {
                what: "certificate",
                detail,
            },
        )
    })?;
    writeln!(
        out,
        "{}: certificate ({} bytes DER)",
        path.display(),
        der.len()
    )
    .ok();
    write_cert_details(&info, now, out);
    info.check_validity(now)
        .map(|_| ())
        .map_err(|p| CertsError::input(path, p))
}

fn write_cert_details(info: &CertInfo, now: OffsetDateTime, out: &mut dyn Write) {
    let state = if now > info.not_after {
        "EXPIRED".to_string()
    } else if now < info.not_before {
        "NOT YET VALID".to_string()
    } else {
        format!("{} days left", (info.not_after - now).whole_days())
    };
    writeln!(out, "  subject:  {}", show::text(&info.subject)).ok();
    writeln!(out, "  issuer:   {}", show::text(&info.issuer)).ok();
    writeln!(
        out,
        "  validity: {} to {} ({state})",
        x509::format_time(info.not_before),
        x509::format_time(info.not_after)
    )
    .ok();
    writeln!(out, "  key:      {}", info.public_key.key_type()).ok();
    if info.usable_as_ca() {
        writeln!(out, "  CA:       yes").ok();
    }
    if !info.subject_alt_names.is_empty() {
        let sans = show::text(&info.subject_alt_names.join(", "));
        writeln!(out, "  SANs:     {sans}").ok();
    }
    writeln!(out, "  sha256:   {}", info.fingerprint()).ok();
}

fn describe_key(
    path: &Path,
    key: &PrivateKey,
    reference: Option<&(&Path, CertInfo)>,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let supported = if key.key_type().firmware_supported() {
        ""
    } else {
        " (not supported by the firmware)"
    };
    writeln!(
        out,
        "{}: private key {}{supported}",
        path.display(),
        key.key_type()
    )
    .ok();
    if let Some((cert_path, cert)) = reference {
        if key.matches(&cert.public_key) {
            writeln!(out, "  matches:  {}", cert_path.display()).ok();
        } else {
            writeln!(
                out,
                "  matches:  NO, not the key of {}",
                cert_path.display()
            )
            .ok();
            return Err(CertsError::input(
                path,
                InputProblem::KeyMismatch(cert_path.to_path_buf()),
            ));
        }
    }
    if !key.key_type().firmware_supported() {
        return Err(CertsError::input(
            path,
            InputProblem::UnsupportedKey(key.key_type().to_string()),
        ));
    }
    Ok(())
}

fn inspect_image(
    path: &Path,
    bytes: &[u8],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let corrupt = |detail: String| CertsError::input(path, InputProblem::CorruptImage(detail));
    let contents = image::read_image(bytes).map_err(|e| corrupt(e.to_string()))?;
    writeln!(
        out,
        "{}: LittleFS image, {} bytes, {} blocks of {BLOCK_SIZE}",
        path.display(),
        bytes.len(),
        contents.blocks
    )
    .ok();
    for (name, data) in &contents.files {
        writeln!(out, "  {name:<14} {:>6} B", data.len()).ok();
    }
    // littlefs checksums its metadata but not file data: parse every file so damaged
    // contents are reported here instead of failing on the device.
    let file = |name: &str| {
        let data = contents
            .file(name)
            .ok_or_else(|| corrupt(format!("{name} missing from the image")))?;
        // The device reads each file into a fixed buffer: a larger one never loads.
        let max = match name {
            CONFIG_PATH => firmware_core::config::MAX_CONFIG_JSON,
            KEY_PATH => firmware_core::image::MAX_KEY,
            _ => firmware_core::image::MAX_CERT,
        };
        if data.len() > max {
            return Err(CertsError::input(
                path,
                InputProblem::Other(format!(
                    "{name}: {} bytes, the device reads at most {max}",
                    data.len()
                )),
            ));
        }
        Ok(data)
    };
    let config_bytes = file(CONFIG_PATH)?;
    let config = DeviceConfig::from_json(config_bytes)
        .map_err(|e| corrupt(format!("{CONFIG_PATH}: {e}")))?;
    writeln!(out, "  {CONFIG_PATH} (WiFi password masked):").ok();
    for line in image::masked_config(&config).lines() {
        writeln!(out, "    {line}").ok();
    }
    let cert_der = file(CERT_PATH)?;
    // The device's own check first, so this names the file the device's log would.
    if let Err(f) =
        firmware_core::creds::check_credentials(cert_der, file(KEY_PATH)?, file(CA_PATH)?)
    {
        let detail = format!("{}: {}", f.file, crate::creds::device_refusal(&f));
        // Damage is corruption of the image; a wrong but intact file is not.
        let problem = match f.error {
            LoadError::Empty | LoadError::Malformed | LoadError::BadSignature => {
                InputProblem::CorruptImage(detail)
            }
            _ => InputProblem::DeviceRefuses(detail),
        };
        return Err(CertsError::input(path, problem));
    }
    let cert = CertInfo::from_der(cert_der)
        .map_err(|e| corrupt(format!("{CERT_PATH}: not a DER certificate: {e}")))?;
    let key = keys::parse_der_key(file(KEY_PATH)?).map_err(|e| {
        corrupt(match e {
            KeyError::Encrypted => format!("{KEY_PATH}: encrypted key"),
            KeyError::Unsupported(t) => format!("{KEY_PATH}: unsupported key type {t}"),
            KeyError::Malformed(d) => format!("{KEY_PATH}: not a DER private key: {d}"),
        })
    })?;
    let ca = CertInfo::from_der(file(CA_PATH)?)
        .map_err(|e| corrupt(format!("{CA_PATH}: not a DER certificate: {e}")))?;
    writeln!(out, "  {CERT_PATH}:").ok();
    write_cert_details(&cert, now, out);
    writeln!(
        out,
        "  {KEY_PATH}: {}, {} the certificate",
        key.key_type(),
        if key.matches(&cert.public_key) {
            "matches"
        } else {
            "does NOT match"
        }
    )
    .ok();
    writeln!(out, "  {CA_PATH}:").ok();
    write_cert_details(&ca, now, out);
    let inner = |name: &str, problem: InputProblem| {
        CertsError::input(path, InputProblem::Other(format!("{name}: {problem}")))
    };
    if !key.key_type().firmware_supported() {
        return Err(inner(
            KEY_PATH,
            InputProblem::UnsupportedKey(key.key_type().to_string()),
        ));
    }
    if !key.matches(&cert.public_key) {
        return Err(inner(KEY_PATH, InputProblem::KeyMismatch(CERT_PATH.into())));
    }
    for (name, info) in [(CERT_PATH, &cert), (CA_PATH, &ca)] {
        info.check_validity(now).map_err(|p| inner(name, p))?;
    }
    if !ca.usable_as_ca() {
        return Err(inner(CA_PATH, InputProblem::NotCa));
    }
    Ok(())
}
