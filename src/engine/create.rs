//! `create_workspace`: the idempotency decision, the creation, and the waits for
//! the build, the agent and its startup scripts.
//!
//! Decision table (all of it under the session's lock):
//!
//! | the session's workspace                            | action                          |
//! |----------------------------------------------------|---------------------------------|
//! | none, deleted or not found                         | create                          |
//! | latest build pending or running                    | wait for it → `already_exists`  |
//! | running, agent connecting/connected                | wait for readiness → `already_exists` |
//! | stopped (a succeeded `stop` build)                 | start it, wait → `already_exists` |
//! | latest build failed or canceled; agent gone        | create                          |
//!
//! A replacement cannot take the old workspace's name while that one still exists
//! (Coder names are unique per owner among undeleted workspaces), so when the caller
//! asked for that very name the new workspace gets one derived from it
//! (`dev-1` → `dev-1-3f2a`) and the answer's message says why. A deleted workspace
//! frees its name, which is then reused.
//!
//! A call whose `--max-call-wait` runs out while waiting for the session's lock
//! answers `building` (not an error), describing the session's workspace, or, when
//! the other call has not yet created it, the name it is being created under.
//! Sessionless calls lock per (user, requested name), so different names never wait
//! for each other.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::names::{generate_name, name_problem, resolve_name};
use super::outcome::{AgentStatus, CallStatus, CreateError, CreateWorkspaceResult, StartupScripts};
use super::params::validate_parameters;
use super::progress::{Phase, ProgressSink, ProgressTracker, truncate};
use super::session::{
    RememberedWorkspace, SessionKey, SessionSlot, SessionState, SessionStore, WaitKind,
};
use crate::coder::types::{
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, ProvisionerJobStatus, Workspace,
    WorkspaceAgent, WorkspaceAgentLifecycle, WorkspaceAgentStatus, WorkspaceTransition,
};
use crate::coder::{BuildLogFollower, CoderClient, WatchConfig, WorkspaceWatch};

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
    /// No session to remember a workspace in (stateless HTTP): an existing workspace
    /// with the given `name` plays the part of the session's workspace.
    pub by_name: bool,
}

/// Creates workspaces, at most one per session.
pub struct Engine {
    config: EngineConfig,
    sessions: Arc<dyn SessionStore>,
}

impl Engine {
    pub fn new(config: EngineConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self { config, sessions }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Ensures the session has a workspace from `request`, waiting for it to come up,
    /// reporting progress to `sink`, and stopping at once when `cancel` fires.
    pub async fn create_workspace(
        &self,
        client: &CoderClient,
        key: &SessionKey,
        request: CreateRequest,
        sink: &dyn ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let mut call = Call {
            config: &self.config,
            client,
            cancel,
            deadline: self.config.max_call_wait.map(|d| Instant::now() + d),
            started: Instant::now(),
            by_name: request.by_name,
            progress: ProgressTracker::new(sink, self.config.heartbeat),
        };
        let requested = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        // Without a session the name is what ties calls together, so calls for
        // different names must not wait for each other: one lock per (user, name).
        // Nameless sessionless calls always create, and share the user's lock.
        let slot_key = match requested {
            Some(name) if request.by_name => {
                SessionKey::new(key.user, format!("{}:name:{name}", key.session))
            }
            _ => key.clone(),
        };
        let slot = self.sessions.slot(&slot_key);
        // A nameless sessionless slot's workspace belongs to some other call.
        let slot_is_ours = !(request.by_name && requested.is_none());
        let mut state = match call.lock_session(&slot, &request, slot_is_ours).await? {
            Locked::Yes(state) => state,
            Locked::NotInTime(result) => return Ok(*result),
        };
        let remembered = if request.by_name {
            call.find_by_name(&state, &request).await?
        } else {
            state.workspace().cloned()
        };
        let mut replaced = None;
        if let Some(remembered) = &remembered {
            match call.resume(&mut state, remembered, &request).await? {
                Resumed::Answer(result) => return Ok(*result),
                Resumed::Replace(replace) => replaced = Some(replace),
            }
        }
        let created = call.create(&slot, &mut state, request, replaced).await;
        slot.set_pending(None);
        created
    }
}

/// What became of the workspace a call found (remembered by the session, or by name).
enum Resumed {
    /// It is returned (ready, still coming up, or started again).
    Answer(Box<CreateWorkspaceResult>),
    /// It cannot be used; a new workspace is created instead.
    Replace(Replaced),
}

/// The unusable workspace a new one replaces.
struct Replaced {
    name: String,
    why: String,
    /// It still exists in Coder, so it still holds its name (Coder names are unique
    /// per owner among workspaces that are not deleted).
    holds_name: bool,
}

enum Locked<'a> {
    Yes(tokio::sync::MutexGuard<'a, SessionState>),
    NotInTime(Box<CreateWorkspaceResult>),
}

/// How a wait ended well.
enum Readiness {
    Ready,
    NoAgent,
    AgentNotReady(String),
    ScriptsFailed(WorkspaceAgentLifecycle),
    ScriptsTimedOut,
    /// The call's own time limit came first; the workspace is still coming up.
    StillWaiting(Phase),
}

/// What the current snapshot means.
enum Step {
    Wait {
        phase: Phase,
        message: String,
        timeout: Option<(Instant, WaitKind)>,
    },
    StartAgain,
    Done(Readiness),
    Failed(CreateError),
}

/// Where the wait began, for the final message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Created,
    Existing { was_building: bool },
}

