//! Where the store is: `--store` / `CODER_MCP_STORE`.

use std::path::{Path, PathBuf};

/// The parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// In memory: nothing survives the process (tests and benchmarks).
    Memory,
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…` or `postgresql://…`, `memory`, or a file path (`sqlite://path`
    /// and `sqlite:path` are accepted too).
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "the store location is empty; pass a file path or a postgres:// URL".into(),
            );
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // Checked now, so a typo is a start-up error that names the flag.
            text.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", redact_url(text)))?;
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        if text == "memory" || text == ":memory:" {
            return Ok(StoreLocation::Memory);
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.contains("://") {
            return Err(format!(
                "unknown store URL {}: use a file path (SQLite) or postgres://user:password@host:port/database",
                redact_url(text)
            ));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }

    /// For logs and errors: never shows a password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Memory => "in memory".into(),
            StoreLocation::Sqlite(path) => format!("SQLite at {}", path.display()),
            StoreLocation::Postgres(url) => format!("PostgreSQL at {}", redact_url(url)),
        }
    }
}

/// The default store: `store.db` in `coder-workspace-mcp/` under the OS state directory
/// (`$XDG_STATE_HOME`, else `~/.local/state`, on Linux), or the local data directory
/// where the OS has no state directory (`~/Library/Application Support` on macOS,
/// `%LOCALAPPDATA%` on Windows).
pub fn default_sqlite_path() -> Option<PathBuf> {
    let base = dirs::state_dir().or_else(dirs::data_local_dir)?;
    Some(base.join("coder-workspace-mcp").join("store.db"))
}

/// `url` without its password (and without any query, which may carry one).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Makes sure the directory of `path` exists, readable only by this user where the OS
/// supports it (the store names the user's workspaces).
pub(super) fn prepare_parent(path: &Path) -> std::io::Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            StoreLocation::parse("memory").unwrap(),
            StoreLocation::Memory
        );
        assert_eq!(
            StoreLocation::parse("/tmp/x.db").unwrap(),
            StoreLocation::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            StoreLocation::parse("sqlite:///tmp/x.db").unwrap(),
            StoreLocation::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            StoreLocation::parse("postgres://u:p@localhost:5432/db").unwrap(),
            StoreLocation::Postgres(_)
        ));
        assert!(
            StoreLocation::parse("mysql://x")
                .unwrap_err()
                .contains("unknown store URL")
        );
        assert!(StoreLocation::parse(" ").is_err());
    }

    #[test]
    fn passwords_never_show() {
        let location =
            StoreLocation::parse("postgres://app:s3cret@db.internal:5432/mcp?password=s3cret")
                .unwrap();
        let text = location.describe();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("db.internal:5432/mcp"), "{text}");
        let err = StoreLocation::parse("postgres://app:s3cret@db:notaport/mcp").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
