//! `serve`: Streamable HTTP and legacy HTTP+SSE end to end, with per-client identity,
//! session binding, request guards, expiry and graceful shutdown.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::BuildPlan;
use common::http::{HttpServer, LegacyClient, initialize_body, refused_start, stateless_create};
use common::{BOB_TOKEN, Env, Server, TOKEN, error_text, structured};
use rmcp::model::ServerResult;
use serde_json::json;

async fn serve(env: &Env, args: &[&str]) -> HttpServer {
    HttpServer::spawn(&env.sim.url(), args, &[]).await
}

fn assert_no_tokens(log: &str) {
    assert!(log.contains("listening on"), "the log was captured");
    assert!(
        !log.contains(TOKEN) && !log.contains(BOB_TOKEN),
        "a token leaked into the logs:\n{log}"
    );
}

#[tokio::test]
async fn streamable_http_lists_reads_and_creates_with_progress() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let client = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let listed = structured(&client.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"][0]["name"], "docker");
    let read = structured(
        &client
            .call(
                "read_template",
                json!({"template_id": env.docker.id.to_string()}),
            )
            .await,
    );
    assert_eq!(read["parameters"][0]["name"], "region");
    let (result, progress) = client
        .call_with_progress("create_workspace", env.create_args())
        .await;
    let out = structured(&result);
    assert_eq!(out["created"], true);
    assert_eq!(out["owner"], "alice");
    assert!(
        progress.len() >= 3,
        "progress streamed over SSE: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[1].progress > w[0].progress));
    assert_eq!(progress.last().unwrap().progress, 100.0);
    client.finish().await;
    assert_no_tokens(&http.log());
}

#[tokio::test]
async fn each_token_is_its_own_coder_user_with_its_own_workspace() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let alice = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let bob = Server::http(&http.mcp_url(), BOB_TOKEN, &[]).await.unwrap();
    let a = structured(&alice.call("create_workspace", env.create_args()).await);
    let b = structured(&bob.call("create_workspace", env.create_args()).await);
    assert_eq!(a["owner"], "alice");
    assert_eq!(b["owner"], "bob");
    assert_eq!(b["created"], true, "sessions never share workspaces");
    assert_ne!(a["workspace_id"], b["workspace_id"]);
    let owners: Vec<String> = env
        .workspaces()
        .iter()
        .map(|w| w.owner_name.clone())
        .collect();
    assert_eq!(owners.len(), 2);
    assert!(owners.contains(&"alice".into()) && owners.contains(&"bob".into()));
    assert_no_tokens(&http.log());
}

#[tokio::test]
async fn concurrent_calls_in_one_http_session_create_one_workspace() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = serve(&env, &["--max-call-wait", "0"]).await;
    let client = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let a = client
        .start_call("create_workspace", env.create_args())
        .await;
    let b = client
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    env.sim.release_builds();
    let mut created = 0;
    for handle in [a, b] {
        let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
            panic!()
        };
        created += (structured(&result)["created"] == true) as usize;
    }
    assert_eq!(created, 1);
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn one_coder_chat_gets_one_workspace_across_sessions() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let chat = [("X-Coder-Chat-Id", "chat-42")];
    let first = Server::http(&http.mcp_url(), TOKEN, &chat).await.unwrap();
    let a = structured(&first.call("create_workspace", env.create_args()).await);
    first.finish().await;
    let second = Server::http(&http.mcp_url(), TOKEN, &chat).await.unwrap();
    let b = structured(&second.call("create_workspace", env.create_args()).await);
    assert_eq!(b["created"], false);
    assert_eq!(b["status"], "already_exists");
    assert_eq!(a["workspace_id"], b["workspace_id"]);
    // Another chat is another workspace.
    let other = Server::http(&http.mcp_url(), TOKEN, &[("X-Coder-Chat-Id", "chat-43")])
        .await
        .unwrap();
    assert_eq!(
        structured(&other.call("create_workspace", env.create_args()).await)["created"],
        true
    );
}