/// One `create_workspace` call.
struct Call<'a> {
    config: &'a EngineConfig,
    client: &'a CoderClient,
    cancel: &'a CancellationToken,
    deadline: Option<Instant>,
    started: Instant,
    /// Sessionless: the workspace was found by name, not remembered by a session.
    by_name: bool,
    progress: ProgressTracker<'a>,
}

impl<'a> Call<'a> {
    /// Runs `fut` unless the call is cancelled first, keeping progress flowing meanwhile
    /// (a slow Coder answer, with its retries, must not look like a dead call).
    async fn guard<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, CreateError> {
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

    /// Runs `fut` to completion even if the call is cancelled meanwhile, keeping progress flowing.
    async fn shielded<T>(&mut self, fut: impl Future<Output = T>) -> T {
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

    async fn lock_session(
        &mut self,
        slot: &'a SessionSlot,
        request: &CreateRequest,
        slot_is_ours: bool,
    ) -> Result<Locked<'a>, CreateError> {
        let client = self.client;
        let lock = slot.lock();
        tokio::pin!(lock);
        // Uncontended: no progress noise.
        if let Some(state) = futures::FutureExt::now_or_never(&mut lock) {
            return Ok(Locked::Yes(state));
        }
        self.progress
            .update(
                Phase::WaitingForSession,
                "waiting for this session's other create_workspace call to finish",
            )
            .await;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(CreateError::Cancelled),
                state = &mut lock => return Ok(Locked::Yes(state)),
                _ = sleep_until_opt(self.deadline) => {
                    let Some(remembered) = slot.peek().filter(|_| slot_is_ours) else {
                        // The other call has not created its workspace yet (Coder may
                        // be slow to answer). Like any call that runs out of time, this
                        // is not an error: the model is told to call again.
                        let pending = slot.pending().filter(|_| slot_is_ours);
                        return Ok(Locked::NotInTime(Box::new(
                            self.not_created_yet(request, pending).await?,
                        )));
                    };
                    let ws = self
                        .guard(client.workspace(remembered.id))
                        .await?
                        .map_err(|e| CreateError::coder("could not load this session's workspace", e))?;
                    let phase = phase_of(&ws);
                    return Ok(Locked::NotInTime(Box::new(self.result(
                        &ws,
                        false,
                        Readiness::StillWaiting(phase),
                        Origin::Existing { was_building: true },
                        None,
                    ))));
                }
                _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                    self.progress.heartbeat().await;
                }
            }
        }
    }

    /// The `building` answer of a call whose time ran out while this session's other
    /// call was still creating the workspace: there is no workspace to describe yet,
    /// only the name it is being created under (when already chosen).
    async fn not_created_yet(
        &mut self,
        request: &CreateRequest,
        pending: Option<String>,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        let client = self.client;
        let me = self
            .guard(client.me())
            .await?
            .map_err(|e| CreateError::coder("could not load the Coder user", e))?;
        let template = self
            .guard(client.template(request.template_id))
            .await?
            .map_err(|e| CreateError::coder("could not read the template", e))?;
        let (name, url) = match &pending {
            Some(name) => (name.clone(), client.dashboard_url(&me.username, name)),
            None => (String::new(), format!("{}/workspaces", client.base_url())),
        };
        let which = match &pending {
            Some(name) => format!("workspace {name:?}"),
            None => "the workspace".to_owned(),
        };
        let how = match request.name.as_deref().map(str::trim) {
            Some(requested) if self.by_name && !requested.is_empty() => {
                format!("with the same template_id and name {requested:?}")
            }
            _ => "with the same arguments".to_owned(),
        };
        Ok(CreateWorkspaceResult {
            created: false,
            workspace_name: name,
            status: Some(CallStatus::Building),
            message: Some(format!(
                "another create_workspace call is still creating {which} (Coder has not confirmed it yet) after {} s; this is normal; call create_workspace again {how} to keep waiting: it waits for this same workspace and never creates a second one.",
                self.started.elapsed().as_secs()
            )),
            agent_status: None,
            agent_error: None,
            startup_scripts: None,
            lifecycle_state: None,
            startup_log_tail: Vec::new(),
            workspace_id: None,
            owner: me.username,
            template_id: template.id,
            template_name: template.name,
            build_status: "pending".into(),
            build_number: 0,
            agent_name: None,
            url,
        })
    }

    /// By-name mode: the workspace an earlier call made for this requested name (which
    /// may differ from it, e.g. an invalid name made valid), else the existing workspace
    /// of that name, if any.
    async fn find_by_name(
        &mut self,
        state: &SessionState,
        request: &CreateRequest,
    ) -> Result<Option<RememberedWorkspace>, CreateError> {
        let client = self.client;
        let Some(requested) = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        else {
            return Ok(None);
        };
        if let Some(remembered) = state.named(requested) {
            return Ok(Some(remembered.clone()));
        }
        let Some(name) = Some(requested).filter(|n| name_problem(n).is_none()) else {
            return Ok(None);
        };
        match self.guard(client.workspace_by_name(name)).await? {
            Ok(ws) => Ok(Some(RememberedWorkspace {
                id: ws.id,
                name: ws.name,
            })),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(CreateError::coder(
                format!("could not look up workspace {name:?}"),
                err,
            )),
        }
    }

    /// The session already has a workspace: return it, wait for it or start it.
    /// `None` when it is unusable and a new one should be created.
    async fn resume(
        &mut self,
        state: &mut SessionState,
        remembered: &RememberedWorkspace,
        request: &CreateRequest,
    ) -> Result<Resumed, CreateError> {
        let client = self.client;
        let ws = match self.guard(client.workspace(remembered.id)).await? {
            Ok(ws) => ws,
            Err(err) if err.is_not_found() => {
                tracing::info!(workspace = %remembered.name, "the session's workspace is gone; creating a new one");
                return Ok(Resumed::Replace(Replaced {
                    name: remembered.name.clone(),
                    why: "it was deleted".into(),
                    holds_name: false,
                }));
            }
            Err(err) => {
                return Err(CreateError::coder(
                    format!(
                        "could not load this session's workspace {:?}",
                        remembered.name
                    ),
                    err,
                ));
            }
        };
        if let Some(reason) = unusable(&ws) {
            tracing::info!(workspace = %ws.name, %reason, "the session's workspace is unusable; creating a new one");
            // A finished delete frees the name; anything else keeps it taken.
            let deleted = ws.latest_build.transition == WorkspaceTransition::Delete
                && ws.latest_build.job.status == ProvisionerJobStatus::Succeeded;
            return Ok(Resumed::Replace(Replaced {
                name: ws.name,
                why: reason,
                holds_name: !deleted,
            }));
        }
        let was_building = !ws.latest_build.job.status.is_terminal()
            || ws.latest_build.transition == WorkspaceTransition::Stop;
        let origin = Origin::Existing { was_building };
        let (ws, readiness, restarted) = self.wait_ready(state, ws).await?;
        let mut notes = Vec::new();
        if restarted {
            notes.push(
                "the workspace had been stopped; it was started again instead of creating another"
                    .to_owned(),
            );
        }
        if ws.template_id != request.template_id {
            notes.push(format!(
                "this session already has a workspace (from template {:?}), so it was returned instead of creating one from template {}",
                ws.template_name, request.template_id
            ));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        let result = self.result(&ws, false, readiness, origin, note);
        let result = self.with_startup_log(result, &ws).await?;
        Ok(Resumed::Answer(Box::new(result)))
    }

    async fn create(
        &mut self,
        slot: &SessionSlot,
        state: &mut SessionState,
        request: CreateRequest,
        replaced: Option<Replaced>,
    ) -> Result<CreateWorkspaceResult, CreateError> {
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
        let rich_parameter_values = validate_parameters(&request.parameters, &parameters)
            .map_err(CreateError::InvalidArguments)?;

        let requested = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let resolved = resolve_name(requested, &template.name);
        // The workspace being replaced may still hold the requested name: Coder would
        // answer 409, so the new one gets a name derived from it instead. (Reusing the
        // name would mean deleting the old workspace, which destroys what is left in
        // it; the model or the user can still do that knowingly.)
        let name_taken = match &replaced {
            // Without a session, an unusable workspace found for this name (it may be
            // one made earlier under a derived name) leaves the name to its owner.
            Some(_) if request.by_name => true,
            Some(old) => old.holds_name && old.name == resolved,
            None => false,
        };
        let name = match requested {
            Some(taken) if name_taken => generate_name(taken),
            _ => resolved,
        };
        let renamed = requested.filter(|r| *r != name).map(|r| match name_problem(r) {
            Some(problem) => format!(
                "{r:?} is not a valid Coder workspace name ({problem}); it was created as {name:?}"
            ),
            None => match &replaced {
                Some(old) if old.name == r => format!(
                    "the existing workspace {r:?} could not be used ({}) and still holds its name, so a new one was created as {name:?}; delete {r:?} in Coder to free the name",
                    old.why
                ),
                _ => format!(
                    "the existing workspace {r:?} could not be used, so a new one was created as {name:?}"
                ),
            },
        });
        let shown = if template.display_name.is_empty() {
            &template.name
        } else {
            &template.display_name
        };
        slot.set_pending(Some(name.clone()));
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
            rich_parameter_values,
        };
        let created_after = Utc::now() - chrono::Duration::seconds(60);
        // Not raced against cancellation: a create that Coder carried out must be
        // remembered, or the next call would make a second workspace.
        let ws = match self.shielded(client.create_workspace(&body)).await {
            Ok(ws) => ws,
            Err(err) if err.is_transient() => {
                // The create may have gone through before the failure: look before leaping.
                match self.shielded(client.workspace_by_name(&name)).await {
                    Ok(ws) if ws.template_id == template_id && ws.created_at >= created_after => {
                        tracing::info!(workspace = %name, error = %err, "the create failed in transit but the workspace exists; adopting it");
                        ws
                    }
                    _ => return Err(CreateError::coder("creating the workspace failed", err)),
                }
            }
            Err(err) if err.status() == Some(409) && requested.is_some() => {
                // Coder's message already ends with a period.
                let err = err.to_string();
                return Err(CreateError::InvalidArguments(format!(
                    "{}. Pass another name, or omit name to get a generated one.",
                    err.trim_end().trim_end_matches('.')
                )));
            }
            Err(err) => {
                return Err(CreateError::coder(
                    "Coder refused to create the workspace",
                    err,
                ));
            }
        };
        tracing::info!(workspace = %ws.name, id = %ws.id, "workspace created");
        let remembered = RememberedWorkspace {
            id: ws.id,
            name: ws.name.clone(),
        };
        if request.by_name
            && let Some(requested) = requested
        {
            state.remember_named(requested, remembered.clone());
        }
        slot.remember(state, remembered);
        if self.cancel.is_cancelled() {
            return Err(CreateError::Cancelled);
        }
        let (ws, readiness, _) = self.wait_ready(state, ws).await?;
        let result = self.result(&ws, true, readiness, Origin::Created, renamed);
        self.with_startup_log(result, &ws).await
    }

    /// Follows the workspace until it is ready, fails, times out or the call's own
    /// limit comes. Returns the last snapshot and whether a stopped workspace was started.
    async fn wait_ready(
        &mut self,
        state: &mut SessionState,
        mut ws: Workspace,
    ) -> Result<(Workspace, Readiness, bool), CreateError> {
        let client = self.client;
        let mut watch =
            WorkspaceWatch::start(self.client.clone(), ws.id, self.config.watch.clone());
        let mut logs: Option<(Uuid, BuildLogFollower)> = None;
        let mut restarted = false;
        loop {
            let step = self.assess(state, &ws, &mut logs);
            let (phase, timeout) = match step {
                Step::Done(readiness) => {
                    if matches!(readiness, Readiness::Ready) {
                        self.progress
                            .update(Phase::Ready, format!("workspace {} is ready", ws.name))
                            .await;
                    }
                    return Ok((ws, readiness, restarted));
                }
                Step::Failed(err) => return Err(err),
                Step::StartAgain => {
                    self.progress
                        .update(
                            Phase::Restarting,
                            format!("starting stopped workspace {}", ws.name),
                        )
                        .await;
                    let start = CreateWorkspaceBuildRequest {
                        transition: WorkspaceTransition::Start,
                        template_version_id: None,
                        rich_parameter_values: Vec::new(),
                    };
                    let stopped_build = ws.latest_build.build_number;
                    match self.shielded(client.create_build(ws.id, &start)).await {
                        Ok(build) => ws.latest_build = build,
                        // 409: a build is already active. If someone else started the
                        // workspace meanwhile, follow that build; otherwise give up
                        // rather than ask again and again.
                        Err(err) if err.status() == Some(409) => {
                            let current =
                                self.guard(client.workspace(ws.id)).await?.map_err(|e| {
                                    CreateError::coder("could not reload the workspace", e)
                                })?;
                            if current.latest_build.build_number <= stopped_build {
                                return Err(CreateError::coder(
                                    "Coder refused to start the stopped workspace",
                                    err,
                                ));
                            }
                            ws = current;
                        }
                        Err(err) => {
                            return Err(CreateError::coder(
                                "could not start the stopped workspace",
                                err,
                            ));
                        }
                    }
                    restarted = true;
                    continue;
                }
                Step::Wait {
                    phase,
                    message,
                    timeout,
                } => {
                    self.progress.update(phase, message).await;
                    (phase, timeout)
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(CreateError::Cancelled),
                next = watch.next() => match next {
                    // A snapshot older than one we already have (a stream that replays
                    // from before our own start build): never go backwards.
                    Ok(next) if next.latest_build.build_number < ws.latest_build.build_number => {}
                    Ok(next) => ws = next,
                    Err(err) if err.is_not_found() => {
                        return Err(CreateError::Deleted { workspace_name: ws.name.clone() });
                    }
                    Err(err) => return Err(CreateError::coder("lost track of the workspace", err)),
                },
                _ = sleep_until_opt(timeout.map(|(at, _)| at)) => {
                    let kind = timeout.map(|(_, kind)| kind).unwrap_or(WaitKind::Build);
                    return self.timed_out(&ws, kind).map(|r| (ws, r, restarted));
                }
                _ = sleep_until_opt(self.deadline) => {
                    return Ok((ws, Readiness::StillWaiting(phase), restarted));
                }
                // A new build-log stage: re-assess to report it.
                _ = stage_changed(&mut logs) => {}
                _ = tokio::time::sleep_until(self.progress.heartbeat_due()) => {
                    self.progress.heartbeat().await;
                }
            }
        }
    }

    /// What `ws` means for the wait.
    fn assess(
        &self,
        state: &mut SessionState,
        ws: &Workspace,
        logs: &mut Option<(Uuid, BuildLogFollower)>,
    ) -> Step {
        let build = &ws.latest_build;
        let job = &build.job;
        let build_deadline = |state: &mut SessionState| {
            Some((
                state.wait_started(build.id, WaitKind::Build) + self.config.build_timeout,
                WaitKind::Build,
            ))
        };
        match build.transition {
            WorkspaceTransition::Delete => {
                return Step::Failed(CreateError::Deleted {
                    workspace_name: ws.name.clone(),
                });
            }
            WorkspaceTransition::Stop => {
                return match job.status {
                    ProvisionerJobStatus::Succeeded => Step::StartAgain,
                    ProvisionerJobStatus::Failed | ProvisionerJobStatus::Canceled => {
                        Step::Failed(CreateError::BuildFailed {
                            workspace_name: ws.name.clone(),
                            status: build.status.to_string(),
                            error: format!(
                                "stopping the workspace did not finish ({})",
                                job_error(ws)
                            ),
                        })
                    }
                    _ => Step::Wait {
                        phase: Phase::Restarting,
                        message: format!(
                            "workspace {} is stopping; it will be started again",
                            ws.name
                        ),
                        timeout: build_deadline(state),
                    },
                };
            }
            _ => {}
        }
        match job.status {
            ProvisionerJobStatus::Pending => {
                let position = if job.queue_size > 0 {
                    format!(
                        " (position {} of {})",
                        job.queue_position.max(1),
                        job.queue_size
                    )
                } else {
                    String::new()
                };
                Step::Wait {
                    phase: Phase::Queued,
                    message: format!(
                        "build of {} queued, waiting for a provisioner{position}",
                        ws.name
                    ),
                    timeout: build_deadline(state),
                }
            }
            ProvisionerJobStatus::Running
            | ProvisionerJobStatus::Canceling
            | ProvisionerJobStatus::Unknown => {
                if !self.config.watch.polling_only
                    && logs.as_ref().is_none_or(|(id, _)| *id != build.id)
                {
                    *logs = Some((
                        build.id,
                        BuildLogFollower::start(self.client.clone(), build.id),
                    ));
                }
                let stage = logs
                    .as_ref()
                    .map(|(_, f)| f.latest().stage)
                    .unwrap_or_default();
                let message = match (job.status, stage.is_empty()) {
                    (ProvisionerJobStatus::Canceling, _) => {
                        format!("build of {} is being canceled", ws.name)
                    }
                    (_, true) => format!("building {}", ws.name),
                    (_, false) => format!("building {}: {stage}", ws.name),
                };
                Step::Wait {
                    phase: Phase::Provisioning,
                    message,
                    timeout: build_deadline(state),
                }
            }
            ProvisionerJobStatus::Failed => Step::Failed(CreateError::BuildFailed {
                workspace_name: ws.name.clone(),
                status: build.status.to_string(),
                error: job_error(ws),
            }),
            ProvisionerJobStatus::Canceled => Step::Failed(CreateError::BuildCanceled {
                workspace_name: ws.name.clone(),
            }),
            ProvisionerJobStatus::Succeeded => {
                *logs = None;
                self.assess_agent(state, ws)
            }
        }
    }

    fn assess_agent(&self, state: &mut SessionState, ws: &Workspace) -> Step {
        let build = &ws.latest_build;
        let Some(agent) = build.first_agent() else {
            return Step::Done(Readiness::NoAgent);
        };
        match agent.status {
            WorkspaceAgentStatus::Connected => match agent.lifecycle_state {
                WorkspaceAgentLifecycle::Ready => Step::Done(Readiness::Ready),
                lifecycle if lifecycle.is_starting() => Step::Wait {
                    phase: Phase::StartupScripts,
                    message: format!("agent {} connected; running startup scripts", agent.name),
                    timeout: Some((
                        state.wait_started(build.id, WaitKind::StartupScripts)
                            + self.config.startup_timeout,
                        WaitKind::StartupScripts,
                    )),
                },
                lifecycle => Step::Done(Readiness::ScriptsFailed(lifecycle)),
            },
            // Coder marks an agent `timeout` after its own connection timeout, but it may
            // still connect: only our --agent-timeout ends the wait.
            WorkspaceAgentStatus::Connecting | WorkspaceAgentStatus::Timeout => Step::Wait {
                phase: Phase::AgentConnecting,
                message: format!("build done; waiting for agent {} to connect", agent.name),
                timeout: Some((
                    state.wait_started(build.id, WaitKind::Agent) + self.config.agent_timeout,
                    WaitKind::Agent,
                )),
            },
            // Coder derives `disconnected` from timestamps: the agent connected, then
            // missed its heartbeats. Right after a build that is often transient (the
            // agent restarts, a network blip) and Coder's own CLI keeps waiting through
            // it, so only --agent-timeout ends this wait too. (`unusable` still treats
            // it as gone when a call *starts* on a workspace whose agent is disconnected.)
            WorkspaceAgentStatus::Disconnected => Step::Wait {
                phase: Phase::AgentConnecting,
                message: format!(
                    "agent {} lost its connection; waiting for it to reconnect",
                    agent.name
                ),
                timeout: Some((
                    state.wait_started(build.id, WaitKind::Agent) + self.config.agent_timeout,
                    WaitKind::Agent,
                )),
            },
            status => Step::Done(Readiness::AgentNotReady(agent_problem(agent, status))),
        }
    }

    fn timed_out(&self, ws: &Workspace, kind: WaitKind) -> Result<Readiness, CreateError> {
        match kind {
            WaitKind::Build => Err(CreateError::BuildTimeout {
                workspace_name: ws.name.clone(),
                status: ws.latest_build.status.to_string(),
                job_status: ws.latest_build.job.status.to_string(),
                waited: humantime::format_duration(self.config.build_timeout).to_string(),
                url: self.client.dashboard_url(&ws.owner_name, &ws.name),
            }),
            WaitKind::Agent => {
                let status = ws
                    .latest_build
                    .first_agent()
                    .map_or("missing".to_owned(), |a| a.status.to_string());
                Ok(Readiness::AgentNotReady(format!(
                    "timed out after {} waiting for the workspace agent to connect (agent status: {status})",
                    humantime::format_duration(self.config.agent_timeout)
                )))
            }
            WaitKind::StartupScripts => Ok(Readiness::ScriptsTimedOut),
        }
    }

    /// How the answer names an existing workspace.
    fn whose(&self, ws: &Workspace) -> String {
        if self.by_name {
            format!("workspace {:?}", ws.name)
        } else {
            "this session's workspace".to_owned()
        }
    }

    /// Builds the answer from the final snapshot.
    fn result(
        &self,
        ws: &Workspace,
        created: bool,
        readiness: Readiness,
        origin: Origin,
        note: Option<String>,
    ) -> CreateWorkspaceResult {
        let agent = ws.latest_build.first_agent();
        let mut result = CreateWorkspaceResult {
            created,
            workspace_name: ws.name.clone(),
            status: None,
            message: None,
            agent_status: None,
            agent_error: None,
            startup_scripts: None,
            lifecycle_state: None,
            startup_log_tail: Vec::new(),
            workspace_id: Some(ws.id),
            owner: ws.owner_name.clone(),
            template_id: ws.template_id,
            template_name: ws.template_name.clone(),
            build_status: ws.latest_build.status.to_string(),
            build_number: ws.latest_build.build_number,
            agent_name: agent.map(|a| a.name.clone()),
            url: self.client.dashboard_url(&ws.owner_name, &ws.name),
        };
        let mut message = match (&readiness, origin) {
            (Readiness::StillWaiting(phase), _) => {
                result.status = Some(match phase {
                    Phase::AgentConnecting => CallStatus::StartingAgent,
                    Phase::StartupScripts => CallStatus::RunningStartupScripts,
                    _ => CallStatus::Building,
                });
                // Without a session, only the name ties the next call to this workspace.
                let how = if self.by_name {
                    format!("with the same template_id and name {:?}", ws.name)
                } else {
                    "with the same arguments".to_owned()
                };
                format!(
                    "workspace {:?} is still coming up ({}) after {} s; this is normal, builds often take minutes; call create_workspace again {how} to keep waiting: it waits for this same workspace and never creates a second one.",
                    ws.name,
                    describe_phase(*phase),
                    self.started.elapsed().as_secs()
                )
            }
            (_, Origin::Created) => format!("workspace {:?} created", ws.name),
            (_, Origin::Existing { was_building: true }) => {
                result.status = Some(CallStatus::AlreadyExists);
                format!(
                    "{} was already being built; the build completed",
                    self.whose(ws)
                )
            }
            (
                _,
                Origin::Existing {
                    was_building: false,
                },
            ) => {
                result.status = Some(CallStatus::AlreadyExists);
                format!("{} is already running and reachable", self.whose(ws))
            }
        };
        match readiness {
            Readiness::Ready | Readiness::StillWaiting(_) => {}
            Readiness::NoAgent => {
                result.agent_status = Some(AgentStatus::NoAgent);
                message.push_str("; the template defines no agent");
            }
            Readiness::AgentNotReady(error) => {
                result.agent_status = Some(AgentStatus::NotReady);
                result.agent_error = Some(error);
                message.push_str("; the build succeeded but the agent is not ready yet (the workspace exists and may still come up)");
            }
            Readiness::ScriptsFailed(lifecycle) => {
                result.startup_scripts = Some(StartupScripts::StartupScriptsFailed);
                result.lifecycle_state = Some(lifecycle.to_string());
                message.push_str(&format!(
                    "; the agent's startup scripts failed ({lifecycle})"
                ));
            }
            Readiness::ScriptsTimedOut => {
                result.startup_scripts = Some(StartupScripts::StartupScriptsTimeout);
                result.lifecycle_state = agent.map(|a| a.lifecycle_state.to_string());
                message.push_str("; the agent's startup scripts did not finish in time");
            }
        }
        if let Some(note) = note {
            message.push_str("; ");
            message.push_str(&note);
        }
        result.message = Some(message);
        result
    }
}

