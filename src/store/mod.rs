//! The durable store: what must outlive a process, and be shared by replicas, for
//! `create_workspace` to keep its promise of one workspace per task.
//!
//! Coder stays the source of truth for workspaces. The store keeps only keys and ids:
//! for each (Coder user, key) the workspace that belongs to it, where a key is a Coder
//! chat id, an MCP session, a stdio process (or its `--stdio-session` key) or a requested workspace name
//! ([`crate::engine::keys`]). Before a create is sent to Coder the *intent* is written
//! (the name it is sent with, no id yet), and the workspace id right after Coder
//! answers, so a crash between the two is recovered by looking the intended name up in
//! Coder.
//!
//! Backends ([`StoreLocation`]):
//! - SQLite (the default, a file under the OS state directory): WAL, `synchronous=FULL`,
//!   every write a transaction. Several processes may share the file (Claude Desktop and
//!   an IDE); per-key locks across them are file locks, which the OS releases when a
//!   process dies.
//! - PostgreSQL (`--store postgres://…`), for `serve` replicas: per-key locks are
//!   advisory locks held in a transaction, so a replica killed mid-call releases them.
//! - memory: for tests and benchmarks; nothing survives the process.
//!
//! Every record expires after the retention (`--store-retention`, 30 days by default)
//! without use (a use refreshes it, at most once a day); a session's records are
//! removed when the session ends.

mod location;
mod memory;
mod migrations;
mod oauth;
mod postgres;
mod sqlite;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use location::{StoreLocation, default_sqlite_path};
pub use oauth::{OAuthRow, OAuthTable};
pub use tasks::{Started, TaskRecord, TaskState};

/// What a key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub template_id: Uuid,
    /// The workspace's name; while only the intent is recorded, the name the create
    /// is being sent with.
    pub workspace_name: String,
    /// `None` while only the intent is recorded (Coder has not answered the create).
    pub workspace_id: Option<Uuid>,
    /// The unusable workspace this one replaces, if any: the key's history, from which
    /// a replacement's derived name comes.
    pub replaced: Option<Replaced>,
}

/// A workspace that was replaced by a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub id: Uuid,
    pub name: String,
}

/// A store operation failed. The text names the store and says what went wrong; it
/// never contains a password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the workspace store ({store}) {problem}")]
pub struct StoreError {
    store: String,
    problem: String,
}

impl StoreError {
    fn new(store: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError {
            store: store.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// Why the per-key lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another call (in this process, another one, or another replica) held it for
    /// longer than the caller could wait.
    #[error("another call for the same task held its lock for too long")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tuning that is not part of the location.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Records not used for this long are removed.
    pub retention: Duration,
    /// The longest any single store operation may take before it is an error (a store
    /// that hangs must not hang the call).
    pub operation_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Duration::from_secs(30 * 24 * 3600),
            operation_timeout: Duration::from_secs(10),
        }
    }
}

/// A use of a record refreshes its retention at most this often (seconds), so that
/// reading a record does not mean writing it on every call.
const TOUCH_EVERY: i64 = 24 * 3600;

/// The store's clock (unix seconds): the real one, or a test's.
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The store, whichever backend it is. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    options: StoreOptions,
    describe: Arc<str>,
    clock: Clock,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<memory::MemoryStore>),
    Sqlite(Arc<sqlite::SqliteStore>),
    Postgres(Arc<postgres::PgStore>),
}

/// Held while a call decides and creates. Released with [`StoreLock::release`]; if it is
/// dropped instead (an error, a cancelled call), what holds it is closed, which releases
/// it too, as does the death of the process or its database connection.
#[must_use = "the lock is released when dropped"]
pub enum StoreLock {
    /// Nothing to hold across processes (the memory store).
    None,
    /// SQLite: file locks, released when the files are closed.
    Files(#[allow(dead_code)] Vec<std::fs::File>),
    /// PostgreSQL: advisory locks held by a connection, which also carries the critical
    /// section's reads and writes.
    Postgres(postgres::PgLock),
}

impl StoreLock {
    /// Ends the critical section.
    pub async fn release(self) {
        if let StoreLock::Postgres(lock) = self {
            lock.release().await;
        }
    }

