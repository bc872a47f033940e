//! Checks `create_workspace`'s `parameters` against the template's rich parameters
//! before anything is created, so a model gets the valid choices at once instead
//! of a failed build minutes later.

use std::collections::BTreeMap;

use crate::coder::types::{TemplateVersionParameter, WorkspaceBuildParameter};
use crate::quote::quoted;

/// How many problems an error lists (a client may send thousands of unknown parameters).
const MAX_PROBLEMS: usize = 10;

/// Validates `values` and returns them as Coder's `rich_parameter_values`, in the
/// template's parameter order. The error text lists every problem and the valid choices.
pub fn validate_parameters(
    values: &BTreeMap<String, String>,
    template: &[TemplateVersionParameter],
) -> Result<Vec<WorkspaceBuildParameter>, String> {
    let mut problems = Vec::new();
    for name in values.keys() {
        if !template.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = template.iter().map(|p| p.name.as_str()).collect();
            problems.push(if known.is_empty() {
                format!(
                    "unknown parameter {}: this template takes no parameters",
                    quoted(name)
                )
            } else {
                format!(
                    "unknown parameter {}; this template's parameters are: {}",
                    quoted(name),
                    known.join(", ")
                )
            });
        }
    }
    let mut accepted = Vec::new();
    for param in template {
        match values.get(&param.name) {
            Some(value) => match check_value(param, value) {
                Ok(()) => accepted.push(WorkspaceBuildParameter {
                    name: param.name.clone(),
                    value: value.clone(),
                }),
                Err(problem) => problems.push(problem),
            },
            None if param.required && param.default_value.is_empty() => {
                let mut text = format!("missing required parameter {:?}", param.name);
                if let Some(choices) = describe_options(param) {
                    text.push_str(&format!(" (choose one of {choices})"));
                } else if !param.description.is_empty() {
                    text.push_str(&format!(" ({})", first_line(&param.description)));
                }
                problems.push(text);
            }
            None => {}
        }
    }
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(format!("and {more} more"));
    }
    if problems.is_empty() {
        Ok(accepted)
    } else {
        Err(format!(
            "invalid parameters: {}. Use read_template to see every parameter with its type, default and options.",
            problems.join("; ")
        ))
    }
}

fn check_value(param: &TemplateVersionParameter, value: &str) -> Result<(), String> {
    let name = &param.name;
    if !param.options.is_empty() {
        let allowed = |v: &str| param.options.iter().any(|o| o.value == v);
        let ok = if param.kind == "list(string)" {
            serde_json::from_str::<Vec<String>>(value)
                .map(|items| items.iter().all(|v| allowed(v)))
                .unwrap_or(false)
        } else {
            allowed(value)
        };
        if !ok {
            return Err(format!(
                "{} is not a valid value for {name:?}; choose one of {}",
                quoted(value),
                describe_options(param).unwrap_or_default()
            ));
        }
        return Ok(());
    }
    match param.kind.as_str() {
        "number" => {
            let number: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{name:?} must be a number, got {}", quoted(value)))?;
            let below = param.validation_min.is_some_and(|min| number < min as f64);
            let above = param.validation_max.is_some_and(|max| number > max as f64);
            if below || above {
                return Err(format!(
                    "{name:?} must be between {} and {}, got {}{}",
                    param
                        .validation_min
                        .map_or("-inf".into(), |v| v.to_string()),
                    param
                        .validation_max
                        .map_or("+inf".into(), |v| v.to_string()),
                    crate::quote::shorten(value, crate::quote::QUOTE_CHARS),
                    validation_hint(param)
                ));
            }
        }
        "bool" if value != "true" && value != "false" => {
            return Err(format!(
                "{name:?} must be \"true\" or \"false\", got {}",
                quoted(value)
            ));
        }
        "list(string)" if serde_json::from_str::<Vec<String>>(value).is_err() => {
            return Err(format!(
                "{name:?} must be a JSON array of strings, e.g. [\"a\",\"b\"], got {}",
                quoted(value)
            ));
        }
        _ => {}
    }
    if !param.validation_regex.is_empty()
        && let Ok(regex) = regex::Regex::new(&param.validation_regex)
        && !regex.is_match(value)
    {
        return Err(format!(
            "{} is not valid for {name:?}: must match {}{}",
            quoted(value),
            param.validation_regex,
            validation_hint(param)
        ));
    }
    Ok(())
}

