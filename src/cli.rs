//! The binary's entry point: parse the command line, set up logging, dispatch.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rmcp::ServiceExt;
use tracing_subscriber::EnvFilter;

use crate::coder::CoderClient;
use crate::config::{Cli, Command, Credentials, resolve_credentials};
use crate::engine::{Engine, MemorySessionStore, SessionKey};
use crate::tools::{Identity, WorkspaceServer};

/// Runs the program; the exit code is non-zero on any failure.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo talks to its own server: keep its output to the story, not the plumbing.
    let default_level = match cli.command {
        Some(Command::Demo) => "warn",
        _ => "info",
    };
    init_logging(cli.log_level.as_deref(), default_level);
    let outcome = match &cli.command {
        None | Some(Command::Stdio) => serve_stdio(&cli).await,
        Some(Command::Demo) => crate::demo::run(&cli).await,
        Some(Command::Sim { listen }) => crate::demo::run_simulator(*listen).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coder-workspace-mcp: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Libraries that log request headers (and so the session token) at debug or trace
/// level; they are capped at `info` whatever the requested level.
const HEADER_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
];

/// Logs go to stderr: in stdio mode stdout carries the protocol.
fn init_logging(level: Option<&str>, default_level: &str) {
    let mut filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(default_level)),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    for target in HEADER_LOGGING_CRATES {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Checks the credentials against Coder once (`GET /users/me`), with a message that
/// says what to fix when they do not work.
pub async fn connect(credentials: Credentials) -> anyhow::Result<Identity> {
    let client = CoderClient::new(&credentials.url, credentials.token)
        .map_err(|e| anyhow::anyhow!("invalid Coder URL from {}: {e}", credentials.url_source))?;
    match client.me().await {
        Ok(user) => {
            tracing::info!(url = %client.base_url(), user = %user.username, "connected to Coder");
            Ok(Identity { client, user })
        }
        Err(err) if matches!(err.status(), Some(401 | 403)) => Err(anyhow::anyhow!(
            "Coder at {} rejected the session token from {} ({err}). Create a new token with `coder tokens create`, or run `coder login`.",
            client.base_url(),
            credentials.token_source
        )),
        Err(err) => Err(anyhow::anyhow!(
            "cannot use Coder at {} (from {}): {err}. Check the URL and that the deployment is up.",
            client.base_url(),
            credentials.url_source
        )),
    }
}

async fn serve_stdio(cli: &Cli) -> anyhow::Result<()> {
    let credentials = resolve_credentials(&cli.coder).map_err(anyhow::Error::msg)?;
    let identity = Arc::new(connect(credentials).await?);
    let engine = Arc::new(Engine::new(
        cli.timing.engine_config(),
        Arc::new(MemorySessionStore::default()),
    ));
    // A stdio process is one MCP session.
    let session = SessionKey::new(identity.user.id, "stdio");
    let server = WorkspaceServer::new(engine, identity, session);
    tracing::info!("serving MCP on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialization failed: {e}"))?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}
