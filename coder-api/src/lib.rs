//! Serde types for the subset of Coder's REST API we use.
//!
//! Field names, enums and optionality follow `spec/coder-openapi-subset.json`
//! (trimmed from `coderd/apidoc/swagger.json`). Every field the spec does not mark
//! as required is defaulted on input, so an older or newer Coder that omits or adds
//! fields still parses; enums keep an `Unknown` catch-all for the same reason.
//! The simulator serializes the very same types, and a test validates what it
//! sends against the spec, so the two cannot drift apart silently.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `codersdk.Response`: the body of every Coder error (and of some successes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidationError>,
}

/// `codersdk.ValidationError`: one rejected field of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationError {
    pub field: String,
    pub detail: String,
}

/// `codersdk.BuildInfoResponse` (only the fields we read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildInfoResponse {
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dashboard_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub external_url: String,
}

/// `codersdk.User` (`GET /users/me`). `id`, `username`, `email` and `created_at` are
/// required by the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default)]
    pub organization_ids: Vec<Uuid>,
}

/// `codersdk.Template`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub icon: String,
    pub organization_id: Uuid,
    #[serde(default)]
    pub organization_name: String,
    #[serde(default)]
    pub organization_display_name: String,
    pub active_version_id: Uuid,
    #[serde(default)]
    pub active_user_count: i64,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default)]
    pub deprecation_message: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "epoch")]
    pub updated_at: DateTime<Utc>,
}

/// `codersdk.TemplateVersionParameter`: one rich parameter of a template version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateVersionParameter {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub description_plaintext: String,
    /// `string`, `number`, `bool` or `list(string)`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `""`, `radio`, `dropdown`, `input`, `textarea`, `slider`, `checkbox`, `switch`,
    /// `tag-select`, `multi-select` or `error`.
    pub form_type: String,
    pub mutable: bool,
    pub default_value: String,
    pub icon: String,
    pub options: Vec<TemplateVersionParameterOption>,
    pub validation_error: String,
    pub validation_regex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_monotonic: Option<String>,
    pub required: bool,
    pub ephemeral: bool,
}

/// `codersdk.TemplateVersionParameterOption`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateVersionParameterOption {
    pub name: String,
    pub description: String,
    pub value: String,
    pub icon: String,
}

/// `codersdk.WorkspaceBuildParameter`: a `{name, value}` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceBuildParameter {
    pub name: String,
    pub value: String,
}

/// `codersdk.CreateWorkspaceRequest` (`POST /users/{user}/workspaces`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateWorkspaceRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
}

/// `codersdk.CreateWorkspaceBuildRequest` (`POST /workspaces/{id}/builds`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceBuildRequest {
    pub transition: WorkspaceTransition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
}

/// `codersdk.Workspace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub owner_id: Uuid,
    #[serde(default)]
    pub owner_name: String,
    pub organization_id: Uuid,
    #[serde(default)]
    pub organization_name: String,
    pub template_id: Uuid,
    #[serde(default)]
    pub template_name: String,
    #[serde(default)]
    pub template_display_name: String,
    #[serde(default)]
    pub template_icon: String,
    #[serde(default)]
    pub template_active_version_id: Option<Uuid>,
    pub latest_build: WorkspaceBuild,
    #[serde(default)]
    pub outdated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_at: Option<DateTime<Utc>>,
    /// Set while the workspace is dormant: it cannot be used until it is activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormant_at: Option<DateTime<Utc>>,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "epoch")]
    pub updated_at: DateTime<Utc>,
}

/// `codersdk.WorkspaceBuild`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceBuild {
    pub id: Uuid,
    #[serde(default)]
    pub build_number: i64,
    pub workspace_id: Uuid,
    #[serde(default)]
    pub workspace_name: String,
    #[serde(default)]
    pub workspace_owner_id: Option<Uuid>,
    #[serde(default)]
    pub workspace_owner_name: String,
    #[serde(default)]
    pub template_version_id: Option<Uuid>,
    #[serde(default)]
    pub template_version_name: String,
    pub transition: WorkspaceTransition,
    pub status: WorkspaceStatus,
    pub job: ProvisionerJob,
    #[serde(default)]
    pub resources: Vec<WorkspaceResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initiator_name: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "epoch")]
    pub updated_at: DateTime<Utc>,
}

impl WorkspaceBuild {
    /// The first agent of the build, the one Coder's own tool waits for.
    pub fn first_agent(&self) -> Option<&WorkspaceAgent> {
        self.resources.iter().flat_map(|r| r.agents.iter()).next()
    }
}

