//! Linux Secret Service (gnome-keyring, KeePassXC) over D-Bus, with keyring-crate-compatible items.
//!
//! Items carry the attributes keyring 3 writes (`service`, `username`, `target`,
//! `application`), so `secret-tool lookup service S username U` and other keyring-rs
//! programs find them. We talk to `dbus-secret-service` (the library keyring 3 wraps)
//! directly for two things keyring hides: a prompt timeout, so a locked collection fails
//! fast instead of hanging a headless agent, and the item's `Modified` property for polling.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use dbus_secret_service::{EncryptionType, Error as SsError, Item, SecretService};

use super::{Backend, ItemId, Stamp, Store, StoreError};
use crate::secret::Secret;

const NAME: &str = "secret-service";
const LOCKED_FIX: &str = "unlock the login keyring (log in to the desktop session, or run \
    `gnome-keyring-daemon --unlock` and type its password), or set [keychain] \
    prompt_timeout_secs in config.toml so keyferry may ask for it";
const UNAVAILABLE_FIX: &str = "start a Secret Service provider (gnome-keyring-daemon \
    --components=secrets) on the session bus, or set [keychain] backend = \"keyutils\"";

pub struct SecretServiceStore {
    conn: Mutex<Option<SecretService>>,
    prompt_timeout_secs: u64,
}

impl SecretServiceStore {
    /// Connects now, so `Auto` can fall back when no provider answers.
    pub fn connect(prompt_timeout_secs: u64) -> Result<Self, StoreError> {
        let ss = open_session(prompt_timeout_secs)?;
        Ok(Self {
            conn: Mutex::new(Some(ss)),
            prompt_timeout_secs,
        })
    }

    /// Runs `f` on the session, reconnecting once if the bus or daemon went away.
    fn with<T>(
        &self,
        operation: &'static str,
        id: &ItemId,
        f: impl Fn(&SecretService) -> Result<T, SsError>,
    ) -> Result<T, StoreError> {
        let mut guard: MutexGuard<'_, Option<SecretService>> =
            self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(open_session(self.prompt_timeout_secs)?);
            }
            let ss = guard.as_ref().expect("session was just opened");
            match f(ss) {
                Ok(v) => return Ok(v),
                // A restarted daemon forgets our session: reconnect once.
                Err(SsError::Dbus(e))
                    if attempt == 0 && (is_disconnect(&e) || is_stale_session(&e)) =>
                {
                    *guard = None;
                }
                Err(e) => return Err(classify(e, operation, id)),
            }
        }
        Err(StoreError::Unavailable {
            backend: NAME,
            reason: "the session bus connection keeps dropping".into(),
            fix: UNAVAILABLE_FIX,
        })
    }
}

fn open_session(prompt_timeout_secs: u64) -> Result<SecretService, StoreError> {
    SecretService::connect_with_max_prompt_timeout(EncryptionType::Dh, prompt_timeout_secs).map_err(
        |e| StoreError::Unavailable {
            backend: NAME,
            reason: describe(&e),
            fix: UNAVAILABLE_FIX,
        },
    )
}

fn is_disconnect(e: &dbus::Error) -> bool {
    matches!(
        e.name(),
        Some(
            "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Disconnected"
                | "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NoServer"
        )
    )
}

fn is_stale_session(e: &dbus::Error) -> bool {
    matches!(
        e.name(),
        Some("org.freedesktop.Secret.Error.NoSession" | "org.freedesktop.DBus.Error.UnknownObject")
    )
}

/// Error text from D-Bus names and messages only; secrets never travel in them.
fn describe(e: &SsError) -> String {
    match e {
        SsError::Dbus(d) => format!(
            "{} ({})",
            d.message().unwrap_or("no message"),
            d.name().unwrap_or("unknown D-Bus error")
        ),
        SsError::Unavailable => "no D-Bus session bus or no Secret Service provider on it".into(),
        SsError::Crypto(_) => "session encryption failed".into(),
        other => other.to_string(),
    }
}

fn classify(e: SsError, operation: &'static str, id: &ItemId) -> StoreError {
    let item = id.to_string();
    match e {
        SsError::Locked | SsError::Prompt => StoreError::Locked {
            backend: NAME,
            item,
            fix: LOCKED_FIX,
        },
        SsError::Unavailable => StoreError::Unavailable {
            backend: NAME,
            reason: describe(&e),
            fix: UNAVAILABLE_FIX,
        },
        SsError::Dbus(ref d) if is_disconnect(d) => StoreError::Unavailable {
            backend: NAME,
            reason: describe(&e),
            fix: UNAVAILABLE_FIX,
        },
        SsError::Dbus(ref d) if d.name() == Some("org.freedesktop.Secret.Error.IsLocked") => {
            StoreError::Locked {
                backend: NAME,
                item,
                fix: LOCKED_FIX,
            }
        }
        other => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: describe(&other),
        },
    }
}

