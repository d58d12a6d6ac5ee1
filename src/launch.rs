//! Launch plans for `keyferry exec`: which variables a command gets (generated from
//! credentials, forwarded from the host, extra), which are removed, what it mounts and its
//! network — built once, then either printed as the pre-launch audit or executed, so the
//! audit always describes exactly what runs.

use std::fmt::Write as _;
use std::process::Command;

use crate::credential::mask;
use crate::secret::Secret;

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

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Self::Generated => "[~]",
            Self::Forwarded => "[>]",
            Self::Extra => "[+]",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Self::Generated => "\x1b[32m",
            Self::Forwarded => "\x1b[33m",
            Self::Extra => "\x1b[36m",
        }
    }
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
                    removed.push((
                        (*k).to_owned(),
                        format!("it would take precedence over {g}"),
                    ));
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

    /// The pre-launch audit (seed 001): one variable list with `[~]`/`[>]`/`[+]`, every value
    /// masked, then Mounts and Network. Colour only adds to the prefixes, never replaces them.
    #[must_use]
    pub fn audit(&self, color: bool) -> String {
        let (bold, reset) = if color {
            ("\x1b[1m", "\x1b[0m")
        } else {
            ("", "")
        };
        let mut out = format!("{bold}=== Sandbox Environment ==={reset}\n");
        let order = [Origin::Generated, Origin::Forwarded, Origin::Extra];
        for origin in order {
            for v in self.vars.iter().filter(|v| v.origin == origin) {
                let prefix = if color {
                    format!("{}{}{reset}", origin.color(), origin.prefix())
                } else {
                    origin.prefix().to_owned()
                };
                if v.key == "PATH" {
                    let _ = writeln!(out, " {prefix} PATH=");
                    for entry in v.value.expose().split(':') {
                        let _ = writeln!(out, "       {entry}");
                    }
                    continue;
                }
                let _ = write!(out, " {prefix} {}={}", v.key, mask(v.value.expose()));
                if let Some(note) = &v.note {
                    let _ = write!(out, "  ({note})");
                }
                out.push('\n');
            }
        }
        for (k, why) in &self.removed {
            let _ = writeln!(out, " [-] {k} (removed: {why})");
        }
        if self.inherited > 0 {
            let _ = writeln!(
                out,
                "     … and {} other host variables, inherited unlisted (--clean-env drops them)",
                self.inherited
            );
        }
        let _ = writeln!(out, "\n{bold}Mounts:{reset}");
        if self.mounts.is_empty() {
            out.push_str("  (none declared on the command line)\n");
        }
        for m in &self.mounts {
            let _ = writeln!(out, "  {:<28} {} ({})", m.target, m.source, m.mode);
        }
        let _ = writeln!(out, "\n{bold}Network:{reset}\n  {}", self.network);
        let _ = writeln!(out, "\n{bold}Command:{reset}\n  {}", self.argv.join(" "));
        out
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

/// Mounts and network declared by well-known launchers' arguments (bwrap, docker, podman).
#[must_use]
pub fn inspect_command(argv: &[String]) -> (Vec<Mount>, String) {
    let prog = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
        .unwrap_or_default();
    let mut mounts = Vec::new();
    let mut network = "full (host network)".to_owned();
    let arg = |i: usize| argv.get(i).cloned().unwrap_or_default();
    match prog.as_str() {
        "bwrap" => {
            let (mut unshared, mut shared) = (false, false);
            let mut i = 1;
            while i < argv.len() {
                let a = argv[i].as_str();
                let mode = match a {
                    "--bind" | "--bind-try" | "--dev-bind" | "--dev-bind-try" => Some("read-write"),
                    "--ro-bind" | "--ro-bind-try" => Some("read-only"),
                    _ => None,
                };
                if let Some(mode) = mode {
                    mounts.push(Mount {
                        source: arg(i + 1),
                        target: arg(i + 2),
                        mode,
                    });
                    i += 3;
                    continue;
                }
                match a {
                    "--tmpfs" => {
                        mounts.push(Mount {
                            source: "tmpfs".into(),
                            target: arg(i + 1),
                            mode: "read-write",
                        });
                        i += 2;
                        continue;
                    }
                    "--unshare-net" | "--unshare-all" => unshared = true,
                    "--share-net" => shared = true,
                    _ if !a.starts_with("--") => break,
                    _ => {}
                }
                i += 1;
            }
            if unshared && !shared {
                network = "none (bwrap --unshare-net)".into();
            }
        }
        "docker" | "podman" => {
            network = format!("{prog} default (bridge)");
            let mut i = 1;
            while i < argv.len() {
                let a = argv[i].as_str();
                let (flag, value, step) = match a.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, v.to_owned(), 1),
                    _ => (a, arg(i + 1), 2),
                };
                match flag {
                    "-v" | "--volume" => {
                        let parts: Vec<&str> = value.split(':').collect();
                        if parts.len() >= 2 {
                            let ro = parts
                                .get(2)
                                .is_some_and(|o| o.split(',').any(|x| x == "ro"));
                            mounts.push(Mount {
                                source: parts[0].into(),
                                target: parts[1].into(),
                                mode: if ro { "read-only" } else { "read-write" },
                            });
                        }
                        i += step;
                    }
                    "--mount" => {
                        let kv: Vec<(&str, &str)> = value
                            .split(',')
                            .filter_map(|p| p.split_once('=').or(Some((p, ""))))
                            .collect();
                        let get = |k: &[&str]| {
                            kv.iter()
                                .find(|(kk, _)| k.contains(kk))
                                .map(|(_, v)| (*v).to_owned())
                        };
                        mounts.push(Mount {
                            source: get(&["source", "src"]).unwrap_or_default(),
                            target: get(&["target", "dst", "destination"]).unwrap_or_default(),
                            mode: if kv
                                .iter()
                                .any(|(k, v)| *k == "readonly" || *k == "ro" && *v != "false")
                            {
                                "read-only"
                            } else {
                                "read-write"
                            },
                        });
                        i += step;
                    }
                    "--network" | "--net" => {
                        network = match value.as_str() {
                            "none" => "none".into(),
                            "host" => "full (host network)".into(),
                            other => format!("{other} ({prog} network)"),
                        };
                        i += step;
                    }
                    _ => i += 1,
                }
            }
        }
        _ => {}
    }
    (mounts, network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(String, String)> {
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

    fn plan(argv: &[&str], clean: bool) -> Plan {
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
    fn audit_lists_generated_forwarded_extra_and_removed_masked() {
        let p = plan(
            &[
                "docker",
                "run",
                "--rm",
                "-e",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "-v",
                "/a:/b:ro",
                "img",
            ],
            false,
        );
        let text = p.audit(false);
        assert!(text.contains(" [~] CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-…1234  (claude: keychain:cf-claude-token)"), "{text}");
        assert!(text.contains(" [>] ANTHROPIC_BASE_URL=http…8080"), "{text}");
        assert!(text.contains(" [+] MY_VAR=…****"), "{text}");
        assert!(text.contains(" [-] ANTHROPIC_API_KEY (removed: it would take precedence over CLAUDE_CODE_OAUTH_TOKEN)"), "{text}");
        assert!(text.contains("… and 2 other host variables"), "{text}");
        assert!(
            text.contains("/b") && text.contains("(read-only)"),
            "{text}"
        );
        assert!(text.contains("docker default (bridge)"), "{text}");
        assert!(
            !text.contains("TOKENtoken") && !text.contains("HOSTkey"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        let colored = p.audit(true);
        assert!(
            colored.contains("\x1b[32m[~]\x1b[0m"),
            "prefixes stay readable without colour"
        );
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

    #[test]
    fn bwrap_mounts_and_network() {
        let (m, net) = inspect_command(
            &[
                "bwrap",
                "--ro-bind",
                "/snap",
                "/h/.claude/.credentials.json",
                "--tmpfs",
                "/tmp",
                "--unshare-net",
                "claude",
            ]
            .map(String::from),
        );
        assert_eq!(
            m[0],
            Mount {
                source: "/snap".into(),
                target: "/h/.claude/.credentials.json".into(),
                mode: "read-only"
            }
        );
        assert_eq!(m[1].target, "/tmp");
        assert_eq!(net, "none (bwrap --unshare-net)");
    }
}
