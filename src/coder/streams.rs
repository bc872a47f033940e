//! Coder's streaming endpoints: the workspace watch (WebSocket `watch-ws`, the older
//! SSE `watch`, polling as the last resort) and the followed build log.
//!
//! Each runs in its own task and hands results over a channel, so a consumer can
//! `select!` on it next to timers and cancellation without ever tearing down a
//! half-read WebSocket frame. Streams are opened through a [`WatchHub`], which runs one
//! per workspace (and per build log) for however many calls and tasks wait on it, and
//! stops it when the last of them lets go.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use uuid::Uuid;

use super::client::{CoderClient, SESSION_TOKEN_HEADER, api_error};
use super::error::CoderError;
use super::types::{ProvisionerJobLog, Response, ServerSentEvent, ServerSentEventType, Workspace};

/// How long opening a stream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Which stream a workspace is being watched on (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchSource {
    WebSocket,
    Sse,
}

/// Timings of the watch; the defaults match Coder's own clients.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Interval of `GET /workspaces/{id}` while no stream is available (Coder's tool polls every 2 s).
    pub poll_interval: Duration,
    /// How often to try to get a stream back while polling.
    pub stream_retry: Duration,
    /// A stream silent for this long (not even a ping) is considered dead.
    pub stream_idle_timeout: Duration,
    /// Never open a stream; poll only, like Coder's own tool. The baseline of the
    /// benchmarks (`--watch-mode polling`), not meant for production.
    pub polling_only: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            stream_retry: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(90),
            polling_only: false,
        }
    }
}

/// What a workspace watch publishes: the latest snapshot (none yet at first), or the
/// error that ended the watch.
type Latest = Option<Result<Arc<Workspace>, CoderError>>;

/// What a holder of a workspace watch reads: its snapshots and its outages.
type WatchReceivers = (watch::Receiver<Latest>, watch::Receiver<Option<Instant>>);

/// Workspace snapshots as they change, from the watch of the workspace that every
/// holder shares; dropping the last holder stops the watching task.
pub struct WorkspaceWatch {
    latest: watch::Receiver<Latest>,
    /// Since when Coder has not answered the watch (no stream, failing polls), if it has not.
    outage: watch::Receiver<Option<Instant>>,
    _running: Arc<Running>,
}

impl WorkspaceWatch {
    /// Whether Coder is answering the watch, followed on its own (so a caller can wait
    /// on it and on [`Self::next`] at once).
    pub fn outages(&self) -> Outages {
        Outages(self.outage.clone())
    }

    /// The next snapshot; the first is the latest one (the workspace as it is now).
    /// Snapshots that came and went while the holder was busy are skipped: only the
    /// latest state matters to a wait. `Err` is final (the workspace is gone, or the
    /// token was rejected).
    pub async fn next(&mut self) -> Result<Workspace, CoderError> {
        loop {
            if self.latest.changed().await.is_err() {
                return Err(CoderError::Decode {
                    what: "the workspace watch".into(),
                    reason: "the watch stopped unexpectedly".into(),
                });
            }
            match &*self.latest.borrow_and_update() {
                Some(Ok(ws)) => return Ok(Workspace::clone(ws)),
                Some(Err(err)) => return Err(err.clone()),
                None => {}
            }
        }
    }
}

/// Since when Coder has not answered a [`WorkspaceWatch`], as it changes.
pub struct Outages(watch::Receiver<Option<Instant>>);

impl Outages {
    /// Since when Coder has not been answering, if it has not (the watch keeps trying).
    pub fn current(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    /// Resolves when Coder stops or starts answering again.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            // The watching task ended: nothing will change any more.
            std::future::pending::<()>().await;
        }
    }
}

struct Watcher {
    client: CoderClient,
    workspace: Uuid,
    config: WatchConfig,
    /// Under the [`WatchHub`], whose entry keeps a receiver, this never closes: the hub
    /// aborts the watcher with its last holder. The exits on a closed channel are the
    /// watcher's own guarantee that it stops when nobody can read it.
    tx: watch::Sender<Latest>,
    outage: watch::Sender<Option<Instant>>,
}

