//! The benchmark runner: `cargo bench` (or `cargo bench -- --quick`).
//!
//! Everything runs against the simulated Coder, hosted in this process, and every
//! figure is reported next to a baseline measured in the same run (Coder's own
//! tool's 2-second polling, a direct HTTP GET of the same Coder endpoint, or the
//! in-memory store).
//! Results go to stdout, `benches/results.json`, `benches/latency.svg`, and the
//! marked section of `BENCHMARKS.md`. See BENCHMARKS.md for the method.
//!
//! `cargo bench -- --only soak [--soak-minutes N]` runs the soak instead (section 7: N
//! minutes, default 10, of mixed calls and session churn against one `serve`); the full
//! run leaves it out, and it prints its summary without writing any results.

// Measurement code, not the product: a failed assumption ends the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use coder_api::WorkspaceAgentLifecycle;
use coder_workspace_sim::{AgentPlan, BuildPlan, RecordedRequest, SimCoder, TemplateSpec};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The tests' PostgreSQL harness, shared rather than copied: a private server (initdb and
/// pg_ctl, as the `postgres` user when run as root), or the one `CODER_MCP_TEST_POSTGRES`
/// names. The bench uses only part of it (not `stop`/`resume`), hence `dead_code`.
#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

const TOKEN: &str = "bench-token-0000000000000000";

struct Options {
    quick: bool,
    /// `--only <section>`: run one section (detection, requests, overhead, scale,
    /// cold-start, store, prebuild, soak) and leave the written results alone.
    only: Option<String>,
    /// `--soak-minutes N`: how long the soak's load lasts (default 10). The soak runs
    /// only with `--only soak`, never as part of the full run.
    soak_minutes: f64,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == MINIMAL_SERVER_ARG) {
        return serve_minimal_rmcp().await;
    }
    let options = Options {
        quick: args.iter().any(|a| a == "--quick"),
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned()),
        soak_minutes: match args.iter().position(|a| a == "--soak-minutes") {
            Some(i) => args
                .get(i + 1)
                .and_then(|m| m.parse::<f64>().ok())
                .filter(|m| *m > 0.0)
                .context("--soak-minutes takes a positive number of minutes")?,
            None => 10.0,
        },
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let server = build_server(&root)?;
    println!(
        "coder-workspace-mcp benchmarks{}",
        if options.quick { " (quick)" } else { "" }
    );
    println!("server binary: {}", server.display());
    // The scale and tasks sections hold thousands of sockets in this process (the
    // simulator's side) and in the server. Where it may (as root), the hard limit is
    // raised too, so that the tasks section can hold 10,000 tasks; elsewhere the soft
    // limit goes up to the hard one.
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && hard < WANTED_FILES
    {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED_FILES, WANTED_FILES);
    }
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        println!(
            "warning: could not raise the open file limit ({err}); the scale section may fail"
        );
    }
    let run = RunInfo::collect(&root);
    println!(
        "machine: {}; kernel {}; {}; commit {}\n",
        run.machine, run.kernel, run.rustc, run.commit
    );

    let mut report = Report {
        run,
        quick: options.quick,
        ..Default::default()
    };

    let creates = if options.quick { 20 } else { 60 };
    for mode in ["stream", "polling"]
        .into_iter()
        .filter(|_| options.runs("detection"))
    {
        let run = detection(&server, mode, creates).await?;
        println!(
            "detection [{mode:>7}]: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms; {:.1} Coder requests per create",
            run.latencies_ms.len(),
            percentile(&run.latencies_ms, 50.0),
            percentile(&run.latencies_ms, 90.0),
            percentile(&run.latencies_ms, 99.0),
            percentile(&run.latencies_ms, 100.0),
            run.requests_per_create
        );
        report.detection.insert(mode.to_owned(), run);
    }

    if options.runs("requests") {
        // Both modes at once (separate simulators and servers): the section lasts one build.
        let wait = Duration::from_secs(if options.quick { 60 } else { 120 });
        let (stream, polling) = tokio::join!(
            requests_while_waiting(&server, "stream", wait),
            requests_while_waiting(&server, "polling", wait)
        );
        for (mode, run) in [("stream", stream?), ("polling", polling?)] {
            println!(
                "requests while waiting [{mode:>7}]: {} over {:.0} s, busiest minute {}, {:.1} per minute; {:?}",
                run.total, run.build_seconds, run.busiest_minute, run.per_minute, run.by_endpoint
            );
            report.requests_while_waiting.insert(mode.to_owned(), run);
        }
    }

    let calls = if options.quick { 200 } else { 1000 };
    if options.runs("overhead") {
        report.overhead = overhead(&server, calls).await?;
    }
    for (name, stats) in &report.overhead.transports {
        println!(
            "list_templates [{name:>11}]: p50={:.3} ms p99={:.3} ms; {:.0} calls/s sequential, {:.0} calls/s with {} in flight",
            stats.p50_ms,
            stats.p99_ms,
            stats.sequential_per_second,
            stats.concurrent_per_second,
            report.overhead.concurrency
        );
    }
    for (name, ratios) in &report.overhead.round_ratios {
        println!("p50 ratio to the direct GET per round [{name:>11}]: {ratios:.2?}");
    }
    if options.runs("overhead") {
        let binary = server.clone();
        // A thread of its own, not the blocking pool's: it is pinned to one CPU for good.
        let (done, layer) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || done.send(mcp_layer(&binary, calls)));
        let layer = layer.await??;
        println!(
            "MCP layer over stdio, raw JSON-RPC client, every process on CPU {}, p50 (median of {} rounds of {}): rmcp's minimal server ping {:.0} µs; ours: ping {:.0} µs, tools/list {:.0} µs ({} bytes; +{:.0} over ping), list_templates {:.0} µs; direct GET {:.0} µs (raw {:.0} µs); list_templates − (ping + GET) = {:.0} µs; on a multi-threaded runtime: ping {:.0} µs, list_templates {:.0} µs",
            layer.cpu,
            layer.rounds,
            layer.calls_per_round,
            layer.minimal_ping_us,
            layer.ping_us,
            layer.tools_list_us,
            layer.tools_list_bytes,
            layer.tools_list_over_ping_us,
            layer.list_templates_us,
            layer.direct_get_us,
            layer.raw_get_us,
            layer.list_templates_over_ping_and_get_us,
            layer.multi_thread_ping_us,
            layer.multi_thread_list_templates_us
        );
        report.mcp_layer = layer;
    }

    let sessions = if options.quick { 200 } else { 1000 };
    if options.runs("scale") {
        let idle = idle_session_cost(&server, sessions).await?;
        println!("scale: {idle:.1} KiB per initialized, idle rmcp session");
        report.scale.kib_per_idle_session = idle;
        for mode in ["stream", "polling"] {
            let s = scale(&server, sessions, options.quick, mode).await?;
            println!(
                "scale [{mode:>7}]: {} sessions, {} workspaces, {} errors; RSS idle {:.1} MiB, peak {:.1} MiB, {:.1} KiB per waiting session; CPU {:.2} s; peak fds {}; {} Coder requests",
                s.sessions,
                s.workspaces,
                s.errors,
                s.idle_rss_kib as f64 / 1024.0,
                s.peak_rss_kib as f64 / 1024.0,
                s.kib_per_session,
                s.cpu_seconds,
                s.peak_fds,
                s.coder_requests
            );
            report.scale.runs.insert(mode.to_owned(), s);
        }
    }

    if options.runs("cold-start") {
        report.cold_start = cold_start(&server, if options.quick { 10 } else { 30 }).await?;
        println!(
            "cold start to initialize answered: p50={:.1} ms (min {:.1}), on a new store file p50={:.1} ms; `--version` floor p50={:.1} ms; binary {:.1} MiB",
            report.cold_start.p50_ms,
            report.cold_start.min_ms,
            report.cold_start.new_store_p50_ms,
            report.cold_start.floor_p50_ms,
            report.cold_start.binary_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if options.runs("store") {
        report.store = store_section(&server, options.quick).await?;
    }
    // Prints only (its figures are copied into BENCHMARKS.md's "Prebuilds" section).
    if options.runs("prebuild") {
        prebuild_section(&server, options.quick).await?;
    }
    // Only when asked for (a few minutes, thousands of sockets): its figures are copied
    // into BENCHMARKS.md's "Tasks at scale" section.
    if options.only.as_deref() == Some("tasks") {
        tasks_section(&server, options.quick).await?;
    }
    // Only when asked for: it lasts `--soak-minutes` plus about 3 minutes.
    if options.only.as_deref() == Some("soak") {
        soak(&server, options.soak_minutes).await?;
    }
    if let Some(only) = &options.only {
        println!("\n--only {only}: results not written");
        return Ok(());
    }
    report.write(&root)?;
    println!(
        "\nwrote benches/results.json, benches/latency.svg and the results section of BENCHMARKS.md"
    );
    Ok(())
}

/// Builds the release server binary (the bench measures it as users run it).
fn build_server(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .args(["build", "--release", "--bin", "coder-workspace-mcp"])
        .current_dir(root);
    // Cargo ran this bench with the variables it sets for a package's programs
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...). Build scripts such as ring's rerun when
    // those change, so passing them on would rebuild half the dependencies on every run.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_BIN_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("coder-workspace-mcp"))
}

/// Where and what was measured, recorded with the results.
#[derive(Default, serde::Serialize)]
struct RunInfo {
    machine: String,
    kernel: String,
    rustc: String,
    /// `git describe --always --dirty` of the measured sources.
    commit: String,
    date: String,
}

impl RunInfo {
    fn collect(root: &Path) -> RunInfo {
        let output = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "unknown".into())
        };
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        RunInfo {
            machine: machine_description(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            rustc: output(&rustc, &["--version"]),
            commit: output("git", &["describe", "--always", "--dirty"]),
            date: Utc::now().format("%Y-%m-%d").to_string(),
        }
    }
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {:.0} GiB RAM, {}",
        mem as f64 / 1048576.0,
        std::env::consts::OS
    )
}

// ---- the server under test -------------------------------------------------------

struct Serve {
    child: tokio::process::Child,
    url: String,
    /// The temporary directory of its SQLite store, removed after the server.
    store_dir: Option<tempfile::TempDir>,
    /// Its log lines after "listening on", counted by level and message ([`log_key`]).
    log: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

/// The store a spawned server gets. Always explicit: without `--store` a server would
/// use the user's own (`~/.local/state/coder-workspace-mcp/store.db`), and a benchmark
/// must neither read nor grow that.
enum StoreArg<'a> {
    /// A new SQLite file in a temporary directory: what users run by default.
    TempSqlite,
    /// `--store memory`: nothing written anywhere (the store section's baseline).
    Memory,
    /// A PostgreSQL URL.
    Postgres(&'a str),
}

impl StoreArg<'_> {
    /// The `--store` value, and the directory to keep for as long as the server runs.
    fn resolve(&self) -> anyhow::Result<(String, Option<tempfile::TempDir>)> {
        Ok(match self {
            StoreArg::TempSqlite => {
                let dir = tempfile::tempdir().context("a temporary directory for the store")?;
                let file = dir.path().join("store.db").display().to_string();
                (file, Some(dir))
            }
            StoreArg::Memory => ("memory".to_owned(), None),
            StoreArg::Postgres(url) => ((*url).to_owned(), None),
        })
    }
}

impl Serve {
    /// `serve` on a fresh SQLite store of its own.
    async fn start(binary: &Path, coder: &str, extra: &[&str]) -> anyhow::Result<Serve> {
        Serve::start_on(binary, coder, &StoreArg::TempSqlite, extra).await
    }

    /// `serve` with no cap on sessions and no limit on a call's wait, plus `extra`.
    async fn start_on(
        binary: &Path,
        coder: &str,
        store: &StoreArg<'_>,
        extra: &[&str],
    ) -> anyhow::Result<Serve> {
        let mut args = vec![
            "--max-call-wait",
            "0",
            "--max-sessions",
            "100000",
            "--max-sessions-per-token",
            "100000",
        ];
        args.extend_from_slice(extra);
        Serve::spawn(binary, coder, store, &args).await
    }

    /// `serve` with the server's own defaults but for `args` (and the address, the log
    /// level and the store).
    async fn spawn(
        binary: &Path,
        coder: &str,
        store: &StoreArg<'_>,
        args: &[&str],
    ) -> anyhow::Result<Serve> {
        let (store_arg, store_dir) = store.resolve()?;
        let mut child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn,coder_workspace_mcp::http=info",
                "--store",
                &store_arg,
            ])
            .args(args)
            .env("CODER_URL", coder)
            .env_remove("CODER_SESSION_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting serve")?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // What it said before listening, for the error if it never does (a store that
        // cannot be opened is a start-up error).
        let mut said = Vec::new();
        let url = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("serve exited before listening: {}", said.join("\n"))
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            said.push(line);
        };
        let log = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let counts = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                *counts.lock().unwrap().entry(log_key(&line)).or_default() += 1;
            }
        });
        Ok(Serve {
            child,
            url: format!("{url}/mcp"),
            store_dir,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// A server log line without its time and fields: `INFO session opened` for
/// `2026-12-02T10:00:00.000000Z  INFO coder_workspace_mcp::http::mcp: session opened session=… user=…`.
fn log_key(line: &str) -> String {
    let mut words = line.split_whitespace();
    let (Some(_time), Some(level), Some(_target)) = (words.next(), words.next(), words.next())
    else {
        return line.trim().to_owned();
    };
    let message: Vec<&str> = words.take_while(|w| !w.contains('=')).collect();
    format!("{level} {}", message.join(" "))
}

type Client = RunningService<RoleClient, ()>;

async fn http_client(url: &str) -> anyhow::Result<Client> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(TOKEN),
    );
    Ok(().serve(transport).await?)
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> anyhow::Result<Value> {
    let params = CallToolRequestParams::new(tool)
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    let result = client.call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {:?}", result.content);
    }
    result.structured_content.context("no structured content")
}

