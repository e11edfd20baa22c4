//! Makes every error response problem+json carrying the request id, whoever produced it: our
//! handlers ([`ApiError`]), axum (405), tower layers (timeouts, panics) or unknown routes.

use crate::error::{ApiError, ErrorCode, PROBLEM_JSON, Problem};
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn problem_middleware(req: Request, next: Next) -> Response {
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let res = crate::telemetry::with_request_id(request_id.clone(), next.run(req)).await;
    finish(res, request_id)
}

fn finish(mut res: Response, request_id: String) -> Response {
    let problem = match res.extensions_mut().remove::<Problem>() {
        Some(problem) => problem,
        None if res.status().is_client_error() || res.status().is_server_error() => {
            let is_problem = res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if is_problem {
                return res;
            }
            ApiError::new(ErrorCode::for_status(res.status())).problem()
        }
        None => return res,
    };
    let problem = Problem { request_id: Some(request_id), status: res.status().as_u16(), ..problem };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

pub async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound).with_detail(format!("no endpoint {method} {}", uri.path()))
}

/// `GET /problems/{code}`: the human-readable meaning of a problem `type`.
pub async fn describe_problem(Path(code): Path<String>) -> Response {
    match ErrorCode::from_code(&code) {
        Some(code) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n\nHTTP status {}. Type {}.\n", code.title(), code.status(), code.type_uri()),
        )
            .into_response(),
        None => ApiError::not_found("problem type").into_response(),
    }
}

/// A panicking handler becomes a logged 500 (rendered as a problem by the middleware above).
pub fn on_panic(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    ApiError::new(ErrorCode::Internal).into_response()
}