enum Opened {
    Stream(Stream),
    /// Neither stream endpoint is served (an old Coder, or a proxy that blocks them), or
    /// Coder does not answer at all (`unreachable`: unreachable, or failing with 5xx).
    Unavailable {
        why: String,
        unreachable: bool,
    },
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type SseStream = sse_stream::SseStream<
    sse_stream::ByteStreamBody<
        futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
        bytes::Bytes,
    >,
>;

enum Stream {
    WebSocket(Box<WsStream>),
    Sse(Box<SseStream>),
}

/// What one stream message meant.
enum Event {
    Workspace(Box<Workspace>),
    KeepAlive,
    Error(Response),
}

impl Watcher {
    /// Coder answered (a snapshot, an open stream): any outage is over.
    fn reached(&self) {
        self.outage
            .send_if_modified(|outage| outage.take().is_some());
    }

    /// Coder did not answer (`err`): an outage starts, unless one is under way.
    fn unreached(&self, err: &dyn std::fmt::Display) {
        self.outage.send_if_modified(|outage| {
            if outage.is_some() {
                return false;
            }
            tracing::warn!(workspace = %self.workspace, error = %err, "Coder is not answering the watch; retrying");
            *outage = Some(Instant::now());
            true
        });
    }

    async fn run(self) {
        if let Err(err) = self.watch().await {
            let _ = self.tx.send(Some(Err(err)));
        }
    }

