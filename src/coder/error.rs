//! One error type for every way a Coder call can fail.

use super::types::Response;

/// A failed Coder API call. The `Display` text is written for the model that
/// called the tool: it carries Coder's own `message`, `detail` and `validations`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoderError {
    /// Coder answered with an error status and (usually) a `codersdk.Response` body.
    #[error("{}", describe_api_error(*status, response, *retry_after))]
    Api {
        status: u16,
        response: Response,
        /// How long Coder asked to wait before trying again (`Retry-After`, on 429/503).
        retry_after: Option<std::time::Duration>,
    },
    /// Coder could not be reached (connection refused, DNS, TLS, timeout...).
    #[error("could not reach Coder at {url}: {reason}")]
    Network { url: String, reason: String },
    /// The Coder URL itself is unusable (no request was made).
    #[error("{0}")]
    InvalidUrl(String),
    /// Coder answered with something we could not understand.
    #[error("unexpected answer from Coder for {what}: {reason}")]
    Decode { what: String, reason: String },
}

impl CoderError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 404 Not Found or 410 Gone (how Coder answers for a deleted workspace).
    pub fn is_not_found(&self) -> bool {
        matches!(self.status(), Some(404 | 410))
    }

    /// The workspace name is taken: 409, or the 500 Coder answers when two creates of
    /// one name race past its check and the second insert hits the unique index
    /// (`workspaces_owner_id_lower_idx`).
    pub fn is_name_conflict(&self) -> bool {
        match self {
            Self::Api { status: 409, .. } => true,
            Self::Api {
                status: 500,
                response,
                ..
            } => [&response.message, &response.detail]
                .iter()
                .any(|text| text.contains("workspaces_owner_id_lower_idx")),
            _ => false,
        }
    }

    /// The same error, with how long Coder asked to wait (an API error only).
    pub fn with_retry_after(mut self, after: Option<std::time::Duration>) -> Self {
        if let Self::Api { retry_after, .. } = &mut self {
            *retry_after = after;
        }
        self
    }

    /// How long Coder asked to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth retrying an idempotent request: network failures, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Decode { .. } | Self::InvalidUrl(_) => false,
        }
    }
}

fn describe_api_error(
    status: u16,
    response: &Response,
    retry_after: Option<std::time::Duration>,
) -> String {
    let mut text = if response.message.is_empty() {
        format!("Coder answered HTTP {status}")
    } else {
        format!(
            "Coder answered HTTP {status}: {}",
            response.message.trim_end_matches('.')
        )
    };
    if !response.detail.is_empty() {
        text.push_str(&format!(" ({})", response.detail));
    }
    if !response.validations.is_empty() {
        let fields: Vec<String> = response
            .validations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.detail))
            .collect();
        text.push_str(&format!("; invalid fields: {}", fields.join("; ")));
    }
    if let Some(after) = retry_after {
        text.push_str(&format!(
            "; Coder asked to wait {} before trying again",
            humantime::format_duration(after)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::types::ValidationError;

    #[test]
    fn api_error_carries_message_detail_and_validations() {
        let err = CoderError::Api {
            retry_after: None,
            status: 400,
            response: Response {
                message: "Invalid request.".into(),
                detail: "name is bad".into(),
                validations: vec![ValidationError {
                    field: "name".into(),
                    detail: "must be alphanumeric with hyphens".into(),
                }],
            },
        };
        assert_eq!(
            err.to_string(),
            "Coder answered HTTP 400: Invalid request (name is bad); invalid fields: name: must be alphanumeric with hyphens"
        );
        assert!(!err.is_transient());
    }
}
