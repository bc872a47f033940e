//! `create_workspace` as an MCP task (the Tasks extension, `io.modelcontextprotocol/tasks`),
//! for clients that declare it: the call answers at once with a task, which the client
//! polls with `tasks/get` for as long as the build takes, and may end with `tasks/cancel`.
//!
//! Every task is a row in the store, written before its id is answered (the extension
//! requires it): `tasks/get` answers on any replica and after a restart. The replica that
//! created a task follows it (runs the same creation as a synchronous call, with no time
//! limit) and writes its status message and, at the end, its result; a replica asked
//! about a live task whose follower is gone (its replica has not been seen for three
//! heartbeats) takes it over and follows the workspace again from Coder, which knows its
//! state: the creation is idempotent, so following again never makes a second workspace.
//! Tasks that look at one workspace (a conversation's, and another's that names it; one
//! taken over next to one still followed) each run their own creation, which gives each
//! its own result (`created` only for the one that made it), but they wait on the
//! replica's one follower of that workspace: its watch and build-log streams, shared
//! through the engine ([`crate::coder::WatchHub`]) and stopped when no task waits on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rmcp::ErrorData;
use rmcp::model::{
    CallToolResult, CreateTaskResult, DetailedTask, GetTaskResult, JsonObject, Task, TaskPayload,
    TaskStatus,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Scope;
use super::results::CreateWorkspaceResult;
use crate::coder::Identity;
use crate::engine::{Caller, CreateError, CreateRequest, Engine, KeyRecord, ProgressSink, TaskKey};
use crate::store::{Started, TaskRecord, TaskState};

/// `--task-ttl` and the other task timings.
#[derive(Debug, Clone, Copy)]
pub struct TaskOptions {
    /// How long a task (and its result) is kept after it was created.
    pub ttl: Duration,
    /// How often clients are asked to poll.
    pub poll_interval: Duration,
    /// How often a replica records that it is alive; a task whose replica has not been
    /// seen for three of these is taken over.
    pub heartbeat: Duration,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            ttl: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// What a task records of its call, to make it again.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRequest {
    template_id: Uuid,
    name: Option<String>,
    parameters: BTreeMap<String, String>,
    /// Absent in tasks stored before presets existed.
    #[serde(default)]
    preset: Option<String>,
    key: Option<KeyRecord>,
}

/// A task this replica follows.
struct Followed {
    /// The latest status message.
    message: Mutex<String>,
    /// Stops following (`tasks/cancel`, or the task ended elsewhere).
    cancel: CancellationToken,
}

/// The tasks of this process. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    /// This replica's id, as owner of the tasks it follows.
    replica: String,
    options: TaskOptions,
    followed: Mutex<HashMap<String, Arc<Followed>>>,
    /// Stops every follower without ending its task (shutdown): another replica, or
    /// this server after a restart, takes them over.
    shutdown: CancellationToken,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn store_error(err: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(
        format!("{err}; the task is not lost: ask again in a moment"),
        None,
    )
}

fn unknown(task_id: &str) -> ErrorData {
    let shown = crate::quote::shorten(task_id, crate::quote::QUOTE_CHARS);
    ErrorData::invalid_params(format!("unknown task: {shown}"), None)
}

impl Tasks {
    /// The tasks of this process; records that the replica is alive until `shutdown`.
    pub fn new(engine: Arc<Engine>, options: TaskOptions, shutdown: CancellationToken) -> Tasks {
        let tasks = Tasks {
            inner: Arc::new(Inner {
                engine,
                replica: Uuid::new_v4().to_string(),
                options,
                followed: Mutex::default(),
                shutdown,
            }),
        };
        let alive = tasks.clone();
        tokio::spawn(async move { alive.heartbeat().await });
        tasks
    }

    async fn heartbeat(&self) {
        let inner = &self.inner;
        loop {
            if let Err(err) = inner
                .engine
                .store()
                .replica_seen(&inner.replica, now_ms())
                .await
            {
                tracing::warn!(error = %err, "could not record that this replica is alive");
            }
            tokio::select! {
                () = tokio::time::sleep(inner.options.heartbeat) => {}
                () = inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Starts `request` as a task (or finds the live task of its key), once the
    /// arguments have passed the same checks as a synchronous call. `Err`: the tool error.
    pub async fn start(
        &self,
        scope: &Scope,
        request: CreateRequest,
    ) -> Result<Result<CreateTaskResult, String>, ErrorData> {
        let inner = &self.inner;
        let store = inner.engine.store();
        if let Err(err) = inner
            .engine
            .check_request(&scope.identity.client, &request, &inner.shutdown)
            .await
        {
            return Ok(Err(err.to_string()));
        }
        let caller = scope.caller();
        let keys = Engine::task_keys(&caller, &request);
        let stored = StoredRequest {
            template_id: request.template_id,
            name: request.name.clone(),
            parameters: request.parameters.clone(),
            preset: request.preset.clone(),
            key: caller.key.as_ref().map(TaskKey::to_record),
        };
        let now = now_ms();
        let ttl = i64::try_from(inner.options.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let record = TaskRecord {
            task_id: Uuid::new_v4().to_string(),
            user: caller.user,
            request: serde_json::to_string(&stored).map_err(store_error)?,
            workspace_name: None,
            state: TaskState::Working,
            status_message: Some("preparing".into()),
            result: None,
            owner: Some(inner.replica.clone()),
            created_at: now,
            updated_at: now,
            expires_at: store.now().saturating_add(ttl),
        };
        let record = match store
            .task_start(&record, &keys)
            .await
            .map_err(store_error)?
        {
            Started::New => {
                tracing::info!(task = %record.task_id, "task started");
                self.follow(&record, scope.identity.clone(), caller, request);
                record
            }
            Started::Existing(task_id) => {
                tracing::info!(task = %task_id, "a task of this key is under way: returning it");
                let existing = store
                    .task_get(caller.user, &task_id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| unknown(&task_id))?;
                self.adopt_if_orphaned(&existing, scope).await;
                existing
            }
        };
        Ok(Ok(CreateTaskResult::new(self.task(&record))))
    }

    /// `tasks/get`: the caller's task, from this replica's memory when it follows it,
    /// else from the store (taking it over if nobody follows it any more).
    pub async fn get(&self, scope: &Scope, task_id: &str) -> Result<GetTaskResult, ErrorData> {
        let store = self.inner.engine.store();
        let record = store
            .task_get(scope.identity.user.id, task_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| unknown(task_id))?;
        if record.state == TaskState::Working {
            self.adopt_if_orphaned(&record, scope).await;
        }
        let mut task = self.task(&record);
        let payload = match record.state {
            TaskState::Working => TaskPayload::Working,
            TaskState::Cancelled => TaskPayload::Cancelled,
            TaskState::Completed => {
                let result: JsonObject = record
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .ok_or_else(|| store_error("the task's stored result cannot be read"))?;
                TaskPayload::Completed { result }
            }
        };
        if record.state == TaskState::Working
            && let Some(followed) = self.inner.followed.lock().get(task_id)
        {
            task.status_message = Some(followed.message.lock().clone());
        }
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    }

    /// `tasks/cancel`: stops waiting for the workspace (which keeps building in Coder)
    /// and ends the task `cancelled`. Cancelling an ended task changes nothing.
    pub async fn cancel(&self, scope: &Scope, task_id: &str) -> Result<(), ErrorData> {
        let store = self.inner.engine.store();
        let record = store
            .task_get(scope.identity.user.id, task_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| unknown(task_id))?;
        if record.state != TaskState::Working {
            return Ok(());
        }
        let message = match &record.workspace_name {
            Some(name) => format!(
                "cancelled: stopped waiting; workspace {name} keeps building in Coder (call create_workspace with name \"{name}\" to follow it again, or delete it in Coder)"
            ),
            None => "cancelled: stopped waiting; a workspace whose create was already sent keeps building in Coder".to_owned(),
        };
        store
            .task_finish(task_id, TaskState::Cancelled, &message, None, now_ms())
            .await
            .map_err(store_error)?;
        if let Some(followed) = self.inner.followed.lock().get(task_id) {
            followed.cancel.cancel();
        }
        tracing::info!(task = %task_id, "task cancelled");
        Ok(())
    }

    /// The protocol's view of a stored task (without its payload).
    fn task(&self, record: &TaskRecord) -> Task {
        let status = match record.state {
            TaskState::Working => TaskStatus::Working,
            TaskState::Completed => TaskStatus::Completed,
            TaskState::Cancelled => TaskStatus::Cancelled,
        };
        let mut task = Task::new(
            record.task_id.clone(),
            status,
            iso(record.created_at),
            iso(record.updated_at),
        )
        .with_ttl_ms(millis(self.inner.options.ttl))
        .with_poll_interval_ms(millis(self.inner.options.poll_interval));
        task.status_message = record.status_message.clone();
        task
    }

    /// Follows a live task nobody follows any more (its replica is gone, or this server
    /// restarted), with the identity of the caller who asks about it (its owner).
    async fn adopt_if_orphaned(&self, record: &TaskRecord, scope: &Scope) {
        let inner = &self.inner;
        if inner.followed.lock().contains_key(&record.task_id) {
            return;
        }
        let stale = i64::try_from(inner.options.heartbeat.as_millis() * 3).unwrap_or(i64::MAX);
        let claimed = inner
            .engine
            .store()
            .task_claim(
                &record.task_id,
                &inner.replica,
                now_ms().saturating_sub(stale),
            )
            .await;
        match claimed {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(task = %record.task_id, error = %err, "could not take over a task");
                return;
            }
        }
        let Ok(stored) = serde_json::from_str::<StoredRequest>(&record.request) else {
            tracing::warn!(task = %record.task_id, "a task's stored request cannot be read");
            return;
        };
        tracing::info!(task = %record.task_id, "taking over a task nobody follows");
        let caller = Caller {
            user: record.user,
            key: stored.key.map(TaskKey::from_record),
        };
        // The workspace, once known, is asked for by name: that finds it from any
        // conversation, even one whose own record is gone.
        let request = CreateRequest {
            template_id: stored.template_id,
            name: record.workspace_name.clone().or(stored.name),
            parameters: stored.parameters,
            preset: stored.preset,
        };
        self.follow(record, scope.identity.clone(), caller, request);
    }

    /// Runs the creation of a task in the background, writing its progress and result.
    fn follow(
        &self,
        record: &TaskRecord,
        identity: Arc<Identity>,
        caller: Caller,
        request: CreateRequest,
    ) {
        let followed = Arc::new(Followed {
            message: Mutex::new(record.status_message.clone().unwrap_or_default()),
            cancel: self.inner.shutdown.child_token(),
        });
        {
            let mut map = self.inner.followed.lock();
            if map.contains_key(&record.task_id) {
                return;
            }
            map.insert(record.task_id.clone(), followed.clone());
        }
        let tasks = self.clone();
        let task_id = record.task_id.clone();
        tokio::spawn(async move {
            let sink = TaskProgress {
                tasks: &tasks,
                task_id: &task_id,
                followed: &followed,
            };
            let engine = &tasks.inner.engine;
            let outcome = engine
                .create_workspace_within(
                    &identity.client,
                    &caller,
                    request,
                    &sink,
                    &followed.cancel,
                    None,
                )
                .await;
            tasks.finish(&task_id, outcome).await;
            tasks.inner.followed.lock().remove(&task_id);
        });
    }

    /// Writes a task's end: the result a synchronous call would have answered.
    async fn finish(&self, task_id: &str, outcome: Result<crate::engine::Answer, CreateError>) {
        let (result, message) = match outcome {
            Ok(answer) => {
                let result = CreateWorkspaceResult::from(answer);
                let message = result
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("workspace {} is ready", result.workspace_name));
                match serde_json::to_value(&result) {
                    Ok(value) => (CallToolResult::structured(value), message),
                    Err(err) => (super::error_result(&err.to_string()), "failed".to_owned()),
                }
            }
            // Cancelled: by tasks/cancel (already recorded) or by shutdown (the task
            // stays live for whoever takes it over).
            Err(CreateError::Cancelled) => return,
            Err(err) => {
                let text = crate::quote::shorten_quotes(&err.to_string());
                tracing::info!(task = %task_id, error = %text, "task ended with a tool error");
                (super::error_result(&text), text)
            }
        };
        let message: String = message.chars().take(200).collect();
        let stored = serde_json::to_string(&result).unwrap_or_default();
        let store = self.inner.engine.store();
        match store
            .task_finish(
                task_id,
                TaskState::Completed,
                &message,
                Some(&stored),
                now_ms(),
            )
            .await
        {
            Ok(_) => tracing::info!(task = %task_id, "task completed"),
            Err(err) => {
                tracing::warn!(task = %task_id, error = %err, "could not record a task's result; it will be followed again")
            }
        }
    }
}

/// A task's progress: its status message, in memory at once (a `tasks/get` on the
/// replica that follows the task answers from there) and in the store when the phase or
/// stage changes, for the other replicas; heartbeats (the same phase, a few seconds
/// older) only in memory, so that thousands of waiting tasks do not write every few
/// seconds each.
struct TaskProgress<'a> {
    tasks: &'a Tasks,
    task_id: &'a str,
    followed: &'a Followed,
}

impl ProgressSink for TaskProgress<'_> {
    fn heartbeat(&self, _progress: f64, _total: f64, message: String) -> BoxFuture<'_, ()> {
        *self.followed.message.lock() = message;
        Box::pin(async {})
    }

    fn send(&self, _progress: f64, _total: f64, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.followed.message.lock() = message.clone();
            let store = self.tasks.inner.engine.store();
            match store.task_progress(self.task_id, &message, now_ms()).await {
                Ok(true) => {}
                // Cancelled on another replica: stop following.
                Ok(false) => self.followed.cancel.cancel(),
                Err(err) => {
                    tracing::debug!(task = %self.task_id, error = %err, "could not store a task's status");
                }
            }
        })
    }

    fn named<'a>(&'a self, workspace_name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let store = self.tasks.inner.engine.store();
            if let Err(err) = store.task_named(self.task_id, workspace_name).await {
                tracing::warn!(task = %self.task_id, error = %err, "could not record a task's workspace");
            }
        })
    }
}
