//! What a launcher's argv declares: the mounts and network of `bwrap`, `docker` and `podman`
//! command lines, for the pre-launch audit. Only the launcher's own options are read: the
//! sandboxed command (after bwrap's options, after docker's image) is never taken for flags.

use super::Mount;

/// What `docker|podman run` passes into the container's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassedEnv {
    /// `docker` or `podman`.
    pub runtime: String,
    /// Named with `-e NAME`, `-e NAME=VALUE`, `--env NAME`, `--env=NAME`.
    pub names: Vec<String>,
    /// `--env-file` was given (its contents are not read).
    pub env_file: bool,
    /// podman's `--env-host`: the whole environment goes in.
    pub env_host: bool,
}

/// The environment a `docker|podman [container] run|create` passes in; `None` for any
/// other command (a plain child inherits everything).
#[must_use]
pub fn passed_env(argv: &[String]) -> Option<PassedEnv> {
    let prog = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p))?;
    if !matches!(prog, "docker" | "podman") {
        return None;
    }
    container(prog, argv.get(1..).unwrap_or_default()).2
}

const READ_WRITE: &str = "read-write";
const READ_ONLY: &str = "read-only";

/// Mounts and network declared by well-known launchers' arguments (bwrap, docker, podman).
#[must_use]
pub fn inspect_command(argv: &[String]) -> (Vec<Mount>, String) {
    let prog = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
        .unwrap_or_default();
    let args = argv.get(1..).unwrap_or_default();
    match prog.as_str() {
        "bwrap" => bwrap(args),
        "docker" | "podman" => {
            let (mounts, network, _) = container(&prog, args);
            (mounts, network)
        }
        _ => (Vec::new(), "full (host network)".to_owned()),
    }
}

/// How many values a bwrap option takes (bwrap(1)); unknown options are taken as flags.
fn bwrap_arity(option: &str) -> usize {
    match option {
        "--bind" | "--bind-try" | "--dev-bind" | "--dev-bind-try" | "--ro-bind"
        | "--ro-bind-try" | "--setenv" | "--symlink" | "--file" | "--bind-data"
        | "--ro-bind-data" | "--chmod" => 2,
        "--args" | "--argv0" | "--userns" | "--userns2" | "--pidns" | "--uid" | "--gid"
        | "--hostname" | "--chdir" | "--unsetenv" | "--lock-file" | "--sync-fd"
        | "--remount-ro" | "--exec-label" | "--file-label" | "--proc" | "--dev" | "--tmpfs"
        | "--mqueue" | "--dir" | "--seccomp" | "--add-seccomp-fd" | "--block-fd"
        | "--userns-block-fd" | "--info-fd" | "--json-status-fd" | "--cap-add" | "--cap-drop"
        | "--perms" | "--size" | "--overlay-src" | "--overlay" | "--tmp-overlay"
        | "--ro-overlay" => 1,
        _ => 0,
    }
}

fn bwrap(args: &[String]) -> (Vec<Mount>, String) {
    let value = |i: usize| args.get(i).cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    let (mut unshared, mut shared) = (false, false);
    let mut i = 0;
    while let Some(a) = args.get(i).map(String::as_str) {
        if a == "--" || !a.starts_with("--") {
            // The sandboxed command starts here.
            break;
        }
        let mode = match a {
            "--bind" | "--bind-try" | "--dev-bind" | "--dev-bind-try" => Some(READ_WRITE),
            "--ro-bind" | "--ro-bind-try" => Some(READ_ONLY),
            _ => None,
        };
        if let Some(mode) = mode {
            mounts.push(Mount {
                source: value(i + 1),
                target: value(i + 2),
                mode,
            });
        }
        match a {
            "--tmpfs" => mounts.push(Mount {
                source: "tmpfs".into(),
                target: value(i + 1),
                mode: READ_WRITE,
            }),
            "--unshare-net" | "--unshare-all" => unshared = true,
            "--share-net" => shared = true,
            _ => {}
        }
        i += 1 + bwrap_arity(a);
    }
    let network = if unshared && !shared {
        "none (bwrap --unshare-net)"
    } else {
        "full (host network)"
    };
    (mounts, network.to_owned())
}

/// Global options of docker/podman (before the subcommand) that take a value.
const GLOBAL_VALUED: &[&str] = &[
    "-H",
    "--host",
    "-c",
    "--context",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--connection",
    "--url",
    "--identity",
    "--root",
    "--runroot",
    "--storage-driver",
    "--storage-opt",
    "--cgroup-manager",
    "--events-backend",
    "--hooks-dir",
    "--network-cmd-path",
    "--runtime",
    "--tmpdir",
    "--module",
];

