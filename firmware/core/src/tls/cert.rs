//! A borrowed, allocation-free view of an X.509 certificate (RFC 5280), enough to
//! verify a server chain: raw TBS bytes, names, validity, key, and the extensions the
//! verifier enforces (subjectAltName, basicConstraints, keyUsage, extendedKeyUsage).
//!
//! Rules: every byte comes from the network, so every read is bounds-checked and any
//! deviation from DER structure is [`Malformed`], never a panic. Names are compared as
//! raw DER (as webpki does), not by RFC 5280's normalising comparison.

use der::Decode;
use der::asn1::{GeneralizedTime, ObjectIdentifier, UtcTime};

/// The input is not the DER structure expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0]` constructed (version, SEC1 parameters).
pub(crate) const TAG_CTX0: u8 = 0xa0;
/// `[3]` constructed (extensions).
const TAG_CTX3: u8 = 0xa3;
/// GeneralName dNSName `[2] IMPLICIT IA5String`.
const TAG_SAN_DNS: u8 = 0x82;
/// GeneralName iPAddress `[7] IMPLICIT OCTET STRING`.
const TAG_SAN_IP: u8 = 0x87;

/// One DER element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    /// The whole element, header included.
    pub raw: &'a [u8],
}

/// Reads one DER element off the front of `input`. Single-byte tags and definite
/// lengths only (DER forbids indefinite lengths; X.509 uses no high tag numbers).
pub(crate) fn take<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, Malformed> {
    let all = *input;
    let (&tag, rest) = all.split_first().ok_or(Malformed)?;
    if tag & 0x1f == 0x1f {
        return Err(Malformed);
    }
    let (&first, mut rest) = rest.split_first().ok_or(Malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        // 0x80 is indefinite; more than 3 length bytes is far beyond any certificate.
        if n == 0 || n > 3 || rest.len() < n {
            return Err(Malformed);
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(Malformed);
    }
    let header_len = all.len() - rest.len();
    let (value, after) = rest.split_at(len);
    *input = after;
    Ok(Tlv {
        tag,
        value,
        raw: &all[..header_len + len],
    })
}

/// Reads one element and insists on its tag.
pub(crate) fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Result<Tlv<'a>, Malformed> {
    let tlv = take(input)?;
    if tlv.tag == tag {
        Ok(tlv)
    } else {
        Err(Malformed)
    }
}

/// The single element that must make up all of `input`.
pub(crate) fn only<'a>(input: &'a [u8], tag: u8) -> Result<Tlv<'a>, Malformed> {
    let mut rest = input;
    let tlv = expect(&mut rest, tag)?;
    if rest.is_empty() {
        Ok(tlv)
    } else {
        Err(Malformed)
    }
}

/// Takes the next element only if it carries `tag`.
pub(crate) fn optional<'a>(input: &mut &'a [u8], tag: u8) -> Result<Option<Tlv<'a>>, Malformed> {
    match input.first() {
        Some(&t) if t == tag => take(input).map(Some),
        _ => Ok(None),
    }
}

/// Encoded content of a DER OBJECT IDENTIFIER, for comparing against raw values.
pub(crate) struct Oid(ObjectIdentifier);

impl Oid {
    pub const fn new(dotted: &str) -> Self {
        Self(ObjectIdentifier::new_unwrap(dotted))
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        self.0.as_bytes() == value
    }
}

pub(crate) const OID_EC_PUBLIC_KEY: Oid = Oid::new("1.2.840.10045.2.1");
pub(crate) const OID_P256: Oid = Oid::new("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: Oid = Oid::new("1.3.132.0.34");
pub(crate) const OID_RSA_ENCRYPTION: Oid = Oid::new("1.2.840.113549.1.1.1");
pub(crate) const OID_ECDSA_SHA256: Oid = Oid::new("1.2.840.10045.4.3.2");
pub(crate) const OID_ECDSA_SHA384: Oid = Oid::new("1.2.840.10045.4.3.3");
pub(crate) const OID_RSA_SHA256: Oid = Oid::new("1.2.840.113549.1.1.11");
pub(crate) const OID_RSA_SHA384: Oid = Oid::new("1.2.840.113549.1.1.12");
pub(crate) const OID_RSA_SHA512: Oid = Oid::new("1.2.840.113549.1.1.13");
const OID_COMMON_NAME: Oid = Oid::new("2.5.4.3");
const OID_SUBJECT_ALT_NAME: Oid = Oid::new("2.5.29.17");
const OID_BASIC_CONSTRAINTS: Oid = Oid::new("2.5.29.19");
const OID_KEY_USAGE: Oid = Oid::new("2.5.29.15");
const OID_EXT_KEY_USAGE: Oid = Oid::new("2.5.29.37");
const OID_KP_SERVER_AUTH: Oid = Oid::new("1.3.6.1.5.5.7.3.1");
const OID_ANY_EXT_KEY_USAGE: Oid = Oid::new("2.5.29.37.0");

/// keyUsage bit keyCertSign (bit 5, counted from the most significant bit).
const KU_KEY_CERT_SIGN: u16 = 1 << (15 - 5);

/// subjectPublicKeyInfo, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spki<'a> {
    /// Algorithm OID content.
    pub algorithm: &'a [u8],
    /// Algorithm parameters element, if any (the named curve for EC keys).
    pub parameters: Option<Tlv<'a>>,
    /// The public key bits (SEC1 point or PKCS#1 RSAPublicKey).
    pub key: &'a [u8],
}

