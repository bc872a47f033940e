//! Which preset a `create_workspace` call builds with: a pure function of the template's
//! presets, the requested `preset` and the given parameter values (table-tested below).
//!
//! | request | what the call does |
//! |---|---|
//! | `preset` names one of the template's presets (by name or id) | builds with it; a given value that differs from one the preset sets is a tool error naming the parameter (Coder would silently drop it); the other parameters are checked as usual |
//! | `preset` names none of them | tool error listing the template's presets |
//! | no `preset`, the template has a default preset, the given values agree with it | builds with the default preset (as Coder's dashboard pre-selects it), and the message says so |
//! | no `preset`, the given values differ from the default preset's | builds from the given values without a preset (as the dashboard drops a preset whose values were changed), and the message says which differ |
//! | no `preset`, no default preset (or no presets at all) | builds from the given values, as without presets |
//!
//! A preset's values are sent with the given ones in `rich_parameter_values` (Coder
//! applies them anyway), so comparing an existing workspace's parameters with a request
//! sees them too.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::coder::types::{Preset, TemplateVersionParameter};
use crate::quote::quoted;

/// The preset a call builds with.
#[derive(Debug, Clone, PartialEq)]
pub enum PresetChoice {
    /// No preset: none asked for, and no default one that fits.
    None,
    /// The preset the call named.
    Named(Preset),
    /// The template's default preset, which the given values agree with.
    Default(Preset),
    /// The template's default preset, left out because the given values differ from it
    /// (`differences`: `cpu: "8" (the preset sets "4")`, ...).
    DefaultDropped {
        preset: Preset,
        differences: Vec<String>,
    },
}

impl PresetChoice {
    /// The preset the workspace is built with, if any.
    pub fn preset(&self) -> Option<&Preset> {
        match self {
            Self::Named(p) | Self::Default(p) => Some(p),
            Self::None | Self::DefaultDropped { .. } => None,
        }
    }

    /// What the answer says about a prebuilt workspace this call claimed.
    pub fn claimed_note(&self) -> String {
        let of = match self {
            Self::Named(p) => format!(" of preset {}", quoted(&p.name)),
            Self::Default(p) => format!(
                " of the template's default preset {} ({})",
                quoted(&p.name),
                describe_values(p)
            ),
            // Coder chose the preset itself (its values were all given).
            Self::None | Self::DefaultDropped { .. } => String::new(),
        };
        format!(
            "it is a prebuilt workspace{of} that Coder kept ready, claimed for this call, so it was ready without a full build"
        )
    }

    /// What the answer of a call that created a workspace says about the preset (when it
    /// claimed no prebuilt workspace: then [`PresetChoice::claimed_note`] says it).
    pub fn note(&self) -> Option<String> {
        match self {
            Self::None | Self::Named(_) => None,
            Self::Default(p) => Some(format!(
                "it was built with the template's default preset {} ({})",
                quoted(&p.name),
                describe_values(p)
            )),
            Self::DefaultDropped {
                preset,
                differences,
            } => Some(format!(
                "it was built from the given parameters without the template's default preset {}, since they differ from it ({}); pass preset to build with a preset",
                quoted(&preset.name),
                differences.join(", ")
            )),
        }
    }
}