/// `codersdk.ProvisionerJob`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionerJob {
    pub id: Uuid,
    pub status: ProvisionerJobStatus,
    /// Coder sends an empty string when there is no error.
    #[serde(default)]
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub queue_position: i64,
    #[serde(default)]
    pub queue_size: i64,
}

/// `codersdk.WorkspaceResource`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceResource {
    pub id: Uuid,
    #[serde(default)]
    pub job_id: Option<Uuid>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_transition: Option<WorkspaceTransition>,
    #[serde(default)]
    pub agents: Vec<WorkspaceAgent>,
    #[serde(default)]
    pub hide: bool,
    #[serde(default)]
    pub icon: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
}

/// `codersdk.WorkspaceAgent` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceAgent {
    pub id: Uuid,
    pub name: String,
    pub status: WorkspaceAgentStatus,
    pub lifecycle_state: WorkspaceAgentLifecycle,
    #[serde(default)]
    pub resource_id: Option<Uuid>,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub directory: String,
    #[serde(default)]
    pub expanded_directory: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub connection_timeout_seconds: i64,
    #[serde(default)]
    pub troubleshooting_url: String,
    #[serde(default)]
    pub logs_length: i64,
    #[serde(default)]
    pub logs_overflowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<WorkspaceAgentHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_connected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "epoch")]
    pub updated_at: DateTime<Utc>,
}

/// `codersdk.WorkspaceAgentHealth`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceAgentHealth {
    pub healthy: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `codersdk.ProvisionerJobLog`: one line of a build's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionerJobLog {
    pub id: i64,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub output: String,
}

/// `codersdk.WorkspaceAgentLog`: one line of an agent's startup-script output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceAgentLog {
    pub id: i64,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
}

/// `codersdk.ServerSentEvent`: one message of the `watch-ws` WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSentEvent {
    #[serde(rename = "type")]
    pub kind: ServerSentEventType,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Coder's string enums: snake_case on the wire (serde) and in messages (strum), with an
/// `Unknown` catch-all so that a value a newer Coder adds still parses.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize,
            strum::Display, strum::IntoStaticStr,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name {
            $($variant,)+
            /// A value this version of the client does not know.
            #[serde(other)]
            Unknown,
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

string_enum!(
    /// `codersdk.WorkspaceTransition`.
    WorkspaceTransition { Start, Stop, Delete }
);
string_enum!(
    /// `codersdk.WorkspaceStatus`.
    WorkspaceStatus {
        Pending, Starting, Running, Stopping, Stopped, Failed, Canceling, Canceled, Deleting,
        Deleted,
    }
);
string_enum!(
    /// `codersdk.ProvisionerJobStatus` (`unknown` is a real value upstream too).
    ProvisionerJobStatus { Pending, Running, Succeeded, Canceling, Canceled, Failed }
);
string_enum!(
    /// `codersdk.WorkspaceAgentStatus`.
    WorkspaceAgentStatus { Connecting, Connected, Disconnected, Timeout }
);
string_enum!(
    /// `codersdk.WorkspaceAgentLifecycle`.
    WorkspaceAgentLifecycle {
        Created, Starting, StartTimeout, StartError, Ready, ShuttingDown, ShutdownTimeout,
        ShutdownError, Off,
    }
);
string_enum!(
    /// `codersdk.ServerSentEventType`.
    ServerSentEventType { Ping, Data, Error }
);
string_enum!(
    /// `codersdk.LogLevel`.
    LogLevel { Trace, Debug, Info, Warn, Error }
);

impl ProvisionerJobStatus {
    /// The job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

impl WorkspaceAgentLifecycle {
    /// The startup scripts have not finished yet.
    pub fn is_starting(self) -> bool {
        matches!(self, Self::Created | Self::Starting)
    }
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_enums_read_and_write_coders_names() {
        assert_eq!(
            serde_json::to_value(WorkspaceAgentLifecycle::StartTimeout).unwrap(),
            "start_timeout"
        );
        assert_eq!(
            WorkspaceAgentLifecycle::ShutdownError.to_string(),
            "shutdown_error"
        );
        assert_eq!(ProvisionerJobStatus::Succeeded.as_str(), "succeeded");
        let parsed: WorkspaceStatus = serde_json::from_value("deleting".into()).unwrap();
        assert_eq!(parsed, WorkspaceStatus::Deleting);
        // A value a newer Coder adds still parses.
        let unknown: WorkspaceAgentStatus = serde_json::from_value("hibernating".into()).unwrap();
        assert_eq!(unknown, WorkspaceAgentStatus::Unknown);
        assert_eq!(ProvisionerJobStatus::Unknown.to_string(), "unknown");
    }
}
