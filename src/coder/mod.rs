//! The Coder REST API: types, a typed client with retries, and the watch streams.
pub mod client;
pub mod error;
pub mod streams;
pub mod token;

pub use client::CoderClient;
/// The API's types, shared with the simulated Coder (the `coder-api` crate).
pub use coder_api as types;
pub use error::CoderError;
pub use streams::{BuildLogFollower, WatchConfig, WatchHub};
pub use token::{LiveToken, SessionToken};

/// A Coder user, and the client that acts as them (their own token).
#[derive(Debug)]
pub struct Identity {
    pub client: CoderClient,
    pub user: types::User,
}