/// Chooses the preset of a call: `requested` (a name or an id) among `presets`, or the
/// default one when `values` agree with it. The error is a tool error for the model.
pub fn choose_preset(
    presets: &[Preset],
    requested: Option<&str>,
    values: &BTreeMap<String, String>,
) -> Result<PresetChoice, String> {
    let requested = requested.map(str::trim).filter(|r| !r.is_empty());
    let Some(requested) = requested else {
        let Some(default) = presets.iter().find(|p| p.default) else {
            return Ok(PresetChoice::None);
        };
        let differences = contradictions(default, values);
        return Ok(if differences.is_empty() {
            PresetChoice::Default(default.clone())
        } else {
            PresetChoice::DefaultDropped {
                preset: default.clone(),
                differences: differences
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {} (the preset sets {})",
                            c.name,
                            quoted(c.given),
                            quoted(c.fixed)
                        )
                    })
                    .collect(),
            }
        });
    };
    let preset = find(presets, requested).ok_or_else(|| unknown(presets, requested))?;
    let differences = contradictions(preset, values);
    if differences.is_empty() {
        return Ok(PresetChoice::Named(preset.clone()));
    }
    let problems: Vec<String> = differences
        .iter()
        .map(|c| {
            format!(
                "parameter {} is {} in parameters, but preset {} sets it to {}",
                quoted(c.name),
                quoted(c.given),
                quoted(&preset.name),
                quoted(c.fixed)
            )
        })
        .collect();
    Err(format!(
        "{}. A preset's values stand (Coder would silently use them instead): leave {} out of parameters, or leave preset out to choose every value yourself. read_template lists each preset's values.",
        problems.join("; "),
        differences
            .iter()
            .map(|c| quoted(c.name))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The values a call sends: the preset's (for the template's parameters), then the
/// given ones (which agree with them).
pub fn values_with_preset(
    choice: &PresetChoice,
    values: &BTreeMap<String, String>,
    template: &[TemplateVersionParameter],
) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    if let Some(preset) = choice.preset() {
        for fixed in preset.values() {
            if template.iter().any(|p| p.name == fixed.name) {
                merged.insert(fixed.name.clone(), fixed.value.clone());
            }
        }
    }
    merged.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// What the answer says when the task's existing workspace was made with another preset
/// than `chosen`: its latest build has preset `built_with`, which is one of `presets` (the
/// active version's) or of `earlier` (its own version's, when that is another one).
/// A build without a preset says nothing here (a restart does not repeat the preset);
/// the parameter comparison shows what differs.
pub fn preset_difference(
    chosen: Option<&Preset>,
    built_with: Option<Uuid>,
    presets: &[Preset],
    earlier: &[Preset],
) -> Option<String> {
    let chosen = chosen?;
    let built_with = built_with?;
    if built_with == chosen.id {
        return None;
    }
    let name = presets
        .iter()
        .chain(earlier)
        .find(|p| p.id == built_with)
        .map(|p| p.name.as_str());
    match name {
        // The same preset of an earlier template version.
        Some(name) if name == chosen.name => None,
        Some(name) => Some(format!(
            "it was made with preset {}, not {}",
            quoted(name),
            quoted(&chosen.name)
        )),
        None => Some(format!(
            "it was made with a preset of another template version, not {}",
            quoted(&chosen.name)
        )),
    }
}

/// A preset by id, else by name (exactly, else regardless of case when that is unique).
fn find<'a>(presets: &'a [Preset], requested: &str) -> Option<&'a Preset> {
    if let Ok(id) = Uuid::parse_str(requested)
        && let Some(p) = presets.iter().find(|p| p.id == id)
    {
        return Some(p);
    }
    if let Some(p) = presets.iter().find(|p| p.name == requested) {
        return Some(p);
    }
    let mut folded = presets
        .iter()
        .filter(|p| p.name.to_lowercase() == requested.to_lowercase());
    match (folded.next(), folded.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    }
}

fn unknown(presets: &[Preset], requested: &str) -> String {
    if presets.is_empty() {
        return format!(
            "unknown preset {}: this template has no presets; leave preset out",
            quoted(requested)
        );
    }
    let names: Vec<String> = presets
        .iter()
        .map(|p| {
            if p.default {
                format!("{} (the default)", quoted(&p.name))
            } else {
                quoted(&p.name)
            }
        })
        .collect();
    format!(
        "unknown preset {}; this template's presets are: {}. Pass one of these names (read_template lists the values each sets), or leave preset out.",
        quoted(requested),
        names.join(", ")
    )
}

/// A given value that differs from a preset's.
struct Contradiction<'a> {
    name: &'a str,
    given: &'a str,
    fixed: &'a str,
}

