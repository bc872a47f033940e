//! `serve`: the same tools over HTTP, for hosted agents. Streamable HTTP at `/mcp`
//! (rmcp's server), legacy HTTP+SSE at `/sse` + `/messages`, health at `/healthz`
//! and `/readyz`.
//!
//! Every MCP request is authenticated with the caller's own Coder token and bound to
//! the session it opened; `Host` and `Origin` are checked against allow-lists; bodies
//! are limited; idle sessions expire; SIGTERM/SIGINT drain in-flight calls.

pub mod auth;
pub mod guard;
pub mod health;
pub mod legacy_sse;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::coder::CoderClient;
use crate::engine::{Engine, TaskKey};
use crate::tools::{CallTracker, InFlight, Scope, WorkspaceServer};
use auth::{Authenticator, Caller, SharedIdentity};
use guard::GuardConfig;
use legacy_sse::LegacySessions;
use sessions::{SessionLimits, SessionRegistry, Transport};

/// The header Coder's own agents send when they call external MCP servers: one chat,
/// one workspace, across reconnects.
pub const CHAT_ID_HEADER: &str = "x-coder-chat-id";
const MCP_SESSION_HEADER: &str = "mcp-session-id";

/// Everything `serve` needs, from the command line.
pub struct HttpOptions {
    pub listen: SocketAddr,
    pub guard: GuardConfig,
    pub session_idle_timeout: Duration,
    /// How long a `/readyz` answer is reused.
    pub ready_cache: Duration,
    pub limits: SessionLimits,
    pub shutdown_grace: Duration,
    pub shared: Option<SharedIdentity>,
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
    /// Ends every session and stream (after the calls are done or cancelled).
    pub transport_shutdown: CancellationToken,
    pub readiness: health::Readiness,
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

pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Reads a whole request body, or answers 413 when it grows past `limit` (the guard
/// only sees a declared `Content-Length`; a chunked body is caught here).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over the limit of {limit} bytes (see --max-body)"),
        )
    })
}

