//! Waiting for a workspace: its build, its agent and the agent's startup scripts,
//! followed on Coder's watch stream (polling only as a fallback), with progress.

use parking_lot::Mutex;
use std::collections::HashMap;

use tokio::time::Instant;
use uuid::Uuid;

use super::create::{Call, EngineConfig, Until, sleep_until_opt};
use super::decide::job_error;
use super::outcome::CreateError;
use super::progress::Phase;
use crate::coder::BuildLogFollower;
use crate::coder::types::{
    CreateWorkspaceBuildRequest, ProvisionerJobStatus, Workspace, WorkspaceAgent,
    WorkspaceAgentLifecycle, WorkspaceAgentStatus, WorkspaceTransition,
};

/// What a wait is measured for, so a call that resumes after `--max-call-wait` does
/// not restart the build, agent or startup-script timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitKind {
    Build,
    Agent,
    StartupScripts,
}

/// When this process began waiting for each build's phases (shared by every call that
/// follows the build).
#[derive(Default)]
pub(super) struct WaitClocks {
    started: Mutex<Clocks>,
}

#[derive(Default)]
struct Clocks {
    at: HashMap<(Uuid, WaitKind), Instant>,
    /// The size at which old entries are next dropped: twice what the last pruning left
    /// (at least [`PRUNE_FROM`]), so that thousands of builds waited on at once cost a
    /// scan now and then, not one per call.
    prune_at: usize,
}

/// Below this many entries nothing is pruned.
const PRUNE_FROM: usize = 1024;

impl WaitClocks {
    /// When waiting of `kind` for `build` began (now, the first time it is asked).
    pub(super) fn started(
        &self,
        build: Uuid,
        kind: WaitKind,
        forget_after: std::time::Duration,
    ) -> Instant {
        // Instants only: nothing a panic elsewhere could leave half-written.
        let mut clocks = self.started.lock();
        if clocks.at.len() > clocks.prune_at.max(PRUNE_FROM) {
            clocks.at.retain(|_, at| at.elapsed() < forget_after);
            clocks.prune_at = clocks.at.len().saturating_mul(2);
        }
        *clocks.at.entry((build, kind)).or_insert_with(Instant::now)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.started.lock().at.len()
    }
}

/// How a wait ended well.
pub(super) enum Readiness {
    Ready,
    NoAgent,
    AgentNotReady(String),
    ScriptsFailed(WorkspaceAgentLifecycle),
    ScriptsTimedOut,
    /// The call's own time limit came first; the workspace is still coming up.
    StillWaiting(Phase),
}

/// What happened while waiting for the workspace.
enum Event {
    Snapshot(Box<Result<Workspace, crate::coder::CoderError>>),
    TimedOut,
    Stage,
    Outage,
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

impl Call<'_> {
    fn config(&self) -> &EngineConfig {
        &self.engine.config
    }

    /// When this process began waiting of `kind` for `build`.
    fn wait_started(&self, build: Uuid, kind: WaitKind) -> Instant {
        let config = self.config();
        let longest = config
            .build_timeout
            .max(config.agent_timeout)
            .max(config.startup_timeout);
        self.engine.clocks.started(build, kind, longest * 2)
    }