    fn postgres(lock: Option<&mut StoreLock>) -> Option<&mut postgres::PgLock> {
        match lock {
            Some(StoreLock::Postgres(lock)) => Some(lock),
            _ => None,
        }
    }
}

impl Store {
    /// Opens (creating and migrating) the store at `location`.
    pub async fn open(
        location: &StoreLocation,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let describe: Arc<str> = location.describe().into();
        let backend = match location {
            StoreLocation::Memory => Backend::Memory(Arc::default()),
            StoreLocation::Sqlite(path) => {
                Backend::Sqlite(Arc::new(sqlite::SqliteStore::open(path, &describe).await?))
            }
            StoreLocation::Postgres(url) => {
                Backend::Postgres(Arc::new(postgres::PgStore::open(url, &describe).await?))
            }
        };
        let store = Store {
            backend,
            options,
            describe,
            clock: Arc::new(|| chrono::Utc::now().timestamp()),
        };
        // Records of tasks long gone: dropped at every start (and periodically by serve).
        store.expire().await?;
        Ok(store)
    }

    /// An in-memory store (unit tests).
    #[cfg(test)]
    pub fn memory() -> Store {
        Store {
            backend: Backend::Memory(Arc::default()),
            options: StoreOptions::default(),
            describe: StoreLocation::Memory.describe().into(),
            clock: Arc::new(|| chrono::Utc::now().timestamp()),
        }
    }

    /// The same store with another clock (unix seconds), for tests of the retention.
    #[cfg(test)]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Store {
        self.clock = Arc::new(clock);
        self
    }

    /// Where the store is, for logs and errors (never with a password).
    /// The store's clock: unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// `sqlite`, `postgres` or `memory`: what may be said about the store to anyone (the
    /// unauthenticated `/readyz`), unlike its location.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Serializes calls for `keys` of `user` across processes and replicas (the engine
    /// serializes them within the process first), waiting at most `wait`.
    pub async fn lock(
        &self,
        user: Uuid,
        keys: &[String],
        wait: Duration,
    ) -> Result<StoreLock, LockError> {
        // The backends give up waiting after `wait`; this bound is only for a database
        // that does not answer at all.
        let limit = wait + self.options.operation_timeout;
        // Boxed, as in `bounded`.
        let locked = Box::pin(async {
            match &self.backend {
                Backend::Memory(_) => Ok(StoreLock::None),
                Backend::Sqlite(s) => s.lock(user, keys, wait).await,
                Backend::Postgres(s) => s.lock(user, keys, wait).await,
            }
        });
        match tokio::time::timeout(limit, locked).await {
            Ok(locked) => locked,
            Err(_) => Err(LockError::Store(self.timed_out())),
        }
    }

