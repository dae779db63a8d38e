use super::*;

/// Feed `stream` in chunks of `chunk` bytes (1 = byte by byte).
fn watch(stream: &[u8], chunk: usize) -> BrokerNotes {
    let notes = BrokerNotes::new();
    let mut w = PacketWatch::new();
    for part in stream.chunks(chunk) {
        w.feed(part, &notes);
    }
    notes
}

/// CONNACK with Receive Maximum 100, Maximum QoS `q`, a reason string before it.
fn connack(q: u8) -> Vec<u8> {
    let mut props = vec![0x21, 0, 100, 0x1F, 0, 3, b'h', b'e', b'y', MAXIMUM_QOS, q];
    let mut body = vec![0, 0, props.len() as u8];
    body.append(&mut props);
    let mut p = vec![0x20, body.len() as u8];
    p.extend(body);
    p
}

/// An inbound PUBLISH whose payload looks like a DISCONNECT and a CONNACK.
fn decoy_publish() -> Vec<u8> {
    let payload = [0xE0, 1, 0x98, 0x20, 0x03, 0, 0, 0];
    let mut body = vec![0, 1, b't', 0];
    body.extend(payload);
    let mut p = vec![0x30, body.len() as u8];
    p.extend(body);
    p
}

#[test]
fn finds_the_disconnect_reason_code_however_the_stream_is_cut() {
    let mut stream = connack(1);
    stream.extend(decoy_publish());
    stream.extend([0xE0, 2, 0x98, 0]);
    for chunk in [1, 2, 3, 7, 64] {
        let notes = watch(&stream, chunk);
        assert_eq!(notes.disconnect_code(), Some(0x98), "chunk {chunk}");
        assert_eq!(notes.max_qos(), Some(1), "chunk {chunk}");
    }
}

#[test]
fn a_disconnect_without_a_reason_byte_is_normal_and_none_is_none() {
    assert_eq!(watch(&[0xE0, 0], 1).disconnect_code(), Some(0));
    let notes = watch(&decoy_publish(), 1);
    assert_eq!(notes.disconnect_code(), None);
    assert_eq!(notes.max_qos(), None);
    assert_eq!(
        notes.lost_event(DisconnectReason::PeerClosed),
        Event::Disconnected(DisconnectReason::PeerClosed)
    );
}

#[test]
fn maximum_qos_0_is_reported_and_clear_forgets_it() {
    let notes = watch(&connack(0), 5);
    assert_eq!(notes.max_qos_event(), Some(Event::MaxQos(Qos::AtMostOnce)));
    notes.clear();
    assert_eq!(notes.max_qos(), None);
}

#[test]
fn a_long_remaining_length_is_skipped_correctly() {
    // A 300-byte PUBLISH (two-byte length) then a DISCONNECT.
    let mut stream = vec![0x30, 0xAC, 0x02];
    stream.extend(vec![0xE0; 300]);
    stream.extend([0xE0, 1, 0x8E]);
    assert_eq!(watch(&stream, 13).disconnect_code(), Some(0x8E));
}

#[test]
fn garbage_never_panics_and_a_broken_length_stops_the_watch() {
    let notes = watch(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xE0, 1, 0x98], 1);
    assert_eq!(notes.disconnect_code(), None);
    // Truncated or absurd CONNACK properties are ignored, not trusted.
    assert_eq!(connack_max_qos(&[0, 0, 5, 0x26, 0xff]), None);
    assert_eq!(connack_max_qos(&[0, 0, 2, MAXIMUM_QOS, 7]), None);
    assert_eq!(connack_max_qos(&[]), None);
}

proptest::proptest! {
    #[test]
    fn any_bytes_any_cuts(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), chunk in 1usize..40) {
        let _ = watch(&bytes, chunk);
        let _ = connack_max_qos(&bytes);
    }
}

#[test]
fn the_wrapper_passes_bytes_through_and_watches_them() {
    struct Script(Vec<u8>);
    impl ErrorType for Script {
        type Error = core::convert::Infallible;
    }
    impl Read for Script {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    impl Write for Script {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    let notes = BrokerNotes::new();
    let stream = [0xE0, 2, 0x9C, 0];
    let mut w = Watched::new(Script(stream.to_vec()), &notes);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut got = Vec::new();
    rt.block_on(async {
        let mut buf = [0u8; 8];
        loop {
            let n = w.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    });
    assert_eq!(got, stream);
    assert_eq!(notes.disconnect_code(), Some(0x9C));
}
