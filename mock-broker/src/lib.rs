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
//! - [`broker`]: [`MockBroker::start`], [`Config`], the [`Handle`] and its [`Controls`]
//!   (addresses, observe, inject, kick, drop, faults, listeners, SNTP, list clients,
//!   shutdown), the client table and routing.
//! - `session`: one connection: TLS, CONNECT admission, the packet loop, lifecycle events.
//! - [`tls`]: the rustls front (client certificates, SNI, ALPN).
//! - [`mqtt`]: the MQTT 3.1.1 / 5 packets the broker reads and writes.
//! - [`rules`]: AWS IoT Core's limits (client id, keep-alive, topics, payload).
//! - [`policy`]: AWS IoT policy documents and the allow/deny decision.
//! - [`server_cert`]: ready-made server certificates for Device Advisor's TLS cases.
//! - [`sntp`]: the SNTP server and its misbehaviours.
//! - [`observe`]: observer events and AWS's lifecycle event documents.
//! - [`backlog`]: each client's bounded outbox of deliveries and its limits.
//! - [`faults`]: faults to inject (withheld acks, drops, black holes, latency).
//! - [`error`]: errors, grouped by who is at fault.
//! - [`control`]: the loopback HTTP/JSON control API.
//! - [`cli`]: the `mock-broker serve` command line.

pub mod backlog;
pub mod broker;
pub mod cli;
pub mod control;
pub mod error;
pub mod faults;
pub mod mqtt;
pub mod observe;
pub mod policy;
pub mod rules;
pub mod server_cert;
mod session;
pub mod sntp;
pub mod tls;

pub use broker::WRITE_STALL;
pub use broker::{ClientInfo, Config, Controls, Handle, MockBroker, QueueStats};
pub use error::{DisconnectReason, StartError};
pub use faults::Faults;
pub use mqtt::QoS;
pub use observe::{Event, Observer, PublishObservation, Publisher};
pub use policy::Policy;
pub use server_cert::ServerCertificateCase;
pub use sntp::SntpBehaviour;
pub use tls::{Credentials, SniRule};
