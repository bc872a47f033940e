//! create_workspace end to end: the server binary over stdio, a real MCP client,
//! the simulated Coder on a loopback socket.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coder_api::{WorkspaceAgentLifecycle, WorkspaceStatus};
use coder_workspace_sim::{AgentPlan, BuildPlan, Fault};
use common::{Env, error_text, structured};
use serde_json::json;

fn creates(env: &Env) -> usize {
    env.sim
        .view()
        .requests_matching("POST", "/api/v2/users/me/workspaces")
}

#[tokio::test]
async fn happy_path_streams_progress_in_order() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&[]).await;

    let mut args = env.create_args();
    args["parameters"] = json!({ "region": "eu", "cpu": 4 });
    let handle = server.start_call("create_workspace", args).await;
    let token = handle.progress_token.clone();
    // Deterministic: the build is held running until we have seen the building phase.
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    loop {
        if server
            .progress(&token)
            .iter()
            // A build-log stage was reported: "building docker-xxxx: <stage>".
            .any(|p| {
                let m = p.message.as_deref().unwrap_or("");
                m.starts_with("building docker-") && m.contains(": ")
            })
        {
            break;
        }
        server
            .wait_for_progress(&token, server.progress(&token).len() + 1)
            .await;
    }
    env.sim.release_builds();
    let result = handle.await_response().await.expect("tools/call");
    let rmcp::model::ServerResult::CallToolResult(result) = result else {
        panic!("not a tool result")
    };
    let out = structured(&result);

    assert_eq!(out["created"], true);
    let name = out["workspace_name"].as_str().unwrap();
    assert!(
        name.starts_with("docker-") && name.len() == "docker-".len() + 4,
        "{name}"
    );
    assert_eq!(out["workspace_status"], "running");
    assert_eq!(out["owner"], "alice");
    assert_eq!(out["agent_name"], "main");
    assert_eq!(out["template_id"], env.docker.id.to_string());
    assert_eq!(out["url"], format!("{}/@alice/{name}", env.sim.url()));
    assert!(out.get("status").is_none(), "{out}");
    assert!(out.get("agent_status").is_none(), "{out}");

    // The parameters went to Coder as rich_parameter_values, numbers as strings.
    let post = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/api/v2/users/me/workspaces")
        .unwrap();
    let body = post.body.unwrap();
    assert_eq!(body["template_id"], env.docker.id.to_string());
    assert_eq!(body["name"], name);
    assert_eq!(
        body["rich_parameter_values"],
        json!([{"name": "region", "value": "eu"}, {"name": "cpu", "value": "4"}])
    );

    // Progress: strictly increasing, short messages, phases in order, ending at 100.
    let progress = server.progress(&token);
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .all(|p| p.message.as_deref().unwrap_or("").chars().count() < 200)
    );
    assert!(progress.iter().all(|p| p.total == Some(100.0)));
    let first = |needle: &str| {
        progress
            .iter()
            .position(|p| p.message.as_deref().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no progress message containing {needle:?}: {progress:#?}"))
    };
    let order = [
        first("creating workspace"),
        first("queued"),
        first("building"),
        first("waiting for agent main to connect"),
        first("running startup scripts"),
        first("is ready"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "phases out of order: {order:?} in {progress:#?}"
    );
    assert_eq!(progress.last().unwrap().progress, 100.0);

    // The watch stream was healthy all along: not a single poll of the workspace.
    let polls = env
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path
                    == format!(
                        "/api/v2/workspaces/{}",
                        out["workspace_id"].as_str().unwrap()
                    )
        })
        .count();
    assert_eq!(polls, 0, "polled while the watch stream was healthy");
}

#[tokio::test]
async fn second_call_returns_the_running_workspace() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], false);
    assert_eq!(second["status"], "already_exists");
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(second["workspace_name"], first["workspace_name"]);
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{second}"
    );
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

