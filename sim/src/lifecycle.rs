//! Build plans and the tasks that move builds and agents through their states.
//!
//! Each build runs in its own tokio task. The task sleeps between steps (that is the
//! simulated work, not synchronization) and applies every step with
//! [`Inner::update`], so waiters and streams see each transition.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Inner;
use super::state::ResourceKind;
use coder_api::{LogLevel, ProvisionerJobStatus, WorkspaceAgentLifecycle, WorkspaceTransition};

/// How the start builds of a template behave (see [`super::SimCoder::set_build_plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BuildPlan {
    /// Time the job stays `pending` (workspace status `pending`, queue position 1).
    pub queue_for: Duration,
    /// Time the job is `running` (workspace status `starting`); the log stages are
    /// spread over it.
    pub build_for: Duration,
    /// After `build_for` the job stays `running` until [`super::SimCoder::release_builds`].
    pub hold: bool,
    pub outcome: BuildOutcome,
    /// What the agent does once the build succeeded.
    pub agent: AgentPlan,
}

/// How a start build ends.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildOutcome {
    Succeed,
    /// The job fails with this error text (also logged at level `error`).
    Fail(String),
    /// The job is canceled (as if someone canceled it at the end of `build_for`).
    Cancel,
}

/// How the agent of a succeeded start build behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentPlan {
    /// Time from the build's completion until the agent connects; `None` means it
    /// never connects (status stays `connecting`, lifecycle `created`).
    pub connect_after: Option<Duration>,
    /// Time the lifecycle stays `starting` (startup scripts) after connecting.
    pub scripts_for: Duration,
    /// The lifecycle after the scripts: `Ready`, `StartError` or `StartTimeout`.
    pub lifecycle_end: WorkspaceAgentLifecycle,
    /// Agent log lines (`GET /workspaceagents/{id}/logs`), spread over `scripts_for`.
    pub startup_log: Vec<String>,
}

impl Default for BuildPlan {
    /// Fast: about 10 ms queued, 50 ms building, agent after 20 ms, scripts 20 ms, ready.
    fn default() -> Self {
        BuildPlan {
            queue_for: Duration::from_millis(10),
            build_for: Duration::from_millis(50),
            hold: false,
            outcome: BuildOutcome::Succeed,
            agent: AgentPlan::default(),
        }
    }
}

impl Default for AgentPlan {
    fn default() -> Self {
        AgentPlan {
            connect_after: Some(Duration::from_millis(20)),
            scripts_for: Duration::from_millis(20),
            lifecycle_end: WorkspaceAgentLifecycle::Ready,
            startup_log: vec![
                "Installing code-server...".to_string(),
                "code-server has been installed in /tmp/code-server".to_string(),
                "Startup script finished.".to_string(),
            ],
        }
    }
}

impl BuildPlan {
    /// The default plan, but the job stays `running` until `release_builds()`.
    pub fn held() -> Self {
        BuildPlan {
            hold: true,
            ..Self::default()
        }
    }

    /// The default plan, but the job fails with `error`.
    pub fn failing(error: impl Into<String>) -> Self {
        BuildPlan {
            outcome: BuildOutcome::Fail(error.into()),
            ..Self::default()
        }
    }

    /// The default plan, but the job ends `canceled`.
    pub fn canceled() -> Self {
        BuildPlan {
            outcome: BuildOutcome::Cancel,
            ..Self::default()
        }
    }

    /// The default plan with another agent behaviour.
    pub fn with_agent(agent: AgentPlan) -> Self {
        BuildPlan {
            agent,
            ..Self::default()
        }
    }

    /// The start build of a claimed prebuilt workspace: its resources exist and its
    /// agent only reinitialises, so it is short (about 5 ms queued, 20 ms building,
    /// agent after 5 ms, scripts 5 ms).
    pub fn claim() -> Self {
        BuildPlan {
            queue_for: Duration::from_millis(5),
            build_for: Duration::from_millis(20),
            hold: false,
            outcome: BuildOutcome::Succeed,
            agent: AgentPlan {
                connect_after: Some(Duration::from_millis(5)),
                scripts_for: Duration::from_millis(5),
                lifecycle_end: WorkspaceAgentLifecycle::Ready,
                startup_log: vec!["Agent reinitialized for its new owner.".to_string()],
            },
        }
    }

