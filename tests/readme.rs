//! The README's sections that describe the code are generated from it, and this test
//! fails when they drift: the tools table (from `tools/list` as the server serves it), the
//! idempotency decision table (from `src/engine/decide.rs`) and the preset table (from
//! `src/engine/presets.rs`). Run it with
//! `UPDATE_README=1` to regenerate them (and review the diff).

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::Env;
use serde_json::Value;

/// The tools table: each tool with its arguments (`?` when optional) and the first
/// sentence of its description.
async fn tools_table() -> String {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut tools = server.client.list_all_tools().await.expect("tools/list");
    // The order a newcomer uses them in.
    let order = ["list_templates", "read_template", "create_workspace"];
    tools.sort_by_key(|t| {
        order
            .iter()
            .position(|o| *o == t.name)
            .unwrap_or(order.len())
    });
    let mut table = String::from("| tool | what it does |\n|---|---|\n");
    for tool in tools {
        let schema = Value::Object((*tool.input_schema).clone());
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        // Required arguments first.
        names.sort_by_key(|arg| !required.contains(&arg.as_str()));
        let args: Vec<String> = names
            .into_iter()
            .map(|arg| {
                let optional = if required.contains(&arg.as_str()) {
                    ""
                } else {
                    "?"
                };
                format!("{arg}{optional}")
            })
            .collect();
        let description = tool.description.as_deref().unwrap_or_default();
        let words = description.split_whitespace().collect::<Vec<_>>().join(" ");
        let first = words
            .split_inclusive(". ")
            .next()
            .unwrap_or_default()
            .trim()
            .trim_end_matches('.');
        table.push_str(&format!(
            "| `{} {{{}}}` | {first} |\n",
            tool.name,
            args.join(", ")
        ));
    }
    table
}

/// The decision table of `decide.rs`'s module documentation.
fn decision_table() -> String {
    doc_table(include_str!("../src/engine/decide.rs"))
}

/// The table in a module's documentation (its `//! |` lines).
fn doc_table(source: &str) -> String {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("//! |"))
        .map(|row| format!("|{row}\n"))
        .collect()
}

/// `readme` with the section between `<!-- generated:{name} ... -->` and its closing
/// marker replaced by `body`.
fn with_section(readme: &str, name: &str, body: &str) -> String {
    let open = format!("<!-- generated:{name}");
    let close = format!("<!-- /generated:{name} -->");
    let start = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README has no {open}"));
    let start = start + readme[start..].find("-->\n").expect("the marker ends") + 4;
    let end = readme
        .find(&close)
        .unwrap_or_else(|| panic!("README has no {close}"));
    format!("{}{body}{}", &readme[..start], &readme[end..])
}

#[tokio::test]
async fn the_readme_describes_the_code_as_it_is() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let tools = tools_table().await;
    let decisions = decision_table();
    assert!(decisions.lines().count() > 5, "decide.rs has its table");
    let presets = doc_table(include_str!("../src/engine/presets.rs"));
    assert!(presets.lines().count() > 3, "presets.rs has its table");
    let generated = with_section(
        &with_section(
            &with_section(&readme, "tools", &tools),
            "decision-table",
            &decisions,
        ),
        "preset-table",
        &presets,
    );
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(&path, &generated).expect("write README.md");
    } else if generated != readme {
        let diff = similar::TextDiff::from_lines(&readme, &generated)
            .unified_diff()
            .header("README.md", "README.md as generated from the code")
            .to_string();
        panic!(
            "the README's generated sections drifted from the code (run `UPDATE_README=1 cargo test --test readme` and review):\n{diff}"
        );
    }
}
