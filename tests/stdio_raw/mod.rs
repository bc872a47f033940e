//! The server in stdio mode over raw pipes: lines in, lines out, no MCP client in between
//! (rmcp's client would refuse to send what these tests send).
#![allow(dead_code)]

use std::process::{ExitStatus, Stdio};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::common::{BIN, Env, TOKEN, bounded};

pub struct RawServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
    pings: u64,
}

impl RawServer {
    /// Spawns the server against `env`'s simulator and completes the MCP handshake.
    pub async fn start(env: &Env, extra_args: &[&str]) -> RawServer {
        let mut child = tokio::process::Command::new(BIN)
            .arg("stdio")
            .args(extra_args)
            .env("CODER_URL", env.sim.url())
            .env("CODER_SESSION_TOKEN", TOKEN)
            .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
            .env("CODER_MCP_STORE", env.store())
            .env_remove("CODER_MCP_STDIO_SESSION")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the server");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut server = RawServer {
            child,
            stdin,
            stdout,
            stderr,
            pings: 0,
        };
        server
            .send_json(
                &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw-pipe-test", "version": "0"}}}),
            )
            .await;
        let init = server.recv().await;
        assert_eq!(init["id"], "init", "{init}");
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        server
            .send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        server
    }

    /// Writes `line` and a newline.
    pub async fn send(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line).await.expect("write to the server");
        stdin.write_all(b"\n").await.expect("write to the server");
        stdin.flush().await.expect("flush to the server");
    }

    /// Writes `bytes` with no newline.
    pub async fn send_partial(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).await.expect("write to the server");
        stdin.flush().await.expect("flush to the server");
    }

    /// Closes stdin: EOF for the server.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    pub async fn send_json(&mut self, message: &Value) {
        self.send(message.to_string().as_bytes()).await;
    }

    /// The next line on stdout, which must be a JSON-RPC 2.0 response (or a notification).
    pub async fn recv(&mut self) -> Value {
        let mut line = String::new();
        let read = bounded("a line on stdout", self.stdout.read_line(&mut line)).await;
        assert!(read.expect("read stdout") > 0, "stdout closed");
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        check_response(&value);
        value
    }

    /// Sends a ping and returns every line that came before its answer. The server writes
    /// its own refusals in the order it reads lines, so a ping sent after a line is answered
    /// after that line's refusal (an answer from a tool may come later: tools run
    /// concurrently).
    pub async fn barrier(&mut self) -> Vec<Value> {
        let id = self.barrier_id().await;
        let mut before = Vec::new();
        loop {
            let value = self.recv().await;
            if value["id"] == id.as_str() {
                assert_eq!(value["result"], json!({}), "{value}");
                return before;
            }
            before.push(value);
        }
    }

    /// Sends a ping and returns its id, for the caller to read up to its answer.
    pub async fn barrier_id(&mut self) -> String {
        self.pings += 1;
        let id = format!("barrier-{}", self.pings);
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": "ping"}))
            .await;
        id
    }

    /// Sends `line` and returns the one answer the server gives it before the next ping.
    pub async fn answer_to(&mut self, line: &[u8]) -> Value {
        self.send(line).await;
        let mut before = self.barrier().await;
        assert_eq!(
            before.len(),
            1,
            "one answer to {}: {before:?}",
            shorten(line)
        );
        before.remove(0)
    }

    /// Sends `line` and waits for the answer with `id` (from rmcp: tools run concurrently,
    /// so it may come after later pings), returning it.
    pub async fn call(&mut self, line: &[u8], id: &Value) -> Value {
        self.send(line).await;
        loop {
            let value = self.recv().await;
            if &value["id"] == id {
                return value;
            }
            assert!(
                value["id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("barrier-"))
                    || value.get("method").is_some(),
                "an unexpected answer while waiting for {id}: {value}"
            );
        }
    }

    /// Closes stdin (EOF), waits for the process to exit, and returns its status and stderr.
    pub async fn close(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let status = bounded("the server to exit", self.child.wait())
            .await
            .expect("wait for the server");
        let stderr = self.stderr.await.expect("stderr reader");
        (status, stderr)
    }
}

/// Every line the server writes is a JSON-RPC 2.0 message: a response with exactly one of
/// result or error (an error with an integer code and a message), or a notification.
pub fn check_response(value: &Value) {
    let batch = match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for value in batch {
        assert_eq!(value["jsonrpc"], "2.0", "{value}");
        if value.get("method").is_some() {
            continue; // a notification (progress)
        }
        let id = value
            .get("id")
            .expect("a response has an id (null when unreadable)");
        assert!(id.is_null() || id.is_string() || id.is_number(), "{value}");
        match (value.get("result"), value.get("error")) {
            (Some(_), None) => {}
            (None, Some(error)) => {
                assert!(error["code"].is_i64(), "{value}");
                assert!(error["message"].is_string(), "{value}");
            }
            _ => panic!("a response has a result or an error: {value}"),
        }
    }
}

pub fn shorten(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.chars().take(200).collect()
}
