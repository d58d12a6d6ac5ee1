//! Launch plans for `keyferry exec`: which variables a command gets (generated from
//! credentials, forwarded from the host, extra), which are removed, what it mounts and its
//! network — built once, then either printed as the pre-launch audit or executed, so the
//! audit always describes exactly what runs. The audit's text is in `audit`, the reading of
//! a launcher's argv (bwrap, docker, podman) in `inspect`.

use std::process::{Command, ExitStatus};

use crate::domain::exit;
use crate::secret::Secret;

mod audit;
mod inspect;
pub mod reach;

pub use inspect::{inspect_command, passed_env, PassedEnv};

/// Forwarded from the host when set there (seed 000: corporate proxy and auth headers).
pub const FORWARD: [&str; 2] = ["ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS"];
/// Kept from the host with `--clean-env`.
pub const KEEP: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ", "TMPDIR",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `[~]` made by keyferry (a credential's token).
    Generated,
    /// `[>]` taken from the host environment.
    Forwarded,
    /// `[+]` given with `--env`.
    Extra,
}

/// How the audit shows a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// A token or a placeholder (or a forwarded host value): its known prefix (or first 4
    /// characters) and last 4, as `show` prints a token, so it can be told apart.
    Masked,
    /// A value the user passed (`--env K=V`): of no known shape, so nothing of it is shown,
    /// whatever its length — `…****`.
    Hidden,
    /// Known not to be secret (the gateway's base URL): in full, so it can be checked.
    InFull,
}

#[derive(Debug, Clone)]
pub struct Var {
    pub origin: Origin,
    pub key: String,
    pub value: Secret,
    /// Where a generated value came from (`claude: keychain:cf-claude-token`).
    pub note: Option<String>,
    pub reveal: Reveal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub mode: &'static str,
}

/// A token to inject: credential name, variable, value and its origin label.
pub struct Injection {
    pub name: String,
    pub var: String,
    pub token: Secret,
    pub origin: String,
    pub reveal: Reveal,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub argv: Vec<String>,
    pub vars: Vec<Var>,
    /// Host variables removed, with why.
    pub removed: Vec<(String, String)>,
    pub clean_env: bool,
    /// Host variables passed through unlisted (without `--clean-env`).
    pub inherited: usize,
    pub mounts: Vec<Mount>,
    pub network: String,
    /// What the mounts and network expose of the host's secrets (`[!]` lines).
    pub exposures: Vec<reach::Exposure>,
    /// Variables keyferry sets that a container runtime will not pass in (`[!]` lines).
    pub unpassed: Vec<Unpassed>,
}

/// A variable keyferry sets for `docker|podman run` that the container never sees: the
/// runtime passes only the variables named with `-e`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpassed {
    pub key: String,
    /// `docker` or `podman`.
    pub runtime: String,
    /// An `--env-file` was given, which might set it (to a copy, not the live value).
    pub env_file: bool,
}

/// Variables that outrank `var` in Claude Code's auth precedence
/// (`ANTHROPIC_AUTH_TOKEN` > `ANTHROPIC_API_KEY` > … > `CLAUDE_CODE_OAUTH_TOKEN`).
fn outranking(var: &str) -> &'static [&'static str] {
    match var {
        "CLAUDE_CODE_OAUTH_TOKEN" => &["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"],
        "ANTHROPIC_API_KEY" => &["ANTHROPIC_AUTH_TOKEN"],
        // A gateway placeholder: no real token may ride along into the sandbox.
        "ANTHROPIC_AUTH_TOKEN" => &["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"],
        _ => &[],
    }
}

