//! `create_workspace`: one workspace per task, whatever the client does.
//!
//! A call finds its task's keys ([`super::keys`]), locks them (in this process, then
//! across processes and replicas through the store), reads what the store has for
//! them, asks Coder about that workspace ([`Call::resolve`]), and lets the pure
//! [`decide`] say what to do: return, wait for, start, create or replace a workspace,
//! or refuse. Creating writes the intent (the name) to the store before the create
//! POST and the workspace id right after it. The lock is held only for that critical
//! section; waiting for the build, the agent and the startup scripts ([`super::wait`])
//! happens outside it, so concurrent calls for one task each follow the same workspace.
//!
//! A call whose `--max-call-wait` runs out while another call of its task holds the
//! lock answers `building` (not an error), describing the workspace the store says is
//! being made.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::answer::Origin;
use super::decide::{Action, Ask, NewName, Replacing, Target, Via, decide};
use super::keys::{Caller, KeyLocks, TaskKey, name_key};
use super::names::{canonical_name, generate_name, name_problem};
use super::outcome::{CreateError, CreateWorkspaceResult};
use super::params::{parameter_differences, validate_parameters};
use super::progress::{Phase, ProgressSink, ProgressTracker};
use super::wait::WaitClocks;
use crate::coder::types::{CreateWorkspaceRequest, Template, Workspace, WorkspaceBuildParameter};
use crate::coder::{CoderClient, CoderError, WatchConfig};
use crate::store::{Binding, LockError, Replaced, Store, StoreLock};

/// Timeouts and pacing of `create_workspace`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a build may take (Coder's tool: 10 minutes).
    pub build_timeout: Duration,
    /// How long the agent may take to connect after the build (Coder's tool: 2 minutes).
    pub agent_timeout: Duration,
    /// How long startup scripts may run (Coder's tool: 10 minutes).
    pub startup_timeout: Duration,
    /// The longest one call waits before answering "still building" (`None`: until done).
    pub max_call_wait: Option<Duration>,
    /// Without `max_call_wait`: how long a call waits for another call of its task to
    /// leave its critical section before giving up with an error.
    pub lock_wait: Duration,
    /// Progress is re-sent at least this often while waiting.
    pub heartbeat: Duration,
    pub watch: WatchConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            build_timeout: Duration::from_secs(600),
            agent_timeout: Duration::from_secs(120),
            startup_timeout: Duration::from_secs(600),
            max_call_wait: Some(Duration::from_secs(45)),
            lock_wait: Duration::from_secs(300),
            heartbeat: Duration::from_secs(5),
            watch: WatchConfig::default(),
        }
    }
}

/// The arguments of one `create_workspace` call, already parsed.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub template_id: Uuid,
    pub name: Option<String>,
    pub parameters: BTreeMap<String, String>,
}

/// Creates workspaces, at most one per task.
pub struct Engine {
    pub(super) config: EngineConfig,
    store: Store,
    locks: KeyLocks,
    pub(super) clocks: WaitClocks,
}

