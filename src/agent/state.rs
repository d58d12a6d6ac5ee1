//! The agent's state: one slot per credential (status, served token), the lock, and how a
//! re-resolution is applied. Every resolution takes a generation number before it reads the
//! sources, and only a result newer than the one in the slot is applied, so a slow, older
//! resolution can never overwrite a newer token or rewrite sinks with a stale one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use super::approval::ConnId;
use super::lock::Lock;
use super::Agent;
use crate::credential::{fingerprint, rfc3339};
use crate::domain::{CredentialStatus, ErrorCode, Health};
use crate::expiry::Thresholds;
use crate::protocol::{Event, Status, Token, WireSecret};

#[derive(Default)]
pub(super) struct State {
    pub slots: BTreeMap<String, Slot>,
    /// The last generation handed out per credential.
    issued: BTreeMap<String, u64>,
    pub lock: Option<Lock>,
    pub last_access: Option<crate::domain::Access>,
}

/// What the agent counts since it started, for `status` and to tell connections apart.
pub(super) struct Counters {
    started: Instant,
    /// Re-resolutions since start, reported in `status`.
    resolutions: AtomicU64,
    /// Numbers connections, so approvals can tell them apart.
    connections: AtomicU64,
}

impl Counters {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            resolutions: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    /// The next connection's id; the first is 1.
    pub(super) fn next_connection(&self) -> ConnId {
        ConnId(self.connections.fetch_add(1, Relaxed) + 1)
    }
}

pub(super) struct Slot {
    /// The generation of the resolution this slot holds.
    generation: u64,
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

    fn identity(&self) -> (Option<&str>, Option<&str>, Health, Option<&ErrorCode>) {
        (
            self.status
                .inspection
                .as_ref()
                .map(|i| i.fingerprint.as_str()),
            self.status.source.as_deref(),
            self.status.health,
            self.status.error.as_ref().map(|e| &e.code),
        )
    }

    /// What sinks follow: the token itself and its expiry, not health or warnings.
    fn token_identity(&self) -> Option<(String, Option<OffsetDateTime>)> {
        self.credential
            .as_ref()
            .map(|c| (fingerprint(c.token.expose()), c.expires_at))
    }
}

impl Agent {
    fn resolve_slot(&self, name: &str, generation: u64) -> Slot {
        let now = OffsetDateTime::now_utc();
        let mut result = self.broker.resolve(name);
        if let Ok(found) = &mut result {
            self.logins.use_pending(name, &mut found.resolved);
        }
        let status = crate::report::status_of(name, &result, now, &self.thresholds());
        let Ok(found) = result else {
            return Slot {
                generation,
                status,
                token: None,
                expires_at: None,
                credential: None,
            };
        };
        let c = found.resolved.credential;
        let env_var = self.env_var(name, &c);
        let token = Token {
            name: name.to_owned(),
            source: found.resolved.origin,
            kind: c.kind,
            env_var,
            token: WireSecret(c.token.clone()),
            expires_at: c.expires_at.and_then(rfc3339),
        };
        Slot {
            generation,
            status,
            token: Some(token),
            expires_at: c.expires_at,
            credential: Some(c),
        }
    }

    /// Hands out the next generation for `name`.
    fn next_generation(&self, name: &str) -> u64 {
        let mut state = self.write_state();
        let g = state.issued.entry(name.to_owned()).or_insert(0);
        *g += 1;
        *g
    }

