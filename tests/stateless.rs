//! Sessionless (stateless HTTP) create_workspace calls: the name ties calls together,
//! so calls for different names must not wait for one another.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::BuildPlan;
use common::Env;
use common::http::{HttpServer, stateless_create};
use serde_json::{Value, json};

/// One stateless create_workspace call for `name`; returns the structured result.
async fn create(mcp_url: String, template_id: String, name: &'static str) -> Value {
    stateless_create(&mcp_url, json!({"template_id": template_id, "name": name})).await
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
