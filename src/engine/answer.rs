//! The answers of `create_workspace` that are not errors: what the model reads, and
//! above all, for an answer that is not final, the way back to the same workspace.

use super::create::Call;
use super::decide::Found;
use super::outcome::{AgentStatus, Answer, CallStatus, CreateError, StartupScripts};
use super::progress::{Phase, truncate};
use super::wait::{Readiness, describe_phase};
use crate::coder::types::{Template, Workspace};

/// Where the wait began, for the final message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Created,
    Existing(Found),
}

/// How many lines of the startup log a failed-scripts answer carries.
const STARTUP_LOG_TAIL: usize = 20;

/// The sentence that tells the model how to get back to `name` from anywhere.
fn call_again(name: &str) -> String {
    format!(
        "call create_workspace again with name {name:?} and the same template_id to keep waiting: from this or any other session, and after a restart, it waits for this same workspace and never creates a second one"
    )
}

impl Call<'_> {
    /// The `building` answer of a call whose time ran out while another call of its task
    /// was at work on the task's workspace: creating it under `name` (`creating`), or
    /// starting, returning or replacing `name`. There is no workspace to describe yet.
    pub(super) async fn busy_answer(
        &mut self,
        template: &Template,
        name: Option<String>,
        creating: bool,
    ) -> Result<Answer, CreateError> {
        let client = self.client;
        let me = self
            .guard(client.me())
            .await?
            .map_err(|e| CreateError::coder("could not load the Coder user", e))?;
        let elapsed = self.started.elapsed().as_secs();
        let doing = match (&name, creating) {
            (Some(name), true) => {
                format!("is still creating workspace {name:?} (Coder has not confirmed it yet)")
            }
            (Some(name), false) => format!("is still at work on workspace {name:?}"),
            (None, _) => "is still creating its workspace (Coder has not confirmed it yet)".into(),
        };
        let again = match &name {
            Some(name) => call_again(name),
            // Only a call with a key can wait for another: the same arguments lead back.
            None => "call create_workspace again with the same arguments to keep waiting: it waits for that same workspace and never creates a second one".into(),
        };
        let url = match &name {
            Some(name) => client.dashboard_url(&me.username, name),
            None => format!("{}/workspaces", client.base_url()),
        };
        Ok(Answer {
            created: false,
            workspace_name: name.unwrap_or_default(),
            status: Some(CallStatus::Building),
            message: Some(format!(
                "another create_workspace call of this task {doing} after {elapsed} s; this is normal; {again}."
            )),
            agent_status: None,
            agent_error: None,
            startup_scripts: None,
            lifecycle_state: None,
            startup_log_tail: Vec::new(),
            workspace_id: None,
            owner: me.username,
            template_id: template.id,
            template_name: template.name.clone(),
            workspace_status: "pending".into(),
            build_number: 0,
            agent_name: None,
            url,
            prebuilt: false,
        })
    }

    /// Builds the answer from the final snapshot.
    pub(super) fn result(
        &self,
        ws: &Workspace,
        created: bool,
        readiness: Readiness,
        origin: Origin,
        notes: Vec<String>,
    ) -> Answer {
        let agent = ws.latest_build.first_agent();
        let mut result = Answer {
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
            workspace_status: ws.latest_build.status.to_string(),
            build_number: ws.latest_build.build_number,
            agent_name: agent.map(|a| a.name.clone()),
            url: self.client.dashboard_url(&ws.owner_name, &ws.name),
            prebuilt: false,
        };
        let mut message = match (&readiness, origin) {
            (Readiness::StillWaiting(phase), _) => {
                result.status = Some(match phase {
                    Phase::AgentConnecting => CallStatus::StartingAgent,
                    Phase::StartupScripts => CallStatus::RunningStartupScripts,
                    _ => CallStatus::Building,
                });
                format!(
                    "workspace {:?} is still coming up ({}) after {} s; this is normal, builds often take minutes; {}",
                    ws.name,
                    describe_phase(*phase),
                    self.started.elapsed().as_secs(),
                    call_again(&ws.name)
                )
            }
            (_, Origin::Created) => format!("workspace {:?} created", ws.name),
            (_, Origin::Existing(found)) => {
                result.status = Some(CallStatus::AlreadyExists);
                match found {
                    Found::Building => format!(
                        "workspace {:?} was already being built; the build completed",
                        ws.name
                    ),
                    Found::Stopped => format!(
                        "workspace {:?} had been stopped; it was started again instead of creating another",
                        ws.name
                    ),
                    Found::Running => {
                        format!("workspace {:?} is already running and reachable", ws.name)
                    }
                }
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
        for note in notes {
            message.push_str("; ");
            message.push_str(&note);
        }
        result.message = Some(message);
        result
    }

    /// Adds the tail of the startup log to a result whose scripts failed. Guarded: the
    /// read is retried on 5xx, which can take a while, and meanwhile a cancellation must
    /// still stop the call and progress must keep flowing.
    pub(super) async fn with_startup_log(
        &mut self,
        mut result: Answer,
        ws: &Workspace,
    ) -> Result<Answer, CreateError> {
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
