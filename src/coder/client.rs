//! A typed client for the Coder REST API subset we use.
//!
//! Idempotent GETs are retried with exponential backoff on network errors, 429 and
//! 5xx; POSTs never are (the engine looks a workspace up by name instead of
//! retrying a create blindly).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use super::error::CoderError;
use super::token::{LiveToken, SessionToken};
use super::types::*;

/// The header Coder reads the session token from (`CoderSessionToken` in the spec).
pub const SESSION_TOKEN_HEADER: &str = "Coder-Session-Token";

/// How idempotent requests are retried: exponential backoff with full jitter (each wait
/// anywhere between nothing and the backoff's delay, so that clients that failed together
/// do not come back together), or what Coder's `Retry-After` asks for.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: usize,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error comes back at once
    /// (and says how long Coder asked to wait).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// A Coder deployment seen through one user's session token.
#[derive(Clone)]
pub struct CoderClient {
    base: String,
    token: Credential,
    http: reqwest::Client,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// Retries that would end after this are not made (the call's own time limit).
    deadline: Option<tokio::time::Instant>,
    /// What never changes once a template version exists, shared by every user's client.
    versions: VersionCache,
}

/// The token requests carry: one fixed token, or a sign-in's current one.
#[derive(Clone)]
enum Credential {
    Fixed(SessionToken),
    Live(Arc<LiveToken>),
}

/// A template version's rich parameters and presets, which Coder never changes once the
/// version is imported (its Terraform is fixed): asked once per version, not on every
/// `read_template`, `list_templates` page and `create_workspace`. Shared by every
/// caller's client, which is safe because a version id is only ever looked up after
/// the caller's own token has read the template it belongs to. Only answers are kept
/// (errors are asked again), concurrent asks for one version share one request, and an
/// entry goes after an hour (a deleted version must not be kept forever).
#[derive(Clone)]
struct VersionCache {
    parameters: moka::future::Cache<Uuid, Arc<Vec<TemplateVersionParameter>>>,
    presets: moka::future::Cache<Uuid, Arc<Vec<Preset>>>,
}

impl VersionCache {
    const CAPACITY: u64 = 1_000;
    const TTL: Duration = Duration::from_secs(3600);

    fn new() -> VersionCache {
        VersionCache {
            parameters: moka::future::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_live(Self::TTL)
                .build(),
            presets: moka::future::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_live(Self::TTL)
                .build(),
        }
    }
}

