//! coder-workspace-mcp: an MCP server that creates Coder workspaces for AI agents.
//!
//! Layers, top to bottom: [`cli`]/[`config`] → [`tools`] (MCP handlers) → [`engine`]
//! (idempotency, waits, progress; no MCP types) → [`coder`] (typed REST client and
//! watch streams). [`sim`] is a simulated Coder for tests and the demo.
pub mod cli;
pub mod coder;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod engine;
pub mod http;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod tools;
