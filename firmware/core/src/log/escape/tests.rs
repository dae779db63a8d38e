use super::*;
use proptest::prelude::*;

fn esc(raw: &[u8], context: Context) -> std::string::String {
    let mut out: String<2048> = String::new();
    assert!(!escape_into(&mut out, raw, context, 2048));
    out.as_str().into()
}

fn unesc(text: &str) -> Result<Vec<u8>, UnescapeError> {
    unescape(text).collect()
}

#[test]
fn escapes_as_documented() {
    assert_eq!(esc(b"hello world", Context::Payload), "hello world");
    assert_eq!(esc(b"hello world", Context::Value), r"hello\x20world");
    assert_eq!(esc(b"a\\b", Context::Payload), r"a\\b");
    assert_eq!(
        esc(b"\n\r\x00\x7f\xff", Context::Payload),
        r"\x0a\x0d\x00\x7f\xff"
    );
    assert_eq!(esc("é".as_bytes(), Context::Payload), r"\xc3\xa9");
    assert_eq!(esc(br#"{"a": 1}"#, Context::Payload), r#"{"a": 1}"#);
}

#[test]
fn unescape_errors_say_what_is_wrong() {
    assert_eq!(unesc(r"ab\").unwrap_err().at, 2);
    assert_eq!(
        unesc(r"\q").unwrap_err().problem,
        "unknown escape (only `\\\\` and `\\xNN`)"
    );
    assert_eq!(unesc(r"x\x4").unwrap_err().at, 1);
    assert!(unesc("a\tb").is_err());
    assert_eq!(unesc(r"\x4A\x4a").unwrap(), b"JJ");
}

#[test]
fn truncation_never_splits_an_escape_and_stays_within_the_limit() {
    let raw = [0xffu8; 100];
    let mut out: String<64> = String::new();
    assert!(escape_into(&mut out, &raw, Context::Payload, 30));
    // 27 bytes of budget hold 6 whole `\xff` units.
    assert_eq!(out.as_str(), r"\xff\xff\xff\xff\xff\xff...");
    let mut tiny: String<2> = String::new();
    assert!(escape_into(&mut tiny, b"abcdef", Context::Payload, 100));
    assert_eq!(tiny.as_str(), "");
}

proptest! {
    #[test]
    fn escape_unescape_round_trips(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        for context in [Context::Payload, Context::Value] {
            let text = esc(&raw, context);
            prop_assert_eq!(text.len(), escaped_len(&raw, context));
            prop_assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            if context == Context::Value {
                prop_assert!(!text.contains(' '));
            }
            prop_assert_eq!(unesc(&text).unwrap(), raw.clone());
        }
    }

    #[test]
    fn truncated_text_is_a_prefix_within_the_limit(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        limit in 0usize..200,
    ) {
        let mut out: String<256> = String::new();
        let truncated = escape_into(&mut out, &raw, Context::Payload, limit);
        prop_assert!(out.len() <= limit);
        let full = esc(&raw, Context::Payload);
        if truncated {
            let kept = out.strip_suffix(TRUNCATION_MARKER).unwrap_or(&out);
            prop_assert!(full.starts_with(kept));
            let decoded = unesc(kept).unwrap();
            prop_assert!(raw.starts_with(&decoded));
        } else {
            prop_assert_eq!(out.as_str(), full.as_str());
        }
    }

    #[test]
    fn unescape_never_panics(text in ".{0,64}") {
        let _ = unesc(&text);
    }
}