fn contradictions<'a>(
    preset: &'a Preset,
    values: &'a BTreeMap<String, String>,
) -> Vec<Contradiction<'a>> {
    preset
        .values()
        .iter()
        .filter_map(|fixed| {
            let given = values.get(&fixed.name)?;
            (*given != fixed.value).then_some(Contradiction {
                name: &fixed.name,
                given,
                fixed: &fixed.value,
            })
        })
        .collect()
}

/// `region=eu, cpu=4` (or `no parameter values` for a preset that sets none).
fn describe_values(preset: &Preset) -> String {
    if preset.values().is_empty() {
        return "it sets no parameter values".into();
    }
    preset
        .values()
        .iter()
        .map(|v| {
            format!(
                "{}={}",
                v.name,
                crate::quote::shorten(&v.value, crate::quote::QUOTE_CHARS)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::types::PresetParameter;

    fn preset(id: u128, name: &str, values: &[(&str, &str)], default: bool) -> Preset {
        Preset {
            id: Uuid::from_u128(id),
            name: name.into(),
            parameters: Some(
                values
                    .iter()
                    .map(|(n, v)| PresetParameter {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            ),
            default,
            ..Preset::default()
        }
    }

    fn presets() -> Vec<Preset> {
        vec![
            preset(
                1,
                "Europe, 4 cores",
                &[("region", "eu"), ("cpu", "4")],
                true,
            ),
            preset(2, "US, 8 cores", &[("region", "us"), ("cpu", "8")], false),
            preset(3, "Europe", &[("region", "eu")], false),
        ]
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What a call chooses, in short: `named N`, `default N`, `dropped N`, `none`, or the
    /// error's first words.
    fn short(result: Result<PresetChoice, String>) -> String {
        match result {
            Ok(PresetChoice::None) => "none".into(),
            Ok(PresetChoice::Named(p)) => format!("named {}", p.name),
            Ok(PresetChoice::Default(p)) => format!("default {}", p.name),
            Ok(PresetChoice::DefaultDropped { preset, .. }) => format!("dropped {}", preset.name),
            Err(e) => format!("error: {e}"),
        }
    }

    /// A row: its name, the presets, the requested preset, the given values, and the
    /// expected choice (or the error's start).
    type Row<'a> = (
        &'a str,
        &'a [Preset],
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        &'a str,
    );

    /// The module's table, row by row.
    #[test]
    fn the_preset_table() {
        let all = presets();
        let no_default: Vec<Preset> = all.iter().skip(1).cloned().collect();
        let id = Uuid::from_u128(2).to_string();
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            ("named, no values", &all, Some("US, 8 cores"), &[], "named US, 8 cores"),
            ("named by id", &all, Some(&id), &[], "named US, 8 cores"),
            ("named in another case", &all, Some("us, 8 CORES"), &[], "named US, 8 cores"),
            ("named, trimmed", &all, Some("  Europe "), &[], "named Europe"),
            ("named, an agreeing value", &all, Some("US, 8 cores"), &[("cpu", "8")], "named US, 8 cores"),
            ("named, a value it leaves open", &all, Some("Europe"), &[("cpu", "6")], "named Europe"),
            ("named, a contradicting value", &all, Some("US, 8 cores"), &[("cpu", "4")],
                "error: parameter \"cpu\" is \"4\" in parameters, but preset \"US, 8 cores\" sets it to \"8\""),
            ("unknown", &all, Some("Mars"), &[], "error: unknown preset \"Mars\"; this template's presets are: \"Europe, 4 cores\" (the default), \"US, 8 cores\", \"Europe\""),
            ("unknown, no presets", &[], Some("Mars"), &[], "error: unknown preset \"Mars\": this template has no presets"),
            ("an empty preset is no preset", &all, Some(" "), &[], "default Europe, 4 cores"),
            ("no preset, no values: the default", &all, None, &[], "default Europe, 4 cores"),
            ("no preset, agreeing values: the default", &all, None, &[("cpu", "4"), ("editor", "vim")], "default Europe, 4 cores"),
            ("no preset, a contradicting value: dropped", &all, None, &[("cpu", "8")], "dropped Europe, 4 cores"),
            ("no preset, no default", &no_default, None, &[("cpu", "8")], "none"),
            ("no presets at all", &[], None, &[("cpu", "8")], "none"),
        ];
        for (row, presets, requested, given, expected) in rows {
            let got = short(choose_preset(presets, requested, &values(given)));
            assert!(
                got.starts_with(expected),
                "row {row:?}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn a_contradiction_error_names_every_parameter_and_what_to_do() {
        let err = choose_preset(
            &presets(),
            Some("US, 8 cores"),
            &values(&[("cpu", "4"), ("region", "eu")]),
        )
        .unwrap_err();
        assert!(err.contains("parameter \"region\" is \"eu\""), "{err}");
        assert!(err.contains("parameter \"cpu\" is \"4\""), "{err}");
        assert!(
            err.contains("leave \"region\", \"cpu\" out of parameters"),
            "{err}"
        );
    }

    #[test]
    fn long_preset_names_are_shortened_in_errors() {
        let long = "x".repeat(500);
        let err = choose_preset(&presets(), Some(&long), &values(&[])).unwrap_err();
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn notes_say_which_preset_and_why() {
        let default = choose_preset(&presets(), None, &values(&[])).unwrap();
        assert_eq!(
            default.note().unwrap(),
            "it was built with the template's default preset \"Europe, 4 cores\" (region=eu, cpu=4)"
        );
        let dropped = choose_preset(&presets(), None, &values(&[("cpu", "8")])).unwrap();
        assert!(
            dropped.note().unwrap().contains(
                "without the template's default preset \"Europe, 4 cores\", since they differ from it (cpu: \"8\" (the preset sets \"4\"))"
            ),
            "{dropped:?}"
        );
        assert_eq!(dropped.preset(), None);
    }

    #[test]
    fn values_sent_are_the_presets_then_the_given_ones() {
        let template: Vec<TemplateVersionParameter> = ["region", "cpu", "editor"]
            .iter()
            .map(|n| TemplateVersionParameter {
                name: n.to_string(),
                ..Default::default()
            })
            .collect();
        let mut stale = preset(9, "Stale", &[("region", "eu"), ("gone", "x")], false);
        let choice = PresetChoice::Named(stale.clone());
        let sent = values_with_preset(&choice, &values(&[("editor", "vim")]), &template);
        assert_eq!(sent, values(&[("editor", "vim"), ("region", "eu")]));
        stale.default = true;
        let dropped = PresetChoice::DefaultDropped {
            preset: stale,
            differences: vec![],
        };
        let sent = values_with_preset(&dropped, &values(&[("cpu", "8")]), &template);
        assert_eq!(sent, values(&[("cpu", "8")]));
    }

    #[test]
    fn an_existing_workspace_of_another_preset_is_noted() {
        let all = presets();
        let europe4 = &all[0];
        let earlier = vec![
            preset(7, "Europe, 4 cores", &[], true),
            preset(8, "Tiny", &[], false),
        ];
        let id = Uuid::from_u128;
        type Row<'a> = (&'a str, Option<&'a Preset>, Option<Uuid>, Option<&'a str>);
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            ("no preset asked", None, Some(id(2)), None),
            ("the same preset", Some(europe4), Some(id(1)), None),
            ("built without a preset", Some(europe4), None, None),
            (
                "another preset",
                Some(europe4),
                Some(id(2)),
                Some("it was made with preset \"US, 8 cores\", not \"Europe, 4 cores\""),
            ),
            (
                "the same name in an earlier version",
                Some(europe4),
                Some(id(7)),
                None,
            ),
            (
                "another name in an earlier version",
                Some(europe4),
                Some(id(8)),
                Some("it was made with preset \"Tiny\""),
            ),
            (
                "a preset nobody knows",
                Some(europe4),
                Some(id(99)),
                Some("it was made with a preset of another template version"),
            ),
        ];
        for (row, chosen, built_with, expected) in rows {
            let got = preset_difference(chosen, built_with, &all, &earlier);
            match expected {
                None => assert_eq!(got, None, "{row}"),
                Some(start) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(start)),
                    "{row}: {got:?}"
                ),
            }
        }
    }
}
