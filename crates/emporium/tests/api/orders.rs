//! Checkout, orders and payments over HTTP on both databases: the whole lifecycle, the decline,
//! async and timeout paths, cancel and return with refunds and stock, idempotency under
//! concurrent retries, a flash sale through the whole checkout, expiry on a moved clock, and who
//! may see and change an order.

use crate::helpers::*;
use emporium_kernel::backend_tests;
use emporium_kernel::clock::ManualClock;
use emporium_kernel::ids::{OrderId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Shop {
    admin: Session,
    staff: Session,
    lamp: String,
    book: String,
    berlin: String,
    potsdam: String,
}

async fn product(app: &TestApp, admin: &Session, category: &str, title: &str, price: i64) -> String {
    let body = json!({"sku": title.to_lowercase().replace(' ', "-"), "title": title, "brand": "Acme",
        "category_id": category, "price": {"amount": price, "currency": "USD"}});
    let res = app.post("/api/v1/products", Some(&admin.access_token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn warehouse(app: &TestApp, admin: &Session, name: &str, lat: f64, lon: f64) -> String {
    let body = json!({"name": name, "address": format!("{name} 1"), "lat": lat, "lon": lon, "delivery_radius_km": 50});
    let res = app.post("/api/v1/warehouses", Some(&admin.access_token), body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn intake(app: &TestApp, staff: &Session, warehouse: &str, product: &str, quantity: i64) {
    let path = format!("/api/v1/warehouses/{warehouse}/stock");
    let res = app.post(&path, Some(&staff.access_token), json!({"product_id": product, "quantity": quantity})).await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// Lamps (20.00 €): 2 in Berlin, `potsdam_lamps` in Potsdam. Books (15.00 €): 10 in Potsdam.
async fn shop(app: &TestApp, potsdam_lamps: i64) -> Shop {
    let admin = app.signed_in_admin().await;
    let res = app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": "Home"})).await;
    let category = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let lamp = product(app, &admin, &category, "Desk Lamp", 2_000).await;
    let book = product(app, &admin, &category, "Cook Book", 1_500).await;
    let berlin = warehouse(app, &admin, "Berlin", 52.52, 13.405).await;
    let potsdam = warehouse(app, &admin, "Potsdam", 52.39, 13.06).await;
    let staff = app.staff_at(&admin, &[&berlin, &potsdam]).await;
    intake(app, &staff, &berlin, &lamp, 2).await;
    if potsdam_lamps > 0 {
        intake(app, &staff, &potsdam, &lamp, potsdam_lamps).await;
    }
    intake(app, &staff, &potsdam, &book, 10).await;
    Shop { admin, staff, lamp, book, berlin, potsdam }
}

/// A customer with a Berlin address; returns the session and the address id.
async fn buyer(app: &TestApp) -> (Session, String) {
    let berlin = json!({"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE",
        "lat": 52.53, "lon": 13.38});
    buyer_at(app, berlin).await
}

/// A customer with `address`; returns the session and the address id.
async fn buyer_at(app: &TestApp, address: Value) -> (Session, String) {
    let session = app.signed_in_customer().await;
    let res = app.post("/api/v1/users/addresses", Some(&session.access_token), address).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    (session, id)
}

async fn add(app: &TestApp, who: &Session, product: &str, quantity: i64) {
    let res = app
        .post("/api/v1/cart/items", Some(&who.access_token), json!({"product_id": product, "quantity": quantity}))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
}

async fn post_keyed(app: &TestApp, path: &str, who: &Session, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(&who.access_token).json(&body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

fn card(token: &str) -> Value {
    json!({"type": "card", "token": token})
}

async fn order(app: &TestApp, who: &Session, id: &str) -> Value {
    let res = app.get(&format!("/api/v1/orders/{id}"), Some(&who.access_token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The orders `who` sees listed.
async fn listed(app: &TestApp, who: &Session) -> Vec<Value> {
    let list: Value = app.get("/api/v1/orders", Some(&who.access_token)).await.json().await.unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Polls the order until it reaches `status` (background work: events, workers).
async fn wait_for(app: &TestApp, who: &Session, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = order(app, who, id).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {id} never became {status}: {last}");
}

/// `who` buys what is in their cart with the sandbox's good card and waits until the order is
/// split into warehouse orders; returns the order as it then reads.
async fn bought(app: &TestApp, who: &Session, address: &str) -> Value {
    let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
    let res = post_keyed(app, "/api/v1/orders", who, None, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    wait_for(app, who, &id, "PROCESSING").await
}

/// (available, reserved, allocated, on_hand, shipped) of a product over all warehouses.
async fn stock(app: &TestApp, product: &str) -> (i64, i64, i64, i64, i64) {
    let v: Value = app.get(&format!("/api/v1/inventory/{product}"), None).await.json().await.unwrap();
    let n = |k: &str| v[k].as_i64().unwrap();
    (n("available"), n("reserved"), n("allocated"), n("on_hand"), n("shipped"))
}

/// Polls a product's reviews until their (author, verified_purchase) pairs, sorted, are
/// `expected` (the flag follows order events); returns the last pairs seen.
async fn await_review_flags(app: &TestApp, product: &str, expected: &[(String, bool)]) -> Vec<(String, bool)> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let list: Value = app.get(&format!("/api/v1/products/{product}/reviews"), None).await.json().await.unwrap();
        seen = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r["verified_purchase"].as_bool().unwrap()))
            .collect();
        seen.sort();
        if seen == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

async fn assert_ledger_clean(app: &TestApp, admin: &Session) {
    let audit: Value = app.get("/api/v1/inventory/audit", Some(&admin.access_token)).await.json().await.unwrap();
    assert_eq!(audit["findings"], json!([]), "stock rows replay from their ledger");
}

fn statuses(order: &Value) -> Vec<String> {
    order["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap().to_owned()).collect()
}

async fn payment_count(app: &TestApp) -> i64 {
    emporium_kernel::sql!(app.db("payments"), |c| sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments")
        .fetch_one(c)
        .await)
    .unwrap()
}

backend_tests! {
    async fn an_order_goes_from_cart_to_return(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 4).await;
        add(&app, &ann, &shop.book, 1).await;

        // Checkout holds every line; the order snapshots titles and prices.
        let res = post_keyed(&app, "/api/v1/checkout", &ann, Some("c-1"), json!({"shipping_address_id": address})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let checkout: Value = res.json().await.unwrap();
        assert_eq!(checkout["status"], "PAYMENT_PENDING");
        assert!(checkout["expires_at"].is_string());
        assert_eq!(checkout["total"], json!({"amount": 9_500, "currency": "USD"}));
        assert_eq!(checkout["lines"].as_array().unwrap().len(), 2);
        assert_eq!(stock(&app, &shop.lamp).await, (1, 4, 0, 5, 0));
        let id = checkout["id"].as_str().unwrap().to_owned();
        assert_eq!(checkout, order(&app, &ann, &id).await, "the answer is the order as stored");

        // Paying confirms; the cart is emptied; the order is split per warehouse.
        let res = post_keyed(&app, &format!("/api/v1/orders/{id}/pay"), &ann, Some("p-1"), json!({"payment_method": card("tok_visa")})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let paid: Value = res.json().await.unwrap();
        assert!(paid["status"] == "CONFIRMED" || paid["status"] == "PROCESSING", "{paid}");
        assert_eq!(paid["payment"]["status"], "CAPTURED");
        assert_eq!(paid["payment"]["gateway"], "sandbox");
        assert!(paid["payment"]["transaction_id"].as_str().unwrap().starts_with("sbx_"));
        assert_eq!(stock(&app, &shop.lamp).await, (1, 0, 4, 5, 0));
        let cart: Value = app.get("/api/v1/cart", Some(&ann.access_token)).await.json().await.unwrap();
        assert_eq!(cart["items"], json!([]), "ordered lines left the cart");
        let processing = wait_for(&app, &ann, &id, "PROCESSING").await;
        // The pay answer is the order as stored then: everything but the later split agrees.
        for field in ["lines", "total", "payment", "shipping_address", "expires_at", "created_at"] {
            assert_eq!(paid[field], processing[field], "{field}");
        }
        let confirmed_history: Vec<_> = processing["history"].as_array().unwrap().iter().take(3).cloned().collect();
        assert_eq!(paid["history"].as_array().unwrap()[..3], confirmed_history[..], "CREATED, PAYMENT_PENDING, CONFIRMED");
        let shipments = processing["shipments"].as_array().unwrap().clone();
        assert_eq!(shipments.len(), 2, "lamps come from Berlin and Potsdam: {processing}");

        // Warehouses ship and deliver their parts; the parent follows.
        for (i, s) in shipments.iter().enumerate() {
            let path = format!("/api/v1/warehouse-orders/{}/ship", s["warehouse_order_id"].as_str().unwrap());
            let res = app.post(&path, Some(&ann.access_token), json!({})).await;
            assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
            let res = app.post(&path, Some(&shop.staff.access_token), json!({})).await;
            assert_eq!(res.status(), StatusCode::OK);
            let expected = if i == 0 { "PROCESSING" } else { "SHIPPED" };
            assert_eq!(order(&app, &ann, &id).await["status"], expected);
        }
        assert_eq!(stock(&app, &shop.lamp).await, (1, 0, 0, 1, 4), "shipping took the units out");
        let res = app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&ann.access_token), json!({})).await;
        assert_problem(res, StatusCode::CONFLICT, "illegal-transition").await;
        let berlin_orders = app
            .get(&format!("/api/v1/warehouse-orders?warehouse_id={}", shipments[0]["warehouse_id"].as_str().unwrap()), Some(&shop.staff.access_token))
            .await;
        assert_eq!(berlin_orders.json::<Value>().await.unwrap()["items"].as_array().unwrap().len(), 1);
        for s in &shipments {
            let path = format!("/api/v1/warehouse-orders/{}/deliver", s["warehouse_order_id"].as_str().unwrap());
            assert_eq!(app.post(&path, Some(&shop.staff.access_token), json!({})).await.status(), StatusCode::OK);
        }
        let delivered = order(&app, &ann, &id).await;
        assert_eq!(delivered["status"], "DELIVERED");
        assert!(delivered["delivered_at"].is_string());

        // A partial return: one lamp back on the shelf, its share refunded.
        let body = json!({"lines": [{"product_id": shop.lamp, "quantity": 1, "restock": true}], "reason": "too bright"});
        let res = app.post(&format!("/api/v1/orders/{id}/return"), Some(&ann.access_token), body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let returned: Value = res.json().await.unwrap();
        assert_eq!(returned["status"], "RETURNED");
        assert_eq!(returned["payment"]["status"], "PARTIALLY_REFUNDED");
        assert_eq!(returned["payment"]["refunded"], 2_000);
        assert_eq!(stock(&app, &shop.lamp).await, (2, 0, 0, 2, 4));
        assert_eq!(
            statuses(&returned),
            ["CREATED", "PAYMENT_PENDING", "CONFIRMED", "PROCESSING", "SHIPPED", "DELIVERED", "RETURNED"]
        );
        assert_eq!(returned["history"][6]["reason"], "too bright");
        let res = app.post(&format!("/api/v1/orders/{id}/return"), Some(&ann.access_token), json!({})).await;
        assert_problem(res, StatusCode::CONFLICT, "illegal-transition").await;

        let list: Value = app.get("/api/v1/orders", Some(&ann.access_token)).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let events = app.event_types("orders").await;
        for expected in ["OrderPlaced", "OrderConfirmed", "OrderProcessing", "WarehouseOrderShipped", "OrderShipped",
                         "WarehouseOrderDelivered", "OrderDelivered", "OrderReturned"] {
            assert!(events.iter().any(|e| e == expected), "{expected} missing from {events:?}");
        }
        assert_ledger_clean(&app, &shop.admin).await;
    }

    async fn declines_cancels_and_strangers(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        let (bob, bob_address) = buyer(&app).await;

        // Declined: 402, PAYMENT_FAILED, stock back.
        add(&app, &ann, &shop.lamp, 2).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("tok_decline")})).await;
        let problem = assert_problem(res, StatusCode::PAYMENT_REQUIRED, "payment-failed").await;
        assert_eq!(problem["status"], 402);
        let failed_id = problem["order_id"].as_str().unwrap().to_owned();
        let failed = order(&app, &ann, &failed_id).await;
        assert_eq!(failed["status"], "PAYMENT_FAILED");
        assert_eq!(stock(&app, &shop.lamp).await, (5, 0, 0, 5, 0));

        // A card number instead of a token: refused before anything is held or recorded (PCI).
        let before = stock(&app, &shop.lamp).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("4111 1111 1111 1111")})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["payment_method.token"]);
        assert_eq!(stock(&app, &shop.lamp).await, before, "nothing held");

        // Bad input is named.
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": bob_address, "payment_method": {"type": "cash"}})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["payment_method.type", "payment_method.token"]);
        let res = post_keyed(&app, "/api/v1/checkout", &ann, None, json!({"shipping_address_id": bob_address})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["shipping_address_id"], "someone else's address");
        let res = post_keyed(&app, "/api/v1/checkout", &bob, None, json!({"shipping_address_id": bob_address})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["cart"]);

        // Short stock names every short line and holds nothing.
        add(&app, &bob, &shop.lamp, 5).await;
        add(&app, &ann, &shop.book, 1).await;
        let res = post_keyed(&app, "/api/v1/checkout", &ann, None, json!({"shipping_address_id": address})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let checkout: Value = res.json().await.unwrap();
        let ann_id = checkout["id"].as_str().unwrap().to_owned();
        assert_eq!(checkout["order_id"], ann_id.as_str(), "API.md names it order_id");
        let res = post_keyed(&app, "/api/v1/checkout", &bob, None, json!({"shipping_address_id": bob_address})).await;
        let problem = assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(
            problem["lines"],
            json!([{"product_id": shop.lamp, "requested": 5, "available": 3, "reason": "out_of_stock"}])
        );
        assert_eq!(stock(&app, &shop.lamp).await, (3, 2, 0, 5, 0), "Bob's failed checkout holds nothing");
        let bobs: Value = app.get("/api/v1/orders", Some(&bob.access_token)).await.json().await.unwrap();
        assert_eq!(bobs["items"], json!([]), "a checkout that could not hold stock leaves no order behind");

        // Books are in stock, but no warehouse delivers to Munich: the line says so.
        let munich = json!({"line1": "Marienplatz 1", "city": "München", "postal_code": "80331", "country": "DE",
            "lat": 48.137, "lon": 11.575});
        let (cleo, cleo_address) = buyer_at(&app, munich).await;
        add(&app, &cleo, &shop.book, 1).await;
        let res = post_keyed(&app, "/api/v1/checkout", &cleo, None, json!({"shipping_address_id": cleo_address})).await;
        let problem = assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        assert_eq!(
            problem["lines"],
            json!([{"product_id": shop.book, "requested": 1, "available": 0, "reason": "not_deliverable"}])
        );

        // Ann pays; Bob can neither see nor touch her order.
        let res = post_keyed(&app, &format!("/api/v1/orders/{ann_id}/pay"), &bob, None, json!({"payment_method": card("tok_visa")})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = post_keyed(&app, &format!("/api/v1/orders/{ann_id}/pay"), &ann, None, json!({"payment_method": card("tok_visa")})).await;
        assert_eq!(res.status(), StatusCode::OK);
        for path in [format!("/api/v1/orders/{ann_id}/cancel"), format!("/api/v1/orders/{ann_id}/return"), format!("/api/v1/checkout/{ann_id}/cancel")] {
            let res = app.post(&path, Some(&bob.access_token), json!({})).await;
            assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        }
        let res = app.get(&format!("/api/v1/orders/{ann_id}"), Some(&bob.access_token)).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        let res = app.get(&format!("/api/v1/orders/{ann_id}"), None).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        assert_eq!(order(&app, &shop.admin, &ann_id).await["id"], ann_id.as_str(), "admins see every order");

        // Ann cancels before shipping: stock back, money back.
        let res = app.post(&format!("/api/v1/orders/{ann_id}/cancel"), Some(&ann.access_token), json!({"reason": "changed my mind"})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cancelled: Value = res.json().await.unwrap();
        assert_eq!(cancelled["status"], "CANCELLED");
        assert_eq!(cancelled["payment"]["status"], "REFUNDED");
        assert_eq!(cancelled["payment"]["refunded"], cancelled["total"]["amount"]);
        assert_eq!(stock(&app, &shop.lamp).await, (5, 0, 0, 5, 0));
        assert!(cancelled["shipments"].as_array().unwrap().iter().all(|s| s["status"] == "CANCELLED"));
        let res = app.post(&format!("/api/v1/orders/{ann_id}/cancel"), Some(&ann.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK, "cancelling twice is harmless");
        let res = post_keyed(&app, &format!("/api/v1/orders/{ann_id}/pay"), &ann, None, json!({"payment_method": card("tok_visa")})).await;
        assert_problem(res, StatusCode::CONFLICT, "illegal-transition").await;

        // Bob now gets the lamps, then abandons the checkout.
        let res = post_keyed(&app, "/api/v1/checkout", &bob, None, json!({"shipping_address_id": bob_address})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let bob_id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(stock(&app, &shop.lamp).await, (0, 5, 0, 5, 0));
        let res = app.post(&format!("/api/v1/checkout/{bob_id}/cancel"), Some(&bob.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["status"], "CANCELLED");
        assert_eq!(stock(&app, &shop.lamp).await, (5, 0, 0, 5, 0));
        assert_eq!(payment_count(&app).await, 2, "the declined and Ann's payment; none for Bob's abandoned checkout");
        assert_ledger_clean(&app, &shop.admin).await;
    }

    async fn one_key_one_order_one_charge(backend: Backend) {
        let app = Arc::new(spawn_app(backend).await);
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 1).await;
        let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
        let ann = Arc::new(ann);
        let retries: Vec<_> = (0..20)
            .map(|_| {
                let (app, ann, body) = (app.clone(), ann.clone(), body.clone());
                tokio::spawn(async move {
                    let res = post_keyed(&app, "/api/v1/orders", &ann, Some("once"), body).await;
                    (res.status(), res.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for retry in retries {
            let (status, body) = retry.await.unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert!(body["status"] == "CONFIRMED" || body["status"] == "PROCESSING", "{body}");
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "every retry got the first answer");
        assert_eq!(payment_count(&app).await, 1, "one charge");
        assert_eq!(stock(&app, &shop.lamp).await, (4, 0, 1, 5, 0));
        let list: Value = app.get("/api/v1/orders", Some(&ann.access_token)).await.json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // The key with another body is refused; a later retry of the first still replays.
        let other = json!({"shipping_address_id": address, "payment_method": card("tok_decline")});
        let res = post_keyed(&app, "/api/v1/orders", &ann, Some("once"), other).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused").await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, Some("once"), body.clone()).await;
        assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
        assert_eq!(res.json::<Value>().await.unwrap()["id"].as_str().unwrap(), ids.first().unwrap().as_str());
        // Past the HTTP replay (a stored answer lost, another node): the orders service itself
        // finds the first order by its key although its cart is now empty, and also when the
        // cart holds other things again (the new order's insert meets the key).
        let user: emporium_kernel::ids::UserId = ann.id.parse().unwrap();
        let address_id: emporium_kernel::ids::AddressId = address.parse().unwrap();
        for round in ["empty cart", "refilled cart"] {
            let again = app.orders.place_order(user, address_id, "tok_visa", Some("once")).await.unwrap();
            assert_eq!(again.order.id.to_string(), *ids.first().unwrap(), "{round}");
            add(&app, &ann, &shop.book, 1).await;
        }
        assert_eq!(payment_count(&app).await, 1, "still one charge");
        // Keys belong to their user: Bob's "once" is his own.
        let (bob, bob_address) = buyer(&app).await;
        add(&app, &bob, &shop.book, 1).await;
        let res = post_keyed(&app, "/api/v1/orders", &bob, Some("once"), json!({"shipping_address_id": bob_address, "payment_method": card("tok_visa")})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = post_keyed(&app, "/api/v1/orders", &bob, Some(&"x".repeat(300)), body).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["Idempotency-Key"]);
    }

    async fn a_flash_sale_through_checkout_sells_exactly_the_stock(backend: Backend) {
        let app = Arc::new(spawn_app(backend).await);
        let admin = app.signed_in_admin().await;
        let res = app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": "Deals"})).await;
        let category = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let console = product(&app, &admin, &category, "Game Console", 29_900).await;
        let berlin = warehouse(&app, &admin, "Berlin", 52.52, 13.405).await;
        intake(&app, &admin, &berlin, &console, 20).await;

        // 500 shoppers, each with an address and the console in the cart (set up directly).
        let product_id: emporium_kernel::ids::ProductId = console.parse().unwrap();
        let mut shoppers = Vec::new();
        for chunk in 0..10 {
            let batch: Vec<_> = (0..50)
                .map(|i| {
                    let app = app.clone();
                    tokio::spawn(async move {
                        let email = format!("fan-{chunk}-{i}-{}@example.com", uuid::Uuid::now_v7().simple());
                        let registration = emporium_users::service::Registration {
                            email: emporium_users::model::Email::parse(&email).unwrap(),
                            password: emporium_users::model::Password::parse("flash sale pass").unwrap(),
                            name: emporium_users::model::PersonName::parse("Fan").unwrap(),
                        };
                        let session = app.users.create_user(registration, vec![]).await.unwrap();
                        let res = app.post("/api/v1/users/addresses", Some(&session.access_token), json!({"line1": "Alexanderplatz 1",
                            "city": "Berlin", "postal_code": "10178", "country": "DE", "lat": 52.52, "lon": 13.41})).await;
                        let address = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                        let owner = emporium_cart::model::CartOwner::User(session.user.id);
                        app.cart.add_item(&owner, product_id, 1).await.unwrap();
                        (session.access_token, address, session.user.id)
                    })
                })
                .collect();
            for shopper in batch {
                shoppers.push(shopper.await.unwrap());
            }
        }
        let buyers: Vec<_> = shoppers
            .into_iter()
            .map(|(token, address, _user): (String, String, UserId)| {
                let app = app.clone();
                tokio::spawn(async move {
                    let res = app
                        .client
                        .post(app.url("/api/v1/orders"))
                        .bearer_auth(token)
                        .json(&json!({"shipping_address_id": address, "payment_method": card("tok_visa")}))
                        .send()
                        .await
                        .unwrap();
                    (res.status(), res.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let (mut confirmed, mut sold_out) = (0, 0);
        for buyer in buyers {
            let (status, body) = buyer.await.unwrap();
            match status {
                StatusCode::CREATED => {
                    assert!(body["status"] == "CONFIRMED" || body["status"] == "PROCESSING", "{body}");
                    confirmed += 1;
                }
                StatusCode::CONFLICT => {
                    assert_eq!(body["lines"][0]["product_id"], console.as_str(), "{body}");
                    sold_out += 1;
                }
                other => panic!("a buyer got {other}: {body}"),
            }
        }
        assert_eq!((confirmed, sold_out), (20, 480));
        assert_eq!(stock(&app, &console).await, (0, 0, 20, 20, 0), "nothing oversold, nothing left held");
        assert_eq!(payment_count(&app).await, 20, "no charge without an order");
        let captured: i64 = emporium_kernel::sql!(app.db("payments"), |c| sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM payments WHERE status = 'captured'"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(captured, 20);
        assert_ledger_clean(&app, &admin).await;
    }

    // Writers' lock order under contention: shoppers checking out carts of four lines over
    // the same six products at once, round after round, some cancelling at once (holds placed,
    // committed and released concurrently over the same rows). Every checkout is confirmed or
    // refused for stock, none fails, and the stock adds up to the orders.
    async fn hot_multi_line_checkouts_are_confirmed_or_refused_for_stock(backend: Backend) {
        const SHOPPERS: usize = 8;
        const ROUNDS: usize = 6;
        // 108 units for 192 lines, a third of them cancelled: more asked for than there is.
        const UNITS_PER_WAREHOUSE: i64 = 9;
        let app = Arc::new(spawn_app(backend).await);
        let admin = app.signed_in_admin().await;
        let res = app.post("/api/v1/categories", Some(&admin.access_token), json!({"name": "Hot"})).await;
        let category = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let berlin = warehouse(&app, &admin, "Berlin", 52.52, 13.405).await;
        let potsdam = warehouse(&app, &admin, "Potsdam", 52.39, 13.06).await;
        let mut products = Vec::new();
        for i in 0..6 {
            let product = product(&app, &admin, &category, &format!("Hot Item {i}"), 1_000 + i).await;
            intake(&app, &admin, &berlin, &product, UNITS_PER_WAREHOUSE).await;
            intake(&app, &admin, &potsdam, &product, UNITS_PER_WAREHOUSE).await;
            products.push(product);
        }
        let mut shoppers = Vec::new();
        for _ in 0..SHOPPERS {
            shoppers.push(buyer(&app).await);
        }

        let products = Arc::new(products);
        let tasks: Vec<_> = shoppers
            .into_iter()
            .enumerate()
            .map(|(n, (who, address))| {
                let (app, products) = (app.clone(), products.clone());
                tokio::spawn(async move {
                    // (order id, lines, kept) of every confirmed checkout, and the refusals (adds
                    // and checkouts refused for stock).
                    let (mut confirmed, mut refused) = (Vec::new(), 0);
                    for round in 0..ROUNDS {
                        // Four of the six products, a different four per shopper and round.
                        let picked: Vec<&String> = (0..4).map(|k| &products[(n + round + k) % products.len()]).collect();
                        for product in &picked {
                            let res = app.post("/api/v1/cart/items", Some(&who.access_token),
                                json!({"product_id": product, "quantity": 1})).await;
                            // Adding checks the stock too: a line already sold out is left out.
                            match res.status() {
                                StatusCode::OK => {}
                                StatusCode::CONFLICT => refused += 1,
                                other => panic!("add to cart: {other} {}", res.text().await.unwrap()),
                            }
                        }
                        let cart: Value = app.get("/api/v1/cart", Some(&who.access_token)).await.json().await.unwrap();
                        let lines: Vec<String> = cart["items"].as_array().unwrap().iter()
                            .map(|i| i["product_id"].as_str().unwrap().to_owned()).collect();
                        if lines.is_empty() {
                            continue;
                        }
                        let key = format!("hot-{n}-{round}");
                        let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
                        let res = post_keyed(&app, "/api/v1/orders", &who, Some(&key), body).await;
                        let status = res.status();
                        let body: Value = res.json().await.unwrap();
                        match status {
                            StatusCode::CREATED => {
                                let id = body["id"].as_str().unwrap().to_owned();
                                // Every third confirmed order is cancelled at once: stock back.
                                let kept = confirmed.len() % 3 != 2;
                                if !kept {
                                    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&who.access_token),
                                        json!({"reason": "changed my mind"})).await;
                                    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
                                }
                                confirmed.push((id, lines, kept));
                            }
                            StatusCode::CONFLICT => {
                                assert!(!body["lines"].as_array().unwrap().is_empty(), "a refusal names its short lines: {body}");
                                refused += 1;
                                // The cart keeps its lines after a refusal: start the next round afresh.
                                for product in &lines {
                                    let res = app.request(Method::DELETE, &format!("/api/v1/cart/items/{product}"),
                                        Some(&who.access_token), None).await;
                                    assert_eq!(res.status(), StatusCode::OK);
                                }
                            }
                            other => panic!("checkout {key} failed with {other}: {body}"),
                        }
                    }
                    (confirmed, refused)
                })
            })
            .collect();
        let (mut confirmed, mut refused) = (Vec::new(), 0);
        for task in tasks {
            let (c, r) = task.await.unwrap();
            confirmed.extend(c);
            refused += r;
        }
        assert!(!confirmed.is_empty(), "some checkouts were confirmed");
        assert!(refused > 0, "the stock ran out: {} confirmed, none refused", confirmed.len());
        for product in products.iter() {
            let kept = confirmed.iter().filter(|(_, lines, kept)| *kept && lines.contains(product)).count() as i64;
            let (available, reserved, allocated, on_hand, shipped) = stock(&app, product).await;
            assert_eq!((reserved, allocated, on_hand, shipped), (0, kept, 2 * UNITS_PER_WAREHOUSE, 0),
                "{product}: nothing left held, every kept order's unit allocated");
            assert_eq!(available, on_hand - allocated);
        }
        let charged = confirmed.len() as i64;
        assert_eq!(payment_count(&app).await, charged, "one charge per confirmed checkout");
        assert_ledger_clean(&app, &admin).await;
    }

    // Warehouse staff work where an admin assigned them: they list, ship and see the orders of
    // those warehouses only (not another's, nor its customers' addresses); a new assignment
    // takes effect at once.
    async fn staff_work_only_at_their_warehouses(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.book, 1).await;
        let processing = bought(&app, &ann, &address).await;
        let id = processing["id"].as_str().unwrap().to_owned();
        let shipment = processing["shipments"][0]["warehouse_order_id"].as_str().unwrap().to_owned();
        assert_eq!(processing["shipments"][0]["warehouse_id"], shop.potsdam.as_str(), "books are only in Potsdam");

        let berliner = app.staff_at(&shop.admin, &[&shop.berlin]).await;
        let token = Some(berliner.access_token.as_str());
        let listed = app.get(&format!("/api/v1/warehouse-orders?warehouse_id={}", shop.potsdam), token).await;
        assert_problem(listed, StatusCode::FORBIDDEN, "forbidden").await;
        let own: Value = app.get(&format!("/api/v1/warehouse-orders?warehouse_id={}", shop.berlin), token).await.json().await.unwrap();
        assert_eq!(own["items"], json!([]));
        let res = app.post(&format!("/api/v1/warehouse-orders/{shipment}/ship"), token, json!({})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        assert_problem(app.get(&format!("/api/v1/orders/{id}"), token).await, StatusCode::NOT_FOUND, "not-found").await;
        assert_eq!(app.get(&format!("/api/v1/orders/{id}"), Some(&shop.staff.access_token)).await.status(), StatusCode::OK);

        // Moved to Potsdam: the old token ends, the next one works there.
        let path = format!("/api/v1/admin/users/{}/warehouses", berliner.id);
        let res = app.request(Method::PUT, &path, Some(&berliner.access_token), Some(json!({"warehouse_ids": [shop.potsdam]}))).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.request(Method::PUT, &path, Some(&shop.admin.access_token), Some(json!({"warehouse_ids": ["nowhere"]}))).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["warehouse_ids"]);
        let res = app.request(Method::PUT, &path, Some(&shop.admin.access_token), Some(json!({"warehouse_ids": [shop.potsdam, shop.potsdam]}))).await;
        assert_eq!(res.json::<Value>().await.unwrap()["warehouse_ids"], json!([shop.potsdam]));
        assert_problem(app.get(&format!("/api/v1/orders/{id}"), token).await, StatusCode::UNAUTHORIZED, "invalid-token").await;
        let res = app.post("/api/v1/users/token/refresh", None, json!({"refresh_token": berliner.refresh_token})).await;
        let moved = session(res.json().await.unwrap());
        let token = Some(moved.access_token.as_str());
        assert_eq!(app.get(&format!("/api/v1/orders/{id}"), token).await.status(), StatusCode::OK);
        // Their list says where each parcel goes and what is in it by name.
        let listed: Value = app.get(&format!("/api/v1/warehouse-orders?warehouse_id={}", shop.potsdam), token).await.json().await.unwrap();
        let item = &listed["items"][0];
        assert_eq!(item["warehouse_order_id"], shipment.as_str());
        assert_eq!(item["shipping_address"]["line1"], "Invalidenstr. 1");
        assert_eq!(item["shipping_address"]["postal_code"], "10115");
        assert_eq!(item["lines"], json!([{"product_id": shop.book, "title": "Cook Book", "quantity": 1}]));
        let res = app.post(&format!("/api/v1/warehouse-orders/{shipment}/ship"), token, json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    // An operator refunds part of a paid order, then the rest: the order shows what its payment
    // says, and stays where it is in its lifecycle (a refund is money, not a cancellation).
    async fn an_operators_refund_shows_on_the_order(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 2).await;
        let processing = bought(&app, &ann, &address).await;
        let id = processing["id"].as_str().unwrap().to_owned();
        assert_eq!(processing["payment"]["refunded"], 0);
        // The order names its payment: what the admin's refund endpoint takes.
        let payment = processing["payment"]["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/payments/{payment}/refund");
        let refund = |amount: Option<i64>| {
            let mut body = json!({"reason": "goodwill"});
            if let Some(amount) = amount {
                body["amount"] = json!(amount);
            }
            app.post(&path, Some(&shop.admin.access_token), body)
        };
        assert_eq!(refund(Some(500)).await.status(), StatusCode::OK);
        let shows = |status: &'static str, refunded: i64| {
            let (app, ann, id) = (&app, &ann, &id);
            async move {
                for _ in 0..200 {
                    let seen = order(app, ann, id).await;
                    if seen["payment"]["status"] == status && seen["payment"]["refunded"] == refunded {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("order {id} never showed {status} {refunded}: {}", order(app, ann, id).await);
            }
        };
        let partly = shows("PARTIALLY_REFUNDED", 500).await;
        assert_eq!(partly["status"], "PROCESSING");
        assert_eq!(refund(None).await.status(), StatusCode::OK);
        let all = shows("REFUNDED", 4_000).await;
        assert_eq!(all["status"], "PROCESSING", "the goods still go out unless someone cancels");
        assert_eq!(stock(&app, &shop.lamp).await.2, 2, "the units stay allocated");
    }

    async fn paying_in_the_checkout_call_records_hold_and_payment_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 2).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("tok_visa")})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let paid: Value = res.json().await.unwrap();
        let id = paid["id"].as_str().unwrap().to_owned();
        // The PAYMENT_PENDING step is in the history though it was recorded with the capture.
        assert_eq!(paid["status"], "CONFIRMED");
        assert_eq!(statuses(&paid), ["CREATED", "PAYMENT_PENDING", "CONFIRMED"]);
        let at = |i: usize| paid["history"][i]["at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert!(at(0) <= at(1) && at(1) <= at(2), "{paid}");
        assert!(paid["expires_at"].is_string(), "the hold's end is recorded: {paid}");
        assert_eq!(paid["payment"]["status"], "CAPTURED");
        assert_eq!(stock(&app, &shop.lamp).await, (3, 0, 2, 5, 0), "held, then allocated");
        let processing = wait_for(&app, &ann, &id, "PROCESSING").await;
        for field in ["expires_at", "payment", "lines", "total"] {
            assert_eq!(paid[field], processing[field], "{field}: the answer is the order as stored");
        }
        assert_eq!(paid["history"].as_array().unwrap()[..], processing["history"].as_array().unwrap()[..3]);
        // Both events, in the saga's order (OrderPlaced before OrderConfirmed).
        let events = emporium_kernel::events::outbox_events(app.db("orders"), 0, 10_000).await.unwrap();
        let kinds: Vec<&str> = events.iter().filter(|e| e.aggregate_id == id).map(|e| e.event_type.as_str()).collect();
        assert_eq!(kinds, ["OrderPlaced", "OrderConfirmed", "OrderProcessing"]);
        assert_eq!(payment_count(&app).await, 1);
    }

    async fn a_checkout_call_stuck_in_its_payment_has_its_hold_adopted(backend: Backend) {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        // The worker is driven by hand; the gateway call hangs for the whole timeout.
        let app = spawn_app_with_clock(backend, clock.clone(), |s| {
            s.order_sweep_ms = 3_600_000;
            s.payment_timeout_ms = 2_000;
        })
        .await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 1).await;
        let call = {
            let (client, url, token) = (app.client.clone(), app.url("/api/v1/orders"), ann.access_token.clone());
            let body = json!({"shipping_address_id": address, "payment_method": card("tok_timeout")});
            tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await.unwrap() })
        };
        let mut held = false;
        for _ in 0..100 {
            held = stock(&app, &shop.lamp).await.1 == 1;
            if held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held, "the call holds the lamp");
        // CREATED while its call pays: not listed, and not adopted while young.
        app.orders.run_once().await.unwrap();
        assert_eq!(listed(&app, &ann).await, Vec::<Value>::new());
        clock.advance(chrono::Duration::seconds(4));
        app.orders.run_once().await.unwrap();
        let orders = listed(&app, &ann).await;
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0]["status"], "PAYMENT_PENDING", "the worker recorded the hold: {}", orders[0]);
        assert_eq!(statuses(&orders[0]), ["CREATED", "PAYMENT_PENDING"]);
        assert!(orders[0]["expires_at"].is_string());
        // The call, when its gateway gives up (UNKNOWN, soon resolved as captured by the
        // payment worker), finds the hold recorded and goes on from there.
        let res = call.await.unwrap();
        let status = res.status();
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["id"], orders[0]["id"]);
        let id = answer["id"].as_str().unwrap().to_owned();
        match answer["status"].as_str().unwrap() {
            "PAYMENT_PENDING" => assert_eq!(status, StatusCode::ACCEPTED, "{answer}"),
            "CONFIRMED" => assert_eq!(status, StatusCode::CREATED, "{answer}"),
            other => panic!("answered {other}: {answer}"),
        }
        let processing = wait_for(&app, &ann, &id, "PROCESSING").await;
        assert_eq!(statuses(&processing), ["CREATED", "PAYMENT_PENDING", "CONFIRMED", "PROCESSING"], "the hold is recorded once");
        assert_eq!(processing["payment"]["status"], "CAPTURED");
        assert_eq!(stock(&app, &shop.lamp).await, (4, 0, 1, 5, 0), "held once, then allocated");
        assert_eq!(payment_count(&app).await, 1);
    }

    async fn async_and_timed_out_payments_confirm_later_without_charging_twice(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.payment_timeout_ms = 300).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;

        // tok_async: 202 now, confirmed by the gateway's signed webhook.
        add(&app, &ann, &shop.lamp, 1).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("tok_async")})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let pending: Value = res.json().await.unwrap();
        assert_eq!(pending["status"], "PAYMENT_PENDING");
        assert_eq!(pending["payment"]["status"], "PENDING");
        let id = pending["id"].as_str().unwrap().to_owned();
        let confirmed = wait_for(&app, &ann, &id, "PROCESSING").await;
        assert_eq!(confirmed["payment"]["status"], "CAPTURED");

        // tok_timeout: the call times out (UNKNOWN); the worker asks the gateway and confirms.
        add(&app, &ann, &shop.book, 1).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("tok_timeout")})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let unknown: Value = res.json().await.unwrap();
        assert_eq!(unknown["payment"]["status"], "UNKNOWN");
        let id = unknown["id"].as_str().unwrap().to_owned();
        let confirmed = wait_for(&app, &ann, &id, "PROCESSING").await;
        assert_eq!(confirmed["payment"]["status"], "CAPTURED");
        assert_eq!(payment_count(&app).await, 2);

        // Webhooks over HTTP: a forged one is refused, a signed duplicate changes nothing.
        let res = app.client.post(app.url("/api/v1/payments/webhooks/sandbox")).header("emporium-signature", "t=1,v1=00").body("{}").send().await.unwrap();
        assert_problem(res, StatusCode::BAD_REQUEST, "malformed-request").await;
        let intent = json!({"id": confirmed["payment"]["transaction_id"], "status": "succeeded", "amount": 1500,
            "metadata": {"idempotency_key": format!("order:{id}")}});
        let body = serde_json::to_vec(&json!({"id": "evt_dup", "type": "payment_intent.succeeded", "data": {"object": intent}})).unwrap();
        let signature = emporium_payments::signature::sign(SANDBOX_WEBHOOK_SECRET.as_bytes(), chrono::Utc::now().timestamp(), &body);
        for _ in 0..2 {
            let res = app.client.post(app.url("/api/v1/payments/webhooks/sandbox")).header("emporium-signature", &signature).body(body.clone()).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = app.client.post(app.url("/api/v1/payments/webhooks/nope")).body("{}").send().await.unwrap();
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
        assert_eq!(order(&app, &ann, &id).await["payment"]["refunded"], 0);
    }

    async fn unpaid_checkouts_expire_and_delivered_orders_complete(backend: Backend) {
        // Starts at the real time: access tokens are still checked against the system clock.
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        // The worker is driven by hand here.
        let app = spawn_app_with_clock(backend, clock.clone(), |s| s.order_sweep_ms = 3_600_000).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 2).await;
        let res = post_keyed(&app, "/api/v1/checkout", &ann, None, json!({"shipping_address_id": address})).await;
        let checkout: Value = res.json().await.unwrap();
        let late = checkout["id"].as_str().unwrap().to_owned();
        assert_eq!(stock(&app, &shop.lamp).await, (3, 2, 0, 5, 0));

        clock.advance(chrono::Duration::minutes(11));
        app.orders.run_once().await.unwrap();
        let expired = order(&app, &ann, &late).await;
        assert_eq!(expired["status"], "EXPIRED");
        assert_eq!(stock(&app, &shop.lamp).await, (5, 0, 0, 5, 0), "the hold went back on sale");
        let res = post_keyed(&app, &format!("/api/v1/orders/{late}/pay"), &ann, None, json!({"payment_method": card("tok_visa")})).await;
        assert_problem(res, StatusCode::CONFLICT, "illegal-transition").await;
        assert_eq!(payment_count(&app).await, 0, "an expired checkout is never charged");

        // A paid order completes once its return window has passed after delivery.
        add(&app, &ann, &shop.book, 1).await;
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, json!({"shipping_address_id": address, "payment_method": card("tok_visa")})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let processing = wait_for(&app, &ann, &id, "PROCESSING").await;
        for s in processing["shipments"].as_array().unwrap() {
            for step in ["ship", "deliver"] {
                let path = format!("/api/v1/warehouse-orders/{}/{step}", s["warehouse_order_id"].as_str().unwrap());
                assert_eq!(app.post(&path, Some(&shop.staff.access_token), json!({})).await.status(), StatusCode::OK);
            }
        }
        assert_eq!(order(&app, &ann, &id).await["status"], "DELIVERED");
        clock.advance(chrono::Duration::days(13));
        app.orders.run_once().await.unwrap();
        assert_eq!(order(&app, &ann, &id).await["status"], "DELIVERED", "still inside the window");
        clock.advance(chrono::Duration::days(2));
        let res = app.post(&format!("/api/v1/orders/{id}/return"), Some(&ann.access_token), json!({})).await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
        app.orders.run_once().await.unwrap();
        let completed = order(&app, &ann, &id).await;
        assert_eq!(completed["status"], "COMPLETED");
        assert_eq!(completed["history"].as_array().unwrap().last().unwrap()["reason"], "the return window closed");
    }

    async fn warehouses_shipping_one_order_at_once_move_it_along(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        for round in 0..3 {
            let (ann, address) = buyer(&app).await;
            // More lamps than Berlin holds (2, restocked below): two warehouse orders.
            add(&app, &ann, &shop.lamp, 3).await;
            let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
            let res = post_keyed(&app, "/api/v1/orders", &ann, None, body).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let processing = wait_for(&app, &ann, &id, "PROCESSING").await;
            let shipments: Vec<String> = processing["shipments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["warehouse_order_id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(shipments.len(), 2, "round {round}: {processing}");
            // OrderConfirmed delivered again after the split (delivery is at least once): no error
            // (the new warehouse orders' unique key must not answer for the refused guard), nothing
            // added; as the confirmation writes it (with its allocations) and as confirmations
            // written before allocations were carried (the split then asks the inventory).
            // The split reads only the order id and allocations from it; the rest goes into an
            // event that rolls back.
            let allocations: Vec<emporium_orders::api::events::Allocation> = processing["shipments"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    s["lines"].as_array().unwrap().iter().map(|l| emporium_orders::api::events::Allocation {
                        product_id: l["product_id"].as_str().unwrap().parse().unwrap(),
                        warehouse_id: s["warehouse_id"].as_str().unwrap().parse().unwrap(),
                        quantity: l["quantity"].as_i64().unwrap(),
                    })
                })
                .collect();
            assert_eq!(allocations.len(), 2, "round {round}: {processing}");
            let recorded = emporium_kernel::events::outbox_events(app.db("orders"), 0, 10_000).await.unwrap();
            let confirmation = recorded
                .iter()
                .filter(|e| e.is::<emporium_orders::api::events::OrderConfirmed>())
                .map(|e| e.decode::<emporium_orders::api::events::OrderConfirmed>().unwrap().0)
                .find(|c| c.order_id.to_string() == id)
                .expect("the confirmation is in the outbox");
            let mut carried = confirmation.allocations.clone();
            carried.sort_by_key(|a| a.warehouse_id);
            let mut split = allocations.clone();
            split.sort_by_key(|a| a.warehouse_id);
            assert_eq!(carried, split, "round {round}: the confirmation says where the units are");
            for allocations in [allocations, Vec::new()] {
                let confirmed = emporium_orders::api::events::OrderChange {
                    order_id: id.parse().unwrap(),
                    user_id: emporium_kernel::ids::UserId::new(),
                    status: emporium_orders::model::OrderStatus::Confirmed,
                    total: emporium_kernel::money::Money::zero(emporium_kernel::money::Currency::EUR),
                    reason: None,
                    product_ids: Vec::new(),
                    allocations,
                };
                app.orders.split_confirmed(&confirmed).await.expect("a split already made is no error");
                assert_eq!(order(&app, &ann, &id).await["shipments"].as_array().unwrap().len(), 2);
            }
            for step in ["ship", "deliver"] {
                let paths: Vec<String> = shipments.iter().map(|s| format!("/api/v1/warehouse-orders/{s}/{step}")).collect();
                let token = Some(shop.staff.access_token.as_str());
                let (a, b) = tokio::join!(app.post(&paths[0], token, json!({})), app.post(&paths[1], token, json!({})));
                assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK), "round {round}, {step}");
                let expected = if step == "ship" { "SHIPPED" } else { "DELIVERED" };
                assert_eq!(order(&app, &ann, &id).await["status"], expected, "round {round}: the last one moves the order");
            }
            for (warehouse, units) in [(&shop.berlin, 2), (&shop.potsdam, 1)] {
                intake(&app, &shop.staff, warehouse, &shop.lamp, units).await;
            }
        }
    }

    async fn reviews_of_paid_orders_are_verified_purchases(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, address) = buyer(&app).await;
        let (bob, _) = buyer(&app).await;
        add(&app, &ann, &shop.lamp, 1).await;
        add(&app, &ann, &shop.book, 1).await;
        let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
        let res = post_keyed(&app, "/api/v1/orders", &ann, None, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

        // Ann reviews right away: the purchase may not have reached the catalog yet, so the
        // flag is awaited; Bob never bought a lamp.
        let review = |product: &str| format!("/api/v1/products/{product}/reviews");
        for who in [&ann, &bob] {
            let res = app.post(&review(&shop.lamp), Some(&who.access_token), json!({"rating": 4})).await;
            assert_eq!(res.status(), StatusCode::CREATED);
        }
        let mut expected = [(ann.id.clone(), true), (bob.id.clone(), false)];
        expected.sort();
        let seen = await_review_flags(&app, &shop.lamp, &expected).await;
        assert_eq!(seen, expected, "Ann's review of what she paid for is verified, Bob's is not");
        // Once the purchase is known, a new review is verified as it is written.
        let res = app.post(&review(&shop.book), Some(&ann.access_token), json!({"rating": 5})).await;
        assert_eq!(res.json::<Value>().await.unwrap()["verified_purchase"], true);

        // Cancelled before shipping: nothing was bought after all.
        let res = app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&ann.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut expected = [(ann.id.clone(), false), (bob.id.clone(), false)];
        expected.sort();
        let seen = await_review_flags(&app, &shop.lamp, &expected).await;
        assert_eq!(seen, expected, "a cancelled order vouches for nothing");
    }

    async fn a_burst_of_purchase_changes_applies_in_order(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 3).await;
        let (ann, _) = buyer(&app).await;
        let (bob, _) = buyer(&app).await;
        let review = |product: &str| format!("/api/v1/products/{product}/reviews");
        for (who, product) in [(&ann, &shop.lamp), (&bob, &shop.lamp), (&ann, &shop.book)] {
            let res = app.post(&review(product), Some(&who.access_token), json!({"rating": 4})).await;
            assert_eq!(res.status(), StatusCode::CREATED);
        }
        // What the purchases projection gets from one burst of order events: Ann's lamp order is
        // paid, then cancelled after Bob's and before her book order.
        let catalog = app.catalog_service.clone();
        let (ann_id, bob_id): (UserId, UserId) = (ann.id.parse().unwrap(), bob.id.parse().unwrap());
        let (lamp, book) = (shop.lamp.parse().unwrap(), shop.book.parse().unwrap());
        let change = |order, user, products: Vec<_>, bought| emporium_catalog::model::PurchaseChange {
            order,
            user,
            products,
            bought,
        };
        let (lamp_order, bob_order) = (OrderId::new(), OrderId::new());
        let burst = [
            change(lamp_order, ann_id, vec![lamp, lamp], true),
            change(bob_order, bob_id, vec![lamp], true),
            change(lamp_order, ann_id, vec![lamp], false),
            change(OrderId::new(), ann_id, vec![book], true),
        ];
        catalog.record_purchases(&burst).await.unwrap();

        let mut expected = [(ann.id.clone(), false), (bob.id.clone(), true)];
        expected.sort();
        let seen = await_review_flags(&app, &shop.lamp, &expected).await;
        assert_eq!(seen, expected, "the cancellation undid Ann's lamp, not Bob's");
        let seen = await_review_flags(&app, &shop.book, &[(ann.id.clone(), true)]).await;
        assert_eq!(seen, [(ann.id.clone(), true)], "Ann's later order still counts");
        // Delivered again (a redelivery after a crash), the burst changes nothing.
        catalog.record_purchases(&burst).await.unwrap();
        assert_eq!(await_review_flags(&app, &shop.lamp, &expected).await, expected);
    }

    async fn delivery_partners_carry_warehouse_orders(backend: Backend) {
        let app = spawn_app(backend).await;
        let shop = shop(&app, 0).await;
        let admin = Some(shop.admin.access_token.as_str());
        let staff = Some(shop.staff.access_token.as_str());
        // Spree works within 20 km of central Berlin (not Potsdam, ~27 km away), one job at a
        // time. Havel Bikes picks up within 10 km of Potsdam and drops off in Berlin by postal
        // code, one unit per job.
        let body = json!({"name": "Spree Kurier", "email": "ops@spree.example", "phone": "+49 30 1234",
            "lat": 52.52, "lon": 13.405, "service_radius_km": 20, "capacity": 1, "max_units": 5});
        let res = app.post("/api/v1/delivery/partners", admin, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let spree: Value = res.json().await.unwrap();
        assert_eq!((spree["active_jobs"].as_i64(), spree["active"].as_bool()), (Some(0), Some(true)));
        let spree = spree["id"].as_str().unwrap().to_owned();
        let body = json!({"name": "Havel Bikes", "lat": 52.39, "lon": 13.06, "service_radius_km": 10,
            "postal_prefixes": ["10"], "capacity": 5, "max_units": 1});
        let res = app.post("/api/v1/delivery/partners", admin, body).await;
        let havel = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

        // Polls the order until its first warehouse order's partner is `partner`.
        let carried_by = async |who: &Session, id: &str, partner: Option<&str>| {
            let mut last = Value::Null;
            for _ in 0..200 {
                last = order(&app, who, id).await;
                if last["status"] == "PROCESSING" && last["shipments"][0]["delivery_partner_id"].as_str() == partner {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("order {id} never got partner {partner:?}: {last}");
        };
        let jobs = async |query: &str| -> Vec<Value> {
            let res = app.get(&format!("/api/v1/delivery/jobs?{query}"), staff).await;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
        };
        let place_order = async |who: &Session, address: &str, product: &str, quantity: i64| -> String {
            add(&app, who, product, quantity).await;
            let body = json!({"shipping_address_id": address, "payment_method": card("tok_visa")});
            let res = post_keyed(&app, "/api/v1/orders", who, None, body).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        };

        // Ann's lamp (Berlin to Berlin) goes to Spree at once.
        let (ann, ann_address) = buyer(&app).await;
        let ann_order = place_order(&ann, &ann_address, &shop.lamp, 1).await;
        let anns = carried_by(&ann, &ann_order, Some(&spree)).await;
        let ann_shipment = anns["shipments"][0]["warehouse_order_id"].as_str().unwrap().to_owned();
        // Bob's lamp waits: Spree is full and Havel does not pick up in Berlin.
        let (bob, bob_address) = buyer(&app).await;
        let bob_order = place_order(&bob, &bob_address, &shop.lamp, 1).await;
        for _ in 0..200 {
            if !jobs("status=waiting").await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let waiting = jobs("status=waiting").await;
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert_eq!((waiting[0]["order_id"].as_str(), waiting[0]["units"].as_i64()), (Some(bob_order.as_str()), Some(1)));
        assert_eq!(carried_by(&bob, &bob_order, None).await["shipments"][0]["delivery_partner_id"], Value::Null);
        let spree_jobs = jobs(&format!("partner_id={spree}")).await;
        assert_eq!(spree_jobs.len(), 1);
        assert_eq!((spree_jobs[0]["warehouse_order_id"].as_str(), spree_jobs[0]["status"].as_str()), (Some(ann_shipment.as_str()), Some("assigned")));

        // Ann's parcel delivered: Spree is free again and takes Bob's.
        for step in ["ship", "deliver"] {
            let res = app.post(&format!("/api/v1/warehouse-orders/{ann_shipment}/{step}"), staff, json!({})).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        carried_by(&bob, &bob_order, Some(&spree)).await;
        assert_eq!(jobs("status=waiting").await, Vec::<Value>::new());
        let finished = jobs(&format!("partner_id={spree}&status=finished")).await;
        assert_eq!(finished.len(), 1);
        assert!(finished[0]["finished_at"].is_string());

        // Cara's two books (Potsdam to Berlin) are too many for Havel's bikes until it takes more.
        let (cara, cara_address) = buyer(&app).await;
        let cara_order = place_order(&cara, &cara_address, &shop.book, 2).await;
        carried_by(&cara, &cara_order, None).await;
        for _ in 0..200 {
            if jobs("status=waiting").await.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let res = app.request(Method::PATCH, &format!("/api/v1/delivery/partners/{havel}"), admin, Some(json!({"max_units": 3}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["active_jobs"], 1, "the waiting job was taken at once");
        carried_by(&cara, &cara_order, Some(&havel)).await;

        // Cancelling before shipping frees Havel's place.
        let res = app.post(&format!("/api/v1/orders/{cara_order}/cancel"), Some(&cara.access_token), json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut active_jobs = Value::Null;
        for _ in 0..200 {
            let res = app.get(&format!("/api/v1/delivery/partners/{havel}"), staff).await;
            active_jobs = res.json::<Value>().await.unwrap()["active_jobs"].clone();
            if active_jobs == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(active_jobs, 0, "the cancelled order's job is finished");

        // Roles and bad input.
        let customer = Some(ann.access_token.as_str());
        assert_problem(app.get("/api/v1/delivery/partners", customer).await, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post("/api/v1/delivery/partners", staff, json!({"name": "x"})).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post("/api/v1/delivery/partners", admin, json!({"lat": 91, "lon": 13, "service_radius_km": 5, "max_units": 1, "email": "nope"})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["name", "email", "lat", "capacity"]);
        let body = json!({"name": "Van", "lat": 52.5, "lon": 13.4, "service_radius_km": -1, "capacity": 1, "max_units": 0,
            "postal_prefixes": ["ok", ""]});
        let res = app.post("/api/v1/delivery/partners", admin, body).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
        assert_eq!(error_fields(&problem), ["service_radius_km", "max_units"]);
        let res = app.get("/api/v1/delivery/jobs?status=lost", staff).await;
        assert_eq!(error_fields(&assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await), ["status"]);
        let res = app.get(&format!("/api/v1/delivery/partners/{}", uuid::Uuid::now_v7()), staff).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not-found").await;
    }
}
