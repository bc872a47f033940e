//! Injected faults and the request log.

use chrono::{DateTime, Utc};

/// Makes the next `times` requests that match `method` and `path_contains` fail with
/// `status` and a `codersdk.Response` body `{"message": message}`.
///
/// ```ignore
/// sim.inject_fault(Fault::new(Method::GET, "/users/me", 503).times(2));
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: http::Method,
    /// Matched against the request path (e.g. `/api/v2/workspaces/…/watch-ws`),
    /// not the query.
    pub path_contains: String,
    pub status: u16,
    /// How many matching requests still fail.
    pub times: usize,
    pub message: String,
    /// When true the request is processed first and only its response is replaced
    /// by the fault, like a gateway that loses the answer of a request that went through.
    pub after_processing: bool,
    /// A `Retry-After` header (seconds), as Coder sends with 429 and 503.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// One failure with `status` and the status' reason phrase as message.
    pub fn new(method: http::Method, path_contains: impl Into<String>, status: u16) -> Fault {
        let message = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Simulated fault")
            .to_string();
        Fault {
            method,
            path_contains: path_contains.into(),
            status,
            times: 1,
            message,
            after_processing: false,
            retry_after: None,
        }
    }

    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    pub fn message(mut self, message: impl Into<String>) -> Fault {
        self.message = message.into();
        self
    }

    /// Answer with a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Fault {
        self.retry_after = Some(seconds);
        self
    }

    /// Process the request, then answer with the fault (see [`Fault::after_processing`]).
    pub fn after_processing(mut self) -> Fault {
        self.after_processing = true;
        self
    }

    pub(crate) fn matches(&self, method: &http::Method, path: &str) -> bool {
        self.times > 0 && self.method == *method && path.contains(&self.path_contains)
    }
}

/// One request the simulator received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query, e.g. `/api/v2/users/me`.
    pub path: String,
    pub query: Option<String>,
    /// The status answered (101 for an accepted WebSocket upgrade; 0 while the
    /// handler is still running).
    pub status: u16,
    /// The body, if it was JSON.
    pub body: Option<serde_json::Value>,
    /// The username the session token belongs to (None if missing or unknown).
    pub token_user: Option<String>,
    pub at: DateTime<Utc>,
}