/// A simulated deployment with `n` templates whose builds take `duration(i)`, and an
/// agent that is ready the moment the build ends (so the figures isolate the build).
async fn deployment(
    n: usize,
    duration: impl Fn(usize) -> Duration,
) -> anyhow::Result<(SimCoder, Vec<String>)> {
    let sim = SimCoder::start().await?;
    sim.add_user("bench", TOKEN);
    let mut ids = Vec::new();
    for i in 0..n {
        let template = sim.add_template(TemplateSpec::named(&format!("tpl-{i}")));
        sim.set_build_plan(
            template.id,
            ready_at_once(Duration::from_millis(10), duration(i)),
        );
        ids.push(template.id.to_string());
    }
    Ok((sim, ids))
}

/// A build queued for `queue_for`, running for `build_for`, whose agent is connected and
/// ready the moment it ends.
fn ready_at_once(queue_for: Duration, build_for: Duration) -> BuildPlan {
    BuildPlan {
        queue_for,
        build_for,
        agent: AgentPlan {
            connect_after: Some(Duration::ZERO),
            scripts_for: Duration::ZERO,
            lifecycle_end: WorkspaceAgentLifecycle::Ready,
            startup_log: vec![],
        },
        ..BuildPlan::default()
    }
}

/// A small deterministic PRNG (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0
    }
}

// ---- 1 & 2: detection latency and requests per create -----------------------------

#[derive(Default, serde::Serialize)]
struct DetectionRun {
    latencies_ms: Vec<f64>,
    requests_per_create: f64,
    /// The same requests by endpoint (ids replaced by `{id}`), per create.
    requests_per_create_by_endpoint: BTreeMap<String, f64>,
}

/// `GET /api/v2/workspaces/{id}/watch-ws`: the request's endpoint, ids folded.
fn endpoint(method: &str, path: &str) -> String {
    let path: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if uuid::Uuid::parse_str(segment).is_ok() {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    format!("{method} {}", path.join("/"))
}

fn count_by_endpoint<'a>(
    requests: impl IntoIterator<Item = &'a RecordedRequest>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts.entry(endpoint(&r.method, &r.path)).or_default() += 1;
    }
    counts
}

async fn detection(binary: &Path, mode: &str, creates: usize) -> anyhow::Result<DetectionRun> {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let durations: Vec<Duration> = (0..creates)
        .map(|_| Duration::from_millis(1000 + (rng.next() * 4000.0) as u64))
        .collect();
    let (sim, templates) = deployment(creates, |i| durations[i]).await?;
    let serve = Serve::start(binary, &sim.url(), &["--watch-mode", mode]).await?;
    sim.clear_requests();
    let mut tasks = Vec::new();
    for template in templates {
        let url = serve.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = http_client(&url).await?;
            let out = call(
                &client,
                "create_workspace",
                json!({ "template_id": template }),
            )
            .await?;
            let received = Utc::now();
            let _ = client.cancel().await;
            anyhow::Ok((out, received))
        }));
    }
    let mut run = DetectionRun::default();
    for task in tasks {
        let (out, received) = task.await??;
        let id: uuid::Uuid = out["workspace_id"].as_str().unwrap_or_default().parse()?;
        let view = sim.view();
        let ws = view.workspace(id).context("workspace")?;
        let completed = view
            .job_completed_at(ws.latest_build.id)
            .context("completed_at")?;
        run.latencies_ms
            .push((received - completed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    let requests = sim.requests();
    run.requests_per_create = requests.len() as f64 / creates as f64;
    run.requests_per_create_by_endpoint = count_by_endpoint(&requests)
        .into_iter()
        .map(|(k, n)| (k, n as f64 / creates as f64))
        .collect();
    run.latencies_ms.sort_by(f64::total_cmp);
    sim.shutdown().await;
    Ok(run)
}

#[derive(Default, serde::Serialize)]
struct WaitingRequests {
    build_seconds: f64,
    /// Every request (the create's POST aside) between the create and the build's end.
    total: usize,
    /// The most requests in any 60-second window of the wait.
    busiest_minute: usize,
    per_minute: f64,
    by_endpoint: BTreeMap<String, usize>,
}

/// The requests made to Coder while one build lasting `wait` runs.
async fn requests_while_waiting(
    binary: &Path,
    mode: &str,
    wait: Duration,
) -> anyhow::Result<WaitingRequests> {
    let (sim, templates) = deployment(1, |_| wait).await?;
    let serve = Serve::start(binary, &sim.url(), &["--watch-mode", mode]).await?;
    let client = http_client(&serve.url).await?;
    let out = call(
        &client,
        "create_workspace",
        json!({ "template_id": templates[0] }),
    )
    .await?;
    let id: uuid::Uuid = out["workspace_id"].as_str().unwrap_or_default().parse()?;
    let view = sim.view();
    let ws = view.workspace(id).context("workspace")?;
    let created = ws.created_at;
    let completed = view
        .job_completed_at(ws.latest_build.id)
        .context("completed_at")?;
    let during: Vec<&RecordedRequest> = view
        .requests()
        .iter()
        .filter(|r| r.at > created && r.at <= completed && r.method != "POST")
        .collect();
    let minute = chrono::Duration::seconds(60);
    let busiest_minute = (0..during.len())
        .map(|i| {
            during[i..]
                .iter()
                .take_while(|r| r.at - during[i].at < minute)
                .count()
        })
        .max()
        .unwrap_or(0);
    let build_seconds = (completed - created).num_milliseconds() as f64 / 1000.0;
    let run = WaitingRequests {
        build_seconds,
        total: during.len(),
        busiest_minute,
        per_minute: during.len() as f64 / (build_seconds / 60.0),
        by_endpoint: count_by_endpoint(during.iter().copied()),
    };
    let _ = client.cancel().await;
    drop(serve);
    sim.shutdown().await;
    Ok(run)
}

// ---- prebuilt workspaces: a claim against a full build --------------------------------

/// Time to ready (the `create_workspace` call, start to result, with `--max-call-wait 0`)
/// of a create that claims a prebuilt workspace against a full build of the same
/// template, in the same run: `runs` pairs, each pair's two calls at once, each in an MCP
/// session of its own. The simulated template builds like the demo's (about 1 s queued,
/// 5 s building, the agent after 1 s, 1 s of startup scripts; a claim's start build about
/// 0.2 s queued, 1 s building, the agent back after 0.3 s, 0.3 s of scripts). The claims use
/// the template's default preset; the full builds give a value of their own, so they are
/// built without it. `--only prebuild`; prints, writes nothing.
async fn prebuild_section(binary: &Path, quick: bool) -> anyhow::Result<()> {
    use coder_api::{TemplateVersionParameter, TemplateVersionParameterOption};
    let runs: usize = if quick { 3 } else { 8 };
    let sim = SimCoder::start().await?;
    sim.add_user("bench", TOKEN);
    let option = |value: &str| TemplateVersionParameterOption {
        name: value.to_owned(),
        value: value.to_owned(),
        ..Default::default()
    };
    let template = sim.add_template(TemplateSpec::named("docker").with_parameters(vec![
        TemplateVersionParameter {
            name: "size".into(),
            kind: "string".into(),
            default_value: "small".into(),
            options: vec![option("small"), option("large")],
            ..Default::default()
        },
    ]));
    sim.set_build_plan(template.id, BuildPlan::demo());
    sim.set_claim_plan(template.id, BuildPlan::demo_claim());
    sim.set_presets(
        template.id,
        vec![
            coder_workspace_sim::PresetSpec::named("warm")
                .with("size", "small")
                .default_preset()
                .prebuilds(runs as i64),
        ],
    );
    let serve = Serve::start(binary, &sim.url(), &[]).await?;
    let id = template.id.to_string();
    // One call in a session of its own; its time to ready in ms, and whether it claimed.
    let timed = |arguments: Value| {
        let url = serve.url.clone();
        async move {
            let client = http_client(&url).await?;
            let started = Instant::now();
            let out = call(&client, "create_workspace", arguments).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let _ = client.cancel().await;
            anyhow::Ok((ms, out["prebuilt"] == json!(true)))
        }
    };
    let (mut claims, mut builds) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (claim, build) = tokio::join!(
            timed(json!({ "template_id": id, "name": format!("claim-{i}"), "preset": "warm" })),
            timed(
                json!({ "template_id": id, "name": format!("build-{i}"), "parameters": { "size": "large" } })
            ),
        );
        let ((claim_ms, claimed), (build_ms, built_prebuilt)) = (claim?, build?);
        if !claimed || built_prebuilt {
            bail!(
                "pair {i}: the claim did not claim ({claimed}) or the full build did ({built_prebuilt})"
            );
        }
        claims.push(claim_ms);
        builds.push(build_ms);
    }
    claims.sort_by(f64::total_cmp);
    builds.sort_by(f64::total_cmp);
    let (claim_p50, build_p50) = (percentile(&claims, 50.0), percentile(&builds, 50.0));
    println!(
        "prebuild: {runs} pairs; time to ready, claimed prebuilt workspace p50={claim_p50:.0} ms (min {:.0}, max {:.0}), full build p50={build_p50:.0} ms (min {:.0}, max {:.0}); full / claimed = {:.1}x",
        claims[0],
        claims[claims.len() - 1],
        builds[0],
        builds[builds.len() - 1],
        build_p50 / claim_p50
    );
    drop(serve);
    sim.shutdown().await;
    Ok(())
}

// ---- 3: MCP overhead ---------------------------------------------------------------

#[derive(serde::Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    /// One call at a time: 1 / mean latency.
    sequential_per_second: f64,
    /// `concurrency` calls in flight at once.
    concurrent_per_second: f64,
}

#[derive(Default, serde::Serialize)]
struct Overhead {
    transports: BTreeMap<String, Latency>,
    /// Per transport, the p50 ratio to the direct GET in each interleaved round.
    round_ratios: BTreeMap<String, Vec<f64>>,
    concurrency: usize,
}

impl Overhead {
    fn ratio(&self, name: &str) -> Option<f64> {
        let direct = self.transports.get(DIRECT)?.p50_ms;
        Some(self.transports.get(name)?.p50_ms / direct)
    }
}

const DIRECT: &str = "direct GET";
const ROUNDS: usize = 5;
const IN_FLIGHT: usize = 16;

/// One way of fetching the template list: the baseline GET, or an MCP client's call;
/// or, to split the overhead, an MCP round trip that does not reach Coder (`tools/list`).
enum Target<'a> {
    Direct { http: reqwest::Client, url: String },
    Mcp(&'a Client),
    McpToolsList(&'a Client),
}

impl Target<'_> {
    async fn once(&self) -> anyhow::Result<()> {
        match self {
            Target::Direct { http, url } => {
                http.get(url)
                    .header("Coder-Session-Token", SimCoder::DEMO_TOKEN)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
            }
            Target::Mcp(client) => {
                call(client, "list_templates", json!({})).await?;
            }
            Target::McpToolsList(client) => {
                client.list_tools(Default::default()).await?;
            }
        }
        Ok(())
    }

    async fn timed(&self, calls: usize, samples: &mut Vec<f64>) -> anyhow::Result<()> {
        for _ in 0..calls {
            let t = Instant::now();
            self.once().await?;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    }

    /// Calls per second with `IN_FLIGHT` calls at a time.
    async fn throughput(&self, calls: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let workers = (0..IN_FLIGHT).map(|_| async {
            for _ in 0..calls / IN_FLIGHT {
                self.once().await?;
            }
            anyhow::Ok(())
        });
        for result in futures::future::join_all(workers).await {
            result?;
        }
        Ok((calls / IN_FLIGHT * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64())
    }
}

async fn overhead(binary: &Path, calls: usize) -> anyhow::Result<Overhead> {
    // Here Coder is a process of its own (`coder-workspace-mcp sim`), as a real one would
    // be, so the simulator does not compete with the clients for this process's threads.
    let sim = ExternalSim::start(binary).await?;
    let token = SimCoder::DEMO_TOKEN;

    let (store, _store_dir) = StoreArg::TempSqlite.resolve()?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("stdio")
        .arg("--log-level")
        .arg("warn")
        .arg("--store")
        .arg(&store)
        .env("CODER_URL", &sim.url)
        .env("CODER_SESSION_TOKEN", token);
    let stdio = ().serve(rmcp::transport::TokioChildProcess::new(command)?).await?;
    let serve = Serve::start(binary, &sim.url, &[]).await?;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(serve.url.as_str()).auth_header(token),
    );
    let http_mcp = ().serve(transport).await?;
    let targets = [
        (
            DIRECT,
            Target::Direct {
                http: reqwest::Client::new(),
                url: format!("{}/api/v2/templates", sim.url),
            },
        ),
        ("stdio", Target::Mcp(&stdio)),
        ("stream-http", Target::Mcp(&http_mcp)),
        ("stdio tools/list", Target::McpToolsList(&stdio)),
        ("stream-http tools/list", Target::McpToolsList(&http_mcp)),
    ];

    for (_, target) in &targets {
        for _ in 0..20 {
            target.once().await?;
        }
    }
    // Interleaved rounds, so a noisy neighbour on a shared machine hits every transport
    // alike instead of whichever happened to run during it.
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut round_ratios: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        let mut p50 = BTreeMap::new();
        for (name, target) in &targets {
            let mut round = Vec::new();
            target.timed(calls / ROUNDS, &mut round).await?;
            round.sort_by(f64::total_cmp);
            p50.insert(*name, percentile(&round, 50.0));
            samples.entry(name).or_default().extend(round);
        }
        for (name, _) in &targets[1..] {
            round_ratios
                .entry(name.to_string())
                .or_default()
                .push(p50[name] / p50[DIRECT]);
        }
    }
    let mut result = Overhead {
        round_ratios,
        concurrency: IN_FLIGHT,
        ..Default::default()
    };
    for (name, target) in &targets {
        let mut all = samples.remove(name).unwrap_or_default();
        all.sort_by(f64::total_cmp);
        let mean = all.iter().sum::<f64>() / all.len().max(1) as f64;
        result.transports.insert(
            name.to_string(),
            Latency {
                p50_ms: percentile(&all, 50.0),
                p99_ms: percentile(&all, 99.0),
                sequential_per_second: 1000.0 / mean,
                concurrent_per_second: target.throughput(calls).await?,
            },
        );
    }
    drop(targets);
    let _ = stdio.cancel().await;
    let _ = http_mcp.cancel().await;
    drop(serve);
    Ok(result)
}

