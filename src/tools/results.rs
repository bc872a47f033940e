//! The structured results of the tools: the output schemas clients see, generated from
//! these types (and snapshotted in `schemas/`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::coder::types::{Preset, Template, TemplateVersionParameter};
use crate::engine::progress::truncate;
use crate::engine::{AgentStatus, Answer, CallStatus, StartupScripts};

/// Longest template description shown by `list_templates`.
pub const LIST_DESCRIPTION_CHARS: usize = 200;
/// Longest parameter description shown by `read_template`.
pub const PARAMETER_DESCRIPTION_CHARS: usize = 300;

/// One page of templates.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ListTemplatesResult {
    /// The templates on this page, most used first.
    pub templates: Vec<TemplateSummary>,
    /// Templates on this page.
    pub count: usize,
    /// This page's number (from 1).
    pub page: u32,
    /// How many pages there are (at least 1).
    pub total_pages: u32,
    /// How many templates match in all.
    pub total_count: usize,
}

/// A template, briefly.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TemplateSummary {
    /// Pass this to read_template and create_workspace.
    pub id: Uuid,
    /// The template's name (unique in its organization).
    pub name: String,
    /// The name to show people, when it differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// The description, cut to about 200 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The Coder organization the template belongs to.
    pub organization_name: String,
    /// The template version new workspaces are built from.
    pub active_version_id: Uuid,
    /// How many people used the template recently.
    pub active_user_count: i64,
    /// How many presets (tested sets of parameter values) the active version has: when
    /// there are any, call read_template to see them and pass one to create_workspace.
    /// Absent when Coder could not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset_count: Option<usize>,
}

impl From<&Template> for TemplateSummary {
    fn from(t: &Template) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            description: truncate(t.description.trim(), LIST_DESCRIPTION_CHARS),
            organization_name: t.organization_name.clone(),
            active_version_id: t.active_version_id,
            active_user_count: t.active_user_count,
            preset_count: None,
        }
    }
}

/// A template, the parameters of its active version and its presets.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReadTemplateResult {
    pub template: TemplateDetail,
    /// The rich parameters create_workspace accepts in `parameters`.
    pub parameters: Vec<ParameterInfo>,
    /// The template's presets: tested sets of parameter values. Prefer one (the default
    /// one when unsure): pass its name as create_workspace's `preset`. Absent when the
    /// template has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presets: Vec<PresetInfo>,
}

/// A preset: a set of parameter values the template's authors chose and tested.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PresetInfo {
    /// The preset's id (it changes with every template version; the name does not).
    pub id: Uuid,
    /// Pass this (or the id) as create_workspace's `preset`.
    pub name: String,
    /// What the preset is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The parameter values it fixes, by parameter name. create_workspace refuses other
    /// values for these; parameters not listed can still be given.
    pub parameters: BTreeMap<String, String>,
    /// The template's default preset (Coder's dashboard pre-selects it): without
    /// `preset`, create_workspace uses it when the given parameters agree with it.
    pub default: bool,
    /// Coder keeps prebuilt workspaces of this preset ready: a workspace created with it
    /// is usually ready in seconds instead of minutes (when one is free).
    pub prebuilt_workspaces: bool,
}

impl From<&Preset> for PresetInfo {
    fn from(p: &Preset) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            description: truncate(p.description.trim(), PARAMETER_DESCRIPTION_CHARS),
            parameters: p
                .values()
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect(),
            default: p.default,
            prebuilt_workspaces: p.has_prebuilds(),
        }
    }
}

/// A template.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TemplateDetail {
    /// Pass this to create_workspace as `template_id`.
    pub id: Uuid,
    /// The template's name (unique in its organization).
    pub name: String,
    /// The name to show people, when it differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// What the template provides.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The Coder organization the template belongs to.
    pub organization_name: String,
    /// The template version new workspaces are built from (its parameters are listed).
    pub active_version_id: Uuid,
    /// How many people used the template recently.
    pub active_user_count: i64,
    /// Deprecated templates should not be used for new workspaces.
    pub deprecated: bool,
    /// Why the template is deprecated, and what to use instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deprecation_message: String,
}

