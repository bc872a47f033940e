//! The streaming endpoints: `watch-ws` (WebSocket), `watch` (SSE) and the `follow`
//! forms of the build and agent logs (WebSocket).
//!
//! Refusals (auth, 404, bad parameters) happen before the upgrade as ordinary HTTP
//! errors with a `codersdk.Response` body, as in `coderd`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::response::Response as HttpResponse;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, interval_at};
use uuid::Uuid;

use super::Inner;
use super::routes::{
    ApiError, ApiResult, Caller, json_response, owned_workspace, parse_bool, parse_uuid,
};
use super::state::Snapshot;
use coder_api::{
    ProvisionerJobLog, ServerSentEvent, ServerSentEventType, WorkspaceAgentLifecycle,
    WorkspaceAgentLog,
};

type AppState = Arc<Inner>;

/// `coderd` keeps idle streams alive at this interval.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Counts an open watch stream for [`super::SimView::open_watch_streams`].
struct StreamGuard(Arc<Inner>);

impl StreamGuard {
    fn open(inner: &Arc<Inner>) -> StreamGuard {
        inner.update_quiet(|st| st.open_watch_streams += 1);
        StreamGuard(inner.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.update_quiet(|st| {
            st.open_watch_streams = st.open_watch_streams.saturating_sub(1);
        });
    }
}

fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|rej| {
        ApiError::new(StatusCode::BAD_REQUEST, "Failed to accept websocket.")
            .detail(rej.body_text())
    })
}

/// The renderings of workspace `id` after `cursor` (and the new cursor).
fn snapshots_after(inner: &Inner, id: Uuid, cursor: usize) -> (Vec<Arc<Snapshot>>, usize) {
    inner.read(|st| {
        let history = st
            .workspace(id)
            .map(|w| w.history.as_slice())
            .unwrap_or(&[]);
        let from = cursor.min(history.len());
        (history[from..].to_vec(), history.len())
    })
}

/// Index of the current rendering: a new watcher starts with it.
fn latest_index(inner: &Inner, id: Uuid) -> usize {
    inner.read(|st| {
        st.workspace(id)
            .map_or(0, |w| w.history.len().saturating_sub(1))
    })
}

fn event_text(kind: ServerSentEventType, data: serde_json::Value) -> String {
    serde_json::to_string(&ServerSentEvent { kind, data }).unwrap_or_default()
}

// ----- GET /workspaces/{id}/watch-ws -----

pub(crate) async fn watch_ws(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    if !inner.read(|st| st.watch_ws_supported) {
        return Err(ApiError::route_not_found());
    }
    let id = parse_uuid(&id, "workspace")?;
    inner.read(|st| owned_workspace(st, id, &caller).map(|_| ()))?;
    let ws = upgrade(ws)?;
    Ok(ws.on_upgrade(move |socket| watch_ws_session(inner, id, socket)))
}

