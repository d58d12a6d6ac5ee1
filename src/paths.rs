//! Where Keyferry keeps things: config, state and socket directories, and `~` handling.
//!
//! Resolved from the environment each time (tests run the binary with a temporary
//! `HOME`), never cached.

use std::env;
use std::path::{Path, PathBuf};

/// The user's home directory (`$HOME`, falling back to the passwd entry).
#[must_use]
pub fn home() -> PathBuf {
    if let Some(h) = env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    crate::sys::passwd(crate::sys::PasswdField::Home)
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The login name: `$USER`, then `$LOGNAME`, then the passwd entry.
#[must_use]
pub fn user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    crate::sys::passwd(crate::sys::PasswdField::Name)
        .unwrap_or_else(|| format!("uid{}", current_uid()))
}

#[must_use]
pub fn current_uid() -> u32 {
    crate::sys::euid()
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match env::var_os(var) {
        Some(p) if Path::new(&p).is_absolute() => PathBuf::from(p),
        _ => home().join(fallback),
    }
}

/// `$XDG_CONFIG_HOME/keyferry` (Linux default `~/.config/keyferry`);
/// on macOS `~/Library/Application Support/keyferry` unless `XDG_CONFIG_HOME` is set.
#[must_use]
pub fn config_dir() -> PathBuf {
    if cfg!(target_os = "macos") && env::var_os("XDG_CONFIG_HOME").is_none() {
        return home().join("Library/Application Support/keyferry");
    }
    xdg("XDG_CONFIG_HOME", ".config").join("keyferry")
}

/// The config file; `KEYFERRY_CONFIG` overrides.
#[must_use]
pub fn config_file() -> PathBuf {
    config_override().unwrap_or_else(|| config_dir().join("config.toml"))
}

/// `KEYFERRY_CONFIG`, when set and not empty.
#[must_use]
pub fn config_override() -> Option<PathBuf> {
    env::var_os("KEYFERRY_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_STATE_HOME/keyferry` (default `~/.local/state/keyferry`); on macOS
/// `~/Library/Application Support/keyferry/state` unless `XDG_STATE_HOME` is set.
#[must_use]
pub fn state_dir() -> PathBuf {
    if cfg!(target_os = "macos") && env::var_os("XDG_STATE_HOME").is_none() {
        return home().join("Library/Application Support/keyferry/state");
    }
    xdg("XDG_STATE_HOME", ".local/state").join("keyferry")
}

/// Expands a leading `~/` (and `$HOME`/`${HOME}`) in a configured path.
#[must_use]
pub fn expand(path: &str) -> PathBuf {
    if path == "~" {
        return home();
    }
    for prefix in ["~/", "$HOME/", "${HOME}/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return home().join(rest);
        }
    }
    PathBuf::from(path)
}

/// Shows a path with `$HOME` abbreviated to `~`, as the seeds' messages do.
#[must_use]
pub fn display(path: &Path) -> String {
    let home = home();
    match path.strip_prefix(&home) {
        Ok(rest) if home != Path::new("/") => {
            if rest.as_os_str().is_empty() {
                "~".to_owned()
            } else {
                format!("~/{}", rest.display())
            }
        }
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_and_display_round_trip() {
        let p = expand("~/.config/cf/claude-token");
        assert!(p.is_absolute());
        assert_eq!(display(&p), "~/.config/cf/claude-token");
        assert_eq!(expand("/etc/x"), PathBuf::from("/etc/x"));
        assert_eq!(display(Path::new("/etc/x")), "/etc/x");
    }
}
