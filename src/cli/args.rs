//! The command line: each subcommand takes, and its `--help` shows, only its own flags,
//! in groups.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::coder::{SessionToken, WatchConfig};
use crate::engine::EngineConfig;
use crate::store::{StoreLocation, StoreOptions, default_sqlite_path};

/// An MCP server that gives AI agents real development environments: it creates Coder workspaces.
///
/// With no command (or `stdio`) it serves MCP on stdin/stdout, for Claude Desktop, Claude Code,
/// Cursor, VS Code and other clients that launch it as a subprocess. `serve` serves it over HTTP
/// for hosted agents. `demo` shows the whole flow against a built-in simulated Coder, no
/// deployment needed.
///
/// Coder location and identity come from --coder-url/CODER_URL and --token/CODER_SESSION_TOKEN;
/// when absent, from what `coder login` stored (the files `url` and `session` in
/// $CODER_CONFIG_DIR, else in the OS config directory + `coderv2`).
#[derive(Debug, Parser)]
#[command(
    name = "coder-workspace-mcp",
    version,
    about,
    long_about,
    max_term_width = 100,
    // The flags below are `stdio`'s, for the command-less form; with a command, each
    // command takes its own.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub stdio: StdioArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP on stdin/stdout (the default).
    Stdio(Box<StdioArgs>),
    /// Serve MCP over HTTP for hosted agents: Streamable HTTP at /mcp, legacy HTTP+SSE at
    /// /sse. Each client authenticates with its own Coder session token
    /// (`Authorization: Bearer <token>`) and acts as that Coder user.
    Serve(Box<ServeArgs>),
    /// Run list_templates → read_template → create_workspace against a built-in simulated
    /// Coder, through a real MCP session with this binary: progress on stderr, the results
    /// on stdout.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run the simulated Coder on its own, to try other MCP clients against it.
    #[cfg(feature = "demo")]
    Sim(SimArgs),
}

impl Command {
    /// The logging flags of the command.
    pub fn log(&self) -> &LogArgs {
        match self {
            Command::Stdio(args) => &args.log,
            Command::Serve(args) => &args.log,
            #[cfg(feature = "demo")]
            Command::Demo(args) => &args.log,
            #[cfg(feature = "demo")]
            Command::Sim(args) => &args.log,
        }
    }
}

/// `stdio`.
#[derive(Debug, Args)]
pub struct StdioArgs {
    #[command(flatten)]
    pub coder: CoderArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// A key for this server's conversation that outlives the process, e.g. one per
    /// project in the client's config. Servers started with the same key (by the same Coder
    /// user) share one workspace, across restarts. Default: each process is a conversation
    /// of its own (after a restart, the name its answers gave finds the workspace).
    #[arg(
        long,
        env = "CODER_MCP_STDIO_SESSION",
        hide_env_values = true,
        value_name = "KEY",
        help_heading = "Store"
    )]
    pub stdio_session: Option<String>,
    /// Longest line (one JSON-RPC message) read from stdin, e.g. 1MiB, 512KiB. A longer line
    /// is answered with an error (-32600) and skipped without being held in memory; the
    /// session goes on. Like `serve`'s --max-body: tool calls are a few KiB.
    #[arg(
        long,
        default_value = "1MiB",
        value_name = "SIZE",
        value_parser = parse_line_limit,
        help_heading = "stdio"
    )]
    pub max_line: ByteSize,
    /// The async runtime stdio is served on. Hidden: `multi-thread` is the benchmarks'
    /// baseline (see BENCHMARKS.md, "The MCP layer over stdio").
    #[arg(long, default_value = "current-thread", value_enum, hide = true)]
    pub runtime: RuntimeFlavor,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Which tokio runtime serves stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeFlavor {
    /// One thread: a request goes from stdin to Coder and back without a thread hand-off.
    CurrentThread,
    /// A worker per core, as `serve` uses.
    MultiThread,
}

/// A line limit: a size of at least 1 KiB (an `initialize` message needs a few hundred bytes).
fn parse_line_limit(text: &str) -> Result<ByteSize, String> {
    let size: ByteSize = text.trim().parse()?;
    if size.as_u64() < 1024 {
        return Err(format!(
            "{size} is too small for an MCP message (use e.g. 1MiB)"
        ));
    }
    Ok(size)
}

