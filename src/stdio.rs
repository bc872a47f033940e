//! stdio framing: every line on stdin is either handed to rmcp as a typed JSON-RPC message
//! or answered here, as JSON-RPC 2.0 says.
//!
//! rmcp 3.11's stdio transport (`AsyncRwTransport`) ignores a line that is not JSON (no
//! -32700, on purpose: its authors fear error storms with peers that echo), answers well-formed
//! JSON it cannot type with a -32600 that carries no `id` (so the client cannot tell which
//! request failed), drops a line over its 16 MiB limit with only a log line, and types a
//! known method whose params do not fit (`tools/call` with `arguments: "x"`) as a custom
//! request, which the server then refuses as -32601 (method not found). This layer reads
//! stdin itself, one bounded line at a time, checks each line, answers what it refuses, and
//! gives rmcp only messages it will type right, through an in-memory (sink, stream)
//! transport. rmcp keeps doing the rest: initialization, concurrent requests, progress,
//! cancellation.
//!
//! What is answered here:
//! - not JSON → -32700 with `id: null`;
//! - JSON that is not a JSON-RPC 2.0 message (not an object, `jsonrpc` other than `"2.0"`,
//!   a `method` or `id` of the wrong type, `params` neither object nor array, a member given
//!   twice, a string that is not Unicode, nesting over 128 levels, a batch) → -32600, with the
//!   request's `id` when it can be read (a string or a number), else `null`;
//! - a request whose params do not fit its method (params as an array, `tools/call`
//!   `arguments` that are not an object, a repeated key or bad string inside params) → -32602
//!   with the `id`;
//! - a line longer than `--max-line` → -32600 with the `id` when it is among the line's first
//!   `--max-line` bytes; the rest of the line is skipped without being kept in memory.
//!
//! Responses (messages with `result` or `error` and no `method`) are never answered, even
//! when malformed, and notifications only when they are not JSON-RPC at all: a peer that
//! echoes what it receives cannot start an error storm. Every reply and every message of
//! rmcp goes through one writer, a line at a time, so lines never interleave.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, ClientJsonRpcMessage, ClientNotification,
    ClientRequest, ConstString, InitializeRequestParams, InitializeResultMethod, JsonRpcMessage,
    ListToolsRequestMethod, ListToolsResult, PaginatedRequestParams, RequestId,
    ServerJsonRpcMessage, ServerResult,
};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

/// JSON-RPC 2.0 error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// How much of a user-supplied string (a key, a path) an error message quotes.
const QUOTE_CHARS: usize = 64;
/// How long an error message may be (serde's messages quote the offending value).
const MESSAGE_CHARS: usize = 240;
/// Messages queued towards rmcp, and lines towards stdout.
const QUEUE: usize = 64;

/// The transport rmcp serves on: what it writes, what it reads.
pub type ServerTransport = (OutSink, mpsc::Receiver<ClientJsonRpcMessage>);

/// rmcp's side of the writer: its messages, serialized into the one queue of stdout lines.
pub type OutSink = futures::sink::With<
    mpsc::Sender<Vec<u8>>,
    Vec<u8>,
    ServerJsonRpcMessage,
    futures::future::Ready<Result<Vec<u8>, OutError>>,
    fn(ServerJsonRpcMessage) -> futures::future::Ready<Result<Vec<u8>, OutError>>,
>;

/// Why rmcp's message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    #[error("stdout is closed")]
    Closed(#[from] mpsc::SendError),
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
}

fn encode(message: ServerJsonRpcMessage) -> futures::future::Ready<Result<Vec<u8>, OutError>> {
    futures::future::ready(encode_message(&message))
}

fn encode_message(message: &ServerJsonRpcMessage) -> Result<Vec<u8>, OutError> {
    if let JsonRpcMessage::Response(response) = message
        && let ServerResult::ListToolsResult(tools) = &response.result
    {
        return encode_tools_list(&response.id, tools);
    }
    Ok(serde_json::to_vec(message)?)
}

/// The last `tools/list` result and its encoding.
static TOOLS_LIST: std::sync::Mutex<Option<(ListToolsResult, Arc<[u8]>)>> =
    std::sync::Mutex::new(None);

