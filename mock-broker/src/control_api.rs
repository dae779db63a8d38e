//! The loopback HTTP/JSON control API, for scripts and bench users: the same controls
//! as the library's [`Controls`], one request per connection.
//!
//! | Request | Body | Answer |
//! |---|---|---|
//! | `GET /status` | | bound addresses, client count, `queued_bytes`, `queued_messages`, `dropped_qos0` ([`crate::QueueStats`]), `event_streams` open |
//! | `GET /clients` | | connected clients |
//! | `GET /events` | | a stream of JSON lines ([`crate::Event::to_json`]) until closed |
//! | `POST /publish` | `{"topic", "payload", "qos"}` | `{"delivered": n}` |
//! | `POST /kick` | `{"client_id"}` | `{"kicked": bool}` |
//! | `POST /drop` | `{"client_id"}` or `{}` for all | `{"dropped": n}` |
//! | `POST /expire` | `{"client_id"}` | `{"expired": bool}` (its session ends: the next CONNACK says no session) |
//! | `PUT /faults` | `{"client_id"?, "faults": {..}}` ([`Faults`] fields; `latency_ms` at most 600,000) | `{}` |
//! | `DELETE /faults` | | `{}` (every fault cleared) |
//! | `POST /listener/stop`, `POST /listener/start` | | `{}` |
//! | `PUT /server-certificate` | `{"chain_pem", "key_pem"}` or `{"preset": NAME}` ([`crate::ServerCertificateCase`]: `untrusted-ca`, `wrong-name`, `expired`, `large-chain`) | `{}` (new connections see it) |
//! | `DELETE /server-certificate` | | `{}` (the configured one again) |
//! | `PUT /sntp` | `{"behaviour": "correct" \| "silent"}`, `{"offset_secs": n}` (within 100 years) or `{"kiss_of_death": "RATE"}` | `{}` |
//!
//! Errors are `{"error": "..."}` with status 400 (the request's fault; an out-of-range
//! value is named, e.g. `faults.latency_ms: ...`), 404 or 500. A request must arrive
//! whole within `Config::handshake_timeout` (10 s); an `/events` reader that takes
//! nothing for `Config::write_stall_timeout` (10 s) is dropped, so it pins no events.
//! There is no authentication: bind it to loopback only.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::controls::Controls;
use crate::faults::Faults;
use crate::mqtt::QoS;
use crate::observe::millis;
use crate::rules;
use crate::sntp::SntpBehaviour;

/// Largest request accepted (headers and body).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    controls: Arc<Controls>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let controls_for_task = controls.clone();
                let cancel = cancel.clone();
                controls.tracker.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = handle(stream, &controls_for_task) => {}
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "control accept failed"),
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// A failed request: HTTP status and message.
struct Failure(u16, String);

