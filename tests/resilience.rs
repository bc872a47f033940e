//! Coder misbehaving: transient errors, dropped watch streams, cancellation.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::{AgentPlan, BuildPlan, Fault};
use common::{Env, error_text, structured};
use rmcp::model::ServerResult;
use serde_json::json;

#[tokio::test]
async fn transient_5xx_on_a_get_is_retried() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates", 503)
            .times(2)
            .message("database is restarting"),
    );
    let out = structured(&server.call("list_templates", json!({})).await);
    assert_eq!(out["total_count"], 1);
    assert_eq!(
        env.sim.view().requests_matching("GET", "/api/v2/templates"),
        3
    );
}

#[tokio::test]
async fn persistent_5xx_is_a_tool_error_with_coders_message() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    // As many failures as the client makes attempts.
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates", 503)
            .times(4)
            .message("database is restarting"),
    );
    let error = error_text(&server.call("list_templates", json!({})).await);
    assert!(
        error.contains("could not list templates: Coder answered HTTP 503: database is restarting"),
        "{error}"
    );
    // Every tool says that calling again later is safe when the failure is likely to pass.
    assert!(
        error.contains("calling list_templates again in a moment is safe"),
        "{error}"
    );
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates/", 503)
            .times(4)
            .message("database is restarting"),
    );
    let args = json!({ "template_id": env.docker.id.to_string() });
    let error = error_text(&server.call("read_template", args).await);
    assert!(
        error.contains("calling read_template again in a moment is safe"),
        "{error}"
    );
    // And the server still serves once Coder is back.
    structured(&server.call("list_templates", json!({})).await);
}

/// Coder's `Retry-After` (429 or 503) decides when a GET is tried again: a wait that
/// fits is waited for and the request succeeds; one longer than the client waits for
/// (10 s), or past the call's own time limit, is not: the error comes back at once,
/// saying how long Coder asked to wait. (Counted in requests, not timed.)
#[tokio::test]
async fn coders_retry_after_is_honoured_within_the_calls_time() {
    let env = Env::new().await;
    let server = env.server(&["--max-call-wait", "5s"]).await;
    let templates = || env.sim.view().requests_matching("GET", "/api/v2/templates");

    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates", 429)
            .message("rate limit exceeded")
            .retry_after(1),
    );
    structured(&server.call("list_templates", json!({})).await);
    assert_eq!(templates(), 2, "waited as asked, then tried again");

    env.sim.clear_requests();
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates", 429)
            .message("rate limit exceeded")
            .retry_after(60),
    );
    let error = error_text(&server.call("list_templates", json!({})).await);
    assert_eq!(templates(), 1, "a minute is not waited for");
    assert!(
        error.contains("Coder asked to wait 1m before trying again")
            && error.contains("calling list_templates again in a moment is safe"),
        "{error}"
    );

    // Inside create_workspace, a wait past the call's own limit (5 s here) is not made.
    env.sim.clear_requests();
    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/templates/", 503)
            .message("overloaded")
            .retry_after(8),
    );
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(
        env.sim
            .view()
            .requests_matching("GET", "/api/v2/templates/"),
        1
    );
    assert!(error.contains("Coder asked to wait 8s"), "{error}");
    assert_eq!(env.workspaces().len(), 0);
}

#[tokio::test]
async fn a_failed_create_post_is_never_retried_blindly() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    env.sim.inject_fault(
        Fault::new(http::Method::POST, "/api/v2/users/me/workspaces", 502)
            .times(1)
            .message("bad gateway"),
    );
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(
        error.contains("creating the workspace failed") && error.contains("502"),
        "{error}"
    );
    assert_eq!(
        env.sim
            .view()
            .requests_matching("POST", "/api/v2/users/me/workspaces"),
        1
    );
    assert_eq!(env.workspaces().len(), 0);
}

