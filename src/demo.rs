//! `demo`: the whole flow against the built-in simulated Coder, through a real MCP
//! session with this very binary (spawned in stdio mode), so a newcomer sees the
//! product work without a Coder deployment. The story and the live progress go to
//! stderr; each tool's result goes to stdout, so it can be piped (`demo | jq`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam,
};
use rmcp::service::NotificationContext;
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::cli::{DemoArgs, SimArgs};
use coder_workspace_sim::SimCoder;

/// Prints progress notifications as they arrive, while a call is running (one that
/// arrives after its call's result would print out of order, so it is not shown).
struct DemoClient {
    started: Instant,
    calling: Arc<AtomicBool>,
}

impl ClientHandler for DemoClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if !self.calling.load(Ordering::SeqCst) {
            return;
        }
        let percent = params
            .total
            .map(|t| params.progress / t * 100.0)
            .unwrap_or(params.progress);
        eprintln!(
            "  {:>5.1}s  [{percent:>5.1}%]  {}",
            self.started.elapsed().as_secs_f64(),
            params.message.unwrap_or_default()
        );
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("coder-workspace-mcp-demo", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let sim = SimCoder::start_demo()
        .await
        .context("starting the simulated Coder")?;
    eprintln!(
        "Simulated Coder listening on {} (user \"demo\").",
        sim.url()
    );
    // The demo's own store: it shows the durable path without leaving demo records in
    // the user's store.
    let scratch =
        std::env::temp_dir().join(format!("coder-workspace-mcp-demo-{}", std::process::id()));
    eprintln!("Starting `coder-workspace-mcp stdio` against it and talking MCP to it...\n");
    let log_level = args.log.log_level.as_deref().unwrap_or("warn");
    let outcome = demo(log_level, &sim, &scratch.join("store.db")).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome?;
    eprintln!(
        "\nDone. Point an MCP client at `coder-workspace-mcp` with CODER_URL and CODER_SESSION_TOKEN to use a real Coder."
    );
    Ok(())
}

/// An MCP session with this binary in stdio mode, against the simulator.
struct Session {
    client: rmcp::service::RunningService<RoleClient, DemoClient>,
    calling: Arc<AtomicBool>,
}

impl Session {
    async fn start(log_level: &str, sim: &SimCoder, store: &Path) -> anyhow::Result<Session> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(["stdio", "--max-call-wait", "0", "--log-level", log_level])
            .arg("--store")
            .arg(store)
            .env("CODER_URL", sim.url())
            .env("CODER_SESSION_TOKEN", SimCoder::DEMO_TOKEN);
        let transport = TokioChildProcess::new(command).context("starting the MCP server")?;
        let calling = Arc::new(AtomicBool::new(false));
        let client = DemoClient {
            started: Instant::now(),
            calling: calling.clone(),
        }
        .serve(transport)
        .await
        .context("MCP initialization")?;
        Ok(Session { client, calling })
    }

    /// Calls `tool`, shows its progress meanwhile, and prints its result on stdout.
    async fn call(&self, tool: &'static str, arguments: Value) -> anyhow::Result<Value> {
        let params = CallToolRequestParams::new(tool)
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        self.calling.store(true, Ordering::SeqCst);
        let result = self.client.call_tool(params).await;
        self.calling.store(false, Ordering::SeqCst);
        let result = result.with_context(|| format!("calling {tool}"))?;
        if result.is_error == Some(true) {
            let text: Vec<String> = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            anyhow::bail!("{tool} failed: {}", text.join(" "));
        }
        let value = result
            .structured_content
            .with_context(|| format!("{tool} returned no structured content"))?;
        // rmcp hands each progress notification to a task of its own, so the last one can
        // come after the result (and is then not shown): the result says how it ended.
        if let Some(name) = value.get("workspace_name").and_then(Value::as_str) {
            // No `status` and no `agent_status`: ready.
            let status = ["status", "agent_status"]
                .iter()
                .find_map(|field| value.get(*field).and_then(Value::as_str))
                .unwrap_or("ready");
            eprintln!("  result: {name} is {status}");
        }
        println!("{}", serde_json::to_string_pretty(&value)?); // stdout-ok: the demo's results
        Ok(value)
    }

    async fn end(self) {
        self.client.cancel().await.ok();
    }
}

