//! The binary's entry point: parse the command line, set up logging, dispatch.

mod args;
mod logging;

pub use args::{
    Cli, CoderArgs, Command, LogArgs, RuntimeFlavor, ServeArgs, StdioArgs, StoreArgs, TimingArgs,
    WatchMode, parse_duration,
};
#[cfg(feature = "demo")]
pub use args::{DemoArgs, SimArgs};

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rmcp::ServiceExt;

use crate::coder::CoderClient;
use crate::coder::Identity;
use crate::coder::SessionToken;
use crate::config::{Credentials, resolve_credentials, resolve_url};
use crate::engine::{Engine, TaskKey};
use crate::http::auth::{AuthLimits, SharedIdentity};
use crate::http::conn::ConnectionLimits;
use crate::http::guard::{GuardConfig, LOOPBACK_HOSTS};
use crate::http::sessions::SessionLimits;
use crate::store::{Store, StoreLocation};
use crate::tools::WorkspaceServer;
use crate::tools::tasks::Tasks;

/// Runs the program; the exit code is non-zero on any failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Stdio(Box::new(cli.stdio)));
    // A stdio server serves one client, a line at a time: on one thread, a request goes
    // from stdin to Coder and back to stdout without waking another thread (each hand-off
    // between threads costs a futex wake and a context switch, the larger part of a call's
    // own cost). `serve` has many clients and uses every core.
    let runtime = match &command {
        Command::Stdio(args) if args.runtime == RuntimeFlavor::CurrentThread => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(command)),
        Err(err) => {
            eprintln!("coder-workspace-mcp: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> ExitCode {
    // The demo talks to its own server: keep its output to the story, not the plumbing.
    #[cfg(feature = "demo")]
    let default_level = match command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    #[cfg(not(feature = "demo"))]
    let default_level = "info";
    logging::init(command.log().log_level.as_deref(), default_level);
    let outcome = match &command {
        Command::Stdio(args) => serve_stdio(args).await,
        Command::Serve(args) => serve_http(args).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::run(args).await,
        #[cfg(feature = "demo")]
        Command::Sim(args) => crate::demo::run_simulator(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coder-workspace-mcp: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the credentials against Coder once (`GET /users/me`), with a message that
/// says what to fix when they do not work.
async fn connect(credentials: Credentials) -> anyhow::Result<Identity> {
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
async fn open_store(location: StoreLocation, args: &StoreArgs) -> anyhow::Result<Store> {
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
fn stdio_key(args: &StdioArgs) -> TaskKey {
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

async fn serve_stdio(args: &StdioArgs) -> anyhow::Result<()> {
    // Every setting is checked before anything is contacted.
    let location = args.store.location().map_err(anyhow::Error::msg)?;
    let credentials =
        resolve_credentials(args.coder.coder_url.as_deref(), args.coder.token.as_ref())
            .map_err(anyhow::Error::msg)?;
    let identity = Arc::new(connect(credentials).await?);
    let store = open_store(location, &args.store).await?;
    let engine = Arc::new(Engine::new(args.timing.engine_config(), store));
    let key = stdio_key(args);
    tracing::debug!(key = %key.store_key(), "stdio conversation");
    let user = identity.user.id;
    let stop_tasks = tokio_util::sync::CancellationToken::new();
    let _stop_tasks = stop_tasks.clone().drop_guard();
    let tasks = Tasks::new(engine.clone(), args.timing.task_options(), stop_tasks);
    let server = WorkspaceServer::new(engine.clone(), tasks, identity, key.clone());
    tracing::info!("serving MCP on stdio");
    // rmcp reads and writes through the framing layer, which answers every line it
    // cannot process (see src/stdio.rs).
    let max_line = usize::try_from(args.max_line.as_u64()).unwrap_or(usize::MAX);
    // Polled by the reactor when they are pipes or sockets (see src/stdfd.rs).
    let (stdin, stdout) = crate::stdfd::stdio();
    let (transport, framing) = crate::stdio::start(stdin, stdout, max_line);
    let running = match server.serve(transport).await {
        Ok(running) => running,
        Err(e) => {
            framing.finish().await;
            anyhow::bail!("MCP initialization failed: {e}");
        }
    };
    let reason = running.waiting().await;
    framing.finish().await;
    let reason = reason?;
    tracing::info!(?reason, "MCP session ended");
    // A process's own conversation ends with it (a named one is kept for next time).
    if matches!(&key, TaskKey::Stdio(id) if id.starts_with("process:")) {
        engine.forget(user, &key).await;
    }
    Ok(())
}

/// The OAuth settings: all of them, or none (then OAuth is off).
fn oauth_config(args: &ServeArgs) -> anyhow::Result<Option<crate::http::oauth::OAuthConfig>> {
    let key = std::env::var("CODER_MCP_OAUTH_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let secret = args
        .coder_oauth_client_secret
        .clone()
        .filter(|s| !s.is_empty());
    let id = args
        .coder_oauth_client_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let given = [
        (
            "--public-url (CODER_MCP_PUBLIC_URL)",
            args.public_url.is_some(),
        ),
        (
            "--coder-oauth-client-id (CODER_MCP_OAUTH_CLIENT_ID)",
            id.is_some(),
        ),
        (
            "--coder-oauth-client-secret (CODER_MCP_OAUTH_CLIENT_SECRET)",
            secret.is_some(),
        ),
        ("CODER_MCP_OAUTH_KEY", key.is_some()),
    ];
    let (present, missing): (Vec<_>, Vec<_>) = given.iter().partition(|(_, set)| *set);
    match (args.public_url.as_deref(), id, secret, key) {
        (Some(url), Some(id), Some(secret), Some(key)) => {
            let public_url = crate::http::oauth::parse_public_url(url)
                .map_err(|e| anyhow::anyhow!("--public-url {e}"))?;
            let key = crate::http::oauth::SealKey::from_base64(&key)
                .map_err(|e| anyhow::anyhow!("CODER_MCP_OAUTH_KEY {e}"))?;
            Ok(Some(crate::http::oauth::OAuthConfig {
                public_url,
                coder_client_id: id.to_owned(),
                coder_client_secret: secret,
                key,
                registration: !args.no_client_registration,
                client_metadata_documents: !args.no_client_metadata_documents,
                allow_private_client_metadata: args.oauth_allow_private_client_metadata,
                registrations_per_hour: args.max_registrations,
                access_token_lifetime: args.oauth_access_token_lifetime,
                refresh_token_lifetime: args.oauth_refresh_token_lifetime,
            }))
        }
        _ if present.is_empty() => Ok(None),
        _ => anyhow::bail!(
            "sign-in with Coder (OAuth) needs all of --public-url, --coder-oauth-client-id, --coder-oauth-client-secret and CODER_MCP_OAUTH_KEY; given {}, missing {}",
            present
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            missing
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn serve_http(args: &ServeArgs) -> anyhow::Result<()> {
    // Every setting is checked before anything is contacted.
    // Without --shared-identity the static bearer would be ignored: a deployment that
    // believes it is protected by it would in fact take any valid Coder token.
    if args.auth_token.is_some() && !args.shared_identity {
        anyhow::bail!(
            "--auth-token (or CODER_MCP_AUTH_TOKEN) only applies with --shared-identity; \
             add --shared-identity for a single shared Coder identity, or drop the token \
             to have each client send its own Coder token"
        );
    }
    let bearer = args.auth_token.clone().filter(|t| !t.is_empty());
    if args.shared_identity && bearer.is_none() {
        anyhow::bail!(
            "--shared-identity needs the static bearer clients must present: pass --auth-token <TOKEN> or set CODER_MCP_AUTH_TOKEN"
        );
    }
    let oauth = oauth_config(args)?;
    if oauth.is_some() && args.shared_identity {
        anyhow::bail!(
            "--public-url (sign-in with Coder) and --shared-identity do not go together: with OAuth each user acts as themselves"
        );
    }
    for (flag, value) in [
        ("--header-read-timeout", args.header_read_timeout),
        ("--body-read-timeout", args.body_read_timeout),
        ("--keep-alive-timeout", args.keep_alive_timeout),
        ("--unused-session-timeout", args.unused_session_timeout),
    ] {
        if value.is_zero() {
            anyhow::bail!("{flag} must be longer than 0");
        }
    }
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    let location = args.store.location().map_err(anyhow::Error::msg)?;
    let store = open_store(location, &args.store).await?;
    let engine = Arc::new(Engine::new(args.timing.engine_config(), store));
    let shared = match bearer.filter(|_| args.shared_identity) {
        Some(bearer) => {
            let credentials =
                resolve_credentials(args.coder.coder_url.as_deref(), args.coder.token.as_ref())
                    .map_err(anyhow::Error::msg)?;
            let identity = Arc::new(connect(credentials).await?);
            tracing::warn!(user = %identity.user.username, "shared identity: every client presenting --auth-token acts as this Coder user");
            Some(SharedIdentity { bearer, identity })
        }
        None => {
            if args.coder.token.is_some() {
                tracing::warn!(
                    "ignoring --token/CODER_SESSION_TOKEN: in serve mode each client sends its own Coder token (use --shared-identity with --auth-token for a single shared identity)"
                );
            }
            None
        }
    };
    let (url, source) = resolve_url(args.coder.coder_url.as_deref()).map_err(anyhow::Error::msg)?;
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
            max_body: usize::try_from(args.max_body.as_u64()).unwrap_or(usize::MAX),
        },
        session_idle_timeout: args.session_idle_timeout,
        unused_session_timeout: args.unused_session_timeout,
        connections: ConnectionLimits {
            header_read_timeout: args.header_read_timeout,
            keep_alive_timeout: args.keep_alive_timeout,
            max_connections: args.max_connections,
            max_per_address: args.max_connections_per_address,
        },
        body_read_timeout: args.body_read_timeout,
        auth: AuthLimits {
            max_failures_per_minute: args.max_auth_failures,
            outage_hold: args.coder_outage_hold,
        },
        tasks: args.timing.task_options(),
        ready_cache: args.ready_cache,
        limits: SessionLimits {
            total: args.max_sessions,
            per_credential: args.max_sessions_per_token,
        },
        shutdown_grace: args.shutdown_grace,
        shared,
        oauth,
    };
    crate::http::serve(options, coder, engine).await
}
