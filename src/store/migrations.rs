//! The schema, as numbered migrations embedded in the binary. A database records the
//! versions applied in `coder_mcp_migrations`; at start the missing ones are applied in
//! one transaction, and a database migrated by a newer release is refused rather than
//! misread. Never edit a released migration: add the next one.
//!
//! Tables are prefixed `coder_mcp_` so the store can share a PostgreSQL database with
//! other applications. Ids are stored as text and times as unix seconds, the same in
//! both dialects, so the queries are shared too.

/// One migration, in both dialects.
pub(super) struct Migration {
    pub version: i64,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: r#"
        CREATE TABLE coder_mcp_workspace_keys (
            user_id        TEXT    NOT NULL,
            key            TEXT    NOT NULL,
            template_id    TEXT    NOT NULL,
            workspace_name TEXT    NOT NULL,
            workspace_id   TEXT,
            replaced_id    TEXT,
            replaced_name  TEXT,
            updated_at     INTEGER NOT NULL,
            expires_at     INTEGER NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX coder_mcp_workspace_keys_expiry ON coder_mcp_workspace_keys (expires_at);
    "#,
        postgres: r#"
        CREATE TABLE coder_mcp_workspace_keys (
            user_id        TEXT   NOT NULL,
            key            TEXT   NOT NULL,
            template_id    TEXT   NOT NULL,
            workspace_name TEXT   NOT NULL,
            workspace_id   TEXT,
            replaced_id    TEXT,
            replaced_name  TEXT,
            updated_at     BIGINT NOT NULL,
            expires_at     BIGINT NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX coder_mcp_workspace_keys_expiry ON coder_mcp_workspace_keys (expires_at);
    "#,
    },
    // MCP tasks (the Tasks extension): times in unix milliseconds, but `expires_at` in
    // seconds like the other tables' (the store's clock). BIGINT is INTEGER to SQLite.
    Migration {
        version: 2,
        sqlite: TASKS,
        postgres: TASKS,
    },
    // `serve` as an OAuth 2.1 authorization server (`--public-url`): one shape for every
    // table, a key, the grant (one user's sign-in through Coder) a row belongs to, the
    // row's data (JSON; sealed with the OAuth key where it holds secrets) and its expiry.
    // Codes and tokens are keyed by their SHA-256, never stored themselves.
    Migration {
        version: 3,
        sqlite: OAUTH,
        postgres: OAUTH,
    },
];

/// Migration 2, the same in both dialects (BIGINT is INTEGER to SQLite).
const TASKS: &str = r#"
        CREATE TABLE coder_mcp_tasks (
            task_id        TEXT   NOT NULL PRIMARY KEY,
            user_id        TEXT   NOT NULL,
            request        TEXT   NOT NULL,
            workspace_name TEXT,
            status         TEXT   NOT NULL,
            status_message TEXT,
            result         TEXT,
            owner          TEXT,
            created_at     BIGINT NOT NULL,
            updated_at     BIGINT NOT NULL,
            expires_at     BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_tasks_expiry ON coder_mcp_tasks (expires_at);
        CREATE TABLE coder_mcp_task_keys (
            user_id TEXT NOT NULL,
            key     TEXT NOT NULL,
            task_id TEXT NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX coder_mcp_task_keys_task ON coder_mcp_task_keys (task_id);
        CREATE TABLE coder_mcp_replicas (
            replica_id TEXT   NOT NULL PRIMARY KEY,
            seen_at    BIGINT NOT NULL
        );
"#;

/// Migration 3, the same in both dialects.
const OAUTH: &str = r#"
        CREATE TABLE coder_mcp_oauth_clients (
            key        TEXT   NOT NULL PRIMARY KEY,
            grant_id   TEXT,
            data       TEXT   NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_oauth_clients_expiry ON coder_mcp_oauth_clients (expires_at);
        CREATE TABLE coder_mcp_oauth_pending (
            key        TEXT   NOT NULL PRIMARY KEY,
            grant_id   TEXT,
            data       TEXT   NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_oauth_pending_expiry ON coder_mcp_oauth_pending (expires_at);
        CREATE TABLE coder_mcp_oauth_codes (
            key        TEXT   NOT NULL PRIMARY KEY,
            grant_id   TEXT,
            data       TEXT   NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_oauth_codes_expiry ON coder_mcp_oauth_codes (expires_at);
        CREATE TABLE coder_mcp_oauth_tokens (
            key        TEXT   NOT NULL PRIMARY KEY,
            grant_id   TEXT,
            data       TEXT   NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_oauth_tokens_expiry ON coder_mcp_oauth_tokens (expires_at);
        CREATE TABLE coder_mcp_oauth_grants (
            key        TEXT   NOT NULL PRIMARY KEY,
            grant_id   TEXT,
            data       TEXT   NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX coder_mcp_oauth_grants_expiry ON coder_mcp_oauth_grants (expires_at);
        CREATE INDEX coder_mcp_oauth_codes_grant ON coder_mcp_oauth_codes (grant_id);
        CREATE INDEX coder_mcp_oauth_tokens_grant ON coder_mcp_oauth_tokens (grant_id);
"#;

/// The table of applied versions (the same in both dialects).
pub(super) const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS coder_mcp_migrations (
    version    BIGINT NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";

pub(super) const CURRENT_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM coder_mcp_migrations";

pub(super) const RECORD_VERSION: &str =
    "INSERT INTO coder_mcp_migrations (version, applied_at) VALUES ($1, $2)";

/// The newest version this build knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Refuses a database that a newer release has migrated past what this one knows.
pub(super) fn check_not_newer(current: i64) -> Result<(), String> {
    if current > latest() {
        Err(format!(
            "has schema version {current}, newer than this release knows ({}); upgrade coder-workspace-mcp, or point --store at another database",
            latest()
        ))
    } else {
        Ok(())
    }
}

/// The shared queries (SQLite understands `$N` placeholders too).
pub(super) mod sql {
    pub const GET: &str =
        "SELECT template_id, workspace_name, workspace_id, replaced_id, replaced_name
        FROM coder_mcp_workspace_keys WHERE user_id = $1 AND key = $2";
    pub const PUT: &str = "INSERT INTO coder_mcp_workspace_keys
        (user_id, key, template_id, workspace_name, workspace_id, replaced_id, replaced_name, updated_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (user_id, key) DO UPDATE SET
            template_id = excluded.template_id,
            workspace_name = excluded.workspace_name,
            workspace_id = excluded.workspace_id,
            replaced_id = excluded.replaced_id,
            replaced_name = excluded.replaced_name,
            updated_at = excluded.updated_at,
            expires_at = excluded.expires_at";
    /// Refreshes the retention of a record last refreshed before `$5`.
    pub const TOUCH: &str = "UPDATE coder_mcp_workspace_keys SET updated_at = $3, expires_at = $4
        WHERE user_id = $1 AND key = $2 AND updated_at < $5";
    pub const REMOVE: &str = "DELETE FROM coder_mcp_workspace_keys WHERE user_id = $1 AND key = $2";
    pub const EXPIRE: &str = "DELETE FROM coder_mcp_workspace_keys WHERE expires_at <= $1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
        assert!(check_not_newer(latest()).is_ok());
        assert!(
            check_not_newer(latest() + 1)
                .unwrap_err()
                .contains("upgrade")
        );
    }
}
