//! Coder's OAuth2 provider (`shared/coder-api/NOTES.md` §6): Coder as an OAuth2
//! authorization server whose access tokens are ordinary Coder API keys.
//!
//! * `GET /.well-known/oauth-authorization-server` (RFC 8414) and
//!   `GET /.well-known/oauth-protected-resource` (RFC 9728), at the server root, the same
//!   document for every sub-path;
//! * `GET`/`POST /oauth2/authorize`: there is no browser, so the consent is automatic for
//!   the signed-in user (a session token or `coder_session_token` cookie on the request,
//!   else the user of `SimCoder::set_oauth_signed_in_user`); with neither, a 303 to
//!   `/login?message=…&redirect=…` as coderd's `RedirectToLogin`;
//! * `POST /oauth2/tokens` (authorization code with PKCE S256, refresh token with
//!   rotation, RFC 8707 `resource`), `POST /oauth2/revoke` (RFC 7009) and
//!   `POST /oauth2/register` (RFC 7591, off by default);
//! * `/api/v2/oauth2-provider/apps` and `/apps/{app}/secrets` to register apps.
//!
//! An access token is `<10-char id>-<22-char secret>`, the user's API key with the
//! token's audience (the `resource` of the grant); `front_door` authenticates it like a
//! session token and answers 403 "Token audience validation failed" when its audience
//! (normalised as `validateOAuth2ProviderAppTokenAudience` does) is not the access URL.
//! Codes, client secrets and refresh tokens look like Coder's `coder_<prefix>_<secret>`.
//!
//! Simplifications: every signed-in user may register apps (the simulator has no
//! admin role); scopes are ignored (every token has full access, as in the docs); the
//! `oauth2` experiment is on unless [`crate::SimCoder::set_oauth_provider_enabled`]
//! turns it off; RFC 7592 (`/oauth2/clients/{id}`) and
//! `DELETE /oauth2/tokens` are not served.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response as HttpResponse};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;

use super::Inner;
use super::routes::{ApiError, ApiResult, Caller, SIGNED_OUT, json_response, parse_uuid};
use super::state::State as SimState;
use coder_api::*;

type AppState = Arc<Inner>;

/// The scopes the metadata documents advertise (a trimmed `rbac.ExternalScopeNames()`;
/// the simulator ignores scopes).
const SCOPES: &[&str] = &["coder:all"];
/// How long an authorization code lives (coderd: 10 minutes).
const CODE_LIFETIME_MINUTES: i64 = 10;

/// An app registered through the API or by dynamic client registration. Its id is the
/// OAuth2 `client_id`.
pub(crate) struct OAuthApp {
    pub id: Uuid,
    pub name: String,
    pub icon: String,
    /// The exact redirect URIs allowed (an API app has one, its `callback_url`).
    pub redirect_uris: Vec<String>,
    /// Client secrets (`coder_<prefix>_<secret>`), with their ids.
    pub secrets: Vec<(Uuid, String)>,
    /// A public client (DCR with `token_endpoint_auth_method` `none`): no secret.
    pub public: bool,
}

struct AuthCode {
    code: String,
    app_id: Uuid,
    user_id: Uuid,
    redirect_uri: String,
    challenge: String,
    resource: Option<String>,
    expires_at: DateTime<Utc>,
}

/// An issued access token (an API key of `user_id`) and its refresh token.
pub(crate) struct OAuthKey {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: Uuid,
    pub app_id: Uuid,
    /// The `resource` of the grant, if any.
    pub audience: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
}

/// The provider's state, part of the simulator's `State`.
pub(crate) struct OAuthState {
    pub apps: Vec<OAuthApp>,
    codes: Vec<AuthCode>,
    pub keys: Vec<OAuthKey>,
    /// The user whose browser session `/oauth2/authorize` sees.
    pub signed_in: Option<Uuid>,
    pub dcr_enabled: bool,
    /// Coder's `oauth2` experiment: while off, every OAuth2 route answers 403.
    pub provider_enabled: bool,
    pub token_lifetime: Duration,
    pub refresh_lifetime: Duration,
}

