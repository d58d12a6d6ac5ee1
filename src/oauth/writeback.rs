//! Where a Claude login lives and how the refreshed one is written back there: the
//! `.credentials.json` file (atomic, mode kept, never through a link) or a keychain item
//! (macOS `Claude Code-credentials`) through the store trait, with every unknown field kept.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use super::token::{Grant, Refreshed};
use crate::secret::Secret;
use crate::store::{ItemId, Store, StoreError};

/// Claude Code's keychain item on macOS (account = the user name).
pub const KEYCHAIN_SERVICE: &str = "Claude Code-credentials";
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    #[error("{path}: the login file is gone; the new login is kept in the keychain until it can be written (run `keyferry refresh` after restoring it, or `claude /login`)")]
    Vanished { path: String },
    #[error("{path}: is {what}, refusing to read or replace it")]
    NotPlain { path: String, what: &'static str },
    #[error("{path}: owned by uid {owner}, not by you (uid {uid}); refusing")]
    WrongOwner { path: String, owner: u32, uid: u32 },
    #[error("{path}: is read-only (mode {mode:o}); the new login is kept in the keychain until the file is writable")]
    ReadOnly { path: String, mode: u32 },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{location}: not a Claude login document ({reason})")]
    BadDocument {
        location: String,
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
    /// Claude Code's credentials directory, whose refresh lock must be held (`None`: no lock).
    fn cli_lock_dir(&self) -> Option<PathBuf>;
}

/// `~/.claude/.credentials.json` (or under `$CLAUDE_CONFIG_DIR`).
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

/// The `clientId` and scopes a refresh of this document asks for (as Claude Code does).
#[must_use]
pub fn grant_of(document: &Secret) -> Grant {
    let doc: Value = serde_json::from_str(document.expose()).unwrap_or_default();
    let oauth = &doc["claudeAiOauth"];
    Grant {
        client_id: oauth["clientId"].as_str().map(str::to_owned),
        scopes: oauth["scopes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The document with the refreshed login in `claudeAiOauth`; every other field is kept, in order.
///
/// # Errors
/// The document is not JSON or has no `claudeAiOauth` object.
pub fn merge(
    document: &Secret,
    new: &Refreshed,
    now: OffsetDateTime,
    location: &str,
) -> Result<(Secret, OffsetDateTime), WritebackError> {
    let bad = |reason| WritebackError::BadDocument {
        location: location.to_owned(),
        reason,
    };
    let mut doc: Value = serde_json::from_str(document.expose()).map_err(|_| bad("not JSON"))?;
    let oauth = doc
        .get_mut("claudeAiOauth")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no claudeAiOauth object"))?;
    let expires_at = now + new.expires_in;
    let expires_ms = i64::try_from(expires_at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| bad("expiry out of range"))?;
    oauth.insert(
        "accessToken".into(),
        Value::String(new.access_token.expose().to_owned()),
    );
    if let Some(rt) = &new.refresh_token {
        oauth.insert("refreshToken".into(), Value::String(rt.expose().to_owned()));
    }
    oauth.insert("expiresAt".into(), Value::from(expires_ms));
    if let Some(scopes) = &new.scopes {
        oauth.insert("scopes".into(), Value::from(scopes.clone()));
    }
    let text = serde_json::to_string(&doc).map_err(|_| bad("not serialisable"))?;
    Ok((Secret::new(text), expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const DOC: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-OLD","refreshToken":"sk-ant-ort01-OLD","expiresAt":1,"scopes":["user:inference","user:profile"],"subscriptionType":"max","clientId":"cid","futureField":{"x":1}},"mcpOAuth":{"srv":"keep"}}"#;

    fn refreshed(rt: Option<&str>) -> Refreshed {
        Refreshed {
            access_token: Secret::new("sk-ant-oat01-NEW".into()),
            refresh_token: rt.map(|r| Secret::new(r.into())),
            expires_in: Duration::from_secs(3600),
            scopes: None,
        }
    }

    #[test]
    fn merge_keeps_unknown_fields_and_old_refresh_token_when_omitted() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (out, exp) = merge(&Secret::new(DOC.into()), &refreshed(None), now, "f").unwrap();
        let v: Value = serde_json::from_str(out.expose()).unwrap();
        let o = &v["claudeAiOauth"];
        assert_eq!(o["accessToken"], "sk-ant-oat01-NEW");
        assert_eq!(o["refreshToken"], "sk-ant-ort01-OLD");
        assert_eq!(o["expiresAt"], 1_800_003_600_000_i64);
        assert_eq!(exp.unix_timestamp(), 1_800_003_600);
        assert_eq!(o["futureField"]["x"], 1);
        assert_eq!(o["scopes"][1], "user:profile");
        assert_eq!(v["mcpOAuth"]["srv"], "keep");
        let (out, _) = merge(&Secret::new(DOC.into()), &refreshed(Some("R2")), now, "f").unwrap();
        assert!(out.expose().contains(r#""refreshToken":"R2""#));
        let g = grant_of(&Secret::new(DOC.into()));
        assert_eq!(g.client_id.as_deref(), Some("cid"));
        assert_eq!(g.scopes, ["user:inference", "user:profile"]);
    }

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