impl Call<'_> {
    /// Adds the tail of the startup log to a result whose scripts failed. Guarded: the
    /// read is retried on 5xx, which can take a while, and meanwhile a cancellation must
    /// still stop the call and progress must keep flowing.
    async fn with_startup_log(
        &mut self,
        mut result: CreateWorkspaceResult,
        ws: &Workspace,
    ) -> Result<CreateWorkspaceResult, CreateError> {
        if result.startup_scripts.is_none() {
            return Ok(result);
        }
        let Some(agent) = ws.latest_build.first_agent() else {
            return Ok(result);
        };
        let client = self.client;
        match self.guard(client.agent_logs(agent.id)).await? {
            Ok(logs) => {
                let skip = logs.len().saturating_sub(STARTUP_LOG_TAIL);
                result.startup_log_tail = logs
                    .into_iter()
                    .skip(skip)
                    .map(|l| truncate(l.output.trim_end(), 300))
                    .collect();
            }
            Err(err) => tracing::warn!(error = %err, "could not read the agent's startup log"),
        }
        Ok(result)
    }
}

const STARTUP_LOG_TAIL: usize = 20;

/// Why an existing workspace cannot be returned (a new one is created instead).
fn unusable(ws: &Workspace) -> Option<String> {
    let build = &ws.latest_build;
    if build.transition == WorkspaceTransition::Delete {
        return Some("it was deleted".into());
    }
    match build.job.status {
        ProvisionerJobStatus::Failed => {
            return Some(format!("its last build failed: {}", job_error(ws)));
        }
        ProvisionerJobStatus::Canceled => return Some("its last build was canceled".into()),
        _ => {}
    }
    if build.transition == WorkspaceTransition::Start
        && build.job.status == ProvisionerJobStatus::Succeeded
        && let Some(agent) = build.first_agent()
        && agent.status == WorkspaceAgentStatus::Disconnected
    {
        return Some(format!("its agent is {}", agent.status));
    }
    None
}

