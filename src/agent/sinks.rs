//! The agent's sinks: config `[[sink]]`s and registered snapshots, rewritten whenever their
//! credential changes, so running sandboxes see the fresh token without re-provisioning.
//! A sink whose file was turned into a link, a FIFO or someone else's file is refused,
//! audited and shown as failed in `status`; its target is never read or written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use time::OffsetDateTime;

use super::approval::ConnId;
use super::{lock, Agent};
use crate::credential::{rfc3339, Credential};
use crate::domain::{AuditOutcome, Op};
use crate::domain::{ErrorBody, ErrorCode, Peer, SinkStatus};
use crate::protocol::Event;
use crate::sink::{self, Registry, Sink, Target};

fn kind_of(sink: &Sink) -> &'static str {
    match sink {
        Sink::Dotenv { .. } => "dotenv",
        Sink::Snapshot { .. } => "snapshot",
    }
}

/// The agent itself, as the audit log names the writer of a sink.
fn agent_peer() -> Peer {
    Peer {
        uid: crate::paths::current_uid(),
        pid: i32::try_from(std::process::id()).ok(),
        exe: Some("keyferry agent (sink writer)".into()),
        sandbox: None,
    }
}

/// Which sink a status belongs to: a `[[sink]]` by its place in the config (two `.env`
/// sinks may share a file, one key each), or a registered snapshot by its path (one per
/// path). A snapshot and a `[[sink]]` at one path never share a status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Config(usize),
    Snapshot(PathBuf),
}

/// Every sink the agent keeps current, and how each last went. One writer per file: a
/// `[[sink]]` owns its file, so a snapshot registered there (before the `[[sink]]` was
/// added) is kept in the registry but not written (see [`crate::sink::claim`]).
pub(super) struct Sinks {
    /// `[[sink]]`s from config.
    targets: Vec<Target>,
    /// The config file, for messages naming a `[[sink]]`.
    config: PathBuf,
    /// Snapshots registered at run time (persisted in the state directory).
    registered: Mutex<Vec<Target>>,
    /// The last outcome of every sink, for `status`.
    status: Mutex<BTreeMap<Origin, SinkStatus>>,
}

impl Sinks {
    /// The config's sinks and the snapshots registered by earlier runs.
    pub(super) fn new(targets: Vec<Target>, config: PathBuf, registered: Vec<Target>) -> Self {
        let sinks = Self {
            targets,
            config,
            registered: Mutex::new(registered),
            status: Mutex::new(BTreeMap::new()),
        };
        for t in lock(&sinks.registered).iter() {
            if let Err(e) = sink::claim(&sinks.targets, &sinks.config, t) {
                let e = e.superseded();
                tracing::warn!(credential = %t.credential, error = %e, "snapshot not written");
            }
        }
        sinks
    }

    /// Every sink of `name` to write: declared in config, then registered at run time,
    /// except registrations at a file a `[[sink]]` writes.
    fn of(&self, name: &str) -> Vec<(Origin, Target)> {
        let registered = lock(&self.registered).clone();
        let config = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| (Origin::Config(i), t.clone()));
        let snapshots = registered
            .into_iter()
            .filter(|t| sink::owner(&self.targets, t.sink.path()).is_none())
            .map(|t| (Origin::Snapshot(t.sink.path().to_path_buf()), t));
        config
            .chain(snapshots)
            .filter(|(_, t)| t.credential == name)
            .collect()
    }

    /// Every sink with its last outcome, for `status`. A registration at a `[[sink]]`'s file
    /// shows why it is not written; one asking for exactly what the `[[sink]]` writes is that
    /// sink and not shown twice.
    pub(super) fn statuses(&self) -> Vec<SinkStatus> {
        let known = lock(&self.status).clone();
        let registered = lock(&self.registered).clone();
        let unwritten = |t: &Target, error: Option<ErrorBody>| SinkStatus {
            credential: t.credential.clone(),
            path: t.sink.path().display().to_string(),
            kind: kind_of(&t.sink).to_owned(),
            error,
            written_at: None,
        };
        let row = |origin: Origin, t: &Target| {
            known
                .get(&origin)
                .cloned()
                .unwrap_or_else(|| unwritten(t, None))
        };
        let config = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| row(Origin::Config(i), t));
        let snapshots =
            registered
                .iter()
                .filter_map(|t| match sink::claim(&self.targets, &self.config, t) {
                    Ok(None) => Some(row(Origin::Snapshot(t.sink.path().to_path_buf()), t)),
                    Ok(Some(_)) => None,
                    Err(e) => Some(unwritten(t, Some(e.superseded().body()))),
                });
        config.chain(snapshots).collect()
    }

    /// Keeps `target` current from now on, replacing whatever was registered at its path.
    fn register(&self, target: Target) {
        let mut reg = lock(&self.registered);
        reg.retain(|t| !sink::same_file(t.sink.path(), target.sink.path()));
        reg.push(target);
    }

    /// Stops keeping the snapshot at `path` current and drops its last outcome; a
    /// `[[sink]]` at that path keeps its own.
    fn forget(&self, path: &Path) {
        lock(&self.registered).retain(|t| !sink::same_file(t.sink.path(), path));
        lock(&self.status)
            .retain(|origin, _| !matches!(origin, Origin::Snapshot(p) if sink::same_file(p, path)));
    }
}

