//! The agent: the live state of every credential, served over a permission-checked Unix
//! socket, kept current by watchers and an expiry scheduler. `keyferry agent` runs it
//! headless; the tray embeds the same [`Agent`].

mod approval;
mod conn;
pub mod peer;
mod server;
mod sinks;
pub mod socket;
mod state;
mod tasks;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::broadcast;

pub use server::{run, serve, AgentError};

use crate::audit::Audit;
use crate::broker::Broker;
use crate::config::{AgentConfig, Config};
use crate::credential::rfc3339;
use crate::expiry::Thresholds;
use crate::policy::Policy;
use crate::protocol::{Access, Event, Peer};
use approval::Approvals;
use state::State;

/// Shows one notification (summary, body) and says whether it was shown.
pub type Notifier = Arc<dyn Fn(&str, &str) -> crate::notification::Delivery + Send + Sync>;

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
    policy: Policy,
    audit: Audit,
    events: broadcast::Sender<Event>,
    approvals: Approvals,
    state: RwLock<State>,
    /// Expiry thresholds; replaced at run time by the `settings` request.
    thresholds: RwLock<Thresholds>,
    notifications: std::sync::atomic::AtomicBool,
    notify_on_access: std::sync::atomic::AtomicBool,
    started: Instant,
    uid: u32,
    /// Wakes the expiry task when a credential changed.
    changed: tokio::sync::Notify,
    /// Replaces the library's notification sender (the tray sets it).
    notifier: RwLock<Option<Notifier>>,
    /// Re-resolutions since start, reported in `status`.
    resolutions: std::sync::atomic::AtomicU64,
    /// `[[sink]]`s from config.
    sinks: Vec<crate::sink::Target>,
    /// Snapshots registered at run time (persisted in the state directory).
    registered: std::sync::Mutex<Vec<crate::sink::Target>>,
}

impl Agent {
    /// Builds the agent from config; call [`Agent::refresh_all`] before serving.
    #[must_use]
    pub fn new(config: Config) -> Arc<Self> {
        let policy = Policy::new(
            &config.policy,
            &config.path,
            Some(crate::paths::state_dir().join("always-allow.json")),
        );
        let (events, _) = broadcast::channel(1024);
        let cfg = config.agent.clone();
        let sinks = config.sink.iter().filter_map(|s| s.target().ok()).collect();
        Arc::new(Self {
            resolutions: std::sync::atomic::AtomicU64::new(0),
            notifier: RwLock::new(None),
            sinks,
            registered: std::sync::Mutex::new(crate::sink::Registry::load()),
            thresholds: RwLock::new(Thresholds::from_config(&cfg)),
            notifications: std::sync::atomic::AtomicBool::new(cfg.notifications),
            notify_on_access: std::sync::atomic::AtomicBool::new(cfg.notify_on_access),
            broker: Broker::new(config),
            cfg,
            policy,
            audit: Audit::new(Audit::default_path()),
            events,
            approvals: Approvals::default(),
            state: RwLock::new(State::default()),
            started: Instant::now(),
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
        *self
            .notifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(notifier);
    }

    /// The current expiry thresholds.
    #[must_use]
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The settings a client may change.
    #[must_use]
    pub fn settings(&self) -> crate::protocol::Settings {
        use std::sync::atomic::Ordering::Relaxed;
        crate::protocol::Settings {
            notifications: self.notifications.load(Relaxed),
            notify_on_access: self.notify_on_access.load(Relaxed),
            expiry_thresholds: self.thresholds().labels(),
        }
    }

    /// Applies settings now and saves them in config.toml (the window's Settings pane).
    ///
    /// # Errors
    /// A bad threshold or an unwritable config file; nothing changes then.
    pub fn update_settings(
        &self,
        s: &crate::protocol::Settings,
        peer: &Peer,
    ) -> Result<(), crate::ErrorBody> {
        use std::sync::atomic::Ordering::Relaxed;
        crate::config::save_agent_settings(&self.broker.config.path, s)
            .map_err(|e| crate::Error::from(e).body())?;
        let mut cfg = self.cfg.clone();
        cfg.expiry_thresholds.clone_from(&s.expiry_thresholds);
        *self
            .thresholds
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Thresholds::from_config(&cfg);
        self.notifications.store(s.notifications, Relaxed);
        self.notify_on_access.store(s.notify_on_access, Relaxed);
        self.record("settings", None, "saved", None, peer);
        self.changed.notify_one();
        Ok(())
    }

    #[must_use]
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
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
        op: &str,
        credential: Option<&str>,
        outcome: &str,
        code: Option<&str>,
        peer: &Peer,
    ) {
        let access = Access {
            ts: rfc3339(OffsetDateTime::now_utc()).unwrap_or_default(),
            op: op.to_owned(),
            credential: credential.map(str::to_owned),
            outcome: outcome.to_owned(),
            code: code.map(str::to_owned),
            peer: peer.clone(),
        };
        self.audit.record(&access);
        if op == "get"
            && (outcome == "refused"
                || self
                    .notify_on_access
                    .load(std::sync::atomic::Ordering::Relaxed))
        {
            tasks::notify_access(self, &access);
        }
        if credential.is_some() {
            self.write_state().last_access = Some(access.clone());
            self.emit(Event::Access { access });
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    pub fn snapshot(&self) -> BTreeMap<String, crate::protocol::CredentialStatus> {
        let now = OffsetDateTime::now_utc();
        let state = self.read_state();
        state
            .slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.status_at(now, &self.thresholds())))
            .collect()
    }
}