#[tokio::test]
async fn max_call_wait_answers_building_and_the_next_call_finishes_the_same_workspace() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "5s"]).await;

    // The build is held, so the call's own limit must come first.
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(first["created"], true);
    assert_eq!(first["status"], "building");
    let name = first["workspace_name"].as_str().unwrap();
    assert!(
        first["message"].as_str().unwrap().contains(&format!(
            "call create_workspace again with name {name:?} and the same template_id"
        )),
        "{first}"
    );

    // The second call, as the answer said, finds the build still running and waits for it.
    let mut again = env.create_args();
    again["name"] = json!(name);
    let handle = server.start_call("create_workspace", again).await;
    let token = handle.progress_token.clone();
    // It follows the build (its progress names the workspace) before the build finishes.
    server.wait_for_message(&token, name).await;
    env.sim.release_builds();
    let rmcp::model::ServerResult::CallToolResult(result) = handle.await_response().await.unwrap()
    else {
        panic!()
    };
    let second = structured(&result);
    assert_eq!(second["created"], false);
    assert_eq!(second["status"], "already_exists");
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(second["workspace_status"], "running");
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("already being built"),
        "{second}"
    );
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

/// The session's first call is stuck in a slow create POST when the second call's
/// --max-call-wait runs out: that is not an error but a `building` answer, and the
/// call after it waits for the same workspace.
#[tokio::test]
async fn a_call_out_of_time_before_the_other_call_created_its_workspace_answers_building() {
    let env = Env::new().await;
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");
    let server = env.server(&["--max-call-wait", "1s"]).await;
    let first = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 1)
        .await;

    let waiting = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(waiting["created"], false);
    assert_eq!(waiting["status"], "building");
    assert!(waiting.get("workspace_id").is_none(), "{waiting}");
    assert_eq!(waiting["owner"], "alice");
    assert_eq!(waiting["template_id"], env.docker.id.to_string());
    let name = waiting["workspace_name"].as_str().unwrap();
    assert!(name.starts_with("docker-"), "{waiting}");
    assert!(
        waiting["message"].as_str().unwrap().contains(&format!(
            "call create_workspace again with name {name:?} and the same template_id"
        )),
        "{waiting}"
    );
    assert_eq!(creates(&env), 1, "the waiting call created nothing");

    env.sim.release_requests();
    let rmcp::model::ServerResult::CallToolResult(result) = first.await_response().await.unwrap()
    else {
        panic!()
    };
    let first = structured(&result);
    assert_eq!(first["created"], true);
    assert_eq!(
        first["workspace_name"], name,
        "the name announced is the one created"
    );

    let again = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(again["created"], false);
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

#[tokio::test]
async fn concurrent_calls_in_one_session_create_one_workspace() {
    let env = Env::new().await;
    // A slow create keeps the first call in its critical section while the others arrive.
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");
    let server = env.server(&["--max-call-wait", "0"]).await;
    let a = server
        .start_call("create_workspace", env.create_args())
        .await;
    let b = server
        .start_call("create_workspace", env.create_args())
        .await;
    let c = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 1)
        .await;
    // The calls really overlap: while one creates, the two others wait for the
    // task's lock (whichever got there first), and say so.
    let mut waiting = 0;
    for call in [&a, &b, &c] {
        server.wait_for_progress(&call.progress_token, 2).await;
        waiting += server.progress(&call.progress_token).iter().any(|p| {
            p.message.as_deref().is_some_and(|m| {
                m.contains("waiting for another create_workspace call of this task")
            })
        }) as usize;
    }
    assert_eq!(waiting, 2);
    env.sim.release_requests();
    let mut results = Vec::new();
    for handle in [a, b, c] {
        let rmcp::model::ServerResult::CallToolResult(result) =
            handle.await_response().await.unwrap()
        else {
            panic!()
        };
        results.push(structured(&result));
    }
    assert_eq!(
        results.iter().filter(|r| r["created"] == true).count(),
        1,
        "{results:#?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r["workspace_id"] == results[0]["workspace_id"])
    );
    assert!(
        results
            .iter()
            .filter(|r| r["created"] == false)
            .all(|r| r["status"] == "already_exists")
    );
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

#[tokio::test]
async fn a_stopped_workspace_is_started_not_duplicated() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.stop_workspace(id);
    env.sim
        .wait_until(|v| {
            v.workspace(id)
                .is_some_and(|w| w.latest_build.status == WorkspaceStatus::Stopped)
        })
        .await;

    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], false);
    assert_eq!(second["status"], "already_exists");
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(second["workspace_status"], "running");
    assert_eq!(second["build_number"], 3, "start, stop, start");
    assert!(
        second["message"].as_str().unwrap().contains("stopped"),
        "{second}"
    );
    assert_eq!(env.workspaces().len(), 1);
    let starts: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/builds"))
        .collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].body.as_ref().unwrap()["transition"], "start");
}

