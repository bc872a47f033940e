//! The PostgreSQL backend, for `serve` replicas behind a load balancer.
//!
//! Per-key locks are transaction-level advisory locks (`pg_advisory_xact_lock`) on a
//! connection held for the call's short critical section (decide, write the intent,
//! create, write the id): they end with the transaction, so a replica that dies mid-call
//! releases them with its connection. Waiting is bounded by `lock_timeout`.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use super::migrations::{self, sql};
use super::{Binding, LockError, StoreError, StoreLock, binding_from_row, key_hash};

/// Serializes migrations of replicas that start at once.
const MIGRATION_LOCK: i64 = 0x636f_6465_725f_6d63; // "coder_mc"

/// How long a call waits for a pooled connection (the pool retries a refused connection
/// until then).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL's `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

pub(super) struct PgStore {
    pool: PgPool,
    describe: String,
}

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl PgStore {
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
            // Each call in its critical section holds one connection for its lock (one
            // per task and replica: calls of one task queue in-process first).
            .max_connections(16)
            // A database that is down fails a call within this, not the call's whole wait.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let store = PgStore {
            pool,
            describe: describe.to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
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

    /// The lock, if no other call holds any part of it now.
    pub(super) async fn try_lock(
        &self,
        user: Uuid,
        keys: &[String],
    ) -> Result<Option<StoreLock>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        for id in lock_ids(user, keys) {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            if !locked {
                // Rolling back releases what was taken so far.
                tx.rollback().await.map_err(|e| self.error(e))?;
                return Ok(None);
            }
        }
        Ok(Some(StoreLock::Postgres(tx)))
    }

    pub(super) async fn lock(
        &self,
        user: Uuid,
        keys: &[String],
        wait: Duration,
    ) -> Result<StoreLock, LockError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let millis = wait.as_millis().clamp(1, i32::MAX as u128);
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{millis}ms"))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        // In ascending order, so two calls never wait for each other's second lock.
        let ids: BTreeSet<i64> = keys.iter().map(|key| key_hash(user, key) as i64).collect();
        for id in ids {
            let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(id)
                .execute(&mut *tx)
                .await;
            match locked {
                Ok(_) => {}
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                {
                    return Err(LockError::Busy);
                }
                Err(e) => return Err(self.error(e).into()),
            }
        }
        Ok(StoreLock::Postgres(tx))
    }

    pub(super) async fn get(&self, user: Uuid, key: &str) -> Result<Option<Binding>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sql::GET)
            .bind(user.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(
            row.and_then(|(template, name, id, replaced_id, replaced_name)| {
                binding_from_row(
                    &template,
                    name,
                    id.as_deref(),
                    replaced_id.as_deref(),
                    replaced_name,
                )
            }),
        )
    }

    pub(super) async fn put(
        &self,
        user: Uuid,
        keys: &[String],
        binding: &Binding,
        expires: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let now = chrono::Utc::now().timestamp();
        for key in keys {
            sqlx::query(sql::PUT)
                .bind(user.to_string())
                .bind(key)
                .bind(binding.template_id.to_string())
                .bind(&binding.workspace_name)
                .bind(binding.workspace_id.map(|id| id.to_string()))
                .bind(binding.replaced.as_ref().map(|r| r.id.to_string()))
                .bind(binding.replaced.as_ref().map(|r| r.name.clone()))
                .bind(now)
                .bind(expires)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))
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

/// The advisory lock ids of `keys`, in ascending order, so two calls never wait for each
/// other's second lock.
fn lock_ids(user: Uuid, keys: &[String]) -> BTreeSet<i64> {
    keys.iter().map(|key| key_hash(user, key) as i64).collect()
}