    /// Forwards snapshots until the receiver goes away or a final error happens.
    async fn watch(&self) -> Result<(), CoderError> {
        let mut next_stream_attempt = Instant::now();
        let mut next_poll = Instant::now();
        // Streams that died soon after opening, in a row: a stream that a proxy accepts
        // and drops at once must not be reopened in a tight loop.
        let mut quick_drops = 0u32;
        loop {
            if !self.config.polling_only && Instant::now() >= next_stream_attempt {
                match self.open().await? {
                    Opened::Stream(stream) => {
                        let kind = match stream {
                            Stream::WebSocket(_) => WatchSource::WebSocket,
                            Stream::Sse(_) => WatchSource::Sse,
                        };
                        tracing::debug!(workspace = %self.workspace, source = ?kind, "watching workspace");
                        self.reached();
                        let opened = Instant::now();
                        if !self.forward(stream).await? {
                            return Ok(());
                        }
                        if opened.elapsed() >= self.config.stream_retry {
                            quick_drops = 0;
                        } else {
                            quick_drops += 1;
                        }
                        if quick_drops <= 1 {
                            // Reconnect at once; the new stream starts with the current state.
                            tracing::info!(workspace = %self.workspace, "workspace watch stream dropped; reconnecting");
                            next_stream_attempt = Instant::now();
                            next_poll = Instant::now();
                            continue;
                        }
                        tracing::info!(workspace = %self.workspace, "workspace watch stream keeps dropping; polling for a while");
                        next_stream_attempt = Instant::now() + self.config.stream_retry;
                        next_poll = Instant::now();
                    }
                    Opened::Unavailable { why, unreachable } => {
                        if unreachable {
                            self.unreached(&why);
                        }
                        tracing::info!(workspace = %self.workspace, reason = %why, "no workspace watch stream; polling every {:?}", self.config.poll_interval);
                        next_stream_attempt = Instant::now() + self.config.stream_retry;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_poll) => {}
                _ = self.tx.closed() => return Ok(()),
            }
            next_poll = Instant::now() + self.config.poll_interval;
            match self.client.workspace(self.workspace).await {
                Ok(ws) => {
                    self.reached();
                    if self.tx.send(Some(Ok(Arc::new(ws)))).is_err() {
                        return Ok(());
                    }
                }
                Err(err) if err.is_transient() => {
                    self.unreached(&err);
                    tracing::warn!(workspace = %self.workspace, error = %err, "polling the workspace failed; will retry");
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends the stream's snapshots on; `Ok(false)` when the receiver went away,
    /// `Ok(true)` when the stream ended and should be replaced.
    async fn forward(&self, mut stream: Stream) -> Result<bool, CoderError> {
        loop {
            let event = tokio::select! {
                event = tokio::time::timeout(self.config.stream_idle_timeout, next_event(&mut stream)) => event,
                _ = self.tx.closed() => return Ok(false),
            };
            match event {
                Ok(Some(Event::Workspace(ws))) => {
                    self.reached();
                    if self.tx.send(Some(Ok(Arc::from(ws)))).is_err() {
                        return Ok(false);
                    }
                }
                Ok(Some(Event::KeepAlive)) => {}
                Ok(Some(Event::Error(response))) => {
                    tracing::warn!(workspace = %self.workspace, message = %response.message, "watch stream reported an error");
                    return Ok(true);
                }
                Ok(None) => return Ok(true),
                Err(_idle) => {
                    tracing::warn!(workspace = %self.workspace, "watch stream went silent");
                    return Ok(true);
                }
            }
        }
    }

    /// Opens `watch-ws`, else the SSE `watch`. A workspace that is gone is a final error.
    async fn open(&self) -> Result<Opened, CoderError> {
        let ws_refusal = match self.open_websocket().await {
            Ok(stream) => return Ok(Opened::Stream(stream)),
            Err(err) => err,
        };
        let sse_refusal = match self.open_sse().await {
            Ok(stream) => return Ok(Opened::Stream(stream)),
            Err(err) => err,
        };
        // A 404/410 on the stream may mean the workspace is gone, or only that the
        // endpoint is not served; a final error only in the first case.
        if (ws_refusal.is_not_found() || sse_refusal.is_not_found())
            && let Err(err) = self.client.workspace(self.workspace).await
            && err.is_not_found()
        {
            return Err(err);
        }
        if matches!(ws_refusal.status(), Some(401)) {
            return Err(ws_refusal);
        }
        Ok(Opened::Unavailable {
            why: format!("watch-ws: {ws_refusal}; watch: {sse_refusal}"),
            unreachable: ws_refusal.is_transient() && sse_refusal.is_transient(),
        })
    }

    async fn open_websocket(&self) -> Result<Stream, CoderError> {
        let path = format!("/workspaces/{}/watch-ws", self.workspace);
        let stream = connect_websocket(&self.client, &path).await?;
        Ok(Stream::WebSocket(Box::new(stream)))
    }

    async fn open_sse(&self) -> Result<Stream, CoderError> {
        let path = format!("/workspaces/{}/watch", self.workspace);
        let request = self
            .client
            .http()
            .get(self.client.api_url(&path))
            .header(SESSION_TOKEN_HEADER, self.client.token().expose())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send();
        // A proxy that buffers the event stream never sends the headers: give up and poll.
        let response = match tokio::time::timeout(CONNECT_TIMEOUT, request).await {
            Ok(response) => response.map_err(|e| self.client.network_error(e))?,
            Err(_) => {
                return Err(CoderError::Network {
                    url: self.client.base_url().to_owned(),
                    reason: format!("{path}: no answer within {CONNECT_TIMEOUT:?}"),
                });
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &body));
        }
        let bytes = response.bytes_stream().boxed();
        Ok(Stream::Sse(Box::new(
            sse_stream::SseStream::from_bytes_stream(bytes),
        )))
    }
}

async fn next_event(stream: &mut Stream) -> Option<Event> {
    match stream {
        Stream::WebSocket(ws) => loop {
            match ws.next().await? {
                Ok(Message::Text(text)) => return Some(parse_ws_event(text.as_str())),
                Ok(Message::Binary(bytes)) => {
                    return Some(parse_ws_event(&String::from_utf8_lossy(&bytes)));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => return Some(Event::KeepAlive),
                Ok(Message::Close(_)) => return None,
                Ok(Message::Frame(_)) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "watch-ws read failed");
                    return None;
                }
            }
        },
        Stream::Sse(sse) => {
            let event = match sse.next().await? {
                Ok(event) => event,
                Err(err) => {
                    tracing::debug!(error = %err, "SSE watch read failed");
                    return None;
                }
            };
            let data = event.data.unwrap_or_default();
            Some(match event.event.as_deref() {
                Some("data") => match serde_json::from_str::<Workspace>(&data) {
                    Ok(ws) => Event::Workspace(Box::new(ws)),
                    Err(_) => Event::KeepAlive,
                },
                Some("error") => Event::Error(serde_json::from_str(&data).unwrap_or_default()),
                _ => Event::KeepAlive,
            })
        }
    }
}

fn parse_ws_event(text: &str) -> Event {
    let Ok(event) = serde_json::from_str::<ServerSentEvent>(text) else {
        return Event::KeepAlive;
    };
    match event.kind {
        ServerSentEventType::Data => match serde_json::from_value::<Workspace>(event.data) {
            Ok(ws) => Event::Workspace(Box::new(ws)),
            Err(err) => {
                tracing::warn!(error = %err, "could not parse a workspace from watch-ws");
                Event::KeepAlive
            }
        },
        ServerSentEventType::Error => {
            Event::Error(serde_json::from_value(event.data).unwrap_or_default())
        }
        _ => Event::KeepAlive,
    }
}

/// Opens a WebSocket on a Coder API path, authenticated with the session token.
///
/// Boxed: the handshake's future (about 10 KiB) would otherwise be part of the state of
/// every stream task for as long as it runs, and one runs per waited-on workspace.
fn connect_websocket<'a>(
    client: &'a CoderClient,
    path: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = Result<WsStream, CoderError>> + Send + 'a>> {
    Box::pin(handshake(client, path))
}

async fn handshake(client: &CoderClient, path: &str) -> Result<WsStream, CoderError> {
    let url = client.api_url(path);
    let ws_url = match url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", url.trim_start_matches("http://")),
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| CoderError::Decode {
            what: path.to_owned(),
            reason: e.to_string(),
        })?;
    let token =
        http::HeaderValue::from_str(client.token().expose()).map_err(|_| CoderError::Decode {
            what: "the session token".into(),
            reason: "it contains characters that cannot be sent in a header".into(),
        })?;
    request.headers_mut().insert(SESSION_TOKEN_HEADER, token);
    // tungstenite allocates its read buffer up front (128 KiB by default); these streams
    // carry a few small JSON messages, and one waiting call holds two of them.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((stream, _))) => Ok(stream),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().clone().unwrap_or_default();
            Err(api_error(status, &body))
        }
        Ok(Err(err)) => Err(CoderError::Network {
            url: client.base_url().to_owned(),
            reason: format!("WebSocket {path}: {err}"),
        }),
        Err(_) => Err(CoderError::Network {
            url: client.base_url().to_owned(),
            reason: format!("WebSocket {path}: timed out"),
        }),
    }
}

