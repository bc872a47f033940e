//! Presets and prebuilt workspaces: the presets endpoint as coderd sends it (PascalCase,
//! `null` for empty lists), checked against the spec through the wire notes' mapping;
//! claims (ownership, name, the short start build), pools running dry, preset values
//! winning over the request's, and the preset coderd matches when none is named.

use super::*;

/// The wire notes' mapping (NOTES §5): coderd sends `codersdk.Preset` with Go's field
/// names; the spec (made by swag) says lowercase. Swagger 2.0 has no `null`: a Go nil
/// slice or pointer is an absent property in the spec's terms.
fn wire_to_spec(preset: &Value) -> Value {
    let keys = [
        ("ID", "id"),
        ("Name", "name"),
        ("Parameters", "parameters"),
        ("Default", "default"),
        ("DesiredPrebuildInstances", "desiredPrebuildInstances"),
        ("Description", "description"),
        ("Icon", "icon"),
        ("Value", "value"),
    ];
    match preset {
        Value::Object(obj) => Value::Object(
            obj.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let spec = keys
                        .iter()
                        .find(|(wire, _)| wire == k)
                        .map_or_else(|| format!("unmapped:{k}"), |(_, s)| s.to_string());
                    (spec, wire_to_spec(v))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(wire_to_spec).collect()),
        other => other.clone(),
    }
}

async fn sim_with_presets() -> (SimCoder, Template, Vec<Preset>) {
    let (sim, template) = sim_with_docker().await;
    let presets = sim.set_presets(
        template.id,
        vec![
            PresetSpec::named("Frankfurt")
                .described("Kept warm")
                .with("region", "eu-west")
                .with("cpu", "4")
                .default_preset()
                .prebuilds(1),
            PresetSpec::named("Virginia").with("region", "us-east"),
            PresetSpec::named("Anything"),
        ],
    );
    (sim, template, presets)
}

