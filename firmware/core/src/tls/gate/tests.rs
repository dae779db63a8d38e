use super::*;

mod gate {
    use super::*;
    use core::pin::pin;
    use core::task::{Context, Poll};
    use std::rc::Rc;

    /// A socket whose writes take one byte at a time and pend until released.
    struct Slow {
        open: Rc<Cell<bool>>,
        written: Vec<u8>,
    }

    impl ErrorType for Slow {
        type Error = embedded_io::ErrorKind;
    }

    impl Read for Slow {
        async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, Self::Error> {
            Ok(0)
        }
    }

    impl Write for Slow {
        async fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
            poll_fn(|_| {
                if self.open.get() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            self.written.push(data[0]);
            Ok(1)
        }

        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn poll_once<F: core::future::Future>(f: core::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn busy_while_a_write_is_pending_and_idle_after() {
        let gate = WriteGate::new();
        let open = Rc::new(Cell::new(false));
        let mut t = Gated::new(
            Slow {
                open: open.clone(),
                written: Vec::new(),
            },
            &gate,
        );
        assert!(!gate.is_busy());
        assert!(poll_once(pin!(gate.idle())).is_ready());
        {
            let mut write = pin!(t.write_all(b"abc"));
            assert!(poll_once(write.as_mut()).is_pending());
            assert!(gate.is_busy());
            let mut idle = pin!(gate.idle());
            assert!(poll_once(idle.as_mut()).is_pending());
            open.set(true);
            assert!(matches!(poll_once(write.as_mut()), Poll::Ready(Ok(()))));
            assert!(!gate.is_busy());
            assert!(poll_once(idle.as_mut()).is_ready());
        }
        assert_eq!(t.into_inner().written, b"abc");
    }

    #[test]
    fn a_dropped_write_releases_the_gate_and_wakes_the_waiter() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::Wake;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        let gate = WriteGate::new();
        let mut t = Gated::new(
            Slow {
                open: Rc::new(Cell::new(false)),
                written: Vec::new(),
            },
            &gate,
        );
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut idle = pin!(gate.idle());
        {
            let mut write = pin!(t.write(b"x"));
            assert!(poll_once(write.as_mut()).is_pending());
            assert!(
                idle.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            assert!(!flag.0.load(Ordering::SeqCst));
        }
        assert!(flag.0.load(Ordering::SeqCst), "waiter not woken");
        assert!(!gate.is_busy());
        assert!(poll_once(idle).is_ready());
    }
}
