//! `create_workspace`: one workspace per task, whatever the client does.
//!
//! A call checks its arguments, finds its task's keys ([`super::keys`]), locks them (in
//! this process, then across processes and replicas through the store:
//! [`super::lock`]), reads what the store has for them and asks Coder about that
//! workspace ([`super::resolve`]), and lets the pure [`decide`] say what to do: return,
//! wait for, start, create or replace a workspace, or refuse. Creating writes the intent
//! (the name) to the store before the create POST and the workspace id right after it.
//! The lock is held only for that critical section; waiting for the build, the agent and
//! the startup scripts ([`super::wait`]) happens outside it, so concurrent calls for one
//! task each follow the same workspace.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::answer::Origin;
use super::decide::{Action, Ask, Found, NewName, Replacing, ResumeNote, Target, decide};
use super::keys::{Caller, KeyLocks, TaskKey, name_key};
use super::lock::{Locked, TaskLock};
use super::names::{canonical_name, generate_name, name_problem};
use super::outcome::{Answer, CreateError};
use super::params::{parameter_differences, validate_parameters};
use super::presets::{PresetChoice, choose_preset, preset_difference, values_with_preset};
use super::progress::{Phase, ProgressSink, ProgressTracker};
use super::resolve::Records;
use super::wait::WaitClocks;
use crate::coder::types::{
    CreateWorkspaceRequest, Preset, Template, Workspace, WorkspaceBuildParameter,
};
use crate::coder::{CoderClient, WatchConfig, WatchHub};
use crate::store::{Binding, Replaced, Store};

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
    /// leave its critical section (which takes a few Coder requests) before giving up.
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
            lock_wait: Duration::from_secs(60),
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
    /// A preset of the template, by name or id.
    pub preset: Option<String>,
}

/// Creates workspaces, at most one per task.
pub struct Engine {
    pub(super) config: EngineConfig,
    pub(super) store: Store,
    pub(super) locks: KeyLocks,
    pub(super) clocks: WaitClocks,
    /// The watch and build-log streams, one per workspace however many wait on it.
    pub(super) watches: WatchHub,
}

