//! `/healthz` (the process serves) and `/readyz` (and Coder and the store answer).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::App;

/// The last readiness answer and when Coder was asked for it. `/readyz` needs no
/// credentials, so without reusing answers for a moment (`--ready-cache`, 2 s) anyone who
/// can reach it could make the server call Coder as often as they like.
pub struct Readiness {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>,
}

impl Readiness {
    pub fn new(ttl: Duration) -> Readiness {
        Readiness {
            ttl,
            last: Default::default(),
        }
    }
}

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    // Held across the probe: concurrent hits wait for the one probe instead of each
    // starting their own.
    let mut last = app.readiness.last.lock().await;
    if let Some((at, status, body)) = last.as_ref()
        && at.elapsed() < app.readiness.ttl
    {
        return (*status, Json(body.clone())).into_response();
    }
    // Both must answer: without the store, create_workspace cannot keep its promise.
    let (coder, store) = tokio::join!(app.coder.probe(), app.engine.store().ping());
    // Where the store is (host names, paths) is not for unauthenticated callers: the
    // details go to the log.
    let kind = app.engine.store().kind();
    let store_status = match &store {
        Ok(()) => json!({ "status": "ok", "kind": kind }),
        Err(err) => {
            tracing::warn!(error = %err, "readiness: the store does not answer");
            json!({ "status": "unavailable", "kind": kind })
        }
    };
    let (status, body) = match (coder, store) {
        (Ok(info), Ok(())) => (
            StatusCode::OK,
            json!({ "status": "ready", "coder_version": info.version, "store": store_status }),
        ),
        (Ok(info), Err(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "coder_version": info.version, "store": store_status }),
        ),
        (Err(err), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "error": err.to_string(), "store": store_status }),
        ),
    };
    *last = Some((Instant::now(), status, body.clone()));
    (status, Json(body)).into_response()
}