async fn demo(log_level: &str, sim: &SimCoder, store: &Path) -> anyhow::Result<()> {
    let session = Session::start(log_level, sim, store).await?;
    if let Some(server) = session
        .client
        .peer_info()
        .and_then(|info| info.server_info.clone())
    {
        eprintln!("Connected: {} {}\n", server.name, server.version);
    }

    eprintln!("1) list_templates (result on stdout)");
    let listed = session.call("list_templates", json!({})).await?;
    let templates = listed["templates"].as_array().cloned().unwrap_or_default();
    let template = templates
        .first()
        .context("the simulated Coder has no templates")?;
    let template_id = template["id"].as_str().unwrap_or_default().to_owned();

    eprintln!("\n2) read_template {{template_id: {template_id}}}");
    let read = session
        .call("read_template", json!({ "template_id": template_id }))
        .await?;
    // Pick the last option where there is a choice, to show parameters at work (step 6).
    let mut parameters = serde_json::Map::new();
    for p in read["parameters"].as_array().cloned().unwrap_or_default() {
        let last = p["options"]
            .as_array()
            .and_then(|o| o.iter().filter_map(|o| o["value"].as_str()).next_back());
        if let (Some(name), Some(last)) = (p["name"].as_str(), last) {
            parameters.insert(name.to_owned(), json!(last));
        }
    }
    let presets = read["presets"].as_array().cloned().unwrap_or_default();
    for p in &presets {
        eprintln!(
            "   preset {}{}{}",
            p["name"],
            if p["default"] == true {
                ", the default"
            } else {
                ""
            },
            if p["prebuilt_workspaces"] == true {
                ", with prebuilt workspaces"
            } else {
                ""
            }
        );
    }
    let preset = presets
        .iter()
        .find(|p| p["default"] == true)
        .or(presets.first())
        .and_then(|p| p["name"].as_str())
        .map(str::to_owned);

    // The default preset: Coder keeps prebuilt workspaces of it, so one is claimed.
    let mut arguments = json!({ "template_id": template_id, "name": "demo-workspace" });
    if let Some(preset) = &preset {
        arguments["preset"] = json!(preset);
    }
    eprintln!("\n3) create_workspace {arguments} (progress below)");
    let created = session.call("create_workspace", arguments.clone()).await?;
    if created["prebuilt"] == true {
        eprintln!("   prebuilt: true, a prebuilt workspace was claimed: no full build");
    }

    eprintln!("\n4) create_workspace again, same session: the same workspace");
    let again = session.call("create_workspace", arguments.clone()).await?;
    eprintln!(
        "   created: {}, status: {}, same workspace: {}",
        again["created"],
        again["status"],
        again["workspace_id"] == created["workspace_id"]
    );
    session.end().await;

    eprintln!(
        "\n5) the server restarted (a new process), create_workspace with the same name: the store remembers"
    );
    let session = Session::start(log_level, sim, store).await?;
    let restarted = session.call("create_workspace", arguments).await?;
    eprintln!(
        "   created: {}, status: {}, same workspace: {}",
        restarted["created"],
        restarted["status"],
        restarted["workspace_id"] == created["workspace_id"]
    );

    session.end().await;

    // Parameters of one's own, unlike the default preset's: a full build. (A new
    // conversation: within one, create_workspace returns the conversation's workspace.)
    let session = Session::start(log_level, sim, store).await?;
    let arguments =
        json!({ "template_id": template_id, "name": "demo-custom", "parameters": parameters });
    eprintln!(
        "\n6) another task: create_workspace {arguments}, values of its own, so a full build (progress below)"
    );
    session.call("create_workspace", arguments).await?;
    session.end().await;
    Ok(())
}

/// `sim`: the simulated Coder on its own, until Ctrl-C.
pub async fn run_simulator(args: &SimArgs) -> anyhow::Result<()> {
    let listen = args.listen;
    let sim = SimCoder::start_demo_on(listen)
        .await
        .with_context(|| format!("starting the simulated Coder on {listen}"))?;
    eprintln!("Simulated Coder listening on {}", sim.url());
    eprintln!(
        "  CODER_URL={} CODER_SESSION_TOKEN={}",
        sim.url(),
        SimCoder::DEMO_TOKEN
    );
    if let Some(callback) = &args.oauth_app_redirect {
        let user = args.oauth_user.as_str();
        if sim.user(user).is_none() {
            // Signed in through OAuth only: its session token is never shown.
            let token = format!(
                "{}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10],
                &uuid::Uuid::new_v4().simple().to_string()[..22]
            );
            sim.add_user(user, &token);
        }
        sim.set_oauth_signed_in_user(user);
        let (id, secret) = sim.register_oauth_app("coder-workspace-mcp", callback);
        eprintln!(
            "OAuth2 app registered, callback {callback}; /oauth2/authorize signs in {user} at once"
        );
        eprintln!("  CODER_MCP_OAUTH_CLIENT_ID={id} CODER_MCP_OAUTH_CLIENT_SECRET={secret}");
    }
    tokio::signal::ctrl_c().await.ok();
    sim.shutdown().await;
    Ok(())
}