/// The caller's scope for a request: the conversation is the Coder chat when a chat id
/// is sent, else the MCP session, else none (a stateless request, tied to others only by
/// a requested workspace name).
pub(crate) fn scope_for(
    caller: &Caller,
    headers: &HeaderMap,
    session: Option<(Transport, &str)>,
) -> Scope {
    let chat = headers
        .get(CHAT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let key = match (chat, session) {
        (Some(chat), _) => Some(TaskKey::Chat(chat.to_owned())),
        (None, Some((transport, id))) => Some(TaskKey::Session {
            transport: transport.key_prefix(),
            id: id.to_owned(),
        }),
        (None, None) => None,
    };
    Scope {
        identity: caller.identity.clone(),
        key,
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
    let app = Arc::new(App {
        auth: Authenticator::new(coder.clone(), options.shared),
        coder,
        engine: engine.clone(),
        registry: SessionRegistry::new(options.limits),
        legacy: LegacySessions::default(),
        calls: CallTracker::default(),
        responses: InFlight::default(),
        max_body: options.guard.max_body,
        transport_shutdown: shutdown.clone(),
        readiness: health::Readiness::new(options.ready_cache),
    });

    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(options.session_idle_timeout);
    let sessions = Arc::new(sessions);
    let (factory_engine, factory_calls) = (engine.clone(), app.calls.clone());
    let mcp = StreamableHttpService::new(
        move || {
            Ok(WorkspaceServer::per_request(
                factory_engine.clone(),
                factory_calls.clone(),
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
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(app.clone())
        .merge(guarded);

    tokio::spawn(sweep_sessions(
        app.clone(),
        sessions,
        options.session_idle_timeout,
    ));

    // Without TCP_NODELAY every streamed response stalls ~40 ms (Nagle + delayed ACK).
    let listener_closed = CancellationToken::new();
    let listener = NoticeClose {
        inner: listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        _closed: listener_closed.clone().drop_guard(),
    };
    tracing::info!("listening on http://{local} (Streamable HTTP at /mcp, legacy SSE at /sse)");

    let stop_accepting = CancellationToken::new();
    let drain = tokio::spawn(drain_on_signal(
        app.clone(),
        signals,
        stop_accepting.clone(),
        listener_closed,
        options.shutdown_grace,
    ));
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    tokio::select! {
        result = server => result?,
        // Connections that linger after every session was closed do not hold the exit.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {
            tracing::warn!("connections still open after shutdown; exiting anyway");
        }
    }
    drain.abort();
    tracing::info!("stopped");
    Ok(())
}

/// On SIGTERM/SIGINT: stop accepting, let tool calls finish for up to `grace`, cancel
/// the rest, then close every session.
async fn drain_on_signal(
    app: Arc<App>,
    signals: Signals,
    stop_accepting: CancellationToken,
    listener_closed: CancellationToken,
    grace: Duration,
) {
    signals.wait().await;
    let in_flight = app.calls.calls.count();
    tracing::info!(
        in_flight,
        "shutting down: no new connections; waiting up to {} for tool calls in flight",
        humantime::format_duration(grace)
    );
    stop_accepting.cancel();
    listener_closed.cancelled().await;
    tracing::info!("listening socket closed: new connections are refused");
    if tokio::time::timeout(grace, app.calls.calls.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = app.calls.calls.count(),
            "grace period over; cancelling the remaining tool calls"
        );
        app.calls.cancel_calls();
    }
    // Let the answers reach their clients before the sessions close.
    let flushed = async {
        app.calls.calls.idle().await;
        app.responses.idle().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    app.transport_shutdown.cancel();
}

/// The shutdown signals, registered up front: tokio only takes over a signal's default
/// action (exit) once a handler for it exists.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The listener, with notice of when axum lets go of it (the socket is closed, so new
/// connections are refused rather than left waiting in the accept queue).
struct NoticeClose<L> {
    inner: L,
    _closed: tokio_util::sync::DropGuard,
}

impl<L: axum::serve::Listener> axum::serve::Listener for NoticeClose<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    fn accept(&mut self) -> impl std::future::Future<Output = (Self::Io, Self::Addr)> + Send {
        self.inner.accept()
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Drops bindings of sessions rmcp has expired or closed, and expires idle legacy sessions.
async fn sweep_sessions(app: Arc<App>, sessions: Arc<LocalSessionManager>, idle: Duration) {
    let period = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut last_expiry = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let live = sessions.sessions.read().await;
        let gone: Vec<String> = app
            .registry
            .ids(Transport::StreamableHttp)
            .into_iter()
            .filter(|id| !live.contains_key(id.as_str()))
            .collect();
        drop(live);
        for id in gone {
            tracing::info!(session = %id, "session ended");
            app.end_session(&id).await;
        }
        for (id, entry) in app.registry.idle(idle) {
            if entry.transport == Transport::LegacySse {
                tracing::info!(session = %id, "legacy SSE session expired");
                app.end_session(&id).await;
            }
        }
        if last_expiry.elapsed() >= STORE_EXPIRY_PERIOD {
            last_expiry = tokio::time::Instant::now();
            if let Err(err) = app.engine.store().expire().await {
                tracing::warn!(error = %err, "could not remove expired store records");
            }
        }
    }
}

/// How often `serve` removes store records whose retention is over.
const STORE_EXPIRY_PERIOD: Duration = Duration::from_secs(3600);

/// Authenticates every `/mcp` request, enforces the session binding and limits, and
/// hands the caller's scope to the tools through the request extensions.
async fn authenticate_mcp(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let caller = match app.auth.authenticate(request.headers()).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let session_id = request
        .headers()
        .get(MCP_SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().clone();
    let mut request = request;
    let mut reservation = None;
    if let Some(id) = &session_id {
        if let Err(refusal) = app.registry.check(id, &caller.credential) {
            return refusal.into_response();
        }
    } else if method == Method::POST {
        // Look inside: an `initialize` opens a session and counts against the limits.
        let (parts, body) = request.into_parts();
        let bytes = match read_body(body, app.max_body).await {
            Ok(bytes) => bytes,
            Err(refusal) => return refusal,
        };
        if is_initialize(&bytes) {
            // The slot is taken now, not when rmcp has answered: parallel initialize
            // requests would otherwise all pass the limits before any is registered.
            match app.registry.reserve(&caller.credential) {
                Ok(slot) => reservation = Some(slot),
                Err(refusal) => return refusal.into_response(),
            }
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    let scope = scope_for(
        &caller,
        request.headers(),
        session_id
            .as_deref()
            .map(|id| (Transport::StreamableHttp, id)),
    );
    request.extensions_mut().insert(scope);
    // A POST's response streams the tool call's progress and answer: count it until
    // its body has been sent, so shutdown does not cut it off.
    let streaming = (method == Method::POST).then(|| app.responses.enter());
    let response = next.run(request).await;
    let response = match streaming {
        Some(guard) => response.map(|body| {
            Body::from_stream(futures::StreamExt::map(
                body.into_data_stream(),
                move |chunk| {
                    let _in_flight = &guard;
                    chunk
                },
            ))
        }),
        None => response,
    };
    // No session id in the answer (an error, a refusal): the reservation is dropped
    // here, which gives its slot back.
    if let Some(slot) = reservation
        && let Some(id) = response
            .headers()
            .get(MCP_SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        tracing::info!(session = %id, user = %caller.identity.user.username, "session opened");
        slot.commit(
            id.to_owned(),
            caller.identity.user.id,
            Transport::StreamableHttp,
        );
    }
    if method == Method::DELETE
        && response.status().is_success()
        && let Some(id) = &session_id
    {
        tracing::info!(session = %id, "session closed by the client");
        app.end_session(id).await;
    }
    response
}

fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        method: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.method.as_deref() == Some("initialize"))
}
