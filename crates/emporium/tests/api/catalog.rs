//! Catalog: categories with inherited attributes, products, permissions, soft delete, listing,
//! reviews — and the events each change emits.

use crate::helpers::*;
use emporium_kernel::auth::Role;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Electronics (warranty_years) > Laptops (ram_gb required, colour enum), and Books (pages).
struct Shop {
    admin: Session,
    seller: Session,
    electronics: String,
    laptops: String,
    books: String,
}

async fn shop(app: &TestApp) -> Shop {
    let admin = app.signed_in_admin().await;
    let seller = app.signed_in_with_roles(&[Role::Seller]).await;
    let token = Some(admin.access_token.as_str());
    let create = |body: Value| async move {
        let res = app.post("/api/v1/categories", token, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    };
    let electronics = create(
        json!({"name": "Electronics", "attributes": [{"name": "warranty_years", "type": "number", "unit": "years"}]}),
    )
    .await;
    let laptops = create(json!({"name": "Laptops", "parent_id": electronics, "attributes": [
        {"name": "ram_gb", "type": "number", "required": true, "unit": "GB"},
        {"name": "colour", "type": "enum", "values": ["Silver", "Black"]},
        {"name": "touchscreen", "type": "bool"}]}))
    .await;
    let books = create(json!({"name": "Books", "attributes": [{"name": "pages", "type": "number"}, {"name": "author", "type": "text", "required": true}]})).await;
    Shop { admin, seller, electronics, laptops, books }
}

fn laptop(sku: &str, category: &str) -> Value {
    json!({"sku": sku, "title": "UltraBook 13", "description": "A light laptop", "brand": "Acme", "category_id": category,
           "price": {"amount": 129_900, "currency": "USD"}, "attributes": {"ram_gb": 16, "colour": "silver", "warranty_years": 2}})
}

async fn create_product(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post("/api/v1/products", Some(token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

backend_tests! {
    async fn the_tree_order_scan_keeps_categories_then_brands_together(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let token = shop.admin.access_token.as_str();
        for (sku, brand, category) in [("l1", "Zento", &shop.laptops), ("b1", "Press", &shop.books), ("l2", "Acme", &shop.laptops),
            ("l3", "Zento", &shop.laptops), ("b2", "Atlas", &shop.books), ("l4", "Acme", &shop.laptops), ("l5", "Kestrel", &shop.laptops)]
        {
            let mut body = laptop(sku, category);
            body["brand"] = json!(brand);
            if category == &shop.books {
                body["attributes"] = json!({"author": "Ann Lee"});
            }
            create_product(&app, token, body).await;
        }
        let mut scan = emporium_catalog::api::TreeOrderScan::start(app.catalog.clone()).await.unwrap();
        let mut read = Vec::new();
        // Batches of 2 split a brand's run, so resuming after the last product read is tested.
        while let Some((category, batch)) = scan.next_batch(2).await.unwrap() {
            assert!(batch.iter().all(|p| p.category_id == category), "a batch is of one category");
            read.extend(batch.into_iter().map(|p| (p.brand, p.sku)));
        }
        let brands: Vec<&str> = read.iter().map(|(brand, _)| brand.as_str()).collect();
        // Books, then Electronics > Laptops (tree order: roots by name); by brand within each.
        assert_eq!(brands, ["Atlas", "Press", "Acme", "Acme", "Kestrel", "Zento", "Zento"]);
        let mut acme: Vec<&str> = read[2..4].iter().map(|(_, sku)| sku.as_str()).collect();
        acme.sort();
        assert_eq!(acme, ["L2", "L4"], "each product once (SKUs are stored upper-cased)");
    }

    async fn categories_inherit_attributes(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let laptops: Value = app.get(&format!("/api/v1/categories/{}", shop.laptops), None).await.json().await.unwrap();
        assert_eq!(laptops["path"], json!(["Electronics", "Laptops"]));
        let names: Vec<&str> = laptops["attributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["warranty_years", "ram_gb", "colour", "touchscreen"]);
        let all: Value = app.get("/api/v1/categories", None).await.json().await.unwrap();
        assert_eq!(all["items"].as_array().unwrap().len(), 3);

        let token = Some(shop.admin.access_token.as_str());
        let res = app.post("/api/v1/categories", token, json!({"name": "laptops", "parent_id": shop.electronics})).await;
        assert_problem(res, StatusCode::CONFLICT, "already-exists").await;
        let res = app.post("/api/v1/categories", token, json!({"name": "Tablets", "parent_id": shop.electronics,
            "attributes": [{"name": "size", "type": "enum"}, {"name": "warranty_years", "type": "number"}]})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["attributes[0].values", "attributes[1].name"]);
        let res = app.post("/api/v1/categories", token, json!({"name": "X", "attributes": [{"name": "a", "type": "colour"}]})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["attributes[0].type"]);
        let res = app.post("/api/v1/categories", token, json!({"name": "Orphan", "parent_id": uuid::Uuid::now_v7()})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["parent_id"]);
        let res = app.post("/api/v1/categories", Some(&shop.seller.access_token), json!({"name": "Mine"})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.get(&format!("/api/v1/categories/{}", uuid::Uuid::now_v7()), None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        assert_eq!(app.event_types("catalog").await, ["CategoryCreated"; 3]);
    }

    async fn products_are_validated_against_their_category(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let token = shop.seller.access_token.as_str();
        let product = create_product(&app, token, laptop("lap-1", &shop.laptops)).await;
        assert_eq!(product["sku"], "LAP-1");
        assert_eq!(product["attributes"]["colour"], "Silver");
        assert_eq!(product["price"], json!({"amount": 129_900, "currency": "USD"}));
        assert_eq!(product["rating"], json!({"average": 0.0, "count": 0}));
        assert_eq!(product["stock"], json!({"available": 0, "in_stock": false}));
        assert_eq!(product["seller_id"], shop.seller.id.as_str());
        let fetched: Value = app.get(&format!("/api/v1/products/{}", product["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(fetched, product);

        let mut bad = laptop("lap-2", &shop.laptops);
        bad["attributes"] = json!({"ram_gb": "lots", "colour": "pink", "wheels": 4});
        let problem = assert_problem(app.post("/api/v1/products", Some(token), bad).await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["attributes.colour", "attributes.ram_gb", "attributes.wheels"]);
        let mut missing = laptop("lap-2", &shop.laptops);
        missing["attributes"] = json!({});
        let problem = assert_problem(app.post("/api/v1/products", Some(token), missing).await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["attributes.ram_gb"]);
        let res = app.post("/api/v1/products", Some(token), json!({"price": {"amount": -5, "currency": "USD"}})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["sku", "title", "brand", "category_id", "price"]);
        let res = app.post("/api/v1/products", Some(token), json!({"price": {"amount": 5, "currency": "dollars"}})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["price.currency"]);
        // A real currency, but not the shop's (USD): refused, on creation and on change.
        let mut euros = laptop("lap-2", &shop.laptops);
        euros["price"] = json!({"amount": 99_900, "currency": "EUR"});
        let res = app.post("/api/v1/products", Some(token), euros).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["price.currency"]);
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains("USD"), "{problem}");
        let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
        let res = app.request(Method::PATCH, &path, Some(token), Some(json!({"price": {"amount": 5, "currency": "GBP"}}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["price.currency"]);
        let problem = assert_problem(app.post("/api/v1/products", Some(token), laptop("lap-3", &uuid::Uuid::now_v7().to_string())).await,
            StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["category_id"]);
        let res = app.post("/api/v1/products", Some(token), laptop("LAP-1", &shop.laptops)).await;
        assert_problem(res, StatusCode::CONFLICT, "already-exists").await;
        let customer = app.signed_in_customer().await;
        let res = app.post("/api/v1/products", Some(&customer.access_token), laptop("lap-9", &shop.laptops)).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

        // Changing the price emits PriceChanged; moving a laptop to Books needs book attributes.
        let res = app.request(Method::PATCH, &path, Some(token), Some(json!({"price": {"amount": 119_900, "currency": "USD"}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["price"]["amount"], 119_900);
        let res = app.request(Method::PATCH, &path, Some(token), Some(json!({"category_id": shop.books}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["attributes.colour", "attributes.ram_gb", "attributes.warranty_years", "attributes.author"]);
        let res = app.request(Method::PATCH, &path, Some(token), Some(json!({"category_id": shop.books, "attributes": {"author": "Ada", "pages": 320}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["attributes"], json!({"author": "Ada", "pages": 320}));
        let events = app.event_types("catalog").await;
        assert_eq!(&events[3..], ["ProductCreated", "ProductUpdated", "PriceChanged", "ProductUpdated"]);
    }

    async fn the_shop_currency_is_configured(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.shop_currency = emporium_kernel::money::Currency::EUR).await;
        let shop = shop(&app).await;
        let token = shop.seller.access_token.as_str();
        let mut euros = laptop("lap-e", &shop.laptops);
        euros["price"] = json!({"amount": 99_900, "currency": "EUR"});
        assert_eq!(create_product(&app, token, euros).await["price"]["currency"], "EUR");
        let res = app.post("/api/v1/products", Some(token), laptop("lap-d", &shop.laptops)).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["price.currency"]);
        // An empty cart is priced in it too.
        let cart: Value = app.get("/api/v1/cart", None).await.json().await.unwrap();
        assert_eq!(cart["total"], json!({"amount": 0, "currency": "EUR"}));
    }

    async fn sellers_change_only_their_own_products(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let product = create_product(&app, &shop.seller.access_token, laptop("own-1", &shop.laptops)).await;
        let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
        let rival = app.signed_in_with_roles(&[Role::Seller]).await;
        let res = app.request(Method::PATCH, &path, Some(&rival.access_token), Some(json!({"title": "Mine now"}))).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.request(Method::DELETE, &path, Some(&rival.access_token), None).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.request(Method::PATCH, &path, None, Some(json!({"title": "x"}))).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let res = app.request(Method::PATCH, &path, Some(&shop.admin.access_token), Some(json!({"title": "Renamed by admin"}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let unchanged: Value = app.get(&path, None).await.json().await.unwrap();
        assert_eq!(unchanged["title"], "Renamed by admin");
        assert_eq!(unchanged["seller_id"], shop.seller.id.as_str());
    }

    async fn deleted_products_disappear_but_free_their_sku(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let token = shop.seller.access_token.as_str();
        let product = create_product(&app, token, laptop("gone-1", &shop.laptops)).await;
        let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
        assert_eq!(app.request(Method::DELETE, &path, Some(token), None).await.status(), StatusCode::NO_CONTENT);
        assert_problem(app.get(&path, None).await, StatusCode::NOT_FOUND, "not-found").await;
        assert_problem(app.request(Method::DELETE, &path, Some(token), None).await, StatusCode::NOT_FOUND, "not-found").await;
        let list: Value = app.get("/api/v1/products", None).await.json().await.unwrap();
        assert!(list["items"].as_array().unwrap().is_empty());
        create_product(&app, token, laptop("gone-1", &shop.laptops)).await;
        assert!(app.event_types("catalog").await.contains(&"ProductDeleted".to_owned()));
    }

    async fn listing_pages_through_categories(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let token = shop.seller.access_token.as_str();
        let mut created = Vec::new();
        for i in 0..5 {
            created.push(create_product(&app, token, laptop(&format!("page-{i}"), &shop.laptops)).await["id"].clone());
        }
        for i in 0..2 {
            let book = json!({"sku": format!("book-{i}"), "title": "A Book", "brand": "Press", "category_id": shop.books,
                              "price": {"amount": 1_999, "currency": "USD"}, "attributes": {"author": "Ann"}});
            created.push(create_product(&app, token, book).await["id"].clone());
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/products?limit=3&cursor={c}"),
                None => "/api/v1/products?limit=3".to_owned(),
            };
            let page: Value = app.get(&path, None).await.json().await.unwrap();
            seen.extend(page["items"].as_array().unwrap().iter().map(|p| p["id"].clone()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, created, "every product once, in creation order");
        let electronics: Value = app.get(&format!("/api/v1/products?category={}&limit=100", shop.electronics), None).await.json().await.unwrap();
        assert_eq!(electronics["items"].as_array().unwrap().len(), 5, "sub-categories included");
        assert!(electronics["next_cursor"].is_null());
        for (query, field) in [("limit=100000", "limit"), ("limit=abc", "limit"), ("cursor=%21%21", "cursor"), ("category=nope", "category")] {
            let res = app.get(&format!("/api/v1/products?{query}"), None).await;
            let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
            assert_eq!(error_fields(&problem), [field]);
        }
        let res = app.get(&format!("/api/v1/products?category={}", uuid::Uuid::now_v7()), None).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    }

    async fn reviews_once_per_user_and_ratings_add_up(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let product = create_product(&app, &shop.seller.access_token, laptop("rev-1", &shop.laptops)).await;
        let path = format!("/api/v1/products/{}/reviews", product["id"].as_str().unwrap());
        let alice = app.signed_in_customer().await;
        let bob = app.signed_in_customer().await;
        let res = app.post(&path, Some(&alice.access_token), json!({"rating": 5, "title": "Great", "body": "Fast and light."})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let review: Value = res.json().await.unwrap();
        assert_eq!(review["user_id"], alice.id.as_str());
        assert_eq!(review["verified_purchase"], false);
        let res = app.post(&path, Some(&alice.access_token), json!({"rating": 1})).await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(app.post(&path, Some(&bob.access_token), json!({"rating": 4})).await.status(), StatusCode::CREATED);
        let res = app.post(&path, Some(&shop.seller.access_token), json!({"rating": 5})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post(&path, Some(&bob.access_token), json!({"rating": 6})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["rating"]);
        let res = app.post(&format!("/api/v1/products/{}/reviews", uuid::Uuid::now_v7()), Some(&bob.access_token), json!({"rating": 3})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;

        let fetched: Value = app.get(&format!("/api/v1/products/{}", product["id"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(fetched["rating"], json!({"average": 4.5, "count": 2}));
        let list: Value = app.get(&format!("{path}?limit=1"), None).await.json().await.unwrap();
        assert_eq!(list["items"][0]["rating"], 4, "newest first");
        let next: Value = app.get(&format!("{path}?limit=1&cursor={}", list["next_cursor"].as_str().unwrap()), None).await.json().await.unwrap();
        assert_eq!(next["items"][0]["rating"], 5);
        assert!(next["next_cursor"].is_null());
        assert_eq!(app.event_types("catalog").await.iter().filter(|t| *t == "ReviewAdded").count(), 2);
    }
}

/// Reads are cached and every change invalidates: in-process by default, in Redis when
/// configured — checked against the real Redis, including that the entry really lives there.
async fn cached_reads_follow_changes(app: TestApp, redis_prefix: Option<&str>) {
    let shop = shop(&app).await;
    let product = create_product(&app, &shop.seller.access_token, laptop("cache-1", &shop.laptops)).await;
    let id = product["id"].as_str().unwrap();
    let path = format!("/api/v1/products/{id}");
    let redis_key = redis_prefix.map(|p| format!("{p}:catalog:product:{id}"));
    let mut redis = match &redis_key {
        Some(_) => Some(
            redis::Client::open(emporium_kernel::testing::redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        ),
        None => None,
    };
    let exists = |key: String, conn: Option<redis::aio::MultiplexedConnection>| async move {
        let mut conn = conn.unwrap();
        redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut conn).await.unwrap()
    };

    assert_eq!(app.get(&path, None).await.json::<Value>().await.unwrap()["title"], "UltraBook 13");
    if let Some(key) = &redis_key {
        assert!(exists(key.clone(), redis.clone()).await, "the product page is cached in Redis");
    }
    let res = app
        .request(Method::PATCH, &path, Some(&shop.seller.access_token), Some(json!({"title": "UltraBook 14"})))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    if let Some(key) = &redis_key {
        assert!(!exists(key.clone(), redis.clone()).await, "the change invalidated the entry");
    }
    assert_eq!(app.get(&path, None).await.json::<Value>().await.unwrap()["title"], "UltraBook 14");

    let customer = app.signed_in_customer().await;
    app.post(&format!("{path}/reviews"), Some(&customer.access_token), json!({"rating": 3})).await;
    assert_eq!(app.get(&path, None).await.json::<Value>().await.unwrap()["rating"]["count"], 1);
    app.request(Method::DELETE, &path, Some(&shop.seller.access_token), None).await;
    assert_problem(app.get(&path, None).await, StatusCode::NOT_FOUND, "not-found").await;
    if let Some(conn) = redis.as_mut() {
        let _: () = redis::cmd("DEL").arg(redis_key.unwrap()).query_async(conn).await.unwrap();
    }
}

backend_tests! {
    async fn product_reads_are_cached_in_process(backend: Backend) {
        cached_reads_follow_changes(spawn_app(backend).await, None).await;
    }

    async fn product_reads_are_cached_in_redis(backend: Backend) {
        let prefix = format!("emporium-test-{}", uuid::Uuid::now_v7().simple());
        let app = spawn_app_with(backend, |s| {
            s.redis_url = Some(emporium_kernel::config::Secret::new(emporium_kernel::testing::redis_url()));
            s.redis_prefix = prefix.clone();
        })
        .await;
        let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
        assert_eq!(ready["checks"]["cache:redis"], "ok", "readiness includes Redis when configured");
        cached_reads_follow_changes(app, Some(&prefix)).await;
    }
}

/// A real PNG, one grey pixel per byte of `pixels` (so different bytes, different images).
fn png(pixels: &[u8]) -> Vec<u8> {
    let picture = image::GrayImage::from_raw(pixels.len() as u32, 1, pixels.to_vec()).unwrap();
    let mut bytes = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// What only starts like a PNG: its signature and header chunk name, then `rest`.
fn png_header_then(rest: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend_from_slice(rest);
    bytes
}

async fn res_headers_nosniff(app: &TestApp, url: &str) -> String {
    let res = app.get(url, None).await;
    res.headers()["x-content-type-options"].to_str().unwrap().to_owned()
}

async fn upload(app: &TestApp, token: Option<&str>, product: &str, bytes: Vec<u8>, mime: &str) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("photo").mime_str(mime).unwrap();
    let form = reqwest::multipart::Form::new().part("image", part);
    let mut req = app.client.post(app.url(&format!("/api/v1/products/{product}/images"))).multipart(form);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

backend_tests! {
    async fn images_upload_and_serve_with_caching_headers(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let token = Some(shop.seller.access_token.as_str());
        let product = create_product(&app, &shop.seller.access_token, laptop("img-1", &shop.laptops)).await;
        let id = product["id"].as_str().unwrap();

        let res = upload(&app, token, id, png(b"first"), "image/png").await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        let url = body["images"][0].as_str().unwrap().to_owned();
        assert!(url.starts_with("/api/v1/images/"), "{url}");
        let again: Value = upload(&app, token, id, png(b"first"), "image/png").await.json().await.unwrap();
        assert_eq!(again["images"].as_array().unwrap().len(), 1, "the same image is stored once");
        let fetched: Value = app.get(&format!("/api/v1/products/{id}"), None).await.json().await.unwrap();
        assert_eq!(fetched["images"], json!([url]));

        let res = app.get(&url, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "image/png");
        assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(res.bytes().await.unwrap().to_vec(), png(b"first"));
        let res = app.client.get(app.url(&url)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

        let res = upload(&app, token, id, b"<svg onload=alert(1)>".to_vec(), "image/svg+xml").await;
        assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
        let res = upload(&app, token, id, png(b"x"), "image/jpeg").await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["image"]);
        // On a client of its own: the server answers 413 without reading the whole body and
        // closes that connection, which a shared pool could hand to the next request.
        let part = reqwest::multipart::Part::bytes(png_header_then(&vec![0u8; 6 * 1024 * 1024]))
            .file_name("photo")
            .mime_str("image/png")
            .unwrap();
        let res = reqwest::Client::new()
            .post(app.url(&format!("/api/v1/products/{id}/images")))
            .bearer_auth(&shop.seller.access_token)
            .multipart(reqwest::multipart::Form::new().part("image", part))
            .send()
            .await
            .unwrap();
        assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
        // The first bytes of a PNG, then junk: decoded, refused, not stored.
        let res = upload(&app, token, id, png_header_then(&vec![0xA5; 1024 * 1024]), "image/png").await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["image"]);
        let whole = png(b"whole");
        let res = upload(&app, token, id, whole[..whole.len() - 12].to_vec(), "image/png").await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        let fetched: Value = app.get(&format!("/api/v1/products/{id}"), None).await.json().await.unwrap();
        assert_eq!(fetched["images"].as_array().unwrap().len(), 1, "nothing refused was added");
        assert_eq!(res_headers_nosniff(&app, &url).await, "nosniff");
        let rival = app.signed_in_with_roles(&[Role::Seller]).await;
        let res = upload(&app, Some(&rival.access_token), id, png(b"mine"), "image/png").await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = upload(&app, None, id, png(b"anon"), "image/png").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let res = upload(&app, token, &uuid::Uuid::now_v7().to_string(), png(b"nowhere"), "image/png").await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.post(&format!("/api/v1/products/{id}/images"), token, json!({"image": "x"})).await;
        assert_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
        let res = app.get("/api/v1/images/missing.png", None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.get("/api/v1/images/..%2F..%2Fjwt.secret", None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }
}

backend_tests! {
    async fn images_live_in_an_s3_compatible_store(backend: Backend) {
        let endpoint = emporium_kernel::testing::s3_endpoint();
        let bucket = format!("emporium-test-{}", uuid::Uuid::now_v7().simple());
        let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await;
        let created = created.unwrap_or_else(|e| panic!("no S3-compatible server at {endpoint} ({e}); run ./scripts/test, which starts one"));
        assert!(created.status().is_success(), "creating bucket: {}", created.status());
        let app = spawn_app_with(backend, |s| {
            s.blob_url = Some(format!("s3://{bucket}/shop-images"));
            s.blob_endpoint = Some(endpoint.clone());
            s.blob_region = Some("us-east-1".into());
            s.blob_access_key_id = Some("test".into());
            s.blob_secret_access_key = Some(emporium_kernel::config::Secret::new("test".into()));
        })
        .await;
        let shop = shop(&app).await;
        let product = create_product(&app, &shop.seller.access_token, laptop("s3-1", &shop.laptops)).await;
        let res = upload(&app, Some(&shop.seller.access_token), product["id"].as_str().unwrap(), png(b"in s3"), "image/png").await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let url = res.json::<Value>().await.unwrap()["images"][0].as_str().unwrap().to_owned();
        let name = url.rsplit('/').next().unwrap().to_owned();

        let listing = reqwest::get(format!("{endpoint}/{bucket}?list-type=2")).await.unwrap().text().await.unwrap();
        assert!(listing.contains(&format!("<Key>shop-images/products/{name}</Key>")), "{listing}");
        let served = app.get(&url, None).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.bytes().await.unwrap().to_vec(), png(b"in s3"));
    }
}