#[tokio::test]
async fn a_failed_build_is_a_tool_error_with_coders_text_and_the_next_call_creates_anew() {
    let env = Env::new().await;
    env.sim.set_build_plan(
        env.docker.id,
        BuildPlan::failing("docker: port 22 is already allocated"),
    );
    let server = env.server(&[]).await;
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(
        error.contains("workspace build failed: docker: port 22 is already allocated"),
        "{error}"
    );

    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], true);
    assert_eq!(env.workspaces().len(), 2);
    assert_ne!(env.workspaces()[0].id, env.workspaces()[1].id);
}

/// The failed workspace still holds "dev-1" in Coder, so asking for "dev-1" again must
/// not end in Coder's 409: the new workspace gets a name derived from it.
#[tokio::test]
async fn a_failed_build_with_an_explicit_name_is_replaced_under_a_derived_name() {
    let env = Env::new().await;
    env.sim
        .set_build_plan(env.docker.id, BuildPlan::failing("terraform apply failed"));
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["name"] = json!("dev-1");
    let error = error_text(&server.call("create_workspace", args.clone()).await);
    assert!(error.contains("terraform apply failed"), "{error}");

    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let second = structured(&server.call("create_workspace", args).await);
    assert_eq!(second["created"], true);
    let name = second["workspace_name"].as_str().unwrap();
    assert!(
        name.starts_with("dev-1-") && name.len() == "dev-1-".len() + 4,
        "{name}"
    );
    let message = second["message"].as_str().unwrap();
    assert!(
        message.contains("\"dev-1\" could not be used (its last build failed")
            && message.contains("still holds the name"),
        "{message}"
    );
    assert_eq!(env.workspaces().len(), 2);
}

#[tokio::test]
async fn a_workspace_with_an_explicit_name_whose_agent_is_gone_is_replaced_under_a_derived_name() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["name"] = json!("dev-1");
    let first = structured(&server.call("create_workspace", args.clone()).await);
    assert_eq!(first["workspace_name"], "dev-1");
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    // Gone for longer than the agent timeout (2 minutes): not coming back.
    env.sim.agent_gone_since(id, Duration::from_secs(600));
    let second = structured(&server.call("create_workspace", args).await);
    assert_eq!(second["created"], true);
    assert_ne!(second["workspace_id"], first["workspace_id"]);
    let name = second["workspace_name"].as_str().unwrap();
    assert!(name.starts_with("dev-1-"), "{name}");
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("its agent is disconnected"),
        "{second}"
    );
    assert_eq!(env.workspaces().len(), 2);
}

/// A deleted workspace frees its name in Coder, so the new one gets it back.
#[tokio::test]
async fn a_deleted_workspace_with_an_explicit_name_is_recreated_under_that_name() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["name"] = json!("dev-1");
    let first = structured(&server.call("create_workspace", args.clone()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.delete_workspace(id);
    env.sim
        .wait_until(|v| {
            v.workspace(id)
                .is_some_and(|w| w.latest_build.status == WorkspaceStatus::Deleted)
        })
        .await;
    let second = structured(&server.call("create_workspace", args).await);
    assert_eq!(second["created"], true);
    assert_ne!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(second["workspace_name"], "dev-1");
}

#[tokio::test]
async fn a_canceled_build_is_a_tool_error() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::canceled());
    let server = env.server(&[]).await;
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(error.contains("workspace build was canceled"), "{error}");
}

#[tokio::test]
async fn after_a_canceled_build_the_next_call_creates_a_new_workspace() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::canceled());
    let server = env.server(&[]).await;
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(error.contains("workspace build was canceled"), "{error}");
    let canceled = env.workspaces()[0].id;

    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], true);
    assert_eq!(second["workspace_status"], "running");
    assert_ne!(second["workspace_id"], canceled.to_string());
    assert_eq!(env.workspaces().len(), 2);
    assert_eq!(creates(&env), 2);
}

