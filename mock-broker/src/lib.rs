//! `mock-broker`: a local broker that behaves like AWS IoT Core, with eyes and hands for
//! the test rig (DESIGN.md section 4).
//!
//! ```no_run
//! # async fn demo(credentials: mock_broker::Credentials) -> Result<(), mock_broker::StartError> {
//! use mock_broker::{Config, MockBroker, Policy, QoS};
//! use std::time::Duration;
//!
//! let broker = MockBroker::start(Config::new(credentials, Policy::allow_all())).await?;
//! let mut observer = broker.observe();
//! println!("devices connect to {}", broker.mqtt_addr());
//! let hello = observer.wait_for_publish("outTopic", Duration::from_secs(5)).await;
//! broker.inject("inTopic", "hello", QoS::AtLeastOnce);
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! From the outside in; each module uses only those below it (no import circle).
//!
//! - [`broker`]: [`MockBroker::start`] builds and starts everything; the [`Handle`] owns it.
//! - [`config`]: [`Config`], AWS's limits as the mock applies them.
//! - [`control_api`]: the loopback HTTP/JSON control API over the [`Controls`].
//! - [`controls`]: [`Controls`] (addresses, observe, inject, kick, drop, faults,
//!   listeners, server certificates, SNTP, list clients, queue figures).
//! - `listener`: the listening sockets, stopped and restarted on the same address.
//! - `connection`: one connection from accept to close: TLS, CONNECT, CONNACK, the packet
//!   loop, what follows its end.
//! - `admission`: AWS's CONNECT rules, entering and leaving the client table (duplicate
//!   client ids, persistent sessions), lifecycle events and last wills.
//! - `packet_loop`: an admitted client's packets in, deliveries out, keep-alive, faults.
//! - `link`: the MQTT byte stream over TLS: whole packets in, a write queue out.
//! - [`router`]: the client table, retained messages, stored sessions and `publish`, the
//!   one path every message takes to its subscribers.
//! - [`backlog`]: each client's bounded outbox of deliveries and commands, and its limits.
//! - [`tls`]: the rustls front (client certificates, SNI, ALPN).
//! - [`mqtt`]: the MQTT 3.1.1 / 5 packets the broker reads and writes.
//! - [`rules`]: AWS IoT Core's limits (client id, keep-alive, topics, payload).
//! - [`policy`]: AWS IoT policy documents and the allow/deny decision.
//! - [`observe`]: observer events and AWS's lifecycle event documents.
//! - [`faults`]: faults to inject (withheld acks, drops, black holes, latency).
//! - [`server_cert`]: ready-made server certificates for Device Advisor's TLS cases.
//! - [`sntp`]: the SNTP server and its misbehaviours.
//! - [`error`]: errors, grouped by who is at fault.
//! - [`cli`]: the `mock-broker serve` command line.

mod admission;
pub mod backlog;
pub mod broker;
pub mod cli;
pub mod config;
mod connection;
pub mod control_api;
pub mod controls;
pub mod error;
pub mod faults;
mod link;
mod listener;
pub mod mqtt;
pub mod observe;
mod packet_loop;
pub mod policy;
pub mod router;
pub mod rules;
pub mod server_cert;
pub mod sntp;
pub mod tls;

pub use broker::{Handle, MockBroker};
pub use config::{Config, InboundLimits, WRITE_STALL};
pub use controls::{Controls, QueueStats};
pub use error::{DisconnectReason, StartError};
pub use faults::Faults;
pub use mqtt::QoS;
pub use observe::{Event, Observer, PublishObservation, Publisher};
pub use policy::Policy;
pub use router::ClientInfo;
pub use server_cert::ServerCertificateCase;
pub use sntp::SntpBehaviour;
pub use tls::{Credentials, SniRule};
