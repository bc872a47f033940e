//! `/healthz` (the process serves) and `/readyz` (and Coder answers).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.coder.probe().await {
        Ok(info) => {
            Json(json!({ "status": "ready", "coder_version": info.version })).into_response()
        }
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": err.to_string() })),
        )
            .into_response(),
    }
}