impl Default for OAuthState {
    fn default() -> OAuthState {
        OAuthState {
            apps: Vec::new(),
            codes: Vec::new(),
            keys: Vec::new(),
            signed_in: None,
            dcr_enabled: false,
            provider_enabled: true,
            // Coder's default session lifetime; refresh tokens outlive access tokens.
            token_lifetime: Duration::hours(24),
            refresh_lifetime: Duration::days(30),
        }
    }
}

impl OAuthState {
    /// Registers an app with one redirect URI and one client secret.
    pub fn register_app(&mut self, name: &str, redirect_uri: &str, icon: &str) -> &OAuthApp {
        self.apps.push(OAuthApp {
            id: Uuid::new_v4(),
            name: name.to_string(),
            icon: icon.to_string(),
            redirect_uris: vec![redirect_uri.to_string()],
            secrets: vec![(Uuid::new_v4(), formatted_secret())],
            public: false,
        });
        self.apps.last().expect("just pushed")
    }

    fn app(&self, id: Uuid) -> Option<&OAuthApp> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// Issues a new key for (user, app), deleting the previous one (one key per user
    /// and app, as coderd's token name `<user>_<app>_oauth_session_token`).
    fn issue(&mut self, user_id: Uuid, app_id: Uuid, audience: Option<String>) -> OAuth2Token {
        self.keys
            .retain(|k| !(k.user_id == user_id && k.app_id == app_id));
        let now = Utc::now();
        let key = OAuthKey {
            access_token: format!("{}-{}", random_alnum(10), random_alnum(22)),
            refresh_token: formatted_secret(),
            user_id,
            app_id,
            audience,
            expires_at: now + self.token_lifetime,
            refresh_expires_at: now + self.refresh_lifetime,
        };
        let token = OAuth2Token {
            access_token: key.access_token.clone(),
            token_type: "Bearer".to_string(),
            refresh_token: key.refresh_token.clone(),
            expiry: Some(key.expires_at),
            expires_in: Some(self.token_lifetime.num_seconds()),
        };
        // Coder never logs its tokens; the simulator does, at debug level, so that a test
        // running it in another process (`sim`, `interop/run`) can check that a Coder
        // token never reaches an MCP client or a log of `serve`.
        tracing::debug!(%user_id, %app_id, access_token = %key.access_token, "OAuth2 access token issued");
        self.keys.push(key);
        token
    }
}

/// What a presented token is.
pub(crate) enum Auth {
    /// A valid session token or OAuth2 access token of this user.
    User { id: Uuid, username: String },
    /// Not a token of this deployment (or revoked).
    Unknown,
    /// An OAuth2 access token of `username` that expired at `at`.
    Expired { username: String, at: DateTime<Utc> },
    /// An OAuth2 access token of `username` whose audience is not the access URL.
    WrongAudience { username: String },
}

impl Auth {
    /// The user the token belongs to, valid or not (for the request log).
    pub fn username(&self) -> Option<&str> {
        match self {
            Auth::User { username, .. }
            | Auth::Expired { username, .. }
            | Auth::WrongAudience { username } => Some(username),
            Auth::Unknown => None,
        }
    }
}

impl SimState {
    /// `httpmw.ExtractAPIKey` for a session token or an OAuth2 access token.
    pub fn authenticate(&self, token: &str, access_url: &str) -> Auth {
        if let Some(u) = self.user_by_token(token) {
            return Auth::User {
                id: u.id,
                username: u.username.clone(),
            };
        }
        let Some(key) = self.oauth.keys.iter().find(|k| k.access_token == token) else {
            return Auth::Unknown;
        };
        let Some(user) = self.user(key.user_id) else {
            return Auth::Unknown;
        };
        let username = user.username.clone();
        if key.expires_at <= Utc::now() {
            return Auth::Expired {
                username,
                at: key.expires_at,
            };
        }
        if let Some(aud) = key.audience.as_deref().filter(|a| !a.is_empty())
            && normalize_audience(aud) != normalize_audience(access_url)
        {
            return Auth::WrongAudience { username };
        }
        Auth::User {
            id: user.id,
            username,
        }
    }
}

// ----- helpers -----

