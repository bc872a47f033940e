//! Presets and prebuilt workspaces end to end: the server binary over stdio, a real MCP
//! client, the simulated Coder (with presets and prebuild pools) on a loopback socket.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use coder_api::{
    Preset, Template, TemplateVersionParameter, TemplateVersionParameterOption,
    WorkspaceBuildParameter,
};
use coder_workspace_sim::{Fault, PresetSpec, TemplateSpec};
use common::{Env, error_text, structured};
use serde_json::{Value, json};

/// A template `go` with parameters region (us/eu, default us), cpu (1–8, default 2) and
/// editor (vim, emacs or code by a regex, default vim), and presets: `Europe, 4 cores` (the default, with a pool of
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
                default_value: "vim".into(),
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

fn args(template: &Template, extra: Value) -> Value {
    let mut args = json!({ "template_id": template.id.to_string() });
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    args
}

/// The bodies of the create POSTs Coder received, in order.
fn create_bodies(env: &Env) -> Vec<Value> {
    env.sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v2/users/me/workspaces")
        .map(|r| r.body.unwrap())
        .collect()
}

/// The parameter values of a workspace's latest build, as Coder gives them to a client.
async fn build_values(env: &Env, out: &Value) -> BTreeMap<String, String> {
    let id: uuid::Uuid = out["workspace_id"].as_str().unwrap().parse().unwrap();
    let build = env.sim.view().workspace(id).unwrap().latest_build.id;
    let params: Vec<WorkspaceBuildParameter> = reqwest::Client::new()
        .get(format!(
            "{}/api/v2/workspacebuilds/{build}/parameters",
            env.sim.url()
        ))
        .header("Coder-Session-Token", common::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    params.into_iter().map(|p| (p.name, p.value)).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A create_workspace call in a conversation of its own (a new stdio process): within
/// one conversation, a second create returns the conversation's workspace.
async fn create(env: &Env, arguments: Value) -> Value {
    let server = env.server(&[]).await;
    structured(&server.call("create_workspace", arguments).await)
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

#[tokio::test]
async fn a_named_preset_is_sent_with_its_version_and_its_values_stand() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let out = create(
        &env,
        args(
            &p.go,
            json!({"name": "us-box", "preset": "US, 8 cores", "parameters": {"editor": "vim"}}),
        ),
    )
    .await;
    assert_eq!(out["created"], true);
    assert!(out.get("prebuilt").is_none(), "{out}");
    let body = &create_bodies(&env)[0];
    assert_eq!(body["template_version_preset_id"], json!(p.us8.id));
    // The preset belongs to the version that gets built.
    assert_eq!(body["template_version_id"], json!(p.go.active_version_id));
    assert!(body.get("template_id").is_none(), "{body}");
    assert_eq!(
        body["rich_parameter_values"],
        json!([{"name": "region", "value": "us"}, {"name": "cpu", "value": "8"}, {"name": "editor", "value": "vim"}])
    );
    assert_eq!(
        build_values(&env, &out).await,
        map(&[("region", "us"), ("cpu", "8"), ("editor", "vim")])
    );
    assert_eq!(out["message"], "workspace \"us-box\" created");

    // By id too.
    let out = create(
        &env,
        args(
            &p.go,
            json!({"name": "by-id", "preset": p.europe.id.to_string()}),
        ),
    )
    .await;
    assert_eq!(
        create_bodies(&env)[1]["template_version_preset_id"],
        json!(p.europe.id)
    );
    assert_eq!(build_values(&env, &out).await["region"], "eu");
}

#[tokio::test]
async fn an_explicit_value_against_the_named_preset_is_an_error_naming_the_parameter() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let server = env.server(&[]).await;
    let error = error_text(
        &server
            .call(
                "create_workspace",
                args(
                    &p.go,
                    json!({"preset": "US, 8 cores", "parameters": {"cpu": 4, "region": "us"}}),
                ),
            )
            .await,
    );
    assert!(
        error.contains(
            "parameter \"cpu\" is \"4\" in parameters, but preset \"US, 8 cores\" sets it to \"8\""
        ),
        "{error}"
    );
    assert!(
        !error.contains("\"region\" is"),
        "an agreeing value is fine: {error}"
    );
    assert!(create_bodies(&env).is_empty(), "nothing was created");
}

#[tokio::test]
async fn parameters_the_preset_leaves_open_are_validated_as_usual() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let server = env.server(&[]).await;
    let error = error_text(
        &server
            .call(
                "create_workspace",
                args(&p.go, json!({"preset": "Europe", "parameters": {"cpu": 99, "editor": "nano", "colour": "red"}})),
            )
            .await,
    );
    assert!(
        error.contains("\"cpu\" must be between 1 and 8, got 99"),
        "{error}"
    );
    assert!(error.contains("must match ^(vim|emacs|code)$"), "{error}");
    assert!(error.contains("unknown parameter \"colour\""), "{error}");
    assert!(create_bodies(&env).is_empty());

    let out = create(
        &env,
        args(
            &p.go,
            json!({"name": "eu-6", "preset": "Europe", "parameters": {"cpu": 6}}),
        ),
    )
    .await;
    assert_eq!(
        build_values(&env, &out).await,
        map(&[("region", "eu"), ("cpu", "6"), ("editor", "vim")])
    );
}

