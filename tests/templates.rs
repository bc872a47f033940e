//! list_templates and read_template end to end.

mod common;

use coder_workspace_mcp::sim::TemplateSpec;
use common::{Env, error_text, structured};
use serde_json::json;

fn add(env: &Env, name: &str, users: i64, description: &str, deprecated: bool) {
    env.sim.add_template(TemplateSpec {
        name: name.into(),
        display_name: name.to_uppercase(),
        description: description.into(),
        parameters: vec![],
        deprecated,
        active_user_count: users,
    });
}

#[tokio::test]
async fn list_pages_sorts_filters_and_hides_deprecated() {
    let env = Env::new().await; // has "docker" with 5 users
    for i in 0..11 {
        add(&env, &format!("tpl-{i:02}"), i, "plain", false);
    }
    add(&env, "old-vm", 1000, "deprecated one", true);
    add(
        &env,
        "gpu-box",
        50,
        &format!("CUDA workstation {}", "x".repeat(400)),
        false,
    );
    let server = env.server(&[]).await;

    let page1 = structured(&server.call("list_templates", json!({})).await);
    assert_eq!(page1["total_count"], 13);
    assert_eq!(page1["total_pages"], 2);
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["count"], 10);
    let names: Vec<&str> = page1["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..3],
        ["gpu-box", "tpl-10", "tpl-09"],
        "most used first"
    );
    assert!(
        !names.contains(&"old-vm"),
        "deprecated templates are left out"
    );
    let gpu = &page1["templates"][0];
    assert!(gpu["description"].as_str().unwrap().chars().count() <= 200);
    assert_eq!(gpu["organization_name"], "coder");
    assert!(gpu["active_version_id"].as_str().is_some());

    let page2 = structured(&server.call("list_templates", json!({"page": 2})).await);
    assert_eq!(page2["count"], 3);

    let found = structured(
        &server
            .call("list_templates", json!({"query": "cuda"}))
            .await,
    );
    assert_eq!(found["total_count"], 1);
    assert_eq!(found["templates"][0]["name"], "gpu-box");
    let by_display = structured(
        &server
            .call("list_templates", json!({"query": "DOCKER CONT"}))
            .await,
    );
    assert_eq!(by_display["templates"][0]["name"], "docker");

    let error = error_text(&server.call("list_templates", json!({"page": 3})).await);
    assert!(
        error.contains("page 3 does not exist: there are 2 page(s)"),
        "{error}"
    );
}

#[tokio::test]
async fn read_template_shows_the_parameters_a_model_needs() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let out = structured(
        &server
            .call(
                "read_template",
                json!({"template_id": env.docker.id.to_string()}),
            )
            .await,
    );
    assert_eq!(out["template"]["name"], "docker");
    assert_eq!(out["template"]["display_name"], "Docker Containers");
    let params = out["parameters"].as_array().unwrap();
    assert_eq!(params.len(), 2);
    let region = &params[0];
    assert_eq!(region["name"], "region");
    assert_eq!(region["type"], "string");
    assert_eq!(region["form_type"], "dropdown");
    assert_eq!(region["default_value"], "us");
    assert_eq!(
        region["options"],
        json!([{"name": "US East", "value": "us"}, {"name": "Europe", "value": "eu"}])
    );
    let cpu = &params[1];
    assert_eq!(cpu["validation"], json!({"min": 1, "max": 8}));
    assert_eq!(cpu["mutable"], true);
    assert_eq!(cpu["required"], false);
}

#[tokio::test]
async fn read_template_errors_are_actionable() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let empty = error_text(
        &server
            .call("read_template", json!({"template_id": ""}))
            .await,
    );
    assert_eq!(
        empty,
        "template_id is required; use list_templates to find one"
    );
    let unknown = error_text(
        &server
            .call(
                "read_template",
                json!({"template_id": "00000000-0000-4000-8000-000000000002"}),
            )
            .await,
    );
    assert!(
        unknown.contains("not found") && unknown.contains("use list_templates"),
        "{unknown}"
    );
    let extra = error_text(
        &server
            .call(
                "read_template",
                json!({"template_id": env.docker.id.to_string(), "verbose": true}),
            )
            .await,
    );
    assert!(extra.contains("unknown field `verbose`"), "{extra}");
}
