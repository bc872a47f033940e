//! How `coderd` would render the model as JSON: typed values from
//! `coder_api`, plus the fields those types do not model.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::state::{SimBuild, SimWorkspace, Snapshot, State};
use coder_api::*;

impl State {
    /// Appends the current rendering of every workspace whose JSON changed.
    pub fn record_snapshots(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let fresh: Vec<(usize, Snapshot)> = self
            .workspaces
            .iter()
            .enumerate()
            .filter(|(_, w)| w.history.is_empty() || dirty.contains(&w.id))
            .filter_map(|(i, w)| {
                let snap = self.render_workspace(w)?;
                let same = w.history.last().is_some_and(|h| h.json == snap.json);
                (!same).then_some((i, snap))
            })
            .collect();
        for (i, snap) in fresh {
            self.workspaces[i].history.push(Arc::new(snap));
        }
    }

    /// The workspace as `GET /workspaces/{id}` renders it now.
    pub fn current(&self, ws: &SimWorkspace) -> Option<Arc<Snapshot>> {
        ws.history.last().cloned()
    }

    fn render_workspace(&self, ws: &SimWorkspace) -> Option<Snapshot> {
        let owner = self.user(ws.owner_id)?;
        let tmpl = self.template(ws.template_id)?;
        let latest = ws.builds.last()?;
        let (build, build_json) = self.render_build(ws, latest)?;
        let workspace = Workspace {
            id: ws.id,
            name: ws.name.clone(),
            owner_id: ws.owner_id,
            owner_name: owner.username.clone(),
            organization_id: self.org.id,
            organization_name: self.org.name.clone(),
            template_id: tmpl.template.id,
            template_name: tmpl.template.name.clone(),
            template_display_name: tmpl.template.display_name.clone(),
            template_icon: tmpl.template.icon.clone(),
            template_active_version_id: Some(tmpl.version_id),
            outdated: latest.template_version_id != tmpl.version_id,
            is_prebuild: ws.owner_id == super::state::PREBUILDS_USER_ID,
            latest_build: build.clone(),
            deleting_at: None,
            dormant_at: None,
            created_at: ws.created_at,
            updated_at: ws.updated_at,
        };
        let mut json = serde_json::to_value(&workspace).ok()?;
        let failing: Vec<Uuid> = build
            .resources
            .iter()
            .flat_map(|r| r.agents.iter())
            .filter(|a| a.health.as_ref().is_some_and(|h| !h.healthy))
            .map(|a| a.id)
            .collect();
        let last_used = ws
            .builds
            .iter()
            .filter_map(|b| b.job.completed_at)
            .max()
            .unwrap_or(ws.created_at);
        if let Some(obj) = json.as_object_mut() {
            obj.insert("latest_build".into(), build_json);
            obj.insert(
                "health".into(),
                json!({"healthy": failing.is_empty(), "failing_agents": failing}),
            );
            obj.insert("automatic_updates".into(), json!("never"));
            obj.insert("last_used_at".into(), json!(last_used));
            obj.insert("allow_renames".into(), json!(false));
            obj.insert("favorite".into(), json!(false));
            obj.insert(
                "template_allow_user_cancel_workspace_jobs".into(),
                json!(true),
            );
            obj.insert("template_require_active_version".into(), json!(false));
            obj.insert("template_use_classic_parameter_flow".into(), json!(true));
        }
        Some(Snapshot { workspace, json })
    }

