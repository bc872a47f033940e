//! A typed client for the Coder REST API subset we use.
//!
//! Idempotent GETs are retried with exponential backoff on network errors, 429 and
//! 5xx; POSTs never are (the engine looks a workspace up by name instead of
//! retrying a create blindly).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use super::error::CoderError;
use super::token::SessionToken;
use super::types::*;

/// The header Coder reads the session token from (`CoderSessionToken` in the spec).
pub const SESSION_TOKEN_HEADER: &str = "Coder-Session-Token";

/// How idempotent requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// A Coder deployment seen through one user's session token.
#[derive(Clone)]
pub struct CoderClient {
    base: String,
    token: SessionToken,
    http: reqwest::Client,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl std::fmt::Debug for CoderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoderClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

impl CoderClient {
    /// `base` is the deployment URL, e.g. `https://coder.example.com`.
    pub fn new(base: &str, token: SessionToken) -> Result<Self, CoderError> {
        let base = normalize_base_url(base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("coder-workspace-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CoderError::Network {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base,
            token,
            http,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same deployment seen with another user's token (shares the connection pool).
    pub fn with_token(&self, token: SessionToken) -> Self {
        Self {
            token,
            ..self.clone()
        }
    }

    /// The deployment URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &SessionToken {
        &self.token
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https://coder.example.com/api/v2{path}`.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}/api/v2{}", self.base, path)
    }

    /// The workspace's page in the Coder dashboard.
    pub fn dashboard_url(&self, owner: &str, workspace: &str) -> String {
        format!("{}/@{}/{}", self.base, owner, workspace)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, self.api_url(path))
            .timeout(self.request_timeout);
        if let Ok(mut token) = reqwest::header::HeaderValue::from_str(self.token.expose()) {
            // Sensitive headers are left out of the `Debug` output of requests.
            token.set_sensitive(true);
            request = request.header(SESSION_TOKEN_HEADER, token);
        }
        request
    }

    // ---- endpoints -------------------------------------------------------------

    /// `GET /users/me`: who the token belongs to (and whether it is valid at all).
    pub async fn me(&self) -> Result<User, CoderError> {
        self.get("/users/me").await
    }

    /// `GET /buildinfo` (no authentication needed).
    pub async fn build_info(&self) -> Result<BuildInfoResponse, CoderError> {
        self.get("/buildinfo").await
    }

    /// `GET /buildinfo` once, with a short timeout: for readiness probes, which must
    /// answer fast rather than wait through retries.
    pub async fn probe(&self) -> Result<BuildInfoResponse, CoderError> {
        let request = self
            .http
            .get(self.api_url("/buildinfo"))
            .timeout(Duration::from_secs(5));
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CoderError::Decode {
            what: "GET /buildinfo".into(),
            reason: e.to_string(),
        })
    }

    /// `GET /templates`: the templates the user can use (Coder leaves deprecated ones out).
    pub async fn templates(&self) -> Result<Vec<Template>, CoderError> {
        self.get("/templates").await
    }

    /// `GET /templates/{id}`.
    pub async fn template(&self, id: Uuid) -> Result<Template, CoderError> {
        self.get(&format!("/templates/{id}")).await
    }

    /// `GET /templateversions/{id}/rich-parameters`.
    pub async fn rich_parameters(
        &self,
        template_version: Uuid,
    ) -> Result<Vec<TemplateVersionParameter>, CoderError> {
        self.get(&format!(
            "/templateversions/{template_version}/rich-parameters"
        ))
        .await
    }

    /// `POST /users/me/workspaces`. Never retried.
    pub async fn create_workspace(
        &self,
        request: &CreateWorkspaceRequest,
    ) -> Result<Workspace, CoderError> {
        self.send_once(Method::POST, "/users/me/workspaces", Some(request))
            .await
    }

    /// `GET /workspaces/{id}`; a deleted workspace answers 410, a foreign or unknown one 404.
    pub async fn workspace(&self, id: Uuid) -> Result<Workspace, CoderError> {
        self.get(&format!("/workspaces/{id}")).await
    }

    /// `GET /users/me/workspace/{name}`.
    pub async fn workspace_by_name(&self, name: &str) -> Result<Workspace, CoderError> {
        self.get(&format!("/users/me/workspace/{name}")).await
    }

    /// `POST /workspaces/{id}/builds` (start, stop or delete). Never retried.
    pub async fn create_build(
        &self,
        workspace: Uuid,
        request: &CreateWorkspaceBuildRequest,
    ) -> Result<WorkspaceBuild, CoderError> {
        self.send_once(
            Method::POST,
            &format!("/workspaces/{workspace}/builds"),
            Some(request),
        )
        .await
    }

    /// `GET /workspacebuilds/{id}/logs?after=N` (the log so far, not followed).
    pub async fn build_logs(
        &self,
        build: Uuid,
        after: i64,
    ) -> Result<Vec<ProvisionerJobLog>, CoderError> {
        self.get(&format!("/workspacebuilds/{build}/logs?after={after}"))
            .await
    }

    /// `GET /workspacebuilds/{id}/parameters`: the parameter values a build used.
    pub async fn build_parameters(
        &self,
        build: Uuid,
    ) -> Result<Vec<WorkspaceBuildParameter>, CoderError> {
        self.get(&format!("/workspacebuilds/{build}/parameters"))
            .await
    }

    /// `GET /workspaceagents/{id}/logs`: the agent's startup-script output.
    pub async fn agent_logs(&self, agent: Uuid) -> Result<Vec<WorkspaceAgentLog>, CoderError> {
        self.get(&format!("/workspaceagents/{agent}/logs")).await
    }

    // ---- plumbing --------------------------------------------------------------

    /// A GET, retried with backoff while the failure is transient.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CoderError> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match self.send_once::<T, ()>(Method::GET, path, None).await {
                Err(err) if err.is_transient() && attempt < self.retry.attempts => {
                    tracing::debug!(%path, attempt, error = %err, "retrying Coder request");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CoderError> {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        let status = response.status();
        tracing::debug!(%method, %path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "coder request");
        let bytes = response.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CoderError::Decode {
            what: format!("{method} {path}"),
            reason: e.to_string(),
        })
    }

    pub(crate) fn network_error(&self, err: reqwest::Error) -> CoderError {
        // reqwest errors name the URL (never the headers), so they cannot carry the token.
        let reason = if err.is_timeout() {
            "the request timed out".to_owned()
        } else if err.is_connect() {
            format!("connection failed ({})", root_cause(&err))
        } else {
            root_cause(&err)
        };
        CoderError::Network {
            url: self.base.clone(),
            reason,
        }
    }
}

/// Turns an error status and its body into a [`CoderError::Api`].
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> CoderError {
    let response = serde_json::from_slice::<Response>(body).unwrap_or_else(|_| Response {
        message: String::from_utf8_lossy(body).chars().take(300).collect(),
        ..Response::default()
    });
    CoderError::Api {
        status: status.as_u16(),
        response,
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut source = err;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

fn normalize_base_url(raw: &str) -> Result<String, CoderError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| CoderError::InvalidUrl(format!("{trimmed:?} is not a valid URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CoderError::InvalidUrl(format!(
            "{trimmed:?} must start with https:// or http://"
        )));
    }
    // Credentials in the URL would be echoed in every error and dashboard link we print;
    // Coder authenticates with the session token, so refuse them without repeating them.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(CoderError::InvalidUrl(format!(
            "\"{}://…@{}\" contains a user name or password; remove it and pass the session token with CODER_SESSION_TOKEN",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default()
        )));
    }
    Ok(trimmed.to_owned())
}
