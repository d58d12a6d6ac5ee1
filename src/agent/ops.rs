//! What clients ask the agent to do: serve a token (after the lock, the policy, an approver
//! and the expiry check agree), store or clear one, lock and unlock, answer approvals.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::approval::{ConnId, Outcome};
use super::lock::Lock;
use super::Agent;
use crate::credential::{fingerprint, human_duration, rfc3339};
use crate::domain::{
    ApprovalRequest, CredentialStatus, Decision, ErrorBody, ErrorCode, Health, Peer, StoreOutcome,
};
use crate::domain::{AuditOutcome, Op};
use crate::policy::Verdict;
use crate::protocol::{Event, Token};
use crate::secret::Secret;

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// The fix for an expired token, by where it came from.
fn renew_hint(name: &str, source: &str) -> String {
    if source.starts_with("claude-login") {
        "run `claude /login` on the host (Claude Code's own login)".to_owned()
    } else {
        format!("run `keyferry reroll {name}`")
    }
}

impl Agent {
    /// Serves a token after the lock, policy and (for `ask`) an approver have agreed.
    /// `conn` is the asking connection (never allowed to approve its own request).
    pub async fn get(
        &self,
        name: &str,
        peer: &Peer,
        conn: Option<ConnId>,
    ) -> Result<Token, ErrorBody> {
        let result = self.get_inner(name, peer, conn).await;
        match &result {
            Ok(_) => self.record(Op::Get, Some(name), AuditOutcome::Allowed, None, peer),
            Err(e) => self.record(
                Op::Get,
                Some(name),
                AuditOutcome::Refused,
                Some(&e.code),
                peer,
            ),
        }
        result
    }

    async fn get_inner(
        &self,
        name: &str,
        peer: &Peer,
        conn: Option<ConnId>,
    ) -> Result<Token, ErrorBody> {
        self.may_read(name, peer, conn).await?;
        let state = self.read_state();
        let Some(slot) = state.slots.get(name) else {
            return Err(self.unknown(name));
        };
        match (&slot.token, &slot.status.error) {
            (Some(t), _) => {
                let now = OffsetDateTime::now_utc();
                if let Some(at) = slot.expires_at.filter(|at| *at <= now) {
                    // Served, it would only fail inside the sandbox as a confusing 401.
                    return Err(err(
                        ErrorCode::Expired,
                        format!(
                            "the {name} token from {} expired {} ago (at {}); {}",
                            t.source,
                            human_duration((now - at).whole_seconds()),
                            rfc3339(at).unwrap_or_default(),
                            renew_hint(name, &t.source)
                        ),
                    ));
                }
                Ok(t.clone())
            }
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(err(
                ErrorCode::NotFound,
                format!("no token found for {name:?}"),
            )),
        }
    }

    pub(super) fn unknown(&self, name: &str) -> ErrorBody {
        let names = self.names();
        err(
            ErrorCode::UnknownCredential,
            format!(
                "no credential named {name:?}{} (configured: {})",
                crate::suggest::did_you_mean(name, names.iter().map(String::as_str)),
                names.join(", ")
            ),
        )
    }

    async fn ask(&self, name: &str, peer: &Peer, conn: Option<ConnId>) -> Result<(), ErrorBody> {
        let (id, rx) = self
            .approvals
            .open(conn)
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        // The last approver may have left between the policy check and now.
        if !self.approvals.has_approver() {
            self.approvals.abandon(id);
        }
        self.emit(Event::Approval {
            approval: ApprovalRequest {
                request: id,
                credential: name.to_owned(),
                peer: peer.clone(),
                timeout_secs: self.cfg.approval_timeout_secs,
            },
        });
        let timeout = Duration::from_secs(self.cfg.approval_timeout_secs);
        match self.approvals.wait(id, rx, timeout).await {
            Outcome::Answered(Decision::AllowOnce) => Ok(()),
            Outcome::Answered(Decision::AlwaysAllow) => {
                if let Some(exe) = &peer.exe {
                    self.policy.remember(name, exe);
                }
                Ok(())
            }
            Outcome::Answered(Decision::Deny) => Err(err(
                ErrorCode::Denied,
                format!("access to {name:?} was denied by the approver"),
            )),
            Outcome::Abandoned => Err(err(
                ErrorCode::Denied,
                format!("access to {name:?} was denied: the approver went away before answering"),
            )),
            Outcome::TimedOut => Err(err(
                ErrorCode::ApprovalTimeout,
                format!(
                    "nobody answered the approval request for {name:?} within {} s; denied",
                    timeout.as_secs()
                ),
            )),
        }
    }

