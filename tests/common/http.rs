//! The server binary in `serve` mode, and a small reqwest-based client for the legacy
//! HTTP+SSE transport (rmcp has none).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc};

use super::BIN;

/// `coder-workspace-mcp serve` on a free loopback port.
pub struct HttpServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    logged: Arc<Notify>,
    ended: Arc<std::sync::atomic::AtomicBool>,
    /// The server's own store, unless the test gave it one (`CODER_MCP_STORE`).
    _store: Option<tempfile::TempDir>,
}

impl HttpServer {
    pub async fn spawn(coder_url: &str, extra_args: &[&str], env: &[(&str, &str)]) -> HttpServer {
        Self::spawn_on("127.0.0.1:0", coder_url, extra_args, env).await
    }

    /// Like [`HttpServer::spawn`], listening on `listen`.
    pub async fn spawn_on(
        listen: &str,
        coder_url: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> HttpServer {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(["serve", "--listen", listen, "--log-level", "trace"])
            .args(extra_args)
            .env("CODER_URL", coder_url)
            .env_remove("CODER_SESSION_TOKEN")
            .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
            .env_remove("CODER_MCP_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let store = (!env.iter().any(|(k, _)| *k == "CODER_MCP_STORE")
            && !extra_args.contains(&"--store"))
        .then(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            command.env("CODER_MCP_STORE", dir.path().join("store.db"));
            dir
        });
        let mut child = command.spawn().expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let logged = Arc::new(Notify::new());
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log_w, logged_w, ended_w) = (log.clone(), logged.clone(), ended.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log_w.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                drop(log);
                logged_w.notify_waiters();
            }
            ended_w.store(true, std::sync::atomic::Ordering::SeqCst);
            logged_w.notify_waiters();
        });
        let mut server = HttpServer {
            base: String::new(),
            child,
            log,
            logged,
            ended,
            _store: store,
        };
        let line = server.wait_for_log("listening on http://").await;
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("listen address");
        server.base = format!("http://{addr}");
        server
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Resolves with the first log line containing `needle` (waiting for it if need be).
    pub async fn wait_for_log(&self, needle: &str) -> String {
        super::bounded(&format!("the log line {needle:?}"), async {
            loop {
                let notified = self.logged.notified();
                if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
                    panic!(
                        "the server's stderr closed before it logged {needle:?}:\n{}",
                        self.log()
                    );
                }
                notified.await;
            }
        })
        .await
    }

    /// Waits until the log has at least `count` lines containing `needle`.
    pub async fn wait_for_log_count(&self, needle: &str, count: usize) {
        super::bounded(&format!("{count} log lines {needle:?}"), async {
            loop {
                let notified = self.logged.notified();
                if self.log().lines().filter(|l| l.contains(needle)).count() >= count {
                    return;
                }
                if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
                    panic!("the server's stderr closed before it logged {count} × {needle:?}");
                }
                notified.await;
            }
        })
        .await
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The log from the first line containing `needle` on (for "X happened after Y").
    pub fn log_after(&self, needle: &str) -> String {
        let log = self.log();
        log.find(needle)
            .map(|at| log[at..].to_owned())
            .unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL, and waits for the process to be gone: a replica or a process that dies
    /// with no chance to clean up.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill serve");
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit and for its log to be read to the end.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().await.unwrap();
        let (logged, ended) = (self.logged.clone(), self.ended.clone());
        super::bounded("the end of the server's log", async move {
            loop {
                let notified = logged.notified();
                if ended.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        status
    }

    /// A raw JSON-RPC POST to /mcp, for the tests of refusals.
    pub async fn post_mcp(&self, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(self.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }
}

/// One stateless request of protocol 2026-07-28 as alice: no session, the client's
/// `capabilities` in `_meta`, the `Mcp-Method` (and, when given, `Mcp-Name`) headers.
/// Returns the JSON-RPC response (the last `data:` of an SSE answer, or the JSON body).
pub async fn stateless_request(
    mcp_url: &str,
    method: &str,
    name: Option<&str>,
    mut params: Value,
    capabilities: Value,
) -> Value {
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "stateless", "version": "0"}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = reqwest::Client::new()
        .post(mcp_url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {}", super::TOKEN))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "stateless"
    );
    let text = response.text().await.unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or(text);
    serde_json::from_str(&data).unwrap()
}

/// One stateless `tools/call` of create_workspace (protocol 2026-07-28: no session, the
/// client's details in `_meta`) as alice; returns the structured result.
pub async fn stateless_create(mcp_url: &str, arguments: Value) -> Value {
    let params = json!({"name": "create_workspace", "arguments": arguments});
    let message = stateless_request(
        mcp_url,
        "tools/call",
        Some("create_workspace"),
        params,
        json!({}),
    )
    .await;
    message["result"]["structuredContent"].clone()
}

/// A JSON-RPC `initialize` request body.
pub fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"}}})
}

/// A minimal legacy HTTP+SSE (2024-11-05) client: GET /sse, POST /messages.
pub struct LegacyClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// The POST URL the server announced in its `endpoint` event.
    pub endpoint: String,
    messages: mpsc::UnboundedReceiver<Value>,
    /// Notifications received so far (progress among them).
    pub notifications: Vec<Value>,
    /// Responses that arrived while waiting for something else, by request id.
    responses: HashMap<u64, Value>,
    next_id: u64,
}

