//! Sinks: where the agent keeps a token current for sandboxes — a key in a `.env` file, or a
//! credentials snapshot for a file-scoped mount. Declared in config (`[[sink]]`) or
//! registered at run time (`keyferry snapshot`), rewritten on every credential change.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, WriteError};
use crate::credential::{Credential, Kind};
use crate::domain::ErrorCode;
use crate::paths;
use crate::safe_file::{self, Access, FileError};
use crate::secret::Secret;

/// Paths of registered snapshots; a megabyte is thousands of them.
const MAX_REGISTRY_BYTES: u64 = 1024 * 1024;

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
    /// Neither or both of `dotenv`/`snapshot`, or a relative path (it would name a file
    /// under whatever directory the agent was started in).
    pub fn target(&self) -> Result<Target, String> {
        for (key, p) in [("dotenv", &self.dotenv), ("snapshot", &self.snapshot)] {
            if let Some(p) = p.as_deref().filter(|p| !paths::expand(p).is_absolute()) {
                return Err(format!(
                    "[[sink]] for {:?}: {key} = {p:?} is a relative path, which would depend on the directory the agent starts in; write it from / or ~/",
                    self.credential
                ));
            }
        }
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

/// Why a sink was not written. Names the path and the reason; never the token.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Dotenv(#[from] crate::dotenv::DotenvError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path}: is not a {cli} credentials file; refusing to overwrite it (the file is unchanged). Pick another --out path, or delete the file if it really is a stale snapshot")]
    NotCredentials { path: String, cli: &'static str },
    /// A snapshot asked for at a path a `[[sink]]` writes, with other content.
    #[error("{path} is kept current by the [[sink]] in {config} that writes {writes} there; {wanted} would be a second writer of that file, each rewriting it on every change (the file is unchanged). Snapshot to another path, or change that [[sink]] and restart the agent")]
    OwnedByConfig {
        path: String,
        config: String,
        writes: String,
        wanted: String,
    },
    /// A snapshot registered before a `[[sink]]` was added at its path: the sink writes it.
    #[error("{path}: {wanted} registered here is not written: the [[sink]] in {config} that writes {writes} there owns the file now (one writer per file). `keyferry snapshot --forget {path}` drops this snapshot; or remove that [[sink]] and restart the agent to have it written again")]
    Superseded {
        path: String,
        config: String,
        writes: String,
        wanted: String,
    },
    /// Two `.env` `[[sink]]`s of different credentials resolving to one variable of one file:
    /// the one listed first writes it (see `Agent::write_sinks`).
    #[error("{path}: {key} there is written by the [[sink]] listed earlier in {config}, {holder}; {wanted} would replace it on every change of either, so it is not written (the file is unchanged). Give one of the two [[sink]]s its own key = \"NAME\" and restart the agent")]
    KeyTaken {
        path: String,
        key: String,
        config: String,
        holder: String,
        wanted: String,
    },
    /// `forget` of a path no snapshot but a `[[sink]]` writes.
    #[error("{path} is kept current by the [[sink]] in {config} that writes {writes} there, not by a snapshot, so `snapshot --forget` cannot stop it: remove that [[sink]] and restart the agent")]
    NotASnapshot {
        path: String,
        config: String,
        writes: String,
    },
}

impl SinkError {
    /// The stable error code for the socket and the UI.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Dotenv(e) => e.code(),
            Self::Snapshot(_) => ErrorCode::Unsupported,
            Self::File(e) => e.code(),
            Self::Write(_) => ErrorCode::WriteFailed,
            Self::NotCredentials { .. } => ErrorCode::NotCredentials,
            Self::OwnedByConfig { .. }
            | Self::Superseded { .. }
            | Self::NotASnapshot { .. }
            | Self::KeyTaken { .. } => ErrorCode::ConfigSink,
        }
    }

    /// A refused claim ([`claim`]) of a snapshot registered before the `[[sink]]` was added
    /// at its file: why it is not written. Any other error is itself.
    #[must_use]
    pub fn superseded(self) -> Self {
        match self {
            Self::OwnedByConfig {
                path,
                config,
                writes,
                wanted,
            } => Self::Superseded {
                path,
                config,
                writes,
                wanted,
            },
            other => other,
        }
    }

    /// The `{code, message}` for the socket, `status` and the UI.
    #[must_use]
    pub fn body(&self) -> crate::domain::ErrorBody {
        crate::domain::ErrorBody::new(self.code(), self.to_string())
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
    /// The credential has no file form, the target is not a file we may write (a link, a
    /// FIFO, someone else's, a non-credentials file under a snapshot), or an I/O failure.
    pub fn write(&self, name: &str, c: &Credential, env_var: &str) -> Result<(), SinkError> {
        match self {
            Self::Dotenv { path, key } => {
                crate::dotenv::write_key(path, key.as_deref().unwrap_or(env_var), &c.token)?;
                Ok(())
            }
            Self::Snapshot {
                path,
                include_refresh_token,
            } => {
                let text = crate::snapshot::render(name, c, *include_refresh_token)?;
                write_in_place(path, c.kind, &text)
            }
        }
    }
}