    /// A claim for the demo: about 0.2 s queued, 1 s building, the agent back after
    /// 0.3 s, 0.3 s of startup scripts.
    pub fn demo_claim() -> Self {
        BuildPlan {
            queue_for: Duration::from_millis(200),
            build_for: Duration::from_secs(1),
            hold: false,
            outcome: BuildOutcome::Succeed,
            agent: AgentPlan {
                connect_after: Some(Duration::from_millis(300)),
                scripts_for: Duration::from_millis(300),
                lifecycle_end: WorkspaceAgentLifecycle::Ready,
                startup_log: vec!["Agent reinitialized for its new owner.".to_string()],
            },
        }
    }

    /// Realistic but short, for the demo: ~1 s queued, ~5 s building, agent after
    /// ~1 s, startup scripts ~1 s, ready.
    pub fn demo() -> Self {
        BuildPlan {
            queue_for: Duration::from_secs(1),
            build_for: Duration::from_secs(5),
            hold: false,
            outcome: BuildOutcome::Succeed,
            agent: AgentPlan {
                connect_after: Some(Duration::from_secs(1)),
                scripts_for: Duration::from_secs(1),
                lifecycle_end: WorkspaceAgentLifecycle::Ready,
                startup_log: vec![
                    "Cloning dotfiles from https://github.com/coder/example-dotfiles".to_string(),
                    "Installing code-server...".to_string(),
                    "code-server 4.96.4 has been installed in /tmp/code-server".to_string(),
                    "Starting code-server on port 13337".to_string(),
                    "Startup script finished.".to_string(),
                ],
            },
        }
    }
}

impl AgentPlan {
    /// An agent that never connects.
    pub fn never_connects() -> Self {
        AgentPlan {
            connect_after: None,
            ..Self::default()
        }
    }

    /// An agent whose startup script fails (`start_error`).
    pub fn start_error() -> Self {
        AgentPlan {
            lifecycle_end: WorkspaceAgentLifecycle::StartError,
            startup_log: vec![
                "Installing code-server...".to_string(),
                "curl: (6) Could not resolve host: code-server.dev".to_string(),
            ],
            ..Self::default()
        }
    }
}

/// A stop or delete build is quick and fixed: queued this long...
const SYSTEM_QUEUE: Duration = Duration::from_millis(5);
/// ...then running this long.
const SYSTEM_BUILD: Duration = Duration::from_millis(15);
/// Time between a cancel request (`canceling`) and the provisioner's acknowledgement.
const CANCEL_ACK: Duration = Duration::from_millis(20);

/// Everything a build task needs, captured when the build was created.
pub(crate) struct BuildStart {
    pub workspace_id: Uuid,
    pub build_id: Uuid,
    pub transition: WorkspaceTransition,
    pub plan: BuildPlan,
    pub cancel: CancellationToken,
    pub agent_cancel: CancellationToken,
    pub resource: ResourceKind,
    pub agent_id: Uuid,
}

/// One provisioner log line to emit.
#[derive(Clone)]
pub(crate) struct LogLine {
    pub stage: &'static str,
    pub daemon: bool,
    pub level: LogLevel,
    pub output: String,
}

fn daemon(stage: &'static str) -> LogLine {
    LogLine {
        stage,
        daemon: true,
        level: LogLevel::Info,
        output: String::new(),
    }
}

fn tf(stage: &'static str, output: impl Into<String>) -> LogLine {
    LogLine {
        stage,
        daemon: false,
        level: LogLevel::Info,
        output: output.into(),
    }
}

