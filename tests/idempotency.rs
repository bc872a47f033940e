//! One workspace per task, whatever the client does: a name means its workspace from
//! any session; answers name the way back; the store carries tasks across restarts and
//! crashes (kill -9 at the worst moments); several processes share one SQLite file.
//! Replicas on PostgreSQL are in `tests/postgres.rs`.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_api::WorkspaceStatus;
use coder_workspace_sim::{BuildPlan, TemplateSpec};
use common::http::HttpServer;
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

/// A name that names one of the caller's workspaces means that workspace, from another
/// conversation too: found, never collided with.
#[tokio::test]
async fn a_name_means_that_workspace_from_any_conversation() {
    let env = Env::new().await;
    let first = env.server(&["--stdio-session", "desktop"]).await;
    let made = structured(
        &first
            .call("create_workspace", named(&env, "fix-login"))
            .await,
    );
    assert_eq!(made["created"], true);
    assert_eq!(made["workspace_name"], "fix-login");

    let other = env.server(&["--stdio-session", "ide"]).await;
    let found = structured(
        &other
            .call("create_workspace", named(&env, "fix-login"))
            .await,
    );
    assert_eq!(found["created"], false);
    assert_eq!(found["status"], "already_exists");
    assert_eq!(found["workspace_id"], made["workspace_id"]);
    // The other conversation now has it too: no name needed any more.
    let again = structured(&other.call("create_workspace", env.create_args()).await);
    assert_eq!(again["workspace_id"], made["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

/// The name belongs to a workspace of another template: a clear tool error that names
/// its template and suggests another name; Coder's 409 never reaches the model.
#[tokio::test]
async fn a_name_taken_by_another_template_is_a_clear_error() {
    let env = Env::new().await;
    let kubernetes = env.sim.add_template(TemplateSpec::named("kubernetes"));
    let server = env.server(&[]).await;
    structured(
        &server
            .call("create_workspace", named(&env, "api-work"))
            .await,
    );

    let other = env.server(&["--stdio-session", "other"]).await;
    let args = json!({ "template_id": kubernetes.id.to_string(), "name": "api-work" });
    let error = error_text(&other.call("create_workspace", args).await);
    assert!(
        error.contains(
            "workspace \"api-work\" already exists and was made from template \"Docker Containers\""
        ),
        "{error}"
    );
    assert!(error.contains(&env.docker.id.to_string()), "{error}");
    assert!(
        error.contains("\"api-work-2\""),
        "suggests another name: {error}"
    );
    assert!(!error.contains("409"), "{error}");
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

/// The named workspace exists with other parameter values: it is returned as it is, and
/// the message says what differs.
#[tokio::test]
async fn a_name_with_other_parameters_is_returned_and_the_message_says_so() {
    let env = Env::new().await;
    let server = env.server(&[]).await;
    let mut args = named(&env, "eu-box");
    args["parameters"] = json!({ "region": "eu" });
    let made = structured(&server.call("create_workspace", args).await);

    let other = env.server(&["--stdio-session", "other"]).await;
    let mut args = named(&env, "eu-box");
    args["parameters"] = json!({ "region": "us", "cpu": 2 });
    let found = structured(&other.call("create_workspace", args).await);
    assert_eq!(found["created"], false);
    assert_eq!(found["workspace_id"], made["workspace_id"]);
    let message = found["message"].as_str().unwrap();
    assert!(
        message
            .contains("other parameter values than requested (region: \"eu\" (asked for \"us\"))"),
        "{message}"
    );
    assert!(!message.contains("cpu"), "cpu is the same: {message}");
    assert_eq!(creates(&env), 1);
}

/// Two processes that share nothing but Coder (each its own store) create one name at
/// the same moment: Coder's name uniqueness lets one create it, and the other gets that
/// workspace (no 409 text, no second workspace).
#[tokio::test]
async fn two_servers_sharing_only_coder_make_one_workspace_for_a_name() {
    let env = Env::new().await;
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");
    let dir = tempfile::tempdir().unwrap();
    let store_b = dir.path().join("b.db").display().to_string();
    let a = env.server(&["--stdio-session", "a"]).await;
    let b = Server::spawn_with(
        &env.sim.url(),
        TOKEN,
        &["--stdio-session", "b"],
        &[("CODER_MCP_STORE", &store_b)],
    )
    .await;
    let call_a = a
        .start_call("create_workspace", named(&env, "shared"))
        .await;
    let call_b = b
        .start_call("create_workspace", named(&env, "shared"))
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 2)
        .await;
    env.sim.release_requests();
    let (a, b) = (result(call_a).await, result(call_b).await);
    assert_eq!(a["workspace_id"], b["workspace_id"], "{a}\n{b}");
    assert_eq!(
        [&a, &b].iter().filter(|r| r["created"] == true).count(),
        1,
        "{a}\n{b}"
    );
    for r in [&a, &b] {
        assert!(!r["message"].as_str().unwrap().contains("409"), "{r}");
    }
    assert_eq!(env.workspaces().len(), 1);
}

/// Two stdio processes on one SQLite file (Claude Desktop and an IDE) ask for one name at
/// once: the store's lock makes the second wait for the first, which creates it; the
/// second finds it without ever sending a create.
#[tokio::test]
async fn two_stdio_processes_on_one_sqlite_file_make_one_workspace() {
    let env = Env::new().await;
    env.sim
        .hold_requests(http::Method::POST, "/users/me/workspaces");
    let desktop = env.server(&["--stdio-session", "desktop"]).await;
    let ide = env.server(&["--stdio-session", "ide"]).await;
    let first = desktop
        .start_call("create_workspace", named(&env, "one-task"))
        .await;
    env.sim
        .wait_until(|v| v.pending_requests("POST", "/users/me/workspaces") == 1)
        .await;
    let second = ide
        .start_call("create_workspace", named(&env, "one-task"))
        .await;
    // The second call is waiting for the first one's lock (its progress says so) while
    // the first one's create is held.
    ide.wait_for_message(
        &second.progress_token,
        "waiting for another create_workspace call",
    )
    .await;
    env.sim.release_requests();
    let (first, second) = (result(first).await, result(second).await);
    assert_eq!(first["created"], true);
    assert_eq!(second["created"], false);
    assert_eq!(second["workspace_id"], first["workspace_id"]);
    assert_eq!(creates(&env), 1, "the second process never sent a create");

    // Each process keeps its own conversation on the shared file: without a name, the
    // second one's workspace is the one it adopted, and a third client gets its own.
    let again = structured(&ide.call("create_workspace", env.create_args()).await);
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    let third = env.server(&["--stdio-session", "third"]).await;
    let own = structured(&third.call("create_workspace", env.create_args()).await);
    assert_eq!(own["created"], true);
    assert_eq!(env.workspaces().len(), 2);
}

/// The stdio server is killed mid-build (kill -9) and started again: the same call finds
/// the same workspace, by its conversation key when the client gives one
/// (`--stdio-session`), and from any client with the name the answer gave.
#[tokio::test]
async fn a_stdio_server_killed_mid_build_finds_its_workspace_again() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let args = ["--max-call-wait", "1s", "--stdio-session", "my-project"];
    let server = env.server(&args).await;
    let first = structured(&server.call("create_workspace", env.create_args()).await);
    assert_eq!(first["status"], "building");
    let name = first["workspace_name"].as_str().unwrap().to_owned();
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains(&format!("with name {name:?}")),
        "{first}"
    );
    server.kill().await;

    // Started again with the same conversation key: the same call, without a name.
    let restarted = env.server(&args).await;
    let same = structured(&restarted.call("create_workspace", env.create_args()).await);
    assert_eq!(same["status"], "building");
    assert_eq!(same["created"], false);
    assert_eq!(same["workspace_id"], first["workspace_id"]);
    restarted.kill().await;

    // Any process, as the answer said: with the name.
    let elsewhere = env.server(&[]).await;
    let call = elsewhere
        .start_call("create_workspace", named(&env, &name))
        .await;
    elsewhere
        .wait_for_message(&call.progress_token, &name)
        .await;
    env.sim.release_builds();
    let done = result(call).await;
    assert_eq!(done["created"], false);
    assert_eq!(done["status"], "already_exists");
    assert_eq!(done["workspace_id"], first["workspace_id"]);
    assert_eq!(env.workspaces().len(), 1);
    assert_eq!(creates(&env), 1);
}

/// kill -9 after Coder carried out the create but before its answer arrived (so before
/// the workspace id was written): the intent written before the create leads the next
/// call to the workspace by its name, and no second one is made. Through the
/// conversation's key, and through a requested name.
#[tokio::test]
async fn a_kill_between_the_create_and_the_store_write_makes_no_second_workspace() {
    let env = Env::new().await;
    env.sim
        .hold_responses(http::Method::POST, "/users/me/workspaces");
    for (round, (args, call)) in [
        (&["--stdio-session", "s1"][..], env.create_args()),
        (&[][..], named(&env, "task-b")),
    ]
    .into_iter()
    .enumerate()
    {
        let server = env.server(args).await;
        let _lost = server.start_call("create_workspace", call.clone()).await;
        // Coder has made the workspace; its answer is held, so the server has not seen it.
        env.sim
            .wait_until(|v| v.workspaces().len() == round + 1)
            .await;
        server.kill().await;

        let restarted = env.server(args).await;
        let found = structured(&restarted.call("create_workspace", call).await);
        assert_eq!(found["created"], false, "{found}");
        assert_eq!(found["status"], "already_exists");
        assert_eq!(
            found["workspace_id"].as_str().unwrap(),
            env.workspaces()[round].id.to_string()
        );
        assert_eq!(env.workspaces().len(), round + 1);
        assert_eq!(creates(&env), round + 1, "the create was not sent again");
    }
}

/// Over HTTP, a new MCP session per call (hosted agents do that): the name the first
/// answer gave finds the same workspace from every later session.
#[tokio::test]
async fn a_new_http_session_per_call_finds_the_workspace_by_the_name_it_was_given() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = HttpServer::spawn(&env.sim.url(), &["--max-call-wait", "1s"], &[]).await;
    let session = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let first = structured(&session.call("create_workspace", env.create_args()).await);
    assert_eq!(first["status"], "building");
    let name = first["workspace_name"].as_str().unwrap().to_owned();
    session.finish().await;

    for _ in 0..2 {
        let session = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
        let again = structured(&session.call("create_workspace", named(&env, &name)).await);
        assert_eq!(again["status"], "building");
        assert_eq!(again["workspace_id"], first["workspace_id"]);
        session.finish().await;
    }
    env.sim.release_builds();
    let session = Server::http(&http.mcp_url(), TOKEN, &[]).await.unwrap();
    let done = structured(&session.call("create_workspace", named(&env, &name)).await);
    assert_eq!(done["status"], "already_exists");
    assert_eq!(done["workspace_id"], first["workspace_id"]);
    assert_eq!(creates(&env), 1);
}

