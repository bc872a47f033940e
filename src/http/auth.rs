//! Who an HTTP client is: its Coder session token, checked with Coder and cached briefly.
//!
//! Each client acts as its own Coder user (`Authorization: Bearer <token>` or
//! `Coder-Session-Token: <token>`). With `--shared-identity`, clients instead present a
//! static `--auth-token` and all act as the server's own Coder identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::conn::Peer;
use super::oauth::{BearerError, OAuthServer};
use crate::coder::Identity;
use crate::coder::client::SESSION_TOKEN_HEADER;
use crate::coder::{CoderClient, SessionToken};

/// How long a token Coder accepted is trusted before it is checked again.
const ACCEPTED_TTL: Duration = Duration::from_secs(60);
/// How long a token Coder rejected stays rejected without asking again.
const REJECTED_TTL: Duration = Duration::from_secs(10);
/// Most tokens remembered at once (a stream of random tokens must not grow memory).
const CACHE_CAPACITY: u64 = 100_000;
/// Longest wait for Coder's answer about a token.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a token Coder accepted stays known as good: its re-checks are not held up
/// by its address's failures (behind a proxy, everyone shares one address).
const KNOWN_GOOD_TTL: Duration = Duration::from_secs(3600);
/// The longest outage hold Coder's own `Retry-After` may ask for.
const MAX_OUTAGE_HOLD: Duration = Duration::from_secs(60);
/// The realm named in `WWW-Authenticate`.
const REALM: &str = "coder-workspace-mcp";

