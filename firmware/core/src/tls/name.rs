//! Matching the server name the device dialled against the leaf certificate.
//!
//! Rules (RFC 6125, as browsers and rustls/webpki apply them):
//! - an IP-address server name matches only iPAddress SANs, byte for byte;
//! - a DNS server name is compared with *every* dNSName SAN, ASCII case-insensitively,
//!   ignoring one trailing dot;
//! - a wildcard is allowed only as the whole left-most label (`*.iot.example.com`), matches
//!   exactly one non-empty label, and needs at least two labels after it;
//! - the subject commonName is consulted only when the certificate has no subjectAltName
//!   extension at all.

use core::net::IpAddr;

use super::cert::{AltName, Certificate};

/// What the device dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerName<'a> {
    Dns(&'a str),
    Ip(IpAddr),
}

impl<'a> ServerName<'a> {
    /// An IPv4/IPv6 literal becomes [`ServerName::Ip`], anything else a DNS name.
    #[must_use]
    pub fn parse(name: &'a str) -> Self {
        match name.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Dns(name),
        }
    }
}

/// Whether `cert` is issued for `name`.
pub(crate) fn certificate_matches(cert: &Certificate<'_>, name: ServerName<'_>) -> bool {
    match name {
        ServerName::Ip(ip) => cert.alt_names().any(|san| match (san, ip) {
            (AltName::Ip(bytes), IpAddr::V4(v4)) => bytes == v4.octets(),
            (AltName::Ip(bytes), IpAddr::V6(v6)) => bytes == v6.octets(),
            _ => false,
        }),
        ServerName::Dns(host) => {
            if cert.subject_alt_names.is_some() {
                cert.alt_names().any(|san| match san {
                    AltName::Dns(pattern) => dns_name_matches(pattern, host.as_bytes()),
                    AltName::Ip(_) => false,
                })
            } else {
                cert.common_name()
                    .is_some_and(|cn| dns_name_matches(cn, host.as_bytes()))
            }
        }
    }
}

/// RFC 6125 matching of one certificate name (`pattern`) against a host name.
#[must_use]
pub fn dns_name_matches(pattern: &[u8], host: &[u8]) -> bool {
    let pattern = strip_root(pattern);
    let host = strip_root(host);
    if !is_hostname(host, false) || !is_hostname(pattern, true) {
        return false;
    }
    match pattern.strip_prefix(b"*.") {
        None => !pattern.contains(&b'*') && pattern.eq_ignore_ascii_case(host),
        Some(suffix) => {
            // One wildcard, in the left-most label only, over at least two more labels.
            if suffix.contains(&b'*') || !suffix.contains(&b'.') {
                return false;
            }
            match host.iter().position(|&b| b == b'.') {
                Some(dot) if dot > 0 => host[dot + 1..].eq_ignore_ascii_case(suffix),
                _ => false,
            }
        }
    }
}

fn strip_root(name: &[u8]) -> &[u8] {
    name.strip_suffix(b".").unwrap_or(name)
}

/// LDH labels separated by single dots (plus `*` in a pattern, checked by the caller).
fn is_hostname(name: &[u8], allow_star: bool) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || (allow_star && b == b'*'))
        })
}

#[cfg(test)]
mod tests;
