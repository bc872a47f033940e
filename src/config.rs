//! Command line, environment and the `coder` CLI's stored login.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::coder::SessionToken;
use crate::engine::EngineConfig;
use crate::store::{StoreLocation, StoreOptions, default_sqlite_path};

/// An MCP server that gives AI agents real development environments: it creates Coder workspaces.
///
/// With no command (or `stdio`) it serves MCP on stdin/stdout, for Claude Desktop, Claude Code,
/// Cursor, VS Code and other clients that launch it as a subprocess. `demo` shows the whole
/// flow against a built-in simulated Coder, no deployment needed.
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
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub coder: CoderArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log level or filter for the logs on stderr (e.g. `info`, `debug`,
    /// `coder_workspace_mcp=trace`). Overrides RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP on stdin/stdout (the default).
    Stdio,
    /// Run list_templates → read_template → create_workspace against a built-in simulated
    /// Coder, through a real MCP session with this binary, showing live progress on stderr.
    Demo,
    /// Serve MCP over HTTP for hosted agents: Streamable HTTP at /mcp, legacy HTTP+SSE at
    /// /sse. Each client authenticates with its own Coder session token
    /// (`Authorization: Bearer <token>`) and acts as that Coder user.
    Serve(ServeArgs),
    /// Run the simulated Coder on its own, to try other MCP clients against it.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
    },
}

/// `serve`: the HTTP transports.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Binding a non-loopback address logs a warning: put a
    /// TLS-terminating proxy in front and set --allowed-host.
    #[arg(long, default_value = "127.0.0.1:8790", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// A host name accepted in the `Host` header besides the loopback names (repeatable),
    /// e.g. the public name behind your reverse proxy. Others get 403 (DNS-rebinding defence).
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// A browser origin (`https://app.example.com`) allowed to call the server (repeatable).
    /// Requests with any other `Origin` get 403; requests without one (non-browser clients) pass.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted (413 above it), e.g. 1MiB, 512KiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body: usize,
    /// Sessions unused this long are closed.
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION")]
    pub session_idle_timeout: Duration,
    /// How long a /readyz answer is reused (it needs no credentials, so it must not let
    /// anyone make the server call Coder at will). Hidden: tests lengthen it.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub ready_cache: Duration,
    /// Most sessions open at once, in all.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_sessions: usize,
    /// Most sessions open at once per token.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_sessions_per_token: usize,
    /// On SIGTERM/SIGINT, how long tool calls in flight may run before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Single-user deployments: every client acts as the server's own Coder identity
    /// (--token/CODER_SESSION_TOKEN). Requires --auth-token.
    #[arg(long, requires = "auth_token")]
    pub shared_identity: bool,
    /// With --shared-identity: the static bearer token clients must present.
    #[arg(
        long,
        env = "CODER_MCP_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = parse_secret
    )]
    pub auth_token: Option<SessionToken>,
}

/// Byte sizes: `1048576`, `512KiB`, `1MiB`, `2MB`, `64kb`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 1MiB, 512KiB)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?} (use B, KiB or MiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Where Coder is and who we are there.
#[derive(Debug, Args)]
pub struct CoderArgs {
    /// URL of the Coder deployment, e.g. https://coder.example.com.
    #[arg(long, env = "CODER_URL", global = true, value_name = "URL")]
    pub coder_url: Option<String>,
    /// Coder session token (create one with `coder tokens create`). Prefer the environment
    /// variable: command-line arguments are visible to other local users.
    #[arg(
        long,
        env = "CODER_SESSION_TOKEN",
        global = true,
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

/// How long to wait, and for what.
#[derive(Debug, Args)]
pub struct TimingArgs {
    /// Longest time a workspace build may take before create_workspace fails (e.g. 90s, 5m).
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub build_timeout: Duration,
    /// Longest time the workspace agent may take to connect after the build; past it the
    /// answer is `agent_status: "not_ready"`, not an error.
    #[arg(long, global = true, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_timeout: Duration,
    /// Longest time the agent's startup scripts may run; past it the answer says
    /// `startup_scripts: "startup_scripts_timeout"`.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub startup_timeout: Duration,
    /// Longest time one create_workspace call waits before answering `status: "building"`
    /// (the model then calls again to keep waiting). Many clients give up on a call after
    /// about 60 s; `0` waits until done, for clients that keep waiting while progress flows.
    #[arg(long, global = true, default_value = "45s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_call_wait: Duration,
    /// How to follow a build: `stream` (Coder's watch stream, polling only as a fallback)
    /// or `polling` (GET every 2 s, like Coder's own tool; the benchmarks' baseline).
    #[arg(long, global = true, default_value = "stream", value_parser = ["stream", "polling"], hide = true)]
    pub watch_mode: String,
    /// While polling for want of a watch stream, how often to try to get the stream
    /// back. Hidden: Coder's own clients use 10 s; tests shorten it.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub stream_retry: Duration,
}

impl TimingArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            build_timeout: self.build_timeout,
            agent_timeout: self.agent_timeout,
            startup_timeout: self.startup_timeout,
            max_call_wait: (!self.max_call_wait.is_zero()).then_some(self.max_call_wait),
            watch: crate::coder::WatchConfig {
                polling_only: self.watch_mode == "polling",
                stream_retry: self.stream_retry,
                ..Default::default()
            },
            ..EngineConfig::default()
        }
    }
}

