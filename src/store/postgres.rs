//! The PostgreSQL backend, for `serve` replicas behind a load balancer.
//!
//! Per-key locks are session-level advisory locks (`pg_advisory_lock`) on a pooled
//! connection held for the call's short critical section (decide, write the intent,
//! create, write the id). The critical section's reads and writes run on that same
//! connection, outside any transaction, so the intent is committed before the create
//! is sent, and a call never needs a second connection while it holds one (no pool
//! starvation however many calls are in flight: calls queue for a lock slot in the
//! process first).
//!
//! The locks end with the connection: released explicitly at the end of the critical
//! section; otherwise (an error, a cancelled call) the connection is closed rather than
//! returned to the pool. A replica that dies closes its connections with it; a replica
//! whose host vanishes is noticed by TCP keepalives within about a minute. Waiting is
//! bounded by `lock_timeout`, and a backend waiting for a lock on behalf of a client
//! that went away notices within a second (`client_connection_check_interval`).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, Connection, Executor, PgConnection, PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::migrations::{self, sql};
use super::{Binding, LockError, Row, StoreError, StoreLock, binding_from_row, key_hash};

/// Serializes migrations of replicas that start at once.
const MIGRATION_LOCK: i64 = 0x636f_6465_725f_6d63; // "coder_mc"

/// Connections per replica: with two replicas and a few other clients, well within
/// PostgreSQL's default `max_connections` of 100.
const MAX_CONNECTIONS: u32 = 16;
/// Of those, how many critical sections may hold one at once (the rest serve reads
/// outside critical sections, expiry and `/readyz`).
const LOCK_SLOTS: usize = 12;

/// How long a call waits for a pooled connection (the pool retries a refused connection
/// until then, so a database that is down fails a call within this).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL's `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

pub(super) struct PgStore {
    pub(super) pool: PgPool,
    /// Lock slots: a call waits here (cheaply, cancellably, within its own time) rather
    /// than in the pool, whose wait is short and means "the database is down".
    slots: Arc<Semaphore>,
    describe: String,
}

/// A held critical section: the connection that holds the advisory locks.
pub struct PgLock {
    conn: PoolConnection<Postgres>,
    released: bool,
    _slot: OwnedSemaphorePermit,
}

impl PgLock {
    fn new(conn: PoolConnection<Postgres>, slot: OwnedSemaphorePermit) -> PgLock {
        PgLock {
            conn,
            released: false,
            _slot: slot,
        }
    }

    /// Releases the locks and gives the connection back to the pool.
    pub(super) async fn release(mut self) {
        self.released = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *self.conn)
            .await
            .is_ok();
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Not released (an error, a cancelled call, an unlock that failed): never give a
        // connection that may hold a lock back to the pool. Closing it releases its locks
        // server-side.
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

impl PgStore {
    /// A write transaction, serializable: under READ COMMITTED, a claim that waited for
    /// another transaction's key would judge that key's task by a snapshot taken before
    /// it committed (and take the key of a live task); serializable fails it instead
    /// (40001), and the caller tries again.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await
    }

