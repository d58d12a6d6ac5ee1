//! The agent: the live state of every credential, served over a permission-checked Unix
//! socket, kept current by watchers and an expiry scheduler. `keyferry agent` runs it
//! headless; the tray embeds the same [`Agent`] through the same [`start`].

mod approval;
mod conn;
mod dispatch;
mod expiry;
mod gateway;
mod lock;
mod ops;
pub mod peer;
mod refresh;
mod server;
mod sinks;
pub mod socket;
mod state;
mod usage;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use time::OffsetDateTime;
use tokio::sync::broadcast;

pub use server::{run, serve, start, AgentError, Running};

use crate::audit::Audit;
use crate::broker::Broker;
use crate::config::{AgentConfig, Config};
use crate::credential::rfc3339;
use crate::domain::{Access, CredentialStatus, ErrorCode, Peer};
use crate::domain::{AuditOutcome, Op};
use crate::expiry::Thresholds;
use crate::policy::Policy;
use crate::protocol::Event;
use approval::Approvals;
use expiry::Alerts;
use refresh::Logins;
use sinks::Sinks;
use state::{Counters, State};

/// Shows one notification (summary, body) and says whether it was shown.
pub type Notifier = Arc<dyn Fn(&str, &str) -> crate::notification::Delivery + Send + Sync>;

/// Who answers `ask`-policy approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `keyferry agent`: approver connections from the executables in `[policy] approvers`.
    Headless,
    /// Inside the tray app: approvals are answered in-process and the socket refuses
    /// `approvals`, so no other process of the user can answer them.
    Embedded,
}

/// What a socket serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The agent's own socket: everything.
    Full,
    /// The restricted socket (`[agent] restricted_socket`), made to be forwarded to remote
    /// machines: `hello`, and `status`/`get` of the `allowed` credentials; every answer is
    /// audited as remote.
    Restricted { allowed: Vec<String> },
}

/// Keeps an in-process approver registered until dropped.
pub struct ApproverHandle(Arc<Agent>);

impl Drop for ApproverHandle {
    fn drop(&mut self) {
        self.0.approvals.count(-1);
    }
}

pub struct Agent {
    broker: Broker,
    cfg: AgentConfig,
    role: Role,
    policy: Policy,
    /// Canonical paths of executables that may register as approvers (headless only).
    approvers: Vec<String>,
    audit: Audit,
    events: broadcast::Sender<Event>,
    approvals: Approvals,
    state: RwLock<State>,
    /// Wrong unlock guesses; an async lock so guesses are heard one at a time.
    throttle: tokio::sync::Mutex<lock::Throttle>,
    /// Thresholds and notification settings, changed at run time.
    alerts: Alerts,
    /// Uptime, re-resolutions and connection numbers.
    counters: Counters,
    uid: u32,
    /// Wakes the expiry task when a credential changed.
    changed: tokio::sync::Notify,
    /// The files kept current with each credential, and how each write last went.
    sinks: Sinks,
    /// The refresher of the CLIs' logins and its pending write-backs.
    logins: Logins,
    /// The gateway, once [`start`] has set it up.
    gateway: std::sync::OnceLock<Arc<gateway::AgentGateway>>,
}

impl Agent {
    /// Builds the agent from config; call [`Agent::refresh_all`] before serving.
    #[must_use]
    pub fn new(config: Config, role: Role) -> Arc<Self> {
        let broker = Broker::new(config);
        Self::with_broker(broker, role)
    }

