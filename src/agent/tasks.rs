//! Background tasks: file watchers, keychain polling, periodic rescan, expiry warnings and
//! desktop notifications. Each ends when the shutdown broadcast fires.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

use super::Agent;
use crate::credential::{human_duration, rfc3339};
use crate::expiry::Due;
use crate::notification::{self, Delivery};
use crate::protocol::Event;
use crate::source::{chain::claude_login, chain::LoginLocation, Source};
use crate::store::{ItemId, Stamp};

/// Where each credential's sources live: files to watch, keychain items to poll.
#[derive(Default)]
struct Targets {
    files: BTreeMap<PathBuf, BTreeSet<String>>,
    items: BTreeMap<ItemId, BTreeSet<String>>,
}

fn targets(agent: &Agent) -> Targets {
    let env = |k: &str| std::env::var(k).ok();
    let mut t = Targets::default();
    for name in agent.names() {
        let Ok(spec) = agent.broker.spec(&name) else {
            continue;
        };
        for source in &spec.chain {
            match source {
                Source::File { path } | Source::Dotenv { path, .. } => {
                    t.files
                        .entry(crate::paths::expand(path))
                        .or_default()
                        .insert(name.clone());
                }
                Source::Keychain { service, account } => {
                    let id =
                        ItemId::new(service, account.clone().unwrap_or_else(crate::paths::user));
                    t.items.entry(id).or_default().insert(name.clone());
                }
                Source::ClaudeLogin => match claude_login(&env, cfg!(target_os = "macos")) {
                    LoginLocation::File(p) => {
                        t.files.entry(p).or_default().insert(name.clone());
                    }
                    LoginLocation::Keychain(id) => {
                        t.items.entry(id).or_default().insert(name.clone());
                    }
                },
                Source::Env { .. } => {}
            }
        }
    }
    t
}

pub fn spawn_all(agent: &Arc<Agent>, notify: &broadcast::Sender<()>, done: &mpsc::Sender<()>) {
    let t = Arc::new(targets(agent));
    let spawn = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        let mut shutdown = notify.subscribe();
        let done = done.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                _ = shutdown.recv() => {}
            }
            drop(done);
        });
    };
    // Watches are in place before the first client is served, so no change slips by.
    let watch = FileWatch::new(&t);
    spawn(Box::pin(watch_files(
        Arc::clone(agent),
        Arc::clone(&t),
        watch,
    )));
    spawn(Box::pin(poll_keychain(Arc::clone(agent), Arc::clone(&t))));
    spawn(Box::pin(rescan(Arc::clone(agent))));
    spawn(Box::pin(expiry(Arc::clone(agent))));
}

/// The nearest existing directory at or above `path`'s parent: watching it catches the
/// file's directory being created later.
fn watch_dir(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent()?;
    loop {
        if dir.is_dir() {
            return Some(dir.to_path_buf());
        }
        dir = dir.parent()?;
    }
}

/// Opens and reads are not changes — and our own re-read opens the file, so reacting to
/// them would refresh forever.
fn changes_content(ev: &notify::Event) -> bool {
    !matches!(ev.kind, notify::EventKind::Access(_))
}

/// A notify watcher on the directories of the watched files, and its event channel.
struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::UnboundedReceiver<PathBuf>,
    watched: HashSet<PathBuf>,
}

impl FileWatch {
    fn new(t: &Targets) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if changes_content(&ev) {
                    for p in ev.paths {
                        let _ = tx.send(p);
                    }
                }
            }
        })
        .map_err(|e| tracing::error!(error = %e, "file watching unavailable; relying on periodic rescans"))
        .ok();
        let mut w = Self {
            watcher,
            rx,
            watched: HashSet::new(),
        };
        w.rewatch(t);
        w
    }

    /// Watches the nearest existing directory of every file (again, after one appeared).
    fn rewatch(&mut self, t: &Targets) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for file in t.files.keys() {
            if let Some(dir) = watch_dir(file) {
                if self.watched.insert(dir.clone()) {
                    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch");
                        self.watched.remove(&dir);
                    }
                }
            }
        }
    }
}

