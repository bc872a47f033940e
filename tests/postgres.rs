//! `serve` replicas on one PostgreSQL: one workspace per chat and per name across
//! replicas, a replica killed mid-wait, and PostgreSQL down at start or going down
//! mid-call. A real PostgreSQL (see `common/postgres.rs`), never a stand-in.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::BuildPlan;
use common::http::HttpServer;
use common::postgres::{PgServer, database};
use common::{Env, Server, TOKEN, error_text, structured};
use rmcp::model::ServerResult;
use serde_json::{Value, json};

fn creates(env: &Env) -> usize {
    env.sim
        .view()
        .requests_matching("POST", "/api/v2/users/me/workspaces")
}

fn named(env: &Env, name: &str) -> Value {
    let mut args = env.create_args();
    args["name"] = json!(name);
    args
}

async fn result(handle: rmcp::service::RequestHandle<rmcp::RoleClient>) -> Value {
    let ServerResult::CallToolResult(result) = handle.await_response().await.unwrap() else {
        panic!("expected a tool result")
    };
    structured(&result)
}

async fn replica(env: &Env, store: &str, args: &[&str]) -> HttpServer {
    HttpServer::spawn(&env.sim.url(), args, &[("CODER_MCP_STORE", store)]).await
}

/// Waits until `session`'s call `handle` reports that it waits for another call of its
/// task: the proof that the two calls really overlapped.
async fn waits_for_the_other(
    session: &Server,
    handle: &rmcp::service::RequestHandle<rmcp::RoleClient>,
) {
    session
        .wait_for_message(
            &handle.progress_token,
            "waiting for another create_workspace call of this task",
        )
        .await;
}

