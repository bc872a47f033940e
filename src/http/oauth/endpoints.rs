//! The OAuth endpoints: metadata (RFC 9728, RFC 8414), `/register` (RFC 7591),
//! `/authorize`, `/callback` (from Coder), `/token` and `/revoke` (RFC 7009).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::cimd::is_document_url;
use super::consent;
use super::crypto::{hash, random_token, s256, valid_pkce};
use super::{
    ACCESS_PREFIX, BearerError, CODE_LIFETIME, CODE_PREFIX, ClientData, CodeData, CoderTokenError,
    GrantData, OAuthServer, PENDING_LIFETIME, PendingData, REFRESH_PREFIX, TokenData, coder_expiry,
    lifetime_secs,
};
use crate::store::{OAuthRow, OAuthTable, StoreError};

type Params = HashMap<String, String>;
type Shared = Arc<OAuthServer>;

/// Largest OAuth request body (a registration or a token request is well under 1 KiB).
const MAX_FORM: usize = 64 * 1024;
/// Most redirect URIs a client may register, and the longest one.
pub(super) const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2048;

/// The OAuth routes.
pub fn router(server: Shared) -> Router {
    let mut router = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .route("/authorize", get(authorize).post(decide))
        .route("/callback", get(callback))
        .route("/token", post(token))
        .route("/revoke", post(revoke));
    if server.config.registration {
        router = router.route("/register", post(register));
    }
    // Browser-based MCP clients discover, register, and exchange codes from their own
    // origin: these endpoints answer any origin (they take no cookies, so nothing of
    // another site's session can be used). `/authorize` and `/callback` are navigations.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("mcp-protocol-version"),
        ]);
    router
        .layer(cors)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .with_state(server)
}

// ----- answers -----

fn json_answer(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    // RFC 6749 §5.1: token responses (and anything with a credential) are not cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An OAuth error (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = json_answer(
        status,
        &json!({"error": error, "error_description": description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"coder-workspace-mcp\""),
        );
    }
    response
}

fn server_error(why: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %why, "OAuth request failed");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the server could not complete the request; try again later",
    )
}

/// A page for the user's browser when there is no client to send an error back to.
fn error_page(status: StatusCode, message: &str) -> Response {
    tracing::info!(%status, %message, "authorization refused");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Sign-in failed: {message}\n"),
    )
        .into_response()
}

fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => error_page(StatusCode::BAD_REQUEST, "the redirect URI is not valid"),
    }
}

/// `redirect_uri` with `params` added to its query.
fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// Sends the user back to the client with an error (RFC 6749 §4.1.2.1).
fn redirect_error(
    server: &OAuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    tracing::info!(error, description, "authorization refused");
    let issuer = server.config.public_url.as_str();
    let mut params = vec![
        ("error", error),
        ("error_description", description),
        ("iss", issuer),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    match with_params(redirect_uri, &params) {
        Some(location) => found(&location),
        None => error_page(StatusCode::BAD_REQUEST, description),
    }
}

// ----- metadata -----

/// RFC 9728: the protected resource, our `/mcp`.
async fn protected_resource(State(server): State<Shared>) -> Response {
    let config = &server.config;
    json_answer(
        StatusCode::OK,
        &json!({
            "resource": config.resource(),
            "authorization_servers": [config.public_url],
            "bearer_methods_supported": ["header"],
            "resource_name": "coder-workspace-mcp",
        }),
    )
}

/// RFC 8414: this server as an authorization server.
async fn authorization_server(State(server): State<Shared>) -> Response {
    let base = &server.config.public_url;
    let mut metadata = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
    });
    if server.config.registration {
        metadata["registration_endpoint"] = json!(format!("{base}/register"));
    }
    // The MCP authorization spec's preferred registration: clients that see this use
    // their document's URL as client_id and need not register.
    metadata["client_id_metadata_document_supported"] = json!(server.documents.is_some());
    json_answer(StatusCode::OK, &metadata)
}