pub(crate) fn spawn_build(inner: Arc<Inner>, start: BuildStart) {
    tokio::spawn(async move {
        let (workspace_id, build_id) = (start.workspace_id, start.build_id);
        tracing::debug!(%workspace_id, %build_id, transition = %start.transition, "build task started");
        let shutdown = inner.shutdown_token().clone();
        tokio::select! {
            _ = run_build(inner, start) => {}
            _ = shutdown.cancelled() => {}
        }
        tracing::debug!(%workspace_id, %build_id, "build task done");
    });
}

/// Sleeps unless `cancel` fires first; true if the whole duration passed.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

async fn run_build(inner: Arc<Inner>, s: BuildStart) {
    let is_start = s.transition == WorkspaceTransition::Start;
    let queue = if is_start {
        s.plan.queue_for
    } else {
        SYSTEM_QUEUE
    };
    if !pause(queue, &s.cancel).await {
        return interrupted(&inner, &s).await;
    }
    inner.update(|st| st.mark_running(s.build_id));

    let (main, fail) = main_script(&s);
    let build_for = if is_start {
        s.plan.build_for
    } else {
        SYSTEM_BUILD
    };
    let step = build_for / u32::try_from(main.len().max(1)).unwrap_or(1);
    for line in main {
        if !pause(step, &s.cancel).await {
            return interrupted(&inner, &s).await;
        }
        inner.update(|st| st.push_job_log(s.build_id, &line));
    }

    if is_start && s.plan.hold && !wait_for_release(&inner, &s).await {
        return interrupted(&inner, &s).await;
    }

    match (is_start, &s.plan.outcome, fail) {
        (true, BuildOutcome::Fail(error), Some(fail_lines)) => {
            inner.update(|st| {
                for line in &fail_lines {
                    st.push_job_log(s.build_id, line);
                }
                st.push_job_log(s.build_id, &daemon("Cleaning Up"));
                st.finish_job(s.build_id, ProvisionerJobStatus::Failed, error);
            });
        }
        (true, BuildOutcome::Cancel, _) => {
            // An API cancel may have come first; either way the job is canceling now.
            if let Err(err) = inner.update(|st| st.request_cancel(s.build_id)) {
                tracing::debug!(build_id = %s.build_id, message = %err.body.message, "planned cancel");
            }
            return interrupted(&inner, &s).await;
        }
        _ => {
            inner.update(|st| {
                st.push_job_log(s.build_id, &daemon("Cleaning Up"));
                st.finish_job(s.build_id, ProvisionerJobStatus::Succeeded, "");
            });
            if is_start {
                run_agent(&inner, &s).await;
            }
        }
    }
}

/// Marks the build held until `release_builds()` (or a cancel); false if interrupted.
async fn wait_for_release(inner: &Inner, s: &BuildStart) -> bool {
    let mut rx = inner.subscribe();
    let mut marked = false;
    loop {
        rx.borrow_and_update();
        let released = inner.read(|st| st.build(s.build_id).is_none_or(|b| b.release_requested));
        if released {
            if marked {
                inner.update(|st| st.set_held(s.build_id, false));
            }
            return true;
        }
        if !marked {
            inner.update(|st| st.set_held(s.build_id, true));
            marked = true;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return false },
            _ = s.cancel.cancelled() => {
                inner.update(|st| st.set_held(s.build_id, false));
                return false;
            }
        }
    }
}

/// The task's cancel token fired: a cancel request (finish it like a provisioner
/// would) or the simulator's shutdown (just stop).
async fn interrupted(inner: &Inner, s: &BuildStart) {
    let status = inner.read(|st| st.build(s.build_id).map(|b| b.job.status));
    if status != Some(ProvisionerJobStatus::Canceling) {
        return;
    }
    let shutdown = inner.shutdown_token().clone();
    if !pause(CANCEL_ACK, &shutdown).await {
        return;
    }
    inner.update(|st| {
        st.push_job_log(s.build_id, &daemon("Cleaning Up"));
        st.finish_job(s.build_id, ProvisionerJobStatus::Canceled, "");
    });
}

