//! Expiry warnings and desktop notifications: each due warning fires once per token, and
//! every notification also reaches subscribers as a `notified` event (the tray's fallback).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Agent, Notifier};
use crate::config::AgentConfig;
use crate::credential::{human_duration, rfc3339};
use crate::domain::Settings;
use crate::expiry::{Due, Thresholds};
use crate::notification::{self, Delivery};
use crate::protocol::Event;

/// When the agent warns and how: the settings a client may change at run time (the
/// `settings` request), and who shows a notification (the tray sets its own).
pub(super) struct Alerts {
    /// Expiry thresholds; replaced at run time by the `settings` request.
    thresholds: RwLock<Thresholds>,
    notifications: AtomicBool,
    notify_on_access: AtomicBool,
    /// Replaces the library's notification sender (the tray sets it).
    notifier: RwLock<Option<Notifier>>,
}

impl Alerts {
    /// As config.toml's `[agent]` says, with the library's own sender.
    pub(super) fn new(cfg: &AgentConfig) -> Self {
        Self {
            thresholds: RwLock::new(cfg.thresholds()),
            notifications: AtomicBool::new(cfg.notifications),
            notify_on_access: AtomicBool::new(cfg.notify_on_access),
            notifier: RwLock::new(None),
        }
    }

    pub(super) fn thresholds(&self) -> Thresholds {
        self.thresholds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn settings(&self) -> Settings {
        Settings {
            notifications: self.notifications.load(Relaxed),
            notify_on_access: self.notify_on_access.load(Relaxed),
            expiry_thresholds: self.thresholds().labels(),
        }
    }

    /// Takes `s` (whose thresholds the caller parsed into `thresholds`) from now on.
    pub(super) fn apply(&self, thresholds: Thresholds, s: &Settings) {
        *self
            .thresholds
            .write()
            .unwrap_or_else(PoisonError::into_inner) = thresholds;
        self.notifications.store(s.notifications, Relaxed);
        self.notify_on_access.store(s.notify_on_access, Relaxed);
    }

    pub(super) fn set_notifier(&self, notifier: Notifier) {
        *self
            .notifier
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(notifier);
    }

    /// Whether every `get` is notified, not only the refused ones.
    pub(super) fn on_access(&self) -> bool {
        self.notify_on_access.load(Relaxed)
    }
}

pub(super) fn notify_now(agent: &Agent, summary: String, body: String) {
    if !agent.alerts.notifications.load(Relaxed) {
        return;
    }
    let notifier = agent
        .alerts
        .notifier
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let events = agent.events.clone();
    tokio::task::spawn_blocking(move || {
        let delivery = match notifier {
            Some(n) => n(&summary, &body),
            None => notification::send(&summary, &body),
        };
        match &delivery {
            Delivery::Shown => tracing::debug!(%summary, "notification shown"),
            Delivery::NoService => {
                tracing::info!(%summary, %body, "no desktop notification service; logged only")
            }
            Delivery::Failed(e) => tracing::warn!(%summary, error = %e, "notification failed"),
        }
        // Subscribers (the tray) fall back to a visible line when nothing was shown.
        let _ = events.send(Event::Notified {
            summary,
            body,
            shown: delivery == Delivery::Shown,
        });
    });
}

/// What has fired: (credential, token fingerprint or login end, threshold).
type Fired = HashSet<(String, String, String)>;

/// Fires each due warning once per token, sleeping until the next threshold or a change.
pub(super) async fn expiry(agent: Arc<Agent>) {
    let mut fired = Fired::new();
    loop {
        let now = OffsetDateTime::now_utc();
        let next = tick(&agent, now, &mut fired);
        let sleep = next
            .map(|t| Duration::from_secs_f64((t - now).as_seconds_f64().clamp(0.05, 3600.0)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = agent.changed.notified() => {}
        }
    }
}

/// One look at every token and login at `now` (the clock is the caller's, so timing is
/// tested without waiting): fires what is due and not yet fired, and says when to look
/// again.
fn tick(agent: &Agent, now: OffsetDateTime, fired: &mut Fired) -> Option<OffsetDateTime> {
    let mut next: Option<OffsetDateTime> = None;
    let mut wake = |t: OffsetDateTime| next = Some(next.map_or(t, |n: OffsetDateTime| n.min(t)));
    let thresholds = agent.thresholds();
    let (tokens, logins) = {
        let state = agent.read_state();
        let mut tokens = Vec::new();
        let mut logins = Vec::new();
        for (name, slot) in &state.slots {
            let Some(c) = slot.credential.as_ref() else {
                continue;
            };
            let (refreshes, at) = (c.refresh_token.is_some(), slot.expires_at);
            if let Some(t) = thresholds.next_change(refreshes, at, now) {
                wake(t);
            }
            if let (Some(fp), Some(d)) = (
                slot.status
                    .inspection
                    .as_ref()
                    .map(|i| i.fingerprint.clone()),
                thresholds.due(refreshes, at, now),
            ) {
                tokens.push((name.clone(), fp, d, at));
            }
            // The refresh token's own expiry (a login that will end): only a new login helps.
            if let Some(end) = c.refresh_expires_at() {
                if let Some(t) = thresholds.next_change(false, Some(end), now) {
                    wake(t);
                }
                if let Some(d) = thresholds.due(false, Some(end), now) {
                    let fp = format!("login:{}", rfc3339(end).unwrap_or_default());
                    logins.push((name.clone(), fp, d, end));
                }
            }
        }
        (tokens, logins)
    };
    for (name, fp, due, at) in logins {
        if fired.insert((name.clone(), fp, due.key().to_owned())) {
            login_ends(agent, &name, &due, at);
        }
    }
    for (name, fp, due, at) in tokens {
        if fired.insert((name.clone(), fp, due.key().to_owned())) {
            token_expires(agent, &name, &due, at, now, &thresholds);
        }
    }
    next
}

/// A login's refresh token ends at `at`: warned once per threshold.
fn login_ends(agent: &Agent, name: &str, due: &Due, at: OffsetDateTime) {
    let at_text = rfc3339(at).unwrap_or_default();
    let (summary, left, label) = match due {
        Due::Expiring { label, left } => (
            format!("{name} login ends in {left}"),
            left.clone(),
            format!("login {label}"),
        ),
        Due::Expired => (
            format!("{name} login has ended"),
            "0 s".to_owned(),
            "login expired".to_owned(),
        ),
    };
    tracing::warn!(credential = %name, ends_at = %at_text, "the login's refresh token expires");
    notify_now(agent, summary, format!(
        "Claude Code's login for {name} (its refresh token) ends at {at_text}. Run `claude /login` on this machine before then; Keyferry picks the new login up by itself."
    ));
    agent.emit(Event::Expiring {
        name: name.to_owned(),
        expires_at: at_text,
        expires_in: left,
        threshold: label,
    });
}

/// A token expires (or expired) at `at`: warned once per threshold, its status re-sent.
fn token_expires(
    agent: &Agent,
    name: &str,
    due: &Due,
    at: Option<OffsetDateTime>,
    now: OffsetDateTime,
    thresholds: &crate::expiry::Thresholds,
) {
    let at_text = at.and_then(rfc3339).unwrap_or_default();
    match due {
        Due::Expiring { label, left } => {
            tracing::warn!(credential = %name, expires_at = %at_text, left = %left, "token expires soon");
            notify_now(
                agent,
                format!("{name} token expires in {left}"),
                format!("The {name} token expires at {at_text}. Reroll it: keyferry reroll {name}"),
            );
            agent.emit(Event::Expiring {
                name: name.to_owned(),
                expires_at: at_text,
                expires_in: left.clone(),
                threshold: label.clone(),
            });
        }
        Due::Expired => {
            let ago = at
                .map(|a| human_duration((now - a).whole_seconds()))
                .unwrap_or_default();
            tracing::warn!(credential = %name, expires_at = %at_text, "token expired");
            notify_now(
                agent,
                format!("{name} token expired {ago} ago"),
                format!("The {name} token expired at {at_text}. Sandboxes using it will fail. Reroll it: keyferry reroll {name}"),
            );
            agent.emit(Event::Expired {
                name: name.to_owned(),
                expires_at: at_text,
            });
        }
    }
    let status = agent
        .read_state()
        .slots
        .get(name)
        .map(|s| s.status_at(now, thresholds));
    if let Some(status) = status {
        agent.emit(Event::Changed { status });
    }
}

/// A notification about one access: every refusal, and every served token when configured.
/// Called inline by the agent, so a served `get` wakes no other task.
pub(super) fn notify_access(agent: &Agent, access: &crate::domain::Access) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let who = access
        .peer
        .exe
        .clone()
        .unwrap_or_else(|| "a process".into());
    let cred = access.credential.clone().unwrap_or_default();
    if access.outcome == crate::domain::AuditOutcome::Refused {
        let why = access
            .code
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        notify_now(
            agent,
            format!("Refused {cred} to {who}"),
            format!("{}: {why}", access.peer),
        );
    } else {
        notify_now(agent, format!("{who} read {cred}"), access.peer.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::config::Config;
    use crate::secret::Secret;
    use crate::store::{ItemId, LazyStore, MemoryStore, Store};

    /// An agent whose one credential, an OAuth login without a refresh token, expires at
    /// `at`; notifications off (the events are what is checked).
    fn agent_expiring_at(at: OffsetDateTime) -> Arc<Agent> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            "[agent]\nnotifications = false\n[credentials.work]\nsources = [\"keychain:work-token#me\"]\n",
            &dir.path().join("config.toml"),
        )
        .unwrap();
        let store = MemoryStore::default();
        let doc = format!(
            r#"{{"claudeAiOauth":{{"accessToken":"sk-ant-oat01-EXPIRYtickAAAAbbbb-0001","expiresAt":{},"scopes":["user:inference"]}}}}"#,
            at.unix_timestamp() * 1000
        );
        store
            .set(&ItemId::new("work-token", "me"), &Secret::new(doc))
            .unwrap();
        let broker = Broker::with_store(cfg, LazyStore::with(Box::new(store))).with_env(|_| None);
        let agent = Agent::with_broker(broker, super::super::Role::Headless);
        agent.refresh_blocking(&["work".to_owned()]);
        agent
    }

    /// The warnings `tick` fired for `work` since the last call: (kind, threshold).
    fn fired_events(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Expiring {
                    name, threshold, ..
                } if name == "work" => {
                    out.push(("expiring".into(), threshold));
                }
                Event::Expired { name, .. } if name == "work" => {
                    out.push(("expired".into(), String::new()));
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn each_threshold_fires_once_on_the_callers_clock() {
        let at = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let agent = agent_expiring_at(at);
        let mut rx = agent.subscribe();
        let mut fired = Fired::new();
        let hours = |h: i64| at - time::Duration::hours(h);
        // Two days out: the 3-day warning, and the next look is when 1 day is left.
        let next = tick(&agent, hours(48), &mut fired);
        assert_eq!(next, Some(hours(24)));
        assert_eq!(fired_events(&mut rx), [("expiring".into(), "3d".into())]);
        // The same moment again, and later within the same threshold: nothing new.
        tick(&agent, hours(48), &mut fired);
        tick(&agent, hours(30), &mut fired);
        assert_eq!(fired_events(&mut rx), Vec::<(String, String)>::new());
        // Half an hour left: straight to the 1-hour warning; then the expiry itself.
        let next = tick(&agent, at - time::Duration::minutes(30), &mut fired);
        assert_eq!(next, Some(at));
        assert_eq!(fired_events(&mut rx), [("expiring".into(), "1h".into())]);
        let next = tick(&agent, at + time::Duration::seconds(1), &mut fired);
        assert_eq!(next, None);
        assert_eq!(fired_events(&mut rx), [("expired".into(), String::new())]);
        tick(&agent, at + time::Duration::hours(5), &mut fired);
        assert_eq!(fired_events(&mut rx), Vec::<(String, String)>::new());
    }
}
