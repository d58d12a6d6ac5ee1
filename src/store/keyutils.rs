//! Linux kernel keyutils (session keyring, linked to the user's persistent keyring when the
//! kernel has one), via the keyring crate: the headless fallback when no Secret Service runs.

use keyring::keyutils::KeyutilsCredential;
use keyring::{Entry, Error as KrError};
use zeroize::Zeroize;

use super::{Backend, ItemId, Stamp, Store, StoreError};
use crate::credential::fingerprint;
use crate::secret::Secret;

const NAME: &str = "keyutils";

pub struct KeyutilsStore;

fn entry(id: &ItemId, operation: &'static str) -> Result<Entry, StoreError> {
    // Keys are named `keyring-rs:ACCOUNT@SERVICE` (keyring-crate compatible); an `@` in the
    // service would let two different items share one key.
    if id.service.contains('@') {
        return Err(StoreError::Platform {
            backend: NAME,
            operation,
            item: id.to_string(),
            message: "keyutils item services may not contain '@' (the key name would be ambiguous); rename the service".into(),
        });
    }
    let cred = KeyutilsCredential::new_with_target(None, &id.service, &id.account)
        .map_err(|e| map(e, operation, id))?;
    Ok(Entry::new_with_credential(Box::new(cred)))
}

/// Maps keyring errors without ever formatting `BadEncoding`, whose payload is the secret.
fn map(e: KrError, operation: &'static str, id: &ItemId) -> StoreError {
    let item = id.to_string();
    match e {
        KrError::BadEncoding(mut bytes) => {
            bytes.zeroize();
            StoreError::NotUtf8 {
                backend: NAME,
                item,
            }
        }
        KrError::NoStorageAccess(inner) => StoreError::Denied {
            backend: NAME,
            item,
            reason: inner.to_string(),
        },
        KrError::PlatformFailure(inner) => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: inner.to_string(),
        },
        KrError::Invalid(attr, reason) => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: format!("{attr} {reason}"),
        },
        KrError::TooLong(attr, limit) => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: format!("{attr} longer than {limit}"),
        },
        _ => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: "unexpected keyring error".into(),
        },
    }
}

impl Store for KeyutilsStore {
    fn backend(&self) -> Backend {
        Backend::Keyutils
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        match entry(id, "read")?.get_password() {
            Ok(p) => Ok(Some(Secret::new(p))),
            Err(KrError::NoEntry) => Ok(None),
            Err(e) => Err(map(e, "read", id)),
        }
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        entry(id, "write")?
            .set_password(secret.expose())
            .map_err(|e| map(e, "write", id))
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        match entry(id, "delete")?.delete_credential() {
            Ok(()) => Ok(true),
            Err(KrError::NoEntry) => Ok(false),
            Err(e) => Err(map(e, "delete", id)),
        }
    }

    /// Kernel keys have no modification time; reading one never prompts, so the
    /// stamp is the fingerprint of the data.
    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        Ok(self.get(id)?.map(|s| Stamp(fingerprint(s.expose()))))
    }
}