#[tokio::test]
async fn stateless_requests_are_idempotent_by_workspace_name() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let args = json!({"template_id": env.docker.id.to_string(), "name": "stateless-ws"});
    let url = http.mcp_url();
    let call = || stateless_create(&url, args.clone());
    let first = call().await;
    assert_eq!(first["created"], true, "{first}");
    let second = call().await;
    assert_eq!(second["created"], false, "{second}");
    assert_eq!(second["status"], "already_exists");
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn missing_or_rejected_tokens_get_401_with_a_challenge() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let missing = http.post_mcp(&[], &initialize_body()).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"coder-workspace-mcp\""
    );
    let rejected = http
        .post_mcp(
            &[("authorization", "Bearer not-a-real-token")],
            &initialize_body(),
        )
        .await;
    assert_eq!(rejected.status(), 401);
    assert!(
        rejected.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // The Coder-Session-Token header works as well as a bearer.
    let coder_header = http
        .post_mcp(&[("coder-session-token", TOKEN)], &initialize_body())
        .await;
    assert_eq!(coder_header.status(), 200);
    assert!(
        Server::http(&http.mcp_url(), "not-a-real-token", &[])
            .await
            .is_err()
    );
    assert!(!http.log().contains("not-a-real-token"));
}

#[tokio::test]
async fn a_session_id_cannot_be_used_with_another_token() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let opened = http
        .post_mcp(
            &[("authorization", &format!("Bearer {TOKEN}"))],
            &initialize_body(),
        )
        .await;
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let hijack = http
        .post_mcp(
            &[
                ("authorization", &format!("Bearer {BOB_TOKEN}")),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &ping,
        )
        .await;
    assert_eq!(hijack.status(), 403);
    // Nor can another token listen to the session's stream or end it.
    let listen = reqwest::Client::new()
        .get(http.mcp_url())
        .bearer_auth(BOB_TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(listen.status(), 403, "foreign GET");
    let kill = reqwest::Client::new()
        .delete(http.mcp_url())
        .bearer_auth(BOB_TOKEN)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(kill.status(), 403, "foreign DELETE");
    let owner = http
        .post_mcp(
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert!(owner.status().is_success(), "{}", owner.status());
    // The foreign DELETE did not end the owner's session.
    let alive = http
        .post_mcp(
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &ping,
        )
        .await;
    assert_eq!(alive.status(), 200);
    assert!(alive.text().await.unwrap().contains("\"result\""));
    assert!(!http.log().contains("session closed by the client"));
}

#[tokio::test]
async fn foreign_origins_and_hosts_get_403() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &[
            "--allowed-origin",
            "https://app.example.com",
            "--allowed-host",
            "mcp.example.com",
        ],
    )
    .await;
    let auth = format!("Bearer {TOKEN}");
    let evil = http
        .post_mcp(
            &[("authorization", &auth), ("origin", "https://evil.example")],
            &initialize_body(),
        )
        .await;
    assert_eq!(evil.status(), 403);
    let good = http
        .post_mcp(
            &[
                ("authorization", &auth),
                ("origin", "https://app.example.com"),
            ],
            &initialize_body(),
        )
        .await;
    assert_eq!(good.status(), 200);
    let rebinding = http
        .post_mcp(
            &[("authorization", &auth), ("host", "attacker.example:8790")],
            &initialize_body(),
        )
        .await;
    assert_eq!(rebinding.status(), 403);
    let proxied = http
        .post_mcp(
            &[("authorization", &auth), ("host", "mcp.example.com")],
            &initialize_body(),
        )
        .await;
    assert_eq!(proxied.status(), 200);
    // The legacy transport is guarded the same way.
    let sse = reqwest::Client::new()
        .get(format!("{}/sse", http.base))
        .bearer_auth(TOKEN)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 403);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let env = Env::new().await;
    let http = serve(&env, &["--max-body", "1KiB"]).await;
    let auth = format!("Bearer {TOKEN}");
    let mut body = initialize_body();
    body["params"]["clientInfo"]["name"] = json!("x".repeat(2048));
    let response = http.post_mcp(&[("authorization", &auth)], &body).await;
    assert_eq!(response.status(), 413, "declared length");

    // A chunked body declares no length: it is cut off while being read.
    let big_ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping",
                          "params": {"_meta": {"padding": "x".repeat(2048)}}});
    let chunked = |url: String, body: &serde_json::Value| {
        let bytes = body.to_string().into_bytes();
        reqwest::Client::new()
            .post(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter([Ok::<
                _,
                std::io::Error,
            >(
                bytes
            )])))
    };
    let response = chunked(http.mcp_url(), &body).send().await.unwrap();
    assert_eq!(response.status(), 413, "chunked initialize");

    // Inside an open session (the request is not an initialize).
    let opened = http
        .post_mcp(&[("authorization", &auth)], &initialize_body())
        .await;
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let in_session = chunked(http.mcp_url(), &big_ping)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(in_session.status(), 413, "chunked POST in a session");
    let declared = http
        .post_mcp(
            &[
                ("authorization", &auth),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &big_ping,
        )
        .await;
    assert_eq!(declared.status(), 413, "POST in a session");

    // The legacy transport's message endpoint.
    let legacy = LegacyClient::connect(&http.base, TOKEN).await;
    assert_eq!(legacy.post(&big_ping).await, 413, "/messages");
    let messages = format!("{}{}", http.base, legacy.endpoint);
    let legacy_chunked = chunked(messages, &big_ping).send().await.unwrap();
    assert_eq!(legacy_chunked.status(), 413, "chunked /messages");
}

