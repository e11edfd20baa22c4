//! The HTTP edge every router goes through, in this order (outermost first): request id,
//! tracing span, problem rendering, panic catching, per-route metrics, timeout, authentication,
//! API rate limit, body-size limit. Services only write handlers and routers.

mod json;
mod limit;
mod metrics;
mod page;
mod problem;

pub use json::{ApiJson, parse_json};
pub use limit::{RateLimitScope, RateLimitState, client_key, rate_limit};
pub use metrics::{render_metrics, track_metrics};
pub use page::{Page, PageRequest, decode_cursor, encode_cursor};
pub use problem::{describe_problem, on_panic, problem_middleware, route_not_found};

use crate::auth::{Authenticator, authenticate};
use crate::ratelimit::RateLimiter;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub struct EdgeConfig {
    pub auth: Authenticator,
    /// `None` disables the per-client API limit.
    pub api_limiter: Option<Arc<dyn RateLimiter>>,
    pub trust_forwarded_for: bool,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

/// Wraps `router` (all routes, including the not-found fallback) in the edge layers.
pub fn edge(router: Router, config: EdgeConfig) -> Router {
    let limit_state = RateLimitState {
        limiter: config.api_limiter,
        scope: RateLimitScope::PerUserOrIp,
        trust_forwarded_for: config.trust_forwarded_for,
    };
    router.fallback(route_not_found).layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(drop_unfit_request_id))
            .layer(axum::middleware::from_fn(no_sniffing))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request<_>| {
                        let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                        tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
                    })
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .layer(axum::middleware::from_fn(problem_middleware))
            .layer(CatchPanicLayer::custom(on_panic))
            .layer(axum::middleware::from_fn(track_metrics))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout))
            .layer(axum::middleware::from_fn_with_state(config.auth, authenticate))
            .layer(axum::middleware::from_fn_with_state(limit_state, rate_limit))
            .layer(DefaultBodyLimit::max(config.body_limit_bytes)),
    )
}

/// Every answer tells browsers to take its `Content-Type` at its word: an uploaded image is
/// never run as a script or page however its bytes look.
async fn no_sniffing(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut res = next.run(req).await;
    res.headers_mut()
        .insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    res
}

/// The longest client-supplied request id kept.
const MAX_REQUEST_ID: usize = 128;

/// A client's `x-request-id` is kept only if it is 1 to 128 letters, digits, `-`, `_`, `.` or
/// `:`: it is echoed and written into every log line of the request, so it must not carry
/// control characters, markup or kilobytes. An unfit one is replaced by our own.
async fn drop_unfit_request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let fit = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        (1..=MAX_REQUEST_ID).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if req.headers().get_all("x-request-id").iter().any(|v| !fit(v))
        || req.headers().get_all("x-request-id").iter().count() > 1
    {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// Request ids are UUIDv7 so they sort by time in logs; a fit client-supplied id is kept.
#[derive(Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().to_string();
        id.parse().ok().map(RequestId::new)
    }
}

/// Parses an id from a path segment. A malformed id cannot name an existing resource, so it is
/// a 404 for `what`, like an unknown one.
pub fn path_id<T: std::str::FromStr>(raw: &str, what: &str) -> crate::ApiResult<T> {
    raw.parse().map_err(|_| crate::ApiError::not_found(what))
}
