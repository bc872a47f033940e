//! The user's consent to a client, asked by this server before it sends them to Coder.
//!
//! This server signs users in at Coder as one OAuth2 app, whatever MCP client asked, so
//! Coder's own consent page names this server, never the client: anyone could register
//! a client (or publish a metadata document) whose redirect URI is theirs and send a
//! signed-in user a link, and the user would approve "coder-workspace-mcp" without
//! seeing where the sign-in goes. The MCP security guidance asks such proxies to get the
//! user's consent for each client first (the confused-deputy problem). So `/authorize`
//! shows which application asks and where the user will be sent back, and only a POST
//! from the same browser (a cookie set with the page, which a cross-site form cannot
//! send) continues to Coder. A consent is remembered per client and redirect URI in a
//! sealed cookie, so that a client signing in again goes straight to Coder.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::crypto::hash;
use super::{ClientData, OAuthServer};

/// The cookie that ties a consent POST to the browser that was shown the page.
pub(super) const BINDING_COOKIE: &str = "cwm_authorize";
/// How long the page may be left open (the pending sign-in lives as long).
const BINDING_MAX_AGE: i64 = super::PENDING_LIFETIME;

fn consent_cookie(client_id: &str) -> String {
    format!("cwm_consent_{}", &hash(client_id)[..16])
}

fn consent_context(client_id: &str) -> String {
    format!("consent:{client_id}")
}

/// The value of the cookie `name` the browser sent.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(server: &OAuthServer, name: &str, value: &str, max_age: i64) -> Option<HeaderValue> {
    // Sent back only to /authorize (where the POST goes); Lax: not on cross-site POSTs.
    let path = url::Url::parse(&server.config.public_url)
        .map(|u| format!("{}/authorize", u.path().trim_end_matches('/')))
        .unwrap_or_else(|_| "/authorize".into());
    let secure = if server.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// Whether this browser already consented to `client_id` being sent to `redirect_uri`.
pub(super) fn remembered(
    server: &OAuthServer,
    headers: &HeaderMap,
    client_id: &str,
    redirect_uri: &str,
) -> bool {
    cookie(headers, &consent_cookie(client_id))
        .and_then(|sealed| server.config.key.open(&consent_context(client_id), sealed))
        .is_some_and(|plain| plain == redirect_uri.as_bytes())
}

/// The cookie that remembers the consent.
pub(super) fn remember(
    server: &OAuthServer,
    client_id: &str,
    redirect_uri: &str,
) -> Option<HeaderValue> {
    let sealed = server
        .config
        .key
        .seal(&consent_context(client_id), redirect_uri.as_bytes())
        .ok()?;
    let max_age = i64::try_from(server.config.refresh_token_lifetime.as_secs()).unwrap_or(i64::MAX);
    set_cookie(server, &consent_cookie(client_id), &sealed, max_age)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Where the user would be sent back: the host (and port), or the app of a custom scheme.
fn destination(redirect_uri: &str) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => format!("the application that opens {}: links", url.scheme()),
        },
        Err(_) => redirect_uri.to_owned(),
    }
}

/// The consent page for a pending sign-in (`state`), with the browser binding `binding`.
pub(super) fn page(
    server: &OAuthServer,
    client: &ClientData,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    binding: &str,
) -> Response {
    let name = if client.client_name.trim().is_empty() {
        "An unnamed application".to_owned()
    } else {
        crate::quote::shorten(client.client_name.trim(), 80)
    };
    let public = &server.config.public_url;
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign in with Coder</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}}code{{word-break:break-all}}button{{font-size:1rem;padding:.5rem 1rem;margin-right:.5rem}}</style>
</head><body>
<h1>Allow “{name}” to use Coder as you?</h1>
<p><strong>{name}</strong> asks to reach your Coder account through this server (<code>{public}</code>): to list templates and create workspaces as you.</p>
<p>Client: <code>{client_id}</code><br>After you sign in at Coder, you will be sent back to <strong>{destination}</strong>.</p>
<p>Continue only if you started this sign-in yourself, from that application. The name is the application's own claim.</p>
<form method="post" action="{action}">
<input type="hidden" name="state" value="{state}">
<button type="submit" name="decision" value="allow">Continue to Coder</button>
<button type="submit" name="decision" value="deny">Cancel</button>
</form>
</body></html>
"#,
        name = escape(&name),
        public = escape(public),
        client_id = escape(&crate::quote::shorten(client_id, 200)),
        destination = escape(&destination(redirect_uri)),
        action = escape(&format!("{public}/authorize")),
        state = escape(state),
    );
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not in a frame (clickjacking), no scripts, nothing loaded. (No form-action: some
    // browsers apply it to the redirect to Coder that follows the POST.)
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(cookie) = set_cookie(server, BINDING_COOKIE, binding, BINDING_MAX_AGE) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape(r#"<b>"Evil" & 'co'</b>"#),
            "&lt;b&gt;&quot;Evil&quot; &amp; &#39;co&#39;&lt;/b&gt;"
        );
        assert_eq!(escape("a\u{0}b\nc"), "abc");
    }

    #[test]
    fn the_destination_is_the_host_or_the_app() {
        assert_eq!(
            destination("https://claude.ai/api/mcp/auth_callback"),
            "claude.ai"
        );
        assert_eq!(
            destination("http://127.0.0.1:33418/callback"),
            "127.0.0.1:33418"
        );
        assert_eq!(
            destination("cursor://anysphere.cursor-mcp/oauth/callback"),
            "anysphere.cursor-mcp"
        );
        assert_eq!(
            destination("com.example.app:/callback"),
            "the application that opens com.example.app: links"
        );
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cwm_authorize=xyz=; b=2"),
        );
        assert_eq!(cookie(&headers, "cwm_authorize"), Some("xyz="));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
