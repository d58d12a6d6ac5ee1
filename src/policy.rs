//! Policy: which client executables may read which credential, and when to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{PolicyConfig, PolicyMode, SandboxAllow, SandboxRule};
use crate::domain::{ErrorBody, ErrorCode, Peer, SandboxKind};
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
    /// `sandboxed_peers` per credential, and `[policy]`'s for the rest.
    sandbox_rules: BTreeMap<String, SandboxRule>,
    sandbox_default: SandboxRule,
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
        sandbox_default: &SandboxRule,
        config_path: &Path,
        store: Option<PathBuf>,
    ) -> Self {
        let sandbox_rules = cfg
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p.sandboxed_peers.clone()?)))
            .collect();
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
            sandbox_rules,
            sandbox_default: sandbox_default.clone(),
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

    /// Whether a peer may make a token-bearing request (`credential` names the credential
    /// it concerns, `None` for store/settings/approvals and the like). A host peer always
    /// passes; a sandboxed one only where `sandboxed_peers` allows its kind or executable.
    ///
    /// # Errors
    /// `sandboxed_peer`, naming the sandbox, the gateway alternative and the one config line
    /// that allows it.
    pub fn check_sandbox(&self, credential: Option<&str>, peer: &Peer) -> Result<(), ErrorBody> {
        let Some(kind) = peer.sandbox else {
            return Ok(());
        };
        let rule = credential
            .and_then(|c| self.sandbox_rules.get(c))
            .unwrap_or(&self.sandbox_default);
        let exe = peer.exe.as_deref().unwrap_or("");
        let allowed = match rule {
            SandboxRule::Allow => true,
            SandboxRule::Refuse => false,
            SandboxRule::Only(list) => list.iter().any(|a| match a {
                SandboxAllow::Kind(k) => *k == kind,
                SandboxAllow::Exe(e) => {
                    !exe.is_empty() && canonical_forms(e).iter().any(|f| f == exe)
                }
            }),
        };
        if allowed {
            return Ok(());
        }
        // An unknown sandbox is best allowed by its executable; a known kind by its name.
        let entry = match kind {
            SandboxKind::Unknown if !exe.is_empty() => format!("{exe:?}"),
            _ => format!("\"{}\"", kind.as_str()),
        };
        let (table, what) = match credential {
            Some(c) => (format!("[policy.{c}]"), format!("{c:?}")),
            None => ("[policy]".to_owned(), "this request".to_owned()),
        };
        let gateway = match credential {
            Some(c) => format!("`keyferry grant NAME --cred {c}` on the host"),
            None => "`keyferry grant NAME` on the host".to_owned(),
        };
        Err(ErrorBody::new(
            ErrorCode::SandboxedPeer,
            format!(
                "{peer} runs in a sandbox ({}): the agent serves {what} only to processes on the host. \
                 Give the sandbox a gateway grant instead ({gateway}: it gets a placeholder, never the token); \
                 or, if this sandbox is your own workspace, add `sandboxed_peers = [{entry}]` under {table} in {}",
                kind.label(),
                self.config_path
            ),
        ))
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
            sandbox: None,
        }
    }

    fn policy(mode: PolicyMode, allow: &[&str]) -> Policy {
        let cfg = BTreeMap::from([(
            "claude".to_owned(),
            PolicyConfig {
                mode,
                allow_exe: allow.iter().map(|s| (*s).to_owned()).collect(),
                sandboxed_peers: None,
            },
        )]);
        Policy::new(&cfg, &SandboxRule::Refuse, Path::new("/cfg.toml"), None)
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

    fn sandboxed(kind: SandboxKind, exe: &str) -> Peer {
        Peer {
            sandbox: Some(kind),
            ..peer(exe)
        }
    }

    #[test]
    fn sandboxed_peers_are_refused_by_default_with_the_line_that_allows_them() {
        let p = policy(PolicyMode::Allow, &[]);
        assert_eq!(
            p.check_sandbox(Some("claude"), &peer("/usr/bin/socat")),
            Ok(())
        );
        let e = p
            .check_sandbox(
                Some("claude"),
                &sandboxed(SandboxKind::Toolbox, "/usr/bin/socat"),
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxedPeer);
        assert!(e.message.contains("toolbox/distrobox"), "{}", e.message);
        assert!(
            e.message.contains("keyferry grant NAME --cred claude"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("`sandboxed_peers = [\"toolbox\"]` under [policy.claude]"),
            "{}",
            e.message
        );
        let e = p
            .check_sandbox(None, &sandboxed(SandboxKind::Unknown, "/usr/bin/socat"))
            .unwrap_err();
        assert!(
            e.message
                .contains("`sandboxed_peers = [\"/usr/bin/socat\"]` under [policy]"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_rule_allows_kinds_and_executables_per_credential() {
        let cfg = BTreeMap::from([(
            "claude".to_owned(),
            PolicyConfig {
                sandboxed_peers: Some(SandboxRule::Only(vec![
                    SandboxAllow::Kind(SandboxKind::Flatpak),
                    SandboxAllow::Exe("/usr/bin/code".into()),
                ])),
                ..PolicyConfig::default()
            },
        )]);
        let p = Policy::new(&cfg, &SandboxRule::Refuse, Path::new("/c.toml"), None);
        let flatpak = sandboxed(SandboxKind::Flatpak, "/app/bin/x");
        let code = sandboxed(SandboxKind::Bubblewrap, "/usr/bin/code");
        let bwrap = sandboxed(SandboxKind::Bubblewrap, "/usr/bin/socat");
        assert_eq!(p.check_sandbox(Some("claude"), &flatpak), Ok(()));
        assert_eq!(p.check_sandbox(Some("claude"), &code), Ok(()));
        assert!(p.check_sandbox(Some("claude"), &bwrap).is_err());
        // Other credentials and requests naming none follow [policy]'s default.
        assert!(p.check_sandbox(Some("codex"), &flatpak).is_err());
        assert!(p.check_sandbox(None, &flatpak).is_err());
        let open = Policy::new(&cfg, &SandboxRule::Allow, Path::new("/c.toml"), None);
        assert_eq!(open.check_sandbox(None, &bwrap), Ok(()));
        assert_eq!(open.check_sandbox(Some("codex"), &bwrap), Ok(()));
    }
}