/// Random lowercase hex characters (from v4 UUIDs; hex is a subset of the alphabet of
/// Coder's `cryptorand.String`).
fn random_alnum(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// Coder's `GenerateSecret` format: `coder_<10-char prefix>_<40-char secret>`.
fn formatted_secret() -> String {
    format!("coder_{}_{}", random_alnum(10), random_alnum(40))
}

/// `normalizeAudienceURI`: lowercase scheme and host, no default port, dot segments
/// resolved, an empty path is `/`, and one trailing slash of a longer path removed.
pub(crate) fn normalize_audience(uri: &str) -> String {
    let Ok(mut u) = Url::parse(uri) else {
        return uri.to_string();
    };
    // `url` already lowercases scheme and host, drops default ports, resolves dot
    // segments and gives an empty http(s) path as "/".
    let path = u.path().to_string();
    if path.len() > 1
        && let Some(trimmed) = path.strip_suffix('/')
    {
        u.set_path(trimmed);
    }
    u.set_fragment(None);
    u.to_string()
}

/// RFC 8707: an absolute URI without a fragment.
fn valid_resource(resource: &str) -> bool {
    Url::parse(resource).is_ok_and(|u| u.fragment().is_none())
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier)) == challenge`.
fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    let digest = Sha256::digest(verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) == challenge
}

/// An OAuth2 error answer (`httpapi.WriteOAuth2Error`).
pub(crate) struct OAuthErr {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl IntoResponse for OAuthErr {
    fn into_response(self) -> HttpResponse {
        let mut resp = json_response(
            self.status,
            &OAuth2Error {
                error: self.error.to_string(),
                error_description: self.description,
            },
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

type OAuthResult<T = HttpResponse> = Result<T, OAuthErr>;

fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: impl Into<String>,
) -> OAuthErr {
    OAuthErr {
        status,
        error,
        description: description.into(),
    }
}

fn invalid_client() -> OAuthErr {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "The client credentials are invalid",
    )
}

fn missing(param: &str) -> OAuthErr {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("Missing required parameter: {param}"),
    )
}

/// The non-empty values of a form or query string (the first of repeated keys).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &[u8]) -> Params {
        Params(url::form_urlencoded::parse(raw).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

fn redirect(status: StatusCode, location: &str) -> HttpResponse {
    let mut resp = status.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The client of a request: `client_secret_basic` (the `Authorization: Basic` header,
/// form-urlencoded parts) or `client_secret_post`; both must agree.
fn client_credentials(
    headers: &HeaderMap,
    form: &Params,
) -> OAuthResult<(Option<String>, Option<String>)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .map(|b64| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid_client)?;
            let (id, secret) = raw.split_once(':').ok_or_else(invalid_client)?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok::<_, OAuthErr>((decode(id), decode(secret)))
        })
        .transpose()?;
    let post_id = form.get("client_id").map(str::to_string);
    let post_secret = form.get("client_secret").map(str::to_string);
    match basic {
        Some((id, secret)) => {
            let conflict = post_id.as_ref().is_some_and(|p| *p != id)
                || post_secret.as_ref().is_some_and(|p| *p != secret);
            if conflict {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "conflicting client authentication",
                ));
            }
            Ok((Some(id), Some(secret)))
        }
        None => Ok((post_id, post_secret)),
    }
}

/// The app named by `client_id`: 401 `invalid_client` if it is not one.
fn find_app(st: &SimState, client_id: &str) -> OAuthResult<Uuid> {
    Uuid::parse_str(client_id)
        .ok()
        .and_then(|id| st.oauth.app(id))
        .map(|a| a.id)
        .ok_or_else(invalid_client)
}

/// The app's secret check (a public client has none to check).
fn check_secret(st: &SimState, app_id: Uuid, secret: Option<&str>) -> OAuthResult<()> {
    let app = st.oauth.app(app_id).ok_or_else(invalid_client)?;
    if app.public && secret.is_none() {
        return Ok(());
    }
    match secret {
        Some(s) if app.secrets.iter().any(|(_, known)| known == s) => Ok(()),
        _ => Err(invalid_client()),
    }
}

// ----- metadata -----

pub(crate) async fn authorization_server_metadata(State(inner): State<AppState>) -> HttpResponse {
    let access = inner.url();
    let dcr = inner.read(|st| st.oauth.dcr_enabled);
    json_response(
        StatusCode::OK,
        &OAuth2AuthorizationServerMetadata {
            issuer: access.clone(),
            authorization_endpoint: format!("{access}/oauth2/authorize"),
            token_endpoint: format!("{access}/oauth2/tokens"),
            registration_endpoint: dcr.then(|| format!("{access}/oauth2/register")),
            revocation_endpoint: format!("{access}/oauth2/revoke"),
            response_types_supported: vec!["code".into()],
            grant_types_supported: vec!["authorization_code".into(), "refresh_token".into()],
            code_challenge_methods_supported: vec!["S256".into()],
            scopes_supported: SCOPES.iter().map(|s| s.to_string()).collect(),
            token_endpoint_auth_methods_supported: vec![
                "client_secret_basic".into(),
                "client_secret_post".into(),
            ],
        },
    )
}

pub(crate) async fn protected_resource_metadata(State(inner): State<AppState>) -> HttpResponse {
    let access = inner.url();
    json_response(
        StatusCode::OK,
        &OAuth2ProtectedResourceMetadata {
            resource: access.clone(),
            authorization_servers: vec![access],
            scopes_supported: SCOPES.iter().map(|s| s.to_string()).collect(),
            bearer_methods_supported: vec!["header".into(), "query".into()],
        },
    )
}

// ----- authorize -----

/// `GET` and `POST /oauth2/authorize`, consenting at once for the signed-in user.
pub(crate) async fn authorize(
    State(inner): State<AppState>,
    caller: Option<Extension<Caller>>,
    req: Request,
) -> OAuthResult {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let query = Params::parse(req.uri().query().unwrap_or("").as_bytes());
    let user = caller
        .map(|Extension(c)| c.id)
        .or_else(|| inner.read(|st| st.oauth.signed_in));
    let Some(user_id) = user else {
        // httpmw.RedirectToLogin: a 303 to the login page, which comes back here.
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("message", SIGNED_OUT)
            .append_pair("redirect", &path_and_query)
            .finish();
        return Ok(redirect(StatusCode::SEE_OTHER, &format!("/login?{q}")));
    };
    let Some(client_id) = query.get("client_id") else {
        return Err(missing("client_id"));
    };
    inner.update_quiet(|st| {
        let app_id = find_app(st, client_id)?;
        let app = st.oauth.app(app_id).expect("found");
        let redirect_uri = match query.get("redirect_uri") {
            None => app.redirect_uris[0].clone(),
            Some(r) if app.redirect_uris.iter().any(|u| u == r) => r.to_string(),
            Some(_) => {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The redirect_uri does not match the registered redirect URI",
                ));
            }
        };
        match query.get("response_type") {
            None => return Err(missing("response_type")),
            Some("code") => {}
            Some(_) => {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_response_type",
                    "The response type is not supported",
                ));
            }
        }
        let Some(state) = query.get("state") else {
            return Err(missing("state"));
        };
        let Some(challenge) = query.get("code_challenge") else {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "PKCE code_challenge is required",
            ));
        };
        if !(43..=128).contains(&challenge.len()) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code_challenge must be 43-128 characters",
            ));
        }
        if query
            .get("code_challenge_method")
            .is_some_and(|m| m != "S256")
        {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Only the S256 code_challenge_method is supported",
            ));
        }
        let resource = query.get("resource").map(str::to_string);
        if resource.as_deref().is_some_and(|r| !valid_resource(r)) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "The resource parameter must be an absolute URI without a fragment",
            ));
        }
        let Ok(mut location) = Url::parse(&redirect_uri) else {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The redirect_uri is not a valid URI",
            ));
        };
        let code = formatted_secret();
        st.oauth.codes.push(AuthCode {
            code: code.clone(),
            app_id,
            user_id,
            redirect_uri,
            challenge: challenge.to_string(),
            resource,
            expires_at: Utc::now() + Duration::minutes(CODE_LIFETIME_MINUTES),
        });
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state);
        Ok(redirect(StatusCode::FOUND, location.as_str()))
    })
}

// ----- tokens -----

/// `POST /oauth2/tokens`.
pub(crate) async fn tokens(
    State(inner): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> OAuthResult {
    let form = Params::parse(&body);
    let (client_id, secret) = client_credentials(&headers, &form)?;
    let grant = form.get("grant_type");
    let authorization_code = match grant {
        Some("authorization_code") => true,
        Some("refresh_token") => false,
        None => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The grant type is missing or unsupported",
            ));
        }
        Some(other) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("The grant type {other:?} is not supported"),
            ));
        }
    };
    let Some(client_id) = client_id else {
        return Err(missing("client_id"));
    };
    let resource = form.get("resource").map(str::to_string);
    if resource.as_deref().is_some_and(|r| !valid_resource(r)) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is missing required parameters or is otherwise malformed",
        ));
    }
    let token = inner.update_quiet(|st| {
        let app_id = find_app(st, &client_id)?;
        if authorization_code {
            code_grant(st, app_id, secret.as_deref(), &form, resource)
        } else {
            refresh_grant(st, app_id, secret.as_deref(), &form, resource)
        }
    })?;
    let mut resp = json_response(StatusCode::OK, &token);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn code_grant(
    st: &mut SimState,
    app_id: Uuid,
    secret: Option<&str>,
    form: &Params,
    resource: Option<String>,
) -> OAuthResult<OAuth2Token> {
    let public = st.oauth.app(app_id).is_some_and(|a| a.public);
    let Some(code) = form.get("code") else {
        return Err(missing("code"));
    };
    if secret.is_none() && !public {
        return Err(missing("client_secret"));
    }
    let Some(redirect_uri) = form.get("redirect_uri") else {
        return Err(missing("redirect_uri"));
    };
    check_secret(st, app_id, secret)?;
    let bad_code = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The authorization code is invalid or expired",
        )
    };
    let idx = st
        .oauth
        .codes
        .iter()
        .position(|c| c.code == code && c.app_id == app_id)
        .ok_or_else(bad_code)?;
    let stored = &st.oauth.codes[idx];
    if stored.expires_at <= Utc::now() {
        return Err(bad_code());
    }
    if stored.redirect_uri != redirect_uri {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is missing required parameters or is otherwise malformed",
        ));
    }
    let verified = form
        .get("code_verifier")
        .is_some_and(|v| pkce_matches(&stored.challenge, v));
    if !verified {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The PKCE code verifier is invalid",
        ));
    }
    // RFC 8707: the token request repeats the authorization request's resource exactly,
    // or neither names one.
    if stored.resource != resource {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The resource parameter is invalid",
        ));
    }
    let stored = st.oauth.codes.remove(idx);
    Ok(st.oauth.issue(stored.user_id, app_id, stored.resource))
}

fn refresh_grant(
    st: &mut SimState,
    app_id: Uuid,
    secret: Option<&str>,
    form: &Params,
    resource: Option<String>,
) -> OAuthResult<OAuth2Token> {
    let Some(refresh) = form.get("refresh_token") else {
        return Err(missing("refresh_token"));
    };
    check_secret(st, app_id, secret)?;
    let bad_token = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The refresh token is invalid or expired",
        )
    };
    let key = st
        .oauth
        .keys
        .iter()
        .find(|k| k.refresh_token == refresh && k.app_id == app_id)
        .ok_or_else(bad_token)?;
    if key.refresh_expires_at <= Utc::now() {
        return Err(bad_token());
    }
    if resource.is_some() && resource != key.audience {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The resource parameter is invalid",
        ));
    }
    let (user_id, audience) = (key.user_id, key.audience.clone());
    // `issue` deletes the old key, and with it the old refresh token.
    Ok(st.oauth.issue(user_id, app_id, audience))
}

// ----- revoke -----

/// `POST /oauth2/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(
    State(inner): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> OAuthResult {
    let form = Params::parse(&body);
    let (client_id, secret) = client_credentials(&headers, &form)?;
    let Some(client_id) = client_id else {
        return Err(missing("client_id"));
    };
    let Some(token) = form.get("token") else {
        return Err(missing("token"));
    };
    inner.update_quiet(|st| {
        let app_id = find_app(st, &client_id)?;
        if secret.is_some() {
            check_secret(st, app_id, secret.as_deref())?;
        }
        // The key goes whichever of its two tokens is named (the refresh token is
        // deleted with its API key, as in coderd).
        st.oauth.keys.retain(|k| {
            k.app_id != app_id || (k.access_token != token && k.refresh_token != token)
        });
        Ok(StatusCode::OK.into_response())
    })
}

// ----- dynamic client registration -----

/// `POST /oauth2/register` (RFC 7591). Off by default: then 403 `access_denied`
/// (the status and error coderd answers with are UNVERIFIED).
pub(crate) async fn register(State(inner): State<AppState>, body: Bytes) -> OAuthResult {
    let access = inner.url();
    if !inner.read(|st| st.oauth.dcr_enabled) {
        return Err(oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "Dynamic client registration is disabled",
        ));
    }
    let req: OAuth2ClientRegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(err) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                format!("Invalid request body: {err}"),
            ));
        }
    };
    if req.redirect_uris.is_empty() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "At least one redirect URI is required",
        ));
    }
    if let Some(bad) = req.redirect_uris.iter().find(|u| !allowed_redirect(u)) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            format!("Redirect URI {bad:?} is not allowed"),
        ));
    }
    let method = if req.token_endpoint_auth_method.is_empty() {
        "client_secret_basic".to_string()
    } else {
        req.token_endpoint_auth_method.clone()
    };
    if !["client_secret_basic", "client_secret_post", "none"].contains(&method.as_str()) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            format!("Unsupported token_endpoint_auth_method {method:?}"),
        ));
    }
    let public = method == "none";
    let registration_access_token = formatted_secret();
    let (id, secret) = inner.update_quiet(|st| {
        let secret = (!public).then(formatted_secret);
        let id = Uuid::new_v4();
        st.oauth.apps.push(OAuthApp {
            id,
            name: req.client_name.clone(),
            icon: req.logo_uri.clone(),
            redirect_uris: req.redirect_uris.clone(),
            secrets: secret.iter().map(|s| (Uuid::new_v4(), s.clone())).collect(),
            public,
        });
        (id, secret)
    });
    let or = |v: &Vec<String>, default: &[&str]| {
        if v.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            v.clone()
        }
    };
    Ok(json_response(
        StatusCode::CREATED,
        &OAuth2ClientRegistrationResponse {
            client_id: id.to_string(),
            client_secret: secret,
            client_id_issued_at: Utc::now().timestamp(),
            client_secret_expires_at: 0,
            client_name: req.client_name.clone(),
            redirect_uris: req.redirect_uris.clone(),
            grant_types: or(&req.grant_types, &["authorization_code", "refresh_token"]),
            response_types: or(&req.response_types, &["code"]),
            token_endpoint_auth_method: method,
            scope: req.scope.clone(),
            registration_access_token,
            registration_client_uri: format!("{access}/oauth2/clients/{id}"),
        },
    ))
}

