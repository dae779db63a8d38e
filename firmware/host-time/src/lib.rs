//! embassy-time's driver on a host: the virtual device, `hil fleet` and the core's tests.
//!
//! minimq's timeouts go through embassy-time. Its own `std` driver keeps waiting timers in
//! a fixed-size queue (`generic-queue-N`, at most 128): once it is full, every new timer
//! wakes an old one early, that task polls and arms its timer again, which wakes another,
//! and the tasks keep each other busy (`hil fleet` saw a core busy from 9 devices up with
//! 8 entries, and about 1.7 cores for 1,000 devices with 128). This driver has no such
//! limit: one entry per waiting task, in a heap.
//!
//! Linking the crate installs the driver (`use host_time as _;` in a crate that uses
//! embassy-time). A build must not also turn on embassy-time's `std` feature: two drivers
//! do not link.
//!
//! # Layout
//! - [`TimerQueue`]: the earliest deadline of each waiting task, in time order.
//! - The driver: 1 MHz ticks since first use; a thread sleeps until the earliest deadline
//!   and wakes what is due.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

/// A task, as a waker identifies it: two wakers with the same data and vtable wake the
/// same task ([`Waker::will_wake`]).
type TaskKey = (usize, usize);

fn task_key(waker: &Waker) -> TaskKey {
    (
        waker.data().addr(),
        std::ptr::from_ref(waker.vtable()).addr(),
    )
}

/// Waiting tasks, each with its earliest deadline, as embassy-time asks: a task that asks
/// again for a later moment keeps the earlier one (it is polled then and asks again).
#[derive(Default)]
pub struct TimerQueue {
    /// Deadlines in time order; an entry whose task has since been woken or moved earlier
    /// is stale and skipped when it comes up.
    order: BinaryHeap<Reverse<(u64, TaskKey)>>,
    waiting: BTreeMap<TaskKey, (u64, Waker)>,
}

impl TimerQueue {
    /// Wake `waker` at `at` (ticks), or earlier if it already waits for an earlier moment.
    pub fn schedule(&mut self, at: u64, waker: &Waker) {
        let key = task_key(waker);
        match self.waiting.get_mut(&key) {
            Some((when, _)) if *when <= at => return,
            Some(entry) => *entry = (at, waker.clone()),
            None => {
                self.waiting.insert(key, (at, waker.clone()));
            }
        }
        self.order.push(Reverse((at, key)));
    }

    /// Move every waker due at `now` to `due`.
    pub fn take_due(&mut self, now: u64, due: &mut Vec<Waker>) {
        while let Some(&Reverse((at, key))) = self.order.peek() {
            if at > now {
                break;
            }
            self.order.pop();
            if self.waiting.get(&key).is_some_and(|(when, _)| *when == at)
                && let Some((_, waker)) = self.waiting.remove(&key)
            {
                due.push(waker);
            }
        }
    }

    /// The earliest deadline of a waiting task.
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((at, key))) = self.order.peek() {
            if self.waiting.get(&key).is_some_and(|(when, _)| *when == at) {
                return Some(at);
            }
            self.order.pop();
        }
        None
    }

    /// How many tasks wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

struct Waiting {
    queue: TimerQueue,
    /// What the driver's thread sleeps until (`u64::MAX`: until told).
    sleeping_until: u64,
}

struct HostDriver {
    zero: OnceLock<Instant>,
    waiting: Mutex<Waiting>,
    wake_thread: Condvar,
    thread: Once,
}

impl HostDriver {
    fn ticks(&self) -> u64 {
        let zero = *self.zero.get_or_init(Instant::now);
        // 1 MHz: u64 microseconds last 584,000 years.
        u64::try_from(zero.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A waker that panicked while the lock was held leaves consistent data behind.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread that wakes tasks when their moment comes. Wakers are called with the
    /// lock released: a waker may schedule again.
    fn run(&self) {
        let mut due = Vec::new();
        let mut waiting = self.lock();
        loop {
            let now = self.ticks();
            waiting.queue.take_due(now, &mut due);
            if !due.is_empty() {
                drop(waiting);
                due.drain(..).for_each(Waker::wake);
                waiting = self.lock();
                continue;
            }
            match waiting.queue.next_deadline() {
                Some(at) => {
                    waiting.sleeping_until = at;
                    let wait = Duration::from_micros(at.saturating_sub(now));
                    waiting = self
                        .wake_thread
                        .wait_timeout(waiting, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    waiting.sleeping_until = u64::MAX;
                    waiting = self
                        .wake_thread
                        .wait(waiting)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

impl embassy_time_driver::Driver for HostDriver {
    fn now(&self) -> u64 {
        self.ticks()
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        self.thread.call_once(|| {
            std::thread::Builder::new()
                .name("embassy-time".into())
                .spawn(|| DRIVER.run())
                .expect("embassy-time: cannot start the timer thread");
        });
        let mut waiting = self.lock();
        waiting.queue.schedule(at, waker);
        // Only a deadline before the one the thread sleeps until needs it awake.
        if at < waiting.sleeping_until {
            waiting.sleeping_until = at;
            drop(waiting);
            self.wake_thread.notify_one();
        }
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: HostDriver = HostDriver {
    zero: OnceLock::new(),
    waiting: Mutex::new(Waiting {
        queue: TimerQueue {
            order: BinaryHeap::new(),
            waiting: BTreeMap::new(),
        },
        sleeping_until: u64::MAX,
    }),
    wake_thread: Condvar::new(),
    thread: Once::new(),
});

#[cfg(test)]
mod tests;