/// The build timeout runs from when the build was first seen, across calls: a call
/// that resumes after a `building` answer must not start a fresh --build-timeout.
/// With --max-call-wait 4s and --build-timeout 6s, the first call answers `building`
/// at 4 s; the second would answer `building` again at 8 s with a restarted timeout
/// (due at 10 s), but the carried-over one is due at 6 s.
#[tokio::test]
async fn the_build_timeout_carries_over_to_the_next_call() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env
        .server(&["--max-call-wait", "4s", "--build-timeout", "6s"])
        .await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(first["status"], "building");
    let second = server.call("create_workspace", env.create_args()).await;
    let error = error_text(&second);
    assert!(
        error.contains("timed out after 6s waiting for the workspace build")
            && error.contains(first["workspace_name"].as_str().unwrap()),
        "{error}"
    );
    assert_eq!(creates(&env), 1);
}

#[tokio::test]
async fn a_deleted_workspace_is_recreated() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.delete_workspace(id);
    env.sim
        .wait_until(|v| {
            v.workspace(id)
                .is_some_and(|w| w.latest_build.status == WorkspaceStatus::Deleted)
        })
        .await;
    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], true);
    assert_ne!(second["workspace_id"], first["workspace_id"]);
}

#[tokio::test]
async fn a_workspace_whose_agent_is_gone_is_recreated() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.agent_gone_since(id, Duration::from_secs(600));
    let second = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(second["created"], true);
    assert_ne!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 2);
}

/// An agent that is away for a moment (a restart, a network blip) is not a reason for a
/// second workspace: a call that arrives then waits for it to come back.
#[tokio::test]
async fn a_call_during_a_brief_agent_disconnect_waits_for_it_instead_of_replacing() {
    let env = Env::new().await;
    let server = env.server(&["--max-call-wait", "0"]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.disconnect_agent(id);
    let call = server
        .start_call("create_workspace", env.create_args())
        .await;
    server
        .wait_for_message(&call.progress_token, "lost its connection")
        .await;
    env.sim.reconnect_agent(id);
    let rmcp::model::ServerResult::CallToolResult(result) = call.await_response().await.unwrap()
    else {
        panic!()
    };
    let second = structured(&result);
    assert_eq!(second["created"], false);
    assert_eq!(second["status"], "already_exists");
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn build_timeout_is_a_tool_error_naming_the_state_and_the_server_keeps_serving() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env
        .server(&["--build-timeout", "1s", "--max-call-wait", "0"])
        .await;
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(
        error.contains("timed out after 1s waiting for the workspace build"),
        "{error}"
    );
    assert!(
        error.contains("still \"starting\" (job running)"),
        "{error}"
    );
    structured(&server.call("list_templates", json!({})).await);
}

#[tokio::test]
async fn an_agent_that_never_connects_is_not_an_error() {
    let env = Env::new().await;
    env.sim.set_build_plan(
        env.docker.id,
        BuildPlan::with_agent(AgentPlan::never_connects()),
    );
    let server = env.server(&["--agent-timeout", "1s"]).await;
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["created"], true);
    assert_eq!(out["agent_status"], "not_ready");
    assert!(
        out["agent_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s waiting for the workspace agent"),
        "{out}"
    );
}

/// Right after a build, `disconnected` (connected once, then silent) can be transient:
/// the call keeps waiting for the agent instead of answering `not_ready` at once.
#[tokio::test]
async fn an_agent_that_disconnects_right_after_the_build_is_waited_for() {
    let env = Env::new().await;
    env.sim.set_build_plan(
        env.docker.id,
        BuildPlan::with_agent(AgentPlan::never_connects()),
    );
    // The agent timeout cannot end this test: only the reconnection can.
    let server = env
        .server(&[
            "--agent-timeout",
            "1h",
            "--startup-timeout",
            "1s",
            "--max-call-wait",
            "0",
        ])
        .await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    let seen = |needle: &'static str| {
        let server = &server;
        let token = token.clone();
        async move {
            loop {
                let count = server.progress(&token).len();
                if server
                    .progress(&token)
                    .iter()
                    .any(|p| p.message.as_deref().unwrap_or("").contains(needle))
                {
                    return;
                }
                server.wait_for_progress(&token, count + 1).await;
            }
        }
    };
    seen("waiting for agent main to connect").await;
    let id = env.workspaces()[0].id;
    env.sim.disconnect_agent(id);
    let response = handle.await_response();
    tokio::pin!(response);
    // Answering before it reports waiting is the failure this test is about.
    tokio::select! {
        _ = seen("lost its connection; waiting for it to reconnect") => {}
        early = &mut response => panic!("answered instead of waiting for the agent: {early:?}"),
    }
    env.sim.reconnect_agent(id);
    let rmcp::model::ServerResult::CallToolResult(result) = response.await.unwrap() else {
        panic!()
    };
    let out = structured(&result);
    assert_eq!(out["created"], true);
    assert!(out.get("agent_status").is_none(), "{out}");
    // Reconnected, it went on to its startup scripts (which never progress in this plan).
    assert_eq!(out["startup_scripts"], "startup_scripts_timeout", "{out}");
}