/// Two replicas behind a load balancer: concurrent calls for one chat id, and for one
/// name, split between them, make one workspace each. The advisory lock on PostgreSQL
/// makes the second call of each pair wait for the first, which it then finds.
#[tokio::test]
async fn two_replicas_make_one_workspace_per_chat_and_per_name() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    let a = replica(&env, &store, &["--max-call-wait", "0"]).await;
    let b = replica(&env, &store, &["--max-call-wait", "0"]).await;
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");

    let chat = [("X-Coder-Chat-Id", "chat-1")];
    let chat_a = Server::http(&a.mcp_url(), TOKEN, &chat).await.unwrap();
    let chat_b = Server::http(&b.mcp_url(), TOKEN, &chat).await.unwrap();
    let first = chat_a
        .start_call("create_workspace", env.create_args())
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 1)
        .await;
    let second = chat_b
        .start_call("create_workspace", env.create_args())
        .await;
    waits_for_the_other(&chat_b, &second).await;

    let name_a = Server::http(&a.mcp_url(), TOKEN, &[]).await.unwrap();
    let name_b = Server::http(&b.mcp_url(), TOKEN, &[]).await.unwrap();
    let third = name_b
        .start_call("create_workspace", named(&env, "shared-task"))
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 2)
        .await;
    let fourth = name_a
        .start_call("create_workspace", named(&env, "shared-task"))
        .await;
    waits_for_the_other(&name_a, &fourth).await;

    env.sim.release_requests();
    let (first, second) = (result(first).await, result(second).await);
    let (third, fourth) = (result(third).await, result(fourth).await);
    assert_eq!(first["workspace_id"], second["workspace_id"]);
    assert_eq!(
        (first["created"].clone(), second["created"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(third["workspace_id"], fourth["workspace_id"]);
    assert_eq!(third["workspace_name"], "shared-task");
    assert_eq!(
        (third["created"].clone(), fourth["created"].clone()),
        (json!(true), json!(false))
    );
    assert_ne!(first["workspace_id"], third["workspace_id"]);
    assert_eq!(env.workspaces().len(), 2);
    assert_eq!(creates(&env), 2);
}

/// A replica dies (kill -9) while its calls wait for a build (the calls still in
/// flight); the client's next call lands on the other replica and gets the same
/// workspace: by its chat id, and, for a plain MCP session (whose replica is gone with
/// it), by the name the first answer gave.
#[tokio::test]
async fn a_replica_killed_mid_wait_leaves_the_workspace_to_the_other() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let mut a = replica(&env, &store, &["--max-call-wait", "0"]).await;
    let b = replica(&env, &store, &["--max-call-wait", "0"]).await;

    let chat = [("X-Coder-Chat-Id", "chat-2")];
    let on_a = Server::http(&a.mcp_url(), TOKEN, &chat).await.unwrap();
    let chat_call = on_a.start_call("create_workspace", env.create_args()).await;
    let session = Server::http(&a.mcp_url(), TOKEN, &[]).await.unwrap();
    let named_call = session
        .start_call("create_workspace", named(&env, "my-task"))
        .await;
    env.sim.wait_until(|v| v.held_builds() == 2).await;
    // Both calls follow their builds (their progress names them) when A dies.
    on_a.wait_for_message(&chat_call.progress_token, "building")
        .await;
    session
        .wait_for_message(&named_call.progress_token, "building my-task")
        .await;
    a.kill().await;

    let on_b = Server::http(&b.mcp_url(), TOKEN, &chat).await.unwrap();
    let chat_again = on_b.start_call("create_workspace", env.create_args()).await;
    let new_session = Server::http(&b.mcp_url(), TOKEN, &[]).await.unwrap();
    let name_again = new_session
        .start_call("create_workspace", named(&env, "my-task"))
        .await;
    on_b.wait_for_message(&chat_again.progress_token, "building")
        .await;
    new_session
        .wait_for_message(&name_again.progress_token, "building my-task")
        .await;
    env.sim.release_builds();
    let (chat_done, name_done) = (result(chat_again).await, result(name_again).await);
    assert_eq!(chat_done["status"], "already_exists");
    assert_eq!(name_done["status"], "already_exists");
    assert_eq!(name_done["workspace_name"], "my-task");
    assert_ne!(chat_done["workspace_id"], name_done["workspace_id"]);
    assert_eq!(
        env.workspaces().len(),
        2,
        "one for the chat, one for the name"
    );
    assert_eq!(creates(&env), 2);
}

/// A replica dies (kill -9) inside its critical section: Coder has made the workspace,
/// its answer has not arrived, the id is not written. Its advisory lock dies with its
/// connection; the other replica's call for the same chat then gets it, finds the
/// intent the dead replica wrote, and adopts the workspace by its name: one create.
#[tokio::test]
async fn a_replica_killed_holding_the_lock_leaves_no_second_workspace() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    let mut a = replica(&env, &store, &["--max-call-wait", "0"]).await;
    let b = replica(&env, &store, &["--max-call-wait", "0"]).await;
    env.sim
        .hold_responses(http::Method::POST, "/users/me/workspaces");
    let chat = [("X-Coder-Chat-Id", "chat-5")];
    let on_a = Server::http(&a.mcp_url(), TOKEN, &chat).await.unwrap();
    let _lost = on_a.start_call("create_workspace", env.create_args()).await;
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    let on_b = Server::http(&b.mcp_url(), TOKEN, &chat).await.unwrap();
    let waiting = on_b.start_call("create_workspace", env.create_args()).await;
    on_b.wait_for_message(
        &waiting.progress_token,
        "waiting for another create_workspace call",
    )
    .await;
    a.kill().await;
    let found = result(waiting).await;
    assert_eq!(found["created"], false, "{found}");
    assert_eq!(found["workspace_id"], env.workspaces()[0].id.to_string());
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1, "the create was not sent again");
}

/// More calls in their critical sections at once than a replica has database
/// connections: they queue for a lock slot instead of starving the pool, and all of them
/// get their workspace.
#[tokio::test]
async fn more_concurrent_creates_than_connections_all_succeed() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    let http = replica(&env, &store, &["--max-call-wait", "0"]).await;
    // Creates held in Coder keep their calls inside the critical section.
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let (url, args) = (http.mcp_url(), named(&env, &format!("load-{i}")));
            tokio::spawn(async move { common::http::stateless_create(&url, args).await })
        })
        .collect();
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") >= 10)
        .await;
    env.sim.release_requests();
    for call in calls {
        let out = call.await.unwrap();
        assert!(out["workspace_id"].is_string(), "{out}");
    }
    assert_eq!(env.workspaces().len(), 40);
    assert_eq!(creates(&env), 40);
}

