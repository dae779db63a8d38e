//! The flash image (DESIGN.md section 3): building it from credentials and a config, and
//! reading it back. The filesystem code is `firmware_core::image`, the same the device
//! runs, so what this writes is what the device reads.

use std::path::Path;

use firmware_core::config::{self, ConfigError, DeviceConfig};
use firmware_core::image::{self as fs, ImageError};

use crate::cli::ImageArgs;
use crate::creds::Credentials;
use crate::error::{CertsError, InputProblem, OutputProblem};
use crate::show;

pub use firmware_core::image::{BLOCK_SIZE, CA_PATH, CERT_PATH, CONFIG_PATH, KEY_PATH};

/// The image size `certs image` uses unless told otherwise.
pub const DEFAULT_IMAGE_SIZE: usize = 65536;

/// Format an image of `size` bytes holding exactly `files` (path, contents).
///
/// Takes arbitrary files so tests can build deliberately broken images too.
pub fn build_image_files(files: &[(&str, &[u8])], size: usize) -> Result<Vec<u8>, ImageError> {
    let mut buf = vec![0xFFu8; size];
    let mut flash = &mut buf[..];
    fs::format(&mut flash)?;
    fs::mount(&mut flash, |mounted| {
        for (path, data) in files {
            mounted.write_file(path, data)?;
        }
        Ok(())
    })?;
    Ok(buf)
}

/// The device's image: `/cert.der`, `/private.der`, `/ca.der`, `/config.json`.
///
/// ```no_run
/// use certs::{creds::Credentials, image, pki::{InitOptions, Pki}};
/// use firmware_core::config::DeviceConfig;
///
/// let pki = Pki::generate(&InitOptions::default())?;
/// let creds = Credentials::from_pki(&pki)?;
/// let mut config = DeviceConfig::new("localhost", "ESPthing").map_err(|e| e.to_string())?;
/// config.endpoint.port = 18883;
/// let bytes = image::build_image(&creds, &config, image::DEFAULT_IMAGE_SIZE)
///     .map_err(|e| e.to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build_image(
    creds: &Credentials,
    config: &DeviceConfig,
    size: usize,
) -> Result<Vec<u8>, ImageError> {
    let json = config_json(config);
    let key = creds.key_der();
    build_image_files(
        &[
            (CERT_PATH, &creds.cert_der),
            (KEY_PATH, &key),
            (CA_PATH, &creds.ca_der),
            (CONFIG_PATH, json.as_bytes()),
        ],
        size,
    )
}

/// `/config.json` as written to the image.
pub fn config_json(config: &DeviceConfig) -> String {
    let mut json =
        serde_json::to_string_pretty(config).expect("DeviceConfig always serialises to JSON");
    json.push('\n');
    json
}

/// Everything in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageContents {
    /// Block count from the superblock.
    pub blocks: usize,
    /// Every file, path and size, in directory order.
    pub files: Vec<(String, Vec<u8>)>,
}

impl ImageContents {
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_slice())
    }
}

/// Mount an image (a copy: reading never changes the caller's bytes) and read every file.
pub fn read_image(bytes: &[u8]) -> Result<ImageContents, ImageError> {
    let mut buf = bytes.to_vec();
    let mut flash = &mut buf[..];
    fs::mount(&mut flash, |mounted| {
        let mut names = Vec::new();
        mounted.list(|path, _| names.push(path.to_string()))?;
        let mut files = Vec::new();
        for name in names {
            let path = if name.starts_with('/') {
                name
            } else {
                format!("/{name}")
            };
            let len = mounted.file_len(&path)?;
            // A file cannot hold more than the image: a larger size is damaged metadata,
            // and must not become an allocation of up to 4 GiB.
            if len > bytes.len() {
                return Err(ImageError::TooLarge {
                    path: firmware_core::config::set_str("path", &path)
                        .map_err(|_| ImageError::BadPath)?,
                    len,
                    max: bytes.len(),
                });
            }
            let mut data = vec![0u8; len];
            let read = mounted.read_file(&path, &mut data)?.len();
            data.truncate(read);
            files.push((path, data));
        }
        Ok(ImageContents {
            blocks: mounted.block_count(),
            files,
        })
    })
}

/// The JSON path of a config field and the flag that sets it.
const FLAGS: &[(&str, &str)] = &[
    ("wifi.ssid", "--wifi-ssid"),
    ("wifi.password", "--wifi-password"),
    ("endpoint.host", "--endpoint"),
    ("endpoint.port", "--endpoint"),
    ("ntp.host", "--ntp"),
    ("ntp.port", "--ntp"),
    ("ntp.resync_s", "--ntp-resync-s"),
    ("client_id", "--client-id"),
    ("pub_topic", "--pub-topic"),
    ("sub_topic", "--sub-topic"),
    ("period_ms", "--period-ms"),
    ("keepalive_s", "--keepalive-s"),
    ("qos", "--qos"),
];

