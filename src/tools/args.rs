//! Tool arguments (their JSON Schemas are what clients see in `tools/list`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

/// Arguments of `list_templates`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTemplatesArgs {
    /// Optional case-insensitive text matched against template names, display names and descriptions.
    #[serde(default)]
    pub query: Option<String>,
    /// Page number, starting at 1 (10 templates per page, most used first).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub page: Option<u32>,
}

/// Arguments of `read_template`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadTemplateArgs {
    /// The template's id (a UUID from list_templates).
    #[schemars(extend("format" = "uuid"))]
    pub template_id: String,
}

/// Arguments of `create_workspace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceArgs {
    /// The template's id (a UUID from list_templates).
    #[schemars(extend("format" = "uuid"))]
    pub template_id: String,
    /// A short name that describes the task, e.g. "fix-login-bug": the task's handle. If one
    /// of your workspaces has this name, that workspace is returned (or waited for, started,
    /// or replaced if it failed) instead of creating another, from any session. Omit it to
    /// get one generated from the template name. A name Coder would reject is turned into a
    /// valid one, the same way every time (letters, digits and single hyphens, at most 32 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Optional values for the template's parameters, by parameter name (see read_template).
    /// Values are strings; for list(string) parameters pass a JSON array as a string.
    #[serde(default, deserialize_with = "string_values")]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Optional: one of the template's presets, by name or id (read_template lists them):
    /// a set of parameter values the template's authors tested; with prebuilt workspaces,
    /// ready in seconds. Its values stand: a value in `parameters` that differs from one it
    /// sets is an error; parameters it leaves open can be given. Without it, the template's
    /// default preset is used when `parameters` agree with it.
    #[serde(default)]
    pub preset: Option<String>,
}

/// Parses a template id the way a model is likely to send it.
pub fn parse_template_id(raw: &str) -> Result<Uuid, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("template_id is required; use list_templates to find one".into());
    }
    Uuid::parse_str(trimmed).map_err(|e| {
        format!(
            "invalid template_id {}: {e}; it must be a template UUID from list_templates",
            crate::quote::quoted(trimmed)
        )
    })
}

/// Accepts numbers and booleans as parameter values too (models often send `"cpu": 4`):
/// Coder wants strings, so they are turned into their JSON text.
fn string_values<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(deserializer)?;
    raw.map(|map| {
        map.into_iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => {
                        return Err(serde::de::Error::custom(format!(
                            "parameter {} has no value; pass a string or leave the parameter out",
                            crate::quote::quoted(&name)
                        )));
                    }
                    other => other.to_string(),
                };
                Ok((name, text))
            })
            .collect()
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_id_errors_are_actionable() {
        assert_eq!(
            parse_template_id("  ").unwrap_err(),
            "template_id is required; use list_templates to find one"
        );
        assert!(
            parse_template_id("docker")
                .unwrap_err()
                .starts_with("invalid template_id \"docker\"")
        );
        assert!(parse_template_id(" 6f2f2b5e-9c3a-4c7e-8a53-0d8f6c1c2d3e ").is_ok());
    }

    #[test]
    fn scalar_parameter_values_become_strings() {
        let args: CreateWorkspaceArgs = serde_json::from_value(serde_json::json!({
            "template_id": "x", "parameters": {"cpu": 4, "gpu": false, "region": "eu", "tags": ["a"]}
        }))
        .unwrap();
        let params = args.parameters.unwrap();
        assert_eq!(params["cpu"], "4");
        assert_eq!(params["gpu"], "false");
        assert_eq!(params["region"], "eu");
        assert_eq!(params["tags"], "[\"a\"]");
    }
}
