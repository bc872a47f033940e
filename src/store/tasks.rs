//! Durable MCP tasks (the Tasks extension): the row of every task, written before the
//! client learns its id, so `tasks/get` answers on any replica and after a restart.
//!
//! A task's row holds what is needed to follow it again (the request, and the workspace
//! name once known), its status and status message, its result once done, and its owner:
//! the replica that follows it. Replicas record that they are alive
//! (`coder_mcp_replicas`); a live task whose owner has not been seen for a while is
//! claimed by the first replica asked about it, which follows the workspace again from
//! Coder. Each idempotency key (conversation, name) names at most one live task
//! (`coder_mcp_task_keys`), so a call for a task already under way gets that task.

use std::collections::HashMap;

use parking_lot::Mutex;
use uuid::Uuid;

use super::{Store, StoreError};

/// A task's lifecycle state as stored (the Tasks extension's statuses we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Working,
    Completed,
    Cancelled,
}

impl TaskState {
    fn as_str(self) -> &'static str {
        match self {
            TaskState::Working => "working",
            TaskState::Completed => "completed",
            TaskState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> TaskState {
        match text {
            "working" => TaskState::Working,
            "cancelled" => TaskState::Cancelled,
            _ => TaskState::Completed,
        }
    }
}

/// One task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task_id: String,
    pub user: Uuid,
    /// The call's request (JSON, as the tool layer wrote it).
    pub request: String,
    /// The workspace the task is about, once known.
    pub workspace_name: Option<String>,
    pub state: TaskState,
    pub status_message: Option<String>,
    /// The tool's result (JSON) once the task is done.
    pub result: Option<String>,
    /// The replica that follows it.
    pub owner: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix seconds (the store's clock), after which the task is removed.
    pub expires_at: i64,
}

/// What happened to a new task's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The task was recorded and holds its keys.
    New,
    /// A live task already held one of the keys: that task's id (the new one was not kept).
    Existing(String),
}

type TaskRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

fn from_row(row: TaskRow) -> Option<TaskRecord> {
    let (task_id, user, request, workspace_name, state, status_message, result, owner, c, u, e) =
        row;
    Some(TaskRecord {
        task_id,
        user: Uuid::parse_str(&user).ok()?,
        request,
        workspace_name,
        state: TaskState::parse(&state),
        status_message,
        result,
        owner,
        created_at: c,
        updated_at: u,
        expires_at: e,
    })
}

