//! Request guards for every MCP route: `Host` and `Origin` allow-lists (against DNS
//! rebinding and cross-site requests from browsers) and the request body limit.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// What is allowed in, from `--allowed-host`, `--allowed-origin` and `--max-body`.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Host names (without port) accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
    /// Exact origins (`scheme://host[:port]`) accepted in the `Origin` header.
    pub allowed_origins: Vec<String>,
    pub max_body: usize,
}

/// Loopback names, always accepted as `Host` unless the allow-list is replaced.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl GuardConfig {
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8790` → `::1`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    tracing::info!(%status, %message, "request refused");
    super::body::error_response(status, &message)
}

/// The host a request is for, checked against `--allowed-host`: exactly one `Host`
/// header, and an absolute-form target (`POST http://host/mcp`) or HTTP/2 `:authority`
/// must name an allowed host too (RFC 9112 §3.2.2: the target's authority is the one
/// that counts, so a permissive `Host` must not vouch for it). Returns the host, or the
/// refusal: 400 for a malformed request, 403 for a host that is not allowed.
fn checked_host<'r>(
    config: &GuardConfig,
    request: &'r Request,
) -> Result<&'r str, (StatusCode, String)> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "more than one Host header".to_owned(),
        ));
    }
    let header = match header.map(|v| v.to_str()) {
        Some(Ok(host)) => Some(host),
        Some(Err(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "the Host header is not text".to_owned(),
            ));
        }
        None => None,
    };
    let target = request.uri().authority().map(|a| a.as_str());
    for host in [target, header].into_iter().flatten() {
        if !config.host_allowed(host) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("Host {host:?} is not allowed (see --allowed-host)"),
            ));
        }
    }
    target
        .or(header)
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "missing Host header".to_owned()))
}

/// Refuses requests with a foreign `Host` or `Origin` (403), more or fewer than one
/// `Host` (400), or a declared body over the limit (413).
pub async fn guard(
    State(config): State<Arc<GuardConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let host = match checked_host(&config, &request) {
        Ok(host) => host,
        Err((status, message)) => return refuse(status, message),
    };
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        // Our own loopback origin is no cross-site request (no page can have it but ours).
        let same_loopback_origin = LOOPBACK_HOSTS.contains(&host_name(host))
            && origin
                .trim_end_matches('/')
                .eq_ignore_ascii_case(&format!("http://{host}"));
        if !config.origin_allowed(origin) && !same_loopback_origin {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("Origin {origin:?} is not allowed (see --allowed-origin)"),
            );
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > config.max_body) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over the limit of {} bytes (see --max-body)",
                config.max_body
            ),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_without_ports() {
        assert_eq!(host_name("localhost:8790"), "localhost");
        assert_eq!(host_name("[::1]:8790"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
        let config = GuardConfig {
            allowed_hosts: LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect(),
            allowed_origins: vec!["https://app.example.com".into()],
            max_body: 10,
        };
        assert!(config.host_allowed("127.0.0.1:1234"));
        assert!(config.host_allowed("[::1]:1"));
        assert!(!config.host_allowed("evil.example:8790"));
        assert!(config.origin_allowed("https://app.example.com/"));
        assert!(!config.origin_allowed("https://evil.example"));
    }
}
