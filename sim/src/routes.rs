//! The REST endpoints, request recording, fault injection and authentication.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, patch, post};
use chrono::Utc;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::faults::RecordedRequest;
use super::lifecycle;
use super::oauth::{self, Auth};
use super::state::{SimWorkspace, State as SimState};
use super::{Inner, streams};
use coder_api::*;

type AppState = Arc<Inner>;

/// A `codersdk.Response` error with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Response,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: Response {
                message: message.into(),
                ..Response::default()
            },
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> ApiError {
        self.body.detail = detail.into();
        self
    }

    pub fn validation(mut self, field: &str, detail: impl Into<String>) -> ApiError {
        self.body.validations.push(ValidationError {
            field: field.to_string(),
            detail: detail.into(),
        });
        self
    }

    /// `httpapi.ResourceNotFound`: deliberately vague, so other users' resources
    /// cannot be told apart from missing ones.
    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Resource not found or you do not have access to this resource",
        )
    }

    /// The 410 of `GET /workspaces/{id}` for a deleted workspace (coderd's wording,
    /// including its outdated `?deleted=true` hint and the ID rather than the name).
    pub fn gone(workspace_id: Uuid) -> ApiError {
        ApiError::new(
            StatusCode::GONE,
            format!(
                "Workspace {:?} was deleted, you can view this workspace by specifying '?deleted=true' and trying again.",
                workspace_id.to_string()
            ),
        )
    }

    /// What an unknown route (or a disabled watch endpoint) answers.
    pub fn route_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Route not found.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        json_response(self.status, &self.body)
    }
}

pub(crate) type ApiResult = Result<HttpResponse, ApiError>;

/// A JSON body the way `httpapi.Write` sends it.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> HttpResponse {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = HttpResponse::new(Body::from(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            resp
        }
        Err(err) => {
            tracing::error!(%err, "cannot serialize a simulator response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub id: Uuid,
}

pub(crate) fn router(inner: AppState) -> Router {
    Router::new()
        .route("/api/v2/buildinfo", get(buildinfo))
        .route("/api/v2/users/{user}", get(get_user))
        .route("/api/v2/users/{user}/workspaces", post(create_workspace))
        .route(
            "/api/v2/users/{user}/workspace/{name}",
            get(get_workspace_by_name),
        )
        .route(
            "/api/v2/organizations/{org}/members/{user}/workspaces",
            post(create_workspace_in_org),
        )
        .route("/api/v2/organizations/{org}/templates", get(org_templates))
        .route(
            "/api/v2/organizations/{org}/templates/{name}",
            get(org_template_by_name),
        )
        .route("/api/v2/templates", get(list_templates))
        .route("/api/v2/templates/{id}", get(get_template))
        .route("/api/v2/templateversions/{id}", get(get_template_version))
        .route(
            "/api/v2/templateversions/{id}/rich-parameters",
            get(get_rich_parameters),
        )
        .route("/api/v2/templateversions/{id}/presets", get(get_presets))
        .route("/api/v2/workspaces", get(list_workspaces))
        .route("/api/v2/workspaces/{id}", get(get_workspace))
        .route(
            "/api/v2/workspaces/{id}/builds",
            get(list_builds).post(create_build),
        )
        .route("/api/v2/workspaces/{id}/watch", get(streams::watch_sse))
        .route("/api/v2/workspaces/{id}/watch-ws", get(streams::watch_ws))
        .route("/api/v2/workspacebuilds/{id}", get(get_build))
        .route("/api/v2/workspacebuilds/{id}/cancel", patch(cancel_build))
        .route(
            "/api/v2/workspacebuilds/{id}/logs",
            get(streams::build_logs),
        )
        .route(
            "/api/v2/workspacebuilds/{id}/parameters",
            get(build_parameters),
        )
        .route("/api/v2/workspaceagents/{id}", get(get_agent))
        .route(
            "/api/v2/oauth2-provider/apps",
            get(oauth::list_apps).post(oauth::create_app),
        )
        .route("/api/v2/oauth2-provider/apps/{app}", get(oauth::get_app))
        .route(
            "/api/v2/oauth2-provider/apps/{app}/secrets",
            post(oauth::create_secret),
        )
        // Coder's OAuth2 provider, at the server root (NOTES §6).
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::authorization_server_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server/{*rest}",
            get(oauth::authorization_server_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(oauth::protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*rest}",
            get(oauth::protected_resource_metadata),
        )
        .route(
            "/oauth2/authorize",
            get(oauth::authorize).post(oauth::authorize),
        )
        .route("/oauth2/tokens", post(oauth::tokens))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/register", post(oauth::register))
        .route(
            "/api/v2/workspaceagents/{id}/logs",
            get(streams::agent_logs),
        )
        .fallback(|| async { ApiError::route_not_found() })
        .layer(middleware::from_fn_with_state(inner.clone(), front_door))
        .with_state(inner)
}

const SESSION_COOKIE: &str = "coder_session_token";
const SESSION_HEADER: &str = "Coder-Session-Token";
pub(crate) const SIGNED_OUT: &str =
    "You are signed out or your session has expired. Please sign in again to continue.";

/// `httpmw.APITokenFromRequest`: cookie, then query parameter, then header, then
/// `Authorization: Bearer`, then the `access_token` query parameter.
fn session_token(req: &Request) -> Option<String> {
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == SESSION_COOKIE && !v.is_empty())
        .map(|(_, v)| v.to_string());
    let query_param = |name: &str| {
        req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, v)| *k == name && !v.is_empty())
                .map(|(_, v)| v.to_string())
        })
    };
    let query = query_param(SESSION_COOKIE);
    let header = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
        .map(|v| v[7..].trim().to_string())
        .filter(|v| !v.is_empty());
    cookie
        .or(query)
        .or(header)
        .or(bearer)
        .or_else(|| query_param("access_token"))
}

