//! Keychain stores: one trait, thin adapters for macOS Keychain, Secret Service, keyutils, memory.

#[cfg(target_os = "linux")]
mod keyutils;
#[cfg(target_os = "macos")]
mod macos;
mod memory;
#[cfg(target_os = "linux")]
mod secret_service;
mod security_cli;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use memory::MemoryStore;
pub use security_cli::{
    is_shared_with_cli, SecurityCliStore, DEFAULT_SECURITY_PATH, MAX_COMMAND_LINE,
};

/// A generic-password item: `service` + `account`, as `security find-generic-password -s S -a A`
/// and `secret-tool lookup service S username A` address it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemId {
    pub service: String,
    pub account: String,
}

impl ItemId {
    #[must_use]
    pub fn new(service: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            account: account.into(),
        }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service={:?} account={:?}", self.service, self.account)
    }
}

/// An opaque change marker read from an item's attributes (never its data).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp(pub String);

/// Which keychain implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// macOS Keychain on macOS (items shared with CLIs through `security`, see
    /// [`is_shared_with_cli`]); Secret Service on Linux, or keyutils when none is running.
    #[default]
    Auto,
    /// Security.framework only.
    Macos,
    SecretService,
    Keyutils,
    /// Every item through the `security` command-line tool (`[keychain] security_path`).
    SecurityCli,
    /// Process memory; for tests only.
    Memory,
}

impl Backend {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Macos => "macos-keychain",
            Self::SecretService => "secret-service",
            Self::Keyutils => "keyutils",
            Self::SecurityCli => "security-cli",
            Self::Memory => "memory",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "macos" | "macos-keychain" => Self::Macos,
            "secret-service" => Self::SecretService,
            "keyutils" => Self::Keyutils,
            "security-cli" => Self::SecurityCli,
            "memory" => Self::Memory,
            other => {
                return Err(format!(
                    "unknown keychain backend {other:?} (use auto, macos, secret-service, keyutils, security-cli)"
                ))
            }
        })
    }
}

/// Keychain failures. Messages name the backend and item and say what to do;
/// none ever contains secret data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{backend}: the keychain holding {item} is locked; {fix}")]
    Locked {
        backend: &'static str,
        item: String,
        fix: &'static str,
    },
    #[error("{backend} is not available: {reason}; {fix}")]
    Unavailable {
        backend: &'static str,
        reason: String,
        fix: &'static str,
    },
    #[error("{backend}: access to {item} was denied ({reason})")]
    Denied {
        backend: &'static str,
        item: String,
        reason: String,
    },
    #[error("{backend}: {item} is matched by {count} items; remove the duplicates (e.g. `secret-tool clear service SERVICE username ACCOUNT`) and store it again")]
    Ambiguous {
        backend: &'static str,
        item: String,
        count: usize,
    },
    #[error("{backend}: {item} cannot be written: {reason}")]
    Unwritable {
        backend: &'static str,
        item: String,
        reason: String,
    },
    #[error("{backend}: {item} does not hold UTF-8 text")]
    NotUtf8 { backend: &'static str, item: String },
    #[error("{backend}: {operation} {item} failed: {message}")]
    Platform {
        backend: &'static str,
        operation: &'static str,
        item: String,
        message: String,
    },
}

impl StoreError {
    /// Stable machine-readable code for `{code, message}` replies.
    #[must_use]
    pub fn code(&self) -> crate::domain::ErrorCode {
        use crate::domain::ErrorCode;
        match self {
            Self::Locked { .. } => ErrorCode::KeychainLocked,
            Self::Unavailable { .. } => ErrorCode::KeychainUnavailable,
            Self::Denied { .. } => ErrorCode::KeychainDenied,
            Self::Ambiguous { .. } => ErrorCode::KeychainAmbiguous,
            Self::NotUtf8 { .. } => ErrorCode::KeychainBadData,
            Self::Unwritable { .. } => ErrorCode::KeychainUnwritable,
            Self::Platform { .. } => ErrorCode::KeychainError,
        }
    }
}

/// Keychain bytes as a [`Secret`]; non-UTF-8 data is zeroized, never shown.
pub(crate) fn utf8_secret(
    bytes: Vec<u8>,
    backend: &'static str,
    id: &ItemId,
) -> Result<Secret, StoreError> {
    String::from_utf8(bytes).map(Secret::new).map_err(|e| {
        zeroize::Zeroize::zeroize(&mut e.into_bytes());
        StoreError::NotUtf8 {
            backend,
            item: id.to_string(),
        }
    })
}

/// A keychain. Implementations are blocking; the agent calls them off its reactor.
pub trait Store: Send + Sync {
    fn backend(&self) -> Backend;

    /// The secret, or `None` when there is no such item.
    ///
    /// # Errors
    /// Locked, unavailable or failing keychain.
    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError>;

    /// Creates or replaces the item.
    ///
    /// # Errors
    /// Locked, unavailable or failing keychain.
    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError>;

    /// Removes the item; `false` when there was none.
    ///
    /// # Errors
    /// Locked, unavailable or failing keychain.
    fn delete(&self, id: &ItemId) -> Result<bool, StoreError>;

    /// A change marker read without touching the secret data where the platform allows
    /// (macOS `mdat`, Secret Service `Modified`), so polling never prompts.
    ///
    /// # Errors
    /// Unavailable or failing keychain.
    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError>;

