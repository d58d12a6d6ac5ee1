//! Launch plans for `keyferry exec`: which variables a command gets (generated from
//! credentials, forwarded from the host, extra), which are removed, what it mounts and its
//! network — built once, then either printed as the pre-launch audit or executed, so the
//! audit always describes exactly what runs. The audit's text is in `audit`, the reading of
//! a launcher's argv (bwrap, docker, podman) in `inspect`.

use std::process::Command;

use crate::secret::Secret;

mod audit;
mod inspect;

pub use inspect::inspect_command;

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

#[derive(Debug, Clone)]
pub struct Var {
    pub origin: Origin,
    pub key: String,
    pub value: Secret,
    /// Where a generated value came from (`claude: keychain:cf-claude-token`).
    pub note: Option<String>,
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
        mounts.extend(snapshots);
        Self {
            argv,
            vars,
            removed,
            clean_env,
            inherited,
            mounts,
            network,
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
