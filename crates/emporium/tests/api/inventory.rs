//! Inventory over HTTP: warehouses and stock with their permissions and validation, the internal
//! reservation endpoints, deliverability, and the stock feed into search.

use crate::helpers::*;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A live product (a category and a seller are made for it); returns its id.
async fn product(app: &TestApp, admin: &Session, title: &str) -> String {
    let category =
        app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": format!("Cat {title}")})).await;
    assert_eq!(category.status(), StatusCode::CREATED);
    let category: Value = category.json().await.unwrap();
    let body = json!({"sku": title.to_lowercase().replace(' ', "-"), "title": title, "brand": "Acme",
        "category_id": category["id"], "price": {"amount": 1999, "currency": "USD"}});
    let res = app.post("/api/v1/products", Some(&admin.access_token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn warehouse(app: &TestApp, admin: &Session, name: &str, lat: f64, lon: f64, radius: f64) -> String {
    let body = json!({"name": name, "address": format!("1 {name} Street"), "lat": lat, "lon": lon,
        "delivery_radius_km": radius});
    let res = app.post("/api/v1/warehouses", Some(&admin.access_token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn intake(app: &TestApp, staff: &Session, warehouse: &str, product: &str, quantity: i64) -> Value {
    let res = app
        .post(
            &format!("/api/v1/warehouses/{warehouse}/stock"),
            Some(&staff.access_token),
            json!({"product_id": product, "quantity": quantity}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

backend_tests! {
    async fn warehouses_and_stock_are_managed_by_their_roles(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let customer = app.signed_in_customer().await;
        let body = json!({"name": "Berlin", "address": "1 Main St", "lat": 52.52, "lon": 13.4, "delivery_radius_km": 50});
        let res = app.post("/api/v1/warehouses", Some(&customer.access_token), body).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app
            .post("/api/v1/warehouses", Some(&admin.access_token), json!({"name": "X", "lat": 95, "lon": "east"}))
            .await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["lon"], "a wrongly typed field is named first: {problem}");
        let res = app.post("/api/v1/warehouses", Some(&admin.access_token), json!({"name": "X", "lat": 95})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["address", "lat", "lon", "delivery_radius_km"]);

        let w = warehouse(&app, &admin, "Berlin", 52.52, 13.405, 50.0).await;
        let staff = app.staff_at(&admin, &[&w]).await;
        let listed: Value = app.get("/api/v1/warehouses", None).await.json().await.unwrap();
        assert_eq!(listed["items"][0]["id"], w.as_str());
        let p = product(&app, &admin, "Desk Lamp").await;

        let stock_path = format!("/api/v1/warehouses/{w}/stock");
        let res = app.post(&stock_path, Some(&customer.access_token), json!({"product_id": p, "quantity": 5})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        // Staff move the stock of the warehouses they are assigned to, no other.
        let elsewhere = app.staff_at(&admin, &[]).await;
        let res = app.post(&stock_path, Some(&elsewhere.access_token), json!({"product_id": p, "quantity": 5})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post(&format!("{stock_path}/adjust"), Some(&elsewhere.access_token), json!({"product_id": p, "delta": 1, "reason": "x"})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post(&stock_path, Some(&staff.access_token), json!({"product_id": p, "quantity": -5})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["quantity"]);
        let unknown = uuid::Uuid::now_v7().to_string();
        let res = app.post(&stock_path, Some(&staff.access_token), json!({"product_id": unknown, "quantity": 5})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app
            .post(&format!("/api/v1/warehouses/{unknown}/stock"), Some(&admin.access_token), json!({"product_id": p, "quantity": 5}))
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app
            .post(&format!("/api/v1/warehouses/{unknown}/stock"), Some(&staff.access_token), json!({"product_id": p, "quantity": 5}))
            .await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

        let stock = intake(&app, &staff, &w, &p, 5).await;
        assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64(), stock["in_stock"].as_bool()), (Some(5), Some(5), Some(true)));
        let res = app
            .post(&format!("{stock_path}/adjust"), Some(&staff.access_token), json!({"product_id": p, "delta": -9, "reason": "flood"}))
            .await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        let res = app
            .post(&format!("{stock_path}/adjust"), Some(&staff.access_token), json!({"product_id": p, "delta": -1}))
            .await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["reason"]);
        for delta in [i64::MIN, i64::MAX, 0] {
            let res = app
                .post(&format!("{stock_path}/adjust"), Some(&staff.access_token), json!({"product_id": p, "delta": delta, "reason": "typo"}))
                .await;
            let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
            assert_eq!(error_fields(&problem), ["delta"], "delta {delta}");
        }
        let res = app
            .post(&format!("{stock_path}/adjust"), Some(&staff.access_token), json!({"product_id": p, "delta": -1, "reason": "broken"}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        let public: Value = app.get(&format!("/api/v1/inventory/{p}"), None).await.json().await.unwrap();
        assert_eq!(public["available"], 4);
        let unknown = uuid::Uuid::now_v7();
        assert_problem(app.get(&format!("/api/v1/inventory/{unknown}"), None).await, StatusCode::NOT_FOUND, "not-found").await;
        let unstocked = product(&app, &admin, "Floor Lamp").await;
        let none: Value = app.get(&format!("/api/v1/inventory/{unstocked}"), None).await.json().await.unwrap();
        assert_eq!((none["available"].as_i64(), none["on_hand"].as_i64()), (Some(0), Some(0)), "known, never stocked: zeros");
        assert_eq!(public["warehouses"][0]["warehouse_id"], w.as_str());
        let res = app.get(&format!("/api/v1/inventory/{p}/ledger"), Some(&customer.access_token)).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let ledger: Value = app.get(&format!("/api/v1/inventory/{p}/ledger?limit=1"), Some(&staff.access_token)).await.json().await.unwrap();
        assert_eq!(ledger["items"][0]["movement"], "intake");
        let next = ledger["next_cursor"].as_str().expect("a second page");
        let ledger: Value = app.get(&format!("/api/v1/inventory/{p}/ledger?cursor={next}"), Some(&staff.access_token)).await.json().await.unwrap();
        assert_eq!(ledger["items"][0]["reason"], "broken");
        assert!(ledger["next_cursor"].is_null());
        let res = app.get("/api/v1/inventory/not-an-id", None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }

    async fn reservations_are_internal_and_name_short_lines(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let customer = app.signed_in_customer().await;
        let w = warehouse(&app, &admin, "Berlin", 52.52, 13.405, 50.0).await;
        let (lamp, chair) = (product(&app, &admin, "Lamp").await, product(&app, &admin, "Chair").await);
        intake(&app, &admin, &w, &lamp, 3).await;
        intake(&app, &admin, &w, &chair, 1).await;

        let body = json!({"reference": "order-1", "lines": [{"product_id": lamp, "quantity": 2}]});
        let res = app.post("/api/v1/inventory/reserve", Some(&customer.access_token), body.clone()).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let bad = json!({"reference": "", "lines": [{"product_id": "x", "quantity": 0}], "lat": 100, "lon": 13});
        let res = app.post("/api/v1/inventory/reserve", Some(&admin.access_token), bad).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["reference", "lines[0].product_id", "lines[0].quantity", "lat"]);

        let short = json!({"reference": "order-2", "lines": [{"product_id": lamp, "quantity": 2}, {"product_id": chair, "quantity": 2}]});
        let res = app.post("/api/v1/inventory/reserve", Some(&admin.access_token), short).await;
        let problem = assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(
            problem["lines"],
            json!([{"product_id": chair, "requested": 2, "available": 1, "reason": "out_of_stock"}])
        );
        // Munich is outside the only warehouse's 50 km: the lamps exist, just not for there.
        let far = json!({"reference": "order-3", "lines": [{"product_id": lamp, "quantity": 2}], "lat": 48.14, "lon": 11.58});
        let res = app.post("/api/v1/inventory/reserve", Some(&admin.access_token), far).await;
        let problem = assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(
            problem["lines"],
            json!([{"product_id": lamp, "requested": 2, "available": 0, "reason": "not_deliverable"}])
        );

        let res = app.post("/api/v1/inventory/reserve", Some(&admin.access_token), body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let reservation: Value = res.json().await.unwrap();
        assert_eq!(reservation["status"], "held");
        let id = reservation["id"].as_str().unwrap();
        let stock: Value = app.get(&format!("/api/v1/inventory/{lamp}"), None).await.json().await.unwrap();
        assert_eq!((stock["available"].as_i64(), stock["reserved"].as_i64()), (Some(1), Some(2)));

        let res = app.post("/api/v1/inventory/commit", Some(&admin.access_token), json!({"reservation_id": id})).await;
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "committed");
        let res = app.post("/api/v1/inventory/deduct", Some(&admin.access_token), json!({"reservation_id": id, "warehouse_id": w})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.post("/api/v1/inventory/release", Some(&admin.access_token), json!({"reservation_id": id})).await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        let res = app.post("/api/v1/inventory/commit", Some(&admin.access_token), json!({"reservation_id": "nope"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["reservation_id"]);
        let stock: Value = app.get(&format!("/api/v1/inventory/{lamp}"), None).await.json().await.unwrap();
        assert_eq!((stock["on_hand"].as_i64(), stock["shipped"].as_i64(), stock["allocated"].as_i64()), (Some(1), Some(2), Some(0)));
        let audit: Value = app.get("/api/v1/inventory/audit", Some(&admin.access_token)).await.json().await.unwrap();
        assert_eq!(audit["findings"], json!([]));
    }

    async fn availability_and_search_follow_stock_events(backend: Backend) {
        let app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let w = warehouse(&app, &admin, "Berlin", 52.52, 13.405, 60.0).await;
        let p = product(&app, &admin, "Walnut Bookshelf").await;

        let hit = |body: &Value| body["items"].as_array().unwrap().iter().find(|h| h["product_id"] == p.as_str()).cloned().expect("the product is a hit");
        let found = app.search("q=bookshelf&lat=52.39&lon=13.06").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(false), Some(0)));
        assert_eq!(hit(&found)["deliverable"], false);

        intake(&app, &admin, &w, &p, 7).await;
        let found = app.search("q=bookshelf&lat=52.39&lon=13.06").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(true), Some(7)));
        assert_eq!(hit(&found)["deliverable"], true, "Potsdam is within Berlin's 60 km");
        let munich = app.search("q=bookshelf&lat=48.14&lon=11.58").await;
        assert_eq!(hit(&munich)["deliverable"], false);
        assert!(hit(&app.search("q=bookshelf").await).get("deliverable").is_none(), "no location, no deliverable");
        // A signed-in shopper's default address stands in for lat/lon.
        let shopper = app.signed_in_customer().await;
        let address = json!({"line1": "Am Neuen Markt 1", "city": "Potsdam", "postal_code": "14467", "country": "DE",
            "lat": 52.39, "lon": 13.06, "is_default": true});
        assert_eq!(app.post("/api/v1/users/addresses", Some(&shopper.access_token), address).await.status(), StatusCode::CREATED);
        let mine: Value = app.get("/api/v1/search?q=bookshelf", Some(&shopper.access_token)).await.json().await.unwrap();
        assert_eq!(hit(&mine)["deliverable"], true, "delivered to the shopper's default address");
        // The catalog's own projection of the same events feeds the product page.
        let mut stock = Value::Null;
        for _ in 0..100 {
            let page: Value = app.get(&format!("/api/v1/products/{p}"), None).await.json().await.unwrap();
            stock = page["stock"].clone();
            if stock["available"] == 7 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(stock, json!({"available": 7, "in_stock": true}), "the product page shows the aggregate");

        // A catalog update re-indexes the product and must keep its stock.
        let res = app.request(Method::PATCH, &format!("/api/v1/products/{p}"), Some(&admin.access_token), Some(json!({"title": "Walnut Bookshelf XL"}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let found = app.search("q=bookshelf").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(true), Some(7)));

        let res = app.get(&format!("/api/v1/delivery/availability?product_id={p}&lat=52.39&lon=13.06"), None).await;
        let availability: Value = res.json().await.unwrap();
        assert_eq!(availability["deliverable"], true);
        assert_eq!(availability["warehouse_id"], w.as_str());
        assert_eq!(availability["eta_days"], 1);
        assert!(availability["distance_km"].as_f64().unwrap() < 40.0);
        let far: Value = app.get(&format!("/api/v1/delivery/availability?product_id={p}&lat=48.14&lon=11.58"), None).await.json().await.unwrap();
        assert_eq!(far["deliverable"], false);
        let res = app.get(&format!("/api/v1/delivery/availability?product_id={p}&lat=abc"), None).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["lat", "lon"]);
        let res = app.get("/api/v1/delivery/availability?product_id=x", None).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["product_id"]);

        // Everything reserved: out of stock in search.
        let body = json!({"reference": "all", "lines": [{"product_id": p, "quantity": 7}]});
        assert_eq!(app.post("/api/v1/inventory/reserve", Some(&admin.access_token), body).await.status(), StatusCode::CREATED);
        let found = app.search("q=bookshelf&lat=52.39&lon=13.06").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(false), Some(0)));
        assert_eq!(hit(&found)["deliverable"], false);

        // Plenty again, then one sale: the document is not rewritten for 1,000 → 999, yet the
        // count shown is the live one (also through the popular-query cache).
        intake(&app, &admin, &w, &p, 1_000).await;
        let found = app.search("q=bookshelf").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(true), Some(1_000)));
        let body = json!({"reference": "one more", "lines": [{"product_id": p, "quantity": 1}]});
        assert_eq!(app.post("/api/v1/inventory/reserve", Some(&admin.access_token), body).await.status(), StatusCode::CREATED);
        let found = app.search("q=bookshelf").await;
        assert_eq!((hit(&found)["in_stock"].as_bool(), hit(&found)["stock_left"].as_i64()), (Some(true), Some(999)));
    }

    async fn holds_that_expired_while_down_are_released_at_start(backend: Backend) {
        let mut app = spawn_app(backend).await;
        let admin = app.signed_in_admin().await;
        let w = warehouse(&app, &admin, "Berlin", 52.52, 13.405, 60.0).await;
        let p = product(&app, &admin, "Hourglass").await;
        intake(&app, &admin, &w, &p, 2).await;
        let body = json!({"reference": "abandoned", "lines": [{"product_id": p, "quantity": 2}], "ttl_secs": 1});
        assert_eq!(app.post("/api/v1/inventory/reserve", Some(&admin.access_token), body).await.status(), StatusCode::CREATED);
        app.stop().await;
        // Let the hold run out while nothing is running.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let app = app.restart_stopped().await;
        let mut available = 0;
        for _ in 0..100 {
            let stock: Value = app.get(&format!("/api/v1/inventory/{p}"), None).await.json().await.unwrap();
            available = stock["available"].as_i64().unwrap();
            if available == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(available, 2, "the sweeper released the expired hold after the restart");
        let ledger: Value = app.get(&format!("/api/v1/inventory/{p}/ledger"), Some(&admin.access_token)).await.json().await.unwrap();
        let movements: Vec<&str> = ledger["items"].as_array().unwrap().iter().map(|e| e["movement"].as_str().unwrap()).collect();
        assert_eq!(movements, ["intake", "reserve", "expire"]);
    }
}
