//! The JSON Schemas of every tool's input and output, and its title, description and
//! annotations, as clients see them in `tools/list`, are kept in `schemas/`. This test fails when they drift; run it with
//! `UPDATE_SCHEMAS=1` to accept the change (and review the diff).

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::Env;
use serde_json::Value;

#[tokio::test]
async fn tool_schemas_match_the_snapshots() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let tools = server.client.list_all_tools().await.expect("tools/list");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["create_workspace", "list_templates", "read_template"]
    );
    let mut drifted = Vec::new();
    for tool in &tools {
        let output = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no output schema", tool.name));
        // What the model reads besides the schemas: the title, the description (which must
        // say what to call next) and the annotations.
        let about = serde_json::json!({
            "title": tool.title,
            "description": tool.description,
            "annotations": tool.annotations,
        });
        for (kind, schema) in [
            ("input", Value::Object((*tool.input_schema).clone())),
            ("output", Value::Object((**output).clone())),
            ("about", about),
        ] {
            let path = dir.join(format!("{}.{kind}.json", tool.name));
            let actual = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &actual).unwrap();
            } else {
                let expected = std::fs::read_to_string(&path).unwrap_or_default();
                if expected != actual {
                    // What changed, as a diff, so the drift can be judged from CI's log.
                    let diff = similar::TextDiff::from_lines(&expected, &actual)
                        .unified_diff()
                        .context_radius(3)
                        .header(&path.display().to_string(), "the tool as served now")
                        .to_string();
                    drifted.push(diff);
                }
            }
        }
        // Doc comments wrap lines: compare the words.
        let description = tool
            .description
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let next = match tool.name.as_ref() {
            "list_templates" => "Next: call read_template",
            "read_template" => "Next: call create_workspace",
            _ => "call it again with `name` set to the answer's `workspace_name` to keep waiting",
        };
        assert!(
            description.contains(next),
            "{}'s description tells the model what to do next: {description}",
            tool.name
        );
        if tool.name == "create_workspace" {
            // The name is the task's handle: the description says to pass one.
            assert!(
                description.contains("pass a short `name` that describes the task"),
                "{description}"
            );
        }
        assert!(tool.annotations.is_some(), "{} has annotations", tool.name);
        assert!(tool.title.is_some(), "{} has a title", tool.name);
    }
    assert!(
        drifted.is_empty(),
        "tool schemas drifted from schemas/ (run `UPDATE_SCHEMAS=1 cargo test --test schemas` and review):\n{}",
        drifted.join("\n")
    );
}