#[tokio::test]
async fn idle_sessions_expire() {
    let env = Env::new().await;
    let http = serve(&env, &["--session-idle-timeout", "1s"]).await;
    let auth = format!("Bearer {TOKEN}");
    let opened = http
        .post_mcp(&[("authorization", &auth)], &initialize_body())
        .await;
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    http.wait_for_log(&format!("session opened session={session}"))
        .await;
    http.wait_for_log("session ended").await;
    let late = http
        .post_mcp(
            &[
                ("authorization", &auth),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        )
        .await;
    assert_eq!(late.status(), 404, "an expired session is unknown");
}

#[tokio::test]
async fn sessions_per_token_are_limited() {
    let env = Env::new().await;
    let http = serve(&env, &["--max-sessions-per-token", "2"]).await;
    let auth = format!("Bearer {TOKEN}");
    for _ in 0..2 {
        assert_eq!(
            http.post_mcp(&[("authorization", &auth)], &initialize_body())
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        http.post_mcp(&[("authorization", &auth)], &initialize_body())
            .await
            .status(),
        429
    );
    let bob = format!("Bearer {BOB_TOKEN}");
    assert_eq!(
        http.post_mcp(&[("authorization", &bob)], &initialize_body())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_a_call_in_flight_finish() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let mut http = serve(&env, &["--max-call-wait", "0", "--shutdown-grace", "5m"]).await;
    let client = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let handle = client
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    http.terminate();
    http.wait_for_log("shutting down").await;
    http.wait_for_log("new connections are refused").await;
    // The call is still in flight (its build is held), yet nobody new gets in.
    assert_eq!(env.sim.view().held_builds(), 1);
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", http.base))
        .send()
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_connect()),
        "a new connection after SIGTERM: {refused:?}"
    );
    let refused = reqwest::Client::new()
        .post(http.mcp_url())
        .bearer_auth(TOKEN)
        .json(&initialize_body())
        .send()
        .await;
    assert!(refused.is_err(), "a new session after SIGTERM: {refused:?}");
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    assert_eq!(structured(&result)["workspace_status"], "running");
    assert!(http.wait_exit().await.success());
}

#[tokio::test]
async fn sigterm_right_after_listening_still_shuts_down_gracefully() {
    let env = Env::new().await;
    let mut http = serve(&env, &[]).await;
    // The handler is in place by the time "listening on" is logged: the process drains
    // and exits 0 instead of being killed by the signal.
    http.terminate();
    let status = http.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", http.log());
    assert!(http.log().contains("stopped"), "{}", http.log());
}

#[tokio::test]
async fn graceful_shutdown_cancels_calls_after_the_grace_period() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let mut http = serve(&env, &["--max-call-wait", "0", "--shutdown-grace", "1s"]).await;
    let client = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let handle = client
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    http.terminate();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    assert!(error_text(&result).contains("the server is shutting down"));
    assert!(http.wait_exit().await.success());
}

