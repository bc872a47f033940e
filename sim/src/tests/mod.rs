//! Tests of the simulator through its HTTP API, with the same kind of client the
//! product uses (reqwest, tokio-tungstenite). Nothing here sleeps to synchronize:
//! tests wait on [`SimCoder::wait_until`] or on stream messages, and only bound
//! those waits with a timeout so a bug fails the test instead of hanging it.

mod build_tests;
mod oauth_tests;
mod preset_tests;
mod rest_tests;
mod stream_tests;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use uuid::Uuid;

use super::*;
use coder_api::*;

/// The Coder API reference this simulator must match (the product's `spec/`).
const SPEC: &str = include_str!("../../../spec/coder-openapi-subset.json");

pub(super) const ALICE: &str = "alice0000a-AliceSessionToken00000000";
pub(super) const BOB: &str = "bob000000b-BobSessionToken0000000000";

/// Bounds a wait; generous, because it only matters when something is broken.
pub(super) async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .expect("timed out waiting for the simulator")
}

/// A deployment with users alice and bob and a `docker` template with the demo's
/// parameters and the default (fast) plan.
pub(super) async fn sim_with_docker() -> (SimCoder, Template) {
    let sim = SimCoder::start().await.expect("start simulator");
    sim.add_user("alice", ALICE);
    sim.add_user("bob", BOB);
    let template =
        sim.add_template(TemplateSpec::named("docker").with_parameters(seed::docker_parameters()));
    (sim, template)
}

/// A JSON client for one user.
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(sim: &SimCoder, token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.url(),
            token: Some(token.to_string()),
        }
    }

    pub fn anonymous(sim: &SimCoder) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.url(),
            token: None,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v2{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("Coder-Session-Token", token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, None).await
    }

    /// Creates a workspace (asserting 201 and a conforming body).
    pub async fn create(
        &self,
        template: &Template,
        name: &str,
        params: &[(&str, &str)],
    ) -> Workspace {
        let body = create_body(template.id, name, params);
        assert_conforms("codersdk.CreateWorkspaceRequest", &body);
        let (status, json) = self.post("/users/me/workspaces", &body).await;
        assert_eq!(status, 201, "create failed: {json}");
        assert_conforms("codersdk.Workspace", &json);
        serde_json::from_value(json).expect("Workspace")
    }
}

pub(super) fn create_body(template_id: Uuid, name: &str, params: &[(&str, &str)]) -> Value {
    let req = CreateWorkspaceRequest {
        name: name.to_string(),
        template_id: Some(template_id),
        template_version_id: None,
        rich_parameter_values: params
            .iter()
            .map(|(n, v)| WorkspaceBuildParameter {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        template_version_preset_id: None,
    };
    serde_json::to_value(req).expect("serialize")
}

// ----- spec validation -----

/// Swagger 2.0 definitions, made strict: an object with `properties` accepts no other
/// property, so a field the simulator invents (or misspells) fails validation.
fn strict_definitions() -> &'static Value {
    static DEFS: OnceLock<Value> = OnceLock::new();
    DEFS.get_or_init(|| {
        let spec: Value = serde_json::from_str(SPEC).expect("spec is JSON");
        let mut defs = spec["definitions"].clone();
        fn strictify(v: &mut Value) {
            match v {
                Value::Object(obj) => {
                    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
                        obj.insert("additionalProperties".into(), json!(false));
                    }
                    obj.values_mut().for_each(strictify);
                }
                Value::Array(items) => items.iter_mut().for_each(strictify),
                _ => {}
            }
        }
        strictify(&mut defs);
        defs
    })
}

/// Asserts that `value` conforms to `#/definitions/<definition>` of the spec.
/// Formats are not checked: the spec has quirks (e.g. a "url" format on names).
pub(super) fn assert_conforms(definition: &str, value: &Value) {
    let schema = json!({
        "$ref": format!("#/definitions/{definition}"),
        "definitions": strict_definitions(),
    });
    let validator = jsonschema::draft4::options()
        .should_validate_formats(false)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema for {definition}: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{definition} does not conform:\n  {}\nbody: {value:#}",
        errors.join("\n  ")
    );
}

/// [`assert_conforms`] for every element of a JSON array.
pub(super) fn assert_each_conforms(definition: &str, value: &Value) {
    let items = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"));
    for item in items {
        assert_conforms(definition, item);
    }
}

// ----- streams -----

pub(super) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn ws_connect(
    sim: &SimCoder,
    path: &str,
    token: Option<&str>,
) -> Result<WsStream, tungstenite::Error> {
    let url = format!("{}/api/v2{path}", sim.url().replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    if let Some(token) = token {
        req.headers_mut()
            .insert("Coder-Session-Token", token.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(req).await.map(|(s, _)| s)
}

/// The next text message as JSON; None once the server closed (the close frame is
/// returned as `Err` with its code).
pub(super) async fn ws_next_json(ws: &mut WsStream) -> Result<Value, Option<u16>> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str()).expect("JSON message"));
            }
            Some(Ok(WsMessage::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// A minimal SSE reader over a reqwest body.
pub(super) struct SseReader {
    body:
        std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes_compat::Bytes>> + Send>>,
    buf: String,
}

/// reqwest's Bytes type without naming the `bytes` crate (not a direct dependency).
mod bytes_compat {
    pub type Bytes = axum::body::Bytes;
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event as (event name, parsed data); Err(true) when the body failed
    /// (connection cut), Err(false) when it ended cleanly.
    pub async fn next(&mut self) -> Result<(String, Option<Value>), bool> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = None;
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).expect("SSE data is JSON"));
                    }
                }
                return Ok((event, data));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                Some(Err(_)) => return Err(true),
                None => return Err(false),
            }
        }
    }
}

/// Status, agent status and agent lifecycle of a rendered workspace, for compact
/// sequence assertions.
pub(super) fn phase(ws: &Workspace) -> String {
    let build = &ws.latest_build;
    match build.first_agent() {
        Some(a) => format!("{}/{}/{}", build.status, a.status, a.lifecycle_state),
        None => build.status.to_string(),
    }
}
