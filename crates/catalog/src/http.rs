//! `/categories` and `/products` endpoints.

use crate::model::{AttributeDef, Product, Rating, ResolvedCategory, Review, parse_price, parse_rating, parse_sku};
use crate::service::{CatalogService, NewCategory, NewReview, ProductDraft, ProductPatch};
use axum::Json;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use emporium_kernel::auth::AuthUser;
use emporium_kernel::error::{ApiResult, Problem};
use emporium_kernel::http::{ApiJson, Page, PageRequest, path_id};
use emporium_kernel::ids::{CategoryId, ProductId, ReviewId, UserId};
use emporium_kernel::money::Money;
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<CatalogService>>;

pub fn router(service: Arc<CatalogService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(get_category))
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(list_reviews, create_review))
        .routes(routes!(get_image))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_image))
                // Uploads get a larger body limit than the API's default.
                .route_layer(DefaultBodyLimit::max(crate::service::MAX_IMAGE_BYTES + 64 * 1024)),
        )
        .with_state(service)
}

// --- DTOs ----------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryView {
    pub id: CategoryId,
    pub name: String,
    pub parent_id: Option<CategoryId>,
    /// Names from the root category down to this one.
    pub path: Vec<String>,
    /// Every attribute a product of this category has: the parents' first, then its own.
    pub attributes: Vec<AttributeDef>,
    pub created_at: DateTime<Utc>,
}

