//! The refresh journal: a new login is put in the keychain before it is written back, so a
//! crash or a failed write-back between the token answer and the write never loses the new
//! refresh token (the old one is already spent). One keyferry-owned item per credential.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::store::{ItemId, Store, StoreError};

pub const PENDING_SERVICE: &str = "keyferry-pending-refresh";

/// A short non-reversible fingerprint of a token, to tell logins apart without keeping them.
#[must_use]
pub fn fingerprint(token: &Secret) -> String {
    hex::encode(&Sha256::digest(token.expose().as_bytes())[..16])
}

/// A written-ahead refresh: the new document and which refresh token it replaces.
pub struct Pending {
    /// Fingerprint of the refresh token that was spent to get `document`.
    pub replaces: String,
    pub document: Secret,
    /// How long the endpoint said the new login lasts. A restarted agent that finishes the
    /// write-back has no other way to know it, and without it Google's one-hour logins
    /// look due at once under the default hour of `refresh_ahead` (a wasted refresh).
    pub lifetime: Option<Duration>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("replaces", &self.replaces)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Stored<'a> {
    v: u8,
    replaces: &'a str,
    document: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifetime_secs: Option<u64>,
}

#[must_use]
pub fn item(name: &str) -> ItemId {
    ItemId::new(PENDING_SERVICE, name)
}

/// # Errors
/// The keychain refuses the item.
pub fn save(store: &dyn Store, name: &str, pending: &Pending) -> Result<(), StoreError> {
    let text = serde_json::to_string(&Stored {
        v: 1,
        replaces: &pending.replaces,
        document: pending.document.expose(),
        lifetime_secs: pending.lifetime.map(|d| d.as_secs()),
    })
    .expect("plain strings serialise");
    store.set(&item(name), &Secret::new(text))
}

/// The pending refresh for `name`; an unreadable item is treated as none (and logged).
///
/// # Errors
/// The keychain cannot be read.
pub fn load(store: &dyn Store, name: &str) -> Result<Option<Pending>, StoreError> {
    let Some(raw) = store.get(&item(name))? else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Owned {
        v: u8,
        replaces: String,
        document: String,
        // Absent in items written before it was kept.
        #[serde(default)]
        lifetime_secs: Option<u64>,
    }
    match serde_json::from_str::<Owned>(raw.expose()) {
        Ok(s) if s.v == 1 => Ok(Some(Pending {
            replaces: s.replaces,
            document: Secret::new(s.document),
            lifetime: s.lifetime_secs.map(Duration::from_secs),
        })),
        _ => {
            tracing::warn!(
                credential = name,
                "ignoring an unreadable pending-refresh item"
            );
            Ok(None)
        }
    }
}

/// # Errors
/// The keychain cannot delete the item.
pub fn clear(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    store.delete(&item(name)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn round_trip_and_debug_hides_the_document() {
        let store = MemoryStore::default();
        assert!(load(&store, "claude").unwrap().is_none());
        let p = Pending {
            replaces: fingerprint(&Secret::new("old".into())),
            document: Secret::new(
                r#"{"claudeAiOauth":{"refreshToken":"sk-ant-ort01-NEW"}}"#.into(),
            ),
            lifetime: Some(Duration::from_secs(3599)),
        };
        assert!(!format!("{p:?}").contains("ort01"));
        save(&store, "claude", &p).unwrap();
        let back = load(&store, "claude").unwrap().unwrap();
        assert_eq!(back.replaces, p.replaces);
        assert_eq!(back.document.expose(), p.document.expose());
        assert_eq!(back.lifetime, p.lifetime);
        clear(&store, "claude").unwrap();
        assert!(load(&store, "claude").unwrap().is_none());
        assert_eq!(fingerprint(&Secret::new("old".into())).len(), 32);
    }

    #[test]
    fn an_item_without_a_lifetime_still_loads() {
        let store = MemoryStore::default();
        store
            .set(
                &item("gemini"),
                &Secret::new(r#"{"v":1,"replaces":"ab","document":"{}"}"#.into()),
            )
            .unwrap();
        let back = load(&store, "gemini").unwrap().unwrap();
        assert_eq!(back.replaces, "ab");
        assert_eq!(back.lifetime, None);
    }
}
