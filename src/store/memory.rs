//! An in-process store for unit tests and the contract suite's reference run.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Backend, ItemId, Stamp, Store, StoreError};
use crate::secret::Secret;

#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<ItemId, (Secret, u64)>>,
}

impl MemoryStore {
    fn items(&self) -> std::sync::MutexGuard<'_, HashMap<ItemId, (Secret, u64)>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        Ok(self.items().get(id).map(|(s, _)| s.clone()))
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        let mut items = self.items();
        let version = items.get(id).map_or(0, |(_, v)| v + 1);
        items.insert(id.clone(), (secret.clone(), version));
        Ok(())
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        Ok(self.items().remove(id).is_some())
    }

    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        Ok(self.items().get(id).map(|(_, v)| Stamp(v.to_string())))
    }
}
