//! Structured results of `list_templates` and `read_template` (the output schemas
//! clients see). `create_workspace`'s result lives with the engine.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::coder::types::{Template, TemplateVersionParameter};
use crate::engine::progress::truncate;

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
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// The description, cut to about 200 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub organization_name: String,
    pub active_version_id: Uuid,
    /// How many people used the template recently.
    pub active_user_count: i64,
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
        }
    }
}

/// A template and the parameters of its active version.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReadTemplateResult {
    pub template: TemplateDetail,
    /// The rich parameters create_workspace accepts in `parameters`.
    pub parameters: Vec<ParameterInfo>,
}

/// A template.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TemplateDetail {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub organization_name: String,
    pub active_version_id: Uuid,
    pub active_user_count: i64,
    /// Deprecated templates should not be used for new workspaces.
    pub deprecated: bool,
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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
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
    pub name: String,
    pub value: String,
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