fn validation_hint(param: &TemplateVersionParameter) -> String {
    if param.validation_error.is_empty() {
        String::new()
    } else {
        format!(" ({})", param.validation_error)
    }
}

fn describe_options(param: &TemplateVersionParameter) -> Option<String> {
    if param.options.is_empty() {
        return None;
    }
    let choices: Vec<String> = param
        .options
        .iter()
        .map(|o| {
            if o.name.is_empty() || o.name == o.value {
                format!("{:?}", o.value)
            } else {
                format!("{:?} ({})", o.value, o.name)
            }
        })
        .collect();
    Some(choices.join(", "))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The requested values (as checked: strings, as Coder keeps them) that differ from
/// what a workspace's build has (`region: "us" (asked for "eu")`). Values the build does
/// not have at all count as different.
pub fn parameter_differences(
    requested: &[WorkspaceBuildParameter],
    actual: &[WorkspaceBuildParameter],
) -> Vec<String> {
    requested
        .iter()
        .filter_map(|asked| {
            let has = actual
                .iter()
                .find(|p| p.name == asked.name)
                .map(|p| p.value.as_str());
            let (name, value) = (&asked.name, &asked.value);
            match has {
                Some(has) if has == value => None,
                Some(has) => Some(format!(
                    "{name}: {} (asked for {})",
                    quoted(has),
                    quoted(value)
                )),
                None => Some(format!("{name}: not set (asked for {})", quoted(value))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::types::TemplateVersionParameterOption;

    fn option(value: &str, name: &str) -> TemplateVersionParameterOption {
        TemplateVersionParameterOption {
            name: name.into(),
            value: value.into(),
            ..Default::default()
        }
    }

    fn template() -> Vec<TemplateVersionParameter> {
        vec![
            TemplateVersionParameter {
                name: "region".into(),
                kind: "string".into(),
                required: true,
                options: vec![option("us", "US East"), option("eu", "Europe")],
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "cpu".into(),
                kind: "number".into(),
                default_value: "2".into(),
                validation_min: Some(1),
                validation_max: Some(8),
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "repo".into(),
                kind: "string".into(),
                validation_regex: "^https://".into(),
                validation_error: "use an https URL".into(),
                ..Default::default()
            },
        ]
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn accepts_valid_values_in_template_order() {
        let out =
            validate_parameters(&values(&[("cpu", "4"), ("region", "eu")]), &template()).unwrap();
        let names: Vec<&str> = out.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["region", "cpu"]);
    }

    #[test]
    fn lists_every_problem_with_the_valid_choices() {
        let err = validate_parameters(
            &values(&[("colour", "red"), ("cpu", "16"), ("repo", "git@x")]),
            &template(),
        )
        .unwrap_err();
        assert!(
            err.contains(
                "unknown parameter \"colour\"; this template's parameters are: region, cpu, repo"
            ),
            "{err}"
        );
        assert!(err.contains("missing required parameter \"region\" (choose one of \"us\" (US East), \"eu\" (Europe))"), "{err}");
        assert!(
            err.contains("\"cpu\" must be between 1 and 8, got 16"),
            "{err}"
        );
        assert!(
            err.contains("must match ^https:// (use an https URL)"),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_value_outside_the_options() {
        let err = validate_parameters(&values(&[("region", "mars")]), &template()).unwrap_err();
        assert!(err.contains("\"mars\" is not a valid value for \"region\"; choose one of \"us\" (US East), \"eu\" (Europe)"), "{err}");
    }

    #[test]
    fn differences_name_each_parameter_that_differs() {
        let param = |name: &str, value: &str| WorkspaceBuildParameter {
            name: name.into(),
            value: value.into(),
        };
        let requested = vec![
            param("gpu", "true"),
            param("region", "eu"),
            param("cpu", "2"),
        ];
        let actual = vec![param("region", "us"), param("cpu", "2")];
        assert_eq!(
            parameter_differences(&requested, &actual),
            vec![
                "gpu: not set (asked for \"true\")".to_owned(),
                "region: \"us\" (asked for \"eu\")".to_owned(),
            ]
        );
        assert!(parameter_differences(&[], &actual).is_empty());
    }
}
