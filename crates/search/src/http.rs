//! `GET /search` and `GET /search/suggest`.

use crate::model::SearchRequest;
use crate::service::{SearchResponse, SearchService, Suggestion};
use axum::Json;
use axum::extract::{Query, State};
use emporium_kernel::auth::AuthUser;
use emporium_kernel::error::{ApiError, ApiResult, Problem};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(service: Arc<SearchService>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(suggest)).with_state(service)
}

/// Full-text product search with typo tolerance, synonyms, filters, sorts and facets.
#[utoipa::path(get, path = "/search", tag = "search",
    params(
        ("q" = Option<String>, Query, description = "words; typos and synonyms are tolerated"),
        ("category" = Option<String>, Query, description = "category id (sub-categories included)"),
        ("brand" = Option<String>, Query),
        ("price" = Option<String>, Query, description = "MIN-MAX in minor units; either side may be empty"),
        ("sort" = Option<String>, Query, description = "relevance | price_asc | price_desc | rating | newest"),
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query),
        ("lat" = Option<f64>, Query), ("lon" = Option<f64>, Query),
        ("attr.NAME" = Option<String>, Query,
            description = "a category attribute's value, NAME replaced by the attribute's name (`attr.ram_gb=16`, `attr.colour=Black`); several `attr.*` filters all apply"),
    ),
    responses((status = 200, body = SearchResponse), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn search(
    State(svc): State<Arc<SearchService>>,
    user: Option<AuthUser>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<SearchResponse>> {
    let req = SearchRequest::parse(&params).map_err(ApiError::validation)?;
    let response = svc.search(req, user.map(|u| u.id)).await?;
    Ok(Json(Arc::unwrap_or_clone(response)))
}

#[derive(Serialize, ToSchema)]
pub struct Suggestions {
    pub suggestions: Vec<Suggestion>,
}

/// Autocomplete from popular queries and product titles; typo tolerant.
#[utoipa::path(get, path = "/search/suggest", tag = "search", params(("q" = String, Query)),
    responses((status = 200, body = Suggestions), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn suggest(
    State(svc): State<Arc<SearchService>>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Suggestions>> {
    let q = params.get("q").map(String::as_str).unwrap_or_default();
    if q.chars().count() > 100 {
        return Err(ApiError::invalid_field("q", "must be at most 100 characters"));
    }
    Ok(Json(Suggestions { suggestions: svc.suggest(q).await? }))
}