    /// Re-resolves `names` (blocking) and publishes `changed` for those that differ.
    pub fn refresh_blocking(&self, names: &[String]) {
        let mut changed = Vec::new();
        let known = self.names();
        // Only configured credentials get a slot (a failed `store` of a typo must not).
        for name in names.iter().filter(|n| known.contains(n)) {
            self.counters.resolutions.fetch_add(1, Relaxed);
            let generation = self.next_generation(name);
            let slot = self.resolve_slot(name, generation);
            let mut state = self.write_state();
            let old = state.slots.get(name);
            if old.is_some_and(|old| old.generation > generation) {
                // A newer resolution finished first; this one read older sources.
                tracing::debug!(credential = %name, generation, "stale resolution dropped");
                continue;
            }
            let differs = old.map_or(true, |old| old.identity() != slot.identity());
            let moved = slot.token_identity().is_some()
                && old.and_then(Slot::token_identity) != slot.token_identity();
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
        let sinks = self.sinks.statuses();
        let state = self.read_state();
        Status {
            agent: self.hello(),
            locked: state.lock.is_some(),
            uptime_secs: self.counters.started.elapsed().as_secs(),
            credentials,
            last_access: state.last_access.clone(),
            resolutions: self.counters.resolutions.load(Relaxed),
            sinks,
            usage: Vec::new(),
            listeners: self
                .gateway
                .get()
                .map(|g| g.listener_states())
                .unwrap_or_default(),
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
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::super::Role;
    use super::*;
    use crate::broker::Broker;
    use crate::config::Config;
    use crate::secret::Secret;
    use crate::store::{Backend, ItemId, LazyStore, MemoryStore, Stamp, Store, StoreError};

    /// A keychain whose reads can be held at a barrier: the first read parks until the
    /// test releases it, long after a newer read has returned.
    struct SlowStore {
        inner: MemoryStore,
        hold_next: Mutex<Option<(Arc<Barrier>, Arc<Barrier>)>>,
    }

    impl Store for SlowStore {
        fn backend(&self) -> Backend {
            Backend::Memory
        }
        fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
            let value = self.inner.get(id);
            let hold = self.hold_next.lock().unwrap().take();
            if let Some((read, release)) = hold {
                read.wait();
                release.wait();
            }
            value
        }
        fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
            self.inner.set(id, secret)
        }
        fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
            self.inner.delete(id)
        }
        fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
            self.inner.stamp(id)
        }
    }

    #[test]
    fn a_slow_stale_resolution_never_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("config.toml");
        let cfg = Config::parse(
            "[credentials.work]\nsources = [\"keychain:work-token#me\"]\n",
            &cfg_path,
        )
        .unwrap();
        let store = Arc::new(SlowStore {
            inner: MemoryStore::default(),
            hold_next: Mutex::new(None),
        });
        let id = ItemId::new("work-token", "me");
        store
            .set(&id, &Secret::new("sk-ant-api03-OLD".into()))
            .unwrap();
        struct Shared(Arc<SlowStore>);
        impl Store for Shared {
            fn backend(&self) -> Backend {
                Backend::Memory
            }
            fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
                self.0.get(id)
            }
            fn set(&self, id: &ItemId, s: &Secret) -> Result<(), StoreError> {
                self.0.set(id, s)
            }
            fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
                self.0.delete(id)
            }
            fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
                self.0.stamp(id)
            }
        }
        let broker = Broker::with_store(cfg, LazyStore::with(Box::new(Shared(Arc::clone(&store)))))
            .with_env(|_| None);
        let agent = Agent::with_broker(broker, Role::Headless);
        let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        *store.hold_next.lock().unwrap() = Some((Arc::clone(&read), Arc::clone(&release)));
        let slow = {
            let agent = Arc::clone(&agent);
            std::thread::spawn(move || agent.refresh_blocking(&["work".to_owned()]))
        };
        // The slow resolution has read OLD and is parked; the token changes and a newer
        // resolution completes.
        read.wait();
        store
            .set(&id, &Secret::new("sk-ant-api03-NEW".into()))
            .unwrap();
        agent.refresh_blocking(&["work".to_owned()]);
        release.wait();
        slow.join().unwrap();
        let state = agent.read_state();
        let served = state.slots["work"].token.as_ref().unwrap();
        assert_eq!(served.token.0.expose(), "sk-ant-api03-NEW");
    }
}
