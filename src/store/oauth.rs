//! What `serve` keeps as an OAuth 2.1 authorization server (`--public-url`): registered
//! clients, authorization requests waiting for Coder's answer, authorization codes, our
//! access and refresh tokens, and the grants (a user's sign-in through Coder, with the
//! Coder token it gave) they belong to.
//!
//! Every table has one shape (key, grant, data, expiry), so the store only keeps, finds,
//! takes (reads and deletes at once: a code or refresh token is used once, even across
//! replicas) and expires rows; what a row means is `http::oauth`'s business. Codes and
//! tokens are keyed by their SHA-256 and grants' data is sealed before it gets here.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{Store, StoreError};

/// The OAuth tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthTable {
    Clients,
    Pending,
    Codes,
    Tokens,
    Grants,
}

impl OAuthTable {
    const ALL: [OAuthTable; 5] = [
        OAuthTable::Clients,
        OAuthTable::Pending,
        OAuthTable::Codes,
        OAuthTable::Tokens,
        OAuthTable::Grants,
    ];

    fn name(self) -> &'static str {
        match self {
            OAuthTable::Clients => "coder_mcp_oauth_clients",
            OAuthTable::Pending => "coder_mcp_oauth_pending",
            OAuthTable::Codes => "coder_mcp_oauth_codes",
            OAuthTable::Tokens => "coder_mcp_oauth_tokens",
            OAuthTable::Grants => "coder_mcp_oauth_grants",
        }
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthRow {
    pub grant_id: Option<String>,
    pub data: String,
    /// Unix seconds (the store's clock).
    pub expires_at: i64,
}

type SqlRow = (Option<String>, String, i64);

fn from_sql((grant_id, data, expires_at): SqlRow) -> OAuthRow {
    OAuthRow {
        grant_id,
        data,
        expires_at,
    }
}

/// The queries: the table names come from [`OAuthTable::name`], never from input (so
/// they are safe to `AssertSqlSafe`).
mod sql {
    pub fn put(table: &str) -> String {
        format!(
            "INSERT INTO {table} (key, grant_id, data, expires_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (key) DO UPDATE SET grant_id = excluded.grant_id,
                data = excluded.data, expires_at = excluded.expires_at"
        )
    }
    pub fn get(table: &str) -> String {
        format!("SELECT grant_id, data, expires_at FROM {table} WHERE key = $1 AND expires_at > $2")
    }
    pub fn take(table: &str) -> String {
        format!("DELETE FROM {table} WHERE key = $1 RETURNING grant_id, data, expires_at")
    }
    pub fn remove(table: &str) -> String {
        format!("DELETE FROM {table} WHERE key = $1")
    }
    pub fn remove_grant(table: &str) -> String {
        format!("DELETE FROM {table} WHERE grant_id = $1")
    }
    pub fn count_linked(table: &str) -> String {
        format!("SELECT COUNT(*) FROM {table} WHERE grant_id = $1 AND expires_at > $2")
    }
    pub fn expire(table: &str) -> String {
        format!("DELETE FROM {table} WHERE expires_at <= $1")
    }
}

macro_rules! oauth_queries {
    ($store:ty) => {
        impl $store {
            pub(super) async fn oauth_put(
                &self,
                table: OAuthTable,
                key: &str,
                row: &OAuthRow,
            ) -> Result<(), StoreError> {
                sqlx::query(sqlx::AssertSqlSafe(sql::put(table.name())))
                    .bind(key)
                    .bind(&row.grant_id)
                    .bind(&row.data)
                    .bind(row.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            }

            pub(super) async fn oauth_get(
                &self,
                table: OAuthTable,
                key: &str,
                now: i64,
            ) -> Result<Option<OAuthRow>, StoreError> {
                let row: Option<SqlRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql::get(table.name())))
                        .bind(key)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| self.error(e))?;
                Ok(row.map(from_sql))
            }

            pub(super) async fn oauth_take(
                &self,
                table: OAuthTable,
                key: &str,
            ) -> Result<Option<OAuthRow>, StoreError> {
                let row: Option<SqlRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql::take(table.name())))
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| self.error(e))?;
                Ok(row.map(from_sql))
            }

            pub(super) async fn oauth_remove_grant(
                &self,
                grant_id: &str,
            ) -> Result<(), StoreError> {
                for table in [OAuthTable::Codes, OAuthTable::Tokens] {
                    sqlx::query(sqlx::AssertSqlSafe(sql::remove_grant(table.name())))
                        .bind(grant_id)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| self.error(e))?;
                }
                sqlx::query(sqlx::AssertSqlSafe(sql::remove(OAuthTable::Grants.name())))
                    .bind(grant_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            }

            pub(super) async fn oauth_count_linked(
                &self,
                table: OAuthTable,
                link: &str,
                now: i64,
            ) -> Result<u64, StoreError> {
                let (count,): (i64,) =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql::count_linked(table.name())))
                        .bind(link)
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| self.error(e))?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            pub(super) async fn oauth_expire(&self, now: i64) -> Result<u64, StoreError> {
                let mut removed = 0;
                for table in OAuthTable::ALL {
                    removed += sqlx::query(sqlx::AssertSqlSafe(sql::expire(table.name())))
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| self.error(e))?
                        .rows_affected();
                }
                Ok(removed)
            }
        }
    };
}

