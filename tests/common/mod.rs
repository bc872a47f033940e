//! Test harness: a simulated Coder on a loopback socket, and the real server binary
//! spawned in stdio mode, driven by rmcp's MCP client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use coder_api::{Template, TemplateVersionParameter, TemplateVersionParameterOption, Workspace};
use coder_workspace_sim::{SimCoder, TemplateSpec};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest,
    ProgressNotificationParam, ProgressToken, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestHandle, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;

pub mod http;
pub mod postgres;

pub const TOKEN: &str = "alice-secret-token-4f1d2c";
pub const BOB_TOKEN: &str = "bob-secret-token-99ab12";
pub const BIN: &str = env!("CARGO_BIN_EXE_coder-workspace-mcp");

/// A simulated deployment with user "alice" and a "docker" template with parameters,
/// and a directory for the servers' store.
pub struct Env {
    pub sim: SimCoder,
    pub docker: Template,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Env {
        let sim = SimCoder::start().await.expect("start the simulated Coder");
        sim.add_user("alice", TOKEN);
        sim.add_user("bob", BOB_TOKEN);
        let docker = sim.add_template(TemplateSpec {
            name: "docker".into(),
            display_name: "Docker Containers".into(),
            description: "Develop in a Docker container on the Coder host.".into(),
            parameters: vec![
                TemplateVersionParameter {
                    name: "region".into(),
                    display_name: "Region".into(),
                    kind: "string".into(),
                    form_type: "dropdown".into(),
                    default_value: "us".into(),
                    options: vec![option("us", "US East"), option("eu", "Europe")],
                    ..Default::default()
                },
                TemplateVersionParameter {
                    name: "cpu".into(),
                    kind: "number".into(),
                    default_value: "2".into(),
                    validation_min: Some(1),
                    validation_max: Some(8),
                    mutable: true,
                    ..Default::default()
                },
            ],
            deprecated: false,
            active_user_count: 5,
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        Env { sim, docker, dir }
    }

    /// The SQLite store every server of this test uses by default (`--store`).
    pub fn store(&self) -> String {
        self.dir.path().join("store.db").display().to_string()
    }

    /// Spawns the server in stdio mode against the simulator, as alice, on this test's
    /// store. Each process is a conversation of its own unless servers are given the same
    /// `--stdio-session`.
    pub async fn server(&self, extra_args: &[&str]) -> Server {
        Server::spawn_with(
            &self.sim.url(),
            TOKEN,
            extra_args,
            &[("CODER_MCP_STORE", &self.store())],
        )
        .await
    }

    /// The arguments of a create_workspace call on the docker template.
    pub fn create_args(&self) -> Value {
        serde_json::json!({ "template_id": self.docker.id.to_string() })
    }

    pub fn workspaces(&self) -> Vec<Workspace> {
        self.sim.workspaces()
    }
}

fn option(value: &str, name: &str) -> TemplateVersionParameterOption {
    TemplateVersionParameterOption {
        name: name.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// Records every progress notification, by token.
#[derive(Clone, Default)]
pub struct Recorder {
    progress: Arc<Mutex<HashMap<ProgressToken, Vec<ProgressNotificationParam>>>>,
    notify: Arc<tokio::sync::Notify>,
    /// Declares the MCP Tasks extension.
    tasks: bool,
}

impl Recorder {
    /// A client that declares the MCP Tasks extension.
    pub fn with_tasks() -> Recorder {
        Recorder {
            tasks: true,
            ..Recorder::default()
        }
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        if self.tasks {
            info.capabilities = rmcp::model::ClientCapabilities::builder()
                .enable_tasks()
                .build();
        }
        info
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .entry(params.progress_token.clone())
            .or_default()
            .push(params);
        self.notify.notify_waiters();
    }
}

/// An MCP client session with the server: over the stdio of a spawned binary, or over
/// Streamable HTTP.
pub struct Server {
    pub client: RunningService<RoleClient, Recorder>,
    recorder: Recorder,
    stderr: Option<tokio::task::JoinHandle<String>>,
    /// The spawned process, when it is one.
    pid: Option<u32>,
}

impl Server {
    /// A Streamable HTTP session at `url` (e.g. `http://127.0.0.1:8790/mcp`).
    pub async fn http(url: &str, token: &str, headers: &[(&str, &str)]) -> Result<Server, String> {
        Server::http_as(url, token, headers, Recorder::default()).await
    }

    /// [`Server::http`] with the client `recorder` (e.g. one that declares tasks).
    pub async fn http_as(
        url: &str,
        token: &str,
        headers: &[(&str, &str)],
        recorder: Recorder,
    ) -> Result<Server, String> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let custom = headers
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect();
        let config = StreamableHttpClientTransportConfig::with_uri(url)
            .auth_header(token)
            .custom_headers(custom);
        let transport = StreamableHttpClientTransport::from_config(config);
        let client = recorder
            .clone()
            .serve(transport)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Server {
            client,
            recorder,
            stderr: None,
            pid: None,
        })
    }

    /// The server in stdio mode with `envs` set (a `CODER_MCP_STORE` among them: without
    /// one it would use the user's own default store).
    pub async fn spawn_with(
        url: &str,
        token: &str,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        Server::spawn_as(url, token, extra_args, envs, Recorder::default()).await
    }

    /// [`Server::spawn_with`] with the client `recorder` (e.g. one that declares tasks).
    pub async fn spawn_as(
        url: &str,
        token: &str,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        recorder: Recorder,
    ) -> Server {
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("stdio")
            .args(extra_args)
            .env("CODER_URL", url)
            .env("CODER_SESSION_TOKEN", token)
            .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
            .env_remove("CODER_MCP_STORE")
            .env_remove("CODER_MCP_STDIO_SESSION")
            .env("RUST_LOG", "debug");
        for (k, v) in envs {
            command.env(k, v);
        }
        let (transport, stderr) = TokioChildProcess::builder(command)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let pid = transport.id();
        let mut stderr = stderr.expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let client = recorder
            .clone()
            .serve(transport)
            .await
            .expect("MCP initialize");
        Server {
            client,
            recorder,
            stderr: Some(stderr),
            pid,
        }
    }

    /// SIGKILL: the process dies at once, wherever it is (between two writes, with a
    /// Coder request in flight), and its stderr is returned.
    pub async fn kill(self) -> String {
        let pid = self.pid.expect("a spawned server").to_string();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid}");
        self.finish().await
    }

    /// Calls a tool and waits for its result.
    pub async fn call(&self, tool: &'static str, arguments: Value) -> CallToolResult {
        self.start_call(tool, arguments)
            .await
            .await_response()
            .await
            .map(expect_call_result)
            .expect("tools/call")
    }

    /// Calls a tool and returns its result with the progress notifications it produced.
    pub async fn call_with_progress(
        &self,
        tool: &'static str,
        arguments: Value,
    ) -> (CallToolResult, Vec<ProgressNotificationParam>) {
        let handle = self.start_call(tool, arguments).await;
        let token = handle.progress_token.clone();
        let result = expect_call_result(handle.await_response().await.expect("tools/call"));
        (result, self.progress(&token))
    }

    /// Sends a tool call without waiting for it.
    pub async fn start_call(
        &self,
        tool: &'static str,
        arguments: Value,
    ) -> RequestHandle<RoleClient> {
        let params = CallToolRequestParams::new(tool)
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        self.client
            .peer()
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .expect("send tools/call")
    }

    pub fn progress(&self, token: &ProgressToken) -> Vec<ProgressNotificationParam> {
        self.recorder
            .progress
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    /// Resolves once `token` has received at least `count` progress notifications.
    pub async fn wait_for_progress(&self, token: &ProgressToken, count: usize) {
        bounded("progress notifications", async {
            loop {
                let notified = self.recorder.notify.notified();
                if self.progress(token).len() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await
    }

    /// Resolves once a progress notification for `token` says `needle`.
    pub async fn wait_for_message(&self, token: &ProgressToken, needle: &str) {
        bounded("a progress message", async {
            loop {
                let notified = self.recorder.notify.notified();
                let said = self
                    .progress(token)
                    .iter()
                    .any(|p| p.message.as_deref().is_some_and(|m| m.contains(needle)));
                if said {
                    return;
                }
                notified.await;
            }
        })
        .await
    }

    /// Closes stdin, waits for the process to exit, and returns everything it wrote to stderr.
    pub async fn finish(self) -> String {
        let _ = self.client.cancel().await;
        match self.stderr {
            Some(stderr) => stderr.await.expect("stderr reader"),
            None => String::new(),
        }
    }
}

/// Waits for something a test expects to happen; if it has not after
/// [`SimCoder::WAIT_LIMIT`] that is a failure naming `what`, not a hang. (A bound on a
/// wait, not a timing assertion: nothing a test waits for takes that long.)
pub async fn bounded<T>(what: &str, wait: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SimCoder::WAIT_LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("waited {:?} for {what}", SimCoder::WAIT_LIMIT))
}

fn expect_call_result(result: ServerResult) -> CallToolResult {
    match result {
        ServerResult::CallToolResult(result) => result,
        other => panic!("expected a CallToolResult, got {other:?}"),
    }
}

/// The structured result of a successful call (and checks the text copy matches).
pub fn structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "tool failed: {}", text(result));
    let value = result
        .structured_content
        .clone()
        .expect("structuredContent");
    let copy: Value = serde_json::from_str(&text(result)).expect("text content is JSON");
    assert_eq!(copy, value, "the text content mirrors structuredContent");
    value
}

/// The text of a failed call.
pub fn error_text(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected a tool error, got {}",
        text(result)
    );
    text(result)
}

pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
