//! What `create_workspace` answers, and how it fails (no MCP types here).

use uuid::Uuid;

use crate::coder::CoderError;
use crate::store::StoreError;

/// What `create_workspace` answers when it does not fail: the workspace as it stands, and
/// what the model reads about it. The tools layer turns it into the MCP result
/// (`tools::results::Answer`, whose fields document each of these).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub created: bool,
    pub workspace_name: String,
    pub status: Option<CallStatus>,
    pub message: Option<String>,
    pub agent_status: Option<AgentStatus>,
    pub agent_error: Option<String>,
    pub startup_scripts: Option<StartupScripts>,
    pub lifecycle_state: Option<String>,
    pub startup_log_tail: Vec<String>,
    pub workspace_id: Option<Uuid>,
    pub owner: String,
    pub template_id: Uuid,
    pub template_name: String,
    /// Coder's workspace status (`latest_build.status`).
    pub workspace_status: String,
    pub build_number: i64,
    pub agent_name: Option<String>,
    pub url: String,
    /// The create claimed one of the workspaces Coder keeps prebuilt for a preset.
    pub prebuilt: bool,
}

/// How the call ended when it did not simply create a ready workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    AlreadyExists,
    Building,
    StartingAgent,
    RunningStartupScripts,
}

/// Why the workspace agent is not usable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    NotReady,
    NoAgent,
}

/// How the agent's startup scripts went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupScripts {
    StartupScriptsFailed,
    StartupScriptsTimeout,
}

/// Why `create_workspace` failed. Every variant becomes a tool result with
/// `isError: true` whose text tells the model what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The arguments were wrong; nothing was created.
    #[error("{0}")]
    InvalidArguments(String),
    /// A Coder call failed. `workspace`: the task's workspace (or the name it was being
    /// created under) when there is one, so the answer can name the way back to it.
    #[error("{context}: {source}{}", retry_hint(source, workspace.as_deref()))]
    Coder {
        context: String,
        #[source]
        source: Box<CoderError>,
        workspace: Option<String>,
    },
    /// Coder says the name is taken, and the workspace that has it cannot be used.
    #[error("{}", name_taken(name, lookup.as_deref()))]
    NameTaken {
        name: String,
        /// Why the workspace of that name could not be loaded, when that failed.
        lookup: Option<Box<CoderError>>,
    },
    /// The build job failed; the text is Coder's job error.
    #[error(
        "workspace build failed: {error}. Workspace {workspace_name:?} was left in state {status:?}; calling create_workspace again creates a new workspace."
    )]
    BuildFailed {
        workspace_name: String,
        status: String,
        error: String,
    },
    #[error(
        "workspace build was canceled (workspace {workspace_name:?}); calling create_workspace again creates a new workspace."
    )]
    BuildCanceled { workspace_name: String },
    #[error(
        "timed out after {waited} waiting for the workspace build: workspace {workspace_name:?} is still {status:?} (job {job_status}). It may still finish; check it in the Coder dashboard: {url}"
    )]
    BuildTimeout {
        workspace_name: String,
        status: String,
        job_status: String,
        waited: String,
        url: String,
    },
    #[error(
        "workspace {workspace_name:?} was deleted while waiting for it; calling create_workspace again creates a new workspace."
    )]
    Deleted { workspace_name: String },
    #[error("the call was cancelled")]
    Cancelled,
    /// The store that keeps one workspace per task failed (before anything was sent to
    /// Coder: a failure to record a workspace that was made is only logged, since the
    /// intent recorded before it leads the next call to it).
    #[error(
        "{0}. Nothing was created. This server keeps which workspace belongs to which task (chat, session or name) there, so it cannot go on without it: call create_workspace again with the same arguments once the store is back; if this persists, the server's operator must check it"
    )]
    Store(#[source] StoreError),
    /// Another call of the same task held its lock for too long.
    #[error(
        "another create_workspace call of this task has been working on its workspace for {waited} and is not done; call create_workspace again with the same arguments later: that is safe, it never creates a second workspace"
    )]
    Busy { waited: String },
}

/// What a model can do about a Coder failure that is likely to pass (5xx, 429, Coder
/// unreachable). With a workspace (made, or being made under that name), the name is
/// the way back from anywhere; without one, nothing was made yet.
fn retry_hint(source: &CoderError, workspace: Option<&str>) -> String {
    if !source.is_transient() {
        return String::new();
    }
    match workspace {
        Some(name) => format!(
            " (Coder is unreachable or failing right now; wait a moment, then call create_workspace again with name {name:?} and the same template_id: that is safe from any session, it finds this workspace and never creates a second one)"
        ),
        None => " (Coder is unreachable or failing right now; nothing was created; wait a moment, then call create_workspace again with the same arguments)".to_owned(),
    }
}

fn name_taken(name: &str, lookup: Option<&CoderError>) -> String {
    match lookup {
        Some(err) if err.is_transient() => format!(
            "Coder says the workspace name {name:?} is taken, and the workspace could not be loaded ({err}); wait a moment, then call create_workspace again with the same arguments"
        ),
        _ => format!(
            "the workspace name {name:?} is already taken in Coder by a workspace this user cannot use; pass another name"
        ),
    }
}

impl CreateError {
    /// A Coder failure before the task has a workspace.
    pub fn coder(context: impl Into<String>, source: CoderError) -> Self {
        Self::Coder {
            context: context.into(),
            source: Box::new(source),
            workspace: None,
        }
    }

    /// A Coder failure about the task's workspace `workspace` (made, or being made).
    pub fn coder_on(context: impl Into<String>, source: CoderError, workspace: &str) -> Self {
        Self::Coder {
            context: context.into(),
            source: Box::new(source),
            workspace: Some(workspace.to_owned()),
        }
    }
}