/// `coder-workspace-mcp sim` in a process of its own.
struct ExternalSim {
    _child: tokio::process::Child,
    url: String,
}

impl ExternalSim {
    async fn start(binary: &Path) -> anyhow::Result<ExternalSim> {
        let mut child = tokio::process::Command::new(binary)
            .args(["sim", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("the simulator exited early")
            };
            if let Some(rest) = line.split("Simulated Coder listening on ").nth(1) {
                break rest.trim().to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ExternalSim { _child: child, url })
    }
}

// ---- 3b: the MCP layer over stdio ---------------------------------------------------

/// The cost of the MCP layer itself: one raw JSON-RPC client (a line written, a line read,
/// blocking, on a thread of its own: nothing of rmcp on the client's side), against our
/// server and against rmcp's own minimal server, with a raw HTTP/1.1 GET of the template
/// list as the baseline of what `list_templates` wraps. All p50s in µs, the median over
/// interleaved rounds.
///
/// Every process of the measurement (this client, the servers, the simulated Coder) runs
/// on one CPU. Left to the scheduler, a hop between two processes costs a few µs when both
/// are on one core and 35–40 µs more when the woken one sits on the other, idle, core (on
/// this kind of virtual machine, waking an idle vCPU is that slow), and where the scheduler
/// puts three processes on two cores changes from run to run: the same `ping` measured 10
/// or 87 µs, the same GET 20 or 90 µs. On one CPU every hop is the same kind, so the
/// differences are the software's.
#[derive(Default, serde::Serialize)]
struct McpLayer {
    /// The CPU every process ran on.
    cpu: usize,
    rounds: usize,
    calls_per_round: usize,
    /// rmcp's minimal server (a `ServerHandler` with nothing in it) over `rmcp::transport::stdio`.
    minimal_ping_us: f64,
    ping_us: f64,
    tools_list_us: f64,
    tools_list_bytes: usize,
    list_templates_us: f64,
    /// The GET `list_templates` wraps, made as the server makes it (reqwest, from a tokio
    /// runtime, so with its hand-off to the connection's task).
    direct_get_us: f64,
    /// The same GET over a raw HTTP/1.1 connection, the floor of the request itself.
    raw_get_us: f64,
    /// The same server on a multi-threaded runtime (`stdio --runtime multi-thread`), as
    /// it was served before: the baseline of serving stdio on one thread.
    multi_thread_ping_us: f64,
    multi_thread_list_templates_us: f64,
    /// `tools/list` − `ping`: what the tool list costs beyond a round trip.
    tools_list_over_ping_us: f64,
    /// `list_templates` − (`ping` + direct GET): the MCP layer's cost of a tool call.
    list_templates_over_ping_and_get_us: f64,
}

/// The argument that makes the bench binary serve as rmcp's minimal server.
const MINIMAL_SERVER_ARG: &str = "--serve-minimal-rmcp-server";

/// rmcp's minimal server on stdio, the baseline of a bare MCP round trip.
async fn serve_minimal_rmcp() -> anyhow::Result<()> {
    #[derive(Clone)]
    struct Minimal;
    impl rmcp::ServerHandler for Minimal {}
    Minimal
        .serve(rmcp::transport::stdio())
        .await?
        .waiting()
        .await?;
    Ok(())
}

/// A JSON-RPC client over a child's stdin and stdout, a blocking line at a time.
struct RawStdio {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
    line: String,
    next_id: u64,
}

impl RawStdio {
    fn spawn(mut command: std::process::Command) -> anyhow::Result<RawStdio> {
        use std::io::Write as _;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut client = RawStdio {
            input: child.stdin.take().unwrap(),
            output: std::io::BufReader::new(child.stdout.take().unwrap()),
            child,
            line: String::new(),
            next_id: 0,
        };
        client.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw-bench", "version": "0"}}),
        )?;
        writeln!(
            client.input,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )?;
        client.input.flush()?;
        Ok(client)
    }

    /// One request, its answer's length; fails on a JSON-RPC error or a tool error.
    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<usize> {
        use std::io::{BufRead as _, Write as _};
        self.next_id += 1;
        let request =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let mut bytes = serde_json::to_vec(&request)?;
        bytes.push(b'\n');
        self.input.write_all(&bytes)?;
        self.input.flush()?;
        self.line.clear();
        if self.output.read_line(&mut self.line)? == 0 {
            bail!("the server closed stdout");
        }
        // A cheap check (the client's parse is not what is measured): a result for this id
        // (serde writes the members in this order).
        let start = format!(r#"{{"jsonrpc":"2.0","id":{},"result":"#, self.next_id);
        if !self.line.starts_with(&start) || self.line.contains(r#""isError":true"#) {
            bail!("{method}: unexpected answer {}", self.line.trim_end());
        }
        Ok(self.line.len())
    }
}

impl Drop for RawStdio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 keep-alive GET, the smallest client there is.
struct RawGet {
    stream: std::io::BufReader<std::net::TcpStream>,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl RawGet {
    fn connect(base: &str, path: &str) -> anyhow::Result<RawGet> {
        let authority = base.trim_start_matches("http://").trim_end_matches('/');
        let stream = std::net::TcpStream::connect(authority)?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nCoder-Session-Token: {}\r\n\r\n",
            SimCoder::DEMO_TOKEN
        )
        .into_bytes();
        Ok(RawGet {
            stream: std::io::BufReader::new(stream),
            request,
            body: Vec::new(),
        })
    }

    fn get(&mut self) -> anyhow::Result<usize> {
        use std::io::{BufRead as _, Read as _, Write as _};
        self.stream.get_mut().write_all(&self.request)?;
        let mut length = None;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                bail!("the connection closed");
            }
            if first {
                if !line.starts_with("HTTP/1.1 200") {
                    bail!("GET: {}", line.trim_end());
                }
                first = false;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let length = length.context("the answer has no Content-Length")?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body)?;
        Ok(length)
    }
}

/// The first CPU this process may run on.
fn first_allowed_cpu() -> anyhow::Result<usize> {
    // SAFETY: cpu_set_t is plain data; the kernel fills at most size_of::<cpu_set_t>() bytes.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(std::io::Error::last_os_error().into());
    }
    (0..libc::CPU_SETSIZE as usize)
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .context("no CPU is allowed")
}

/// Keeps the calling thread on `cpu`, and every process it starts from now on (a child
/// inherits the mask of the thread that starts it).
fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: as above; pid 0 is the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Runs on a thread of its own (it blocks), which it pins with everything it starts. The
/// simulator's stderr is drained by a task of this thread's runtime, which runs only while
/// the direct GET is measured: it logs at `warn`, next to nothing.
fn mcp_layer(binary: &Path, calls: usize) -> anyhow::Result<McpLayer> {
    let cpu = first_allowed_cpu()?;
    pin_this_thread(cpu)?;
    // The server's own kind of client, on a runtime of its own (this thread blocks); the
    // simulated Coder is started from here, so it shares the CPU.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sim = runtime.block_on(ExternalSim::start(binary))?;
    let sim_url = sim.url.as_str();
    let (store, _store_dir) = StoreArg::TempSqlite.resolve()?;
    let mut ours = std::process::Command::new(binary);
    ours.args(["stdio", "--log-level", "warn", "--store"])
        .arg(&store)
        .env("CODER_URL", sim_url)
        .env("CODER_SESSION_TOKEN", SimCoder::DEMO_TOKEN);
    let mut multi = std::process::Command::new(binary);
    multi
        .args([
            "stdio",
            "--log-level",
            "warn",
            "--runtime",
            "multi-thread",
            "--store",
        ])
        .arg(&store)
        .env("CODER_URL", sim_url)
        .env("CODER_SESSION_TOKEN", SimCoder::DEMO_TOKEN);
    let mut ours = RawStdio::spawn(ours)?;
    let mut multi = RawStdio::spawn(multi)?;
    let mut minimal = std::process::Command::new(std::env::current_exe()?);
    minimal.arg(MINIMAL_SERVER_ARG);
    let mut minimal = RawStdio::spawn(minimal)?;
    let mut raw_get = RawGet::connect(sim_url, "/api/v2/templates")?;
    let direct = Target::Direct {
        http: reqwest::Client::new(),
        url: format!("{sim_url}/api/v2/templates"),
    };
    let list_templates = json!({"name": "list_templates", "arguments": {}});

    const RAW_GET: &str = "raw GET";
    const TARGETS: [&str; 8] = [
        "minimal ping",
        "ping",
        "tools/list",
        "list_templates",
        "multi-thread ping",
        "multi-thread list_templates",
        DIRECT,
        RAW_GET,
    ];
    let mut once = |target: &str| -> anyhow::Result<usize> {
        match target {
            "minimal ping" => minimal.request("ping", json!({})),
            "ping" => ours.request("ping", json!({})),
            "tools/list" => ours.request("tools/list", json!({})),
            "list_templates" => ours.request("tools/call", list_templates.clone()),
            "multi-thread ping" => multi.request("ping", json!({})),
            "multi-thread list_templates" => multi.request("tools/call", list_templates.clone()),
            RAW_GET => raw_get.get(),
            _ => runtime.block_on(direct.once()).map(|()| 0),
        }
    };
    let mut tools_list_bytes = 0;
    for target in TARGETS {
        for _ in 0..50 {
            let bytes = once(target)?;
            if target == "tools/list" {
                tools_list_bytes = bytes;
            }
        }
    }
    let rounds = ROUNDS * 2;
    let per_round = (calls / ROUNDS).max(50);
    let mut p50s: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut samples = Vec::with_capacity(per_round);
    for _ in 0..rounds {
        for target in TARGETS {
            samples.clear();
            for _ in 0..per_round {
                let started = Instant::now();
                once(target)?;
                samples.push(started.elapsed().as_secs_f64() * 1e6);
            }
            samples.sort_by(f64::total_cmp);
            p50s.entry(target)
                .or_default()
                .push(percentile(&samples, 50.0));
        }
    }
    let median = |target: &str| {
        let mut values = p50s.get(target).cloned().unwrap_or_default();
        values.sort_by(f64::total_cmp);
        percentile(&values, 50.0)
    };
    let ping = median("ping");
    Ok(McpLayer {
        cpu,
        rounds,
        calls_per_round: per_round,
        minimal_ping_us: median("minimal ping"),
        ping_us: ping,
        tools_list_us: median("tools/list"),
        tools_list_bytes,
        list_templates_us: median("list_templates"),
        direct_get_us: median(DIRECT),
        raw_get_us: median(RAW_GET),
        multi_thread_ping_us: median("multi-thread ping"),
        multi_thread_list_templates_us: median("multi-thread list_templates"),
        tools_list_over_ping_us: median("tools/list") - ping,
        list_templates_over_ping_and_get_us: median("list_templates") - ping - median(DIRECT),
    })
}

// ---- 4: scale ----------------------------------------------------------------------

#[derive(Default, serde::Serialize)]
struct Scale {
    /// Baseline: RSS per MCP session that is merely initialized (rmcp's own cost, no call).
    kib_per_idle_session: f64,
    /// "stream" (ours) and "polling" (the 2 s polling baseline).
    runs: BTreeMap<String, ScaleRun>,
}

#[derive(Default, serde::Serialize)]
struct ScaleRun {
    sessions: usize,
    workspaces: usize,
    errors: usize,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    /// RSS while every session waits, minus the idle RSS, per session.
    kib_per_session: f64,
    cpu_seconds: f64,
    /// Requests the simulated Coder received during the run.
    coder_requests: usize,
    peak_fds: usize,
    wall_seconds: f64,
}

fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn scale(
    binary: &Path,
    sessions: usize,
    quick: bool,
    mode: &str,
) -> anyhow::Result<ScaleRun> {
    let mut rng = Rng(0xD1B54A32D192ED03);
    let (lo, hi) = if quick {
        (5_000.0, 15_000.0)
    } else {
        (10_000.0, 60_000.0)
    };
    let durations: Vec<Duration> = (0..sessions)
        .map(|_| Duration::from_millis((lo + rng.next() * (hi - lo)) as u64))
        .collect();
    // One template per distinct duration would be many templates; plans are per template.
    let (sim, templates) = deployment(sessions, |i| durations[i]).await?;
    let serve = Serve::start(binary, &sim.url(), &["--watch-mode", mode]).await?;
    let pid = serve.pid();
    // Warm up one session so the idle figure includes the runtime's fixed costs.
    let warm = http_client(&serve.url).await?;
    call(&warm, "list_templates", json!({})).await?;
    let idle_rss = proc_rss_kib(pid);
    let cpu_before = proc_cpu_seconds(pid);
    sim.clear_requests();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for template in templates {
        let url = serve.url.clone();
        tasks.push(tokio::spawn(async move {
            let client = http_client(&url).await?;
            let out = call(
                &client,
                "create_workspace",
                json!({ "template_id": template }),
            )
            .await;
            let _ = client.cancel().await;
            out
        }));
    }
    // Samples the server's memory and descriptors until it exits.
    let sampler = tokio::spawn(async move {
        let (mut peak_rss, mut peak_fds) = (0u64, 0usize);
        loop {
            let rss = proc_rss_kib(pid);
            if rss == 0 {
                break;
            }
            peak_rss = peak_rss.max(rss);
            peak_fds = peak_fds.max(proc_fds(pid));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (peak_rss, peak_fds)
    });
    let mut result = ScaleRun {
        sessions,
        idle_rss_kib: idle_rss,
        ..Default::default()
    };
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        match task.await? {
            Ok(out) if out["created"] == true => {
                ids.insert(out["workspace_id"].as_str().unwrap_or_default().to_owned());
            }
            Ok(out) => {
                eprintln!("unexpected result: {out}");
                result.errors += 1;
            }
            Err(err) => {
                eprintln!("session failed: {err:#}");
                result.errors += 1;
            }
        }
    }
    result.wall_seconds = started.elapsed().as_secs_f64();
    result.cpu_seconds = proc_cpu_seconds(pid) - cpu_before;
    result.workspaces = sim.workspaces().len();
    result.coder_requests = sim.requests().len();
    if ids.len() != sessions - result.errors {
        result.errors += sessions - result.errors - ids.len();
    }
    let _ = warm.cancel().await;
    drop(serve);
    let (peak_rss, peak_fds) = sampler.await?;
    result.peak_rss_kib = peak_rss;
    result.peak_fds = peak_fds;
    result.kib_per_session = peak_rss.saturating_sub(idle_rss) as f64 / sessions as f64;
    sim.shutdown().await;
    Ok(result)
}