/// A Coder chat keeps its workspace when `serve` is killed and started again.
#[tokio::test]
async fn a_chat_keeps_its_workspace_across_a_restart_of_serve() {
    let env = Env::new().await;
    let store = env.store();
    let vars = [("CODER_MCP_STORE", store.as_str())];
    let chat = [("X-Coder-Chat-Id", "chat-7")];
    let mut http = HttpServer::spawn(&env.sim.url(), &[], &vars).await;
    let session = Server::http(&http.mcp_url(), TOKEN, &chat).await.unwrap();
    let first = structured(&session.call("create_workspace", env.create_args()).await);
    assert_eq!(first["created"], true);
    http.kill().await;
    drop(session);

    let http = HttpServer::spawn(&env.sim.url(), &[], &vars).await;
    let session = Server::http(&http.mcp_url(), TOKEN, &chat).await.unwrap();
    let again = structured(&session.call("create_workspace", env.create_args()).await);
    assert_eq!(again["created"], false);
    assert_eq!(again["workspace_id"], first["workspace_id"]);
    assert_eq!(creates(&env), 1);
}

/// A store that cannot be used is a start-up error that says which store and what to
/// do, for stdio and serve alike (a path under a regular file, a directory where the
/// file should be, a file that is not a database: all fail whoever runs the tests, root
/// included).
#[tokio::test]
async fn an_unusable_store_is_a_clear_start_up_error() {
    let env = Env::new().await;
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_a_file = file.join("store.db").display().to_string();
    let a_directory = env.dir.path().display().to_string();
    let not_a_database = env.dir.path().join("garbage.db");
    std::fs::write(&not_a_database, "x".repeat(4096)).unwrap();
    let not_a_database = not_a_database.display().to_string();
    for store in [under_a_file, a_directory, not_a_database] {
        for mode in ["stdio", "serve"] {
            let output = tokio::process::Command::new(common::BIN)
                .args([mode, "--store", &store])
                .env("CODER_URL", env.sim.url())
                .env("CODER_SESSION_TOKEN", TOKEN)
                .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
                .args(if mode == "serve" {
                    &["--listen", "127.0.0.1:0"][..]
                } else {
                    &[]
                })
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{mode} {store}: {stderr}");
            assert!(output.stdout.is_empty(), "stdout is the protocol");
            assert!(
                stderr.contains(&format!("the workspace store (SQLite at {store})"))
                    && stderr.contains("pass --store <another file>"),
                "{mode} {store}: {stderr}"
            );
        }
    }
    assert_eq!(env.workspaces().len(), 0);
}

