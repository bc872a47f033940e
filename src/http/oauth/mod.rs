//! `serve` as the OAuth 2.1 authorization server of its MCP clients (`--public-url`),
//! delegating the user's sign-in to Coder (the MCP authorization spec's third-party flow).
//!
//! Coder is an OAuth2 provider, but it answers 403 to any token whose audience is not its
//! own access URL (NOTES §6), so an MCP client that follows the spec for *this* server
//! (`resource=<public-url>/mcp`) cannot use a token from Coder directly. Instead:
//!
//! 1. the MCP client discovers us (RFC 9728 at `/.well-known/oauth-protected-resource/mcp`,
//!    RFC 8414 at `/.well-known/oauth-authorization-server`), registers (RFC 7591
//!    `/register`) and sends its user to `/authorize` with PKCE S256;
//! 2. `/authorize` keeps the request and sends the user on to Coder's `/oauth2/authorize`
//!    as Coder's OAuth2 app (`--coder-oauth-client-id`), with our own PKCE and state and
//!    `resource` = Coder's URL;
//! 3. `/callback` exchanges Coder's code for the user's Coder token, keeps it sealed in
//!    the store (a *grant*), and sends the user back to the MCP client with our code;
//! 4. `/token` gives the MCP client our own opaque tokens (stored hashed, audience = our
//!    `/mcp`), rotating refresh tokens; `/revoke` ends the grant here and at Coder.
//!
//! A bearer that is one of our access tokens acts as the grant's Coder user, with the
//! Coder token refreshed before it expires. The Coder token never reaches the MCP client
//! and our tokens never reach Coder.

mod cimd;
mod consent;
mod crypto;
mod endpoints;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coder::token::Renew;
use crate::coder::types::User;
use crate::coder::{CoderClient, Identity, LiveToken, SessionToken};
use crate::store::{OAuthRow, OAuthTable, Store, StoreError};
pub use crypto::SealKey;
pub use endpoints::router;

/// Our access tokens start with this (Coder API keys never do), so a bearer is known to
/// be ours, or a Coder token, without asking anyone.
const ACCESS_PREFIX: &str = "cwm_at_";
const REFRESH_PREFIX: &str = "cwm_rt_";
const CODE_PREFIX: &str = "cwm_ac_";
/// How long a verified grant's Coder identity is reused before the store is read again.
const IDENTITY_TTL: Duration = Duration::from_secs(30);
/// A Coder token this close to its expiry is refreshed before it is used.
const REFRESH_MARGIN: i64 = 120;
/// How long a user has to sign in at Coder.
const PENDING_LIFETIME: i64 = 600;
/// How long our authorization code lives (OAuth 2.1: short).
const CODE_LIFETIME: i64 = 120;
/// Longest wait for Coder's OAuth2 endpoints.
const CODER_TIMEOUT: Duration = Duration::from_secs(15);

/// `--public-url` and the rest, checked.
pub struct OAuthConfig {
    /// The server's public URL, without a trailing slash: the issuer.
    pub public_url: String,
    pub coder_client_id: String,
    pub coder_client_secret: SessionToken,
    pub key: SealKey,
    /// RFC 7591 dynamic client registration at `/register`.
    pub registration: bool,
    /// Clients identified by the URL of their metadata document (no registration).
    pub client_metadata_documents: bool,
    /// Fetch metadata documents over http and from non-public addresses (tests only).
    pub allow_private_client_metadata: bool,
    /// Registrations per client address and hour (0: no limit).
    pub registrations_per_hour: u32,
    pub access_token_lifetime: Duration,
    /// Refresh tokens, and a grant not refreshed, last this long.
    pub refresh_token_lifetime: Duration,
}

impl OAuthConfig {
    /// The protected resource: our MCP endpoint.
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.public_url)
    }

    /// Where `WWW-Authenticate` sends clients.
    pub fn resource_metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.public_url
        )
    }

    fn callback(&self) -> String {
        format!("{}/callback", self.public_url)
    }
}

/// A public URL: absolute http(s), no query or fragment; the trailing slash dropped.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("must be an absolute http(s) URL, e.g. https://mcp.example.com".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Why a bearer that looks like ours was not accepted.
pub enum BearerError {
    Rejected(String),
    /// The store or Coder failed: not the token's fault.
    Unavailable(String),
}

