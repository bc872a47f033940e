//! The REST endpoints: shapes (validated against the spec), validation, auth,
//! isolation, faults and the request log.

use super::*;

const NOT_FOUND: &str = "Resource not found or you do not have access to this resource";

#[tokio::test]
async fn buildinfo_needs_no_token_and_conforms() {
    let sim = SimCoder::start().await.unwrap();
    let (status, body) = Api::anonymous(&sim).get("/buildinfo").await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.BuildInfoResponse", &body);
    assert_eq!(body["dashboard_url"], json!(sim.url()));
    assert!(body["version"].as_str().unwrap().starts_with("v2."));
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_or_unknown_tokens_get_401() {
    let (sim, _) = sim_with_docker().await;
    let (status, body) = Api::anonymous(&sim).get("/users/me").await;
    assert_eq!(status, 401);
    assert_conforms("codersdk.Response", &body);
    assert_eq!(
        body["message"],
        "You are signed out or your session has expired. Please sign in again to continue."
    );
    assert_eq!(
        body["detail"],
        "Cookie \"coder_session_token\" or query parameter must be provided."
    );

    let (status, body) = Api::new(&sim, "nope000000-NotARealToken0000000000")
        .get("/users/me")
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["detail"], "API key is invalid.");

    // The token is also accepted as a query parameter and as a cookie.
    let http = reqwest::Client::new();
    let resp = http
        .get(format!(
            "{}/api/v2/users/me?coder_session_token={ALICE}",
            sim.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(format!("{}/api/v2/users/me", sim.url()))
        .header("Cookie", format!("coder_session_token={ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn users_by_me_name_and_id() {
    let (sim, _) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    let (status, me) = api.get("/users/me").await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.User", &me);
    assert_eq!(me["username"], "alice");
    let id = me["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/users/{id}")).await.1["username"],
        "alice"
    );
    assert_eq!(api.get("/users/bob").await.1["username"], "bob");
    let (status, body) = api.get("/users/nobody").await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (404, NOT_FOUND)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn templates_versions_and_parameters_conform() {
    let sim = SimCoder::start_demo().await.unwrap();
    let api = Api::new(&sim, SimCoder::DEMO_TOKEN);

    let (status, list) = api.get("/templates").await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.Template", &list);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["docker", "kubernetes"],
        "deprecated templates are hidden"
    );
    let counts: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["active_user_count"].as_i64().unwrap())
        .collect();
    assert_ne!(counts[0], counts[1]);

    let (_, deprecated) = api.get("/templates?q=deprecated:true").await;
    assert_eq!(deprecated.as_array().unwrap().len(), 1);
    assert_eq!(deprecated[0]["name"], "aws-linux");
    assert_eq!(deprecated[0]["deprecated"], true);

    let docker = &list[0];
    let id = docker["id"].as_str().unwrap();
    let (status, one) = api.get(&format!("/templates/{id}")).await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.Template", &one);
    assert_eq!(one["organization_name"], "coder");

    let (status, bad) = api.get("/templates/not-a-uuid").await;
    assert_eq!(status, 400);
    assert_conforms("codersdk.Response", &bad);
    assert_eq!(bad["message"], "Invalid UUID \"not-a-uuid\".");
    let (status, _) = api.get(&format!("/templates/{}", Uuid::new_v4())).await;
    assert_eq!(status, 404);

    let version = docker["active_version_id"].as_str().unwrap();
    let (status, tv) = api.get(&format!("/templateversions/{version}")).await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.TemplateVersion", &tv);
    assert_eq!(tv["template_id"], docker["id"]);

    let (status, params) = api
        .get(&format!("/templateversions/{version}/rich-parameters"))
        .await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.TemplateVersionParameter", &params);
    let params: Vec<TemplateVersionParameter> = serde_json::from_value(params).unwrap();
    let cpu = params.iter().find(|p| p.name == "cpu").unwrap();
    assert_eq!(
        (cpu.kind.as_str(), cpu.default_value.as_str()),
        ("number", "2")
    );
    assert_eq!(cpu.options.len(), 3);
    assert!(
        params.iter().all(|p| !p.required),
        "the demo needs no input"
    );

    let (status, org_list) = api.get("/organizations/coder/templates").await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.Template", &org_list);
    let (status, by_name) = api.get("/organizations/coder/templates/kubernetes").await;
    assert_eq!(status, 200);
    assert_eq!(by_name["name"], "kubernetes");
    sim.shutdown().await;
}

#[tokio::test]
async fn create_workspace_and_every_read_endpoint_conform() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "dev-1", &[("cpu", "4")]).await;
    assert_eq!(ws.latest_build.build_number, 1);
    assert_eq!(ws.latest_build.transition, WorkspaceTransition::Start);
    assert_eq!(ws.latest_build.status, WorkspaceStatus::Pending);
    assert_eq!(ws.latest_build.job.status, ProvisionerJobStatus::Pending);
    assert_eq!(ws.latest_build.job.queue_position, 1);
    assert_eq!(ws.latest_build.job.error, "");
    assert_eq!(ws.owner_name, "alice");
    assert_eq!(ws.template_name, "docker");
    assert_eq!(ws.organization_name, "coder");

    within(sim.wait_until(|v| {
        v.workspace(ws.id).is_some_and(|w| {
            w.latest_build
                .first_agent()
                .is_some_and(|a| a.lifecycle_state == WorkspaceAgentLifecycle::Ready)
        })
    }))
    .await;

    let (status, body) = api.get(&format!("/workspaces/{}", ws.id)).await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.Workspace", &body);
    let now: Workspace = serde_json::from_value(body).unwrap();
    assert_eq!(now.latest_build.status, WorkspaceStatus::Running);
    let job = &now.latest_build.job;
    assert!(job.started_at.is_some() && job.completed_at.is_some());
    assert!(job.created_at <= job.started_at.unwrap());
    assert!(job.started_at <= job.completed_at);
    assert_eq!(now.latest_build.resources.len(), 1);
    assert_eq!(now.latest_build.resources[0].kind, "docker_container");
    let agent = now.latest_build.first_agent().unwrap().clone();
    assert_eq!(agent.name, "main");
    assert_eq!(agent.status, WorkspaceAgentStatus::Connected);
    assert!(agent.first_connected_at.is_some() && agent.started_at.is_some());
    assert!(agent.ready_at.is_some());
    assert!(agent.health.as_ref().unwrap().healthy);

    let build_id = now.latest_build.id;
    let (status, builds) = api.get(&format!("/workspaces/{}/builds", ws.id)).await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.WorkspaceBuild", &builds);
    let (status, build) = api.get(&format!("/workspacebuilds/{build_id}")).await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.WorkspaceBuild", &build);
    let (status, logs) = api.get(&format!("/workspacebuilds/{build_id}/logs")).await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.ProvisionerJobLog", &logs);
    let (status, later) = api
        .get(&format!(
            "/workspacebuilds/{build_id}/logs?after={}",
            logs[2]["id"]
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        later.as_array().unwrap().len(),
        logs.as_array().unwrap().len() - 3
    );
    let (status, params) = api
        .get(&format!("/workspacebuilds/{build_id}/parameters"))
        .await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.WorkspaceBuildParameter", &params);
    let params: Vec<WorkspaceBuildParameter> = serde_json::from_value(params).unwrap();
    let value = |n: &str| params.iter().find(|p| p.name == n).map(|p| p.value.clone());
    assert_eq!(value("cpu").as_deref(), Some("4"));
    assert_eq!(
        value("region").as_deref(),
        Some("eu-west"),
        "defaults are filled in"
    );

    let (status, agent_json) = api.get(&format!("/workspaceagents/{}", agent.id)).await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.WorkspaceAgent", &agent_json);
    let (status, agent_logs) = api
        .get(&format!("/workspaceagents/{}/logs", agent.id))
        .await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.WorkspaceAgentLog", &agent_logs);
    assert_eq!(
        agent_logs.as_array().unwrap().len(),
        AgentPlan::default().startup_log.len()
    );

    let (status, by_name) = api.get("/users/me/workspace/dev-1").await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.Workspace", &by_name);
    let (status, list) = api.get("/workspaces?q=owner:me%20name:dev").await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.WorkspacesResponse", &list);
    assert_eq!(list["count"], 1);

    // The deprecated organization route creates workspaces too.
    let body = create_body(template.id, "dev-2", &[]);
    let (status, created) = api
        .post("/organizations/coder/members/me/workspaces", &body)
        .await;
    assert_eq!(status, 201, "{created}");
    assert_conforms("codersdk.Workspace", &created);
    sim.shutdown().await;
}

