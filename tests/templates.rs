//! list_templates and read_template end to end.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::TemplateSpec;
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

/// A template with a required parameter, a validated one, an ephemeral one and described
/// options: read_template shows all of it, and create_workspace checks it before Coder does.
#[tokio::test]
async fn required_regex_and_ephemeral_parameters_are_shown_and_enforced() {
    use coder_api::{TemplateVersionParameter, TemplateVersionParameterOption};
    let env = Env::new().await;
    let option = |value: &str, description: &str| TemplateVersionParameterOption {
        name: value.to_uppercase(),
        value: value.into(),
        description: description.into(),
        ..Default::default()
    };
    let template = env
        .sim
        .add_template(TemplateSpec::named("gpu").with_parameters(vec![
            TemplateVersionParameter {
                name: "gpu_model".into(),
                kind: "string".into(),
                form_type: "radio".into(),
                required: true,
                options: vec![option("a100", "80 GiB"), option("l4", "24 GiB, cheaper")],
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "repo".into(),
                kind: "string".into(),
                default_value: "https://github.com/coder/coder".into(),
                validation_regex: "^https://".into(),
                validation_error: "Use an https:// clone URL.".into(),
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "wipe_home".into(),
                kind: "bool".into(),
                default_value: "false".into(),
                ephemeral: true,
                mutable: true,
                ..Default::default()
            },
        ]));
    let server = env.server(&[]).await;
    let id = template.id.to_string();

    let out = structured(
        &server
            .call("read_template", json!({"template_id": id}))
            .await,
    );
    let params = out["parameters"].as_array().unwrap();
    let gpu = &params[0];
    assert_eq!(gpu["required"], true);
    assert!(gpu.get("default_value").is_none(), "{gpu}");
    assert_eq!(gpu["options"][1]["description"], "24 GiB, cheaper");
    assert_eq!(
        params[1]["validation"],
        json!({"regex": "^https://", "error": "Use an https:// clone URL."})
    );
    assert_eq!(params[2]["ephemeral"], true);
    assert_eq!(params[2]["mutable"], true);

    let missing = error_text(
        &server
            .call("create_workspace", json!({"template_id": id}))
            .await,
    );
    assert!(
        missing.contains(
            r#"missing required parameter "gpu_model" (choose one of "a100" (A100), "l4" (L4))"#
        ),
        "{missing}"
    );
    let bad_repo = error_text(
        &server
            .call(
                "create_workspace",
                json!({"template_id": id, "parameters": {"gpu_model": "l4", "repo": "git@github.com:x/y"}}),
            )
            .await,
    );
    assert!(
        bad_repo.contains(r#""git@github.com:x/y" is not valid for "repo": must match ^https:// (Use an https:// clone URL.)"#),
        "{bad_repo}"
    );
    assert!(env.workspaces().is_empty(), "nothing was created");

    let created = structured(
        &server
            .call(
                "create_workspace",
                json!({"template_id": id, "parameters": {"gpu_model": "l4"}}),
            )
            .await,
    );
    assert_eq!(created["created"], true);
    let build = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let values = &build.body.unwrap()["rich_parameter_values"];
    assert_eq!(values, &json!([{"name": "gpu_model", "value": "l4"}]));
}

/// A template version's parameters and presets never change, so they are asked of Coder
/// once per version however many calls need them (and a new active version is asked anew).
#[tokio::test]
async fn a_versions_parameters_and_presets_are_asked_once() {
    let env = Env::new().await;
    let server = env.server(&["--max-call-wait", "0"]).await;
    let args = json!({"template_id": env.docker.id.to_string()});
    for _ in 0..3 {
        structured(&server.call("read_template", args.clone()).await);
        structured(&server.call("list_templates", json!({})).await);
    }
    structured(&server.call("create_workspace", env.create_args()).await);
    let view = env.sim.view();
    assert_eq!(view.requests_matching("GET", "/rich-parameters"), 1);
    assert_eq!(view.requests_matching("GET", "/presets"), 1);
    // Every call still reads the template itself (its active version may have changed).
    assert_eq!(
        view.requests_matching("GET", &format!("/templates/{}", env.docker.id)),
        4
    );
}