impl std::fmt::Debug for CoderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoderClient")
            .field("base", &self.base)
            .field("token", &self.token())
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
            token: Credential::Fixed(token),
            http,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            deadline: None,
            versions: VersionCache::new(),
        })
    }

    /// The same client for a call that must be answered by `deadline`: its retries stop
    /// where waiting would take it past it.
    pub fn within(&self, deadline: Option<tokio::time::Instant>) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    /// The same deployment seen with another user's token (shares the connection pool).
    pub fn with_token(&self, token: SessionToken) -> Self {
        Self {
            token: Credential::Fixed(token),
            ..self.clone()
        }
    }

    /// The same deployment seen with a sign-in's token that may change during a call.
    pub fn with_live_token(&self, token: Arc<LiveToken>) -> Self {
        Self {
            token: Credential::Live(token),
            ..self.clone()
        }
    }

    /// The deployment URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The token to send now.
    pub fn token(&self) -> SessionToken {
        match &self.token {
            Credential::Fixed(token) => token.clone(),
            Credential::Live(live) => live.current(),
        }
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

    fn request_with(&self, token: &SessionToken, method: Method, path: &str) -> RequestBuilder {
        let mut request = self
            .http
            .request(method, self.api_url(path))
            .timeout(self.request_timeout);
        if let Ok(mut token) = reqwest::header::HeaderValue::from_str(token.expose()) {
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

    /// `GET /users/me` once, never retried: `serve` checks each client's token with it,
    /// and a failing Coder must be reported at once, not retried for every token.
    pub async fn me_once(&self) -> Result<User, CoderError> {
        self.send_once::<User, ()>(Method::GET, "/users/me", None)
            .await
    }

    /// `GET /buildinfo` (no authentication needed).
    pub async fn build_info(&self) -> Result<BuildInfoResponse, CoderError> {
        self.get("/buildinfo").await
    }

    /// `GET /buildinfo` once, with a short timeout: for readiness probes, which must
    /// answer fast rather than wait through retries.
    pub async fn probe(&self) -> Result<BuildInfoResponse, CoderError> {
        self.get_public_once(self.api_url("/buildinfo"), Duration::from_secs(5))
            .await
    }

    /// `GET /.well-known/oauth-authorization-server` once: Coder's RFC 8414 metadata, or
    /// its error while its `oauth2` experiment is off (403).
    pub async fn oauth_metadata(&self, timeout: Duration) -> Result<serde_json::Value, CoderError> {
        let url = format!("{}/.well-known/oauth-authorization-server", self.base);
        self.get_public_once(url, timeout).await
    }

    /// One GET of a route that needs no token, not retried: for questions that must be
    /// answered fast rather than wait through retries.
    async fn get_public_once<T: DeserializeOwned>(
        &self,
        url: String,
        timeout: Duration,
    ) -> Result<T, CoderError> {
        let response = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.network_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CoderError::Decode {
            what: format!("GET {url}"),
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
        let path = format!("/templateversions/{template_version}/rich-parameters");
        let fetch = self.get(&path);
        let cached = self
            .versions
            .parameters
            .try_get_with(template_version, async { fetch.await.map(Arc::new) })
            .await
            .map_err(|err: Arc<CoderError>| (*err).clone())?;
        Ok(cached.as_ref().clone())
    }

    /// `GET /templateversions/{id}/presets`: the version's presets (Coder sends their keys
    /// in PascalCase and `null` for none; see [`Preset`]). A Coder older than presets
    /// answers 404: that is no presets.
    pub async fn presets(&self, template_version: Uuid) -> Result<Vec<Preset>, CoderError> {
        let path = format!("/templateversions/{template_version}/presets");
        let fetch = async {
            match self.get::<Option<Vec<Preset>>>(&path).await {
                Ok(presets) => Ok(Arc::new(presets.unwrap_or_default())),
                Err(err) if err.status() == Some(404) => Ok(Arc::new(Vec::new())),
                Err(err) => Err(err),
            }
        };
        let cached = self
            .versions
            .presets
            .try_get_with(template_version, fetch)
            .await
            .map_err(|err: Arc<CoderError>| (*err).clone())?;
        Ok(cached.as_ref().clone())
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

    /// A GET, retried while the failure is transient (network, 429, 5xx): after Coder's
    /// `Retry-After` when it gives one, else after a fully jittered exponential backoff;
    /// never past the call's deadline.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CoderError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.first_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.attempts.saturating_sub(1));
        let retry = &self.retry;
        let deadline = self.deadline;
        (|| self.send_once::<T, ()>(Method::GET, path, None))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(CoderError::is_transient)
            .adjust(|err: &CoderError, delay: Option<Duration>| {
                let wait = match err.retry_after() {
                    Some(after) if after > retry.max_retry_after => return None,
                    Some(after) => after,
                    // Full jitter: anywhere in [0, delay).
                    None => delay?.mul_f64(fastrand::f64()),
                };
                match deadline {
                    Some(deadline) if tokio::time::Instant::now() + wait >= deadline => None,
                    _ => Some(wait),
                }
            })
            .notify(|err: &CoderError, wait: Duration| {
                tracing::debug!(%path, error = %err, wait_ms = wait.as_millis() as u64, "retrying Coder request");
            })
            .await
    }

    async fn send_once<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CoderError> {
        let token = self.token();
        let answer = self.send_with(&token, method.clone(), path, body).await;
        // A sign-in's token may have been refreshed (and the one used deleted by Coder)
        // since this call began: once more with the current one. Coder checks the token
        // before doing anything, so even a POST refused with 401 did nothing.
        if let (Err(err), Credential::Live(live)) = (&answer, &self.token)
            && err.status() == Some(401)
            && let Some(newer) = live.renewed(&token).await
        {
            tracing::debug!(%method, %path, "Coder refused the sign-in's token; sending with its renewed one");
            return self.send_with(&newer, method, path, body).await;
        }
        answer
    }

    async fn send_with<T: DeserializeOwned, B: Serialize>(
        &self,
        token: &SessionToken,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CoderError> {
        let mut request = self.request_with(token, method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        let status = response.status();
        tracing::debug!(%method, %path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "coder request");
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| self.network_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes).with_retry_after(retry_after));
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
        retry_after: None,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
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