#[tokio::test]
async fn a_dropped_watch_stream_falls_back_to_polling() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;
    let id = env.workspaces()[0].id;
    let poll_path = format!("/api/v2/workspaces/{id}");
    let polls_before = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == poll_path)
        .count();

    // The stream dies and cannot come back (a proxy that stopped passing it).
    env.sim.set_watch_support(false, false);
    env.sim.drop_watch_streams();
    env.sim
        .wait_until(|v| {
            v.requests()
                .iter()
                .filter(|r| r.path == poll_path && r.method == "GET")
                .count()
                > polls_before
        })
        .await;
    env.sim.release_builds();

    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    let out = structured(&result);
    assert_eq!(out["created"], true);
    assert_eq!(out["workspace_status"], "running");
    let refused = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/watch-ws") && r.status == 404)
        .count();
    assert!(refused >= 1, "the watch was retried before polling");
}

#[tokio::test]
async fn a_dropped_watch_stream_is_resumed_without_polling() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;
    let watches = |env: &Env| {
        env.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/watch-ws"))
            .count()
    };
    let before = watches(&env);
    env.sim.drop_watch_streams();
    env.sim
        .wait_until(|v| {
            v.open_watch_streams() == 1
                && v.requests()
                    .iter()
                    .filter(|r| r.path.ends_with("/watch-ws"))
                    .count()
                    > before
        })
        .await;
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    assert_eq!(structured(&result)["workspace_status"], "running");
    let id = env.workspaces()[0].id;
    let polls = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v2/workspaces/{id}"))
        .count();
    assert_eq!(polls, 0, "no polling while a stream could be had");
}

/// While Coder does not answer during the wait (every watch and poll failing with 5xx),
/// progress says so and for how long, with the last thing known; when Coder answers
/// again, progress goes back to the build, and the call ends well.
#[tokio::test]
async fn an_outage_during_the_wait_is_reported_in_progress_and_outlived() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;

    env.sim.inject_fault(
        Fault::new(http::Method::GET, "/api/v2/workspaces/", 503)
            .times(usize::MAX)
            .message("coderd is restarting"),
    );
    env.sim.drop_watch_streams();
    server
        .wait_for_message(&token, "Coder unreachable for")
        .await;
    let during = server.progress(&token).len();

    env.sim.clear_faults();
    // Progress goes back to the build once the watch (or a poll) gets through.
    loop {
        let seen = server.progress(&token);
        if seen[during..].iter().any(|p| {
            !p.message
                .as_deref()
                .unwrap_or("")
                .contains("Coder unreachable")
        }) {
            break;
        }
        server.wait_for_progress(&token, seen.len() + 1).await;
    }
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    let out = structured(&result);
    assert_eq!(out["workspace_status"], "running");
    let progress = server.progress(&token);
    let outage = progress
        .iter()
        .find_map(|p| {
            p.message
                .as_deref()
                .filter(|m| m.contains("Coder unreachable"))
        })
        .unwrap();
    assert!(outage.contains("retrying; last known: "), "{outage}");
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "{progress:?}"
    );
}