/// A parsed certificate; every slice borrows the DER it was parsed from.
#[derive(Debug, Clone)]
pub(crate) struct Certificate<'a> {
    /// The whole certificate.
    pub raw: &'a [u8],
    /// The signed part, header included: what the issuer's signature covers.
    pub tbs: &'a [u8],
    /// signatureAlgorithm OID content.
    pub signature_algorithm: &'a [u8],
    pub signature: &'a [u8],
    /// Issuer and subject Names, raw DER, compared bytewise.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// Validity in Unix seconds (times before 1970 clamp to 0).
    pub not_before: u64,
    pub not_after: u64,
    pub spki: Spki<'a>,
    /// GeneralNames content of subjectAltName, if the extension is present.
    pub subject_alt_names: Option<&'a [u8]>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage bits (first two bytes, MSB first), if present.
    pub key_usage: Option<u16>,
    /// extendedKeyUsage SEQUENCE OF OID content, if present.
    pub ext_key_usage: Option<&'a [u8]>,
}

impl<'a> Certificate<'a> {
    /// Parses one DER certificate; trailing bytes are an error.
    pub fn parse(der: &'a [u8]) -> Result<Self, Malformed> {
        let outer = only(der, TAG_SEQUENCE)?;
        let mut body = outer.value;
        let tbs = expect(&mut body, TAG_SEQUENCE)?;
        let outer_alg = algorithm_identifier(&mut body)?;
        let signature = bit_string(expect(&mut body, TAG_BIT_STRING)?.value)?;
        if !body.is_empty() {
            return Err(Malformed);
        }

        let mut t = tbs.value;
        let version = match optional(&mut t, TAG_CTX0)? {
            Some(v) => {
                let int = only(v.value, TAG_INTEGER)?;
                match int.value {
                    [v] if *v <= 2 => *v,
                    _ => return Err(Malformed),
                }
            }
            None => 0,
        };
        expect(&mut t, TAG_INTEGER)?; // serialNumber
        let inner_alg = take(&mut t)?;
        // RFC 5280 4.1.1.2: the signed and the outer algorithm must be identical.
        if inner_alg.raw != outer_alg.raw {
            return Err(Malformed);
        }
        let issuer = expect(&mut t, TAG_SEQUENCE)?.raw;
        let mut validity = expect(&mut t, TAG_SEQUENCE)?.value;
        let not_before = time(&mut validity)?;
        let not_after = time(&mut validity)?;
        if !validity.is_empty() {
            return Err(Malformed);
        }
        let subject = expect(&mut t, TAG_SEQUENCE)?.raw;
        let spki = spki(expect(&mut t, TAG_SEQUENCE)?.value)?;
        // issuerUniqueID [1] and subjectUniqueID [2] are skipped; extensions [3] follow.
        optional(&mut t, 0x81)?;
        optional(&mut t, 0x82)?;
        let extensions = optional(&mut t, TAG_CTX3)?;
        if !t.is_empty() {
            return Err(Malformed);
        }

        let mut cert = Certificate {
            raw: outer.raw,
            tbs: tbs.raw,
            signature_algorithm: {
                let mut a = outer_alg.value;
                expect(&mut a, TAG_OID)?.value
            },
            signature,
            issuer,
            subject,
            not_before,
            not_after,
            spki,
            subject_alt_names: None,
            is_ca: false,
            key_usage: None,
            ext_key_usage: None,
        };
        if let Some(ext) = extensions {
            if version != 2 {
                return Err(Malformed);
            }
            cert.read_extensions(only(ext.value, TAG_SEQUENCE)?.value)?;
        }
        Ok(cert)
    }

    fn read_extensions(&mut self, mut list: &'a [u8]) -> Result<(), Malformed> {
        while !list.is_empty() {
            let mut ext = expect(&mut list, TAG_SEQUENCE)?.value;
            let id = expect(&mut ext, TAG_OID)?.value;
            optional(&mut ext, TAG_BOOLEAN)?; // critical
            let value = expect(&mut ext, TAG_OCTET_STRING)?.value;
            if !ext.is_empty() {
                return Err(Malformed);
            }
            if OID_SUBJECT_ALT_NAME.matches(id) {
                self.subject_alt_names = Some(only(value, TAG_SEQUENCE)?.value);
            } else if OID_BASIC_CONSTRAINTS.matches(id) {
                let mut bc = only(value, TAG_SEQUENCE)?.value;
                if let Some(ca) = optional(&mut bc, TAG_BOOLEAN)? {
                    self.is_ca = ca.value.first().is_some_and(|&b| b != 0);
                }
            } else if OID_KEY_USAGE.matches(id) {
                let bits = bit_string_lenient(only(value, TAG_BIT_STRING)?.value)?;
                let hi = bits.first().copied().unwrap_or(0);
                let lo = bits.get(1).copied().unwrap_or(0);
                self.key_usage = Some(u16::from_be_bytes([hi, lo]));
            } else if OID_EXT_KEY_USAGE.matches(id) {
                self.ext_key_usage = Some(only(value, TAG_SEQUENCE)?.value);
            }
        }
        Ok(())
    }