/// The SQLite store fails at run time (here: its lock directory replaced by a file): the
/// call is a tool error that says nothing was created and what to do, the server keeps
/// serving, and once the store is usable again the call goes through.
#[tokio::test]
async fn a_store_failing_at_run_time_is_a_tool_error_and_creates_nothing() {
    let env = Env::new().await;
    structured(
        &env.server(&[])
            .await
            .call("create_workspace", named(&env, "before"))
            .await,
    );
    let server = env.server(&[]).await;
    let locks = env.dir.path().join("store.db.locks");
    std::fs::remove_dir_all(&locks).unwrap();
    std::fs::write(&locks, "in the way").unwrap();

    let error = error_text(&server.call("create_workspace", named(&env, "during")).await);
    assert!(
        error.contains(&format!("the workspace store (SQLite at {})", env.store()))
            && error.contains("cannot open lock file")
            && error.contains("Nothing was created")
            && error.contains(
                "call create_workspace again with the same arguments once the store is back"
            ),
        "{error}"
    );
    assert_eq!(creates(&env), 1);

    std::fs::remove_file(&locks).unwrap();
    let after = structured(&server.call("create_workspace", named(&env, "during")).await);
    assert_eq!(after["created"], true);
    assert_eq!(creates(&env), 2);
}

/// The conversation has a workspace and the model passes a name that names nothing: the
/// conversation keeps its workspace (with a note), and the name stays free, so another
/// conversation that asks for it gets a workspace of that name.
#[tokio::test]
async fn a_free_name_in_a_conversation_that_has_a_workspace_stays_free() {
    let env = Env::new().await;
    let chat = env.server(&["--stdio-session", "chat"]).await;
    let own = structured(&chat.call("create_workspace", env.create_args()).await);
    let again = structured(
        &chat
            .call("create_workspace", named(&env, "add-tests"))
            .await,
    );
    assert_eq!(again["workspace_id"], own["workspace_id"]);
    let message = again["message"].as_str().unwrap();
    assert!(
        message.contains("so it was returned instead of creating \"add-tests\"")
            && message.contains("stays free"),
        "{message}"
    );
    let other = env.server(&["--stdio-session", "other"]).await;
    let theirs = structured(
        &other
            .call("create_workspace", named(&env, "add-tests"))
            .await,
    );
    assert_eq!(theirs["created"], true);
    assert_eq!(theirs["workspace_name"], "add-tests");
    assert_ne!(theirs["workspace_id"], own["workspace_id"]);
    assert_eq!(env.workspaces().len(), 2);
}