/// DCR's redirect URI rules: http only on loopback; custom schemes are fine but not
/// `javascript:`, `data:`, `file:` or `ftp:`; no fragment.
fn allowed_redirect(uri: &str) -> bool {
    let Ok(u) = Url::parse(uri) else {
        return false;
    };
    if u.fragment().is_some() {
        return false;
    }
    match u.scheme() {
        "https" => true,
        "http" => matches!(
            u.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        ),
        "javascript" | "data" | "file" | "ftp" => false,
        _ => true,
    }
}

// ----- /api/v2/oauth2-provider -----

fn render_app(access: &str, app: &OAuthApp) -> OAuth2ProviderApp {
    OAuth2ProviderApp {
        id: app.id,
        name: app.name.clone(),
        callback_url: app.redirect_uris.first().cloned().unwrap_or_default(),
        icon: app.icon.clone(),
        endpoints: OAuth2AppEndpoints {
            authorization: format!("{access}/oauth2/authorize"),
            token: format!("{access}/oauth2/tokens"),
            token_revoke: format!("{access}/oauth2/revoke"),
            device_authorization: String::new(),
        },
    }
}

/// `GET /api/v2/oauth2-provider/apps`.
pub(crate) async fn list_apps(State(inner): State<AppState>) -> HttpResponse {
    let access = inner.url();
    inner.read(|st| {
        let apps: Vec<OAuth2ProviderApp> = st
            .oauth
            .apps
            .iter()
            .map(|a| render_app(&access, a))
            .collect();
        json_response(StatusCode::OK, &apps)
    })
}