// ----- registration -----

/// Whether a client may be sent back to `uri`: https, http on loopback only, or a
/// custom scheme (native apps), never a scheme that runs or reads something.
pub(super) fn valid_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("a redirect URI is too long".into());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URI ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host() {
            Some(url::Host::Domain("localhost")) => Ok(()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            _ => Err(format!(
                "{uri:?}: http is allowed only on loopback; use https"
            )),
        },
        "javascript" | "data" | "file" | "ftp" | "vbscript" | "blob" | "about" => {
            Err(format!("{uri:?}: the scheme is not allowed"))
        }
        _ => Ok(()),
    }
}

pub(super) fn strings(value: &Value, field: &str) -> Result<Option<Vec<String>>, String> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{field} must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{field} must be an array of strings")),
    }
}

/// A client's `client_name` from its metadata (registration or document), at most 200
/// characters.
pub(super) fn client_name(metadata: &Value) -> String {
    metadata
        .get("client_name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// `POST /register` (RFC 7591).
async fn register(
    State(server): State<Shared>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let peer = crate::http::conn::Peer::of(&parts.extensions);
    if let Err(retry_after) = server.admit_registration(peer.key()) {
        tracing::info!(peer = %peer.0, "client registration refused: over --max-registrations");
        let mut response = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many client registrations from your address; try again later (see --max-registrations)",
        );
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the body must be a JSON object",
            );
        }
    };
    let metadata =
        |why: String| oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", &why);
    let redirect_uris = match strings(&request, "redirect_uris") {
        Ok(Some(uris)) if !uris.is_empty() && uris.len() <= MAX_REDIRECT_URIS => uris,
        Ok(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                &format!("redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"),
            );
        }
        Err(why) => return metadata(why),
    };
    for uri in &redirect_uris {
        if let Err(why) = valid_redirect_uri(uri) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", &why);
        }
    }
    let auth_method = match request.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => "client_secret_basic".to_owned(),
        Some(Value::String(m))
            if ["none", "client_secret_basic", "client_secret_post"].contains(&m.as_str()) =>
        {
            m.clone()
        }
        Some(_) => {
            return metadata(
                "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post"
                    .into(),
            );
        }
    };
    let grant_types = match strings(&request, "grant_types") {
        Ok(None) => vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        Ok(Some(types))
            if types
                .iter()
                .all(|t| t == "authorization_code" || t == "refresh_token") =>
        {
            types
        }
        Ok(Some(_)) => {
            return metadata("grant_types may only be authorization_code and refresh_token".into());
        }
        Err(why) => return metadata(why),
    };
    match strings(&request, "response_types") {
        Ok(None) => {}
        Ok(Some(types)) if types.iter().all(|t| t == "code") => {}
        Ok(Some(_)) => return metadata("response_types may only be code".into()),
        Err(why) => return metadata(why),
    }
    let client_name = client_name(&request);
    let (client_id, secret) = match (random_token(16), random_token(32)) {
        (Ok(id), Ok(secret)) => (format!("cwm_client_{id}"), secret),
        (Err(e), _) | (_, Err(e)) => return server_error(e),
    };
    let secret = (auth_method != "none").then_some(secret);
    let now = server.store.now();
    let data = ClientData {
        redirect_uris: redirect_uris.clone(),
        client_name: client_name.clone(),
        auth_method: auth_method.clone(),
        secret_hash: secret.as_deref().map(hash),
        issued_at: now,
    };
    let row = OAuthRow {
        grant_id: None,
        data: match serde_json::to_string(&data) {
            Ok(data) => data,
            Err(e) => return server_error(e),
        },
        // A client unused for the refresh token lifetime goes (anyone may register, so
        // registrations must not pile up); each sign-in renews it.
        expires_at: now.saturating_add(lifetime_secs(server.config.refresh_token_lifetime)),
    };
    if let Err(e) = server
        .store
        .oauth_put(OAuthTable::Clients, &client_id, &row)
        .await
    {
        return server_error(e);
    }
    tracing::info!(client = %client_id, name = %client_name, auth = %auth_method, "OAuth client registered");
    let mut answer = json!({
        "client_id": client_id,
        "client_id_issued_at": now,
        "client_name": client_name,
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
    });
    if let Some(secret) = secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    json_answer(StatusCode::CREATED, &answer)
}

