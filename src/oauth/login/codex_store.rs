//! Where Codex keeps its ChatGPT login, and the refresher's source for it.
//!
//! Facts from openai/codex `codex-rs/login/src/auth/storage.rs` and `codex-rs/keyring-store`,
//! checked against the 0.171 CLI from npm (re-check per version):
//! - `cli_auth_credentials_store` in `$CODEX_HOME/config.toml` (top level): `file` (the
//!   default), `keyring`, `auto`, `ephemeral`.
//! - `keyring`: one generic-password item, service `Codex Auth`, account `cli|` + the first 16
//!   hex chars of sha256(the canonical `CODEX_HOME`), holding `auth.json`'s document as
//!   compact JSON (`serde_json::to_string`). On Linux through the keyring crate 3.6.3's Secret
//!   Service backend: attributes `service`, `username` (the account), `target = default`,
//!   `application = rust-keyring`, label `cli|…@Codex Auth:default (keyring v3.6.3)`, in the
//!   default collection; it looks the item up by service, username and target. (What
//!   `codex login --with-api-key` with that store writes, read back with `secret-tool`.)
//!   On macOS the same service and account in the login keychain.
//! - `auto`: the keyring item when it loads, else (absent or failing keyring) auth.json.
//! - `ephemeral`: in memory only; nothing for Keyferry to refresh.
//! - Whatever the store, codex 0.171 changes the login under its `flock`s on
//!   `$CODEX_HOME/auth.lock` and `auth.json.lock` (`oauth/cli_lock/codex.rs`), so a keyring
//!   login's lock lives in the home its account was made from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::oauth::writeback::{CredentialsFile, LoginSource, WritebackError};
use crate::secret::Secret;
use crate::source::Source;
use crate::store::{ItemId, Store};

/// Codex's keyring service (`KEYRING_SERVICE` in `storage.rs`).
pub const KEYRING_SERVICE: &str = "Codex Auth";
const CONFIG_KEY: &str = "cli_auth_credentials_store";

/// `cli_auth_credentials_store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodexStore {
    File,
    Keyring,
    Auto,
    Ephemeral,
}

/// Codex's home as the CLI finds it: `$CODEX_HOME` when set, else `~/.codex`, in the form a
/// `file:` source takes (`~/.codex` stays unexpanded, as the built-in chain has always said).
#[must_use]
pub fn codex_home_text(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("CODEX_HOME")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "~/.codex".to_owned())
}

/// The keyring account of the login in `codex_home` (`compute_store_key`): the canonical path
/// when it resolves, else the path as given, as Codex falls back.
#[must_use]
pub fn keyring_account(codex_home: &Path) -> String {
    let canonical = codex_home
        .canonicalize()
        .unwrap_or_else(|_| codex_home.to_path_buf());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    format!("cli|{}", &hex::encode(digest)[..16])
}

/// The Codex home whose keyring item has `account`, where its lock lives: `$CODEX_HOME` (else
/// `~/.codex`) when the account is that home's store key, else `None` (an item of a home
/// Keyferry cannot name).
#[must_use]
pub fn home_of(account: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let home = crate::paths::expand(&codex_home_text(env));
    (keyring_account(&home) == account).then_some(home)
}

/// The store `codex_home/config.toml` names. A missing, unreadable or unparsable file, or an
/// unknown value, is `File`: Codex's default, and a broken config stops Codex itself anyway.
#[must_use]
pub fn configured_store(codex_home: &Path) -> CodexStore {
    let Ok(text) = std::fs::read_to_string(codex_home.join("config.toml")) else {
        return CodexStore::File;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return CodexStore::File;
    };
    match table.get(CONFIG_KEY).and_then(toml::Value::as_str) {
        Some("keyring") => CodexStore::Keyring,
        Some("auto") => CodexStore::Auto,
        Some("ephemeral") => CodexStore::Ephemeral,
        _ => CodexStore::File,
    }
}

/// The built-in `codex` credential's chain: where Codex itself reads its login, in its order.
#[must_use]
pub fn default_chain(env: &dyn Fn(&str) -> Option<String>) -> Vec<Source> {
    let home_text = codex_home_text(env);
    let home = crate::paths::expand(&home_text);
    let file = Source::File {
        path: format!("{}/auth.json", home_text.trim_end_matches('/')),
    };
    let item = || Source::Keychain {
        service: KEYRING_SERVICE.to_owned(),
        account: Some(keyring_account(&home)),
    };
    match configured_store(&home) {
        CodexStore::File | CodexStore::Ephemeral => vec![file],
        CodexStore::Keyring => vec![item()],
        CodexStore::Auto => vec![item(), file],
    }
}

/// A Codex login kept in its keyring item, with `auth.json` behind it in `auto` mode: read
/// and written where Codex reads it now (the item when it holds one, else the file). A login
/// is never moved between the two, nor created where there is none.
pub struct CodexLogin {
    pub store: Arc<dyn Store>,
    pub item: ItemId,
    /// `auto`'s fallback file (`None` in `keyring` mode).
    pub file: Option<PathBuf>,
    /// The Codex home, where its `auth.lock` lives (`None`: unknown, no lock taken).
    pub lock_dir: Option<PathBuf>,
}

impl CodexLogin {
    fn file(&self) -> Option<CredentialsFile> {
        self.file.clone().map(|path| CredentialsFile { path })
    }

