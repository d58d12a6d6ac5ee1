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

    /// Records a token and returns the entry kept. The earliest time a fingerprint was seen
    /// wins: storing the same token again (or restoring an old one) must not make its assumed
    /// expiry jump forward. A real store marks the entry as stored by us.
    pub fn record(&mut self, fingerprint: &str, entry: Entry) -> Entry {
        let kept = match self.tokens.get(fingerprint) {
            Some(existing) => Entry {
                credential: existing.credential.clone(),
                stored_at: existing.stored_at.min(entry.stored_at),
                first_seen: existing.first_seen && entry.first_seen,
            },
            None => entry,
        };
        self.tokens.insert(fingerprint.to_owned(), kept.clone());
        kept
    }

    /// Load, change and save under the file's lock, so concurrent `keyferry` runs
    /// never drop each other's entries.
    ///
    /// # Errors
    /// The state directory or file cannot be written.
    pub fn update<T>(change: impl FnOnce(&mut Self) -> T) -> Result<T, FileError> {
        let path = Self::path();
        atomic::private_dir(&paths::state_dir())?;
        let _lock = atomic::FileLock::acquire(&path)?;
        let mut ledger = Self::load();
        let out = change(&mut ledger);
        let json = serde_json::to_vec_pretty(&ledger).unwrap_or_default();
        atomic::write(&path, &json, 0o600)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64, first_seen: bool) -> Entry {
        Entry {
            credential: "claude".into(),
            stored_at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
            first_seen,
        }
    }

    #[test]
    fn the_earliest_sighting_wins_and_a_store_marks_it_ours() {
        let mut l = Ledger::default();
        assert_eq!(l.record("fp", entry(100, true)), entry(100, true));
        // Stored later: the time stays the first sighting, now as stored by us.
        assert_eq!(l.record("fp", entry(200, false)), entry(100, false));
        // Stored again: unchanged, so the assumed expiry does not move.
        assert_eq!(l.record("fp", entry(300, false)), entry(100, false));
        assert_eq!(l.record("fp", entry(50, true)), entry(50, false));
        assert_eq!(l.get("fp"), Some(&entry(50, false)));
    }
}