/// Why a client cannot be used.
enum ClientError {
    /// Said to the user (at `/authorize`) or the client (`invalid_client`) as is.
    Unusable(String),
    Store(StoreError),
}

/// A registered client, or the client a metadata document URL describes.
async fn load_client(server: &OAuthServer, client_id: &str) -> Result<ClientData, ClientError> {
    if is_document_url(client_id) {
        return match &server.documents {
            Some(documents) => documents.client(client_id).await.map_err(ClientError::Unusable),
            None => Err(ClientError::Unusable(
                "this server does not take client metadata documents (--no-client-metadata-documents); register the client".into(),
            )),
        };
    }
    match server.store.oauth_get(OAuthTable::Clients, client_id).await {
        Ok(Some(row)) => serde_json::from_str(&row.data)
            .map_err(|_| ClientError::Unusable("the client's registration cannot be read".into())),
        Ok(None) => Err(ClientError::Unusable(
            "unknown client_id (register the client again)".into(),
        )),
        Err(e) => Err(ClientError::Store(e)),
    }
}

// ----- authorization -----

/// `GET /authorize`: checks the request, keeps it, and sends the user to Coder.
async fn authorize(
    State(server): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    // Until the client and its redirect URI are known good, errors go to the user.
    let Some(client_id) = get("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let client = match load_client(&server, client_id).await {
        Ok(client) => client,
        Err(ClientError::Unusable(why)) => return error_page(StatusCode::BAD_REQUEST, &why),
        Err(ClientError::Store(e)) => return server_error(e),
    };
    let redirect_uri = match get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not one the client registered",
            );
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return error_page(StatusCode::BAD_REQUEST, "redirect_uri is missing"),
    };
    let state = get("state");
    let refuse = |error: &str, why: &str| redirect_error(&server, &redirect_uri, state, error, why);
    if get("response_type") != Some("code") {
        return refuse("unsupported_response_type", "response_type must be code");
    }
    let Some(challenge) = get("code_challenge") else {
        return refuse(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        );
    };
    if get("code_challenge_method") != Some("S256") || !valid_pkce(challenge) {
        return refuse(
            "invalid_request",
            "PKCE: code_challenge_method must be S256, with a 43 to 128 character code_challenge",
        );
    }
    if let Some(resource) = get("resource")
        && !same_resource(resource, &server.config.resource())
    {
        return refuse(
            "invalid_target",
            "resource must be this server's MCP endpoint",
        );
    }
    // Sending the user to a Coder that does not serve OAuth2 would end the sign-in on
    // Coder's bare error: say why here, to the client (and the user through it).
    match server.coder_provider().await {
        super::ProviderStatus::Ready => {}
        super::ProviderStatus::Off(why) => {
            tracing::error!(%why, "a sign-in was refused: Coder's OAuth2 provider is off");
            return refuse("server_error", &why);
        }
        super::ProviderStatus::Unreachable(why) => {
            tracing::warn!(%why, "a sign-in was refused: Coder could not be reached");
            return refuse(
                "temporarily_unavailable",
                "Coder could not be reached; try again shortly",
            );
        }
    }
    let (our_state, verifier, binding) =
        match (random_token(32), random_token(48), random_token(32)) {
            (Ok(s), Ok(v), Ok(b)) => (s, v, b),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return server_error(e),
        };
    let pending = PendingData {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: get("redirect_uri").is_some(),
        state: state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        coder_verifier: verifier.clone(),
        browser: Some(hash(&binding)),
    };
    let key = hash(&our_state);
    let sealed = serde_json::to_vec(&pending)
        .map_err(|e| e.to_string())
        .and_then(|plain| server.config.key.seal(&format!("pending:{key}"), &plain));
    let sealed = match sealed {
        Ok(sealed) => sealed,
        Err(e) => return server_error(e),
    };
    let row = OAuthRow {
        grant_id: None,
        data: sealed,
        expires_at: server.store.now().saturating_add(PENDING_LIFETIME),
    };
    if let Err(e) = server
        .store
        .oauth_put(OAuthTable::Pending, &key, &row)
        .await
    {
        return server_error(e);
    }
    if consent::remembered(&server, &headers, client_id, &redirect_uri) {
        return to_coder(&server, &our_state, &verifier);
    }
    consent::page(
        &server,
        &client,
        client_id,
        &redirect_uri,
        &our_state,
        &binding,
    )
}