/// Records the request, applies injected faults, then authenticates (everything but
/// `/buildinfo` needs a session token, as in `coderd`).
async fn front_door(State(inner): State<AppState>, req: Request, next: Next) -> HttpResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let token = session_token(&req);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 8 << 20)
        .await
        .unwrap_or_default();
    let json_body: Option<Value> = serde_json::from_slice(&bytes).ok();

    let access = inner.url();
    let oauth_route = path.starts_with("/oauth2/")
        || path.starts_with("/.well-known/oauth-")
        || path.starts_with("/api/v2/oauth2-provider/");
    let (seq, fault, auth, provider_off) = inner.update_quiet(|st| {
        let auth = token.as_deref().map(|t| st.authenticate(t, &access));
        let seq = st.record_request(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query,
            status: 0,
            body: json_body,
            token_user: auth.as_ref().and_then(Auth::username).map(str::to_string),
            at: Utc::now(),
        });
        let fault = st
            .faults
            .iter_mut()
            .find(|f| f.matches(&method, &path))
            .map(|f| {
                f.times -= 1;
                (
                    f.status,
                    f.message.clone(),
                    f.after_processing,
                    f.retry_after,
                )
            });
        st.faults.retain(|f| f.times > 0);
        (seq, fault, auth, oauth_route && !st.oauth.provider_enabled)
    });

    // A held request waits here, unprocessed, like a slow Coder.
    wait_while_held(&inner, |st| {
        st.holds
            .iter()
            .any(|(m, p)| *m == method && path.contains(p.as_str()))
    })
    .await;

    let needs_auth = path.starts_with("/api/v2/") && path != "/api/v2/buildinfo";
    let fault_response = |(status, message, retry_after): (u16, String, Option<u64>)| {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = ApiError::new(status, message).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    };
    let (early_fault, late_fault) = match fault {
        Some((status, message, true, after)) => (None, Some((status, message, after))),
        Some((status, message, false, after)) => (Some((status, message, after)), None),
        None => (None, None),
    };
    let response = if let Some(fault) = early_fault {
        fault_response(fault)
    } else if provider_off {
        // httpmw.RequireExperiment, in front of every OAuth2 route.
        ApiError::new(
            StatusCode::FORBIDDEN,
            "OAuth2 Provider functionality requires enabling the 'oauth2' experiment.",
        )
        .into_response()
    } else if needs_auth && !matches!(auth, Some(Auth::User { .. })) {
        let refused = match &auth {
            None => ApiError::new(StatusCode::UNAUTHORIZED, SIGNED_OUT).detail(format!(
                "Cookie {SESSION_COOKIE:?} or query parameter must be provided."
            )),
            Some(Auth::Expired { at, .. }) => ApiError::new(StatusCode::UNAUTHORIZED, SIGNED_OUT)
                .detail(format!("API key expired at {:?}.", oauth::go_time(*at))),
            Some(Auth::WrongAudience { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "Token audience validation failed")
            }
            Some(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, SIGNED_OUT).detail("API key is invalid.")
            }
        };
        // RFC 6750 + RFC 9728, as coderd's API-key middleware.
        let challenge = oauth::www_authenticate(&access, refused.status, &refused.body);
        let mut response = refused.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        response
    } else {
        let mut req = Request::from_parts(parts, Body::from(bytes));
        if let Some(Auth::User { id, .. }) = auth {
            req.extensions_mut().insert(Caller { id });
        }
        let response = next.run(req).await;
        // A held answer: the request went through, but its answer waits, like a Coder
        // whose reply is still on the wire when the client dies.
        wait_while_held(&inner, |st| {
            st.response_holds
                .iter()
                .any(|(m, p)| *m == method && path.contains(p.as_str()))
        })
        .await;
        match late_fault {
            Some(fault) => fault_response(fault),
            None => response,
        }
    };
    let status = response.status().as_u16();
    inner.update_quiet(|st| st.set_request_status(seq, status));
    response
}