/// PostgreSQL down when `serve` (or stdio) starts: a clear start-up error naming the
/// store (without its password) and what to check.
#[tokio::test]
async fn postgres_down_at_start_is_a_clear_start_up_error() {
    let Some(server) = PgServer::start() else {
        return;
    };
    server.stop();
    let env = Env::new().await;
    let url = server
        .url("postgres")
        .replace("postgres@", "postgres:s3cret@");
    for mode in ["serve", "stdio"] {
        let output = tokio::process::Command::new(common::BIN)
            .args([mode, "--store", &url])
            .args(if mode == "serve" {
                &["--listen", "127.0.0.1:0"][..]
            } else {
                &[]
            })
            .env("CODER_URL", env.sim.url())
            .env("CODER_SESSION_TOKEN", TOKEN)
            .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{mode}: {stderr}");
        assert!(
            stderr
                .contains("the workspace store (PostgreSQL at postgres://postgres:***@127.0.0.1:")
                && stderr.contains("cannot be reached")
                && stderr.contains("check that PostgreSQL is up"),
            "{mode}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{mode}: {stderr}");
    }
}

/// PostgreSQL goes away while serving: every call that needs it is a tool error that
/// says nothing was created and what to do (never a hang, never a second workspace),
/// `/readyz` says so, and once it is back the same calls find the same workspaces.
/// It also goes down in the middle of a create (after Coder made the workspace, before
/// its id could be written): that workspace is found again, not duplicated.
#[tokio::test]
async fn postgres_going_down_is_a_tool_error_never_a_duplicate_or_a_hang() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let env = Env::new().await;
    let store = server.url("postgres");
    let http = replica(&env, &store, &["--ready-cache", "0s"]).await;
    let readyz = || async {
        let response = reqwest::get(format!("{}/readyz", http.base)).await.unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(readyz().await.0, 200);
    let chat = [("X-Coder-Chat-Id", "chat-3")];
    let session = Server::http(&http.mcp_url(), TOKEN, &chat).await.unwrap();
    let first = structured(&session.call("create_workspace", env.create_args()).await);

    server.stop();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"]["status"], "unavailable", "{body}");
    for args in [env.create_args(), named(&env, "another-task")] {
        let error = error_text(&session.call("create_workspace", args).await);
        assert!(
            error.contains("the workspace store (PostgreSQL at")
                && error.contains("Nothing was created")
                && error.contains(
                    "call create_workspace again with the same arguments once the store is back"
                ),
            "{error}"
        );
    }
    assert_eq!(creates(&env), 1, "nothing is created without the store");

    server.resume();
    let again = structured(&session.call("create_workspace", env.create_args()).await);
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    assert_eq!(readyz().await.0, 200);

    // Down in the middle of a create: Coder has made it, the id cannot be written.
    env.sim
        .hold_responses(http::Method::POST, "/users/me/workspaces");
    let mid = Server::http(&http.mcp_url(), TOKEN, &[("X-Coder-Chat-Id", "chat-4")])
        .await
        .unwrap();
    let call = mid.start_call("create_workspace", env.create_args()).await;
    env.sim.wait_until(|v| v.workspaces().len() == 2).await;
    server.stop();
    env.sim.release_requests();
    let made = result(call).await;
    assert_eq!(
        made["created"], true,
        "the workspace is answered even so: {made}"
    );
    server.resume();
    let found = structured(&mid.call("create_workspace", env.create_args()).await);
    assert_eq!(found["created"], false);
    assert_eq!(found["workspace_id"], made["workspace_id"]);
    assert_eq!(env.workspaces().len(), 2);
    assert_eq!(creates(&env), 2);
}

/// A chat id far longer than a PostgreSQL index row (about 2.7 kB) still keys one
/// workspace across replicas: the store keeps a digest of long ids.
#[tokio::test]
async fn a_chat_id_of_any_length_keys_one_workspace() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    let a = replica(&env, &store, &[]).await;
    let b = replica(&env, &store, &[]).await;
    let long = "chat-".repeat(1000);
    let chat = [("X-Coder-Chat-Id", long.as_str())];
    let on_a = Server::http(&a.mcp_url(), TOKEN, &chat).await.unwrap();
    let first = result(on_a.start_call("create_workspace", env.create_args()).await).await;
    assert_eq!(first["created"], true, "{first}");
    let on_b = Server::http(&b.mcp_url(), TOKEN, &chat).await.unwrap();
    let again = result(on_b.start_call("create_workspace", env.create_args()).await).await;
    assert_eq!(again["workspace_id"], first["workspace_id"], "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(creates(&env), 1);
}