#[tokio::test]
async fn presets_are_sent_as_coderd_sends_them_and_conform_through_the_wire_notes() {
    let (sim, template, presets) = sim_with_presets().await;
    let api = Api::new(&sim, ALICE);
    let version = template.active_version_id;
    let (status, body) = api
        .get(&format!("/templateversions/{version}/presets"))
        .await;
    assert_eq!(status, 200);
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), 3);
    // PascalCase on the wire, `null` for nothing.
    let keys: Vec<&str> = list[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "ID",
        "Name",
        "Parameters",
        "Default",
        "DesiredPrebuildInstances",
        "Description",
        "Icon",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert_eq!(
        list[0]["Parameters"][0],
        json!({"Name": "region", "Value": "eu-west"})
    );
    assert_eq!(list[0]["Default"], true);
    assert_eq!(list[0]["DesiredPrebuildInstances"], 1);
    assert_eq!(list[1]["DesiredPrebuildInstances"], Value::Null);
    assert_eq!(list[2]["Parameters"], Value::Null);
    assert_each_conforms("codersdk.Preset", &wire_to_spec(&body));
    let typed: Vec<Preset> = serde_json::from_value(body).unwrap();
    assert_eq!(typed, presets);

    // A version without presets: `null`.
    let plain = sim.add_template(TemplateSpec::named("plain"));
    let (status, none) = api
        .get(&format!(
            "/templateversions/{}/presets",
            plain.active_version_id
        ))
        .await;
    assert_eq!((status, none), (200, Value::Null));
    let (status, _) = api
        .get(&format!("/templateversions/{}/presets", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}

fn with_preset(template: &Template, name: &str, params: &[(&str, &str)], preset: Uuid) -> Value {
    let mut body = create_body(template.id, name, params);
    body["template_version_preset_id"] = json!(preset);
    assert_conforms("codersdk.CreateWorkspaceRequest", &body);
    body
}

#[tokio::test]
async fn a_create_with_the_preset_claims_a_prebuilt_workspace_until_the_pool_runs_dry() {
    let (sim, template, presets) = sim_with_presets().await;
    let frankfurt = presets[0].id;
    assert_eq!(sim.view().claimable_prebuilds(frankfurt), 1);
    let prebuilt = sim
        .workspaces()
        .into_iter()
        .find(|w| w.is_prebuild)
        .expect("a prebuilt workspace");
    assert_eq!(prebuilt.owner_id, PREBUILDS_USER_ID);
    assert_eq!(
        prebuilt.latest_build.template_version_preset_id,
        Some(frankfurt)
    );
    // Full builds would never finish: a claim does not wait for one.
    sim.set_build_plan(template.id, BuildPlan::held());

    let api = Api::new(&sim, ALICE);
    // The request's region is silently overridden by the preset's.
    let body = with_preset(&template, "dev-1", &[("region", "us-east")], frankfurt);
    let (status, json) = api.post("/users/me/workspaces", &body).await;
    assert_eq!(status, 201, "{json}");
    assert_conforms("codersdk.Workspace", &json);
    let claimed: Workspace = serde_json::from_value(json).unwrap();
    assert_eq!(claimed.id, prebuilt.id, "the prebuilt workspace itself");
    assert_eq!(claimed.name, "dev-1");
    assert_eq!(claimed.owner_name, "alice");
    assert!(!claimed.is_prebuild);
    assert_eq!(claimed.latest_build.build_number, 2);
    assert_eq!(
        claimed.latest_build.job.status,
        ProvisionerJobStatus::Pending
    );
    assert_eq!(claimed.latest_build.initiator_name, "alice");
    assert_eq!(
        claimed.latest_build.template_version_preset_id,
        Some(frankfurt)
    );
    assert_eq!(sim.view().claimable_prebuilds(frankfurt), 0);
    within(sim.wait_until(|v| {
        v.workspace(claimed.id).is_some_and(|w| {
            w.latest_build
                .first_agent()
                .is_some_and(|a| a.lifecycle_state == WorkspaceAgentLifecycle::Ready)
        })
    }))
    .await;
    let (_, params) = api
        .get(&format!(
            "/workspacebuilds/{}/parameters",
            claimed.latest_build.id
        ))
        .await;
    let params: Vec<WorkspaceBuildParameter> = serde_json::from_value(params).unwrap();
    let value = |n: &str| params.iter().find(|p| p.name == n).map(|p| p.value.clone());
    assert_eq!(
        value("region").as_deref(),
        Some("eu-west"),
        "the preset wins"
    );
    assert_eq!(value("cpu").as_deref(), Some("4"));
    let (status, by_name) = api.get("/users/me/workspace/dev-1").await;
    assert_eq!(status, 200);
    assert_eq!(by_name["id"], json!(claimed.id));

    // The pool is dry: the next create with the preset is an ordinary new workspace.
    let body = with_preset(&template, "dev-2", &[], frankfurt);
    let (status, json) = api.post("/users/me/workspaces", &body).await;
    assert_eq!(status, 201, "{json}");
    let fresh: Workspace = serde_json::from_value(json).unwrap();
    assert_ne!(fresh.id, prebuilt.id);
    assert_eq!(fresh.latest_build.build_number, 1);
    assert_eq!(
        fresh.latest_build.template_version_preset_id,
        Some(frankfurt)
    );
    within(sim.wait_until(|v| v.held_builds() == 1)).await;

    // A preset of another version (or none at all) is refused.
    let body = with_preset(&template, "dev-3", &[], Uuid::new_v4());
    let (status, json) = api.post("/users/me/workspaces", &body).await;
    assert_eq!(status, 400, "{json}");
    assert_conforms("codersdk.Response", &json);
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_preset_id_the_preset_all_of_whose_values_are_given_is_used() {
    let (sim, template, presets) = sim_with_presets().await;
    let api = Api::new(&sim, ALICE);
    // Every value of Frankfurt given: coderd matches it and claims its prebuild.
    let ws = api
        .create(&template, "dev-1", &[("region", "eu-west"), ("cpu", "4")])
        .await;
    assert_eq!(ws.latest_build.build_number, 2, "claimed");
    assert_eq!(
        ws.latest_build.template_version_preset_id,
        Some(presets[0].id)
    );
    // A value that differs: no Frankfurt; Virginia's only value matches.
    let ws = api
        .create(&template, "dev-2", &[("region", "us-east"), ("cpu", "4")])
        .await;
    assert_eq!(
        ws.latest_build.template_version_preset_id,
        Some(presets[1].id)
    );
    // Nothing matches: no preset.
    let ws = api.create(&template, "dev-3", &[("cpu", "8")]).await;
    assert_eq!(ws.latest_build.template_version_preset_id, None);
    sim.shutdown().await;
}
