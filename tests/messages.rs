//! What the model reads: the message of each kind of `create_workspace` answer and the
//! text of each kind of tool error, snapshotted (`insta`; `tests/snapshots/`), so that a
//! change of wording shows as a diff in review. Names, ids, ports and seconds vary from
//! run to run and are replaced by placeholders. Accept a change with
//! `INSTA_UPDATE=always cargo test --test messages` (or `cargo insta review`).

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use coder_workspace_sim::{BuildPlan, Fault, PresetSpec, TemplateSpec};
use common::{Env, error_text, structured};
use regex::Regex;
use serde_json::{Value, json};

/// Run-to-run details → placeholders.
fn stable(text: &str) -> String {
    static RULES: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        [
            (
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "<uuid>",
            ),
            (r"http://127\.0\.0\.1:\d+", "<coder>"),
            (r"(docker|dev-1|my-dev-box)-[0-9a-f]{4}\b", "$1-<hex>"),
            (r"\b\d+ s\b", "<n> s"),
            (r"SQLite at [^)]*\)", "SQLite at <store>)"),
            (
                r"/tmp/\.tmp\w+/store\.db\.locks/[0-9a-f]+",
                "<store>.locks/<n>",
            ),
        ]
        .into_iter()
        .map(|(pattern, with)| (Regex::new(pattern).unwrap(), with))
        .collect()
    });
    RULES.iter().fold(text.to_owned(), |text, (re, with)| {
        re.replace_all(&text, *with).into_owned()
    })
}

fn message(result: &Value) -> String {
    stable(result["message"].as_str().unwrap())
}

fn named(env: &Env, name: &str) -> Value {
    let mut args = env.create_args();
    args["name"] = json!(name);
    args
}

