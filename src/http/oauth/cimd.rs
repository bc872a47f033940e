//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, the MCP
//! authorization spec's preferred registration): a client whose `client_id` is an HTTPS
//! URL is described by the JSON document at that URL, fetched when it is first used and
//! cached, so that clients need not register at all.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk: only `https`,
//! no redirects, no proxy, a small body, a short timeout, and never an address that is
//! not globally routable (checked on the resolved addresses, so a DNS name pointing
//! inside the network is refused too). `--oauth-allow-private-client-metadata` (hidden,
//! for tests) lifts the address and scheme rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ClientData;
use super::endpoints::{MAX_REDIRECT_URIS, client_name, strings, valid_redirect_uri};

/// The draft suggests 5 KB: a document is a handful of fields.
const MAX_DOCUMENT: usize = 5 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a document is reused: its `Cache-Control: max-age`, within these bounds
/// (at least a minute, so that one sign-in does not fetch it three times; at most a day,
/// so that a client's changed redirect URIs are seen).
const MIN_CACHE: Duration = Duration::from_secs(60);
const DEFAULT_CACHE: Duration = Duration::from_secs(300);
const MAX_CACHE: Duration = Duration::from_secs(86_400);

/// Whether `client_id` names a metadata document rather than a registered client (ours
/// start with `cwm_client_`, never with a scheme).
pub(super) fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The documents seen, and how to fetch more.
pub(super) struct ClientDocuments {
    http: reqwest::Client,
    allow_private: bool,
    cache: moka::future::Cache<String, Arc<(ClientData, Instant)>>,
}

impl ClientDocuments {
    pub(super) fn new(allow_private: bool) -> ClientDocuments {
        let resolver = Arc::new(PublicOnly { allow_private });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(resolver)
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("coder-workspace-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        ClientDocuments {
            http,
            allow_private,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(MAX_CACHE)
                .build(),
        }
    }

    /// The client `client_id` describes, or why it cannot be used (said to the user or the
    /// client as is).
    pub(super) async fn client(&self, client_id: &str) -> Result<ClientData, String> {
        if let Some(entry) = self.cache.get(client_id).await
            && entry.1 > Instant::now()
        {
            return Ok(entry.0.clone());
        }
        let (client, lifetime) = self.fetch(client_id).await?;
        self.cache
            .insert(
                client_id.to_owned(),
                Arc::new((client.clone(), Instant::now() + lifetime)),
            )
            .await;
        tracing::info!(client = %client_id, name = %client.client_name, "OAuth client metadata document fetched");
        Ok(client)
    }

    async fn fetch(&self, client_id: &str) -> Result<(ClientData, Duration), String> {
        let url = self.check_url(client_id)?;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                // The innermost cause says what happened (the resolver's refusal, a
                // refused connection, a timeout); the layers above only wrap it.
                let mut cause: &dyn std::error::Error = &e;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                let why = if e.is_timeout() {
                    "it did not answer in time".to_owned()
                } else {
                    cause.to_string()
                };
                format!("the client's metadata document could not be fetched: {why}")
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "the client's metadata document answered {status}{}",
                if status.is_redirection() {
                    " (redirects are not followed)"
                } else {
                    ""
                }
            ));
        }
        let lifetime = cache_lifetime(response.headers());
        let body = read_limited(response).await?;
        let document: Value = serde_json::from_slice(&body)
            .map_err(|_| "the client's metadata document is not JSON".to_owned())?;
        Ok((client_from_document(client_id, &document)?, lifetime))
    }

    /// The draft's rules for a `client_id` URL, and ours against forgery.
    fn check_url(&self, client_id: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(client_id)
            .map_err(|e| format!("client_id is not a valid URL ({e})"))?;
        if url.scheme() != "https" && !(self.allow_private && url.scheme() == "http") {
            return Err("a client_id URL must use https".into());
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err("a client_id URL must not have a fragment or credentials".into());
        }
        // Dot segments are normalised away by the parser: compare with what was sent.
        if url.path() == "/" || client_id.split('/').any(|s| s == "." || s == "..") {
            return Err("a client_id URL must have a path, without . or .. segments".into());
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("a client_id URL must name a host".into()),
        };
        // The resolver is not asked about literal addresses: check them here.
        if let Some(ip) = literal
            && !self.allow_private
            && !is_public(ip)
        {
            return Err(format!("a client_id URL must name a public host, not {ip}"));
        }
        Ok(url)
    }
}