/// The sign-in waiting under our `state` (and its store key): read, or taken (`take`:
/// Coder's answer uses it once), or the page that says why there is none.
async fn pending_sign_in(
    server: &OAuthServer,
    our_state: &str,
    take: bool,
) -> Result<(String, PendingData), Response> {
    let key = hash(our_state);
    let row = if take {
        server.store.oauth_take(OAuthTable::Pending, &key).await
    } else {
        server.store.oauth_get(OAuthTable::Pending, &key).await
    };
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in is unknown or expired; start again from your MCP client",
            ));
        }
        Err(e) => return Err(server_error(e)),
    };
    server
        .config
        .key
        .open(&format!("pending:{key}"), &row.data)
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .map(|pending| (key, pending))
        .ok_or_else(|| {
            error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in cannot be read; start again",
            )
        })
}

/// `POST /authorize`: the user's answer on the consent page.
async fn decide(State(server): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Params = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(our_state) = form.get("state").filter(|s| !s.is_empty()) else {
        return error_page(StatusCode::BAD_REQUEST, "state is missing");
    };
    let (key, pending) = match pending_sign_in(&server, our_state, false).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // Only the browser that was shown the page may answer it: a page on another site
    // cannot send its cookie along with a form it posts here.
    let shown_here = consent::cookie(&headers, consent::BINDING_COOKIE)
        .is_some_and(|binding| pending.browser.as_deref() == Some(hash(binding).as_str()));
    if !shown_here {
        return error_page(
            StatusCode::FORBIDDEN,
            "this sign-in was not started in this browser; start again from your MCP client",
        );
    }
    if form.get("decision").map(String::as_str) != Some("allow") {
        if let Err(e) = server.store.oauth_take(OAuthTable::Pending, &key).await {
            return server_error(e);
        }
        return redirect_error(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            "access_denied",
            "the user declined",
        );
    }
    let mut response = to_coder(&server, our_state, &pending.coder_verifier);
    if let Some(cookie) = consent::remember(&server, &pending.client_id, &pending.redirect_uri) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The user, on to Coder's consent as this server's app, with our PKCE and state.
fn to_coder(server: &OAuthServer, our_state: &str, verifier: &str) -> Response {
    let coder = server.coder.base_url();
    let callback = server.config.callback();
    let challenge = s256(verifier);
    let location = with_params(
        &format!("{coder}/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &server.config.coder_client_id),
            ("redirect_uri", &callback),
            ("state", our_state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            // Coder rejects (403) every token whose audience is not its own URL.
            ("resource", coder),
        ],
    );
    match location {
        Some(location) => found(&location),
        None => server_error("the Coder URL does not make an authorization URL"),
    }
}

/// RFC 8707 resources compare as URIs: scheme and host case-insensitively, a trailing
/// slash ignored.
fn same_resource(given: &str, ours: &str) -> bool {
    let norm = |s: &str| {
        url::Url::parse(s)
            .ok()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    };
    norm(given).is_some_and(|g| Some(g) == norm(ours))
}

/// `GET /callback`: Coder's answer. Exchanges its code, keeps the user's Coder token
/// (sealed) as a grant, and sends the user back to the client with our code.
async fn callback(State(server): State<Shared>, Query(query): Query<Params>) -> Response {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(our_state) = get("state") else {
        return error_page(StatusCode::BAD_REQUEST, "state is missing");
    };
    let (_, pending) = match pending_sign_in(&server, our_state, true).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = |error: &str, why: &str| {
        redirect_error(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            error,
            why,
        )
    };
    if let Some(error) = get("error") {
        let error = if error == "access_denied" {
            "access_denied"
        } else {
            "server_error"
        };
        return back(error, "Coder did not authorize the sign-in");
    }
    let Some(code) = get("code") else {
        return back("server_error", "Coder answered without a code");
    };
    let callback = server.config.callback();
    let token = match server
        .coder_token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &callback),
            ("code_verifier", &pending.coder_verifier),
        ])
        .await
    {
        Ok(token) => token,
        Err(CoderTokenError::Refused(why)) => {
            tracing::warn!(%why, "Coder refused the code exchange");
            return back("access_denied", "Coder refused the sign-in");
        }
        Err(CoderTokenError::Unavailable(why)) => {
            tracing::warn!(%why, "Coder's token endpoint failed");
            return back("temporarily_unavailable", "Coder could not be reached");
        }
    };
    let now = server.store.now();
    let grant_expires = now.saturating_add(lifetime_secs(server.config.refresh_token_lifetime));
    let record = GrantData {
        coder_expires_at: coder_expiry(&token, now),
        coder_refresh_at: super::refresh_point(coder_expiry(&token, now), now),
        coder_access: token.access_token,
        coder_refresh: token.refresh_token,
        ..GrantData::default()
    };
    let (user, live) = match server.adopt_coder_token(&record, grant_expires).await {
        Ok(adopted) => adopted,
        Err(BearerError::Unavailable(e) | BearerError::Rejected(e)) => return server_error(e),
    };
    let grant = GrantData {
        client_id: pending.client_id.clone(),
        coder_user: Some(user.id.to_string()),
        ..GrantData::default()
    };
    let grant_id = uuid::Uuid::new_v4().to_string();
    if let Err(BearerError::Unavailable(e) | BearerError::Rejected(e)) =
        server.save_grant(&grant_id, &grant, grant_expires).await
    {
        return server_error(e);
    }
    server
        .remember_identity(&grant_id, user, live, &record)
        .await;
    let code = match random_token(32) {
        Ok(code) => format!("{CODE_PREFIX}{code}"),
        Err(e) => return server_error(e),
    };
    let data = CodeData {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        redirect_uri_given: pending.redirect_uri_given,
        code_challenge: pending.code_challenge.clone(),
    };
    let row = match serde_json::to_string(&data) {
        Ok(data) => OAuthRow {
            grant_id: Some(grant_id.clone()),
            data,
            expires_at: now.saturating_add(CODE_LIFETIME),
        },
        Err(e) => return server_error(e),
    };
    if let Err(e) = server
        .store
        .oauth_put(OAuthTable::Codes, &hash(&code), &row)
        .await
    {
        return server_error(e);
    }
    tracing::info!(client = %pending.client_id, grant = %grant_id, "signed in through Coder");
    let issuer = server.config.public_url.as_str();
    let mut params = vec![("code", code.as_str()), ("iss", issuer)];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    match with_params(&pending.redirect_uri, &params) {
        Some(location) => found(&location),
        None => error_page(StatusCode::BAD_REQUEST, "the redirect URI is not valid"),
    }
}