impl LegacyClient {
    /// Opens the event stream and performs the MCP handshake.
    pub async fn connect(base: &str, token: &str) -> LegacyClient {
        let http = reqwest::Client::new();
        let response = http
            .get(format!("{base}/sse"))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /sse");
        let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.event.as_deref(), Some("endpoint"));
        let endpoint = first.data.unwrap();
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if event.event.as_deref() == Some("message")
                    && let Some(data) = event.data
                    && let Ok(value) = serde_json::from_str::<Value>(&data)
                    && tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        let mut client = LegacyClient {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
            endpoint,
            messages,
            notifications: Vec::new(),
            responses: HashMap::new(),
            next_id: 1,
        };
        let init = client
            .request(
                "initialize",
                json!({"protocolVersion": "2024-11-05", "capabilities": {},
                "clientInfo": {"name": "legacy-test", "version": "0"}}),
            )
            .await;
        assert_eq!(
            init["result"]["serverInfo"]["name"], "coder-workspace-mcp",
            "{init}"
        );
        client.notify("notifications/initialized", json!({})).await;
        client
    }

    /// POSTs a message with this client's token; returns the HTTP status.
    pub async fn post(&self, message: &Value) -> reqwest::StatusCode {
        self.post_as(&self.token, message).await
    }

    pub async fn post_as(&self, token: &str, message: &Value) -> reqwest::StatusCode {
        self.http
            .post(format!("{}{}", self.base, self.endpoint))
            .bearer_auth(token)
            .json(message)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn notify(&self, method: &str, params: Value) {
        let status = self
            .post(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await;
        assert_eq!(status, 202);
    }

    /// Sends a request without waiting for its response; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let status = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(status, 202, "POST {method}");
        id
    }

    /// Reads one message from the event stream, filing it as a response or a notification.
    async fn receive(&mut self) {
        let message = self.messages.recv().await.expect("event stream open");
        if let Some(id) = message.get("id").and_then(Value::as_u64)
            && message.get("method").is_none()
        {
            self.responses.insert(id, message);
        } else if message.get("method").is_some() {
            self.notifications.push(message);
        }
    }

    /// Waits for the response to request `id`.
    pub async fn response(&mut self, id: u64) -> Value {
        loop {
            if let Some(response) = self.responses.remove(&id) {
                return response;
            }
            self.receive().await;
        }
    }

    /// Sends a request and waits for its response on the event stream.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    /// Starts a `tools/call` with a progress token; returns the request id and the token.
    pub async fn start_call(&mut self, name: &str, arguments: Value) -> (u64, String) {
        let token = format!("legacy-{}", self.next_id);
        let id = self
            .send(
                "tools/call",
                json!({"name": name, "arguments": arguments, "_meta": {"progressToken": token}}),
            )
            .await;
        (id, token)
    }

    /// The progress notifications received so far for `token`.
    pub fn progress(&self, token: &str) -> Vec<Value> {
        self.notifications
            .iter()
            .filter(|n| {
                n["method"] == "notifications/progress"
                    && n["params"]["progressToken"] == json!(token)
            })
            .cloned()
            .collect()
    }

    /// Waits until `token` has received at least `count` progress notifications; false if
    /// the response to `id` came first.
    pub async fn wait_for_progress(&mut self, id: u64, token: &str, count: usize) -> bool {
        loop {
            if self.progress(token).len() >= count {
                return true;
            }
            if self.responses.contains_key(&id) {
                return false;
            }
            self.receive().await;
        }
    }

    /// `tools/call` with a progress token; returns the result and the progress notifications.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> (Value, Vec<Value>) {
        let (id, token) = self.start_call(name, arguments).await;
        let response = self.response(id).await;
        (response["result"].clone(), self.progress(&token))
    }
}

