//! coder-workspace-mcp: an MCP server that creates Coder workspaces for AI agents.
//!
//! Layers, top to bottom: [`cli`]/[`config`] → [`http`] (serve's transports) and stdio →
//! [`tools`] (MCP handlers) → [`engine`] (one workspace per task, waits, progress; no MCP
//! types) over [`store`] (what must outlive the process) → [`coder`] (typed REST client
//! and watch streams). The simulated Coder is a crate of its own (`coder-workspace-sim`),
//! used by the tests, the benchmarks and, with the default `demo` feature, `demo`/`sim`.
pub mod cli;
mod coder;
mod config;
#[cfg(feature = "demo")]
mod demo;
mod engine;
mod http;
mod quote;
mod shutdown;
mod stdfd;
mod stdio;
mod store;
mod tools;
