//! Outside text (certificate names, client ids, topics, SSIDs) made safe to print: the
//! device log's escaping (`firmware_core::log::escape`), so a CN holding a newline or a
//! terminal escape sequence shows as `\x0a` / `\x1b` here exactly as in the boot log.

use firmware_core::log::escape::{Context, escape_into};

/// Escaped like a `key=value` field of the device log: spaces too (`client_id=`).
pub fn value(text: &str) -> String {
    escaped(text, Context::Value)
}

/// Escaped like the device log's payload: spaces kept (`CN=AWS IoT Certificate`).
pub fn text(text: &str) -> String {
    escaped(text, Context::Payload)
}

fn escaped(raw: &str, context: Context) -> String {
    let mut out = String::with_capacity(raw.len());
    for &byte in raw.as_bytes() {
        // One byte escapes to at most 4 characters (`\xNN`).
        let mut unit = heapless::String::<4>::new();
        escape_into(&mut unit, &[byte], context, 4);
        out.push_str(&unit);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_and_backslashes_are_escaped_as_the_log_does() {
        assert_eq!(
            super::text("CN=a b\nc\x1b[2J\\"),
            "CN=a b\\x0ac\\x1b[2J\\\\"
        );
        assert_eq!(super::value("a b"), "a\\x20b");
        assert_eq!(super::text("Müller"), "M\\xc3\\xbcller");
    }
}