fn search_attrs(id: &ItemId) -> HashMap<&str, &str> {
    HashMap::from([
        ("service", id.service.as_str()),
        ("username", id.account.as_str()),
    ])
}

/// The unique item for `id`, unlocked when prompting is allowed.
fn find<'a>(ss: &'a SecretService, id: &ItemId, allow_prompt: bool) -> Result<Found<'a>, SsError> {
    let found = ss.search_items(search_attrs(id))?;
    let count = found.unlocked.len() + found.locked.len();
    match count {
        0 => Ok(Found::None),
        1 => match (
            found.unlocked.into_iter().next(),
            found.locked.into_iter().next(),
        ) {
            (Some(item), _) => Ok(Found::One(item)),
            (None, Some(item)) if allow_prompt => {
                item.unlock()?;
                Ok(Found::One(item))
            }
            _ => Err(SsError::Locked),
        },
        n => Ok(Found::Many(n)),
    }
}

enum Found<'a> {
    None,
    One(Item<'a>),
    Many(usize),
}

impl SecretServiceStore {
    fn ambiguous(id: &ItemId, count: usize) -> StoreError {
        StoreError::Ambiguous {
            backend: NAME,
            item: id.to_string(),
            count,
        }
    }
}

impl Store for SecretServiceStore {
    fn backend(&self) -> Backend {
        Backend::SecretService
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        tracing::trace!(%id, "secret service read");
        let allow_prompt = self.prompt_timeout_secs > 0;
        let bytes = self.with("read", id, |ss| match find(ss, id, allow_prompt)? {
            Found::None => Ok(Ok(None)),
            Found::One(item) => item.get_secret().map(|b| Ok(Some(b))),
            Found::Many(n) => Ok(Err(n)),
        })?;
        match bytes {
            Ok(None) => Ok(None),
            Err(n) => Err(Self::ambiguous(id, n)),
            Ok(Some(bytes)) => super::utf8_secret(bytes, NAME, id).map(Some),
        }
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        tracing::trace!(%id, "secret service write");
        let allow_prompt = self.prompt_timeout_secs > 0;
        let outcome = self.with("write", id, |ss| match find(ss, id, allow_prompt)? {
            Found::One(item) => item
                .set_secret(secret.expose().as_bytes(), "text/plain")
                .map(|()| None),
            Found::Many(n) => Ok(Some(n)),
            Found::None => {
                let collection = ss.get_default_collection()?;
                if collection.is_locked()? {
                    if !allow_prompt {
                        return Err(SsError::Locked);
                    }
                    collection.unlock()?;
                }
                let label = format!("keyferry: {} ({})", id.service, id.account);
                let attrs = HashMap::from([
                    ("service", id.service.as_str()),
                    ("username", id.account.as_str()),
                    ("target", "default"),
                    ("application", "keyferry"),
                ]);
                collection
                    .create_item(
                        &label,
                        attrs,
                        secret.expose().as_bytes(),
                        true,
                        "text/plain",
                    )
                    .map(|_| None)
            }
        })?;
        match outcome {
            Some(n) => Err(Self::ambiguous(id, n)),
            None => Ok(()),
        }
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        let allow_prompt = self.prompt_timeout_secs > 0;
        let outcome = self.with("delete", id, |ss| match find(ss, id, allow_prompt)? {
            Found::None => Ok(Ok(false)),
            Found::One(item) => item.delete().map(|()| Ok(true)),
            Found::Many(n) => Ok(Err(n)),
        })?;
        outcome.map_err(|n| Self::ambiguous(id, n))
    }

    fn ensure_unlocked(&self) -> Result<(), StoreError> {
        // `Locked` is a property: reading it never unlocks or prompts.
        let id = ItemId::new("(default collection)", "");
        if self.with("check", &id, |ss| ss.get_default_collection()?.is_locked())? {
            return Err(StoreError::Locked {
                backend: NAME,
                item: "new items (the default collection)".into(),
                fix: LOCKED_FIX,
            });
        }
        Ok(())
    }

    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        // `Modified` is readable on locked items too, and reading it never prompts.
        self.with("poll", id, |ss| {
            let found = ss.search_items(search_attrs(id))?;
            let mut stamps = Vec::new();
            for item in found.unlocked.iter().chain(found.locked.iter()) {
                stamps.push(format!("{}:{}", item.path, item.get_modified()?));
            }
            Ok((!stamps.is_empty()).then(|| Stamp(stamps.join(","))))
        })
    }
}