impl From<&Template> for TemplateDetail {
    fn from(t: &Template) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            description: t.description.clone(),
            organization_name: t.organization_name.clone(),
            active_version_id: t.active_version_id,
            active_user_count: t.active_user_count,
            deprecated: t.deprecated,
            deprecation_message: t.deprecation_message.clone(),
        }
    }
}

/// One rich parameter of a template version.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ParameterInfo {
    /// The key to use in create_workspace's `parameters`.
    pub name: String,
    /// The name to show people, when it differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// What the parameter is for, cut to about 300 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `string`, `number`, `bool` or `list(string)` (pass a JSON array as a string).
    #[serde(rename = "type")]
    pub kind: String,
    /// How Coder's UI shows it (dropdown, radio, slider, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub form_type: String,
    /// Used when the parameter is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// A value must be given (there is no default).
    pub required: bool,
    /// Can be changed after the workspace is created.
    pub mutable: bool,
    /// Applies to one build only.
    pub ephemeral: bool,
    /// When not empty, the value must be one of these `value`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<ParameterOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ParameterValidation>,
}

/// One allowed value of a parameter.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ParameterOption {
    /// The name to show people.
    pub name: String,
    /// The value to pass in create_workspace's `parameters`.
    pub value: String,
    /// What choosing it means.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Constraints on a parameter's value.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ParameterValidation {
    /// The value must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Smallest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// `increasing` or `decreasing`: later builds may only raise or lower the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monotonic: Option<String>,
    /// The message Coder shows when the value is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&TemplateVersionParameter> for ParameterInfo {
    fn from(p: &TemplateVersionParameter) -> Self {
        let description = if p.description_plaintext.trim().is_empty() {
            &p.description
        } else {
            &p.description_plaintext
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let validation = ParameterValidation {
            regex: non_empty(&p.validation_regex),
            min: p.validation_min,
            max: p.validation_max,
            monotonic: p.validation_monotonic.clone().filter(|m| !m.is_empty()),
            error: non_empty(&p.validation_error),
        };
        let has_validation = validation.regex.is_some()
            || validation.min.is_some()
            || validation.max.is_some()
            || validation.monotonic.is_some();
        Self {
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            description: truncate(description.trim(), PARAMETER_DESCRIPTION_CHARS),
            kind: p.kind.clone(),
            form_type: p.form_type.clone(),
            default_value: non_empty(&p.default_value),
            required: p.required,
            mutable: p.mutable,
            ephemeral: p.ephemeral,
            options: p
                .options
                .iter()
                .map(|o| ParameterOption {
                    name: o.name.clone(),
                    value: o.value.clone(),
                    description: o.description.clone(),
                })
                .collect(),
            validation: has_validation.then_some(validation),
        }
    }
}

