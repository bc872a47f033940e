//! The answers every route shares: the JSON error body, the JSON-RPC error body for a
//! message that cannot be read, and the request body read within the size and time limits.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `{"error": "..."}` with `status`: every refusal of the HTTP layer looks like this.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// [`error_response`] with `Retry-After` (whole seconds, at least 1).
pub fn retry_later(status: StatusCode, message: &str, after: Duration) -> Response {
    let mut response = error_response(status, message);
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// Reads a whole request body, or answers 413 when it grows past `limit` (the guard
/// only sees a declared `Content-Length`; a chunked body is caught here) and 408 when it
/// has not all arrived within `timeout` (`--body-read-timeout`: a client trickling its
/// body must not hold the connection).
pub async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over the limit of {limit} bytes (see --max-body)"),
        )),
        Err(_) => {
            tracing::info!("request body not received in time");
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} (see --body-read-timeout)",
                    humantime::format_duration(timeout)
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

/// `400` with a JSON-RPC error body when `body` is not a JSON-RPC message the MCP server
/// can read: `-32700` (parse error, id null) when it is not JSON, else `-32602` (invalid
/// params) for a request whose `params` do not fit its method, else `-32600` (invalid
/// request), with the message's id when one can be read. `None` when it is a message.
/// (rmcp answers such bodies `415 Unsupported Media Type`, which clients read as a
/// content-type problem.)
pub fn unreadable_message(body: &[u8]) -> Option<Response> {
    // What stdio's line reading forgives and rmcp, which parses the body as it came,
    // would not: nothing at all, or a byte-order mark before the JSON.
    let not_json = if body.trim_ascii().is_empty() {
        Some("the body is empty")
    } else if body.starts_with(b"\xEF\xBB\xBF") {
        Some("the body starts with a byte-order mark (JSON text has none)")
    } else {
        None
    };
    // The stdio framing layer's classifier: one set of rules (and messages) for a
    // message, whichever transport brought it.
    let reply = match not_json {
        Some(why) => serde_json::to_value(crate::stdio::error_response(
            Value::Null,
            crate::stdio::PARSE_ERROR,
            format!("Parse error: {why}"),
        ))
        .unwrap_or_default(),
        None => match crate::stdio::classify(body) {
            crate::stdio::Verdict::Forward(_) => return None,
            crate::stdio::Verdict::Reply(reply) => serde_json::to_value(reply).unwrap_or_default(),
            // On stdio these go unanswered (nothing waits for an answer); an HTTP POST
            // always gets one.
            crate::stdio::Verdict::Ignore(why) => {
                serde_json::to_value(crate::stdio::error_response(
                    Value::Null,
                    -32600,
                    format!("Invalid Request: {why}"),
                ))
                .unwrap_or_default()
            }
        },
    };
    tracing::info!(%reply, "unreadable JSON-RPC message");
    Some((StatusCode::BAD_REQUEST, axum::Json(reply)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(body: &str) -> Option<(StatusCode, Value)> {
        let response = unreadable_message(body.as_bytes())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Some((status, serde_json::from_slice(&bytes).unwrap()))
    }

    #[tokio::test]
    async fn json_rpc_errors_for_unreadable_messages() {
        assert!(
            answer(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
                .await
                .is_none()
        );
        assert!(
            answer(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .await
                .is_none()
        );
        let (status, body) = answer("{not json").await.unwrap();
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], -32700);
        assert_eq!(body["id"], Value::Null);
        // What stdio's lines forgive, a body sent as is to rmcp cannot have.
        for unreadable in [
            "",
            " \n",
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        ] {
            let (status, body) = answer(unreadable).await.unwrap();
            assert_eq!(
                (status, body["error"]["code"].clone(), body["id"].clone()),
                (StatusCode::BAD_REQUEST, json!(-32700), Value::Null),
                "{unreadable:?}"
            );
        }
        let (_, body) = answer(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#)
            .await
            .unwrap();
        assert_eq!(
            (body["error"]["code"].clone(), body["id"].clone()),
            (json!(-32600), json!(7))
        );
        let (_, body) = answer(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":"x"}"#)
            .await
            .unwrap();
        assert_eq!(
            (body["error"]["code"].clone(), body["id"].clone()),
            (json!(-32600), json!("a")),
            "params neither object nor array, as on stdio"
        );
        let (_, body) = answer(
            r#"{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"list_templates","arguments":[1]}}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            (body["error"]["code"].clone(), body["id"].clone()),
            (json!(-32602), json!("b"))
        );
        let (_, body) = answer("[]").await.unwrap();
        assert_eq!(body["error"]["code"], -32600);
        // A batch: one error per request in it, as on stdio.
        let (_, body) = answer(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#)
            .await
            .unwrap();
        assert_eq!(body[0]["id"], 1);
        assert_eq!(body[1]["id"], 2);
        // A malformed notification, unanswered on stdio, gets an answer over HTTP.
        let (status, body) = answer(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(-32600))
        );
    }
}