    /// Follows the workspace (of `user`) until it is ready, fails, times out or the
    /// call's own limit comes. Returns the last snapshot and whether a stopped workspace
    /// was started. The watch and build-log streams are the process's for that
    /// workspace, shared with every other call and task waiting on it.
    pub(super) async fn wait_ready(
        &mut self,
        user: Uuid,
        mut ws: Workspace,
    ) -> Result<(Workspace, Readiness, bool), CreateError> {
        let client = self.client;
        let mut watch = self
            .engine
            .watches
            .workspace(user, client, ws.id, &self.config().watch);
        let mut outages = watch.outages();
        let mut logs: Option<(Uuid, BuildLogFollower)> = None;
        let mut restarted = false;
        loop {
            let step = self.assess(user, &ws, &mut logs);
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
                        template_version_preset_id: None,
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
                            return Err(CreateError::coder_on(
                                "could not start the stopped workspace",
                                err,
                                &ws.name,
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
            // What may happen next: a new snapshot, a timeout, a new build-log stage.
            let event = async {
                tokio::select! {
                    next = watch.next() => Event::Snapshot(Box::new(next)),
                    _ = sleep_until_opt(timeout.map(|(at, _)| at)) => Event::TimedOut,
                    _ = stage_changed(&mut logs) => Event::Stage,
                    _ = outages.changed() => Event::Outage,
                }
            };
            let deadline = self.deadline;
            match self.until(event, true, deadline).await {
                Until::Cancelled => return Err(CreateError::Cancelled),
                Until::OutOfTime => return Ok((ws, Readiness::StillWaiting(phase), restarted)),
                Until::Done(Event::Snapshot(next)) => match *next {
                    // A snapshot older than one we already have (a stream that replays
                    // from before our own start build): never go backwards.
                    Ok(next) if next.latest_build.build_number < ws.latest_build.build_number => {}
                    Ok(next) => ws = next,
                    Err(err) if err.is_not_found() => {
                        return Err(CreateError::Deleted {
                            workspace_name: ws.name.clone(),
                        });
                    }
                    Err(err) => {
                        return Err(CreateError::coder_on(
                            "lost track of the workspace",
                            err,
                            &ws.name,
                        ));
                    }
                },
                Until::Done(Event::TimedOut) => {
                    let kind = timeout.map(|(_, kind)| kind).unwrap_or(WaitKind::Build);
                    return self.timed_out(&ws, kind).map(|r| (ws, r, restarted));
                }
                // A new build-log stage: re-assess to report it.
                Until::Done(Event::Stage) => {}
                // Coder stopped (or started again) answering: progress says so.
                Until::Done(Event::Outage) => self.progress.set_outage(outages.current()).await,
            }
        }
    }

    /// What `ws` means for the wait.
    fn assess(
        &self,
        user: Uuid,
        ws: &Workspace,
        logs: &mut Option<(Uuid, BuildLogFollower)>,
    ) -> Step {
        let build = &ws.latest_build;
        let job = &build.job;
        let build_deadline = || {
            Some((
                self.wait_started(build.id, WaitKind::Build) + self.config().build_timeout,
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
                    // Stopped, or a stop that did not finish (the workspace most likely
                    // still runs): a start build brings it back either way.
                    ProvisionerJobStatus::Succeeded
                    | ProvisionerJobStatus::Failed
                    | ProvisionerJobStatus::Canceled => Step::StartAgain,
                    _ => Step::Wait {
                        phase: Phase::Restarting,
                        message: format!(
                            "workspace {} is stopping; it will be started again",
                            ws.name
                        ),
                        timeout: build_deadline(),
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
                    timeout: build_deadline(),
                }
            }
            ProvisionerJobStatus::Running
            | ProvisionerJobStatus::Canceling
            | ProvisionerJobStatus::Unknown => {
                if !self.config().watch.polling_only
                    && logs.as_ref().is_none_or(|(id, _)| *id != build.id)
                {
                    *logs = Some((
                        build.id,
                        self.engine.watches.build_log(user, self.client, build.id),
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
                    timeout: build_deadline(),
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
                self.assess_agent(ws)
            }
        }
    }

    fn assess_agent(&self, ws: &Workspace) -> Step {
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
                        self.wait_started(build.id, WaitKind::StartupScripts)
                            + self.config().startup_timeout,
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
                    self.wait_started(build.id, WaitKind::Agent) + self.config().agent_timeout,
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
                    self.wait_started(build.id, WaitKind::Agent) + self.config().agent_timeout,
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
                waited: humantime::format_duration(self.config().build_timeout).to_string(),
                url: self.client.dashboard_url(&ws.owner_name, &ws.name),
            }),
            WaitKind::Agent => {
                let status = ws
                    .latest_build
                    .first_agent()
                    .map_or("missing".to_owned(), |a| a.status.to_string());
                Ok(Readiness::AgentNotReady(format!(
                    "timed out after {} waiting for the workspace agent to connect (agent status: {status})",
                    humantime::format_duration(self.config().agent_timeout)
                )))
            }
            WaitKind::StartupScripts => Ok(Readiness::ScriptsTimedOut),
        }
    }
}

pub(super) fn phase_of(ws: &Workspace) -> Phase {
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

pub(super) fn describe_phase(phase: Phase) -> &'static str {
    match phase {
        Phase::WaitingForTask | Phase::Preparing | Phase::Queued => "queued for a provisioner",
        Phase::Provisioning => "the build is running",
        Phase::Restarting => "the stopped workspace is being started",
        Phase::AgentConnecting => "the build is done; waiting for the agent to connect",
        Phase::StartupScripts => "the agent is running its startup scripts",
        Phase::Ready => "ready",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_builds_clock_is_kept_and_old_ones_are_dropped_in_bulk() {
        let clocks = WaitClocks::default();
        let keep = Duration::from_secs(3600);
        let build = Uuid::new_v4();
        let first = clocks.started(build, WaitKind::Build, keep);
        assert_eq!(clocks.started(build, WaitKind::Build, keep), first, "kept");
        // Many builds at once, all recent: nothing may be dropped, and the map is not
        // rescanned on every call (it would be, were the threshold fixed).
        for _ in 0..5_000 {
            clocks.started(Uuid::new_v4(), WaitKind::Agent, keep);
        }
        assert_eq!(clocks.len(), 5_001);
        assert_eq!(clocks.started(build, WaitKind::Build, keep), first);
        // Forgotten when old: with a zero retention the next pruning drops them all.
        for _ in 0..6_000 {
            clocks.started(Uuid::new_v4(), WaitKind::Agent, Duration::ZERO);
        }
        assert!(
            clocks.len() < 11_001,
            "old clocks were dropped: {}",
            clocks.len()
        );
    }
}