async fn run_agent(inner: &Inner, s: &BuildStart) {
    let plan = &s.plan.agent;
    let Some(connect_after) = plan.connect_after else {
        return;
    };
    if !pause(connect_after, &s.agent_cancel).await {
        return;
    }
    inner.update(|st| st.agent_connected(s.agent_id));
    let step = plan.scripts_for / u32::try_from(plan.startup_log.len() + 1).unwrap_or(1);
    for line in &plan.startup_log {
        if !pause(step, &s.agent_cancel).await {
            return;
        }
        inner.update(|st| st.push_agent_log(s.agent_id, line));
    }
    if !pause(step, &s.agent_cancel).await {
        return;
    }
    inner.update(|st| st.agent_lifecycle_done(s.agent_id, plan.lifecycle_end));
}

/// The log lines before the outcome, and (for a failing plan) the error lines.
fn main_script(s: &BuildStart) -> (Vec<LogLine>, Option<Vec<LogLine>>) {
    let r = &s.resource;
    let mut lines = vec![daemon("Setting up")];
    match s.transition {
        WorkspaceTransition::Start | WorkspaceTransition::Unknown => {
            lines.push(daemon("Parsing template parameters"));
            lines.push(daemon("Detecting persistent resources"));
            lines.push(tf("Detecting persistent resources", "Terraform 1.11.4"));
            lines.push(tf(
                "Detecting persistent resources",
                "data.coder_workspace.me: Refreshing...",
            ));
            lines.push(daemon("Detecting ephemeral resources"));
            lines.push(daemon("Planning infrastructure"));
            lines.push(tf(
                "Planning infrastructure",
                "Plan: 2 to add, 0 to change, 0 to destroy.",
            ));
            lines.push(daemon("Starting workspace"));
            let apply = vec![
                tf("Starting workspace", "coder_agent.main: Plan to create"),
                tf("Starting workspace", "coder_agent.main: Creating..."),
                tf(
                    "Starting workspace",
                    format!(
                        "coder_agent.main: Creation complete after 0s [id={}]",
                        s.agent_id
                    ),
                ),
                tf(
                    "Starting workspace",
                    format!("{}.{}: Creating...", r.kind, r.name),
                ),
                tf(
                    "Starting workspace",
                    format!(
                        "{}.{}: Creation complete after 2s [id={}]",
                        r.kind,
                        r.name,
                        Uuid::new_v4().simple()
                    ),
                ),
                tf(
                    "Starting workspace",
                    "Apply complete! Resources: 2 added, 0 changed, 0 destroyed.",
                ),
                tf("Starting workspace", "Outputs: 0"),
            ];
            if let BuildOutcome::Fail(error) = &s.plan.outcome {
                lines.extend(apply.into_iter().take(2));
                let mut err = tf("Starting workspace", format!("Error: {error}"));
                err.level = LogLevel::Error;
                return (lines, Some(vec![err]));
            }
            lines.extend(apply);
        }
        WorkspaceTransition::Stop => {
            lines.push(daemon("Stopping workspace"));
            lines.push(tf(
                "Stopping workspace",
                format!("{}.{}: Destroying...", r.kind, r.name),
            ));
            lines.push(tf(
                "Stopping workspace",
                format!("{}.{}: Destruction complete after 1s", r.kind, r.name),
            ));
            lines.push(tf(
                "Stopping workspace",
                "Apply complete! Resources: 0 added, 0 changed, 2 destroyed.",
            ));
        }
        WorkspaceTransition::Delete => {
            lines.push(daemon("Destroying workspace"));
            lines.push(tf(
                "Destroying workspace",
                "docker_volume.home_volume: Destroying...",
            ));
            lines.push(tf(
                "Destroying workspace",
                "docker_volume.home_volume: Destruction complete after 0s",
            ));
            lines.push(tf(
                "Destroying workspace",
                "Destroy complete! Resources: 1 destroyed.",
            ));
        }
    }
    (lines, None)
}