impl Plan {
    /// Builds the plan from the host environment `host`.
    #[must_use]
    pub fn build(
        argv: Vec<String>,
        injections: Vec<Injection>,
        extra: Vec<(String, Secret)>,
        clean_env: bool,
        host: &[(String, String)],
        snapshots: Vec<Mount>,
    ) -> Self {
        let host_get = |k: &str| host.iter().find(|(hk, _)| hk == k).map(|(_, v)| v.clone());
        let mut vars: Vec<Var> = injections
            .into_iter()
            .map(|i| Var {
                origin: Origin::Generated,
                key: i.var,
                value: i.token,
                note: Some(format!("{}: {}", i.name, i.origin)),
                reveal: i.reveal,
            })
            .collect();
        let set_by_us = |vars: &[Var], extra: &[(String, Secret)], k: &str| {
            vars.iter().any(|v| v.key == k) || extra.iter().any(|(ek, _)| ek == k)
        };
        let mut forwarded: Vec<&str> = FORWARD.to_vec();
        if clean_env {
            forwarded.extend(KEEP);
        }
        for k in forwarded {
            if set_by_us(&vars, &extra, k) {
                continue;
            }
            if let Some(v) = host_get(k) {
                vars.push(Var {
                    origin: Origin::Forwarded,
                    key: k.to_owned(),
                    value: Secret::new(v),
                    note: None,
                    reveal: Reveal::Masked,
                });
            }
        }
        let mut removed = Vec::new();
        let generated: Vec<String> = vars
            .iter()
            .filter(|v| v.origin == Origin::Generated)
            .map(|v| v.key.clone())
            .collect();
        for g in &generated {
            for k in outranking(g) {
                if host_get(k).is_some()
                    && !set_by_us(&vars, &extra, k)
                    && !removed.iter().any(|(r, _)| r == k)
                {
                    let why = if g == "ANTHROPIC_AUTH_TOKEN" {
                        "a real token must not enter the sandbox; the gateway holds it".to_owned()
                    } else {
                        format!("it would take precedence over {g}")
                    };
                    removed.push(((*k).to_owned(), why));
                }
            }
        }
        for (k, v) in extra {
            vars.push(Var {
                origin: Origin::Extra,
                key: k,
                value: v,
                note: None,
                reveal: Reveal::Hidden,
            });
        }
        let inherited = if clean_env {
            0
        } else {
            host.iter()
                .filter(|(k, _)| {
                    !vars.iter().any(|v| &v.key == k) && !removed.iter().any(|(r, _)| r == k)
                })
                .count()
        };
        let (mut mounts, network) = inspect_command(&argv);
        let exposures = reach::exposures(&mounts, &network, host);
        mounts.extend(snapshots);
        let unpassed = passed_env(&argv)
            .filter(|p| !p.env_host)
            .map(|p| {
                vars.iter()
                    // What the runtime itself needs (PATH, HOME…) is not meant for inside.
                    .filter(|v| !KEEP.contains(&v.key.as_str()))
                    .filter(|v| !p.names.contains(&v.key))
                    .map(|v| Unpassed {
                        key: v.key.clone(),
                        runtime: p.runtime.clone(),
                        env_file: p.env_file,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            argv,
            vars,
            removed,
            clean_env,
            inherited,
            mounts,
            network,
            exposures,
            unpassed,
        }
    }

    /// The command, with exactly the environment the audit lists.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        if self.clean_env {
            cmd.env_clear();
        }
        for (k, _) in &self.removed {
            cmd.env_remove(k);
        }
        for v in &self.vars {
            cmd.env(&v.key, v.value.expose());
        }
        cmd
    }

    /// Replaces this process with the command; returns only if that failed.
    #[must_use]
    pub fn exec(&self) -> LaunchError {
        use std::os::unix::process::CommandExt;
        LaunchError::new(&self.argv[0], self.command().exec())
    }

    /// Runs the command as a child and waits for it.
    ///
    /// # Errors
    /// It could not be started.
    pub fn run(&self) -> Result<ExitStatus, LaunchError> {
        self.command()
            .status()
            .map_err(|e| LaunchError::new(&self.argv[0], e))
    }
}

/// The command could not be started. Exits like a shell does, so a launcher script can tell
/// a missing tool (127) from one that cannot run (126) and from the tool's own failure.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {program}: command not found (no such file, nor on PATH)")]
    NotFound {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source} (is it executable? chmod +x it)")]
    NotExecutable {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl LaunchError {
    fn new(program: &str, source: std::io::Error) -> Self {
        let program = program.to_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { program, source }
        } else {
            Self::NotExecutable { program, source }
        }
    }

    /// 127 or 126, as `sh` exits for the same command.
    #[must_use]
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::NotFound { .. } => exit::COMMAND_NOT_FOUND,
            Self::NotExecutable { .. } => exit::NOT_EXECUTABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn host() -> Vec<(String, String)> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:8080"),
            ("ANTHROPIC_API_KEY", "sk-ant-api03-HOSTkeyAAAAbbbb"),
            ("EDITOR", "vi"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    pub(super) fn plan(argv: &[&str], clean: bool) -> Plan {
        Plan::build(
            argv.iter().map(|s| (*s).to_owned()).collect(),
            vec![Injection {
                name: "claude".into(),
                var: "CLAUDE_CODE_OAUTH_TOKEN".into(),
                token: Secret::new("sk-ant-oat01-TOKENtokenTOKEN1234".into()),
                origin: "keychain:cf-claude-token".into(),
                reveal: Reveal::Masked,
            }],
            vec![("MY_VAR".into(), Secret::new("value-extra".into()))],
            clean,
            &host(),
            Vec::new(),
        )
    }

    #[test]
    fn command_gets_exactly_the_audited_environment() {
        let p = plan(&["env"], true);
        let cmd = p.command();
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&(
            "CLAUDE_CODE_OAUTH_TOKEN".into(),
            Some("sk-ant-oat01-TOKENtokenTOKEN1234".into())
        )));
        assert!(
            !envs
                .iter()
                .any(|(k, v)| k == "ANTHROPIC_API_KEY" && v.is_some()),
            "removed: {envs:?}"
        );
        assert!(envs.iter().any(|(k, _)| k == "PATH"));
        assert!(
            !envs.iter().any(|(k, _)| k == "EDITOR"),
            "--clean-env drops the rest"
        );
        let text = p.audit(false);
        assert!(
            text.contains(" [>] PATH=\n       /usr/bin\n       /bin\n"),
            "{text}"
        );
    }

    #[test]
    fn inherited_env_removes_outranking_keys() {
        let p = plan(&["env"], false);
        let envs: Vec<_> = p
            .command()
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.is_some()))
            .collect();
        assert!(
            envs.contains(&("ANTHROPIC_API_KEY".into(), false)),
            "{envs:?}"
        );
    }
}
