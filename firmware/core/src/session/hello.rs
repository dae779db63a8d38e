//! The message the device publishes, `{"message": "hello world #N"}`: made here, and read
//! back here (by the test rig and the tests), so its format is defined once.

use core::fmt::Write as _;

use heapless::String;

/// Longest publish payload: `{"message": "hello world #4294967295"}` is 39 bytes.
pub const MAX_PAYLOAD: usize = 48;

/// The payload of publish `seq`.
pub fn hello_payload(seq: u32) -> String<MAX_PAYLOAD> {
    let mut payload = String::new();
    // Fits: at most 39 bytes (see MAX_PAYLOAD).
    let _ = write!(payload, "{{\"message\": \"hello world #{seq}\"}}");
    payload
}

/// The `N` of a `{"message": "hello world #N"}` payload; `None` for anything else.
pub fn hello_seq(payload: &[u8]) -> Option<u32> {
    let text = core::str::from_utf8(payload).ok()?;
    let digits = text
        .strip_prefix("{\"message\": \"hello world #")?
        .strip_suffix("\"}")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