#[tokio::test]
async fn cancellation_stops_the_wait_and_the_server_keeps_serving() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;
    handle
        .cancel(Some("user pressed stop".into()))
        .await
        .unwrap();
    // The wait stopped: its watch stream closes.
    env.sim.wait_until(|v| v.open_watch_streams() == 0).await;
    let progress_after_cancel = server.progress(&token).len();

    // The server serves other calls...
    structured(&server.call("list_templates", json!({})).await);
    // ...and the next create sees the session's workspace as it is.
    env.sim.release_builds();
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["created"], false);
    assert_eq!(out["status"], "already_exists");
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(
        server.progress(&token).len(),
        progress_after_cancel,
        "no progress after the cancellation"
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_not_repeated() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    // The POST goes through, but the gateway loses Coder's answer.
    env.sim.inject_fault(
        Fault::new(http::Method::POST, "/api/v2/users/me/workspaces", 502).after_processing(),
    );
    let mut args = env.create_args();
    args["name"] = json!("lost-answer");
    let out = structured(&server.call("create_workspace", args).await);
    assert_eq!(out["created"], true);
    assert_eq!(out["workspace_name"], "lost-answer");
    assert_eq!(
        env.sim
            .view()
            .requests_matching("POST", "/api/v2/users/me/workspaces"),
        1,
        "the create was not repeated"
    );
    // Looked up by name before deciding (nothing yet) and after the lost answer (there).
    let lookups: Vec<(String, u16)> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == "/api/v2/users/me/workspace/lost-answer"
                || r.path == "/api/v2/users/me/workspaces"
        })
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        lookups,
        [
            ("GET".into(), 404),
            ("POST".into(), 502),
            ("GET".into(), 200)
        ],
        "it was looked up by name after the lost answer"
    );
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn without_watch_ws_the_sse_watch_is_used() {
    let env = Env::new().await;
    env.sim.set_watch_support(false, true);
    let server = env.server(&[]).await;
    let out = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(out["workspace_status"], "running");
    let id = out["workspace_id"].as_str().unwrap();
    let requests = env.sim.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == format!("/api/v2/workspaces/{id}/watch") && r.status == 200),
        "the SSE watch was used"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/api/v2/workspaces/{id}"))
            .count(),
        0,
        "no polling while SSE works"
    );
}

#[tokio::test]
async fn progress_keeps_flowing_while_nothing_changes() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    // Nothing changes while the build is held; a heartbeat (which names the elapsed
    // time) must still arrive.
    loop {
        let seen = server.progress(&token);
        if seen
            .iter()
            .any(|p| p.message.as_deref().unwrap_or("").ends_with(" s)"))
        {
            break;
        }
        server.wait_for_progress(&token, seen.len() + 1).await;
    }
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    structured(&result);
    let progress = server.progress(&token);
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "{progress:?}"
    );
}

/// Reading the startup log of failed scripts can be slow (Coder slow to answer, 5xx
/// retries): meanwhile progress keeps flowing and a cancellation still ends the call,
/// freeing the session for its next call.
#[tokio::test]
async fn a_slow_startup_log_read_keeps_progress_flowing_and_can_be_cancelled() {
    let env = Env::new().await;
    env.sim.set_build_plan(
        env.docker.id,
        BuildPlan::with_agent(AgentPlan::start_error()),
    );
    env.sim
        .hold_requests(http::Method::GET, "/api/v2/workspaceagents/");
    let server = env.server(&["--max-call-wait", "0"]).await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    let id = handle.id.clone();
    env.sim
        .wait_until(|v| v.pending_requests("GET", "/api/v2/workspaceagents/") == 1)
        .await;
    let heartbeats = |server: &common::Server| {
        server
            .progress(&token)
            .iter()
            .filter(|p| p.message.as_deref().unwrap_or("").ends_with(" s)"))
            .count()
    };
    let before = heartbeats(&server);
    let response = handle.await_response();
    tokio::pin!(response);
    tokio::select! {
        _ = async {
            while heartbeats(&server) <= before {
                server.wait_for_progress(&token, server.progress(&token).len() + 1).await;
            }
        } => {}
        done = &mut response => panic!("the call ended without a heartbeat during the held read: {done:?}"),
    }
    // Cancel it (the handle went into `response`, so by hand, as RequestHandle::cancel does).
    server
        .client
        .peer()
        .send_notification(
            rmcp::model::CancelledNotification::new(rmcp::model::CancelledNotificationParam::new(
                Some(id),
                Some("user pressed stop".into()),
            ))
            .into(),
        )
        .await
        .unwrap();
    // The cancelled call let go of the session although its read is still held: the
    // next call of the session gets as far as reading the log itself.
    let next = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("GET", "/api/v2/workspaceagents/") == 2)
        .await;
    env.sim.release_requests();
    let ServerResult::CallToolResult(result) = next.await_response().await.unwrap() else {
        panic!()
    };
    let out = structured(&result);
    assert_eq!(out["status"], "already_exists");
    assert_eq!(out["startup_scripts"], "startup_scripts_failed");
    assert!(
        !out["startup_log_tail"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert_eq!(env.workspaces().len(), 1);
}

/// Coder fails (5xx beyond the retries) in the middle of a session: the call is a tool
/// error that says what happened and what to do, and once Coder is back the session
/// carries on with its workspace.
#[tokio::test]
async fn coder_failing_mid_session_is_an_actionable_error_and_the_session_carries_on() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    let id = first["workspace_id"].as_str().unwrap();
    // As many failures as the client makes attempts.
    env.sim.inject_fault(
        Fault::new(http::Method::GET, format!("/api/v2/workspaces/{id}"), 503)
            .times(4)
            .message("database is restarting"),
    );
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(
        error.contains(&format!(
            "could not load workspace {:?}",
            first["workspace_name"].as_str().unwrap()
        )) && error.contains("HTTP 503: database is restarting"),
        "{error}"
    );
    // The way back names the workspace, so it works from any session.
    assert!(
        error.contains(&format!(
            "call create_workspace again with name {:?}",
            first["workspace_name"].as_str().unwrap()
        )),
        "{error}"
    );
    let again = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(again["status"], "already_exists");
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
}

