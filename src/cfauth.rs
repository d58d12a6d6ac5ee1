//! The `cfauth` drop-in: its command line, its exact messages (seed 000), and the
//! `cfauth` symlink that `keyferry cfauth install` makes. The lookup itself is the `claude`
//! credential's chain, served by [`crate::api::Api`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The credential cfauth serves: its default chain is cf's order
/// (`env:CF_CLAUDE_API_KEY`, `keychain:cf-claude-token`, `file:~/.config/cf/claude-token`).
pub const CREDENTIAL: &str = "claude";

/// The program name that selects cfauth when the binary is run through a link.
pub const PROGRAM: &str = "cfauth";

/// The synopsis, as seed 000 prints it.
pub const USAGE: &str = "usage: cfauth [setup|reroll|status|clear]";

/// `cfauth --help`: every command, the seed's four first (on stdout, exit 0).
pub const HELP: &str = "\
cfauth: cf's token helper, served by Keyferry

usage: cfauth [setup|reroll|status|clear]
       cfauth get
       cfauth install [DIR]

commands:
  setup          prompt for a token (hidden; stdin when piped) and store it in the keychain
  reroll         remind you to revoke the old token, then prompt for the new one
  status         show which source is active (cf auth: source=...)
  clear          remove the token from the keychain
  get            print the token alone, for a launcher's pipe
  install [DIR]  link cfauth to this keyferry in DIR (default ~/.local/bin)

exit status: 0 done, 2 usage, 3 no token found (the soft failure), 4 keychain, 6 agent refused
";

/// Not found: the soft failure (exit 3), printed to stderr.
pub const NOT_FOUND: &str = "cf auth: no Claude API token found";

/// After `clear` removed the keychain item.
pub const CLEARED: &str = "cf auth: keychain token cleared";

/// After `clear` found no keychain item.
pub const NOTHING_TO_CLEAR: &str = "cf auth: no keychain token to clear";

/// What `reroll` says before anything else.
pub const REVOKE_REMINDER: &str =
    "cf auth: revoke the old token at claude.ai/settings before storing the new one";

/// The prompt of `setup` and `reroll` (hidden input; stdin when piped).
pub const PROMPT: &str = "cf auth: paste your Claude API token (input hidden): ";

/// `reroll`'s question between the reminder and the prompt, on a terminal only.
pub const REVOKED_PROMPT: &str = "cf auth: press Enter once the old token is revoked ";

/// One cfauth command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Prompt for a token and store it in the keychain.
    Setup,
    /// Remind to revoke, then prompt for the new token and store it.
    Reroll,
    /// Which source is active.
    Status,
    /// Remove the keychain item.
    Clear,
    /// Print the token (the lookup `cf` does; Keyferry's addition for hosts without
    /// macOS's `security`).
    Get,
    /// Link `cfauth` to this executable in a directory (default `~/.local/bin`).
    Install(Option<PathBuf>),
    /// `--help`, `-h` or `help`: print [`HELP`].
    Help,
}

/// Arguments cfauth does not understand; the caller prints [`USAGE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{USAGE}")]
pub struct UsageError;

impl Command {
    /// Parses the arguments after the program name (or after `keyferry cfauth`).
    ///
    /// # Errors
    /// No command, an unknown one, or extra arguments.
    pub fn parse(args: &[OsString]) -> Result<Self, UsageError> {
        let mut it = args.iter().map(|a| a.to_str().ok_or(UsageError));
        let cmd = it.next().ok_or(UsageError)??;
        let rest: Vec<&str> = it.collect::<Result<_, _>>()?;
        Ok(match (cmd, rest.as_slice()) {
            ("setup", []) => Self::Setup,
            ("reroll", []) => Self::Reroll,
            ("status", []) => Self::Status,
            ("clear", []) => Self::Clear,
            ("get", []) => Self::Get,
            ("--help" | "-h" | "help", []) => Self::Help,
            ("install", []) => Self::Install(None),
            ("install", [dir]) if !dir.starts_with('-') => Self::Install(Some(PathBuf::from(dir))),
            _ => return Err(UsageError),
        })
    }
}

/// Whether `argv0` names cfauth (a `cfauth` link to `keyferry`, wherever it lives).
#[must_use]
pub fn invoked_as_cfauth(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(PROGRAM))
}

