//! `serve` as the OAuth 2.1 authorization server of its MCP clients, signing users in
//! through the simulated Coder: driven over real sockets as an OAuth client would.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::http::{HttpServer, initialize_body, refused_start};
use common::{Env, Server, structured};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// 32 bytes, base64: the key that seals Coder tokens in the store.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const CLIENT_REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A server with OAuth on, its public URL, and everything a test saw.
struct OAuth {
    http: HttpServer,
    public: String,
    /// The server's environment (Coder app, key, store), for a second replica.
    envs: Vec<(&'static str, String)>,
    client: reqwest::Client,
    /// Every status line, header and body the client received, for the leak check.
    seen: std::sync::Mutex<String>,
    /// The browser's cookies for the server (name → value).
    cookies: std::sync::Mutex<HashMap<String, String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OAuth {
    async fn start(env: &Env, extra: &[&str]) -> OAuth {
        OAuth::start_on(env, extra, &env.store()).await
    }

    /// [`OAuth::start`] on the store `store`.
    async fn start_on(env: &Env, extra: &[&str], store: &str) -> OAuth {
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let (id, secret) = env
            .sim
            .register_oauth_app("coder-workspace-mcp", &format!("{public}/callback"));
        env.sim.set_oauth_signed_in_user("alice");
        let mut args = vec!["--public-url", public.as_str()];
        args.extend_from_slice(extra);
        let envs = vec![
            ("CODER_MCP_OAUTH_CLIENT_ID", id),
            ("CODER_MCP_OAUTH_CLIENT_SECRET", secret),
            ("CODER_MCP_OAUTH_KEY", KEY.to_owned()),
            ("CODER_MCP_STORE", store.to_owned()),
        ];
        let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let http = HttpServer::spawn_on(
            &format!("127.0.0.1:{port}"),
            &env.sim.url(),
            &args,
            &env_refs,
        )
        .await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        OAuth {
            http,
            public,
            envs,
            client,
            seen: Default::default(),
            cookies: Default::default(),
        }
    }

    fn record(&self, response: &reqwest::Response) {
        let mut seen = self.seen.lock().unwrap();
        seen.push_str(&format!("{}\n", response.status()));
        for (name, value) in response.headers() {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
    }

    async fn body(&self, response: reqwest::Response) -> String {
        self.record(&response);
        let text = response.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&text);
        text
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.public))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        serde_json::from_str(&self.body(response).await).unwrap()
    }

    /// A request as the user's browser sends it: with its cookies for the server.
    fn browser(&self, request: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        let cookies = self.cookies.lock().unwrap();
        if !url.starts_with(&self.public) || cookies.is_empty() {
            return request;
        }
        let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        request.header("cookie", header.join("; "))
    }

    /// Keeps the cookies the server set.
    fn keep_cookies(&self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (name, rest) = value.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap();
            self.cookies
                .lock()
                .unwrap()
                .insert(name.to_owned(), value.to_owned());
        }
    }

    /// The browser opens `url`, which must answer a redirect: its `Location`. The consent
    /// page of `/authorize` is answered "Continue to Coder", as the user would.
    async fn follow(&self, url: &str) -> String {
        let response = self
            .browser(self.client.get(url), url)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&response);
        if response.status() == 200 && url.starts_with(&format!("{}/authorize", self.public)) {
            let page = self.body(response).await;
            let response = self.consent(&consent_state(&page), "allow").await;
            assert_eq!(response.status(), 302, "the consent of {url}");
            return response.headers()["location"].to_str().unwrap().to_owned();
        }
        self.record(&response);
        assert_eq!(response.status(), 302, "GET {url}");
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The user's answer on the consent page.
    async fn consent(&self, state: &str, decision: &str) -> reqwest::Response {
        let url = format!("{}/authorize", self.public);
        let response = self
            .browser(self.client.post(&url), &url)
            .form(&[("state", state), ("decision", decision)])
            .send()
            .await
            .unwrap();
        self.record(&response);
        self.keep_cookies(&response);
        response
    }

    async fn register(&self, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/register", self.public))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&self.body(response).await).unwrap(),
        )
    }

    async fn public_client(&self) -> String {
        let (status, client) = self
            .register(json!({"redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none", "client_name": "test client"}))
            .await;
        assert_eq!(status, 201, "{client}");
        client["client_id"].as_str().unwrap().to_owned()
    }

    fn authorize_url(&self, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}/authorize", self.public)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        url.to_string()
    }

    /// /authorize → Coder's /oauth2/authorize (auto-consent) → our /callback → the
    /// client's redirect URI: its query.
    async fn sign_in(&self, params: &[(&str, &str)]) -> HashMap<String, String> {
        let mut location = self.follow(&self.authorize_url(params)).await;
        while !location.starts_with(CLIENT_REDIRECT) {
            location = self.follow(&location).await;
        }
        query_of(&location)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/token", self.public))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&self.body(response).await).unwrap(),
        )
    }

    /// `POST /revoke` of `token` for `client_id`: the status.
    async fn revoke(&self, client_id: &str, token: &str) -> u16 {
        let response = self
            .client
            .post(format!("{}/revoke", self.public))
            .form(&[("client_id", client_id), ("token", token)])
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    /// A whole sign-in for `client_id`: our tokens.
    async fn tokens(&self, client_id: &str) -> Value {
        let verifier = "v".repeat(50);
        let challenge = s256(&verifier);
        let back = self
            .sign_in(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", CLIENT_REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "st"),
            ])
            .await;
        let (status, tokens) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", &back["code"]),
                ("code_verifier", &verifier),
                ("redirect_uri", CLIENT_REDIRECT),
            ])
            .await;
        assert_eq!(status, 200, "{tokens}");
        tokens
    }

    /// A raw `initialize` at /mcp with `bearer`.
    async fn mcp(&self, bearer: Option<&str>) -> reqwest::Response {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let response = self.http.post_mcp(&headers, &initialize_body()).await;
        self.record(&response);
        response
    }
}

