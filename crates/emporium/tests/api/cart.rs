//! Carts over HTTP on both databases and both cart stores (SQL, Redis): guest tokens and the
//! merge at sign-in, stock and quantity rules, re-pricing, and coupons with their reasons.

use crate::helpers::*;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Shop {
    admin: Session,
    /// (product id, category id)
    lamp: (String, String),
    book: (String, String),
}

/// Two products in two categories, stocked in one warehouse: 5 lamps, 2 books.
async fn shop(app: &TestApp) -> Shop {
    let admin = app.signed_in_admin().await;
    let mut made = Vec::new();
    for (name, price, units) in [("Lamps", 2_000, 5), ("Books", 1_500, 2)] {
        let res = app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": name})).await;
        let category = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let body = json!({"sku": name.to_lowercase(), "title": format!("A {name}"), "brand": "Acme",
            "category_id": category, "price": {"amount": price, "currency": "USD"}});
        let res = app.post("/api/v1/products", Some(&admin.access_token), body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let product = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        made.push((product, category, units));
    }
    let body = json!({"name": "Main", "address": "1 Main St", "lat": 52.5, "lon": 13.4, "delivery_radius_km": 100});
    let warehouse =
        app.post("/api/v1/warehouses", Some(&admin.access_token), body).await.json::<Value>().await.unwrap();
    for (product, _, units) in &made {
        let res = app
            .post(
                &format!("/api/v1/warehouses/{}/stock", warehouse["id"].as_str().unwrap()),
                Some(&admin.access_token),
                json!({"product_id": product, "quantity": units}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let mut made = made.into_iter().map(|(p, c, _)| (p, c));
    Shop { admin, lamp: made.next().unwrap(), book: made.next().unwrap() }
}

async fn cart_request(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    cart_token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(cart_token) = cart_token {
        req = req.header("X-Cart-Token", cart_token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn run_cart_flow(app: TestApp) {
    let shop = shop(&app).await;
    let (lamp, book) = (shop.lamp.0.clone(), shop.book.0.clone());

    // A guest adds two lamps and gets a cart token.
    let res = cart_request(
        &app,
        Method::POST,
        "/api/v1/cart/items",
        None,
        None,
        Some(json!({"product_id": lamp, "quantity": 2})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let guest_token =
        res.headers().get("x-cart-token").expect("a guest cart token is issued").to_str().unwrap().to_owned();
    let cart: Value = res.json().await.unwrap();
    assert_eq!(cart["items"][0]["quantity"], 2);
    assert_eq!(cart["subtotal"], json!({"amount": 4000, "currency": "USD"}));
    let cart: Value =
        cart_request(&app, Method::GET, "/api/v1/cart", None, Some(&guest_token), None).await.json().await.unwrap();
    assert_eq!(cart["items"].as_array().unwrap().len(), 1, "the token names the same cart");
    let empty: Value = cart_request(&app, Method::GET, "/api/v1/cart", None, None, None).await.json().await.unwrap();
    assert_eq!(empty["items"], json!([]));

    // Rules: unknown product 404, more than in stock 409, bad quantities 422.
    let res = cart_request(
        &app,
        Method::POST,
        "/api/v1/cart/items",
        None,
        Some(&guest_token),
        Some(json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1})),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = cart_request(
        &app,
        Method::POST,
        "/api/v1/cart/items",
        None,
        Some(&guest_token),
        Some(json!({"product_id": lamp, "quantity": 4})),
    )
    .await;
    let problem = assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(problem["lines"][0]["available"], 5);
    let res = cart_request(
        &app,
        Method::POST,
        "/api/v1/cart/items",
        None,
        Some(&guest_token),
        Some(json!({"product_id": "x", "quantity": -1})),
    )
    .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(error_fields(&problem), ["product_id", "quantity"]);
    let res = cart_request(
        &app,
        Method::PUT,
        &format!("/api/v1/cart/items/{book}"),
        None,
        Some(&guest_token),
        Some(json!({"quantity": 1})),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = cart_request(&app, Method::GET, "/api/v1/cart", None, Some("bad token!"), None).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;

    // The shopper signs in: their own cart has a book and one lamp; merging sums and caps by stock.
    let user = app.signed_in_customer().await;
    for (product, quantity) in [(&book, 1), (&lamp, 4)] {
        let res = cart_request(
            &app,
            Method::POST,
            "/api/v1/cart/items",
            Some(&user.access_token),
            None,
            Some(json!({"product_id": product, "quantity": quantity})),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res =
        cart_request(&app, Method::POST, "/api/v1/cart/merge", Some(&user.access_token), Some(&guest_token), None)
            .await;
    assert_eq!(res.status(), StatusCode::OK);
    let cart: Value = res.json().await.unwrap();
    let quantity = |cart: &Value, product: &str| {
        cart["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["product_id"] == product)
            .map(|i| i["quantity"].as_i64().unwrap())
    };
    assert_eq!(quantity(&cart, &lamp), Some(5), "4 + 2 lamps capped by the 5 in stock");
    assert_eq!(quantity(&cart, &book), Some(1));
    let guest_after: Value =
        cart_request(&app, Method::GET, "/api/v1/cart", None, Some(&guest_token), None).await.json().await.unwrap();
    assert_eq!(guest_after["items"], json!([]), "the guest cart is gone after the merge");

    // Re-pricing: the lamp gets dearer; the cart shows the new price and flags it.
    let res = app
        .request(
            Method::PATCH,
            &format!("/api/v1/products/{lamp}"),
            Some(&shop.admin.access_token),
            Some(json!({"price": {"amount": 2500, "currency": "USD"}})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let cart: Value = cart_request(&app, Method::GET, "/api/v1/cart", Some(&user.access_token), None, None)
        .await
        .json()
        .await
        .unwrap();
    let lamp_line =
        cart["items"].as_array().unwrap().iter().find(|i| i["product_id"] == lamp.as_str()).unwrap().clone();
    assert_eq!(
        (lamp_line["unit_price"]["amount"].as_i64(), lamp_line["added_price"]["amount"].as_i64()),
        (Some(2500), Some(2000))
    );
    assert_eq!(lamp_line["price_changed"], true);
    assert_eq!(lamp_line["line_total"]["amount"], 12_500);
    assert_eq!(cart["subtotal"]["amount"], 14_000);

    // Coupons: admin-only management; unknown, not-yet-applicable and restricted ones say why.
    let res = app
        .post("/api/v1/coupons", Some(&user.access_token), json!({"code": "X", "kind": "percent", "value": 10}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .post("/api/v1/coupons", Some(&shop.admin.access_token), json!({"code": "x", "kind": "percent", "value": 150}))
        .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert_eq!(error_fields(&problem), ["code", "value"]);
    let coupons = [
        json!({"code": "BOOKS50", "kind": "percent", "value": 50, "category_ids": [shop.book.1]}),
        json!({"code": "BIGSPEND", "kind": "fixed", "value": 1000, "min_subtotal": 100_000}),
        json!({"code": "ONCE", "kind": "fixed", "value": 500, "max_uses_per_user": 1}),
        json!({"code": "LATER", "kind": "percent", "value": 10, "starts_at": "2099-01-01T00:00:00Z"}),
    ];
    for coupon in coupons {
        let res = app.post("/api/v1/coupons", Some(&shop.admin.access_token), coupon).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    }
    let res = app
        .post(
            "/api/v1/coupons",
            Some(&shop.admin.access_token),
            json!({"code": "books50", "kind": "fixed", "value": 1}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let listed: Value = app.get("/api/v1/coupons", Some(&shop.admin.access_token)).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);

    let apply = |code: &'static str| {
        let token = user.access_token.clone();
        let app = &app;
        async move {
            cart_request(
                app,
                Method::POST,
                "/api/v1/cart/apply-coupon",
                Some(&token),
                None,
                Some(json!({"code": code})),
            )
            .await
        }
    };
    for (code, reason) in
        [("NOPE", "is not a known coupon"), ("BIGSPEND", "at least 100000"), ("LATER", "not valid yet")]
    {
        let problem = assert_problem(apply(code).await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["code"]);
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains(reason), "{code}: {problem}");
    }
    let res = apply("books50").await;
    assert_eq!(res.status(), StatusCode::OK);
    let cart: Value = res.json().await.unwrap();
    assert_eq!(cart["coupon"]["code"], "BOOKS50");
    assert_eq!(cart["discount"]["amount"], 750, "half of the book only");
    assert_eq!(cart["total"]["amount"], 14_000 - 750);

    // Removing the book makes the coupon inapplicable: it stays, discounting nothing, with the reason.
    let res =
        cart_request(&app, Method::DELETE, &format!("/api/v1/cart/items/{book}"), Some(&user.access_token), None, None)
            .await;
    let cart: Value = res.json().await.unwrap();
    assert_eq!(cart["discount"]["amount"], 0);
    assert!(cart["coupon"]["invalid_reason"].as_str().unwrap().contains("eligible"));
    let res = cart_request(&app, Method::DELETE, "/api/v1/cart/coupon", Some(&user.access_token), None, None).await;
    assert!(res.json::<Value>().await.unwrap()["coupon"].is_null());

    // A guest cannot use a per-user coupon; a deleted coupon is unknown.
    let res = cart_request(
        &app,
        Method::POST,
        "/api/v1/cart/apply-coupon",
        None,
        Some(&guest_token),
        Some(json!({"code": "ONCE"})),
    )
    .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("sign in"), "{problem}");
    let res = app.request(Method::DELETE, "/api/v1/coupons/later", Some(&shop.admin.access_token), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.request(Method::DELETE, "/api/v1/coupons/later", Some(&shop.admin.access_token), None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    assert!(app.event_types("cart").await.iter().any(|t| t == "CouponApplied"));
    assert!(app.event_types("cart").await.iter().any(|t| t == "CartItemAdded"));
}

backend_tests! {
    async fn carts_on_the_sql_store(backend: Backend) {
        run_cart_flow(spawn_app(backend).await).await;
    }

    async fn carts_on_the_redis_store(backend: Backend) {
        let prefix = format!("emporium-test-{}", uuid::Uuid::now_v7().simple());
        let app = spawn_app_with(backend, |s| {
            s.redis_url = Some(emporium_kernel::config::Secret::new(emporium_kernel::testing::redis_url()));
            s.redis_prefix = prefix;
        })
        .await;
        run_cart_flow(app).await;
    }

    async fn wishlist_items_show_stock_and_move_to_the_cart(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let lamp = shop.lamp.0.clone();
        let user = app.signed_in_customer().await;
        let token = Some(user.access_token.as_str());

        let res = app.post("/api/v1/users/wishlist", token, json!({"product_id": lamp})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = app.post("/api/v1/users/wishlist", token, json!({"product_id": lamp})).await;
        let list: Value = res.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "adding twice keeps one");
        assert_eq!(list["items"][0]["title"], "A Lamps");
        assert_eq!((list["items"][0]["in_stock"].as_bool(), list["items"][0]["available"].as_i64()), (Some(true), Some(5)));
        let res = app.post("/api/v1/users/wishlist", token, json!({"product_id": uuid::Uuid::now_v7()})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.post("/api/v1/users/wishlist", token, json!({"product_id": "lamp"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["product_id"]);
        assert_problem(app.get("/api/v1/users/wishlist", None).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let events = app.event_types("cart").await;
        assert_eq!(events.iter().filter(|t| *t == "WishlistItemAdded").count(), 1);

        let move_path = format!("/api/v1/users/wishlist/{lamp}/move-to-cart");
        let res = app.post(&move_path, token, json!({"quantity": 9})).await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        let list: Value = app.get("/api/v1/users/wishlist", token).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "a failed move leaves it on the wishlist");
        let res = app.post(&move_path, token, json!({"quantity": 2})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cart: Value = res.json().await.unwrap();
        assert_eq!((cart["items"][0]["product_id"].as_str(), cart["items"][0]["quantity"].as_i64()), (Some(lamp.as_str()), Some(2)));
        let list: Value = app.get("/api/v1/users/wishlist", token).await.json().await.unwrap();
        assert_eq!(list["items"], json!([]));
        let res = app.request(Method::DELETE, &format!("/api/v1/users/wishlist/{lamp}"), token, None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }

    async fn wishlists_kept_by_an_older_users_database_move_to_the_cart(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let user = app.signed_in_customer().await;
        let (user_id, lamp): (uuid::Uuid, uuid::Uuid) = (user.id.parse().unwrap(), shop.lamp.0.parse().unwrap());
        // A row written where the wishlist used to live, as an older release left it.
        let added = emporium_kernel::sql_exec!(app.users_db(), |c| sqlx::query(
            "INSERT INTO wishlist_items (user_id, product_id, added_at) VALUES ($1, $2, $3)"
        )
        .bind(user_id)
        .bind(lamp)
        .bind(chrono::Utc::now())
        .execute(c)
        .await)
        .unwrap();
        assert_eq!(added, 1);

        let app = app.restart().await;
        let list: Value = app.get("/api/v1/users/wishlist", Some(&user.access_token)).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["items"][0]["product_id"], shop.lamp.0.as_str());
        let left: i64 = emporium_kernel::sql!(app.users_db(), |c| sqlx::query_scalar(
            "SELECT count(*) FROM wishlist_items"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(left, 0, "the users database keeps none once moved");
        // Starting again moves nothing twice.
        let app = app.restart().await;
        let list: Value = app.get("/api/v1/users/wishlist", Some(&user.access_token)).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }

    async fn cart_lines_say_whether_they_reach_the_shopper(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let (lamp, book) = (shop.lamp.0.clone(), shop.book.0.clone());
        // Lamps only in Berlin (the shop's warehouse); 4 more books in Munich, which delivers
        // within 50 km and to postal codes starting with 80.
        let body = json!({"name": "South", "address": "Marienplatz 1", "lat": 48.137, "lon": 11.575,
            "delivery_radius_km": 50, "postal_prefixes": ["80"]});
        let res = app.post("/api/v1/warehouses", Some(&shop.admin.access_token), body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let munich = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let res = app
            .post(
                &format!("/api/v1/warehouses/{munich}/stock"),
                Some(&shop.admin.access_token),
                json!({"product_id": book, "quantity": 4}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let deliverable = |cart: &Value| -> Vec<(String, Option<bool>)> {
            cart["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["product_id"].as_str().unwrap().to_owned(), l["deliverable"].as_bool()))
                .collect()
        };
        let flags = |lamp_flag, book_flag| vec![(lamp.clone(), lamp_flag), (book.clone(), book_flag)];

        // A guest: no address known, so the lines say nothing until a place is given.
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", None, None, Some(json!({"product_id": lamp}))).await;
        let guest = res.headers().get("x-cart-token").unwrap().to_str().unwrap().to_owned();
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", None, Some(&guest), Some(json!({"product_id": book}))).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(None, None));
        let at = |query: &'static str| cart_request(&app, Method::GET, query, None, Some(&guest), None);
        let cart: Value = at("/api/v1/cart?lat=48.14&lon=11.58").await.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(false), Some(true)), "Munich: books from South, lamps only from Berlin");
        assert_eq!(cart["items"][0]["in_stock"], true, "in stock counts every warehouse");
        let cart: Value = at("/api/v1/cart?postal_code=80%20331").await.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(false), Some(true)), "by postal code alone");
        let cart: Value = at("/api/v1/cart?lat=52.52&lon=13.40").await.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(true), Some(true)), "Berlin");
        for (query, field) in [
            ("/api/v1/cart?lat=north&lon=13.4", "lat"),
            ("/api/v1/cart?lat=52.5", "lon"),
            ("/api/v1/cart?postal_code=123456789012345678901", "postal_code"),
        ] {
            let problem = assert_problem(at(query).await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
            assert_eq!(error_fields(&problem), [field], "{query}");
        }

        // A shopper whose default address is in Munich sees it on every cart answer.
        let user = app.signed_in_customer().await;
        let token = Some(user.access_token.as_str());
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", token, None, Some(json!({"product_id": lamp}))).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(cart["items"][0].get("deliverable"), None, "no address yet");
        let address = json!({"line1": "Marienplatz 1", "city": "München", "postal_code": "80331", "country": "DE",
            "lat": 48.137, "lon": 11.575});
        assert_eq!(app.post("/api/v1/users/addresses", token, address).await.status(), StatusCode::CREATED);
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", token, None, Some(json!({"product_id": book, "quantity": 3}))).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(false), Some(true)));
        let res = cart_request(&app, Method::PUT, &format!("/api/v1/cart/items/{book}"), token, None, Some(json!({"quantity": 5}))).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(
            (cart["items"][1]["in_stock"].as_bool(), cart["items"][1]["deliverable"].as_bool()),
            (Some(true), Some(false)),
            "6 books in all, but only South's 4 reach Munich"
        );
        let res = cart_request(&app, Method::GET, "/api/v1/cart?lat=52.52&lon=13.40", token, None, None).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(true), Some(false)), "a place given overrides the default address");
        let cart: Value = cart_request(&app, Method::GET, "/api/v1/cart", token, None, None).await.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(false), Some(false)));

        // The wishlist's move answers with the same flags.
        let res = app.post("/api/v1/users/wishlist", token, json!({"product_id": lamp})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = app.post(&format!("/api/v1/users/wishlist/{lamp}/move-to-cart"), token, json!({"quantity": 1})).await;
        let cart: Value = res.json().await.unwrap();
        assert_eq!(deliverable(&cart), flags(Some(false), Some(false)));
    }

    async fn signing_in_merges_the_guest_cart(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", None, None, Some(json!({"product_id": shop.book.0, "quantity": 2}))).await;
        let guest_token = res.headers().get("x-cart-token").unwrap().to_str().unwrap().to_owned();
        let user = app.signed_in_customer().await;
        let res = app
            .client
            .post(app.url("/api/v1/users/login"))
            .header("X-Cart-Token", &guest_token)
            .json(&json!({"email": user.email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let cart: Value = cart_request(&app, Method::GET, "/api/v1/cart", Some(&user.access_token), None, None).await.json().await.unwrap();
        assert_eq!(cart["items"][0]["product_id"], shop.book.0.as_str());
        assert_eq!(cart["items"][0]["quantity"], 2);
        let guest: Value = cart_request(&app, Method::GET, "/api/v1/cart", None, Some(&guest_token), None).await.json().await.unwrap();
        assert_eq!(guest["items"], json!([]));
    }

    async fn coupon_limits_hold_under_concurrent_redemptions(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app).await;
        let user = app.signed_in_customer().await;
        for coupon in [
            json!({"code": "ONCE", "kind": "fixed", "value": 100, "max_uses_per_user": 1}),
            json!({"code": "THREE", "kind": "percent", "value": 5, "max_uses": 3}),
        ] {
            assert_eq!(app.post("/api/v1/coupons", Some(&shop.admin.access_token), coupon).await.status(), StatusCode::CREATED);
        }
        let res = cart_request(&app, Method::POST, "/api/v1/cart/items", Some(&user.access_token), None, Some(json!({"product_id": shop.lamp.0, "quantity": 1}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let apply = |code: &'static str| cart_request(&app, Method::POST, "/api/v1/cart/apply-coupon", Some(&user.access_token), None, Some(json!({"code": code})));
        assert_eq!(apply("ONCE").await.status(), StatusCode::OK);

        // An order redeems it; a retry of the same order does not count twice.
        let user_id: emporium_kernel::ids::UserId = user.id.parse().unwrap();
        app.cart.redeem_coupon("ONCE", Some(user_id), "order-1").await.unwrap();
        app.cart.redeem_coupon("ONCE", Some(user_id), "order-1").await.unwrap();
        let problem = assert_problem(apply("ONCE").await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains("already used"), "{problem}");
        let cart: Value = cart_request(&app, Method::GET, "/api/v1/cart", Some(&user.access_token), None, None).await.json().await.unwrap();
        assert_eq!(cart["discount"]["amount"], 0, "the coupon on the cart no longer discounts");
        assert!(cart["coupon"]["invalid_reason"].is_string());

        // Twelve orders race for a coupon with three uses: exactly three get it.
        let racers: Vec<_> = (0..12)
            .map(|i| {
                let cart = app.cart.clone();
                tokio::spawn(async move { cart.redeem_coupon("three", None, &format!("race-{i}")).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => won += 1,
                Err(emporium_cart::service::Error::CouponRejected(emporium_cart::model::CouponRejection::UsedUp)) => {}
                Err(other) => panic!("unexpected: {other:?}"),
            }
        }
        assert_eq!(won, 3);
        let problem = assert_problem(apply("THREE").await, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains("used up"), "{problem}");
    }
}
