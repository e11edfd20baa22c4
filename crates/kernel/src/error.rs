//! One table of error codes. Each code has exactly one HTTP status and one stable problem `type`;
//! every error a client can see is an [`ApiError`] rendered as RFC 9457 problem+json.
//!
//! Services keep their own `thiserror` enums and convert into [`ApiError`] at the HTTP edge.
//! Internal errors carry their cause chain for the log; the client only sees a generic 500 with
//! the request id (added by the problem middleware, which knows it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The error-code table: `(code, status, title)`. The problem `type` is `/problems/{code}`.
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident, $title:literal)),+ $(,)?) => {
        /// Stable machine-readable error codes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),+ }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            pub fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),+ }
            }
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status),+ }
            }
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title),+ }
            }
        }
    };
}

error_codes! {
    MalformedRequest => ("malformed-request", BAD_REQUEST, "The request could not be parsed"),
    MalformedJson => ("malformed-json", BAD_REQUEST, "The request body is not valid JSON"),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "Authentication is required"),
    InvalidCredentials => ("invalid-credentials", UNAUTHORIZED, "The e-mail or password is wrong"),
    InvalidToken => ("invalid-token", UNAUTHORIZED, "The token is invalid, expired or revoked"),
    PaymentRequired => ("payment-failed", PAYMENT_REQUIRED, "The payment was not accepted"),
    Forbidden => ("forbidden", FORBIDDEN, "You are not allowed to do this"),
    NotFound => ("not-found", NOT_FOUND, "The resource does not exist"),
    RouteNotFound => ("route-not-found", NOT_FOUND, "No such endpoint"),
    MethodNotAllowed => ("method-not-allowed", METHOD_NOT_ALLOWED, "The endpoint does not support this method"),
    Timeout => ("timeout", REQUEST_TIMEOUT, "The request took too long"),
    Conflict => ("conflict", CONFLICT, "The request conflicts with the current state"),
    AlreadyExists => ("already-exists", CONFLICT, "The resource already exists"),
    PayloadTooLarge => ("payload-too-large", PAYLOAD_TOO_LARGE, "The request body is too large"),
    UnsupportedMediaType => ("unsupported-media-type", UNSUPPORTED_MEDIA_TYPE, "The request content type is not supported"),
    ValidationFailed => ("validation-failed", UNPROCESSABLE_ENTITY, "The request has invalid fields"),
    RateLimited => ("rate-limited", TOO_MANY_REQUESTS, "Too many requests"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "Internal server error"),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE, "The service is temporarily unavailable"),
    // Codes sharing a status with a more general one come last: `for_status` picks the first.
    IllegalTransition => ("illegal-transition", CONFLICT, "The resource cannot move to that state from its current one"),
    IdempotencyKeyReused => ("idempotency-key-reused", UNPROCESSABLE_ENTITY, "The Idempotency-Key was already used for a different request"),
    IdempotencyKeyInUse => ("idempotency-key-in-use", CONFLICT, "A request with this Idempotency-Key is still being processed"),
}

impl ErrorCode {
    /// The problem `type` URI reference; served as documentation by `GET /problems/{code}`.
    pub fn type_uri(self) -> String {
        format!("/problems/{}", self.code())
    }

