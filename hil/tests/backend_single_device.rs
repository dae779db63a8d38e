//! A backend that is one device (a board) gets one scenario at a time: the runner never
//! starts a second device while the first runs. Shown with real virtual devices behind a
//! backend that reports itself as a single device, counting the devices alive at once.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hil::backend::virtual_device::VirtualBackend;
use hil::backend::{Backend, Device};
use hil::rig::Rig;
use hil::runner::run_suite_on;
use hil::scenarios;
use hil::serial::SerialCapture;

/// Virtual devices under the single-device rule, with a count of those alive.
struct OneAtATime {
    inner: VirtualBackend,
    alive: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

struct Counted {
    inner: Box<dyn Device>,
    alive: Arc<AtomicUsize>,
}

impl Device for Counted {
    fn serial(&mut self) -> &mut SerialCapture {
        self.inner.serial()
    }
    fn capture(&self) -> &SerialCapture {
        self.inner.capture()
    }
    fn exited(&mut self) -> Option<String> {
        self.inner.exited()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend for OneAtATime {
    fn board(&self) -> &'static str {
        "one-at-a-time"
    }
    fn single_device(&self) -> bool {
        true
    }
    fn start(&self, image: &Path) -> Result<Box<dyn Device>, hil::error::BackendError> {
        let inner = self.inner.start(image)?;
        let now = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Ok(Box::new(Counted {
            inner,
            alive: Arc::clone(&self.alive),
        }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_on_a_single_device_backend_run_one_at_a_time() {
    let binary = common::virtual_device();
    let rig = Arc::new(Rig::start(binary.clone()).await.expect("rig"));
    let most = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(OneAtATime {
        inner: VirtualBackend::new(binary),
        alive: Arc::new(AtomicUsize::new(0)),
        most: Arc::clone(&most),
    });
    let chosen = scenarios::select(&["boot".into(), "inbound".into()]).unwrap();
    let reports = run_suite_on(rig, backend, chosen, |_| {}).await;
    for r in &reports {
        assert!(r.passed(), "{}: {:?}", r.name, r.result);
    }
    assert_eq!(reports.len(), 2);
    // Both independent scenarios would run at once on the virtual backend.
    assert_eq!(most.load(Ordering::SeqCst), 1, "devices alive at once");
}
