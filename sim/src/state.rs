//! The deployment model and the changes the API and the build tasks make to it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::faults::{Fault, RecordedRequest};
use super::lifecycle::{BuildPlan, BuildStart, LogLine};
use super::oauth::OAuthState;
use super::routes::ApiError;
use super::seed::{PresetSpec, TemplateSpec};
use super::validation;
use coder_api::*;

/// The deployment's only organization.
pub(crate) struct Org {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    /// The (non-login) user that "uploaded" every template.
    pub admin_id: Uuid,
}

pub(crate) struct SimUser {
    pub user: User,
    pub token: String,
}

pub(crate) struct SimTemplate {
    pub template: Template,
    pub version_id: Uuid,
    pub version_name: String,
    pub version_job_id: Uuid,
    pub params: Vec<TemplateVersionParameter>,
    pub plan: BuildPlan,
    /// The active version's presets (`GET /templateversions/{id}/presets`).
    pub presets: Vec<Preset>,
    /// How the start build of a claimed prebuilt workspace behaves: short, since the
    /// resources exist and the agent only reinitialises.
    pub claim_plan: BuildPlan,
}

/// The id of Coder's `prebuilds` system user, which owns prebuilt workspaces until
/// they are claimed.
pub const PREBUILDS_USER_ID: Uuid = Uuid::from_u128(0xc42fdf75_3097_471c_8c33_fb52454d81c0);

pub(crate) struct SimWorkspace {
    pub id: Uuid,
    pub name: String,
    pub owner_id: Uuid,
    pub template_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
    /// Oldest first; never empty.
    pub builds: Vec<SimBuild>,
    /// Every distinct rendering of the workspace, oldest first (see the module docs of
    /// `sim` on why streams replay them all).
    pub history: Vec<Arc<Snapshot>>,
}

pub(crate) struct SimBuild {
    pub id: Uuid,
    pub number: i64,
    pub transition: WorkspaceTransition,
    pub template_version_id: Uuid,
    pub initiator_id: Uuid,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub job: ProvisionerJob,
    pub logs: Vec<ProvisionerJobLog>,
    pub resources: Vec<WorkspaceResource>,
    pub parameters: Vec<WorkspaceBuildParameter>,
    /// The plan said to hold this build...
    pub hold: bool,
    /// ...`release_builds()` said to stop holding it...
    pub release_requested: bool,
    /// ...and it is waiting at the hold point right now.
    pub held: bool,
    pub cancel: CancellationToken,
    pub agent_cancel: CancellationToken,
    pub resource: ResourceKind,
    pub agent_id: Uuid,
    pub log_source_id: Uuid,
    /// The preset the build was made with (`template_version_preset_id`).
    pub preset_id: Option<Uuid>,
}

/// The Terraform resources a template's builds create.
#[derive(Clone, Debug)]
pub(crate) struct ResourceKind {
    pub kind: &'static str,
    pub name: &'static str,
    pub icon: &'static str,
    pub volume_kind: &'static str,
    pub volume_name: &'static str,
}

impl ResourceKind {
    fn for_template(name: &str) -> ResourceKind {
        if name.contains("kube") || name.contains("k8s") {
            ResourceKind {
                kind: "kubernetes_deployment",
                name: "main",
                icon: "/icon/k8s.png",
                volume_kind: "kubernetes_persistent_volume_claim",
                volume_name: "home",
            }
        } else if name.contains("aws") || name.contains("ec2") {
            ResourceKind {
                kind: "aws_instance",
                name: "dev",
                icon: "/icon/aws.png",
                volume_kind: "aws_ebs_volume",
                volume_name: "home",
            }
        } else {
            ResourceKind {
                kind: "docker_container",
                name: "workspace",
                icon: "/icon/docker.png",
                volume_kind: "docker_volume",
                volume_name: "home_volume",
            }
        }
    }
}

/// A workspace as the API renders it: typed, and as the JSON actually sent (the typed
/// value plus fields `types.rs` does not model).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub workspace: Workspace,
    pub json: Value,
}

