use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Wake;

use super::*;

/// Records the tick it was woken at (0: not yet).
struct Flag(AtomicU64);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0
            .store(embassy_time_driver::now().max(1), Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(AtomicU64::new(0)));
    (flag.clone(), Waker::from(flag))
}

#[test]
fn the_queue_keeps_one_entry_per_task_with_its_earliest_deadline() {
    let mut queue = TimerQueue::default();
    let (_a, a) = flag();
    let (_b, b) = flag();
    queue.schedule(50, &a);
    queue.schedule(80, &a); // later: the earlier moment stands
    queue.schedule(30, &b);
    queue.schedule(20, &b); // earlier: it moves
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.next_deadline(), Some(20));
    let mut due = Vec::new();
    queue.take_due(29, &mut due);
    assert_eq!(due.len(), 1, "b at 20; its stale entry at 30 is skipped");
    assert!(due[0].will_wake(&b));
    due.clear();
    queue.take_due(49, &mut due);
    assert!(due.is_empty(), "a waits for 50");
    assert_eq!(queue.next_deadline(), Some(50));
    queue.take_due(50, &mut due);
    assert_eq!(due.len(), 1);
    assert!(queue.is_empty());
    assert_eq!(queue.next_deadline(), None);
}

#[test]
fn a_thousand_tasks_wait_in_deadline_order() {
    let mut queue = TimerQueue::default();
    let flags: Vec<_> = (0..1000).map(|_| flag()).collect();
    for (i, (_, waker)) in flags.iter().enumerate() {
        queue.schedule(1000 - i as u64, waker);
        // Asking again, later, as a re-polled timer does, adds nothing.
        queue.schedule(5000, waker);
    }
    assert_eq!(queue.len(), 1000);
    let mut due = Vec::new();
    queue.take_due(500, &mut due);
    assert_eq!(due.len(), 500, "deadlines 1..=500");
    assert_eq!(queue.len(), 500);
    assert_eq!(queue.next_deadline(), Some(501));
}

#[test]
fn the_driver_wakes_each_of_a_thousand_tasks_at_its_moment_not_before() {
    let start = embassy_time_driver::now();
    let flags: Vec<_> = (0..1000u64)
        .map(|i| {
            let (flag, waker) = flag();
            // Deadlines 20-70 ms ahead, in an order unlike the time order.
            let at = start + 20_000 + (i * 7919) % 50_000;
            embassy_time_driver::schedule_wake(at, &waker);
            (flag, at)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while flags.iter().any(|(f, _)| f.0.load(Ordering::SeqCst) == 0) {
        assert!(
            Instant::now() < deadline,
            "not every task was woken within 10 s"
        );
        std::thread::park_timeout(Duration::from_millis(5));
    }
    for (flag, at) in &flags {
        let woken = flag.0.load(Ordering::SeqCst);
        assert!(woken >= *at, "woken at {woken}, asked for {at}");
    }
}