/// RSS per initialized but idle Streamable HTTP session, in a server of its own: what
/// rmcp's session machinery costs before any tool runs (the floor under the figure above).
async fn idle_session_cost(binary: &Path, sessions: usize) -> anyhow::Result<f64> {
    let (sim, _) = deployment(1, |_| Duration::from_secs(1)).await?;
    let serve = Serve::start(binary, &sim.url(), &[]).await?;
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<String>| {
        let mut request = http
            .post(&serve.url)
            .bearer_auth(TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(id) = session {
            request = request
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18");
        }
        async move {
            let response = request.send().await?;
            let id = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            response.bytes().await?;
            anyhow::Ok(id)
        }
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let open = || async {
        let id = post(initialize.clone(), None)
            .await?
            .context("no session id")?;
        post(initialized.clone(), Some(id)).await?;
        anyhow::Ok(())
    };
    open().await?;
    let before = proc_rss_kib(serve.pid());
    for _ in 0..sessions {
        open().await?;
    }
    let after = proc_rss_kib(serve.pid());
    drop(serve);
    sim.shutdown().await;
    Ok(after.saturating_sub(before) as f64 / sessions as f64)
}

// ---- 5: cold start -----------------------------------------------------------------

#[derive(Default, serde::Serialize)]
struct ColdStart {
    /// Starts on an SQLite store that exists already (every start after a user's first).
    p50_ms: f64,
    min_ms: f64,
    /// Starts on a new store file, which the server creates and migrates first (a user's
    /// first start).
    new_store_p50_ms: f64,
    /// Baseline: the same binary's `--version` (exec, argument parsing, exit; no runtime,
    /// no Coder, no store), the floor any start pays.
    floor_p50_ms: f64,
    binary_bytes: u64,
}

async fn cold_start(binary: &Path, runs: usize) -> anyhow::Result<ColdStart> {
    let (sim, _) = deployment(1, |_| Duration::from_secs(1)).await?;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}});
    let start = |store: String| {
        let (url, initialize) = (sim.url(), initialize.clone());
        async move {
            let started = Instant::now();
            let mut child = tokio::process::Command::new(binary)
                .args(["stdio", "--log-level", "warn", "--store", &store])
                .env("CODER_URL", url)
                .env("CODER_SESSION_TOKEN", TOKEN)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(format!("{initialize}\n").as_bytes())
                .await?;
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let line = lines.next_line().await?.context("no answer")?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if !line.contains("\"serverInfo\"") {
                bail!("unexpected initialize answer: {line}");
            }
            drop(stdin);
            let _ = child.wait().await;
            anyhow::Ok(elapsed)
        }
    };
    // The existing store: made and migrated by a first start that is not measured.
    let (existing, _existing_dir) = StoreArg::TempSqlite.resolve()?;
    start(existing.clone()).await?;
    let (mut samples, mut new_store) = (Vec::new(), Vec::new());
    // Alternating, so both kinds of start see the same machine.
    for _ in 0..runs {
        samples.push(start(existing.clone()).await?);
        let (fresh, _fresh_dir) = StoreArg::TempSqlite.resolve()?;
        new_store.push(start(fresh).await?);
    }
    new_store.sort_by(f64::total_cmp);
    samples.sort_by(f64::total_cmp);
    sim.shutdown().await;
    let mut floor = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = tokio::process::Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await?;
        floor.push(started.elapsed().as_secs_f64() * 1000.0);
        if !output.status.success() {
            bail!("--version failed");
        }
    }
    floor.sort_by(f64::total_cmp);
    Ok(ColdStart {
        p50_ms: percentile(&samples, 50.0),
        min_ms: samples.first().copied().unwrap_or(0.0),
        new_store_p50_ms: percentile(&new_store, 50.0),
        floor_p50_ms: percentile(&floor, 50.0),
        binary_bytes: std::fs::metadata(binary)?.len(),
    })
}

// ---- 6: the store ------------------------------------------------------------------

#[derive(Default, serde::Serialize)]
struct StoreBench {
    /// The PostgreSQL server measured (none when its rows were skipped).
    postgres: Option<PgInfo>,
    /// Why the PostgreSQL rows were skipped, if they were.
    postgres_skipped: Option<String>,
    /// 6a, per store (`memory`, `sqlite`, `postgres`): sequential `create_workspace` round
    /// trips of instant builds, each in a session of its own under a name of its own.
    creates: BTreeMap<String, CreateLatency>,
    /// Per store but memory: its p50 divided by memory's, in each interleaved round.
    round_ratios: BTreeMap<String, Vec<f64>>,
    /// 6a's builds in the simulator, from the workspace's creation to its build's end,
    /// p50: the part of every round trip that is Coder's (simulated) build, whatever the
    /// store (a zero-length build still steps through its log on tokio's 1 ms timer).
    instant_build_p50_ms: f64,
    /// 6b, per number of clients in flight and configuration ([`MEM1`], [`PG1`],
    /// [`PG2`]; keyed by [`throughput_key`]): creates per second.
    throughput: BTreeMap<String, Throughput>,
    /// The numbers of clients with a call in flight at once (6b).
    clients: Vec<usize>,
}

#[derive(Clone, serde::Serialize)]
struct PgInfo {
    /// Who runs it: a private server the bench started, or `CODER_MCP_TEST_POSTGRES`'s.
    source: String,
    version: String,
    fsync: String,
    synchronous_commit: String,
}

#[derive(Default, serde::Serialize)]
struct CreateLatency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// This p50 minus the memory store's.
    p50_added_ms: f64,
    /// This p50 divided by the memory store's.
    p50_ratio: f64,
    /// Every round trip, sorted.
    samples_ms: Vec<f64>,
}

#[derive(Default, serde::Serialize)]
struct Throughput {
    store: String,
    replicas: usize,
    clients: usize,
    /// Creates over all rounds.
    creates: usize,
    seconds: f64,
    creates_per_second: f64,
    /// Creates per second in each interleaved round.
    round_per_second: Vec<f64>,
    /// Creates sent to each replica.
    per_replica: Vec<usize>,
    /// Calls that failed, or answered without creating the workspace they named.
    errors: usize,
    /// Distinct names requested, and how many of them Coder has exactly one workspace of.
    names: usize,
    names_with_one_workspace: usize,
    /// The calls' round trips under this load.
    p50_ms: f64,
    p99_ms: f64,
}

const MEM1: &str = "memory, 1 replica";
const PG1: &str = "PostgreSQL, 1 replica";
const PG2: &str = "PostgreSQL, 2 replicas";
/// Interleaved rounds of the sequential creates (6a) and of the concurrent ones (6b).
const STORE_ROUNDS: usize = 5;
const THROUGHPUT_ROUNDS: usize = 3;
/// Clients with a call in flight at once (6b). Two loads, so that a limit inside the
/// server (its PostgreSQL connection pool, a cap on critical sections at once) shows as
/// the difference between them rather than going unseen.
const CLIENT_LEVELS: [usize; 2] = [16, 8];

fn throughput_key(clients: usize, label: &str) -> String {
    format!("{clients} clients: {label}")
}

/// PostgreSQL for the section, from the tests' harness, with what it is running.
struct BenchPostgres {
    url: String,
    info: PgInfo,
    /// A private server, stopped when dropped.
    _server: Option<postgres::PgServer>,
}

/// PostgreSQL, or why there is none (then its rows are skipped, unless the environment
/// requires PostgreSQL as CI does with `CODER_MCP_REQUIRE_POSTGRES=1`).
async fn postgres_for_bench() -> Result<BenchPostgres, String> {
    // The harness is test code and panics when a PostgreSQL tool fails; in a task of its
    // own that panic becomes the reason the rows are skipped instead of ending the run.
    let found = tokio::spawn(postgres::database())
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "PostgreSQL could not be started".into()),
            Err(e) => e.to_string(),
        })?;
    let Some((url, server)) = found else {
        return Err(
            "PostgreSQL is not installed (no initdb and pg_ctl on PATH or under /usr/lib/postgresql)"
                .into(),
        );
    };
    let source = if server.is_some() {
        "a private server started by the bench (tests/common/postgres.rs), on loopback"
    } else {
        "the server CODER_MCP_TEST_POSTGRES names"
    };
    let info = pg_info(&url, source)
        .await
        .map_err(|e| format!("PostgreSQL does not answer: {e}"))?;
    Ok(BenchPostgres {
        url,
        info,
        _server: server,
    })
}

/// The server's version and durability settings, reported with its figures (the tests'
/// private server runs with `fsync=off`, which no production database would).
async fn pg_info(url: &str, source: &str) -> Result<PgInfo, sqlx::Error> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut settings = Vec::new();
    for name in ["server_version", "fsync", "synchronous_commit"] {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        settings.push(value);
    }
    conn.close().await?;
    let [version, fsync, synchronous_commit] = <[String; 3]>::try_from(settings)
        .map_err(|_| sqlx::Error::Protocol("three settings".into()))?;
    Ok(PgInfo {
        source: source.to_owned(),
        version,
        fsync,
        synchronous_commit,
    })
}

