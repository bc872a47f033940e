//! The legacy HTTP+SSE transport (protocol 2024-11-05), still used by many hosted
//! agent frameworks: `GET /sse` opens the event stream, whose first `endpoint` event
//! names the URL to POST JSON-RPC messages to (`/messages?sessionId=...`); responses
//! and notifications (progress included) come back on the stream.
//!
//! rmcp has no server for it, so this adapts the two HTTP endpoints onto rmcp's
//! generic (sink, stream) transport: the MCP implementation is the same one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, stream};
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, JsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::App;
use super::body::{error_response, read_body, unreadable_message};
use super::conn::Peer;
use super::mcp::scope_for;
use super::sessions::Transport;
use crate::tools::WorkspaceServer;

/// The open legacy sessions: where to deliver a POSTed message, and how to end the session.
#[derive(Default)]
pub struct LegacySessions {
    sessions: Mutex<HashMap<String, LegacySession>>,
}

struct LegacySession {
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
    cancel: CancellationToken,
}

impl LegacySessions {
    fn get(&self, id: &str) -> Option<(mpsc::Sender<ClientJsonRpcMessage>, CancellationToken)> {
        self.sessions
            .lock()
            .get(id)
            .map(|s| (s.to_server.clone(), s.cancel.clone()))
    }

    /// Ends a session (its event stream closes).
    pub fn close(&self, id: &str) {
        if let Some(session) = self.sessions.lock().remove(id) {
            session.cancel.cancel();
        }
    }
}

/// `GET /sse`: authenticate, open a session, stream its events.
pub async fn open(State(app): State<Arc<App>>, request: Request) -> Response {
    let peer = Peer::of(request.extensions());
    let caller = match app.auth.authenticate(request.headers(), peer).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    // Reserved under the limit check's lock, so parallel opens cannot overshoot it.
    let slot = match app.registry.reserve(&caller.credential) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(64);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(64);
    let cancel = app.transport_shutdown.child_token();
    app.legacy.sessions.lock().insert(
        id.clone(),
        LegacySession {
            to_server,
            cancel: cancel.clone(),
        },
    );
    slot.commit(id.clone(), caller.identity.user.id, Transport::LegacySse);
    tracing::info!(session = %id, user = %caller.identity.user.username, "legacy SSE session opened");

    let server =
        WorkspaceServer::per_request(app.engine.clone(), app.tasks.clone(), app.calls.clone());
    let (session_app, session_id, session_cancel) = (app.clone(), id.clone(), cancel.clone());
    tokio::spawn(async move {
        match server
            .serve_with_ct((to_client, from_client), session_cancel)
            .await
        {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(err) => {
                tracing::info!(session = %session_id, error = %err, "legacy SSE session did not initialize")
            }
        }
        session_app.end_session(&session_id).await;
        tracing::info!(session = %session_id, "legacy SSE session closed");
    });

    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/messages?sessionId={id}"));
    // Dropping the response stream (the client went away) ends the session.
    let on_disconnect = cancel.drop_guard();
    let (touch_app, touch_id) = (app.clone(), id.clone());
    let messages = from_server.map(move |message| {
        let _keep = &on_disconnect;
        // Progress of a long call counts as activity: the session is not idle.
        touch_app.registry.touch(&touch_id);
        let data = serde_json::to_string(&message).unwrap_or_default();
        Event::default().event("message").data(data)
    });
    let events = stream::once(async { endpoint })
        .chain(messages)
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
pub struct MessageQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `POST /messages?sessionId=...`: one JSON-RPC message from the client.
pub async fn post(
    State(app): State<Arc<App>>,
    Query(query): Query<MessageQuery>,
    request: Request,
) -> Response {
    let peer = Peer::of(request.extensions());
    let caller = match app.auth.authenticate(request.headers(), peer).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let Some(id) = query.session_id else {
        return error_response(StatusCode::BAD_REQUEST, "missing sessionId query parameter");
    };
    match app.registry.check(&id, &caller.credential) {
        Err(refusal) => return refusal.into_response(),
        Ok(None) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "unknown or expired session; open a new one with GET /sse",
            );
        }
        Ok(Some(_)) => {}
    }
    let Some((mut to_server, _)) = app.legacy.get(&id) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "unknown or expired session; open a new one with GET /sse",
        );
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body, app.max_body, app.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    if let Some(refusal) = unreadable_message(&bytes) {
        return refusal;
    }
    let mut message: ClientJsonRpcMessage = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("not a JSON-RPC message: {err}"),
            );
        }
    };
    // The tools read the caller from the request's HTTP parts, as over Streamable HTTP.
    let scope = scope_for(
        &caller,
        &parts.headers,
        Some((Transport::LegacySse, id.as_str())),
    );
    parts.extensions.insert(scope);
    if let JsonRpcMessage::Request(request) = &mut message {
        request.request.extensions_mut().insert(parts);
    }
    if to_server.send(message).await.is_err() {
        return error_response(
            StatusCode::GONE,
            "the session has ended; open a new one with GET /sse",
        );
    }
    StatusCode::ACCEPTED.into_response()
}
