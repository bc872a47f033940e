//! create_workspace as an MCP task (the Tasks extension), through the binary with rmcp's
//! client declaring the extension: polled to completion, durable across a restart,
//! shared by replicas on PostgreSQL, cancelled, private to its user, one per key; and
//! bad arguments still answered at once.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use coder_workspace_sim::BuildPlan;
use common::http::{HttpServer, stateless_request};
use common::postgres::database;
use common::{BOB_TOKEN, Env, Recorder, Server, TOKEN, bounded};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams, GetTaskResult,
    TaskPayload, TaskStatus,
};
use serde_json::{Value, json};

/// Test servers ask for polls this often, and count a replica gone after 3 heartbeats.
const FAST: &[&str] = &["--task-poll-interval", "50ms", "--task-heartbeat", "100ms"];

async fn serve(env: &Env, store: &str) -> HttpServer {
    HttpServer::spawn(&env.sim.url(), FAST, &[("CODER_MCP_STORE", store)]).await
}

async fn tasks_client(http: &HttpServer, token: &str) -> Server {
    Server::http_as(&http.mcp_url(), token, &[], Recorder::with_tasks())
        .await
        .unwrap()
}

/// Calls create_workspace and returns the task id it answered with.
async fn start_task(client: &Server, arguments: Value) -> String {
    let params = CallToolRequestParams::new("create_workspace")
        .with_arguments(arguments.as_object().cloned().unwrap());
    match client.client.call_tool_once(params).await.unwrap() {
        CallToolResponse::Task(task) => {
            assert_eq!(task.task.status, TaskStatus::Working);
            assert_eq!(task.task.poll_interval_ms, Some(50));
            assert!(task.task.ttl_ms.is_some());
            task.task.task_id
        }
        other => panic!("expected a task, got {other:?}"),
    }
}

async fn get(client: &Server, task_id: &str) -> GetTaskResult {
    client
        .client
        .get_task(GetTaskParams::new(task_id))
        .await
        .unwrap()
}

/// Polls `tasks/get` at the interval the server asked for until `done` holds.
async fn poll_until(
    client: &Server,
    task_id: &str,
    what: &str,
    done: impl Fn(&GetTaskResult) -> bool,
) -> GetTaskResult {
    bounded(what, async {
        loop {
            let answer = get(client, task_id).await;
            if done(&answer) {
                return answer;
            }
            let wait = answer.task.task.poll_interval_ms.unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    })
    .await
}

/// Polls until the task has completed; its result.
async fn poll_completed(client: &Server, task_id: &str, what: &str) -> Value {
    let done = poll_until(client, task_id, what, |a| {
        a.task.task.status == TaskStatus::Completed
    })
    .await;
    completed(&done)
}

fn completed(answer: &GetTaskResult) -> Value {
    match &answer.task.payload {
        TaskPayload::Completed { result } => Value::Object(result.clone()),
        other => panic!("expected completed, got {other:?}"),
    }
}

fn status_message(answer: &GetTaskResult) -> String {
    answer.task.task.status_message.clone().unwrap_or_default()
}

/// The builds of the docker template wait for `release_builds`.
fn hold_builds(env: &Env) {
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
}

#[tokio::test]
async fn a_task_is_polled_from_queued_to_the_synchronous_result() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let client = tasks_client(&http, TOKEN).await;
    let mut args = env.create_args();
    args["name"] = json!("task-one");
    let task_id = start_task(&client, args).await;
    // While the build is held, every poll answers at once: working, with the phase.
    let working = poll_until(&client, &task_id, "the build phase", |a| {
        status_message(a).contains("build") || status_message(a).contains("queued")
    })
    .await;
    assert_eq!(working.task.task.status, TaskStatus::Working);
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    env.sim.release_builds();
    let result = poll_completed(&client, &task_id, "completion").await;
    assert_ne!(result["isError"], true, "{result}");
    let structured = &result["structuredContent"];
    assert_eq!(structured["created"], true, "{result}");
    assert_eq!(structured["workspace_name"], "task-one");
    // The same result a synchronous call gives: the text is the structured content.
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, structured);
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn bad_arguments_are_answered_at_once_not_as_a_task() {
    let env = Env::new().await;
    let http = serve(&env, &env.store()).await;
    let client = tasks_client(&http, TOKEN).await;
    for arguments in [
        json!({"template_id": uuid::Uuid::new_v4().to_string()}),
        json!({"template_id": env.docker.id.to_string(), "parameters": {"cpu": "99"}}),
        json!({"template_id": "not-a-uuid"}),
    ] {
        let params = CallToolRequestParams::new("create_workspace")
            .with_arguments(arguments.as_object().cloned().unwrap());
        match client.client.call_tool_once(params).await.unwrap() {
            CallToolResponse::Complete(result) => {
                assert_eq!(result.is_error, Some(true), "{arguments}: {result:?}");
            }
            other => panic!("{arguments}: expected an error result, got {other:?}"),
        }
    }
    assert!(env.workspaces().is_empty());
}

