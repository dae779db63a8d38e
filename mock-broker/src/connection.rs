//! One client connection from accept to close: the TLS handshake, the CONNECT and its
//! admission, the CONNACK, the packet loop, and what follows its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Refusal, Registered, refuse};
use crate::error::DisconnectReason;
use crate::link::{Link, ReadError};
use crate::mqtt::{ClientPacket, ConnAck, DecodeError, ServerPacket, Version, reason, return_code};
use crate::observe::{
    Event, SessionFacts, connected_document, connected_topic, disconnected_document,
    disconnected_topic,
};
use crate::packet_loop::PacketLoop;
use crate::router::{ClientInfo, Router};
use crate::rules;
use crate::tls::{HandshakeRefusal, ListenerKind, TlsFront};

pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    tls: Arc<TlsFront>,
    router: Arc<Router>,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = timeout(router.config.handshake_timeout, tls.accept(tcp, kind));
    let accepted = tokio::select! {
        _ = cancel.cancelled() => return,
        result = handshake => result.unwrap_or(Err(HandshakeRefusal::Timeout)),
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::info!(%peer, %refusal, "TLS refused");
            router.emit(Event::Refused {
                peer,
                reason: refusal.to_string(),
            });
            return;
        }
    };
    tracing::debug!(%peer, thing = ?accepted.thing_name, version = accepted.tls_version, "TLS established");
    let mut link = Link::new(accepted.stream);
    let connect = tokio::select! {
        _ = cancel.cancelled() => return,
        result = timeout(router.config.connect_timeout, link.read_packet()) => result,
    };
    let mut connect = match connect {
        Ok(Ok(ClientPacket::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            return refuse(
                &router,
                peer,
                format!("first packet was {}, not CONNECT", other.name()),
            );
        }
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedVersion(level)))) => {
            // 3.1.1's answer to an unknown level. Level 5 gets here only with a protocol
            // name other than "MQTT": it is answered in MQTT 5's form (0x84), as a level-5
            // client reads a CONNACK.
            let (version, code) = if level == 5 {
                (Version::V5, reason::UNSUPPORTED_VERSION)
            } else {
                (Version::V311, return_code::UNACCEPTABLE_VERSION)
            };
            link.version = Some(version);
            link.send(&ServerPacket::ConnAck(ConnAck {
                code,
                ..ConnAck::default()
            }))
            .await;
            return refuse(
                &router,
                peer,
                format!("MQTT protocol level {level} not supported"),
            );
        }
        Ok(Err(ReadError::Decode(e))) => {
            // MQTT 5 lets the server say why it cannot read a CONNECT; 3.1.1 just closes.
            if link.input.connect_level == Some(5) {
                link.version = Some(Version::V5);
                link.send(&ServerPacket::ConnAck(ConnAck {
                    code: e.reason_code(),
                    ..ConnAck::default()
                }))
                .await;
            }
            return refuse(&router, peer, format!("reading CONNECT: {e}"));
        }
        Ok(Err(e)) => return refuse(&router, peer, format!("reading CONNECT: {e}")),
        Err(_) => return refuse(&router, peer, "no CONNECT in time".into()),
    };
    link.version = Some(connect.version);
    // AWS assigns a client id to an MQTT 5 client that sends none ("MQTT 5 supported
    // features"); the policy then judges the assigned id.
    let assigned_client_identifier = (connect.version == Version::V5
        && connect.client_id.is_empty())
    .then(|| admission::assign_client_id(&router));
    if let Some(id) = &assigned_client_identifier {
        connect.client_id = id.clone();
    }
    let admitted = admission::admit(&router, &connect, accepted.thing_name.as_deref());
    let keep_alive_secs = match admitted {
        Ok(keep_alive_secs) => keep_alive_secs,
        Err(Refusal { connack, why }) => {
            if let Some(code) = connack {
                link.send(&ServerPacket::ConnAck(ConnAck {
                    code,
                    ..ConnAck::default()
                }))
                .await;
            }
            return refuse(&router, peer, why);
        }
    };
    let faults = router.faults_for(&connect.client_id);
    if faults.withhold_connack {
        tracing::info!(client = %connect.client_id, "fault: CONNACK withheld");
        router.emit(Event::FaultApplied {
            client_id: connect.client_id.clone(),
            fault: "withheld CONNACK".into(),
        });
        // Hold the connection open, reading and ignoring, until the client gives up.
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async { while link.read_packet().await.is_ok() {} } => {}
        }
        return refuse(&router, peer, "CONNACK withheld (fault)".into());
    }
    let info = ClientInfo {
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        version: connect.version,
        peer,
        keep_alive_secs,
        subscriptions: Vec::new(),
        connected_at: SystemTime::now(),
    };
    let Registered {
        connection,
        outbox,
        version_number,
        session_present,
        queued,
    } = admission::register(&router, info, !connect.clean_start);
    // Messages stored for a resumed session go out first, within the client's limits.
    for delivery in queued {
        outbox.offer(delivery);
    }
    let persist_for = admission::session_expiry(&connect, router.config.max_session_expiry);
    let facts = SessionFacts {
        client_id: connect.client_id.clone(),
        session_id: format!("{:032x}", connection),
        principal: accepted.certificate_id.clone(),
        ip_address: peer.ip().to_string(),
        version_number,
    };
    let ack = ConnAck {
        session_present,
        code: 0,
        maximum_qos: Some(1),
        retain_available: Some(true),
        maximum_packet_size: Some(rules::MAX_INBOUND_PACKET_BYTES as u32),
        topic_alias_maximum: Some(rules::TOPIC_ALIAS_MAXIMUM),
        // AWS IoT Core's CONNACK carries Server Keep Alive whether or not it changed the
        // client's (see FIDELITY.md).
        server_keep_alive: Some(keep_alive_secs),
        // "If the value you set exceeds the maximum of your account, AWS IoT Core will
        // return the adjusted value in the CONNACK" ("MQTT 5 properties").
        session_expiry_interval: connect
            .session_expiry_secs
            .filter(|asked| u64::from(*asked) > persist_for.as_secs())
            .map(|_| u32::try_from(persist_for.as_secs()).unwrap_or(u32::MAX)),
        receive_maximum: Some(rules::MAX_INBOUND_IN_FLIGHT),
        wildcard_subscription_available: Some(true),
        // AWS does not support subscription identifiers and says so in its CONNACK.
        subscription_identifier_available: Some(false),
        shared_subscription_available: Some(true),
        assigned_client_identifier,
    };
    if !faults.latency.is_zero() {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(faults.latency) => {}
        }
    }
    link.send(&ServerPacket::ConnAck(ack)).await;
    tracing::info!(client = %connect.client_id, thing = ?accepted.thing_name, mqtt = connect.version.name(), keep_alive_secs, %peer, "connected");
    router.emit(Event::Connected {
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        version: connect.version,
        peer,
        session_present,
    });
    admission::lifecycle(
        &router,
        &connect.client_id,
        connected_topic(&connect.client_id),
        connected_document(&facts, SystemTime::now()),
    );

    let mut session = PacketLoop::new(
        router.clone(),
        link,
        outbox,
        &connect,
        accepted.thing_name.clone(),
        connection,
        keep_alive_secs,
    );
    let (reason, code) = session.run(&cancel).await;
    session.close(code).await;

    // MQTT 5 DISCONNECT may set a new Session Expiry Interval (AWS: "MQTT 5 supported
    // features", session expiry), within the same cap as CONNECT's.
    let persist_for = session.session_expiry_update.map_or(persist_for, |secs| {
        Duration::from_secs(secs.into()).min(router.config.max_session_expiry)
    });
    let owed = session.unfinished();
    let will_due = reason != DisconnectReason::ClientInitiatedDisconnect || session.will_requested;
    drop(session);
    let version_number =
        admission::unregister(&router, &connect.client_id, connection, persist_for, owed);
    // MQTT 5 §3.1.3.2.2: the will waits out its Will Delay Interval, or until the
    // session ends if that comes first; a new connection for the client id before then
    // cancels it (waited for below, after the disconnection is reported).
    let will_delay = connect
        .will
        .as_ref()
        .filter(|_| will_due)
        .map(|will| Duration::from_secs(will.delay_secs.into()).min(persist_for));
    if will_delay.is_some_and(|delay| delay.is_zero())
        && let Some(will) = &connect.will
    {
        admission::publish_will(
            &router,
            &connect.client_id,
            accepted.thing_name.as_deref(),
            will,
        );
    }
    tracing::info!(client = %connect.client_id, %reason, "disconnected");
    router.emit(Event::Disconnected {
        client_id: connect.client_id.clone(),
        reason,
    });
    let facts = SessionFacts {
        version_number,
        ..facts
    };
    admission::lifecycle(
        &router,
        &connect.client_id,
        disconnected_topic(&connect.client_id),
        disconnected_document(&facts, reason, SystemTime::now()),
    );
    if let (Some(delay), Some(will)) = (will_delay.filter(|d| !d.is_zero()), &connect.will) {
        tracing::debug!(client = %connect.client_id, ?delay, "last will delayed");
        let why = tokio::select! {
            _ = cancel.cancelled() => Some("the broker stopped".to_owned()),
            _ = tokio::time::sleep(delay) => {
                admission::will_cancelled(&router, &connect.client_id, version_number)
            }
        };
        match why {
            None => admission::publish_will(
                &router,
                &connect.client_id,
                accepted.thing_name.as_deref(),
                will,
            ),
            Some(why) => {
                tracing::info!(client = %connect.client_id, %why, "delayed last will discarded");
                router.emit(Event::WillDiscarded {
                    client_id: connect.client_id.clone(),
                    why,
                });
            }
        }
    }
}