impl Engine {
    pub fn new(config: EngineConfig, store: Store) -> Self {
        Self {
            config,
            store,
            locks: KeyLocks::default(),
            clocks: WaitClocks::default(),
            watches: WatchHub::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks `request` against its template (it exists, the parameters are valid), as a
    /// call does before anything else: a task is only made for a request that passes.
    pub async fn check_request(
        &self,
        client: &CoderClient,
        request: &CreateRequest,
        cancel: &CancellationToken,
    ) -> Result<(), CreateError> {
        let sink = super::progress::Silent;
        let mut call = Call {
            engine: self,
            client,
            cancel,
            deadline: None,
            started: Instant::now(),
            progress: ProgressTracker::new(&sink, self.config.heartbeat),
        };
        call.check(request).await.map(drop)
    }

    /// The store keys a call of `caller` with `request` is known by (its conversation's,
    /// its name's): a task is found by them too.
    pub fn task_keys(caller: &Caller, request: &CreateRequest) -> Vec<String> {
        Task::new(caller, request).keys
    }

    /// Forgets a conversation that ended (an MCP session, a stdio process): its key
    /// never comes back. Chat ids and names are kept for the store's retention.
    pub async fn forget(&self, user: Uuid, key: &TaskKey) {
        if let Err(err) = self.store.remove(user, &key.store_key()).await {
            tracing::warn!(error = %err, "could not forget an ended conversation");
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
    ) -> Result<Answer, CreateError> {
        self.create_workspace_within(
            client,
            caller,
            request,
            sink,
            cancel,
            self.config.max_call_wait,
        )
        .await
    }

    /// [`Engine::create_workspace`] waiting at most `max_wait` (`None`: until the
    /// workspace is ready or has failed, as a task does) instead of `--max-call-wait`.
    pub async fn create_workspace_within(
        &self,
        client: &CoderClient,
        caller: &Caller,
        request: CreateRequest,
        sink: &dyn ProgressSink,
        cancel: &CancellationToken,
        max_wait: Option<Duration>,
    ) -> Result<Answer, CreateError> {
        let deadline = max_wait.map(|d| Instant::now() + d);
        // Coder requests retried within the call's own time, not past it.
        let client = &client.within(deadline);
        let mut call = Call {
            engine: self,
            client,
            cancel,
            deadline,
            started: Instant::now(),
            progress: ProgressTracker::new(sink, self.config.heartbeat),
        };
        let task = Task::new(caller, &request);
        // Bad arguments are an error whatever the task's state (a call that would return
        // an existing workspace included), before anything else is looked at.
        let checked = call.check(&request).await?;
        let mut lock = match call.lock(&task, &checked).await? {
            Locked::Yes(lock) => lock,
            Locked::NotInTime(result) => return Ok(*result),
        };
        let records = call.records(&task, &mut lock).await?;
        let target = call.resolve(&task, &records).await?;
        let ask = Ask {
            template_id: request.template_id,
            template_name: &checked.template.name,
            name: task.canonical.as_deref(),
            now: Utc::now(),
            agent_timeout: self.config.agent_timeout,
        };
        match decide(&target, ask) {
            Action::Refuse(text) => {
                lock.release().await;
                Err(CreateError::InvalidArguments(text))
            }
            Action::Resume { state, note } => {
                let Target::Found { workspace, via } = target else {
                    unreachable!("decide resumes only a found workspace");
                };
                call.progress.named(&workspace.name).await;
                call.bind(&task, &records, &workspace, via, &mut lock)
                    .await?;
                lock.release().await;
                call.resume(&task, &checked, *workspace, state, note).await
            }
            Action::Create { name, replaces } => {
                call.create(&task, &checked, &records, name, replaces, lock)
                    .await
            }
        }
    }
}

/// The keys of one call's task.
pub(super) struct Task {
    pub user: Uuid,
    pub key: Option<TaskKey>,
    /// The store keys: the conversation's, then the name's.
    pub keys: Vec<String>,
    /// The name as the model sent it (trimmed), and the workspace name it stands for.
    pub requested: Option<String>,
    pub canonical: Option<String>,
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

    /// The conversation's store key.
    pub fn key_record(&self) -> Option<String> {
        self.key.as_ref().map(TaskKey::store_key)
    }

    /// How answers refer to the conversation.
    fn whose(&self) -> &'static str {
        self.key.as_ref().map_or("this task", TaskKey::describe)
    }
}

/// A request checked against its template.
pub(super) struct Checked {
    pub template: Template,
    /// The parameter values, as Coder's `rich_parameter_values` (a preset's included).
    pub values: Vec<WorkspaceBuildParameter>,
    /// The preset the workspace is built with (or why not).
    pub preset: PresetChoice,
    /// The active version's presets.
    pub presets: Vec<Preset>,
}

/// How a wait ended.
pub(super) enum Until<T> {
    Done(T),
    Cancelled,
    /// The call's own time limit (`--max-call-wait`) came first.
    OutOfTime,
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

impl Call<'_> {
    /// Waits for `fut` with progress flowing meanwhile (a heartbeat while nothing else
    /// is said: a slow Coder answer, with its retries, must not look like a dead call),
    /// giving up when the call is cancelled (if `cancellable`) or at `deadline`.
    ///
    /// `fut` is boxed (here, in `guard` and in `shielded`, none of them an `async fn`,
    /// which would keep its argument in its own state): otherwise every step's future,
    /// sqlx's and reqwest's included, would be inlined into the creation's state, whose
    /// size is that of its largest step. Boxed, a waiting creation holds only the step it
    /// is in (about 90 KiB less per waiting task or call, see BENCHMARKS.md).
    pub(super) fn until<T>(
        &mut self,
        fut: impl Future<Output = T>,
        cancellable: bool,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Until<T>> {
        let mut fut = Box::pin(fut);
        async move {
            loop {
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled(), if cancellable => return Until::Cancelled,
                    out = &mut fut => return Until::Done(out),
                    _ = sleep_until_opt(deadline) => return Until::OutOfTime,
                    _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                        self.progress.heartbeat().await;
                    }
                }
            }
        }
    }

    /// Runs `fut` unless the call is cancelled first, keeping progress flowing.
    pub(super) fn guard<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> impl Future<Output = Result<T, CreateError>> {
        let until = self.until(fut, true, None);
        async move {
            match until.await {
                Until::Done(out) => Ok(out),
                Until::Cancelled | Until::OutOfTime => Err(CreateError::Cancelled),
            }
        }
    }

    /// Runs `fut` to completion even if the call is cancelled meanwhile, keeping progress
    /// flowing: what happens between the intent and recording the workspace must finish.
    pub(super) fn shielded<T>(&mut self, fut: impl Future<Output = T>) -> impl Future<Output = T> {
        let until = self.until(fut, false, None);
        async move {
            match until.await {
                Until::Done(out) => out,
                // Neither cancellable nor limited, so only `Done` comes back; waiting
                // forever keeps the type honest without a panic.
                Until::Cancelled | Until::OutOfTime => std::future::pending().await,
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
        let version = template.active_version_id;
        let (parameters, presets) = self
            .guard(async { tokio::join!(client.rich_parameters(version), client.presets(version)) })
            .await?;
        let parameters = parameters
            .map_err(|e| CreateError::coder("could not read the template's parameters", e))?;
        let presets =
            presets.map_err(|e| CreateError::coder("could not read the template's presets", e))?;
        let preset = choose_preset(&presets, request.preset.as_deref(), &request.parameters)
            .map_err(CreateError::InvalidArguments)?;
        let given = values_with_preset(&preset, &request.parameters, &parameters);
        let values =
            validate_parameters(&given, &parameters).map_err(CreateError::InvalidArguments)?;
        Ok(Checked {
            template,
            values,
            preset,
            presets,
        })
    }

    /// Follows an existing workspace of the task until it is ready (starting it if it
    /// was stopped).
    async fn resume(
        &mut self,
        task: &Task,
        checked: &Checked,
        ws: Workspace,
        state: Found,
        note: Option<ResumeNote>,
    ) -> Result<Answer, CreateError> {
        let mut notes = Vec::new();
        match note {
            Some(ResumeNote::OtherTemplate) => notes.push(format!(
                "{} already has workspace {:?} (from template {:?}), so it was returned instead of creating one from template {:?}",
                task.whose(),
                ws.name,
                ws.template_name,
                checked.template.name
            )),
            Some(ResumeNote::NameIsFree) => notes.push(format!(
                "{} already has workspace {:?}, so it was returned instead of creating {:?}; the name {:?} stays free",
                task.whose(),
                ws.name,
                task.canonical.as_deref().unwrap_or_default(),
                task.canonical.as_deref().unwrap_or_default(),
            )),
            None => {}
        }
        // Made with another preset: said first, then the values that differ.
        let preset_difference = if note != Some(ResumeNote::OtherTemplate) {
            self.preset_note(checked, &ws).await?
        } else {
            None
        };
        let said = notes.len();
        if let Some(difference) = &preset_difference {
            notes.push(difference.clone());
        }
        if note != Some(ResumeNote::OtherTemplate) && !checked.values.is_empty() {
            let client = self.client;
            match self
                .guard(client.build_parameters(ws.latest_build.id))
                .await?
            {
                Ok(actual) => {
                    let differences = parameter_differences(&checked.values, &actual);
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
        if preset_difference.is_some() && notes.len() == said + 1 {
            // No parameter differs: the preset note alone says what happened.
            notes[said].push_str("; it was returned as it is");
        }
        let (ws, readiness, restarted) = self.wait_ready(task.user, ws).await?;
        if restarted && state != Found::Stopped {
            notes.insert(
                0,
                "it was stopped meanwhile; it was started again instead of creating another"
                    .to_owned(),
            );
        }
        let result = self.result(&ws, false, readiness, Origin::Existing(state), notes);
        self.with_startup_log(result, &ws).await
    }

    /// What the answer says when the task's workspace was made with another preset than
    /// the call's. Its preset may be one of an earlier template version's: then that
    /// version's presets are read, so that the same preset (by name) says nothing.
    async fn preset_note(
        &mut self,
        checked: &Checked,
        ws: &Workspace,
    ) -> Result<Option<String>, CreateError> {
        let chosen = checked.preset.preset();
        let build = &ws.latest_build;
        let mut earlier = Vec::new();
        if let (Some(chosen), Some(built_with), Some(version)) = (
            chosen,
            build.template_version_preset_id,
            build.template_version_id,
        ) && built_with != chosen.id
            && version != checked.template.active_version_id
            && !checked.presets.iter().any(|p| p.id == built_with)
        {
            let client = self.client;
            match self.guard(client.presets(version)).await? {
                Ok(presets) => earlier = presets,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the presets of the workspace's template version")
                }
            }
        }
        Ok(preset_difference(
            chosen,
            build.template_version_preset_id,
            &checked.presets,
            &earlier,
        ))
    }

    /// Creates the task's workspace: the intent, the create, the id; then waits for it.
    async fn create(
        &mut self,
        task: &Task,
        checked: &Checked,
        records: &Records,
        name: NewName,
        replaces: Option<Replacing>,
        mut lock: TaskLock,
    ) -> Result<Answer, CreateError> {
        let client = self.client;
        let template = &checked.template;
        let name = match name {
            NewName::Exactly(name) => name,
            NewName::Generated => generate_name(&template.name),
        };
        let mut notes = creation_notes(task, &name, replaces.as_ref());

        // The intent first: if this process dies from here on, the next call looks the
        // name up in Coder instead of creating a second workspace.
        let intent = Binding {
            template_id: template.id,
            workspace_name: name.clone(),
            workspace_id: None,
            replaced: replaces.as_ref().and_then(|r| {
                r.id.map(|id| Replaced {
                    id,
                    name: r.name.clone(),
                })
            }),
        };
        let store = &self.engine.store;
        self.guard(store.put(lock.store(), task.user, &task.keys, &intent))
            .await?
            .map_err(CreateError::Store)?;
        self.progress.named(&name).await;

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
        // With a preset, the version it belongs to is the one built (the template's
        // active version could change in between).
        let preset = checked.preset.preset();
        let body = CreateWorkspaceRequest {
            name: name.clone(),
            template_id: preset.is_none().then_some(template.id),
            template_version_id: preset.map(|_| template.active_version_id),
            rich_parameter_values: checked.values.clone(),
            template_version_preset_id: preset.map(|p| p.id),
        };
        // Not raced against cancellation: a create that Coder carried out must be
        // recorded, or the next call would have to find it by its name.
        let (ws, created) = match self.shielded(client.create_workspace(&body)).await {
            Ok(ws) => (ws, true),
            Err(err) if err.is_name_conflict() => {
                // The name is taken: another process or replica created this task's
                // workspace a moment ago, or it was there all along. It is *that*
                // workspace (Coder's text is not for the model).
                match self.shielded(client.workspace_by_name(&name)).await {
                    Ok(ws) if ws.template_id == template.id => {
                        tracing::info!(workspace = %name, "the name was taken meanwhile; adopting that workspace");
                        notes.clear();
                        (ws, false)
                    }
                    found => {
                        self.restore(task, records, &mut lock).await;
                        lock.release().await;
                        return Err(match found {
                            Ok(ws) => {
                                let target = Target::Found {
                                    workspace: Box::new(ws),
                                    via: super::decide::Via::Name,
                                };
                                let ask = Ask {
                                    template_id: template.id,
                                    template_name: &template.name,
                                    name: Some(&name),
                                    now: Utc::now(),
                                    agent_timeout: self.engine.config.agent_timeout,
                                };
                                match decide(&target, ask) {
                                    Action::Refuse(text) => CreateError::InvalidArguments(text),
                                    _ => CreateError::NameTaken { name, lookup: None },
                                }
                            }
                            Err(lookup) => CreateError::NameTaken {
                                name,
                                lookup: Some(Box::new(lookup)),
                            },
                        });
                    }
                }
            }
            Err(err) if err.is_transient() => {
                // The create may have gone through before the failure: look before leaping.
                match self.shielded(client.workspace_by_name(&name)).await {
                    Ok(ws) if ws.template_id == template.id => {
                        tracing::info!(workspace = %name, error = %err, "the create failed in transit but the workspace exists; adopting it");
                        (ws, true)
                    }
                    // The intent stays: the next call looks the name up again.
                    _ => {
                        return Err(CreateError::coder_on(
                            "creating the workspace failed",
                            err,
                            &name,
                        ));
                    }
                }
            }
            Err(err) => {
                // Coder refused for good: nothing was created, so the refused name must
                // not be insisted on by the next call.
                self.restore(task, records, &mut lock).await;
                lock.release().await;
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
            .shielded(store.put(lock.store(), task.user, &task.keys, &binding))
            .await
        {
            // The intent is recorded: the next call finds the workspace by its name.
            tracing::warn!(error = %err, workspace = %ws.name, "could not record the workspace id; the recorded intent still leads to it");
        }
        lock.release().await;
        if self.cancel.is_cancelled() {
            return Err(CreateError::Cancelled);
        }
        let origin = if created {
            Origin::Created
        } else {
            Origin::Existing(super::decide::found_state(&ws))
        };
        // Coder answers a create that claimed a prebuilt workspace with that workspace,
        // whose latest build is the start build that follows the claim: not build 1.
        let prebuilt = created && ws.latest_build.build_number > 1;
        if created {
            if prebuilt {
                self.progress
                    .update(
                        Phase::Provisioning,
                        "claimed a prebuilt workspace; starting it",
                    )
                    .await;
                notes.push(checked.preset.claimed_note());
                if matches!(checked.preset, PresetChoice::DefaultDropped { .. }) {
                    notes.extend(checked.preset.note());
                }
            } else {
                notes.extend(checked.preset.note());
            }
        }
        let (ws, readiness, _) = self.wait_ready(task.user, ws).await?;
        let mut result = self.result(&ws, created, readiness, origin, notes);
        result.prebuilt = prebuilt;
        self.with_startup_log(result, &ws).await
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
        let requested = crate::quote::quoted(requested);
        notes.push(format!(
            "{requested} is not a valid Coder workspace name ({problem}); it was created as {name:?} (passing the same name again finds it)"
        ));
    }
    // A replaced workspace that still exists goes on costing: say so.
    let still_there = |old: &Replacing| {
        if old.holds_name {
            format!(
                "; {:?} still exists: delete it in Coder if it is no longer needed",
                old.name
            )
        } else {
            String::new()
        }
    };
    match replaces {
        Some(old) if old.holds_name && task.canonical.as_deref().is_some_and(|c| c != name) => {
            let handle = task.canonical.as_deref().unwrap_or(name);
            notes.push(format!(
                "the existing workspace {:?} could not be used ({}) and still holds the name, so a new one was created as {name:?}; calling with name {handle:?} finds the new one{}",
                old.name,
                old.why,
                still_there(old)
            ));
        }
        Some(old) if old.name == name => notes.push(format!(
            "the earlier workspace {name:?} could not be used ({}), so it was created again under its name",
            old.why
        )),
        Some(old) => notes.push(format!(
            "the existing workspace {:?} could not be used ({}), so a new one was created as {name:?}{}",
            old.name,
            old.why,
            still_there(old)
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

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