#[tokio::test]
async fn shared_identity_needs_the_static_bearer() {
    let env = Env::new().await;
    let http = HttpServer::spawn(
        &env.sim.url(),
        &["--shared-identity", "--auth-token", "static-bearer-123"],
        &[("CODER_SESSION_TOKEN", TOKEN)],
    )
    .await;
    let client = Server::http(&http.mcp_url(), "static-bearer-123", &[])
        .await
        .unwrap();
    let out = structured(&client.call("create_workspace", env.create_args()).await);
    assert_eq!(out["owner"], "alice");
    assert!(
        Server::http(&http.mcp_url(), TOKEN, &[]).await.is_err(),
        "a Coder token is not the bearer"
    );
    assert!(!http.log().contains("static-bearer-123"));
    assert_no_tokens(&http.log());
}

#[tokio::test]
async fn legacy_sse_transport_end_to_end() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let mut client = LegacyClient::connect(&http.base, TOKEN).await;
    assert!(client.endpoint.starts_with("/messages?sessionId="));
    let tools = client.request("tools/list", json!({})).await;
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 3);
    let (listed, _) = client.call_tool("list_templates", json!({})).await;
    assert_eq!(listed["isError"], false, "{listed}");
    assert_eq!(
        listed["structuredContent"]["templates"][0]["name"],
        "docker"
    );
    let (read, _) = client
        .call_tool(
            "read_template",
            json!({"template_id": env.docker.id.to_string()}),
        )
        .await;
    assert_eq!(read["isError"], false, "{read}");
    assert_eq!(read["structuredContent"]["parameters"][0]["name"], "region");
    let (result, progress) = client
        .call_tool("create_workspace", env.create_args())
        .await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"]["owner"], "alice");
    assert!(
        progress.len() >= 3,
        "progress flows on the event stream: {progress:?}"
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
    // Same session, same workspace.
    let (again, _) = client
        .call_tool("create_workspace", env.create_args())
        .await;
    assert_eq!(again["structuredContent"]["status"], "already_exists");

    // Another token cannot post into this session; an unknown session is 404.
    let ping = json!({"jsonrpc": "2.0", "id": 99, "method": "ping"});
    assert_eq!(client.post_as(BOB_TOKEN, &ping).await, 403);
    let unknown = reqwest::Client::new()
        .post(format!("{}/messages?sessionId=nope", http.base))
        .bearer_auth(TOKEN)
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let no_token = reqwest::Client::new()
        .get(format!("{}/sse", http.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_no_tokens(&http.log());
}

#[tokio::test]
async fn health_endpoints() {
    let env = Env::new().await;
    // Answers reused for an hour: the cache is seen without racing a clock.
    let ready_server = serve(&env, &["--ready-cache", "1h"]).await;
    let failing_server = serve(&env, &[]).await;
    let health = reqwest::get(format!("{}/healthz", ready_server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    env.sim.clear_requests();
    let buildinfo = || env.sim.view().requests_matching("GET", "/buildinfo");

    // Coder failing: not ready.
    env.sim.inject_fault(
        coder_workspace_sim::Fault::new(http::Method::GET, "/api/v2/buildinfo", 503).times(1),
    );
    let not_ready = reqwest::get(format!("{}/readyz", failing_server.base))
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    assert_eq!(buildinfo(), 1);

    // /readyz needs no credentials: its answer is reused for a moment, so hitting it
    // does not hit Coder each time.
    let hits = 5;
    for _ in 0..hits {
        let ready = reqwest::get(format!("{}/readyz", ready_server.base))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let body = ready.json::<serde_json::Value>().await.unwrap();
        assert_eq!(body["status"], "ready");
        // The store is part of readiness (its failure is in tests/postgres.rs).
        assert_eq!(body["store"]["status"], "ok", "{body}");
        assert_eq!(body["store"]["kind"], "sqlite", "{body}");
        assert!(!body.to_string().contains("store.db"), "no paths: {body}");
    }
    let probes = buildinfo() - 1;
    assert_eq!(
        probes, 1,
        "{hits} hits of /readyz asked Coder {probes} times"
    );
}

#[tokio::test]
async fn stateless_calls_with_an_invalid_name_still_find_their_workspace() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = serve(&env, &["--max-call-wait", "1s"]).await;
    let args = json!({"template_id": env.docker.id.to_string(), "name": "My WS"});
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(stateless_create(&http.mcp_url(), args.clone()).await);
    }
    // Both calls hit the call limit while the build is held...
    assert_eq!(results[0]["status"], "building", "{:?}", results[0]);
    assert!(
        results[0]["message"]
            .as_str()
            .unwrap()
            .contains("name \"my-ws-"),
        "{:?}",
        results[0]
    );
    // ...and the second waited for the first one's workspace instead of making another.
    assert_eq!(results[1]["workspace_id"], results[0]["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
    env.sim.release_builds();
}

#[tokio::test]
async fn delete_ends_a_session() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let auth = format!("Bearer {TOKEN}");
    let opened = http
        .post_mcp(&[("authorization", &auth)], &initialize_body())
        .await;
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let deleted = reqwest::Client::new()
        .delete(http.mcp_url())
        .bearer_auth(TOKEN)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    http.wait_for_log("session closed by the client").await;
    let late = http
        .post_mcp(
            &[
                ("authorization", &auth),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        )
        .await;
    assert_eq!(late.status(), 404);
}

#[tokio::test]
async fn parallel_opens_cannot_beat_the_session_limits() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &["--max-sessions-per-token", "2", "--max-sessions", "3"],
    )
    .await;
    let (alice, bob) = (format!("Bearer {TOKEN}"), format!("Bearer {BOB_TOKEN}"));
    let opens = (0..20).map(|i| {
        let (http, is_alice) = (&http, i % 2 == 0);
        let auth = if is_alice { alice.clone() } else { bob.clone() };
        async move {
            let response = http
                .post_mcp(&[("authorization", auth.as_str())], &initialize_body())
                .await;
            (is_alice, response.status().as_u16())
        }
    });
    let outcomes = futures::future::join_all(opens).await;
    let opened = |who: bool| {
        outcomes
            .iter()
            .filter(|(a, status)| *a == who && *status == 200)
            .count()
    };
    assert!(
        outcomes.iter().all(|(_, s)| *s == 200 || *s == 429),
        "{outcomes:?}"
    );
    assert_eq!(opened(true) + opened(false), 3, "total limit: {outcomes:?}");
    assert!(
        opened(true) <= 2 && opened(false) <= 2,
        "per-token limit: {outcomes:?}"
    );

    // The legacy transport reserves its slots the same way.
    let legacy = serve(&env, &["--max-sessions-per-token", "2"]).await;
    let opens = (0..10).map(|_| {
        reqwest::Client::new()
            .get(format!("{}/sse", legacy.base))
            .bearer_auth(TOKEN)
            .header("accept", "text/event-stream")
            .send()
    });
    // The streams are kept open until counted: a closed one would free its slot.
    let responses = futures::future::join_all(opens).await;
    let statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_refused_initialize_gives_its_slot_back() {
    let env = Env::new().await;
    let http = serve(&env, &["--max-sessions-per-token", "1"]).await;
    let auth = format!("Bearer {TOKEN}");
    // rmcp refuses this one (unknown protocol version header): no session, no slot kept.
    let bad = http
        .post_mcp(
            &[
                ("authorization", &auth),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            &initialize_body(),
        )
        .await;
    assert!(bad.headers().get("mcp-session-id").is_none());
    assert_ne!(bad.status(), 200);
    let good = http
        .post_mcp(&[("authorization", &auth)], &initialize_body())
        .await;
    assert_eq!(good.status(), 200);
}

#[tokio::test]
async fn progress_streams_while_create_workspace_waits_over_streamable_http() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = serve(&env, &["--max-call-wait", "0"]).await;
    let client = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let handle = client
        .start_call("create_workspace", env.create_args())
        .await;
    let token = handle.progress_token.clone();
    let mut response = Box::pin(handle.await_response());
    tokio::select! {
        _ = client.wait_for_progress(&token, 2) => {}
        early = &mut response => panic!("the call answered before any progress: {early:?}"),
    }
    // The build is held until released below, so the call cannot have finished: the
    // notifications came while it was waiting.
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = response.await.unwrap() else {
        panic!()
    };
    assert_eq!(structured(&result)["created"], true);
    assert!(client.progress(&token).len() > 2);
}

#[tokio::test]
async fn progress_streams_while_create_workspace_waits_over_legacy_sse() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = serve(&env, &["--max-call-wait", "0"]).await;
    let mut client = LegacyClient::connect(&http.base, TOKEN).await;
    let (id, token) = client
        .start_call("create_workspace", env.create_args())
        .await;
    assert!(
        client.wait_for_progress(id, &token, 2).await,
        "the call answered before any progress"
    );
    // Held until released: the progress came while the call was waiting.
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    env.sim.release_builds();
    let response = client.response(id).await;
    assert_eq!(
        response["result"]["structuredContent"]["created"], true,
        "{response}"
    );
    assert!(client.progress(&token).len() > 2);
}

#[tokio::test]
async fn a_waiting_call_does_not_block_other_sessions() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let other = env
        .sim
        .add_template(coder_workspace_sim::TemplateSpec::named("other"));
    let http = serve(&env, &["--max-call-wait", "0"]).await;
    let a = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let handle = a.start_call("create_workspace", env.create_args()).await;
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    // Same user, another session: its calls go through while A's build is held.
    let b = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let listed = structured(&b.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"].as_array().unwrap().len(), 2);
    let created = structured(
        &b.call(
            "create_workspace",
            json!({"template_id": other.id.to_string()}),
        )
        .await,
    );
    assert_eq!(created["created"], true);
    assert_eq!(env.sim.view().held_builds(), 1, "A is still waiting");
    env.sim.release_builds();
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!()
    };
    assert_eq!(structured(&result)["created"], true);
    assert_eq!(env.workspaces().len(), 2);
}

#[tokio::test]
async fn legacy_sse_sessions_expire_when_idle() {
    let env = Env::new().await;
    let http = serve(&env, &["--session-idle-timeout", "1s"]).await;
    let client = LegacyClient::connect(&http.base, TOKEN).await;
    let session = client
        .endpoint
        .split("sessionId=")
        .nth(1)
        .unwrap()
        .to_owned();
    let line = http.wait_for_log("legacy SSE session expired").await;
    assert!(line.contains(&session), "{line}");
    let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});
    assert_eq!(client.post(&ping).await, 404);
}