/// The `.env` `[[sink]]`s of other credentials writing the same variable of one file.
#[derive(Default)]
struct Rivals {
    /// The first listed before this one: it writes the variable, this one does not.
    before: Option<usize>,
    /// Those listed after: this one writes it, they do not.
    after: Vec<usize>,
}

/// The variable a `.env` sink writes: its own `key`, else the credential's.
fn dotenv_key<'a>(sink: &'a Sink, env_var: &'a str) -> &'a str {
    match sink {
        Sink::Dotenv { key: Some(k), .. } => k,
        _ => env_var,
    }
}

impl Agent {
    /// Writes `credential` to each of `name`'s sinks; failures are logged, audited,
    /// published and kept for `status`. Of two `.env` `[[sink]]`s of different credentials
    /// that come to write one variable of one file, the one listed first does: the other is
    /// refused ([`sink::key_taken`]) rather than the two replacing each other's token.
    pub(super) fn write_sinks(&self, name: &str, credential: &Credential) {
        let env_var = self.env_var(name, credential);
        for (origin, target) in self.sinks.of(name) {
            let rivals = match origin {
                Origin::Config(i) => self.rivals(i, &target, &env_var),
                Origin::Snapshot(_) => Rivals::default(),
            };
            let key = dotenv_key(&target.sink, &env_var);
            if let Some(j) = rivals.before {
                let holder = &self.sinks.targets[j];
                let e = sink::key_taken(&self.sinks.config, holder, &target, key);
                self.settle(origin, name, &target.sink, &Err(e.body()));
                continue;
            }
            let written = self.write_one(origin, name, credential, &env_var, &target.sink);
            for j in rivals.after.into_iter().filter(|_| written.is_ok()) {
                let later = &self.sinks.targets[j];
                let e = sink::key_taken(&self.sinks.config, &target, later, key);
                self.settle(
                    Origin::Config(j),
                    &later.credential,
                    &later.sink,
                    &Err(e.body()),
                );
            }
        }
    }

    /// The other credentials' `.env` `[[sink]]`s that write what `[[sink]]` `i` (`target`)
    /// does, `key` or its credential's variable, in the same file. A credential not read
    /// yet has no variable yet: it is a rival once it has.
    fn rivals(&self, i: usize, target: &Target, env_var: &str) -> Rivals {
        let mut rivals = Rivals::default();
        let Sink::Dotenv { .. } = &target.sink else {
            return rivals;
        };
        let key = dotenv_key(&target.sink, env_var);
        for (j, other) in self.sinks.targets.iter().enumerate() {
            let Sink::Dotenv { key: theirs, path } = &other.sink else {
                continue;
            };
            if other.credential == target.credential || !sink::same_file(path, target.sink.path()) {
                continue;
            }
            let writes = match theirs {
                Some(k) => Some(k.clone()),
                None => self.known_env_var(&other.credential),
            };
            if writes.as_deref() != Some(key) {
                continue;
            }
            if j < i {
                rivals.before.get_or_insert(j);
            } else {
                rivals.after.push(j);
            }
        }
        rivals
    }