#[tokio::test]
async fn calls_with_one_name_share_one_task_and_list_calls_stay_synchronous() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let first_client = tasks_client(&http, TOKEN).await;
    let second_client = tasks_client(&http, TOKEN).await;
    let mut args = env.create_args();
    args["name"] = json!("shared");
    let first = start_task(&first_client, args.clone()).await;
    let second = start_task(&second_client, args).await;
    assert_eq!(first, second, "a live task of that name is returned");
    let listed = first_client
        .client
        .call_tool_once(CallToolRequestParams::new("list_templates"))
        .await
        .unwrap();
    assert!(
        matches!(listed, CallToolResponse::Complete(_)),
        "{listed:?}"
    );
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    env.sim.release_builds();
    poll_completed(&second_client, &first, "completion").await;
    assert_eq!(env.workspaces().len(), 1);
}

#[tokio::test]
async fn a_cancelled_task_says_the_workspace_keeps_building() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let client = tasks_client(&http, TOKEN).await;
    let mut args = env.create_args();
    args["name"] = json!("to-cancel");
    let task_id = start_task(&client, args).await;
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    client
        .client
        .cancel_task(CancelTaskParams::new(task_id.clone()))
        .await
        .unwrap();
    let answer = get(&client, &task_id).await;
    assert_eq!(answer.task.task.status, TaskStatus::Cancelled);
    let message = status_message(&answer);
    assert!(message.contains("keeps building in Coder"), "{message}");
    assert!(message.contains("to-cancel"), "{message}");
    // The workspace was not touched.
    assert_eq!(env.workspaces().len(), 1);
    env.sim.release_builds();
}

#[tokio::test]
async fn another_users_task_is_unknown() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let alice = tasks_client(&http, TOKEN).await;
    let bob = tasks_client(&http, BOB_TOKEN).await;
    let task_id = start_task(&alice, env.create_args()).await;
    for answer in [
        bob.client
            .get_task(GetTaskParams::new(task_id.clone()))
            .await
            .map(drop),
        bob.client
            .cancel_task(CancelTaskParams::new(task_id.clone()))
            .await,
    ] {
        let err = answer.expect_err("bob cannot see alice's task").to_string();
        assert!(err.contains("unknown task"), "{err}");
    }
    assert_eq!(
        get(&alice, &task_id).await.task.task.status,
        TaskStatus::Working
    );
    env.sim.release_builds();
}

