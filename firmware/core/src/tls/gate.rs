//! The write gate: a transport wrapper that tells the driver whether a write is under
//! way. embedded-tls is not cancel-safe while it writes a record (a half-sent record
//! desynchronises the stream for good), so a driver that races the connection against
//! its deadlines waits for [`WriteGate::idle`] before it drops the connection's future.
//! Reads need no gate: [`RecordAtomic`](super::RecordAtomic) makes them cancel-safe.

use core::cell::Cell;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use embedded_io_async::{ErrorType, Read, Write};

#[cfg(test)]
mod tests;

/// Whether a write is under way on a [`Gated`] transport. For one single-threaded
/// executor (the board's): not `Sync`, and one waiter at a time.
#[derive(Default)]
pub struct WriteGate {
    busy: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

impl WriteGate {
    pub const fn new() -> Self {
        Self {
            busy: Cell::new(false),
            waiter: Cell::new(None),
        }
    }

    /// A write or flush is pending on the transport.
    pub fn is_busy(&self) -> bool {
        self.busy.get()
    }

    /// Resolves at once when no write is pending, else when the pending one returns
    /// (or its future is dropped). Only the latest caller is woken.
    pub async fn idle(&self) {
        poll_fn(|cx| {
            if self.busy.get() {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    fn enter(&self) -> Busy<'_> {
        self.busy.set(true);
        Busy(self)
    }
}

/// Marks the gate busy while alive; clears it and wakes the waiter when dropped, whether
/// the write returned or its future was dropped.
struct Busy<'g>(&'g WriteGate);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
        if let Some(waker) = self.0.waiter.take() {
            waker.wake();
        }
    }
}

/// A transport that marks its [`WriteGate`] busy during every `write` and `flush`.
/// Put it directly over the socket, under TLS.
pub struct Gated<'g, T> {
    inner: T,
    gate: &'g WriteGate,
}

impl<'g, T> Gated<'g, T> {
    pub fn new(inner: T, gate: &'g WriteGate) -> Self {
        Self { inner, gate }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: ErrorType> ErrorType for Gated<'_, T> {
    type Error = T::Error;
}

impl<T: Read> Read for Gated<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.inner.read(buf).await
    }
}

impl<T: Write> Write for Gated<'_, T> {
    async fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
        let _busy = self.gate.enter();
        self.inner.write(data).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        let _busy = self.gate.enter();
        self.inner.flush().await
    }
}