impl From<StoreError> for BearerError {
    fn from(err: StoreError) -> Self {
        BearerError::Unavailable(err.to_string())
    }
}

/// A registered client (not secret: its secret is kept as a hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientData {
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: String,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    auth_method: String,
    secret_hash: Option<String>,
    issued_at: i64,
}

/// An authorization request waiting for the user's sign-in at Coder (sealed: it holds
/// our PKCE verifier for Coder).
#[derive(Serialize, Deserialize)]
struct PendingData {
    client_id: String,
    redirect_uri: String,
    /// Whether the client sent `redirect_uri` (then the token request must repeat it).
    redirect_uri_given: bool,
    state: Option<String>,
    code_challenge: String,
    coder_verifier: String,
    /// The SHA-256 of the cookie set with the consent page: only that browser answers it.
    #[serde(default)]
    browser: Option<String>,
}

/// Our authorization code's request.
#[derive(Serialize, Deserialize)]
struct CodeData {
    client_id: String,
    redirect_uri: String,
    redirect_uri_given: bool,
    code_challenge: String,
}

/// One of our tokens.
#[derive(Serialize, Deserialize)]
struct TokenData {
    /// `access` or `refresh`.
    kind: String,
    client_id: String,
    /// The audience (RFC 8707).
    resource: String,
}

/// A user's sign-in through Coder, for one client (sealed: it holds the Coder token).
///
/// Coder keeps one token per user and OAuth2 app, and deletes it when it issues another,
/// so every sign-in of one Coder user shares one Coder token: the grant names the user
/// (`coder_user`), and the token lives in a record of this same shape under
/// [`user_record`]'s key, its grant column linking each of the user's grants to it.
/// Grants stored before that hold their own token (`coder_user` absent).
#[derive(Clone, Default, Serialize, Deserialize)]
struct GrantData {
    client_id: String,
    /// The Coder user whose record holds the token (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coder_user: Option<String>,
    #[serde(default)]
    coder_access: String,
    #[serde(default)]
    coder_refresh: String,
    /// Unix seconds; `None` when Coder did not say.
    #[serde(default)]
    coder_expires_at: Option<i64>,
    /// When to refresh it (unix seconds): [`REFRESH_MARGIN`] before it expires, or half way
    /// for a token that lives less than twice that. Absent in grants stored before it.
    #[serde(default)]
    coder_refresh_at: Option<i64>,
}

impl GrantData {
    /// When the Coder token is to be refreshed (`None`: it does not expire).
    fn refresh_at(&self) -> Option<i64> {
        self.coder_refresh_at
            .or_else(|| self.coder_expires_at.map(|at| at - REFRESH_MARGIN))
    }
}

/// The key of a Coder user's token record, among the grants.
fn user_record(user_id: &str) -> String {
    format!("coder-user:{user_id}")
}

/// When a Coder token that expires at `expires_at` (issued `now`) is to be refreshed:
/// [`REFRESH_MARGIN`] before, but never sooner than half way through its life, so that a
/// short-lived token is not refreshed on every use (each refresh makes Coder delete the
/// token before it, which calls still using it would then see refused).
pub(super) fn refresh_point(expires_at: Option<i64>, now: i64) -> Option<i64> {
    expires_at.map(|at| {
        let life = (at - now).max(0);
        at - REFRESH_MARGIN.min(life / 2)
    })
}

/// Registrations per client address, as a GCRA (the generic cell rate algorithm: one
/// instant per address, when its budget is whole again): `n` an hour, in a burst of up to
/// `n`, so that open registration cannot fill the store.
#[derive(Default)]
struct RegistrationLimit {
    tat: parking_lot::Mutex<HashMap<std::net::IpAddr, tokio::time::Instant>>,
}

