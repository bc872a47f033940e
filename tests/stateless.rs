//! Sessionless (stateless HTTP) create_workspace calls: the name ties calls together,
//! so calls for different names must not wait for one another.

mod common;

use coder_workspace_mcp::sim::BuildPlan;
use common::http::HttpServer;
use common::{Env, TOKEN};
use serde_json::{Value, json};

/// One stateless `tools/call` of create_workspace; returns the structured result.
async fn create(mcp_url: String, template_id: String, name: &'static str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_workspace",
        "arguments": {"template_id": template_id, "name": name},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "stateless", "version": "0"}}}});
    let response = reqwest::Client::new()
        .post(mcp_url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "create_workspace")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or(text);
    let message: Value = serde_json::from_str(&data).unwrap();
    message["result"]["structuredContent"].clone()
}

/// While "alpha" is held building (holding its lock), a call for "beta" goes ahead and
/// creates "beta". With one lock per user it would wait behind "alpha" until its
/// --max-call-wait and then describe alpha's workspace.
#[tokio::test]
async fn stateless_calls_for_different_names_do_not_wait_for_each_other() {
    let env = Env::new().await;
    env.sim.set_build_plan(env.docker.id, BuildPlan::held());
    let http = HttpServer::spawn(&env.sim.url(), &["--max-call-wait", "5s"], &[]).await;
    let template = env.docker.id.to_string();
    let alpha = tokio::spawn(create(http.mcp_url(), template.clone(), "alpha"));
    env.sim.wait_until(|v| v.held_builds() == 1).await;

    env.sim.set_build_plan(env.docker.id, BuildPlan::default());
    let beta = create(http.mcp_url(), template, "beta").await;
    assert_eq!(beta["created"], true, "{beta}");
    assert_eq!(beta["workspace_name"], "beta", "{beta}");
    assert!(beta.get("status").is_none(), "{beta}");

    env.sim.release_builds();
    let alpha = alpha.await.unwrap();
    assert_eq!(alpha["workspace_name"], "alpha", "{alpha}");
    assert_eq!(env.workspaces().len(), 2);
}