/// After a replacement, the name leads to the replacement while the replaced workspace
/// holds it; once a new workspace of that very name exists (the old one deleted, a new
/// one made elsewhere), the name means that one.
#[tokio::test]
async fn a_name_means_the_replacement_until_a_new_workspace_takes_the_name() {
    let env = Env::new().await;
    env.sim
        .set_build_plan(env.docker.id, BuildPlan::failing("terraform apply failed"));
    let server = env.server(&[]).await;
    error_text(&server.call("create_workspace", named(&env, "dev-1")).await);
    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let replacement = structured(&server.call("create_workspace", named(&env, "dev-1")).await);
    let replacement_name = replacement["workspace_name"].as_str().unwrap().to_owned();
    assert!(replacement_name.starts_with("dev-1-"), "{replacement}");
    let again = structured(&server.call("create_workspace", named(&env, "dev-1")).await);
    assert_eq!(again["workspace_id"], replacement["workspace_id"]);

    // The broken dev-1 is deleted, and a new dev-1 is made by a process that shares only
    // Coder with this one.
    let original = env
        .workspaces()
        .into_iter()
        .find(|w| w.name == "dev-1")
        .unwrap();
    env.sim.delete_workspace(original.id);
    env.sim
        .wait_until(|v| {
            v.workspace(original.id)
                .is_some_and(|w| w.latest_build.status == WorkspaceStatus::Deleted)
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = Server::spawn_with(
        &env.sim.url(),
        TOKEN,
        &[],
        &[(
            "CODER_MCP_STORE",
            &dir.path().join("s.db").display().to_string(),
        )],
    )
    .await;
    let made_anew = structured(
        &elsewhere
            .call("create_workspace", named(&env, "dev-1"))
            .await,
    );
    assert_eq!(made_anew["created"], true);
    assert_eq!(made_anew["workspace_name"], "dev-1");

    let other = env.server(&[]).await;
    let now = structured(&other.call("create_workspace", named(&env, "Dev-1")).await);
    assert_eq!(now["workspace_id"], made_anew["workspace_id"], "{now}");
    assert_eq!(now["created"], false);
}

/// Two creates of one name race past Coder's check: Coder's second insert fails on its
/// unique index with a 500 (not a 409). That is the name being taken: the loser gets
/// the winner's workspace, and Coder's database error never reaches the model.
#[tokio::test]
async fn coders_500_on_a_same_name_race_is_a_taken_name_not_an_error() {
    let env = Env::new().await;
    env.sim.hold_creates_after_name_check();
    let dir = tempfile::tempdir().unwrap();
    let store_b = dir.path().join("b.db").display().to_string();
    let a = env.server(&[]).await;
    let b = Server::spawn_with(&env.sim.url(), TOKEN, &[], &[("CODER_MCP_STORE", &store_b)]).await;
    let call_a = a.start_call("create_workspace", named(&env, "raced")).await;
    let call_b = b.start_call("create_workspace", named(&env, "raced")).await;
    env.sim
        .wait_until(|v| v.creates_past_name_check() == 2)
        .await;
    env.sim.release_requests();
    let (a, b) = (result(call_a).await, result(call_b).await);
    assert_eq!(a["workspace_id"], b["workspace_id"], "{a}\n{b}");
    assert_eq!(
        [&a, &b].iter().filter(|r| r["created"] == true).count(),
        1,
        "{a}\n{b}"
    );
    for r in [&a, &b] {
        let message = r["message"].as_str().unwrap();
        assert!(
            !message.contains("duplicate key") && !message.contains("500"),
            "{r}"
        );
    }
    let statuses: Vec<u16> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v2/users/me/workspaces")
        .map(|r| r.status)
        .collect();
    assert!(statuses.contains(&500), "the race was run: {statuses:?}");
    assert_eq!(env.workspaces().len(), 1);
}