/// `serve`: the HTTP transports.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Binding a non-loopback address logs a warning: put a
    /// TLS-terminating proxy in front and set --allowed-host.
    #[arg(
        long,
        default_value = "127.0.0.1:8790",
        value_name = "ADDR",
        help_heading = "HTTP"
    )]
    pub listen: SocketAddr,
    /// A host name accepted in the `Host` header besides the loopback names (repeatable),
    /// e.g. the public name behind your reverse proxy. Others get 403 (DNS-rebinding defence).
    #[arg(long = "allowed-host", value_name = "HOST", help_heading = "HTTP")]
    pub allowed_hosts: Vec<String>,
    /// A browser origin (`https://app.example.com`) allowed to call the server (repeatable).
    /// Requests with any other `Origin` get 403; requests without one (non-browser clients) pass.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", help_heading = "HTTP")]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted (413 above it), e.g. 1MiB, 512KiB.
    #[arg(
        long,
        default_value = "1MiB",
        value_name = "SIZE",
        help_heading = "HTTP"
    )]
    pub max_body: ByteSize,
    /// Sessions unused this long are closed.
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION", help_heading = "HTTP")]
    pub session_idle_timeout: Duration,
    /// Sessions opened and never used (no request after `initialize`, or no message after
    /// `GET /sse`) are closed after this, and stop counting against the session limits.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", help_heading = "HTTP")]
    pub unused_session_timeout: Duration,
    /// How long a client may take to send a request's headers (from connecting, or from the
    /// first byte of a next request); then the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Connections")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body; then 408 and the connection is
    /// closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Connections")]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request; then it is closed.
    /// Keep it above a reverse proxy's upstream keep-alive (nginx: 60s; AWS ALB: 60s).
    #[arg(long, default_value = "90s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Connections")]
    pub keep_alive_timeout: Duration,
    /// Most open connections, in all; a connection beyond gets 503 and is closed.
    #[arg(
        long,
        default_value_t = 2048,
        value_name = "N",
        help_heading = "Connections"
    )]
    pub max_connections: usize,
    /// Most open connections per client address (IPv6: per /64); a connection beyond gets
    /// 429 and is closed. Behind a reverse proxy every connection comes from the proxy:
    /// raise it (0: no per-address cap).
    #[arg(
        long,
        default_value_t = 256,
        value_name = "N",
        help_heading = "Connections"
    )]
    pub max_connections_per_address: usize,
    /// Failed authentications a client address may have per minute; beyond them, requests
    /// whose token would have to be checked with Coder get 429 with Retry-After (0: no limit).
    #[arg(
        long,
        default_value_t = 10,
        value_name = "N",
        help_heading = "Identity"
    )]
    pub max_auth_failures: u32,
    /// After Coder failed to check a token (5xx, unreachable), how long new tokens are
    /// answered 503 at once instead of asking Coder again. Hidden: tests lengthen it.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub coder_outage_hold: Duration,
    /// How long a /readyz answer is reused (it needs no credentials, so it must not let
    /// anyone make the server call Coder at will). Hidden: tests lengthen it.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub ready_cache: Duration,
    /// Most sessions open at once, in all.
    #[arg(long, default_value_t = 1000, value_name = "N", help_heading = "HTTP")]
    pub max_sessions: usize,
    /// Most sessions open at once per token.
    #[arg(long, default_value_t = 20, value_name = "N", help_heading = "HTTP")]
    pub max_sessions_per_token: usize,
    /// On SIGTERM/SIGINT, how long tool calls in flight may run before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", help_heading = "HTTP")]
    pub shutdown_grace: Duration,
    /// Single-user deployments: every client that presents --auth-token (or
    /// CODER_MCP_AUTH_TOKEN) acts as the server's own Coder identity
    /// (--token/CODER_SESSION_TOKEN).
    #[arg(long, help_heading = "Identity")]
    pub shared_identity: bool,
    /// With --shared-identity: the static bearer token clients must present.
    #[arg(
        long,
        env = "CODER_MCP_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = parse_secret,
        help_heading = "Identity"
    )]
    pub auth_token: Option<SessionToken>,
    /// Sign in with Coder (OAuth 2.1): this server's public URL (https://mcp.example.com),
    /// where MCP clients reach it. Serves OAuth metadata, /register, /authorize, /token and
    /// /revoke, and sends users to Coder to sign in as the Coder OAuth2 app given by
    /// --coder-oauth-client-id/-secret (its callback URL: <public-url>/callback). Needs
    /// CODER_MCP_OAUTH_KEY in the environment: 32 random bytes, base64 (`openssl rand
    /// -base64 32`), which encrypts the users' Coder tokens in the store.
    #[arg(
        long,
        env = "CODER_MCP_PUBLIC_URL",
        value_name = "URL",
        help_heading = "OAuth"
    )]
    pub public_url: Option<String>,
    /// The client id of this server's OAuth2 app in Coder.
    #[arg(
        long,
        env = "CODER_MCP_OAUTH_CLIENT_ID",
        value_name = "ID",
        help_heading = "OAuth"
    )]
    pub coder_oauth_client_id: Option<String>,
    /// The client secret of this server's OAuth2 app in Coder. Prefer the environment
    /// variable.
    #[arg(
        long,
        env = "CODER_MCP_OAUTH_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        value_parser = parse_secret,
        help_heading = "OAuth"
    )]
    pub coder_oauth_client_secret: Option<SessionToken>,
    /// Turn off RFC 7591 dynamic client registration (/register); clients must then be
    /// known another way.
    #[arg(long, help_heading = "OAuth")]
    pub no_client_registration: bool,
    /// Turn off Client ID Metadata Documents: by default a client may use the https URL of
    /// a JSON document describing it as its client_id, with no registration (the MCP
    /// authorization spec's preferred way); this server then fetches that URL (https only,
    /// public addresses only, no redirects, 5 KiB at most).
    #[arg(long, help_heading = "OAuth")]
    pub no_client_metadata_documents: bool,
    /// Fetch client metadata documents over http and from loopback and private addresses.
    /// Hidden: for tests only (it opens the server to request forgery).
    #[arg(long, hide = true)]
    pub oauth_allow_private_client_metadata: bool,
    /// Client registrations a client address may make per hour (registration is open to
    /// anyone, as RFC 7591 and MCP expect; beyond it, 429 with Retry-After). Behind a
    /// reverse proxy every registration comes from the proxy: raise it (0: no limit).
    #[arg(long, default_value_t = 20, value_name = "N", help_heading = "OAuth")]
    pub max_registrations: u32,
    /// How long the access tokens this server issues last. Hidden: tests shorten it.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub oauth_access_token_lifetime: Duration,
    /// How long refresh tokens (and a sign-in not used) last.
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION", help_heading = "OAuth")]
    pub oauth_refresh_token_lifetime: Duration,
    #[command(flatten)]
    pub coder: CoderArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `demo`.