// ----- tokens -----

/// The client of a token or revocation request: `client_secret_basic`, else the form's
/// `client_id` (and `client_secret` for `client_secret_post`), checked against its
/// registration.
async fn authenticate_client(
    server: &OAuthServer,
    headers: &HeaderMap,
    form: &Params,
) -> Result<(String, ClientData), Response> {
    let invalid = |why: &str| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        });
    let (client_id, secret) = match basic {
        Some(encoded) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Err(invalid("malformed Basic credentials"));
            };
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (decode(id), Some(decode(secret)))
        }
        None => match form.get("client_id") {
            Some(id) => (id.clone(), form.get("client_secret").cloned()),
            None => return Err(invalid("client authentication is missing (client_id)")),
        },
    };
    let client = match load_client(server, &client_id).await {
        Ok(client) => client,
        Err(ClientError::Unusable(why)) => return Err(invalid(&why)),
        Err(ClientError::Store(e)) => return Err(server_error(e)),
    };
    match (&client.secret_hash, secret) {
        (None, _) => {}
        (Some(expected), Some(secret))
            if bool::from(hash(&secret).as_bytes().ct_eq(expected.as_bytes())) => {}
        (Some(_), _) => return Err(invalid("the client secret is missing or wrong")),
    }
    Ok((client_id, client))
}