/// Where what must outlive the process is kept (see the README's idempotency rules).
#[derive(Debug, Args)]
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
        global = true,
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// How long the store keeps a record that is not used (chat ids, names, stdio keys; a
    /// session's records go when the session ends).
    #[arg(long, global = true, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
    pub store_retention: Duration,
    /// stdio: a key for this server's conversation that outlives the process, e.g. one per
    /// project in the client's config. Servers started with the same key (by the same Coder
    /// user) share one workspace, across restarts. Default: each process is a conversation
    /// of its own (after a restart, the name its answers gave finds the workspace).
    #[arg(
        long,
        env = "CODER_MCP_STDIO_SESSION",
        global = true,
        value_name = "KEY"
    )]
    pub stdio_session: Option<String>,
}

impl StoreArgs {
    /// The store location: `--store`, else the default SQLite file.
    pub fn location(&self) -> Result<StoreLocation, String> {
        match &self.store {
            Some(text) => StoreLocation::parse(text).map_err(|e| format!("--store/CODER_MCP_STORE: {e}")),
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

/// Human durations: `90s`, `5m`, `1h 30m`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 90s, 5m, 1h)"))
}

/// A Coder URL and token, and where each came from (for error messages).
#[derive(Debug)]
pub struct Credentials {
    pub url: String,
    pub token: SessionToken,
    pub url_source: String,
    pub token_source: String,
}

/// The `coder` CLI's config directory: `$CODER_CONFIG_DIR`, else `<OS config dir>/coderv2`.
pub fn coder_config_dir() -> Option<PathBuf> {
    match std::env::var_os("CODER_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::config_dir().map(|d| d.join("coderv2")),
    }
}

/// The Coder URL from --coder-url/CODER_URL, else `coder login`'s `url` file, and where it came from.
pub fn resolve_url(args: &CoderArgs) -> Result<(String, String), String> {
    if let Some(url) = args
        .coder_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return Ok((url.to_owned(), "--coder-url/CODER_URL".to_owned()));
    }
    let dir = coder_config_dir();
    dir.as_ref()
        .and_then(|d| {
            let path = d.join("url");
            let text = std::fs::read_to_string(&path).ok()?;
            let text = text.trim().to_owned();
            (!text.is_empty()).then(|| (text, path.display().to_string()))
        })
        .ok_or_else(|| {
            format!(
                "no Coder URL: pass --coder-url or set CODER_URL (or run `coder login <url>`, which stores it in {})",
                describe_dir(dir.as_deref(), "url")
            )
        })
}

/// Resolves the URL and token from flags/environment, falling back to `coder login`'s files.
pub fn resolve_credentials(args: &CoderArgs) -> Result<Credentials, String> {
    let dir = coder_config_dir();
    let from_file = |name: &str| -> Option<(String, String)> {
        let path = dir.as_ref()?.join(name);
        let text = std::fs::read_to_string(&path).ok()?;
        let text = text.trim().to_owned();
        (!text.is_empty()).then(|| (text, path.display().to_string()))
    };
    let (url, url_source) = resolve_url(args)?;
    let (token, token_source) = match args.token.clone().filter(|t| !t.is_empty()) {
        Some(token) => (token, "--token/CODER_SESSION_TOKEN".to_owned()),
        // `coder login` stores the token of the deployment in its `url` file: never send it
        // to another deployment named by --coder-url/CODER_URL.
        None => match (from_file("session"), from_file("url").map(|(u, _)| u)) {
            (Some((token, source)), Some(login_url)) if same_deployment(&url, &login_url) => {
                (SessionToken::new(token), source)
            }
            (Some(_), login_url) => {
                let url = without_credentials(&url);
                return Err(format!(
                    "no Coder session token for {url}: set CODER_SESSION_TOKEN (create a token with `coder tokens create`). The token `coder login` stored in {} belongs to {}, so it is not sent to {url}",
                    describe_dir(dir.as_deref(), "session"),
                    login_url.map_or_else(
                        || "an unrecorded deployment".to_owned(),
                        |u| format!("another deployment ({u})")
                    ),
                ));
            }
            (None, _) => {
                return Err(format!(
                    "no Coder session token: set CODER_SESSION_TOKEN (create a token with `coder tokens create`), or run `coder login` (which stores it in {}; on macOS and Windows it may use the OS keyring instead, then set CODER_SESSION_TOKEN)",
                    describe_dir(dir.as_deref(), "session")
                ));
            }
        },
    };
    Ok(Credentials {
        url,
        token,
        url_source,
        token_source,
    })
}

/// `url` as it may be shown: without a user name or password (refused later anyway).
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether `url` names the deployment `coder login` recorded (trailing slashes and case of
/// scheme and host aside).
fn same_deployment(url: &str, login_url: &str) -> bool {
    let canonical = |u: &str| {
        reqwest::Url::parse(u.trim().trim_end_matches('/'))
            .map(|u| u.to_string().trim_end_matches('/').to_owned())
            .ok()
    };
    canonical(url).is_some() && canonical(url) == canonical(login_url)
}

fn describe_dir(dir: Option<&Path>, file: &str) -> String {
    dir.map_or_else(
        || format!("the coder CLI's config directory ({file})"),
        |d| d.join(file).display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").unwrap_err().contains("use e.g. 90s"));
    }

    #[test]
    fn help_explains_the_flags() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("CODER_SESSION_TOKEN"));
        assert!(help.contains("--max-call-wait"));
    }
}