/// One `create_workspace` of a new workspace `name` in a session of its own (a session
/// already bound to a workspace would be answered with that one): its round trip, in ms.
async fn create_in_new_session(url: &str, template: &str, name: &str) -> anyhow::Result<f64> {
    let client = http_client(url).await?;
    let started = Instant::now();
    let out = call(
        &client,
        "create_workspace",
        json!({ "template_id": template, "name": name }),
    )
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Ending the session is a store write too (the server forgets the session's key).
    // rmcp waits for the DELETE and the server answers it after forgetting, so this,
    // outside the clock, never overlaps the next measured call.
    let _ = client.cancel().await;
    let out = out?;
    if out["created"] != true || out["workspace_name"] != name {
        bail!("{name} was not created: {out}");
    }
    Ok(ms)
}

/// What one round of concurrent creates did.
struct ConcurrentRound {
    seconds: f64,
    latencies_ms: Vec<f64>,
    errors: usize,
    per_replica: Vec<usize>,
    /// Of the names requested, how many Coder then has exactly one workspace of.
    names_with_one_workspace: usize,
}

/// Creates the workspaces `names` with `clients` clients at once, client `c` sending
/// every `clients`th name to replica `c % replicas`, so each replica gets its share.
/// Each create has a session of its own, opened before the clock starts and closed after
/// it stops: the clock sees `create_workspace` calls only.
async fn concurrent_creates(
    serves: &[&Serve],
    template: &str,
    names: &[String],
    clients: usize,
) -> anyhow::Result<ConcurrentRound> {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut per_replica = vec![0; serves.len()];
    let mut workers = Vec::new();
    for c in 0..clients {
        let replica = c % serves.len();
        let mine: Vec<String> = names.iter().skip(c).step_by(clients).cloned().collect();
        per_replica[replica] += mine.len();
        let url = serves[replica].url.clone();
        let (barrier, template) = (barrier.clone(), template.to_owned());
        workers.push(tokio::spawn(async move {
            let mut sessions = Vec::with_capacity(mine.len());
            let mut opened = Ok(());
            for _ in &mine {
                match http_client(&url).await {
                    Ok(client) => sessions.push(client),
                    Err(err) => {
                        opened = Err(err);
                        break;
                    }
                }
            }
            // Reached even when a session could not be opened, so nobody waits forever.
            barrier.wait().await;
            opened?;
            let mut outcomes = Vec::with_capacity(mine.len());
            for (client, name) in sessions.iter().zip(&mine) {
                let started = Instant::now();
                let out = call(
                    client,
                    "create_workspace",
                    json!({ "template_id": template, "name": name }),
                )
                .await;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                outcomes.push(match out {
                    Ok(out) if out["created"] == true && out["workspace_name"] == name.as_str() => {
                        Ok(ms)
                    }
                    Ok(out) => Err(format!("{name}: not created: {out}")),
                    Err(err) => Err(format!("{name}: {err:#}")),
                });
            }
            anyhow::Ok((sessions, outcomes))
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut finished = Vec::with_capacity(workers.len());
    for worker in workers {
        finished.push(worker.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut round = ConcurrentRound {
        seconds,
        latencies_ms: Vec::new(),
        errors: 0,
        per_replica,
        names_with_one_workspace: 0,
    };
    let mut sessions = Vec::new();
    for worker in finished {
        let (clients, outcomes) = worker?;
        sessions.extend(clients);
        for outcome in outcomes {
            match outcome {
                Ok(ms) => round.latencies_ms.push(ms),
                Err(err) => {
                    if round.errors < 3 {
                        let short: String = err.chars().take(300).collect();
                        eprintln!("store: create failed: {short}");
                    }
                    round.errors += 1;
                }
            }
        }
    }
    futures::future::join_all(sessions.into_iter().map(|s| s.cancel())).await;
    Ok(round)
}

/// A simulated Coder with one template whose builds are instant: no queue, no build, the
/// agent ready at once. A create's round trip is then the server's own work and Coder's
/// answers, the same for every store, plus the store's.
async fn instant_sim() -> anyhow::Result<(SimCoder, String)> {
    let sim = SimCoder::start().await?;
    sim.add_user("bench", TOKEN);
    let template = sim.add_template(TemplateSpec::named("instant"));
    sim.set_build_plan(template.id, ready_at_once(Duration::ZERO, Duration::ZERO));
    Ok((sim, template.id.to_string()))
}

/// One run of 6b: `replicas` servers on `store` creating `names` with `clients` clients at
/// once. Each run has a simulated Coder and servers of its own: the simulator's work per
/// state change grows with the workspaces it holds, so a shared one would slow every run
/// after the first, whatever the store.
async fn throughput_run(
    binary: &Path,
    store: &StoreArg<'_>,
    replicas: usize,
    clients: usize,
    names: &[String],
) -> anyhow::Result<ConcurrentRound> {
    let (sim, template) = instant_sim().await?;
    let mut servers = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        servers.push(Serve::start_on(binary, &sim.url(), store, &[]).await?);
    }
    let serves: Vec<&Serve> = servers.iter().collect();
    // One create per client before the clock: the servers' connection pools (opened on
    // demand) and the clients' HTTP connections are then open, as in a server at work.
    let warm: Vec<String> = (0..clients).map(|i| format!("warm-{i}")).collect();
    let warmed = concurrent_creates(&serves, &template, &warm, clients).await?;
    let mut run = concurrent_creates(&serves, &template, names, clients).await?;
    run.errors += warmed.errors;
    // Exactly one workspace per name: none missing, none made twice.
    let mut by_name: std::collections::HashMap<String, usize> = Default::default();
    for ws in sim.workspaces() {
        *by_name.entry(ws.name).or_default() += 1;
    }
    run.names_with_one_workspace = names
        .iter()
        .filter(|n| by_name.get(n.as_str()) == Some(&1))
        .count();
    drop(serves);
    drop(servers);
    sim.shutdown().await;
    Ok(run)
}

async fn store_section(binary: &Path, quick: bool) -> anyhow::Result<StoreBench> {
    let (sim, template) = instant_sim().await?;
    let coder = sim.url();
    let mut result = StoreBench {
        clients: CLIENT_LEVELS.to_vec(),
        ..Default::default()
    };
    let pg = match postgres_for_bench().await {
        Ok(pg) => {
            println!(
                "store: PostgreSQL {} ({}; fsync={}, synchronous_commit={})",
                pg.info.version, pg.info.source, pg.info.fsync, pg.info.synchronous_commit
            );
            result.postgres = Some(pg.info.clone());
            Some(pg)
        }
        Err(why) => {
            if std::env::var("CODER_MCP_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                bail!("PostgreSQL is required (CODER_MCP_REQUIRE_POSTGRES=1): {why}");
            }
            println!("store: PostgreSQL rows skipped: {why}");
            result.postgres_skipped = Some(why);
            None
        }
    };
    let memory = Serve::start_on(binary, &coder, &StoreArg::Memory, &[]).await?;
    let sqlite = Serve::start(binary, &coder, &[]).await?;
    let postgres = match &pg {
        Some(pg) => Some(Serve::start_on(binary, &coder, &StoreArg::Postgres(&pg.url), &[]).await?),
        None => None,
    };
    let mut stores = vec![("memory", &memory), ("sqlite", &sqlite)];
    if let Some(serve) = &postgres {
        stores.push(("postgres", serve));
    }

    // 6a: the store's cost per create, one call at a time.
    for (name, serve) in &stores {
        for i in 0..5 {
            create_in_new_session(&serve.url, &template, &format!("warm-{name}-{i}")).await?;
        }
    }
    let per_round = if quick { 6 } else { 20 };
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..STORE_ROUNDS {
        // Interleaved call by call (the order rotating), so a noisy neighbour on a shared
        // machine hits every store alike.
        let mut this_round: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for i in 0..per_round {
            for k in 0..stores.len() {
                let (name, serve) = stores[(i + k) % stores.len()];
                let ms =
                    create_in_new_session(&serve.url, &template, &format!("{name}-{round}-{i}"))
                        .await?;
                this_round.entry(name).or_default().push(ms);
            }
        }
        let mut p50 = BTreeMap::new();
        for (name, round_samples) in this_round {
            let mut sorted = round_samples.clone();
            sorted.sort_by(f64::total_cmp);
            p50.insert(name, percentile(&sorted, 50.0));
            samples.entry(name).or_default().extend(round_samples);
        }
        for (name, _) in &stores[1..] {
            result
                .round_ratios
                .entry(name.to_string())
                .or_default()
                .push(p50[name] / p50["memory"]);
        }
    }
    let view = sim.view();
    let mut builds: Vec<f64> = view
        .workspaces()
        .iter()
        .filter_map(|ws| {
            let completed = view.job_completed_at(ws.latest_build.id)?;
            Some((completed - ws.created_at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    builds.sort_by(f64::total_cmp);
    result.instant_build_p50_ms = percentile(&builds, 50.0);
    println!(
        "store: the simulated instant builds took p50={:.2} ms (create to build end)",
        result.instant_build_p50_ms
    );
    let mut memory_p50 = 0.0;
    for (name, _) in &stores {
        let mut all = samples.remove(name).unwrap_or_default();
        all.sort_by(f64::total_cmp);
        let p50 = percentile(&all, 50.0);
        if *name == "memory" {
            memory_p50 = p50;
        }
        let latency = CreateLatency {
            p50_ms: p50,
            p90_ms: percentile(&all, 90.0),
            p99_ms: percentile(&all, 99.0),
            max_ms: percentile(&all, 100.0),
            p50_added_ms: p50 - memory_p50,
            p50_ratio: p50 / memory_p50,
            samples_ms: all,
        };
        println!(
            "store create [{name:>8}]: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms; p50 +{:.2} ms, {:.2}x memory; per round {:.2?}",
            latency.samples_ms.len(),
            latency.p50_ms,
            latency.p90_ms,
            latency.p99_ms,
            latency.max_ms,
            latency.p50_added_ms,
            latency.p50_ratio,
            result.round_ratios.get(*name).cloned().unwrap_or_default()
        );
        result.creates.insert(name.to_string(), latency);
    }

    drop((memory, sqlite, postgres));
    sim.shutdown().await;

    // 6b: creates per second with many clients at once, through one or two replicas.
    // (label, store, tag for the names, its --store, replicas)
    let mut configs: Vec<(&str, &str, &str, StoreArg, usize)> =
        vec![(MEM1, "memory", "mem1", StoreArg::Memory, 1)];
    if let Some(pg) = &pg {
        configs.push((PG1, "postgres", "pg1", StoreArg::Postgres(&pg.url), 1));
        configs.push((PG2, "postgres", "pg2", StoreArg::Postgres(&pg.url), 2));
    }
    let creates = if quick { 60 } else { 200 };
    let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..THROUGHPUT_ROUNDS {
        for clients in CLIENT_LEVELS {
            // The order rotates with the rounds, so no configuration always runs first.
            for k in 0..configs.len() {
                let (label, store, tag, arg, replicas) = &configs[(round + k) % configs.len()];
                let key = throughput_key(clients, label);
                // Distinct across runs too: the PostgreSQL database is the same for all.
                let names: Vec<String> = (0..creates)
                    .map(|i| format!("{tag}-c{clients}-{round}-{i}"))
                    .collect();
                let outcome = throughput_run(binary, arg, *replicas, clients, &names).await?;
                let run = result
                    .throughput
                    .entry(key.clone())
                    .or_insert_with(|| Throughput {
                        store: store.to_string(),
                        replicas: *replicas,
                        clients,
                        per_replica: vec![0; *replicas],
                        ..Default::default()
                    });
                run.creates += creates;
                run.seconds += outcome.seconds;
                run.errors += outcome.errors;
                run.names += names.len();
                run.names_with_one_workspace += outcome.names_with_one_workspace;
                run.round_per_second.push(creates as f64 / outcome.seconds);
                for (total, n) in run.per_replica.iter_mut().zip(&outcome.per_replica) {
                    *total += n;
                }
                latencies
                    .entry(key)
                    .or_default()
                    .extend(outcome.latencies_ms);
            }
        }
    }
    for (key, run) in result.throughput.iter_mut() {
        let mut all = latencies.remove(key).unwrap_or_default();
        all.sort_by(f64::total_cmp);
        run.p50_ms = percentile(&all, 50.0);
        run.p99_ms = percentile(&all, 99.0);
        run.creates_per_second = run.creates as f64 / run.seconds;
        println!(
            "store throughput [{key}]: {:.0} creates/s (rounds {:.0?}); {} creates to replicas {:?}; {} errors; {} of {} names with exactly one workspace; call p50={:.1} ms p99={:.1} ms",
            run.creates_per_second,
            run.round_per_second,
            run.creates,
            run.per_replica,
            run.errors,
            run.names_with_one_workspace,
            run.names,
            run.p50_ms,
            run.p99_ms
        );
    }
    // After the servers, so none of them sees its database vanish.
    drop(pg);
    Ok(result)
}

// ---- 7: soak (only with `--only soak`) ----------------------------------------------

/// Clients at once in the soak, each with a Coder user (and token) of its own: the server's
/// default `--max-sessions-per-token` (20) then holds a worker's open and abandoned sessions.
const SOAK_WORKERS: usize = 8;
/// The same mix before the "before" reading, so caches, pools and the allocator are warm.
const SOAK_WARM_UP: Duration = Duration::from_secs(20);
/// How long the server is left alone before each reading ("before" and "after"): past the
/// unused-session timeout (30 s), the shortened idle timeout (45 s) and one sweep (7.5 s).
const SOAK_QUIESCE: Duration = Duration::from_secs(75);
/// How often the series is sampled (the peaks are taken every second).
const SOAK_SAMPLE_EVERY: u64 = 30;
/// The server's defaults (session limits included), except that sessions left open after
/// use expire after 45 s instead of 30 min, so that the quiescence sees them go.
const SOAK_SERVER_ARGS: [&str; 2] = ["--session-idle-timeout", "45s"];
/// Fewest seconds between two requests with a wrong token, all workers together: the
/// server allows 10 failed authentications per minute per address (`--max-auth-failures`)
/// and every request here comes from 127.0.0.1.
const SOAK_BAD_TOKEN_EVERY: Duration = Duration::from_secs(8);
/// Workspace names and chat ids each worker comes back to.
const SOAK_POOL: f64 = 12.0;
const SOAK_PROTOCOL: &str = "2025-06-18";

/// One reading of the server process.
#[derive(Clone, Default, serde::Serialize)]
struct ProcSample {
    phase: String,
    /// Seconds since the server started.
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    /// User + system time since the server started.
    cpu_s: f64,
    /// The SQLite store's file and its write-ahead log.
    store_kib: u64,
}

fn proc_threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn proc_sample(pid: u32, since: Instant, phase: &str, store: &Path) -> ProcSample {
    let size = |suffix: &str| {
        let mut file = store.as_os_str().to_owned();
        file.push(suffix);
        std::fs::metadata(file).map_or(0, |m| m.len())
    };
    ProcSample {
        store_kib: (size("") + size("-wal")) / 1024,
        phase: phase.to_owned(),
        at_s: since.elapsed().as_secs_f64(),
        rss_kib: proc_rss_kib(pid),
        fds: proc_fds(pid),
        threads: proc_threads(pid),
        cpu_s: proc_cpu_seconds(pid),
    }
}

impl std::fmt::Display for ProcSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>5.0} s {:<17}] RSS {:>7} KiB ({:.1} MiB), {:>4} fds, {:>3} threads, CPU {:.1} s, store {} KiB",
            self.at_s,
            self.phase,
            self.rss_kib,
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.threads,
            self.cpu_s,
            self.store_kib
        )
    }
}

#[derive(Default, serde::Serialize)]
struct SoakRun {
    minutes: f64,
    workers: usize,
    /// What `serve` got besides `--listen`, `--log-level` and `--store` (a new SQLite file).
    server_args: Vec<String>,
    load_seconds: f64,
    quiesce_seconds: f64,
    /// Operations of the load by kind, and the failed ones by kind and first words.
    ops: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    /// The same for the warm-up.
    warm_up_ops: BTreeMap<String, u64>,
    warm_up_errors: BTreeMap<String, u64>,
    /// The first errors in full.
    error_examples: Vec<String>,
    /// After the warm-up and a quiescence.
    before: ProcSample,
    /// Highest readings (every second) from the start of the load to the "after" reading.
    peak_rss_kib: u64,
    peak_fds: usize,
    peak_threads: usize,
    /// As the load stopped.
    end_of_load: ProcSample,
    /// After the load and the same quiescence.
    after: ProcSample,
    /// Every 30 s of the whole run.
    series: Vec<ProcSample>,
    /// The server's log lines (`warn`, and `info` of its HTTP layer) over the whole run,
    /// by level and message.
    server_log: BTreeMap<String, u64>,
    /// Sessions the log shows opened and not closed, expired or ended by the "after" reading.
    sessions_left: i64,
    /// Workspaces Coder holds at the end.
    workspaces: usize,
}

#[derive(Default)]
struct Tally {
    ops: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
}

/// What the soak's workers share.
struct SoakCtx {
    /// `http://127.0.0.1:PORT/mcp`, and `127.0.0.1:PORT` for raw TCP.
    url: String,
    addr: String,
    template: String,
    /// For the raw requests; keeps no idle connection, like rmcp's own client.
    http: reqwest::Client,
    tally: std::sync::Mutex<Tally>,
    /// When the next wrong token may be sent (see [`SOAK_BAD_TOKEN_EVERY`]).
    next_bad_token: std::sync::Mutex<Instant>,
    bad_tokens: std::sync::atomic::AtomicU64,
}

impl SoakCtx {
    fn op(&self, op: &str) {
        *self
            .tally
            .lock()
            .unwrap()
            .ops
            .entry(op.to_owned())
            .or_default() += 1;
    }

    /// Counts `op`, and, if it failed, its error by kind (the op and the error's first
    /// words, digits masked).
    fn check<T>(&self, op: &str, result: anyhow::Result<T>) -> Option<T> {
        self.op(op);
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                let class: String = err
                    .to_string()
                    .chars()
                    .take(80)
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                let mut tally = self.tally.lock().unwrap();
                *tally.errors.entry(format!("{op}: {class}")).or_default() += 1;
                if tally.examples.len() < 20 {
                    let full: String = format!("{err:#}").chars().take(400).collect();
                    tally.examples.push(format!("{op}: {full}"));
                }
                None
            }
        }
    }

    /// Whether a wrong token may be sent now (and if so, the next one not before
    /// [`SOAK_BAD_TOKEN_EVERY`]).
    fn may_send_bad_token(&self) -> bool {
        let mut next = self.next_bad_token.lock().unwrap();
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + SOAK_BAD_TOKEN_EVERY;
        true
    }

    fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: String,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = session {
            request = request
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", SOAK_PROTOCOL);
        }
        request
    }
}

/// Sends `request` and reads its whole answer, which must have `status`.
async fn expect_status(
    request: reqwest::RequestBuilder,
    status: u16,
) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
    let response = request.send().await?;
    let got = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    if got != status {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(anyhow::anyhow!("{text}").context(format!("HTTP {got}, expected {status}")));
    }
    Ok((headers, body))
}

fn soak_initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": SOAK_PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "soak", "version": "0"}}})
    .to_string()
}

