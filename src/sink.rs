//! Sinks: where the agent keeps a token current for sandboxes — a key in a `.env` file, or a
//! credentials snapshot for a file-scoped mount. Declared in config (`[[sink]]`) or
//! registered at run time (`keyferry snapshot`), rewritten on every credential change.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, WriteError};
use crate::credential::Credential;
use crate::paths;
use crate::secret::Secret;

/// `[[sink]]` in config.toml: exactly one of `dotenv` or `snapshot`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub credential: String,
    pub dotenv: Option<String>,
    /// The `.env` key (default: the credential's variable, e.g. `CLAUDE_CODE_OAUTH_TOKEN`).
    pub key: Option<String>,
    pub snapshot: Option<String>,
    #[serde(default)]
    pub include_refresh_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sink {
    Dotenv {
        path: PathBuf,
        key: Option<String>,
    },
    Snapshot {
        path: PathBuf,
        include_refresh_token: bool,
    },
}

/// A sink bound to the credential it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub credential: String,
    #[serde(flatten)]
    pub sink: Sink,
}

impl SinkConfig {
    /// # Errors
    /// Neither or both of `dotenv`/`snapshot`.
    pub fn target(&self) -> Result<Target, String> {
        let sink = match (&self.dotenv, &self.snapshot) {
            (Some(p), None) => Sink::Dotenv {
                path: paths::expand(p),
                key: self.key.clone(),
            },
            (None, Some(p)) => Sink::Snapshot {
                path: paths::expand(p),
                include_refresh_token: self.include_refresh_token,
            },
            _ => {
                return Err(format!(
                "[[sink]] for {:?} needs exactly one of dotenv = \"PATH\" or snapshot = \"PATH\"",
                self.credential
            ))
            }
        };
        Ok(Target {
            credential: self.credential.clone(),
            sink,
        })
    }
}

impl Sink {
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Dotenv { path, .. } | Self::Snapshot { path, .. } => path,
        }
    }

    /// Writes `c` into this sink. `env_var` is the default `.env` key.
    ///
    /// # Errors
    /// The credential has no file form, or the file cannot be written.
    pub fn write(&self, name: &str, c: &Credential, env_var: &str) -> Result<(), crate::Error> {
        match self {
            Self::Dotenv { path, key } => {
                crate::dotenv::write_key(path, key.as_deref().unwrap_or(env_var), &c.token)
            }
            Self::Snapshot {
                path,
                include_refresh_token,
            } => {
                let text = crate::snapshot::render(name, c, *include_refresh_token)?;
                write_in_place(path, &text)?;
                Ok(())
            }
        }
    }
}

/// Rewrites a snapshot *in place*, keeping its inode: a file-scoped bind mount
/// (`-v snap:/root/.claude/.credentials.json`, `bwrap --ro-bind`) pins the inode, so an
/// atomic rename would leave running sandboxes reading the old token forever. The new
/// text is padded with JSON whitespace to at least the old length and written with one
/// `pwrite`, so a reader never sees a shorter, truncated document. A new file is created
/// atomically, 0600.
///
/// # Errors
/// Not a regular file of ours, or an I/O failure.
pub fn write_in_place(path: &Path, text: &Secret) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: paths::display(path),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            atomic::private_dir(dir)?;
        }
    }
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return atomic::write(path, text.expose().as_bytes(), 0o600);
        }
        Err(e) => return Err(err(e)),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() || meta.uid() != paths::current_uid() {
        return Err(err(std::io::Error::other(
            "not a regular file owned by you; refusing to write a token into it",
        )));
    }
    let mut bytes = text.expose().as_bytes().to_vec();
    let old_len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if bytes.len() < old_len {
        // Pad before the final newline: trailing spaces are valid JSON whitespace.
        let nl = bytes.pop();
        bytes.resize(old_len - usize::from(nl.is_some()), b' ');
        bytes.extend(nl);
    }
    let result = file
        .write_all_at(&bytes, 0)
        .and_then(|()| file.set_len(bytes.len() as u64))
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o600)))
        .and_then(|()| file.sync_all());
    zeroize::Zeroize::zeroize(&mut bytes);
    result.map_err(err)
}

/// Snapshots registered with the agent (`keyferry snapshot … --out`), kept across restarts
/// in the state directory. Holds paths only.
pub struct Registry;

impl Registry {
    fn path() -> PathBuf {
        paths::state_dir().join("snapshots.json")
    }

    #[must_use]
    pub fn load() -> Vec<Target> {
        std::fs::read_to_string(Self::path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn update(change: impl FnOnce(&mut Vec<Target>)) -> Result<Vec<Target>, WriteError> {
        atomic::private_dir(&paths::state_dir())?;
        let path = Self::path();
        let _lock = atomic::FileLock::acquire(&path)?;
        let mut list = Self::load();
        change(&mut list);
        atomic::write(
            &path,
            &serde_json::to_vec_pretty(&list).unwrap_or_default(),
            0o600,
        )?;
        Ok(list)
    }

    /// Adds (or replaces, by path) a registration.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn add(target: Target) -> Result<(), WriteError> {
        Self::update(|l| {
            l.retain(|t| t.sink.path() != target.sink.path());
            l.push(target);
        })
        .map(drop)
    }

    /// Removes the registration for `path`; false when there was none.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn remove(path: &Path) -> Result<bool, WriteError> {
        let mut removed = false;
        Self::update(|l| {
            let before = l.len();
            l.retain(|t| t.sink.path() != path);
            removed = l.len() != before;
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn in_place_keeps_the_inode_and_pads_shorter_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("snap/.credentials.json");
        let long = "{\"a\":\"long-long-long\"}\n";
        write_in_place(&p, &Secret::new(long.into())).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        write_in_place(&p, &Secret::new("{\"a\":\"x\"}\n".into())).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], "x");
        // Padded with spaces to the old length, newline kept last.
        let short = "{\"a\":\"x\"}";
        assert_eq!(
            text,
            format!("{short}{}\n", " ".repeat(long.len() - short.len() - 1))
        );
        write_in_place(
            &p,
            &Secret::new("{\"a\":\"much-much-much-longer-value\"}\n".into()),
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a"], "much-much-much-longer-value");
    }

    #[test]
    fn sink_config_needs_exactly_one_path() {
        let c = SinkConfig {
            credential: "claude".into(),
            dotenv: None,
            key: None,
            snapshot: None,
            include_refresh_token: false,
        };
        assert!(c.target().unwrap_err().contains("exactly one"));
    }
}
