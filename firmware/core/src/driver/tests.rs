use super::*;

#[cfg(feature = "flash-image")]
mod image_failure {
    use super::*;
    use crate::config::DeviceConfig;
    use crate::image::{CredentialBuffers, format, mount};

    /// A real image with `files`, then the outcome of loading the credentials from it.
    fn load(files: &[(&str, &[u8])]) -> Result<(), ImageError> {
        let mut buf = vec![0xFFu8; 64 * 1024];
        let mut flash = &mut buf[..];
        format(&mut flash)?;
        mount(&mut flash, |fs| {
            files.iter().try_for_each(|(p, d)| fs.write_file(p, d))
        })?;
        let mut bufs = Box::new(CredentialBuffers::new());
        mount(&mut flash, |fs| fs.load_credentials(&mut bufs).map(drop))
    }

    fn config() -> std::string::String {
        serde_json::to_string(&DeviceConfig::new("localhost", "ESPthing").unwrap()).unwrap()
    }

    #[test]
    fn a_missing_file_is_named() {
        let json = config();
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CERT_PATH, b"c"),
            (image::CA_PATH, b"a"),
        ])
        .unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Creds {
                file: FlashFile::Key,
                error: LoadError::Missing
            }
        );
        assert_eq!(
            failure.creds_event(),
            Event::CredsFailed {
                file: FlashFile::Key,
                error: LoadError::Missing
            }
        );
    }

    #[test]
    fn config_problems_are_config_failures() {
        let err = load(&[(image::CERT_PATH, b"c")]).unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Config(ConfigFailure::Load(LoadError::Missing))
        );
        assert_eq!(
            failure.config_event(),
            Event::ConfigFailed(ConfigFailure::Load(LoadError::Missing))
        );

        let err = load(&[(image::CONFIG_PATH, b"{\"endpoint\":")]).unwrap_err();
        match ImageFailure::of(&err) {
            ImageFailure::Config(ConfigFailure::Invalid(e)) => {
                assert_eq!(e.field, "config.json", "{e:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversize_and_unmountable_images() {
        let json = config();
        let big = vec![1u8; image::MAX_CERT + 1];
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CA_PATH, &big),
        ]);
        // The config loads first, then the certificate is missing before the CA is read.
        assert_eq!(
            ImageFailure::of(&err.unwrap_err()),
            ImageFailure::Creds {
                file: FlashFile::Cert,
                error: LoadError::Missing
            }
        );
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CERT_PATH, &big),
        ]);
        assert_eq!(
            ImageFailure::of(&err.unwrap_err()),
            ImageFailure::Creds {
                file: FlashFile::Cert,
                error: LoadError::TooLarge
            }
        );

        // Erased flash: no filesystem at all.
        let mut blank = vec![0xFFu8; 64 * 1024];
        let mut flash = &mut blank[..];
        let err = mount(&mut flash, |_| Ok(())).unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Creds {
                file: FlashFile::Image,
                error: LoadError::Malformed
            }
        );
        assert_eq!(
            failure.config_failure(),
            ConfigFailure::Load(LoadError::Malformed)
        );
    }
}

#[cfg(feature = "tls")]
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