/// The latest line of a followed build log.
#[derive(Debug, Clone, Default)]
pub struct BuildLogStatus {
    pub stage: String,
    pub output: String,
    pub lines: u64,
}

/// Follows `GET /workspacebuilds/{id}/logs?follow=true` (a WebSocket Coder closes when
/// the job completes) and publishes the latest stage, for every holder of the build's
/// log at once; dropping the last holder stops it. Best effort: build progress never
/// depends on it, so failures only cost the stage names in progress messages.
pub struct BuildLogFollower {
    latest: watch::Receiver<BuildLogStatus>,
    _running: Arc<Running>,
}

impl BuildLogFollower {
    pub fn latest(&self) -> BuildLogStatus {
        self.latest.borrow().clone()
    }

    /// Resolves when the build enters a new stage (never, once the log has ended).
    pub async fn stage_changed(&mut self) {
        if self.latest.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Follows the build log, publishing its stages to `tx`.
async fn follow_build_log(client: CoderClient, build: Uuid, tx: watch::Sender<BuildLogStatus>) {
    let path = format!("/workspacebuilds/{build}/logs?follow=true&after=0");
    let mut stream = match connect_websocket(&client, &path).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(%build, error = %err, "cannot follow the build log");
            return;
        }
    };
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        if let Ok(log) = serde_json::from_str::<ProvisionerJobLog>(&text) {
            // Wake readers on a new stage only, not on every terraform line.
            tx.send_if_modified(|status| {
                let new_stage = !log.stage.is_empty() && log.stage != status.stage;
                if new_stage {
                    status.stage = log.stage;
                }
                status.output = log.output;
                status.lines += 1;
                new_stage
            });
        }
    }
    let _ = stream.close(None).await;
}

/// The streams of this process, one per workspace (and per build log) and user, shared
/// by every call and task that waits on it: however many of them look at a workspace,
/// Coder sees one watch and one build-log stream, and this process holds one of each.
/// Keyed by user too, as a stream is opened with its user's token.
#[derive(Default)]
pub struct WatchHub {
    workspaces: Shared<(Uuid, Uuid), WatchReceivers>,
    build_logs: Shared<(Uuid, Uuid), watch::Receiver<BuildLogStatus>>,
}

impl WatchHub {
    /// Watches `workspace` for `user` (with `client`, that user's, if no watch of it runs
    /// yet). The first snapshot is the workspace as it is now.
    pub fn workspace(
        &self,
        user: Uuid,
        client: &CoderClient,
        workspace: Uuid,
        config: &WatchConfig,
    ) -> WorkspaceWatch {
        let ((latest, outage), running) = self.workspaces.get_or_start((user, workspace), || {
            let (tx, latest) = watch::channel(None);
            let (outage_tx, outage) = watch::channel(None);
            let watcher = Watcher {
                // Not limited by the time of the call that happens to start it: the
                // watch serves every later waiter too.
                client: client.within(None),
                workspace,
                config: config.clone(),
                tx,
                outage: outage_tx,
            };
            ((latest, outage), tokio::spawn(watcher.run()))
        });
        let mut latest = latest;
        // The latest snapshot is news to a new holder.
        latest.mark_changed();
        WorkspaceWatch {
            latest,
            outage,
            _running: running,
        }
    }

