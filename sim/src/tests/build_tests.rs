//! Build plans, holds, failures, cancels, stop/delete and agent behaviour.

use super::*;

fn latest(view: &SimView, id: Uuid) -> Option<WorkspaceBuild> {
    view.workspace(id).map(|w| w.latest_build)
}

fn job_is(view: &SimView, id: Uuid, status: ProvisionerJobStatus) -> bool {
    latest(view, id).is_some_and(|b| b.job.status == status)
}

async fn wait_for_agent(sim: &SimCoder, id: Uuid, lifecycle: WorkspaceAgentLifecycle) {
    within(sim.wait_until(|v| {
        latest(v, id)
            .and_then(|b| b.first_agent().map(|a| a.lifecycle_state))
            .is_some_and(|l| l == lifecycle)
    }))
    .await;
}

#[tokio::test]
async fn held_build_runs_until_released() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, BuildPlan::held());
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "held", &[]).await;

    within(sim.wait_until(|v| v.held_builds() == 1)).await;
    let (_, body) = api.get(&format!("/workspaces/{}", ws.id)).await;
    let now: Workspace = serde_json::from_value(body).unwrap();
    assert_eq!(now.latest_build.status, WorkspaceStatus::Starting);
    assert_eq!(now.latest_build.job.status, ProvisionerJobStatus::Running);
    assert_eq!(now.latest_build.job.queue_position, 0);
    assert!(now.latest_build.job.completed_at.is_none());
    assert!(now.latest_build.resources.is_empty());

    sim.release_builds();
    wait_for_agent(&sim, ws.id, WorkspaceAgentLifecycle::Ready).await;
    let view = sim.view();
    assert_eq!(view.held_builds(), 0);
    let completed = view.job_completed_at(ws.latest_build.id).unwrap();
    let agent = latest(&view, ws.id).unwrap().first_agent().unwrap().clone();
    assert!(agent.first_connected_at.unwrap() >= completed);

    // The plan still holds builds created later.
    let (status, _) = api
        .post(
            &format!("/workspaces/{}/builds", ws.id),
            &json!({"transition": "stop"}),
        )
        .await;
    assert_eq!(status, 201);
    within(sim.wait_until(|v| job_is(v, ws.id, ProvisionerJobStatus::Succeeded))).await;
    let (status, _) = api
        .post(
            &format!("/workspaces/{}/builds", ws.id),
            &json!({"transition": "start"}),
        )
        .await;
    assert_eq!(status, 201);
    within(sim.wait_until(|v| v.held_builds() == 1)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn release_before_the_hold_point_is_not_lost() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(
        template.id,
        BuildPlan {
            build_for: Duration::from_millis(200),
            ..BuildPlan::held()
        },
    );
    let ws = Api::new(&sim, ALICE).create(&template, "early", &[]).await;
    sim.release_builds();
    within(sim.wait_until(|v| job_is(v, ws.id, ProvisionerJobStatus::Succeeded))).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_plan_fails_the_job_with_its_error() {
    let (sim, template) = sim_with_docker().await;
    let error = "docker: Error response from daemon: no space left on device";
    sim.set_build_plan(template.id, BuildPlan::failing(error));
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "doomed", &[]).await;
    within(sim.wait_until(|v| job_is(v, ws.id, ProvisionerJobStatus::Failed))).await;

    let (_, body) = api.get(&format!("/workspaces/{}", ws.id)).await;
    assert_conforms("codersdk.Workspace", &body);
    let now: Workspace = serde_json::from_value(body).unwrap();
    assert_eq!(now.latest_build.status, WorkspaceStatus::Failed);
    assert_eq!(now.latest_build.job.error, error);
    assert!(now.latest_build.job.completed_at.is_some());
    assert!(now.latest_build.resources.is_empty());

    let (_, logs) = api
        .get(&format!("/workspacebuilds/{}/logs", ws.latest_build.id))
        .await;
    let logs: Vec<ProvisionerJobLog> = serde_json::from_value(logs).unwrap();
    let failed = logs
        .iter()
        .find(|l| l.log_level == Some(LogLevel::Error))
        .expect("an error line");
    assert!(failed.output.contains(error));
    assert_eq!(failed.stage, "Starting workspace");
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_a_running_build() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, BuildPlan::held());
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "cancel-me", &[]).await;
    within(sim.wait_until(|v| v.held_builds() == 1)).await;

    let mut watch = ws_connect(
        &sim,
        &format!("/workspaces/{}/watch-ws", ws.id),
        Some(ALICE),
    )
    .await
    .unwrap();
    let path = format!(
        "/workspacebuilds/{}/cancel?expect_status=pending",
        ws.latest_build.id
    );
    let (status, body) = api.patch(&path).await;
    assert_eq!(status, 412, "the job is running, not pending: {body}");

    let (status, body) = api
        .patch(&format!("/workspacebuilds/{}/cancel", ws.latest_build.id))
        .await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.Response", &body);
    assert_eq!(body["message"], "Job has been marked as canceled...");

    // The watch stream replays every rendering: canceling, then canceled.
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == "canceled") {
        let event = within(ws_next_json(&mut watch)).await.expect("event");
        if event["type"] == "data" {
            let w: Workspace = serde_json::from_value(event["data"].clone()).unwrap();
            seen.push(w.latest_build.status.to_string());
        }
    }
    let canceling = seen
        .iter()
        .position(|s| s == "canceling")
        .expect("canceling seen");
    assert!(canceling < seen.len() - 1);

    let view = sim.view();
    let build = latest(&view, ws.id).unwrap();
    assert_eq!(build.job.status, ProvisionerJobStatus::Canceled);
    assert!(build.job.canceled_at.is_some() && build.job.completed_at.is_some());
    assert_eq!(view.held_builds(), 0);

    let (status, body) = api
        .patch(&format!("/workspacebuilds/{}/cancel", ws.latest_build.id))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Job has already completed!"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_a_pending_build_is_immediate() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(
        template.id,
        BuildPlan {
            queue_for: Duration::from_secs(3600),
            ..BuildPlan::default()
        },
    );
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "queued", &[]).await;
    let (status, _) = api
        .patch(&format!(
            "/workspacebuilds/{}/cancel?expect_status=pending",
            ws.latest_build.id
        ))
        .await;
    assert_eq!(status, 200);
    let (_, body) = api.get(&format!("/workspaces/{}", ws.id)).await;
    let now: Workspace = serde_json::from_value(body).unwrap();
    assert_eq!(now.latest_build.status, WorkspaceStatus::Canceled);
    assert_eq!(
        now.latest_build.job.canceled_at,
        now.latest_build.job.completed_at
    );
    assert!(now.latest_build.job.started_at.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn canceled_plan_ends_canceled() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, BuildPlan::canceled());
    let ws = Api::new(&sim, ALICE)
        .create(&template, "gives-up", &[])
        .await;
    within(sim.wait_until(|v| job_is(v, ws.id, ProvisionerJobStatus::Canceled))).await;
    let build = latest(&sim.view(), ws.id).unwrap();
    assert_eq!(build.status, WorkspaceStatus::Canceled);
    assert_eq!(build.job.error, "");
    sim.shutdown().await;
}