    /// The lock, if nobody else holds any part of it right now (`None`: wait with
    /// [`Store::lock`]).
    pub async fn try_lock(
        &self,
        user: Uuid,
        keys: &[String],
    ) -> Result<Option<StoreLock>, StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(Some(StoreLock::None)),
            Backend::Sqlite(s) => s.try_lock(user, keys),
            Backend::Postgres(s) => self.bounded(s.try_lock(user, keys)).await,
        }
    }

    /// The binding of `key`, if any; `lock`: the critical section it is read in, if any.
    pub async fn get(
        &self,
        lock: Option<&mut StoreLock>,
        user: Uuid,
        key: &str,
    ) -> Result<Option<Binding>, StoreError> {
        match &self.backend {
            Backend::Memory(s) => Ok(s.get(user, key)),
            Backend::Sqlite(s) => self.bounded(s.get(user, key)).await,
            Backend::Postgres(s) => {
                self.bounded(s.get(StoreLock::postgres(lock), user, key))
                    .await
            }
        }
    }

    /// Binds every one of `keys` to `binding` (one transaction, committed when this
    /// returns), and restarts their retention.
    pub async fn put(
        &self,
        lock: Option<&mut StoreLock>,
        user: Uuid,
        keys: &[String],
        binding: &Binding,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = (self.clock)();
        let expires = expiry(now, self.options.retention);
        match &self.backend {
            Backend::Memory(s) => {
                s.put(user, keys, binding, now, expires);
                Ok(())
            }
            Backend::Sqlite(s) => self.bounded(s.put(user, keys, binding, now, expires)).await,
            Backend::Postgres(s) => {
                let lock = StoreLock::postgres(lock);
                self.bounded(s.put(lock, user, keys, binding, now, expires))
                    .await
            }
        }
    }

    /// Records that `keys` were used: their retention starts again (at most once a day,
    /// so a call seldom writes).
    pub async fn touch(
        &self,
        mut lock: Option<&mut StoreLock>,
        user: Uuid,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let now = (self.clock)();
        let expires = expiry(now, self.options.retention);
        for key in keys {
            match &self.backend {
                Backend::Memory(s) => s.touch(user, key, now, expires),
                Backend::Sqlite(s) => self.bounded(s.touch(user, key, now, expires)).await?,
                Backend::Postgres(s) => {
                    let lock = StoreLock::postgres(lock.as_deref_mut());
                    self.bounded(s.touch(lock, user, key, now, expires)).await?
                }
            }
        }
        Ok(())
    }

    /// Forgets `key` (an MCP session that ended).
    pub async fn remove(&self, user: Uuid, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(s) => {
                s.remove(user, key);
                Ok(())
            }
            Backend::Sqlite(s) => self.bounded(s.remove(user, key)).await,
            Backend::Postgres(s) => self.bounded(s.remove(user, key)).await,
        }
    }

    /// Removes the records whose retention is over; returns how many.
    pub async fn expire(&self) -> Result<u64, StoreError> {
        let now = (self.clock)();
        let removed = match &self.backend {
            Backend::Memory(s) => Ok(s.expire(now)),
            Backend::Sqlite(s) => self.bounded(s.expire(now)).await,
            Backend::Postgres(s) => self.bounded(s.expire(now)).await,
        }? + self.tasks_expire(now).await?
            + self.oauth_expire(now).await?;
        if removed > 0 {
            tracing::info!(removed, store = %self.describe, "expired records removed");
        }
        Ok(removed)
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Sqlite(s) => self.bounded(s.ping()).await,
            Backend::Postgres(s) => self.bounded(s.ping()).await,
        }
    }

    /// `operation` within the operation timeout. The backends' futures (sqlx's above all)
    /// run to tens of KiB; boxed here, they are not inlined into every caller's state, so
    /// a creation that waits, or a request's task, stays small (see BENCHMARKS.md).
    fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        let operation = Box::pin(operation);
        async move {
            tokio::time::timeout(self.options.operation_timeout, operation)
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::new(
            &self.describe,
            format!(
                "did not answer within {}",
                humantime::format_duration(self.options.operation_timeout)
            ),
        )
    }
}

/// When a record written at `now` expires (unix seconds).
fn expiry(now: i64, retention: Duration) -> i64 {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2);
    now.saturating_add(retention)
}

/// A stable 64-bit number for (user, key): the PostgreSQL advisory lock id and the
/// SQLite lock stripe. UUIDv5 is SHA-1 based, so it does not change between builds or
/// platforms (unlike `std`'s hasher).
fn key_hash(user: Uuid, key: &str) -> u64 {
    let id = Uuid::new_v5(&user, key.as_bytes());
    let (high, _) = id.as_u64_pair();
    high
}

/// The columns every backend stores for a binding, as read back.
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A binding from its columns (`None` for a row this release cannot read).
fn binding_from_row(
    (template_id, workspace_name, workspace_id, replaced_id, replaced_name): Row,
) -> Option<Binding> {
    let template_id = Uuid::parse_str(&template_id).ok()?;
    let workspace_id = match workspace_id {
        Some(id) => Some(Uuid::parse_str(&id).ok()?),
        None => None,
    };
    let replaced = match (
        replaced_id.and_then(|id| Uuid::parse_str(&id).ok()),
        replaced_name,
    ) {
        (Some(id), Some(name)) => Some(Replaced { id, name }),
        _ => None,
    };
    Some(Binding {
        template_id,
        workspace_name,
        workspace_id,
        replaced,
    })
}

