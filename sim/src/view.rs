//! [`SimView`]: what tests can ask of the deployment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::faults::RecordedRequest;
use super::state::State;
use coder_api::{Workspace, WorkspaceBuild};

/// A read-only snapshot of the deployment, for [`super::SimCoder::wait_until`].
#[derive(Clone, Debug)]
pub struct SimView {
    workspaces: Vec<Workspace>,
    builds: Vec<WorkspaceBuild>,
    held: usize,
    creates_past_name_check: usize,
    open_streams: usize,
    requests: Vec<RecordedRequest>,
    job_logs: HashMap<Uuid, usize>,
    agent_logs: HashMap<Uuid, usize>,
    claimable: HashMap<Uuid, usize>,
}

impl SimView {
    pub(crate) fn capture(st: &State) -> SimView {
        let mut builds = Vec::new();
        let mut job_logs = HashMap::new();
        for ws in &st.workspaces {
            for b in &ws.builds {
                job_logs.insert(b.id, b.logs.len());
                if let Some((typed, _)) = st.render_build(ws, b) {
                    builds.push(typed);
                }
            }
        }
        SimView {
            workspaces: st
                .workspaces
                .iter()
                .filter_map(|w| w.history.last().map(|s| s.workspace.clone()))
                .collect(),
            builds,
            held: st.held_builds(),
            creates_past_name_check: st.creates_past_name_check,
            open_streams: st.open_watch_streams,
            requests: st.requests(),
            job_logs,
            agent_logs: st.agent_logs.iter().map(|(id, l)| (*id, l.len())).collect(),
            claimable: st
                .templates
                .iter()
                .flat_map(|t| t.presets.iter())
                .map(|p| (p.id, st.claimable_prebuilds(p.id)))
                .collect(),
        }
    }

    /// All workspaces, deleted ones included.
    pub fn workspaces(&self) -> Vec<Workspace> {
        self.workspaces.clone()
    }

    pub fn workspace(&self, id: Uuid) -> Option<Workspace> {
        self.workspaces.iter().find(|w| w.id == id).cloned()
    }

    /// Any build (not only the latest of its workspace).
    pub fn build(&self, build_id: Uuid) -> Option<WorkspaceBuild> {
        self.builds.iter().find(|b| b.id == build_id).cloned()
    }

    /// Creates that have passed the name check while creates are held after it (see
    /// `SimCoder::hold_creates_after_name_check`), in all.
    pub fn creates_past_name_check(&self) -> usize {
        self.creates_past_name_check
    }

    /// Builds currently waiting at their plan's hold point.
    pub fn held_builds(&self) -> usize {
        self.held
    }

    /// Open `watch-ws` and SSE `watch` connections.
    pub fn open_watch_streams(&self) -> usize {
        self.open_streams
    }

    /// Requests matching like [`SimView::requests_matching`] that have no answer yet
    /// (held, or still being handled).
    pub fn pending_requests(&self, method: impl AsRef<str>, path_contains: &str) -> usize {
        let method = method.as_ref();
        self.requests
            .iter()
            .filter(|r| r.status == 0 && r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Requests so far whose method is `method` and whose path contains `path_contains`.
    pub fn requests_matching(&self, method: impl AsRef<str>, path_contains: &str) -> usize {
        let method = method.as_ref();
        self.requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    pub fn requests(&self) -> &[RecordedRequest] {
        &self.requests
    }

    /// When the build's provisioner job completed (any final status).
    pub fn job_completed_at(&self, build_id: Uuid) -> Option<DateTime<Utc>> {
        self.builds
            .iter()
            .find(|b| b.id == build_id)
            .and_then(|b| b.job.completed_at)
    }

    /// How many provisioner log lines the build has so far.
    pub fn job_log_count(&self, build_id: Uuid) -> usize {
        self.job_logs.get(&build_id).copied().unwrap_or(0)
    }

    /// How many prebuilt workspaces of the preset a create could claim now.
    pub fn claimable_prebuilds(&self, preset_id: Uuid) -> usize {
        self.claimable.get(&preset_id).copied().unwrap_or(0)
    }

    /// How many startup log lines the agent has sent so far.
    pub fn agent_log_count(&self, agent_id: Uuid) -> usize {
        self.agent_logs.get(&agent_id).copied().unwrap_or(0)
    }
}
