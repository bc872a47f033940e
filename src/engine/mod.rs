//! The creation engine: per-session idempotency, waiting and progress. No MCP types
//! in here, so it can be driven by any transport (and by tests) alike.
pub mod create;
pub mod names;
pub mod outcome;
pub mod params;
pub mod progress;
pub mod session;

pub use create::{CreateRequest, Engine, EngineConfig};
pub use outcome::{CreateError, CreateWorkspaceResult};
pub use progress::{NoProgress, ProgressSink};
pub use session::{MemorySessionStore, SessionKey, SessionStore};