/// Waits while `held` says so, checking again after every state change (so a release
/// lets the request through at once, with no polling).
async fn wait_while_held(inner: &AppState, held: impl Fn(&SimState) -> bool) {
    let mut changes = inner.subscribe();
    loop {
        changes.borrow_and_update();
        if !inner.read(&held) {
            return;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = inner.shutdown_token().cancelled() => return,
        }
    }
}

// ----- helpers shared with the stream handlers -----

/// `httpmw` UUID path parameters: 400 for anything that is not a UUID.
pub(crate) fn parse_uuid(raw: &str, param: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid UUID {raw:?}."))
            .detail(err.to_string())
            .validation(param, "Invalid UUID")
    })
}

/// The caller's workspace `id` (other users' workspaces are "not found").
pub(crate) fn owned_workspace<'a>(
    st: &'a SimState,
    id: Uuid,
    caller: &Caller,
) -> Result<&'a SimWorkspace, ApiError> {
    st.workspace(id)
        .filter(|w| w.owner_id == caller.id)
        .ok_or_else(ApiError::not_found)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn include_deleted(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("include_deleted").map(String::as_str) {
        None | Some("") => Ok(false),
        Some(raw) => parse_bool(raw).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Invalid boolean value {raw:?} for \"include_deleted\" query param."),
            )
            .validation("deleted", "Must be a valid boolean")
        }),
    }
}

/// `key:value` terms and free text of a `q` search query.
fn search_terms(q: &HashMap<String, String>) -> (HashMap<String, String>, Vec<String>) {
    let mut terms = HashMap::new();
    let mut text = Vec::new();
    for word in q
        .get("q")
        .map(String::as_str)
        .unwrap_or("")
        .split_whitespace()
    {
        match word.split_once(':') {
            Some((k, v)) => {
                terms.insert(k.to_ascii_lowercase(), v.to_string());
            }
            None => text.push(word.to_ascii_lowercase()),
        }
    }
    (terms, text)
}

fn body_json(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, "Request body must be valid JSON.")
            .detail(err.to_string())
    })
}

// ----- handlers -----

async fn buildinfo(State(inner): State<AppState>) -> HttpResponse {
    let version = SimState::version();
    json_response(
        StatusCode::OK,
        &BuildInfoResponse {
            version: version.to_string(),
            dashboard_url: inner.url(),
            external_url: format!("https://github.com/coder/coder/releases/tag/{version}"),
        },
    )
}

async fn get_user(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult {
    inner.read(|st| {
        let user = st
            .resolve_user(&user, caller.id)
            .ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, user))
    })
}