/// The pending sign-in a consent page answers for.
fn consent_state(page: &str) -> String {
    let start = page
        .find(r#"name="state" value=""#)
        .unwrap_or_else(|| panic!("not a consent page: {page}"))
        + r#"name="state" value=""#.len();
    page[start..][..page[start..].find('"').unwrap()].to_owned()
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_mcp_client_signs_in_through_coder_calls_tools_refreshes_and_revokes() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &[]).await;
    let public = oauth.public.clone();
    let metadata_url = format!("{public}/.well-known/oauth-protected-resource/mcp");

    // Discovery: the 401 names the resource metadata.
    let refused = oauth.mcp(None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        challenge(&refused),
        format!("Bearer resource_metadata=\"{metadata_url}\"")
    );
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resource = oauth.get_json(path).await;
        assert_eq!(resource["resource"], format!("{public}/mcp"), "{path}");
        assert_eq!(resource["authorization_servers"], json!([public]));
        assert_eq!(resource["bearer_methods_supported"], json!(["header"]));
    }
    let server = oauth
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(server["issuer"], public);
    assert_eq!(
        server["authorization_endpoint"],
        format!("{public}/authorize")
    );
    assert_eq!(server["token_endpoint"], format!("{public}/token"));
    assert_eq!(
        server["registration_endpoint"],
        format!("{public}/register")
    );
    assert_eq!(server["revocation_endpoint"], format!("{public}/revoke"));
    assert_eq!(server["response_types_supported"], json!(["code"]));
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        server["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    let methods = server["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("none")), "{methods:?}");

    // Registration, and the sign-in: our authorize sends the user to Coder with our
    // own PKCE and state and resource = Coder's URL, Coder comes back to our callback,
    // which sends the user to the client with our code.
    let client_id = oauth.public_client().await;
    let verifier = "a-verifier-of-the-mcp-client-".repeat(2);
    let to_coder = oauth
        .follow(&oauth.authorize_url(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", CLIENT_REDIRECT),
            ("code_challenge", &s256(&verifier)),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("resource", &format!("{public}/mcp")),
        ]))
        .await;
    assert!(
        to_coder.starts_with(&format!("{}/oauth2/authorize?", env.sim.url())),
        "{to_coder}"
    );
    let asked = query_of(&to_coder);
    assert_eq!(asked["resource"], env.sim.url());
    assert_eq!(asked["redirect_uri"], format!("{public}/callback"));
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_ne!(asked["code_challenge"], s256(&verifier), "our own PKCE");
    assert_ne!(asked["state"], "client-state", "our own state");
    let to_callback = oauth.follow(&to_coder).await;
    assert!(to_callback.starts_with(&format!("{public}/callback?")));
    let users_me = || env.sim.view().requests_matching("GET", "/api/v2/users/me");
    let checked_before = users_me();
    let back = query_of(&oauth.follow(&to_callback).await);
    assert_eq!(back["state"], "client-state");
    assert_eq!(back["iss"], public);

    let (status, tokens) = oauth
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &back["code"]),
            ("code_verifier", &verifier),
            ("redirect_uri", CLIENT_REDIRECT),
            ("resource", &format!("{public}/mcp")),
        ])
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_i64().unwrap() > 0);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, again) = oauth
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &back["code"]),
            ("code_verifier", &verifier),
            ("redirect_uri", CLIENT_REDIRECT),
        ])
        .await;
    assert_eq!(
        (status, &again["error"]),
        (400, &json!("invalid_grant")),
        "a code is used once"
    );

    // Tools, as alice.
    let mcp = Server::http(&oauth.http.mcp_url(), &access, &[])
        .await
        .unwrap();
    let listed = structured(&mcp.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"][0]["name"], "docker");
    oauth.http.wait_for_log("user=alice").await;
    mcp.finish().await;
    assert_eq!(
        users_me() - checked_before,
        1,
        "the sign-in's own check of its Coder token serves its first requests too"
    );

    // Refresh rotates: the old refresh token is refused after use.
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id.as_str()),
        ("refresh_token", refresh.as_str()),
    ];
    let (status, rotated) = oauth.token(&form).await;
    assert_eq!(status, 200, "{rotated}");
    let new_access = rotated["access_token"].as_str().unwrap().to_owned();
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh);
    let (status, spent) = oauth.token(&form).await;
    assert_eq!((status, &spent["error"]), (400, &json!("invalid_grant")));
    assert_eq!(oauth.mcp(Some(&new_access)).await.status(), 200);

    // The Coder token never reached the client, nor the log.
    let coder_tokens = env.sim.oauth_access_tokens();
    assert_eq!(coder_tokens.len(), 1, "one Coder grant");
    let seen = oauth.seen.lock().unwrap().clone();
    let log = oauth.http.log();
    for token in &coder_tokens {
        assert!(
            !seen.contains(token.as_str()),
            "the Coder token reached the client"
        );
        assert!(
            !log.contains(token.as_str()),
            "the Coder token is in the log"
        );
    }
    assert!(
        !log.contains(&new_access) && !log.contains(&new_refresh),
        "our tokens are not logged"
    );

    // Revocation ends the sign-in here and at Coder.
    assert_eq!(oauth.revoke(&client_id, &new_refresh).await, 200);
    assert!(
        env.sim.oauth_access_tokens().is_empty(),
        "Coder's grant was revoked"
    );
    let refused = oauth.mcp(Some(&new_access)).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        challenge(&refused),
        format!("Bearer resource_metadata=\"{metadata_url}\", error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn requests_without_pkce_or_for_another_resource_are_refused() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &["--oauth-access-token-lifetime", "2s"]).await;
    let client_id = oauth.public_client().await;
    let challenge_value = s256(&"v".repeat(50));
    let base = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", CLIENT_REDIRECT),
        ("state", "s"),
    ];
    // No PKCE, or plain PKCE: the client gets invalid_request, Coder is never asked.
    let location = oauth.follow(&oauth.authorize_url(&base)).await;
    assert!(location.starts_with(CLIENT_REDIRECT), "{location}");
    assert_eq!(query_of(&location)["error"], "invalid_request");
    let mut plain = base.to_vec();
    plain.extend([
        ("code_challenge", challenge_value.as_str()),
        ("code_challenge_method", "plain"),
    ]);
    assert_eq!(
        query_of(&oauth.follow(&oauth.authorize_url(&plain)).await)["error"],
        "invalid_request"
    );
    // Another resource (RFC 8707).
    let mut foreign = base.to_vec();
    foreign.extend([
        ("code_challenge", challenge_value.as_str()),
        ("code_challenge_method", "S256"),
        ("resource", "https://other.example.com/mcp"),
    ]);
    assert_eq!(
        query_of(&oauth.follow(&oauth.authorize_url(&foreign)).await)["error"],
        "invalid_target"
    );
    // An unregistered redirect URI is never redirected to.
    let mut evil = base.to_vec();
    evil[2] = ("redirect_uri", "https://evil.example.com/cb");
    let response = oauth
        .client
        .get(oauth.authorize_url(&evil))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Registration rules.
    for uri in ["http://example.com/cb", "javascript:alert(1)"] {
        let (status, answer) = oauth.register(json!({"redirect_uris": [uri]})).await;
        assert_eq!(
            (status, &answer["error"]),
            (400, &json!("invalid_redirect_uri")),
            "{uri}"
        );
    }
    let (status, confidential) = oauth
        .register(json!({"redirect_uris": [CLIENT_REDIRECT, "cursor://anysphere.cursor-mcp/oauth/callback"]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        confidential["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert!(confidential["client_secret"].is_string());
    assert_eq!(confidential["client_secret_expires_at"], 0);

    // A wrong PKCE verifier.
    let back = oauth
        .sign_in(&[
            base[0],
            base[1],
            base[2],
            ("code_challenge", &challenge_value),
            ("code_challenge_method", "S256"),
        ])
        .await;
    let (status, answer) = oauth
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &back["code"]),
            ("code_verifier", &"w".repeat(50)),
            ("redirect_uri", CLIENT_REDIRECT),
        ])
        .await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_grant")));

    // A token issued for another resource (a server with another public URL sharing the
    // store and key) is refused; ours expire.
    let tokens = oauth.tokens(&client_id).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(oauth.mcp(Some(access)).await.status(), 200);
    let other = HttpServer::spawn(
        &env.sim.url(),
        &["--public-url", "https://mcp-b.example.com"],
        &[
            ("CODER_MCP_OAUTH_CLIENT_ID", "x"),
            ("CODER_MCP_OAUTH_CLIENT_SECRET", "y"),
            ("CODER_MCP_OAUTH_KEY", KEY),
            ("CODER_MCP_STORE", &env.store()),
        ],
    )
    .await;
    let refused = other
        .post_mcp(
            &[("authorization", &format!("Bearer {access}"))],
            &initialize_body(),
        )
        .await;
    assert_eq!(refused.status(), 401);
    assert!(challenge(&refused).contains("error=\"invalid_token\""));
    assert!(refused.text().await.unwrap().contains("another resource"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = oauth.mcp(Some(access)).await;
    assert_eq!(expired.status(), 401, "expired");
    assert!(challenge(&expired).contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn the_coder_token_is_refreshed_when_coder_no_longer_takes_it_and_static_tokens_still_work() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &[]).await;
    let client_id = oauth.public_client().await;
    let tokens = oauth.tokens(&client_id).await;
    let first = env.sim.oauth_access_tokens();
    // Coder expires its token early (out of band): the next use refreshes it once, however
    // many requests the session sends at once (each refresh deletes the token before).
    env.sim.expire_oauth_tokens();
    let mcp = Server::http(
        &oauth.http.mcp_url(),
        tokens["access_token"].as_str().unwrap(),
        &[],
    )
    .await
    .unwrap();
    let listed = structured(&mcp.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"][0]["name"], "docker");
    mcp.finish().await;
    let now = env.sim.oauth_access_tokens();
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "the Coder token was refreshed");
    // A static Coder session token is still a bearer.
    let mcp = Server::http(&oauth.http.mcp_url(), common::TOKEN, &[])
        .await
        .unwrap();
    let listed = structured(&mcp.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"][0]["name"], "docker");
    mcp.finish().await;
}

#[tokio::test]
async fn oauth_settings_are_all_or_nothing() {
    let stderr = refused_start(
        "http://127.0.0.1:9",
        &["--public-url", "https://mcp.example.com"],
        &[],
    )
    .await;
    assert!(
        stderr.contains("missing --coder-oauth-client-id")
            && stderr.contains("CODER_MCP_OAUTH_KEY"),
        "{stderr}"
    );
}

/// Replicas on one PostgreSQL share sign-ins: a token issued by one works on the other,
/// a refresh there rotates it for both, and a revoke there ends it on the first.
#[tokio::test]
async fn replicas_on_postgresql_share_sign_ins() {
    let Some((store, _server)) = common::postgres::database().await else {
        return;
    };
    let env = Env::new().await;
    let oauth = OAuth::start_on(&env, &[], &store).await;
    let client_id = oauth.public_client().await;
    let tokens = oauth.tokens(&client_id).await;
    // The other replica: the same public URL, Coder app, key and store.
    let env_refs: Vec<(&str, &str)> = oauth.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let other =
        HttpServer::spawn(&env.sim.url(), &["--public-url", &oauth.public], &env_refs).await;
    let access = tokens["access_token"].as_str().unwrap();
    let on_other = Server::http(&other.mcp_url(), access, &[]).await.unwrap();
    let listed = structured(&on_other.call("list_templates", json!({})).await);
    assert_eq!(listed["templates"][0]["name"], "docker");
    on_other.finish().await;

    let form = |token: &str| {
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("client_id".to_owned(), client_id.clone()),
            ("refresh_token".to_owned(), token.to_owned()),
        ]
    };
    let http = reqwest::Client::new();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let renewed = http
        .post(format!("http://{}/token", other.addr()))
        .form(&form(refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.unwrap();
    let (status, _) = oauth
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(
        status, 400,
        "the first refresh token was spent on the other replica"
    );

    let revoked = http
        .post(format!("http://{}/revoke", other.addr()))
        .form(&[
            ("client_id", client_id.as_str()),
            ("token", renewed["access_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = oauth
        .http
        .post_mcp(
            &[(
                "authorization",
                &format!("Bearer {}", renewed["access_token"].as_str().unwrap()),
            )],
            &initialize_body(),
        )
        .await;
    assert_eq!(refused.status(), 401, "revoked on the other replica");
}

/// Browser-based clients discover, register and exchange codes from their own origin:
/// those endpoints answer CORS preflights and requests from any origin.
#[tokio::test]
async fn the_oauth_endpoints_answer_browser_clients() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &[]).await;
    let http = reqwest::Client::new();
    for path in ["/token", "/register", "/revoke"] {
        let preflight = http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", oauth.public))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "{path}: {}",
            preflight.status()
        );
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
    }
    let metadata = http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            oauth.public
        ))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(metadata.headers()["access-control-allow-origin"], "*");
}

/// Registration is open to anyone, but not without limit: past `--max-registrations` an
/// hour from one address, 429 with Retry-After, and nothing is stored.
#[tokio::test]
async fn client_registrations_are_limited_per_address() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &["--max-registrations", "2"]).await;
    let body = json!({"redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none"});
    for _ in 0..2 {
        let (status, client) = oauth.register(body.clone()).await;
        assert_eq!(status, 201, "{client}");
    }
    let response = oauth
        .client
        .post(format!("{}/register", oauth.public))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "temporarily_unavailable", "{answer}");
}