#[tokio::test]
async fn a_server_token_without_shared_identity_is_no_identity() {
    let env = Env::new().await;
    let http = HttpServer::spawn(&env.sim.url(), &[], &[("CODER_SESSION_TOKEN", TOKEN)]).await;
    let anonymous = http.post_mcp(&[], &initialize_body()).await;
    assert_eq!(anonymous.status(), 401);
    let sse = reqwest::get(format!("{}/sse", http.base)).await.unwrap();
    assert_eq!(sse.status(), 401);
    assert!(http.log().contains("ignoring --token/CODER_SESSION_TOKEN"));
    assert_no_tokens(&http.log());
}

#[tokio::test]
async fn auth_token_and_shared_identity_go_together() {
    let env = Env::new().await;
    let flag = refused_start(&env.sim.url(), &["--auth-token", "static-bearer-123"], &[]).await;
    assert!(
        flag.contains("only applies with --shared-identity"),
        "{flag}"
    );
    assert!(!flag.contains("static-bearer-123"), "{flag}");
    let from_env = refused_start(
        &env.sim.url(),
        &[],
        &[("CODER_MCP_AUTH_TOKEN", "static-bearer-123")],
    )
    .await;
    assert!(
        from_env.contains("only applies with --shared-identity"),
        "{from_env}"
    );
    let no_bearer = refused_start(
        &env.sim.url(),
        &["--shared-identity"],
        &[("CODER_SESSION_TOKEN", TOKEN)],
    )
    .await;
    assert!(no_bearer.contains("--auth-token"), "{no_bearer}");
    assert!(!no_bearer.contains(TOKEN));
}

