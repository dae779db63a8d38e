use super::*;

#[test]
fn exact_names_match_case_insensitively() {
    assert!(dns_name_matches(b"example.com", b"example.com"));
    assert!(dns_name_matches(b"EXAMPLE.com", b"example.COM"));
    assert!(dns_name_matches(b"example.com.", b"example.com"));
    assert!(dns_name_matches(b"example.com", b"example.com."));
    assert!(!dns_name_matches(b"example.com", b"example.org"));
    assert!(!dns_name_matches(b"example.com", b"www.example.com"));
    assert!(!dns_name_matches(b"www.example.com", b"example.com"));
}

#[test]
fn aws_iot_wildcard_matches_one_left_label() {
    let pattern = b"*.iot.us-east-1.amazonaws.com";
    assert!(dns_name_matches(
        pattern,
        b"a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com"
    ));
    assert!(dns_name_matches(
        pattern,
        b"X-ATS.IOT.US-EAST-1.AMAZONAWS.COM"
    ));
    // Not the bare suffix, not two labels, not another region.
    assert!(!dns_name_matches(pattern, b"iot.us-east-1.amazonaws.com"));
    assert!(!dns_name_matches(
        pattern,
        b"a.b.iot.us-east-1.amazonaws.com"
    ));
    assert!(!dns_name_matches(
        pattern,
        b"x-ats.iot.eu-west-1.amazonaws.com"
    ));
    assert!(!dns_name_matches(pattern, b".iot.us-east-1.amazonaws.com"));
}

#[test]
fn wildcard_only_as_whole_left_most_label() {
    assert!(!dns_name_matches(
        b"iot.*.amazonaws.com",
        b"iot.x.amazonaws.com"
    ));
    assert!(!dns_name_matches(b"a*.example.com", b"ab.example.com"));
    assert!(!dns_name_matches(b"*a.example.com", b"ba.example.com"));
    assert!(!dns_name_matches(b"*.*.example.com", b"a.b.example.com"));
    assert!(!dns_name_matches(b"**.example.com", b"a.example.com"));
    assert!(!dns_name_matches(b"*.com", b"example.com"));
    assert!(!dns_name_matches(b"*", b"localhost"));
    // A host name never contains a wildcard itself.
    assert!(!dns_name_matches(b"*.example.com", b"*.example.com"));
}

#[test]
fn junk_never_matches() {
    assert!(!dns_name_matches(b"", b""));
    assert!(!dns_name_matches(b"exa mple.com", b"exa mple.com"));
    assert!(!dns_name_matches(b"example..com", b"example..com"));
    assert!(!dns_name_matches(
        "bücher.de".as_bytes(),
        "bücher.de".as_bytes()
    ));
    assert!(!dns_name_matches(b"a\0.com", b"a\0.com"));
}

#[test]
fn server_name_parses_ip_literals() {
    assert_eq!(
        ServerName::parse("127.0.0.1"),
        ServerName::Ip(IpAddr::from([127, 0, 0, 1]))
    );
    assert!(matches!(ServerName::parse("::1"), ServerName::Ip(_)));
    assert_eq!(ServerName::parse("localhost"), ServerName::Dns("localhost"));
}