fn bad_request(message: impl std::fmt::Display) -> Failure {
    Failure(400, message.to_string())
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, Failure> {
    let mut buf = Vec::with_capacity(1024);
    let header_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(bad_request("request too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| bad_request(format!("reading request: {e}")))?;
        if n == 0 {
            return Err(bad_request("request ended early"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end])
        .map_err(|_| bad_request("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| bad_request("bad Content-Length"))?;
        }
    }
    if content_length > MAX_REQUEST_BYTES {
        return Err(bad_request("body too large"));
    }
    let mut body = buf[header_end..].to_vec();
    while body.len() < content_length {
        let mut chunk = vec![0u8; content_length - body.len()];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| bad_request(format!("reading body: {e}")))?;
        if n == 0 {
            return Err(bad_request("body ended early"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    Ok(Request { method, path, body })
}

async fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn handle(mut stream: TcpStream, controls: &Controls) {
    // An idle connection must not hold a task: a request arrives whole within the
    // handshake timeout, as a TLS client must say who it is within it.
    let within = controls.config().handshake_timeout;
    let request = match tokio::time::timeout(within, read_request(&mut stream)).await {
        Ok(Ok(request)) => request,
        Err(_) => {
            let message = "request did not arrive in time";
            return respond(&mut stream, 400, &json!({ "error": message })).await;
        }
        Ok(Err(Failure(status, message))) => {
            return respond(&mut stream, status, &json!({ "error": message })).await;
        }
    };
    tracing::debug!(method = %request.method, path = %request.path, "control request");
    if request.method == "GET" && request.path == "/events" {
        return stream_events(stream, controls).await;
    }
    match route(&request, controls).await {
        Ok(body) => respond(&mut stream, 200, &body).await,
        Err(Failure(status, message)) => {
            respond(&mut stream, status, &json!({ "error": message })).await
        }
    }
}

/// Send events as JSON lines until the client goes away.
async fn stream_events(mut stream: TcpStream, controls: &Controls) {
    let _open = controls.event_stream_opened();
    let mut observer = controls.observe();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while let Some(next) = observer.next().await {
        let value = match next {
            Ok(event) => event.to_json(),
            Err(lagged) => json!({ "type": "lagged", "dropped": lagged.0 }),
        };
        let mut line = value.to_string();
        line.push('\n');
        // A reader that stopped reading would hold every event since in the observer
        // ring (payloads included): drop it instead.
        let stall = controls.config().write_stall_timeout;
        match tokio::time::timeout(stall, stream.write_all(line.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("control /events reader stopped reading: dropped");
                return;
            }
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    qos: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody {
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    client_id: Option<String>,
    #[serde(default)]
    faults: Faults,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerCertificateBody {
    chain_pem: Option<String>,
    key_pem: Option<String>,
    preset: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SntpBody {
    behaviour: Option<String>,
    offset_secs: Option<i64>,
    kiss_of_death: Option<String>,
}

async fn route(request: &Request, controls: &Controls) -> Result<Value, Failure> {
    let body = &request.body;
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/status") => {
            let queues = controls.queue_stats();
            Ok(json!({
                "mqtt": controls.mqtt_addr().to_string(),
                "alpn": controls.alpn_addr().map(|a| a.to_string()),
                "sntp": controls.sntp_addr().map(|a| a.to_string()),
                "control": controls.control_addr().map(|a| a.to_string()),
                "clients": controls.clients().len(),
                "queued_bytes": queues.queued_bytes,
                "queued_messages": queues.queued_messages,
                "dropped_qos0": queues.dropped_qos0,
                "event_streams": controls.event_streams(),
            }))
        }
        ("GET", "/clients") => Ok(Value::Array(
            controls
                .clients()
                .into_iter()
                .map(|c| {
                    json!({
                        "client_id": c.client_id,
                        "thing_name": c.thing_name,
                        "mqtt_version": c.version.name(),
                        "peer": c.peer.to_string(),
                        "keep_alive_secs": c.keep_alive_secs,
                        "subscriptions": c.subscriptions.iter().map(|(filter, qos)| json!({
                            "filter": filter, "qos": qos.level()
                        })).collect::<Vec<_>>(),
                        "connected_at_ms": millis(c.connected_at),
                    })
                })
                .collect(),
        )),
        ("POST", "/publish") => {
            let publish: PublishBody = parse(body)?;
            let qos = match publish.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                other => return Err(bad_request(format!("qos {other}: only 0 and 1"))),
            };
            rules::check_topic_name(&publish.topic)
                .map_err(|e| bad_request(format!("topic: {e}")))?;
            let delivered = controls.inject(&publish.topic, publish.payload, qos);
            Ok(json!({ "delivered": delivered }))
        }
        ("POST", "/kick") => {
            let client: ClientBody = parse(body)?;
            let id = client
                .client_id
                .ok_or_else(|| bad_request("client_id is required"))?;
            Ok(json!({ "kicked": controls.kick(&id) }))
        }
        ("POST", "/expire") => {
            let client: ClientBody = parse(body)?;
            let id = client
                .client_id
                .ok_or_else(|| bad_request("client_id is required"))?;
            Ok(json!({ "expired": controls.expire_session(&id) }))
        }
        ("POST", "/drop") => {
            let client: ClientBody = parse(body)?;
            let dropped = match client.client_id {
                Some(id) => usize::from(controls.drop_connection(&id)),
                None => controls.drop_all_connections(),
            };
            Ok(json!({ "dropped": dropped }))
        }
        ("PUT", "/faults") => {
            let faults: FaultsBody = parse(body)?;
            faults
                .faults
                .check()
                .map_err(|invalid| bad_request(format!("faults.{invalid}")))?;
            match faults.client_id {
                Some(id) => controls.set_client_faults(&id, faults.faults),
                None => controls.set_faults(faults.faults),
            }
            Ok(json!({}))
        }
        ("DELETE", "/faults") => {
            controls.reset_faults();
            Ok(json!({}))
        }
        ("POST", "/listener/stop") => {
            controls.stop_listening().await;
            Ok(json!({}))
        }
        ("POST", "/listener/start") => {
            controls
                .resume_listening()
                .await
                .map_err(|e| Failure(500, e.to_string()))?;
            Ok(json!({}))
        }
        ("PUT", "/server-certificate") => {
            let certificate: ServerCertificateBody = parse(body)?;
            match certificate {
                ServerCertificateBody {
                    chain_pem: Some(chain),
                    key_pem: Some(key),
                    preset: None,
                } => controls.replace_server_certificate_pem(&chain, &key),
                ServerCertificateBody {
                    chain_pem: None,
                    key_pem: None,
                    preset: Some(preset),
                } => controls.present_server_certificate(preset.parse().map_err(bad_request)?),
                _ => {
                    return Err(bad_request(
                        "body: give either \"chain_pem\" and \"key_pem\", or \"preset\"",
                    ));
                }
            }
            .map_err(bad_request)?;
            Ok(json!({}))
        }
        ("DELETE", "/server-certificate") => {
            controls
                .restore_server_credentials()
                .map_err(|e| Failure(500, e.to_string()))?;
            Ok(json!({}))
        }
        ("PUT", "/sntp") => {
            let sntp: SntpBody = parse(body)?;
            let behaviour = match (
                sntp.behaviour.as_deref(),
                sntp.offset_secs,
                sntp.kiss_of_death,
            ) {
                (Some("correct"), None, None) => SntpBehaviour::Correct,
                (Some("silent"), None, None) => SntpBehaviour::Silent,
                (None, Some(secs), None) => SntpBehaviour::OffsetSecs(secs),
                (None, None, Some(code)) => {
                    let code: [u8; 4] = code
                        .as_bytes()
                        .try_into()
                        .map_err(|_| bad_request("kiss_of_death must be 4 ASCII letters"))?;
                    SntpBehaviour::KissOfDeath(code)
                }
                _ => {
                    return Err(bad_request(
                        "give one of behaviour (correct|silent), offset_secs, kiss_of_death",
                    ));
                }
            };
            behaviour.check().map_err(bad_request)?;
            controls.set_sntp(behaviour);
            Ok(json!({}))
        }
        (_, path) => Err(Failure(
            404,
            format!("no such control: {} {path}", request.method),
        )),
    }
}