    /// Builds the agent around a broker (tests give it an in-memory store).
    #[must_use]
    pub fn with_broker(broker: Broker, role: Role) -> Arc<Self> {
        let config = &broker.config;
        let policy = Policy::new(
            &config.policy.credentials,
            &config.policy.sandboxed_peers,
            &config.path,
            Some(crate::paths::state_dir().join("always-allow.json")),
        );
        let (events, _) = broadcast::channel(1024);
        let cfg = config.agent.clone();
        Arc::new(Self {
            approvers: config.policy.approvers(),
            sinks: Sinks::new(
                config.sinks.clone(),
                config.path.clone(),
                crate::sink::Registry::load(),
            ),
            counters: Counters::new(),
            gateway: std::sync::OnceLock::new(),
            logins: Logins::default(),
            alerts: Alerts::new(&cfg),
            throttle: tokio::sync::Mutex::new(lock::Throttle::default()),
            broker,
            cfg,
            role,
            policy,
            audit: Audit::new(Audit::default_path()),
            events,
            approvals: Approvals::default(),
            state: RwLock::new(State::default()),
            uid: crate::paths::current_uid(),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Registers an in-process approver (the tray): while the handle lives, `ask`-policy
    /// requests wait for [`Agent::approve`] instead of being refused.
    #[must_use]
    pub fn register_approver(self: &Arc<Self>) -> ApproverHandle {
        self.approvals.count(1);
        ApproverHandle(Arc::clone(self))
    }

    /// Routes desktop notifications through `notifier` (the tray's own plugin, so they
    /// carry the app's identity) instead of the library's D-Bus/osascript sender.
    pub fn set_notifier(&self, notifier: Notifier) {
        self.alerts.set_notifier(notifier);
    }

    /// The current expiry thresholds.
    #[must_use]
    pub fn thresholds(&self) -> Thresholds {
        self.alerts.thresholds()
    }

    /// The settings a client may change.
    #[must_use]
    pub fn settings(&self) -> crate::domain::Settings {
        self.alerts.settings()
    }

    /// Applies settings now and saves them in config.toml (the window's Settings pane).
    ///
    /// # Errors
    /// A bad threshold or an unwritable config file; nothing changes then.
    pub fn update_settings(
        &self,
        s: &crate::domain::Settings,
        peer: &Peer,
    ) -> Result<(), crate::domain::ErrorBody> {
        let thresholds = crate::expiry::Levels::parse(&s.expiry_thresholds)
            .map(|l| Thresholds::new(&l, self.cfg.oauth_grace_mins))
            .map_err(|m| crate::domain::ErrorBody::new(ErrorCode::Invalid, m))?;
        crate::config::save_agent_settings(&self.broker.config.path, s)
            .map_err(|e| crate::Error::from(e).body())?;
        self.alerts.apply(thresholds, s);
        self.record(Op::Settings, None, AuditOutcome::done("saved"), None, peer);
        self.changed.notify_one();
        Ok(())
    }

    #[must_use]
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// A receiver of every event (the tray subscribes in-process).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    /// Audits a request and publishes it as an access event.
    fn record(
        &self,
        op: Op,
        credential: Option<&str>,
        outcome: AuditOutcome,
        code: Option<&ErrorCode>,
        peer: &Peer,
    ) {
        let refused = outcome == AuditOutcome::Refused;
        let access = self.audit_only(op, credential, outcome, code, peer);
        if op == Op::Get && (refused || self.alerts.on_access()) {
            expiry::notify_access(self, &access);
        }
        if credential.is_some() {
            self.write_state().last_access = Some(access.clone());
            self.emit(Event::Access { access });
        }
    }

    /// Writes the audit entry only: no access event, no "last access" (for background
    /// lookups such as usage figures, which hand out no token).
    fn audit_only(
        &self,
        op: Op,
        credential: Option<&str>,
        outcome: AuditOutcome,
        code: Option<&ErrorCode>,
        peer: &Peer,
    ) -> Access {
        let access = Access {
            ts: rfc3339(OffsetDateTime::now_utc()).unwrap_or_default(),
            op,
            credential: credential.map(str::to_owned),
            outcome,
            code: code.cloned(),
            peer: peer.clone(),
        };
        self.audit.record(&access);
        access
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Names of all credentials.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.broker.config.names()
    }

    /// Re-resolves every credential (blocking: keychain calls).
    pub fn refresh_all(&self) {
        self.refresh_blocking(&self.names());
    }

    /// For `status` and the tray's menu: every credential, with fresh countdowns.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, CredentialStatus> {
        let now = OffsetDateTime::now_utc();
        let thresholds = self.thresholds();
        let state = self.read_state();
        state
            .slots
            .iter()
            .map(|(name, slot)| {
                let mut s = slot.status_at(now, &thresholds);
                let refresh = self.logins.refresher().and_then(|r| r.status(name));
                match refresh {
                    Some(r) if r.needs_login => {
                        s.health = crate::domain::Health::Error;
                        s.error = Some(crate::domain::ErrorBody::new(
                            ErrorCode::NeedsLogin,
                            format!(
                                "the refresh token was refused{}; {}",
                                r.last_error.map(|e| format!(" ({e})")).unwrap_or_default(),
                                r.relogin_hint
                            ),
                        ));
                    }
                    // The refresh revoked the access token the source still holds: shown
                    // as broken until the write-back (retried on its backoff) succeeds.
                    Some(r) if r.pending_writeback => {
                        s.health = crate::domain::Health::Error;
                        s.error = Some(crate::domain::ErrorBody::new(
                            ErrorCode::WriteFailed,
                            r.last_error.unwrap_or_else(|| {
                                "the refreshed login is not written back yet (kept in the \
                                 keychain, retried)"
                                    .to_owned()
                            }),
                        ));
                    }
                    _ => {}
                }
                (name.clone(), s)
            })
            .collect()
    }
}

/// Locks `m`, poisoned or not: a panic in one request must not wedge every later one.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