/// Coder goes away altogether mid-session: tool errors naming the problem, no crash,
/// no hang, and the server still answers.
#[tokio::test]
async fn coder_unreachable_mid_session_is_an_actionable_error_and_the_server_keeps_serving() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    structured(&server.call("create_workspace", env.create_args()).await);
    env.sim.clone().shutdown().await;
    let error = error_text(&server.call("create_workspace", env.create_args()).await);
    assert!(error.contains("could not reach Coder at"), "{error}");
    assert!(
        error.contains("call create_workspace again with the same arguments"),
        "{error}"
    );
    let listing = error_text(&server.call("list_templates", json!({})).await);
    assert!(listing.contains("could not reach Coder"), "{listing}");
    assert!(!server.finish().await.contains(common::TOKEN));
}

/// After falling back to polling, the watch stream is tried again (every
/// --stream-retry) and, once it is back, polling stops.
#[tokio::test]
async fn after_polling_the_watch_stream_is_resumed_and_polling_stops() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let server = env
        .server(&["--max-call-wait", "0", "--stream-retry", "1s"])
        .await;
    let handle = server
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;
    let id = env.workspaces()[0].id;
    let poll_path = format!("/api/v2/workspaces/{id}");
    let is_poll = |r: &coder_workspace_sim::RecordedRequest| {
        r.method == "GET" && r.path == poll_path && r.status == 200
    };

    // The stream dies and cannot come back for now: polling.
    env.sim.set_watch_support(false, false);
    env.sim.drop_watch_streams();
    env.sim
        .wait_until(|v| v.open_watch_streams() == 0 && v.requests().iter().any(is_poll))
        .await;

    // The stream is served again: a new watch-ws connection opens.
    env.sim.set_watch_support(true, true);
    env.sim.wait_until(|v| v.open_watch_streams() == 1).await;
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    assert_eq!(structured(&result)["workspace_status"], "running");

    let requests = env.sim.requests();
    let upgrades: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path.ends_with("/watch-ws") && r.status == 101)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(upgrades.len(), 2, "the first stream and the resumed one");
    let polls_between = requests[upgrades[0]..upgrades[1]]
        .iter()
        .filter(|r| is_poll(r))
        .count();
    assert!(polls_between >= 1, "it polled while the stream was gone");
    let polls_after = requests[upgrades[1]..]
        .iter()
        .filter(|r| is_poll(r))
        .count();
    assert_eq!(polls_after, 0, "no polling once the stream is back");
}
