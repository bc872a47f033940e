//! `demo`: the whole flow against the built-in simulated Coder, through a real MCP
//! session with this very binary (spawned in stdio mode), so a newcomer sees the
//! product work without a Coder deployment. Everything is written to stderr.

use std::net::SocketAddr;
use std::path::Path;
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

use crate::config::Cli;
use crate::sim::SimCoder;

/// Prints progress notifications as they arrive.
struct DemoClient {
    started: Instant,
}

impl ClientHandler for DemoClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
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
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let sim = SimCoder::start_demo()
        .await
        .context("starting the simulated Coder")?;
    eprintln!(
        "Simulated Coder listening on {} (user \"demo\").",
        sim.url()
    );
    // The demo's own store, unless one is given: it shows the durable path without
    // leaving demo records in the user's store.
    let scratch =
        std::env::temp_dir().join(format!("coder-workspace-mcp-demo-{}", std::process::id()));
    let store = match &cli.store.store {
        Some(_) => None,
        None => Some(scratch.join("store.db")),
    };
    eprintln!("Starting `coder-workspace-mcp stdio` against it and talking MCP to it...\n");
    let outcome = demo(cli, &sim, store.as_deref()).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome?;
    eprintln!(
        "\nDone. Point an MCP client at `coder-workspace-mcp` with CODER_URL and CODER_SESSION_TOKEN to use a real Coder."
    );
    Ok(())
}

type Client = rmcp::service::RunningService<RoleClient, DemoClient>;

/// This binary in stdio mode against the simulator, as an MCP client sees it.
async fn start_server(cli: &Cli, sim: &SimCoder, store: Option<&Path>) -> anyhow::Result<Client> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("stdio")
        .arg("--max-call-wait")
        .arg("0")
        .arg("--log-level")
        .arg(cli.log_level.as_deref().unwrap_or("warn"))
        .env("CODER_URL", sim.url())
        .env("CODER_SESSION_TOKEN", SimCoder::DEMO_TOKEN);
    if let Some(store) = store {
        command.arg("--store").arg(store);
    }
    let transport = TokioChildProcess::new(command).context("starting the MCP server")?;
    DemoClient {
        started: Instant::now(),
    }
    .serve(transport)
    .await
    .context("MCP initialization")
}

async fn demo(cli: &Cli, sim: &SimCoder, store: Option<&Path>) -> anyhow::Result<()> {
    let client = start_server(cli, sim, store).await?;
    if let Some(server) = client.peer_info().and_then(|info| info.server_info.clone()) {
        eprintln!("Connected: {} {}\n", server.name, server.version);
    }

    eprintln!("1) list_templates");
    let listed = call(&client, "list_templates", json!({})).await?;
    let templates = listed["templates"].as_array().cloned().unwrap_or_default();
    for t in &templates {
        eprintln!(
            "   - {} ({}), {} active users: {}",
            t["name"].as_str().unwrap_or_default(),
            t["id"].as_str().unwrap_or_default(),
            t["active_user_count"],
            t["description"].as_str().unwrap_or_default()
        );
    }
    let template = templates
        .first()
        .context("the simulated Coder has no templates")?;
    let template_id = template["id"].as_str().unwrap_or_default().to_owned();

    eprintln!("\n2) read_template {{template_id: {template_id}}}");
    let read = call(
        &client,
        "read_template",
        json!({ "template_id": template_id }),
    )
    .await?;
    let mut parameters = serde_json::Map::new();
    for p in read["parameters"].as_array().cloned().unwrap_or_default() {
        let options: Vec<&str> = p["options"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["value"].as_str()).collect())
            .unwrap_or_default();
        eprintln!(
            "   - {} ({}){}{}",
            p["name"].as_str().unwrap_or_default(),
            p["type"].as_str().unwrap_or_default(),
            p["default_value"]
                .as_str()
                .map(|d| format!(", default {d:?}"))
                .unwrap_or_default(),
            if options.is_empty() {
                String::new()
            } else {
                format!(", one of {options:?}")
            },
        );
        // Pick the last option where there is a choice, to show parameters at work.
        if let Some(last) = options.last() {
            parameters.insert(
                p["name"].as_str().unwrap_or_default().to_owned(),
                json!(last),
            );
        }
    }

    let arguments =
        json!({ "template_id": template_id, "name": "demo-workspace", "parameters": parameters });
    eprintln!("\n3) create_workspace {arguments}");
    let created = call(&client, "create_workspace", arguments.clone()).await?;
    eprintln!("\nResult:\n{}", serde_json::to_string_pretty(&created)?);

    eprintln!("\n4) create_workspace again, same session: idempotent");
    let again = call(&client, "create_workspace", arguments.clone()).await?;
    eprintln!(
        "   created: {}, status: {}, message: {}",
        again["created"], again["status"], again["message"]
    );
    client.cancel().await.ok();

    eprintln!(
        "\n5) the server restarted (a new process), create_workspace with the same name: the store remembers"
    );
    let client = start_server(cli, sim, store).await?;
    let restarted = call(&client, "create_workspace", arguments).await?;
    eprintln!(
        "   created: {}, status: {}, same workspace: {}",
        restarted["created"],
        restarted["status"],
        restarted["workspace_id"] == created["workspace_id"]
    );
    client.cancel().await.ok();
    Ok(())
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> anyhow::Result<Value> {
    let params = CallToolRequestParams::new(tool)
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    let result = client
        .call_tool(params)
        .await
        .with_context(|| format!("calling {tool}"))?;
    if result.is_error == Some(true) {
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        anyhow::bail!("{tool} failed: {}", text.join(" "));
    }
    result
        .structured_content
        .with_context(|| format!("{tool} returned no structured content"))
}

/// `sim`: the simulated Coder on its own, until Ctrl-C.
pub async fn run_simulator(listen: SocketAddr) -> anyhow::Result<()> {
    let sim = SimCoder::start_demo_on(listen)
        .await
        .context("starting the simulated Coder")?;
    eprintln!("Simulated Coder listening on {}", sim.url());
    eprintln!(
        "  CODER_URL={} CODER_SESSION_TOKEN={}",
        sim.url(),
        SimCoder::DEMO_TOKEN
    );
    tokio::signal::ctrl_c().await.ok();
    sim.shutdown().await;
    Ok(())
}