fn flag_for(field: &str) -> &'static str {
    FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, flag)| *flag)
        .unwrap_or("config")
}

/// The device config for `certs image`: the `--config` file if any, then the flags on
/// top, then the tutorial's defaults (client id = the certificate's CN, endpoint
/// `localhost:8883`). Errors name the flag, or the file and field, at fault.
pub fn config_from_args(
    args: &ImageArgs,
    cert_cn: Option<&str>,
) -> Result<DeviceConfig, CertsError> {
    let mut from_flags: Vec<&'static str> = Vec::new();
    let mut config = match &args.config {
        Some(path) => read_config_file(path, cert_cn)?,
        None => {
            let client_id = match (&args.client_id, cert_cn) {
                (Some(id), _) => id.as_str(),
                (None, Some(cn)) => cn,
                (None, None) => {
                    return Err(CertsError::argument(
                        "--client-id",
                        "required: the device certificate has no CN to default to",
                    ));
                }
            };
            // Placeholder host if the flag is absent; overridden or defaulted below.
            DeviceConfig::new("localhost", client_id).map_err(|e| blame_flag(&e))?
        }
    };
    let flag_err = |e: ConfigError| blame_flag(&e);
    if let Some(ssid) = &args.wifi_ssid {
        config.wifi.ssid = config::set_str("wifi.ssid", ssid).map_err(flag_err)?;
        from_flags.push("wifi.ssid");
    }
    if let Some(password) = &args.wifi_password {
        config.wifi.password = config::set_str("wifi.password", password).map_err(flag_err)?;
        from_flags.push("wifi.password");
    }
    if let Some(endpoint) = &args.endpoint {
        let (host, port) = split_host_port("--endpoint", endpoint)?;
        config.endpoint.host = config::set_str("endpoint.host", host).map_err(flag_err)?;
        config.endpoint.port = port.unwrap_or(config::DEFAULT_MQTT_PORT);
        from_flags.extend(["endpoint.host", "endpoint.port"]);
    }
    if let Some(ntp) = &args.ntp {
        let (host, port) = split_host_port("--ntp", ntp)?;
        config.ntp.host = config::set_str("ntp.host", host).map_err(flag_err)?;
        config.ntp.port = port.unwrap_or(config::DEFAULT_NTP_PORT);
        from_flags.extend(["ntp.host", "ntp.port"]);
    }
    if let Some(resync) = args.ntp_resync_s {
        config.ntp.resync_s = resync;
        from_flags.push("ntp.resync_s");
    }
    if let Some(id) = &args.client_id {
        config.client_id = config::set_str("client_id", id).map_err(flag_err)?;
        from_flags.push("client_id");
    }
    if let Some(topic) = &args.pub_topic {
        config.pub_topic = config::set_str("pub_topic", topic).map_err(flag_err)?;
        from_flags.push("pub_topic");
    }
    if let Some(topic) = &args.sub_topic {
        config.sub_topic = config::set_str("sub_topic", topic).map_err(flag_err)?;
        from_flags.push("sub_topic");
    }
    if let Some(period) = args.period_ms {
        config.period_ms = period;
        from_flags.push("period_ms");
    }
    if let Some(keepalive) = args.keepalive_s {
        config.keepalive_s = keepalive;
        from_flags.push("keepalive_s");
    }
    if let Some(qos) = args.qos {
        config.qos = qos;
        from_flags.push("qos");
    }
    config.validate().map_err(|e| {
        if from_flags.contains(&e.field) || args.config.is_none() {
            blame_flag(&e)
        } else {
            let path = args.config.as_deref().expect("checked above");
            CertsError::input(path, InputProblem::Other(e.to_string()))
        }
    })?;
    Ok(config)
}

fn blame_flag(e: &ConfigError) -> CertsError {
    // The message already starts with the field; name the flag in front of it.
    CertsError::argument(flag_for(e.field), e)
}

