//! macOS Keychain generic passwords via security-framework, and the `auto` routing that sends
//! items shared with command-line tools through `security`. Compiled and linted for
//! aarch64-apple-darwin in CI; it cannot run on the Linux CI machines.

use security_framework::base::Error as SfError;
use security_framework::item::{ItemClass, ItemSearchOptions, Limit, SearchResult};
use security_framework::passwords;

use super::{is_shared_with_cli, Backend, ItemId, SecurityCliStore, Stamp, Store, StoreError};
use crate::secret::Secret;

const NAME: &str = "macos-keychain";
const ERR_SEC_ITEM_NOT_FOUND: i32 = -25300;
const ERR_SEC_INTERACTION_NOT_ALLOWED: i32 = -25308;
const ERR_SEC_USER_CANCELED: i32 = -128;
const ERR_SEC_AUTH_FAILED: i32 = -25293;

pub struct MacosStore;

fn map(e: SfError, operation: &'static str, id: &ItemId) -> StoreError {
    let item = id.to_string();
    match e.code() {
        ERR_SEC_INTERACTION_NOT_ALLOWED => StoreError::Locked {
            backend: NAME,
            item,
            fix: "unlock the login keychain (log in to the Mac, or run `security unlock-keychain`)",
        },
        ERR_SEC_USER_CANCELED | ERR_SEC_AUTH_FAILED => StoreError::Denied {
            backend: NAME,
            item,
            reason: "the Keychain access prompt was declined; choose Always Allow for keyferry"
                .into(),
        },
        code => StoreError::Platform {
            backend: NAME,
            operation,
            item,
            message: e.message().unwrap_or_else(|| format!("OSStatus {code}")),
        },
    }
}

impl Store for MacosStore {
    fn backend(&self) -> Backend {
        Backend::Macos
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        match passwords::get_generic_password(&id.service, &id.account) {
            Ok(bytes) => super::utf8_secret(bytes, NAME, id).map(Some),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(map(e, "read", id)),
        }
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        passwords::set_generic_password(&id.service, &id.account, secret.expose().as_bytes())
            .map_err(|e| map(e, "write", id))
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        match passwords::delete_generic_password(&id.service, &id.account) {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(false),
            Err(e) => Err(map(e, "delete", id)),
        }
    }

    /// Reads only the attributes dictionary (`mdat`), never the data, so it never prompts.
    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        let results = ItemSearchOptions::new()
            .class(ItemClass::generic_password())
            .service(&id.service)
            .account(&id.account)
            .load_attributes(true)
            .load_data(false)
            .limit(Limit::Max(1))
            .search();
        match results {
            Ok(found) => Ok(found.iter().find_map(|r| match r {
                SearchResult::Dict(_) => r
                    .simplify_dict()
                    .and_then(|d| d.get("mdat").cloned())
                    .map(Stamp),
                _ => None,
            })),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(map(e, "poll", id)),
        }
    }
}

/// Claude Code writes its item with `security add-generic-password -U`, which resets the
/// partition list to `apple-tool:`; reading that item through Security.framework then prompts
/// after every refresh, whatever the user chose (steipete/CodexBar #367, #2588;
/// anthropics/claude-code #87348). So data of items shared with CLIs (or every item, for
/// `security-cli`) goes through the `security` tool, while stamps always come from
/// Security.framework attributes, which never read data and so never prompt.
pub struct SharedItemStore {
    cli: SecurityCliStore,
    all: bool,
}

impl SharedItemStore {
    #[must_use]
    pub fn new(cli: SecurityCliStore, all: bool) -> Self {
        Self { cli, all }
    }

    fn data_store(&self, id: &ItemId) -> &dyn Store {
        if self.all || is_shared_with_cli(id) {
            &self.cli
        } else {
            &MacosStore
        }
    }
}

impl Store for SharedItemStore {
    fn backend(&self) -> Backend {
        if self.all {
            Backend::SecurityCli
        } else {
            Backend::Macos
        }
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        self.data_store(id).get(id)
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        self.data_store(id).set(id, secret)
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        self.data_store(id).delete(id)
    }

    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        MacosStore.stamp(id)
    }
}