/// A raw TCP connection to the server: for what HTTP clients will not send (two `Host`
/// headers, an absolute-form target, a trickled request) and for seeing when the server
/// closes a connection.
pub struct RawConnection {
    read: tokio::net::tcp::OwnedReadHalf,
    write: Option<tokio::net::tcp::OwnedWriteHalf>,
    buffer: Vec<u8>,
}

/// A response read off a [`RawConnection`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl RawConnection {
    pub async fn connect(addr: &str) -> RawConnection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        RawConnection {
            read,
            write: Some(write),
            buffer: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let write = self.write.as_mut().expect("not trickling");
        write.write_all(bytes).await.unwrap();
    }

    /// Sends `prefix`, then one more byte of `filler` every 100 ms, for as long as the
    /// server takes them (a slow client, not a synchronization: the test waits for the
    /// server's answer or close).
    pub fn trickle(&mut self, prefix: &[u8], filler: u8) {
        use tokio::io::AsyncWriteExt;
        let mut write = self.write.take().expect("one trickle at a time");
        let prefix = prefix.to_vec();
        tokio::spawn(async move {
            if write.write_all(&prefix).await.is_err() {
                return;
            }
            let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                every.tick().await;
                if write.write_all(&[filler]).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Reads more bytes; false once the server has closed the connection.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        match self.read.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response (its body by `Content-Length`; none without one).
    pub async fn response(&mut self) -> RawResponse {
        super::bounded("a response", async {
            let head_end = loop {
                if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                assert!(
                    self.fill().await,
                    "the server closed the connection without a response; got {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
            };
            let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status line in {head:?}"));
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while self.buffer.len() < head_end + length {
                assert!(
                    self.fill().await,
                    "the server closed the connection mid-body"
                );
            }
            let body = self.buffer[head_end..head_end + length].to_vec();
            self.buffer.drain(..head_end + length);
            RawResponse {
                status,
                headers,
                body,
            }
        })
        .await
    }

    /// Waits until the server closes the connection; returns what it sent before.
    pub async fn closed(&mut self) -> Vec<u8> {
        super::bounded("the server to close the connection", async {
            while self.fill().await {}
        })
        .await;
        std::mem::take(&mut self.buffer)
    }
}

/// Runs `serve` against the Coder at `coder_url`, expecting it to refuse to start (no
/// credentials or OAuth settings from the environment but `vars`); returns its stderr.
pub async fn refused_start(coder_url: &str, args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("CODER_URL", coder_url)
        .env_remove("CODER_SESSION_TOKEN")
        .env_remove("CODER_MCP_AUTH_TOKEN")
        .env_remove("CODER_MCP_OAUTH_CLIENT_ID")
        .env_remove("CODER_MCP_OAUTH_CLIENT_SECRET")
        .env_remove("CODER_MCP_OAUTH_KEY")
        .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().await.expect("run serve");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it started:\n{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}
