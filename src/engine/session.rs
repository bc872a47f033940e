//! What a session remembers between `create_workspace` calls, and the lock that
//! serializes its creations.
//!
//! A session is keyed by (Coder user, session key) so that a guessed or replayed
//! session id can never reach another user's workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use uuid::Uuid;

/// Whose session this is: the Coder user and a key naming the conversation
/// (`stdio` for a stdio process, the MCP session id over HTTP, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub user: Uuid,
    pub session: String,
}

impl SessionKey {
    pub fn new(user: Uuid, session: impl Into<String>) -> Self {
        Self {
            user,
            session: session.into(),
        }
    }
}

/// The workspace a session created (or adopted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedWorkspace {
    pub id: Uuid,
    pub name: String,
}

/// Where a wait is measured from, so a call that resumes after `--max-call-wait`
/// does not restart the build, agent or startup-script timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitKind {
    Build,
    Agent,
    StartupScripts,
}

/// State guarded by the session lock.
#[derive(Debug, Default)]
pub struct SessionState {
    workspace: Option<RememberedWorkspace>,
    /// Sessionless callers: the workspace made for each requested name.
    named: HashMap<String, RememberedWorkspace>,
    clocks: HashMap<(Uuid, WaitKind), Instant>,
}

impl SessionState {
    pub fn workspace(&self) -> Option<&RememberedWorkspace> {
        self.workspace.as_ref()
    }

    /// The workspace an earlier sessionless call made for `requested` (a name).
    pub fn named(&self, requested: &str) -> Option<&RememberedWorkspace> {
        self.named.get(requested)
    }

    pub fn remember_named(&mut self, requested: &str, workspace: RememberedWorkspace) {
        self.named.insert(requested.to_owned(), workspace);
    }

    /// When waiting of `kind` for `build` began (now, the first time it is asked).
    pub fn wait_started(&mut self, build: Uuid, kind: WaitKind) -> Instant {
        // Only the current build's clocks matter; drop the others.
        self.clocks.retain(|(b, _), _| *b == build);
        *self
            .clocks
            .entry((build, kind))
            .or_insert_with(Instant::now)
    }
}

/// One session: a lock held for the whole of a `create_workspace` call, plus a copy of
/// the remembered workspace that can be read without waiting for the lock.
#[derive(Debug)]
pub struct SessionSlot {
    state: tokio::sync::Mutex<SessionState>,
    peek: Mutex<Option<RememberedWorkspace>>,
    /// The name the call holding the lock is creating a workspace under, before Coder
    /// has answered (so a waiting call can tell the model which one is coming).
    pending: Mutex<Option<String>>,
    last_used: Mutex<Instant>,
}

impl Default for SessionSlot {
    fn default() -> Self {
        Self {
            state: Default::default(),
            peek: Default::default(),
            pending: Default::default(),
            last_used: Mutex::new(Instant::now()),
        }
    }
}

impl SessionSlot {
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, SessionState> {
        self.state.lock().await
    }

    fn touch(&self) {
        *self.last_used.lock().expect("session clock") = Instant::now();
    }

    /// Unused for `idle` and not in use right now.
    fn is_stale(&self, idle: std::time::Duration) -> bool {
        self.last_used.lock().expect("session clock").elapsed() >= idle
            && self.state.try_lock().is_ok()
    }

    /// The remembered workspace, without taking the lock.
    pub fn peek(&self) -> Option<RememberedWorkspace> {
        self.peek.lock().expect("session peek lock").clone()
    }

    /// The name being created right now, without taking the lock.
    pub fn pending(&self) -> Option<String> {
        self.pending.lock().expect("session pending lock").clone()
    }

    /// Sets (or clears) the name being created (call with the lock held).
    pub fn set_pending(&self, name: Option<String>) {
        *self.pending.lock().expect("session pending lock") = name;
    }

    /// Remembers `workspace` as this session's (call with the lock held).
    pub fn remember(&self, state: &mut SessionState, workspace: RememberedWorkspace) {
        *self.peek.lock().expect("session peek lock") = Some(workspace.clone());
        state.workspace = Some(workspace);
    }
}

/// Where sessions live. In memory today; a persistent store (surviving restarts,
/// shared by replicas) would implement the same two methods.
pub trait SessionStore: Send + Sync {
    fn slot(&self, key: &SessionKey) -> Arc<SessionSlot>;
    fn forget(&self, key: &SessionKey);
    /// Forgets sessions unused for `idle` (chat ids and sessionless callers never
    /// announce their end).
    fn sweep(&self, idle: std::time::Duration);
}

/// The in-process session store.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    slots: Mutex<HashMap<SessionKey, Arc<SessionSlot>>>,
}

impl MemorySessionStore {
    pub fn len(&self) -> usize {
        self.slots.lock().expect("session store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemorySessionStore {
    fn slot(&self, key: &SessionKey) -> Arc<SessionSlot> {
        let slot = self
            .slots
            .lock()
            .expect("session store lock")
            .entry(key.clone())
            .or_default()
            .clone();
        slot.touch();
        slot
    }

    fn sweep(&self, idle: std::time::Duration) {
        self.slots
            .lock()
            .expect("session store lock")
            .retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.is_stale(idle));
    }

    fn forget(&self, key: &SessionKey) {
        self.slots.lock().expect("session store lock").remove(key);
    }
}