/// A `tools/list` answer: the same ~10 KB of schemas every time, so it is encoded once and
/// reused for as long as rmcp's result is equal to the one encoded. Comparing is cheap: the
/// schemas are the tool router's own `Arc`s, which compare by pointer first.
fn encode_tools_list(id: &RequestId, tools: &ListToolsResult) -> Result<Vec<u8>, OutError> {
    let cached = TOOLS_LIST.lock().ok().and_then(|last| match last.as_ref() {
        Some((result, encoded)) if result == tools => Some(encoded.clone()),
        _ => None,
    });
    let encoded = match cached {
        Some(encoded) => encoded,
        None => {
            let encoded: Arc<[u8]> = serde_json::to_vec(tools)?.into();
            if let Ok(mut last) = TOOLS_LIST.lock() {
                *last = Some((tools.clone(), encoded.clone()));
            }
            encoded
        }
    };
    // What serde writes for a `JsonRpcResponse`: its fields in this order, no spaces.
    let id = serde_json::to_vec(id)?;
    let mut line = Vec::with_capacity(encoded.len() + id.len() + 32);
    line.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    line.extend_from_slice(&id);
    line.extend_from_slice(br#","result":"#);
    line.extend_from_slice(&encoded);
    line.push(b'}');
    Ok(line)
}

/// The reading and writing tasks of a stdio session.
pub struct Framing {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Framing {
    /// Once the MCP session is over: stop reading (a no-op after stdin's EOF), and write
    /// out every line still queued.
    pub async fn finish(self) {
        self.reader.abort();
        let _ = self.reader.await;
        let _ = self.writer.await;
    }
}

/// Starts framing `input` and `output` (stdin and stdout), with lines of at most `max_line`
/// bytes; returns the transport to serve rmcp on.
pub fn start<R, W>(input: R, output: W, max_line: usize) -> (ServerTransport, Framing)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (lines, queued) = mpsc::channel::<Vec<u8>>(QUEUE);
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(QUEUE);
    let sink: OutSink = lines.clone().with(encode as fn(_) -> _);
    let reader = tokio::spawn(read_loop(input, max_line, to_server, lines));
    let writer = tokio::spawn(write_loop(output, queued));
    ((sink, from_client), Framing { reader, writer })
}

async fn write_loop<W: AsyncWrite + Unpin>(mut output: W, mut queued: mpsc::Receiver<Vec<u8>>) {
    while let Some(mut line) = queued.next().await {
        line.push(b'\n');
        let written = async {
            output.write_all(&line).await?;
            output.flush().await
        };
        if let Err(err) = written.await {
            tracing::error!(%err, "cannot write to stdout; the session ends");
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    input: R,
    max_line: usize,
    mut to_server: mpsc::Sender<ClientJsonRpcMessage>,
    mut replies: mpsc::Sender<Vec<u8>>,
) {
    let mut lines = LineReader::new(input, max_line);
    loop {
        let verdict = match lines.next().await {
            Read::Line => classify(&lines.line),
            Read::Oversized => oversized(&lines.line, max_line),
            Read::Eof => return,
            Read::Io(err) => {
                tracing::error!(%err, "cannot read stdin; the session ends");
                return;
            }
        };
        match verdict {
            Verdict::Forward(message) => {
                if to_server.send(*message).await.is_err() {
                    return;
                }
            }
            Verdict::Reply(reply) => {
                let Ok(line) = serde_json::to_vec(&reply) else {
                    continue;
                };
                tracing::warn!(
                    reply = %shorten(&String::from_utf8_lossy(&line), 400),
                    "refused a line on stdin"
                );
                if replies.send(line).await.is_err() {
                    return;
                }
            }
            Verdict::Ignore(why) => tracing::warn!(%why, "ignored a line on stdin"),
        }
    }
}

/// Reads `\n`-terminated lines, never holding more than `max` bytes of one.
struct LineReader<R> {
    input: BufReader<R>,
    max: usize,
    /// The line read (without its `\n`), or the first `max` bytes of an oversized one.
    line: Vec<u8>,
}

enum Read {
    Line,
    Oversized,
    Eof,
    Io(std::io::Error),
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(input: R, max: usize) -> Self {
        LineReader {
            input: BufReader::with_capacity(64 << 10, input),
            max,
            line: Vec::new(),
        }
    }

    async fn next(&mut self) -> Read {
        self.line.clear();
        let mut oversized = false;
        loop {
            let available = match self.input.fill_buf().await {
                Ok(available) => available,
                Err(err) => return Read::Io(err),
            };
            if available.is_empty() {
                // EOF; a last line without its newline still counts.
                return match (oversized, self.line.is_empty()) {
                    (true, _) => Read::Oversized,
                    (false, true) => Read::Eof,
                    (false, false) => Read::Line,
                };
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let content = &available[..newline.unwrap_or(available.len())];
            let room = self.max.saturating_sub(self.line.len());
            if content.len() > room {
                oversized = true;
            }
            if !oversized || room > 0 {
                self.line
                    .extend_from_slice(&content[..content.len().min(room)]);
            }
            let consumed = newline.map_or(available.len(), |i| i + 1);
            self.input.consume(consumed);
            if newline.is_some() {
                return if oversized {
                    Read::Oversized
                } else {
                    Read::Line
                };
            }
        }
    }
}

/// What to do with one line.
#[derive(Debug)]
pub enum Verdict {
    /// A message rmcp types right.
    Forward(Box<ClientJsonRpcMessage>),
    /// Not processed: this error response goes back (a JSON-RPC error object, or an array
    /// of them for a batch).
    Reply(Reply),
    /// Not processed and not answered (a blank line, a response, a notification whose
    /// params do not fit): why, for the log.
    Ignore(String),
}

/// A JSON-RPC error response (its members in the usual order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ErrorReply {
    jsonrpc: &'static str,
    id: Value,
    error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct ErrorObject {
    code: i64,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// What goes back for a line that is not processed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Reply {
    One(ErrorReply),
    /// For a batch: one error per request in it.
    Batch(Vec<ErrorReply>),
}

/// A JSON-RPC error response, its message shortened.
pub fn error_response(id: Value, code: i64, message: impl fmt::Display) -> ErrorReply {
    ErrorReply {
        jsonrpc: "2.0",
        id,
        error: ErrorObject {
            code,
            message: shorten(&message.to_string(), MESSAGE_CHARS),
            data: None,
        },
    }
}

fn refusal(id: Value, code: i64, message: impl fmt::Display) -> Verdict {
    Verdict::Reply(Reply::One(error_response(id, code, message)))
}

/// The answer to a line over the limit: its id when the kept head shows one.
pub fn oversized(head: &[u8], max_line: usize) -> Verdict {
    let mut probe = Probe::default();
    let _ = run_probe(strip(head), &mut probe);
    let id = probe.id.reply_id();
    let mut reply = error_response(
        id,
        INVALID_REQUEST,
        format!(
            "Invalid Request: the message is longer than {} (the server's --max-line); none of it was processed",
            bytesize::ByteSize::b(max_line as u64).display().iec()
        ),
    );
    reply.error.data = Some(json!({ "max_line_bytes": max_line }));
    Verdict::Reply(Reply::One(reply))
}

/// Removes a UTF-8 byte order mark and surrounding whitespace (including a `\r` before
/// the newline).
fn strip(line: &[u8]) -> &[u8] {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    line.trim_ascii()
}

/// Decides what to do with one line (without its newline).
pub fn classify(line: &[u8]) -> Verdict {
    let line = strip(line);
    if line.is_empty() {
        return Verdict::Ignore("a blank line".into());
    }
    // 1. Is it JSON? (The grammar only: nesting depth and string contents come later, so
    // that a request whose id can be read is answered with it.)
    if let Err(err) = serde_json::from_slice::<IgnoredAny>(line) {
        return refusal(Value::Null, PARSE_ERROR, format!("Parse error: {err}"));
    }
    // 2. What can be read leniently: the shape, the id, the top-level members.
    let mut probe = Probe::default();
    let _ = run_probe(line, &mut probe);
    match probe.kind {
        Some(Kind::Object) => {}
        Some(Kind::Array) => return Verdict::Reply(batch_reply(&probe)),
        _ => {
            return refusal(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message is a JSON object",
            );
        }
    }
    let is_response = !probe.has("method") && (probe.has("result") || probe.has("error"));
    let refuse = |code: i64, message: String, id: Value| {
        if is_response {
            Verdict::Ignore(format!("a malformed response: {message}"))
        } else {
            refusal(id, code, message)
        }
    };
    if let Some(key) = &probe.duplicate {
        // A repeated id cannot be told apart from the other one.
        let id = if key == "id" {
            Value::Null
        } else {
            probe.id.reply_id()
        };
        return refuse(
            INVALID_REQUEST,
            format!("Invalid Request: the member {} is given twice", quote(key)),
            id,
        );
    }
    let id = probe.id.reply_id();
    // 3. The whole message, strictly: Unicode strings, no repeated keys, at most 128 levels.
    let tracker = Tracker::default();
    let value = match strict_parse(line, &tracker) {
        Ok(value) => value,
        Err(err) => {
            let path = tracker.failed_at.into_inner().unwrap_or_default();
            let (code, kind) = match path.first().map(String::as_str) {
                Some("params") => (INVALID_PARAMS, "Invalid params"),
                _ => (INVALID_REQUEST, "Invalid Request"),
            };
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" at {}", quote(&path.join(".")))
            };
            return refuse(code, format!("{kind}{at}: {err}"), id);
        }
    };
    // 4. JSON-RPC 2.0 and MCP's shape.
    check_message(value, id, is_response)
}

/// A JSON-RPC message, strictly parsed, checked against JSON-RPC 2.0 and then typed by
/// rmcp.
fn check_message(value: Value, id: Value, is_response: bool) -> Verdict {
    let Value::Object(object) = &value else {
        return refusal(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: a JSON-RPC message is a JSON object",
        );
    };
    let refuse = |code: i64, message: &str| {
        if is_response {
            Verdict::Ignore(format!("a malformed response: {message}"))
        } else {
            refusal(id.clone(), code, message)
        }
    };
    match object.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return refuse(INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\""),
        None => {
            return refuse(
                INVALID_REQUEST,
                "Invalid Request: jsonrpc is missing (it must be \"2.0\")",
            );
        }
    }
    if let Some(raw) = object.get("id")
        && serde_json::from_value::<RequestId>(raw.clone()).is_err()
    {
        return refuse(
            INVALID_REQUEST,
            "Invalid Request: id must be a string or an integer",
        );
    }
    let method = match object.get("method") {
        None => None,
        Some(Value::String(method)) => Some(method.as_str()),
        Some(_) => return refuse(INVALID_REQUEST, "Invalid Request: method must be a string"),
    };
    let Some(method) = method else {
        if is_response {
            return forward_response(value);
        }
        return refuse(
            INVALID_REQUEST,
            "Invalid Request: no method (a request needs one, and a response a result or an error)",
        );
    };
    if object.contains_key("result") || object.contains_key("error") {
        return refuse(
            INVALID_REQUEST,
            "Invalid Request: a message has a method or a result/error, not both",
        );
    }
    let is_request = object.contains_key("id");
    let params = object.get("params");
    match params {
        None | Some(Value::Object(_)) => {}
        Some(Value::Array(_)) if !is_request => {
            return Verdict::Ignore(format!(
                "notification {} with params as an array",
                quote(method)
            ));
        }
        Some(Value::Array(_)) => {
            return refuse(
                INVALID_PARAMS,
                "Invalid params: params must be an object (MCP names its parameters)",
            );
        }
        Some(_) => {
            return refuse(INVALID_REQUEST, "Invalid Request: params must be an object");
        }
    }
    let method = method.to_owned();
    let params = params.cloned();
    match serde_json::from_value::<ClientJsonRpcMessage>(value) {
        Ok(JsonRpcMessage::Request(request)) => {
            if matches!(request.request, ClientRequest::CustomRequest(_))
                && let Some(problem) = typed_params_problem(&method, params.as_ref())
            {
                return refuse(INVALID_PARAMS, &format!("Invalid params: {problem}"));
            }
            Verdict::Forward(Box::new(JsonRpcMessage::Request(request)))
        }
        Ok(JsonRpcMessage::Notification(notification)) => {
            if matches!(
                notification.notification,
                ClientNotification::CustomNotification(_)
            ) && is_typed_notification(&method)
            {
                return Verdict::Ignore(format!(
                    "notification {} whose params do not fit",
                    quote(&method)
                ));
            }
            Verdict::Forward(Box::new(JsonRpcMessage::Notification(notification)))
        }
        Ok(other) => Verdict::Forward(Box::new(other)),
        Err(err) if is_request => refuse(INVALID_PARAMS, &format!("Invalid params: {err}")),
        Err(err) => Verdict::Ignore(format!("notification {}: {err}", quote(&method))),
    }
}

fn forward_response(value: Value) -> Verdict {
    match serde_json::from_value::<ClientJsonRpcMessage>(value) {
        Ok(message) => Verdict::Forward(Box::new(message)),
        Err(err) => Verdict::Ignore(format!("a response rmcp cannot read: {err}")),
    }
}

/// For a method the server serves, why its params do not fit (rmcp then typed the request
/// as a custom one, which it would refuse as "method not found").
fn typed_params_problem(method: &str, params: Option<&Value>) -> Option<String> {
    fn check<T: serde::de::DeserializeOwned>(params: Option<&Value>, required: bool) -> String {
        match params {
            None if required => "params are missing".to_owned(),
            None => "params do not fit the method".to_owned(),
            Some(params) => match serde_path_to_error::deserialize::<_, T>(params) {
                Ok(_) => "params do not fit the method".to_owned(),
                Err(err) if err.path().to_string() == "." => err.inner().to_string(),
                Err(err) => format!("{}: {}", quote(&err.path().to_string()), err.inner()),
            },
        }
    }
    let problem = match method {
        CallToolRequestMethod::VALUE => {
            if let Some(arguments) = params.and_then(|p| p.get("arguments"))
                && !arguments.is_object()
                && !arguments.is_null()
            {
                return Some("arguments must be an object".to_owned());
            }
            check::<CallToolRequestParams>(params, true)
        }
        InitializeResultMethod::VALUE => check::<InitializeRequestParams>(params, true),
        ListToolsRequestMethod::VALUE => check::<PaginatedRequestParams>(params, false),
        _ => return None,
    };
    Some(problem)
}

/// Notifications rmcp types (a custom one of these names means params that do not fit).
fn is_typed_notification(method: &str) -> bool {
    matches!(
        method,
        "notifications/cancelled"
            | "notifications/progress"
            | "notifications/initialized"
            | "notifications/roots/list_changed"
    )
}

/// The reply to a batch: MCP has had no batches since 2025-06-18 (rmcp has none), so each
/// request in it is refused with its id; a batch without one gets one error.
fn batch_reply(probe: &Probe) -> Reply {
    let message = "Invalid Request: batches are not supported (MCP has had none since 2025-06-18); send one message per line";
    let replies: Vec<ErrorReply> = probe
        .elements
        .iter()
        .filter_map(|id| match id {
            IdRead::Readable(id) => Some(error_response(id.clone(), INVALID_REQUEST, message)),
            _ => None,
        })
        .collect();
    if replies.is_empty() {
        Reply::One(error_response(Value::Null, INVALID_REQUEST, message))
    } else {
        Reply::Batch(replies)
    }
}

/// Quotes a user-supplied string, shortened.
fn quote(text: &str) -> String {
    format!("\"{}\"", shorten(text, QUOTE_CHARS))
}

/// At most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

// ---- The lenient probe: what can be read of a message whatever else is wrong with it.

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[default]
    Other,
    Object,
    Array,
}