oauth_queries!(super::sqlite::SqliteStore);
oauth_queries!(super::postgres::PgStore);

/// The memory backend's OAuth rows (tests and benchmarks).
#[derive(Default)]
pub(super) struct MemoryOAuth {
    rows: Mutex<HashMap<(OAuthTable, String), OAuthRow>>,
}

impl Store {
    /// Writes (or replaces) the row `key` of `table`.
    pub async fn oauth_put(
        &self,
        table: OAuthTable,
        key: &str,
        row: &OAuthRow,
    ) -> Result<(), StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => {
                m.oauth
                    .rows
                    .lock()
                    .insert((table, key.to_owned()), row.clone());
                Ok(())
            }
            super::Backend::Sqlite(s) => self.bounded(s.oauth_put(table, key, row)).await,
            super::Backend::Postgres(s) => self.bounded(s.oauth_put(table, key, row)).await,
        }
    }

    /// The row `key` of `table`, unless it has expired.
    pub async fn oauth_get(
        &self,
        table: OAuthTable,
        key: &str,
    ) -> Result<Option<OAuthRow>, StoreError> {
        let now = self.now();
        match &self.backend {
            super::Backend::Memory(m) => Ok(m
                .oauth
                .rows
                .lock()
                .get(&(table, key.to_owned()))
                .filter(|row| row.expires_at > now)
                .cloned()),
            super::Backend::Sqlite(s) => self.bounded(s.oauth_get(table, key, now)).await,
            super::Backend::Postgres(s) => self.bounded(s.oauth_get(table, key, now)).await,
        }
    }

    /// Deletes the row `key` of `table` and returns it, unless it had expired: of two
    /// callers taking one row (on any replica), one gets it.
    pub async fn oauth_take(
        &self,
        table: OAuthTable,
        key: &str,
    ) -> Result<Option<OAuthRow>, StoreError> {
        let now = self.now();
        let row = match &self.backend {
            super::Backend::Memory(m) => Ok(m.oauth.rows.lock().remove(&(table, key.to_owned()))),
            super::Backend::Sqlite(s) => self.bounded(s.oauth_take(table, key)).await,
            super::Backend::Postgres(s) => self.bounded(s.oauth_take(table, key)).await,
        }?;
        Ok(row.filter(|row| row.expires_at > now))
    }

    /// Deletes a grant with its codes and tokens.
    pub async fn oauth_remove_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => {
                // As the SQL does: codes and tokens by grant, the grant by key (a grant
                // row's own grant column links it to its user's record, not to a grant).
                m.oauth
                    .rows
                    .lock()
                    .retain(|(table, key), row| !match table {
                        OAuthTable::Codes | OAuthTable::Tokens => {
                            row.grant_id.as_deref() == Some(grant_id)
                        }
                        OAuthTable::Grants => key == grant_id,
                        OAuthTable::Clients | OAuthTable::Pending => false,
                    });
                Ok(())
            }
            super::Backend::Sqlite(s) => self.bounded(s.oauth_remove_grant(grant_id)).await,
            super::Backend::Postgres(s) => self.bounded(s.oauth_remove_grant(grant_id)).await,
        }
    }

    /// How many live rows of `table` carry `link` in their grant column (the grants of one
    /// Coder user's sign-in).
    pub async fn oauth_count_linked(
        &self,
        table: OAuthTable,
        link: &str,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        match &self.backend {
            super::Backend::Memory(m) => Ok(m
                .oauth
                .rows
                .lock()
                .iter()
                .filter(|((t, _), row)| {
                    *t == table && row.grant_id.as_deref() == Some(link) && row.expires_at > now
                })
                .count() as u64),
            super::Backend::Sqlite(s) => self.bounded(s.oauth_count_linked(table, link, now)).await,
            super::Backend::Postgres(s) => {
                self.bounded(s.oauth_count_linked(table, link, now)).await
            }
        }
    }

    /// Removes the OAuth rows past their expiry.
    pub(super) async fn oauth_expire(&self, now: i64) -> Result<u64, StoreError> {
        match &self.backend {
            super::Backend::Memory(m) => {
                let mut rows = m.oauth.rows.lock();
                let before = rows.len();
                rows.retain(|_, row| row.expires_at > now);
                Ok((before - rows.len()) as u64)
            }
            super::Backend::Sqlite(s) => self.bounded(s.oauth_expire(now)).await,
            super::Backend::Postgres(s) => self.bounded(s.oauth_expire(now)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreLocation, StoreOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn row(grant: Option<&str>, data: &str, expires_at: i64) -> OAuthRow {
        OAuthRow {
            grant_id: grant.map(str::to_owned),
            data: data.to_owned(),
            expires_at,
        }
    }

    /// Rows are found until they expire, taken once, removed with their grant and swept.
    async fn oauth_rows(store: Store) {
        let now = Arc::new(AtomicI64::new(1_000));
        let clock = now.clone();
        let store = store.with_clock(move || clock.load(Ordering::SeqCst));
        let (codes, tokens, grants) = (OAuthTable::Codes, OAuthTable::Tokens, OAuthTable::Grants);
        store
            .oauth_put(grants, "g1", &row(None, "grant", 5_000))
            .await
            .unwrap();
        store
            .oauth_put(codes, "c1", &row(Some("g1"), "code", 1_100))
            .await
            .unwrap();
        store
            .oauth_put(tokens, "t1", &row(Some("g1"), "a", 2_000))
            .await
            .unwrap();
        store
            .oauth_put(tokens, "t2", &row(Some("g2"), "b", 2_000))
            .await
            .unwrap();
        assert_eq!(
            store.oauth_get(tokens, "t1").await.unwrap(),
            Some(row(Some("g1"), "a", 2_000))
        );
        assert!(
            store.oauth_get(codes, "t1").await.unwrap().is_none(),
            "per table"
        );
        assert_eq!(
            store.oauth_take(codes, "c1").await.unwrap().map(|r| r.data),
            Some("code".into())
        );
        assert!(
            store.oauth_take(codes, "c1").await.unwrap().is_none(),
            "taken once"
        );
        store
            .oauth_put(codes, "c2", &row(Some("g1"), "code", 1_100))
            .await
            .unwrap();
        now.store(1_200, Ordering::SeqCst);
        assert!(
            store.oauth_take(codes, "c2").await.unwrap().is_none(),
            "expired"
        );
        store.oauth_remove_grant("g1").await.unwrap();
        assert!(store.oauth_get(tokens, "t1").await.unwrap().is_none());
        assert!(store.oauth_get(grants, "g1").await.unwrap().is_none());
        assert!(store.oauth_get(tokens, "t2").await.unwrap().is_some());
        now.store(3_000, Ordering::SeqCst);
        store.expire().await.unwrap();
        now.store(1_000, Ordering::SeqCst);
        assert!(
            store.oauth_get(tokens, "t2").await.unwrap().is_none(),
            "swept"
        );
    }

    #[tokio::test]
    async fn oauth_rows_in_memory() {
        oauth_rows(Store::memory()).await;
    }

    #[tokio::test]
    async fn oauth_rows_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        let store = Store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        oauth_rows(store).await;
    }
}
