//! Search: relevance (typos, synonyms, promoted), filters and exact facet counts, sorts,
//! suggestions, freshness through the event path, and bad parameters.

use crate::helpers::*;
use emporium_kernel::auth::Role;
use emporium_kernel::backend_tests;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A small fixed catalog; returns product ids by SKU and category ids by name.
struct Catalog {
    seller: Session,
    products: HashMap<&'static str, String>,
    categories: HashMap<&'static str, String>,
}

async fn catalog(app: &TestApp) -> Catalog {
    let admin = app.signed_in_admin().await;
    let seller = app.signed_in_with_roles(&[Role::Seller]).await;
    let mut categories: HashMap<&'static str, String> = HashMap::new();
    let specs: [(&str, Option<&str>, Value); 6] = [
        ("Electronics", None, json!([])),
        (
            "Laptops",
            Some("Electronics"),
            json!([{"name": "ram_gb", "type": "number", "unit": "GB"}, {"name": "colour", "type": "enum", "values": ["Silver", "Black"]}]),
        ),
        ("Phones", Some("Electronics"), json!([])),
        ("TVs", Some("Electronics"), json!([])),
        ("Books", None, json!([{"name": "author", "type": "text"}])),
        ("Kitchen", None, json!([])),
    ];
    for (name, parent, attributes) in specs {
        let body = json!({"name": name, "parent_id": parent.map(|p| categories[p].clone()), "attributes": attributes});
        let res = app.post("/api/v1/categories", Some(&admin.access_token), body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        categories.insert(name, res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let items: [(&str, &str, &str, &str, i64, Value, bool); 10] = [
        ("ultra", "UltraBook 13 Laptop", "Acme", "Laptops", 129_900, json!({"ram_gb": 16, "colour": "Silver"}), false),
        ("gaming", "Gaming Laptop Pro", "Zento", "Laptops", 199_900, json!({"ram_gb": 32, "colour": "Black"}), false),
        ("business", "Business Notebook 14", "Acme", "Laptops", 89_900, json!({"ram_gb": 8, "colour": "Black"}), false),
        ("budget", "Budget Laptop 11", "Acme", "Laptops", 29_900, json!({"ram_gb": 4, "colour": "Silver"}), false),
        ("iphone", "iPhone 15", "Apple", "Phones", 79_900, json!({}), false),
        ("galaxy", "Galaxy Smartphone S", "Samsung", "Phones", 69_900, json!({}), false),
        ("oled", "OLED Television 55", "Sony", "TVs", 149_900, json!({}), false),
        ("rustbook", "Rust Programming Book", "Press", "Books", 4_500, json!({"author": "Ann Lee"}), false),
        ("kettle-a", "Steel Kettle", "Brew", "Kitchen", 3_000, json!({}), false),
        ("kettle-b", "Steel Kettle", "Brew", "Kitchen", 3_000, json!({}), true),
    ];
    let mut products = HashMap::new();
    for (sku, title, brand, category, amount, attributes, promoted) in items {
        let body = json!({"sku": sku, "title": title, "brand": brand, "category_id": categories[category],
            "price": {"amount": amount, "currency": "USD"}, "attributes": attributes,
            "description": format!("{title} by {brand}")});
        let res = app.post("/api/v1/products", Some(&seller.access_token), body).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        if promoted {
            // The shop promotes, not the seller.
            let path = format!("/api/v1/products/{id}");
            let res =
                app.request(Method::PATCH, &path, Some(&seller.access_token), Some(json!({"promoted": true}))).await;
            assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
            let res =
                app.request(Method::PATCH, &path, Some(&admin.access_token), Some(json!({"promoted": true}))).await;
            assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
        }
        products.insert(sku, id);
    }
    let res = app.post("/api/v1/products", Some(&seller.access_token), json!({"sku": "pushy", "title": "Pushy",
        "brand": "Brew", "category_id": categories["Kitchen"], "price": {"amount": 100, "currency": "USD"}, "promoted": true})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    Catalog { seller, products, categories }
}

fn ids(result: &Value) -> Vec<String> {
    result["items"].as_array().unwrap().iter().map(|h| h["product_id"].as_str().unwrap().to_owned()).collect()
}

fn skus(catalog: &Catalog, result: &Value) -> Vec<&'static str> {
    ids(result).iter().map(|id| *catalog.products.iter().find(|(_, v)| *v == id).expect("known product").0).collect()
}

fn sorted(mut v: Vec<&'static str>) -> Vec<&'static str> {
    v.sort();
    v
}

fn facet(result: &Value, name: &str) -> Vec<(String, u64)> {
    result["facets"][name]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|f| (f["value"].as_str().unwrap_or_default().to_owned(), f["count"].as_u64().unwrap()))
        .collect()
}

backend_tests! {
    async fn typos_and_synonyms_find_the_right_products(backend: Backend) {
        let app = spawn_app(backend).await;
        let c = catalog(&app).await;
        let laptops = sorted(vec!["budget", "business", "gaming", "ultra"]);
        assert_eq!(sorted(skus(&c, &app.search("q=laptop").await)), laptops, "category names and the notebook synonym count");
        assert_eq!(sorted(skus(&c, &app.search("q=lapotp").await)), laptops, "a transposition is forgiven");
        assert_eq!(sorted(skus(&c, &app.search("q=notebook").await)), laptops, "synonyms work both ways");
        assert_eq!(skus(&c, &app.search("q=iphnoe").await), ["iphone"]);
        assert_eq!(skus(&c, &app.search("q=tv").await), ["oled"], "tv = television");
        assert_eq!(sorted(skus(&c, &app.search("q=mobile").await)), ["galaxy", "iphone"], "mobile = phone = smartphone");
        assert_eq!(skus(&c, &app.search("q=gaming%20laptop").await), ["gaming"], "every word must match");
        assert!(ids(&app.search("q=xylophone").await).is_empty());
        // The exact word outranks a fuzzy neighbour.
        let result = app.search("q=book").await;
        assert_eq!(skus(&c, &result)[0], "rustbook");
    }

    async fn filters_and_facet_counts_are_exact(backend: Backend) {
        let app = spawn_app(backend).await;
        let c = catalog(&app).await;
        let result = app.search("q=laptop").await;
        assert_eq!(result["total"], 4);
        assert_eq!(facet(&result, "brand"), [("Acme".to_owned(), 3), ("Zento".to_owned(), 1)]);
        assert_eq!(facet(&result, "attr.colour"), [("Black".to_owned(), 2), ("Silver".to_owned(), 2)]);
        assert_eq!(facet(&result, "attr.ram_gb").len(), 4);
        let prices: Vec<(i64, Option<i64>, u64)> = result["facets"]["price"].as_array().unwrap().iter()
            .map(|p| (p["from"].as_i64().unwrap(), p["to"].as_i64(), p["count"].as_u64().unwrap())).collect();
        assert_eq!(prices, [(25_000, Some(50_000), 1), (50_000, Some(100_000), 1), (100_000, Some(250_000), 2)]);
        let categories = &result["facets"]["category"];
        assert_eq!(categories[0]["name"], "Electronics");
        assert_eq!(categories[0]["count"], 4);

        assert_eq!(sorted(skus(&c, &app.search("q=laptop&brand=acme").await)), ["budget", "business", "ultra"]);
        assert_eq!(sorted(skus(&c, &app.search("q=laptop&price=50000-150000").await)), ["business", "ultra"]);
        // The price range narrows the total and every facet count too, not only the hits.
        let in_range = app.search("q=laptop&price=50000-150000").await;
        assert_eq!(in_range["total"], 2);
        assert_eq!(facet(&in_range, "brand").iter().map(|(_, n)| n).sum::<u64>(), 2);
        assert_eq!(in_range["facets"]["category"][0]["count"], 2);
        let every_range_match = ["business", "galaxy", "iphone", "oled", "ultra"];
        assert_eq!(sorted(skus(&c, &app.search("price=50000-150000").await)), every_range_match, "a range alone");
        assert_eq!(sorted(skus(&c, &app.search("q=laptop&price=-50000").await)), ["budget"]);
        assert_eq!(skus(&c, &app.search("q=laptop&attr.ram_gb=16").await), ["ultra"]);
        assert_eq!(sorted(skus(&c, &app.search("attr.colour=black").await)), ["business", "gaming"]);
        // Free-text attributes are searchable and filterable, but never counted as facets.
        let books = app.search("attr.author=ann%20lee").await;
        assert_eq!(skus(&c, &books), ["rustbook"]);
        assert!(books["facets"].get("attr.author").is_none());
        assert_eq!(skus(&c, &app.search("q=ann%20lee").await), ["rustbook"]);

        let electronics = app.search(&format!("category={}&limit=100", c.categories["Electronics"])).await;
        assert_eq!(electronics["total"], 7, "sub-categories included");
        let children: Vec<(String, u64)> = electronics["facets"]["category"].as_array().unwrap().iter()
            .map(|f| (f["name"].as_str().unwrap().to_owned(), f["count"].as_u64().unwrap())).collect();
        assert_eq!(children, [("Laptops".to_owned(), 4), ("Phones".to_owned(), 2), ("TVs".to_owned(), 1)]);
        assert_eq!(electronics["facets"]["category"][0]["value"], c.categories["Laptops"].as_str());
    }

    async fn promoted_products_and_sorts(backend: Backend) {
        let app = spawn_app(backend).await;
        let c = catalog(&app).await;
        assert_eq!(skus(&c, &app.search("q=kettle").await), ["kettle-b", "kettle-a"], "promoted first among equals");
        assert_eq!(skus(&c, &app.search(&format!("category={}", c.categories["Kitchen"])).await)[0], "kettle-b");
        assert_eq!(skus(&c, &app.search("q=laptop&sort=price_asc").await), ["budget", "business", "ultra", "gaming"]);
        assert_eq!(skus(&c, &app.search("q=laptop&sort=price_desc").await), ["gaming", "ultra", "business", "budget"]);
        assert_eq!(skus(&c, &app.search("q=laptop&sort=newest").await), ["budget", "business", "gaming", "ultra"]);

        let mut seen = Vec::new();
        let mut query = "q=laptop&limit=3".to_owned();
        loop {
            let page = app.search(&query).await;
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("q=laptop&limit=3&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 4);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4, "no product twice across pages");

        let hit = &app.search("q=iphone").await["items"][0];
        assert_eq!(hit["price"], json!({"amount": 79_900, "currency": "USD"}));
        assert_eq!(hit["in_stock"], false);
        assert_eq!(hit["stock_left"], 0);
        assert!(hit.get("deliverable").is_none(), "no location, no deliverable");
        let located = &app.search("q=iphone&lat=52.5&lon=13.4").await["items"][0];
        assert_eq!(located["deliverable"], false, "nothing is deliverable before warehouses exist");
    }

    async fn suggestions_complete_prefixes(backend: Backend) {
        let app = spawn_app(backend).await;
        let _c = catalog(&app).await;
        app.search_caught_up().await;
        let texts = |v: Value| -> Vec<String> {
            v["suggestions"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_owned()).collect()
        };
        let got = texts(app.get("/api/v1/search/suggest?q=ultrab", None).await.json().await.unwrap());
        assert_eq!(got, ["UltraBook 13 Laptop"]);
        let got = texts(app.get("/api/v1/search/suggest?q=gaming%20lap", None).await.json().await.unwrap());
        assert_eq!(got, ["Gaming Laptop Pro"]);
        let got = texts(app.get("/api/v1/search/suggest?q=iphn", None).await.json().await.unwrap());
        assert_eq!(got, ["iPhone 15"], "typo tolerant prefix");
        // Queries shoppers run (with results) become suggestions.
        app.search("q=steel%20kettle").await;
        app.search("q=steel%20kettle").await;
        let got = texts(app.get("/api/v1/search/suggest?q=stee", None).await.json().await.unwrap());
        assert_eq!(got[0], "steel kettle");
        assert!(got.contains(&"Steel Kettle".to_owned()));
        let empty: Value = app.get("/api/v1/search/suggest?q=", None).await.json().await.unwrap();
        assert!(empty["suggestions"].as_array().unwrap().is_empty());
    }

    async fn the_index_follows_catalog_changes(backend: Backend) {
        let app = spawn_app(backend).await;
        let c = catalog(&app).await;
        let token = Some(c.seller.access_token.as_str());
        let path = format!("/api/v1/products/{}", c.products["oled"]);
        let res = app.request(Method::PATCH, &path, token, Some(json!({"title": "QLED Monitor 55", "description": "A monitor", "price": {"amount": 99_900, "currency": "USD"}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(ids(&app.search("q=television").await).is_empty(), "the old title is gone");
        let hit = &app.search("q=monitor").await["items"][0];
        assert_eq!(hit["price"]["amount"], 99_900);

        let customer = app.signed_in_customer().await;
        let res = app.post(&format!("{path}/reviews"), Some(&customer.access_token), json!({"rating": 4})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let hit = &app.search("q=monitor").await["items"][0];
        assert_eq!(hit["rating"], 4.0);
        assert_eq!(hit["rating_count"], 1);

        assert_eq!(app.request(Method::DELETE, &path, token, None).await.status(), StatusCode::NO_CONTENT);
        assert!(ids(&app.search("q=monitor").await).is_empty(), "deleted products leave the index");
        assert_eq!(app.search("limit=100").await["total"], 9);
    }

    async fn in_stock_products_come_first_and_a_typo_reaches_synonyms(backend: Backend) {
        // Ranked twice: with the shop's default factor, and with stock ignored.
        for factor in [0.75, 1.0] {
            let app = spawn_app_with(backend, |s| s.search_out_of_stock_factor = factor).await;
            let c = catalog(&app).await;
            assert_eq!(skus(&c, &app.search("q=kettle").await), ["kettle-b", "kettle-a"], "promoted first, neither stocked");
            let admin = app.signed_in_admin().await;
            let body = json!({"name": "Main", "address": "1 Main St", "lat": 52.5, "lon": 13.4, "delivery_radius_km": 50});
            let warehouse: Value = app.post("/api/v1/warehouses", Some(&admin.access_token), body).await.json().await.unwrap();
            let path = format!("/api/v1/warehouses/{}/stock", warehouse["id"].as_str().unwrap());
            let res = app.post(&path, Some(&admin.access_token), json!({"product_id": c.products["kettle-a"], "quantity": 5})).await;
            assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
            let expected = if factor < 1.0 { ["kettle-a", "kettle-b"] } else { ["kettle-b", "kettle-a"] };
            assert_eq!(skus(&c, &app.search("q=kettle").await), expected, "factor {factor}");

            // A TV known only as "TV": a misspelt "television" finds it too.
            let body = json!({"sku": "smart-tv", "title": "Smart TV 43", "brand": "Hisense", "category_id": c.categories["TVs"],
                "price": {"amount": 39_900, "currency": "USD"}});
            let res = app.post("/api/v1/products", Some(&c.seller.access_token), body).await;
            let tv = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let mut found = ids(&app.search("q=telvision").await);
            found.sort();
            let mut expected = vec![tv, c.products["oled"].clone()];
            expected.sort();
            assert_eq!(found, expected);
        }
    }

    async fn bad_parameters_are_422(backend: Backend) {
        let app = spawn_app(backend).await;
        for (query, field) in [("price=abc", "price"), ("limit=100000", "limit"), ("sort=cheapest", "sort"),
                               ("lat=12", "lon"), ("category=42", "category"), ("cursor=zz", "cursor"), ("colour=red", "colour")] {
            let res = app.get(&format!("/api/v1/search?{query}"), None).await;
            let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
            assert_eq!(error_fields(&problem), [field], "{query}");
        }
    }
}

backend_tests! {
    async fn the_index_survives_restarts_and_a_lost_one_is_rebuilt_from_the_catalog(backend: Backend) {
        let app = spawn_app(backend).await;
        let c = catalog(&app).await;
        assert_eq!(app.search("limit=100").await["total"], 10);
        let app = app.restart().await;
        assert_eq!(app.search.document_count(), 10, "committed documents are still there");
        assert_eq!(skus(&c, &app.search("q=iphone").await)[0], "iphone", "the exact match first");

        // Without its index the service rebuilds it from the catalog at start, so events the
        // outbox has pruned (or any that are missing) do not matter.
        let mut app = app;
        let pruned = emporium_kernel::sql!(app.db("catalog"), |c| sqlx::query("DELETE FROM outbox").execute(c).await.map(|r| r.rows_affected())).unwrap();
        assert!(pruned >= 10, "the catalog's events are gone");
        app.stop().await;
        std::fs::remove_dir_all(app.data_dir().join("search")).unwrap();
        let app = app.restart_stopped().await;
        // The server answers once the rebuild is done (it runs before the listener is served).
        assert_eq!(app.search("limit=100").await["total"], 10, "rebuilt from the catalog");
        assert_eq!(skus(&c, &app.search("q=lapotp&brand=zento").await), ["gaming"]);
    }
}