/// A message's id as far as it can be read.
#[derive(Debug, Default, Clone, PartialEq)]
enum IdRead {
    #[default]
    Absent,
    /// A string or a number: echoed in a reply.
    Readable(Value),
    /// Null, or of another type, or unreadable.
    Unusable,
}

impl IdRead {
    fn reply_id(&self) -> Value {
        match self {
            IdRead::Readable(id) => id.clone(),
            _ => Value::Null,
        }
    }
}

#[derive(Debug, Default)]
struct Probe {
    kind: Option<Kind>,
    id: IdRead,
    /// The top-level members.
    keys: HashSet<String>,
    /// The first top-level member given twice.
    duplicate: Option<String>,
    /// For a batch: each element's id.
    elements: Vec<IdRead>,
}

impl Probe {
    fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

/// Reads what it can into `probe`; what was read before an error stays there.
fn run_probe(line: &[u8], probe: &mut Probe) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(line);
    de.deserialize_any(ProbeVisitor { probe, top: true })
}

struct ProbeVisitor<'p> {
    probe: &'p mut Probe,
    /// The message itself (else an element of a batch).
    top: bool,
}

impl<'de> Visitor<'de> for ProbeVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.probe.kind = Some(Kind::Other);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.probe.kind = Some(Kind::Array);
        if !self.top {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        loop {
            let mut element = Probe::default();
            let more = seq.next_element_seed(ProbeSeed(&mut element));
            match more {
                Ok(Some(())) => self.probe.elements.push(element.id),
                Ok(None) => return Ok(()),
                Err(err) => {
                    self.probe.elements.push(element.id);
                    return Err(err);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.probe.kind = Some(Kind::Object);
        while let Some(key) = map.next_key::<String>()? {
            let repeated = self.probe.keys.contains(&key);
            if repeated && self.probe.duplicate.is_none() {
                self.probe.duplicate = Some(key.clone());
            }
            if key == "id" && self.probe.id == IdRead::Absent {
                self.probe.id = IdRead::Unusable;
                self.probe.id = map.next_value_seed(IdSeed)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if !repeated {
                self.probe.keys.insert(key);
            }
        }
        Ok(())
    }
}

/// A batch element: probed like a message, but its arrays are only skipped.
struct ProbeSeed<'p>(&'p mut Probe);

impl<'de> DeserializeSeed<'de> for ProbeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(ProbeVisitor {
            probe: self.0,
            top: false,
        })
    }
}