impl Engine {
    pub fn new(config: EngineConfig, store: Store) -> Self {
        Self {
            config,
            store,
            locks: KeyLocks::default(),
            clocks: WaitClocks::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Forgets a conversation that ended (an MCP session): its calls are over, and its
    /// key never comes back. Chat ids and names are kept for the store's retention.
    pub async fn forget(&self, user: Uuid, key: &TaskKey) {
        if let Err(err) = self.store.remove(user, &key.store_key()).await {
            tracing::warn!(error = %err, "could not forget an ended session");
        }
    }

    /// Ensures the caller's task has a workspace from `request`, waiting for it to come
    /// up, reporting progress to `sink`, and stopping at once when `cancel` fires.
    pub async fn create_workspace(
        &self,
        client: &CoderClient,
        caller: &Caller,
        request: CreateRequest,
        sink: &dyn ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let mut call = Call {
            engine: self,
            client,
            cancel,
            deadline: self.config.max_call_wait.map(|d| Instant::now() + d),
            started: Instant::now(),
            progress: ProgressTracker::new(sink, self.config.heartbeat),
        };
        let task = Task::new(caller, &request);
        // Bad arguments are an error whatever the task's state (a call that would return
        // an existing workspace included), before anything else is looked at.
        let checked = call.check(&request).await?;
        let guard = match call.lock(&task, &checked).await? {
            Locked::Yes(guard) => guard,
            Locked::NotInTime(result) => return Ok(*result),
        };
        let records = call.records(&task, true).await?;
        let target = call.resolve(&task, &records).await?;
        let ask = Ask {
            template_id: request.template_id,
            name: task.canonical.as_deref(),
        };
        match decide(&target, ask) {
            Action::Refuse(text) => Err(CreateError::InvalidArguments(text)),
            Action::Resume {
                was_building,
                other_template,
            } => {
                let Target::Found { workspace, via } = target else {
                    unreachable!("decide resumes only a found workspace");
                };
                call.bind(&task, &records, &workspace).await?;
                drop(guard);
                call.resume(
                    &task,
                    &request,
                    *workspace,
                    via,
                    was_building,
                    other_template,
                )
                .await
            }
            Action::Create { name, replaces } => {
                call.create(&task, &request, &checked, &records, name, replaces, guard)
                    .await
            }
        }
    }
}

/// The keys of one call's task.
struct Task {
    user: Uuid,
    key: Option<TaskKey>,
    /// The store keys: the conversation's, then the name's.
    keys: Vec<String>,
    /// The name as the model sent it (trimmed), and the workspace name it stands for.
    requested: Option<String>,
    canonical: Option<String>,
}

impl Task {
    fn new(caller: &Caller, request: &CreateRequest) -> Task {
        let requested = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let canonical = requested.as_deref().and_then(canonical_name);
        let keys = caller
            .key
            .iter()
            .map(TaskKey::store_key)
            .chain(canonical.as_deref().map(name_key))
            .collect();
        Task {
            user: caller.user,
            key: caller.key.clone(),
            keys,
            requested,
            canonical,
        }
    }

    fn key_record(&self) -> Option<String> {
        self.key.as_ref().map(TaskKey::store_key)
    }
}

/// A request checked against its template.
struct Checked {
    template: Template,
    /// The parameter values, as Coder's `rich_parameter_values`.
    values: Vec<WorkspaceBuildParameter>,
}

/// What the store has for a task's keys.
#[derive(Default)]
struct Records {
    key: Option<Binding>,
    name: Option<Binding>,
}

/// The locks of a task's critical section (in-process, then the store's).
struct TaskLock {
    _local: Vec<tokio::sync::OwnedMutexGuard<()>>,
    _store: StoreLock,
}

enum Locked {
    Yes(TaskLock),
    NotInTime(Box<CreateWorkspaceResult>),
}

/// One `create_workspace` call.
pub(super) struct Call<'a> {
    pub(super) engine: &'a Engine,
    pub(super) client: &'a CoderClient,
    pub(super) cancel: &'a CancellationToken,
    pub(super) deadline: Option<Instant>,
    pub(super) started: Instant,
    pub(super) progress: ProgressTracker<'a>,
}

impl<'a> Call<'a> {
    /// Runs `fut` unless the call is cancelled first, keeping progress flowing meanwhile
    /// (a slow Coder answer, with its retries, must not look like a dead call).
    pub(super) async fn guard<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> Result<T, CreateError> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(CreateError::Cancelled),
                out = &mut fut => return Ok(out),
                _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                    self.progress.heartbeat().await;
                }
            }
        }
    }

    /// Runs `fut` to completion even if the call is cancelled meanwhile, keeping progress
    /// flowing: what happens between the intent and recording the workspace must finish.
    pub(super) async fn shielded<T>(&mut self, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                    self.progress.heartbeat().await;
                }
            }
        }
    }

    /// Reads the template and checks the parameters against its active version.
    async fn check(&mut self, request: &CreateRequest) -> Result<Checked, CreateError> {
        let client = self.client;
        let template_id = request.template_id;
        self.progress
            .update(Phase::Preparing, "reading the template")
            .await;
        let template = match self.guard(client.template(template_id)).await? {
            Ok(template) => template,
            Err(err) if matches!(err.status(), Some(400 | 403 | 404)) => {
                return Err(CreateError::InvalidArguments(format!(
                    "template {template_id} not found ({err}); use list_templates to find a template id"
                )));
            }
            Err(err) => return Err(CreateError::coder("could not read the template", err)),
        };
        let parameters = self
            .guard(client.rich_parameters(template.active_version_id))
            .await?
            .map_err(|e| CreateError::coder("could not read the template's parameters", e))?;
        let values = validate_parameters(&request.parameters, &parameters)
            .map_err(CreateError::InvalidArguments)?;
        Ok(Checked { template, values })
    }

    fn store(&self) -> &'a Store {
        &self.engine.store
    }

    /// Takes the task's locks: in this process first (cheap to wait for, cancellable),
    /// then across processes and replicas.
    async fn lock(&mut self, task: &Task, checked: &Checked) -> Result<Locked, CreateError> {
        let mut keys = task.keys.clone();
        keys.sort();
        keys.dedup();
        let mut local = Vec::with_capacity(keys.len());
        let mut announced = false;
        for key in &keys {
            let acquire = self.engine.locks.get(task.user, key).lock_owned();
            tokio::pin!(acquire);
            // Uncontended: no progress noise.
            if let Some(held) = futures::FutureExt::now_or_never(&mut acquire) {
                local.push(held);
                continue;
            }
            if !announced {
                announced = true;
                self.progress
                    .update(
                        Phase::WaitingForTask,
                        "waiting for another create_workspace call of this task to finish",
                    )
                    .await;
            }
            loop {
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return Err(CreateError::Cancelled),
                    held = &mut acquire => {
                        local.push(held);
                        break;
                    }
                    _ = sleep_until_opt(self.deadline) => {
                        drop(local);
                        return Ok(Locked::NotInTime(Box::new(self.not_in_time(task, checked).await?)));
                    }
                    _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                        self.progress.heartbeat().await;
                    }
                }
            }
        }
        if keys.is_empty() {
            // Nothing ties this call to any other (a stateless call without a name).
            return Ok(Locked::Yes(TaskLock {
                _local: local,
                _store: StoreLock::None,
            }));
        }
        let wait = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.engine.config.lock_wait,
        };
        let store = self.store();
        let held = match self.guard(store.try_lock(task.user, &keys)).await? {
            Ok(Some(held)) => Ok(held),
            Ok(None) => {
                // Another process or replica is in this task's critical section.
                if !announced {
                    self.progress
                        .update(
                            Phase::WaitingForTask,
                            "waiting for another create_workspace call of this task to finish",
                        )
                        .await;
                }
                self.guard(store.lock(task.user, &keys, wait)).await?
            }
            Err(err) => Err(LockError::Store(err)),
        };
        match held {
            Ok(held) => Ok(Locked::Yes(TaskLock {
                _local: local,
                _store: held,
            })),
            Err(LockError::Busy) if self.deadline.is_some() => {
                drop(local);
                Ok(Locked::NotInTime(Box::new(
                    self.not_in_time(task, checked).await?,
                )))
            }
            Err(LockError::Busy) => Err(CreateError::Busy {
                waited: humantime::format_duration(wait).to_string(),
            }),
            Err(LockError::Store(err)) => Err(CreateError::store(err, true)),
        }
    }

    /// The task's records. `nothing_created`: whether a failure here means the call made
    /// nothing (it does, before the intent is written).
    async fn records(
        &mut self,
        task: &Task,
        nothing_created: bool,
    ) -> Result<Records, CreateError> {
        let store = self.store();
        let mut records = Records::default();
        if let Some(key) = task.key_record() {
            records.key = self
                .guard(store.get(task.user, &key))
                .await?
                .map_err(|e| CreateError::store(e, nothing_created))?;
        }
        if let Some(name) = &task.canonical {
            records.name = self
                .guard(store.get(task.user, &name_key(name)))
                .await?
                .map_err(|e| CreateError::store(e, nothing_created))?;
        }
        Ok(records)
    }

    /// The task's workspace as Coder reports it: the one the requested name stands for,
    /// else the conversation's.
    async fn resolve(&mut self, task: &Task, records: &Records) -> Result<Target, CreateError> {
        let mut intent = None;
        if let Some(name) = &task.canonical {
            if let Some(record) = &records.name {
                match self.recorded(record).await? {
                    Recorded::Found(ws) => return Ok(found(*ws, Via::Name)),
                    Recorded::Intent(intended) => intent = Some(intended),
                    Recorded::Gone => {}
                }
            }
            if let Some(ws) = self.by_name(name).await? {
                return Ok(found(ws, Via::Name));
            }
        }
        if let Some(record) = &records.key {
            return Ok(match self.recorded(record).await? {
                Recorded::Found(ws) => found(*ws, Via::Key),
                Recorded::Intent(name) => Target::Intent { name },
                Recorded::Gone => Target::Gone {
                    name: record.workspace_name.clone(),
                },
            });
        }
        Ok(match intent {
            Some(name) => Target::Intent { name },
            None => Target::Nothing,
        })
    }

    /// What became of a recorded workspace (or intent).
    async fn recorded(&mut self, record: &Binding) -> Result<Recorded, CreateError> {
        let Some(id) = record.workspace_id else {
            // Only the intent: the create may or may not have reached Coder.
            return Ok(match self.by_name(&record.workspace_name).await? {
                Some(ws) => Recorded::Found(Box::new(ws)),
                None => Recorded::Intent(record.workspace_name.clone()),
            });
        };
        let client = self.client;
        match self.guard(client.workspace(id)).await? {
            Ok(ws) => Ok(Recorded::Found(Box::new(ws))),
            Err(err) if err.is_not_found() => Ok(Recorded::Gone),
            Err(err) => Err(CreateError::coder(
                format!("could not load workspace {:?}", record.workspace_name),
                err,
            )),
        }
    }

    /// The caller's workspace called `name`, if any.
    async fn by_name(&mut self, name: &str) -> Result<Option<Workspace>, CreateError> {
        if name_problem(name).is_some() {
            return Ok(None);
        }
        let client = self.client;
        match self.guard(client.workspace_by_name(name)).await? {
            Ok(ws) => Ok(Some(ws)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(CreateError::coder(
                format!("could not look up workspace {name:?}"),
                err,
            )),
        }
    }

    /// Records that the task's keys mean `ws` (unless they already do).
    async fn bind(
        &mut self,
        task: &Task,
        records: &Records,
        ws: &Workspace,
    ) -> Result<(), CreateError> {
        let current = |record: &Option<Binding>| {
            record
                .as_ref()
                .is_some_and(|b| b.workspace_id == Some(ws.id) && b.workspace_name == ws.name)
        };
        let up_to_date = (task.key.is_none() || current(&records.key))
            && (task.canonical.is_none() || current(&records.name));
        if up_to_date {
            return Ok(());
        }
        let replaced = [&records.key, &records.name]
            .into_iter()
            .flatten()
            .find(|b| b.workspace_id == Some(ws.id))
            .and_then(|b| b.replaced.clone());
        let binding = Binding {
            template_id: ws.template_id,
            workspace_name: ws.name.clone(),
            workspace_id: Some(ws.id),
            replaced,
        };
        let store = self.store();
        // Nothing was created, but a conversation that adopts a workspace it cannot
        // record would not find it again: better to say so now.
        self.guard(store.put(task.user, &task.keys, &binding))
            .await?
            .map_err(|e| CreateError::store(e, true))
    }

    /// Puts the records back as they were before an intent whose create Coder refused,
    /// so the next call does not insist on the refused name.
    async fn restore(&mut self, task: &Task, records: &Records) {
        let store = self.store();
        let mut writes = Vec::new();
        if let Some(key) = task.key_record() {
            writes.push((key, records.key.clone()));
        }
        if let Some(name) = &task.canonical {
            writes.push((name_key(name), records.name.clone()));
        }
        for (key, record) in writes {
            let restored = match &record {
                Some(binding) => {
                    store
                        .put(task.user, std::slice::from_ref(&key), binding)
                        .await
                }
                None => store.remove(task.user, &key).await,
            };
            if let Err(err) = restored {
                tracing::warn!(error = %err, "could not put back the records of a refused create");
            }
        }
    }

    /// Follows an existing workspace of the task until it is ready (starting it if it
    /// was stopped).
    async fn resume(
        &mut self,
        task: &Task,
        request: &CreateRequest,
        ws: Workspace,
        via: Via,
        was_building: bool,
        other_template: bool,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let mut notes = Vec::new();
        let whose = task.key.as_ref().map_or("this task", TaskKey::describe);
        if other_template {
            notes.push(format!(
                "{whose} already has workspace {:?} (from template {:?}), so it was returned instead of creating one from template {}",
                ws.name, ws.template_name, request.template_id
            ));
        } else if via == Via::Key
            && let Some(requested) = &task.canonical
        {
            // Nothing is called `requested`: the conversation's workspace stands.
            notes.push(format!(
                "{whose} already has workspace {:?}, so it was returned instead of creating {requested:?}",
                ws.name
            ));
        }
        if !other_template && !request.parameters.is_empty() {
            let client = self.client;
            match self
                .guard(client.build_parameters(ws.latest_build.id))
                .await?
            {
                Ok(actual) => {
                    let differences = parameter_differences(&request.parameters, &actual);
                    if !differences.is_empty() {
                        notes.push(format!(
                            "it already existed with other parameter values than requested ({}); it was returned as it is, its parameters unchanged",
                            differences.join(", ")
                        ));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the workspace's parameters")
                }
            }
        }
        let origin = Origin::Existing { was_building };
        let (ws, readiness, restarted) = self.wait_ready(ws).await?;
        if restarted {
            notes.insert(
                0,
                "the workspace had been stopped; it was started again instead of creating another"
                    .to_owned(),
            );
        }
        let result = self.result(&ws, false, readiness, origin, notes);
        self.with_startup_log(result, &ws).await
    }

    /// Creates the task's workspace: the intent, the create, the id; then waits for it.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &mut self,
        task: &Task,
        request: &CreateRequest,
        checked: &Checked,
        records: &Records,
        name: NewName,
        replaces: Option<Replacing>,
        guard: TaskLock,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let client = self.client;
        let template_id = request.template_id;
        let template = &checked.template;
        let name = match name {
            NewName::Exactly(name) => name,
            NewName::Generated => generate_name(&template.name),
        };
        let mut notes = creation_notes(task, &name, replaces.as_ref());

        // The intent first: if this process dies from here on, the next call looks the
        // name up in Coder instead of creating a second workspace.
        let intent = Binding {
            template_id,
            workspace_name: name.clone(),
            workspace_id: None,
            replaced: replaces.as_ref().and_then(|r| {
                r.id.map(|id| Replaced {
                    id,
                    name: r.name.clone(),
                })
            }),
        };
        let store = self.store();
        self.guard(store.put(task.user, &task.keys, &intent))
            .await?
            .map_err(|e| CreateError::store(e, true))?;

        let shown = if template.display_name.is_empty() {
            &template.name
        } else {
            &template.display_name
        };
        self.progress
            .update(
                Phase::Preparing,
                format!("creating workspace {name} from template {shown}"),
            )
            .await;
        let body = CreateWorkspaceRequest {
            name: name.clone(),
            template_id: Some(template_id),
            template_version_id: None,
            rich_parameter_values: checked.values.clone(),
        };
        let created_after = Utc::now() - chrono::Duration::seconds(60);
        // Not raced against cancellation: a create that Coder carried out must be
        // recorded, or the next call would have to find it by its name.
        let (ws, created) = match self.shielded(client.create_workspace(&body)).await {
            Ok(ws) => (ws, true),
            Err(err) if err.is_transient() => {
                // The create may have gone through before the failure: look before leaping.
                match self.shielded(client.workspace_by_name(&name)).await {
                    Ok(ws) if ws.template_id == template_id && ws.created_at >= created_after => {
                        tracing::info!(workspace = %name, error = %err, "the create failed in transit but the workspace exists; adopting it");
                        (ws, true)
                    }
                    // The intent stays: the next call looks the name up again.
                    _ => return Err(CreateError::coder("creating the workspace failed", err)),
                }
            }
            Err(err) if err.status() == Some(409) => {
                // The name is taken: another process or replica created this task's
                // workspace a moment ago, or it was there all along. It is *that*
                // workspace (Coder's text is not for the model).
                match self.shielded(client.workspace_by_name(&name)).await {
                    Ok(ws) if ws.template_id == template_id => {
                        tracing::info!(workspace = %name, "the name was taken meanwhile; adopting that workspace");
                        notes.clear();
                        (ws, false)
                    }
                    Ok(ws) => {
                        self.restore(task, records).await;
                        let target = found(ws, Via::Name);
                        let ask = Ask {
                            template_id,
                            name: Some(&name),
                        };
                        return Err(match decide(&target, ask) {
                            Action::Refuse(text) => CreateError::InvalidArguments(text),
                            _ => name_taken(&name, &err),
                        });
                    }
                    Err(_) => {
                        self.restore(task, records).await;
                        return Err(name_taken(&name, &err));
                    }
                }
            }
            Err(err) => {
                // Coder refused for good: nothing was created.
                self.restore(task, records).await;
                return Err(CreateError::coder(
                    "Coder refused to create the workspace",
                    err,
                ));
            }
        };
        tracing::info!(workspace = %ws.name, id = %ws.id, created, "workspace recorded");
        let binding = Binding {
            workspace_id: Some(ws.id),
            workspace_name: ws.name.clone(),
            ..intent
        };
        if let Err(err) = self
            .shielded(store.put(task.user, &task.keys, &binding))
            .await
        {
            // The intent is recorded: the next call finds the workspace by its name.
            tracing::warn!(error = %err, workspace = %ws.name, "could not record the workspace id; the recorded intent still leads to it");
        }
        drop(guard);
        if self.cancel.is_cancelled() {
            return Err(CreateError::Cancelled);
        }
        let origin = if created {
            Origin::Created
        } else {
            Origin::Existing {
                was_building: !ws.latest_build.job.status.is_terminal(),
            }
        };
        let (ws, readiness, _) = self.wait_ready(ws).await?;
        let result = self.result(&ws, created, readiness, origin, notes);
        self.with_startup_log(result, &ws).await
    }

    /// The `building` answer of a call whose time ran out while another call of its task
    /// held the lock: what the store says that call is making.
    async fn not_in_time(
        &mut self,
        task: &Task,
        checked: &Checked,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let records = self.records(task, true).await?;
        let record = records.name.or(records.key);
        if let Some(binding) = &record
            && let Some(id) = binding.workspace_id
        {
            let client = self.client;
            let ws = self
                .guard(client.workspace(id))
                .await?
                .map_err(|e| CreateError::coder("could not load the task's workspace", e))?;
            let phase = super::wait::phase_of(&ws);
            return Ok(self.result(
                &ws,
                false,
                super::wait::Readiness::StillWaiting(phase),
                Origin::Existing { was_building: true },
                Vec::new(),
            ));
        }
        let pending = record
            .map(|b| b.workspace_name)
            .or_else(|| task.canonical.clone());
        self.not_created_yet(&checked.template, pending).await
    }
}