/// `POST /token`: `authorization_code` (with the PKCE verifier) and `refresh_token`
/// (rotated: the one presented is spent).
async fn token(State(server): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Params = url::form_urlencoded::parse(&body).into_owned().collect();
    let (client_id, client) = match authenticate_client(&server, &headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let invalid_grant = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    if let Some(resource) = form.get("resource")
        && !same_resource(resource, &server.config.resource())
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource must be this server's MCP endpoint",
        );
    }
    let grant_id = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code and code_verifier are required",
                );
            };
            let row = match server
                .store
                .oauth_take(OAuthTable::Codes, &hash(code))
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => return invalid_grant("the code is unknown, used or expired"),
                Err(e) => return server_error(e),
            };
            let Ok(data) = serde_json::from_str::<CodeData>(&row.data) else {
                return invalid_grant("the code cannot be read");
            };
            let grant_id = row.grant_id.unwrap_or_default();
            let mismatch = if data.client_id != client_id {
                Some("the code was issued to another client")
            } else if data.redirect_uri_given
                && form.get("redirect_uri") != Some(&data.redirect_uri)
            {
                Some("redirect_uri does not match the authorization request")
            } else if !valid_pkce(verifier) || s256(verifier) != data.code_challenge {
                Some("the PKCE code_verifier does not match the code_challenge")
            } else {
                None
            };
            if let Some(why) = mismatch {
                // The code is spent either way; its grant goes with it.
                if let Err(e) = server.end_grant(&grant_id).await {
                    tracing::warn!(%e, "could not end the grant of a refused code");
                }
                return invalid_grant(why);
            }
            grant_id
        }
        Some("refresh_token") => {
            let Some(refresh) = form.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let row = match server
                .store
                .oauth_take(OAuthTable::Tokens, &hash(refresh))
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => {
                    return invalid_grant("the refresh token is unknown, used, revoked or expired");
                }
                Err(e) => return server_error(e),
            };
            let data = serde_json::from_str::<TokenData>(&row.data).ok();
            match data {
                Some(data) if data.kind == "refresh" && data.client_id == client_id => {}
                _ => return invalid_grant("not a refresh token of this client"),
            }
            match row.grant_id {
                Some(grant_id) => grant_id,
                None => return invalid_grant("the refresh token has no grant"),
            }
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            );
        }
    };
    // The grant must still be there (not revoked, not expired).
    match server.store.oauth_get(OAuthTable::Grants, &grant_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return invalid_grant("the sign-in was revoked or expired"),
        Err(e) => return server_error(e),
    }
    match issue_tokens(&server, &client_id, &client, &grant_id).await {
        Ok(response) => response,
        Err(e) => server_error(e),
    }
}