    /// Whether this certificate may sign other certificates.
    pub fn can_sign_certificates(&self) -> bool {
        self.is_ca && self.key_usage.is_none_or(|ku| ku & KU_KEY_CERT_SIGN != 0)
    }

    /// Whether extendedKeyUsage (if present) allows TLS server authentication.
    pub fn allows_server_auth(&self) -> bool {
        let Some(mut list) = self.ext_key_usage else {
            return true;
        };
        while let Ok(oid) = expect(&mut list, TAG_OID) {
            if OID_KP_SERVER_AUTH.matches(oid.value) || OID_ANY_EXT_KEY_USAGE.matches(oid.value) {
                return true;
            }
        }
        false
    }

    /// Every dNSName and iPAddress in subjectAltName, in order.
    pub fn alt_names(&self) -> AltNames<'a> {
        AltNames {
            rest: self.subject_alt_names.unwrap_or(&[]),
        }
    }

    /// The subject's commonName, if it is a single printable ASCII string.
    pub fn common_name(&self) -> Option<&'a [u8]> {
        let mut rdns = only(self.subject, TAG_SEQUENCE).ok()?.value;
        let mut found = None;
        while let Ok(rdn) = expect(&mut rdns, TAG_SET) {
            let mut atvs = rdn.value;
            while let Ok(atv) = expect(&mut atvs, TAG_SEQUENCE) {
                let mut a = atv.value;
                let Ok(id) = expect(&mut a, TAG_OID) else {
                    continue;
                };
                if OID_COMMON_NAME.matches(id.value) {
                    // The most specific (last) CN wins, as in common practice.
                    found = take(&mut a).ok().map(|v| v.value);
                }
            }
        }
        found.filter(|v| v.iter().all(|b| b.is_ascii_graphic()))
    }
}

/// A subjectAltName entry this verifier understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AltName<'a> {
    Dns(&'a [u8]),
    /// 4 (IPv4) or 16 (IPv6) octets.
    Ip(&'a [u8]),
}

/// Iterator over dNSName/iPAddress entries; stops at the first malformed element.
pub(crate) struct AltNames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AltNames<'a> {
    type Item = AltName<'a>;

    fn next(&mut self) -> Option<AltName<'a>> {
        loop {
            let tlv = take(&mut self.rest).ok()?;
            match tlv.tag {
                TAG_SAN_DNS => return Some(AltName::Dns(tlv.value)),
                TAG_SAN_IP => return Some(AltName::Ip(tlv.value)),
                _ => {}
            }
        }
    }
}

/// AlgorithmIdentifier SEQUENCE, returned whole.
fn algorithm_identifier<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, Malformed> {
    let alg = expect(input, TAG_SEQUENCE)?;
    let mut a = alg.value;
    expect(&mut a, TAG_OID)?;
    Ok(alg)
}

fn spki(mut input: &[u8]) -> Result<Spki<'_>, Malformed> {
    let mut alg = expect(&mut input, TAG_SEQUENCE)?.value;
    let algorithm = expect(&mut alg, TAG_OID)?.value;
    let parameters = if alg.is_empty() {
        None
    } else {
        Some(take(&mut alg)?)
    };
    if !alg.is_empty() {
        return Err(Malformed);
    }
    let key = bit_string(expect(&mut input, TAG_BIT_STRING)?.value)?;
    if !input.is_empty() {
        return Err(Malformed);
    }
    Ok(Spki {
        algorithm,
        parameters,
        key,
    })
}

/// BIT STRING content holding whole octets (keys, signatures).
fn bit_string(value: &[u8]) -> Result<&[u8], Malformed> {
    match value.split_first() {
        Some((0, bits)) => Ok(bits),
        _ => Err(Malformed),
    }
}

/// BIT STRING content with any number of unused trailing bits (keyUsage).
fn bit_string_lenient(value: &[u8]) -> Result<&[u8], Malformed> {
    match value.split_first() {
        Some((unused, bits)) if *unused < 8 => Ok(bits),
        _ => Err(Malformed),
    }
}

/// UTCTime or GeneralizedTime as Unix seconds.
fn time(input: &mut &[u8]) -> Result<u64, Malformed> {
    let tlv = take(input)?;
    let since_epoch = match tlv.tag {
        TAG_UTC_TIME => UtcTime::from_der(tlv.raw)
            .map_err(|_| Malformed)?
            .to_unix_duration(),
        TAG_GENERALIZED_TIME => GeneralizedTime::from_der(tlv.raw)
            .map_err(|_| Malformed)?
            .to_unix_duration(),
        _ => return Err(Malformed),
    };
    Ok(since_epoch.as_secs())
}

#[cfg(test)]
mod tests;