/// What became of a recorded workspace.
enum Recorded {
    Found(Box<Workspace>),
    /// Only the intent, and Coder has no workspace of its name.
    Intent(String),
    /// Deleted.
    Gone,
}

fn found(ws: Workspace, via: Via) -> Target {
    Target::Found {
        workspace: Box::new(ws),
        via,
    }
}

/// What the answer says about the name a new workspace got: a requested name that had to
/// be repaired, and the unusable workspace it replaces.
fn creation_notes(task: &Task, name: &str, replaces: Option<&Replacing>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(requested) = task.requested.as_deref()
        && let Some(problem) = name_problem(requested)
        && task.canonical.as_deref() == Some(name)
    {
        notes.push(format!(
            "{requested:?} is not a valid Coder workspace name ({problem}); it was created as {name:?} (passing {requested:?} again finds it)"
        ));
    }
    match replaces {
        Some(old) if old.holds_name && old.name != name => {
            let handle = task.canonical.as_deref().unwrap_or(name);
            notes.push(format!(
                "the existing workspace {:?} could not be used ({}) and still holds its name, so a new one was created as {name:?}; calling with name {handle:?} finds the new one; delete {:?} in Coder to free the name",
                old.name, old.why, old.name
            ));
        }
        Some(old) if old.name == name => notes.push(format!(
            "the earlier workspace {name:?} could not be used ({}), so it was created again under its name",
            old.why
        )),
        Some(old) => notes.push(format!(
            "the existing workspace {:?} could not be used ({}), so a new one was created as {name:?}",
            old.name, old.why
        )),
        None => {
            if let Some(requested) = task.canonical.as_deref()
                && requested != name
            {
                notes.push(format!(
                    "an earlier call of this task was already creating {name:?}, so that is the workspace's name"
                ));
            }
        }
    }
    notes
}

/// The error for a name Coder says is taken when the workspace cannot be loaded.
fn name_taken(name: &str, err: &CoderError) -> CreateError {
    tracing::info!(error = %err, workspace = %name, "create refused: the name is taken");
    CreateError::InvalidArguments(format!(
        "the workspace name {name:?} is already taken in Coder by a workspace this user cannot use; pass another name"
    ))
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
