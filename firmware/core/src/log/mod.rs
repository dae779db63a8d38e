//! The serial log line: one event per line, ESP-IDF style, stable keys, payload last.
//!
//! ```text
//! I (     812) boot: firmware=0.1.0 board=virtual client_id=ESPthing
//! E (   11000) tls: handshake failed error=certificate-expired
//! I (    5100) inbound: topic=inTopic bytes=5 payload=hello
//! ```
//!
//! The serial log is an API: the device prints [`Line`]s with `Display`, and the test rig
//! parses the captured output back with `FromStr` (`line.parse::<Line>()`), so there is
//! one definition of the format. The grammar, after an optional trailing `\r\n`/`\n` is
//! stripped:
//!
//! ```text
//! line    = level " (" uptime ") " tag ":" [" " body]
//! level   = "E" | "W" | "I" | "D" | "V"
//! uptime  = *" " 1*DIGIT              ; printed right-aligned in 8 columns, parsed with
//!                                     ; any padding (ESP-IDF itself prints none)
//! tag     = 1*16 (ALPHA | DIGIT | "_" | "-" | ".")
//! body    = word *(" " word) [" " fields] | fields
//! word    = 1*(printable except " " and "=")        ; free text: `handshake failed`
//! fields  = field *(" " field) [" " payload] | payload
//! field   = key "=" *(printable except " ")         ; values are escaped, see [`escape`]
//! key     = 1*(lower | DIGIT | "_"), not "payload"
//! payload = "payload=" *printable                   ; the rest of the line, spaces included
//! ```
//!
//! The whole line is printable ASCII: everything that comes from outside (topics,
//! payloads, client ids) goes through [`escape`]. Free-text words come before fields, and
//! the payload is always last.
//!
//! # Limits (fixed so a line needs no allocator)
//! - tag: [`MAX_TAG`] bytes;
//! - body (everything after `tag: `): [`MAX_BODY`] bytes;
//! - [`MAX_FIELDS`] fields, not counting the payload;
//! - escaped field values from outside data: [`MAX_VALUE`] bytes, longer ones end in `...`;
//! - escaped payload: [`MAX_PAYLOAD`] bytes. A longer payload is cut (never inside an
//!   escape) and ends in `...`, and the line carries `truncated=1`; `bytes=N` always gives
//!   the original size. [`Line::payload_bytes`] decodes what was kept.
//!
//! The typed constructors in [`events`] build every line the device prints; they take
//! sizes, never secret bytes.

mod dropped;
pub mod escape;
pub mod events;

use core::fmt::{self, Write as _};
use core::str::FromStr;

use heapless::{String, Vec};

pub use dropped::DroppedLines;
pub use escape::{Context, TRUNCATION_MARKER, Unescape, UnescapeError, unescape};
pub use events::*;

/// Longest tag.
pub const MAX_TAG: usize = 16;
/// Longest body: the free text, the fields and the payload with their separators.
pub const MAX_BODY: usize = 512;
/// Most `key=value` fields on one line (the payload is not counted).
pub const MAX_FIELDS: usize = 12;
/// Longest escaped value of a field built from outside data (topics, ids, hosts).
pub const MAX_VALUE: usize = 128;
/// Longest escaped payload kept in a line.
pub const MAX_PAYLOAD: usize = 256;

/// The key that starts the payload, which takes the rest of the line.
pub const PAYLOAD_KEY: &str = "payload";
/// Field holding a payload's original size in bytes.
pub const BYTES_KEY: &str = "bytes";
/// Field present (`truncated=1`) when the payload was cut to [`MAX_PAYLOAD`].
pub const TRUNCATED_KEY: &str = "truncated";

/// Severity, as the ESP-IDF letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Verbose,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Verbose,
    ];

    pub const fn letter(self) -> char {
        match self {
            Level::Error => 'E',
            Level::Warn => 'W',
            Level::Info => 'I',
            Level::Debug => 'D',
            Level::Verbose => 'V',
        }
    }

    pub const fn from_letter(c: u8) -> Option<Self> {
        match c {
            b'E' => Some(Level::Error),
            b'W' => Some(Level::Warn),
            b'I' => Some(Level::Info),
            b'D' => Some(Level::Debug),
            b'V' => Some(Level::Verbose),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char(self.letter())
    }
}

