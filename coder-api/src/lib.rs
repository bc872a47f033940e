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
    /// A preset of the version that gets built: its parameter values override
    /// `rich_parameter_values` (silently, in Coder), and a Premium deployment may
    /// answer with one of the preset's prebuilt workspaces, claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_preset_id: Option<Uuid>,
}

/// `codersdk.CreateWorkspaceBuildRequest` (`POST /workspaces/{id}/builds`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceBuildRequest {
    pub transition: WorkspaceTransition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_preset_id: Option<Uuid>,
}

/// `codersdk.Preset` (`GET /templateversions/{id}/presets`): a parameter set the
/// template declares (`coder_workspace_preset`).
///
/// **On the wire the keys are PascalCase** (`ID`, `Name`, `Parameters`, `Default`,
/// `DesiredPrebuildInstances`, `Description`, `Icon`), not the spec's lowercase names:
/// the Go type has no json tags. Empty lists come as `null`, and
/// `DesiredPrebuildInstances` is `null` for a preset without prebuilds. The spec's
/// lowercase names are accepted too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Preset {
    #[serde(rename = "ID", alias = "id")]
    pub id: Uuid,
    #[serde(alias = "name", default)]
    pub name: String,
    /// `None` is Coder's `null`: the preset fixes no parameter.
    #[serde(alias = "parameters", default)]
    pub parameters: Option<Vec<PresetParameter>>,
    /// The preset Coder's UI pre-selects.
    #[serde(alias = "default", default)]
    pub default: bool,
    /// How many prebuilt workspaces Coder keeps ready for the preset (`None`: no
    /// prebuilds block).
    #[serde(alias = "desiredPrebuildInstances", default)]
    pub desired_prebuild_instances: Option<i64>,
    #[serde(alias = "description", default)]
    pub description: String,
    #[serde(alias = "icon", default)]
    pub icon: String,
}

impl Preset {
    /// The parameter values the preset fixes.
    pub fn values(&self) -> &[PresetParameter] {
        self.parameters.as_deref().unwrap_or_default()
    }

    /// Coder keeps prebuilt workspaces of this preset.
    pub fn has_prebuilds(&self) -> bool {
        self.desired_prebuild_instances.is_some_and(|n| n > 0)
    }
}

/// `codersdk.PresetParameter`: `{"Name", "Value"}` on the wire (see [`Preset`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PresetParameter {
    #[serde(alias = "name")]
    pub name: String,
    #[serde(alias = "value", default)]
    pub value: String,
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
    /// Owned by Coder's `prebuilds` user, waiting to be claimed (false once claimed).
    #[serde(default)]
    pub is_prebuild: bool,
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
    /// The preset the build was made with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_preset_id: Option<Uuid>,
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

// ----- OAuth2 provider (Coder as an OAuth2 authorization server) -----
//
// The metadata documents and the `/oauth2/*` endpoints are served at the server root,
// not under `/api/v2` (the spec lists them in `x-paths-outside-basePath`). Enum-valued
// fields (grant types, response types, auth methods) are plain strings: their values
// (`S256`, `client_secret_basic`) are not one casing.

/// `codersdk.OAuth2AuthorizationServerMetadata` (RFC 8414), at
/// `/.well-known/oauth-authorization-server`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2AuthorizationServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Only while dynamic client registration is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revocation_endpoint: String,
    pub response_types_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// `codersdk.OAuth2ProtectedResourceMetadata` (RFC 9728), at
/// `/.well-known/oauth-protected-resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2ProtectedResourceMetadata {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: Vec<String>,
}

/// `codersdk.OAuth2AppEndpoints`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2AppEndpoints {
    pub authorization: String,
    pub token: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_revoke: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub device_authorization: String,
}

/// `codersdk.OAuth2ProviderApp`. Its `id` is the OAuth2 `client_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuth2ProviderApp {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub callback_url: String,
    #[serde(default)]
    pub icon: String,
    #[serde(default)]
    pub endpoints: OAuth2AppEndpoints,
}

/// `codersdk.PostOAuth2ProviderAppRequest` (`POST /oauth2-provider/apps`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostOAuth2ProviderAppRequest {
    pub name: String,
    pub callback_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub icon: String,
}

/// `codersdk.OAuth2ProviderAppSecretFull`: a new client secret, shown once
/// (`POST /oauth2-provider/apps/{app}/secrets`, 201).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuth2ProviderAppSecretFull {
    pub id: Uuid,
    pub client_secret_full: String,
}

/// `codersdk.OAuth2ClientRegistrationRequest` (RFC 7591, `POST /oauth2/register`),
/// the fields we send or read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2ClientRegistrationRequest {
    pub redirect_uris: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_uri: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub logo_uri: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grant_types: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_types: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_endpoint_auth_method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// `codersdk.OAuth2ClientRegistrationResponse` (RFC 7591, 201), the fields we read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2ClientRegistrationResponse {
    pub client_id: String,
    /// Absent for a public client (`token_endpoint_auth_method` `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    pub client_secret_expires_at: i64,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub registration_access_token: String,
    pub registration_client_uri: String,
}

/// `oauth2.Token` (golang.org/x/oauth2): the body of a successful `POST /oauth2/tokens`.
/// The access token is an ordinary Coder API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuth2Token {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

/// An OAuth2 error body (RFC 6749 §5.2), as `httpapi.WriteOAuth2Error` sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2Error {
    pub error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error_description: String,
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

    #[test]
    fn presets_read_coders_pascal_case_and_null_lists() {
        let wire = serde_json::json!([
            {"ID": "6f2f2b5e-9c3a-4c7e-8a53-0d8f6c1c2d3e", "Name": "GoLand: Large",
             "Parameters": [{"Name": "cpus", "Value": "8"}], "Default": true,
             "DesiredPrebuildInstances": 3, "Description": "", "Icon": ""},
            {"ID": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d", "Name": "Empty",
             "Parameters": null, "Default": false, "DesiredPrebuildInstances": null,
             "Description": "", "Icon": ""}
        ]);
        let presets: Vec<Preset> = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(presets[0].values()[0].value, "8");
        assert!(presets[0].default && presets[0].has_prebuilds());
        assert!(presets[1].values().is_empty() && !presets[1].has_prebuilds());
        // Written back exactly as Coder sends it.
        assert_eq!(serde_json::to_value(&presets).unwrap(), wire);
        // The spec's lowercase names are read too.
        let lower: Preset = serde_json::from_value(serde_json::json!({
            "id": "6f2f2b5e-9c3a-4c7e-8a53-0d8f6c1c2d3e", "name": "x",
            "parameters": [{"name": "a", "value": "b"}], "default": false,
            "desiredPrebuildInstances": 0
        }))
        .unwrap();
        assert_eq!(lower.values()[0].name, "a");
        assert!(!lower.has_prebuilds());
    }
}