/// The result of `create_workspace`. Field names follow Coder's own `create_workspace`
/// chat tool (`created`, `workspace_name`, `status`, `message`, `agent_status`,
/// `agent_error`, `startup_scripts`, `lifecycle_state`), plus what a caller needs next.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateWorkspaceResult {
    /// True when this call created the workspace; false when the task's existing workspace was returned.
    pub created: bool,
    /// The workspace name (unique per owner): the task's handle. Calling create_workspace
    /// again with this `name` (and the same template_id) returns this workspace from any
    /// session, process or replica. Use it with `coder ssh <name>` and other Coder tools too.
    pub workspace_name: String,
    /// `already_exists`: the task's workspace was returned instead of creating another.
    /// `building`, `starting_agent`, `running_startup_scripts`: this call stopped waiting
    /// (see `--max-call-wait`) while the workspace is still coming up; call
    /// `create_workspace` again with `name` set to `workspace_name` (and the same
    /// template_id) to keep waiting for the same workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CallStatusValue>,
    /// A human-readable explanation of the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `not_ready`: the build succeeded but the agent did not connect in time (the
    /// workspace exists; it may still come up). `no_agent`: the template defines no agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<AgentStatusValue>,
    /// Why the agent is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// Set when the agent's startup scripts failed or did not finish in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_scripts: Option<StartupScriptsValue>,
    /// The agent's lifecycle state when startup scripts failed (e.g. `start_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<String>,
    /// The last lines of the agent's startup log, when startup scripts failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_log_tail: Vec<String>,
    /// The workspace id (UUID). Absent only with `status: "building"` when this call
    /// stopped waiting before Coder had created the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// The workspace owner's username.
    pub owner: String,
    /// The template the workspace was built from.
    pub template_id: Uuid,
    /// That template's name.
    pub template_name: String,
    /// Coder's status of the workspace as a whole (not of a build): `running` means the
    /// workspace is up; `starting` and `pending` that its build is still under way. One of
    /// pending, starting, running, stopping, stopped, failed, canceling, canceled,
    /// deleting, deleted.
    pub workspace_status: String,
    /// The number of the workspace's latest build (1 for a new workspace; each start,
    /// stop or update adds one).
    pub build_number: i64,
    /// The workspace agent's name, when the template has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// The workspace's page in the Coder dashboard.
    pub url: String,
    /// True when the workspace is one Coder kept prebuilt for the preset, claimed by this
    /// call: it was ready in seconds rather than after a full build. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prebuilt: bool,
}

/// How the call ended when it did not simply create a ready workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "CallStatus")]
pub enum CallStatusValue {
    AlreadyExists,
    Building,
    StartingAgent,
    RunningStartupScripts,
}

/// Why the workspace agent is not usable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "AgentStatus")]
pub enum AgentStatusValue {
    NotReady,
    NoAgent,
}

/// How the agent's startup scripts went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "StartupScripts")]
pub enum StartupScriptsValue {
    StartupScriptsFailed,
    StartupScriptsTimeout,
}

impl From<CallStatus> for CallStatusValue {
    fn from(status: CallStatus) -> Self {
        match status {
            CallStatus::AlreadyExists => Self::AlreadyExists,
            CallStatus::Building => Self::Building,
            CallStatus::StartingAgent => Self::StartingAgent,
            CallStatus::RunningStartupScripts => Self::RunningStartupScripts,
        }
    }
}

impl From<AgentStatus> for AgentStatusValue {
    fn from(status: AgentStatus) -> Self {
        match status {
            AgentStatus::NotReady => Self::NotReady,
            AgentStatus::NoAgent => Self::NoAgent,
        }
    }
}

impl From<StartupScripts> for StartupScriptsValue {
    fn from(scripts: StartupScripts) -> Self {
        match scripts {
            StartupScripts::StartupScriptsFailed => Self::StartupScriptsFailed,
            StartupScripts::StartupScriptsTimeout => Self::StartupScriptsTimeout,
        }
    }
}

impl From<Answer> for CreateWorkspaceResult {
    fn from(answer: Answer) -> Self {
        CreateWorkspaceResult {
            created: answer.created,
            workspace_name: answer.workspace_name,
            status: answer.status.map(Into::into),
            message: answer.message,
            agent_status: answer.agent_status.map(Into::into),
            agent_error: answer.agent_error,
            startup_scripts: answer.startup_scripts.map(Into::into),
            lifecycle_state: answer.lifecycle_state,
            startup_log_tail: answer.startup_log_tail,
            workspace_id: answer.workspace_id,
            owner: answer.owner,
            template_id: answer.template_id,
            template_name: answer.template_name,
            workspace_status: answer.workspace_status,
            build_number: answer.build_number,
            agent_name: answer.agent_name,
            url: answer.url,
            prebuilt: answer.prebuilt,
        }
    }
}
