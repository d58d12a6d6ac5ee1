//! The agent's state: one slot per credential (status, served token), the lock, and the
//! operations clients call: get, store, clear, lock, unlock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::approval::Outcome;
use super::Agent;
use crate::credential::{fingerprint, rfc3339};
use crate::error::ErrorBody;
use crate::expiry::Thresholds;
use crate::policy::Verdict;
use crate::protocol::{
    ApprovalRequest, CredentialStatus, Decision, Event, Health, Peer, Status, Token, WireSecret,
};
use crate::secret::Secret;

#[derive(Default)]
pub(super) struct State {
    pub slots: BTreeMap<String, Slot>,
    pub lock: Option<LockState>,
    pub last_access: Option<crate::protocol::Access>,
}

pub(super) struct LockState {
    salt: [u8; 16],
    hash: Option<[u8; 32]>,
}

pub(super) struct Slot {
    pub status: CredentialStatus,
    pub token: Option<Token>,
    pub expires_at: Option<OffsetDateTime>,
    /// The credential as resolved, for inspections with a fresh `now`.
    pub credential: Option<crate::credential::Credential>,
}

impl Slot {
    /// Status with countdown and health recomputed for `now`.
    pub fn status_at(&self, now: OffsetDateTime, t: &Thresholds) -> CredentialStatus {
        let mut s = self.status.clone();
        if let Some(c) = &self.credential {
            s.inspection = Some(c.inspect(now));
            s.health = t.health(c.refresh_token.is_some(), c.expires_at, now);
        }
        s
    }

    fn identity(&self) -> (Option<String>, Option<String>, Health, Option<String>) {
        (
            self.status
                .inspection
                .as_ref()
                .map(|i| i.fingerprint.clone()),
            self.status.source.clone(),
            self.status.health,
            self.status.error.as_ref().map(|e| e.code.clone()),
        )
    }
}

fn err(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code: code.to_owned(),
        message: message.into(),
    }
}

fn passphrase_hash(salt: &[u8; 16], pass: &Secret) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(pass.expose().as_bytes());
    h.finalize().into()
}

fn random_salt() -> [u8; 16] {
    use std::io::Read;
    let mut salt = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut salt);
    }
    salt
}

impl Agent {
    fn resolve_slot(&self, name: &str) -> Slot {
        let now = OffsetDateTime::now_utc();
        let result = self.broker.resolve(name);
        let status = crate::report::status_of(name, &result, now, &self.thresholds());
        let Ok(found) = result else {
            return Slot {
                status,
                token: None,
                expires_at: None,
                credential: None,
            };
        };
        let c = found.resolved.credential;
        let env_var = self
            .broker
            .spec(name)
            .ok()
            .and_then(|s| s.env_var)
            .unwrap_or_else(|| c.kind.env_var().to_owned());
        let token = Token {
            name: name.to_owned(),
            source: found.resolved.origin,
            kind: c.kind,
            env_var,
            token: WireSecret(c.token.clone()),
            expires_at: c.expires_at.and_then(rfc3339),
        };
        Slot {
            status,
            token: Some(token),
            expires_at: c.expires_at,
            credential: Some(c),
        }
    }

    /// Re-resolves `names` (blocking) and publishes `changed` for those that differ.
    pub fn refresh_blocking(&self, names: &[String]) {
        let mut changed = Vec::new();
        let known = self.names();
        // Only configured credentials get a slot (a failed `store` of a typo must not).
        for name in names.iter().filter(|n| known.contains(n)) {
            self.resolutions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let slot = self.resolve_slot(name);
            let mut state = self.write_state();
            let old = state.slots.get(name);
            let differs = old.map_or(true, |old| old.identity() != slot.identity());
            // Sinks follow the token itself (and its expiry), not health or warnings.
            let token_of = |s: &Slot| {
                s.credential
                    .as_ref()
                    .map(|c| (fingerprint(c.token.expose()), c.expires_at))
            };
            let moved = token_of(&slot).is_some() && old.and_then(token_of) != token_of(&slot);
            let for_sinks = if moved { slot.credential.clone() } else { None };
            if differs {
                tracing::info!(credential = %name, source = ?slot.status.source, health = ?slot.status.health, "credential changed");
                changed.push(slot.status.clone());
            }
            state.slots.insert(name.clone(), slot);
            drop(state);
            if let Some(c) = for_sinks {
                self.write_sinks(name, &c);
            }
        }
        for status in changed {
            self.emit(Event::Changed { status });
        }
        self.changed.notify_one();
    }