#[tokio::test]
async fn failed_startup_scripts_are_reported_with_the_log_tail() {
    let env = Env::new().await;
    env.sim.set_build_plan(
        env.docker.id,
        BuildPlan::with_agent(AgentPlan::start_error()),
    );
    let server = env.server(&[]).await;
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["created"], true);
    assert_eq!(out["startup_scripts"], "startup_scripts_failed");
    assert_eq!(out["lifecycle_state"], "start_error");
    let tail = out["startup_log_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("Could not resolve host")),
        "{out}"
    );
}

#[tokio::test]
async fn startup_scripts_that_run_too_long_are_reported() {
    let env = Env::new().await;
    let agent = AgentPlan {
        scripts_for: Duration::from_secs(3600),
        lifecycle_end: WorkspaceAgentLifecycle::Ready,
        ..AgentPlan::default()
    };
    env.sim
        .set_build_plan(env.docker.id, BuildPlan::with_agent(agent));
    let server = env.server(&["--startup-timeout", "1s"]).await;
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["startup_scripts"], "startup_scripts_timeout");
    assert_eq!(out["lifecycle_state"], "starting");
}

#[tokio::test]
async fn bad_template_ids_are_actionable_errors() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let empty = error_text(
        &server
            .call("create_workspace", json!({"template_id": "  "}))
            .await,
    );
    assert_eq!(
        empty,
        "template_id is required; use list_templates to find one"
    );
    let bad = error_text(
        &server
            .call("create_workspace", json!({"template_id": "docker"}))
            .await,
    );
    assert!(bad.starts_with("invalid template_id \"docker\""), "{bad}");
    let unknown = error_text(
        &server
            .call(
                "create_workspace",
                json!({"template_id": "00000000-0000-4000-8000-000000000001"}),
            )
            .await,
    );
    assert!(
        unknown.contains("template 00000000-0000-4000-8000-000000000001 not found")
            && unknown.contains("list_templates"),
        "{unknown}"
    );
    let missing = error_text(&server.call("create_workspace", json!({})).await);
    assert!(missing.contains("template_id"), "{missing}");
    assert_eq!(env.workspaces().len(), 0);
}

#[tokio::test]
async fn names_are_kept_when_valid_and_repaired_when_not() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["name"] = json!("  My Dev Box! ");
    let out = structured(&server.call("create_workspace", args).await);
    let name = out["workspace_name"].as_str().unwrap();
    assert!(
        name.starts_with("my-dev-box-") && name.len() <= 32,
        "{name}"
    );
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("is not a valid Coder workspace name"),
        "{out}"
    );

    // Another conversation: the repaired name is derived the same way every time, so
    // the same request finds the same workspace.
    let other = env.server(&["--stdio-session", "another"]).await;
    let mut args = env.create_args();
    args["name"] = json!("My Dev Box!");
    let again = structured(&other.call("create_workspace", args).await);
    assert_eq!(again["created"], false);
    assert_eq!(again["workspace_name"], name);
    assert_eq!(again["workspace_id"], out["workspace_id"]);

    let third = env.server(&["--stdio-session", "a-third"]).await;
    let mut args = env.create_args();
    args["name"] = json!("dev-1");
    let out = structured(&third.call("create_workspace", args).await);
    assert_eq!(out["workspace_name"], "dev-1");
    assert_eq!(out["created"], true);
    assert_eq!(env.workspaces().len(), 2);
}

#[tokio::test]
async fn parameters_are_checked_before_anything_is_created() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["parameters"] = json!({ "region": "mars", "cpu": "16", "colour": "red" });
    let error = error_text(&server.call("create_workspace", args).await);
    assert!(error.contains("\"mars\" is not a valid value for \"region\"; choose one of \"us\" (US East), \"eu\" (Europe)"), "{error}");
    assert!(
        error.contains("\"cpu\" must be between 1 and 8, got 16"),
        "{error}"
    );
    assert!(
        error.contains("unknown parameter \"colour\"; this template's parameters are: region, cpu"),
        "{error}"
    );
    assert_eq!(creates(&env), 0);
}

