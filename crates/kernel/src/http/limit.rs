//! Rate-limit middleware: 429 + `Retry-After` when the caller's bucket is empty.

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::RateLimiter;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitScope {
    /// Signed-in callers by user id, guests by address (general API traffic).
    PerUserOrIp,
    /// Always by address: login and registration, where the "user" is what is being guessed.
    PerIp,
}

#[derive(Clone)]
pub struct RateLimitState {
    pub limiter: Option<Arc<dyn RateLimiter>>,
    pub scope: RateLimitScope,
    pub trust_forwarded_for: bool,
}

pub async fn rate_limit(State(state): State<RateLimitState>, req: Request, next: Next) -> Response {
    let Some(limiter) = &state.limiter else {
        return next.run(req).await;
    };
    let key = match (state.scope, req.extensions().get::<AuthUser>()) {
        (RateLimitScope::PerUserOrIp, Some(user)) => format!("user:{}", user.id),
        _ => format!("ip:{}", client_key(&req, state.trust_forwarded_for)),
    };
    match limiter.check(&key) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let scope = match state.scope {
                RateLimitScope::PerIp => "auth",
                RateLimitScope::PerUserOrIp => "api",
            };
            metrics::counter!("rate_limited_total", "scope" => scope).increment(1);
            let mut err = ApiError::new(ErrorCode::RateLimited).with_detail("too many requests; retry later");
            err.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            err.into_response()
        }
    }
}

/// The client's address: the socket peer, or the first `X-Forwarded-For` hop behind a trusted proxy.
pub fn client_key(req: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if let Some(ip) = forwarded {
            return ip.to_owned();
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}
