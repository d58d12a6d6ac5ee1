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
use crate::sink::{Registry, Sink, Target};

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

/// Every sink the agent keeps current, and how each last went.
pub(super) struct Sinks {
    /// `[[sink]]`s from config.
    targets: Vec<Target>,
    /// Snapshots registered at run time (persisted in the state directory).
    registered: Mutex<Vec<Target>>,
    /// The last outcome of every sink, by path, for `status`.
    status: Mutex<BTreeMap<PathBuf, SinkStatus>>,
}

impl Sinks {
    /// The config's sinks and the snapshots registered by earlier runs.
    pub(super) fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            registered: Mutex::new(Registry::load()),
            status: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every sink of `name`: declared in config, then registered at run time.
    fn of(&self, name: &str) -> Vec<Target> {
        let registered = lock(&self.registered).clone();
        self.targets
            .iter()
            .cloned()
            .chain(registered)
            .filter(|t| t.credential == name)
            .collect()
    }

    /// Every sink with its last outcome, for `status`.
    pub(super) fn statuses(&self) -> Vec<SinkStatus> {
        let known = lock(&self.status).clone();
        let registered = lock(&self.registered).clone();
        self.targets
            .iter()
            .chain(registered.iter())
            .map(|t| {
                known
                    .get(t.sink.path())
                    .cloned()
                    .unwrap_or_else(|| SinkStatus {
                        credential: t.credential.clone(),
                        path: t.sink.path().display().to_string(),
                        kind: kind_of(&t.sink).to_owned(),
                        error: None,
                        written_at: None,
                    })
            })
            .collect()
    }

    /// Keeps `target` current from now on, replacing whatever was registered at its path.
    fn register(&self, target: Target) {
        let mut reg = lock(&self.registered);
        reg.retain(|t| t.sink.path() != target.sink.path());
        reg.push(target);
    }

    /// Stops keeping the snapshot at `path` current and drops its last outcome.
    fn forget(&self, path: &Path) {
        lock(&self.registered).retain(|t| t.sink.path() != path);
        lock(&self.status).remove(path);
    }
}

impl Agent {
    /// Writes `credential` to each of `name`'s sinks; failures are logged, audited,
    /// published and kept for `status`.
    pub(super) fn write_sinks(&self, name: &str, credential: &Credential) {
        let env_var = self.env_var(name, credential);
        for target in self.sinks.of(name) {
            let _ = self.write_one(name, credential, &env_var, &target.sink);
        }
    }

    fn env_var(&self, name: &str, credential: &Credential) -> String {
        self.broker
            .spec(name)
            .ok()
            .and_then(|s| s.env_var)
            .unwrap_or_else(|| credential.kind.env_var().to_owned())
    }

    fn write_one(
        &self,
        name: &str,
        credential: &Credential,
        env_var: &str,
        sink: &Sink,
    ) -> Result<(), ErrorBody> {
        let path = sink.path().display().to_string();
        let result = sink.write(name, credential, env_var).map_err(|e| e.body());
        let now = rfc3339(OffsetDateTime::now_utc());
        let status = SinkStatus {
            credential: name.to_owned(),
            path: path.clone(),
            kind: kind_of(sink).to_owned(),
            error: result.as_ref().err().cloned(),
            written_at: if result.is_ok() { now } else { None },
        };
        lock(&self.sinks.status).insert(sink.path().to_path_buf(), status);
        match &result {
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
        result
    }

    /// Registers a snapshot and writes it now. The agent keeps it current until forgotten.
    /// A snapshot writes the token to a file, so it passes the same lock and policy as `get`;
    /// a target that is not a credentials file of the same CLI is refused and not registered.
    pub async fn register_snapshot(
        &self,
        name: &str,
        path: &Path,
        include_refresh_token: bool,
        peer: &Peer,
        conn: Option<ConnId>,
    ) -> Result<(), ErrorBody> {
        if let Err(e) = self.may_read(name, peer, conn).await {
            self.record(
                Op::Snapshot,
                Some(name),
                AuditOutcome::Refused,
                Some(&e.code),
                peer,
            );
            return Err(e);
        }
        if !path.is_absolute() {
            return Err(ErrorBody::new(
                ErrorCode::Invalid,
                format!("{} is not an absolute path", path.display()),
            ));
        }
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
        let target = Target {
            credential: name.to_owned(),
            sink: Sink::Snapshot {
                path: path.to_path_buf(),
                include_refresh_token,
            },
        };
        let env_var = credential.kind.env_var();
        self.write_one(name, &credential, env_var, &target.sink)
            .inspect_err(|e| {
                self.record(
                    Op::Snapshot,
                    Some(name),
                    AuditOutcome::Failed,
                    Some(&e.code),
                    peer,
                )
            })?;
        Registry::add(target.clone())
            .map_err(|e| ErrorBody::new(ErrorCode::WriteFailed, e.to_string()))?;
        self.sinks.register(target);
        self.record(
            Op::Snapshot,
            Some(name),
            AuditOutcome::done("registered"),
            None,
            peer,
        );
        Ok(())
    }

    /// Stops keeping a snapshot current (the file itself is left alone).
    pub fn forget_snapshot(&self, path: &Path, peer: &Peer) -> Result<bool, ErrorBody> {
        let removed = Registry::remove(path)
            .map_err(|e| ErrorBody::new(ErrorCode::WriteFailed, e.to_string()))?;
        self.sinks.forget(path);
        let outcome = if removed { "forgotten" } else { "unknown" };
        self.record(Op::Forget, None, AuditOutcome::done(outcome), None, peer);
        Ok(removed)
    }
}