pub(crate) struct State {
    pub org: Org,
    pub users: Vec<SimUser>,
    pub templates: Vec<SimTemplate>,
    pub workspaces: Vec<SimWorkspace>,
    /// Every request with its arrival number (the number survives `clear_requests`).
    requests: Vec<(u64, RecordedRequest)>,
    next_request: u64,
    pub faults: Vec<Fault>,
    /// Requests matching one of these (method, path fragment) wait before being
    /// processed until [`super::SimCoder::release_requests`].
    pub holds: Vec<(http::Method, String)>,
    /// Creates wait between coderd's name check and its insert (see
    /// `SimCoder::hold_creates_after_name_check`), and how many are waiting there.
    pub create_race: bool,
    pub creates_past_name_check: usize,
    /// Requests processed but whose answers are held (see `SimCoder::hold_responses`).
    pub response_holds: Vec<(http::Method, String)>,
    pub watch_ws_supported: bool,
    pub watch_sse_supported: bool,
    pub open_watch_streams: usize,
    pub agent_logs: HashMap<Uuid, Vec<WorkspaceAgentLog>>,
    next_job_log_id: i64,
    next_agent_log_id: i64,
    pub provisioner_id: Uuid,
    /// Workspaces changed since their last snapshot: only these are re-rendered, so a
    /// change costs O(1) renders, not one per workspace (1,000-session benchmarks).
    pub(crate) dirty: std::collections::HashSet<Uuid>,
    /// Coder's OAuth2 provider: apps, codes and issued tokens.
    pub oauth: OAuthState,
}

const DEPLOYMENT_VERSION: &str = "v2.24.1-sim";

impl State {
    pub fn new() -> State {
        State {
            org: Org {
                id: Uuid::new_v4(),
                name: "coder".to_string(),
                display_name: "Coder".to_string(),
                admin_id: Uuid::new_v4(),
            },
            users: Vec::new(),
            templates: Vec::new(),
            workspaces: Vec::new(),
            requests: Vec::new(),
            next_request: 0,
            faults: Vec::new(),
            holds: Vec::new(),
            create_race: false,
            creates_past_name_check: 0,
            response_holds: Vec::new(),
            watch_ws_supported: true,
            watch_sse_supported: true,
            open_watch_streams: 0,
            agent_logs: HashMap::new(),
            next_job_log_id: 1,
            next_agent_log_id: 1,
            provisioner_id: Uuid::new_v4(),
            dirty: Default::default(),
            oauth: OAuthState::default(),
        }
    }