    /// Checks the lock and the policy for reading `name` (a `get`, or a snapshot that
    /// writes the token to a file), asking an approver under `ask`.
    pub(super) async fn may_read(
        &self,
        name: &str,
        peer: &Peer,
        conn: Option<ConnId>,
    ) -> Result<(), ErrorBody> {
        if self.read_state().lock.is_some() {
            return Err(err(
                ErrorCode::AgentLocked,
                "the agent is locked and serves no tokens; run `keyferry unlock`",
            ));
        }
        let verdict = match self.policy.check(name, peer) {
            Verdict::Ask if !self.approvals.has_approver() => self.policy.no_approver(name, peer),
            v => v,
        };
        match verdict {
            Verdict::Allow => Ok(()),
            Verdict::Deny { code, message } => Err(err(code, message)),
            Verdict::Ask => self.ask(name, peer, conn).await,
        }
    }

    /// Answers an approval request from the in-process tray.
    pub fn approve(&self, request: u64, decision: Decision) -> bool {
        self.approvals.answer(request, decision, None)
    }

    /// Answers an approval request from the approver connection `by` (never its own).
    pub(super) fn approve_from(&self, request: u64, decision: Decision, by: ConnId) -> bool {
        self.approvals.answer(request, decision, Some(by))
    }

    /// Whether `peer` may register as an approver on the socket: never on an embedded agent
    /// (the app answers in-process), and on a headless one only the configured executables.
    pub(super) fn may_approve(&self, peer: &Peer) -> Result<(), ErrorBody> {
        if self.role == super::Role::Embedded {
            return Err(err(
                ErrorCode::ForbiddenOp,
                "approvals are answered in the Keyferry app itself; the socket does not accept approvers",
            ));
        }
        let exe = peer.exe.as_deref().unwrap_or("");
        if !exe.is_empty() && self.approvers.iter().any(|a| a == exe) {
            return Ok(());
        }
        Err(err(
            ErrorCode::NotAnApprover,
            format!(
                "{peer} may not answer approvals: only {} may; list it under [policy] approvers in {}",
                if self.approvers.is_empty() { "the executables listed".to_owned() } else { self.approvers.join(", ") },
                crate::paths::display(&self.broker.config.path)
            ),
        ))
    }