impl From<ResolvedCategory> for CategoryView {
    fn from(c: ResolvedCategory) -> Self {
        Self {
            id: c.category.id,
            name: c.category.name,
            parent_id: c.category.parent_id,
            path: c.path_names,
            attributes: c.attributes,
            created_at: c.category.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CategoryRequest {
    #[schema(required = true)]
    pub name: Option<String>,
    pub parent_id: Option<String>,
    /// This category's own attribute definitions.
    pub attributes: Option<Vec<AttributeDef>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RatingView {
    pub average: f64,
    pub count: i64,
}

impl From<Rating> for RatingView {
    fn from(r: Rating) -> Self {
        Self { average: r.average(), count: r.count }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    pub available: i64,
    pub in_stock: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: ProductId,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub brand: String,
    pub category_id: CategoryId,
    pub price: Money,
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, Value>,
    pub images: Vec<String>,
    pub rating: RatingView,
    pub promoted: bool,
    /// Aggregated across warehouses; zero until stock is received.
    pub stock: StockView,
    pub seller_id: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            sku: p.sku,
            title: p.title,
            description: p.description,
            brand: p.brand,
            category_id: p.category_id,
            price: p.price,
            attributes: p.attributes,
            images: p.images,
            rating: p.rating.into(),
            promoted: p.promoted,
            stock: StockView { available: 0, in_stock: false },
            seller_id: p.seller_id,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductSummary {
    pub id: ProductId,
    pub sku: String,
    pub title: String,
    pub brand: String,
    pub category_id: CategoryId,
    pub price: Money,
    pub rating: RatingView,
    pub promoted: bool,
    pub image: Option<String>,
}

impl From<Product> for ProductSummary {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            sku: p.sku,
            title: p.title,
            brand: p.brand,
            category_id: p.category_id,
            price: p.price,
            rating: p.rating.into(),
            promoted: p.promoted,
            image: p.images.into_iter().next(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProductRequest {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    pub category_id: Option<String>,
    pub price: Option<Money>,
    /// Values for the category's attributes, e.g. `{"ram_gb": 16, "colour": "Silver"}`.
    #[schema(value_type = Object)]
    pub attributes: Option<Map<String, Value>>,
    pub promoted: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only products of this category and its sub-categories.
    pub category: Option<String>,
    pub cursor: Option<String>,
    /// 1..=100, default 20.
    pub limit: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewView {
    pub id: ReviewId,
    pub product_id: ProductId,
    pub user_id: UserId,
    pub rating: i32,
    pub title: Option<String>,
    pub body: Option<String>,
    pub verified_purchase: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Review> for ReviewView {
    fn from(r: Review) -> Self {
        Self {
            id: r.id,
            product_id: r.product_id,
            user_id: r.user_id,
            rating: r.rating,
            title: r.title,
            body: r.body,
            verified_purchase: r.verified_purchase,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewRequest {
    /// 1..=5
    #[schema(required = true)]
    pub rating: Option<i64>,
    pub title: Option<String>,
    pub body: Option<String>,
}

fn single_line(max: usize) -> impl Fn(String) -> Result<String, String> {
    move |s| text(&s, 1, max, false)
}

fn optional_id<T: std::str::FromStr>(raw: String) -> Result<T, &'static str> {
    raw.parse().map_err(|_| "is not a valid id")
}

// --- categories ----------------------------------------------------------------------------------

/// Every category with its effective attributes.
#[utoipa::path(get, path = "/categories", tag = "catalog", responses((status = 200, body = Page<CategoryView>)))]
async fn list_categories(State(svc): Service) -> ApiResult<Json<Page<CategoryView>>> {
    let all = svc.categories().await?;
    let items = all.iter().filter_map(|c| crate::model::resolve_category(&all, c.id)).map(CategoryView::from).collect();
    Ok(Json(Page::all(items)))
}

/// One category with its path and effective attributes.
#[utoipa::path(get, path = "/categories/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, body = CategoryView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_category(State(svc): Service, Path(id): Path<String>) -> ApiResult<Json<CategoryView>> {
    let id: CategoryId = path_id(&id, "category")?;
    Ok(Json(svc.category(id).await?.into()))
}

/// Create a category (admin). Its products carry the parent's attributes plus its own.
#[utoipa::path(post, path = "/categories", tag = "catalog", security(("bearer" = [])), request_body = CategoryRequest,
    responses((status = 201, body = CategoryView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_category(
    State(svc): Service,
    actor: AuthUser,
    ApiJson(req): ApiJson<CategoryRequest>,
) -> ApiResult<(StatusCode, Json<CategoryView>)> {
    let mut v = Validator::new();
    let name = v.required("name", req.name, single_line(100));
    let parent_id = v.optional("parent_id", req.parent_id, optional_id::<CategoryId>);
    v.finish()?;
    let new = NewCategory {
        name: validated(name),
        parent_id: validated(parent_id),
        attributes: req.attributes.unwrap_or_default(),
    };
    let category = svc.create_category(&actor, new).await?;
    Ok((StatusCode::CREATED, Json(category.into())))
}

// --- products ------------------------------------------------------------------------------------

/// Product summaries in creation order, optionally within a category (and its sub-categories).
#[utoipa::path(get, path = "/products", tag = "catalog", params(ListQuery),
    responses((status = 200, body = Page<ProductSummary>), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list_products(State(svc): Service, Query(q): Query<ListQuery>) -> ApiResult<Json<Page<ProductSummary>>> {
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref(), 20, 100)?;
    let mut v = Validator::new();
    let category = v.optional("category", q.category, optional_id::<CategoryId>);
    let after = v.optional("cursor", page.after, optional_id::<ProductId>);
    v.finish()?;
    let products = svc.list_products(validated(category), validated(after), page.limit).await?;
    Ok(Json(products.map(ProductSummary::from)))
}

/// One live product.
#[utoipa::path(get, path = "/products/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_product(State(svc): Service, Path(id): Path<String>) -> ApiResult<Json<ProductView>> {
    let id: ProductId = path_id(&id, "product")?;
    let mut view = ProductView::from(svc.product(id).await?);
    let available = svc.stock_available(id).await?;
    view.stock = StockView { available, in_stock: available > 0 };
    Ok(Json(view))
}

/// Create a product (sellers and admins); attributes are validated against the category.
#[utoipa::path(post, path = "/products", tag = "catalog", security(("bearer" = [])), request_body = ProductRequest,
    responses((status = 201, body = ProductView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_product(
    State(svc): Service,
    actor: AuthUser,
    ApiJson(req): ApiJson<ProductRequest>,
) -> ApiResult<(StatusCode, Json<ProductView>)> {
    let mut v = Validator::new();
    let sku = v.required("sku", req.sku, |s| parse_sku(&s));
    let title = v.required("title", req.title, single_line(200));
    let description = v.optional("description", req.description, |s| text(&s, 0, 10_000, true));
    let brand = v.required("brand", req.brand, single_line(100));
    let category_id = v.required("category_id", req.category_id, optional_id::<CategoryId>);
    let price = v.required("price", req.price, parse_price);
    v.finish()?;
    let draft = ProductDraft {
        sku: validated(sku),
        title: validated(title),
        description: validated(description).unwrap_or_default(),
        brand: validated(brand),
        category_id: validated(category_id),
        price: validated(price),
        attributes: req.attributes.unwrap_or_default(),
        promoted: req.promoted.unwrap_or(false),
    };
    let product = svc.create_product(&actor, draft).await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

/// Change a product (its seller or an admin). Omitted fields stay; `attributes` replaces all values.
#[utoipa::path(patch, path = "/products/{id}", tag = "catalog", security(("bearer" = [])), request_body = ProductRequest,
    params(("id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn update_product(
    State(svc): Service,
    actor: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProductRequest>,
) -> ApiResult<Json<ProductView>> {
    let id: ProductId = path_id(&id, "product")?;
    let mut v = Validator::new();
    let patch = ProductPatch {
        sku: v.optional("sku", req.sku, |s| parse_sku(&s)).flatten(),
        title: v.optional("title", req.title, single_line(200)).flatten(),
        description: v.optional("description", req.description, |s| text(&s, 0, 10_000, true)).flatten(),
        brand: v.optional("brand", req.brand, single_line(100)).flatten(),
        category_id: v.optional("category_id", req.category_id, optional_id::<CategoryId>).flatten(),
        price: v.optional("price", req.price, parse_price).flatten(),
        attributes: req.attributes,
        promoted: req.promoted,
    };
    v.finish()?;
    Ok(Json(svc.update_product(&actor, id, patch).await?.into()))
}

/// Delete a product (soft: it leaves listings and search; orders keep their snapshot).
#[utoipa::path(delete, path = "/products/{id}", tag = "catalog", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_product(State(svc): Service, actor: AuthUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: ProductId = path_id(&id, "product")?;
    svc.delete_product(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- reviews -------------------------------------------------------------------------------------

/// A product's reviews, newest first.
#[utoipa::path(get, path = "/products/{id}/reviews", tag = "catalog", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = Page<ReviewView>), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list_reviews(
    State(svc): Service,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ReviewView>>> {
    let id: ProductId = path_id(&id, "product")?;
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref(), 20, 100)?;
    let mut v = Validator::new();
    let before = v.optional("cursor", page.after, optional_id::<ReviewId>);
    v.finish()?;
    Ok(Json(svc.reviews(id, validated(before), page.limit).await?.map(ReviewView::from)))
}

/// Review a product (once per user; not your own product).
#[utoipa::path(post, path = "/products/{id}/reviews", tag = "catalog", security(("bearer" = [])), request_body = ReviewRequest,
    params(("id" = String, Path)),
    responses((status = 201, body = ReviewView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_review(
    State(svc): Service,
    actor: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> ApiResult<(StatusCode, Json<ReviewView>)> {
    let id: ProductId = path_id(&id, "product")?;
    let mut v = Validator::new();
    let rating = v.required("rating", req.rating, parse_rating);
    let title = v.optional("title", req.title, |s| text(&s, 0, 200, false)).map(|t| t.filter(|t| !t.is_empty()));
    let body = v.optional("body", req.body, |s| text(&s, 0, 5_000, true)).map(|t| t.filter(|t| !t.is_empty()));
    v.finish()?;
    let new = NewReview { rating: validated(rating), title: validated(title), body: validated(body) };
    let (review, _rating) = svc.add_review(&actor, id, new).await?;
    Ok((StatusCode::CREATED, Json(review.into())))
}

// --- images --------------------------------------------------------------------------------------

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImageUpload {
    /// A JPEG, PNG, WebP or GIF file of at most 5 MiB.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    image: String,
}

/// Upload a product image (its seller or an admin); its URL is appended to `images`.
#[utoipa::path(post, path = "/products/{id}/images", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path)), request_body(content = ImageUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = ProductView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
               (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn upload_image(
    State(svc): Service,
    actor: AuthUser,
    Path(id): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<ProductView>)> {
    use emporium_kernel::error::{ApiError, ErrorCode};
    let id: ProductId = path_id(&id, "product")?;
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(ErrorCode::UnsupportedMediaType)
            .with_detail(format!("send multipart/form-data with an `image` file ({})", rejection.body_text()))
    })?;
    let malformed = |err: axum::extract::multipart::MultipartError| {
        ApiError::new(ErrorCode::for_status(err.status())).with_detail(err.body_text())
    };
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some("image") {
            continue;
        }
        let declared = field.content_type().map(str::to_owned);
        let bytes = field.bytes().await.map_err(malformed)?;
        let product = svc.add_image(&actor, id, declared.as_deref(), bytes.to_vec()).await?;
        return Ok((StatusCode::CREATED, Json(product.into())));
    }
    Err(ApiError::invalid_field("image", "is required (a multipart file field named `image`)"))
}

/// An uploaded image. Its URL is content-addressed, so it is cached for a year and revalidated
/// with `If-None-Match`.
#[utoipa::path(get, path = "/images/{name}", tag = "catalog", params(("name" = String, Path, description = "the last segment of the image URL")),
    responses((status = 200, content_type = "image/*", description = "the image"), (status = 304, description = "not modified"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_image(
    State(svc): Service,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let etag = format!("\"{}\"", name.split('.').next().unwrap_or_default());
    let cache_control = (header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let (bytes, content_type) = svc.image(&name).await?;
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (cache_control.0, cache_control.1.to_owned())])
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag),
            (cache_control.0, cache_control.1.to_owned()),
        ],
        bytes,
    )
        .into_response())
}