/// Client metadata documents served on loopback, each path with its status, headers and
/// body; counts the fetches per path.
struct DocumentHost {
    base: String,
    fetches: std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

type Documents = HashMap<String, (u16, Vec<(&'static str, String)>, String)>;

impl DocumentHost {
    async fn start(documents: impl FnOnce(&str) -> Documents) -> DocumentHost {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let documents = std::sync::Arc::new(documents(&base));
        let fetches = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let counted = fetches.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let documents = documents.clone();
            let counted = counted.clone();
            async move {
                *counted
                    .lock()
                    .unwrap()
                    .entry(uri.path().to_owned())
                    .or_insert(0) += 1;
                let Some((status, headers, body)) = documents.get(uri.path()) else {
                    return axum::response::Response::builder()
                        .status(404)
                        .body(axum::body::Body::empty())
                        .unwrap();
                };
                let mut response = axum::response::Response::builder().status(*status);
                for (name, value) in headers {
                    response = response.header(*name, value);
                }
                response.body(axum::body::Body::from(body.clone())).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        DocumentHost { base, fetches }
    }

    fn fetches(&self, path: &str) -> usize {
        self.fetches.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl OAuth {
    /// `/authorize` for `client_id` that must be refused to the user: the page's text.
    async fn authorize_refused(&self, client_id: &str) -> String {
        let response = self
            .client
            .get(self.authorize_url(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", CLIENT_REDIRECT),
                ("code_challenge", &s256(&"v".repeat(50))),
                ("code_challenge_method", "S256"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{client_id}");
        self.body(response).await
    }
}

#[tokio::test]
async fn clients_identified_by_a_metadata_document_sign_in_without_registering() {
    let env = Env::new().await;
    let json_doc = |body: Value| {
        (
            200,
            vec![
                ("content-type", "application/json".to_owned()),
                ("cache-control", "public, max-age=600".to_owned()),
            ],
            body.to_string(),
        )
    };
    let host = DocumentHost::start(|base| {
        let doc = |path: &str, extra: Value| {
            let mut body = json!({
                "client_id": format!("{base}{path}"),
                "client_name": "Document client",
                "redirect_uris": [CLIENT_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            (path.to_owned(), json_doc(body))
        };
        HashMap::from([
            doc("/client.json", json!({})),
            doc(
                "/other-id.json",
                json!({"client_id": format!("{base}/client.json")}),
            ),
            doc(
                "/secret.json",
                json!({"token_endpoint_auth_method": "client_secret_basic"}),
            ),
            doc(
                "/elsewhere.json",
                json!({"redirect_uris": ["https://elsewhere.example/cb"]}),
            ),
            doc("/big.json", json!({"logo_uri": "x".repeat(6000)})),
            (
                "/moved.json".to_owned(),
                (
                    302,
                    vec![("location", format!("{base}/client.json"))],
                    String::new(),
                ),
            ),
        ])
    })
    .await;
    let oauth = OAuth::start(&env, &["--oauth-allow-private-client-metadata"]).await;
    let server = oauth
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(server["client_id_metadata_document_supported"], true);

    // No registration: the document's URL is the client id, through sign-in, tool calls,
    // refresh and revocation.
    let client_id = format!("{}/client.json", host.base);
    let tokens = oauth.tokens(&client_id).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(oauth.mcp(Some(access)).await.status(), 200);
    let second = oauth.tokens(&client_id).await;
    assert_eq!(
        host.fetches("/client.json"),
        1,
        "the document is cached for its max-age"
    );
    let (status, refreshed) = oauth
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", second["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let refreshed_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(oauth.mcp(Some(refreshed_access)).await.status(), 200);
    assert_eq!(oauth.revoke(&client_id, refreshed_access).await, 200);
    assert_eq!(oauth.mcp(Some(refreshed_access)).await.status(), 401);

    // Documents the draft does not allow, each refused to the user with the reason.
    for (path, why) in [
        ("/other-id.json", "client_id equal to its own URL"),
        ("/secret.json", "token_endpoint_auth_method none"),
        ("/big.json", "larger than"),
        ("/moved.json", "redirects are not followed"),
        ("/missing.json", "404"),
        (
            "/elsewhere.json",
            "redirect_uri is not one the client registered",
        ),
    ] {
        let page = oauth
            .authorize_refused(&format!("{}{path}", host.base))
            .await;
        assert!(page.contains(why), "{path}: {page}");
    }
    // A token request naming a document that cannot be used.
    let (status, refused) = oauth
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &format!("{}/secret.json", host.base)),
            ("refresh_token", "cwm_rt_nothing"),
        ])
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

#[tokio::test]
async fn metadata_documents_are_fetched_only_from_public_https_addresses() {
    let env = Env::new().await;
    let host = DocumentHost::start(|_| HashMap::new()).await;
    let port = host.base.rsplit(':').next().unwrap().to_owned();
    let oauth = OAuth::start(&env, &[]).await;
    for (client_id, why) in [
        (format!("{}/client.json", host.base), "must use https"),
        (
            format!("https://127.0.0.1:{port}/client.json"),
            "must name a public host, not 127.0.0.1",
        ),
        (
            format!("https://localhost:{port}/client.json"),
            "not public",
        ),
        ("https://example.com/".to_owned(), "must have a path"),
    ] {
        let page = oauth.authorize_refused(&client_id).await;
        assert!(page.contains(why), "{client_id}: {page}");
    }
    assert_eq!(
        host.fetches.lock().unwrap().len(),
        0,
        "nothing was fetched from loopback"
    );

    let off = OAuth::start(&env, &["--no-client-metadata-documents"]).await;
    let server = off
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(server["client_id_metadata_document_supported"], false);
    let page = off
        .authorize_refused("https://client.example.com/client.json")
        .await;
    assert!(
        page.contains("does not take client metadata documents"),
        "{page}"
    );
}

/// Coder answers 403 to every OAuth2 route while its `oauth2` experiment is off: `serve`
/// says so at start (and does not start), and a sign-in while it is off goes back to the
/// client with the reason instead of ending on Coder's error.
#[tokio::test]
async fn a_coder_without_its_oauth2_provider_is_named_at_start_and_at_sign_in() {
    let env = Env::new().await;
    env.sim.set_oauth_provider_enabled(false);
    let (id, secret) = env
        .sim
        .register_oauth_app("coder-workspace-mcp", "http://127.0.0.1:9/callback");
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().join("store.db");
    let stderr = refused_start(
        &env.sim.url(),
        &["--public-url", "http://127.0.0.1:9"],
        &[
            ("CODER_MCP_OAUTH_CLIENT_ID", &id),
            ("CODER_MCP_OAUTH_CLIENT_SECRET", &secret),
            ("CODER_MCP_OAUTH_KEY", KEY),
            ("CODER_MCP_STORE", store_path.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        stderr.contains("does not serve OAuth2 sign-in")
            && stderr.contains("HTTP 403")
            && stderr.contains("requires enabling the 'oauth2' experiment")
            && stderr.contains("CODER_EXPERIMENTS=oauth2"),
        "{stderr}"
    );

    // Coder cannot be asked at start (a warning, and it starts); the experiment is then
    // found off at the first sign-in, and on again at the next.
    env.sim.set_oauth_provider_enabled(true);
    env.sim.inject_fault(coder_workspace_sim::Fault::new(
        http::Method::GET,
        "/.well-known/oauth-authorization-server",
        503,
    ));
    let oauth = OAuth::start(&env, &[]).await;
    oauth
        .http
        .wait_for_log("could not check Coder's OAuth2 provider")
        .await;
    let client_id = oauth.public_client().await;
    env.sim.set_oauth_provider_enabled(false);
    let params = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", CLIENT_REDIRECT),
        ("code_challenge", &s256(&"v".repeat(50))),
        ("code_challenge_method", "S256"),
        ("state", "st"),
    ];
    let back = query_of(&oauth.follow(&oauth.authorize_url(&params)).await);
    assert_eq!(back["error"], "server_error");
    assert_eq!(back["state"], "st");
    assert!(
        back["error_description"].contains("the `oauth2` experiment"),
        "{back:?}"
    );
    env.sim.set_oauth_provider_enabled(true);
    let tokens = oauth.tokens(&client_id).await;
    assert_eq!(
        oauth
            .mcp(Some(tokens["access_token"].as_str().unwrap()))
            .await
            .status(),
        200
    );
}

/// A call that outlives its sign-in's Coder token (expired mid-build, or refreshed by
/// another request or replica, which makes Coder delete it) goes on with the renewed
/// token instead of failing on Coder's 401.
#[tokio::test]
async fn a_call_that_outlives_its_coder_token_finishes_with_the_renewed_one() {
    let env = Env::new().await;
    env.sim
        .set_build_plan(env.docker.id, coder_workspace_sim::BuildPlan::held());
    // Polling: every step of the wait is a Coder request made with the call's token
    // (a watch stream opened before the expiry would carry the build to its end).
    let oauth = OAuth::start(&env, &["--watch-mode", "polling"]).await;
    let client_id = oauth.public_client().await;
    let tokens = oauth.tokens(&client_id).await;
    let mcp = Server::http(
        &oauth.http.mcp_url(),
        tokens["access_token"].as_str().unwrap(),
        &[],
    )
    .await
    .unwrap();
    let call = mcp
        .start_call(
            "create_workspace",
            json!({"template_id": env.docker.id, "name": "outlives"}),
        )
        .await;
    env.sim.wait_until(|v| v.held_builds() == 1).await;
    let issued = env.sim.oauth_access_tokens();
    env.sim.expire_oauth_tokens();
    env.sim.release_builds();
    let answer = common::bounded("the create", call.await_response())
        .await
        .expect("tools/call");
    let rmcp::model::ServerResult::CallToolResult(result) = answer else {
        panic!("not a tool result: {answer:?}")
    };
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let out = structured(&result);
    assert_eq!(out["workspace_name"], "outlives");
    assert_eq!(out["created"], true);
    assert_eq!(env.workspaces().len(), 1);
    let now = env.sim.oauth_access_tokens();
    assert!(
        now.iter().any(|t| !issued.contains(t)),
        "the grant's Coder token was refreshed during the call"
    );
    oauth
        .http
        .wait_for_log("Coder refused the sign-in's token; sending with its renewed one")
        .await;
    mcp.finish().await;
}

/// Coder keeps one token per user and app, and deletes it when it issues another: two
/// sign-ins of one Coder user (two MCP clients, or one signing in again) share the user's
/// current Coder token instead of signing each other out, and the Coder token is revoked
/// with the last of them.
#[tokio::test]
async fn sign_ins_of_one_coder_user_share_its_coder_token() {
    let env = Env::new().await;
    let mut oauth = OAuth::start(&env, &[]).await;
    let first_client = oauth.public_client().await;
    let second_client = oauth.public_client().await;
    let first = oauth.tokens(&first_client).await;
    // alice signs in again: Coder replaces her token for the app.
    let second = oauth.tokens(&second_client).await;
    assert_eq!(env.sim.oauth_access_tokens().len(), 1);

    // Restarted (nothing cached: as another replica would see it), both sign-ins work.
    let env_refs: Vec<(&str, &str)> = oauth.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let addr = oauth.public.trim_start_matches("http://").to_owned();
    oauth.http.kill().await;
    oauth.http = HttpServer::spawn_on(
        &addr,
        &env.sim.url(),
        &["--public-url", &oauth.public],
        &env_refs,
    )
    .await;
    let access = |tokens: &Value| tokens["access_token"].as_str().unwrap().to_owned();
    for tokens in [&first, &second] {
        let mcp = Server::http(&oauth.http.mcp_url(), &access(tokens), &[])
            .await
            .expect("the sign-in still works");
        let listed = structured(&mcp.call("list_templates", json!({})).await);
        assert_eq!(listed["templates"][0]["name"], "docker");
        mcp.finish().await;
    }

    // Revoking one leaves the other working and the Coder token in place.
    assert_eq!(oauth.revoke(&first_client, &access(&first)).await, 200);
    assert_eq!(oauth.mcp(Some(&access(&first))).await.status(), 401);
    assert_eq!(oauth.mcp(Some(&access(&second))).await.status(), 200);
    assert_eq!(env.sim.oauth_access_tokens().len(), 1, "still in use");
    // The last one takes it with it, at Coder too.
    assert_eq!(oauth.revoke(&second_client, &access(&second)).await, 200);
    assert_eq!(oauth.mcp(Some(&access(&second))).await.status(), 401);
    assert!(env.sim.oauth_access_tokens().is_empty(), "revoked at Coder");
}

/// Before sending the user to Coder (whose consent page names this server, never the
/// client), `/authorize` asks the user about the client and where the sign-in goes; only
/// the browser shown the page can answer it, and a consent is remembered per client.
#[tokio::test]
async fn the_user_consents_to_each_client_before_coder() {
    let env = Env::new().await;
    let oauth = OAuth::start(&env, &[]).await;
    let (status, registered) = oauth
        .register(json!({"redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none", "client_name": "<b>Evil</b> & co"}))
        .await;
    assert_eq!(status, 201);
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let params = |state: &'static str| {
        vec![
            ("response_type", "code".to_owned()),
            ("client_id", client_id.clone()),
            ("redirect_uri", CLIENT_REDIRECT.to_owned()),
            ("code_challenge", s256(&"v".repeat(50))),
            ("code_challenge_method", "S256".to_owned()),
            ("state", state.to_owned()),
        ]
    };
    let url = |state: &'static str| {
        let params = params(state);
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        oauth.authorize_url(&refs)
    };
    let open = |state: &'static str| {
        let url = url(state);
        let oauth = &oauth;
        async move {
            let response = oauth
                .browser(oauth.client.get(&url), &url)
                .send()
                .await
                .unwrap();
            oauth.keep_cookies(&response);
            response
        }
    };

    // The page: the client's name (escaped), where the user goes back, protected from
    // framing, and a cookie that binds the answer to this browser.
    let page = open("one").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers["cache-control"], "no-store");
    let binding = headers["set-cookie"].to_str().unwrap();
    assert!(
        binding.starts_with("cwm_authorize=")
            && binding.contains("HttpOnly")
            && binding.contains("SameSite=Lax"),
        "{binding}"
    );
    let html = oauth.body(page).await;
    assert!(html.contains("&lt;b&gt;Evil&lt;/b&gt; &amp; co"), "{html}");
    assert!(!html.contains("<b>Evil"), "{html}");
    assert!(html.contains("127.0.0.1:9"), "the destination: {html}");
    assert!(
        env.sim.view().requests_matching("GET", "/oauth2/authorize") == 0,
        "not at Coder yet"
    );
    let state = consent_state(&html);

    // Another browser (another site's form posting here) cannot answer it.
    let foreign = oauth
        .client
        .post(format!("{}/authorize", oauth.public))
        .form(&[("state", state.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(
        oauth
            .body(foreign)
            .await
            .contains("not started in this browser")
    );

    // Cancel: back to the client with access_denied; nothing remembered.
    let declined = oauth.consent(&state, "deny").await;
    assert_eq!(declined.status(), 302);
    let back = query_of(declined.headers()["location"].to_str().unwrap());
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "one");
    assert_eq!(open("two").await.status(), 200, "asked again");

    // Continue: on to Coder, and the consent is remembered for this client.
    let to_coder = oauth.follow(&url("three")).await;
    assert!(
        to_coder.starts_with(&format!("{}/oauth2/authorize?", env.sim.url())),
        "{to_coder}"
    );
    let again = open("four").await;
    assert_eq!(again.status(), 302, "remembered");
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{}/oauth2/authorize?", env.sim.url()))
    );
    // Not for another client.
    let other = oauth.public_client().await;
    let other_url = oauth.authorize_url(&[
        ("response_type", "code"),
        ("client_id", &other),
        ("redirect_uri", CLIENT_REDIRECT),
        ("code_challenge", &s256(&"v".repeat(50))),
        ("code_challenge_method", "S256"),
    ]);
    let response = oauth
        .browser(oauth.client.get(&other_url), &other_url)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "another client is asked about");
}