/// Reads an id: a string or a number is kept, anything else is unusable (and skipped).
struct IdSeed;

impl<'de> DeserializeSeed<'de> for IdSeed {
    type Value = IdRead;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<IdRead, D::Error> {
        de.deserialize_any(IdSeed)
    }
}

impl<'de> Visitor<'de> for IdSeed {
    type Value = IdRead;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an id")
    }
    fn visit_i64<E>(self, v: i64) -> Result<IdRead, E> {
        Ok(IdRead::Readable(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<IdRead, E> {
        Ok(IdRead::Readable(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<IdRead, E> {
        Ok(serde_json::Number::from_f64(v)
            .map_or(IdRead::Unusable, |n| IdRead::Readable(Value::Number(n))))
    }
    fn visit_str<E>(self, v: &str) -> Result<IdRead, E> {
        Ok(IdRead::Readable(Value::from(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<IdRead, E> {
        Ok(IdRead::Unusable)
    }
    fn visit_unit<E>(self) -> Result<IdRead, E> {
        Ok(IdRead::Unusable)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdRead, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(IdRead::Unusable)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdRead, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(IdRead::Unusable)
    }
}

// ---- The strict parse: a `Value`, refusing repeated keys at any depth, and saying where
// it failed.

#[derive(Default)]
struct Tracker {
    path: RefCell<Vec<String>>,
    failed_at: RefCell<Option<Vec<String>>>,
}

impl Tracker {
    /// Records the current path as where parsing failed (the innermost failure wins).
    fn fail_here(&self) {
        let mut failed = self.failed_at.borrow_mut();
        if failed.is_none() {
            *failed = Some(self.path.borrow().clone());
        }
    }

    fn within<T, E>(&self, segment: String, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.path.borrow_mut().push(segment);
        let result = f();
        if result.is_err() {
            self.fail_here();
        }
        self.path.borrow_mut().pop();
        result
    }
}

fn strict_parse(line: &[u8], tracker: &Tracker) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = Strict(tracker).deserialize(&mut de);
    if value.is_err() {
        tracker.fail_here();
    }
    let value = value?;
    de.end()?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Strict<'t>(&'t Tracker);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let index = items.len();
            match self
                .0
                .within(index.to_string(), || seq.next_element_seed(self))?
            {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("the key {} is given twice", quote(&key));
                return self.0.within(key, || Err(A::Error::custom(message)));
            }
            let value = self.0.within(key.clone(), || map.next_value_seed(self))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> Value {
        match classify(line.as_bytes()) {
            Verdict::Reply(reply) => serde_json::to_value(reply).unwrap(),
            other => panic!("expected a reply to {line}, got {other:?}"),
        }
    }

    fn code_and_id(line: &str) -> (i64, Value) {
        let reply = reply(line);
        (
            reply["error"]["code"].as_i64().unwrap(),
            reply["id"].clone(),
        )
    }

    #[test]
    fn a_reused_tools_list_encoding_is_what_serde_writes() {
        let schema = |property: &str| {
            let Value::Object(schema) = json!({"type": "object", "properties": {property: {}}})
            else {
                unreachable!()
            };
            Arc::new(schema)
        };
        let first = ListToolsResult::with_all_items(vec![rmcp::model::Tool::new(
            "a",
            "the first",
            schema("x"),
        )]);
        let second = first
            .clone()
            .with_ttl_ms(1000)
            .with_cache_scope(rmcp::model::CacheScope::Public);
        let third = ListToolsResult::with_all_items(vec![rmcp::model::Tool::new(
            "a",
            "the first",
            schema("y"),
        )]);
        // Each in turn, twice, with ids of both kinds: always serde's own bytes.
        for (result, id) in [
            (&first, RequestId::Number(1)),
            (&first, RequestId::String("two".into())),
            (&second, RequestId::Number(3)),
            (&first, RequestId::Number(4)),
            (&third, RequestId::Number(5)),
            (&third, RequestId::Number(6)),
        ] {
            let message =
                ServerJsonRpcMessage::response(ServerResult::ListToolsResult(result.clone()), id);
            assert_eq!(
                String::from_utf8(encode_message(&message).unwrap()).unwrap(),
                serde_json::to_string(&message).unwrap()
            );
        }
    }

    #[test]
    fn valid_messages_go_to_rmcp() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_templates","arguments":{"q":"\ud83d\ude00"}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_templates"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"no/such/method","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\"}\r",
        ] {
            assert!(
                matches!(classify(line.as_bytes()), Verdict::Forward(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn what_is_not_json_is_a_parse_error_with_a_null_id() {
        for line in [
            "not json",
            "{",
            r#"{"jsonrpc":"2.0","id":1,}"#,
            "[1,2",
            "\"abc",
        ] {
            assert_eq!(code_and_id(line), (PARSE_ERROR, Value::Null), "{line}");
        }
    }

    #[test]
    fn invalid_requests_are_answered_with_their_id() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/list","params":"str"}"#,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","params":[1]}"#,
                INVALID_PARAMS,
            ),
            (r#"{"id":12,"method":"tools/list"}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":13,"method":"tools/list"}"#,
                INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":14,"method":5}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":15,"method":"tools/list","method":"ping"}"#,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"list_templates","arguments":"x"}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"list_templates","arguments":[1]}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"arguments":{}}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":19,"method":"tools/call"}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"x","arguments":{"q":"\ud800"}}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"x","arguments":{"a":1,"a":2}}}"#,
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":22,"method":"tools/list","result":{}}"#,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":23,"method":"\udc00"}"#,
                INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":24}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                INVALID_REQUEST,
            ),
        ];
        for (line, code) in cases {
            let (got, id) = code_and_id(line);
            assert_eq!(got, code, "{line}: {}", reply(line));
            let sent: Value = serde_json::from_str::<Value>(
                &line.replace("\\ud800", "x").replace("\\udc00", "x"),
            )
            .map(|v| v["id"].clone())
            .unwrap();
            assert_eq!(id, sent, "{line}");
        }
        let reply = reply(cases[6].0);
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("arguments must be an object")
        );
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_keep_the_id() {
        let mut line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"q":""#.to_vec();
        line.extend_from_slice(b"\xff\xfe");
        line.extend_from_slice(br#""}}}"#);
        let Verdict::Reply(reply) = classify(&line) else {
            panic!("invalid UTF-8 refused")
        };
        let reply = serde_json::to_value(reply).unwrap();
        assert_eq!(
            (reply["id"].clone(), reply["error"]["code"].clone()),
            (json!(7), json!(INVALID_PARAMS))
        );

        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{{"name":"x","arguments":{{"a":{}1{}}}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(code_and_id(&deep), (INVALID_PARAMS, json!("deep")));
        let deep_top = format!(
            r#"{{"x":{}1{},"jsonrpc":"2.0","id":8,"method":"ping"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(code_and_id(&deep_top), (INVALID_REQUEST, json!(8)));
    }

    #[test]
    fn a_repeated_id_is_not_guessed() {
        assert_eq!(
            code_and_id(r#"{"jsonrpc":"2.0","id":14,"id":15,"method":"tools/list"}"#),
            (INVALID_REQUEST, Value::Null)
        );
    }

    #[test]
    fn batches_are_refused_per_request() {
        let reply = reply(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/list"}]"#,
        );
        let ids: Vec<Value> = reply
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(1), json!("b")]);
        assert_eq!(code_and_id("[]"), (INVALID_REQUEST, Value::Null));
        assert_eq!(code_and_id("[1,2]"), (INVALID_REQUEST, Value::Null));
    }

    #[test]
    fn responses_and_unfit_notifications_are_never_answered() {
        for line in [
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
            r#"{"jsonrpc":"2.0","id":25,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":25,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":25,"result":{},"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":[1]}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#,
            "",
            "   \r",
        ] {
            let verdict = classify(line.as_bytes());
            assert!(
                matches!(verdict, Verdict::Ignore(_) | Verdict::Forward(_)),
                "{line}: {verdict:?}"
            );
        }
        // Not JSON-RPC at all: answered, with a null id.
        assert_eq!(
            code_and_id(r#"{"jsonrpc":"2.0","method":"notifications/x","params":"x"}"#),
            (INVALID_REQUEST, Value::Null)
        );
    }

    #[test]
    fn messages_quote_little() {
        let name = "n".repeat(100_000);
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":"{name}"}}}}"#
        );
        assert!(reply(&line).to_string().len() < 600);
        let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","{name}":1,"{name}":2}}"#);
        assert!(reply(&line).to_string().len() < 600);
    }

    #[test]
    fn an_oversized_line_keeps_its_id_when_it_comes_first() {
        let Verdict::Reply(reply) = oversized(
            br#"{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"create_wor"#,
            1024,
        ) else {
            panic!()
        };
        let reply = serde_json::to_value(reply).unwrap();
        assert_eq!(reply["id"], "big");
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        assert_eq!(reply["error"]["data"]["max_line_bytes"], 1024);
        let Verdict::Reply(reply) = oversized(br#"{"params":{"name":"create_wor"#, 1024) else {
            panic!()
        };
        let reply = serde_json::to_value(reply).unwrap();
        assert_eq!(reply["id"], Value::Null);
    }

    #[tokio::test]
    async fn the_line_reader_never_holds_more_than_the_limit() {
        let input = format!("{}\n{}\nshort\nlast", "a".repeat(100), "b".repeat(10));
        let mut reader = LineReader::new(input.as_bytes(), 10);
        assert!(matches!(reader.next().await, Read::Oversized));
        assert_eq!(reader.line, b"aaaaaaaaaa");
        assert!(matches!(reader.next().await, Read::Line));
        assert_eq!(reader.line, b"bbbbbbbbbb");
        assert!(matches!(reader.next().await, Read::Line));
        assert_eq!(reader.line, b"short");
        assert!(matches!(reader.next().await, Read::Line));
        assert_eq!(reader.line, b"last");
        assert!(matches!(reader.next().await, Read::Eof));
    }

    /// Property tests of the classifier (the binary's own fuzz test is tests/fuzz.rs). The
    /// seed is printed; `FUZZ_SEED=<seed>` replays a run.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        fn runner(cases: u32) -> (TestRunner, u64) {
            let seed = std::env::var("FUZZ_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
            eprintln!("proptest seed {seed} (replay with FUZZ_SEED={seed})");
            let config = Config {
                cases,
                failure_persistence: None,
                rng_seed: RngSeed::Fixed(seed),
                ..Config::default()
            };
            (TestRunner::new(config), seed)
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter_map("finite", |f| {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(key(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("template_id".to_owned()),
                Just("name".to_owned()),
                Just("parameters".to_owned()),
                Just("query".to_owned()),
                ".{0,8}",
            ]
        }

        fn id() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                "[a-z0-9-]{1,12}".prop_map(Value::from),
            ]
        }

        /// A valid tools/call: any tool name, any object of arguments.
        fn tool_call() -> impl Strategy<Value = Value> {
            (
                id(),
                ".{0,20}",
                prop::collection::btree_map(key(), json(), 0..5),
            )
                .prop_map(|(id, name, arguments)| {
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": name, "arguments": arguments}})
                })
        }

        #[derive(Debug, Clone)]
        enum Edit {
            Delete(prop::sample::Index),
            Insert(prop::sample::Index, u8),
            Replace(prop::sample::Index, u8),
            Truncate(prop::sample::Index),
            Repeat(prop::sample::Index, prop::sample::Index),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            let byte = prop_oneof![
                prop::sample::select(b"{}[]\",:0123456789-eE.tfn \\u\xff\x00\n".to_vec()),
                any::<u8>(),
            ];
            prop_oneof![
                any::<prop::sample::Index>().prop_map(Edit::Delete),
                (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
                (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
                any::<prop::sample::Index>().prop_map(Edit::Truncate),
                (any::<prop::sample::Index>(), any::<prop::sample::Index>())
                    .prop_map(|(a, b)| Edit::Repeat(a, b)),
            ]
        }

        fn apply(mut line: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
            for edit in edits {
                if line.is_empty() {
                    break;
                }
                match edit {
                    Edit::Delete(i) => {
                        line.remove(i.index(line.len()));
                    }
                    Edit::Insert(i, b) => line.insert(i.index(line.len() + 1), *b),
                    Edit::Replace(i, b) => {
                        let i = i.index(line.len());
                        line[i] = *b;
                    }
                    Edit::Truncate(i) => line.truncate(i.index(line.len())),
                    Edit::Repeat(a, b) => {
                        let (a, b) = (a.index(line.len()), b.index(line.len()));
                        let (from, to) = (a.min(b), a.max(b));
                        let copy = line[from..to].to_vec();
                        line.splice(to..to, copy);
                    }
                }
            }
            line.retain(|b| *b != b'\n');
            line
        }

        /// What every verdict must satisfy whatever the line.
        fn check_reply(verdict: &Verdict) {
            let Verdict::Reply(reply) = verdict else {
                return;
            };
            let replies = match reply {
                Reply::One(one) => vec![one.clone()],
                Reply::Batch(many) => {
                    assert!(!many.is_empty());
                    many.clone()
                }
            };
            for reply in replies {
                assert!(
                    matches!(
                        reply.error.code,
                        PARSE_ERROR | INVALID_REQUEST | INVALID_PARAMS
                    ),
                    "{reply:?}"
                );
                assert!(
                    reply.id.is_null() || reply.id.is_string() || reply.id.is_number(),
                    "{reply:?}"
                );
                assert!(reply.error.message.chars().count() <= MESSAGE_CHARS + 1);
            }
        }

        /// The oracle: serde_json. Not JSON → -32700 with a null id; a request serde_json
        /// reads (with one "id" in it, so no repeated key) → forwarded with its id, or
        /// refused with its id.
        fn check_against_serde_json(line: &[u8], verdict: &Verdict) {
            check_reply(verdict);
            let stripped = strip(line);
            if stripped.is_empty() {
                assert!(matches!(verdict, Verdict::Ignore(_)), "{verdict:?}");
                return;
            }
            if serde_json::from_slice::<IgnoredAny>(stripped).is_err() {
                let Verdict::Reply(Reply::One(reply)) = verdict else {
                    panic!("not JSON, yet {verdict:?}")
                };
                assert_eq!((reply.error.code, &reply.id), (PARSE_ERROR, &Value::Null));
                return;
            }
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(stripped) else {
                return;
            };
            let ids = stripped.windows(4).filter(|w| w == b"\"id\"").count();
            let Some(id) = object.get("id") else {
                return;
            };
            let request = object.get("method").is_some_and(Value::is_string)
                && !object.contains_key("result")
                && !object.contains_key("error");
            let Ok(request_id) = serde_json::from_value::<RequestId>(id.clone()) else {
                return;
            };
            if ids != 1 || !request {
                return;
            }
            match verdict {
                Verdict::Forward(message) => match message.as_ref() {
                    JsonRpcMessage::Request(forwarded) => assert_eq!(forwarded.id, request_id),
                    other => panic!("a request forwarded as {other:?}"),
                },
                Verdict::Reply(Reply::One(reply)) => {
                    assert_eq!(&reply.id, id, "{reply:?}");
                    assert_ne!(reply.error.code, PARSE_ERROR);
                }
                other => panic!("a request is forwarded or answered, not {other:?}"),
            }
        }

        #[test]
        fn valid_tool_calls_reach_rmcp_with_their_id() {
            let (mut runner, seed) = runner(256);
            let result = runner.run(&tool_call(), |call| {
                let line = call.to_string();
                match classify(line.as_bytes()) {
                    Verdict::Forward(message) => match *message {
                        JsonRpcMessage::Request(request) => {
                            let id: RequestId = serde_json::from_value(call["id"].clone()).unwrap();
                            prop_assert_eq!(request.id, id);
                            prop_assert!(matches!(
                                request.request,
                                ClientRequest::CallToolRequest(_)
                            ));
                        }
                        other => prop_assert!(false, "forwarded as {other:?}"),
                    },
                    other => prop_assert!(false, "{line} → {other:?}"),
                }
                Ok(())
            });
            if let Err(err) = result {
                panic!("{err} (seed {seed}: FUZZ_SEED={seed})");
            }
        }

        #[test]
        fn mutated_lines_are_answered_as_serde_json_reads_them() {
            let (mut runner, seed) = runner(2000);
            let strategy = (
                prop_oneof![tool_call(), json().prop_map(|v| json!([v])), json()],
                prop::collection::vec(edit(), 0..4),
            );
            let result = runner.run(&strategy, |(message, edits)| {
                let line = apply(message.to_string().into_bytes(), &edits);
                let verdict = classify(&line);
                check_against_serde_json(&line, &verdict);
                Ok(())
            });
            if let Err(err) = result {
                panic!("{err} (seed {seed}: FUZZ_SEED={seed})");
            }
        }

        #[test]
        fn any_bytes_get_a_well_formed_verdict() {
            let (mut runner, seed) = runner(512);
            let result = runner.run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
                let line: Vec<u8> = bytes.into_iter().filter(|b| *b != b'\n').collect();
                check_against_serde_json(&line, &classify(&line));
                let verdict = oversized(&line, 1 << 20);
                check_reply(&verdict);
                Ok(())
            });
            if let Err(err) = result {
                panic!("{err} (seed {seed}: FUZZ_SEED={seed})");
            }
        }
    }
}