#[tokio::test]
async fn without_a_preset_the_default_one_is_used_when_the_parameters_agree() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let out = create(
        &env,
        args(
            &p.go,
            json!({"name": "std", "parameters": {"cpu": "4", "editor": "emacs"}}),
        ),
    )
    .await;
    assert_eq!(
        create_bodies(&env)[0]["template_version_preset_id"],
        json!(p.europe4.id)
    );
    assert_eq!(
        build_values(&env, &out).await,
        map(&[("region", "eu"), ("cpu", "4"), ("editor", "emacs")])
    );
    assert_eq!(
        out["message"],
        "workspace \"std\" created; it was built with the template's default preset \"Europe, 4 cores\" (region=eu, cpu=4)"
    );
}

#[tokio::test]
async fn without_a_preset_contradicting_parameters_build_without_the_default() {
    let env = Env::new().await;
    let p = with_presets(&env, 1);
    let out = create(
        &env,
        args(&p.go, json!({"name": "six", "parameters": {"cpu": 6}})),
    )
    .await;
    let body = &create_bodies(&env)[0];
    assert!(body.get("template_version_preset_id").is_none(), "{body}");
    assert_eq!(body["template_id"], json!(p.go.id));
    assert_eq!(
        body["rich_parameter_values"],
        json!([{"name": "cpu", "value": "6"}])
    );
    assert!(
        out.get("prebuilt").is_none(),
        "the default's prebuilt workspace stays: {out}"
    );
    assert_eq!(env.sim.view().claimable_prebuilds(p.europe4.id), 1);
    assert_eq!(
        build_values(&env, &out).await,
        map(&[("region", "us"), ("cpu", "6"), ("editor", "vim")])
    );
    assert_eq!(
        out["message"],
        "workspace \"six\" created; it was built from the given parameters without the template's default preset \"Europe, 4 cores\", since they differ from it (cpu: \"6\" (the preset sets \"4\")); pass preset to build with a preset"
    );
}

#[tokio::test]
async fn an_unknown_preset_is_an_error_listing_the_presets() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let server = env.server(&[]).await;
    let long = format!("Mars {}", "x".repeat(300));
    let error = error_text(
        &server
            .call("create_workspace", args(&p.go, json!({"preset": long})))
            .await,
    );
    assert!(
        error.contains("this template's presets are: \"Europe, 4 cores\" (the default), \"US, 8 cores\", \"Europe\""),
        "{error}"
    );
    assert!(error.contains("unknown preset \"Mars xxx"), "{error}");
    assert!(error.len() < 500, "the unknown name is shortened: {error}");
    let error = error_text(
        &server
            .call(
                "create_workspace",
                args(&env.docker, json!({"preset": "Europe"})),
            )
            .await,
    );
    assert!(
        error.contains("this template has no presets; leave preset out"),
        "{error}"
    );
    assert!(create_bodies(&env).is_empty());
}

#[tokio::test]
async fn a_named_workspace_made_with_another_preset_is_returned_with_a_note() {
    let env = Env::new().await;
    let p = with_presets(&env, 0);
    let first = create(
        &env,
        args(&p.go, json!({"name": "dev-1", "preset": "US, 8 cores"})),
    )
    .await;
    let again = create(
        &env,
        args(&p.go, json!({"name": "dev-1", "preset": "Europe, 4 cores"})),
    )
    .await;
    assert_eq!(again["created"], false);
    assert_eq!(again["status"], "already_exists");
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    let message = again["message"].as_str().unwrap();
    assert!(
        message.contains(
            "it was made with preset \"US, 8 cores\", not \"Europe, 4 cores\"; it already existed"
        ),
        "{message}"
    );
    assert!(
        message.contains("region: \"us\" (asked for \"eu\")"),
        "{message}"
    );
    // The same preset again: nothing to say.
    let same = create(
        &env,
        args(&p.go, json!({"name": "dev-1", "preset": "US, 8 cores"})),
    )
    .await;
    assert_eq!(
        same["message"],
        "workspace \"dev-1\" is already running and reachable"
    );
    assert_eq!(create_bodies(&env).len(), 1);
}

