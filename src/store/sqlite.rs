//! The SQLite backend: one file, shared safely by every process of the user.
//!
//! WAL lets readers and a writer work at once; `synchronous=FULL` makes a committed
//! intent survive power loss, not only a crash of the process; writes take the write
//! lock up front (`BEGIN IMMEDIATE`) and wait for it (`busy_timeout`).
//!
//! Per-key locks across processes are advisory file locks on a fixed set of lock files
//! next to the database (the key's hash picks one), so the OS releases them when a
//! process dies, however it dies. Unrelated keys that share a lock file (1 in 256) only
//! wait for each other's short critical section.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use super::migrations::{self, sql};
use super::{Binding, LockError, Row, StoreError, StoreLock, binding_from_row, key_hash};

/// How many lock files there are (a power of two).
const LOCK_STRIPES: u64 = 256;

pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    locks: PathBuf,
    describe: String,
}

impl SqliteStore {
    /// A write transaction, holding the write lock from its start.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub(super) async fn open(path: &Path, describe: &str) -> Result<SqliteStore, StoreError> {
        let fail = |problem: String| StoreError::new(describe, problem);
        super::location::prepare_parent(path)
            .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        create_private(path).map_err(|e| fail(format!("cannot be opened for writing: {e}")))?;
        let locks = lock_dir(path);
        prepare_lock_dir(&locks).map_err(|e| {
            fail(format!(
                "cannot create its lock directory {}: {e}",
                locks.display()
            ))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| fail(format!("cannot be opened: {e}")))?;
        let store = SqliteStore {
            pool,
            locks,
            describe: describe.to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(&self.describe, format!("failed: {e}"))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE: two processes starting at once on a new file migrate one
        // after the other instead of racing to create the tables.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.error(e))?;
        sqlx::query(migrations::CREATE_VERSIONS)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        let current: i64 = sqlx::query_scalar(migrations::CURRENT_VERSION)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        migrations::check_not_newer(current).map_err(|p| StoreError::new(&self.describe, p))?;
        for migration in migrations::MIGRATIONS
            .iter()
            .filter(|m| m.version > current)
        {
            sqlx::raw_sql(migration.sqlite)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            sqlx::query(migrations::RECORD_VERSION)
                .bind(migration.version)
                .bind(chrono::Utc::now().timestamp())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            tracing::info!(version = migration.version, store = %self.describe, "store migrated");
        }
        tx.commit().await.map_err(|e| self.error(e))
    }

    /// The lock files of `keys`, in ascending order, so two calls never wait for each
    /// other's second lock.
    fn stripes(&self, user: Uuid, keys: &[String]) -> Result<Vec<(PathBuf, File)>, StoreError> {
        let stripes: BTreeSet<u64> = keys
            .iter()
            .map(|key| key_hash(user, key) % LOCK_STRIPES)
            .collect();
        stripes
            .into_iter()
            .map(|stripe| {
                let path = self.locks.join(format!("{stripe:02x}"));
                let open = || {
                    OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                };
                // The directory may have been cleaned away (a tmp cleaner): made again.
                let file = match open() {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        prepare_lock_dir(&self.locks).and_then(|()| open())
                    }
                    opened => opened,
                }
                .map_err(|e| {
                    self.error(format!("cannot open lock file {}: {e}", path.display()))
                })?;
                Ok((path, file))
            })
            .collect()
    }

    /// The lock, if no other process holds any part of it right now.
    pub(super) fn try_lock(
        &self,
        user: Uuid,
        keys: &[String],
    ) -> Result<Option<StoreLock>, StoreError> {
        let mut held = Vec::new();
        for (path, file) in self.stripes(user, keys)? {
            match file.try_lock() {
                Ok(()) => held.push(file),
                // Whatever was taken so far is released with `held`.
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(self.error(format!("cannot lock {}: {e}", path.display())));
                }
            }
        }
        Ok(Some(StoreLock::Files(held)))
    }

    pub(super) async fn lock(
        &self,
        user: Uuid,
        keys: &[String],
        wait: Duration,
    ) -> Result<StoreLock, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let stripes = self.stripes(user, keys)?;
        let mut held = Vec::with_capacity(stripes.len());
        for (path, file) in stripes {
            // File locks have no asynchronous wait, and a thread blocked in one cannot be
            // called off (it would take the lock after its caller gave up, for nobody):
            // try again, soon at first, then every 50 ms, until the deadline.
            let mut pause = Duration::from_millis(1);
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        let now = tokio::time::Instant::now();
                        if now >= deadline {
                            return Err(LockError::Busy);
                        }
                        tokio::time::sleep(pause.min(deadline - now)).await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(self
                            .error(format!("cannot lock {}: {e}", path.display()))
                            .into());
                    }
                }
            }
            held.push(file);
        }
        Ok(StoreLock::Files(held))
    }

    pub(super) async fn get(&self, user: Uuid, key: &str) -> Result<Option<Binding>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sql::GET)
            .bind(user.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.and_then(binding_from_row))
    }

    pub(super) async fn put(
        &self,
        user: Uuid,
        keys: &[String],
        binding: &Binding,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.error(e))?;
        for key in keys {
            super::bind_put(sqlx::query(sql::PUT), user, key, binding, now, expires)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(super) async fn touch(
        &self,
        user: Uuid,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::TOUCH)
            .bind(user.to_string())
            .bind(key)
            .bind(now)
            .bind(expires)
            .bind(now - super::TOUCH_EVERY)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(super) async fn remove(&self, user: Uuid, key: &str) -> Result<(), StoreError> {
        sqlx::query(sql::REMOVE)
            .bind(user.to_string())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(super) async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::EXPIRE)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(done.rows_affected())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// `store.db` → `store.db.locks/`.
fn lock_dir(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".locks");
    path.with_file_name(name)
}

fn prepare_lock_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file (if new) readable only by this user, before SQLite does
/// (SQLite gives its WAL files the database file's permissions); and checks that it can
/// be written, which SQLite would only find out at the first write.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
