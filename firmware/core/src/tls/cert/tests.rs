use super::*;

#[test]
fn take_reads_short_and_long_lengths() {
    let mut input: &[u8] = &[0x04, 0x02, 0xaa, 0xbb, 0x30, 0x81, 0x01, 0x05, 0xff];
    let a = take(&mut input).unwrap();
    assert_eq!((a.tag, a.value), (0x04, &[0xaa, 0xbb][..]));
    let b = take(&mut input).unwrap();
    assert_eq!((b.tag, b.value, b.raw.len()), (0x30, &[0x05][..], 4));
    assert_eq!(input, &[0xff]);
}

#[test]
fn take_rejects_truncation_and_indefinite_length() {
    for bad in [
        &[][..],
        &[0x30],
        &[0x30, 0x05, 0x00],
        &[0x30, 0x80, 0x00, 0x00],
        &[0x30, 0x82, 0x01],
        &[0x30, 0x84, 0, 0, 0, 1, 0],
        &[0x1f, 0x01, 0x00],
    ] {
        let mut input = bad;
        assert_eq!(take(&mut input).unwrap_err(), Malformed, "{bad:02x?}");
    }
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let mut seed = 0x1234_5678u32;
    let mut buf = [0u8; 64];
    for _ in 0..2000 {
        for b in &mut buf {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        buf[0] = 0x30;
        let _ = Certificate::parse(&buf);
    }
}