    /// The item's document; in `auto` mode a failing keyring reads as none, as Codex falls
    /// back to the file then.
    fn item_document(&self) -> Result<Option<Secret>, WritebackError> {
        match self.store.get(&self.item) {
            Ok(doc) => Ok(doc),
            Err(e) if self.file.is_some() => {
                tracing::warn!(error = %e, "Codex's keyring item is unreadable; using auth.json as Codex does");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl LoginSource for CodexLogin {
    fn location(&self) -> String {
        let item = format!("{} item {}", self.store.backend().as_str(), self.item);
        match self.file() {
            Some(f) => format!("{item} (else {})", f.location()),
            None => item,
        }
    }

    fn read(&self) -> Result<Option<Secret>, WritebackError> {
        if let Some(doc) = self.item_document()? {
            return Ok(Some(doc));
        }
        self.file().map_or(Ok(None), |f| f.read())
    }

    fn write(&self, document: &Secret) -> Result<(), WritebackError> {
        if self.item_document()?.is_some() {
            // Compact, as Codex serialises what it puts in the keyring.
            let compact = serde_json::from_str::<serde_json::Value>(document.expose())
                .ok()
                .and_then(|v| serde_json::to_string(&v).ok())
                .map_or_else(|| document.clone(), Secret::new);
            return Ok(self.store.set(&self.item, &compact)?);
        }
        match self.file() {
            Some(f) => f.write(document),
            None => Err(WritebackError::Vanished {
                path: self.location(),
            }),
        }
    }

    fn cli_lock_dir(&self) -> Option<PathBuf> {
        // No home, no codex to take its lock there (and none is made for it).
        self.lock_dir.clone().filter(|d| d.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn the_account_is_codexs_store_key() {
        // `printf %s /tmp/cxk/home/.codex | sha256sum`, as `codex login` named the item.
        assert_eq!(
            keyring_account(Path::new("/nonexistent-kf/home/.codex")),
            format!(
                "cli|{}",
                &hex::encode(Sha256::digest(b"/nonexistent-kf/home/.codex"))[..16]
            )
        );
        assert_eq!(
            keyring_account(Path::new("/tmp/cxk/home/.codex")),
            "cli|d2eae09c93d50612"
        );
    }

    #[test]
    fn a_keyring_item_is_locked_in_the_home_it_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_owned();
        let env = |k: &str| (k == "CODEX_HOME").then(|| home.clone());
        let account = keyring_account(dir.path());
        assert_eq!(home_of(&account, &env).as_deref(), Some(dir.path()));
        assert_eq!(home_of("cli|0123456789abcdef", &env), None);
    }

    #[test]
    fn the_chain_follows_the_configured_store() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_owned();
        let env = |k: &str| (k == "CODEX_HOME").then(|| home.clone());
        let file = Source::File {
            path: format!("{home}/auth.json"),
        };
        assert_eq!(default_chain(&env), vec![file.clone()]);
        let item = Source::Keychain {
            service: KEYRING_SERVICE.into(),
            account: Some(keyring_account(dir.path())),
        };
        for (value, want) in [
            ("keyring", vec![item.clone()]),
            ("auto", vec![item.clone(), file.clone()]),
            ("file", vec![file.clone()]),
            ("ephemeral", vec![file.clone()]),
        ] {
            std::fs::write(
                dir.path().join("config.toml"),
                format!("model = \"x\"\n{CONFIG_KEY} = \"{value}\"\n[profiles.p]\n"),
            )
            .unwrap();
            assert_eq!(default_chain(&env), want, "{value}");
        }
        std::fs::write(dir.path().join("config.toml"), "not toml [").unwrap();
        assert_eq!(default_chain(&env), vec![file]);
        let none = |_: &str| None;
        assert_eq!(
            default_chain(&none)[0],
            Source::File {
                path: "~/.codex/auth.json".into()
            }
        );
    }

    #[test]
    fn auto_reads_and_writes_where_the_login_is_and_never_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let item = ItemId::new(KEYRING_SERVICE, "cli|0123456789abcdef");
        let login = CodexLogin {
            store: Arc::clone(&store),
            item: item.clone(),
            file: Some(path.clone()),
            lock_dir: Some(dir.path().to_path_buf()),
        };
        assert_eq!(login.cli_lock_dir().as_deref(), Some(dir.path()));
        assert!(login.read().unwrap().is_none());
        assert!(matches!(
            login.write(&Secret::new("{}".into())),
            Err(WritebackError::Vanished { .. })
        ));
        assert!(store.get(&item).unwrap().is_none() && !path.exists());
        // Only the file: read and written there.
        std::fs::write(&path, r#"{"tokens":{"refresh_token":"f"}}"#).unwrap();
        assert!(login.read().unwrap().unwrap().expose().contains("\"f\""));
        login
            .write(&Secret::new("{\n  \"tokens\": {}\n}".into()))
            .unwrap();
        assert!(store.get(&item).unwrap().is_none(), "not moved to the item");
        // An item wins, and is written compact as Codex writes it.
        store
            .set(
                &item,
                &Secret::new(r#"{"tokens":{"refresh_token":"k"}}"#.into()),
            )
            .unwrap();
        assert!(login.read().unwrap().unwrap().expose().contains("\"k\""));
        login
            .write(&Secret::new(
                "{\n  \"tokens\": {\"refresh_token\": \"n\"}\n}".into(),
            ))
            .unwrap();
        assert_eq!(
            store.get(&item).unwrap().unwrap().expose(),
            r#"{"tokens":{"refresh_token":"n"}}"#
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"tokens\": {}\n}"
        );
    }
}