/// Where a field sits in [`Line`]'s body text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Span {
    start: u16,
    eq: u16,
    end: u16,
}

/// One log line. Build it with [`Line::new`] and the builder methods (or, on the device,
/// with the typed constructors in [`events`]); parse it with `FromStr`.
///
/// The body is kept as the text it prints as, with the positions of its parts, so a line
/// is one fixed-size buffer and a parsed line hands out `&str`s into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    pub level: Level,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    tag: String<MAX_TAG>,
    body: String<MAX_BODY>,
    message_len: u16,
    fields: Vec<Span, MAX_FIELDS>,
    /// Start of the payload text in `body`, if there is a payload.
    payload: Option<u16>,
}

/// Why a line could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// The tag, the body or the field list is full.
    Full,
    /// Free text after a field, or anything after the payload.
    OutOfOrder,
    /// The tag, a word, a key or a value has a character the grammar does not allow.
    Invalid(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Full => f.write_str("line is full"),
            BuildError::OutOfOrder => f.write_str("free text, fields, payload out of order"),
            BuildError::Invalid(what) => f.write_str(what),
        }
    }
}

const fn printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7e)
}

fn check_tag(tag: &str) -> Result<(), &'static str> {
    if tag.is_empty() {
        return Err("empty tag");
    }
    if tag.len() > MAX_TAG {
        return Err("tag longer than 16 bytes");
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("tag may only hold letters, digits, '_', '-', '.'");
    }
    Ok(())
}

fn check_word(word: &str) -> Result<(), &'static str> {
    if word.is_empty() {
        return Err("empty word (two spaces in a row, or a trailing space)");
    }
    if !word.bytes().all(|b| printable(b) && b != b' ' && b != b'=') {
        return Err("word holds '=' or a non-printable character");
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("key may only hold a-z, 0-9, '_'");
    }
    if key == PAYLOAD_KEY {
        return Err("`payload` is reserved for the payload");
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), &'static str> {
    if !value.bytes().all(|b| printable(b) && b != b' ') {
        return Err("value holds a space or a non-printable character (escape it)");
    }
    Ok(())
}