#[tokio::test]
async fn workspace_names_are_validated_like_codersdk() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    let long = "a".repeat(33);
    for name in [
        "new",
        "create",
        "under_score",
        "-lead",
        "trail-",
        "dou--ble",
        "",
        long.as_str(),
    ] {
        let (status, body) = api
            .post("/users/me/workspaces", &create_body(template.id, name, &[]))
            .await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert_conforms("codersdk.Response", &body);
        assert_eq!(body["message"], "Validation failed.");
        assert_eq!(body["validations"][0]["field"], "name");
        assert_eq!(
            body["validations"][0]["detail"],
            format!("Validation failed for tag \"workspace_name\" with value: \"{name}\"")
        );
    }
    api.create(&template, "Mixed-Case-42", &[]).await;
    api.create(&template, &"b".repeat(32), &[]).await;

    let (status, body) = api
        .post(
            "/users/me/workspaces",
            &create_body(template.id, "Mixed-Case-42", &[]),
        )
        .await;
    assert_eq!(status, 409);
    assert_conforms("codersdk.Response", &body);
    assert_eq!(
        body["message"],
        "Workspace \"Mixed-Case-42\" already exists."
    );
    assert_eq!(body["validations"][0]["field"], "name");
    assert_eq!(
        sim.workspaces().len(),
        2,
        "rejected requests create nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_templates_and_parameters_are_rejected() {
    let sim = SimCoder::start_demo().await.unwrap();
    let api = Api::new(&sim, SimCoder::DEMO_TOKEN);
    let docker = sim.template("docker").unwrap();
    let kube = sim.template("kubernetes").unwrap();
    let strict = sim.add_template(TemplateSpec::named("strict").with_parameters(vec![
        TemplateVersionParameter {
            name: "project".to_string(),
            kind: "string".to_string(),
            required: true,
            ..Default::default()
        },
    ]));

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            create_body(docker.id, "w1", &[("nope", "1")]),
            "Unable to validate parameter \"nope\"",
            "not defined in the template",
        ),
        (
            create_body(docker.id, "w1", &[("cpu", "3")]),
            "Unable to validate parameter \"cpu\"",
            "can't validate build parameter \"CPU cores\": parameter value must match one of options: [2 4 8]",
        ),
        (
            create_body(kube.id, "w1", &[("home_disk_size", "500")]),
            "Unable to validate parameter \"home_disk_size\"",
            "value 500 is more than the maximum 100",
        ),
        (
            create_body(kube.id, "w1", &[("home_disk_size", "0")]),
            "Unable to validate parameter \"home_disk_size\"",
            "value 0 is less than the minimum 1",
        ),
        (
            create_body(kube.id, "w1", &[("gpu", "yes")]),
            "Unable to validate parameter \"gpu\"",
            "boolean value can be either \"true\" or \"false\"",
        ),
        (
            create_body(
                docker.id,
                "w1",
                &[("dotfiles_uri", "git@github.com:me/dots")],
            ),
            "Unable to validate parameter \"dotfiles_uri\"",
            "Must be an http(s) URL to a Git repository.",
        ),
        (
            create_body(strict.id, "w1", &[]),
            "Unable to validate parameter \"project\"",
            "Parameter \"project\" is required but not provided",
        ),
        (
            create_body(Uuid::nil(), "w1", &[]),
            "Template \"00000000-0000-0000-0000-000000000000\" doesn't exist.",
            "",
        ),
        (
            json!({"name": "w1", "template_id": docker.id, "template_version_id": docker.active_version_id}),
            "Invalid request",
            "",
        ),
        (json!({"name": "w1"}), "Invalid request", ""),
    ];
    for (body, message, detail) in cases {
        let (status, resp) = api.post("/users/me/workspaces", &body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_conforms("codersdk.Response", &resp);
        assert_eq!(resp["message"], message, "{body}");
        let got = format!(
            "{} {}",
            resp["detail"].as_str().unwrap_or(""),
            resp["validations"]
        );
        assert!(got.contains(detail), "{body}: {got:?} lacks {detail:?}");
    }
    let (status, resp) = api
        .post("/users/me/workspaces", &json!("not an object"))
        .await;
    assert_eq!(
        (status, resp["message"].as_str()),
        (400, Some("Request body must be valid JSON."))
    );

    assert!(
        sim.workspaces().iter().all(|w| w.is_prebuild),
        "rejected requests create nothing (the demo's prebuilt workspaces aside)"
    );
    let ok = api.create(&strict, "w1", &[("project", "coder")]).await;
    assert_eq!(ok.name, "w1");
    sim.shutdown().await;
}