#[tokio::test]
async fn stop_start_and_delete_through_the_api() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "cycle", &[("cpu", "8")]).await;
    let builds = format!("/workspaces/{}/builds", ws.id);

    // Only one build at a time.
    let body = json!({"transition": "stop"});
    assert_conforms("codersdk.CreateWorkspaceBuildRequest", &body);
    let (status, conflict) = api.post(&builds, &body).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["message"], "A workspace build is already active.");

    wait_for_agent(&sim, ws.id, WorkspaceAgentLifecycle::Ready).await;
    let first_agent = latest(&sim.view(), ws.id)
        .unwrap()
        .first_agent()
        .unwrap()
        .id;

    let (status, stop) = api.post(&builds, &body).await;
    assert_eq!(status, 201, "{stop}");
    assert_conforms("codersdk.WorkspaceBuild", &stop);
    assert_eq!(stop["build_number"], 2);
    assert_eq!(stop["transition"], "stop");
    assert_eq!(stop["status"], "pending");
    within(
        sim.wait_until(|v| latest(v, ws.id).is_some_and(|b| b.status == WorkspaceStatus::Stopped)),
    )
    .await;
    let stopped = latest(&sim.view(), ws.id).unwrap();
    assert!(stopped.first_agent().is_none());
    assert_eq!(stopped.resources[0].kind, "docker_volume");
    let (_, old_agent) = api.get(&format!("/workspaceagents/{first_agent}")).await;
    assert_eq!(old_agent["lifecycle_state"], "off");
    assert_eq!(old_agent["status"], "disconnected");

    // Parameters carry over to the next build.
    let start = CreateWorkspaceBuildRequest {
        transition: WorkspaceTransition::Start,
        template_version_id: None,
        rich_parameter_values: Vec::new(),
        template_version_preset_id: None,
    };
    let start = serde_json::to_value(start).unwrap();
    assert_conforms("codersdk.CreateWorkspaceBuildRequest", &start);
    let (status, restarted) = api.post(&builds, &start).await;
    assert_eq!(status, 201);
    assert_eq!(restarted["build_number"], 3);
    wait_for_agent(&sim, ws.id, WorkspaceAgentLifecycle::Ready).await;
    let (_, params) = api
        .get(&format!(
            "/workspacebuilds/{}/parameters",
            restarted["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        params
            .as_array()
            .unwrap()
            .contains(&json!({"name": "cpu", "value": "8"}))
    );

    let (status, bad) = api.post(&builds, &json!({"transition": "restart"})).await;
    assert_eq!(status, 400);
    assert_eq!(bad["validations"][0]["field"], "transition");

    let (status, _) = api.post(&builds, &json!({"transition": "delete"})).await;
    assert_eq!(status, 201);
    within(
        sim.wait_until(|v| latest(v, ws.id).is_some_and(|b| b.status == WorkspaceStatus::Deleted)),
    )
    .await;
    let (status, gone) = api.get(&format!("/workspaces/{}", ws.id)).await;
    assert_eq!(status, 410);
    assert_conforms("codersdk.Response", &gone);
    assert_eq!(
        gone["message"],
        format!(
            "Workspace \"{}\" was deleted, you can view this workspace by specifying '?deleted=true' and trying again.",
            ws.id
        )
    );
    let (status, deleted) = api
        .get(&format!("/workspaces/{}?include_deleted=true", ws.id))
        .await;
    assert_eq!(status, 200);
    assert_conforms("codersdk.Workspace", &deleted);
    assert_eq!(deleted["latest_build"]["status"], "deleted");
    assert_eq!(api.get("/users/me/workspace/cycle").await.0, 404);
    assert_eq!(
        api.get("/users/me/workspace/cycle?include_deleted=true")
            .await
            .0,
        200
    );
    let (status, _) = api
        .get(&format!("/workspaces/{}?include_deleted=maybe", ws.id))
        .await;
    assert_eq!(status, 400);

    // The name is free again.
    api.create(&template, "cycle", &[]).await;
    assert_eq!(sim.workspaces().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn system_stop_and_delete() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "auto", &[]).await;
    wait_for_agent(&sim, ws.id, WorkspaceAgentLifecycle::Ready).await;

    sim.stop_workspace(ws.id);
    within(
        sim.wait_until(|v| latest(v, ws.id).is_some_and(|b| b.status == WorkspaceStatus::Stopped)),
    )
    .await;
    let stop = latest(&sim.view(), ws.id).unwrap();
    assert_eq!(stop.reason.as_deref(), Some("autostop"));
    assert_eq!(stop.build_number, 2);

    sim.delete_workspace(ws.id);
    within(
        sim.wait_until(|v| latest(v, ws.id).is_some_and(|b| b.status == WorkspaceStatus::Deleted)),
    )
    .await;
    assert_eq!(api.get(&format!("/workspaces/{}", ws.id)).await.0, 410);
    assert_eq!(
        sim.workspaces().len(),
        1,
        "deleted workspaces are still listed"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn agent_plans_and_disconnects() {
    let (sim, template) = sim_with_docker().await;
    let api = Api::new(&sim, ALICE);

    sim.set_build_plan(
        template.id,
        BuildPlan::with_agent(AgentPlan::never_connects()),
    );
    let silent = api.create(&template, "silent", &[]).await;
    within(sim.wait_until(|v| job_is(v, silent.id, ProvisionerJobStatus::Succeeded))).await;
    let (_, body) = api.get(&format!("/workspaces/{}", silent.id)).await;
    let agent = serde_json::from_value::<Workspace>(body)
        .unwrap()
        .latest_build
        .first_agent()
        .unwrap()
        .clone();
    assert_eq!(agent.status, WorkspaceAgentStatus::Connecting);
    assert_eq!(agent.lifecycle_state, WorkspaceAgentLifecycle::Created);
    assert_eq!(agent.health.unwrap().reason, "agent is not running");

    sim.set_build_plan(template.id, BuildPlan::with_agent(AgentPlan::start_error()));
    let broken = api.create(&template, "broken", &[]).await;
    wait_for_agent(&sim, broken.id, WorkspaceAgentLifecycle::StartError).await;
    let agent = latest(&sim.view(), broken.id)
        .unwrap()
        .first_agent()
        .unwrap()
        .clone();
    assert!(agent.ready_at.is_some());
    assert!(!agent.health.as_ref().unwrap().healthy);
    let (_, body) = api.get(&format!("/workspaces/{}", broken.id)).await;
    assert_eq!(body["health"]["healthy"], false);
    assert_eq!(body["health"]["failing_agents"][0], json!(agent.id));
    let (_, logs) = api
        .get(&format!("/workspaceagents/{}/logs", agent.id))
        .await;
    assert_eq!(logs.as_array().unwrap().len(), 2);

    sim.disconnect_agent(broken.id);
    within(sim.wait_until(|v| {
        latest(v, broken.id)
            .and_then(|b| b.first_agent().map(|a| a.status))
            .is_some_and(|s| s == WorkspaceAgentStatus::Disconnected)
    }))
    .await;
    sim.reconnect_agent(broken.id);
    within(sim.wait_until(|v| {
        latest(v, broken.id)
            .and_then(|b| b.first_agent().map(|a| a.status))
            .is_some_and(|s| s == WorkspaceAgentStatus::Connected)
    }))
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn demo_deployment_is_usable() {
    let sim = SimCoder::start_demo().await.unwrap();
    let api = Api::new(&sim, SimCoder::DEMO_TOKEN);
    assert_eq!(api.get("/users/me").await.1["username"], "demo");
    let docker = sim.template("docker").unwrap();
    let ws = api.create(&docker, "demo-ws", &[]).await;
    assert_eq!(ws.latest_build.status, WorkspaceStatus::Pending);
    sim.shutdown().await;
}
