//! Presets and prebuilt workspaces end to end: the server binary over stdio, a real MCP
//! client, the simulated Coder (with presets and prebuild pools) on a loopback socket.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_api::{Preset, Template, TemplateVersionParameter, TemplateVersionParameterOption};
use coder_workspace_sim::{Fault, PresetSpec, TemplateSpec};
use common::{Env, structured};
use serde_json::json;

/// A template `go` with parameters region (us/eu, default us), cpu (1–8, default 2) and
/// editor (a free string), and presets: `Europe, 4 cores` (the default, with a pool of
/// `pool` prebuilt workspaces), `US, 8 cores`, and `Europe` (fixing only the region).
struct Presets {
    go: Template,
    europe4: Preset,
    us8: Preset,
    europe: Preset,
}

fn with_presets(env: &Env, pool: i64) -> Presets {
    let option = |value: &str, name: &str| TemplateVersionParameterOption {
        name: name.into(),
        value: value.into(),
        ..Default::default()
    };
    let go = env
        .sim
        .add_template(TemplateSpec::named("go").with_parameters(vec![
            TemplateVersionParameter {
                name: "region".into(),
                kind: "string".into(),
                default_value: "us".into(),
                options: vec![option("us", "US East"), option("eu", "Europe")],
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "cpu".into(),
                kind: "number".into(),
                default_value: "2".into(),
                validation_min: Some(1),
                validation_max: Some(8),
                mutable: true,
                ..Default::default()
            },
            TemplateVersionParameter {
                name: "editor".into(),
                kind: "string".into(),
                validation_regex: "^(vim|emacs|code)$".into(),
                mutable: true,
                ..Default::default()
            },
        ]));
    let presets = env.sim.set_presets(
        go.id,
        vec![
            PresetSpec::named("Europe, 4 cores")
                .described("The team's standard setup.")
                .with("region", "eu")
                .with("cpu", "4")
                .default_preset()
                .prebuilds(pool),
            PresetSpec::named("US, 8 cores")
                .with("region", "us")
                .with("cpu", "8"),
            PresetSpec::named("Europe").with("region", "eu"),
        ],
    );
    let [europe4, us8, europe] = <[Preset; 3]>::try_from(presets).unwrap();
    Presets {
        go,
        europe4,
        us8,
        europe,
    }
}

#[tokio::test]
async fn read_template_lists_the_presets() {
    let env = Env::new().await;
    let p = with_presets(&env, 2);
    let server = env.server(&[]).await;
    let out = structured(
        &server
            .call("read_template", json!({"template_id": p.go.id.to_string()}))
            .await,
    );
    assert_eq!(
        out["presets"],
        json!([
            {"id": p.europe4.id, "name": "Europe, 4 cores", "description": "The team's standard setup.",
             "parameters": {"region": "eu", "cpu": "4"}, "default": true, "prebuilt_workspaces": true},
            {"id": p.us8.id, "name": "US, 8 cores",
             "parameters": {"region": "us", "cpu": "8"}, "default": false, "prebuilt_workspaces": false},
            {"id": p.europe.id, "name": "Europe",
             "parameters": {"region": "eu"}, "default": false, "prebuilt_workspaces": false},
        ])
    );
    assert_eq!(out["parameters"].as_array().unwrap().len(), 3);

    // A template without presets reads as before: no `presets` at all.
    let plain = structured(
        &server
            .call(
                "read_template",
                json!({"template_id": env.docker.id.to_string()}),
            )
            .await,
    );
    assert!(plain.get("presets").is_none(), "{plain}");
}

#[tokio::test]
async fn list_templates_counts_the_presets() {
    let env = Env::new().await;
    with_presets(&env, 0);
    let server = env.server(&[]).await;
    let out = structured(&server.call("list_templates", json!({})).await);
    let count = |name: &str| {
        out["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["preset_count"]
            .clone()
    };
    assert_eq!(count("go"), 3);
    assert_eq!(count("docker"), 0);
}

#[tokio::test]
async fn a_preset_count_coder_cannot_give_is_left_out() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    // Not retried: a 400 is not transient.
    env.sim.inject_fault(Fault::new(
        http::Method::GET,
        format!("/templateversions/{}/presets", p.go.active_version_id),
        400,
    ));
    let server = env.server(&[]).await;
    let out = structured(&server.call("list_templates", json!({})).await);
    let go = out["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "go")
        .unwrap();
    assert!(go.get("preset_count").is_none(), "{go}");
}