impl RegistrationLimit {
    fn admit(&self, address: std::net::IpAddr, per_hour: u32) -> Result<(), Duration> {
        if per_hour == 0 {
            return Ok(());
        }
        let interval = Duration::from_secs(3600) / per_hour;
        let tolerance = interval * (per_hour - 1);
        let now = tokio::time::Instant::now();
        let mut tat = self.tat.lock();
        let at = tat.get(&address).copied().unwrap_or(now).max(now);
        if at > now + tolerance {
            return Err(at - (now + tolerance));
        }
        tat.insert(address, at + interval);
        // Addresses whose budget is whole again need no entry.
        if tat.len() > 10_000 {
            tat.retain(|_, at| *at > now);
        }
        Ok(())
    }
}

/// The OAuth side of `serve`.
pub struct OAuthServer {
    config: OAuthConfig,
    store: Store,
    coder: CoderClient,
    /// grant → its Coder identity and when its Coder token expires.
    identities: moka::future::Cache<String, (Arc<Identity>, Option<i64>)>,
    registrations: RegistrationLimit,
    /// `None` with `--no-client-metadata-documents`.
    documents: Option<cimd::ClientDocuments>,
    /// Coder's OAuth2 provider as last seen, and until when that is reused.
    provider: parking_lot::Mutex<Option<(ProviderStatus, tokio::time::Instant)>>,
    /// grant → its current Coder token, shared by every call acting for it, so that a
    /// call that outlives a refresh uses the new token.
    live: moka::future::Cache<String, Arc<LiveToken>>,
    /// Itself, for the renewals that live tokens ask for.
    me: std::sync::Weak<OAuthServer>,
}

/// Whether Coder serves its OAuth2 provider (its `oauth2` experiment is on).
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderStatus {
    Ready,
    /// Coder answered, but not with its OAuth2 metadata: the reason, for the admin.
    Off(String),
    /// Coder could not be asked.
    Unreachable(String),
}

impl ProviderStatus {
    /// How long this answer is reused: a working provider rarely goes away; one that is
    /// off may be turned on by the admin any moment, and an unreachable Coder may be back,
    /// so those are asked again at the next sign-in (a navigation by a person: rare).
    fn lifetime(&self) -> Duration {
        match self {
            ProviderStatus::Ready => Duration::from_secs(300),
            ProviderStatus::Off(_) | ProviderStatus::Unreachable(_) => Duration::ZERO,
        }
    }
}

impl OAuthServer {
    pub fn new(config: OAuthConfig, store: Store, coder: CoderClient) -> Arc<OAuthServer> {
        Arc::new_cyclic(|me| OAuthServer {
            store,
            coder,
            identities: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(IDENTITY_TTL)
                .build(),
            registrations: RegistrationLimit::default(),
            documents: config
                .client_metadata_documents
                .then(|| cimd::ClientDocuments::new(config.allow_private_client_metadata)),
            config,
            provider: parking_lot::Mutex::new(None),
            live: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            me: me.clone(),
        })
    }

    /// The grant's live token, now `token`.
    async fn live_token(&self, grant_id: &str, token: SessionToken) -> Arc<LiveToken> {
        let live = self
            .live
            .get_with(grant_id.to_owned(), async {
                Arc::new(LiveToken::new(token.clone(), self.renewer(grant_id)))
            })
            .await;
        live.set(token);
        live
    }

    fn renewer(&self, grant_id: &str) -> Renew {
        let server = self.me.clone();
        let grant_id = grant_id.to_owned();
        Box::new(move |used| {
            let server = server.clone();
            let grant_id = grant_id.clone();
            Box::pin(async move { server.upgrade()?.renew(&grant_id, &used).await })
        })
    }

    /// Coder refused the token `used` of the record `key` during a call: the store's
    /// current one (another sign-in, request or replica may have replaced or refreshed
    /// it), else a refreshed one.
    async fn renew(&self, key: &str, used: &SessionToken) -> Option<SessionToken> {
        let renewed = async {
            let (record, row) = self.load_grant(key).await?;
            if record.coder_access != used.expose() {
                return Ok(record);
            }
            self.refresh_coder(key, record, &row).await
        };
        match renewed.await {
            Ok(record) => {
                let token = SessionToken::new(record.coder_access);
                (token != *used).then_some(token)
            }
            Err(BearerError::Rejected(why) | BearerError::Unavailable(why)) => {
                tracing::info!(record = %key, %why, "could not renew a sign-in's Coder token for a call");
                None
            }
        }
    }

