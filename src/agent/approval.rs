//! Pending `ask`-policy requests, answered by an approver (the tray), denied when the last
//! approver leaves, or timed out. A request remembers the connection that made it, so an
//! approver connection can never answer its own request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::domain::Decision;

/// How a pending request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered(Decision),
    TimedOut,
    /// Every approver went away before answering.
    Abandoned,
}

struct Pending {
    tx: oneshot::Sender<Decision>,
    /// The waiting client's connection: it may not approve itself.
    requester: Option<ConnId>,
}

#[derive(Default)]
pub struct Approvals {
    approvers: AtomicUsize,
    pending: Mutex<HashMap<u64, Pending>>,
}

/// Counts an approver connection for as long as it lives.
pub struct ApproverGuard<'a>(&'a Approvals);

impl Drop for ApproverGuard<'_> {
    fn drop(&mut self) {
        self.0.count(-1);
    }
}

/// One socket connection, numbered by the agent (pids can be shared by parent and child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl Approvals {
    /// Counts one more approver for as long as the guard lives.
    pub fn register(&self) -> ApproverGuard<'_> {
        self.count(1);
        ApproverGuard(self)
    }

    /// Adds or removes registrations (see `Agent::register_approver`). When the last
    /// approver leaves, every pending request is denied at once instead of timing out.
    pub fn count(&self, delta: isize) {
        if delta >= 0 {
            self.approvers
                .fetch_add(delta.unsigned_abs(), Ordering::SeqCst);
        } else if self
            .approvers
            .fetch_sub(delta.unsigned_abs(), Ordering::SeqCst)
            == delta.unsigned_abs()
        {
            self.lock().clear();
        }
    }

    pub fn has_approver(&self) -> bool {
        self.approvers.load(Ordering::SeqCst) > 0
    }

    /// Opens a request for the client `requester`; the caller announces its id, then awaits
    /// [`Approvals::wait`].
    ///
    /// Request ids are random, so a client cannot guess the id of someone else's request.
    ///
    /// # Errors
    /// The OS random generator failed (the request is then refused, never numbered weakly).
    pub fn open(
        &self,
        requester: Option<ConnId>,
    ) -> Result<(u64, oneshot::Receiver<Decision>), crate::random::RandomError> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.lock();
        let mut id = crate::random::json_id()?;
        while pending.contains_key(&id) {
            id = crate::random::json_id()?;
        }
        pending.insert(id, Pending { tx, requester });
        Ok((id, rx))
    }

    /// Gives up a request nobody can answer (its waiter sees `Abandoned`).
    pub fn abandon(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub async fn wait(
        &self,
        id: u64,
        rx: oneshot::Receiver<Decision>,
        timeout: Duration,
    ) -> Outcome {
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(d)) => Outcome::Answered(d),
            Ok(Err(_)) => Outcome::Abandoned,
            Err(_) => Outcome::TimedOut,
        };
        self.lock().remove(&id);
        outcome
    }

    /// Delivers an answer from the approver `by`. Refuses self-approval; false when the
    /// request is unknown, already over, or the requester's own.
    pub fn answer(&self, id: u64, decision: Decision, by: Option<ConnId>) -> bool {
        let mut pending = self.lock();
        if pending
            .get(&id)
            .is_some_and(|p| by.is_some() && p.requester == by)
        {
            return false;
        }
        pending
            .remove(&id)
            .is_some_and(|p| p.tx.send(decision).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_timeouts_self_approval_and_abandonment() {
        let a = Approvals::default();
        let g = a.register();
        let (id, rx) = a.open(Some(ConnId(42))).unwrap();
        assert!(
            !a.answer(id, Decision::AllowOnce, Some(ConnId(42))),
            "a connection may not approve itself"
        );
        assert!(a.answer(id, Decision::AllowOnce, Some(ConnId(7))));
        assert_eq!(
            a.wait(id, rx, Duration::from_secs(1)).await,
            Outcome::Answered(Decision::AllowOnce)
        );
        let (id, rx) = a.open(None).unwrap();
        assert_eq!(
            a.wait(id, rx, Duration::from_millis(10)).await,
            Outcome::TimedOut
        );
        assert!(
            !a.answer(id, Decision::AllowOnce, None),
            "late answers are dropped"
        );
        let (id, rx) = a.open(None).unwrap();
        drop(g);
        assert!(!a.has_approver());
        assert_eq!(
            a.wait(id, rx, Duration::from_secs(5)).await,
            Outcome::Abandoned
        );
    }
}