/// Parse a device.json that may leave out what flags and defaults supply.
fn read_config_file(path: &Path, cert_cn: Option<&str>) -> Result<DeviceConfig, CertsError> {
    let bad = |detail: String| CertsError::input(path, InputProblem::Other(detail));
    let text = crate::x509::read_input(path)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| bad("expected a JSON object".into()))?;
    // Required fields of the format that flags or defaults may supply instead.
    let endpoint = object
        .entry("endpoint")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(endpoint) = endpoint.as_object_mut() {
        endpoint
            .entry("host")
            .or_insert_with(|| serde_json::Value::from("localhost"));
    }
    if !object.contains_key("client_id") {
        let cn = cert_cn.unwrap_or_default();
        object.insert("client_id".into(), serde_json::Value::from(cn));
    }
    let json = serde_json::to_vec(&value).expect("a JSON value always serialises");
    serde_json::from_value::<DeviceConfig>(value).map_err(|e| {
        // serde_json names unknown keys but not the field of a value that does not fit
        // ("invalid value: integer `70000`, expected u16"): the device's parser does.
        match DeviceConfig::from_json(&json) {
            Err(named) if named.field != "config.json" && !is_unknown(&named) => {
                bad(named.to_string())
            }
            _ => bad(e.to_string()),
        }
    })
}

fn is_unknown(e: &ConfigError) -> bool {
    e.problem == config::Problem::UnknownField
}

/// The environment variable `certs image` takes the WiFi passphrase from.
pub const WIFI_PASSWORD_ENV: &str = "WIFI_PASSWORD";

/// Settle where the WiFi passphrase comes from, so a password need never appear in the
/// process list: `--wifi-password-stdin` (the first line of `stdin`), else
/// `--wifi-password` (with a warning that `ps` shows it), else `env` (the value of
/// [`WIFI_PASSWORD_ENV`]; empty counts as unset). Returns the warnings.
pub fn resolve_wifi_password(
    args: &mut ImageArgs,
    stdin: &mut dyn std::io::BufRead,
    env: Option<std::ffi::OsString>,
) -> Result<Vec<String>, CertsError> {
    if args.wifi_password_stdin {
        let mut line = String::new();
        stdin.read_line(&mut line).map_err(|e| {
            CertsError::argument("--wifi-password-stdin", format!("cannot read stdin: {e}"))
        })?;
        let password = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line);
        if password.is_empty() {
            return Err(CertsError::argument(
                "--wifi-password-stdin",
                "no password on the first line of stdin",
            ));
        }
        args.wifi_password = Some(password.to_string());
        return Ok(Vec::new());
    }
    if args.wifi_password.is_some() {
        return Ok(vec![format!(
            "--wifi-password is visible to every user in the process list; \
             use {WIFI_PASSWORD_ENV}=... or --wifi-password-stdin instead"
        )]);
    }
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        let password = value
            .into_string()
            .map_err(|_| CertsError::argument(WIFI_PASSWORD_ENV, "not valid UTF-8"))?;
        args.wifi_password = Some(password);
    }
    Ok(Vec::new())
}

/// `host`, `host:port`, `[v6]:port`.
fn split_host_port<'a>(flag: &str, s: &'a str) -> Result<(&'a str, Option<u16>), CertsError> {
    // A URL copied from a console: say what the device needs instead.
    if let Some((scheme, rest)) = s.split_once("://") {
        let host = rest.split('/').next().unwrap_or(rest);
        return Err(CertsError::argument(
            flag,
            format!(
                "{s:?} is a URL: give the host (and port) only, e.g. {host:?}; the device \
                 speaks MQTT over TLS to HOST:PORT, not {scheme}"
            ),
        ));
    }
    let port_of = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| CertsError::argument(flag, format!("invalid port {p:?}")))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| CertsError::argument(flag, "unclosed '[' in address"))?;
        return match tail.strip_prefix(':') {
            Some(port) => Ok((host, Some(port_of(port)?))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err(CertsError::argument(flag, "expected HOST[:PORT]")),
        };
    }
    match s.rsplit_once(':') {
        // More than one colon: a bare IPv6 address without a port.
        Some((host, _)) if host.contains(':') => Ok((s, None)),
        Some((host, port)) => Ok((host, Some(port_of(port)?))),
        None => Ok((s, None)),
    }
}

