//! stdio framing through the binary over real pipes: every line the server cannot process
//! is answered as JSON-RPC 2.0 says, and the server keeps serving.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod stdio_raw;

use common::Env;
use serde_json::{Value, json};
use stdio_raw::RawServer;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

fn code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("an error: {answer}"))
}

/// A tools/call line with `arguments` given as raw JSON text.
fn call(id: &str, tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
}

#[tokio::test]
async fn every_line_that_cannot_be_processed_is_answered_and_the_server_keeps_serving() {
    let env = Env::new().await;
    let mut server = RawServer::start(&env, &[]).await;
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, Vec<u8>, i64, Value)> = vec![
        (
            "not JSON",
            b"hello, server".to_vec(),
            PARSE_ERROR,
            Value::Null,
        ),
        (
            "truncated JSON",
            br#"{"jsonrpc":"2.0","id":1,"method":"#.to_vec(),
            PARSE_ERROR,
            Value::Null,
        ),
        (
            "params as a string",
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":"all"}"#.to_vec(),
            INVALID_REQUEST,
            json!(2),
        ),
        (
            "params as an array",
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":[1]}"#.to_vec(),
            INVALID_PARAMS,
            json!(3),
        ),
        (
            "jsonrpc missing",
            br#"{"id":4,"method":"tools/list"}"#.to_vec(),
            INVALID_REQUEST,
            json!(4),
        ),
        (
            "jsonrpc 1.0",
            br#"{"jsonrpc":"1.0","id":5,"method":"tools/list"}"#.to_vec(),
            INVALID_REQUEST,
            json!(5),
        ),
        (
            "a duplicate method",
            br#"{"jsonrpc":"2.0","id":6,"method":"tools/list","method":"ping"}"#.to_vec(),
            INVALID_REQUEST,
            json!(6),
        ),
        (
            "a duplicate id (which one is meant cannot be told)",
            br#"{"jsonrpc":"2.0","id":7,"id":8,"method":"ping"}"#.to_vec(),
            INVALID_REQUEST,
            Value::Null,
        ),
        (
            "a duplicate key in the arguments",
            call("9", "list_templates", r#"{"query":"a","query":"b"}"#).into_bytes(),
            INVALID_PARAMS,
            json!("9"),
        ),
        (
            "a lone surrogate in a string",
            call("10", "list_templates", r#"{"query":"\ud800"}"#).into_bytes(),
            INVALID_PARAMS,
            json!("10"),
        ),
        (
            "invalid UTF-8 in a string",
            call("11", "list_templates", "{\"query\":\"\u{1}\"}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 1 { 0xFF } else { b })
                .collect(),
            INVALID_PARAMS,
            json!("11"),
        ),
        (
            "nesting over 128 levels",
            call("12", "list_templates", &deep).into_bytes(),
            INVALID_PARAMS,
            json!("12"),
        ),
        (
            "non-object arguments",
            call("13", "list_templates", r#""everything""#).into_bytes(),
            INVALID_PARAMS,
            json!("13"),
        ),
        (
            "array arguments",
            call("14", "read_template", "[1, 2]").into_bytes(),
            INVALID_PARAMS,
            json!("14"),
        ),
        (
            "tools/call without a tool name",
            br#"{"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"arguments":{}}}"#
                .to_vec(),
            INVALID_PARAMS,
            json!(15),
        ),
        (
            "an id that is neither a string nor an integer",
            br#"{"jsonrpc":"2.0","id":{"n":1},"method":"ping"}"#.to_vec(),
            INVALID_REQUEST,
            Value::Null,
        ),
        (
            "a JSON value that is not an object",
            br#""tools/list""#.to_vec(),
            INVALID_REQUEST,
            Value::Null,
        ),
    ];
    for (what, line, expected_code, expected_id) in cases {
        let answer = server.answer_to(&line).await;
        assert_eq!(code(&answer), expected_code, "{what}: {answer}");
        assert_eq!(answer["id"], expected_id, "{what}: {answer}");
        assert!(
            answer.to_string().len() < 1024,
            "{what}: a short answer, got {answer}"
        );
    }
    // The arguments error names what is wrong.
    let answer = server
        .answer_to(call("16", "list_templates", "7").as_bytes())
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("arguments must be an object"),
        "{answer}"
    );

    // A batch: each request in it is refused with its id, in one array.
    server
        .send(br#"[{"jsonrpc":"2.0","id":"b1","method":"ping"},{"jsonrpc":"2.0","id":"b2","method":"tools/list"}]"#)
        .await;
    let before = server.barrier().await;
    assert_eq!(before.len(), 1, "{before:?}");
    let ids: Vec<Value> = before[0]
        .as_array()
        .unwrap_or_else(|| panic!("an array answers a batch: {}", before[0]))
        .iter()
        .map(|r| {
            assert_eq!(code(r), INVALID_REQUEST);
            r["id"].clone()
        })
        .collect();
    assert_eq!(ids, vec![json!("b1"), json!("b2")]);

    // Responses are never answered (a peer that echoes cannot start an error storm), nor
    // blank lines.
    for line in [
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        r#"{"jsonrpc":"2.0","id":"nobody-asked","result":{}}"#,
        "",
        "   ",
    ] {
        server.send(line.as_bytes()).await;
        assert_eq!(server.barrier().await, Vec::<Value>::new(), "{line}");
    }

    // And the server still works.
    let line = call("list", "list_templates", "{}");
    let answer = server.call(line.as_bytes(), &json!("list")).await;
    assert_eq!(answer["id"], "list");
    assert_eq!(
        answer["result"]["structuredContent"]["templates"][0]["name"], "docker",
        "{answer}"
    );
    let (status, stderr) = server.close().await;
    assert!(status.success(), "exit on EOF: {status}\n{stderr}");
    assert!(stderr.contains("refused a line on stdin"), "{stderr}");
}

#[tokio::test]
async fn a_request_over_the_line_limit_is_refused_without_echo_and_the_session_goes_on() {
    let env = Env::new().await;
    let mut server = RawServer::start(&env, &[]).await;
    // A 2 MB name, over the default 1 MiB limit: an error naming the limit, not a workspace
    // and a 4 MB answer.
    let name = "n".repeat(2_000_000);
    let line = json!({"jsonrpc":"2.0","id":"huge","method":"tools/call","params":{
        "name":"create_workspace",
        "arguments":{"template_id": env.docker.id.to_string(), "name": name}}})
    .to_string();
    let answer = server.answer_to(line.as_bytes()).await;
    assert_eq!(answer["id"], "huge", "{answer}");
    assert_eq!(code(&answer), INVALID_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-line"),
        "{answer}"
    );
    assert_eq!(answer["error"]["data"]["max_line_bytes"], 1 << 20);
    assert!(answer.to_string().len() < 1024, "{answer}");
    assert!(env.workspaces().is_empty(), "nothing was created");

    // A line over 16 MiB whose id comes after the limit: answered with a null id.
    let mut line = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"list_templates","arguments":{"query":""#.to_vec();
    line.resize(line.len() + (17 << 20), b'x');
    line.extend_from_slice(br#""}},"id":"late"}"#);
    let answer = server.answer_to(&line).await;
    assert_eq!(code(&answer), INVALID_REQUEST, "{answer}");
    assert_eq!(answer["id"], Value::Null, "{answer}");

    // Normal calls go on.
    let answer = server
        .call(
            br#"{"jsonrpc":"2.0","id":"after","method":"tools/list"}"#,
            &json!("after"),
        )
        .await;
    assert_eq!(answer["id"], "after");
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    let (status, stderr) = server.close().await;
    assert!(status.success(), "{status}\n{stderr}");
}

#[tokio::test]
async fn the_line_limit_is_a_flag() {
    let env = Env::new().await;
    let mut server = RawServer::start(&env, &["--max-line", "4KiB"]).await;
    let line = call(
        "big",
        "list_templates",
        &format!(r#"{{"query":"{}"}}"#, "q".repeat(5000)),
    );
    let answer = server.answer_to(line.as_bytes()).await;
    assert_eq!(
        (code(&answer), answer["id"].clone()),
        (INVALID_REQUEST, json!("big"))
    );
    assert_eq!(answer["error"]["data"]["max_line_bytes"], 4096);
    let line = call("small", "list_templates", r#"{"query":"dock"}"#);
    let answer = server.call(line.as_bytes(), &json!("small")).await;
    assert_eq!(answer["id"], "small", "{answer}");
    assert!(answer["result"].is_object(), "{answer}");
    server.close().await;

    let output = std::process::Command::new(common::BIN)
        .args(["stdio", "--max-line", "10"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("too small"), "{stderr}");
}

#[tokio::test]
async fn a_last_line_without_its_newline_is_still_read() {
    let env = Env::new().await;
    let mut server = RawServer::start(&env, &[]).await;
    // A malformed line, then EOF with no newline after it: the refusal is written before
    // the process exits.
    server
        .send_partial(b"{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"ping\",")
        .await;
    server.close_stdin();
    let answer = server.recv().await;
    assert_eq!(
        (code(&answer), answer["id"].clone()),
        (PARSE_ERROR, Value::Null)
    );
    let (status, _) = server.close().await;
    assert!(status.success());
}

/// The open file description's flags, from /proc: whether `O_NONBLOCK` is set on it.
fn nonblocking(fd: &impl std::os::fd::AsRawFd) -> bool {
    const O_NONBLOCK: u32 = 0o4000;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    flags & O_NONBLOCK != 0
}

/// One JSON line from `lines`, skipping the server's log lines (when they share the stream).
async fn next_json<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> Value {
    loop {
        let line = common::bounded("a line", lines.next_line())
            .await
            .unwrap()
            .expect("the stream is still open");
        if let Ok(value) = serde_json::from_str::<Value>(&line) {
            return value;
        }
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fd-test","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/list"}
"#;

fn server_command(env: &Env) -> std::process::Command {
    let mut command = std::process::Command::new(common::BIN);
    command
        .arg("stdio")
        .env("CODER_URL", env.sim.url())
        .env("CODER_SESSION_TOKEN", common::TOKEN)
        .env("CODER_CONFIG_DIR", "/nonexistent/coder-workspace-mcp-tests")
        .env("CODER_MCP_STORE", env.store())
        .env_remove("CODER_MCP_STDIO_SESSION")
        .env("RUST_LOG", "debug");
    command
}

/// Node's `child_process` (so Claude Desktop, Claude Code, the Inspector) gives a server
/// socket pairs, not pipes: the server polls them, answers, and leaves the socket blocking
/// again when it exits (the description is shared with whoever holds the other copies).
#[tokio::test]
async fn stdio_over_a_socket_is_polled_and_left_blocking_at_exit() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let env = Env::new().await;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(!nonblocking(&theirs));
    let mut child = tokio::process::Command::from(server_command(&env))
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let (read, mut write) = ours.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    write.write_all(INITIALIZE.as_bytes()).await.unwrap();
    assert_eq!(next_json(&mut lines).await["id"], 1);
    let tools = next_json(&mut lines).await;
    assert_eq!(tools["id"], 2, "{tools}");
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        3,
        "{tools}"
    );
    assert!(nonblocking(&theirs), "the server polls its socket");
    // EOF on its stdin: the server ends, and puts the socket back as it found it.
    write.shutdown().await.unwrap();
    let status = common::bounded("the server's exit", child.wait())
        .await
        .unwrap();
    assert!(status.success());
    assert!(!nonblocking(&theirs), "the socket is blocking again");
}

/// A server started with `2>&1` shares one open file between stdout and stderr: it must not
/// make it non-blocking (stderr's log writes would fail), and still serves.
#[tokio::test]
async fn stdout_shared_with_stderr_stays_blocking() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let env = Env::new().await;
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = tokio::process::Command::from(server_command(&env))
        .stdin(std::process::Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer.try_clone().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).unwrap();
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(INITIALIZE.as_bytes()).await.unwrap();
    assert_eq!(next_json(&mut lines).await["id"], 1);
    let tools = next_json(&mut lines).await;
    assert_eq!(tools["id"], 2, "{tools}");
    assert!(!nonblocking(&writer), "stdout is stderr: left blocking");
    drop(stdin);
    let status = common::bounded("the server's exit", child.wait())
        .await
        .unwrap();
    assert!(status.success());
}