#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub log: LogArgs,
}

/// `sim`.
#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Register an OAuth2 app of the simulated Coder with this callback URL (for `serve
    /// --public-url X`: X/callback) and print its CODER_MCP_OAUTH_CLIENT_ID and
    /// CODER_MCP_OAUTH_CLIENT_SECRET on stderr. Coder's /oauth2/authorize then consents at
    /// once as --oauth-user, with no browser, so a script can sign in by following the
    /// redirects. (At debug level, `--log-level coder_workspace_sim::oauth=debug`, the
    /// simulator logs each access token it issues, so a test can check that none leaks.)
    #[arg(long, value_name = "URL", value_parser = parse_callback_url, help_heading = "OAuth")]
    pub oauth_app_redirect: Option<String>,
    /// The user signed in at the simulated Coder's /oauth2/authorize; added to the
    /// deployment (a member of its organization) if there is none of that name.
    #[arg(
        long,
        default_value = "demo",
        value_name = "USERNAME",
        requires = "oauth_app_redirect",
        help_heading = "OAuth"
    )]
    pub oauth_user: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where Coder is and who we are there.
#[derive(Debug, Args)]
#[command(next_help_heading = "Coder")]
pub struct CoderArgs {
    /// URL of the Coder deployment, e.g. https://coder.example.com.
    #[arg(long, env = "CODER_URL", hide_env_values = true, value_name = "URL")]
    pub coder_url: Option<String>,
    /// Coder session token (create one with `coder tokens create`). Prefer the environment
    /// variable: command-line arguments are visible to other local users.
    #[arg(
        long,
        env = "CODER_SESSION_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = parse_secret
    )]
    pub token: Option<SessionToken>,
}

/// Secrets are parsed straight into the redacting type, so even a `Debug` print of
/// the command line cannot show them.
fn parse_secret(text: &str) -> Result<SessionToken, String> {
    Ok(SessionToken::new(text))
}

/// How a build is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchMode {
    /// Coder's watch stream, polling only as a fallback.
    Stream,
    /// GET every 2 s, like Coder's own tool (the benchmarks' baseline).
    Polling,
}

/// How long to wait, and for what.
#[derive(Debug, Args)]
#[command(next_help_heading = "Waiting")]
pub struct TimingArgs {
    /// Longest time a workspace build may take before create_workspace fails (e.g. 90s, 5m).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub build_timeout: Duration,
    /// Longest time the workspace agent may take to connect after the build; past it the
    /// answer is `agent_status: "not_ready"`, not an error.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_timeout: Duration,
    /// Longest time the agent's startup scripts may run; past it the answer says
    /// `startup_scripts: "startup_scripts_timeout"`.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub startup_timeout: Duration,
    /// Longest time one create_workspace call waits before answering `status: "building"`
    /// (the model then calls again to keep waiting). Many clients give up on a call after
    /// about 60 s; `0` waits until done, for clients that keep waiting while progress flows.
    #[arg(long, default_value = "45s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_call_wait: Duration,
    /// How to follow a build. Hidden: `polling` is the benchmarks' baseline.
    #[arg(long, default_value = "stream", value_enum, hide = true)]
    pub watch_mode: WatchMode,
    /// While polling for want of a watch stream, how often to try to get the stream
    /// back. Hidden: Coder's own clients use 10 s; tests shorten it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub stream_retry: Duration,
    /// How long a create_workspace task (for clients of the MCP Tasks extension) and its
    /// result are kept after it was created; then `tasks/get` no longer knows it.
    #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub task_ttl: Duration,
    /// How often task clients are asked to poll `tasks/get` (`pollIntervalMs`).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub task_poll_interval: Duration,
    /// How often this server records in the store that it is alive; a live task whose
    /// server has not been seen for three of these is taken over by the next server
    /// asked about it. Hidden: tests shorten it.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub task_heartbeat: Duration,
}

