//! `/healthz` (the process is up) and `/readyz` (every database of this process answers).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use emporium_kernel::cache::Cache;
use emporium_kernel::db::Db;
use emporium_kernel::error::{ApiError, ErrorCode, Problem};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// Per dependency: `ok` or the failure.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
}

/// What readiness checks: every database of this process and the shared cache, if any.
pub struct Dependencies {
    pub databases: Vec<Db>,
    pub cache: Option<Arc<dyn Cache>>,
}

pub fn router(dependencies: Dependencies) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).layer(Extension(Arc::new(dependencies)))
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", checks: BTreeMap::new() })
}

/// Readiness: every database of this process answers a query, and Redis answers when configured.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn readyz(Extension(dependencies): Extension<Arc<Dependencies>>) -> Response {
    let mut checks = BTreeMap::new();
    let mut ready = true;
    if let Some(cache) = &dependencies.cache {
        let outcome = match tokio::time::timeout(std::time::Duration::from_secs(2), cache.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(err)) => format!("error: {err}"),
            Err(_) => "error: timed out".to_owned(),
        };
        ready &= outcome == "ok";
        checks.insert(format!("cache:{}", cache.kind()), outcome);
    }
    for db in dependencies.databases.iter() {
        let result = tokio::time::timeout(std::time::Duration::from_secs(2), db.ping()).await;
        let outcome = match result {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(err)) => {
                ready = false;
                format!("error: {err}")
            }
            Err(_) => {
                ready = false;
                "error: timed out".to_owned()
            }
        };
        checks.insert(format!("database:{}", db.service()), outcome);
    }
    if ready {
        (StatusCode::OK, Json(Health { status: "ready", checks })).into_response()
    } else {
        ApiError::new(ErrorCode::Unavailable)
            .with_detail("a dependency is not ready")
            .with_extra("checks", checks)
            .into_response()
    }
}
