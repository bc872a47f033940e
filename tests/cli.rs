//! The command line: configuration errors, the coder CLI's stored login, secrets.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{BIN, Env, TOKEN, structured};
use serde_json::json;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("CODER_URL")
        .env_remove("CODER_SESSION_TOKEN")
        .env_remove("CODER_MCP_AUTH_TOKEN")
        .env_remove("CODER_MCP_STORE")
        .env_remove("CODER_MCP_STDIO_SESSION")
        .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run the binary");
    assert!(
        output.stdout.is_empty(),
        "nothing may be printed to stdout (the protocol channel)"
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn missing_url_is_a_clear_error() {
    let (code, stderr) = run(&["stdio"], &[("CODER_SESSION_TOKEN", TOKEN)]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no Coder URL: pass --coder-url or set CODER_URL"),
        "{stderr}"
    );
}

#[test]
fn missing_token_is_a_clear_error() {
    let (code, stderr) = run(&[], &[("CODER_URL", "http://127.0.0.1:9")]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no Coder session token: set CODER_SESSION_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn unreachable_coder_is_a_clear_error() {
    let (code, stderr) = run(
        &["stdio", "--coder-url", "http://127.0.0.1:9"],
        &[("CODER_SESSION_TOKEN", TOKEN)],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot use Coder at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
}

#[test]
fn bad_durations_are_rejected() {
    let (code, stderr) = run(&["--build-timeout", "soon"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--build-timeout") && stderr.contains("use e.g. 90s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_rejected_token_is_a_clear_error_that_does_not_echo_it() {
    let env = Env::new().await;
    let url = env.sim.url();
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &["stdio", "--log-level", "trace"],
            &[
                ("CODER_URL", &url),
                ("CODER_SESSION_TOKEN", "wrong-token-abcdef"),
            ],
        )
    })
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(stderr.contains("rejected the session token"), "{stderr}");
    assert!(!stderr.contains("wrong-token-abcdef"), "{stderr}");
}

#[tokio::test]
async fn the_coder_cli_login_is_used_when_nothing_else_is_given() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("cwm-login-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("url"), format!("{}\n", env.sim.url())).unwrap();
    std::fs::write(dir.join("session"), format!("{TOKEN}\n")).unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_remove("CODER_URL")
        .env_remove("CODER_SESSION_TOKEN")
        .env_remove("CODER_MCP_STORE")
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("CODER_CONFIG_DIR", &dir);
    // The child's log is the test's to read, not cargo test's output.
    let (transport, _stderr) = rmcp::transport::TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = rmcp::ServiceExt::serve(common::Recorder::default(), transport)
        .await
        .unwrap();
    let params = rmcp::model::CallToolRequestParams::new("list_templates")
        .with_arguments(Default::default());
    let result = client.call_tool(params).await.unwrap();
    assert_eq!(structured(&result)["total_count"], 1);
    let _ = client.cancel().await;
    // With nothing else given, the store is the default file under the state directory.
    assert!(
        dir.join("state/coder-workspace-mcp/store.db").is_file(),
        "the default store was not created under XDG_STATE_HOME"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_coder_cli_login_token_is_not_sent_to_another_deployment() {
    let dir = std::env::temp_dir().join(format!("cwm-login-other-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("url"), "https://coder.example.com\n").unwrap();
    std::fs::write(dir.join("session"), "login-token-for-example-com\n").unwrap();
    let dir_text = dir.display().to_string();
    let (code, stderr) = run(
        &["stdio", "--coder-url", "http://127.0.0.1:9"],
        &[("CODER_CONFIG_DIR", &dir_text)],
    );
    std::fs::remove_dir_all(&dir).ok();
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no Coder session token for http://127.0.0.1:9")
            && stderr.contains("another deployment (https://coder.example.com)"),
        "{stderr}"
    );
    // Refused before any connection: the error is not "cannot use Coder at ...".
    assert!(!stderr.contains("cannot use Coder"), "{stderr}");
    assert!(!stderr.contains("login-token-for-example-com"), "{stderr}");
}

#[test]
fn credentials_in_the_coder_url_are_refused_without_being_echoed() {
    let (code, stderr) = run(
        &[
            "stdio",
            "--coder-url",
            "https://alice:hunter2-secret@coder.example.com",
        ],
        &[("CODER_SESSION_TOKEN", TOKEN)],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("contains a user name or password"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

#[tokio::test]
async fn the_token_never_appears_in_the_logs() {
    let env = Env::new().await;
    let server = env.server(&["--log-level", "trace"]).await;
    structured(&server.call("list_templates", json!({})).await);
    structured(&server.call("create_workspace", env.create_args()).await);
    let stderr = server.finish().await;
    assert!(
        stderr.contains("connected to Coder"),
        "logs were captured: {stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token leaked into the logs");
}

#[test]
fn help_explains_every_flag_without_showing_the_token() {
    let (code, stderr) = {
        let output = Command::new(BIN)
            .arg("--help")
            .env("CODER_SESSION_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    assert_eq!(code, 0);
    for flag in [
        "--coder-url",
        "--token",
        "--build-timeout",
        "--agent-timeout",
        "--startup-timeout",
        "--max-call-wait",
        "--log-level",
        "demo",
        "stdio",
    ] {
        assert!(stderr.contains(flag), "--help does not mention {flag}");
    }
    assert!(!stderr.contains(TOKEN));
}

#[test]
fn the_demo_runs_the_whole_flow() {
    let output = Command::new(BIN)
        .arg("demo")
        .env_remove("CODER_URL")
        .env_remove("CODER_SESSION_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    // The story and the progress on stderr, in order.
    let mut at = 0;
    for expected in [
        "1) list_templates",
        "2) read_template",
        "preset \"Frankfurt, 4 cores\", the default, with prebuilt workspaces",
        "3) create_workspace",
        "claimed a prebuilt workspace; starting it",
        "is ready",
        "prebuilt: true",
        "4) create_workspace again",
        "same workspace: true",
        "5) the server restarted",
        "same workspace: true",
        "6) another task",
        "building demo-custom",
        "is ready",
    ] {
        let found = stderr[at..].find(expected);
        assert!(
            found.is_some(),
            "demo stderr lacks {expected:?} after byte {at}: {stderr}"
        );
        at += found.unwrap_or_default() + expected.len();
    }
    // The results on stdout: JSON only, one per call, in call order.
    let results: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON values ({e}): {stdout}"));
    assert_eq!(results.len(), 6, "{stdout}");
    assert!(results[0]["templates"].is_array());
    assert!(results[1]["parameters"].is_array());
    assert_eq!(results[2]["created"], true);
    assert_eq!(
        results[2]["prebuilt"], true,
        "the default preset's prebuilt workspace"
    );
    assert!(results[1]["presets"].is_array());
    assert_eq!(results[5]["created"], true);
    assert!(results[5].get("prebuilt").is_none(), "a full build");
    assert_eq!(results[3]["status"], "already_exists");
    assert_eq!(results[4]["status"], "already_exists");
    assert_eq!(results[4]["workspace_id"], results[2]["workspace_id"]);
}

/// Each command takes only its own flags: the demo does not silently ignore a Coder URL,
/// nor the simulator a time limit.
#[test]
fn commands_refuse_flags_that_are_not_theirs() {
    for args in [
        &["demo", "--coder-url", "http://nowhere.invalid"][..],
        &["sim", "--max-call-wait", "5s"],
        &["serve", "--stdio-session", "x"],
        &["--listen", "127.0.0.1:0", "serve"],
    ] {
        let (code, stderr) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
}

/// A URL that is not one is named as such (no request was made).
#[test]
fn a_coder_url_that_is_not_a_url_is_named_as_such() {
    let (code, stderr) = run(
        &["stdio"],
        &[("CODER_URL", "not-a-url"), ("CODER_SESSION_TOKEN", TOKEN)],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains(
            "invalid Coder URL from --coder-url/CODER_URL: \"not-a-url\" is not a valid URL"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("unexpected answer"), "{stderr}");
}

#[test]
fn mcp_json_example_has_an_entry_per_client() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mcp.json.example")).unwrap();
    let example: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for client in ["claude_desktop", "claude_code", "cursor", "vscode"] {
        let config = &example[client]["config"];
        let servers = config
            .get("mcpServers")
            .or_else(|| config.get("servers"))
            .unwrap_or_else(|| panic!("{client}"));
        let coder = &servers["coder"];
        let command = coder["command"].as_str().unwrap();
        assert!(command.ends_with("coder-workspace-mcp"), "{client}");
        // GUI apps do not see the shell's PATH: they get an absolute path.
        if client != "claude_code" {
            assert!(command.starts_with('/'), "{client}: {command}");
        }
        assert_eq!(coder["args"][0], "stdio", "{client}");
        assert!(
            coder["env"]["CODER_URL"].is_string()
                && coder["env"]["CODER_SESSION_TOKEN"].is_string(),
            "{client}"
        );
    }
    assert_eq!(
        example["vscode"]["config"]["servers"]["coder"]["type"],
        "stdio"
    );
    for client in [
        "claude_code_remote",
        "cursor_remote",
        "vscode_remote",
        "legacy_sse_remote",
    ] {
        let config = &example[client]["config"];
        let servers = config
            .get("mcpServers")
            .or_else(|| config.get("servers"))
            .unwrap();
        let coder = &servers["coder"];
        assert!(
            coder["url"].as_str().unwrap().ends_with("/mcp")
                || coder["url"].as_str().unwrap().ends_with("/sse"),
            "{client}"
        );
        assert!(
            coder["headers"]["Authorization"]
                .as_str()
                .unwrap()
                .starts_with("Bearer "),
            "{client}"
        );
    }
}

#[test]
fn serve_help_explains_the_http_flags() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--allowed-host",
        "--allowed-origin",
        "--max-body",
        "--session-idle-timeout",
        "--max-sessions",
        "--max-sessions-per-token",
        "--shutdown-grace",
        "--shared-identity",
        "--auth-token",
    ] {
        assert!(help.contains(flag), "serve --help does not mention {flag}");
    }
}

#[test]
fn shared_identity_requires_an_auth_token() {
    let (code, stderr) = run(
        &["serve", "--shared-identity"],
        &[("CODER_MCP_AUTH_TOKEN", "")],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--auth-token") && stderr.contains("CODER_MCP_AUTH_TOKEN"),
        "{stderr}"
    );
}

/// A bad store URL is a start-up error that never shows its password, from the flag and
/// from the environment alike.
#[test]
fn a_bad_store_url_is_refused_without_its_password() {
    let bad = "postgres://app:s3cret-pw@db.internal:notaport/mcp";
    for (args, env) in [
        (vec!["stdio", "--store", bad], vec![]),
        (vec!["stdio"], vec![("CODER_MCP_STORE", bad)]),
    ] {
        let mut env = env;
        env.push(("CODER_URL", "http://127.0.0.1:9"));
        env.push(("CODER_SESSION_TOKEN", TOKEN));
        let (code, stderr) = run(&args, &env);
        assert_ne!(code, 0);
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    }
    // The parse error itself names the flag (checked before Coder is contacted).
    let (code, stderr) = run(
        &["stdio", "--store", bad],
        &[
            ("CODER_SESSION_TOKEN", TOKEN),
            ("CODER_URL", "http://127.0.0.1:9"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--store/CODER_MCP_STORE: invalid PostgreSQL URL"),
        "{stderr}"
    );
}

/// An address already in use is named in the error (sim and serve alike).
#[test]
fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(&["sim", "--listen", &addr], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&addr), "{stderr}");
}

/// `sim --oauth-app-redirect`: an OAuth2 app of the simulated Coder and a user signed in
/// at its `/oauth2/authorize`, so a script signs in by following the redirects (what
/// `interop/run`'s OAuth session does through `serve`); the access tokens it issues are
/// logged at debug level, for leak checks.
#[tokio::test]
async fn the_simulator_lets_a_script_sign_in_through_oauth() {
    use base64::Engine;
    use sha2::Digest;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let callback = "http://127.0.0.1:9/callback";
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--oauth-app-redirect",
            callback,
        ])
        .args(["--oauth-user", "alice"])
        .args(["--log-level", "info,coder_workspace_sim::oauth=debug"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // Reads the sim's stderr until `done` holds for what was read.
    let mut read_until = async |log: &mut String, done: &dyn Fn(&str) -> bool| {
        common::bounded("the simulator's stderr", async {
            while !done(log) {
                let line = lines.next_line().await.unwrap();
                let line = line.unwrap_or_else(|| panic!("the simulator's stderr ended:\n{log}"));
                log.push_str(&line);
                log.push('\n');
            }
        })
        .await;
    };
    let value = |log: &str, key: &str| {
        log.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    read_until(&mut log, &|log| {
        value(log, "CODER_MCP_OAUTH_CLIENT_SECRET").is_some()
    })
    .await;
    let url = value(&log, "CODER_URL").unwrap();
    let id = value(&log, "CODER_MCP_OAUTH_CLIENT_ID").unwrap();
    let secret = value(&log, "CODER_MCP_OAUTH_CLIENT_SECRET").unwrap();
    assert!(log.contains("signs in alice"), "{log}");

    // No session token, no cookie: the signed-in user consents at once.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "v".repeat(50);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let response = http
        .get(format!("{url}/oauth2/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", &id),
            ("redirect_uri", callback),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(callback), "{location}");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "st");
    let token: serde_json::Value = http
        .post(format!("{url}/oauth2/tokens"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &query["code"]),
            ("redirect_uri", callback),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let user: serde_json::Value = http
                .get(format!("{url}/api/v2/users/me"))
                .header("Coder-Session-Token", token)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            user["username"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(me(access.clone()).await, "alice");
    // The demo user is still there, token and all.
    assert_eq!(
        me(coder_workspace_sim::SimCoder::DEMO_TOKEN.to_owned()).await,
        "demo"
    );
    read_until(&mut log, &|log| {
        log.contains(&format!("access_token={access}"))
    })
    .await;

    child.kill().await.unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    assert_eq!(stdout, "", "the simulator printed to stdout");
}
