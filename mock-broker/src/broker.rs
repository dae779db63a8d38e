//! Building and starting the broker: [`MockBroker::start`] binds the listeners, starts
//! every task and returns the [`Handle`] that owns them.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control_api;
use crate::controls::Controls;
use crate::error::StartError;
use crate::listener::ListenerSlot;
use crate::observe::OBSERVER_BACKLOG;
use crate::router::Router;
use crate::sntp::{self, SntpBehaviour};
use crate::tls::{ListenerKind, TlsFront};

/// The broker's constructor.
pub struct MockBroker;

impl MockBroker {
    /// Bind the listeners and start serving. Every task and port belongs to the returned
    /// [`Handle`] and ends with it.
    pub async fn start(config: Config) -> Result<Handle, StartError> {
        let tls = TlsFront::new(&config.credentials, config.endpoint.clone(), config.sni)?
            .offering(config.cipher_suites.as_deref(), &config.credentials)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let mqtt_listener = bind(config.mqtt_addr).await?;
        let alpn_listener = match config.alpn_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })
        };
        let mqtt_addr = local(&mqtt_listener, config.mqtt_addr)?;
        let alpn_addr = match (&alpn_listener, config.alpn_addr) {
            (Some(l), Some(addr)) => Some(local(l, addr)?),
            _ => None,
        };
        let sntp_socket = match config.sntp_addr {
            Some(addr) => Some(
                UdpSocket::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let sntp_addr = match (&sntp_socket, config.sntp_addr) {
            (Some(socket), Some(addr)) => Some(
                socket
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            _ => None,
        };
        let control_addr = config.control_addr;
        let (events, _) = broadcast::channel(OBSERVER_BACKLOG);
        let tls = Arc::new(tls);
        let router = Arc::new(Router::new(config, events));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sntp_behaviour = Arc::new(Mutex::new(SntpBehaviour::default()));
        if let Some(socket) = sntp_socket {
            tracker.spawn(sntp::serve(
                socket,
                sntp_behaviour.clone(),
                router.events.clone(),
                cancel.clone(),
            ));
        }
        let mut bound = vec![(mqtt_listener, ListenerKind::Mqtt, mqtt_addr)];
        if let (Some(listener), Some(addr)) = (alpn_listener, alpn_addr) {
            bound.push((listener, ListenerKind::Alpn, addr));
        }
        let listeners = bound
            .into_iter()
            .map(|(listener, kind, addr)| {
                let mut slot = ListenerSlot::new(kind, addr);
                slot.start(listener, &tls, &router, &cancel, &tracker);
                slot
            })
            .collect();
        tracing::info!(%mqtt_addr, ?alpn_addr, ?sntp_addr, endpoint = %router.config.endpoint, "broker listening");
        let control_listener = match control_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let control_addr = match (&control_listener, control_addr) {
            (Some(l), Some(addr)) => Some(local(l, addr)?),
            _ => None,
        };
        let controls = Arc::new(Controls {
            router,
            tls,
            control_addr,
            mqtt_addr,
            alpn_addr,
            sntp_addr,
            sntp_behaviour,
            listeners: tokio::sync::Mutex::new(listeners),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            event_streams: Arc::new(AtomicU64::new(0)),
        });
        if let Some(listener) = control_listener {
            tracker.spawn(control_api::serve(
                listener,
                controls.clone(),
                cancel.clone(),
            ));
        }
        Ok(Handle { controls })
    }
}

/// A running broker. Dropping it stops the broker (listeners close at once, sessions
/// end shortly after); [`Handle::shutdown`] also waits until everything has ended. Its
/// controls are [`Controls`]' methods, reached through `Deref`.
pub struct Handle {
    controls: Arc<Controls>,
}

impl std::ops::Deref for Handle {
    type Target = Controls;

    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl Handle {
    /// Stop accepting, disconnect every client and wait for every task to end.
    pub async fn shutdown(self) {
        self.controls.cancel.cancel();
        self.controls.tracker.close();
        self.controls.tracker.wait().await;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.controls.cancel.cancel();
        self.controls.tracker.close();
    }
}
