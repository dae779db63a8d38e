//! Escaping of untrusted bytes (payloads, topics) into log-safe text, and back.
//!
//! Rules, chosen so that an escaped value is printable ASCII, never breaks a line and
//! round-trips exactly:
//! - printable ASCII (`0x20..=0x7e`) except `\` is copied as is;
//! - `\` becomes `\\`;
//! - every other byte (control characters, newline, CR, DEL, bytes `>= 0x80`, including
//!   UTF-8 sequences) becomes `\xNN` with two lowercase hex digits.
//!
//! Field values (not payloads) also escape the space as `\x20`, because a space ends a
//! field; the payload is last on the line and may keep its spaces.

use core::fmt;

use heapless::String;

/// The marker appended to escaped text that was cut short.
pub const TRUNCATION_MARKER: &str = "...";

/// Which characters besides the always-escaped ones must be escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The payload: the rest of the line, spaces allowed.
    Payload,
    /// A `key=value` field value: a space would end the field.
    Value,
}

/// Length of one byte's escaped form.
const fn unit_len(byte: u8, context: Context) -> usize {
    match byte {
        b'\\' => 2,
        b' ' if matches!(context, Context::Value) => 4,
        0x20..=0x7e => 1,
        _ => 4,
    }
}

/// Length of the fully escaped form of `raw`, without truncation.
pub fn escaped_len(raw: &[u8], context: Context) -> usize {
    raw.iter().map(|&b| unit_len(b, context)).sum()
}

fn push_unit<const N: usize>(out: &mut String<N>, byte: u8, context: Context) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut unit = [0u8; 4];
    let len = unit_len(byte, context);
    match len {
        1 => unit[0] = byte,
        2 => unit[..2].copy_from_slice(b"\\\\"),
        _ => {
            unit[0] = b'\\';
            unit[1] = b'x';
            unit[2] = HEX[usize::from(byte >> 4)];
            unit[3] = HEX[usize::from(byte & 0x0f)];
        }
    }
    // Every unit is ASCII by construction, so this never fails; if it ever did, the
    // caller sees `false` and stops instead of writing garbage.
    match core::str::from_utf8(unit.get(..len).unwrap_or(&[])) {
        Ok(s) => out.push_str(s).is_ok(),
        Err(_) => false,
    }
}

/// Append the escaped form of `raw` to `out`, using at most `limit` bytes of `out`
/// (and never more than its free capacity).
///
/// If everything fits, it is written whole. Otherwise as many whole escape units as fit
/// are written followed by [`TRUNCATION_MARKER`], all within `limit`, and `true` is
/// returned. An escape unit is never split.
pub fn escape_into<const N: usize>(
    out: &mut String<N>,
    raw: &[u8],
    context: Context,
    limit: usize,
) -> bool {
    let limit = limit.min(N.saturating_sub(out.len()));
    if escaped_len(raw, context) <= limit {
        for &b in raw {
            if !push_unit(out, b, context) {
                return true;
            }
        }
        return false;
    }
    let budget = limit.saturating_sub(TRUNCATION_MARKER.len());
    let mut used = 0;
    for &b in raw {
        let len = unit_len(b, context);
        if used + len > budget {
            break;
        }
        if !push_unit(out, b, context) {
            break;
        }
        used += len;
    }
    if limit >= TRUNCATION_MARKER.len() {
        let _ = out.push_str(TRUNCATION_MARKER);
    }
    true
}

/// What is wrong with escaped text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnescapeError {
    /// Byte offset of the offending escape in the escaped text.
    pub at: usize,
    pub problem: &'static str,
}

impl fmt::Display for UnescapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.problem)
    }
}

/// Decode escaped text back into the original bytes; an iterator so it needs no buffer
/// (`unescape(s).collect::<Result<Vec<u8>, _>>()` on the host).
pub fn unescape(text: &str) -> Unescape<'_> {
    Unescape {
        text: text.as_bytes(),
        pos: 0,
        failed: false,
    }
}

/// Iterator returned by [`unescape`]; stops after the first error.
#[derive(Debug, Clone)]
pub struct Unescape<'a> {
    text: &'a [u8],
    pos: usize,
    failed: bool,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Iterator for Unescape<'_> {
    type Item = Result<u8, UnescapeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let at = self.pos;
        let first = *self.text.get(at)?;
        let mut fail = |problem| {
            self.failed = true;
            Some(Err(UnescapeError { at, problem }))
        };
        if !(0x20..=0x7e).contains(&first) {
            return fail("raw byte that should have been escaped");
        }
        if first != b'\\' {
            self.pos += 1;
            return Some(Ok(first));
        }
        match self.text.get(at + 1) {
            Some(b'\\') => {
                self.pos += 2;
                Some(Ok(b'\\'))
            }
            Some(b'x') => {
                let hi = self.text.get(at + 2).copied().and_then(hex_digit);
                let lo = self.text.get(at + 3).copied().and_then(hex_digit);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        self.pos += 4;
                        Some(Ok(hi << 4 | lo))
                    }
                    _ => fail("`\\x` needs two hex digits"),
                }
            }
            Some(_) => fail("unknown escape (only `\\\\` and `\\xNN`)"),
            None => fail("lone `\\` at the end"),
        }
    }
}

#[cfg(test)]
mod tests;