    /// Follows the log of `build` for `user`.
    pub fn build_log(&self, user: Uuid, client: &CoderClient, build: Uuid) -> BuildLogFollower {
        let (latest, running) = self.build_logs.get_or_start((user, build), || {
            let (tx, latest) = watch::channel(BuildLogStatus::default());
            let task = tokio::spawn(follow_build_log(client.within(None), build, tx));
            (latest, task)
        });
        BuildLogFollower {
            latest,
            _running: running,
        }
    }

    /// How many streams run (for tests).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.workspaces.len() + self.build_logs.len()
    }
}

/// A running stream task: aborted, and forgotten by its [`Shared`] map, when the last of
/// its holders drops it.
struct Running {
    task: tokio::task::JoinHandle<()>,
    forget: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(forget) = self.forget.lock().take() {
            forget();
        }
    }
}

/// Running tasks by key, each with the receivers its holders get (`V`).
struct Shared<K, V> {
    entries: Arc<Mutex<Entries<K, V>>>,
}

struct Entries<K, V> {
    serial: u64,
    map: HashMap<K, Entry<V>>,
}

struct Entry<V> {
    /// Tells this entry from a later one of the same key.
    serial: u64,
    /// Weak: the holders keep the task running, not the map.
    running: Weak<Running>,
    receivers: V,
}

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Shared {
            entries: Arc::new(Mutex::new(Entries {
                serial: 0,
                map: HashMap::new(),
            })),
        }
    }
}

impl<K, V> Shared<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// The running task of `key` (started with `start` if there is none, or if it has
    /// ended: a watch that ended with an error is not handed to a later waiter).
    fn get_or_start(
        &self,
        key: K,
        start: impl FnOnce() -> (V, tokio::task::JoinHandle<()>),
    ) -> (V, Arc<Running>) {
        // Declared before the lock is taken, so dropped after it is released: dropping
        // the last holder takes the lock (to forget the entry).
        let mut ended: Option<Arc<Running>> = None;
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.map.get(&key)
            && let Some(running) = entry.running.upgrade()
        {
            if !running.task.is_finished() {
                return (entry.receivers.clone(), running);
            }
            ended = Some(running);
        }
        let (receivers, task) = start();
        entries.serial += 1;
        let serial = entries.serial;
        let map = Arc::downgrade(&self.entries);
        let forgotten = key.clone();
        let forget = move || {
            if let Some(entries) = map.upgrade() {
                let mut entries = entries.lock();
                if entries
                    .map
                    .get(&forgotten)
                    .is_some_and(|entry| entry.serial == serial)
                {
                    entries.map.remove(&forgotten);
                }
            }
        };
        let running = Arc::new(Running {
            task,
            forget: Mutex::new(Some(Box::new(forget))),
        });
        entries.map.insert(
            key,
            Entry {
                serial,
                running: Arc::downgrade(&running),
                receivers: receivers.clone(),
            },
        );
        drop(entries);
        drop(ended);
        (receivers, running)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::SessionToken;

    #[tokio::test]
    async fn one_watch_per_workspace_and_user_until_its_last_holder_lets_go() {
        // Nothing answers there; the watching tasks do not get to run before the end.
        let client = CoderClient::new("http://127.0.0.1:9", SessionToken::new("t")).unwrap();
        let config = WatchConfig::default();
        let hub = WatchHub::default();
        let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());
        let first = hub.workspace(user, &client, workspace, &config);
        let second = hub.workspace(user, &client, workspace, &config);
        assert!(Arc::ptr_eq(&first._running, &second._running));
        let log = hub.build_log(user, &client, workspace);
        let same_log = hub.build_log(user, &client, workspace);
        assert!(Arc::ptr_eq(&log._running, &same_log._running));
        // Another user's token watches on its own.
        let others = hub.workspace(Uuid::new_v4(), &client, workspace, &config);
        assert!(!Arc::ptr_eq(&first._running, &others._running));
        assert_eq!(hub.running(), 3);
        drop(first);
        assert_eq!(hub.running(), 3, "still held");
        drop(second);
        drop((log, same_log));
        assert_eq!(hub.running(), 1, "stopped with their last holders");
        drop(others);
        assert_eq!(hub.running(), 0);
    }
}