    /// The variable `name`'s token goes in: the config's `env_var`, else its kind's.
    pub(super) fn env_var(&self, name: &str, credential: &Credential) -> String {
        self.broker
            .spec(name)
            .ok()
            .and_then(|s| s.env_var)
            .unwrap_or_else(|| credential.kind.env_var().to_owned())
    }

    /// `name`'s variable, once its token has been read.
    fn known_env_var(&self, name: &str) -> Option<String> {
        let state = self.read_state();
        let token = state.slots.get(name)?.token.as_ref()?;
        Some(token.env_var.clone())
    }

    fn write_one(
        &self,
        origin: Origin,
        name: &str,
        credential: &Credential,
        env_var: &str,
        sink: &Sink,
    ) -> Result<(), ErrorBody> {
        let result = sink.write(name, credential, env_var).map_err(|e| e.body());
        self.settle(origin, name, sink, &result);
        result
    }

    /// Keeps how writing `sink` went for `status`; logs, publishes and (a failure) audits it.
    fn settle(&self, origin: Origin, name: &str, sink: &Sink, result: &Result<(), ErrorBody>) {
        let path = sink.path().display().to_string();
        let now = rfc3339(OffsetDateTime::now_utc());
        let status = SinkStatus {
            credential: name.to_owned(),
            path: path.clone(),
            kind: kind_of(sink).to_owned(),
            error: result.as_ref().err().cloned(),
            written_at: if result.is_ok() { now } else { None },
        };
        lock(&self.sinks.status).insert(origin, status);
        match result {
            Ok(()) => {
                tracing::info!(credential = %name, %path, "sink rewritten");
                self.emit(Event::SinkWritten {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(e) => {
                tracing::warn!(credential = %name, %path, error = %e.message, "sink not written");
                self.record(
                    Op::Sink,
                    Some(name),
                    AuditOutcome::Refused,
                    Some(&e.code),
                    &agent_peer(),
                );
                self.emit(Event::SinkFailed {
                    name: name.to_owned(),
                    path,
                    error: e.clone(),
                });
            }
        }
    }

    /// Registers a snapshot and writes it now. The agent keeps it current until forgotten.
    /// A snapshot writes the token to a file, so it passes the same lock and policy as `get`;
    /// a target that is not a credentials file of the same CLI, or a `[[sink]]`'s file with
    /// other content, is refused and not registered.
    pub async fn register_snapshot(
        &self,
        name: &str,
        path: &Path,
        include_refresh_token: bool,
        peer: &Peer,
        conn: Option<ConnId>,
    ) -> Result<(), ErrorBody> {
        let refused = |e: ErrorBody| {
            self.record(
                Op::Snapshot,
                Some(name),
                AuditOutcome::Refused,
                Some(&e.code),
                peer,
            );
            e
        };
        self.may_read(name, peer, conn).await.map_err(&refused)?;
        if !path.is_absolute() {
            return Err(ErrorBody::new(
                ErrorCode::Invalid,
                format!("{} is not an absolute path", path.display()),
            ));
        }
        let target = Target::snapshot(name, path, include_refresh_token);
        // One writer per file: a `[[sink]]`'s file is refused unless this is that sink.
        let same = sink::claim(&self.sinks.targets, &self.sinks.config, &target)
            .map_err(|e| refused(e.body()))?;
        let credential = {
            let state = self.read_state();
            let slot = state.slots.get(name).ok_or_else(|| self.unknown(name))?;
            slot.credential.clone().ok_or_else(|| {
                slot.status.error.clone().unwrap_or(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("no token found for {name:?}"),
                ))
            })?
        };
        // Exactly what a `[[sink]]` writes is that sink: written through it, not registered.
        let (origin, sink) = match same {
            Some(i) => (Origin::Config(i), &self.sinks.targets[i].sink),
            None => (Origin::Snapshot(path.to_path_buf()), &target.sink),
        };
        let env_var = credential.kind.env_var();
        self.write_one(origin, name, &credential, env_var, sink)
            .inspect_err(|e| {
                self.record(
                    Op::Snapshot,
                    Some(name),
                    AuditOutcome::Failed,
                    Some(&e.code),
                    peer,
                )
            })?;
        let outcome = if same.is_some() {
            "kept by config"
        } else {
            Registry::add(target.clone())
                .map_err(|e| ErrorBody::new(ErrorCode::WriteFailed, e.to_string()))?;
            self.sinks.register(target);
            "registered"
        };
        self.record(
            Op::Snapshot,
            Some(name),
            AuditOutcome::done(outcome),
            None,
            peer,
        );
        Ok(())
    }

    /// Stops keeping a snapshot current (the file itself is left alone). A path only a
    /// `[[sink]]` writes is refused: forgetting cannot stop it, and its state stays.
    pub fn forget_snapshot(&self, path: &Path, peer: &Peer) -> Result<bool, ErrorBody> {
        let removed = Registry::remove(path)
            .map_err(|e| ErrorBody::new(ErrorCode::WriteFailed, e.to_string()))?;
        self.sinks.forget(path);
        if !removed {
            if let Some(e) = sink::not_a_snapshot(&self.sinks.targets, &self.sinks.config, path) {
                let e = e.body();
                self.record(Op::Forget, None, AuditOutcome::Refused, Some(&e.code), peer);
                return Err(e);
            }
        }
        let outcome = if removed { "forgotten" } else { "unknown" };
        self.record(Op::Forget, None, AuditOutcome::done(outcome), None, peer);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dotenv(credential: &str, path: &str) -> Target {
        Target {
            credential: credential.into(),
            sink: Sink::Dotenv {
                path: path.into(),
                key: None,
            },
        }
    }

    fn snapshot(credential: &str, path: &str, refresh: bool) -> Target {
        Target::snapshot(credential, Path::new(path), refresh)
    }

    fn written(t: &Target) -> SinkStatus {
        SinkStatus {
            credential: t.credential.clone(),
            path: t.sink.path().display().to_string(),
            kind: kind_of(&t.sink).to_owned(),
            error: None,
            written_at: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    fn sinks(config: Vec<Target>, registered: Vec<Target>) -> Sinks {
        Sinks::new(config, "/kf/config.toml".into(), registered)
    }

    #[test]
    fn forgetting_a_path_keeps_the_config_sinks_status() {
        let env = dotenv("claude", "/kf/proj/.env");
        let s = sinks(vec![env.clone()], vec![]);
        lock(&s.status).insert(Origin::Config(0), written(&env));
        s.forget(Path::new("/kf/proj/.env"));
        assert_eq!(s.statuses(), vec![written(&env)]);
    }

    #[test]
    fn two_dotenv_sinks_of_one_file_keep_a_status_each() {
        let (a, b) = (dotenv("claude", "/kf/.env"), dotenv("codex", "/kf/.env"));
        let s = sinks(vec![a.clone(), b.clone()], vec![]);
        lock(&s.status).insert(Origin::Config(1), written(&b));
        let rows = s.statuses();
        assert_eq!(rows[0].credential, "claude");
        assert!(rows[0].written_at.is_none(), "{rows:?}");
        assert_eq!(rows[1], written(&b));
    }

    #[test]
    fn a_registration_at_a_config_sinks_file_is_not_written() {
        let config = snapshot("claude", "/kf/box/.credentials.json", false);
        let other = snapshot("work", "/kf/box/.credentials.json", false);
        let free = snapshot("work", "/kf/elsewhere.json", false);
        let s = sinks(vec![config.clone()], vec![other, free.clone()]);
        let paths = |name| -> Vec<PathBuf> {
            s.of(name)
                .into_iter()
                .map(|(_, t)| t.sink.path().to_path_buf())
                .collect()
        };
        assert_eq!(paths("work"), vec![PathBuf::from("/kf/elsewhere.json")]);
        assert_eq!(
            paths("claude"),
            vec![PathBuf::from("/kf/box/.credentials.json")]
        );
        let rows = s.statuses();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let e = rows[1].error.as_ref().expect("shown as not written");
        assert_eq!(e.code, ErrorCode::ConfigSink);
        assert!(
            e.message.contains("\"claude\"") && e.message.contains("--forget"),
            "{}",
            e.message
        );
        assert!(
            rows[0].error.is_none() && rows[2].error.is_none(),
            "{rows:?}"
        );
    }

    #[test]
    fn a_registration_of_exactly_a_config_sink_is_that_sink() {
        let config = snapshot("claude", "/kf/box/.credentials.json", false);
        let s = sinks(vec![config.clone()], vec![config.clone()]);
        assert_eq!(s.of("claude").len(), 1);
        assert_eq!(s.statuses().len(), 1);
    }
}
