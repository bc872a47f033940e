//! Who an HTTP client is: its Coder session token, checked with Coder and cached briefly.
//!
//! Each client acts as its own Coder user (`Authorization: Bearer <token>` or
//! `Coder-Session-Token: <token>`). With `--shared-identity`, clients instead present a
//! static `--auth-token` and all act as the server's own Coder identity.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::coder::Identity;
use crate::coder::client::SESSION_TOKEN_HEADER;
use crate::coder::{CoderClient, SessionToken};

/// How long a token Coder accepted is trusted before it is checked again.
const ACCEPTED_TTL: Duration = Duration::from_secs(60);
/// How long a token Coder rejected stays rejected without asking again.
const REJECTED_TTL: Duration = Duration::from_secs(10);
/// The realm named in `WWW-Authenticate`.
const REALM: &str = "coder-workspace-mcp";

/// A single identity shared by every client that presents the static bearer.
pub struct SharedIdentity {
    pub bearer: SessionToken,
    pub identity: Arc<Identity>,
}

/// The authenticated caller: the credential its session is bound to, and who it is in Coder.
#[derive(Clone)]
pub struct Caller {
    pub credential: SessionToken,
    pub identity: Arc<Identity>,
}

/// Why a request was not authenticated.
#[derive(Debug)]
pub enum AuthError {
    Missing,
    Rejected(String),
    /// Coder could not be asked.
    Unavailable(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, challenge, message) = match self {
            AuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{REALM}\""),
                "missing credentials: send your Coder session token as `Authorization: Bearer <token>` (or a `Coder-Session-Token` header)".to_owned(),
            ),
            AuthError::Rejected(why) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
                format!("the token was rejected: {why}"),
            ),
            AuthError::Unavailable(why) => {
                return super::body::error_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("cannot check the token with Coder: {why}"),
                );
            }
        };
        let mut response = super::body::error_response(status, &message);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

enum Cached {
    Accepted(Arc<Identity>, Instant),
    Rejected(String, Instant),
}

/// Checks credentials, with a short cache so a busy session does not ask Coder on every request.
pub struct Authenticator {
    coder: CoderClient,
    shared: Option<SharedIdentity>,
    cache: Mutex<HashMap<SessionToken, Cached>>,
}

impl Authenticator {
    pub fn new(coder: CoderClient, shared: Option<SharedIdentity>) -> Self {
        Self {
            coder,
            shared,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token a request carries, if any: `Authorization: Bearer`, else Coder's own
    /// `Coder-Session-Token` header.
    pub fn credential(headers: &HeaderMap) -> Option<SessionToken> {
        let bearer = headers.typed_get::<Authorization<Bearer>>();
        let bearer = bearer.as_ref().map(|auth| auth.token());
        let coder = headers
            .get(SESSION_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        bearer
            .or(coder)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(SessionToken::new)
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let credential = Self::credential(headers).ok_or(AuthError::Missing)?;
        if let Some(shared) = &self.shared {
            // In constant time: how much of the bearer a guess got right must not show.
            let matches: bool = credential
                .expose()
                .as_bytes()
                .ct_eq(shared.bearer.expose().as_bytes())
                .into();
            return if matches {
                Ok(Caller {
                    credential,
                    identity: shared.identity.clone(),
                })
            } else {
                Err(AuthError::Rejected(
                    "it is not this server's --auth-token".into(),
                ))
            };
        }
        let now = Instant::now();
        match self.cache.lock().get(&credential) {
            Some(Cached::Accepted(identity, at)) if now.duration_since(*at) < ACCEPTED_TTL => {
                return Ok(Caller {
                    credential,
                    identity: identity.clone(),
                });
            }
            Some(Cached::Rejected(why, at)) if now.duration_since(*at) < REJECTED_TTL => {
                return Err(AuthError::Rejected(why.clone()));
            }
            _ => {}
        }
        let client = self.coder.with_token(credential.clone());
        let outcome = client.me().await;
        let mut cache = self.cache.lock();
        // Keep the cache from growing without bound on a stream of bad tokens.
        cache.retain(|_, entry| match entry {
            Cached::Accepted(_, at) => now.duration_since(*at) < ACCEPTED_TTL,
            Cached::Rejected(_, at) => now.duration_since(*at) < REJECTED_TTL,
        });
        match outcome {
            Ok(user) => {
                let identity = Arc::new(Identity { client, user });
                cache.insert(credential.clone(), Cached::Accepted(identity.clone(), now));
                Ok(Caller {
                    credential,
                    identity,
                })
            }
            Err(err) if matches!(err.status(), Some(401 | 403)) => {
                let why = err.to_string();
                cache.insert(credential, Cached::Rejected(why.clone(), now));
                Err(AuthError::Rejected(why))
            }
            Err(err) => Err(AuthError::Unavailable(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_coder_headers() {
        let mut headers = HeaderMap::new();
        assert!(Authenticator::credential(&headers).is_none());
        headers.insert(SESSION_TOKEN_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(Authenticator::credential(&headers).unwrap().expose(), "abc");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(Authenticator::credential(&headers).unwrap().expose(), "xyz");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        assert_eq!(Authenticator::credential(&headers).unwrap().expose(), "abc");
    }
}