    /// Whether Coder serves its OAuth2 provider, from its RFC 8414 metadata: Coder answers
    /// 403 ("… requires enabling the 'oauth2' experiment") to every OAuth2 route while its
    /// `oauth2` experiment is off, and without it every sign-in would end on Coder's error.
    pub async fn coder_provider(&self) -> ProviderStatus {
        let now = tokio::time::Instant::now();
        if let Some((status, until)) = &*self.provider.lock()
            && *until > now
        {
            return status.clone();
        }
        let status = self.ask_coder_provider().await;
        *self.provider.lock() = Some((status.clone(), now + status.lifetime()));
        status
    }

    async fn ask_coder_provider(&self) -> ProviderStatus {
        let base = self.coder.base_url();
        let said = match self.coder.oauth_metadata(CODER_TIMEOUT).await {
            Ok(metadata) if metadata.get("authorization_endpoint").is_some() => {
                return ProviderStatus::Ready;
            }
            Ok(_) => " answered without an authorization_endpoint".to_owned(),
            Err(err) if err.is_transient() => return ProviderStatus::Unreachable(err.to_string()),
            // Coder's error carries its `message` and `detail`: why it is off.
            Err(err) => format!(": {}", crate::quote::shorten(&err.to_string(), 300)),
        };
        ProviderStatus::Off(format!(
            "Coder at {base} does not serve OAuth2 sign-in (its /.well-known/oauth-authorization-server{said}); the Coder admin enables it with the `oauth2` experiment (CODER_EXPERIMENTS=oauth2)"
        ))
    }