    /// Re-resolves off the async reactor.
    pub async fn refresh(self: &Arc<Self>, names: Vec<String>) {
        let agent = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || agent.refresh_blocking(&names)).await;
    }

    #[must_use]
    pub fn status(&self) -> Status {
        let credentials = self.snapshot().into_values().collect();
        let state = self.read_state();
        Status {
            agent: self.hello(),
            locked: state.lock.is_some(),
            uptime_secs: self.started.elapsed().as_secs(),
            credentials,
            last_access: state.last_access.clone(),
            resolutions: self.resolutions.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    #[must_use]
    pub fn hello(&self) -> crate::protocol::Hello {
        crate::protocol::Hello {
            version: crate::protocol::VERSION,
            agent: format!("keyferry/{}", env!("CARGO_PKG_VERSION")),
            pid: std::process::id(),
        }
    }

    /// Serves a token after the lock, policy and (for `ask`) an approver have agreed.
    pub async fn get(&self, name: &str, peer: &Peer) -> Result<Token, ErrorBody> {
        let result = self.get_inner(name, peer).await;
        match &result {
            Ok(_) => self.record("get", Some(name), "allowed", None, peer),
            Err(e) => self.record("get", Some(name), "refused", Some(&e.code), peer),
        }
        result
    }

    async fn get_inner(&self, name: &str, peer: &Peer) -> Result<Token, ErrorBody> {
        self.may_read(name, peer).await?;
        let state = self.read_state();
        let Some(slot) = state.slots.get(name) else {
            return Err(err(
                "unknown_credential",
                format!(
                    "no credential named {name:?} (configured: {})",
                    self.names().join(", ")
                ),
            ));
        };
        match (&slot.token, &slot.status.error) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(err("not_found", format!("no token found for {name:?}"))),
        }
    }

    async fn ask(&self, name: &str, peer: &Peer) -> Result<(), ErrorBody> {
        let (id, rx) = self.approvals.open(peer.pid);
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
                "denied",
                format!("access to {name:?} was denied by the approver"),
            )),
            Outcome::Abandoned => Err(err(
                "denied",
                format!("access to {name:?} was denied: the approver went away before answering"),
            )),
            Outcome::TimedOut => Err(err(
                "approval_timeout",
                format!(
                    "nobody answered the approval request for {name:?} within {} s; denied",
                    timeout.as_secs()
                ),
            )),
        }
    }

    /// Checks the lock and the policy for reading `name` (a `get`, or a snapshot that
    /// writes the token to a file), asking an approver under `ask`.
    pub(super) async fn may_read(&self, name: &str, peer: &Peer) -> Result<(), ErrorBody> {
        if self.read_state().lock.is_some() {
            return Err(err(
                "agent_locked",
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
            Verdict::Ask => self.ask(name, peer).await,
        }
    }

    /// Answers an approval request from the in-process tray.
    pub fn approve(&self, request: u64, decision: Decision) -> bool {
        self.approvals.answer(request, decision, None)
    }

    /// Answers an approval request from an approver connection `by` (never its own).
    pub(super) fn approve_from(&self, request: u64, decision: Decision, by: &Peer) -> bool {
        self.approvals.answer(request, decision, by.pid)
    }

    /// Stores a token through the agent (`keyferry setup` while it runs).
    pub async fn store(
        self: &Arc<Self>,
        name: &str,
        token: Secret,
        peer: &Peer,
    ) -> Result<CredentialStatus, ErrorBody> {
        let agent = Arc::clone(self);
        let owned = name.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let stored = agent.broker.store_token(&owned, token);
            agent.refresh_blocking(std::slice::from_ref(&owned));
            stored
        })
        .await
        .map_err(|_| err("internal", "the store task failed"))?;
        match result {
            Ok(stored) => {
                self.record("store", Some(name), "stored", None, peer);
                self.emit(Event::Rerolled {
                    name: name.to_owned(),
                    fingerprint: fingerprint(stored.credential.token.expose()),
                });
                let now = OffsetDateTime::now_utc();
                Ok(self
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
                    }))
            }
            Err(e) => {
                self.record("store", Some(name), "failed", Some(e.code()), peer);
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
        .map_err(|_| err("internal", "the clear task failed"))?;
        match result {
            Ok(item) => {
                self.record(
                    "clear",
                    Some(name),
                    if item.is_some() { "cleared" } else { "nothing" },
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
                self.record("clear", Some(name), "failed", Some(e.code()), peer);
                Err(e.body())
            }
        }
    }

    /// Locks serving. Locking again keeps the first lock (and its passphrase): only
    /// `unlock` can change it.
    pub fn lock(&self, passphrase: Option<&Secret>, peer: &Peer) {
        let mut state = self.write_state();
        if state.lock.is_none() {
            let salt = random_salt();
            let hash = passphrase
                .filter(|p| !p.is_empty())
                .map(|p| passphrase_hash(&salt, p));
            state.lock = Some(LockState { salt, hash });
        }
        drop(state);
        self.record("lock", None, "locked", None, peer);
        self.emit(Event::Locked);
    }

    /// # Errors
    /// A wrong passphrase (the agent stays locked).
    pub fn unlock(&self, passphrase: Option<&Secret>, peer: &Peer) -> Result<(), ErrorBody> {
        let mut state = self.write_state();
        let ok = match &state.lock {
            None => true,
            Some(LockState { hash: None, .. }) => true,
            Some(LockState {
                salt,
                hash: Some(h),
            }) => passphrase.is_some_and(|p| {
                let got = passphrase_hash(salt, p);
                got.iter()
                    .zip(h.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }),
        };
        if !ok {
            drop(state);
            self.record("unlock", None, "refused", Some("bad_passphrase"), peer);
            return Err(err(
                "bad_passphrase",
                "wrong passphrase; the agent stays locked",
            ));
        }
        let was_locked = state.lock.take().is_some();
        drop(state);
        self.record("unlock", None, "unlocked", None, peer);
        if was_locked {
            self.emit(Event::Unlocked);
        }
        Ok(())
    }

    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.read_state().lock.is_some()
    }
}