#[tokio::test]
async fn answers() {
    let env = Env::new().await;
    let server = env.server(&["--max-call-wait", "1s"]).await;

    let created = structured(&server.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!("created", message(&created));
    let again = structured(&server.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!("already_running", message(&again));

    let id = created["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.stop_workspace(id);
    env.sim
        .wait_until(|v| {
            v.workspace(id)
                .is_some_and(|w| w.latest_build.status == coder_api::WorkspaceStatus::Stopped)
        })
        .await;
    let restarted = structured(&server.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!("stopped_then_started", message(&restarted));

    let free = structured(
        &server
            .call("create_workspace", named(&env, "other-task"))
            .await,
    );
    insta::assert_snapshot!("conversation_keeps_its_workspace", message(&free));

    let mut args = env.create_args();
    args["parameters"] = json!({ "region": "eu" });
    let differs = structured(&server.call("create_workspace", args).await);
    insta::assert_snapshot!("other_parameters", message(&differs));

    let fresh = env.server(&["--max-call-wait", "1s"]).await;
    let repaired = structured(
        &fresh
            .call("create_workspace", named(&env, "My Dev Box!"))
            .await,
    );
    insta::assert_snapshot!("invalid_name_repaired", message(&repaired));

    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let waiting = env.server(&["--max-call-wait", "1s"]).await;
    let building = structured(&waiting.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!("still_building", message(&building));
}

#[tokio::test]
async fn replacements() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    env.sim
        .set_build_plan(env.docker.id, BuildPlan::failing("terraform apply failed"));
    let failed = error_text(&server.call("create_workspace", named(&env, "dev-1")).await);
    insta::assert_snapshot!("build_failed", stable(&failed));
    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let replaced = structured(&server.call("create_workspace", named(&env, "dev-1")).await);
    insta::assert_snapshot!("replaced_under_a_derived_name", message(&replaced));

    let gone = env.server(&[]).await;
    let first = structured(&gone.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.agent_gone_since(id, Duration::from_secs(600));
    let again = structured(&gone.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!("agent_gone_replaced", message(&again));

    env.sim.set_build_plan(env.docker.id, BuildPlan::canceled());
    let canceled = error_text(
        &env.server(&[])
            .await
            .call("create_workspace", env.create_args())
            .await,
    );
    insta::assert_snapshot!("build_canceled", stable(&canceled));
}

#[tokio::test]
async fn errors() {
    let env = Env::new().await;
    let kubernetes = env.sim.add_template(TemplateSpec::named("kubernetes"));
    let server = env.server(&[]).await;

    let unknown = error_text(
        &server
            .call(
                "create_workspace",
                json!({ "template_id": "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d" }),
            )
            .await,
    );
    insta::assert_snapshot!("unknown_template", stable(&unknown));
    let mut args = env.create_args();
    args["parameters"] = json!({ "region": "mars", "colour": "red" });
    let invalid = error_text(&server.call("create_workspace", args).await);
    insta::assert_snapshot!("invalid_parameters", stable(&invalid));

    structured(
        &server
            .call("create_workspace", named(&env, "api-work"))
            .await,
    );
    let other = env.server(&[]).await;
    let args = json!({ "template_id": kubernetes.id.to_string(), "name": "api-work" });
    let refused = error_text(&other.call("create_workspace", args).await);
    insta::assert_snapshot!("name_of_another_template", stable(&refused));

    let coder_down = env.server(&[]).await;
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates/", 503)
            .times(4)
            .message("database is restarting"),
    );
    let transient = error_text(&coder_down.call("create_workspace", env.create_args()).await);
    insta::assert_snapshot!(
        "coder_unavailable_before_anything_was_made",
        stable(&transient)
    );

    let store_gone = env.server(&[]).await;
    let locks = env.dir.path().join("store.db.locks");
    std::fs::remove_dir_all(&locks).unwrap();
    std::fs::write(&locks, "in the way").unwrap();
    let store = error_text(
        &store_gone
            .call("create_workspace", named(&env, "later"))
            .await,
    );
    insta::assert_snapshot!("store_unavailable", stable(&store));
}

/// The messages about presets and prebuilt workspaces.
#[tokio::test]
async fn presets() {
    let env = Env::new().await;
    let template = env
        .sim
        .add_template(TemplateSpec::named("go").with_parameters(vec![
            coder_api::TemplateVersionParameter {
                name: "region".into(),
                kind: "string".into(),
                default_value: "us".into(),
                ..Default::default()
            },
            coder_api::TemplateVersionParameter {
                name: "cpu".into(),
                kind: "number".into(),
                default_value: "2".into(),
                ..Default::default()
            },
        ]));
    env.sim.set_presets(
        template.id,
        vec![
            PresetSpec::named("Europe, 4 cores")
                .with("region", "eu")
                .with("cpu", "4")
                .default_preset()
                .prebuilds(1),
            PresetSpec::named("US, 8 cores")
                .with("region", "us")
                .with("cpu", "8"),
        ],
    );
    let call = |name: &str, extra: Value| {
        let mut args = json!({ "template_id": template.id.to_string(), "name": name });
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    let fresh = || env.server(&[]);

    let claimed = structured(
        &fresh()
            .await
            .call("create_workspace", call("fast", json!({})))
            .await,
    );
    insta::assert_snapshot!(
        "prebuilt_claimed_with_the_default_preset",
        message(&claimed)
    );
    let default = structured(
        &fresh()
            .await
            .call("create_workspace", call("std", json!({})))
            .await,
    );
    insta::assert_snapshot!("default_preset_used", message(&default));
    let dropped = structured(
        &fresh()
            .await
            .call(
                "create_workspace",
                call("six", json!({"parameters": {"cpu": "6"}})),
            )
            .await,
    );
    insta::assert_snapshot!("default_preset_dropped", message(&dropped));
    let other = structured(
        &fresh()
            .await
            .call(
                "create_workspace",
                call("std", json!({"preset": "US, 8 cores"})),
            )
            .await,
    );
    insta::assert_snapshot!("made_with_another_preset", message(&other));

    let unknown = error_text(
        &fresh()
            .await
            .call("create_workspace", call("x", json!({"preset": "Mars"})))
            .await,
    );
    insta::assert_snapshot!("unknown_preset", stable(&unknown));
    let contradicted = error_text(
        &fresh()
            .await
            .call(
                "create_workspace",
                call(
                    "x",
                    json!({"preset": "US, 8 cores", "parameters": {"cpu": 4}}),
                ),
            )
            .await,
    );
    insta::assert_snapshot!("value_against_the_preset", stable(&contradicted));
}
