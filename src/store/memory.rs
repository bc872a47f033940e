//! The in-memory backend (tests and benchmarks): the same records, nothing durable.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use super::Binding;

#[derive(Default)]
pub(super) struct MemoryStore {
    records: Mutex<HashMap<(Uuid, String), (Binding, i64)>>,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), (Binding, i64)>> {
        // Nothing can be left half-written under this lock, so a panic elsewhere while
        // it was held does not make the map unusable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, user: Uuid, key: &str) -> Option<Binding> {
        self.records()
            .get(&(user, key.to_owned()))
            .map(|(binding, _)| binding.clone())
    }

    pub(super) fn put(&self, user: Uuid, keys: &[String], binding: &Binding, expires: i64) {
        let mut records = self.records();
        for key in keys {
            records.insert((user, key.clone()), (binding.clone(), expires));
        }
    }

    pub(super) fn remove(&self, user: Uuid, key: &str) {
        self.records().remove(&(user, key.to_owned()));
    }

    pub(super) fn expire(&self, now: i64) -> u64 {
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, (_, expires)| *expires > now);
        (before - records.len()) as u64
    }
}