/// One worker's own state, kept from the warm-up to the load.
struct SoakWorker {
    index: usize,
    token: String,
    rng: Rng,
    unique: u64,
    /// The workspace each reused name and chat id stands for, from its first create.
    names: std::collections::HashMap<String, String>,
    chats: std::collections::HashMap<String, String>,
    /// Idle TCP connections still held.
    holders: Vec<tokio::task::JoinHandle<()>>,
}

const REUSED_NAME: &str = "reused name";
const CHAT_ID: &str = "chat id";

/// Runs every worker's mix for `duration`, and waits for what they still hold.
async fn soak_phase(
    ctx: &Arc<SoakCtx>,
    workers: Vec<SoakWorker>,
    duration: Duration,
) -> Vec<SoakWorker> {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(soak_worker(ctx.clone(), worker, until)))
        .collect();
    let mut workers = Vec::new();
    for task in tasks {
        workers.push(task.await.expect("a soak worker panicked"));
    }
    workers
}

/// The mix, one operation at a time with a pause of 0.2–1.2 s between them, until `until`.
async fn soak_worker(ctx: Arc<SoakCtx>, mut me: SoakWorker, until: Instant) -> SoakWorker {
    while Instant::now() < until {
        let r = me.rng.next();
        if r < 0.62 {
            soak_session(&ctx, &mut me).await;
        } else if r < 0.68 {
            soak_abandon(&ctx, &mut me, 0).await;
        } else if r < 0.71 {
            soak_abandon(&ctx, &mut me, 1).await;
        } else if r < 0.73 {
            soak_abandon(&ctx, &mut me, 2).await;
        } else if r < 0.83 {
            let sent = ctx.post(
                Some(&me.token),
                None,
                "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\"".into(),
            );
            ctx.check("malformed: not JSON → 400", expect_status(sent, 400).await);
        } else if r < 0.88 {
            let sent = ctx.post(Some(&me.token), None, json!({"hello": "world"}).to_string());
            ctx.check(
                "malformed: JSON, not JSON-RPC → 400",
                expect_status(sent, 400).await,
            );
        } else if r < 0.94 && ctx.may_send_bad_token() {
            let n = ctx
                .bad_tokens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let token = format!("soak-wrong-{n:08}-{:016x}", me.rng.0);
            let sent = ctx.post(Some(&token), None, soak_initialize());
            ctx.check("wrong token → 401", expect_status(sent, 401).await);
        } else if r < 0.94 {
            let sent = ctx.post(None, None, soak_initialize());
            ctx.check("no token → 401", expect_status(sent, 401).await);
        } else {
            soak_idle_connection(&ctx, &mut me);
        }
        let pause = Duration::from_millis(200 + (me.rng.next() * 1000.0) as u64);
        tokio::time::sleep(pause).await;
    }
    for holder in me.holders.drain(..) {
        let _ = holder.await;
    }
    me
}

/// An rmcp client session of the worker's token, with a chat id if given.
async fn soak_client(url: &str, token: &str, chat: Option<&str>) -> anyhow::Result<Client> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
    if let Some(chat) = chat {
        config = config.custom_headers(
            [(
                http::HeaderName::from_static("x-coder-chat-id"),
                http::HeaderValue::from_str(chat)?,
            )]
            .into(),
        );
    }
    Ok(
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await?,
    )
}

/// A whole session: open, `list_templates`, `read_template`, `create_workspace` (a
/// generated name, a new name, a name used before, or a chat id used before), close.
async fn soak_session(ctx: &SoakCtx, me: &mut SoakWorker) {
    let r = me.rng.next();
    let pick = (me.rng.next() * SOAK_POOL) as usize;
    let (variant, name, chat) = if r < 0.25 {
        ("generated name", None, None)
    } else if r < 0.45 {
        me.unique += 1;
        let name = format!("soak{}-u{}", me.index, me.unique);
        ("new name", Some(name), None)
    } else if r < 0.75 {
        (REUSED_NAME, Some(format!("soak{}-n{pick}", me.index)), None)
    } else {
        (
            CHAT_ID,
            None,
            Some(format!("soak-chat-{}-{pick}", me.index)),
        )
    };
    let session = async {
        let opened = soak_client(&ctx.url, &me.token, chat.as_deref()).await;
        let Some(client) = ctx.check("session: open (initialize)", opened) else {
            return;
        };
        soak_calls(ctx, me, &client, variant, name.as_deref(), chat.as_deref()).await;
        let closed = client
            .cancel()
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from);
        ctx.check("session: close (DELETE)", closed);
    };
    // A hung call would hold the worker (and the soak's end) for ever.
    if tokio::time::timeout(Duration::from_secs(120), session)
        .await
        .is_err()
    {
        ctx.check::<()>("session", Err(anyhow::anyhow!("not done within 120 s")));
    }
}

async fn soak_calls(
    ctx: &SoakCtx,
    me: &mut SoakWorker,
    client: &Client,
    variant: &str,
    name: Option<&str>,
    chat: Option<&str>,
) {
    let listed = call(client, "list_templates", json!({}))
        .await
        .and_then(|out| match out["templates"].as_array() {
            Some(t) if !t.is_empty() => Ok(()),
            _ => bail!("no templates listed: {out}"),
        });
    if ctx.check("list_templates", listed).is_none() {
        return;
    }
    let read = call(
        client,
        "read_template",
        json!({ "template_id": ctx.template }),
    )
    .await
    .and_then(|out| {
        if out["template"]["id"] == ctx.template.as_str() {
            Ok(())
        } else {
            bail!("another template: {out}")
        }
    });
    if ctx.check("read_template", read).is_none() {
        return;
    }
    let mut args = json!({ "template_id": ctx.template });
    if let Some(name) = name {
        args["name"] = json!(name);
    }
    let created = call(client, "create_workspace", args)
        .await
        .and_then(|out| soak_check_create(me, variant, name, chat, &out));
    ctx.check(&format!("create_workspace ({variant})"), created);
}

/// What each kind of create must answer: a new workspace, under the name asked for; for a
/// name or chat id used before, the workspace of its first create, not created again.
fn soak_check_create(
    me: &mut SoakWorker,
    variant: &str,
    name: Option<&str>,
    chat: Option<&str>,
    out: &Value,
) -> anyhow::Result<()> {
    let id = out["workspace_id"]
        .as_str()
        .with_context(|| format!("no workspace_id: {out}"))?
        .to_owned();
    let created = out["created"] == true;
    if let Some(status) = out["status"].as_str()
        && status != "already_exists"
    {
        bail!("status {status}: {out}");
    }
    if let Some(name) = name
        && out["workspace_name"] != name
    {
        bail!("named {} rather than {name}", out["workspace_name"]);
    }
    let seen = match (variant, name, chat) {
        (REUSED_NAME, Some(name), _) => Some((&mut me.names, name)),
        (CHAT_ID, _, Some(chat)) => Some((&mut me.chats, chat)),
        _ => None,
    };
    match seen {
        None if !created => bail!("not created: {out}"),
        None => {}
        Some((seen, key)) => match seen.get(key) {
            Some(first) if *first != id => {
                bail!("{key} answered another workspace ({id}; first {first})")
            }
            Some(_) if created => bail!("{key} created a second workspace"),
            Some(_) => {}
            None => {
                seen.insert(key.to_owned(), id);
            }
        },
    }
    Ok(())
}

/// A session opened and left: after `initialize` only (`level` 0: the unused-session
/// timeout ends it); after `notifications/initialized` and a `tools/list` (1); and after
/// that with its GET event stream opened, held 0.5–3 s and dropped (2) (both ended by the
/// idle timeout).
async fn soak_abandon(ctx: &SoakCtx, me: &mut SoakWorker, level: u8) {
    let op = match level {
        0 => "abandoned session: initialize only",
        1 => "abandoned session: after initialized and tools/list",
        _ => "abandoned session: its GET stream opened and dropped",
    };
    let hold = Duration::from_millis(500 + (me.rng.next() * 2500.0) as u64);
    let token = me.token.as_str();
    let abandoned = async {
        let (headers, _) =
            expect_status(ctx.post(Some(token), None, soak_initialize()), 200).await?;
        let id = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("no mcp-session-id")?
            .to_owned();
        if level == 0 {
            return Ok(());
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        expect_status(
            ctx.post(Some(token), Some(&id), initialized.to_string()),
            202,
        )
        .await?;
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let (_, body) =
            expect_status(ctx.post(Some(token), Some(&id), list.to_string()), 200).await?;
        if !String::from_utf8_lossy(&body).contains("create_workspace") {
            bail!("tools/list without create_workspace");
        }
        if level == 2 {
            let response = ctx
                .http
                .get(&ctx.url)
                .bearer_auth(token)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &id)
                .header("mcp-protocol-version", SOAK_PROTOCOL)
                .send()
                .await?;
            if response.status() != 200 {
                bail!("GET stream: HTTP {}", response.status());
            }
            let mut stream = response.bytes_stream();
            let _ = tokio::time::timeout(hold, async {
                while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                    chunk?;
                }
                anyhow::Ok(())
            })
            .await;
        }
        anyhow::Ok(())
    };
    ctx.check(op, abandoned.await);
}