/// A huge argument is never echoed back whole: every user-supplied string an answer or
/// error quotes is cut to about 64 characters, whether this server wrote the message or
/// serde did (rmcp's message for arguments that do not deserialize).
#[tokio::test]
async fn huge_arguments_are_quoted_short() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let huge = "Ä".repeat(100_000);
    let small = |text: &str| {
        assert!(
            text.len() < 2_000,
            "{} bytes: {}…",
            text.len(),
            &text[..200]
        );
    };

    // A name that is no valid Coder name: created under a repaired one, quoted short.
    let mut args = env.create_args();
    args["name"] = json!(huge);
    let result = server.call("create_workspace", args.clone()).await;
    let out = structured(&result);
    assert_eq!(out["created"], true);
    small(&serde_json::to_string(&result).unwrap());
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("…\" is not a valid Coder workspace name"),
        "{out}"
    );
    // And the same name finds it again.
    let again = structured(&server.call("create_workspace", args).await);
    assert_eq!(again["workspace_id"], out["workspace_id"]);

    // Our own errors: a template id, unknown parameters (thousands of them), bad values.
    let error = error_text(
        &server
            .call("create_workspace", json!({ "template_id": huge }))
            .await,
    );
    small(&error);
    assert!(error.starts_with("invalid template_id \"ÄÄÄ"), "{error}");
    let mut args = env.create_args();
    args["name"] = json!("other");
    args["parameters"] = (0..5_000)
        .map(|i| (format!("{i}-{}", "x".repeat(100)), json!("x")))
        .chain([("region".to_string(), json!(huge))])
        .collect::<serde_json::Map<_, _>>()
        .into();
    let error = error_text(&server.call("create_workspace", args).await);
    small(&error);
    assert!(error.contains("and 4991 more"), "{error}");

    // serde's: `parameters` that is not an object quotes the string it got.
    let mut args = env.create_args();
    args["parameters"] = json!(huge);
    let error = error_text(&server.call("create_workspace", args).await);
    small(&error);
    assert!(error.contains("ÄÄÄ…\""), "{error}");
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn coders_own_rejection_reaches_the_model() {
    let env = Env::new().await;
    env.sim.inject_fault(
        Fault::new(http::Method::POST, "/users/me/workspaces", 400)
            .message("Template version is archived."),
    );
    let server = env.server(&[]).await;
    let mut args = env.create_args();
    args["name"] = json!("refused");
    let error = error_text(&server.call("create_workspace", args.clone()).await);
    assert!(
        error.contains("Coder refused to create the workspace")
            && error.contains("400: Template version is archived"),
        "{error}"
    );
    assert!(!error.contains(".."), "one period, not two: {error}");
    // The refused name is not insisted on: once Coder accepts, it is created.
    let created = structured(&server.call("create_workspace", args).await);
    assert_eq!(created["created"], true);
    assert_eq!(created["workspace_name"], "refused");
}

#[tokio::test]
async fn a_refused_start_is_an_error_not_a_loop() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap().parse().unwrap();
    env.sim.stop_workspace(id);
    env.sim
        .wait_until(|v| {
            v.workspace(id)
                .is_some_and(|w| w.latest_build.status == WorkspaceStatus::Stopped)
        })
        .await;
    env.sim.inject_fault(
        coder_workspace_sim::Fault::new(http::Method::POST, "/builds", 409)
            .message("A workspace build is already active."),
    );
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(
        error.contains("Coder refused to start the stopped workspace") && error.contains("409"),
        "{error}"
    );
    assert_eq!(
        env.sim.view().requests_matching("POST", "/builds"),
        1,
        "asked once, not in a loop"
    );
    // Once Coder accepts, the next call starts it.
    let again = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    assert_eq!(again["workspace_status"], "running");
}

#[tokio::test]
async fn the_polling_baseline_mode_polls_and_never_streams() {
    let env = Env::new().await;
    let server = env.server(&["--watch-mode", "polling"]).await;
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["workspace_status"], "running");
    let id = out["workspace_id"].as_str().unwrap();
    let requests = env.sim.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == format!("/api/v2/workspaces/{id}")),
        "it polled"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.path.contains("/watch") || r.path.contains("/logs")),
        "no streams in polling mode"
    );
}