    /// Counts a registration from `address`: `Err(retry_after)` when it is over
    /// `--max-registrations` an hour.
    pub(super) fn admit_registration(&self, address: std::net::IpAddr) -> Result<(), Duration> {
        self.registrations
            .admit(address, self.config.registrations_per_hour)
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// Whether `token` is one of ours (else it is taken for a Coder token).
    pub fn is_ours(token: &str) -> bool {
        token.starts_with(ACCESS_PREFIX)
    }

    /// The grant and Coder identity of one of our access tokens.
    pub async fn authenticate(&self, token: &str) -> Result<(String, Arc<Identity>), BearerError> {
        let row = self
            .store
            .oauth_get(OAuthTable::Tokens, &crypto::hash(token))
            .await?
            .ok_or_else(|| BearerError::Rejected("unknown, expired or revoked token".into()))?;
        let data: TokenData = serde_json::from_str(&row.data)
            .map_err(|_| BearerError::Rejected("unreadable token record".into()))?;
        if data.kind != "access" {
            return Err(BearerError::Rejected("not an access token".into()));
        }
        if data.resource != self.config.resource() {
            return Err(BearerError::Rejected(
                "the token was issued for another resource".into(),
            ));
        }
        let grant_id = row
            .grant_id
            .ok_or_else(|| BearerError::Rejected("the token has no grant".into()))?;
        let now = self.store.now();
        if let Some((identity, refresh_at)) = self.identities.get(&grant_id).await
            && refresh_at.is_none_or(|at| at > now)
        {
            return Ok((grant_id, identity));
        }
        let resolved = self.resolve_coalesced(&grant_id).await?;
        if resolved.1.is_some_and(|at| at <= now) {
            // A cached entry whose Coder token is about to expire: resolve again (which
            // refreshes it), coalesced like the first, so that concurrent requests never
            // refresh with the same refresh token at once (Coder rotates it: the second
            // would be refused).
            self.identities.invalidate(&grant_id).await;
            let fresh = self.resolve_coalesced(&grant_id).await?;
            return Ok((grant_id, fresh.0));
        }
        Ok((grant_id, resolved.0))
    }

    /// One resolution per grant at a time, however many requests need it.
    async fn resolve_coalesced(
        &self,
        grant_id: &str,
    ) -> Result<(Arc<Identity>, Option<i64>), BearerError> {
        self.identities
            .try_get_with(grant_id.to_owned(), self.resolve_grant(grant_id))
            .await
            .map_err(|err: Arc<BearerError>| match &*err {
                BearerError::Rejected(why) => BearerError::Rejected(why.clone()),
                BearerError::Unavailable(why) => BearerError::Unavailable(why.clone()),
            })
    }

    /// The grant's Coder identity: its Coder token, refreshed if it is about to expire
    /// (or Coder no longer takes it), checked with `GET /users/me`.
    async fn resolve_grant(
        &self,
        grant_id: &str,
    ) -> Result<(Arc<Identity>, Option<i64>), BearerError> {
        let (grant, _) = self.load_grant(grant_id).await?;
        // The record that holds the Coder token: the user's, or (older grants) its own.
        let key = grant
            .coder_user
            .as_deref()
            .map_or_else(|| grant_id.to_owned(), user_record);
        let (mut grant, row) = self.load_grant(&key).await?;
        let grant_id = key.as_str();
        let now = self.store.now();
        let mut refreshed = false;
        if grant.refresh_at().is_some_and(|at| at <= now) {
            grant = self.refresh_coder(grant_id, grant, &row).await?;
            refreshed = true;
        }
        loop {
            // Checked with the token itself (a live token would renew on a 401, and the
            // renewal comes back here).
            let token = SessionToken::new(grant.coder_access.clone());
            let client = self.coder.with_token(token.clone());
            match tokio::time::timeout(CODER_TIMEOUT, client.me_once()).await {
                Err(_) => return Err(BearerError::Unavailable("Coder did not answer".into())),
                Ok(Ok(user)) => {
                    let live = self.live_token(grant_id, token).await;
                    let client = self.coder.with_live_token(live);
                    return Ok((Arc::new(Identity { client, user }), grant.refresh_at()));
                }
                Ok(Err(err)) if matches!(err.status(), Some(401)) && !refreshed => {
                    grant = self.refresh_coder(grant_id, grant, &row).await?;
                    refreshed = true;
                }
                Ok(Err(err)) if matches!(err.status(), Some(401 | 403)) => {
                    return Err(BearerError::Rejected(format!(
                        "Coder no longer accepts this sign-in: {err}"
                    )));
                }
                Ok(Err(err)) => return Err(BearerError::Unavailable(err.to_string())),
            }
        }
    }

    async fn load_grant(&self, grant_id: &str) -> Result<(GrantData, OAuthRow), BearerError> {
        let row = self
            .store
            .oauth_get(OAuthTable::Grants, grant_id)
            .await?
            .ok_or_else(|| BearerError::Rejected("the sign-in was revoked or expired".into()))?;
        let grant = self.open_grant(grant_id, &row.data).ok_or_else(|| {
            BearerError::Rejected(
                "the sign-in cannot be read (was CODER_MCP_OAUTH_KEY changed?)".into(),
            )
        })?;
        Ok((grant, row))
    }

    fn open_grant(&self, grant_id: &str, sealed: &str) -> Option<GrantData> {
        let plain = self.config.key.open(&format!("grant:{grant_id}"), sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Writes a grant, or a user's token record (same shape), sealed.
    async fn save_grant(
        &self,
        grant_id: &str,
        grant: &GrantData,
        expires_at: i64,
    ) -> Result<(), BearerError> {
        // A grant links to its user's token record; the record itself has no user, no link.
        let link = grant.coder_user.as_deref().map(user_record);
        let plain =
            serde_json::to_vec(grant).map_err(|e| BearerError::Unavailable(e.to_string()))?;
        let sealed = self
            .config
            .key
            .seal(&format!("grant:{grant_id}"), &plain)
            .map_err(BearerError::Unavailable)?;
        self.store
            .oauth_put(
                OAuthTable::Grants,
                grant_id,
                &OAuthRow {
                    grant_id: link,
                    data: sealed,
                    expires_at,
                },
            )
            .await?;
        Ok(())
    }

    /// Refreshes the grant's Coder token with Coder (which rotates its refresh token).
    async fn refresh_coder(
        &self,
        grant_id: &str,
        grant: GrantData,
        row: &OAuthRow,
    ) -> Result<GrantData, BearerError> {
        tracing::debug!(grant = %grant_id, "refreshing the Coder token of a grant");
        let answer = self
            .coder_token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &grant.coder_refresh),
            ])
            .await;
        let token = match answer {
            Ok(token) => token,
            Err(CoderTokenError::Refused(why)) => {
                // Another replica may have refreshed it first (the old refresh token is
                // spent then): take what it stored.
                if let Ok((stored, _)) = self.load_grant(grant_id).await
                    && stored.coder_refresh != grant.coder_refresh
                {
                    return Ok(stored);
                }
                tracing::info!(grant = %grant_id, %why, "Coder refused to refresh a grant; it is removed");
                self.store.oauth_remove_grant(grant_id).await?;
                return Err(BearerError::Rejected(format!(
                    "Coder no longer accepts this sign-in ({why}); sign in again"
                )));
            }
            Err(CoderTokenError::Unavailable(why)) => return Err(BearerError::Unavailable(why)),
        };
        let updated = GrantData {
            client_id: grant.client_id,
            coder_user: grant.coder_user,
            coder_expires_at: coder_expiry(&token, self.store.now()),
            coder_refresh_at: refresh_point(
                coder_expiry(&token, self.store.now()),
                self.store.now(),
            ),
            coder_access: token.access_token,
            coder_refresh: if token.refresh_token.is_empty() {
                grant.coder_refresh
            } else {
                token.refresh_token
            },
        };
        self.save_grant(grant_id, &updated, row.expires_at).await?;
        Ok(updated)
    }

