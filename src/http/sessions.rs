//! The HTTP sessions of both transports: which credential each is bound to (no
//! session hijacking), how many a credential may hold, and when each was last used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use uuid::Uuid;

use crate::coder::SessionToken;

/// Which transport a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    LegacySse,
}

impl Transport {
    /// The prefix of the session key the engine's idempotency uses.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "mcp",
            Transport::LegacySse => "sse",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub credential: SessionToken,
    pub user: Uuid,
    pub transport: Transport,
    pub last_seen: Instant,
}

/// `--max-sessions` and `--max-sessions-per-token`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub total: usize,
    pub per_credential: usize,
}

/// Why a request about a session was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The session id belongs to another credential.
    Foreign,
    TooMany(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::Foreign => (
                StatusCode::FORBIDDEN,
                "this session belongs to another token".to_owned(),
            ),
            Refusal::TooMany(message) => (StatusCode::TOO_MANY_REQUESTS, message),
        };
        tracing::info!(%status, %message, "session refused");
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    }
}

#[derive(Debug)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    limits: SessionLimits,
}

impl SessionRegistry {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().expect("session registry")
    }

    /// May `credential` open one more session?
    pub fn admit(&self, credential: &SessionToken) -> Result<(), Refusal> {
        let sessions = self.lock();
        if sessions.len() >= self.limits.total {
            return Err(Refusal::TooMany(format!(
                "the server has its maximum of {} sessions; try again later",
                self.limits.total
            )));
        }
        let own = sessions
            .values()
            .filter(|s| &s.credential == credential)
            .count();
        if own >= self.limits.per_credential {
            return Err(Refusal::TooMany(format!(
                "this token already has {own} open sessions (the limit); close one (HTTP DELETE) or let it expire"
            )));
        }
        Ok(())
    }

    pub fn register(&self, id: String, credential: SessionToken, user: Uuid, transport: Transport) {
        self.lock().insert(
            id,
            SessionEntry {
                credential,
                user,
                transport,
                last_seen: Instant::now(),
            },
        );
    }

    /// Checks that `id` belongs to `credential` and marks it used. `Ok(None)` for an
    /// unknown id (the transport answers that one itself).
    pub fn check(
        &self,
        id: &str,
        credential: &SessionToken,
    ) -> Result<Option<SessionEntry>, Refusal> {
        let mut sessions = self.lock();
        match sessions.get_mut(id) {
            Some(entry) if &entry.credential != credential => Err(Refusal::Foreign),
            Some(entry) => {
                entry.last_seen = Instant::now();
                Ok(Some(entry.clone()))
            }
            None => Ok(None),
        }
    }

    /// Marks a session used (a message went either way).
    pub fn touch(&self, id: &str) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.last_seen = Instant::now();
        }
    }

    pub fn remove(&self, id: &str) -> Option<SessionEntry> {
        self.lock().remove(id)
    }

    /// Sessions unused for longer than `idle`.
    pub fn idle(&self, idle: Duration) -> Vec<(String, SessionEntry)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_seen) >= idle)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    pub fn ids(&self, transport: Transport) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.transport == transport)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_and_limits() {
        let registry = SessionRegistry::new(SessionLimits {
            total: 3,
            per_credential: 2,
        });
        let (a, b) = (SessionToken::new("a"), SessionToken::new("b"));
        registry.register(
            "1".into(),
            a.clone(),
            Uuid::nil(),
            Transport::StreamableHttp,
        );
        registry.register("2".into(), a.clone(), Uuid::nil(), Transport::LegacySse);
        assert!(matches!(registry.admit(&a), Err(Refusal::TooMany(_))));
        assert!(registry.admit(&b).is_ok());
        registry.register(
            "3".into(),
            b.clone(),
            Uuid::nil(),
            Transport::StreamableHttp,
        );
        assert!(
            matches!(registry.admit(&b), Err(Refusal::TooMany(_))),
            "total limit"
        );
        assert!(matches!(registry.check("1", &b), Err(Refusal::Foreign)));
        assert!(registry.check("1", &a).unwrap().is_some());
        assert!(registry.check("9", &a).unwrap().is_none());
        assert_eq!(registry.ids(Transport::LegacySse), ["2"]);
    }
}
