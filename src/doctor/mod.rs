//! `keyferry doctor`: every check of what a user could get wrong (keychain, Claude Code's
//! login, the agent and its socket, the gateway, sinks, notifications, autostart, the CLIs
//! on PATH), each a typed [`Check`] that names the fix. Reads only; never prompts, never
//! prints or passes on a secret.

mod agent;
mod clis;
mod desktop;
mod keychain;
mod sinks;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::domain::exit;

/// How a check came out, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    /// Not applicable here (not configured, not on this OS).
    Skip,
    /// Worth knowing, not broken.
    Warn,
    /// Broken: `doctor` exits non-zero.
    Fail,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skip => "skip",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One thing checked. `detail` and `fix` name paths, items and programs, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub state: State,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, state: State, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, State::Ok, detail)
    }

    pub(crate) fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, State::Skip, detail)
    }

    pub(crate) fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, State::Warn, detail).with_fix(fix)
    }

    pub(crate) fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, State::Fail, detail).with_fix(fix)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    #[must_use]
    pub fn new(checks: Vec<Check>) -> Self {
        Self {
            ok: checks.iter().all(|c| c.state != State::Fail),
            checks,
        }
    }

    /// `0` when nothing failed, [`exit::ERROR`] otherwise.
    #[must_use]
    pub fn exit_status(&self) -> i32 {
        if self.ok {
            exit::OK
        } else {
            exit::ERROR
        }
    }
}

/// What the checks look at.
pub struct Context<'a> {
    /// The config, or the defaults when it could not be loaded (`config_error`).
    pub config: &'a Config,
    /// Why the config file could not be loaded; the other checks then run on defaults.
    pub config_error: Option<&'a ConfigError>,
    /// The agent's socket, as `agent::socket::path` resolves it.
    pub socket: PathBuf,
    /// The environment (where Claude Code keeps its login; PATH for the CLIs).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// How long each `X --version` may take before it is killed.
    pub version_timeout: Duration,
}

/// The CLIs whose versions are reported.
pub const CLIS: [&str; 3] = ["claude", "codex", "gemini"];

/// Runs every check.
#[must_use]
pub fn run(ctx: &Context<'_>) -> Report {
    let mut checks = vec![config(ctx)];
    checks.extend(keychain::checks(ctx));
    checks.extend(agent::checks(ctx));
    checks.push(sandbox());
    checks.extend(desktop::checks(ctx));
    checks.extend(clis::checks(ctx));
    Report::new(checks)
}

/// How long each `claude/codex/gemini --version` may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Every check for the config at `config_path` (default: the usual one) and the socket it
/// (or `socket`) names, with this process's environment: what `keyferry doctor` and the
/// window's Doctor pane run.
#[must_use]
pub fn check(config_path: Option<&std::path::Path>, socket: Option<&std::path::Path>) -> Report {
    let env = |k: &str| std::env::var(k).ok();
    let loaded = match config_path {
        Some(p) => Config::load_named(p, crate::config::NamedBy::Flag),
        None => Config::load(),
    };
    let (config, config_error) = match &loaded {
        Ok(c) => (c.clone(), None),
        Err(e) => (Config::default(), Some(e)),
    };
    run(&Context {
        config: &config,
        config_error,
        socket: crate::agent::socket::path(socket, config.agent.socket.as_deref()),
        env: &env,
        version_timeout: VERSION_TIMEOUT,
    })
}

/// Whether `doctor` itself runs in a sandbox, as the agent would tell (it refuses such
/// peers tokens unless `sandboxed_peers` allows them).
fn sandbox() -> Check {
    const NAME: &str = "sandbox";
    match crate::agent::peer::this_process_sandbox() {
        None => Check::ok(
            NAME,
            "no sandbox detected around this process (bubblewrap, Flatpak, toolbox and Podman are seen from inside; the agent tells every sandbox by its namespaces)",
        ),
        Some(kind) => Check::warn(
            NAME,
            format!(
                "this process runs in a sandbox ({}): the agent answers it `sandboxed_peer` for tokens, snapshots, grants and settings",
                kind.label()
            ),
            format!(
                "give the sandbox a gateway grant (`keyferry grant NAME` on the host), or allow it with `sandboxed_peers = [\"{}\"]` under [policy] in config.toml",
                kind.as_str()
            ),
        ),
    }
}

fn config(ctx: &Context<'_>) -> Check {
    const NAME: &str = "config";
    if let Some(e) = ctx.config_error {
        return Check::fail(
            NAME,
            format!("{} (the checks below use the defaults)", e.one_line()),
            "fix what the message names, or move the file aside to use the defaults",
        );
    }
    let path = &ctx.config.path;
    let shown = crate::paths::display(path);
    if path.as_os_str().is_empty() || !path.exists() {
        Check::ok(NAME, format!("{shown}: not present, the defaults apply"))
    } else {
        Check::ok(NAME, format!("{shown}: parsed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_failure_fails_the_report_and_warnings_do_not() {
        let warn = Check::warn("autostart", "not installed", "keyferry agent install");
        let r = Report::new(vec![Check::ok("agent", "up"), warn.clone()]);
        assert!(r.ok);
        assert_eq!(r.exit_status(), exit::OK);
        let r = Report::new(vec![warn, Check::fail("agent", "down", "start it")]);
        assert!(!r.ok);
        assert_eq!(r.exit_status(), exit::ERROR);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"fail""#), "{json}");
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
