//! `serve`: the same tools over HTTP, for hosted agents. Streamable HTTP at `/mcp`
//! (rmcp's server), legacy HTTP+SSE at `/sse` + `/messages`, health at `/healthz`
//! and `/readyz`.
//!
//! Every MCP request is authenticated with the caller's own Coder token (checked so that
//! it cannot be turned against Coder: `auth.rs`) and bound to the session it opened;
//! `Host` and `Origin` are checked against allow-lists; bodies are limited in size and
//! time; connections are capped and time out (`conn.rs`); idle and unused sessions
//! expire; SIGTERM/SIGINT drain in-flight calls.

pub mod auth;
mod body;
pub mod conn;
mod drain;
pub mod guard;
mod health;
mod legacy_sse;
mod mcp;
pub mod oauth;
pub mod sessions;
mod sweep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use axum::middleware;

use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::coder::CoderClient;
use crate::engine::{Engine, TaskKey};
use crate::shutdown::{CallTracker, InFlight};
use crate::tools::WorkspaceServer;
use crate::tools::tasks::{TaskOptions, Tasks};
use auth::{AuthLimits, Authenticator, SharedIdentity};
use conn::ConnectionLimits;
use drain::{Signals, drain_on_signal};
use guard::GuardConfig;
use legacy_sse::LegacySessions;
use mcp::authenticate_mcp;
use sessions::{SessionLimits, SessionRegistry};
use sweep::sweep_sessions;

/// Everything `serve` needs, from the command line.
pub struct HttpOptions {
    pub listen: SocketAddr,
    pub guard: GuardConfig,
    pub session_idle_timeout: Duration,
    /// Sessions opened and never used are closed after this.
    pub unused_session_timeout: Duration,
    pub connections: ConnectionLimits,
    pub body_read_timeout: Duration,
    pub auth: AuthLimits,
    pub tasks: TaskOptions,
    /// How long a `/readyz` answer is reused.
    pub ready_cache: Duration,
    pub limits: SessionLimits,
    pub shutdown_grace: Duration,
    pub shared: Option<SharedIdentity>,
    /// `serve` as the OAuth authorization server of its clients (`--public-url`).
    pub oauth: Option<oauth::OAuthConfig>,
}

/// State shared by every route.
pub struct App {
    pub coder: CoderClient,
    pub auth: Authenticator,
    pub engine: Arc<Engine>,
    pub registry: SessionRegistry,
    pub legacy: LegacySessions,
    pub calls: CallTracker,
    /// `/mcp` POST responses still streaming (a tool call's answer may still be on its way).
    pub responses: InFlight,
    pub max_body: usize,
    pub body_read_timeout: Duration,
    /// Ends every session and stream (after the calls are done or cancelled).
    pub transport_shutdown: CancellationToken,
    pub readiness: health::Readiness,
    /// create_workspace tasks (the MCP Tasks extension).
    pub tasks: Tasks,
}

impl App {
    /// Forgets a session everywhere: binding, legacy channel, its task records.
    async fn end_session(&self, id: &str) {
        self.legacy.close(id);
        if let Some(entry) = self.registry.remove(id) {
            let key = TaskKey::Session {
                transport: entry.transport.key_prefix(),
                id: id.to_owned(),
            };
            self.engine.forget(entry.user, &key).await;
        }
    }
}

/// Each waiting session holds several descriptors (its HTTP streams, the Coder watch and the
/// followed build log), so the usual soft limit of 1024 would cap a server at a few hundred
/// sessions: raise it to the hard limit, as Go's runtime does for every Go server.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "could not raise the open file limit"),
    }
}

/// Runs the HTTP server until SIGTERM/SIGINT.
pub async fn serve(
    options: HttpOptions,
    coder: CoderClient,
    engine: Arc<Engine>,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "listening on a non-loopback address: make sure a TLS-terminating proxy and --allowed-host are in place");
    }
    // Installed before anything is served (and before "listening on" is logged): from
    // then on a SIGTERM drains gracefully instead of killing the process.
    let signals = Signals::install()?;
    let shutdown = CancellationToken::new();
    let oauth = options
        .oauth
        .map(|config| oauth::OAuthServer::new(config, engine.store().clone(), coder.clone()));
    let app = Arc::new(App {
        auth: Authenticator::new(coder.clone(), options.shared, oauth.clone(), options.auth),
        coder,
        engine: engine.clone(),
        registry: SessionRegistry::new(options.limits),
        legacy: LegacySessions::default(),
        calls: CallTracker::default(),
        responses: InFlight::default(),
        max_body: options.guard.max_body,
        body_read_timeout: options.body_read_timeout,
        transport_shutdown: shutdown.clone(),
        readiness: health::Readiness::new(options.ready_cache),
        tasks: Tasks::new(engine.clone(), options.tasks, shutdown.clone()),
    });

    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(options.session_idle_timeout);
    let sessions = Arc::new(sessions);
    let factory_app = app.clone();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(WorkspaceServer::per_request(
                factory_app.engine.clone(),
                factory_app.tasks.clone(),
                factory_app.calls.clone(),
            ))
        },
        sessions.clone(),
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(Some(Duration::from_secs(15)))
            .with_cancellation_token(shutdown.child_token())
            // Host and Origin are checked by our own guard, for both transports alike.
            .disable_allowed_hosts()
            .with_max_request_body_bytes(options.guard.max_body),
    );

    let guarded = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            authenticate_mcp,
        ))
        .merge(
            Router::new()
                .route("/sse", get(legacy_sse::open))
                .route("/messages", post(legacy_sse::post))
                .route("/message", post(legacy_sse::post))
                .with_state(app.clone()),
        )
        .layer(middleware::from_fn_with_state(
            Arc::new(options.guard),
            guard::guard,
        ));
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(app.clone())
        .merge(guarded);
    // The OAuth endpoints are not behind the Host/Origin guard: they act on no ambient
    // credential, browsers reach them by navigation, and browser-based clients call
    // /token cross-origin; their bodies are limited on their own.
    if let Some(server) = oauth {
        // A Coder without its OAuth2 provider cannot sign anyone in: better to say so at
        // start than on every user's sign-in. (An unreachable Coder is asked again then.)
        match server.coder_provider().await {
            oauth::ProviderStatus::Ready => {}
            oauth::ProviderStatus::Off(why) => anyhow::bail!("--public-url: {why}"),
            oauth::ProviderStatus::Unreachable(why) => {
                tracing::warn!(%why, "could not check Coder's OAuth2 provider; sign-ins check it again");
            }
        }
        tracing::info!(issuer = %server.config().public_url, resource = %server.config().resource(), "OAuth authorization server on (sign-in through Coder)");
        router = router.merge(oauth::router(server));
    }

    tokio::spawn(sweep_sessions(
        app.clone(),
        sessions,
        options.session_idle_timeout,
        options.unused_session_timeout,
    ));

    let listener_closed = CancellationToken::new();
    tracing::info!("listening on http://{local} (Streamable HTTP at /mcp, legacy SSE at /sse)");

    let stop_accepting = CancellationToken::new();
    let drain = tokio::spawn(drain_on_signal(
        app.clone(),
        signals,
        stop_accepting.clone(),
        listener_closed.clone(),
        options.shutdown_grace,
    ));
    let server = conn::serve(
        listener,
        router,
        options.connections,
        stop_accepting,
        listener_closed,
    );
    tokio::select! {
        () = server => {}
        // Connections that linger after every session was closed do not hold the exit.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {
            tracing::warn!("connections still open after shutdown; exiting anyway");
        }
    }
    drain.abort();
    tracing::info!("stopped");
    Ok(())
}