    pub(super) async fn open(url: &str, describe: &str) -> Result<PgStore, StoreError> {
        let fail = |problem: String| StoreError::new(describe, problem);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| fail(format!("has an invalid URL: {e}")))?
            .application_name("coder-workspace-mcp");
        // One plain connection first: the pool would keep retrying a refused connection
        // until its timeout, and a start-up error should come at once.
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| fail(format!("cannot be reached: {e}")))?
            .close()
            .await
            .map_err(|e| fail(format!("cannot be reached: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Best effort (older servers lack the first): a backend that waits
                    // for a lock notices a client that went away within a second, and a
                    // replica whose host vanished is noticed within about a minute.
                    for setting in [
                        "SET client_connection_check_interval = 1000",
                        "SET tcp_keepalives_idle = 30",
                        "SET tcp_keepalives_interval = 10",
                        "SET tcp_keepalives_count = 3",
                    ] {
                        if let Err(err) = conn.execute(setting).await {
                            tracing::debug!(%err, setting, "PostgreSQL setting not applied");
                        }
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let store = PgStore {
            pool,
            slots: Arc::new(Semaphore::new(LOCK_SLOTS)),
            describe: describe.to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(&self.describe, format!("failed: {e}"))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
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
            sqlx::raw_sql(migration.postgres)
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

    /// The lock, if no other call holds any part of it right now (`None` also when
    /// every lock slot of this process is taken: then wait with [`PgStore::lock`]).
    pub(super) async fn try_lock(
        &self,
        user: Uuid,
        keys: &[String],
    ) -> Result<Option<StoreLock>, StoreError> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let mut lock = PgLock::new(conn, slot);
        for id in lock_ids(user, keys) {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(id)
                .fetch_one(lock.conn())
                .await
                .map_err(|e| self.error(e))?;
            if !locked {
                // Releases what was taken so far.
                lock.release().await;
                return Ok(None);
            }
        }
        Ok(Some(StoreLock::Postgres(lock)))
    }

    pub(super) async fn lock(
        &self,
        user: Uuid,
        keys: &[String],
        wait: Duration,
    ) -> Result<StoreLock, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| LockError::Busy)?
            .map_err(|e| self.error(e))?;
        let conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let mut lock = PgLock::new(conn, slot);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let millis = left.as_millis().clamp(1, i32::MAX as u128);
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{millis}ms"))
            .execute(lock.conn())
            .await
            .map_err(|e| self.error(e))?;
        for id in lock_ids(user, keys) {
            let locked = sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(id)
                .execute(lock.conn())
                .await;
            match locked {
                Ok(_) => {}
                // Dropping `lock` closes the connection, releasing what was taken.
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                {
                    return Err(LockError::Busy);
                }
                Err(e) => return Err(self.error(e).into()),
            }
        }
        sqlx::query("SELECT set_config('lock_timeout', '0', false)")
            .execute(lock.conn())
            .await
            .map_err(|e| self.error(e))?;
        Ok(StoreLock::Postgres(lock))
    }

    pub(super) async fn get(
        &self,
        lock: Option<&mut PgLock>,
        user: Uuid,
        key: &str,
    ) -> Result<Option<Binding>, StoreError> {
        let query = sqlx::query_as::<_, Row>(sql::GET)
            .bind(user.to_string())
            .bind(key);
        let row = match lock {
            Some(lock) => query.fetch_optional(lock.conn()).await,
            None => query.fetch_optional(&self.pool).await,
        }
        .map_err(|e| self.error(e))?;
        Ok(row.and_then(binding_from_row))
    }

    pub(super) async fn put(
        &self,
        lock: Option<&mut PgLock>,
        user: Uuid,
        keys: &[String],
        binding: &Binding,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        match lock {
            Some(lock) => put_on(lock.conn(), user, keys, binding, now, expires).await,
            None => put_on(&self.pool, user, keys, binding, now, expires).await,
        }
        .map_err(|e| self.error(e))
    }

    pub(super) async fn touch(
        &self,
        lock: Option<&mut PgLock>,
        user: Uuid,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(sql::TOUCH)
            .bind(user.to_string())
            .bind(key)
            .bind(now)
            .bind(expires)
            .bind(now - super::TOUCH_EVERY);
        match lock {
            Some(lock) => query.execute(lock.conn()).await,
            None => query.execute(&self.pool).await,
        }
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

/// Binds every one of `keys` in one transaction.
async fn put_on<'a, A: Acquire<'a, Database = Postgres>>(
    conn: A,
    user: Uuid,
    keys: &[String],
    binding: &Binding,
    now: i64,
    expires: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for key in keys {
        super::bind_put(sqlx::query(sql::PUT), user, key, binding, now, expires)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The advisory lock ids of `keys`, in ascending order, so two calls never wait for each
/// other's second lock.
fn lock_ids(user: Uuid, keys: &[String]) -> BTreeSet<i64> {
    keys.iter().map(|key| key_hash(user, key) as i64).collect()
}