#[tokio::test]
async fn users_only_see_their_own_workspaces() {
    let (sim, template) = sim_with_docker().await;
    let alice = Api::new(&sim, ALICE);
    let bob = Api::new(&sim, BOB);
    let ws = alice.create(&template, "mine", &[]).await;
    let build = ws.latest_build.id;

    for path in [
        format!("/workspaces/{}", ws.id),
        format!("/workspaces/{}/builds", ws.id),
        format!("/workspacebuilds/{build}"),
        format!("/workspacebuilds/{build}/logs"),
        format!("/workspacebuilds/{build}/parameters"),
        format!("/workspaces/{}/watch", ws.id),
        "/users/alice/workspace/mine".to_string(),
    ] {
        let (status, body) = bob.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["message"], NOT_FOUND, "{path}");
    }
    let (status, _) = bob
        .post(
            &format!("/workspaces/{}/builds", ws.id),
            &json!({"transition": "stop"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = bob.patch(&format!("/workspacebuilds/{build}/cancel")).await;
    assert_eq!(status, 404);
    let (status, _) = bob
        .post(
            "/users/alice/workspaces",
            &create_body(template.id, "sneaky", &[]),
        )
        .await;
    assert_eq!(status, 404, "members cannot create for others");
    let (_, list) = bob.get("/workspaces").await;
    assert_eq!(list["count"], 0);

    // Names are unique per owner only.
    bob.create(&template, "mine", &[]).await;
    let (_, list) = alice.get("/workspaces").await;
    assert_eq!(list["count"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_fail_the_next_matching_requests() {
    let (sim, _) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    sim.inject_fault(
        Fault::new(http::Method::GET, "/users/me", 503)
            .times(2)
            .message("upstream is restarting"),
    );
    for _ in 0..2 {
        let (status, body) = api.get("/users/me").await;
        assert_eq!(status, 503);
        assert_conforms("codersdk.Response", &body);
        assert_eq!(body["message"], "upstream is restarting");
    }
    // Other methods and paths are untouched; the fault is used up.
    assert_eq!(api.get("/buildinfo").await.0, 200);
    assert_eq!(api.get("/users/me").await.0, 200);
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/users/me")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    api.get("/users/me").await;
    api.create(&template, "rec", &[("cpu", "8")]).await;
    Api::anonymous(&sim).get("/users/me").await;

    let reqs = sim.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("GET", "/api/v2/users/me")
    );
    assert_eq!(reqs[0].token_user.as_deref(), Some("alice"));
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(reqs[1].status, 201);
    assert_eq!(reqs[1].body.as_ref().unwrap()["name"], "rec");
    assert_eq!(reqs[2].token_user, None);
    assert_eq!(reqs[2].status, 401);
    assert!(reqs[0].at <= reqs[1].at && reqs[1].at <= reqs[2].at);
    assert_eq!(sim.view().requests_matching("post", "/workspaces"), 1);

    sim.clear_requests();
    api.get("/users/me").await;
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_answer_route_not_found() {
    let (sim, _) = sim_with_docker().await;
    let (status, body) = Api::new(&sim, ALICE).get("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Route not found.");
    sim.shutdown().await;
}

#[test]
fn spec_validation_catches_invented_fields_and_values() {
    assert_conforms("codersdk.Response", &json!({"message": "ok"}));
    let invented = json!({"message": "ok", "bogus": 1});
    assert!(std::panic::catch_unwind(|| assert_conforms("codersdk.Response", &invented)).is_err());
    let bad_enum = json!({"type": "pong", "data": null});
    assert!(
        std::panic::catch_unwind(|| assert_conforms("codersdk.ServerSentEvent", &bad_enum))
            .is_err()
    );
    let null_field = json!({"id": 1, "output": null});
    assert!(
        std::panic::catch_unwind(|| assert_conforms("codersdk.ProvisionerJobLog", &null_field))
            .is_err()
    );
}