/// The queries, shared by SQLite and PostgreSQL.
mod sql {
    pub const INSERT: &str = "INSERT INTO coder_mcp_tasks
        (task_id, user_id, request, workspace_name, status, status_message, result, owner, created_at, updated_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    /// Takes a key for `$3` unless a live task holds it; returns the key's row if taken.
    pub const CLAIM_KEY: &str = "INSERT INTO coder_mcp_task_keys (user_id, key, task_id)
        VALUES ($1, $2, $3)
        ON CONFLICT (user_id, key) DO UPDATE SET task_id = excluded.task_id
        WHERE NOT EXISTS (SELECT 1 FROM coder_mcp_tasks t
            WHERE t.task_id = coder_mcp_task_keys.task_id AND t.status = 'working')
        RETURNING task_id";
    pub const KEY_HOLDER: &str =
        "SELECT task_id FROM coder_mcp_task_keys WHERE user_id = $1 AND key = $2";
    pub const GET: &str = "SELECT task_id, user_id, request, workspace_name, status, status_message, result, owner, created_at, updated_at, expires_at
        FROM coder_mcp_tasks WHERE task_id = $1 AND user_id = $2";
    pub const PROGRESS: &str = "UPDATE coder_mcp_tasks SET status_message = $2, updated_at = $3
        WHERE task_id = $1 AND status = 'working'";
    pub const NAMED: &str = "UPDATE coder_mcp_tasks SET workspace_name = $2
        WHERE task_id = $1 AND status = 'working'";
    pub const FINISH: &str =
        "UPDATE coder_mcp_tasks SET status = $2, status_message = $3, result = $4, updated_at = $5
        WHERE task_id = $1 AND status = 'working'";
    /// Takes over a live task whose owner is gone (or is `$2` already).
    pub const CLAIM: &str = "UPDATE coder_mcp_tasks SET owner = $2
        WHERE task_id = $1 AND status = 'working' AND (owner IS NULL OR owner = $2
            OR owner NOT IN (SELECT replica_id FROM coder_mcp_replicas WHERE seen_at > $3))";
    pub const SEEN: &str = "INSERT INTO coder_mcp_replicas (replica_id, seen_at) VALUES ($1, $2)
        ON CONFLICT (replica_id) DO UPDATE SET seen_at = excluded.seen_at";
    pub const EXPIRE_KEYS: &str = "DELETE FROM coder_mcp_task_keys WHERE task_id IN
        (SELECT task_id FROM coder_mcp_tasks WHERE expires_at <= $1)";
    pub const EXPIRE: &str = "DELETE FROM coder_mcp_tasks WHERE expires_at <= $1";
    pub const EXPIRE_REPLICAS: &str = "DELETE FROM coder_mcp_replicas WHERE seen_at <= $1";
}

/// A failure that goes away when the transaction is tried again: PostgreSQL's deadlock
/// and serialization failures.
fn retryable(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// The same operations on SQLite and PostgreSQL (the SQL is shared; only the pool differs).
macro_rules! task_queries {
    ($store:ty) => {
        impl $store {
            /// The task and its keys in one transaction: a task that gives way leaves no
            /// trace, and one that another start saw holding a key has all of its keys
            /// (claimed one by one outside a transaction, three starts with overlapping
            /// keys could each claim one, and one give way after another had already
            /// answered with its id). On PostgreSQL a claim of a key that another open
            /// transaction claimed waits for it, and then fails (serializable) if that one
            /// committed, as does a cycle of such waits (a deadlock): it starts again.
            pub(super) async fn task_start(
                &self,
                record: &TaskRecord,
                keys: &[String],
            ) -> Result<Started, StoreError> {
                let mut attempts = 0;
                loop {
                    match self.task_start_once(record, keys).await {
                        Ok(started) => return Ok(started),
                        Err(err) if attempts < 10 && retryable(&err) => attempts += 1,
                        Err(sqlx::Error::RowNotFound) => {
                            return Err(self.error("a task key vanished while it was claimed"));
                        }
                        Err(err) => return Err(self.error(err)),
                    }
                }
            }

            async fn task_start_once(
                &self,
                record: &TaskRecord,
                keys: &[String],
            ) -> Result<Started, sqlx::Error> {
                let mut tx = self.begin_write().await?;
                sqlx::query(sql::INSERT)
                    .bind(&record.task_id)
                    .bind(record.user.to_string())
                    .bind(&record.request)
                    .bind(&record.workspace_name)
                    .bind(record.state.as_str())
                    .bind(&record.status_message)
                    .bind(&record.result)
                    .bind(&record.owner)
                    .bind(record.created_at)
                    .bind(record.updated_at)
                    .bind(record.expires_at)
                    .execute(&mut *tx)
                    .await?;
                for key in keys {
                    let taken: Option<String> = sqlx::query_scalar(sql::CLAIM_KEY)
                        .bind(record.user.to_string())
                        .bind(key)
                        .bind(&record.task_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_some() {
                        continue;
                    }
                    // The claim found the key held by a working task, which this
                    // transaction sees (SQLite's write lock, PostgreSQL's serializable
                    // snapshot), so the holder is there to read.
                    let holder: String = sqlx::query_scalar(sql::KEY_HOLDER)
                        .bind(record.user.to_string())
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                    // This task gives way: nothing of it stays.
                    tx.rollback().await?;
                    return Ok(Started::Existing(holder));
                }
                tx.commit().await?;
                Ok(Started::New)
            }

            pub(super) async fn task_get(
                &self,
                user: Uuid,
                task_id: &str,
            ) -> Result<Option<TaskRecord>, StoreError> {
                let row: Option<TaskRow> = sqlx::query_as(sql::GET)
                    .bind(task_id)
                    .bind(user.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(row.and_then(from_row))
            }

            pub(super) async fn task_progress(
                &self,
                task_id: &str,
                message: &str,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::PROGRESS)
                    .bind(task_id)
                    .bind(message)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(done.rows_affected() == 1)
            }

            pub(super) async fn task_named(
                &self,
                task_id: &str,
                name: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(sql::NAMED)
                    .bind(task_id)
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            }

            pub(super) async fn task_finish(
                &self,
                task_id: &str,
                state: TaskState,
                message: &str,
                result: Option<&str>,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::FINISH)
                    .bind(task_id)
                    .bind(state.as_str())
                    .bind(message)
                    .bind(result)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(done.rows_affected() == 1)
            }

            pub(super) async fn task_claim(
                &self,
                task_id: &str,
                owner: &str,
                alive_since_ms: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::CLAIM)
                    .bind(task_id)
                    .bind(owner)
                    .bind(alive_since_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(done.rows_affected() == 1)
            }

            pub(super) async fn replica_seen(
                &self,
                replica: &str,
                now_ms: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(sql::SEEN)
                    .bind(replica)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            }

            pub(super) async fn tasks_expire(
                &self,
                now: i64,
                replicas_before_ms: i64,
            ) -> Result<u64, StoreError> {
                sqlx::query(sql::EXPIRE_KEYS)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                let done = sqlx::query(sql::EXPIRE)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                sqlx::query(sql::EXPIRE_REPLICAS)
                    .bind(replicas_before_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(done.rows_affected())
            }
        }
    };
}

task_queries!(super::sqlite::SqliteStore);
task_queries!(super::postgres::PgStore);

/// The memory backend's tasks (tests and benchmarks).
#[derive(Default)]
pub(super) struct MemoryTasks {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    tasks: HashMap<String, TaskRecord>,
    keys: HashMap<(Uuid, String), String>,
}

impl MemoryTasks {
    fn start(&self, record: &TaskRecord, keys: &[String]) -> Started {
        let mut inner = self.inner.lock();
        for key in keys {
            if let Some(holder) = inner.keys.get(&(record.user, key.clone()))
                && inner
                    .tasks
                    .get(holder)
                    .is_some_and(|t| t.state == TaskState::Working)
            {
                return Started::Existing(holder.clone());
            }
        }
        inner.tasks.insert(record.task_id.clone(), record.clone());
        for key in keys {
            inner
                .keys
                .insert((record.user, key.clone()), record.task_id.clone());
        }
        Started::New
    }

    fn update(&self, task_id: &str, change: impl FnOnce(&mut TaskRecord) -> bool) -> bool {
        self.inner
            .lock()
            .tasks
            .get_mut(task_id)
            .filter(|t| t.state == TaskState::Working)
            .is_some_and(change)
    }
}

impl Store {
    /// Records a new task and its keys, unless a live task holds one of the keys: then
    /// that task's id, and nothing is recorded.
    pub async fn task_start(
        &self,
        record: &TaskRecord,
        keys: &[String],
    ) -> Result<Started, StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => Ok(m.tasks.start(record, keys)),
            super::Backend::Sqlite(s) => self.bounded(s.task_start(record, keys)).await,
            super::Backend::Postgres(s) => self.bounded(s.task_start(record, keys)).await,
        }
    }

    /// `user`'s task `task_id` (another user's, or one past its TTL, is unknown).
    pub async fn task_get(
        &self,
        user: Uuid,
        task_id: &str,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let now = self.now();
        let found = match &self.backend {
            super::Backend::Memory(m) => Ok(m
                .tasks
                .inner
                .lock()
                .tasks
                .get(task_id)
                .filter(|t| t.user == user)
                .cloned()),
            super::Backend::Sqlite(s) => self.bounded(s.task_get(user, task_id)).await,
            super::Backend::Postgres(s) => self.bounded(s.task_get(user, task_id)).await,
        }?;
        Ok(found.filter(|task| task.expires_at > now))
    }

    /// A live task's new status message; `false` when the task is no longer live
    /// (cancelled, perhaps on another replica).
    pub async fn task_progress(
        &self,
        task_id: &str,
        message: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => Ok(m.tasks.update(task_id, |t| {
                t.status_message = Some(message.to_owned());
                t.updated_at = now_ms;
                true
            })),
            super::Backend::Sqlite(s) => {
                self.bounded(s.task_progress(task_id, message, now_ms))
                    .await
            }
            super::Backend::Postgres(s) => {
                self.bounded(s.task_progress(task_id, message, now_ms))
                    .await
            }
        }
    }