/// A TCP connection to the server that sends nothing, dropped after 0–15 s unless the
/// server closes it first (`--header-read-timeout`, 10 s).
fn soak_idle_connection(ctx: &Arc<SoakCtx>, me: &mut SoakWorker) {
    me.holders.retain(|h| !h.is_finished());
    let hold = Duration::from_millis((me.rng.next() * 15_000.0) as u64);
    let ctx = ctx.clone();
    me.holders.push(tokio::spawn(async move {
        let connected = tokio::net::TcpStream::connect(&ctx.addr).await;
        let Some(mut stream) = ctx.check("idle TCP connection", connected.map_err(Into::into))
        else {
            return;
        };
        let mut buf = [0u8; 512];
        match tokio::time::timeout(hold, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await
        {
            Err(_) => {}
            Ok(Ok(0)) => ctx.op("idle TCP connection: closed by the server first"),
            Ok(Ok(_)) => ctx.op("idle TCP connection: answered by the server first"),
            Ok(Err(err)) => {
                ctx.check::<()>("idle TCP connection: read", Err(err.into()));
            }
        }
    }));
}

/// The server's readings: the series every [`SOAK_SAMPLE_EVERY`] s, and the peaks (every
/// second) once `peaks` is set.
#[derive(Default)]
struct SoakReadings {
    phase: String,
    peaks: bool,
    series: Vec<ProcSample>,
    peak_rss_kib: u64,
    peak_fds: usize,
    peak_threads: usize,
}

/// The soak: `serve` on its defaults (see [`SOAK_SERVER_ARGS`]) and a new SQLite store,
/// against the simulated Coder with instant builds; [`SOAK_WORKERS`] workers run the mix
/// for [`SOAK_WARM_UP`], the server is left alone for [`SOAK_QUIESCE`] ("before"), the
/// workers run it for `minutes`, and the server is left alone as long again ("after").
async fn soak(binary: &Path, minutes: f64) -> anyhow::Result<SoakRun> {
    let (sim, template) = instant_sim().await?;
    let tokens: Vec<String> = (0..SOAK_WORKERS)
        .map(|w| {
            let token = format!("soak-token-{w}-0000000000000000");
            sim.add_user(&format!("soak{w}"), &token);
            token
        })
        .collect();
    let serve = Serve::spawn(binary, &sim.url(), &StoreArg::TempSqlite, &SOAK_SERVER_ARGS).await?;
    let (pid, started) = (serve.pid(), Instant::now());
    let store = serve
        .store_dir
        .as_ref()
        .context("a SQLite store")?
        .path()
        .join("store.db");
    let addr = serve
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let ctx = Arc::new(SoakCtx {
        url: serve.url.clone(),
        addr,
        template,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()?,
        tally: Default::default(),
        next_bad_token: std::sync::Mutex::new(Instant::now()),
        bad_tokens: Default::default(),
    });
    let mut workers: Vec<SoakWorker> = tokens
        .into_iter()
        .enumerate()
        .map(|(index, token)| SoakWorker {
            index,
            token,
            rng: Rng(0x2545F4914F6CDD1D ^ ((index as u64 + 1) * 0x9E3779B97F4A7C15)),
            unique: 0,
            names: Default::default(),
            chats: Default::default(),
            holders: Vec::new(),
        })
        .collect();
    let load = Duration::from_secs_f64(minutes * 60.0);
    println!(
        "soak: serve {} on {} (SQLite store); {SOAK_WORKERS} workers; warm-up {} s, quiescence {} s, load {:.1} min, quiescence {} s",
        SOAK_SERVER_ARGS.join(" "),
        serve.url,
        SOAK_WARM_UP.as_secs(),
        SOAK_QUIESCE.as_secs(),
        minutes,
        SOAK_QUIESCE.as_secs()
    );

    let readings = Arc::new(std::sync::Mutex::new(SoakReadings {
        phase: "warm-up".into(),
        ..Default::default()
    }));
    let sampler = {
        let (readings, store) = (readings.clone(), store.clone());
        tokio::spawn(async move {
            for tick in 1u64.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let phase = readings.lock().unwrap().phase.clone();
                let sample = proc_sample(pid, started, &phase, &store);
                if sample.rss_kib == 0 {
                    break;
                }
                let mut r = readings.lock().unwrap();
                if r.peaks {
                    r.peak_rss_kib = r.peak_rss_kib.max(sample.rss_kib);
                    r.peak_fds = r.peak_fds.max(sample.fds);
                    r.peak_threads = r.peak_threads.max(sample.threads);
                }
                if tick % SOAK_SAMPLE_EVERY == 0 {
                    println!("soak: {sample}");
                    r.series.push(sample);
                }
            }
        })
    };
    let phase = |name: &str| readings.lock().unwrap().phase = name.to_owned();
    let reading = |name: &str| {
        let sample = proc_sample(pid, started, name, &store);
        println!("soak: {sample}");
        readings.lock().unwrap().series.push(sample.clone());
        sample
    };

    workers = soak_phase(&ctx, workers, SOAK_WARM_UP).await;
    reading("end of warm-up");
    phase("quiescence before");
    tokio::time::sleep(SOAK_QUIESCE).await;
    let before = reading("before");
    let warm_up = std::mem::take(&mut *ctx.tally.lock().unwrap());

    phase("load");
    readings.lock().unwrap().peaks = true;
    let load_started = Instant::now();
    let _workers = soak_phase(&ctx, workers, load).await;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let end_of_load = reading("end of load");
    phase("quiescence after");
    tokio::time::sleep(SOAK_QUIESCE).await;
    let after = reading("after");
    sampler.abort();

    let tally = std::mem::take(&mut *ctx.tally.lock().unwrap());
    let (peak_rss_kib, peak_fds, peak_threads, series) = {
        let mut r = readings.lock().unwrap();
        (
            r.peak_rss_kib.max(end_of_load.rss_kib),
            r.peak_fds.max(end_of_load.fds),
            r.peak_threads.max(end_of_load.threads),
            std::mem::take(&mut r.series),
        )
    };
    let server_log = serve.log.lock().unwrap().clone();
    let logged = |message: &str| server_log.get(message).copied().unwrap_or(0) as i64;
    let sessions_left = logged("INFO session opened")
        - logged("INFO session closed by the client")
        - logged("INFO unused session expired")
        - logged("INFO session ended");
    let mut examples = warm_up.examples;
    examples.extend(tally.examples);
    let run = SoakRun {
        minutes,
        workers: SOAK_WORKERS,
        server_args: SOAK_SERVER_ARGS.iter().map(|a| a.to_string()).collect(),
        load_seconds,
        quiesce_seconds: SOAK_QUIESCE.as_secs_f64(),
        ops: tally.ops,
        errors: tally.errors,
        warm_up_ops: warm_up.ops,
        warm_up_errors: warm_up.errors,
        error_examples: examples,
        before,
        peak_rss_kib,
        peak_fds,
        peak_threads,
        end_of_load,
        after,
        series,
        server_log,
        sessions_left,
        workspaces: sim.workspaces().len(),
    };
    drop(serve);
    sim.shutdown().await;
    run.print();
    Ok(run)
}

impl SoakRun {
    fn print(&self) {
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        println!(
            "\nsoak summary: {:.1} min of load ({:.0} s), {} workers; serve {}",
            self.minutes,
            self.load_seconds,
            self.workers,
            self.server_args.join(" ")
        );
        println!(
            "operations during the load: {} ({:.1}/s); errors: {}",
            total(&self.ops),
            total(&self.ops) as f64 / self.load_seconds.max(1.0),
            total(&self.errors)
        );
        for (op, n) in &self.ops {
            println!("  {n:>7}  {op}");
        }
        for (kind, n) in &self.errors {
            println!("  error {n:>5}  {kind}");
        }
        println!(
            "warm-up: {} operations, {} errors",
            total(&self.warm_up_ops),
            total(&self.warm_up_errors)
        );
        for (kind, n) in &self.warm_up_errors {
            println!("  error {n:>5}  {kind}");
        }
        for example in &self.error_examples {
            println!("  e.g. {example}");
        }
        println!("server log over the whole run:");
        for (line, n) in &self.server_log {
            println!("  {n:>7}  {line}");
        }
        println!(
            "sessions opened and not closed, expired or ended (by the log): {}",
            self.sessions_left
        );
        println!("workspaces in Coder: {}", self.workspaces);
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "RSS: before {:.1} MiB, peak {:.1} MiB, end of load {:.1} MiB, after {:.1} MiB ({:+} KiB)",
            mib(self.before.rss_kib),
            mib(self.peak_rss_kib),
            mib(self.end_of_load.rss_kib),
            mib(self.after.rss_kib),
            self.after.rss_kib as i64 - self.before.rss_kib as i64
        );
        println!(
            "fds: before {}, peak {}, end of load {}, after {}; threads: before {}, peak {}, after {}",
            self.before.fds,
            self.peak_fds,
            self.end_of_load.fds,
            self.after.fds,
            self.before.threads,
            self.peak_threads,
            self.after.threads
        );
        println!(
            "CPU: {:.1} s during the load, {:.2} s during the quiescence after it; SQLite store (with its WAL): before {} KiB, after {} KiB",
            self.end_of_load.cpu_s - self.before.cpu_s,
            self.after.cpu_s - self.end_of_load.cpu_s,
            self.before.store_kib,
            self.after.store_kib
        );
    }
}

// ---- report ------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest sample with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Default, serde::Serialize)]
struct Report {
    run: RunInfo,
    quick: bool,
    detection: BTreeMap<String, DetectionRun>,
    requests_while_waiting: BTreeMap<String, WaitingRequests>,
    overhead: Overhead,
    mcp_layer: McpLayer,
    scale: Scale,
    cold_start: ColdStart,
    store: StoreBench,
}

impl Report {
    fn write(&self, root: &Path) -> anyhow::Result<()> {
        let dir = root.join("benches");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("latency.svg"), self.svg())?;
        let doc = root.join("BENCHMARKS.md");
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
        let table = self.markdown();
        let updated = match (text.find(begin), text.find(end)) {
            (Some(b), Some(e)) if b < e => format!("{}{begin}\n{table}{}", &text[..b], &text[e..]),
            _ => format!("{text}\n{begin}\n{table}{end}\n"),
        };
        std::fs::write(doc, updated)?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let d = |mode: &str, p: f64| {
            self.detection
                .get(mode)
                .map_or(0.0, |r| percentile(&r.latencies_ms, p))
        };
        let rpc = |mode: &str| {
            self.detection
                .get(mode)
                .map_or(0.0, |r| r.requests_per_create)
        };
        let waiting = |mode: &str| self.requests_while_waiting.get(mode);
        let n = self
            .detection
            .get("stream")
            .map_or(0, |r| r.latencies_ms.len());
        let mark = |ok: bool| if ok { "met" } else { "**missed**" };
        let run = &self.run;
        let mut out = format!(
            "Measured on {}{}, {}; kernel {}, {}, commit `{}`.\n\n",
            run.machine,
            if self.quick { " (quick run)" } else { "" },
            run.date,
            run.kernel,
            run.rustc,
            run.commit
        );
        out.push_str("| figure | ours | baseline | goal |\n|---|---|---|---|\n");
        out.push_str(&format!(
            "| detection latency p50 ({n} creates) | {:.1} ms | {:.1} ms (2 s polling) | < 50 ms: {} |\n",
            d("stream", 50.0), d("polling", 50.0), mark(d("stream", 50.0) < 50.0)
        ));
        out.push_str(&format!(
            "| detection latency p99 | {:.1} ms | {:.1} ms | < 250 ms: {} |\n",
            d("stream", 99.0),
            d("polling", 99.0),
            mark(d("stream", 99.0) < 250.0)
        ));
        out.push_str(&format!(
            "| Coder requests per create (happy path) | {:.1} | {:.1} | fewer |\n",
            rpc("stream"),
            rpc("polling")
        ));
        if let (Some(ours), Some(base)) = (waiting("stream"), waiting("polling")) {
            out.push_str(&format!(
                "| Coder requests while one build runs {:.0} s: busiest minute (all) | {} ({}) | {} ({}) | ≤ 2 per minute: {} |\n",
                ours.build_seconds, ours.busiest_minute, ours.total, base.busiest_minute, base.total,
                mark(ours.busiest_minute <= 2)
            ));
        }
        let o = &self.overhead;
        if let Some(direct) = o.transports.get(DIRECT) {
            for name in ["stdio", "stream-http"] {
                let (Some(l), Some(ratio)) = (o.transports.get(name), o.ratio(name)) else {
                    continue;
                };
                let rounds = o.round_ratios.get(name).cloned().unwrap_or_default();
                let (lo, hi) = rounds
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
                let met = rounds.iter().filter(|r| **r <= 1.3).count();
                out.push_str(&format!(
                    "| `list_templates` over {name}: p50 (p99); calls/s one at a time, {} in flight | {:.3} ms ({:.3} ms); {:.0}, {:.0} | direct GET: {:.3} ms ({:.3} ms); {:.0}, {:.0} | ≤ 1.3× at p50: {:.2}× {} (rounds {:.2}–{:.2}×, {} of {} within) |\n",
                    o.concurrency, l.p50_ms, l.p99_ms, l.sequential_per_second, l.concurrent_per_second,
                    direct.p50_ms, direct.p99_ms, direct.sequential_per_second, direct.concurrent_per_second,
                    ratio, mark(ratio <= 1.3), lo, hi, met, rounds.len()
                ));
            }
        }
        let floor = |name: &str| o.transports.get(name).map_or(0.0, |l| l.p50_ms);
        if o.transports.contains_key("stdio tools/list") {
            out.push_str(&format!(
                "| of which the MCP round trip alone (`tools/list`, no Coder), p50 | stdio {:.3} ms, stream-http {:.3} ms | | |\n",
                floor("stdio tools/list"),
                floor("stream-http tools/list")
            ));
        }
        let sc = &self.scale;
        if let (Some(s), Some(b)) = (sc.runs.get("stream"), sc.runs.get("polling")) {
            out.push_str(&format!(
                "| scale: {} concurrent sessions creating | {} workspaces, {} errors; peak RSS {:.1} MiB (idle {:.1} MiB), {:.1} KiB per waiting session; CPU {:.2} s over {:.0} s; peak {} fds; {} Coder requests | 2 s polling: {} workspaces, {} errors; {:.1} KiB per waiting session; CPU {:.2} s; peak {} fds; {} Coder requests. Idle rmcp session: {:.1} KiB | < 50 KiB/session, no errors: {} |\n",
                s.sessions, s.workspaces, s.errors, s.peak_rss_kib as f64 / 1024.0, s.idle_rss_kib as f64 / 1024.0, s.kib_per_session, s.cpu_seconds, s.wall_seconds, s.peak_fds, s.coder_requests,
                b.workspaces, b.errors, b.kib_per_session, b.cpu_seconds, b.peak_fds, b.coder_requests, sc.kib_per_idle_session,
                mark(s.kib_per_session < 50.0 && s.errors == 0 && s.workspaces == s.sessions)
            ));
        }
        let c = &self.cold_start;
        out.push_str(&format!(
            "| cold start to `initialize` answered (stdio, existing SQLite store), p50 | {:.1} ms (min {:.1} ms); first start, new store file: {:.1} ms | {:.1} ms (`--version`: exec and exit) | < 20 ms: {} |\n",
            c.p50_ms, c.min_ms, c.new_store_p50_ms, c.floor_p50_ms, mark(c.p50_ms < 20.0)
        ));
        out.push_str(&format!(
            "| release binary size | {:.1} MiB | | |\n",
            c.binary_bytes as f64 / (1024.0 * 1024.0)
        ));
        out.push_str(&self.store_rows());
        out.push('\n');
        out.push_str("![detection latency, ours vs 2 s polling](benches/latency.svg)\n");
        out
    }

    /// The store section's rows (6a, 6b).
    fn store_rows(&self) -> String {
        let st = &self.store;
        let mut out = String::new();
        let mark = |ok: bool| if ok { "met" } else { "**missed**" };
        let postgres = st.postgres.as_ref().map_or_else(
            || "PostgreSQL".to_owned(),
            |pg| {
                format!(
                    "PostgreSQL {} (loopback, fsync={})",
                    pg.version.split_whitespace().next().unwrap_or(""),
                    pg.fsync
                )
            },
        );
        let skipped = st.postgres_skipped.as_deref().unwrap_or("not measured");
        if let Some(memory) = st.creates.get("memory") {
            for (name, label) in [
                ("sqlite", "SQLite file (the default)"),
                ("postgres", &postgres),
            ] {
                let Some(l) = st.creates.get(name) else {
                    out.push_str(&format!(
                        "| store cost per create, {label} | skipped: {skipped} | | |\n"
                    ));
                    continue;
                };
                let rounds = st.round_ratios.get(name).cloned().unwrap_or_default();
                let (lo, hi) = rounds
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
                out.push_str(&format!(
                    "| store cost per create, {label}: `create_workspace` of an instant build, {} sequential calls, p50 (p90) | {:.2} ms ({:.2} ms): p50 +{:.2} ms, {:.2}× (rounds {:.2}–{:.2}×) | `--store memory`: {:.2} ms ({:.2} ms) | |\n",
                    l.samples_ms.len(), l.p50_ms, l.p90_ms, l.p50_added_ms, l.p50_ratio, lo, hi,
                    memory.p50_ms, memory.p90_ms
                ));
            }
        }
        let sound = |r: &Throughput| r.errors == 0 && r.names_with_one_workspace == r.names;
        let check = |r: &Throughput| {
            format!(
                "{} creates, {} errors, {} of {} names with exactly one workspace",
                r.creates, r.errors, r.names_with_one_workspace, r.names
            )
        };
        let (lo_hi, t) = (
            |rounds: Vec<f64>| {
                rounds
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)))
            },
            |clients: usize, label: &str| st.throughput.get(&throughput_key(clients, label)),
        );
        for &clients in &st.clients {
            match (t(clients, PG2), t(clients, PG1), t(clients, MEM1)) {
                (Some(two), Some(one), Some(mem)) => {
                    let per_round = |a: &Throughput, b: &Throughput| {
                        lo_hi(
                            a.round_per_second
                                .iter()
                                .zip(&b.round_per_second)
                                .map(|(a, b)| a / b)
                                .collect(),
                        )
                    };
                    let (lo, hi) = per_round(two, one);
                    let (mlo, mhi) = per_round(two, mem);
                    out.push_str(&format!(
                        "| creates per second, {clients} clients at once, two replicas sharing one {postgres} | {:.0}/s: {:.2}× one replica (rounds {:.2}–{:.2}×), {:.2}× one on memory (rounds {:.2}–{:.2}×); call p50 (p99) {:.1} ms ({:.1} ms); {} (split {:?}) | one replica on PostgreSQL: {:.0}/s, p50 (p99) {:.1} ms ({:.1} ms), {}; one on `--store memory`: {:.0}/s, {:.1} ms ({:.1} ms), {} | one workspace per name, no errors: {} |\n",
                        two.creates_per_second, two.creates_per_second / one.creates_per_second, lo, hi,
                        two.creates_per_second / mem.creates_per_second, mlo, mhi,
                        two.p50_ms, two.p99_ms, check(two), two.per_replica,
                        one.creates_per_second, one.p50_ms, one.p99_ms, check(one),
                        mem.creates_per_second, mem.p50_ms, mem.p99_ms, check(mem),
                        mark(sound(two) && sound(one) && sound(mem))
                    ));
                }
                (_, _, Some(mem)) => out.push_str(&format!(
                    "| creates per second, {clients} clients at once, replicas on PostgreSQL | skipped: {skipped} | one `serve` on `--store memory`: {:.0}/s; {} | one workspace per name, no errors: {} |\n",
                    mem.creates_per_second, check(mem), mark(sound(mem))
                )),
                _ => {}
            }
        }
        out
    }

    /// Cumulative distributions of the detection latency, ours vs the polling baseline.
    fn svg(&self) -> String {
        let (w, h, left, bottom, top, right) = (720.0, 360.0, 60.0, 40.0, 30.0, 20.0);
        let max = self
            .detection
            .values()
            .flat_map(|r| r.latencies_ms.iter().copied())
            .fold(1.0, f64::max);
        // A log scale keeps both distributions readable (ours ~ms, polling ~s).
        let x =
            |ms: f64| left + (ms.max(0.1).log10() + 1.0) / (max.log10() + 1.0) * (w - left - right);
        let y = |q: f64| h - bottom - q * (h - bottom - top);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        svg.push_str(&format!("<text x=\"{left}\" y=\"18\" font-size=\"14\">Detection latency (build finished → tool result), cumulative</text>\n"));
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - bottom,
            w - right,
            h - bottom
        ));
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - bottom
        ));
        let mut tick = 0.1;
        while tick <= max * 1.0001 {
            svg.push_str(&format!("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n", x(tick), top, h - bottom, h - bottom + 16.0, if tick < 1.0 { format!("{tick}") } else { format!("{tick:.0}") }));
            tick *= 10.0;
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">milliseconds (log scale)</text>\n",
            (w + left) / 2.0,
            h - 6.0
        ));
        for q in [0.0, 0.5, 1.0] {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>\n",
                left - 6.0,
                y(q) + 4.0,
                q * 100.0
            ));
        }
        for (i, (mode, color, label)) in [
            ("stream", "#1f77b4", "ours (watch stream)"),
            ("polling", "#d62728", "baseline (2 s polling)"),
        ]
        .iter()
        .enumerate()
        {
            let Some(run) = self.detection.get(*mode) else {
                continue;
            };
            let n = run.latencies_ms.len().max(1) as f64;
            let points: Vec<String> = run
                .latencies_ms
                .iter()
                .enumerate()
                .map(|(k, ms)| format!("{:.1},{:.1}", x(*ms), y((k + 1) as f64 / n)))
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                points.join(" ")
            ));
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{label}: p50 {:.1} ms</text>\n",
                left + 10.0,
                top + 16.0 + 16.0 * i as f64,
                percentile(&run.latencies_ms, 50.0)
            ));
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// One stateless request of protocol 2026-07-28 from a client that declares the Tasks
/// extension (in `_meta`); the JSON-RPC response.
async fn stateless_rpc(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    name: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let tasks = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    stateless_request(http, url, method, name, params, tasks).await
}

