//! The Coder REST API: types, a typed client with retries, and the watch streams.
pub mod client;
pub mod error;
pub mod streams;
pub mod token;
pub mod types;

pub use client::CoderClient;
pub use error::CoderError;
pub use streams::{BuildLogFollower, WatchConfig, WatchSource, WorkspaceWatch};
pub use token::SessionToken;