async fn create_workspace(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    // coderd checks the name, then inserts: with the race window held open, a create of
    // a name that was free at its check can find it taken at its insert.
    let raced = inner.read(|st| st.create_race);
    if raced {
        let name = body_json(&body)?
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        if inner.read(|st| st.name_taken(caller.id, &name)) {
            return create_workspace_for(&inner, &caller, &user, &body, false);
        }
        inner.update_quiet(|st| st.creates_past_name_check += 1);
        wait_while_held(&inner, |st| st.create_race).await;
    }
    create_workspace_for(&inner, &caller, &user, &body, raced)
}

async fn create_workspace_in_org(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((org, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let known = inner.read(|st| org == st.org.name || org == st.org.id.to_string());
    if !known {
        return Err(ApiError::not_found());
    }
    create_workspace_for(&inner, &caller, &user, &body, false)
}

fn create_workspace_for(
    inner: &Arc<Inner>,
    caller: &Caller,
    user: &str,
    body: &Bytes,
    raced: bool,
) -> ApiResult {
    let mut raw = body_json(body)?;
    // A missing name is an empty one, which then fails validation like in coderd.
    if let Some(obj) = raw.as_object_mut() {
        obj.entry("name").or_insert(json!(""));
    }
    let req: CreateWorkspaceRequest = serde_json::from_value(raw).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, "Request body must be valid JSON.")
            .detail(err.to_string())
    })?;
    let (json, start) = inner.update(|st| {
        let owner = st
            .resolve_user(user, caller.id)
            .map(|u| u.id)
            .ok_or_else(ApiError::not_found)?;
        // Every simulated user is a plain member: no creating for somebody else.
        if owner != caller.id {
            return Err(ApiError::not_found());
        }
        let (id, start) = st.create_workspace(owner, caller.id, &req, raced)?;
        // Render now, before the build task can move the job past `pending`.
        st.record_snapshots();
        let ws = st.workspace(id).expect("just created");
        let snap = st.current(ws).expect("just rendered");
        Ok((snap.json.clone(), start))
    })?;
    lifecycle::spawn_build(inner.clone(), start);
    // coderd answers 201 Created (its swagger says 200).
    Ok(json_response(StatusCode::CREATED, &json))
}

fn template_json(st: &SimState, id: Uuid) -> Option<Value> {
    st.template(id)
        .and_then(|t| serde_json::to_value(&t.template).ok())
}

async fn list_templates(
    State(inner): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    let (terms, text) = search_terms(&q);
    // coderd hides deprecated templates unless the query filters on `deprecated:`,
    // and then returns exactly the ones matching the filter.
    let deprecated = terms
        .get("deprecated")
        .and_then(|v| parse_bool(v))
        .unwrap_or(false);
    let name = terms.get("name").or(terms.get("exact_name")).cloned();
    inner.read(|st| {
        let mut list: Vec<&Template> = st
            .templates
            .iter()
            .map(|t| &t.template)
            .filter(|t| t.deprecated == deprecated)
            .filter(|t| name.as_ref().is_none_or(|n| t.name.contains(n.as_str())))
            .filter(|t| text.iter().all(|w| t.name.to_ascii_lowercase().contains(w)))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        json_response(StatusCode::OK, &list)
    })
}

async fn get_template(State(inner): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_uuid(&id, "template")?;
    inner.read(|st| {
        template_json(st, id)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::not_found)
    })
}

fn org_matches(st: &SimState, org: &str) -> bool {
    org == st.org.name || org == st.org.id.to_string()
}

async fn org_templates(State(inner): State<AppState>, Path(org): Path<String>) -> ApiResult {
    inner.read(|st| {
        if !org_matches(st, &org) {
            return Err(ApiError::not_found());
        }
        let mut list: Vec<&Template> = st
            .templates
            .iter()
            .map(|t| &t.template)
            .filter(|t| !t.deprecated)
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(json_response(StatusCode::OK, &list))
    })
}