/// Positions inside a body of at most [`MAX_BODY`] bytes fit in `u16`.
fn pos(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Line {
    /// An empty line: level, uptime and tag only.
    pub fn new(level: Level, uptime_ms: u64, tag: &str) -> Result<Self, BuildError> {
        check_tag(tag).map_err(BuildError::Invalid)?;
        let mut t = String::new();
        t.push_str(tag).map_err(|_| BuildError::Full)?;
        Ok(Self {
            level,
            uptime_ms,
            tag: t,
            body: String::new(),
            message_len: 0,
            fields: Vec::new(),
            payload: None,
        })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The free text before the fields, words separated by single spaces
    /// (`handshake failed`); empty if there is none.
    pub fn message(&self) -> &str {
        self.body
            .get(..usize::from(self.message_len))
            .unwrap_or_default()
    }

    /// The free-text words.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.message().split(' ').filter(|w| !w.is_empty())
    }

    /// The `key=value` fields in order, values as printed (escaped).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|s| {
            let key = self
                .body
                .get(usize::from(s.start)..usize::from(s.eq))
                .unwrap_or_default();
            let value = self
                .body
                .get(usize::from(s.eq) + 1..usize::from(s.end))
                .unwrap_or_default();
            (key, value)
        })
    }

    /// The value of the first field named `key`, as printed (escaped).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `key` parsed as a number (or anything `FromStr`).
    pub fn field_as<T: FromStr>(&self, key: &str) -> Option<T> {
        self.field(key).and_then(|v| v.parse().ok())
    }

    /// The value of `key` with its escapes decoded.
    pub fn field_bytes(&self, key: &str) -> Option<Unescape<'_>> {
        self.field(key).map(unescape)
    }

    /// The payload as printed (escaped, with the `...` marker if it was truncated).
    pub fn payload(&self) -> Option<&str> {
        self.payload.and_then(|at| self.body.get(usize::from(at)..))
    }

    /// Whether the payload was cut to [`MAX_PAYLOAD`] (`truncated=1`).
    pub fn is_truncated(&self) -> bool {
        self.field(TRUNCATED_KEY) == Some("1")
    }

    /// The payload's original size (`bytes=N`), if the line gives it.
    pub fn payload_size(&self) -> Option<usize> {
        self.field_as(BYTES_KEY)
    }

    /// The payload bytes that were logged, decoded: all of them, or for a truncated
    /// payload the kept prefix (without the `...` marker).
    pub fn payload_bytes(&self) -> Option<Unescape<'_>> {
        let text = self.payload()?;
        let text = if self.is_truncated() {
            text.strip_suffix(TRUNCATION_MARKER).unwrap_or(text)
        } else {
            text
        };
        Some(unescape(text))
    }

    fn open_after_payload(&self) -> Result<(), BuildError> {
        if self.payload.is_some() {
            return Err(BuildError::OutOfOrder);
        }
        Ok(())
    }

    /// Undo a partial append so a failed builder call leaves the line unchanged.
    fn rollback(&mut self, len: usize) {
        self.body.truncate(len);
    }

    /// Append free text; it may hold several words separated by single spaces.
    pub fn message_text(&mut self, text: &str) -> Result<&mut Self, BuildError> {
        self.open_after_payload()?;
        if !self.fields.is_empty() {
            return Err(BuildError::OutOfOrder);
        }
        for word in text.split(' ') {
            check_word(word).map_err(BuildError::Invalid)?;
        }
        let before = self.body.len();
        if before > 0 && self.body.push(' ').is_err() {
            return Err(BuildError::Full);
        }
        if self.body.push_str(text).is_err() {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        self.message_len = pos(self.body.len());
        Ok(self)
    }

    /// Start a field: writes ` key=` and returns the offset where the value starts.
    fn begin_field(&mut self, key: &str) -> Result<usize, BuildError> {
        self.open_after_payload()?;
        check_key(key).map_err(BuildError::Invalid)?;
        if self.fields.is_full() {
            return Err(BuildError::Full);
        }
        let before = self.body.len();
        let ok = (before == 0 || self.body.push(' ').is_ok())
            && self.body.push_str(key).is_ok()
            && self.body.push('=').is_ok();
        if !ok {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        Ok(before)
    }

    fn end_field(&mut self, before: usize, key: &str) -> Result<&mut Self, BuildError> {
        let start = if before == 0 { 0 } else { before + 1 };
        let span = Span {
            start: pos(start),
            eq: pos(start + key.len()),
            end: pos(self.body.len()),
        };
        if self.fields.push(span).is_err() {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        Ok(self)
    }

    /// Append `key=value` with `value` printed by `Display`. The printed value must be a
    /// valid field value (printable, no spaces): use [`Line::field_escaped`] for text
    /// from outside.
    pub fn field_display(
        &mut self,
        key: &str,
        value: impl fmt::Display,
    ) -> Result<&mut Self, BuildError> {
        let before = self.begin_field(key)?;
        let value_at = self.body.len();
        if write!(self.body, "{value}").is_err() {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        if let Err(e) = check_value(self.body.get(value_at..).unwrap_or_default()) {
            self.rollback(before);
            return Err(BuildError::Invalid(e));
        }
        self.end_field(before, key)
    }

    /// Append `key=value` with `value` escaped (spaces included) and cut to [`MAX_VALUE`]
    /// bytes, ending in `...` if cut.
    pub fn field_escaped(&mut self, key: &str, value: &[u8]) -> Result<&mut Self, BuildError> {
        let before = self.begin_field(key)?;
        escape::escape_into(&mut self.body, value, Context::Value, MAX_VALUE);
        self.end_field(before, key)
    }

    /// Append the payload: `bytes=N`, `truncated=1` if it does not fit in
    /// [`MAX_PAYLOAD`] escaped bytes (or in what is left of the body), then
    /// `payload=<escaped>`. Nothing can follow it.
    pub fn payload_raw(&mut self, payload: &[u8]) -> Result<&mut Self, BuildError> {
        self.open_after_payload()?;
        let before = self.body.len();
        let fields_before = self.fields.len();
        let undo = |line: &mut Self| {
            line.rollback(before);
            line.fields.truncate(fields_before);
        };
        if let Err(e) = self.field_display(BYTES_KEY, payload.len()) {
            undo(self);
            return Err(e);
        }
        // Room left once `truncated=1` and `payload=` are in: decides whether to cut.
        let overhead = " truncated=1 payload=".len();
        let room = MAX_BODY
            .saturating_sub(self.body.len() + overhead)
            .min(MAX_PAYLOAD);
        let fits = escape::escaped_len(payload, Context::Payload) <= room;
        if !fits && let Err(e) = self.field_display(TRUNCATED_KEY, 1) {
            undo(self);
            return Err(e);
        }
        if self.body.push_str(" payload=").is_err() {
            undo(self);
            return Err(BuildError::Full);
        }
        self.payload = Some(pos(self.body.len()));
        escape::escape_into(&mut self.body, payload, Context::Payload, room);
        Ok(self)
    }

    /// Append an already escaped payload text as is, without `bytes=`; for tests and
    /// tools. It must be printable ASCII.
    pub fn payload_text(&mut self, text: &str) -> Result<&mut Self, BuildError> {
        self.open_after_payload()?;
        if !text.bytes().all(printable) {
            return Err(BuildError::Invalid(
                "payload holds a non-printable character",
            ));
        }
        let before = self.body.len();
        if before > 0 && self.body.push(' ').is_err() {
            return Err(BuildError::Full);
        }
        let ok = self.body.push_str(PAYLOAD_KEY).is_ok() && self.body.push('=').is_ok();
        if !ok {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        let at = self.body.len();
        if self.body.push_str(text).is_err() {
            self.rollback(before);
            return Err(BuildError::Full);
        }
        self.payload = Some(pos(at));
        Ok(self)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:>8}) {}:", self.level, self.uptime_ms, self.tag)?;
        if !self.body.is_empty() {
            write!(f, " {}", self.body)?;
        }
        Ok(())
    }
}

/// Why a line did not parse, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the line (after the line ending was stripped).
    pub at: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    Empty,
    /// A byte outside printable ASCII (the device escapes everything else).
    NonPrintable,
    /// The first character is not one of `E W I D V`.
    BadLevel,
    /// Missing punctuation; names what was expected.
    Expected(&'static str),
    /// The uptime is not a number that fits in `u64`.
    BadUptime,
    BadTag(&'static str),
    BadWord(&'static str),
    BadKey(&'static str),
    BadValue(&'static str),
    /// A free-text word after the first field.
    TextAfterFields,
    TooManyFields,
    /// The tag or the body exceeds its capacity ([`MAX_TAG`], [`MAX_BODY`]).
    TooLong(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log line, at byte {}: ", self.at)?;
        match self.kind {
            ParseErrorKind::Empty => f.write_str("empty line"),
            ParseErrorKind::NonPrintable => f.write_str("non-printable or non-ASCII byte"),
            ParseErrorKind::BadLevel => f.write_str("level must be one of E W I D V"),
            ParseErrorKind::Expected(what) => write!(f, "expected {what}"),
            ParseErrorKind::BadUptime => f.write_str("uptime is not a number of milliseconds"),
            ParseErrorKind::BadTag(why) => write!(f, "bad tag: {why}"),
            ParseErrorKind::BadWord(why) => write!(f, "bad word: {why}"),
            ParseErrorKind::BadKey(why) => write!(f, "bad field key: {why}"),
            ParseErrorKind::BadValue(why) => write!(f, "bad field value: {why}"),
            ParseErrorKind::TextAfterFields => f.write_str("free text after the first field"),
            ParseErrorKind::TooManyFields => {
                write!(f, "more than {MAX_FIELDS} fields")
            }
            ParseErrorKind::TooLong(what) => write!(f, "{what} too long"),
        }
    }
}

impl FromStr for Line {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        let err = |at, kind| Err(ParseError { at, kind });
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return err(0, ParseErrorKind::Empty);
        }
        if let Some(at) = bytes.iter().position(|&b| !printable(b)) {
            return err(at, ParseErrorKind::NonPrintable);
        }
        let Some(level) = bytes.first().copied().and_then(Level::from_letter) else {
            return err(0, ParseErrorKind::BadLevel);
        };
        let Some(rest) = s.get(1..).and_then(|r| r.strip_prefix(" (")) else {
            return err(1, ParseErrorKind::Expected("\" (\" after the level"));
        };
        let Some(close) = rest.find(')') else {
            return err(3, ParseErrorKind::Expected("')' after the uptime"));
        };
        let digits = rest
            .get(..close)
            .unwrap_or_default()
            .trim_start_matches(' ');
        let digits_at = 3 + close - digits.len();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return err(digits_at, ParseErrorKind::BadUptime);
        }
        let Ok(uptime_ms) = digits.parse::<u64>() else {
            return err(digits_at, ParseErrorKind::BadUptime);
        };
        let tag_at = 3 + close + 2;
        let Some(rest) = rest.get(close + 1..).and_then(|r| r.strip_prefix(' ')) else {
            return err(tag_at - 1, ParseErrorKind::Expected("' ' after ')'"));
        };
        let Some(colon) = rest.find(':') else {
            return err(tag_at, ParseErrorKind::Expected("':' after the tag"));
        };
        let tag = rest.get(..colon).unwrap_or_default();
        if let Err(why) = check_tag(tag) {
            return err(tag_at, ParseErrorKind::BadTag(why));
        }
        let mut line = match Line::new(level, uptime_ms, tag) {
            Ok(line) => line,
            Err(_) => return err(tag_at, ParseErrorKind::TooLong("tag")),
        };
        let body_at = tag_at + colon + 2;
        let after = rest.get(colon + 1..).unwrap_or_default();
        if after.is_empty() {
            return Ok(line);
        }
        let Some(body) = after.strip_prefix(' ') else {
            return err(
                body_at - 1,
                ParseErrorKind::Expected("' ' after the tag's ':'"),
            );
        };
        if body.len() > MAX_BODY {
            return err(body_at, ParseErrorKind::TooLong("body"));
        }
        parse_body(&mut line, body, body_at)?;
        Ok(line)
    }
}

fn parse_body(line: &mut Line, body: &str, body_at: usize) -> Result<(), ParseError> {
    let mut offset = 0;
    let mut words_end = 0;
    let mut in_fields = false;
    loop {
        let rest = body.get(offset..).unwrap_or_default();
        let at = body_at + offset;
        let err = |kind| Err(ParseError { at, kind });
        if let Some(text) = rest.strip_prefix("payload=") {
            flush_words(line, body, words_end, body_at)?;
            if line.payload_text(text).is_err() {
                return err(ParseErrorKind::TooLong("body"));
            }
            return Ok(());
        }
        let token = rest.split(' ').next().unwrap_or_default();
        if let Some((key, value)) = token.split_once('=') {
            flush_words(line, body, words_end, body_at)?;
            in_fields = true;
            if let Err(why) = check_key(key) {
                return err(ParseErrorKind::BadKey(why));
            }
            if let Err(why) = check_value(value) {
                return err(ParseErrorKind::BadValue(why));
            }
            let added = line.field_display(key, value).map(|_| ());
            match added {
                Ok(()) => {}
                Err(BuildError::Full) if line.fields.is_full() => {
                    return err(ParseErrorKind::TooManyFields);
                }
                Err(_) => return err(ParseErrorKind::TooLong("body")),
            }
        } else {
            if let Err(why) = check_word(token) {
                return err(ParseErrorKind::BadWord(why));
            }
            if in_fields {
                return err(ParseErrorKind::TextAfterFields);
            }
            words_end = offset + token.len();
        }
        offset += token.len();
        if offset >= body.len() {
            return flush_words(line, body, words_end, body_at);
        }
        // Skip the single separating space; a trailing space shows up as an empty word.
        offset += 1;
        if offset >= body.len() {
            return Err(ParseError {
                at: body_at + offset - 1,
                kind: ParseErrorKind::BadWord("trailing space"),
            });
        }
    }
}

/// Move the free-text words seen so far into the line, once, before the first field.
fn flush_words(
    line: &mut Line,
    body: &str,
    words_end: usize,
    body_at: usize,
) -> Result<(), ParseError> {
    if words_end == 0 || line.message_len != 0 {
        return Ok(());
    }
    let words = body.get(..words_end).unwrap_or_default();
    line.message_text(words)
        .map(|_| ())
        .map_err(|_| ParseError {
            at: body_at,
            kind: ParseErrorKind::TooLong("body"),
        })
}

#[cfg(test)]
mod tests;
