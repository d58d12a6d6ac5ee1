//! The ledger: non-secret facts about stored tokens (when a setup-token was stored), in the
//! state directory, mode 0600. Keyed by fingerprint; never holds a token.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic;
use crate::paths;
use crate::safe_file::{self, FileError};

/// The ledger holds a few hundred bytes per token; anything this large is not ours.
const MAX_LEDGER_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub credential: String,
    #[serde(with = "time::serde::rfc3339")]
    pub stored_at: OffsetDateTime,
    /// True when we only saw the token (env, file) rather than storing it ourselves.
    #[serde(default)]
    pub first_seen: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    tokens: BTreeMap<String, Entry>,
}

impl Ledger {
    fn path() -> std::path::PathBuf {
        paths::state_dir().join("ledger.json")
    }

    /// Loads the ledger; a missing or unreadable one is empty (it only holds estimates).
    #[must_use]
    pub fn load() -> Self {
        let path = Self::path();
        match safe_file::read_to_string(&path, MAX_LEDGER_BYTES) {
            Ok(Some(text)) if text.trim().is_empty() => Self::default(),
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %paths::display(&path), error = %e, "ignoring unreadable ledger");
                Self::default()
            }),
            Ok(None) => Self::default(),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the ledger");
                Self::default()
            }
        }
    }

    #[must_use]
    pub fn get(&self, fingerprint: &str) -> Option<&Entry> {
        self.tokens.get(fingerprint)
    }

    /// Records a token; `first_seen` entries never overwrite a real storage time.
    pub fn record(&mut self, fingerprint: &str, entry: Entry) {
        match self.tokens.get(fingerprint) {
            Some(existing) if entry.first_seen && !existing.first_seen => {}
            _ => {
                self.tokens.insert(fingerprint.to_owned(), entry);
            }
        }
    }

    /// Load, change and save under the file's lock, so concurrent `keyferry` runs
    /// never drop each other's entries.
    ///
    /// # Errors
    /// The state directory or file cannot be written.
    pub fn update(change: impl FnOnce(&mut Self)) -> Result<(), FileError> {
        let path = Self::path();
        atomic::private_dir(&paths::state_dir())?;
        let _lock = atomic::FileLock::acquire(&path)?;
        let mut ledger = Self::load();
        change(&mut ledger);
        let json = serde_json::to_vec_pretty(&ledger).unwrap_or_default();
        Ok(atomic::write(&path, &json, 0o600)?)
    }
}
