//! Where a login lives and how the refreshed one is written back there: the CLI's login
//! file (`.credentials.json`, Codex's `auth.json`, Gemini's `oauth_creds.json`: atomic, mode
//! kept, never through a link) or a keychain item (macOS `Claude Code-credentials`) through
//! the store trait. What goes into the document is the provider's `merge`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::secret::Secret;
use crate::store::{ItemId, Store, StoreError};

/// Claude Code's keychain item on macOS (account = the user name).
pub const KEYCHAIN_SERVICE: &str = "Claude Code-credentials";
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    // Shared by every CLI's login (a Codex keyring item too), so it names none of them.
    #[error("{path}: the login is gone; the new login is kept in the keychain until it can be written (run `keyferry refresh` after restoring it, or log in to the CLI again)")]
    Vanished { path: String },
    #[error("{path}: is {what}, refusing to read or replace it")]
    NotPlain { path: String, what: &'static str },
    #[error("{path}: owned by uid {owner}, not by you (uid {uid}); refusing")]
    WrongOwner { path: String, owner: u32, uid: u32 },
    #[error("{path}: is read-only (mode {mode:o}); the new login is kept in the keychain until the file is writable")]
    ReadOnly { path: String, mode: u32 },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{location}: not a {cli} login document ({reason})")]
    BadDocument {
        location: String,
        cli: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A login's home: read it whole, write it whole. Blocking; call off the reactor.
pub trait LoginSource: Send + Sync {
    /// Where it is, for messages and audit entries (no secret).
    fn location(&self) -> String;
    /// The current login document; `None` when it is gone.
    ///
    /// # Errors
    /// Unsafe or unreadable file, failing keychain.
    fn read(&self) -> Result<Option<Secret>, WritebackError>;
    /// Replaces the document. Never creates a missing one: a logged-out CLI stays logged out.
    ///
    /// # Errors
    /// Vanished, read-only or unsafe file, failing keychain.
    fn write(&self, document: &Secret) -> Result<(), WritebackError>;
    /// The directory holding the CLI's refresh lock: Claude Code's credentials directory,
    /// Codex's home (`None`: none to take). Asked only when the provider has one
    /// (`LoginProvider::cli_lock`).
    fn cli_lock_dir(&self) -> Option<PathBuf>;
}

/// A CLI's login file: `~/.claude/.credentials.json` (or under `$CLAUDE_CONFIG_DIR`),
/// `~/.codex/auth.json`, `~/.gemini/oauth_creds.json`.
pub struct CredentialsFile {
    pub path: PathBuf,
}

impl LoginSource for CredentialsFile {
    fn location(&self) -> String {
        crate::paths::display(&self.path)
    }

    fn read(&self) -> Result<Option<Secret>, WritebackError> {
        let Some(mut file) = open_plain(&self.path)? else {
            return Ok(None);
        };
        let mut text = String::new();
        (&mut file)
            .take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(|e| self.io(&e))?;
        Ok(Some(Secret::new(text)))
    }

    fn write(&self, document: &Secret) -> Result<(), WritebackError> {
        let Some(file) = open_plain(&self.path)? else {
            return Err(WritebackError::Vanished {
                path: self.location(),
            });
        };
        let mode = file.metadata().map_err(|e| self.io(&e))?.mode() & 0o7777;
        if mode & 0o200 == 0 {
            return Err(WritebackError::ReadOnly {
                path: self.location(),
                mode,
            });
        }
        // The rename replaces whatever is at the path (even a link swapped in since the check)
        // rather than writing through it, so a link can never redirect the token.
        crate::atomic::write(&self.path, document.expose().as_bytes(), mode & 0o777).map_err(|e| {
            WritebackError::Io {
                path: e.path,
                reason: e.source.to_string(),
            }
        })
    }

    fn cli_lock_dir(&self) -> Option<PathBuf> {
        self.path.parent().map(Path::to_path_buf)
    }
}

impl CredentialsFile {
    fn io(&self, e: &std::io::Error) -> WritebackError {
        WritebackError::Io {
            path: self.location(),
            reason: e.to_string(),
        }
    }
}

/// Opens a regular file owned by the caller, never following a final symlink; `None` if missing.
/// Small on purpose: the integrator's shared safe-open helper replaces it.
///
/// # Errors
/// A link, a non-regular file, a foreign owner, or another open failure.
pub fn open_plain(path: &Path) -> Result<Option<File>, WritebackError> {
    let shown = || crate::paths::display(path);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(WritebackError::NotPlain {
                path: shown(),
                what: "a symbolic link",
            })
        }
        Err(e) => {
            return Err(WritebackError::Io {
                path: shown(),
                reason: e.to_string(),
            })
        }
    };
    let meta = file.metadata().map_err(|e| WritebackError::Io {
        path: shown(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(WritebackError::NotPlain {
            path: shown(),
            what: "not a regular file",
        });
    }
    let uid = crate::paths::current_uid();
    if meta.uid() != uid {
        return Err(WritebackError::WrongOwner {
            path: shown(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(Some(file))
}

/// The login as a keychain item, written the same way the CLI writes it (one JSON document).
pub struct KeychainLogin {
    pub store: Arc<dyn Store>,
    pub id: ItemId,
    /// The CLI's credentials directory (`~/.claude`), where its refresh lock lives.
    pub lock_dir: Option<PathBuf>,
}

impl LoginSource for KeychainLogin {
    fn location(&self) -> String {
        format!("{} item {}", self.store.backend().as_str(), self.id)
    }

    fn read(&self) -> Result<Option<Secret>, WritebackError> {
        Ok(self.store.get(&self.id)?)
    }

    fn write(&self, document: &Secret) -> Result<(), WritebackError> {
        Ok(self.store.set(&self.id, document)?)
    }

    fn cli_lock_dir(&self) -> Option<PathBuf> {
        self.lock_dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DOC: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-OLD","refreshToken":"sk-ant-ort01-OLD","expiresAt":1,"scopes":["user:inference","user:profile"],"subscriptionType":"max","clientId":"cid","futureField":{"x":1}},"mcpOAuth":{"srv":"keep"}}"#;

    #[test]
    fn file_through_a_symlink_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, DOC).unwrap();
        let link = dir.path().join(".credentials.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let f = CredentialsFile { path: link };
        assert!(matches!(f.read(), Err(WritebackError::NotPlain { .. })));
        assert!(matches!(
            f.write(&Secret::new("{}".into())),
            Err(WritebackError::NotPlain { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), DOC);
    }

    #[test]
    fn vanished_and_read_only_files_are_named_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let f = CredentialsFile {
            path: dir.path().join(".credentials.json"),
        };
        assert!(f.read().unwrap().is_none());
        assert!(matches!(
            f.write(&Secret::new("{}".into())),
            Err(WritebackError::Vanished { .. })
        ));
        assert!(!f.path.exists(), "a missing login is not recreated");
        std::fs::write(&f.path, DOC).unwrap();
        std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let err = f.write(&Secret::new("{}".into())).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), DOC);
    }
}
