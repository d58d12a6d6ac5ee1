//! Expiry warnings and desktop notifications: each due warning fires once per token, and
//! every notification also reaches subscribers as a `notified` event (the tray's fallback).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Agent;
use crate::credential::{human_duration, rfc3339};
use crate::expiry::Due;
use crate::notification::{self, Delivery};
use crate::protocol::Event;

pub(super) fn notify_now(agent: &Agent, summary: String, body: String) {
    if !agent
        .notifications
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let notifier = agent
        .notifier
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Fires each due warning once per token, sleeping until the next threshold or a change.
pub(super) async fn expiry(agent: Arc<Agent>) {
    let mut fired: HashSet<(String, String, String)> = HashSet::new();
    loop {
        let now = OffsetDateTime::now_utc();
        let mut next: Option<OffsetDateTime> = None;
        let thresholds = agent.thresholds();
        let due: Vec<(String, String, Due, Option<OffsetDateTime>)> = {
            let state = agent.read_state();
            state
                .slots
                .iter()
                .filter_map(|(name, slot)| {
                    let (refreshes, at) = (
                        slot.credential.as_ref()?.refresh_token.is_some(),
                        slot.expires_at,
                    );
                    if let Some(t) = thresholds.next_change(refreshes, at, now) {
                        next = Some(next.map_or(t, |n: OffsetDateTime| n.min(t)));
                    }
                    let fp = slot.status.inspection.as_ref()?.fingerprint.clone();
                    thresholds
                        .due(refreshes, at, now)
                        .map(|d| (name.clone(), fp, d, at))
                })
                .collect()
        };
        // The refresh token's own expiry (a login that will end): only `claude /login` helps.
        let logins: Vec<(String, String, Due, OffsetDateTime)> = {
            let state = agent.read_state();
            state
                .slots
                .iter()
                .filter_map(|(name, slot)| {
                    let c = slot.credential.as_ref()?;
                    let at = c.refresh_expires_at()?;
                    if let Some(t) = thresholds.next_change(false, Some(at), now) {
                        next = Some(next.map_or(t, |n: OffsetDateTime| n.min(t)));
                    }
                    let fp = format!("login:{}", rfc3339(at).unwrap_or_default());
                    thresholds
                        .due(false, Some(at), now)
                        .map(|d| (name.clone(), fp, d, at))
                })
                .collect()
        };
        for (name, fp, due, at) in logins {
            if !fired.insert((name.clone(), fp, due.key().to_owned())) {
                continue;
            }
            let at_text = rfc3339(at).unwrap_or_default();
            let (summary, left, label) = match &due {
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
            notify_now(&agent, summary, format!(
                "Claude Code's login for {name} (its refresh token) ends at {at_text}. Run `claude /login` on this machine before then; Keyferry picks the new login up by itself."
            ));
            agent.emit(Event::Expiring {
                name: name.clone(),
                expires_at: at_text,
                expires_in: left,
                threshold: label,
            });
        }
        for (name, fp, due, at) in due {
            if !fired.insert((name.clone(), fp, due.key().to_owned())) {
                continue;
            }
            let at_text = at.and_then(rfc3339).unwrap_or_default();
            match &due {
                Due::Expiring { label, left } => {
                    tracing::warn!(credential = %name, expires_at = %at_text, left = %left, "token expires soon");
                    notify_now(&agent, format!("{name} token expires in {left}"),
                        format!("The {name} token expires at {at_text}. Reroll it: keyferry reroll {name}"));
                    agent.emit(Event::Expiring {
                        name: name.clone(),
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
                    notify_now(&agent, format!("{name} token expired {ago} ago"),
                        format!("The {name} token expired at {at_text}. Sandboxes using it will fail. Reroll it: keyferry reroll {name}"));
                    agent.emit(Event::Expired {
                        name: name.clone(),
                        expires_at: at_text,
                    });
                }
            }
            let status = agent
                .read_state()
                .slots
                .get(&name)
                .map(|s| s.status_at(now, &thresholds));
            if let Some(status) = status {
                agent.emit(Event::Changed { status });
            }
        }
        let sleep = next
            .map(|t| Duration::from_secs_f64((t - now).as_seconds_f64().clamp(0.05, 3600.0)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = agent.changed.notified() => {}
        }
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