async fn org_template_by_name(
    State(inner): State<AppState>,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult {
    inner.read(|st| {
        if !org_matches(st, &org) {
            return Err(ApiError::not_found());
        }
        st.templates
            .iter()
            .find(|t| t.template.name == name)
            .map(|t| json_response(StatusCode::OK, &t.template))
            .ok_or_else(ApiError::not_found)
    })
}

async fn get_template_version(State(inner): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_uuid(&id, "templateversion")?;
    inner.read(|st| {
        let t = st.template_by_version(id).ok_or_else(ApiError::not_found)?;
        let created = t.template.created_at;
        let job = ProvisionerJob {
            id: t.version_job_id,
            status: ProvisionerJobStatus::Succeeded,
            error: String::new(),
            error_code: None,
            created_at: created,
            started_at: Some(created),
            completed_at: Some(created),
            canceled_at: None,
            queue_position: 0,
            queue_size: 0,
        };
        let mut job = serde_json::to_value(job).unwrap_or_default();
        if let Some(obj) = job.as_object_mut() {
            obj.insert("type".into(), json!("template_version_import"));
            obj.insert("organization_id".into(), json!(st.org.id));
            obj.insert("input".into(), json!({"template_version_id": t.version_id}));
            obj.insert("logs_overflowed".into(), json!(false));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": t.version_id,
                "template_id": t.template.id,
                "organization_id": st.org.id,
                "name": t.version_name,
                "message": "",
                "readme": format!("# {}\n\n{}\n", t.template.display_name, t.template.description),
                "archived": false,
                "has_external_agent": false,
                "warnings": [],
                "created_at": created,
                "updated_at": created,
                "created_by": {"id": st.org.admin_id, "username": "admin"},
                "job": job,
                "matched_provisioners": {"count": 1, "available": 1},
            }),
        ))
    })
}

async fn get_rich_parameters(State(inner): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_uuid(&id, "templateversion")?;
    inner.read(|st| {
        st.template_by_version(id)
            .map(|t| json_response(StatusCode::OK, &t.params))
            .ok_or_else(ApiError::not_found)
    })
}

/// `GET /templateversions/{id}/presets`: PascalCase keys, and `null` for a version
/// without presets (a Go nil slice), as coderd sends them.
async fn get_presets(State(inner): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_uuid(&id, "templateversion")?;
    inner.read(|st| {
        let t = st.template_by_version(id).ok_or_else(ApiError::not_found)?;
        let presets = (!t.presets.is_empty()).then_some(&t.presets);
        Ok(json_response(StatusCode::OK, &presets))
    })
}

async fn get_workspace(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspace")?;
    let show_deleted = include_deleted(&q)?;
    inner.read(|st| {
        let ws = owned_workspace(st, id, &caller)?;
        if ws.deleted && !show_deleted {
            return Err(ApiError::gone(ws.id));
        }
        let snap = st.current(ws).ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, &snap.json))
    })
}

async fn get_workspace_by_name(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((user, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let show_deleted = include_deleted(&q)?;
    inner.read(|st| {
        let owner = st
            .resolve_user(&user, caller.id)
            .map(|u| u.id)
            .ok_or_else(ApiError::not_found)?;
        let by_name = |deleted: bool| {
            st.workspaces.iter().rev().find(|w| {
                w.owner_id == owner && w.name.eq_ignore_ascii_case(&name) && w.deleted == deleted
            })
        };
        // Like coderd: the live workspace, else (if asked) the latest deleted one.
        let ws = by_name(false)
            .or_else(|| show_deleted.then(|| by_name(true)).flatten())
            .filter(|w| w.owner_id == caller.id)
            .ok_or_else(ApiError::not_found)?;
        let snap = st.current(ws).ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, &snap.json))
    })
}

async fn list_workspaces(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    let (terms, text) = search_terms(&q);
    inner.read(|st| {
        let owner_ok = |w: &SimWorkspace| match terms.get("owner").map(String::as_str) {
            None | Some("me") => true,
            Some(name) => st
                .user(w.owner_id)
                .is_some_and(|u| u.username.eq_ignore_ascii_case(name)),
        };
        let deleted = terms
            .get("deleted")
            .and_then(|v| parse_bool(v))
            .unwrap_or(false);
        let list: Vec<Value> = st
            .workspaces
            .iter()
            .filter(|w| w.owner_id == caller.id && w.deleted == deleted && owner_ok(w))
            .filter(|w| {
                let name = terms.get("name").map(|n| n.to_ascii_lowercase());
                let lower = w.name.to_ascii_lowercase();
                name.is_none_or(|n| lower.contains(&n)) && text.iter().all(|t| lower.contains(t))
            })
            .filter_map(|w| st.current(w))
            .filter(|s| {
                terms
                    .get("template")
                    .is_none_or(|t| s.workspace.template_name == *t)
                    && terms
                        .get("status")
                        .is_none_or(|x| s.workspace.latest_build.status.as_str() == x)
            })
            .map(|s| s.json.clone())
            .collect();
        json_response(
            StatusCode::OK,
            &json!({"workspaces": list, "count": list.len()}),
        )
    })
}