/// Options of `run`/`create` that take no value (all others without `=` take the next
/// argument); `-it`-style clusters of these short flags are flags too.
const RUN_FLAGS: &[&str] = &[
    "--rm",
    "--detach",
    "--interactive",
    "--tty",
    "--privileged",
    "--init",
    "--read-only",
    "--publish-all",
    "--no-healthcheck",
    "--oom-kill-disable",
    "--disable-content-trust",
    "--quiet",
    "--help",
    "--replace",
    "--rmi",
    "--env-host",
    "--http-proxy",
    "--no-hosts",
    "--read-only-tmpfs",
    "--sig-proxy",
    "--use-comment",
    "--passwd",
    "--rootfs",
];
const RUN_SHORT_FLAGS: &str = "ditPq";

fn takes_value(flag: &str) -> bool {
    if RUN_FLAGS.contains(&flag) {
        return false;
    }
    match flag.strip_prefix('-') {
        Some(short) if !short.starts_with('-') && !short.is_empty() => {
            !short.chars().all(|c| RUN_SHORT_FLAGS.contains(c))
        }
        _ => true,
    }
}

/// `docker|podman [GLOBAL OPTIONS] [container] run|create [OPTIONS] IMAGE [COMMAND…]`: only
/// OPTIONS are read; everything from IMAGE on belongs to the container.
fn container(prog: &str, args: &[String]) -> (Vec<Mount>, String, Option<PassedEnv>) {
    let mut mounts = Vec::new();
    let mut network = format!("{prog} default (bridge)");
    let mut i = 0;
    // Global options, then the subcommand.
    while let Some(a) = args.get(i).map(String::as_str) {
        if !a.starts_with('-') {
            break;
        }
        i += if !a.contains('=') && GLOBAL_VALUED.contains(&a) {
            2
        } else {
            1
        };
    }
    if args.get(i).map(String::as_str) == Some("container") {
        i += 1;
    }
    if !matches!(args.get(i).map(String::as_str), Some("run" | "create")) {
        return (mounts, network, None);
    }
    i += 1;
    let mut env = PassedEnv {
        runtime: prog.to_owned(),
        ..PassedEnv::default()
    };
    while let Some(a) = args.get(i).map(String::as_str) {
        if a == "--" || !a.starts_with('-') || a == "-" {
            // The image: what follows is the container's command.
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a, None),
        };
        let valued = inline.is_none() && takes_value(flag);
        let value = inline.unwrap_or_else(|| {
            if valued {
                args.get(i + 1).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        });
        match flag {
            "-v" | "--volume" => mounts.extend(volume(&value)),
            "--mount" => mounts.push(mount(&value)),
            "-e" | "--env" => {
                let name = value.split_once('=').map_or(value.as_str(), |(k, _)| k);
                env.names.push(name.to_owned());
            }
            "--env-file" => env.env_file = true,
            "--env-host" => env.env_host = true,
            "--network" | "--net" => {
                network = match value.as_str() {
                    "none" => "none".into(),
                    "host" => "full (host network)".into(),
                    other => format!("{other} ({prog} network)"),
                };
            }
            _ => {}
        }
        i += if valued { 2 } else { 1 };
    }
    (mounts, network, Some(env))
}

/// `-v SRC:DST[:OPTS]`; read-only when OPTS holds `ro` (or `readonly`).
fn volume(value: &str) -> Option<Mount> {
    let parts: Vec<&str> = value.split(':').collect();
    if parts.len() < 2 {
        return None;
    }
    let ro = parts
        .get(2)
        .is_some_and(|o| o.split(',').any(|x| x == "ro" || x == "readonly"));
    Some(Mount {
        source: parts[0].into(),
        target: parts[1].into(),
        mode: if ro { READ_ONLY } else { READ_WRITE },
    })
}