    /// Stores a token through the agent (`keyferry setup` while it runs).
    pub async fn store(
        self: &Arc<Self>,
        name: &str,
        token: Secret,
        peer: &Peer,
    ) -> Result<StoreOutcome, ErrorBody> {
        let agent = Arc::clone(self);
        let owned = name.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let stored = agent.broker.store_token(&owned, token);
            agent.refresh_blocking(std::slice::from_ref(&owned));
            stored
        })
        .await
        .map_err(|_| err(ErrorCode::Internal, "the store task failed"))?;
        match result {
            Ok(stored) => {
                self.record(
                    Op::Store,
                    Some(name),
                    AuditOutcome::done("stored"),
                    None,
                    peer,
                );
                self.emit(Event::Rerolled {
                    name: name.to_owned(),
                    fingerprint: fingerprint(stored.credential.token.expose()),
                });
                let now = OffsetDateTime::now_utc();
                let status = self
                    .read_state()
                    .slots
                    .get(name)
                    .map(|s| s.status_at(now, &self.thresholds()))
                    .unwrap_or_else(|| CredentialStatus {
                        name: name.to_owned(),
                        health: Health::Ok,
                        source: None,
                        inspection: Some(stored.credential.inspect(now)),
                        error: None,
                        warnings: Vec::new(),
                    });
                Ok(StoreOutcome {
                    status,
                    previous: stored.previous,
                })
            }
            Err(e) => {
                self.record(
                    Op::Store,
                    Some(name),
                    AuditOutcome::Failed,
                    Some(&e.code()),
                    peer,
                );
                Err(e.body())
            }
        }
    }

    /// Removes the stored token.
    pub async fn clear(self: &Arc<Self>, name: &str, peer: &Peer) -> Result<bool, ErrorBody> {
        let agent = Arc::clone(self);
        let owned = name.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let cleared = agent.broker.clear(&owned);
            agent.refresh_blocking(std::slice::from_ref(&owned));
            cleared
        })
        .await
        .map_err(|_| err(ErrorCode::Internal, "the clear task failed"))?;
        match result {
            Ok(item) => {
                let outcome = if item.is_some() { "cleared" } else { "nothing" };
                self.record(
                    Op::Clear,
                    Some(name),
                    AuditOutcome::done(outcome),
                    None,
                    peer,
                );
                if item.is_some() {
                    self.emit(Event::Cleared {
                        name: name.to_owned(),
                    });
                }
                Ok(item.is_some())
            }
            Err(e) => {
                self.record(
                    Op::Clear,
                    Some(name),
                    AuditOutcome::Failed,
                    Some(&e.code()),
                    peer,
                );
                Err(e.body())
            }
        }
    }

    /// Locks serving. Locking again keeps the first lock (and its passphrase): only
    /// `unlock` can change it.
    pub async fn lock(&self, passphrase: Option<Secret>, peer: &Peer) {
        if self.read_state().lock.is_none() {
            let lock = tokio::task::spawn_blocking(move || Lock::new(passphrase.as_ref()))
                .await
                .unwrap_or(Lock::Sealed);
            let mut state = self.write_state();
            if state.lock.is_none() {
                state.lock = Some(lock);
            }
        }
        self.record(Op::Lock, None, AuditOutcome::done("locked"), None, peer);
        self.emit(Event::Locked);
    }

    /// Unlocks when the passphrase matches. Guesses are heard one at a time, each after the
    /// delay the previous wrong guesses earned.
    ///
    /// # Errors
    /// A wrong passphrase (the agent stays locked).
    pub async fn unlock(&self, passphrase: Option<Secret>, peer: &Peer) -> Result<(), ErrorBody> {
        let mut throttle = self.throttle.lock().await;
        if let Some(at) = throttle.ready_at() {
            tokio::time::sleep_until(at).await;
        }
        // Copy the (non-secret) salt and hash out, then run the KDF off the reactor without
        // holding the state lock.
        let lock = match &self.read_state().lock {
            None => None,
            Some(Lock::Open) => Some(Lock::Open),
            Some(Lock::Sealed) => Some(Lock::Sealed),
            Some(Lock::Passphrase { salt, hash }) => Some(Lock::Passphrase {
                salt: *salt,
                hash: *hash,
            }),
        };
        // A missing passphrase is not a guess: the CLI tries without one first.
        if passphrase.is_none() && matches!(lock, Some(Lock::Passphrase { .. })) {
            return Err(err(
                ErrorCode::BadPassphrase,
                "this lock has a passphrase; repeat it to unlock",
            ));
        }
        let candidate = match lock {
            None => None,
            Some(lock) => Some(
                tokio::task::spawn_blocking(move || lock.opens(passphrase.as_ref()))
                    .await
                    .unwrap_or(false),
            ),
        };
        if candidate == Some(false) {
            let wait = throttle.failed();
            self.record(
                Op::Unlock,
                None,
                AuditOutcome::Refused,
                Some(&ErrorCode::BadPassphrase),
                peer,
            );
            return Err(err(
                ErrorCode::BadPassphrase,
                format!(
                    "wrong passphrase; the agent stays locked ({} wrong so far; the next guess is heard in {} ms)",
                    throttle.failures(),
                    wait.as_millis()
                ),
            ));
        }
        throttle.reset();
        let was_locked = self.write_state().lock.take().is_some();
        self.record(Op::Unlock, None, AuditOutcome::done("unlocked"), None, peer);
        if was_locked {
            self.emit(Event::Unlocked);
        }
        Ok(())
    }
}