/// `POST /api/v2/oauth2-provider/apps`: 201 with the app (no secret yet).
pub(crate) async fn create_app(
    State(inner): State<AppState>,
    Extension(_caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: PostOAuth2ProviderAppRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, "Request body must be valid JSON.")
            .detail(err.to_string())
    })?;
    let mut invalid = ApiError::new(StatusCode::BAD_REQUEST, "Invalid OAuth2 application.");
    if req.name.trim().is_empty() {
        invalid = invalid.validation("name", "Validation failed for tag \"required\"");
    }
    if Url::parse(&req.callback_url).is_err() {
        invalid = invalid.validation("callback_url", "Validation failed for tag \"http_url\"");
    }
    if !invalid.body.validations.is_empty() {
        return Err(invalid);
    }
    let access = inner.url();
    let app = inner.update_quiet(|st| {
        let duplicate = st.oauth.apps.iter().any(|a| a.name == req.name);
        if duplicate {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "OAuth2 application name already exists.",
            ));
        }
        let id = st
            .oauth
            .register_app(&req.name, &req.callback_url, &req.icon)
            .id;
        // An app made through the API has no secret until one is created.
        let app = st
            .oauth
            .apps
            .iter_mut()
            .find(|a| a.id == id)
            .expect("just added");
        app.secrets.clear();
        Ok(render_app(&access, app))
    })?;
    Ok(json_response(StatusCode::CREATED, &app))
}