    pub fn version() -> &'static str {
        DEPLOYMENT_VERSION
    }

    // ----- request log -----

    pub fn record_request(&mut self, req: RecordedRequest) -> u64 {
        let seq = self.next_request;
        self.next_request += 1;
        self.requests.push((seq, req));
        seq
    }

    pub fn set_request_status(&mut self, seq: u64, status: u16) {
        if let Some((_, r)) = self.requests.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.status = status;
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// How many builds wait at their plan's hold point.
    pub fn held_builds(&self) -> usize {
        self.workspaces
            .iter()
            .flat_map(|w| &w.builds)
            .filter(|b| b.held)
            .count()
    }

    pub fn clear_requests(&mut self) {
        self.requests.clear();
    }

    // ----- users and templates -----

    pub fn add_user(&mut self, username: &str, token: &str) -> &User {
        self.users.retain(|u| u.user.username != username);
        self.users.push(SimUser {
            user: User {
                id: Uuid::new_v4(),
                username: username.to_string(),
                email: format!("{username}@example.com"),
                created_at: Utc::now(),
                name: String::new(),
                status: Some("active".to_string()),
                organization_ids: vec![self.org.id],
            },
            token: token.to_string(),
        });
        &self.users.last().expect("just pushed").user
    }

    pub fn add_template(&mut self, spec: TemplateSpec) -> Template {
        let now = Utc::now();
        let id = Uuid::new_v4();
        let version_id = Uuid::new_v4();
        let resource = ResourceKind::for_template(&spec.name);
        let template = Template {
            id,
            name: spec.name.clone(),
            display_name: spec.display_name,
            description: spec.description,
            icon: resource.icon.to_string(),
            organization_id: self.org.id,
            organization_name: self.org.name.clone(),
            organization_display_name: self.org.display_name.clone(),
            active_version_id: version_id,
            active_user_count: spec.active_user_count,
            deprecated: spec.deprecated,
            deprecation_message: if spec.deprecated {
                format!("The {} template is no longer maintained.", spec.name)
            } else {
                String::new()
            },
            created_at: now,
            updated_at: now,
        };
        let params = spec
            .parameters
            .into_iter()
            .map(|mut p| {
                // coderd always reports a type; "string" is Terraform's default.
                if p.kind.is_empty() {
                    p.kind = "string".to_string();
                }
                p
            })
            .collect();
        self.templates.push(SimTemplate {
            template: template.clone(),
            version_id,
            version_name: format!("{}-v1", spec.name),
            version_job_id: Uuid::new_v4(),
            params,
            plan: BuildPlan::default(),
            presets: Vec::new(),
            claim_plan: BuildPlan::claim(),
        });
        template
    }

    /// Replaces the active version's presets, and fills each preset's prebuild pool with
    /// `prebuilds` ready workspaces owned by the `prebuilds` user.
    pub fn set_presets(&mut self, template_id: Uuid, specs: Vec<PresetSpec>) -> Vec<Preset> {
        let Some(tmpl) = self
            .templates
            .iter_mut()
            .find(|t| t.template.id == template_id)
        else {
            tracing::warn!(%template_id, "set_presets: no such template");
            return Vec::new();
        };
        let presets: Vec<Preset> = specs
            .iter()
            .map(|spec| {
                let values: Vec<PresetParameter> = spec
                    .parameters
                    .iter()
                    .map(|(name, value)| PresetParameter {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect();
                Preset {
                    id: Uuid::new_v4(),
                    name: spec.name.clone(),
                    // Go's nil slice: `null` on the wire.
                    parameters: (!values.is_empty()).then_some(values),
                    default: spec.default,
                    desired_prebuild_instances: spec.prebuilds,
                    description: spec.description.clone(),
                    icon: spec.icon.clone(),
                }
            })
            .collect();
        tmpl.presets = presets.clone();
        for preset in &presets {
            for _ in 0..preset.desired_prebuild_instances.unwrap_or(0).max(0) {
                self.add_ready_prebuild(template_id, preset.id);
            }
        }
        presets
    }

    /// The `prebuilds` system user (made the first time it is needed).
    fn ensure_prebuilds_user(&mut self) {
        if self.user(PREBUILDS_USER_ID).is_none() {
            self.users.push(SimUser {
                user: User {
                    id: PREBUILDS_USER_ID,
                    username: "prebuilds".to_string(),
                    email: "prebuilds@system".to_string(),
                    created_at: Utc::now(),
                    name: String::new(),
                    status: Some("active".to_string()),
                    organization_ids: vec![self.org.id],
                },
                // Nobody signs in as it.
                token: String::new(),
            });
        }
    }

    /// One more prebuilt workspace of `preset`, already built and ready (the
    /// reconciliation loop's work, done at once): owned by `prebuilds`, a random name,
    /// build 1 with the preset's values.
    pub fn add_ready_prebuild(&mut self, template_id: Uuid, preset_id: Uuid) -> Option<Uuid> {
        self.ensure_prebuilds_user();
        let tmpl = self.template(template_id)?;
        let preset = tmpl.presets.iter().find(|p| p.id == preset_id)?;
        let values: Vec<WorkspaceBuildParameter> = preset
            .values()
            .iter()
            .map(|p| WorkspaceBuildParameter {
                name: p.name.clone(),
                value: p.value.clone(),
            })
            .collect();
        let parameters = validation::resolve_parameters(&tmpl.params, &values, &[]).ok()?;
        let resource = ResourceKind::for_template(&tmpl.template.name);
        let version_id = tmpl.version_id;
        let now = Utc::now();
        let id = Uuid::new_v4();
        let mut build = SimBuild {
            id: Uuid::new_v4(),
            number: 1,
            transition: WorkspaceTransition::Start,
            template_version_id: version_id,
            initiator_id: PREBUILDS_USER_ID,
            reason: "initiator".to_string(),
            created_at: now,
            updated_at: now,
            job: ProvisionerJob {
                id: Uuid::new_v4(),
                status: ProvisionerJobStatus::Succeeded,
                error: String::new(),
                error_code: None,
                created_at: now,
                started_at: Some(now),
                completed_at: Some(now),
                canceled_at: None,
                queue_position: 0,
                queue_size: 0,
            },
            logs: Vec::new(),
            resources: Vec::new(),
            parameters,
            hold: false,
            release_requested: false,
            held: false,
            cancel: CancellationToken::new(),
            agent_cancel: CancellationToken::new(),
            resource,
            agent_id: Uuid::new_v4(),
            log_source_id: Uuid::new_v4(),
            preset_id: Some(preset_id),
        };
        build.resources = build_resources(&build, now);
        for agent in build.resources.iter_mut().flat_map(|r| r.agents.iter_mut()) {
            agent.status = WorkspaceAgentStatus::Connected;
            agent.lifecycle_state = WorkspaceAgentLifecycle::Ready;
            agent.first_connected_at = Some(now);
            agent.last_connected_at = Some(now);
            agent.started_at = Some(now);
            agent.ready_at = Some(now);
            agent.version = DEPLOYMENT_VERSION.to_string();
        }
        let name = format!("prebuild-{}", &Uuid::new_v4().simple().to_string()[..8]);
        self.workspaces.push(SimWorkspace {
            id,
            name,
            owner_id: PREBUILDS_USER_ID,
            template_id,
            created_at: now,
            updated_at: now,
            deleted: false,
            builds: vec![build],
            history: Vec::new(),
        });
        self.dirty.insert(id);
        Some(id)
    }

    /// A prebuilt workspace of `preset` that a create can claim, as coderd's
    /// `ClaimPrebuiltWorkspace` picks one: owned by `prebuilds`, its latest build a
    /// succeeded start of the template's active version with that preset, every agent
    /// ready.
    pub fn claimable_prebuild(&self, template_id: Uuid, preset_id: Uuid) -> Option<Uuid> {
        let tmpl = self.template(template_id)?;
        self.workspaces
            .iter()
            .find(|w| claimable(w, tmpl, preset_id))
            .map(|w| w.id)
    }

    /// How many prebuilt workspaces of `preset_id` can be claimed now.
    pub fn claimable_prebuilds(&self, preset_id: Uuid) -> usize {
        let Some(tmpl) = self
            .templates
            .iter()
            .find(|t| t.presets.iter().any(|p| p.id == preset_id))
        else {
            return 0;
        };
        self.workspaces
            .iter()
            .filter(|w| claimable(w, tmpl, preset_id))
            .count()
    }

    pub fn user(&self, id: Uuid) -> Option<&User> {
        self.users.iter().map(|u| &u.user).find(|u| u.id == id)
    }

    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.token == token)
            .map(|u| &u.user)
    }

    /// `me`, a username or a user ID, as in `/users/{user}`.
    pub fn resolve_user(&self, param: &str, caller: Uuid) -> Option<&User> {
        if param == "me" {
            return self.user(caller);
        }
        if let Ok(id) = Uuid::parse_str(param) {
            return self.user(id);
        }
        self.users
            .iter()
            .map(|u| &u.user)
            .find(|u| u.username.eq_ignore_ascii_case(param))
    }

    pub fn template(&self, id: Uuid) -> Option<&SimTemplate> {
        self.templates.iter().find(|t| t.template.id == id)
    }

    pub fn template_by_version(&self, version_id: Uuid) -> Option<&SimTemplate> {
        self.templates.iter().find(|t| t.version_id == version_id)
    }

    // ----- workspaces, builds and agents -----

    pub fn workspace(&self, id: Uuid) -> Option<&SimWorkspace> {
        self.workspaces.iter().find(|w| w.id == id)
    }

    pub fn workspace_mut(&mut self, id: Uuid) -> Option<&mut SimWorkspace> {
        self.dirty.insert(id);
        self.workspaces.iter_mut().find(|w| w.id == id)
    }

    pub fn find_build(&self, build_id: Uuid) -> Option<(&SimWorkspace, &SimBuild)> {
        self.workspaces
            .iter()
            .find_map(|w| w.builds.iter().find(|b| b.id == build_id).map(|b| (w, b)))
    }

    pub fn build(&self, build_id: Uuid) -> Option<&SimBuild> {
        self.find_build(build_id).map(|(_, b)| b)
    }

    fn build_mut(&mut self, build_id: Uuid) -> Option<&mut SimBuild> {
        let ws = self
            .workspaces
            .iter_mut()
            .find(|w| w.builds.iter().any(|b| b.id == build_id))?;
        self.dirty.insert(ws.id);
        ws.builds.iter_mut().find(|b| b.id == build_id)
    }

    pub fn find_agent(&self, agent_id: Uuid) -> Option<(&SimWorkspace, &SimBuild)> {
        self.workspaces.iter().find_map(|w| {
            w.builds
                .iter()
                .find(|b| {
                    b.resources
                        .iter()
                        .any(|r| r.agents.iter().any(|a| a.id == agent_id))
                })
                .map(|b| (w, b))
        })
    }

    fn agent_mut(&mut self, agent_id: Uuid) -> Option<&mut WorkspaceAgent> {
        let has_agent = |w: &SimWorkspace| {
            w.builds
                .iter()
                .flat_map(|b| b.resources.iter())
                .any(|r| r.agents.iter().any(|a| a.id == agent_id))
        };
        let ws = self.workspaces.iter_mut().find(|w| has_agent(w))?;
        self.dirty.insert(ws.id);
        ws.builds
            .iter_mut()
            .flat_map(|b| b.resources.iter_mut())
            .flat_map(|r| r.agents.iter_mut())
            .find(|a| a.id == agent_id)
    }

    /// Validates a create request the way `coderd` does (in its order) and inserts the
    /// workspace with build 1.
    /// Whether `owner` has a live workspace called `name` (coderd compares `LOWER(name)`).
    pub fn name_taken(&self, owner: Uuid, name: &str) -> bool {
        self.workspaces
            .iter()
            .any(|w| !w.deleted && w.owner_id == owner && w.name.eq_ignore_ascii_case(name))
    }

    /// Creates a workspace. `raced`: the name was checked free before this call (coderd's
    /// check before its insert), so a taken name now is the insert's 500, not a 409.
    pub fn create_workspace(
        &mut self,
        owner_id: Uuid,
        initiator_id: Uuid,
        req: &CreateWorkspaceRequest,
        raced: bool,
    ) -> Result<(Uuid, BuildStart), ApiError> {
        if validation::name_valid(&req.name).is_err() {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "Validation failed.").validation(
                    "name",
                    format!(
                        "Validation failed for tag \"workspace_name\" with value: \"{}\"",
                        req.name
                    ),
                ),
            );
        }
        let template_id = match (req.template_id, req.template_version_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid request").validation(
                    "template_version_id",
                    "You must only specify either template_version_id or template_id, not both.",
                ));
            }
            (None, None) => {
                return Err(
                    ApiError::new(StatusCode::BAD_REQUEST, "Invalid request").validation(
                        "template_id",
                        "You must specify either template_id or template_version_id.",
                    ),
                );
            }
            (Some(id), None) => match self.template(id) {
                Some(t) => t.template.id,
                None => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("Template {:?} doesn't exist.", id.to_string()),
                    )
                    .validation("template_id", "template not found"));
                }
            },
            (None, Some(version)) => match self.template_by_version(version) {
                Some(t) => t.template.id,
                None => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("Template version {:?} doesn't exist.", version.to_string()),
                    )
                    .validation("template_version_id", "template not found"));
                }
            },
        };
        if self.name_taken(owner_id, &req.name) {
            if raced {
                // coderd checked the name before a concurrent create inserted it: the
                // insert hits the unique index, and coderd answers 500.
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error creating workspace.",
                )
                .detail(
                    "insert workspace: pq: duplicate key value violates unique constraint \"workspaces_owner_id_lower_idx\"",
                ));
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("Workspace {:?} already exists.", req.name),
            )
            .validation("name", "This value is already in use and should be unique."));
        }
        let tmpl = self.template(template_id).expect("resolved above");
        // The preset: the one named (it must be one of the version's), else, like newer
        // coderd (`FindMatchingPresetID`), the preset all of whose values the request
        // gives, the one fixing the most parameters first.
        let preset = match req.template_version_preset_id {
            Some(preset_id) => Some(
                tmpl.presets
                    .iter()
                    .find(|p| p.id == preset_id)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "Template version preset not found.",
                        )
                        .validation(
                            "template_version_preset_id",
                            "the preset does not belong to the template version being built",
                        )
                    })?
                    .clone(),
            ),
            None => matching_preset(&tmpl.presets, &req.rich_parameter_values).cloned(),
        };
        // Preset values silently win over the request's (wsbuilder, dynamicparameters).
        let mut values = req.rich_parameter_values.clone();
        if let Some(preset) = &preset {
            for fixed in preset.values() {
                values.retain(|v| v.name != fixed.name);
                values.push(WorkspaceBuildParameter {
                    name: fixed.name.clone(),
                    value: fixed.value.clone(),
                });
            }
        }
        // Validate before inserting: coderd builds in the same transaction, so a
        // rejected parameter leaves no workspace behind.
        validation::resolve_parameters(&tmpl.params, &values, &[])?;

        let now = Utc::now();
        // A free prebuilt workspace of the preset is claimed (in the create's
        // transaction): it changes hands and names, and a short start build follows.
        if let Some(preset) = &preset
            && let Some(claimed) = self.claimable_prebuild(template_id, preset.id)
        {
            let ws = self.workspace_mut(claimed).expect("found above");
            ws.owner_id = owner_id;
            ws.name = req.name.clone();
            ws.updated_at = now;
            let start = self.queue_build(
                claimed,
                WorkspaceTransition::Start,
                initiator_id,
                "initiator",
                values,
                BuildKind::Claim(preset.id),
            )?;
            return Ok((claimed, start));
        }
        let id = Uuid::new_v4();
        self.workspaces.push(SimWorkspace {
            id,
            name: req.name.clone(),
            owner_id,
            template_id,
            created_at: now,
            updated_at: now,
            deleted: false,
            builds: Vec::new(),
            history: Vec::new(),
        });
        let start = self.queue_build(
            id,
            WorkspaceTransition::Start,
            initiator_id,
            "initiator",
            values,
            BuildKind::New(preset.map(|p| p.id)),
        );
        match start {
            Ok(start) => Ok((id, start)),
            Err(err) => {
                self.workspaces.retain(|w| w.id != id);
                Err(err)
            }
        }
    }

    /// Queues a build (like `wsbuilder`): 409 while the previous job is active.
    pub fn new_build(
        &mut self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Uuid,
        reason: &str,
        values: Vec<WorkspaceBuildParameter>,
    ) -> Result<BuildStart, ApiError> {
        self.queue_build(
            workspace_id,
            transition,
            initiator_id,
            reason,
            values,
            BuildKind::Next,
        )
    }

    fn queue_build(
        &mut self,
        workspace_id: Uuid,
        transition: WorkspaceTransition,
        initiator_id: Uuid,
        reason: &str,
        values: Vec<WorkspaceBuildParameter>,
        kind: BuildKind,
    ) -> Result<BuildStart, ApiError> {
        let ws = self
            .workspace(workspace_id)
            .ok_or_else(ApiError::not_found)?;
        if ws.deleted {
            return Err(ApiError::gone(ws.id));
        }
        let tmpl = self
            .template(ws.template_id)
            .ok_or_else(ApiError::not_found)?;
        let last = ws.builds.last();
        if let Some(last) = last
            && matches!(
                last.job.status,
                ProvisionerJobStatus::Pending
                    | ProvisionerJobStatus::Running
                    | ProvisionerJobStatus::Canceling
            )
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "A workspace build is already active.",
            )
            .detail("A workspace build is already active."));
        }
        // A claim builds the values of the create, not the prebuild's: the request is
        // checked as a new workspace's.
        let last_values = match kind {
            BuildKind::Claim(_) => Vec::new(),
            _ => last.map(|b| b.parameters.clone()).unwrap_or_default(),
        };
        let parameters = validation::resolve_parameters(&tmpl.params, &values, &last_values)?;
        let plan = match (transition, kind) {
            (WorkspaceTransition::Start, BuildKind::Claim(_)) => tmpl.claim_plan.clone(),
            (WorkspaceTransition::Start, _) => tmpl.plan.clone(),
            _ => BuildPlan::default(),
        };
        let preset_id = match kind {
            BuildKind::New(preset) => preset,
            BuildKind::Claim(preset) => Some(preset),
            BuildKind::Next => None,
        };
        let resource = ResourceKind::for_template(&tmpl.template.name);
        let version_id = tmpl.version_id;
        let number = last.map_or(1, |b| b.number + 1);
        let now = Utc::now();
        let build = SimBuild {
            id: Uuid::new_v4(),
            number,
            transition,
            template_version_id: version_id,
            initiator_id,
            reason: reason.to_string(),
            created_at: now,
            updated_at: now,
            job: ProvisionerJob {
                id: Uuid::new_v4(),
                status: ProvisionerJobStatus::Pending,
                error: String::new(),
                error_code: None,
                created_at: now,
                started_at: None,
                completed_at: None,
                canceled_at: None,
                queue_position: 0,
                queue_size: 0,
            },
            logs: Vec::new(),
            resources: Vec::new(),
            parameters,
            hold: plan.hold && transition == WorkspaceTransition::Start,
            release_requested: false,
            held: false,
            cancel: CancellationToken::new(),
            agent_cancel: CancellationToken::new(),
            resource: resource.clone(),
            agent_id: Uuid::new_v4(),
            log_source_id: Uuid::new_v4(),
            preset_id,
        };
        let start = BuildStart {
            workspace_id,
            build_id: build.id,
            transition,
            plan,
            cancel: build.cancel.clone(),
            agent_cancel: build.agent_cancel.clone(),
            resource,
            agent_id: build.agent_id,
        };
        let ws = self.workspace_mut(workspace_id).expect("looked up above");
        ws.builds.push(build);
        Ok(start)
    }

    pub fn mark_running(&mut self, build_id: Uuid) {
        if let Some(b) = self.build_mut(build_id)
            && b.job.status == ProvisionerJobStatus::Pending
        {
            let now = Utc::now();
            b.job.status = ProvisionerJobStatus::Running;
            b.job.started_at = Some(now);
            b.updated_at = now;
        }
    }

    pub fn set_held(&mut self, build_id: Uuid, held: bool) {
        if let Some(b) = self.build_mut(build_id) {
            b.held = held;
        }
    }

    pub fn push_job_log(&mut self, build_id: Uuid, line: &LogLine) {
        let id = self.next_job_log_id;
        if let Some(b) = self.build_mut(build_id) {
            b.logs.push(ProvisionerJobLog {
                id,
                created_at: Utc::now(),
                log_source: Some(
                    if line.daemon {
                        "provisioner_daemon"
                    } else {
                        "provisioner"
                    }
                    .to_string(),
                ),
                log_level: Some(line.level),
                stage: line.stage.to_string(),
                output: line.output.clone(),
            });
            self.next_job_log_id += 1;
        }
    }

    /// `PATCH /workspacebuilds/{id}/cancel`: a pending job is canceled at once, a
    /// running one goes `canceling` until its build task acknowledges.
    pub fn request_cancel(&mut self, build_id: Uuid) -> Result<(), ApiError> {
        let b = self.build_mut(build_id).ok_or_else(ApiError::not_found)?;
        if b.job.completed_at.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Job has already completed!",
            ));
        }
        if b.job.canceled_at.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Job has already been marked as canceled!",
            ));
        }
        let now = Utc::now();
        b.job.canceled_at = Some(now);
        b.updated_at = now;
        if b.job.status == ProvisionerJobStatus::Pending {
            b.job.status = ProvisionerJobStatus::Canceled;
            b.job.completed_at = Some(now);
        } else {
            b.job.status = ProvisionerJobStatus::Canceling;
        }
        b.held = false;
        b.cancel.cancel();
        Ok(())
    }

    /// The job reached a final status; a succeeded build gets its resources, and a
    /// succeeded stop or delete takes the previous agents down.
    pub fn finish_job(&mut self, build_id: Uuid, status: ProvisionerJobStatus, error: &str) {
        let Some(ws_id) = self.find_build(build_id).map(|(w, _)| w.id) else {
            return;
        };
        let now = Utc::now();
        let ws = self.workspace_mut(ws_id).expect("found above");
        let b = ws
            .builds
            .iter_mut()
            .find(|b| b.id == build_id)
            .expect("found above");
        if b.job.status.is_terminal() {
            return;
        }
        // A job that finishes after a cancel request counts as canceled (coderd
        // derives the status from canceled_at + completed_at).
        let status = if status == ProvisionerJobStatus::Succeeded && b.job.canceled_at.is_some() {
            ProvisionerJobStatus::Canceled
        } else {
            status
        };
        b.job.status = status;
        b.job.error = error.to_string();
        b.job.completed_at = Some(now);
        b.updated_at = now;
        b.held = false;
        if status != ProvisionerJobStatus::Succeeded {
            return;
        }
        b.resources = build_resources(b, now);
        let transition = b.transition;
        if transition == WorkspaceTransition::Start {
            return;
        }
        for old in ws.builds.iter_mut().filter(|o| o.id != build_id) {
            old.agent_cancel.cancel();
            for agent in old.resources.iter_mut().flat_map(|r| r.agents.iter_mut()) {
                if agent.status != WorkspaceAgentStatus::Disconnected {
                    agent.status = WorkspaceAgentStatus::Disconnected;
                    agent.disconnected_at = Some(now);
                }
                agent.lifecycle_state = WorkspaceAgentLifecycle::Off;
                agent.updated_at = now;
            }
        }
        if transition == WorkspaceTransition::Delete {
            ws.deleted = true;
            ws.updated_at = now;
        }
    }

    pub fn agent_connected(&mut self, agent_id: Uuid) {
        if let Some(a) = self.agent_mut(agent_id) {
            let now = Utc::now();
            a.status = WorkspaceAgentStatus::Connected;
            a.first_connected_at = Some(now);
            a.last_connected_at = Some(now);
            a.lifecycle_state = WorkspaceAgentLifecycle::Starting;
            a.started_at = Some(now);
            a.version = DEPLOYMENT_VERSION.to_string();
            a.updated_at = now;
        }
    }

    pub fn push_agent_log(&mut self, agent_id: Uuid, output: &str) {
        let Some(source_id) = self
            .find_agent(agent_id)
            .map(|(_, build)| build.log_source_id)
        else {
            return;
        };
        let id = self.next_agent_log_id;
        self.next_agent_log_id += 1;
        self.agent_logs
            .entry(agent_id)
            .or_default()
            .push(WorkspaceAgentLog {
                id,
                created_at: Utc::now(),
                output: output.to_string(),
                level: Some(LogLevel::Info),
                source_id: Some(source_id),
            });
    }

    pub fn agent_lifecycle_done(&mut self, agent_id: Uuid, end: WorkspaceAgentLifecycle) {
        if let Some(a) = self.agent_mut(agent_id) {
            let now = Utc::now();
            a.lifecycle_state = end;
            // coderd sets ready_at whenever the scripts end, also on errors.
            a.ready_at = Some(now);
            a.updated_at = now;
        }
    }
}