#[tokio::test]
async fn a_claimed_prebuilt_workspace_is_recognised_and_ready_without_a_full_build() {
    let env = Env::new().await;
    let p = with_presets(&env, 1);
    // Full builds of the template never finish: only a claim can make this call return.
    env.sim
        .set_build_plan(p.go.id, coder_workspace_sim::BuildPlan::held());
    let prebuilt = env
        .workspaces()
        .into_iter()
        .find(|w| w.is_prebuild)
        .unwrap();
    let server = env.server(&[]).await;
    let (result, progress) = server
        .call_with_progress(
            "create_workspace",
            args(
                &p.go,
                json!({"name": "fast", "parameters": {"editor": "code"}}),
            ),
        )
        .await;
    let out = structured(&result);
    assert_eq!(out["created"], true);
    assert_eq!(out["prebuilt"], true);
    assert_eq!(out["workspace_id"], json!(prebuilt.id));
    assert_eq!(out["workspace_name"], "fast");
    assert_eq!(out["owner"], "alice");
    assert_eq!(out["build_number"], 2);
    assert_eq!(out["workspace_status"], "running");
    let message = out["message"].as_str().unwrap();
    assert!(
        message.contains(
            "it is a prebuilt workspace of the template's default preset \"Europe, 4 cores\" (region=eu, cpu=4) that Coder kept ready"
        ),
        "{message}"
    );
    let messages: Vec<&str> = progress
        .iter()
        .filter_map(|p| p.message.as_deref())
        .collect();
    let claimed = messages
        .iter()
        .position(|m| *m == "claimed a prebuilt workspace; starting it")
        .unwrap_or_else(|| panic!("{messages:#?}"));
    let ready = messages
        .iter()
        .position(|m| m.contains("is ready"))
        .unwrap();
    assert!(claimed < ready, "{messages:#?}");
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "{progress:?}"
    );
    assert_eq!(env.sim.view().held_builds(), 0, "no full build ran");
    assert_eq!(
        build_values(&env, &out).await,
        map(&[("region", "eu"), ("cpu", "4"), ("editor", "code")])
    );
}

#[tokio::test]
async fn when_the_pool_is_dry_the_normal_build_runs() {
    let env = Env::new().await;
    let p = with_presets(&env, 1);
    let server = env.server(&[]).await;
    let first = create(
        &env,
        args(&p.go, json!({"name": "one", "preset": "Europe, 4 cores"})),
    )
    .await;
    assert_eq!(first["prebuilt"], true);
    assert_eq!(env.sim.view().claimable_prebuilds(p.europe4.id), 0);
    let (result, progress) = server
        .call_with_progress(
            "create_workspace",
            args(&p.go, json!({"name": "two", "preset": "Europe, 4 cores"})),
        )
        .await;
    let second = structured(&result);
    assert_eq!(second["created"], true);
    assert!(second.get("prebuilt").is_none(), "{second}");
    assert_eq!(second["build_number"], 1);
    assert_eq!(second["message"], "workspace \"two\" created");
    assert!(
        progress
            .iter()
            .all(|p| !p.message.as_deref().unwrap_or("").contains("prebuilt")),
        "{progress:?}"
    );
    assert_eq!(
        create_bodies(&env)[1]["template_version_preset_id"],
        json!(p.europe4.id)
    );
}

#[tokio::test]
async fn a_template_without_presets_creates_as_before() {
    let env = Env::new().await;
    let mut arguments = env.create_args();
    arguments["parameters"] = json!({"region": "eu"});
    let out = create(&env, arguments).await;
    let body = &create_bodies(&env)[0];
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "rich_parameter_values", "template_id"]
    );
    assert!(out.get("prebuilt").is_none(), "{out}");
    let name = out["workspace_name"].as_str().unwrap();
    assert_eq!(out["message"], format!("workspace {name:?} created"));
    // Its presets were asked for: none.
    assert_eq!(env.sim.view().requests_matching("GET", "/presets"), 1);
}
