//! watch-ws, SSE watch and the log follow streams.

use super::*;

/// A plan slow enough to connect a stream while the job is still queued (the stream
/// replays every later change, so only the start of the stream is timing-bound).
fn observable_plan() -> BuildPlan {
    BuildPlan {
        queue_for: Duration::from_millis(500),
        build_for: Duration::from_millis(100),
        ..BuildPlan::default()
    }
}

const FULL_LIFECYCLE: [&str; 5] = [
    "pending",
    "starting",
    "running/connecting/created",
    "running/connected/starting",
    "running/connected/ready",
];

/// Removes consecutive duplicates and keeps only the phases of FULL_LIFECYCLE.
fn lifecycle_of(phases: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in phases {
        if FULL_LIFECYCLE.contains(&p.as_str()) && out.last() != Some(p) {
            out.push(p.clone());
        }
    }
    out
}

#[tokio::test]
async fn watch_ws_sees_the_whole_lifecycle() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, observable_plan());
    let ws = Api::new(&sim, ALICE)
        .create(&template, "watched", &[])
        .await;
    let mut stream = ws_connect(
        &sim,
        &format!("/workspaces/{}/watch-ws", ws.id),
        Some(ALICE),
    )
    .await
    .expect("connect");

    let first = within(ws_next_json(&mut stream)).await.unwrap();
    assert_conforms("codersdk.ServerSentEvent", &first);
    assert_eq!(first, json!({"type": "ping", "data": null}));

    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("running/connected/ready") {
        let event = within(ws_next_json(&mut stream)).await.expect("event");
        assert_conforms("codersdk.ServerSentEvent", &event);
        assert_eq!(event["type"], "data");
        assert_conforms("codersdk.Workspace", &event["data"]);
        let w: Workspace = serde_json::from_value(event["data"].clone()).unwrap();
        phases.push(phase(&w));
    }
    assert_eq!(lifecycle_of(&phases), FULL_LIFECYCLE, "saw {phases:?}");
    assert_eq!(sim.view().open_watch_streams(), 1);
    drop(stream);
    within(sim.wait_until(|v| v.open_watch_streams() == 0)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn sse_watch_sees_the_whole_lifecycle() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, observable_plan());
    let ws = Api::new(&sim, ALICE)
        .create(&template, "watched", &[])
        .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v2/workspaces/{}/watch", sim.url(), ws.id))
        .header("Coder-Session-Token", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = SseReader::new(resp);

    assert_eq!(
        within(sse.next()).await.unwrap(),
        ("ping".to_string(), None)
    );
    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("running/connected/ready") {
        let (event, data) = within(sse.next()).await.expect("event");
        assert_eq!(event, "data");
        let data = data.expect("data");
        assert_conforms("codersdk.Workspace", &data);
        phases.push(phase(&serde_json::from_value(data).unwrap()));
    }
    assert_eq!(lifecycle_of(&phases), FULL_LIFECYCLE, "saw {phases:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn build_log_follow_streams_stages_then_closes() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, observable_plan());
    let api = Api::new(&sim, ALICE);
    let ws = api.create(&template, "logged", &[]).await;
    let path = format!(
        "/workspacebuilds/{}/logs?follow=true&after=0",
        ws.latest_build.id
    );
    let mut stream = ws_connect(&sim, &path, Some(ALICE)).await.expect("connect");

    let mut logs = Vec::new();
    let close = loop {
        match within(ws_next_json(&mut stream)).await {
            Ok(line) => {
                assert_conforms("codersdk.ProvisionerJobLog", &line);
                logs.push(serde_json::from_value::<ProvisionerJobLog>(line).unwrap());
            }
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1000), "normal closure when the job completes");
    assert!(sim.view().job_completed_at(ws.latest_build.id).is_some());
    let mut stages: Vec<&str> = Vec::new();
    for l in &logs {
        if stages.last() != Some(&l.stage.as_str()) {
            stages.push(&l.stage);
        }
    }
    assert_eq!(
        stages,
        [
            "Setting up",
            "Parsing template parameters",
            "Detecting persistent resources",
            "Detecting ephemeral resources",
            "Planning infrastructure",
            "Starting workspace",
            "Cleaning Up"
        ]
    );
    assert!(logs.windows(2).all(|w| w[0].id < w[1].id));

    // Following a finished build replays what comes after `after`, then closes.
    let path = format!(
        "/workspacebuilds/{}/logs?follow=true&after={}",
        ws.latest_build.id, logs[2].id
    );
    let mut again = ws_connect(&sim, &path, Some(ALICE)).await.expect("connect");
    let mut count = 0;
    while within(ws_next_json(&mut again)).await.is_ok() {
        count += 1;
    }
    assert_eq!(count, logs.len() - 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn agent_log_follow_sends_batches() {
    let (sim, template) = sim_with_docker().await;
    sim.set_build_plan(template.id, observable_plan());
    let ws = Api::new(&sim, ALICE)
        .create(&template, "agent-logs", &[])
        .await;
    within(sim.wait_until(|v| {
        v.workspace(ws.id)
            .is_some_and(|w| w.latest_build.first_agent().is_some())
    }))
    .await;
    let agent = sim
        .view()
        .workspace(ws.id)
        .unwrap()
        .latest_build
        .first_agent()
        .unwrap()
        .id;
    let path = format!("/workspaceagents/{agent}/logs?follow");
    let mut stream = ws_connect(&sim, &path, Some(ALICE)).await.expect("connect");
    let mut lines = 0;
    let close = loop {
        match within(ws_next_json(&mut stream)).await {
            Ok(batch) => {
                assert_each_conforms("codersdk.WorkspaceAgentLog", &batch);
                lines += batch.as_array().unwrap().len();
            }
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1000));
    assert_eq!(lines, AgentPlan::default().startup_log.len());
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_watch_streams_cuts_connections_abruptly() {
    let (sim, template) = sim_with_docker().await;
    let ws = Api::new(&sim, ALICE).create(&template, "flaky", &[]).await;
    let mut stream = ws_connect(
        &sim,
        &format!("/workspaces/{}/watch-ws", ws.id),
        Some(ALICE),
    )
    .await
    .unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v2/workspaces/{}/watch", sim.url(), ws.id))
        .header("Coder-Session-Token", ALICE)
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    within(sim.wait_until(|v| v.open_watch_streams() == 2)).await;

    sim.drop_watch_streams();
    // The WebSocket ends without a close frame...
    loop {
        match within(stream.next()).await {
            Some(Ok(WsMessage::Close(_))) => panic!("expected no close frame"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    // ...and the SSE body fails instead of ending cleanly.
    loop {
        match within(sse.next()).await {
            Ok(_) => continue,
            Err(cut) => {
                assert!(cut, "the SSE body must fail, not end cleanly");
                break;
            }
        }
    }
    within(sim.wait_until(|v| v.open_watch_streams() == 0)).await;

    // New streams work again.
    let mut again = ws_connect(
        &sim,
        &format!("/workspaces/{}/watch-ws", ws.id),
        Some(ALICE),
    )
    .await
    .unwrap();
    assert_eq!(
        within(ws_next_json(&mut again)).await.unwrap()["type"],
        "ping"
    );
    assert_eq!(
        within(ws_next_json(&mut again)).await.unwrap()["type"],
        "data"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_endpoints_can_be_switched_off() {
    let (sim, template) = sim_with_docker().await;
    let ws = Api::new(&sim, ALICE)
        .create(&template, "old-coder", &[])
        .await;
    let api = Api::new(&sim, ALICE);
    sim.set_watch_support(false, false);

    match ws_connect(
        &sim,
        &format!("/workspaces/{}/watch-ws", ws.id),
        Some(ALICE),
    )
    .await
    {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["message"], "Route not found.");
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }
    let (status, body) = api.get(&format!("/workspaces/{}/watch", ws.id)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("Route not found."))
    );

    sim.set_watch_support(true, false);
    assert!(
        ws_connect(
            &sim,
            &format!("/workspaces/{}/watch-ws", ws.id),
            Some(ALICE)
        )
        .await
        .is_ok()
    );
    assert_eq!(
        api.get(&format!("/workspaces/{}/watch", ws.id)).await.0,
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_ws_refuses_before_the_upgrade() {
    let (sim, template) = sim_with_docker().await;
    let ws = Api::new(&sim, ALICE)
        .create(&template, "private", &[])
        .await;
    let cases = [
        (format!("/workspaces/{}/watch-ws", ws.id), None, 401),
        (format!("/workspaces/{}/watch-ws", ws.id), Some(BOB), 404),
        (
            format!("/workspaces/{}/watch-ws", Uuid::new_v4()),
            Some(ALICE),
            404,
        ),
        ("/workspaces/nope/watch-ws".to_string(), Some(ALICE), 400),
    ];
    for (path, token, want) in cases {
        match ws_connect(&sim, &path, token).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), want, "{path}");
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
                assert_conforms("codersdk.Response", &body);
            }
            other => panic!("{path}: expected HTTP {want}, got {:?}", other.map(|_| ())),
        }
    }

    // A fault on the upgrade request fails it once.
    sim.inject_fault(Fault::new(http::Method::GET, "/watch-ws", 502));
    let path = format!("/workspaces/{}/watch-ws", ws.id);
    match ws_connect(&sim, &path, Some(ALICE)).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected a 502, got {:?}", other.map(|_| ())),
    }
    assert!(ws_connect(&sim, &path, Some(ALICE)).await.is_ok());
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/watch-ws"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.last(), Some(&101));
    sim.shutdown().await;
}

#[tokio::test]
async fn wait_until_resolves_immediately_when_already_true() {
    let sim = SimCoder::start().await.unwrap();
    within(sim.wait_until(|v| v.workspaces().is_empty())).await;
    sim.shutdown().await;
}
