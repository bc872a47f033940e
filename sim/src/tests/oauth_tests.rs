//! Coder's OAuth2 provider (NOTES §6) over real HTTP: metadata, app registration,
//! authorize, tokens (code with PKCE, refresh), revoke, DCR, and the access token as
//! an API key with its audience check.

use std::collections::HashMap;

use base64::Engine;
use reqwest::redirect::Policy;
use sha2::{Digest, Sha256};

use super::*;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "a-verifier-of-at-least-43-characters-0123456789abcdef";

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A client that does not follow redirects (the tests read `Location`).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A deployment with alice and bob, alice signed in, and one app.
async fn sim_with_app() -> (SimCoder, String, String) {
    let sim = SimCoder::start().await.expect("start simulator");
    sim.add_user("alice", ALICE);
    sim.add_user("bob", BOB);
    sim.set_oauth_signed_in_user("alice");
    let (id, secret) = sim.register_oauth_app("mcp", REDIRECT);
    (sim, id, secret)
}

/// A query parameter; None leaves it out.
type Param<'a> = (&'a str, Option<&'a str>);

/// `GET /oauth2/authorize` with these parameters (None leaves one out).
async fn authorize(sim: &SimCoder, params: &[(&str, Option<&str>)]) -> reqwest::Response {
    let query: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    client()
        .get(format!("{}/oauth2/authorize", sim.url()))
        .query(&query)
        .send()
        .await
        .expect("authorize")
}

/// A code for `client_id` by the standard request (PKCE with [`VERIFIER`]), plus
/// `extra` parameters.
async fn code_for(sim: &SimCoder, client_id: &str, extra: &[(&str, &str)]) -> String {
    let ch = challenge(VERIFIER);
    let mut params = vec![
        ("client_id", Some(client_id)),
        ("response_type", Some("code")),
        ("redirect_uri", Some(REDIRECT)),
        ("state", Some("st4te")),
        ("code_challenge", Some(ch.as_str())),
        ("code_challenge_method", Some("S256")),
    ];
    params.extend(extra.iter().map(|(k, v)| (*k, Some(*v))));
    let resp = authorize(sim, &params).await;
    assert_eq!(resp.status().as_u16(), 302, "{:?}", resp.text().await);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let url = url::Url::parse(&location).expect("absolute redirect");
    assert_eq!(
        format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
        REDIRECT
    );
    let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "st4te");
    assert!(pairs["code"].starts_with("coder_"), "{location}");
    pairs["code"].clone()
}

/// `POST /oauth2/tokens` with a form; (status, JSON body).
async fn token(sim: &SimCoder, form: &[(&str, &str)]) -> (u16, Value) {
    token_with(sim, form, None).await
}

