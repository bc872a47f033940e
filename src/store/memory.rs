//! The in-memory backend (tests and benchmarks): the same records, nothing durable.

use parking_lot::Mutex;
use std::collections::HashMap;

use uuid::Uuid;

use super::Binding;

#[derive(Default)]
pub(super) struct MemoryStore {
    /// (user, key) → (binding, updated at, expires at).
    records: Mutex<HashMap<(Uuid, String), Record>>,
    pub(super) tasks: super::tasks::MemoryTasks,
    pub(super) oauth: super::oauth::MemoryOAuth,
}

struct Record {
    binding: Binding,
    updated_at: i64,
    expires_at: i64,
}

impl MemoryStore {
    fn records(&self) -> parking_lot::MutexGuard<'_, HashMap<(Uuid, String), Record>> {
        // Nothing can be left half-written under this lock, so a panic elsewhere while
        // it was held does not make the map unusable.
        self.records.lock()
    }

    pub(super) fn get(&self, user: Uuid, key: &str) -> Option<Binding> {
        self.records()
            .get(&(user, key.to_owned()))
            .map(|record| record.binding.clone())
    }

    pub(super) fn put(
        &self,
        user: Uuid,
        keys: &[String],
        binding: &Binding,
        now: i64,
        expires: i64,
    ) {
        let mut records = self.records();
        for key in keys {
            let record = Record {
                binding: binding.clone(),
                updated_at: now,
                expires_at: expires,
            };
            records.insert((user, key.clone()), record);
        }
    }

    pub(super) fn touch(&self, user: Uuid, key: &str, now: i64, expires: i64) {
        if let Some(record) = self.records().get_mut(&(user, key.to_owned()))
            && record.updated_at < now - super::TOUCH_EVERY
        {
            record.updated_at = now;
            record.expires_at = expires;
        }
    }

    pub(super) fn remove(&self, user: Uuid, key: &str) {
        self.records().remove(&(user, key.to_owned()));
    }

    pub(super) fn expire(&self, now: i64) -> u64 {
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, record| record.expires_at > now);
        (before - records.len()) as u64
    }
}