async fn issue_tokens(
    server: &OAuthServer,
    client_id: &str,
    client: &ClientData,
    grant_id: &str,
) -> Result<Response, String> {
    let now = server.store.now();
    let access = format!(
        "{ACCESS_PREFIX}{}",
        random_token(32).map_err(|e| e.to_string())?
    );
    let refresh = format!(
        "{REFRESH_PREFIX}{}",
        random_token(32).map_err(|e| e.to_string())?
    );
    let access_lifetime = lifetime_secs(server.config.access_token_lifetime);
    let refresh_lifetime = lifetime_secs(server.config.refresh_token_lifetime);
    let resource = server.config.resource();
    for (token, kind, lifetime) in [
        (&access, "access", access_lifetime),
        (&refresh, "refresh", refresh_lifetime),
    ] {
        let data = serde_json::to_string(&TokenData {
            kind: kind.to_owned(),
            client_id: client_id.to_owned(),
            resource: resource.clone(),
        })
        .map_err(|e| e.to_string())?;
        let row = OAuthRow {
            grant_id: Some(grant_id.to_owned()),
            data,
            expires_at: now.saturating_add(lifetime),
        };
        server
            .store
            .oauth_put(OAuthTable::Tokens, &hash(token), &row)
            .await
            .map_err(|e| e.to_string())?;
    }
    // A used sign-in keeps its grant (with the user's token) and client registration alive.
    let renewed = now.saturating_add(refresh_lifetime);
    server
        .renew_grant(grant_id, renewed)
        .await
        .map_err(|e| e.to_string())?;
    // (A client described by a metadata document is not stored: its document is.)
    if !is_document_url(client_id) {
        let client_row = OAuthRow {
            grant_id: None,
            data: serde_json::to_string(client).map_err(|e| e.to_string())?,
            expires_at: renewed,
        };
        server
            .store
            .oauth_put(OAuthTable::Clients, client_id, &client_row)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(json_answer(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": access_lifetime,
            "refresh_token": refresh,
        }),
    ))
}

/// `POST /revoke` (RFC 7009): the token's grant ends, here and at Coder. Unknown tokens
/// are answered 200 too.
async fn revoke(State(server): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Params = url::form_urlencoded::parse(&body).into_owned().collect();
    let (client_id, _) = match authenticate_client(&server, &headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let row = match server
        .store
        .oauth_get(OAuthTable::Tokens, &hash(token))
        .await
    {
        Ok(row) => row,
        Err(e) => return server_error(e),
    };
    if let Some(row) = row {
        let ours = serde_json::from_str::<TokenData>(&row.data)
            .is_ok_and(|data| data.client_id == client_id);
        if let (true, Some(grant_id)) = (ours, row.grant_id) {
            if let Err(e) = server.end_grant(&grant_id).await {
                return server_error(e);
            }
            tracing::info!(client = %client_id, grant = %grant_id, "sign-in revoked");
        }
    }
    json_answer(StatusCode::OK, &json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_the_rules() {
        assert!(valid_redirect_uri("https://claude.ai/api/mcp/auth_callback").is_ok());
        assert!(valid_redirect_uri("http://127.0.0.1:33418/callback").is_ok());
        assert!(valid_redirect_uri("http://localhost:6274/oauth/callback").is_ok());
        assert!(valid_redirect_uri("http://[::1]:8080/cb").is_ok());
        assert!(valid_redirect_uri("cursor://anysphere.cursor-mcp/oauth/callback").is_ok());
        assert!(valid_redirect_uri("http://example.com/cb").is_err());
        assert!(valid_redirect_uri("javascript:alert(1)").is_err());
        assert!(valid_redirect_uri("https://example.com/cb#frag").is_err());
        assert!(valid_redirect_uri("/relative").is_err());
    }

    #[test]
    fn resources_compare_as_uris() {
        assert!(same_resource(
            "https://MCP.example.com/mcp",
            "https://mcp.example.com/mcp"
        ));
        assert!(same_resource(
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/mcp"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/",
            "https://mcp.example.com/mcp"
        ));
        assert!(!same_resource(
            "https://coder.example.com",
            "https://mcp.example.com/mcp"
        ));
    }
}
