//! The benchmark runner: `cargo bench` (or `cargo bench -- --quick`).
//!
//! Everything runs against the simulated Coder, hosted in this process, and every
//! figure is reported next to a baseline measured in the same run (Coder's own
//! tool's 2-second polling, or a direct HTTP GET of the same Coder endpoint).
//! Results go to stdout, `benches/results.json`, `benches/latency.svg`, and the
//! marked section of `BENCHMARKS.md`. See BENCHMARKS.md for the method.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use coder_workspace_mcp::coder::types::WorkspaceAgentLifecycle;
use coder_workspace_mcp::sim::{AgentPlan, BuildPlan, RecordedRequest, SimCoder, TemplateSpec};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "bench-token-0000000000000000";

struct Options {
    quick: bool,
    /// `--only <section>`: run one section (detection, requests, overhead, scale,
    /// cold-start) and leave the written results alone.
    only: Option<String>,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let options = Options {
        quick: args.iter().any(|a| a == "--quick"),
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned()),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let server = build_server(&root)?;
    println!(
        "coder-workspace-mcp benchmarks{}",
        if options.quick { " (quick)" } else { "" }
    );
    println!("server binary: {}", server.display());
    // The scale section holds thousands of sockets in this process (the simulator's side).
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
            "cold start to initialize answered: p50={:.1} ms (min {:.1}); `--version` floor p50={:.1} ms; binary {:.1} MiB",
            report.cold_start.p50_ms,
            report.cold_start.min_ms,
            report.cold_start.floor_p50_ms,
            report.cold_start.binary_bytes as f64 / (1024.0 * 1024.0)
        );
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
}

impl Serve {
    async fn start(binary: &Path, coder: &str, extra: &[&str]) -> anyhow::Result<Serve> {
        let mut child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-call-wait",
                "0",
                "--max-sessions",
                "100000",
                "--max-sessions-per-token",
                "100000",
                "--log-level",
                "warn,coder_workspace_mcp::http=info",
            ])
            .args(extra)
            .env("CODER_URL", coder)
            .env_remove("CODER_SESSION_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting serve")?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("serve exited before listening")
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Serve {
            child,
            url: format!("{url}/mcp"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
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
            BuildPlan {
                queue_for: Duration::from_millis(10),
                build_for: duration(i),
                agent: AgentPlan {
                    connect_after: Some(Duration::ZERO),
                    scripts_for: Duration::ZERO,
                    lifecycle_end: WorkspaceAgentLifecycle::Ready,
                    startup_log: vec![],
                },
                ..BuildPlan::default()
            },
        );
        ids.push(template.id.to_string());
    }
    Ok((sim, ids))
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

    let mut command = tokio::process::Command::new(binary);
    command
        .arg("stdio")
        .arg("--log-level")
        .arg("warn")
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
    p50_ms: f64,
    min_ms: f64,
    /// Baseline: the same binary's `--version` (exec, argument parsing, exit; no runtime,
    /// no Coder), the floor any start pays.
    floor_p50_ms: f64,
    binary_bytes: u64,
}

async fn cold_start(binary: &Path, runs: usize) -> anyhow::Result<ColdStart> {
    let (sim, _) = deployment(1, |_| Duration::from_secs(1)).await?;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}});
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(binary)
            .args(["stdio", "--log-level", "warn"])
            .env("CODER_URL", sim.url())
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
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if !line.contains("\"serverInfo\"") {
            bail!("unexpected initialize answer: {line}");
        }
        drop(stdin);
        let _ = child.wait().await;
    }
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
        floor_p50_ms: percentile(&floor, 50.0),
        binary_bytes: std::fs::metadata(binary)?.len(),
    })
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
    scale: Scale,
    cold_start: ColdStart,
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
            "| cold start to `initialize` answered (stdio), p50 | {:.1} ms (min {:.1} ms) | {:.1} ms (`--version`: exec and exit) | < 20 ms: {} |\n",
            c.p50_ms, c.min_ms, c.floor_p50_ms, mark(c.p50_ms < 20.0)
        ));
        out.push_str(&format!(
            "| release binary size | {:.1} MiB | | |\n\n",
            c.binary_bytes as f64 / (1024.0 * 1024.0)
        ));
        out.push_str("![detection latency, ours vs 2 s polling](benches/latency.svg)\n");
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