impl Target {
    /// A snapshot of `credential` at `path`.
    #[must_use]
    pub fn snapshot(credential: &str, path: &Path, include_refresh_token: bool) -> Self {
        Self {
            credential: credential.to_owned(),
            sink: Sink::Snapshot {
                path: path.to_path_buf(),
                include_refresh_token,
            },
        }
    }

    /// What this sink writes, for messages: names and kinds, never a token.
    fn described(&self) -> String {
        let name = &self.credential;
        match &self.sink {
            Sink::Dotenv { key: Some(k), .. } => format!("{name:?}'s token as {k} in a .env file"),
            Sink::Dotenv { key: None, .. } => format!("{name:?}'s token as a key of a .env file"),
            Sink::Snapshot {
                include_refresh_token: true,
                ..
            } => format!("a snapshot of {name:?} with its refresh token"),
            Sink::Snapshot { .. } => format!("a snapshot of {name:?}"),
        }
    }
}

/// The one spelling of the file `path` names, whether or not it exists yet: the real path of
/// its deepest existing ancestor (links and `..` resolved by the kernel), then the rest of
/// its components with `..` resolved lexically (nothing below a missing folder can be a
/// link). A relative path is taken from the current directory. Used by every one-writer
/// comparison, so `/box/x/../c.json`, a linked folder on the way and `/box/c.json` are one
/// file before any of them is written.
#[must_use]
pub fn canonical(path: &Path) -> PathBuf {
    use std::path::Component;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    // Whether `out` is still a real path: once a component is missing, the rest is lexical.
    let mut real = true;
    for part in full.components() {
        match part {
            Component::Prefix(_) | Component::CurDir => {}
            Component::RootDir => {
                out = PathBuf::from("/");
                real = true;
            }
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if real {
                    match std::fs::canonicalize(&out) {
                        Ok(c) => out = c,
                        Err(_) => real = false,
                    }
                }
            }
        }
    }
    out
}

/// Whether `a` and `b` name one file: one [`canonical`] spelling, or two links of one
/// existing file (a root-owned system link on the way, such as macOS's `/var`, is followed
/// by sink writes).
#[must_use]
pub fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || canonical(a) == canonical(b)
        || matches!(
            (std::fs::metadata(a), std::fs::metadata(b)),
            (Ok(x), Ok(y)) if x.dev() == y.dev() && x.ino() == y.ino()
        )
}

/// The first `[[sink]]` of `sinks` that writes the file at `path`.
#[must_use]
pub fn owner<'a>(sinks: &'a [Target], path: &Path) -> Option<&'a Target> {
    sinks.iter().find(|t| same_file(t.sink.path(), path))
}

