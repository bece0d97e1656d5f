//! A wake-up for calls that wait for shared state to change (a concurrency slot freed, an
//! environment back in its pool) that costs nothing while nobody waits.
//!
//! `Notify::notify_waiters` counts every call on one word, which every core then writes: a
//! wake-up sent at the end of each invocation passed that line from core to core on every
//! call, though calls seldom wait. Here a waiter counts itself first and the waker notifies
//! only while someone is counted.
//!
//! A waiter takes its [`Waiter`] before its first look at the state, and enables each
//! `notified()` future before looking again; a waker changes the state under the same lock
//! that the waiter looks under, and calls [`Wakeup::wake`] after releasing it. A waker that
//! sees no waiter then changed the state before any waiter's look, which sees the change.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[derive(Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    waiting: AtomicUsize,
}

/// A call counted as waiting, until dropped.
pub(crate) struct Waiter<'a>(&'a Wakeup);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Wakeup {
    /// Counts the caller as waiting until the guard is dropped.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter(self)
    }

    /// Resolves at the next [`Wakeup::wake`] after it is enabled (or first polled).
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Wakes the waiters, if there are any.
    pub fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_change_made_after_its_look() {
        let wakeup = Arc::new(Wakeup::default());
        let state = Arc::new(Mutex::new(false));
        let waiting = {
            let (wakeup, state) = (Arc::clone(&wakeup), Arc::clone(&state));
            tokio::spawn(async move {
                let _waiter = wakeup.waiter();
                loop {
                    let notified = wakeup.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if *state.lock().unwrap() {
                        return;
                    }
                    notified.await;
                }
            })
        };
        // The change comes once the waiter has counted itself (and so looked, or will).
        while wakeup.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        *state.lock().unwrap() = true;
        wakeup.wake();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter saw the change")
            .unwrap();
        assert_eq!(
            wakeup.waiting.load(Ordering::SeqCst),
            0,
            "no longer counted"
        );
    }

    #[test]
    fn a_wake_without_waiters_leaves_nothing_behind() {
        let wakeup = Wakeup::default();
        wakeup.wake();
        let _waiter = wakeup.waiter();
        let notified = wakeup.notified();
        tokio::pin!(notified);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(notified.as_mut().poll(&mut cx).is_pending());
        wakeup.wake();
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }
}
