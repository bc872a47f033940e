//! The binary's entry point: parse the command line, set up logging, dispatch.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rmcp::ServiceExt;
use tracing_subscriber::EnvFilter;

use crate::coder::CoderClient;
use crate::coder::Identity;
use crate::coder::SessionToken;
use crate::config::{
    Cli, Command, Credentials, ServeArgs, StoreArgs, resolve_credentials, resolve_url,
};
use crate::engine::{Engine, TaskKey};
use crate::http::auth::SharedIdentity;
use crate::http::guard::{GuardConfig, LOOPBACK_HOSTS};
use crate::http::sessions::SessionLimits;
use crate::store::{Store, StoreLocation};
use crate::tools::WorkspaceServer;

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
        Some(Command::Serve(args)) => serve_http(&cli, args).await,
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

/// Opens the store, with a start-up error that says what to do when it cannot be used.
pub async fn open_store(location: StoreLocation, args: &StoreArgs) -> anyhow::Result<Store> {
    let hint = match &location {
        StoreLocation::Sqlite(_) => {
            "pass --store <another file> (or set CODER_MCP_STORE), or make this one writable"
        }
        StoreLocation::Postgres(_) => {
            "check that PostgreSQL is up and that the URL in --store (or CODER_MCP_STORE) is right"
        }
        StoreLocation::Memory => "",
    };
    let store = Store::open(&location, args.options()).await.map_err(|e| {
        anyhow::anyhow!(
            "{e}. The store keeps which workspace belongs to which task, so that calling create_workspace again never makes a second one; {hint}."
        )
    })?;
    tracing::info!(store = %store.describe(), "store open");
    Ok(store)
}

/// The conversation of a stdio server: `--stdio-session` when given (it outlives the
/// process), else the process itself. (Not the launching client process: one agent
/// framework often runs many servers, one per task, and they must not share a workspace.)
fn stdio_key(args: &StoreArgs) -> TaskKey {
    match args
        .stdio_session
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        Some(key) => TaskKey::Stdio(format!("named:{key}")),
        None => TaskKey::Stdio(format!("process:{}", uuid::Uuid::new_v4())),
    }
}

async fn serve_stdio(cli: &Cli) -> anyhow::Result<()> {
    // Every setting is checked before anything is contacted.
    let location = cli.store.location().map_err(anyhow::Error::msg)?;
    let credentials = resolve_credentials(&cli.coder).map_err(anyhow::Error::msg)?;
    let identity = Arc::new(connect(credentials).await?);
    let store = open_store(location, &cli.store).await?;
    let engine = Arc::new(Engine::new(cli.timing.engine_config(), store));
    let key = stdio_key(&cli.store);
    tracing::debug!(key = %key.store_key(), "stdio conversation");
    let user = identity.user.id;
    let server = WorkspaceServer::new(engine.clone(), identity, key.clone());
    tracing::info!("serving MCP on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialization failed: {e}"))?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "MCP session ended");
    // A process's own conversation ends with it (a named one is kept for next time).
    if matches!(&key, TaskKey::Stdio(id) if id.starts_with("process:")) {
        engine.forget(user, &key).await;
    }
    Ok(())
}

async fn serve_http(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    // Without --shared-identity the static bearer would be ignored: a deployment that
    // believes it is protected by it would in fact take any valid Coder token.
    if args.auth_token.is_some() && !args.shared_identity {
        anyhow::bail!(
            "--auth-token (or CODER_MCP_AUTH_TOKEN) only applies with --shared-identity; \
             add --shared-identity for a single shared Coder identity, or drop the token \
             to have each client send its own Coder token"
        );
    }
    let location = cli.store.location().map_err(anyhow::Error::msg)?;
    let store = open_store(location, &cli.store).await?;
    let engine = Arc::new(Engine::new(cli.timing.engine_config(), store));
    let shared = if args.shared_identity {
        let credentials = resolve_credentials(&cli.coder).map_err(anyhow::Error::msg)?;
        let identity = Arc::new(connect(credentials).await?);
        let bearer = args
            .auth_token
            .clone()
            .unwrap_or_else(|| SessionToken::new(""));
        if bearer.is_empty() {
            anyhow::bail!(
                "--shared-identity needs a non-empty --auth-token (or CODER_MCP_AUTH_TOKEN)"
            );
        }
        tracing::warn!(user = %identity.user.username, "shared identity: every client presenting --auth-token acts as this Coder user");
        Some(SharedIdentity { bearer, identity })
    } else {
        if cli.coder.token.is_some() {
            tracing::warn!(
                "ignoring --token/CODER_SESSION_TOKEN: in serve mode each client sends its own Coder token (use --shared-identity with --auth-token for a single shared identity)"
            );
        }
        None
    };
    let (url, source) = resolve_url(&cli.coder).map_err(anyhow::Error::msg)?;
    let coder = CoderClient::new(&url, SessionToken::new(""))
        .map_err(|e| anyhow::anyhow!("invalid Coder URL from {source}: {e}"))?;
    let info = coder.build_info().await.map_err(|e| {
        anyhow::anyhow!("cannot use Coder at {} (from {source}): {e}. Check the URL and that the deployment is up.", coder.base_url())
    })?;
    tracing::info!(url = %coder.base_url(), version = %info.version, "Coder reachable");
    let mut allowed_hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
    allowed_hosts.extend(args.allowed_hosts.iter().map(|h| h.trim().to_owned()));
    if !args.listen.ip().is_loopback() && args.allowed_hosts.is_empty() {
        tracing::warn!(
            "no --allowed-host given: only loopback Host headers are accepted, so remote clients will get 403"
        );
    }
    let options = crate::http::HttpOptions {
        listen: args.listen,
        guard: GuardConfig {
            allowed_hosts,
            allowed_origins: args.allowed_origins.clone(),
            max_body: args.max_body,
        },
        session_idle_timeout: args.session_idle_timeout,
        ready_cache: args.ready_cache,
        limits: SessionLimits {
            total: args.max_sessions,
            per_credential: args.max_sessions_per_token,
        },
        shutdown_grace: args.shutdown_grace,
        shared,
    };
    crate::http::serve(options, coder, engine).await
}