/// What a queued build is.
#[derive(Clone, Copy)]
enum BuildKind {
    /// The first build of a new workspace, with the preset it was created with.
    New(Option<Uuid>),
    /// The start build of a claimed prebuilt workspace.
    Claim(Uuid),
    /// A later build (start, stop, delete).
    Next,
}

/// The preset whose values all appear in `values` (newer coderd's
/// `FindMatchingPresetID`), the one fixing the most parameters first. A preset fixing
/// nothing matches nothing here (whether it matches everything upstream is unverified).
fn matching_preset<'a>(
    presets: &'a [Preset],
    values: &[WorkspaceBuildParameter],
) -> Option<&'a Preset> {
    presets
        .iter()
        .filter(|p| !p.values().is_empty())
        .filter(|p| {
            p.values().iter().all(|fixed| {
                values
                    .iter()
                    .any(|v| v.name == fixed.name && v.value == fixed.value)
            })
        })
        .max_by_key(|p| p.values().len())
}

/// Whether `ws` is a prebuilt workspace of `preset_id` that a create can claim.
fn claimable(ws: &SimWorkspace, tmpl: &SimTemplate, preset_id: Uuid) -> bool {
    ws.owner_id == PREBUILDS_USER_ID
        && !ws.deleted
        && ws.template_id == tmpl.template.id
        && ws.builds.last().is_some_and(|b| {
            b.transition == WorkspaceTransition::Start
                && b.job.status == ProvisionerJobStatus::Succeeded
                && b.template_version_id == tmpl.version_id
                && b.preset_id == Some(preset_id)
                && b.resources
                    .iter()
                    .flat_map(|r| r.agents.iter())
                    .all(|a| a.lifecycle_state == WorkspaceAgentLifecycle::Ready)
        })
}

