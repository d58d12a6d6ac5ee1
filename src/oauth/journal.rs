//! The refresh journal: a new login is put in the keychain before it is written back, so a
//! crash or a failed write-back between the token answer and the write never loses the new
//! refresh token (the old one is already spent). One keyferry-owned item per credential.

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
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Stored<'a> {
    v: u8,
    replaces: &'a str,
    document: &'a str,
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
    }
    match serde_json::from_str::<Owned>(raw.expose()) {
        Ok(s) if s.v == 1 => Ok(Some(Pending {
            replaces: s.replaces,
            document: Secret::new(s.document),
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
        };
        assert!(!format!("{p:?}").contains("ort01"));
        save(&store, "claude", &p).unwrap();
        let back = load(&store, "claude").unwrap().unwrap();
        assert_eq!(back.replaces, p.replaces);
        assert_eq!(back.document.expose(), p.document.expose());
        clear(&store, "claude").unwrap();
        assert!(load(&store, "claude").unwrap().is_none());
        assert_eq!(fingerprint(&Secret::new("old".into())).len(), 32);
    }
}
