//! What a sandbox's mounts and network expose of the host's secrets, for the pre-launch
//! audit's `[!]` lines: the runtime directory (the agent's socket, the session bus), Claude
//! Code's login, the keyring files, and a session bus on an abstract socket, which every
//! process in a shared network namespace reaches whatever is mounted. Mounts are read in
//! order, as bwrap applies them: a later `--tmpfs` (or bind) over a path hides what an
//! earlier bind showed there.

use std::path::{Path, PathBuf};

use super::Mount;

/// One thing of the host the sandbox would reach, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub what: &'static str,
    pub path: String,
    pub fix: String,
}

/// Where `host_path` appears inside after `mounts`, if anywhere.
fn inside(mounts: &[Mount], host_path: &Path) -> Option<PathBuf> {
    let mut at: Option<PathBuf> = None;
    for m in mounts {
        let target = Path::new(&m.target);
        if let Some(shown) = &at {
            if shown.starts_with(target) {
                at = None;
            }
        }
        if m.source == "tmpfs" {
            continue;
        }
        if let Ok(rest) = host_path.strip_prefix(&m.source) {
            at = Some(target.join(rest));
        }
    }
    at
}

/// Everything `mounts` and the network expose, given the host environment.
#[must_use]
pub fn exposures(mounts: &[Mount], network: &str, host: &[(String, String)]) -> Vec<Exposure> {
    let get = |k: &str| host.iter().find(|(hk, _)| hk == k).map(|(_, v)| v.as_str());
    let mut out = Vec::new();
    let home = get("HOME").filter(|h| h.starts_with('/'));
    let mut secrets: Vec<(&'static str, PathBuf, String)> = Vec::new();
    if let Some(run) = get("XDG_RUNTIME_DIR").filter(|r| r.starts_with('/')) {
        secrets.push((
            "the agent's socket and the session bus",
            PathBuf::from(run),
            "--tmpfs \"$XDG_RUNTIME_DIR\" (docker: do not mount it)".into(),
        ));
    }
    if let Some(home) = home {
        // Each platform's own keychain files: a bwrap argv on Linux never exposes macOS's.
        let keychains = if cfg!(target_os = "macos") {
            ("the macOS keychains", "Library/Keychains")
        } else {
            ("the keyring files", ".local/share/keyrings")
        };
        for (what, rel) in [("Claude Code's login", ".claude"), keychains] {
            secrets.push((
                what,
                Path::new(home).join(rel),
                format!("--tmpfs ~/{rel} (or --tmpfs \"$HOME\")"),
            ));
        }
    }
    for (what, path, fix) in secrets {
        if inside(mounts, &path).is_some() {
            out.push(Exposure {
                what,
                path: path.display().to_string(),
                fix,
            });
        }
    }
    let shared_net = network.contains("host network");
    if let Some(bus) = get("DBUS_SESSION_BUS_ADDRESS").filter(|b| b.contains("abstract=")) {
        if shared_net {
            out.push(Exposure {
                what: "the session bus (an abstract socket: reachable from any shared network namespace)",
                path: bus.to_owned(),
                fix: "--unshare-net, with the gateway's Unix socket bind-mounted".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(source: &str, target: &str) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
            mode: "read-write",
        }
    }

    fn host() -> Vec<(String, String)> {
        vec![
            ("HOME".into(), "/home/u".into()),
            ("XDG_RUNTIME_DIR".into(), "/run/user/1000".into()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                "unix:abstract=/tmp/dbus-x".into(),
            ),
        ]
    }

    fn whats(mounts: &[Mount], network: &str) -> Vec<&'static str> {
        exposures(mounts, network, &host())
            .into_iter()
            .map(|e| e.what)
            .collect()
    }

    #[test]
    fn the_whole_root_exposes_everything_and_later_tmpfs_hides_it() {
        let root = m("/", "/");
        let all = whats(std::slice::from_ref(&root), "full (host network)");
        assert_eq!(all.len(), 4, "{all:?}");
        let safe = whats(
            &[root, m("tmpfs", "/home/u"), m("tmpfs", "/run/user/1000")],
            "none (--unshare-net)",
        );
        assert!(safe.is_empty(), "{safe:?}");
    }

    #[test]
    fn order_matters_a_bind_after_the_tmpfs_shows_it_again() {
        let shown = whats(
            &[
                m("tmpfs", "/home/u"),
                m("/home/u/.claude", "/home/u/.claude"),
            ],
            "none (--unshare-net)",
        );
        assert_eq!(shown, ["Claude Code's login"]);
    }

    #[test]
    fn a_project_mount_exposes_nothing_and_an_abstract_bus_needs_a_shared_network() {
        let proj = [m("/home/u/proj", "/work")];
        assert!(whats(&proj, "none (--unshare-net)").is_empty());
        assert_eq!(whats(&proj, "full (host network)").len(), 1);
    }
}