    /// A build as the API renders it, typed and as sent.
    pub fn render_build(&self, ws: &SimWorkspace, b: &SimBuild) -> Option<(WorkspaceBuild, Value)> {
        let owner = self.user(ws.owner_id)?;
        let tmpl = self.template(ws.template_id)?;
        let initiator = self
            .user(b.initiator_id)
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let mut job = b.job.clone();
        if job.status == ProvisionerJobStatus::Pending {
            let pending: Vec<DateTime<Utc>> = self
                .workspaces
                .iter()
                .flat_map(|w| w.builds.iter())
                .filter(|o| o.job.status == ProvisionerJobStatus::Pending)
                .map(|o| o.job.created_at)
                .collect();
            job.queue_size = pending.len() as i64;
            job.queue_position = 1 + pending.iter().filter(|t| **t < job.created_at).count() as i64;
        }
        let mut resources = b.resources.clone();
        for agent in resources.iter_mut().flat_map(|r| r.agents.iter_mut()) {
            agent.health = Some(agent_health(agent));
            agent.logs_length = self
                .agent_logs
                .get(&agent.id)
                .map_or(0, |l| l.iter().map(|x| x.output.len() as i64).sum());
        }
        let build = WorkspaceBuild {
            id: b.id,
            build_number: b.number,
            workspace_id: ws.id,
            workspace_name: ws.name.clone(),
            workspace_owner_id: Some(ws.owner_id),
            workspace_owner_name: owner.username.clone(),
            template_version_id: Some(b.template_version_id),
            template_version_name: tmpl.version_name.clone(),
            template_version_preset_id: b.preset_id,
            transition: b.transition,
            status: build_status(job.status, b.transition),
            job,
            resources,
            reason: Some(b.reason.clone()),
            initiator_id: Some(b.initiator_id),
            initiator_name: initiator,
            created_at: b.created_at,
            updated_at: b.updated_at,
        };
        let mut json = serde_json::to_value(&build).ok()?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("daily_cost".into(), json!(0));
            obj.insert(
                "matched_provisioners".into(),
                json!({"count": 1, "available": 1}),
            );
        }
        if let Some(job_obj) = json.get_mut("job").and_then(Value::as_object_mut) {
            job_obj.insert("type".into(), json!("workspace_build"));
            job_obj.insert("organization_id".into(), json!(self.org.id));
            job_obj.insert("initiator_id".into(), json!(b.initiator_id));
            job_obj.insert("input".into(), json!({"workspace_build_id": b.id}));
            job_obj.insert("tags".into(), json!({"scope": "organization", "owner": ""}));
            job_obj.insert("logs_overflowed".into(), json!(false));
            job_obj.insert(
                "metadata".into(),
                json!({
                    "template_version_name": tmpl.version_name,
                    "template_id": tmpl.template.id,
                    "template_name": tmpl.template.name,
                    "template_display_name": tmpl.template.display_name,
                    "template_icon": tmpl.template.icon,
                    "workspace_id": ws.id,
                    "workspace_name": ws.name,
                }),
            );
            if b.job.started_at.is_some() {
                job_obj.insert("worker_id".into(), json!(self.provisioner_id));
                job_obj.insert("worker_name".into(), json!("sim-provisioner"));
            }
        }
        if let Some(res) = json.get_mut("resources").and_then(Value::as_array_mut) {
            for r in res {
                if let Some(obj) = r.as_object_mut() {
                    obj.insert("daily_cost".into(), json!(0));
                    obj.insert("metadata".into(), json!([]));
                }
                for a in r
                    .get_mut("agents")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(obj) = a.as_object_mut() {
                        obj.insert("apps".into(), json!([]));
                        obj.insert(
                            "log_sources".into(),
                            json!([{
                                "id": b.log_source_id,
                                "workspace_agent_id": obj.get("id"),
                                "display_name": "Startup Script",
                                "icon": "/emojis/25b6.png",
                                "created_at": b.created_at,
                            }]),
                        );
                    }
                }
            }
        }
        Some((build, json))
    }

    /// The rendered agent (health and log length filled in).
    pub fn render_agent(&self, agent_id: Uuid) -> Option<(WorkspaceAgent, Value)> {
        let (ws, b) = self.find_agent(agent_id)?;
        let (typed, json) = self.render_build(ws, b)?;
        let agent = typed
            .resources
            .into_iter()
            .flat_map(|r| r.agents)
            .find(|a| a.id == agent_id)?;
        let agent_json = json["resources"]
            .as_array()?
            .iter()
            .flat_map(|r| r["agents"].as_array().into_iter().flatten())
            .find(|a| a["id"] == json!(agent_id))?
            .clone();
        Some((agent, agent_json))
    }
}

/// `codersdk.WorkspaceStatus` from the job status, as `coderd` derives it.
pub(crate) fn build_status(
    job: ProvisionerJobStatus,
    transition: WorkspaceTransition,
) -> WorkspaceStatus {
    use ProvisionerJobStatus as J;
    use WorkspaceTransition as T;
    match (job, transition) {
        (J::Pending, _) => WorkspaceStatus::Pending,
        (J::Running, T::Stop) => WorkspaceStatus::Stopping,
        (J::Running, T::Delete) => WorkspaceStatus::Deleting,
        (J::Running, _) => WorkspaceStatus::Starting,
        (J::Succeeded, T::Stop) => WorkspaceStatus::Stopped,
        (J::Succeeded, T::Delete) => WorkspaceStatus::Deleted,
        (J::Succeeded, _) => WorkspaceStatus::Running,
        (J::Canceling, _) => WorkspaceStatus::Canceling,
        (J::Canceled, _) => WorkspaceStatus::Canceled,
        (J::Failed, _) | (J::Unknown, _) => WorkspaceStatus::Failed,
    }
}

/// `WorkspaceAgent.health` with `coderd`'s reasons.
fn agent_health(a: &WorkspaceAgent) -> WorkspaceAgentHealth {
    let reason = match a.status {
        WorkspaceAgentStatus::Connecting => "agent is not running",
        WorkspaceAgentStatus::Timeout => "agent is taking too long to connect",
        WorkspaceAgentStatus::Disconnected => "agent has lost connection",
        _ => match a.lifecycle_state {
            WorkspaceAgentLifecycle::StartError => "agent startup script exited with an error",
            WorkspaceAgentLifecycle::ShuttingDown
            | WorkspaceAgentLifecycle::ShutdownTimeout
            | WorkspaceAgentLifecycle::ShutdownError
            | WorkspaceAgentLifecycle::Off => "agent is shutting down",
            _ => "",
        },
    };
    WorkspaceAgentHealth {
        healthy: reason.is_empty(),
        reason: reason.to_string(),
    }
}