/// Watches each file's *directory*: atomic renames replace the inode, and a watch on the
/// file itself would go deaf after the first one.
async fn watch_files(agent: Arc<Agent>, t: Arc<Targets>, mut w: FileWatch) {
    if t.files.is_empty() || w.watcher.is_none() {
        return std::future::pending().await;
    }
    while let Some(first) = w.rx.recv().await {
        // Coalesce the burst an editor or an atomic rename produces.
        let mut paths = vec![first];
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(p) = w.rx.try_recv() {
            paths.push(p);
        }
        let mut names = BTreeSet::new();
        let mut structure_changed = false;
        for p in &paths {
            if let Some(n) = t.files.get(p) {
                names.extend(n.iter().cloned());
            }
            for (file, n) in &t.files {
                if file != p && file.starts_with(p) {
                    structure_changed = true;
                    names.extend(n.iter().cloned());
                }
            }
        }
        if structure_changed {
            w.rewatch(&t);
        }
        if !names.is_empty() {
            tracing::debug!(?names, "watched file changed");
            agent.refresh(names.into_iter().collect()).await;
        }
    }
}

/// Polls keychain items' modification stamps (attributes only: never prompts). After a
/// change, the item is re-read once more on the next round, because Secret Service stamps
/// have one-second granularity and a second write in the same second looks unchanged.
async fn poll_keychain(agent: Arc<Agent>, t: Arc<Targets>) {
    if t.items.is_empty() {
        return std::future::pending().await;
    }
    let interval = Duration::from_secs(agent.cfg.poll_interval_secs.max(1));
    let mut last: HashMap<ItemId, Option<Stamp>> = HashMap::new();
    let mut settle: HashSet<ItemId> = HashSet::new();
    let mut first = true;
    loop {
        let a = Arc::clone(&agent);
        let ids: Vec<ItemId> = t.items.keys().cloned().collect();
        let stamps = tokio::task::spawn_blocking(move || {
            let store = a.broker.store.get().map_err(|e| e.to_string())?;
            Ok::<_, String>(
                ids.into_iter()
                    .map(|id| (store.stamp(&id).ok(), id))
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        match stamps {
            Ok(Ok(stamps)) => {
                let mut names = BTreeSet::new();
                for (stamp, id) in stamps {
                    let Some(stamp) = stamp else { continue };
                    let previous = last.insert(id.clone(), stamp.clone());
                    let moved = previous.as_ref().is_some_and(|p| *p != stamp);
                    if !first && (moved || settle.remove(&id)) {
                        if moved {
                            settle.insert(id.clone());
                        }
                        names.extend(t.items[&id].iter().cloned());
                    }
                }
                if first {
                    // A change between the start-up read and this baseline would be lost.
                    names.extend(t.items.values().flatten().cloned());
                }
                if !names.is_empty() {
                    tracing::debug!(?names, "keychain item changed");
                    agent.refresh(names.into_iter().collect()).await;
                }
                first = false;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "keychain not available for polling"),
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

async fn rescan(agent: Arc<Agent>) {
    let secs = agent.cfg.rescan_secs;
    if secs == 0 {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        agent.refresh(agent.names()).await;
    }
}

fn notify(agent: &Agent, summary: String, body: String) {
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
async fn expiry(agent: Arc<Agent>) {
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
        for (name, fp, due, at) in due {
            if !fired.insert((name.clone(), fp, due.key().to_owned())) {
                continue;
            }
            let at_text = at.and_then(rfc3339).unwrap_or_default();
            match &due {
                Due::Expiring { label, left } => {
                    tracing::warn!(credential = %name, expires_at = %at_text, left = %left, "token expires soon");
                    notify(&agent, format!("{name} token expires in {left}"),
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
                    notify(&agent, format!("{name} token expired {ago} ago"),
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
pub(super) fn notify_access(agent: &Agent, access: &crate::protocol::Access) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let who = access
        .peer
        .exe
        .clone()
        .unwrap_or_else(|| "a process".into());
    let cred = access.credential.clone().unwrap_or_default();
    if access.outcome == "refused" {
        let why = access.code.clone().unwrap_or_default();
        notify(
            agent,
            format!("Refused {cred} to {who}"),
            format!("{}: {why}", access.peer),
        );
    } else {
        notify(agent, format!("{who} read {cred}"), access.peer.to_string());
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    #[test]
    fn only_mutations_trigger_a_refresh() {
        let ev = |kind| Event::new(kind);
        assert!(!super::changes_content(&ev(EventKind::Access(
            AccessKind::Open(AccessMode::Any)
        ))));
        assert!(!super::changes_content(&ev(EventKind::Access(
            AccessKind::Close(AccessMode::Read)
        ))));
        assert!(super::changes_content(&ev(EventKind::Create(
            CreateKind::File
        ))));
        assert!(super::changes_content(&ev(EventKind::Modify(
            ModifyKind::Name(RenameMode::To)
        ))));
    }
}