/// Whether cf may use a token from `origin`. Claude Code's own login (`claude-login:…`) is
/// the host's session: cf never reads it (seed 000: not portable to a VM), and handing its
/// short-lived access token to a VM would share the host's login, so cfauth skips it too.
#[must_use]
pub fn cf_may_use(origin: &str) -> bool {
    origin != "claude-login" && !origin.starts_with("claude-login:")
}

/// `status`'s line for the source that serves the token, e.g. `keychain:cf-claude-token`.
#[must_use]
pub fn source_line(source: &str) -> String {
    format!("cf auth: source={source}")
}

/// After `setup` or `reroll` stored the token in `place` (`keychain:cf-claude-token`).
#[must_use]
pub fn stored_line(place: &str) -> String {
    format!("cf auth: token stored in {place}")
}

/// Why `install` did not make the link.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} exists and is not a link to {exe}; remove it or choose another directory (keyferry cfauth install DIR)")]
    Occupied { path: String, exe: String },
    #[error("cannot create {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot link {path} to {exe}: {source}")]
    Link {
        path: String,
        exe: String,
        #[source]
        source: std::io::Error,
    },
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Made the link.
    Linked { link: PathBuf, exe: PathBuf },
    /// The link was already there.
    Present { link: PathBuf, exe: PathBuf },
}

impl std::fmt::Display for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Linked { link, exe } => {
                write!(f, "cfauth: linked {} -> {}", link.display(), exe.display())
            }
            Self::Present { link, exe } => write!(
                f,
                "cfauth: {} already links to {}; nothing changed",
                link.display(),
                exe.display()
            ),
        }
    }
}

/// The default directory for the link.
#[must_use]
pub fn default_dir() -> PathBuf {
    crate::paths::home().join(".local/bin")
}

/// Makes `DIR/cfauth` a symlink to `exe`. An existing link to `exe` is left alone; any
/// other file, link or directory there is refused, never replaced.
///
/// # Errors
/// The name is taken, or the directory or link cannot be created.
pub fn install(dir: &Path, exe: &Path) -> Result<Installed, InstallError> {
    let link = dir.join(PROGRAM);
    let shown = |p: &Path| p.display().to_string();
    let occupied = || InstallError::Occupied {
        path: shown(&link),
        exe: shown(exe),
    };
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&link).map_err(|_| occupied())?;
            let target = if target.is_absolute() {
                target
            } else {
                dir.join(target)
            };
            // Same file, however the link spells it.
            let same = std::fs::canonicalize(&target)
                .ok()
                .zip(std::fs::canonicalize(exe).ok())
                .is_some_and(|(a, b)| a == b);
            return if same {
                Ok(Installed::Present {
                    link,
                    exe: exe.to_path_buf(),
                })
            } else {
                Err(occupied())
            };
        }
        Ok(_) => return Err(occupied()),
        Err(_) => {}
    }
    std::fs::create_dir_all(dir).map_err(|source| InstallError::Dir {
        dir: shown(dir),
        source,
    })?;
    // symlink() fails on an existing name, so a file appearing meanwhile is never replaced.
    std::os::unix::fs::symlink(exe, &link).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            occupied()
        } else {
            InstallError::Link {
                path: shown(&link),
                exe: shown(exe),
                source,
            }
        }
    })?;
    Ok(Installed::Linked {
        link,
        exe: exe.to_path_buf(),
    })
}

