//! Policy: which client executables may read which credential, and when to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{PolicyConfig, PolicyMode};
use crate::domain::{ErrorCode, Peer};
use crate::paths;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: a stable code and a message that says how to allow it.
    Deny {
        code: ErrorCode,
        message: String,
    },
    /// Defer to an approver.
    Ask,
}

pub struct Policy {
    rules: BTreeMap<String, (PolicyMode, BTreeSet<String>)>,
    config_path: String,
    /// "Always allow" answers, persisted so they survive restarts.
    remembered: Mutex<BTreeSet<(String, String)>>,
    store: Option<PathBuf>,
}

/// Both the configured spelling and its canonical form, since `/proc/PID/exe` is resolved.
fn canonical_forms(exe: &str) -> Vec<String> {
    let expanded = paths::expand(exe);
    let mut forms = vec![expanded.display().to_string()];
    if let Ok(c) = std::fs::canonicalize(&expanded) {
        forms.push(c.display().to_string());
    }
    forms
}

impl Policy {
    #[must_use]
    pub fn new(
        cfg: &BTreeMap<String, PolicyConfig>,
        config_path: &Path,
        store: Option<PathBuf>,
    ) -> Self {
        let rules = cfg
            .iter()
            .map(|(name, p)| {
                let exes = p
                    .allow_exe
                    .iter()
                    .flat_map(|e| canonical_forms(e))
                    .collect();
                (name.clone(), (p.mode, exes))
            })
            .collect();
        let remembered = store
            .as_deref()
            .and_then(|p| {
                crate::safe_file::read_to_string(p, 1024 * 1024)
                    .ok()
                    .flatten()
            })
            .and_then(|t| serde_json::from_str::<Vec<(String, String)>>(&t).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Self {
            rules,
            config_path: paths::display(config_path),
            remembered: Mutex::new(remembered),
            store,
        }
    }

    #[must_use]
    pub fn check(&self, credential: &str, peer: &Peer) -> Verdict {
        let Some((mode, allowed)) = self.rules.get(credential) else {
            return Verdict::Allow;
        };
        let exe = peer.exe.as_deref().unwrap_or("");
        let listed = !exe.is_empty() && allowed.contains(exe);
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(credential.to_owned(), exe.to_owned()));
        match mode {
            _ if listed || remembered => Verdict::Allow,
            PolicyMode::Allow if allowed.is_empty() => Verdict::Allow,
            PolicyMode::Allow => Verdict::Deny {
                code: ErrorCode::NotAllowed,
                message: format!(
                    "{peer} may not read {credential:?}: add {exe:?} to allow_exe under [policy.{credential}] in {}",
                    self.config_path
                ),
            },
            PolicyMode::Ask => Verdict::Ask,
        }
    }

    /// The refusal when `ask` has no approver to ask.
    #[must_use]
    pub fn no_approver(&self, credential: &str, peer: &Peer) -> Verdict {
        Verdict::Deny {
            code: ErrorCode::ApprovalRequired,
            message: format!(
                "{credential:?} needs approval (mode = \"ask\") and no approver is connected; open the Keyferry tray app, \
                 or allow this client permanently with allow_exe = [{:?}] under [policy.{credential}] in {}",
                peer.exe.as_deref().unwrap_or("/path/to/client"),
                self.config_path
            ),
        }
    }

    /// Remembers an "Always allow" answer.
    pub fn remember(&self, credential: &str, exe: &str) {
        let mut set = self
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert((credential.to_owned(), exe.to_owned()));
        if let Some(path) = &self.store {
            let list: Vec<_> = set.iter().cloned().collect();
            if let Err(e) =
                crate::atomic::write(path, &serde_json::to_vec(&list).unwrap_or_default(), 0o600)
            {
                tracing::warn!(error = %e, "could not persist an always-allow answer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(exe: &str) -> Peer {
        Peer {
            uid: 1,
            pid: Some(9),
            exe: Some(exe.into()),
        }
    }

    fn policy(mode: PolicyMode, allow: &[&str]) -> Policy {
        let cfg = BTreeMap::from([(
            "claude".to_owned(),
            PolicyConfig {
                mode,
                allow_exe: allow.iter().map(|s| (*s).to_owned()).collect(),
            },
        )]);
        Policy::new(&cfg, Path::new("/cfg.toml"), None)
    }

    #[test]
    fn allowlist_refuses_unlisted_with_the_fix() {
        let p = policy(PolicyMode::Allow, &["/usr/local/bin/cf"]);
        assert_eq!(
            p.check("claude", &peer("/usr/local/bin/cf")),
            Verdict::Allow
        );
        match p.check("claude", &peer("/usr/bin/curl")) {
            Verdict::Deny { code, message } => {
                assert_eq!(code, ErrorCode::NotAllowed);
                assert!(
                    message.contains("allow_exe under [policy.claude]"),
                    "{message}"
                );
                assert!(message.contains("/usr/bin/curl"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.check("codex", &peer("/usr/bin/curl")), Verdict::Allow);
    }

    #[test]
    fn ask_mode_asks_then_remembers() {
        let p = policy(PolicyMode::Ask, &[]);
        assert_eq!(p.check("claude", &peer("/bin/sh")), Verdict::Ask);
        p.remember("claude", "/bin/sh");
        assert_eq!(p.check("claude", &peer("/bin/sh")), Verdict::Allow);
        assert_eq!(p.check("claude", &peer("/bin/bash")), Verdict::Ask);
    }
}