async fn watch_ws_session(inner: Arc<Inner>, id: Uuid, socket: WebSocket) {
    // Take the kill token before counting the stream: a test that saw the count go
    // up and then calls drop_watch_streams() must hit this stream.
    let kill = inner.watch_kill_token();
    let guard = StreamGuard::open(&inner);
    let (mut tx, mut rx) = socket.split();
    let mut version = inner.subscribe();
    let mut cursor = latest_index(&inner, id);
    let ping = event_text(ServerSentEventType::Ping, serde_json::Value::Null);
    if tx.send(Message::Text(ping.into())).await.is_err() {
        return;
    }
    let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        version.borrow_and_update();
        let (snaps, next) = snapshots_after(&inner, id, cursor);
        cursor = next;
        for snap in snaps {
            let text = event_text(ServerSentEventType::Data, snap.json.clone());
            if tx.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = kill.cancelled() => {
                // Uncount first, so a client that reconnects at once is never seen
                // next to its dead predecessor; returning then drops the socket
                // without a close frame: an abrupt end.
                drop(guard);
                return;
            }
            changed = version.changed() => if changed.is_err() { return },
            _ = keepalive.tick() => {
                if tx.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

// ----- GET /workspaces/{id}/watch (SSE) -----

type SseItem = Result<Bytes, std::io::Error>;

pub(crate) async fn watch_sse(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    if !inner.read(|st| st.watch_sse_supported) {
        return Err(ApiError::route_not_found());
    }
    let id = parse_uuid(&id, "workspace")?;
    inner.read(|st| owned_workspace(st, id, &caller).map(|_| ()))?;
    let (tx, rx) = mpsc::channel::<SseItem>(64);
    // Count the stream and take the kill token before answering, for the same reason
    // as in watch_ws_session.
    let kill = inner.watch_kill_token();
    let guard = StreamGuard::open(&inner);
    tokio::spawn(sse_session(inner, id, tx, kill, guard));
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = HttpResponse::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("X-Accel-Buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// One SSE frame the way `httpapi.ServerSentEventSender` writes it.
fn sse_frame(kind: ServerSentEventType, data: Option<&serde_json::Value>) -> Bytes {
    let mut out = format!("event: {}\n", kind.as_str());
    if let Some(data) = data {
        out.push_str("data: ");
        out.push_str(&serde_json::to_string(data).unwrap_or_default());
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

async fn sse_session(
    inner: Arc<Inner>,
    id: Uuid,
    tx: mpsc::Sender<SseItem>,
    kill: tokio_util::sync::CancellationToken,
    guard: StreamGuard,
) {
    let mut version = inner.subscribe();
    let mut cursor = latest_index(&inner, id);
    if tx
        .send(Ok(sse_frame(ServerSentEventType::Ping, None)))
        .await
        .is_err()
    {
        return;
    }
    let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        version.borrow_and_update();
        let (snaps, next) = snapshots_after(&inner, id, cursor);
        cursor = next;
        for snap in snaps {
            let frame = sse_frame(ServerSentEventType::Data, Some(&snap.json));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = kill.cancelled() => {
                // Uncount before cutting (see watch_ws_session). A body error makes
                // hyper drop the connection mid-stream, without the chunked
                // terminator: what a client sees when a proxy cuts it.
                drop(guard);
                let _ = tx.send(Err(std::io::Error::other("watch stream dropped"))).await;
                return;
            }
            changed = version.changed() => if changed.is_err() { return },
            _ = keepalive.tick() => {
                if tx.send(Ok(sse_frame(ServerSentEventType::Ping, None))).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ----- logs -----

/// The `before`/`after`/`follow` query parameters of the log endpoints.
struct LogQuery {
    after: i64,
    before: Option<i64>,
    follow: bool,
}

fn log_query(q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        match q.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Query param {name:?} must be an integer."),
                )
                .validation(name, "Must be an integer")
            }),
        }
    };
    Ok(LogQuery {
        after: int("after")?.unwrap_or(0),
        before: int("before")?.filter(|b| *b > 0),
        // coderd checks only that `follow` is present; an explicit false is honoured
        // here to be forgiving.
        follow: q
            .get("follow")
            .is_some_and(|v| v.is_empty() || parse_bool(v) != Some(false)),
    })
}

fn in_window(id: i64, q: &LogQuery) -> bool {
    id > q.after && q.before.is_none_or(|b| id < b)
}

pub(crate) async fn build_logs(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspacebuild")?;
    let q = log_query(&q)?;
    let logs: Vec<ProvisionerJobLog> = inner.read(|st| {
        let (_, b) = st
            .find_build(id)
            .filter(|(w, _)| w.owner_id == caller.id)
            .ok_or_else(ApiError::not_found)?;
        Ok::<_, ApiError>(
            b.logs
                .iter()
                .filter(|l| in_window(l.id, &q))
                .cloned()
                .collect(),
        )
    })?;
    if !q.follow {
        return Ok(json_response(StatusCode::OK, &logs));
    }
    let ws = upgrade(ws)?;
    Ok(ws.on_upgrade(move |socket| {
        follow_session(inner, socket, q.after, move |st, after| {
            let b = st.build(id)?;
            let new: Vec<ProvisionerJobLog> =
                b.logs.iter().filter(|l| l.id > after).cloned().collect();
            Some((new, b.job.status.is_terminal()))
        })
    }))
}

pub(crate) async fn agent_logs(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspaceagent")?;
    let q = log_query(&q)?;
    let logs: Vec<WorkspaceAgentLog> = inner.read(|st| {
        let owned = st
            .find_agent(id)
            .is_some_and(|(w, _)| w.owner_id == caller.id);
        if !owned {
            return Err(ApiError::not_found());
        }
        Ok(st
            .agent_logs
            .get(&id)
            .map(|l| l.iter().filter(|x| in_window(x.id, &q)).cloned().collect())
            .unwrap_or_default())
    })?;
    if !q.follow {
        return Ok(json_response(StatusCode::OK, &logs));
    }
    let ws = upgrade(ws)?;
    // Like codersdk, each message carries a JSON array of log lines.
    Ok(ws.on_upgrade(move |socket| {
        follow_session(inner, socket, q.after, move |st, after| {
            let (_, agent_json) = st.render_agent(id)?;
            let lifecycle: WorkspaceAgentLifecycle =
                serde_json::from_value(agent_json["lifecycle_state"].clone()).ok()?;
            let new: Vec<WorkspaceAgentLog> = st
                .agent_logs
                .get(&id)
                .map(|l| l.iter().filter(|x| x.id > after).cloned().collect())
                .unwrap_or_default();
            let batch = if new.is_empty() {
                Vec::new()
            } else {
                vec![Batch(new)]
            };
            Some((batch, !lifecycle.is_starting()))
        })
    }))
}

/// A batch of agent log lines sent as one message.
#[derive(Serialize)]
#[serde(transparent)]
struct Batch(Vec<WorkspaceAgentLog>);

/// Something with a log id, so a follow stream knows where it is.
trait LogId {
    fn last_id(&self) -> i64;
}

impl LogId for ProvisionerJobLog {
    fn last_id(&self) -> i64 {
        self.id
    }
}

impl LogId for Batch {
    fn last_id(&self) -> i64 {
        self.0.last().map_or(0, |l| l.id)
    }
}

/// Sends what `fetch` returns after the cursor, one JSON text message per item,
/// until `fetch` reports the source done; then closes normally.
async fn follow_session<T, F>(inner: Arc<Inner>, socket: WebSocket, after: i64, fetch: F)
where
    T: Serialize + LogId,
    F: Fn(&super::state::State, i64) -> Option<(Vec<T>, bool)>,
{
    let (mut tx, mut rx) = socket.split();
    let mut version = inner.subscribe();
    let shutdown = inner.shutdown_token().clone();
    let mut cursor = after;
    loop {
        version.borrow_and_update();
        let Some((items, done)) = inner.read(|st| fetch(st, cursor)) else {
            return;
        };
        for item in items {
            cursor = cursor.max(item.last_id());
            let text = serde_json::to_string(&item).unwrap_or_default();
            if tx.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if done {
            let close = CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            };
            if tx.send(Message::Close(Some(close))).await.is_ok() {
                // Let the client answer the close before the connection goes away.
                let drain = async { while let Some(Ok(_)) = rx.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            }
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = version.changed() => if changed.is_err() { return },
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