/// `GET /api/v2/oauth2-provider/apps/{app}`.
pub(crate) async fn get_app(State(inner): State<AppState>, Path(app): Path<String>) -> ApiResult {
    let id = parse_uuid(&app, "app")?;
    let access = inner.url();
    inner.read(|st| {
        st.oauth
            .app(id)
            .map(|a| json_response(StatusCode::OK, &render_app(&access, a)))
            .ok_or_else(ApiError::not_found)
    })
}

/// `POST /api/v2/oauth2-provider/apps/{app}/secrets`: 201 with the full secret (the
/// only time it is shown).
pub(crate) async fn create_secret(
    State(inner): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult {
    let id = parse_uuid(&app, "app")?;
    inner.update_quiet(|st| {
        let app = st
            .oauth
            .apps
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(ApiError::not_found)?;
        let secret = OAuth2ProviderAppSecretFull {
            id: Uuid::new_v4(),
            client_secret_full: formatted_secret(),
        };
        app.secrets
            .push((secret.id, secret.client_secret_full.clone()));
        Ok(json_response(StatusCode::CREATED, &secret))
    })
}

/// The `WWW-Authenticate` header coderd's API-key middleware puts on its 401 and 403
/// answers (`buildWWWAuthenticateHeader`). Its "expired" test looks at the message
/// too, and the signed-out message says "your session has expired", so every such
/// 401 says "The access token has expired", as in coderd.
pub(crate) fn www_authenticate(access: &str, status: StatusCode, body: &Response) -> HeaderValue {
    let metadata = format!("{access}/.well-known/oauth-protected-resource");
    let value = match status {
        StatusCode::UNAUTHORIZED => {
            let description = if body.message.contains("expired") || body.detail.contains("expired")
            {
                "The access token has expired"
            } else if body.message.contains("audience") || body.message.contains("mismatch") {
                "The access token audience does not match this resource"
            } else {
                "The access token is invalid"
            };
            format!(
                r#"Bearer realm="coder", error="invalid_token", error_description="{description}", resource_metadata="{metadata}""#
            )
        }
        StatusCode::FORBIDDEN => format!(
            r#"Bearer realm="coder", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", resource_metadata="{metadata}""#
        ),
        _ => format!(r#"Bearer realm="coder", resource_metadata="{metadata}""#),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Go's `time.Time.String()` for an API key's expiry in a 401 detail.
pub(crate) fn go_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string()
}