async fn token_with(
    sim: &SimCoder,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/oauth2/tokens", sim.url()))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.expect("token");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// The full code exchange, asserting success.
async fn exchange(sim: &SimCoder, id: &str, secret: &str, extra: &[(&str, &str)]) -> OAuth2Token {
    let code = code_for(sim, id, extra).await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", id),
        ("client_secret", secret),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    form.extend(extra.iter().copied());
    let (status, body) = token(sim, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_conforms("oauth2.Token", &body);
    serde_json::from_value(body).expect("Token")
}

/// `GET /api/v2/users/me` with `Authorization: Bearer`; (status, WWW-Authenticate, body).
async fn me_bearer(sim: &SimCoder, token: &str) -> (u16, Option<String>, Value) {
    let resp = client()
        .get(format!("{}/api/v2/users/me", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("users/me");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    (status, challenge, resp.json().await.expect("JSON"))
}

/// `form` with `key` set to `value` (or left out).
fn replaced<'a>(
    form: &[(&'a str, &'a str)],
    key: &'a str,
    value: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = form.iter().copied().filter(|(k, _)| *k != key).collect();
    out.extend(value.map(|v| (key, v)));
    out
}

fn oauth_err(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no OAuth error: {body}"))
}

#[tokio::test]
async fn metadata_documents_field_by_field() {
    let (sim, _, _) = sim_with_app().await;
    let base = sim.url();
    let http = client();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let resp = http.get(path).send().await.expect("metadata");
            assert_eq!(resp.status().as_u16(), 200);
            resp.json::<Value>().await.expect("JSON")
        }
    };
    let expected = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/tokens"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["coder:all"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    });
    let doc = get(format!("{base}/.well-known/oauth-authorization-server")).await;
    assert_eq!(doc, expected);
    assert_conforms("codersdk.OAuth2AuthorizationServerMetadata", &doc);
    // Every sub-path gives the same document.
    let sub = get(format!(
        "{base}/.well-known/oauth-authorization-server/api/x"
    ))
    .await;
    assert_eq!(sub, expected);

    let resource = json!({
        "resource": base,
        "authorization_servers": [base],
        "scopes_supported": ["coder:all"],
        "bearer_methods_supported": ["header", "query"],
    });
    for path in ["", "/api/experimental/mcp/http"] {
        let doc = get(format!("{base}/.well-known/oauth-protected-resource{path}")).await;
        assert_eq!(doc, resource);
        assert_conforms("codersdk.OAuth2ProtectedResourceMetadata", &doc);
    }

    // registration_endpoint only while DCR is on.
    sim.set_oauth_dcr(true);
    let doc = get(format!("{base}/.well-known/oauth-authorization-server")).await;
    assert_eq!(
        doc["registration_endpoint"],
        format!("{base}/oauth2/register")
    );
    assert_conforms("codersdk.OAuth2AuthorizationServerMetadata", &doc);
    assert_eq!(
        sim.view()
            .requests_matching("GET", "/.well-known/oauth-authorization-server"),
        3
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn code_flow_with_pkce_gives_an_api_key_of_the_user() {
    let (sim, id, secret) = sim_with_app().await;
    let tok = exchange(&sim, &id, &secret, &[]).await;
    assert_eq!(tok.token_type, "Bearer");
    let key = regex::Regex::new(r"^[0-9a-z]{10}-[0-9a-z]{22}$").expect("regex");
    assert!(key.is_match(&tok.access_token), "{}", tok.access_token);
    assert!(tok.refresh_token.starts_with("coder_"));
    let expires_in = tok.expires_in.expect("expires_in");
    assert!((86_390..=86_400).contains(&expires_in), "{expires_in}");
    assert!(tok.expiry.expect("expiry") > Utc::now() + chrono::Duration::hours(23));

    // Usable as a session token and as a bearer token.
    let (status, _, me) = me_bearer(&sim, &tok.access_token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "alice");
    let (status, me) = Api::new(&sim, &tok.access_token).get("/users/me").await;
    assert_eq!((status, me["username"].as_str()), (200, Some("alice")));
    assert_eq!(sim.oauth_access_tokens(), vec![tok.access_token.clone()]);

    // The requests are in the log like any other.
    let view = sim.view();
    assert_eq!(view.requests_matching("GET", "/oauth2/authorize"), 1);
    assert_eq!(view.requests_matching("POST", "/oauth2/tokens"), 1);
    let me_req = view
        .requests()
        .iter()
        .rfind(|r| r.path == "/api/v2/users/me")
        .expect("recorded");
    assert_eq!(me_req.token_user.as_deref(), Some("alice"));

    // The code is spent.
    let code = code_for(&sim, &id, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", id.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    // client_secret_basic works too; a new exchange replaces the user's key for the app.
    let (status, body) = token_with(&sim, &form, Some((&id, &secret))).await;
    assert_eq!(status, 200, "{body}");
    let (status, again) = token_with(&sim, &form, Some((&id, &secret))).await;
    assert_eq!((status, oauth_err(&again)), (400, "invalid_grant"));
    let (status, challenge, _) = me_bearer(&sim, &tok.access_token).await;
    assert_eq!(status, 401);
    assert!(challenge.is_some());
    let newer = body["access_token"].as_str().expect("token");
    assert_eq!(me_bearer(&sim, newer).await.0, 200);
    assert_eq!(sim.oauth_access_tokens(), vec![newer.to_string()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_authorize_requests_are_refused() {
    let (sim, id, _) = sim_with_app().await;
    let ch = challenge(VERIFIER);
    let base = |rt: Option<&'static str>| {
        vec![
            ("client_id", Some(id.as_str())),
            ("response_type", rt),
            ("redirect_uri", Some(REDIRECT)),
            ("state", Some("s")),
        ]
    };
    let cases: Vec<(Vec<Param>, &str)> = vec![
        // No PKCE.
        (base(Some("code")), "invalid_request"),
        // A challenge too short.
        (
            [base(Some("code")), vec![("code_challenge", Some("short"))]].concat(),
            "invalid_request",
        ),
        // plain is not supported.
        (
            [
                base(Some("code")),
                vec![
                    ("code_challenge", Some(ch.as_str())),
                    ("code_challenge_method", Some("plain")),
                ],
            ]
            .concat(),
            "invalid_request",
        ),
        // The implicit grant.
        (
            [
                base(Some("token")),
                vec![("code_challenge", Some(ch.as_str()))],
            ]
            .concat(),
            "unsupported_response_type",
        ),
        // A redirect URI that is not exactly the registered one.
        (
            vec![
                ("client_id", Some(id.as_str())),
                ("response_type", Some("code")),
                ("redirect_uri", Some("http://127.0.0.1:9/callback/x")),
                ("state", Some("s")),
                ("code_challenge", Some(ch.as_str())),
            ],
            "invalid_request",
        ),
        // A resource with a fragment.
        (
            [
                base(Some("code")),
                vec![
                    ("code_challenge", Some(ch.as_str())),
                    ("resource", Some("https://x.example/#frag")),
                ],
            ]
            .concat(),
            "invalid_target",
        ),
    ];
    for (params, error) in cases {
        let resp = authorize(&sim, &params).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!((status, oauth_err(&body)), (400, error), "{params:?}");
    }
    // An unknown client.
    let other = Uuid::new_v4().to_string();
    let resp = authorize(
        &sim,
        &[
            ("client_id", Some(other.as_str())),
            ("response_type", Some("code")),
            ("state", Some("s")),
            ("code_challenge", Some(ch.as_str())),
        ],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(oauth_err(&body), "invalid_client");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_token_requests_get_oauth_errors() {
    let (sim, id, secret) = sim_with_app().await;
    let code = code_for(&sim, &id, &[]).await;
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let with = |key: &'static str, value: Option<&'static str>| replaced(&good, key, value);
    let cases = [
        (
            with(
                "code_verifier",
                Some("wrong-verifier-wrong-verifier-wrong-verifier"),
            ),
            400,
            "invalid_grant",
        ),
        (with("code_verifier", None), 400, "invalid_grant"),
        (
            with("redirect_uri", Some("http://127.0.0.1:9/other")),
            400,
            "invalid_request",
        ),
        (with("redirect_uri", None), 400, "invalid_request"),
        (
            with("client_secret", Some("coder_0123456789_wrong")),
            401,
            "invalid_client",
        ),
        (with("client_secret", None), 400, "invalid_request"),
        (with("client_id", Some("not-a-uuid")), 401, "invalid_client"),
        (with("code", Some("coder_nope_nope")), 400, "invalid_grant"),
        (
            with("grant_type", Some("client_credentials")),
            400,
            "unsupported_grant_type",
        ),
        (with("grant_type", None), 400, "unsupported_grant_type"),
        // Resource at the token request but not at authorize.
        (
            with("resource", Some("http://127.0.0.1:1")),
            400,
            "invalid_target",
        ),
    ];
    for (form, status, error) in cases {
        let (got, body) = token(&sim, &form).await;
        assert_eq!((got, oauth_err(&body)), (status, error), "{form:?}: {body}");
    }
    // None of that spent the code.
    let (status, body) = token(&sim, &good).await;
    assert_eq!(status, 200, "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_rotates_and_revoke_refuses_with_the_challenge() {
    let (sim, id, secret) = sim_with_app().await;
    let first = exchange(&sim, &id, &secret, &[]).await;
    let refresh = |rt: String| {
        let (sim, id, secret) = (sim.clone(), id.clone(), secret.clone());
        async move {
            token(
                &sim,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                ],
            )
            .await
        }
    };
    let (status, body) = refresh(first.refresh_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_conforms("oauth2.Token", &body);
    let second: OAuth2Token = serde_json::from_value(body).expect("Token");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    // The old refresh token and the old access token are gone.
    let (status, body) = refresh(first.refresh_token.clone()).await;
    assert_eq!((status, oauth_err(&body)), (400, "invalid_grant"));
    assert_eq!(me_bearer(&sim, &first.access_token).await.0, 401);
    assert_eq!(me_bearer(&sim, &second.access_token).await.0, 200);

    // Revoke (RFC 7009): 200, then 401 with coderd's challenge.
    let revoke = |tok: String| {
        let (sim, id) = (sim.clone(), id.clone());
        async move {
            client()
                .post(format!("{}/oauth2/revoke", sim.url()))
                .form(&[("client_id", id.as_str()), ("token", tok.as_str())])
                .send()
                .await
                .expect("revoke")
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke(second.access_token.clone()).await, 200);
    let (status, challenge, body) = me_bearer(&sim, &second.access_token).await;
    assert_eq!(status, 401, "{body}");
    assert_conforms("codersdk.Response", &body);
    assert_eq!(
        challenge.as_deref(),
        Some(
            format!(
                r#"Bearer realm="coder", error="invalid_token", error_description="The access token has expired", resource_metadata="{}/.well-known/oauth-protected-resource""#,
                sim.url()
            )
            .as_str()
        )
    );
    // The refresh token went with it; an unknown token is still a 200.
    let (status, body) = refresh(second.refresh_token.clone()).await;
    assert_eq!((status, oauth_err(&body)), (400, "invalid_grant"));
    assert_eq!(revoke("coder_unknown_token".into()).await, 200);
    assert!(sim.oauth_access_tokens().is_empty());

    // Revoking by refresh token takes the access token too.
    let third = exchange(&sim, &id, &secret, &[]).await;
    assert_eq!(revoke(third.refresh_token.clone()).await, 200);
    assert_eq!(me_bearer(&sim, &third.access_token).await.0, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_and_refresh_still_works() {
    let (sim, id, secret) = sim_with_app().await;
    sim.set_oauth_token_lifetime(Duration::from_secs(60));
    let tok = exchange(&sim, &id, &secret, &[]).await;
    assert!((55..=60).contains(&tok.expires_in.expect("expires_in")));
    sim.expire_oauth_tokens();
    let (status, challenge, body) = me_bearer(&sim, &tok.access_token).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("API key expired at ")),
        "{body}"
    );
    let challenge = challenge.expect("WWW-Authenticate");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    // Still logged as alice's token.
    let last = sim.requests().pop().expect("recorded");
    assert_eq!(last.token_user.as_deref(), Some("alice"));

    let (status, body) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok.refresh_token.as_str()),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["access_token"].as_str().expect("token");
    assert_eq!(me_bearer(&sim, fresh).await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_audience_must_be_the_access_url() {
    let (sim, id, secret) = sim_with_app().await;
    // The access URL, spelled either way, works (and must be repeated at the token
    // request), as does refreshing with it.
    for resource in [
        sim.url(),
        format!("{}/", sim.url().to_uppercase().replace("HTTP", "http")),
    ] {
        let tok = exchange(&sim, &id, &secret, &[("resource", resource.as_str())]).await;
        let (status, _, body) = me_bearer(&sim, &tok.access_token).await;
        assert_eq!(status, 200, "{resource}: {body}");
    }

    // Another resource (the MCP endpoint, as an MCP client would send): a token is
    // issued, and every API call with it is refused.
    let mcp = format!("{}/api/experimental/mcp/http", sim.url());
    let tok = exchange(&sim, &id, &secret, &[("resource", mcp.as_str())]).await;
    let (status, challenge, body) = me_bearer(&sim, &tok.access_token).await;
    assert_eq!(status, 403);
    assert_eq!(body["message"], "Token audience validation failed");
    assert_conforms("codersdk.Response", &body);
    assert!(challenge.expect("challenge").contains("insufficient_scope"));
    let (status, _) = Api::new(&sim, &tok.access_token).get("/templates").await;
    assert_eq!(status, 403);

    // A refresh keeps the audience; naming another one is invalid_target.
    let access = sim.url();
    let (status, body) = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok.refresh_token.as_str()),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", access.as_str()),
        ],
    )
    .await;
    assert_eq!((status, oauth_err(&body)), (400, "invalid_target"));

    // The token request must repeat the authorization request's resource.
    let code = code_for(&sim, &id, &[("resource", mcp.as_str())]).await;
    let (status, body) = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((status, oauth_err(&body)), (400, "invalid_target"));
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_signed_in_user_authorize_redirects_to_login() {
    let (sim, id, secret) = sim_with_app().await;
    sim.sign_out_oauth_user();
    let ch = challenge(VERIFIER);
    let params = [
        ("client_id", Some(id.as_str())),
        ("response_type", Some("code")),
        ("state", Some("s")),
        ("code_challenge", Some(ch.as_str())),
    ];
    let resp = authorize(&sim, &params).await;
    assert_eq!(resp.status().as_u16(), 303);
    let location = resp.headers()["location"].to_str().expect("ascii");
    let url = url::Url::parse(&format!("{}{location}", sim.url())).expect("URL");
    assert_eq!(url.path(), "/login");
    let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert!(pairs["redirect"].starts_with("/oauth2/authorize?client_id="));
    assert!(pairs["message"].contains("signed out"));

    // A browser session (the session cookie) is a signed-in user.
    let resp = client()
        .get(format!("{}/oauth2/authorize", sim.url()))
        .query(&[
            ("client_id", id.as_str()),
            ("response_type", "code"),
            ("state", "s"),
            ("code_challenge", ch.as_str()),
        ])
        .header("Cookie", format!("coder_session_token={BOB}"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(resp.status().as_u16(), 302);
    let location =
        url::Url::parse(resp.headers()["location"].to_str().expect("ascii")).expect("URL");
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let (status, body) = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let me = me_bearer(&sim, body["access_token"].as_str().expect("token")).await;
    assert_eq!(me.2["username"], "bob");
    sim.shutdown().await;
}

#[tokio::test]
async fn dynamic_client_registration_is_off_by_default() {
    let (sim, _, _) = sim_with_app().await;
    let register = |body: Value| {
        let sim = sim.clone();
        async move {
            let resp = client()
                .post(format!("{}/oauth2/register", sim.url()))
                .json(&body)
                .send()
                .await
                .expect("register");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("JSON"))
        }
    };
    let request = json!({"client_name": "Claude", "redirect_uris": [REDIRECT]});
    assert_conforms("codersdk.OAuth2ClientRegistrationRequest", &request);
    let (status, body) = register(request.clone()).await;
    assert_eq!((status, oauth_err(&body)), (403, "access_denied"));

    sim.set_oauth_dcr(true);
    let (status, body) = register(request).await;
    assert_eq!(status, 201, "{body}");
    assert_conforms("codersdk.OAuth2ClientRegistrationResponse", &body);
    let reg: OAuth2ClientRegistrationResponse = serde_json::from_value(body).expect("response");
    assert_eq!(reg.token_endpoint_auth_method, "client_secret_basic");
    assert_eq!(
        reg.registration_client_uri,
        format!("{}/oauth2/clients/{}", sim.url(), reg.client_id)
    );
    assert!(!reg.registration_access_token.is_empty());
    let secret = reg
        .client_secret
        .expect("a confidential client has a secret");
    let tok = exchange(&sim, &reg.client_id, &secret, &[]).await;
    assert_eq!(me_bearer(&sim, &tok.access_token).await.0, 200);

    // A public client has no secret and needs none.
    let (status, body) = register(json!({
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("client_secret").is_none());
    let client_id = body["client_id"].as_str().expect("id");
    let code = code_for(&sim, client_id, &[]).await;
    let (status, body) = token(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // http:// only on loopback; no javascript:.
    for bad in ["http://example.com/cb", "javascript:alert(1)"] {
        let (status, body) = register(json!({"redirect_uris": [bad]})).await;
        assert_eq!((status, oauth_err(&body)), (400, "invalid_redirect_uri"));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn apps_and_secrets_are_registered_through_the_api() {
    let (sim, _, _) = sim_with_app().await;
    let alice = Api::new(&sim, ALICE);
    let req = json!({"name": "coder-workspace-mcp", "callback_url": REDIRECT});
    assert_conforms("codersdk.PostOAuth2ProviderAppRequest", &req);
    let (status, app) = alice.post("/oauth2-provider/apps", &req).await;
    assert_eq!(status, 201, "{app}");
    assert_conforms("codersdk.OAuth2ProviderApp", &app);
    assert_eq!(app["callback_url"], REDIRECT);
    assert_eq!(
        app["endpoints"]["token"],
        format!("{}/oauth2/tokens", sim.url())
    );
    let id = app["id"].as_str().expect("id").to_string();
    let (status, again) = alice.get(&format!("/oauth2-provider/apps/{id}")).await;
    assert_eq!((status, &again), (200, &app));
    let (status, list) = alice.get("/oauth2-provider/apps").await;
    assert_eq!(status, 200);
    assert_each_conforms("codersdk.OAuth2ProviderApp", &list);
    assert_eq!(list.as_array().map(Vec::len), Some(2));

    let (status, secret) = alice
        .post(&format!("/oauth2-provider/apps/{id}/secrets"), &json!({}))
        .await;
    assert_eq!(status, 201, "{secret}");
    assert_conforms("codersdk.OAuth2ProviderAppSecretFull", &secret);
    let secret = secret["client_secret_full"].as_str().expect("secret");
    let tok = exchange(&sim, &id, secret, &[]).await;
    assert_eq!(
        me_bearer(&sim, &tok.access_token).await.2["username"],
        "alice"
    );

    // The API needs a session; a bad body is a validation error.
    let (status, _) = Api::anonymous(&sim)
        .post("/oauth2-provider/apps", &req)
        .await;
    assert_eq!(status, 401);
    let (status, body) = alice
        .post(
            "/oauth2-provider/apps",
            &json!({"name": "", "callback_url": "nope"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_conforms("codersdk.Response", &body);
    let (status, _) = alice
        .post(
            &format!("/oauth2-provider/apps/{}/secrets", Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}
