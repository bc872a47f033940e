//! Request validation with `coderd`'s rules and messages (codersdk `NameValid`,
//! `ParameterResolver.ValidateResolve`, terraform-provider-coder `Validation.Valid`).

use std::sync::LazyLock;

use http::StatusCode;
use regex::Regex;

use super::routes::ApiError;
use coder_api::{TemplateVersionParameter, WorkspaceBuildParameter};

static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$").expect("valid regex"));

/// codersdk `NameValid`: the rule for workspace (and user, template) names.
pub(crate) fn name_valid(name: &str) -> Result<(), String> {
    if name.len() > 32 {
        return Err("must be <= 32 characters".to_string());
    }
    if name.is_empty() {
        return Err("must be >= 1 character".to_string());
    }
    if name == "new" || name == "create" {
        return Err(format!("cannot use {name:?} as a name"));
    }
    if !NAME_RE.is_match(name) {
        return Err("must be alphanumeric with hyphens".to_string());
    }
    Ok(())
}

/// Resolves the values of every template parameter for a build (the given value,
/// else the previous build's, else the default) and validates them.
///
/// A value for a parameter the template does not define is rejected. `coderd`'s
/// classic parameter flow silently ignores it; rejecting it catches client bugs.
pub(crate) fn resolve_parameters(
    params: &[TemplateVersionParameter],
    values: &[WorkspaceBuildParameter],
    last: &[WorkspaceBuildParameter],
) -> Result<Vec<WorkspaceBuildParameter>, ApiError> {
    if let Some(unknown) = values
        .iter()
        .find(|v| !params.iter().any(|p| p.name == v.name))
    {
        return Err(invalid(
            &unknown.name,
            "workspace build parameter is not defined in the template (\"coder_parameter\")"
                .to_string(),
        ));
    }
    let mut out = Vec::with_capacity(params.len());
    for p in params {
        let given = values.iter().find(|v| v.name == p.name);
        let prev = last.iter().find(|v| v.name == p.name);
        if let (Some(v), Some(pv)) = (given, prev)
            && !p.mutable
            && v.value != pv.value
        {
            return Err(invalid(
                &p.name,
                format!(
                    "Parameter {:?} is not mutable, so it can't be updated after creating a workspace.",
                    p.name
                ),
            ));
        }
        if p.required && given.is_none() && prev.is_none() {
            return Err(invalid(
                &p.name,
                format!("Parameter {:?} is required but not provided", p.name),
            ));
        }
        let value = match (given, prev) {
            (Some(v), _) => v.value.clone(),
            (None, Some(pv)) if !p.ephemeral => pv.value.clone(),
            _ => p.default_value.clone(),
        };
        if let Err(err) = validate_value(p, &value, prev.map(|v| v.value.as_str())) {
            let name = if p.display_name.is_empty() {
                &p.name
            } else {
                &p.display_name
            };
            return Err(invalid(
                &p.name,
                format!("can't validate build parameter {name:?}: {err}"),
            ));
        }
        out.push(WorkspaceBuildParameter {
            name: p.name.clone(),
            value,
        });
    }
    Ok(out)
}

fn invalid(name: &str, detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("Unable to validate parameter {name:?}"),
    )
    .detail(detail)
}

fn validate_value(
    p: &TemplateVersionParameter,
    value: &str,
    prev: Option<&str>,
) -> Result<(), String> {
    if p.required && value.is_empty() {
        return Err("parameter value is required".to_string());
    }
    let value = if value.is_empty() {
        p.default_value.as_str()
    } else {
        value
    };
    if !p.options.is_empty() {
        if p.options.iter().any(|o| o.value == value) {
            return Ok(());
        }
        // Go prints a []string as [a b c].
        let values: Vec<&str> = p.options.iter().map(|o| o.value.as_str()).collect();
        return Err(format!(
            "parameter value must match one of options: [{}]",
            values.join(" ")
        ));
    }
    let enabled = !p.validation_regex.is_empty()
        || p.validation_min.is_some()
        || p.validation_max.is_some()
        || p.validation_monotonic.is_some()
        || p.kind == "bool"
        || p.kind == "list(string)";
    if !enabled {
        return Ok(());
    }
    match p.kind.as_str() {
        "bool" if value != "true" && value != "false" => {
            Err(r#"boolean value can be either "true" or "false""#.to_string())
        }
        "string" if !p.validation_regex.is_empty() => {
            let re = Regex::new(&p.validation_regex)
                .map_err(|e| format!("compile regex {:?}: {e}", p.validation_regex))?;
            if re.is_match(value) {
                Ok(())
            } else {
                Err(format!(
                    "{} (value {value:?} does not match {:?})",
                    p.validation_error, p.validation_regex
                ))
            }
        }
        "number" => {
            let num: i64 = value
                .parse()
                .map_err(|_| format!("value {value:?} is not a number"))?;
            if let Some(min) = p.validation_min
                && num < min
            {
                return Err(format!("value {num} is less than the minimum {min}"));
            }
            if let Some(max) = p.validation_max
                && num > max
            {
                return Err(format!("value {num} is more than the maximum {max}"));
            }
            let prev = prev.and_then(|v| v.parse::<i64>().ok());
            match (p.validation_monotonic.as_deref(), prev) {
                (Some("increasing"), Some(prev)) if num < prev => Err(format!(
                    "parameter value '{num}' must be equal or greater than previous value: {prev}"
                )),
                (Some("decreasing"), Some(prev)) if num > prev => Err(format!(
                    "parameter value '{num}' must be equal or lower than previous value: {prev}"
                )),
                _ => Ok(()),
            }
        }
        "list(string)" if serde_json::from_str::<Vec<String>>(value).is_err() => {
            Err(format!("value {value:?} is not valid list of strings"))
        }
        _ => Ok(()),
    }
}