    /// `POST <coder>/oauth2/tokens` as Coder's OAuth2 app, with `resource` = Coder's URL
    /// (the only audience Coder accepts).
    async fn coder_token_request(
        &self,
        params: &[(&str, &str)],
    ) -> Result<coder_api::OAuth2Token, CoderTokenError> {
        let base = self.coder.base_url();
        let mut form: Vec<(&str, &str)> = params.to_vec();
        form.push(("client_id", &self.config.coder_client_id));
        form.push(("client_secret", self.config.coder_client_secret.expose()));
        form.push(("resource", base));
        let response = self
            .coder
            .http()
            .post(format!("{base}/oauth2/tokens"))
            .form(&form)
            .timeout(CODER_TIMEOUT)
            .send()
            .await
            .map_err(|e| CoderTokenError::Unavailable(format!("Coder's token endpoint: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CoderTokenError::Unavailable(format!("Coder's token endpoint: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                CoderTokenError::Unavailable(
                    "Coder's token endpoint answered unreadable JSON".into(),
                )
            });
        }
        let error: coder_api::OAuth2Error = serde_json::from_slice(&body).unwrap_or_default();
        let why = format!("{status} {} {}", error.error, error.error_description);
        if status.is_client_error() {
            Err(CoderTokenError::Refused(why))
        } else {
            Err(CoderTokenError::Unavailable(why))
        }
    }

    /// Ends a grant: here (its codes and tokens), and at Coder (its token) with the
    /// user's last sign-in (the others still use it).
    async fn end_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        let grant = self.load_grant(grant_id).await.ok().map(|(grant, _)| grant);
        self.store.oauth_remove_grant(grant_id).await?;
        self.identities.invalidate(grant_id).await;
        let record = match grant.as_ref().and_then(|g| g.coder_user.as_deref()) {
            Some(user) => {
                let key = user_record(user);
                if self
                    .store
                    .oauth_count_linked(OAuthTable::Grants, &key)
                    .await?
                    > 0
                {
                    return Ok(());
                }
                let record = self.load_grant(&key).await.ok().map(|(record, _)| record);
                self.store.oauth_remove_grant(&key).await?;
                self.live.invalidate(&key).await;
                record
            }
            None => {
                self.live.invalidate(grant_id).await;
                grant
            }
        };
        if let Some(record) = record {
            let base = self.coder.base_url();
            let answer = self
                .coder
                .http()
                .post(format!("{base}/oauth2/revoke"))
                .form(&[
                    ("client_id", self.config.coder_client_id.as_str()),
                    ("client_secret", self.config.coder_client_secret.expose()),
                    ("token", record.coder_refresh.as_str()),
                    ("token_type_hint", "refresh_token"),
                ])
                .timeout(CODER_TIMEOUT)
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "Coder did not revoke a sign-in's token")
                }
                Err(err) => tracing::warn!(%err, "Coder did not revoke a sign-in's token"),
            }
        }
        Ok(())
    }

    /// A sign-in's new Coder token (Coder has just deleted the user's previous one for
    /// this app): kept as the user's record, which every sign-in of that user (and the
    /// calls in flight for them) uses from now on. Returns the user's id.
    async fn adopt_coder_token(
        &self,
        record: &GrantData,
        expires_at: i64,
    ) -> Result<(User, Arc<LiveToken>), BearerError> {
        let token = SessionToken::new(record.coder_access.clone());
        let user = match tokio::time::timeout(
            CODER_TIMEOUT,
            self.coder.with_token(token.clone()).me_once(),
        )
        .await
        {
            Err(_) => return Err(BearerError::Unavailable("Coder did not answer".into())),
            Ok(Ok(user)) => user,
            Ok(Err(err)) => {
                return Err(BearerError::Unavailable(format!(
                    "Coder refused the token it had just issued: {err}"
                )));
            }
        };
        let key = user_record(&user.id.to_string());
        // Kept as long as the longest-lived of the user's grants.
        let expires_at = match self.store.oauth_get(OAuthTable::Grants, &key).await? {
            Some(row) => row.expires_at.max(expires_at),
            None => expires_at,
        };
        self.save_grant(&key, record, expires_at).await?;
        // Set once, here: the user's calls in flight use the new token from now on.
        let live = self.live_token(&key, token).await;
        Ok((user, live))
    }

    /// A new sign-in's identity, as [`Self::adopt_coder_token`] has just checked it with
    /// Coder: its first requests need no second `GET /users/me`.
    async fn remember_identity(
        &self,
        grant_id: &str,
        user: User,
        live: Arc<LiveToken>,
        record: &GrantData,
    ) {
        let identity = Arc::new(Identity {
            client: self.coder.with_live_token(live),
            user,
        });
        self.identities
            .insert(grant_id.to_owned(), (identity, record.refresh_at()))
            .await;
    }

    /// A used sign-in keeps its grant, and the user's token record, alive until
    /// `expires_at`.
    async fn renew_grant(&self, grant_id: &str, expires_at: i64) -> Result<(), StoreError> {
        let Some(mut row) = self.store.oauth_get(OAuthTable::Grants, grant_id).await? else {
            return Ok(());
        };
        let link = row.grant_id.clone();
        row.expires_at = expires_at;
        self.store
            .oauth_put(OAuthTable::Grants, grant_id, &row)
            .await?;
        if let Some(key) = link
            && let Some(mut record) = self.store.oauth_get(OAuthTable::Grants, &key).await?
            && record.expires_at < expires_at
        {
            record.expires_at = expires_at;
            self.store
                .oauth_put(OAuthTable::Grants, &key, &record)
                .await?;
        }
        Ok(())
    }
}