fn phase_of(ws: &Workspace) -> Phase {
    let build = &ws.latest_build;
    match build.job.status {
        ProvisionerJobStatus::Pending => Phase::Queued,
        ProvisionerJobStatus::Succeeded => match build.first_agent() {
            Some(agent)
                if matches!(
                    agent.status,
                    WorkspaceAgentStatus::Connecting
                        | WorkspaceAgentStatus::Timeout
                        | WorkspaceAgentStatus::Disconnected
                ) =>
            {
                Phase::AgentConnecting
            }
            Some(agent) if agent.lifecycle_state.is_starting() => Phase::StartupScripts,
            _ => Phase::Ready,
        },
        _ => Phase::Provisioning,
    }
}

fn describe_phase(phase: Phase) -> &'static str {
    match phase {
        Phase::WaitingForSession | Phase::Preparing | Phase::Queued => "queued for a provisioner",
        Phase::Provisioning => "the build is running",
        Phase::Restarting => "the stopped workspace is being started",
        Phase::AgentConnecting => "the build is done; waiting for the agent to connect",
        Phase::StartupScripts => "the agent is running its startup scripts",
        Phase::Ready => "ready",
    }
}

fn job_error(ws: &Workspace) -> String {
    let error = ws.latest_build.job.error.trim();
    if error.is_empty() {
        "build failed".into()
    } else {
        error.to_owned()
    }
}

fn agent_problem(agent: &WorkspaceAgent, status: WorkspaceAgentStatus) -> String {
    let mut text = format!("workspace agent {:?} is {status}", agent.name);
    if let Some(health) = &agent.health
        && !health.reason.is_empty()
    {
        text.push_str(&format!(": {}", health.reason));
    }
    if !agent.troubleshooting_url.is_empty() {
        text.push_str(&format!(
            " (troubleshooting: {})",
            agent.troubleshooting_url
        ));
    }
    text
}

async fn stage_changed(logs: &mut Option<(Uuid, BuildLogFollower)>) {
    match logs {
        Some((_, follower)) => follower.stage_changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