impl TimingArgs {
    pub fn task_options(&self) -> crate::tools::tasks::TaskOptions {
        crate::tools::tasks::TaskOptions {
            ttl: self.task_ttl,
            poll_interval: self.task_poll_interval,
            heartbeat: self.task_heartbeat,
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            build_timeout: self.build_timeout,
            agent_timeout: self.agent_timeout,
            startup_timeout: self.startup_timeout,
            max_call_wait: (!self.max_call_wait.is_zero()).then_some(self.max_call_wait),
            watch: WatchConfig {
                polling_only: self.watch_mode == WatchMode::Polling,
                stream_retry: self.stream_retry,
                ..Default::default()
            },
            ..EngineConfig::default()
        }
    }
}

/// Where what must outlive the process is kept (see the README's idempotency rules).
#[derive(Debug, Args)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Where to keep which workspace belongs to which task (chat, session, stdio process,
    /// workspace name), so calling again finds it after restarts: an SQLite file (default:
    /// coder-workspace-mcp/store.db under the OS state directory, e.g.
    /// ~/.local/state/coder-workspace-mcp/store.db), or postgres://user:password@host:5432/db
    /// for `serve` replicas sharing one database. `memory` keeps nothing (tests).
    // Parsed later, not by clap: clap would quote a bad value whole, password included.
    #[arg(
        long,
        env = "CODER_MCP_STORE",
        hide_env_values = true,
        value_name = "PATH|URL"
    )]
    pub store: Option<String>,
    /// How long the store keeps a record that is not used (chat ids, names, stdio keys; a
    /// session's records go when the session ends).
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
    pub store_retention: Duration,
}

impl StoreArgs {
    /// The store location: `--store`, else the default SQLite file.
    pub fn location(&self) -> Result<StoreLocation, String> {
        match &self.store {
            Some(text) => StoreLocation::parse(text)
                .map_err(|e| format!("--store/CODER_MCP_STORE: {e}")),
            None => default_sqlite_path().map(StoreLocation::Sqlite).ok_or_else(|| {
                "no OS state directory to keep the store in: pass --store <file> (or a postgres:// URL)".to_owned()
            }),
        }
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            retention: self.store_retention,
            ..StoreOptions::default()
        }
    }
}

/// Logging.
#[derive(Debug, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log level or filter for the logs on stderr (e.g. `info`, `debug`,
    /// `coder_workspace_mcp=trace`). Overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// An absolute http(s) URL, as Coder wants an OAuth2 app's callback URL.
#[cfg(feature = "demo")]
fn parse_callback_url(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err("must be an absolute http(s) URL, e.g. http://127.0.0.1:8790/callback".into()),
    }
}

/// Human durations: `90s`, `5m`, `1h 30m`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 90s, 5m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_and_durations() {
        let size: ByteSize = "1MiB".parse().unwrap();
        assert_eq!(size.as_u64(), 1 << 20);
        assert_eq!("512KiB".parse::<ByteSize>().unwrap().as_u64(), 512 << 10);
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").unwrap_err().contains("use e.g. 90s"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_command_shows_only_its_own_flags() {
        let mut cli = Cli::command();
        let help = |cli: &mut clap::Command, name: &str| {
            cli.find_subcommand_mut(name)
                .map(|c| c.render_long_help().to_string())
                .unwrap_or_default()
        };
        let stdio = help(&mut cli, "stdio");
        assert!(stdio.contains("--max-call-wait") && stdio.contains("--stdio-session"));
        assert!(!stdio.contains("--listen") && !stdio.contains("--allowed-host"));
        let serve = help(&mut cli, "serve");
        assert!(serve.contains("--listen") && serve.contains("--store"));
        assert!(!serve.contains("--stdio-session"));
        #[cfg(feature = "demo")]
        {
            let demo = help(&mut cli, "demo");
            assert!(!demo.contains("--coder-url") && !demo.contains("--max-call-wait"));
            let sim = help(&mut cli, "sim");
            assert!(sim.contains("--listen <ADDR>") && !sim.contains("--token"));
            assert!(sim.contains("--oauth-app-redirect <URL>") && !serve.contains("--oauth-user"));
        }
    }
}