    pub fn from_code(code: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// The code a bare status maps to, for responses produced outside our handlers
    /// (axum's 405, a timeout layer's 408, a body limit's 413).
    pub fn for_status(status: StatusCode) -> ErrorCode {
        Self::ALL.iter().copied().find(|c| c.status() == status).unwrap_or(if status.is_server_error() {
            ErrorCode::Internal
        } else {
            ErrorCode::MalformedRequest
        })
    }
}

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Option<Cow<'static, str>>,
    pub errors: Vec<FieldError>,
    /// Extra members merged into the problem object (e.g. `lines` of a stock shortage).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Seconds until a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// Why it happened, for the log only; never sent to the client.
    pub source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self { code, detail: None, errors: Vec::new(), extra: serde_json::Map::new(), retry_after: None, source: None }
    }

    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_extra(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound).with_detail(format!("{what} not found"))
    }

    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Conflict).with_detail(detail)
    }

    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden)
    }

    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::Unauthenticated)
    }

    /// A 422 naming every invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        let mut err = Self::new(ErrorCode::ValidationFailed).with_detail(detail);
        err.errors = errors;
        err
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// A bug or an unavailable dependency: the cause is logged, the client learns nothing.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(ErrorCode::Internal);
        err.source = Some(source.into());
        err
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The problem body as sent (without `request_id`, which the middleware adds).
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: self.code.type_uri(),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.as_deref().map(str::to_owned),
            code: self.code.code().to_owned(),
            errors: self.errors.clone(),
            request_id: None,
            extra: self.extra.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code.code())?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| {
            let e: &(dyn std::error::Error + Send + Sync + 'static) = e.as_ref();
            e as &(dyn std::error::Error + 'static)
        })
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::internal(err)
    }
}

/// An RFC 9457 problem object.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable error code (the last segment of `type`).
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error and every cause under it, `outer: inner: innermost`: what an operator needs in the
/// log when a service's error is turned into another's ("storage failed" alone says nothing).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        cause = inner.source();
    }
    chain
}

/// Another service's error met where it was not expected: logged with its whole cause chain
/// (the request's span carries the request id), and returned as a short text for a generic
/// 503 body, which must not carry the internals.
pub fn dependency_failed(err: &(dyn std::error::Error + 'static)) -> String {
    tracing::error!(error = %error_chain(err), "a service this one depends on failed");
    err.to_string()
}

/// A service's own failure (its storage, a bug) crossing its API: logged here with its whole
/// cause chain, inside the span of the call that failed; the caller gets only the summary.
pub fn internal_failure(err: &(dyn std::error::Error + 'static)) -> String {
    tracing::error!(error = %error_chain(err), "a service failed internally");
    err.to_string()
}

impl Problem {
    pub fn into_response_with_status(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(PROBLEM_JSON));
        res
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.status().is_server_error() {
            match &self.source {
                // `{:#}` prints the whole cause chain on one line.
                Some(source) => {
                    tracing::error!(code = self.code.code(), error = format!("{source:#}"), "request failed")
                }
                None => {
                    tracing::error!(code = self.code.code(), detail = ?self.detail, "request failed")
                }
            }
        }
        let mut problem = self.problem();
        if self.code == ErrorCode::Internal {
            // Never leak internals; the request id is how an operator finds the log line.
            problem.detail = Some("an internal error occurred; quote the request id when reporting it".into());
            problem.extra.clear();
        }
        let mut res = problem.clone().into_response_with_status();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res.extensions_mut().insert(problem);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique_and_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn bare_statuses_map_to_codes() {
        assert_eq!(ErrorCode::for_status(StatusCode::PAYLOAD_TOO_LARGE), ErrorCode::PayloadTooLarge);
        assert_eq!(ErrorCode::for_status(StatusCode::METHOD_NOT_ALLOWED), ErrorCode::MethodNotAllowed);
        assert_eq!(ErrorCode::for_status(StatusCode::BAD_GATEWAY), ErrorCode::Internal);
    }

    #[test]
    fn validation_names_every_field() {
        let err = ApiError::validation(vec![
            FieldError::new("email", "is required"),
            FieldError::new("password", "is required"),
        ]);
        let problem = err.problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors.len(), 2);
        assert!(problem.detail.unwrap().contains("email"));
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("storage failed")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection reset by peer"));
        assert_eq!(error_chain(&err), "storage failed: connection reset by peer");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(anyhow::anyhow!("password=hunter2 leaked"));
        let res = err.into_response();
        let problem = res.extensions().get::<Problem>().unwrap();
        assert!(!problem.detail.as_deref().unwrap().contains("hunter2"));
    }
}