/// One writer per file: a `[[sink]]` of the config owns the file it writes. A snapshot
/// asked for at that file is `Ok(Some(i))`, `sinks[i]` being that sink, when it asks for
/// exactly what the sink writes (the same credential, format and refresh-token choice);
/// `Ok(None)` when no `[[sink]]` writes the file; refused otherwise.
///
/// Why the exact request is made that same writer instead of refused: it changes nothing
/// in the file, so refusing it would only break an idempotent provisioning script, and it
/// is not registered either, so no second entry exists that `--forget` could drop while the
/// file goes on changing. Anything else would give the file two writers, each rewriting it
/// on every change (two tokens flipping, a refresh token the config keeps out coming in, a
/// `.env` line in a JSON document), so it is refused before anything is written.
///
/// # Errors
/// [`SinkError::OwnedByConfig`], naming the `[[sink]]`, the config file and the fix.
pub fn claim(sinks: &[Target], config: &Path, wanted: &Target) -> Result<Option<usize>, SinkError> {
    let path = wanted.sink.path();
    if let Some(same) = sinks
        .iter()
        .position(|t| t.credential == wanted.credential && same_sink(&t.sink, &wanted.sink))
    {
        return Ok(Some(same));
    }
    match owner(sinks, path) {
        None => Ok(None),
        Some(sink) => Err(SinkError::OwnedByConfig {
            path: paths::display(path),
            config: paths::display(config),
            writes: sink.described(),
            wanted: wanted.described(),
        }),
    }
}

/// The same kind of sink with the same settings, writing one file.
fn same_sink(a: &Sink, b: &Sink) -> bool {
    let settings = |s: &Sink| match s {
        Sink::Dotenv { key, .. } => (None, key.clone()),
        Sink::Snapshot {
            include_refresh_token,
            ..
        } => (Some(*include_refresh_token), None),
    };
    settings(a) == settings(b) && same_file(a.path(), b.path())
}

/// `forget` of `path`, which no snapshot is registered at: refused when a `[[sink]]`
/// writes that file, since forgetting cannot stop it.
#[must_use]
pub fn not_a_snapshot(sinks: &[Target], config: &Path, path: &Path) -> Option<SinkError> {
    owner(sinks, path).map(|sink| SinkError::NotASnapshot {
        path: paths::display(path),
        config: paths::display(config),
        writes: sink.described(),
    })
}

