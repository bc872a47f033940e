//! `serve` under slow and hostile clients: connection timeouts and caps, authentication
//! that cannot be turned against Coder, sessions opened and abandoned, `Host` rules,
//! malformed JSON and the `DELETE` status. Through the binary, on real sockets; the
//! timeouts are set short with their flags, and every wait is bounded.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use coder_workspace_sim::Fault;
use common::http::{HttpServer, LegacyClient, RawConnection, initialize_body};
use common::{BOB_TOKEN, Env, TOKEN};
use serde_json::{Value, json};

async fn serve(env: &Env, args: &[&str]) -> HttpServer {
    HttpServer::spawn(&env.sim.url(), args, &[]).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET /users/me` calls Coder has seen.
fn token_checks(env: &Env) -> usize {
    env.sim.view().requests_matching("GET", "/api/v2/users/me")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let env = Env::new().await;
    // Long keep-alive: what closes it is the header timeout, which runs from connecting.
    let http = serve(
        &env,
        &["--header-read-timeout", "1s", "--keep-alive-timeout", "1h"],
    )
    .await;
    let mut silent = RawConnection::connect(http.addr()).await;
    assert!(silent.closed().await.is_empty(), "closed without an answer");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &["--keep-alive-timeout", "1s", "--header-read-timeout", "1h"],
    )
    .await;
    let mut connection = RawConnection::connect(http.addr()).await;
    connection.send(HEALTHZ).await;
    assert_eq!(connection.response().await.status, 200);
    connection.send(HEALTHZ).await;
    assert_eq!(connection.response().await.status, 200, "kept alive");
    assert!(
        connection.closed().await.is_empty(),
        "then closed when idle"
    );
}

#[tokio::test]
async fn trickled_headers_are_cut_off() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &["--header-read-timeout", "1s", "--keep-alive-timeout", "1h"],
    )
    .await;
    // One header byte every 100 ms, never ending.
    let mut first = RawConnection::connect(http.addr()).await;
    first.trickle(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b'a');
    assert!(first.closed().await.is_empty());
    // The same on a kept-alive connection, after a request went through.
    let mut kept = RawConnection::connect(http.addr()).await;
    kept.send(HEALTHZ).await;
    assert_eq!(kept.response().await.status, 200);
    kept.trickle(b"GET /healthz HTTP/1.1\r\nX-Slow: ", b'a');
    assert!(kept.closed().await.is_empty());
}

#[tokio::test]
async fn trickled_bodies_get_408() {
    let env = Env::new().await;
    let http = serve(&env, &["--body-read-timeout", "1s"]).await;
    let mut connection = RawConnection::connect(http.addr()).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100000\r\n\r\n{{"
    );
    connection.trickle(head.as_bytes(), b' ');
    let response = connection.response().await;
    assert_eq!(response.status, 408, "/mcp");
    assert!(
        response.json()["error"]
            .as_str()
            .unwrap()
            .contains("--body-read-timeout")
    );
    connection.closed().await;
    // A legacy session's messages get the same limit.
    let legacy = LegacyClient::connect(&http.base, TOKEN).await;
    let mut connection = RawConnection::connect(http.addr()).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{",
        legacy.endpoint
    );
    connection.trickle(head.as_bytes(), b' ');
    assert_eq!(connection.response().await.status, 408, "/messages");
    connection.closed().await;
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let env = Env::new().await;
    let http = serve(&env, &["--max-connections-per-address", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = RawConnection::connect(http.addr()).await;
        connection.send(HEALTHZ).await;
        assert_eq!(connection.response().await.status, 200);
        held.push(connection);
    }
    let mut third = RawConnection::connect(http.addr()).await;
    third.send(HEALTHZ).await;
    let refused = third.response().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("--max-connections-per-address")
    );
    third.closed().await;
    // A held connection closes, and its slot is free again.
    drop(held.pop());
    http.wait_for_log("connection ended").await;
    let mut again = RawConnection::connect(http.addr()).await;
    again.send(HEALTHZ).await;
    assert_eq!(again.response().await.status, 200);
}

#[tokio::test]
async fn connections_are_capped_in_all() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &[
            "--max-connections",
            "2",
            "--max-connections-per-address",
            "0",
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = RawConnection::connect(http.addr()).await;
        connection.send(HEALTHZ).await;
        assert_eq!(connection.response().await.status, 200);
        held.push(connection);
    }
    let mut third = RawConnection::connect(http.addr()).await;
    third.send(HEALTHZ).await;
    let refused = third.response().await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some());
    third.closed().await;
    // Many idle connections cannot hold the server: with caps and timeouts, each is
    // either served, refused or closed.
    let http = serve(
        &env,
        &["--max-connections", "50", "--header-read-timeout", "1s"],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(RawConnection::connect(http.addr()).await);
    }
    for connection in &mut idle {
        connection.closed().await;
    }
    let mut after = RawConnection::connect(http.addr()).await;
    after.send(HEALTHZ).await;
    assert_eq!(after.response().await.status, 200);
}

#[tokio::test]
async fn concurrent_checks_of_one_token_share_one_coder_call() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    env.sim.hold_requests(http::Method::GET, "/users/me");
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let auth = bearer(TOKEN);
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (http, ping, auth) = (&http, &ping, &auth);
            async move { http.post_mcp(&[("authorization", auth)], ping).await }
        })
        .collect();
    let all = futures::future::join_all(requests);
    let release = async {
        // Every request is waiting on the token check, and Coder was asked once.
        http.wait_for_log_count("token check: asking Coder", 50)
            .await;
        env.sim
            .wait_until(|v| v.pending_requests("GET", "/users/me") == 1)
            .await;
        env.sim.release_requests();
    };
    let (responses, ()) = tokio::join!(all, release);
    for response in responses {
        assert!(
            ![401, 429, 503].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
    }
    assert_eq!(token_checks(&env), 1, "one Coder call for 50 requests");
    // And the answer is remembered.
    http.post_mcp(&[("authorization", &auth)], &ping).await;
    assert_eq!(token_checks(&env), 1);
}

#[tokio::test]
async fn rejected_tokens_are_remembered() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    for _ in 0..5 {
        let response = http
            .post_mcp(
                &[("authorization", "Bearer not-a-real-token")],
                &initialize_body(),
            )
            .await;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(token_checks(&env), 1);
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let env = Env::new().await;
    let http = serve(&env, &["--max-auth-failures", "3"]).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let alice = bearer(TOKEN);
    assert_ne!(
        http.post_mcp(&[("authorization", &alice)], &ping)
            .await
            .status(),
        401
    );
    for i in 0..3 {
        let token = bearer(&format!("guess-{i}"));
        let response = http.post_mcp(&[("authorization", &token)], &ping).await;
        assert_eq!(response.status(), 401, "guess {i}");
    }
    let limited = http
        .post_mcp(&[("authorization", "Bearer guess-3")], &ping)
        .await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        token_checks(&env),
        1 + 3,
        "the fourth guess never reached Coder"
    );
    // A token already checked still works; a new one waits like the guesses.
    assert_ne!(
        http.post_mcp(&[("authorization", &alice)], &ping)
            .await
            .status(),
        429
    );
    assert_eq!(
        http.post_mcp(&[("authorization", &bearer(BOB_TOKEN))], &ping)
            .await
            .status(),
        429
    );
    assert_eq!(token_checks(&env), 4);
    assert!(!http.log().contains("guess-"), "no token in the log");
}

#[tokio::test]
async fn failed_shared_bearers_are_limited_per_address() {
    let env = Env::new().await;
    let http = HttpServer::spawn(
        &env.sim.url(),
        &["--shared-identity", "--max-auth-failures", "2"],
        &[
            ("CODER_SESSION_TOKEN", TOKEN),
            ("CODER_MCP_AUTH_TOKEN", "the-shared-bearer"),
        ],
    )
    .await;
    for i in 0..2 {
        let token = bearer(&format!("wrong-{i}"));
        let response = http
            .post_mcp(&[("authorization", &token)], &initialize_body())
            .await;
        assert_eq!(response.status(), 401);
    }
    let response = http
        .post_mcp(&[("authorization", "Bearer wrong-2")], &initialize_body())
        .await;
    assert_eq!(response.status(), 429);
    // The right bearer too, from that address, for a while: a guess that hit must not show.
    let response = http
        .post_mcp(
            &[("authorization", "Bearer the-shared-bearer")],
            &initialize_body(),
        )
        .await;
    assert_eq!(response.status(), 429);
}

#[tokio::test]
async fn while_coder_fails_token_checks_fail_fast_with_503() {
    let env = Env::new().await;
    let http = serve(&env, &["--coder-outage-hold", "1h"]).await;
    env.sim
        .inject_fault(Fault::new(http::Method::GET, "/users/me", 503).times(1000));
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let response = http
        .post_mcp(&[("authorization", &bearer(TOKEN))], &ping)
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(!response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Coder is unavailable"),
        "{body}"
    );
    assert_eq!(token_checks(&env), 1, "not retried");
    // Other tokens fail fast while Coder is taken to be down.
    for token in [BOB_TOKEN, "another"] {
        let response = http
            .post_mcp(&[("authorization", &bearer(token))], &ping)
            .await;
        assert_eq!(response.status(), 503);
    }
    assert_eq!(token_checks(&env), 1);
    // Outages are not failed authentications: no 429 however many there are.
    for i in 0..20 {
        let token = bearer(&format!("during-outage-{i}"));
        assert_eq!(
            http.post_mcp(&[("authorization", &token)], &ping)
                .await
                .status(),
            503
        );
    }
}

#[tokio::test]
async fn a_client_that_waits_as_retry_after_says_gets_through_once_coder_is_back() {
    let env = Env::new().await;
    let http = serve(&env, &["--coder-outage-hold", "100ms"]).await;
    env.sim
        .inject_fault(Fault::new(http::Method::GET, "/users/me", 503).times(1));
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let auth = bearer(TOKEN);
    let response = http.post_mcp(&[("authorization", &auth)], &ping).await;
    assert_eq!(response.status(), 503);
    // Retry-After is whole seconds, rounded up: past the 100 ms the outage is held.
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let again = http.post_mcp(&[("authorization", &auth)], &ping).await;
    assert_ne!(again.status(), 503);
    assert_ne!(again.status(), 401);
    assert_eq!(token_checks(&env), 2);
}

#[tokio::test]
async fn sessions_opened_and_never_used_expire_and_free_their_slot() {
    let env = Env::new().await;
    let http = serve(
        &env,
        &[
            "--max-sessions-per-token",
            "2",
            "--unused-session-timeout",
            "1s",
        ],
    )
    .await;
    let auth = bearer(TOKEN);
    let open = || async {
        let response = http
            .post_mcp(&[("authorization", &auth)], &initialize_body())
            .await;
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, id)
    };
    let session_headers = |id: &str| {
        vec![
            ("authorization".to_owned(), auth.clone()),
            ("mcp-session-id".to_owned(), id.to_owned()),
            ("mcp-protocol-version".to_owned(), "2025-06-18".to_owned()),
        ]
    };
    let post = |id: String, body: Value| {
        let headers = session_headers(&id);
        let http = &http;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http.post_mcp(&headers, &body).await.status().as_u16()
        }
    };
    // One used session...
    let (status, used) = open().await;
    assert_eq!(status, 200);
    let used = used.unwrap();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert!(post(used.clone(), initialized).await < 300);
    // ...and one whose client went away after `initialize`.
    let (status, abandoned) = open().await;
    assert_eq!(status, 200);
    let abandoned = abandoned.unwrap();
    assert_eq!(open().await.0, 429, "the token has its two sessions");
    http.wait_for_log(&format!("unused session expired session={abandoned}"))
        .await;
    assert_eq!(open().await.0, 200, "the abandoned one no longer counts");
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    assert_eq!(
        post(used.clone(), ping.clone()).await,
        200,
        "the used one lives"
    );
    assert_eq!(
        post(abandoned, ping).await,
        404,
        "the abandoned one is gone"
    );
    assert!(
        !http
            .log()
            .contains(&format!("unused session expired session={used}"))
    );

    // A legacy event stream that never posts a message expires the same way.
    let stream = reqwest::Client::new()
        .get(format!("{}/sse", http.base))
        .bearer_auth(BOB_TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    common::bounded("the unused legacy stream to end", async {
        // The stream ends (with the endpoint event and keep-alives before).
        let _ = stream.bytes().await;
    })
    .await;
}

#[tokio::test]
async fn exactly_one_allowed_host() {
    let env = Env::new().await;
    let http = serve(&env, &["--allowed-host", "mcp.example.com"]).await;
    let body = initialize_body().to_string();
    let request = |target: &str, hosts: &[&str]| {
        let mut text = format!("POST {target} HTTP/1.1\r\n");
        for host in hosts {
            text.push_str(&format!("Host: {host}\r\n"));
        }
        text.push_str(&format!(
            "Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        text
    };
    let status = |text: String| {
        let addr = http.addr().to_owned();
        async move {
            let mut connection = RawConnection::connect(&addr).await;
            connection.send(text.as_bytes()).await;
            connection.response().await.status
        }
    };
    assert_eq!(status(request("/mcp", &["127.0.0.1"])).await, 200);
    assert_eq!(
        status(request("/mcp", &["127.0.0.1", "evil.example"])).await,
        400,
        "two Host headers"
    );
    assert_eq!(
        status(request("/mcp", &["127.0.0.1", "127.0.0.1"])).await,
        400,
        "even two equal ones"
    );
    assert_eq!(status(request("/mcp", &[])).await, 400, "no Host");
    assert_eq!(
        status(request("http://evil.example/mcp", &["127.0.0.1"])).await,
        403,
        "an absolute-form target names the host that counts"
    );
    assert_eq!(
        status(request("http://mcp.example.com/mcp", &["evil.example"])).await,
        403,
        "and the Host header must be allowed too"
    );
    assert_eq!(
        status(request("http://mcp.example.com/mcp", &["mcp.example.com"])).await,
        200
    );
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_json_rpc_error() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let client = reqwest::Client::new();
    let post = |url: String, body: &'static str, session: Option<String>| {
        let mut request = client
            .post(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(id) = session {
            request = request
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18");
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(http.mcp_url(), "{not json", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], -32700);
    let (status, body) = post(
        http.mcp_url(),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_templates","arguments":"x"}}"#,
        None,
    )
    .await;
    assert_eq!((status, body["id"].clone()), (400, json!(5)));
    assert_eq!(body["error"]["code"], -32602);
    // The same rules as on stdio: params that are neither an object nor an array are not
    // a JSON-RPC request at all.
    let (status, body) = post(
        http.mcp_url(),
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":"x"}"#,
        None,
    )
    .await;
    assert_eq!((status, body["id"].clone()), (400, json!(6)));
    assert_eq!(body["error"]["code"], -32600);
    // Inside a session.
    let opened = http
        .post_mcp(&[("authorization", &bearer(TOKEN))], &initialize_body())
        .await;
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, body) = post(http.mcp_url(), "[1,", Some(session)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32700))
    );
    // And on the legacy transport.
    let legacy = LegacyClient::connect(&http.base, TOKEN).await;
    let (status, body) = post(format!("{}{}", http.base, legacy.endpoint), "nope", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32700))
    );
}

#[tokio::test]
async fn delete_answers_204() {
    let env = Env::new().await;
    let http = serve(&env, &[]).await;
    let opened = http
        .post_mcp(&[("authorization", &bearer(TOKEN))], &initialize_body())
        .await;
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let deleted = reqwest::Client::new()
        .delete(http.mcp_url())
        .bearer_auth(TOKEN)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    // The Python SDK accepts 200 or 204 (it logs 202 as a failed termination); the
    // TypeScript SDK any 2xx.
    assert_eq!(deleted.status(), 204);
    assert!(deleted.bytes().await.unwrap().is_empty());
}