/// The server is killed mid-build and started again on the same store: the task is still
/// known, is taken over, and completes with the one workspace.
#[tokio::test]
async fn a_task_outlives_a_restart_of_the_server() {
    let env = Env::new().await;
    hold_builds(&env);
    let store = env.store();
    let mut first = serve(&env, &store).await;
    let client = tasks_client(&first, TOKEN).await;
    let task_id = start_task(&client, env.create_args()).await;
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    first.kill().await;

    let second = serve(&env, &store).await;
    let client = tasks_client(&second, TOKEN).await;
    // Polled until the new server takes it over (once the dead one has missed three
    // heartbeats); only then is the build let go, so the new server saw it unfinished.
    poll_until(&client, &task_id, "the take-over", |a| {
        assert_eq!(a.task.task.status, TaskStatus::Working);
        second.log().contains("taking over a task nobody follows")
    })
    .await;
    env.sim.release_builds();
    let result = poll_completed(&client, &task_id, "completion after the restart").await;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(env.workspaces().len(), 1, "no second workspace");
}

/// Two replicas on one PostgreSQL: a task made on one is polled on the other, which
/// answers from the store while the first one follows it.
#[tokio::test]
async fn a_task_made_on_one_replica_is_polled_on_another() {
    let Some((store, _server)) = database().await else {
        return;
    };
    let env = Env::new().await;
    hold_builds(&env);
    let a = serve(&env, &store).await;
    let b = serve(&env, &store).await;
    let on_a = tasks_client(&a, TOKEN).await;
    let on_b = tasks_client(&b, TOKEN).await;
    let mut args = env.create_args();
    args["name"] = json!("replicated");
    let task_id = start_task(&on_a, args.clone()).await;
    assert_eq!(
        start_task(&on_b, args).await,
        task_id,
        "the other replica returns the live task of that name"
    );
    poll_until(
        &on_b,
        &task_id,
        "the build phase on the other replica",
        |a| status_message(a).contains("queued") || status_message(a).contains("build"),
    )
    .await;
    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    env.sim.release_builds();
    let result = poll_completed(&on_b, &task_id, "completion seen on the other replica").await;
    assert_eq!(result["structuredContent"]["workspace_name"], "replicated");
    assert!(
        !b.log().contains("taking over a task"),
        "a live replica's task is not taken over"
    );
    assert_eq!(env.workspaces().len(), 1);
}

/// A stdio client with the extension gets tasks too (the store is the process's).
#[tokio::test]
async fn stdio_clients_get_tasks_too() {
    let env = Env::new().await;
    let server = Server::spawn_as(
        &env.sim.url(),
        TOKEN,
        FAST,
        &[("CODER_MCP_STORE", &env.store())],
        Recorder::with_tasks(),
    )
    .await;
    let task_id = start_task(&server, env.create_args()).await;
    let result = poll_completed(&server, &task_id, "completion").await;
    assert_eq!(result["structuredContent"]["created"], true);
}

/// One stateless request of protocol 2026-07-28 from a client that declares the Tasks
/// extension; returns the JSON-RPC response.
async fn stateless(http: &HttpServer, method: &str, name: &str, params: Value) -> Value {
    let capabilities = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let name = (!name.is_empty()).then_some(name);
    stateless_request(&http.mcp_url(), method, name, params, capabilities).await
}