/// Whether `dir` is one of `path`'s entries (so a bare `cfauth` finds the link).
#[must_use]
pub fn on_path(dir: &Path, path: Option<&OsStr>) -> bool {
    path.is_some_and(|p| std::env::split_paths(p).any(|d| d == dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_the_seed_commands_and_nothing_else() {
        assert_eq!(Command::parse(&args(&["setup"])), Ok(Command::Setup));
        assert_eq!(Command::parse(&args(&["reroll"])), Ok(Command::Reroll));
        assert_eq!(Command::parse(&args(&["status"])), Ok(Command::Status));
        assert_eq!(Command::parse(&args(&["clear"])), Ok(Command::Clear));
        assert_eq!(Command::parse(&args(&["get"])), Ok(Command::Get));
        for help in ["--help", "-h", "help"] {
            assert_eq!(Command::parse(&args(&[help])), Ok(Command::Help));
        }
        assert_eq!(
            Command::parse(&args(&["install", "/opt/bin"])),
            Ok(Command::Install(Some("/opt/bin".into())))
        );
        for bad in [
            &[][..],
            &["bogus"],
            &["status", "extra"],
            &["--help", "setup"],
            &["install", "--force"],
            &["install", "a", "b"],
        ] {
            assert_eq!(Command::parse(&args(bad)), Err(UsageError), "{bad:?}");
        }
        assert_eq!(
            UsageError.to_string(),
            "usage: cfauth [setup|reroll|status|clear]"
        );
    }

    #[test]
    fn argv0_selects_cfauth_by_basename_only() {
        assert!(invoked_as_cfauth(OsStr::new("cfauth")));
        assert!(invoked_as_cfauth(OsStr::new("/home/a/.local/bin/cfauth")));
        assert!(!invoked_as_cfauth(OsStr::new("keyferry")));
        assert!(!invoked_as_cfauth(OsStr::new("/tmp/cfauth/keyferry")));
        assert!(!invoked_as_cfauth(OsStr::new("cfauth-old")));
    }

    #[test]
    fn claude_codes_own_login_is_not_a_cf_source() {
        for ok in [
            "env:CF_CLAUDE_API_KEY",
            "keychain:cf-claude-token",
            "file:~/.config/cf/claude-token",
            "dotenv:~/proj/.env",
        ] {
            assert!(cf_may_use(ok), "{ok}");
        }
        for no in [
            "claude-login",
            "claude-login:file:~/.claude/.credentials.json",
            "claude-login:keychain:Claude Code-credentials",
        ] {
            assert!(!cf_may_use(no), "{no}");
        }
    }

    #[test]
    fn messages_match_seed_000() {
        assert_eq!(
            source_line("keychain:cf-claude-token"),
            "cf auth: source=keychain:cf-claude-token"
        );
        assert_eq!(CLEARED, "cf auth: keychain token cleared");
        assert_eq!(NOT_FOUND, "cf auth: no Claude API token found");
    }

    #[test]
    fn install_links_once_and_never_replaces_another_file() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("keyferry");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let dir = d.path().join("bin");
        let made = install(&dir, &exe).unwrap();
        assert_eq!(
            made,
            Installed::Linked {
                link: dir.join("cfauth"),
                exe: exe.clone()
            }
        );
        assert_eq!(std::fs::read_link(dir.join("cfauth")).unwrap(), exe);
        assert!(matches!(
            install(&dir, &exe).unwrap(),
            Installed::Present { .. }
        ));
        // A link elsewhere, a regular file and a directory are all refused and left as they were.
        let other = d.path().join("other");
        std::fs::write(&other, "x").unwrap();
        let elsewhere = d.path().join("b1");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&other, elsewhere.join("cfauth")).unwrap();
        let err = install(&elsewhere, &exe).unwrap_err();
        assert!(matches!(err, InstallError::Occupied { .. }), "{err}");
        assert_eq!(std::fs::read_link(elsewhere.join("cfauth")).unwrap(), other);
        let file = d.path().join("b2");
        std::fs::create_dir(&file).unwrap();
        std::fs::write(file.join("cfauth"), "mine").unwrap();
        assert!(install(&file, &exe)
            .unwrap_err()
            .to_string()
            .contains("is not a link to"));
        assert_eq!(
            std::fs::read_to_string(file.join("cfauth")).unwrap(),
            "mine"
        );
        let dangling = d.path().join("b3");
        std::fs::create_dir(&dangling).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), dangling.join("cfauth")).unwrap();
        assert!(install(&dangling, &exe).is_err());
        let sub = d.path().join("b4");
        std::fs::create_dir_all(sub.join("cfauth")).unwrap();
        assert!(install(&sub, &exe).is_err());
    }

    #[test]
    fn on_path_compares_whole_entries() {
        let p = OsString::from("/usr/bin:/home/a/.local/bin");
        assert!(on_path(Path::new("/home/a/.local/bin"), Some(&p)));
        assert!(!on_path(Path::new("/home/a/.local"), Some(&p)));
        assert!(!on_path(Path::new("/usr/bin"), None));
    }
}