    /// The workspace a live task is about.
    pub async fn task_named(&self, task_id: &str, name: &str) -> Result<(), StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => {
                m.tasks.update(task_id, |t| {
                    t.workspace_name = Some(name.to_owned());
                    true
                });
                Ok(())
            }
            super::Backend::Sqlite(s) => self.bounded(s.task_named(task_id, name)).await,
            super::Backend::Postgres(s) => self.bounded(s.task_named(task_id, name)).await,
        }
    }

    /// Ends a live task; `false` when it had already ended (a cancel and a completion
    /// race: the first one stands).
    pub async fn task_finish(
        &self,
        task_id: &str,
        state: TaskState,
        message: &str,
        result: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => Ok(m.tasks.update(task_id, |t| {
                t.state = state;
                t.status_message = Some(message.to_owned());
                t.result = result.map(str::to_owned);
                t.updated_at = now_ms;
                true
            })),
            super::Backend::Sqlite(s) => {
                self.bounded(s.task_finish(task_id, state, message, result, now_ms))
                    .await
            }
            super::Backend::Postgres(s) => {
                self.bounded(s.task_finish(task_id, state, message, result, now_ms))
                    .await
            }
        }
    }

    /// Makes `owner` the follower of a live task whose owner has not been seen since
    /// `alive_since_ms` (or is `owner` already); `false` when another live replica has it.
    pub async fn task_claim(
        &self,
        task_id: &str,
        owner: &str,
        alive_since_ms: i64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            // One process: nobody else could follow it.
            super::Backend::Memory(m) => Ok(m.tasks.update(task_id, |t| {
                t.owner = Some(owner.to_owned());
                true
            })),
            super::Backend::Sqlite(s) => {
                self.bounded(s.task_claim(task_id, owner, alive_since_ms))
                    .await
            }
            super::Backend::Postgres(s) => {
                self.bounded(s.task_claim(task_id, owner, alive_since_ms))
                    .await
            }
        }
    }

    /// Records that replica `replica` is alive.
    pub async fn replica_seen(&self, replica: &str, now_ms: i64) -> Result<(), StoreError> {
        match &self.backend {
            super::Backend::Memory(_) => Ok(()),
            super::Backend::Sqlite(s) => self.bounded(s.replica_seen(replica, now_ms)).await,
            super::Backend::Postgres(s) => self.bounded(s.replica_seen(replica, now_ms)).await,
        }
    }

    /// Removes the tasks past their TTL (and replicas not seen for an hour).
    pub(super) async fn tasks_expire(&self, now: i64) -> Result<u64, StoreError> {
        let replicas_before_ms = now.saturating_sub(3600).saturating_mul(1000);
        match &self.backend {
            super::Backend::Memory(m) => {
                let mut inner = m.tasks.inner.lock();
                let before = inner.tasks.len();
                inner.tasks.retain(|_, t| t.expires_at > now);
                let MemoryInner { tasks, keys } = &mut *inner;
                keys.retain(|_, id| tasks.contains_key(id));
                Ok((before - tasks.len()) as u64)
            }
            super::Backend::Sqlite(s) => {
                self.bounded(s.tasks_expire(now, replicas_before_ms)).await
            }
            super::Backend::Postgres(s) => {
                self.bounded(s.tasks_expire(now, replicas_before_ms)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreLocation, StoreOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn record(user: Uuid, expires_at: i64) -> TaskRecord {
        TaskRecord {
            task_id: Uuid::new_v4().to_string(),
            user,
            request: "{}".into(),
            workspace_name: None,
            state: TaskState::Working,
            status_message: None,
            result: None,
            owner: Some("replica-a".into()),
            created_at: 0,
            updated_at: 0,
            expires_at,
        }
    }

    /// One live task per key; an ended task gives its keys up; tasks are private to
    /// their user, claimed only from a replica that is gone, and expire after their TTL.
    async fn the_task_lifecycle(store: Store) {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let clock = now.clone();
        let store = store.with_clock(move || clock.load(Ordering::SeqCst));
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        let keys = vec!["name:a".to_owned(), "chat:1".to_owned()];
        let first = record(user, 1_000_100);
        assert_eq!(store.task_start(&first, &keys).await.unwrap(), Started::New);
        let second = record(user, 1_000_100);
        assert_eq!(
            store.task_start(&second, &keys[1..]).await.unwrap(),
            Started::Existing(first.task_id.clone())
        );
        assert!(
            store
                .task_get(user, &second.task_id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .task_get(other, &first.task_id)
                .await
                .unwrap()
                .is_none()
        );
        // Another user's keys are their own.
        let theirs = record(other, 1_000_100);
        assert_eq!(
            store.task_start(&theirs, &keys).await.unwrap(),
            Started::New
        );

        // replica-a was seen at 5000 ms: alive for a claim that counts from 4000 ms.
        store.replica_seen("replica-a", 5_000).await.unwrap();
        if store.kind() != "memory" {
            assert!(
                !store
                    .task_claim(&first.task_id, "replica-b", 4_000)
                    .await
                    .unwrap()
            );
        }
        assert!(
            store
                .task_claim(&first.task_id, "replica-b", 6_000)
                .await
                .unwrap()
        );
        assert!(
            store
                .task_progress(&first.task_id, "building", 7)
                .await
                .unwrap()
        );
        store.task_named(&first.task_id, "a").await.unwrap();
        assert!(
            store
                .task_finish(&first.task_id, TaskState::Completed, "done", Some("{}"), 8)
                .await
                .unwrap()
        );
        assert!(
            !store
                .task_finish(&first.task_id, TaskState::Cancelled, "late", None, 9)
                .await
                .unwrap(),
            "the first end stands"
        );
        assert!(
            !store
                .task_progress(&first.task_id, "late", 10)
                .await
                .unwrap()
        );
        let done = store.task_get(user, &first.task_id).await.unwrap().unwrap();
        assert_eq!(
            (
                done.state,
                done.workspace_name.as_deref(),
                done.result.as_deref()
            ),
            (TaskState::Completed, Some("a"), Some("{}"))
        );
        assert_eq!(done.owner.as_deref(), Some("replica-b"));
        // Ended: its keys go to the next task.
        let third = record(user, 1_000_200);
        assert_eq!(store.task_start(&third, &keys).await.unwrap(), Started::New);

        now.store(1_000_150, Ordering::SeqCst);
        store.expire().await.unwrap();
        assert!(
            store
                .task_get(user, &first.task_id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .task_get(user, &third.task_id)
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Three starts at once whose keys overlap in a cycle (each shares a key with each
    /// other): exactly one task starts, and the other two answer with its id, a task
    /// that exists. Many rounds, to give the interleavings a chance.
    async fn overlapping_starts_agree(store: Store) {
        for _ in 0..20 {
            let user = Uuid::new_v4();
            let records: Vec<TaskRecord> = (0..3).map(|_| record(user, i64::MAX / 2)).collect();
            let keys = [
                vec!["name:a".to_owned(), "chat:b".to_owned()],
                vec!["chat:b".to_owned(), "session:c".to_owned()],
                vec!["session:c".to_owned(), "name:a".to_owned()],
            ];
            let (one, two, three) = tokio::join!(
                store.task_start(&records[0], &keys[0]),
                store.task_start(&records[1], &keys[1]),
                store.task_start(&records[2], &keys[2]),
            );
            let outcomes = [one.unwrap(), two.unwrap(), three.unwrap()];
            let started: Vec<&str> = outcomes
                .iter()
                .zip(&records)
                .filter(|(outcome, _)| **outcome == Started::New)
                .map(|(_, record)| record.task_id.as_str())
                .collect();
            assert_eq!(started.len(), 1, "{outcomes:?}");
            for outcome in &outcomes {
                if let Started::Existing(holder) = outcome {
                    assert_eq!(holder, started[0], "{outcomes:?}");
                }
            }
            assert!(store.task_get(user, started[0]).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn overlapping_starts_agree_in_every_store() {
        overlapping_starts_agree(Store::memory()).await;
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        overlapping_starts_agree(
            Store::open(&location, StoreOptions::default())
                .await
                .unwrap(),
        )
        .await;
        match std::env::var("CODER_MCP_TEST_POSTGRES") {
            Ok(url) => {
                let location = StoreLocation::Postgres(url);
                overlapping_starts_agree(
                    Store::open(&location, StoreOptions::default())
                        .await
                        .unwrap(),
                )
                .await;
            }
            Err(_) => assert!(
                std::env::var_os("CODER_MCP_REQUIRE_POSTGRES").is_none(),
                "CODER_MCP_REQUIRE_POSTGRES is set but CODER_MCP_TEST_POSTGRES is not"
            ),
        }
    }

    #[tokio::test]
    async fn the_task_lifecycle_in_memory() {
        the_task_lifecycle(Store::memory()).await;
    }

    #[tokio::test]
    async fn the_task_lifecycle_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        let store = Store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        the_task_lifecycle(store).await;
    }
}