/// The `[[sink]]`s of one config never share a snapshot's file, nor a `key` of a `.env`:
/// two writers of one credentials file, or of one variable, would rewrite it in turn (`.env`
/// sinks may share a file, one key each). Keys left to the credential's kind are only known
/// once it is read: [`KeyTaken`](SinkError::KeyTaken) then.
///
/// # Errors
/// The shared path, and what to do.
pub fn check_one_writer(targets: &[Target]) -> Result<(), String> {
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            if !same_file(a.sink.path(), b.sink.path()) {
                continue;
            }
            let shown = paths::display(a.sink.path());
            match (&a.sink, &b.sink) {
                (Sink::Snapshot { .. }, _) | (_, Sink::Snapshot { .. }) => {
                    return Err(format!(
                        "two [[sink]]s write {shown} ({} and {}); a snapshot file has one writer: keep one of them",
                        a.described(),
                        b.described()
                    ));
                }
                (Sink::Dotenv { key: Some(k), .. }, Sink::Dotenv { key: Some(l), .. })
                    if k == l =>
                {
                    return Err(format!(
                        "two [[sink]]s write {k} in {shown} ({} and {}); a variable has one writer: give one of them another key",
                        a.described(),
                        b.described()
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Why `wanted`, a `.env` `[[sink]]` listed after `holder` that writes the same `key` of the
/// same file for another credential, is not written.
#[must_use]
pub fn key_taken(config: &Path, holder: &Target, wanted: &Target, key: &str) -> SinkError {
    SinkError::KeyTaken {
        path: paths::display(wanted.sink.path()),
        key: key.to_owned(),
        config: paths::display(config),
        holder: holder.described(),
        wanted: wanted.described(),
    }
}

fn cli_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Codex => "Codex",
        Kind::Gemini => "Gemini",
        _ => "Claude",
    }
}

/// Rewrites a snapshot *in place*, keeping its inode: a file-scoped bind mount
/// (`-v snap:/root/.claude/.credentials.json`, `bwrap --ro-bind`) pins the inode, so an
/// atomic rename would leave running sandboxes reading the old token forever. The new
/// text is padded with JSON whitespace to at least the old length and written with one
/// `pwrite`, so a reader never sees a shorter, truncated document. A new file is created
/// atomically, 0600.
///
/// The existing file is opened without following a link and checked on the descriptor (see
/// [`crate::safe_file`]); it is replaced only when it is empty or already a credentials
/// document of the same CLI (`kind`), so `--out ~/.bashrc` leaves `.bashrc` alone.
///
/// # Errors
/// A refused or foreign file, a non-credentials file, or an I/O failure.
pub fn write_in_place(path: &Path, kind: Kind, text: &Secret) -> Result<(), SinkError> {
    let shown = paths::display(path);
    let err = |source| WriteError {
        path: shown.clone(),
        source,
    };
    let named = |e: FileError| e.shown_as(&shown);
    // Missing folders are made (0700) on the way; none on the way may be a link.
    let sink = crate::sink_path::SinkPath::resolve(path, true).map_err(named)?;
    let at = sink.path();
    let Some(mut file) =
        safe_file::open(&at, Access::ReadWrite, safe_file::MAX_FILE_BYTES).map_err(named)?
    else {
        return atomic::write(&at, text.expose().as_bytes(), 0o600)
            .map_err(|e| SinkError::Write(err(e.source)));
    };
    safe_file::single_link(&file, path)?;
    let old = zeroize::Zeroizing::new(
        safe_file::read_all(&mut file, path, safe_file::MAX_FILE_BYTES).map_err(named)?,
    );
    let old_text = String::from_utf8_lossy(&old);
    if !crate::snapshot::may_replace(kind, &old_text) {
        return Err(SinkError::NotCredentials {
            path: shown,
            cli: cli_of(kind),
        });
    }
    // A live login (it holds a refresh token) replaced by a snapshot without one is the
    // host logged out for good: Claude Code's own `.credentials.json`, codex's auth.json.
    if crate::snapshot::holds_refresh_token(&old_text)
        && !crate::snapshot::holds_refresh_token(text.expose())
    {
        return Err(FileError::LiveLogin { path: shown }.into());
    }
    let meta = file.metadata().map_err(err)?;
    let mut bytes = text.expose().as_bytes().to_vec();
    if bytes.len() < old.len() {
        // Pad before the final newline: trailing spaces are valid JSON whitespace.
        let nl = bytes.pop();
        bytes.resize(old.len() - usize::from(nl.is_some()), b' ');
        bytes.extend(nl);
    }
    let result = file
        .write_all_at(&bytes, 0)
        .and_then(|()| file.set_len(bytes.len() as u64))
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o600)))
        .and_then(|()| file.sync_all());
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(result.map_err(err)?)
}

/// Snapshots registered with the agent (`keyferry snapshot … --out`), kept across restarts
/// in the state directory. Holds paths only.
pub struct Registry;

impl Registry {
    fn path() -> PathBuf {
        paths::state_dir().join("snapshots.json")
    }

    /// The registrations; an unreadable or unsafe registry file is reported and read as empty.
    #[must_use]
    pub fn load() -> Vec<Target> {
        match safe_file::read_to_string(&Self::path(), MAX_REGISTRY_BYTES) {
            Ok(Some(t)) => serde_json::from_str(&t).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable snapshot registry");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the snapshot registry");
                Vec::new()
            }
        }
    }

    fn update(change: impl FnOnce(&mut Vec<Target>)) -> Result<Vec<Target>, FileError> {
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
    pub fn add(target: Target) -> Result<(), FileError> {
        Self::update(|l| {
            l.retain(|t| !same_file(t.sink.path(), target.sink.path()));
            l.push(target);
        })
        .map(drop)
    }

    /// Removes the registration for `path`; false when there was none.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn remove(path: &Path) -> Result<bool, FileError> {
        let mut removed = false;
        Self::update(|l| {
            let before = l.len();
            l.retain(|t| !same_file(t.sink.path(), path));
            removed = l.len() != before;
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
