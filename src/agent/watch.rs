//! Watching the sources: a notify watcher on each watched file's directory (bounded queue),
//! keychain items polled by their modification stamps (never their data), and a periodic
//! rescan. Each task ends when the shutdown broadcast fires.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc};

use super::Agent;
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
    spawn(Box::pin(super::expiry::expiry(Arc::clone(agent))));
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

/// Paths queued between the watcher thread and the agent. A burst past this (a `git
/// checkout` in a watched directory) is not queued path by path: the overflow flag makes the
/// next round re-resolve every watched credential instead.
const WATCH_QUEUE: usize = 256;

/// A notify watcher on the directories of the watched files, and its event channel.
struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<PathBuf>,
    overflow: Arc<AtomicBool>,
    watched: HashSet<PathBuf>,
}

impl FileWatch {
    fn new(t: &Targets) -> Self {
        let (tx, rx) = mpsc::channel::<PathBuf>(WATCH_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflow);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if changes_content(&ev) {
                    for p in ev.paths {
                        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(p) {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
        .map_err(|e| tracing::error!(error = %e, "file watching unavailable; relying on periodic rescans"))
        .ok();
        let mut w = Self {
            watcher,
            rx,
            overflow,
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
        if w.overflow.swap(false, Ordering::Relaxed) {
            tracing::debug!("watch queue overflowed; re-resolving every watched credential");
            names.extend(t.files.values().flatten().cloned());
            structure_changed = true;
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
