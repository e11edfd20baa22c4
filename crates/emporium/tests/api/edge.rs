//! The HTTP edge: error shapes, limits, rate limiting, health, metrics and the OpenAPI document.

use crate::helpers::*;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::Value;

backend_tests! {
    async fn malformed_and_invalid_bodies(backend: Backend) {
        let app = spawn_app(backend).await;
        let post_raw = |body: &'static str, content_type: &'static str| {
            app.client.post(app.url("/api/v1/users/register")).header("content-type", content_type).body(body).send()
        };
        let res = post_raw("{\"email\": ", "application/json").await.unwrap();
        assert_problem(res, StatusCode::BAD_REQUEST, "malformed-json").await;
        let res = post_raw("{}", "text/plain").await.unwrap();
        assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
        let res = post_raw("{}", "application/json").await.unwrap();
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["email", "password", "name"], "every missing field is named");
        let res = post_raw(r#"{"email": 42, "password": "x", "name": "y"}"#, "application/json").await.unwrap();
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["email"]);
        let res = app.register("not-an-email", "short").await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["email", "password"]);
    }

    async fn oversized_bodies_are_413(backend: Backend) {
        let app = spawn_app(backend).await;
        let huge = format!("{{\"email\": \"{}\"}}", "a".repeat(1024 * 1024));
        let res = app.client.post(app.url("/api/v1/users/register")).header("content-type", "application/json").body(huge).send().await.unwrap();
        assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    }

    async fn unknown_routes_and_methods_are_problems(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/api/v1/no-such-thing", None).await;
        let problem = assert_problem(res, StatusCode::NOT_FOUND, "route-not-found").await;
        assert!(problem["detail"].as_str().unwrap().contains("/api/v1/no-such-thing"));
        let res = app.request(Method::DELETE, "/api/v1/users/login", None, None).await;
        assert!(res.headers().contains_key("allow"));
        assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
        let res = app.get("/problems/validation-failed", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.text().await.unwrap().contains("422"));
    }

    async fn rapid_wrong_logins_are_cut_off(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.rate_limit_auth = 10).await;
        app.register("eve@example.com", "correct horse battery").await; // 1 of 10
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..20 {
            let res = app.login("eve@example.com", "guess guess guess").await;
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
                statuses.push(429);
            } else {
                statuses.push(res.status().as_u16());
            }
        }
        assert_eq!(&statuses[..9], &[401; 9], "the first attempts are answered");
        assert_eq!(&statuses[9..], &[429; 11], "then cut off");
        assert!(retry_after.unwrap() >= 1);
        // Other endpoints are not affected by the login limit.
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    }

    async fn api_rate_limit_is_per_user(backend: Backend) {
        let limited = spawn_app_with(backend, |s| s.rate_limit_api = 5).await;
        let a = limited.signed_in_customer().await;
        let b = limited.signed_in_customer().await;
        let mut codes = Vec::new();
        for _ in 0..8 {
            codes.push(limited.get("/api/v1/users/profile", Some(&a.access_token)).await.status());
        }
        assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
        assert_eq!(limited.get("/api/v1/users/profile", Some(&b.access_token)).await.status(), StatusCode::OK, "b has its own bucket");
    }

    async fn health_readiness_and_metrics(backend: Backend) {
        let app = spawn_app(backend).await;
        let health: Value = app.get("/healthz", None).await.json().await.unwrap();
        assert_eq!(health["status"], "ok");
        let res = app.get("/readyz", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let ready: Value = res.json().await.unwrap();
        assert_eq!(ready["checks"]["database:users"], "ok");
        assert_eq!(ready["checks"]["database:catalog"], "ok");

        app.register("frank@example.com", "correct horse battery").await;
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        assert!(metrics.contains("http_requests_total{method=\"POST\",route=\"/api/v1/users/register\",status=\"201\"}"), "{metrics}");
        assert!(metrics.contains("http_request_duration_seconds_bucket"));
        assert!(metrics.contains("users_registered_total"));

        // A database that stops answering makes the process unready (503), not unhealthy.
        app.users_db().close().await;
        let res = app.get("/readyz", None).await;
        let problem = assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        assert!(problem["checks"]["database:users"].as_str().unwrap().starts_with("error"));
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    }

    async fn request_ids_are_generated_or_kept(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.get("/healthz", None).await;
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        let generated = res.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(generated).is_ok());
        let res = app.client.get(app.url("/api/v1/users/profile")).header("x-request-id", "trace-me-123").send().await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "trace-me-123");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["request_id"], "trace-me-123");
        // Too long, or carrying what does not belong in a log line: replaced by our own.
        for unfit in ["x".repeat(10_000), "<script>".into(), "a b".into(), String::new()] {
            let res = app.client.get(app.url("/healthz")).header("x-request-id", &unfit).send().await.unwrap();
            let echoed = res.headers()["x-request-id"].to_str().unwrap();
            assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{unfit:.20} came back as {echoed:.20}");
        }
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["title"], "Emporium API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["info"]["license"]["identifier"], "AGPL-3.0-only");
    let expected = [
        ("/api/v1/users/register", "post"),
        ("/api/v1/users/login", "post"),
        ("/api/v1/users/token/refresh", "post"),
        ("/api/v1/users/logout", "post"),
        ("/api/v1/users/profile", "get"),
        ("/api/v1/users/profile", "patch"),
        ("/api/v1/users/addresses", "get"),
        ("/api/v1/users/addresses", "post"),
        ("/api/v1/users/addresses/{id}", "put"),
        ("/api/v1/users/addresses/{id}", "delete"),
        ("/api/v1/admin/users/{id}/roles", "put"),
        ("/api/v1/admin/users/{id}/disable", "post"),
        ("/api/v1/admin/users/{id}/warehouses", "put"),
        ("/api/v1/admin/users/{id}/enable", "post"),
        ("/api/v1/users/wishlist", "get"),
        ("/api/v1/users/wishlist", "post"),
        ("/api/v1/users/wishlist/{product_id}", "delete"),
        ("/api/v1/users/wishlist/{product_id}/move-to-cart", "post"),
        ("/api/v1/categories", "get"),
        ("/api/v1/categories", "post"),
        ("/api/v1/categories/{id}", "get"),
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}", "patch"),
        ("/api/v1/products/{id}", "delete"),
        ("/api/v1/products/{id}/reviews", "get"),
        ("/api/v1/products/{id}/reviews", "post"),
        ("/api/v1/products/{id}/images", "post"),
        ("/api/v1/images/{name}", "get"),
        ("/api/v1/search", "get"),
        ("/api/v1/search/suggest", "get"),
        ("/api/v1/warehouses", "get"),
        ("/api/v1/warehouses", "post"),
        ("/api/v1/warehouses/{id}", "get"),
        ("/api/v1/warehouses/{id}", "patch"),
        ("/api/v1/warehouses/{id}/stock", "post"),
        ("/api/v1/warehouses/{id}/stock/adjust", "post"),
        ("/api/v1/inventory/{product_id}", "get"),
        ("/api/v1/inventory/{product_id}/ledger", "get"),
        ("/api/v1/inventory/audit", "get"),
        ("/api/v1/inventory/reserve", "post"),
        ("/api/v1/inventory/reservations/{id}", "get"),
        ("/api/v1/inventory/commit", "post"),
        ("/api/v1/inventory/release", "post"),
        ("/api/v1/inventory/deduct", "post"),
        ("/api/v1/delivery/availability", "get"),
        ("/api/v1/delivery/partners", "get"),
        ("/api/v1/delivery/partners", "post"),
        ("/api/v1/delivery/partners/{id}", "get"),
        ("/api/v1/delivery/partners/{id}", "patch"),
        ("/api/v1/delivery/jobs", "get"),
        ("/api/v1/cart", "get"),
        ("/api/v1/cart/items", "post"),
        ("/api/v1/cart/items/{product_id}", "put"),
        ("/api/v1/cart/items/{product_id}", "delete"),
        ("/api/v1/cart/apply-coupon", "post"),
        ("/api/v1/cart/coupon", "delete"),
        ("/api/v1/cart/merge", "post"),
        ("/api/v1/coupons", "get"),
        ("/api/v1/coupons", "post"),
        ("/api/v1/coupons/{code}", "delete"),
        ("/api/v1/payments/webhooks/{gateway}", "post"),
        ("/api/v1/payments/{id}", "get"),
        ("/api/v1/payments/{id}/refund", "post"),
        ("/api/v1/payments/reconcile", "post"),
        ("/api/v1/checkout", "post"),
        ("/api/v1/checkout/{order_id}/cancel", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/pay", "post"),
        ("/api/v1/orders/{id}/cancel", "post"),
        ("/api/v1/orders/{id}/return", "post"),
        ("/api/v1/warehouse-orders", "get"),
        ("/api/v1/warehouse-orders/{id}/ship", "post"),
        ("/api/v1/warehouse-orders/{id}/deliver", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/v1/openapi.json", "get"),
    ];
    for (path, method) in expected {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing from the OpenAPI document");
    }
    let documented: usize =
        doc["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "the document lists exactly the served routes");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["AuthResponse"].is_object());

    // What clients generate from must validate: every `{name}` of a path declared as a path
    // parameter of each of its operations, and every error answer documented as what it is.
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> = path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
        for (method, operation) in item.as_object().unwrap() {
            for name in &names {
                let declared = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == *name);
                if !declared {
                    wrong.push(format!("{method} {path}: path parameter {name} undeclared"));
                }
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let Some(content) = response["content"].as_object().filter(|_| is_error) {
                    let types: Vec<&String> = content.keys().collect();
                    if types != ["application/problem+json"] {
                        wrong.push(format!("{method} {path} {status}: {types:?}"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} faults in the OpenAPI document:\n{}", wrong.len(), wrong.join("\n"));
    let search_params: Vec<&str> = doc["paths"]["/api/v1/search"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(search_params.contains(&"attr.NAME"), "the attribute filter is documented: {search_params:?}");
    // Internal endpoints say what they accept, so a generated client sends what they take.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["ReservationAction"]["properties"]["reservation_id"]["format"], "uuid");
    assert_eq!(schemas["DeductRequest"]["properties"]["warehouse_id"]["format"], "uuid");
    assert_eq!(schemas["LineInput"]["properties"]["quantity"]["maximum"], 1_000_000);
}
