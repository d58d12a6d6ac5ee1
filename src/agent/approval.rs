//! Pending `ask`-policy requests, answered by an approver connection (the tray) or timed out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::protocol::Decision;

#[derive(Default)]
pub struct Approvals {
    next: AtomicU64,
    approvers: AtomicUsize,
    pending: Mutex<HashMap<u64, oneshot::Sender<Decision>>>,
}

/// Counts an approver connection for as long as it lives.
pub struct ApproverGuard<'a>(&'a Approvals);

impl Drop for ApproverGuard<'_> {
    fn drop(&mut self) {
        self.0.approvers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Approvals {
    /// Counts one more approver for as long as the guard lives.
    pub fn register(&self) -> ApproverGuard<'_> {
        self.approvers.fetch_add(1, Ordering::SeqCst);
        ApproverGuard(self)
    }

    /// Adds or removes owned registrations (see `Agent::register_approver`).
    pub fn count(&self, delta: isize) {
        if delta >= 0 {
            self.approvers
                .fetch_add(delta.unsigned_abs(), Ordering::SeqCst);
        } else {
            self.approvers
                .fetch_sub(delta.unsigned_abs(), Ordering::SeqCst);
        }
    }

    pub fn has_approver(&self) -> bool {
        self.approvers.load(Ordering::SeqCst) > 0
    }

    /// Opens a request; the caller announces its id, then awaits [`Approvals::wait`].
    pub fn open(&self) -> (u64, oneshot::Receiver<Decision>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Denies on timeout or when every approver went away.
    pub async fn wait(
        &self,
        id: u64,
        rx: oneshot::Receiver<Decision>,
        timeout: Duration,
    ) -> Option<Decision> {
        let decision = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.lock().remove(&id);
        decision
    }

    /// Delivers an answer; false when the request is unknown or already over.
    pub fn answer(&self, id: u64, decision: Decision) -> bool {
        self.lock()
            .remove(&id)
            .is_some_and(|tx| tx.send(decision).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Decision>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answer_reaches_the_waiter_and_timeout_denies() {
        let a = Approvals::default();
        let (id, rx) = a.open();
        assert!(a.answer(id, Decision::AllowOnce));
        assert_eq!(
            a.wait(id, rx, Duration::from_secs(1)).await,
            Some(Decision::AllowOnce)
        );
        let (id, rx) = a.open();
        assert_eq!(a.wait(id, rx, Duration::from_millis(10)).await, None);
        assert!(
            !a.answer(id, Decision::AllowOnce),
            "late answers are dropped"
        );
        assert!(!a.has_approver());
        let g = a.register();
        assert!(a.has_approver());
        drop(g);
        assert!(!a.has_approver());
    }
}
