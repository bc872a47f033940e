//! The `/mcp` middleware: authenticates every request, enforces the session binding and
//! limits, and hands the caller's scope (which Coder user, which conversation) to the
//! tools through the request extensions.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::auth::Caller;
use super::body::{read_body, unreadable_message};
use super::conn::Peer;
use super::sessions::Transport;
use crate::engine::TaskKey;
use crate::tools::Scope;

/// The header Coder's own agents send when they call external MCP servers: one chat,
/// one workspace, across reconnects.
pub const CHAT_ID_HEADER: &str = "x-coder-chat-id";
const MCP_SESSION_HEADER: &str = "mcp-session-id";

/// The caller's scope for a request: the conversation is the Coder chat when a chat id
/// is sent, else the MCP session, else none (a stateless request, tied to others only by
/// a requested workspace name).
pub fn scope_for(
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

/// Authenticates every `/mcp` request, enforces the session binding and limits, and
/// hands the caller's scope to the tools through the request extensions.
pub(super) async fn authenticate_mcp(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = Peer::of(request.extensions());
    let caller = match app.auth.authenticate(request.headers(), peer).await {
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
    if let Some(id) = &session_id
        && let Err(refusal) = app.registry.check(id, &caller.credential)
    {
        return refusal.into_response();
    }
    if method == Method::POST {
        // The body is read here, within --max-body and --body-read-timeout (a client
        // trickling it must not hold the connection), and looked at.
        let (parts, body) = request.into_parts();
        let bytes = match read_body(body, app.max_body, app.body_read_timeout).await {
            Ok(bytes) => bytes,
            Err(refusal) => return refusal,
        };
        if is_json(&parts.headers)
            && let Some(refusal) = unreadable_message(&bytes)
        {
            return refusal;
        }
        // An `initialize` opens a session and counts against the limits.
        if session_id.is_none() && is_initialize(&bytes) {
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
        // rmcp answers 202, which the Python SDK logs as a failed termination (it
        // expects 200 or 204; the TypeScript SDK takes any 2xx): 204 suits every SDK.
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NO_CONTENT;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    response
}

/// Whether the request says its body is JSON (else rmcp answers 415 itself).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        method: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.method.as_deref() == Some("initialize"))
}
