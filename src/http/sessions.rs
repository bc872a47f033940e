//! The HTTP sessions of both transports: which credential each is bound to (no
//! session hijacking), how many a credential may hold, and when each was last used.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
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
    /// When the session was opened.
    pub opened: Instant,
    /// Whether any request came for it after the one that opened it (an `initialized`
    /// notification, a call, its event stream, its `DELETE`).
    pub used: bool,
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
        super::body::error_response(status, &message)
    }
}

/// The sessions, and the slots reserved for sessions still being opened: a slot is
/// taken under the same lock as the limit check, so parallel `initialize` requests
/// cannot all pass the check before any of them is registered.
#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, SessionEntry>,
    reserved: HashMap<SessionToken, usize>,
}

impl Inner {
    fn reserved_total(&self) -> usize {
        self.reserved.values().sum()
    }

    fn release(&mut self, credential: &SessionToken) {
        if let Some(count) = self.reserved.get_mut(credential) {
            *count -= 1;
            if *count == 0 {
                self.reserved.remove(credential);
            }
        }
    }
}

#[derive(Debug)]
pub struct SessionRegistry {
    inner: Arc<Mutex<Inner>>,
    limits: SessionLimits,
}

/// A slot held for a session being opened. Dropping it (the transport opened no
/// session, or the request was abandoned) gives the slot back; [`Reservation::commit`]
/// turns it into the session.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Mutex<Inner>>,
    credential: SessionToken,
    committed: bool,
}

impl Reservation {
    /// Registers the session `id` in the reserved slot.
    pub fn commit(mut self, id: String, user: Uuid, transport: Transport) {
        let mut inner = self.inner.lock();
        inner.release(&self.credential);
        inner.sessions.insert(
            id,
            SessionEntry {
                credential: self.credential.clone(),
                user,
                transport,
                last_seen: Instant::now(),
                opened: Instant::now(),
                used: false,
            },
        );
        drop(inner);
        self.committed = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.inner.lock().release(&self.credential);
        }
    }
}

impl SessionRegistry {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            inner: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Takes a slot for one more session of `credential`, if the limits allow it.
    pub fn reserve(&self, credential: &SessionToken) -> Result<Reservation, Refusal> {
        let mut inner = self.lock();
        if inner.sessions.len() + inner.reserved_total() >= self.limits.total {
            return Err(Refusal::TooMany(format!(
                "the server has its maximum of {} sessions; try again later",
                self.limits.total
            )));
        }
        let own = inner
            .sessions
            .values()
            .filter(|s| &s.credential == credential)
            .count()
            + inner.reserved.get(credential).copied().unwrap_or(0);
        if own >= self.limits.per_credential {
            return Err(Refusal::TooMany(format!(
                "this token already has {own} open sessions (the limit); close one (HTTP DELETE) or let it expire"
            )));
        }
        *inner.reserved.entry(credential.clone()).or_default() += 1;
        Ok(Reservation {
            inner: self.inner.clone(),
            credential: credential.clone(),
            committed: false,
        })
    }

    /// Checks that `id` belongs to `credential` and marks it used (and seen). `Ok(None)`
    /// for an unknown id (the transport answers that one itself).
    pub fn check(
        &self,
        id: &str,
        credential: &SessionToken,
    ) -> Result<Option<SessionEntry>, Refusal> {
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some(entry) if &entry.credential != credential => Err(Refusal::Foreign),
            Some(entry) => {
                entry.last_seen = Instant::now();
                entry.used = true;
                Ok(Some(entry.clone()))
            }
            None => Ok(None),
        }
    }

    /// Marks a session used (a message went either way).
    pub fn touch(&self, id: &str) {
        if let Some(entry) = self.lock().sessions.get_mut(id) {
            entry.last_seen = Instant::now();
        }
    }

    pub fn remove(&self, id: &str) -> Option<SessionEntry> {
        self.lock().sessions.remove(id)
    }

    /// Sessions unused for longer than `idle`.
    pub fn idle(&self, idle: Duration) -> Vec<(String, SessionEntry)> {
        let now = Instant::now();
        self.lock()
            .sessions
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_seen) >= idle)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    /// Sessions opened at least `after` ago and never used since (a client that sent
    /// `initialize` and went away).
    pub fn unused(&self, after: Duration) -> Vec<(String, SessionEntry)> {
        let now = Instant::now();
        self.lock()
            .sessions
            .iter()
            .filter(|(_, e)| !e.used && now.duration_since(e.opened) >= after)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    pub fn ids(&self, transport: Transport) -> Vec<String> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, e)| e.transport == transport)
            .map(|(id, _)| id.clone())
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sessions.len()
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
        registry
            .reserve(&a)
            .unwrap()
            .commit("1".into(), Uuid::nil(), Transport::StreamableHttp);
        // A slot still being opened counts against the limits...
        let pending = registry.reserve(&a).unwrap();
        assert!(matches!(registry.reserve(&a), Err(Refusal::TooMany(_))));
        // ...and is given back when no session came of it.
        drop(pending);
        registry
            .reserve(&a)
            .unwrap()
            .commit("2".into(), Uuid::nil(), Transport::LegacySse);
        assert!(matches!(registry.reserve(&a), Err(Refusal::TooMany(_))));
        let b_slot = registry.reserve(&b).unwrap();
        assert!(
            matches!(registry.reserve(&b), Err(Refusal::TooMany(_))),
            "total limit, reserved slots included"
        );
        b_slot.commit("3".into(), Uuid::nil(), Transport::StreamableHttp);
        assert!(matches!(registry.check("1", &b), Err(Refusal::Foreign)));
        assert!(registry.check("1", &a).unwrap().is_some());
        assert!(registry.check("9", &a).unwrap().is_none());
        // "1" was used just now; "2" and "3" never were.
        let mut unused: Vec<String> = registry
            .unused(Duration::ZERO)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        unused.sort();
        assert_eq!(unused, ["2", "3"]);
        assert!(registry.unused(Duration::from_secs(3600)).is_empty());
        assert_eq!(registry.ids(Transport::LegacySse), ["2"]);
        assert_eq!(registry.len(), 3);
    }
}