/// Run `certs image`.
pub fn run_image(
    args: &ImageArgs,
    now: time::OffsetDateTime,
    out: &mut dyn std::io::Write,
) -> Result<Vec<String>, CertsError> {
    if args.size == 0 || !args.size.is_multiple_of(BLOCK_SIZE) {
        return Err(CertsError::argument(
            "--size",
            format!("{} is not a multiple of {BLOCK_SIZE}", args.size),
        ));
    }
    if !args.force && args.out.exists() {
        return Err(CertsError::output(&args.out, OutputProblem::Exists));
    }
    let (creds, warnings) = Credentials::load_dir(&args.creds, now)?;
    let config = config_from_args(args, creds.cert.common_name.as_deref())?;
    let too_big = |name: &str, len: usize, max: usize| {
        CertsError::input(
            &args.creds.join(name),
            InputProblem::Other(format!("{len} bytes, the device reads at most {max}")),
        )
    };
    if creds.cert_der.len() > fs::MAX_CERT {
        return Err(too_big("cert.der", creds.cert_der.len(), fs::MAX_CERT));
    }
    if creds.ca_der.len() > fs::MAX_CERT {
        return Err(too_big("ca.der", creds.ca_der.len(), fs::MAX_CERT));
    }
    let key_len = creds.key_der().len();
    if key_len > fs::MAX_KEY {
        return Err(too_big("private.der", key_len, fs::MAX_KEY));
    }
    let min = fs::MIN_BLOCKS * BLOCK_SIZE;
    if args.size < min {
        return Err(CertsError::output(
            &args.out,
            OutputProblem::ImageTooSmall(format!(
                "--size {} is below the minimum of {min} bytes ({} blocks)",
                args.size,
                fs::MIN_BLOCKS
            )),
        ));
    }
    let image = build_image(&creds, &config, args.size).map_err(|e| match e {
        ImageError::NoSpace => CertsError::output(
            &args.out,
            OutputProblem::ImageTooSmall(format!("--size {} cannot hold the files", args.size)),
        ),
        other => CertsError::internal(format!("building the image: {other}")),
    })?;
    crate::output::write_file(&args.out, &image, true, args.force)?;
    writeln!(
        out,
        "wrote {} ({} bytes, {} blocks of {BLOCK_SIZE})",
        args.out.display(),
        image.len(),
        image.len() / BLOCK_SIZE
    )
    .ok();
    writeln!(
        out,
        "  {CERT_PATH} {} B ({}), {KEY_PATH} {} B ({}), {CA_PATH} {} B",
        creds.cert_der.len(),
        crate::show::text(&creds.cert.subject),
        key_len,
        creds.key.key_type(),
        creds.ca_der.len()
    )
    .ok();
    writeln!(
        out,
        "  {CONFIG_PATH}: client_id={} endpoint={}:{} pub={} sub={} period_ms={} qos={} wifi_ssid={}",
        show::value(&config.client_id),
        show::value(&config.endpoint.host),
        config.endpoint.port,
        show::value(&config.pub_topic),
        show::value(&config.sub_topic),
        config.period_ms,
        config.qos,
        if config.wifi.ssid.is_empty() {
            "(none)".to_string()
        } else {
            show::value(&config.wifi.ssid)
        }
    )
    .ok();
    Ok(warnings)
}

/// `/config.json` with the WiFi password masked, for display.
pub fn masked_config(config: &DeviceConfig) -> String {
    let mut value = serde_json::to_value(config).expect("DeviceConfig always serialises");
    if let Some(password) = value.pointer_mut("/wifi/password") {
        let shown = if password.as_str().is_some_and(str::is_empty) {
            "(empty)"
        } else {
            "***"
        };
        *password = serde_json::Value::from(shown);
    }
    serde_json::to_string_pretty(&value).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let ok = |s| split_host_port("--endpoint", s).unwrap();
        assert_eq!(ok("example.com"), ("example.com", None));
        assert_eq!(ok("example.com:8883"), ("example.com", Some(8883)));
        assert_eq!(ok("127.0.0.1:1883"), ("127.0.0.1", Some(1883)));
        assert_eq!(ok("[::1]:8883"), ("::1", Some(8883)));
        assert_eq!(ok("[::1]"), ("::1", None));
        assert_eq!(ok("::1"), ("::1", None));
        for bad in ["h:0", "h:70000", "h:x", "[::1", "[::1]x"] {
            assert!(split_host_port("--endpoint", bad).is_err(), "{bad}");
        }
        let url = split_host_port(
            "--endpoint",
            "https://abc-ats.iot.eu-west-1.amazonaws.com:8883/",
        )
        .unwrap_err()
        .to_string();
        assert!(url.contains("--endpoint"), "{url}");
        assert!(
            url.contains("\"abc-ats.iot.eu-west-1.amazonaws.com:8883\""),
            "{url}"
        );
    }

    #[test]
    fn masked_config_hides_the_password() {
        let mut config = DeviceConfig::new("h", "c").unwrap();
        config.wifi.password = config::set_str("wifi.password", "s3cret-pass").unwrap();
        let shown = masked_config(&config);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"***\""), "{shown}");
        config.wifi.password.clear();
        assert!(masked_config(&config).contains("(empty)"));
    }

    #[test]
    fn image_round_trips_through_the_firmware_reader() {
        let image =
            build_image_files(&[("/a.txt", b"hello"), ("/b.bin", &[0u8; 5000])], 65536).unwrap();
        let contents = read_image(&image).unwrap();
        assert_eq!(contents.blocks, 16);
        assert_eq!(contents.file("/a.txt"), Some(&b"hello"[..]));
        assert_eq!(contents.file("/b.bin").map(<[u8]>::len), Some(5000));
    }
}