/// The document's client, checked as the draft says: its `client_id` is the URL exactly,
/// redirect URIs are given, and it is a public client (no shared secret: anyone can read
/// the document).
fn client_from_document(client_id: &str, document: &Value) -> Result<ClientData, String> {
    let bad = |why: &str| Err(format!("the client's metadata document {why}"));
    if !document.is_object() {
        return bad("is not a JSON object");
    }
    if document.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return bad("must have a client_id equal to its own URL");
    }
    if document.get("client_secret").is_some() || document.get("client_secret_expires_at").is_some()
    {
        return bad("must not hold a client_secret");
    }
    match document.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {}
        Some(Value::String(method)) if method == "none" => {}
        Some(_) => {
            return bad(
                "must declare token_endpoint_auth_method none (this server takes no client secrets or keys from documents)",
            );
        }
    }
    let redirect_uris = match strings(document, "redirect_uris") {
        Ok(Some(uris)) if !uris.is_empty() && uris.len() <= MAX_REDIRECT_URIS => uris,
        Ok(_) => {
            return bad(&format!("must list 1 to {MAX_REDIRECT_URIS} redirect_uris"));
        }
        Err(why) => return bad(&format!("is invalid: {why}")),
    };
    for uri in &redirect_uris {
        if let Err(why) = valid_redirect_uri(uri) {
            return bad(&format!("has a redirect URI that cannot be used: {why}"));
        }
    }
    match strings(document, "grant_types") {
        Ok(Some(types)) if !types.iter().any(|t| t == "authorization_code") => {
            return bad("must allow the authorization_code grant");
        }
        Err(why) => return bad(&format!("is invalid: {why}")),
        Ok(_) => {}
    }
    let client_name = client_name(document);
    Ok(ClientData {
        redirect_uris,
        client_name,
        auth_method: "none".into(),
        secret_hash: None,
        issued_at: 0,
    })
}

fn cache_lifetime(headers: &reqwest::header::HeaderMap) -> Duration {
    let max_age = headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        });
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CACHE)
        .clamp(MIN_CACHE, MAX_CACHE)
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("the client's metadata document is larger than {MAX_DOCUMENT} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the client's metadata document could not be read: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT {
            return Err(too_big());
        }
    }
    Ok(body)
}

/// Resolves names as the system does, keeping only globally routable addresses.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if usable.is_empty() {
                let why: Box<dyn std::error::Error + Send + Sync> = if resolved.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    format!("{host} resolves only to addresses that are not public").into()
                };
                return Err(why);
            }
            let addrs: reqwest::dns::Addrs = Box::new(usable.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `ip` is globally routable (std's `is_global` is unstable): not loopback,
/// private, link-local, shared, documentation, benchmarking, reserved or multicast.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64
                    && !is_public_v4(embedded_v4(v6))))
        }
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_globally_routable_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn client_id_urls_follow_the_draft() {
        let strict = ClientDocuments::new(false);
        for (url, why) in [
            ("http://example.com/client.json", "https"),
            ("https://example.com", "path"),
            ("https://example.com/", "path"),
            ("https://example.com/a/../client.json", "path"),
            ("https://user:pw@example.com/c.json", "credentials"),
            ("https://example.com/c.json#x", "fragment"),
            ("https://127.0.0.1/c.json", "public host"),
            ("https://[::1]/c.json", "public host"),
            ("https://10.0.0.5/c.json", "public host"),
        ] {
            let err = strict.check_url(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(
            strict
                .check_url("https://client.example.com/oauth/metadata.json")
                .is_ok()
        );
        let lax = ClientDocuments::new(true);
        assert!(lax.check_url("http://127.0.0.1:8080/client.json").is_ok());
    }

    #[test]
    fn documents_are_checked_as_the_draft_says() {
        let id = "https://client.example.com/c.json";
        let good = json!({"client_id": id, "client_name": "Example", "redirect_uris": ["http://127.0.0.1:3000/cb"]});
        let client = client_from_document(id, &good).unwrap();
        assert_eq!(client.redirect_uris, ["http://127.0.0.1:3000/cb"]);
        assert_eq!(client.auth_method, "none");
        assert_eq!(client.client_name, "Example");
        let mut cases = vec![
            (json!([]), "JSON object"),
            (
                json!({"redirect_uris": ["https://a.example/cb"]}),
                "client_id equal",
            ),
            (
                json!({"client_id": "https://other.example/c.json", "redirect_uris": ["https://a.example/cb"]}),
                "client_id equal",
            ),
            (json!({"client_id": id}), "redirect_uris"),
            (
                json!({"client_id": id, "redirect_uris": []}),
                "redirect_uris",
            ),
            (
                json!({"client_id": id, "redirect_uris": ["javascript:alert(1)"]}),
                "redirect URI",
            ),
            (
                json!({"client_id": id, "redirect_uris": ["http://evil.example/cb"]}),
                "redirect URI",
            ),
        ];
        for (field, value) in [
            ("token_endpoint_auth_method", json!("client_secret_basic")),
            ("token_endpoint_auth_method", json!("private_key_jwt")),
            ("client_secret", json!("s3cret")),
            ("grant_types", json!(["client_credentials"])),
        ] {
            let mut document = good.clone();
            document[field] = value;
            let why = match field {
                "client_secret" => "client_secret",
                "grant_types" => "authorization_code",
                _ => "token_endpoint_auth_method",
            };
            cases.push((document, why));
        }
        for (document, why) in cases {
            let err = client_from_document(id, &document).unwrap_err();
            assert!(err.contains(why), "{document}: {err}");
        }
    }

    #[test]
    fn documents_are_cached_for_their_max_age_within_bounds() {
        let with = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::CACHE_CONTROL, value.parse().unwrap());
            cache_lifetime(&headers)
        };
        assert_eq!(with("public, max-age=3600"), Duration::from_secs(3600));
        assert_eq!(with("max-age=0"), MIN_CACHE);
        assert_eq!(with("max-age=99999999"), MAX_CACHE);
        assert_eq!(with("no-cache"), DEFAULT_CACHE);
        assert_eq!(cache_lifetime(&Default::default()), DEFAULT_CACHE);
    }
}