    /// Fails with [`StoreError::Locked`] (and its fix) when the keychain new items go into
    /// is locked, asked without unlocking it or prompting (`keyferry doctor`). Backends
    /// without a lock they can read that way answer `Ok`.
    ///
    /// # Errors
    /// Locked, unavailable or failing keychain.
    fn ensure_unlocked(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Everything needed to open a keychain backend (`[keychain]` in config.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub backend: Backend,
    /// Seconds a backend may wait on an unlock prompt; 0 = fail fast with the fix.
    pub prompt_timeout_secs: u64,
    /// The `security` tool for `security-cli` (and macOS `auto`); default
    /// [`DEFAULT_SECURITY_PATH`].
    pub security_path: Option<PathBuf>,
}

impl OpenOptions {
    #[must_use]
    pub fn new(backend: Backend, prompt_timeout_secs: u64) -> Self {
        Self {
            backend,
            prompt_timeout_secs,
            security_path: None,
        }
    }

    #[must_use]
    pub fn security_path(&self) -> PathBuf {
        self.security_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SECURITY_PATH))
    }
}

/// Opens the configured backend. `Auto` on Linux picks Secret Service when one answers
/// on the session bus and falls back to kernel keyutils (never to a plaintext file).
///
/// # Errors
/// The backend cannot run on this OS or is unavailable.
pub fn open(backend: Backend, prompt_timeout_secs: u64) -> Result<Box<dyn Store>, StoreError> {
    open_with(&OpenOptions::new(backend, prompt_timeout_secs))
}

/// [`open`] with every `[keychain]` setting.
///
/// # Errors
/// The backend cannot run on this OS or is unavailable (e.g. no `security` at
/// `security_path`).
pub fn open_with(opts: &OpenOptions) -> Result<Box<dyn Store>, StoreError> {
    let prompt_timeout_secs = opts.prompt_timeout_secs;
    match opts.backend {
        Backend::Memory => Ok(Box::new(MemoryStore::default())),
        // On macOS the stamps come from Security.framework attributes (never a prompt).
        #[cfg(target_os = "macos")]
        Backend::SecurityCli => Ok(Box::new(macos::SharedItemStore::new(
            SecurityCliStore::open(opts.security_path(), prompt_timeout_secs)?,
            true,
        ))),
        #[cfg(not(target_os = "macos"))]
        Backend::SecurityCli => Ok(Box::new(SecurityCliStore::open(
            opts.security_path(),
            prompt_timeout_secs,
        )?)),
        #[cfg(target_os = "macos")]
        Backend::Auto => Ok(Box::new(macos::SharedItemStore::new(
            SecurityCliStore::new(opts.security_path(), prompt_timeout_secs),
            false,
        ))),
        #[cfg(target_os = "macos")]
        Backend::Macos => Ok(Box::new(macos::MacosStore)),
        #[cfg(target_os = "linux")]
        Backend::SecretService => Ok(Box::new(secret_service::SecretServiceStore::connect(
            prompt_timeout_secs,
        )?)),
        #[cfg(target_os = "linux")]
        Backend::Keyutils => Ok(Box::new(keyutils::KeyutilsStore)),
        #[cfg(target_os = "linux")]
        Backend::Auto => match secret_service::SecretServiceStore::connect(prompt_timeout_secs) {
            Ok(s) => Ok(Box::new(s)),
            Err(StoreError::Unavailable { reason, .. }) => {
                tracing::info!(%reason, "no Secret Service on the session bus; using kernel keyutils");
                Ok(Box::new(keyutils::KeyutilsStore))
            }
            Err(e) => Err(e),
        },
        #[allow(unreachable_patterns)]
        other => Err(StoreError::Unavailable {
            backend: other.as_str(),
            reason: format!("not supported on {}", std::env::consts::OS),
            fix: "set [keychain] backend = \"auto\" in config.toml",
        }),
    }
}

/// A keychain opened on first use, so lookups that end at an environment variable never
/// touch D-Bus or the Keychain. A failed open is retried on the next use.
pub struct LazyStore {
    opts: OpenOptions,
    cell: std::sync::OnceLock<Box<dyn Store>>,
}

impl LazyStore {
    #[must_use]
    pub fn new(backend: Backend, prompt_timeout_secs: u64) -> Self {
        Self::with_options(OpenOptions::new(backend, prompt_timeout_secs))
    }

    /// Opens with every `[keychain]` setting (e.g. `KeychainConfig::store_options`).
    #[must_use]
    pub fn with_options(opts: OpenOptions) -> Self {
        Self {
            opts,
            cell: std::sync::OnceLock::new(),
        }
    }

    /// Wraps an already open store (tests, the agent).
    #[must_use]
    pub fn with(store: Box<dyn Store>) -> Self {
        let s = Self::new(store.backend(), 0);
        let _ = s.cell.set(store);
        s
    }

    /// # Errors
    /// The backend cannot be opened.
    pub fn get(&self) -> Result<&dyn Store, StoreError> {
        if let Some(s) = self.cell.get() {
            return Ok(s.as_ref());
        }
        let opened = open_with(&self.opts)?;
        Ok(self.cell.get_or_init(|| opened).as_ref())
    }
}