/// A client of 2026-07-28 with no session at all: discovers the extension, gets a task,
/// polls it (each poll a request of its own) to the result; tools/list carries cache hints.
#[tokio::test]
async fn stateless_clients_of_2026_07_28_get_tasks() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let discover = stateless(&http, "server/discover", "", json!({})).await;
    assert_eq!(
        discover["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({}),
        "{discover}"
    );
    let tools = stateless(&http, "tools/list", "", json!({})).await;
    assert_eq!(tools["result"]["cacheScope"], "public", "{tools}");
    assert!(tools["result"]["ttlMs"].as_u64().unwrap() > 0, "{tools}");

    let arguments = json!({"template_id": env.docker.id.to_string(), "name": "stateless-task"});
    let call = json!({"name": "create_workspace", "arguments": arguments});
    let created = stateless(&http, "tools/call", "create_workspace", call.clone()).await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let task_id = created["result"]["taskId"].as_str().unwrap().to_owned();
    let again = stateless(&http, "tools/call", "create_workspace", call).await;
    assert_eq!(
        again["result"]["taskId"],
        task_id.as_str(),
        "one task per name"
    );

    env.sim.wait_until(|v| v.workspaces().len() == 1).await;
    env.sim.release_builds();
    let done = bounded("the stateless task to complete", async {
        loop {
            let got = stateless(&http, "tasks/get", &task_id, json!({"taskId": task_id})).await;
            if got["result"]["status"] != "working" {
                return got;
            }
            let wait = got["result"]["pollIntervalMs"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    })
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let result = &done["result"]["result"];
    assert_eq!(
        result["structuredContent"]["workspace_name"], "stateless-task",
        "{done}"
    );
    assert_eq!(result["structuredContent"]["created"], true, "{done}");
    assert_eq!(env.workspaces().len(), 1);
}

/// Tasks that wait on one workspace share one follower of it on a replica: the creator's
/// task (keyed by its session alone) and tasks of another session that name the
/// workspace each get their own result, but Coder sees one watch stream and one
/// build-log stream for them all; cancelling one task leaves the others waiting on it.
#[tokio::test]
async fn tasks_on_one_workspace_share_one_watch() {
    let env = Env::new().await;
    hold_builds(&env);
    let http = serve(&env, &env.store()).await;
    let creator = tasks_client(&http, TOKEN).await;
    let other = tasks_client(&http, TOKEN).await;
    let first = start_task(&creator, env.create_args()).await;
    env.sim
        .wait_until(|v| v.held_builds() == 1 && v.open_watch_streams() == 1)
        .await;
    let name = env.workspaces()[0].name.clone();
    let waiting = |a: &GetTaskResult| status_message(a).contains("building");

    // Another session names the workspace: a task of its own, on the same workspace.
    let mut args = env.create_args();
    args["name"] = json!(name);
    let second = start_task(&other, args.clone()).await;
    assert_ne!(second, first);
    poll_until(
        &other,
        &second,
        "the second task to wait on the build",
        waiting,
    )
    .await;
    other
        .client
        .cancel_task(CancelTaskParams::new(second.clone()))
        .await
        .unwrap();
    assert_eq!(
        get(&other, &second).await.task.task.status,
        TaskStatus::Cancelled
    );
    assert_eq!(
        get(&creator, &first).await.task.task.status,
        TaskStatus::Working,
        "cancelling one task leaves the other waiting"
    );

    // And again, after the cancel: a new task, which joins the one watch still open.
    let third = start_task(&other, args).await;
    assert_ne!(third, second, "a cancelled task is not returned");
    poll_until(
        &other,
        &third,
        "the third task to wait on the build",
        waiting,
    )
    .await;
    env.sim.release_builds();

    let created = poll_completed(&creator, &first, "the creator's task").await;
    let found = poll_completed(&other, &third, "the naming task").await;
    assert_ne!(created["isError"], true, "{created}");
    assert_ne!(found["isError"], true, "{found}");
    assert_eq!(
        created["structuredContent"]["workspace_name"],
        name.as_str()
    );
    assert_eq!(found["structuredContent"]["workspace_name"], name.as_str());
    assert_eq!(created["structuredContent"]["created"], true, "{created}");
    assert_eq!(found["structuredContent"]["created"], false, "{found}");
    assert_eq!(
        get(&other, &second).await.task.task.status,
        TaskStatus::Cancelled
    );

    let view = env.sim.view();
    assert_eq!(
        view.requests_matching("GET", "/watch-ws"),
        1,
        "three tasks on one workspace, one watch stream"
    );
    let build = env.workspaces()[0].latest_build.id;
    assert_eq!(
        view.requests_matching("GET", &format!("/workspacebuilds/{build}/logs")),
        1,
        "and one build-log stream"
    );
    assert_eq!(env.workspaces().len(), 1);
}