/// The resources a succeeded build leaves: a start build's compute resource with its
/// agent, or the persistent volume that survives a stop. A delete leaves nothing.
fn build_resources(b: &SimBuild, now: DateTime<Utc>) -> Vec<WorkspaceResource> {
    let r = &b.resource;
    match b.transition {
        WorkspaceTransition::Start => {
            let resource_id = Uuid::new_v4();
            vec![WorkspaceResource {
                id: resource_id,
                job_id: Some(b.job.id),
                name: r.name.to_string(),
                kind: r.kind.to_string(),
                workspace_transition: Some(WorkspaceTransition::Start),
                agents: vec![WorkspaceAgent {
                    id: b.agent_id,
                    name: "main".to_string(),
                    status: WorkspaceAgentStatus::Connecting,
                    lifecycle_state: WorkspaceAgentLifecycle::Created,
                    resource_id: Some(resource_id),
                    operating_system: "linux".to_string(),
                    architecture: "amd64".to_string(),
                    directory: "/home/coder".to_string(),
                    expanded_directory: "/home/coder".to_string(),
                    version: String::new(),
                    connection_timeout_seconds: 120,
                    troubleshooting_url: "https://coder.com/docs/admin/templates/troubleshooting"
                        .to_string(),
                    logs_length: 0,
                    logs_overflowed: false,
                    health: None,
                    first_connected_at: None,
                    last_connected_at: None,
                    disconnected_at: None,
                    started_at: None,
                    ready_at: None,
                    created_at: now,
                    updated_at: now,
                }],
                hide: false,
                icon: r.icon.to_string(),
                created_at: now,
            }]
        }
        WorkspaceTransition::Stop => vec![WorkspaceResource {
            id: Uuid::new_v4(),
            job_id: Some(b.job.id),
            name: r.volume_name.to_string(),
            kind: r.volume_kind.to_string(),
            workspace_transition: Some(WorkspaceTransition::Stop),
            agents: Vec::new(),
            hide: false,
            icon: "/icon/database.svg".to_string(),
            created_at: now,
        }],
        _ => Vec::new(),
    }
}