#[tokio::test]
async fn a_non_loopback_address_is_warned_about() {
    let env = Env::new().await;
    let public = HttpServer::spawn_on("0.0.0.0:0", &env.sim.url(), &[], &[]).await;
    assert!(
        public.log().contains("listening on a non-loopback address"),
        "{}",
        public.log()
    );
    let local = serve(&env, &[]).await;
    assert!(!local.log().contains("non-loopback"), "{}", local.log());
}

#[tokio::test]
async fn a_dropped_response_stream_resumes_with_last_event_id() {
    use futures::StreamExt;
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = serve(&env, &["--max-call-wait", "0"]).await;
    let auth = format!("Bearer {TOKEN}");
    let opened = http
        .post_mcp(&[("authorization", &auth)], &initialize_body())
        .await;
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let in_session = [
        ("authorization", auth.as_str()),
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let initialized = http
        .post_mcp(
            &in_session,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(initialized.status(), 202);

    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "create_workspace", "arguments": env.create_args(),
        "_meta": {"progressToken": "resume-me"}}});
    let response = http.post_mcp(&in_session, &call).await;
    assert_eq!(response.status(), 200);
    let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
    let (mut seen, mut progress, mut last_id) = (Vec::new(), 0, None);
    while progress < 2 {
        let event = events.next().await.expect("stream open").unwrap();
        let data = event.data.unwrap_or_default();
        progress += data.contains("notifications/progress") as usize;
        if let Some(id) = event.id {
            seen.push(id.clone());
            last_id = Some(id);
        }
    }
    // The client loses the stream mid-call.
    drop(events);
    let last_id = last_id.expect("events carry ids");

    let resumed = reqwest::Client::new()
        .get(http.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut events = sse_stream::SseStream::from_bytes_stream(resumed.bytes_stream());
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    env.sim.release_builds();
    let result = loop {
        let event = events.next().await.expect("resumed stream open").unwrap();
        // rmcp 3.11 resumes *at* the Last-Event-ID event (it is sent again; see the
        // README), but nothing before it comes twice.
        if let Some(id) = &event.id {
            assert!(
                id == &last_id || !seen.contains(id),
                "event {id} replayed twice"
            );
        }
        let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
            continue;
        };
        let message: serde_json::Value = serde_json::from_str(&data).unwrap();
        if message["id"] == 3 {
            break message;
        }
    };
    assert_eq!(
        result["result"]["structuredContent"]["created"], true,
        "{result}"
    );
    assert_eq!(env.workspaces().len(), 1);
}
