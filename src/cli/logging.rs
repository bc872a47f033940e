//! Logs go to stderr (in stdio mode stdout carries the protocol), one readable line per
//! event at the default level.

use tracing_subscriber::EnvFilter;

/// Libraries that log request headers (and so the session token) at debug or trace
/// level; they are capped at `info` whatever the requested level.
const HEADER_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
];

/// Sets up logging: `filter` (from `--log-level`), else RUST_LOG, else `default_level`
/// with rmcp's own logs (whole request structures at `info`) kept to warnings.
pub fn init(filter: Option<&str>, default_level: &str) {
    let explicit = filter
        .map(EnvFilter::try_new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::try_new));
    let mut filter = match explicit {
        Some(Ok(filter)) => filter,
        Some(Err(err)) => {
            // Not fatal: the default level, and say why.
            eprintln!(
                "coder-workspace-mcp: ignoring the log filter ({err}); logging at {default_level}"
            );
            default_filter(default_level)
        }
        None => default_filter(default_level),
    };
    for target in HEADER_LOGGING_CRATES {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn default_filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(level);
    for directive in ["rmcp=warn", "sqlx=warn"] {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
