//! The creation engine: one workspace per task (keys, the pure decision, the store
//! writes around it), waiting and progress. No MCP types in here, so it can be driven
//! by any transport (and by tests) alike.
mod answer;
pub mod create;
pub mod decide;
pub mod keys;
mod lock;
pub mod names;
pub mod outcome;
pub mod params;
pub mod presets;
pub mod progress;
mod resolve;
mod wait;

pub use create::{CreateRequest, Engine, EngineConfig};
pub use keys::{Caller, KeyRecord, TaskKey};
pub use outcome::{AgentStatus, Answer, CallStatus, CreateError, StartupScripts};
pub use progress::ProgressSink;
