use super::*;

#[test]
fn the_payload_reads_back_and_nothing_else_does() {
    for seq in [1, 12, u32::MAX] {
        assert_eq!(hello_seq(hello_payload(seq).as_bytes()), Some(seq));
    }
    assert_eq!(
        hello_payload(1).as_str(),
        r#"{"message": "hello world #1"}"#
    );
    assert_eq!(hello_seq(br#"{"message": "hello world #"}"#), None);
    assert_eq!(hello_seq(br#"{"message": "hello world #+1"}"#), None);
    assert_eq!(hello_seq(br#"{"message": "hello world #1"} "#), None);
    assert_eq!(
        hello_seq(br#"{"message": "hello world #99999999999"}"#),
        None
    );
    assert_eq!(hello_seq(br#"{"message":"hello world #1"}"#), None);
    assert_eq!(hello_seq(b"\xff"), None);
}