/// One stateless request of protocol 2026-07-28 (no session; the client's `capabilities`
/// in `_meta`); the JSON-RPC response.
async fn stateless_request(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    name: &str,
    mut params: Value,
    capabilities: Value,
) -> anyhow::Result<Value> {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if !name.is_empty() {
        request = request.header("mcp-name", name);
    }
    let text = request.body(body.to_string()).send().await?.text().await?;
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or(text);
    Ok(serde_json::from_str(&data)?)
}

/// Open files the bench asks for: the tasks section's 10,000 waiting creations hold two
/// WebSockets each on both ends (and the baseline's synchronous calls a request more).
const WANTED_FILES: u64 = 65_536;

/// MCP tasks at scale (issue 13): `n` create_workspace tasks over stateless HTTP, their
/// builds held, each polled with `tasks/get`; the server's memory per waiting task, its
/// descriptors, and the Coder requests while they all wait (a minute's worth, which must
/// stay flat: the builds are followed by their watch streams, not polled). Baseline in
/// the same run: as many synchronous calls (no extension, `--max-call-wait 0`), up to
/// [`SYNC_BASELINE_CALLS`], waiting over stateless HTTP, each holding its request open, in
/// a server of their own. Then
/// the builds are let go and every task must complete with exactly one workspace.
async fn tasks_section(binary: &Path, quick: bool) -> anyhow::Result<()> {
    // Each waiting task holds two WebSockets to Coder (watch, build logs), on the server's
    // side and the simulator's (this process): 10,000 if the descriptor limit allows it,
    // else as many as it does. (The baseline's synchronous calls hold a request more each,
    // and are fewer.)
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    let n = if quick {
        300
    } else {
        let fits = usize::try_from(files.saturating_sub(2_000) / 2).unwrap_or(usize::MAX);
        if fits < 10_000 {
            println!("(the open file limit, {files}, holds {fits} waiting tasks, not 10,000)");
        }
        fits.min(10_000)
    };
    let window = Duration::from_secs(if quick { 15 } else { 60 });
    println!("\n== tasks at scale: {n} create_workspace tasks over stateless HTTP");

    let run = |tasks: bool, n: usize| async move {
        let (sim, templates) = deployment(1, |_| Duration::from_secs(3600)).await?;
        let template = templates[0].clone();
        sim.set_build_plan(template.parse()?, BuildPlan::held());
        // Every request comes from this one address: no per-address connection cap; and
        // every waiting synchronous call holds a connection of its own.
        let connections = (n + 256).to_string();
        let serve = Serve::start(
            binary,
            &sim.url(),
            &[
                "--max-connections-per-address",
                "0",
                "--max-connections",
                &connections,
            ],
        )
        .await?;
        let pid = serve.pid();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        stateless_rpc(&http, &serve.url, "tools/list", "", json!({})).await?;
        let idle_rss = proc_rss_kib(pid);
        sim.clear_requests();
        let started = Instant::now();
        // Tasks: answered at once with a task id. Synchronous calls: each stays open
        // until its workspace is ready, so they are left running.
        let mut waiting = Vec::new();
        let mut task_ids = Vec::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
            let calls = chunk.iter().map(|i| {
                let (http, url, template) = (http.clone(), serve.url.clone(), template.clone());
                let name = format!("t-{i}");
                async move {
                    let params = json!({"name": "create_workspace",
                        "arguments": {"template_id": template, "name": name}});
                    if tasks {
                        stateless_rpc(&http, &url, "tools/call", "create_workspace", params).await
                    } else {
                        // Sent below, left open: here only what to send.
                        Ok(json!({ "params": params }))
                    }
                }
            });
            for answer in futures::future::join_all(calls).await {
                let answer = answer?;
                if tasks {
                    let id = answer["result"]["taskId"].as_str().unwrap_or_default();
                    anyhow::ensure!(!id.is_empty(), "not a task: {answer}");
                    task_ids.push(id.to_owned());
                } else {
                    let (http, url) = (http.clone(), serve.url.clone());
                    waiting.push(tokio::spawn(async move {
                        let params = answer["params"].clone();
                        sync_call(&http, &url, params).await
                    }));
                }
            }
        }
        // Polled: `wait_until` takes a snapshot of the whole deployment at every change,
        // which with thousands of workspaces costs more than the server under test.
        let deadline = Instant::now() + Duration::from_secs(600);
        while sim.held_build_count() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {n} builds started within 10 minutes",
                sim.held_build_count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created_in = started.elapsed();
        // Every task polled once: all answer `working`.
        let mut working = 0;
        for chunk in task_ids.chunks(64) {
            let polls = chunk
                .iter()
                .map(|id| stateless_rpc(&http, &serve.url, "tasks/get", id, json!({"taskId": id})));
            for answer in futures::future::join_all(polls).await {
                if answer?["result"]["status"] == "working" {
                    working += 1;
                }
            }
        }
        sim.clear_requests();
        let before = proc_rss_kib(pid);
        tokio::time::sleep(window).await;
        let waiting_rss = proc_rss_kib(pid).max(before);
        let fds = proc_fds(pid);
        let requests_while_waiting = sim.requests().len();
        let per_item = waiting_rss.saturating_sub(idle_rss) as f64 / n as f64;

        sim.release_builds();
        let released = Instant::now();
        let mut done = 0;
        let mut pending = task_ids.clone();
        while !pending.is_empty() && released.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut still = Vec::new();
            for chunk in pending.chunks(64) {
                let polls = chunk.iter().map(|id| {
                    stateless_rpc(&http, &serve.url, "tasks/get", id, json!({"taskId": id}))
                });
                for (id, answer) in chunk.iter().zip(futures::future::join_all(polls).await) {
                    match answer?["result"]["status"].as_str() {
                        Some("completed") => done += 1,
                        _ => still.push(id.clone()),
                    }
                }
            }
            pending = still;
        }
        for call in waiting {
            if call.await?.is_ok() {
                done += 1;
            }
        }
        let workspaces = sim.workspaces().len();
        drop(serve);
        sim.shutdown().await;
        Ok::<_, anyhow::Error>((
            per_item,
            idle_rss,
            waiting_rss,
            fds,
            requests_while_waiting,
            working,
            done,
            workspaces,
            created_in,
        ))
    };

    let (task_kib, idle, peak, fds, requests, working, done, workspaces, created_in) =
        run(true, n).await?;
    println!(
        "tasks: {task_kib:.1} KiB per waiting task (RSS {idle} → {peak} KiB), {fds} fds, {working} of {n} working at their first poll, {requests} Coder requests in {}s of waiting, created in {:.1} s; after release {done} completed, {workspaces} workspaces",
        window.as_secs(),
        created_in.as_secs_f64()
    );
    // Thousands of synchronous calls, each holding its request open, take longer to come
    // up than the bench waits (5,984 of 6,000 in 10 minutes): the baseline's cost per call
    // is measured on at most this many.
    let calls = n.min(SYNC_BASELINE_CALLS);
    let (sync_kib, idle, peak, fds, requests, _, done, workspaces, _) = run(false, calls).await?;
    println!(
        "baseline, {calls} synchronous calls waiting over stateless HTTP: {sync_kib:.1} KiB per waiting call (RSS {idle} → {peak} KiB), {fds} fds, {requests} Coder requests in {}s of waiting; after release {done} completed, {workspaces} workspaces",
        window.as_secs()
    );
    println!(
        "ratio: {:.2}× the memory of a waiting synchronous call",
        task_kib / sync_kib.max(0.001)
    );
    Ok(())
}

/// The most synchronous calls the tasks section's baseline holds at once.
const SYNC_BASELINE_CALLS: usize = 1_000;

/// A synchronous create_workspace over stateless HTTP (no tasks): the request stays open
/// until the answer.
async fn sync_call(http: &reqwest::Client, url: &str, params: Value) -> anyhow::Result<Value> {
    let answer = stateless_request(
        http,
        url,
        "tools/call",
        "create_workspace",
        params,
        json!({}),
    )
    .await?;
    let result = &answer["result"];
    anyhow::ensure!(
        result["structuredContent"].is_object() && result["isError"] != true,
        "the synchronous call failed: {}",
        answer.to_string().chars().take(300).collect::<String>()
    );
    Ok(Value::Null)
}