async fn list_builds(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspace")?;
    inner.read(|st| {
        let ws = owned_workspace(st, id, &caller)?;
        let builds: Vec<Value> = ws
            .builds
            .iter()
            .rev()
            .filter_map(|b| st.render_build(ws, b).map(|(_, json)| json))
            .collect();
        Ok(json_response(StatusCode::OK, &builds))
    })
}

async fn create_build(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_uuid(&id, "workspace")?;
    let raw = body_json(&body)?;
    let transition = raw.get("transition").and_then(Value::as_str).unwrap_or("");
    let invalid_transition = || {
        ApiError::new(StatusCode::BAD_REQUEST, "Validation failed.").validation(
            "transition",
            format!("Validation failed for tag \"oneof\" with value: \"{transition}\""),
        )
    };
    let req: CreateWorkspaceBuildRequest =
        serde_json::from_value(raw.clone()).map_err(|_| invalid_transition())?;
    if req.transition == WorkspaceTransition::Unknown {
        return Err(invalid_transition());
    }
    let (json, start) = inner.update(|st| {
        let ws = owned_workspace(st, id, &caller)?;
        if let Some(version) = req.template_version_id {
            let matches = st.template(ws.template_id).map(|t| t.version_id) == Some(version);
            if !matches {
                return Err(
                    ApiError::new(StatusCode::BAD_REQUEST, "Template version not found.")
                        .validation("template_version_id", "template version not found"),
                );
            }
        }
        let start = st.new_build(
            id,
            req.transition,
            caller.id,
            "initiator",
            req.rich_parameter_values.clone(),
        )?;
        let (ws, b) = st.find_build(start.build_id).expect("just created");
        let (_, json) = st.render_build(ws, b).ok_or_else(ApiError::not_found)?;
        Ok((json, start))
    })?;
    lifecycle::spawn_build(inner.clone(), start);
    // coderd answers 201 Created (its swagger says 200).
    Ok(json_response(StatusCode::CREATED, &json))
}

async fn get_build(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspacebuild")?;
    inner.read(|st| {
        let (ws, b) = st
            .find_build(id)
            .filter(|(w, _)| w.owner_id == caller.id)
            .ok_or_else(ApiError::not_found)?;
        let (_, json) = st.render_build(ws, b).ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, &json))
    })
}

async fn cancel_build(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspacebuild")?;
    let expect = q.get("expect_status").cloned();
    inner.update(|st| {
        let b = st
            .find_build(id)
            .filter(|(w, _)| w.owner_id == caller.id)
            .map(|(_, b)| b)
            .ok_or_else(ApiError::not_found)?;
        if let Some(expect) = expect.filter(|e| !e.is_empty()) {
            let is_completed = b.job.completed_at.is_some();
            if !is_completed && b.job.status.as_str() != expect {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "Job is not in the expected state.",
                )
                .detail(format!(
                    "Expected status {expect:?}, but job is {:?}.",
                    b.job.status.as_str()
                )));
            }
        }
        st.request_cancel(id)?;
        Ok(json_response(
            StatusCode::OK,
            &Response {
                message: "Job has been marked as canceled...".to_string(),
                ..Response::default()
            },
        ))
    })
}

async fn build_parameters(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspacebuild")?;
    inner.read(|st| {
        let (_, b) = st
            .find_build(id)
            .filter(|(w, _)| w.owner_id == caller.id)
            .ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, &b.parameters))
    })
}

async fn get_agent(
    State(inner): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_uuid(&id, "workspaceagent")?;
    inner.read(|st| {
        let owned = st
            .find_agent(id)
            .is_some_and(|(w, _)| w.owner_id == caller.id);
        if !owned {
            return Err(ApiError::not_found());
        }
        let (_, json) = st.render_agent(id).ok_or_else(ApiError::not_found)?;
        Ok(json_response(StatusCode::OK, &json))
    })
}
