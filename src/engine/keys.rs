//! Which task a call belongs to, and the locks that serialize a task's calls.
//!
//! A task is found by its keys, never by memory alone:
//!
//! | key | from | lives |
//! |---|---|---|
//! | chat | `X-Coder-Chat-Id` | the store's retention |
//! | session | the MCP session (Streamable HTTP or legacy SSE) | until the session ends |
//! | stdio | the stdio server's process, or the key given with `--stdio-session` | the process; with a key, the store's retention |
//! | name | the requested workspace name | the store's retention; Coder's name uniqueness besides |
//!
//! All of them are per Coder user: a guessed or replayed key never reaches another
//! user's workspace.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use uuid::Uuid;

/// The key of the conversation a call comes from (the name, when given, is a second key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskKey {
    /// A Coder chat (`X-Coder-Chat-Id`): one workspace per chat, across sessions,
    /// restarts and replicas.
    Chat(String),
    /// An MCP session: `transport` is `mcp` (Streamable HTTP) or `sse` (legacy).
    Session { transport: &'static str, id: String },
    /// A stdio server: its process, or the key given with `--stdio-session`.
    Stdio(String),
}

impl TaskKey {
    /// The key as the store records it.
    pub fn store_key(&self) -> String {
        match self {
            TaskKey::Chat(id) => format!("chat:{}", bounded(id)),
            TaskKey::Session { transport, id } => format!("session:{transport}:{}", bounded(id)),
            TaskKey::Stdio(id) => format!("stdio:{}", bounded(id)),
        }
    }

    /// The key as a task records it, to call again with it after a restart.
    pub fn to_record(&self) -> KeyRecord {
        match self {
            TaskKey::Chat(id) => KeyRecord::Chat(id.clone()),
            TaskKey::Session { transport, id } => KeyRecord::Session {
                transport: (*transport).to_owned(),
                id: id.clone(),
            },
            TaskKey::Stdio(id) => KeyRecord::Stdio(id.clone()),
        }
    }

    pub fn from_record(record: KeyRecord) -> TaskKey {
        match record {
            KeyRecord::Chat(id) => TaskKey::Chat(id),
            KeyRecord::Session { transport, id } => TaskKey::Session {
                transport: if transport == "sse" { "sse" } else { "mcp" },
                id,
            },
            KeyRecord::Stdio(id) => TaskKey::Stdio(id),
        }
    }

    /// How answers refer to the task ("this chat already has workspace …").
    pub fn describe(&self) -> &'static str {
        match self {
            TaskKey::Chat(_) => "this chat",
            TaskKey::Session { .. } => "this session",
            TaskKey::Stdio(_) => "this conversation",
        }
    }
}

/// A [`TaskKey`] as stored with a task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRecord {
    Chat(String),
    Session { transport: String, id: String },
    Stdio(String),
}

/// Ids longer than this are stored by their digest.
const MAX_STORED_ID: usize = 128;

/// `id` itself, or, when it is longer than [`MAX_STORED_ID`] bytes, a digest of it (a
/// name-based UUID, SHA-1): a client's chat id or session key has no length limit of its
/// own, and a key too long for the store's index (PostgreSQL's B-tree rows end near
/// 2.7 kB) would make every call of that task fail.
fn bounded(id: &str) -> std::borrow::Cow<'_, str> {
    /// Keeps the digests of long ids apart from any id a client could send as such.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6d3b_1f0e_95c4_4a57_8a0e_2c1f_7b9d_4e21);
    if id.len() <= MAX_STORED_ID {
        id.into()
    } else {
        format!("sha1:{}", Uuid::new_v5(&NAMESPACE, id.as_bytes())).into()
    }
}

/// The store key of a requested workspace name (already canonical). Coder's names are
/// unique regardless of case, so the key is too.
pub fn name_key(name: &str) -> String {
    format!("name:{}", name.to_ascii_lowercase())
}

/// Who is calling, and in which conversation (`None`: a stateless request with no chat
/// id, where only a requested name ties calls together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: Uuid,
    pub key: Option<TaskKey>,
}

/// In-process locks, one per (user, key), made on demand and dropped when unused.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyLocks {
    /// The lock of `key` of `user`.
    pub fn get(&self, user: Uuid, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let id = format!("{user}/{key}");
        // Only weak references are kept here, so a panic while this was held cannot
        // have left it inconsistent.
        let mut locks = self.locks.lock();
        if let Some(lock) = locks.get(&id).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id, Arc::downgrade(&lock));
        lock
    }

    /// How many keys are locked or waited for right now.
    #[cfg(test)]
    fn len(&self) -> usize {
        let locks = self.locks.lock();
        locks.values().filter(|l| l.strong_count() > 0).count()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_are_distinct_per_kind() {
        let keys = [
            TaskKey::Chat("a".into()).store_key(),
            TaskKey::Session {
                transport: "mcp",
                id: "a".into(),
            }
            .store_key(),
            TaskKey::Stdio("a".into()).store_key(),
            name_key("a"),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn long_ids_are_stored_by_digest() {
        let long = |c: char| TaskKey::Chat(c.to_string().repeat(4096)).store_key();
        assert!(long('a').len() <= 64, "{}", long('a'));
        assert_ne!(long('a'), long('b'));
        assert_eq!(long('a'), long('a'), "stable across calls and processes");
        let short = "c".repeat(MAX_STORED_ID);
        assert_eq!(
            TaskKey::Chat(short.clone()).store_key(),
            format!("chat:{short}")
        );
    }

    #[test]
    fn locks_are_shared_while_used_and_dropped_after() {
        let locks = KeyLocks::default();
        let user = Uuid::new_v4();
        let a = locks.get(user, "chat:1");
        let b = locks.get(user, "chat:1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &locks.get(Uuid::new_v4(), "chat:1")));
        assert_eq!(locks.len(), 1);
        drop((a, b));
        assert!(locks.is_empty());
    }
}