/// `--mount type=bind,source=…,target=…[,readonly[=BOOL]]`: `readonly`/`ro` alone or with a
/// true value is read-only; `readonly=false` (or `0`) is read-write, as docker reads it.
fn mount(value: &str) -> Mount {
    let kv: Vec<(&str, &str)> = value
        .split(',')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let get = |keys: &[&str]| {
        kv.iter()
            .find(|(k, _)| keys.contains(k))
            .map(|(_, v)| (*v).to_owned())
    };
    let ro = kv.iter().any(|(k, v)| {
        matches!(*k, "readonly" | "ro") && !matches!(v.to_ascii_lowercase().as_str(), "false" | "0")
    });
    Mount {
        source: get(&["source", "src"]).unwrap_or_default(),
        target: get(&["target", "dst", "destination"]).unwrap_or_default(),
        mode: if ro { READ_ONLY } else { READ_WRITE },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(argv: &[&str]) -> (Vec<Mount>, String) {
        inspect_command(&argv.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    fn passed(argv: &[&str]) -> Option<PassedEnv> {
        passed_env(&argv.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn the_variables_a_container_run_passes_in() {
        let p = passed(&[
            "docker", "run", "--rm", "-e", "A", "-e", "B=1", "--env=C", "--env", "D", "img", "-e",
            "NOT_OURS",
        ])
        .unwrap();
        assert_eq!(p.names, ["A", "B", "C", "D"]);
        assert!(!p.env_file && !p.env_host);
        let p = passed(&[
            "/usr/bin/podman",
            "run",
            "--env-host",
            "--env-file",
            "f",
            "img",
        ]);
        assert!(
            p.as_ref().is_some_and(|p| p.env_host && p.env_file),
            "{p:?}"
        );
        assert_eq!(passed(&["docker", "ps"]), None);
        assert_eq!(passed(&["bwrap", "--", "claude"]), None);
    }

    fn modes(mounts: &[Mount]) -> Vec<(&str, &str)> {
        mounts.iter().map(|m| (m.target.as_str(), m.mode)).collect()
    }

    #[test]
    fn bwrap_mounts_and_network() {
        let (m, net) = inspect(&[
            "bwrap",
            "--ro-bind",
            "/snap",
            "/h/.claude/.credentials.json",
            "--tmpfs",
            "/tmp",
            "--unshare-net",
            "claude",
        ]);
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

    #[test]
    fn bwrap_options_with_values_do_not_end_the_options() {
        let (m, _) = inspect(&[
            "bwrap", "--setenv", "HOME", "/h", "--chdir", "/h", "--bind", "/w", "/w", "sh", "-c",
            "x",
        ]);
        assert_eq!(modes(&m), [("/w", "read-write")]);
    }

    #[test]
    fn bwrap_command_arguments_are_not_options() {
        let (m, net) = inspect(&[
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--",
            "bwrap",
            "--bind",
            "/x",
            "/y",
            "--unshare-net",
        ]);
        assert_eq!(modes(&m), [("/", "read-only")]);
        assert_eq!(net, "full (host network)");
    }

    #[test]
    fn readonly_false_is_read_write() {
        let (m, _) = inspect(&[
            "docker",
            "run",
            "--mount",
            "type=bind,source=/a,target=/ro1,readonly",
            "--mount",
            "type=bind,src=/b,dst=/rw1,readonly=false",
            "--mount=type=bind,source=/c,target=/ro2,readonly=true",
            "--mount",
            "type=volume,source=v,target=/rw2,ro=0",
            "--mount",
            "type=bind,source=/d,target=/ro3,ro",
            "--mount",
            "type=bind,source=/e,target=/rw3",
            "img",
        ]);
        assert_eq!(
            modes(&m),
            [
                ("/ro1", "read-only"),
                ("/rw1", "read-write"),
                ("/ro2", "read-only"),
                ("/rw2", "read-write"),
                ("/ro3", "read-only"),
                ("/rw3", "read-write"),
            ]
        );
    }

    #[test]
    fn volume_options_read_only_and_read_write() {
        let (m, _) = inspect(&[
            "podman",
            "run",
            "-v",
            "/a:/ro:ro,z",
            "--volume=/b:/rw:rw",
            "-v",
            "/c:/d",
            "img",
        ]);
        assert_eq!(
            modes(&m),
            [
                ("/ro", "read-only"),
                ("/rw", "read-write"),
                ("/d", "read-write")
            ]
        );
    }

    #[test]
    fn arguments_after_the_image_are_the_containers_command() {
        let (m, net) = inspect(&[
            "docker",
            "run",
            "--rm",
            "-it",
            "-e",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "-v",
            "/w:/w",
            "--name",
            "job",
            "img:1",
            "sh",
            "-c",
            "x",
            "-v",
            "/etc:/host-etc",
            "--mount",
            "type=bind,source=/,target=/host",
            "--network",
            "host",
        ]);
        assert_eq!(modes(&m), [("/w", "read-write")]);
        assert_eq!(net, "docker default (bridge)");
        // The image may also follow `--`, and the command may start with a dash.
        let (m, _) = inspect(&["podman", "run", "--", "img", "-v", "/a:/b"]);
        assert!(m.is_empty(), "{m:?}");
        let (m, net) = inspect(&[
            "docker",
            "-H",
            "unix:///s",
            "container",
            "create",
            "--network",
            "none",
            "img",
            "--network",
            "host",
            "-v",
            "/a:/b",
        ]);
        assert!(m.is_empty(), "{m:?}");
        assert_eq!(net, "none");
    }

    #[test]
    fn other_subcommands_declare_nothing() {
        let (m, net) = inspect(&["docker", "exec", "c1", "cat", "-v", "/a:/b"]);
        assert!(m.is_empty(), "{m:?}");
        assert_eq!(net, "docker default (bridge)");
    }
}
