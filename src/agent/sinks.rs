//! The agent's sinks: config `[[sink]]`s and registered snapshots, rewritten whenever their
//! credential changes, so running sandboxes see the fresh token without re-provisioning.

use std::path::Path;

use super::Agent;
use crate::credential::Credential;
use crate::error::ErrorBody;
use crate::protocol::{Event, Peer};
use crate::sink::{Registry, Sink, Target};

impl Agent {
    /// Every sink of `name`: declared in config, then registered at run time.
    fn sinks_of(&self, name: &str) -> Vec<Target> {
        let registered = self
            .registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.sinks
            .iter()
            .cloned()
            .chain(registered)
            .filter(|t| t.credential == name)
            .collect()
    }

    /// Writes `credential` to each of `name`'s sinks; failures are logged and published.
    pub(super) fn write_sinks(&self, name: &str, credential: &Credential) {
        let env_var = self
            .broker
            .spec(name)
            .ok()
            .and_then(|s| s.env_var)
            .unwrap_or_else(|| credential.kind.env_var().to_owned());
        for target in self.sinks_of(name) {
            self.write_one(name, credential, &env_var, &target.sink);
        }
    }

    fn write_one(&self, name: &str, credential: &Credential, env_var: &str, sink: &Sink) {
        let path = sink.path().display().to_string();
        match sink.write(name, credential, env_var) {
            Ok(()) => {
                tracing::info!(credential = %name, %path, "sink rewritten");
                self.emit(Event::SinkWritten {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(e) => {
                tracing::warn!(credential = %name, %path, error = %e, "sink not written");
                self.emit(Event::SinkFailed {
                    name: name.to_owned(),
                    path,
                    error: e.body(),
                });
            }
        }
    }

    /// Registers a snapshot and writes it now. The agent keeps it current until forgotten.
    /// A snapshot writes the token to a file, so it passes the same lock and policy as `get`.
    pub async fn register_snapshot(
        &self,
        name: &str,
        path: &Path,
        include_refresh_token: bool,
        peer: &Peer,
    ) -> Result<(), ErrorBody> {
        if let Err(e) = self.may_read(name, peer).await {
            self.record("snapshot", Some(name), "refused", Some(&e.code), peer);
            return Err(e);
        }
        if !path.is_absolute() {
            return Err(ErrorBody {
                code: "invalid".into(),
                message: format!("{} is not an absolute path", path.display()),
            });
        }
        let credential = {
            let state = self.read_state();
            let slot = state.slots.get(name).ok_or_else(|| ErrorBody {
                code: "unknown_credential".into(),
                message: format!(
                    "no credential named {name:?} (configured: {})",
                    self.names().join(", ")
                ),
            })?;
            slot.credential.clone().ok_or_else(|| {
                slot.status.error.clone().unwrap_or(ErrorBody {
                    code: "not_found".into(),
                    message: format!("no token found for {name:?}"),
                })
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
        target.sink.write(name, &credential, env_var).map_err(|e| {
            self.record("snapshot", Some(name), "failed", Some(e.code()), peer);
            e.body()
        })?;
        Registry::add(target.clone()).map_err(|e| ErrorBody {
            code: "write_failed".into(),
            message: e.to_string(),
        })?;
        let mut reg = self
            .registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.retain(|t| t.sink.path() != path);
        reg.push(target);
        drop(reg);
        self.record("snapshot", Some(name), "registered", None, peer);
        Ok(())
    }

    /// Stops keeping a snapshot current (the file itself is left alone).
    pub fn forget_snapshot(&self, path: &Path, peer: &Peer) -> Result<bool, ErrorBody> {
        let removed = Registry::remove(path).map_err(|e| ErrorBody {
            code: "write_failed".into(),
            message: e.to_string(),
        })?;
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|t| t.sink.path() != path);
        self.record(
            "forget",
            None,
            if removed { "forgotten" } else { "unknown" },
            None,
            peer,
        );
        Ok(removed)
    }
}
