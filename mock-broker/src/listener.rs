//! The listening sockets: each accepts connections and gives every one its own task, and
//! can be stopped and started again on the same address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection;
use crate::router::Router;
use crate::tls::{ListenerKind, TlsFront};

/// How long a session may take to end after the broker is told to shut down, before its
/// task is dropped (sessions end sooner on their own; this is the backstop).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// One listening socket, which can be closed and opened again on the same address.
pub(crate) struct ListenerSlot {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
    /// The accept loop's own stop switch and task, while listening.
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl ListenerSlot {
    /// A slot for `addr` (the bound address), not listening yet.
    pub fn new(kind: ListenerKind, addr: SocketAddr) -> Self {
        Self {
            kind,
            addr,
            running: None,
        }
    }

    pub fn is_listening(&self) -> bool {
        self.running.is_some()
    }

    /// Accept on `listener` until [`ListenerSlot::stop`] or `cancel` (the whole broker).
    pub fn start(
        &mut self,
        listener: TcpListener,
        tls: &Arc<TlsFront>,
        router: &Arc<Router>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        // A child token: stopping this listener leaves the rest of the broker running,
        // shutting the broker down stops it too.
        let stop = cancel.child_token();
        let task = tracker.spawn(accept_loop(
            listener,
            self.kind,
            tls.clone(),
            router.clone(),
            stop.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        self.running = Some((stop, task));
    }

    /// Close the socket and wait until it is closed; connections stay up.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
            tracing::info!(kind = ?self.kind, addr = %self.addr, "stopped listening");
        }
    }
}

/// Accept until `stop`; sessions end with `shutdown` (the whole broker), not with `stop`.
async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    tls: Arc<TlsFront>,
    router: Arc<Router>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Each connection, handshake included, runs in its own task: a slow or
                // idle client never holds up the accept loop. At shutdown a session ends
                // at once (every wait in it is cancellable); SHUTDOWN_GRACE is the
                // backstop that drops its task should anything still hold it.
                let session = connection::serve(
                    tcp,
                    peer,
                    kind,
                    tls.clone(),
                    router.clone(),
                    shutdown.clone(),
                );
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = session => {}
                        () = async {
                            shutdown.cancelled().await;
                            tokio::time::sleep(SHUTDOWN_GRACE).await;
                        } => {}
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(?kind, "listener closed");
}