/// `--max-auth-failures` and how long a failing Coder is taken to be down.
#[derive(Debug, Clone, Copy)]
pub struct AuthLimits {
    /// Failed authentications a client address may have per minute (0: no limit).
    pub max_failures_per_minute: u32,
    /// After Coder failed a token check, how long new tokens are answered 503 at once.
    pub outage_hold: Duration,
}

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
    /// No credentials; with OAuth on, where its protected-resource metadata is.
    Missing(Option<Arc<str>>),
    Rejected(String, Option<Arc<str>>),
    /// Coder could not be asked, or failed to answer: not the token's fault.
    Unavailable {
        why: String,
        retry_after: Duration,
    },
    /// Too many failed authentications from the client's address.
    TooManyFailures {
        retry_after: Duration,
    },
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, challenge, message) = match self {
            // The MCP authorization spec: every 401 names the resource metadata, from
            // which a client finds where to sign in.
            AuthError::Missing(Some(metadata)) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer resource_metadata=\"{metadata}\""),
                "missing credentials: sign in with OAuth (see the resource_metadata in WWW-Authenticate), or send your Coder session token as `Authorization: Bearer <token>`".to_owned(),
            ),
            AuthError::Missing(None) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{REALM}\""),
                "missing credentials: send your Coder session token as `Authorization: Bearer <token>` (or a `Coder-Session-Token` header)".to_owned(),
            ),
            AuthError::Rejected(why, Some(metadata)) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\""),
                format!("the token was rejected: {why}"),
            ),
            AuthError::Rejected(why, None) => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
                format!("the token was rejected: {why}"),
            ),
            AuthError::Unavailable { why, retry_after } => {
                tracing::info!(error = %why, "token check: Coder is unavailable");
                return super::body::retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("Coder is unavailable, so the token cannot be checked ({why}); try again later"),
                    retry_after,
                );
            }
            AuthError::TooManyFailures { retry_after } => {
                return super::body::retry_later(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentications from your address; try again later (see --max-auth-failures)",
                    retry_after,
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

/// What Coder said about a token.
#[derive(Clone)]
enum Verdict {
    Accepted(Arc<Identity>),
    Rejected(Arc<str>),
}

impl Verdict {
    fn caller(
        self,
        credential: SessionToken,
        metadata: Option<Arc<str>>,
    ) -> Result<Caller, AuthError> {
        match self {
            Verdict::Accepted(identity) => Ok(Caller {
                credential,
                identity,
            }),
            Verdict::Rejected(why) => Err(AuthError::Rejected(why.to_string(), metadata)),
        }
    }
}

/// Coder failed to answer a token check: why, and how long to hold off asking again.
#[derive(Debug)]
struct Unavailable {
    why: String,
    retry_after: Option<Duration>,
}

/// Accepted tokens are remembered longer than rejected ones.
struct VerdictTtl;

impl moka::Expiry<SessionToken, Verdict> for VerdictTtl {
    fn expire_after_create(
        &self,
        _: &SessionToken,
        verdict: &Verdict,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(match verdict {
            Verdict::Accepted(_) => ACCEPTED_TTL,
            Verdict::Rejected(_) => REJECTED_TTL,
        })
    }
}

/// Failed authentications per client address, as a GCRA (the generic cell rate
/// algorithm, one instant per address): `n` a minute, in a burst of up to `n`. Hand-written
/// rather than `governor`'s, because only failures may count and the check comes before
/// the outcome is known: `governor` can only test an address by spending a cell of it.
struct FailureLimiter {
    per_minute: u32,
    /// When each address's budget is whole again (its theoretical arrival time).
    tat: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureLimiter {
    fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    /// Whether `peer` may fail once more; if not, how long until it may.
    fn check(&self, peer: Peer) -> Result<(), AuthError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let tolerance = self.interval() * (self.per_minute - 1);
        match self.tat.lock().get(&peer.key()) {
            Some(tat) if *tat > now + tolerance => Err(AuthError::TooManyFailures {
                retry_after: *tat - (now + tolerance),
            }),
            _ => Ok(()),
        }
    }

    fn record(&self, peer: Peer) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let mut tat = self.tat.lock();
        let entry = tat.entry(peer.key()).or_insert(now);
        *entry = (*entry).max(now) + self.interval();
        tracing::info!(peer = %peer.0, "failed authentication");
        // Addresses whose budget is whole again need no entry.
        if tat.len() > 10_000 {
            tat.retain(|_, at| *at > now);
        }
    }
}

/// Checks credentials against Coder, so that it cannot be turned against Coder: a token is
/// checked once (`GET /users/me`, never retried) however many requests carry it at once,
/// and the verdict remembered (a minute if accepted, 10 s if rejected; `moka` coalesces
/// the concurrent checks and expires the verdicts, within a bounded size); an address
/// that keeps failing gets 429 before Coder is asked (except for tokens Coder accepted
/// within the hour); and while Coder fails, new tokens get 503 at once (for
/// `--coder-outage-hold`, or as long as Coder's `Retry-After` asks, up to a minute).
pub struct Authenticator {
    coder: CoderClient,
    shared: Option<SharedIdentity>,
    /// `serve` as an OAuth authorization server (`--public-url`), and the
    /// resource-metadata URL every 401 names then.
    oauth: Option<(Arc<OAuthServer>, Arc<str>)>,
    cache: moka::future::Cache<SessionToken, Verdict>,
    /// Tokens Coder accepted in the last hour.
    known_good: moka::future::Cache<SessionToken, ()>,
    failures: FailureLimiter,
    outage_hold: Duration,
    /// Until when Coder is taken to be down, and why.
    outage: Mutex<Option<(Instant, String)>>,
}

impl Authenticator {
    pub fn new(
        coder: CoderClient,
        shared: Option<SharedIdentity>,
        oauth: Option<Arc<OAuthServer>>,
        limits: AuthLimits,
    ) -> Self {
        Self {
            coder,
            shared,
            oauth: oauth.map(|server| {
                let metadata = server.config().resource_metadata_url().into();
                (server, metadata)
            }),
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(VerdictTtl)
                .build(),
            known_good: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(KNOWN_GOOD_TTL)
                .build(),
            failures: FailureLimiter {
                per_minute: limits.max_failures_per_minute,
                tat: Mutex::default(),
            },
            outage_hold: limits.outage_hold,
            outage: Mutex::new(None),
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

    pub async fn authenticate(&self, headers: &HeaderMap, peer: Peer) -> Result<Caller, AuthError> {
        let metadata = self.oauth.as_ref().map(|(_, m)| m.clone());
        let credential =
            Self::credential(headers).ok_or_else(|| AuthError::Missing(metadata.clone()))?;
        if let Some((server, _)) = &self.oauth
            && OAuthServer::is_ours(credential.expose())
        {
            return self.oauth_caller(server, &credential, peer, metadata).await;
        }
        if let Some(shared) = &self.shared {
            self.failures.check(peer)?;
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
                self.failures.record(peer);
                Err(AuthError::Rejected(
                    "it is not this server's --auth-token".into(),
                    metadata,
                ))
            };
        }
        if let Some(verdict) = self.cache.get(&credential).await {
            return verdict.caller(credential, metadata);
        }
        // From here on the answer costs a Coder call. A token accepted lately is being
        // checked again, not guessed: its address's failures do not hold it up.
        if !self.known_good.contains_key(&credential) {
            self.failures.check(peer)?;
        }
        if let Some((until, why)) = self.outage.lock().clone()
            && until > Instant::now()
        {
            return Err(AuthError::Unavailable {
                why,
                retry_after: until - Instant::now(),
            });
        }
        tracing::trace!("token check: asking Coder, or joining the check in flight");
        let verdict = self
            .cache
            .try_get_with(credential.clone(), self.check(&credential))
            .await
            .map_err(|failure: Arc<Unavailable>| {
                // As long as Coder asked (within reason), else the configured hold.
                let hold = failure
                    .retry_after
                    .map_or(self.outage_hold, |after| after.min(MAX_OUTAGE_HOLD))
                    .max(self.outage_hold);
                *self.outage.lock() = Some((Instant::now() + hold, failure.why.clone()));
                AuthError::Unavailable {
                    why: failure.why.clone(),
                    retry_after: hold,
                }
            })?;
        match &verdict {
            Verdict::Rejected(_) => self.failures.record(peer),
            Verdict::Accepted(_) => self.known_good.insert(credential.clone(), ()).await,
        }
        verdict.caller(credential, metadata)
    }

    /// A caller with one of our OAuth access tokens: its grant's Coder user. Its sessions
    /// are bound to the grant (one sign-in), so a refreshed access token keeps them.
    async fn oauth_caller(
        &self,
        server: &OAuthServer,
        credential: &SessionToken,
        peer: Peer,
        metadata: Option<Arc<str>>,
    ) -> Result<Caller, AuthError> {
        self.failures.check(peer)?;
        match server.authenticate(credential.expose()).await {
            Ok((grant, identity)) => Ok(Caller {
                credential: SessionToken::new(format!("oauth-grant:{grant}")),
                identity,
            }),
            Err(BearerError::Rejected(why)) => {
                self.failures.record(peer);
                Err(AuthError::Rejected(why, metadata))
            }
            Err(BearerError::Unavailable(why)) => Err(AuthError::Unavailable {
                why,
                retry_after: self.outage_hold,
            }),
        }
    }

    /// Asks Coder once who the token belongs to. `Err` is Coder's failure, not the token's.
    async fn check(&self, credential: &SessionToken) -> Result<Verdict, Unavailable> {
        let client = self.coder.with_token(credential.clone());
        match tokio::time::timeout(CHECK_TIMEOUT, client.me_once()).await {
            Err(_) => Err(Unavailable {
                why: format!(
                    "Coder did not answer within {}",
                    humantime::format_duration(CHECK_TIMEOUT)
                ),
                retry_after: None,
            }),
            Ok(Ok(user)) => Ok(Verdict::Accepted(Arc::new(Identity { client, user }))),
            Ok(Err(err)) if matches!(err.status(), Some(401 | 403)) => {
                Ok(Verdict::Rejected(err.to_string().into()))
            }
            Ok(Err(err)) => Err(Unavailable {
                why: err.to_string(),
                retry_after: err.retry_after(),
            }),
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

    #[test]
    fn failures_are_limited_per_address() {
        let limiter = FailureLimiter {
            per_minute: 3,
            tat: Mutex::default(),
        };
        let (a, b) = (
            Peer("192.0.2.1".parse().unwrap()),
            Peer("192.0.2.2".parse().unwrap()),
        );
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.record(a);
        }
        match limiter.check(a) {
            Err(AuthError::TooManyFailures { retry_after }) => assert!(
                retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20),
                "one failure more after 60 s / 3: {retry_after:?}"
            ),
            other => panic!("expected TooManyFailures, got {other:?}"),
        }
        assert!(limiter.check(b).is_ok(), "per address");
        let unlimited = FailureLimiter {
            per_minute: 0,
            tat: Mutex::default(),
        };
        for _ in 0..100 {
            unlimited.record(a);
        }
        assert!(unlimited.check(a).is_ok());
    }
}
