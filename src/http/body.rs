//! The answers every route shares: the JSON error body, and the request body read
//! within the size limit.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `{"error": "..."}` with `status`: every refusal of the HTTP layer looks like this.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Reads a whole request body, or answers 413 when it grows past `limit` (the guard
/// only sees a declared `Content-Length`; a chunked body is caught here).
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over the limit of {limit} bytes (see --max-body)"),
        )
    })
}