/// Binds the arguments of [`migrations::sql::PUT`] (shared by both SQL backends).
fn bind_put<'q, DB: sqlx::Database>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    user: Uuid,
    key: &str,
    binding: &Binding,
    now: i64,
    expires: i64,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(user.to_string())
        .bind(key.to_owned())
        .bind(binding.template_id.to_string())
        .bind(binding.workspace_name.clone())
        .bind(binding.workspace_id.map(|id| id.to_string()))
        .bind(binding.replaced.as_ref().map(|r| r.id.to_string()))
        .bind(binding.replaced.as_ref().map(|r| r.name.clone()))
        .bind(now)
        .bind(expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_stable() {
        let user = Uuid::parse_str("6f2f2b5e-9c3a-4c7e-8a53-0d8f6c1c2d3e").unwrap();
        // Fixed across releases: replicas of different versions must agree on lock ids.
        assert_eq!(key_hash(user, "chat:abc"), key_hash(user, "chat:abc"));
        assert_ne!(key_hash(user, "chat:abc"), key_hash(user, "chat:abd"));
        assert_ne!(
            key_hash(user, "chat:abc"),
            key_hash(Uuid::nil(), "chat:abc")
        );
    }

    /// Two users whose keys fall on different lock stripes (a stripe is shared by
    /// 1/256 of the keys, so a random pair may collide).
    fn users_on_other_stripes(keys: &[String]) -> (Uuid, Uuid) {
        let stripes =
            |user: Uuid| -> Vec<u64> { keys.iter().map(|k| key_hash(user, k) % 256).collect() };
        let a = Uuid::new_v4();
        let b = std::iter::repeat_with(Uuid::new_v4)
            .find(|b| stripes(*b).iter().all(|s| !stripes(a).contains(s)))
            .unwrap_or_default();
        (a, b)
    }

    #[tokio::test]
    async fn sqlite_locks_exclude_other_openers_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        // Two opens of one file stand for two processes: their lock files are opened
        // separately, and file locks of separate opens exclude each other.
        let a = Store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        let b = Store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        let keys = vec!["name:x".to_owned(), "chat:1".to_owned()];
        let (user, other) = users_on_other_stripes(&keys);
        let held = a.lock(user, &keys, Duration::from_secs(1)).await.unwrap();
        assert!(b.try_lock(user, &keys).await.unwrap().is_none());
        assert!(matches!(
            b.lock(user, &keys[..1], Duration::from_millis(50)).await,
            Err(LockError::Busy)
        ));
        assert!(
            b.try_lock(other, &keys).await.unwrap().is_some(),
            "another user's keys"
        );
        held.release().await;
        assert!(b.try_lock(user, &keys).await.unwrap().is_some());
    }

    /// Retention counts from the last use, not from the write: a record in use is kept,
    /// one left alone goes.
    async fn retention_counts_from_the_last_use(store: Store) {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));
        let clock = now.clone();
        let store = store.with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
        let day = 24 * 3600;
        let advance = |days: i64| now.fetch_add(days * day, std::sync::atomic::Ordering::SeqCst);
        let user = Uuid::new_v4();
        let binding = Binding {
            template_id: Uuid::new_v4(),
            workspace_name: "dev-1".into(),
            workspace_id: Some(Uuid::new_v4()),
            replaced: None,
        };
        let (used, idle) = (vec!["chat:used".to_owned()], vec!["chat:idle".to_owned()]);
        store.put(None, user, &used, &binding).await.unwrap();
        store.put(None, user, &idle, &binding).await.unwrap();
        advance(20);
        store.touch(None, user, &used).await.unwrap();
        advance(20);
        assert_eq!(store.expire().await.unwrap(), 1);
        assert!(store.get(None, user, "chat:used").await.unwrap().is_some());
        assert!(store.get(None, user, "chat:idle").await.unwrap().is_none());
        advance(31);
        assert_eq!(store.expire().await.unwrap(), 1);
        assert!(store.get(None, user, "chat:used").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn retention_counts_from_the_last_use_in_memory() {
        retention_counts_from_the_last_use(Store::memory()).await;
    }

    #[tokio::test]
    async fn retention_counts_from_the_last_use_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        let store = Store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        retention_counts_from_the_last_use(store).await;
    }

    #[tokio::test]
    async fn memory_store_round_trip() {
        let store = Store::memory();
        let user = Uuid::new_v4();
        let binding = Binding {
            template_id: Uuid::new_v4(),
            workspace_name: "dev-1".into(),
            workspace_id: None,
            replaced: None,
        };
        store
            .put(
                None,
                user,
                &["chat:1".into(), "name:dev-1".into()],
                &binding,
            )
            .await
            .unwrap();
        assert_eq!(
            store.get(None, user, "chat:1").await.unwrap(),
            Some(binding.clone())
        );
        assert_eq!(
            store.get(None, user, "name:dev-1").await.unwrap(),
            Some(binding)
        );
        assert_eq!(
            store.get(None, Uuid::new_v4(), "chat:1").await.unwrap(),
            None
        );
        store.remove(user, "chat:1").await.unwrap();
        assert_eq!(store.get(None, user, "chat:1").await.unwrap(), None);
    }
}
