//! Property-based fuzzing of the binary in stdio mode, over raw pipes: tool calls with
//! generated arguments (of every tool, and of none), some of them mangled byte by byte.
//! Whatever comes in, every line out is JSON-RPC 2.0, every well-formed request gets
//! exactly one answer, no answer echoes a huge argument back, and the server keeps
//! serving. Bounded to about 30 s (`FUZZ_SECONDS`); the seed is printed, and
//! `FUZZ_SEED=<seed>` replays a run.

// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod stdio_raw;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Env;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};
use stdio_raw::{RawServer, shorten};

/// The most an answer may weigh, whatever its request carried (arguments go up to
/// ~100 kB here): messages quote at most a few dozen characters of any input.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

fn runner() -> (TestRunner, u64) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    eprintln!("fuzz seed {seed} (replay with FUZZ_SEED={seed})");
    let config = Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    (TestRunner::new(config), seed)
}

/// Any string: short ones of any characters, names of the shape Coder wants, and long
/// ones (up to 100 kB) that must never come back whole.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,16}",
        3 => "[a-z][a-z0-9-]{0,40}",
        1 => (".{1,4}", 100usize..100_000).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arguments shaped like the tools' (the real template id often, the real parameter
/// names often), and anything else besides.
fn arguments(template_id: String) -> impl Strategy<Value = Value> {
    let template = prop_oneof![
        3 => Just(Value::from(template_id)),
        1 => text().prop_map(Value::from),
        1 => json_value(),
    ];
    let parameter = prop_oneof![Just("region".to_owned()), Just("cpu".to_owned()), text()];
    let parameter_value = prop_oneof![
        Just(json!("us")),
        Just(json!("eu")),
        (-5i64..20).prop_map(|n| json!(n.to_string())),
        json_value(),
    ];
    let parameters = prop_oneof![
        3 => prop::collection::btree_map(parameter, parameter_value, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.8, template),
        prop::option::weighted(0.5, text().prop_map(Value::from)),
        prop::option::weighted(0.5, parameters),
        prop::collection::btree_map(".{0,12}", json_value(), 0..2),
    )
        .prop_map(|(template, name, parameters, extra)| {
            let mut arguments: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (key, value) in [
                ("template_id", template),
                ("name", name),
                ("parameters", parameters),
            ] {
                if let Some(value) = value {
                    arguments.insert(key.to_owned(), value);
                }
            }
            Value::Object(arguments)
        })
}

/// A byte-level mangling of a line.
#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![
        prop::sample::select(b"{}[]\",:0-e. \\\xff\x00".to_vec()),
        any::<u8>().prop_filter("not a line break", |b| *b != b'\n'),
    ];
    let edit = prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..4)
}

fn mangle(mut line: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if line.is_empty() {
            break;
        }
        match edit {
            Edit::Delete(i) => {
                line.remove(i.index(line.len()));
            }
            Edit::Insert(i, b) => line.insert(i.index(line.len() + 1), *b),
            Edit::Truncate(i) => line.truncate(i.index(line.len())),
        }
    }
    line
}

#[derive(Debug, Clone)]
struct Case {
    tool: String,
    arguments: Value,
    /// Mangled before sending, when some.
    edits: Option<Vec<Edit>>,
}

fn case(template_id: String) -> impl Strategy<Value = Case> {
    let tool = prop_oneof![
        2 => Just("create_workspace".to_owned()),
        1 => Just("read_template".to_owned()),
        1 => Just("list_templates".to_owned()),
        1 => ".{0,12}",
    ];
    (
        tool,
        arguments(template_id),
        prop::option::weighted(0.25, edits()),
    )
        .prop_map(|(tool, arguments, edits)| Case {
            tool,
            arguments,
            edits,
        })
}

#[tokio::test]
async fn generated_tool_calls_and_mangled_lines_are_answered_and_the_server_keeps_serving() {
    let budget = Duration::from_secs(
        std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(25),
    );
    let env = Env::new().await;
    // create_workspace answers as soon as Coder took the create: no call waits on a build.
    let mut server = RawServer::start(&env, &["--max-call-wait", "0"]).await;
    let (mut runner, seed) = runner();
    let strategy = case(env.docker.id.to_string());
    // How many answers each well-formed request got (ids of mangled lines are `mangled-*`,
    // which no mangling of a well-formed id can become).
    let mut answers: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    let mut cases = 0usize;
    while started.elapsed() < budget && cases < 5_000 {
        cases += 1;
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let id = match case.edits {
            Some(_) => format!("mangled-{cases}"),
            None => format!("call-{cases}"),
        };
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": case.tool, "arguments": case.arguments}});
        let mut line = serde_json::to_vec(&request).unwrap();
        if let Some(edits) = &case.edits {
            line = mangle(line, edits);
        }
        let context = || format!("seed {seed}, case {cases}: {}", shorten(&line));
        let well_formed = case.edits.is_none();
        if well_formed {
            answers.insert(id.clone(), 0);
        }
        server.send(&line).await;
        // Read until this line has been dealt with: its own answer if well formed, and
        // the answer to a ping sent after it (the framing answers in order).
        let barrier = server.barrier_id().await;
        let mut done = !well_formed;
        let mut passed_barrier = false;
        while !(done && passed_barrier) {
            let answer = server.recv().await;
            if answer.get("method").is_some() {
                continue; // progress
            }
            if answer["id"] == barrier.as_str() {
                passed_barrier = true;
                continue;
            }
            let size = answer.to_string().len();
            assert!(
                size <= MAX_ANSWER_BYTES,
                "an answer of {size} bytes ({}): {}",
                context(),
                shorten(answer.to_string().as_bytes())
            );
            if let Some(answered) = answer["id"].as_str() {
                if let Some(count) = answers.get_mut(answered) {
                    *count += 1;
                    assert_eq!(*count, 1, "{answered} answered twice ({})", context());
                }
                if answered == id {
                    done = true;
                    check_call_answer(&answer, &context);
                }
            }
        }
    }
    // The server still serves, and every well-formed call got its one answer.
    server
        .send(br#"{"jsonrpc":"2.0","id":"last","method":"tools/call","params":{"name":"list_templates","arguments":{}}}"#)
        .await;
    let listed = loop {
        let answer = server.recv().await;
        if answer["id"] == "last" {
            break answer;
        }
        if let Some(count) = answer["id"].as_str().and_then(|id| answers.get_mut(id)) {
            *count += 1;
        }
    };
    assert_eq!(listed["result"]["isError"], false, "{listed}");
    let unanswered: Vec<_> = answers.iter().filter(|(_, n)| **n != 1).collect();
    assert!(unanswered.is_empty(), "seed {seed}: {unanswered:?}");
    eprintln!("fuzz: {cases} cases in {:?}", started.elapsed());
    let (status, _) = server.close().await;
    assert!(status.success(), "seed {seed}: exit {status}");
}

/// A tool call's answer is a tool result (an `isError` one for bad arguments) or, for an
/// unknown tool or unfit params, a JSON-RPC error.
fn check_call_answer(answer: &Value, context: &dyn Fn() -> String) {
    if let Some(error) = answer.get("error") {
        let code = error["code"].as_i64().unwrap();
        assert!(
            [-32602, -32601, -32600].contains(&code),
            "unexpected error {answer} ({})",
            context()
        );
        return;
    }
    let result = &answer["result"];
    assert!(result["content"].is_array(), "{answer} ({})", context());
    if result["isError"] == true {
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "an error says why ({})", context());
    }
}