enum CoderTokenError {
    /// Coder said no (4xx): the code or refresh token is no good.
    Refused(String),
    Unavailable(String),
}

/// When a Coder token expires (unix seconds), from `expiry` or `expires_in`.
fn coder_expiry(token: &coder_api::OAuth2Token, now: i64) -> Option<i64> {
    token
        .expiry
        .map(|at| at.timestamp())
        .or_else(|| token.expires_in.map(|s| now.saturating_add(s)))
}

fn lifetime_secs(lifetime: Duration) -> i64 {
    i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coder_tokens_are_refreshed_before_they_expire_but_not_on_every_use() {
        let now = 1_000_000;
        // A day-long token: REFRESH_MARGIN before it expires.
        assert_eq!(
            refresh_point(Some(now + 86_400), now),
            Some(now + 86_400 - REFRESH_MARGIN)
        );
        // A minute-long one: half way, not at once.
        assert_eq!(refresh_point(Some(now + 60), now), Some(now + 30));
        assert_eq!(refresh_point(None, now), None);
        let grant = GrantData {
            client_id: String::new(),
            coder_user: None,
            coder_access: String::new(),
            coder_refresh: String::new(),
            coder_expires_at: Some(now + 600),
            coder_refresh_at: None,
        };
        assert_eq!(
            grant.refresh_at(),
            Some(now + 600 - REFRESH_MARGIN),
            "older grants"
        );
    }
}
