//! The `emporium` binary run as a user runs it: `serve --demo`, `config`, `users create-admin`,
//! and a clean exit on SIGTERM.

use emporium_kernel::backend_tests;
use emporium_kernel::testing::TestDatabase;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn emporium(db: &TestDatabase) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_emporium"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        // Run where no ./emporium.toml can be picked up by accident.
        .current_dir(db.dir.path());
    cmd
}

fn with_backend(cmd: &mut Command, db: &TestDatabase) {
    cmd.arg("--data-dir").arg(db.dir.path());
    if let Some(url) = &db.url {
        cmd.arg("--database-url").arg(url);
    }
}

/// Starts `serve`, returning the child and the base URL it printed.
// The child is returned to the caller, and `terminate` waits for it.
#[allow(clippy::zombie_processes)]
fn serve(db: &TestDatabase, demo: bool) -> (Child, String, Vec<String>) {
    serve_with_env(db, demo, &[])
}

#[allow(clippy::zombie_processes)]
fn serve_with_env(db: &TestDatabase, demo: bool, env: &[(&str, &str)]) -> (Child, String, Vec<String>) {
    let mut cmd = emporium(db);
    cmd.envs(env.iter().copied());
    cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
    if demo {
        cmd.arg("--demo");
    }
    with_backend(&mut cmd, db);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn emporium");
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let status = child.wait();
            panic!("emporium exited early ({status:?}): {lines:?}");
        }
        if let Some(rest) = line.split("serving on ").nth(1) {
            let url = rest.split_whitespace().next().unwrap().to_owned();
            lines.push(line);
            return (child, url, lines);
        }
        lines.push(line);
    }
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "emporium exited with {status} after SIGTERM");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    panic!("emporium did not stop within 10 s of SIGTERM");
}

/// Kills the process outright: no shutdown, nothing flushed, as a crash or `kill -9` would.
fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The demo shopper's token, their Berlin address (the demo gives them one) and a product
/// deliverable there.
async fn demo_checkout_setup(client: &reqwest::Client, url: &str) -> (String, String, String) {
    let login: Value = client
        .post(format!("{url}/api/v1/users/login"))
        .json(&json!({"email": "shopper@demo.emporium.dev", "password": "demo-shopper-pass"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let addresses: Value = client
        .get(format!("{url}/api/v1/users/addresses"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let address = addresses["items"][0].clone();
    assert_eq!(
        (address["city"].as_str(), address["is_default"].as_bool()),
        (Some("Berlin"), Some(true)),
        "{addresses}"
    );
    let products: Value =
        client.get(format!("{url}/api/v1/products?limit=100")).send().await.unwrap().json().await.unwrap();
    for p in products["items"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let availability: Value = client
            .get(format!("{url}/api/v1/delivery/availability?product_id={id}&lat=52.53&lon=13.38&quantity=2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if availability["deliverable"] == true {
            return (token, address["id"].as_str().unwrap().to_owned(), id.to_owned());
        }
    }
    panic!("no demo product is deliverable to Berlin");
}

/// Puts one unit in the cart and sends `POST /orders`, which the failpoint never lets answer.
async fn order_that_hangs(client: &reqwest::Client, url: &str, token: &str, address: &str, product: &str, key: &str) {
    let res = client
        .post(format!("{url}/api/v1/cart/items"))
        .bearer_auth(token)
        .json(&json!({"product_id": product, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{url}/api/v1/orders"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .timeout(Duration::from_secs(2))
        .json(&json!({"shipping_address_id": address, "payment_method": {"type": "card", "token": "tok_visa"}}))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout(), "the failpoint holds the request");
}

async fn orders_of(client: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let list: Value =
        client.get(format!("{url}/api/v1/orders")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    list["items"].as_array().unwrap().clone()
}

/// The user's orders once `count` are listed (a checkout whose call died shows up when its hold
/// is recorded).
async fn listed_orders(client: &reqwest::Client, url: &str, token: &str, count: usize) -> Vec<Value> {
    for _ in 0..150 {
        let orders = orders_of(client, url, token).await;
        if orders.len() >= count {
            assert_eq!(orders.len(), count, "{orders:?}");
            return orders;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} orders listed after 15 s");
}

async fn wait_for_status(client: &reqwest::Client, url: &str, token: &str, id: &str, wanted: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = client
            .get(format!("{url}/api/v1/orders/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if wanted.iter().any(|w| last["status"] == *w) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {id} never reached {wanted:?}: {last}");
}

backend_tests! {
    async fn a_checkout_killed_mid_saga_is_finished_or_compensated_after_restart(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let client = reqwest::Client::new();

        // Killed between reserve and pay: after restart the hold runs out and is given back.
        let (child, url, _) = serve_with_env(&db, true, &[("EMPORIUM_FAILPOINT", "orders.after-reserve"), ("EMPORIUM_RESERVATION_TTL_SECS", "6")]);
        let (token, address, product) = demo_checkout_setup(&client, &url).await;
        let before: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        order_that_hangs(&client, &url, &token, &address, &product, "crash-1").await;
        let held: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(held["reserved"].as_i64().unwrap(), before["reserved"].as_i64().unwrap() + 1);
        kill(child);

        let (child, url, _) = serve_with_env(&db, false, &[("EMPORIUM_FAILPOINT", "orders.after-pay")]);
        // Died CREATED with its stock held (`POST /orders` records the hold with the payment):
        // listed once the worker has adopted the hold.
        let orders = listed_orders(&client, &url, &token, 1).await;
        let first = orders[0]["id"].as_str().unwrap().to_owned();
        let expired = wait_for_status(&client, &url, &token, &first, &["EXPIRED"]).await;
        assert_eq!(expired["payment"], Value::Null, "never charged");
        let after: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(after["available"], before["available"], "the dead checkout's stock is back on sale");
        assert_eq!(after["reserved"], before["reserved"]);

        // Killed between pay and confirm: after restart the captured payment confirms the order.
        order_that_hangs(&client, &url, &token, &address, &product, "crash-2").await;
        kill(child);
        let (child, url, _) = serve(&db, false);
        let orders = listed_orders(&client, &url, &token, 2).await;
        let second = orders.iter().find(|o| o["id"] != first.as_str()).expect("the second order").clone();
        let id = second["id"].as_str().unwrap();
        let confirmed = wait_for_status(&client, &url, &token, id, &["CONFIRMED", "PROCESSING"]).await;
        assert_eq!(confirmed["payment"]["status"], "CAPTURED");
        let stock: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        // The expired checkout left its line in the cart, so this order holds 2 units.
        assert_eq!(confirmed["lines"][0]["quantity"], 2);
        assert_eq!(stock["allocated"].as_i64().unwrap(), before["allocated"].as_i64().unwrap() + 2);
        assert_eq!(stock["reserved"], before["reserved"], "nothing left held");
        // The client's retry with its key gets the finished order, not a second one.
        let res = client.post(format!("{url}/api/v1/orders")).bearer_auth(&token).header("Idempotency-Key", "crash-2")
            .json(&json!({"shipping_address_id": address, "payment_method": {"type": "card", "token": "tok_visa"}}))
            .send().await.unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.json::<Value>().await.unwrap()["id"], id);
        assert_eq!(orders_of(&client, &url, &token).await.len(), 2);
        kill(child);

        // Killed after recording the payment, before calling the gateway: after restart the
        // charge is sent again (once a call's time has passed), and the order is confirmed in
        // seconds, not when its hold runs out.
        let (child, url, _) = serve_with_env(&db, false, &[("EMPORIUM_FAILPOINT", "payments.before-charge")]);
        let before: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        order_that_hangs(&client, &url, &token, &address, &product, "crash-3").await;
        kill(child);
        let (child, url, _) = serve_with_env(&db, false, &[("EMPORIUM_PAYMENT_TIMEOUT_MS", "500")]);
        let orders = listed_orders(&client, &url, &token, 3).await;
        let third = orders.iter().find(|o| o["id"] != first.as_str() && o["id"] != id).expect("the third order").clone();
        let third_id = third["id"].as_str().unwrap();
        let confirmed = wait_for_status(&client, &url, &token, third_id, &["CONFIRMED", "PROCESSING"]).await;
        assert_eq!(confirmed["payment"]["status"], "CAPTURED");
        let stock: Value = client.get(format!("{url}/api/v1/inventory/{product}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stock["allocated"].as_i64().unwrap(), before["allocated"].as_i64().unwrap() + 1);
        assert_eq!(stock["reserved"], before["reserved"], "nothing left held");
        let res = client.post(format!("{url}/api/v1/orders")).bearer_auth(&token).header("Idempotency-Key", "crash-3")
            .json(&json!({"shipping_address_id": address, "payment_method": {"type": "card", "token": "tok_visa"}}))
            .send().await.unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.json::<Value>().await.unwrap()["id"], third_id);
        // The gateway's books agree with ours: one charge for it, nothing stray.
        let (email, password) = ("admin@demo.emporium.dev", "demo-admin-pass");
        let login: Value = client.post(format!("{url}/api/v1/users/login")).json(&json!({"email": email, "password": password}))
            .send().await.unwrap().json().await.unwrap();
        let admin = login["access_token"].as_str().unwrap();
        let report: Value = client.post(format!("{url}/api/v1/payments/reconcile")).bearer_auth(admin)
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(report["findings"], json!([]), "{report}");
        terminate(child);
    }

    async fn a_stop_is_not_held_up_by_a_request_that_never_ends(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let client = reqwest::Client::new();
        // The failpoint holds the checkout request for good: without a bound, the graceful stop
        // would wait for it until the 30 s request timeout.
        let env = [("EMPORIUM_FAILPOINT", "orders.after-reserve"), ("EMPORIUM_RESERVATION_TTL_SECS", "6")];
        let (child, url, _) = serve_with_env(&db, true, &env);
        let (token, address, product) = demo_checkout_setup(&client, &url).await;
        let res = client
            .post(format!("{url}/api/v1/cart/items"))
            .bearer_auth(&token)
            .json(&json!({"product_id": product, "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let hanging = tokio::spawn({
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                client
                    .post(format!("{url}/api/v1/orders"))
                    .bearer_auth(token)
                    .json(&json!({"shipping_address_id": address, "payment_method": {"type": "card", "token": "tok_visa"}}))
                    .send()
                    .await
            }
        });
        // Held once the order exists (CREATED, its stock held).
        listed_orders(&client, &url, &token, 1).await;
        terminate(child);
        assert!(hanging.await.unwrap().is_err(), "the held request ends with the process, unanswered");
        // What it left is recovered as after a crash: the hold is adopted and runs out.
        let (child, url, _) = serve(&db, false);
        let orders = listed_orders(&client, &url, &token, 1).await;
        let id = orders[0]["id"].as_str().unwrap().to_owned();
        wait_for_status(&client, &url, &token, &id, &["EXPIRED"]).await;
        terminate(child);
    }

    async fn seeding_next_to_a_running_server_reaches_its_search(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let (child, url, _) = serve(&db, false);
        let mut cmd = emporium(&db);
        cmd.args(["seed", "--products", "40"]);
        with_backend(&mut cmd, &db);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("the catalog now has 40 products"));
        // The server's event bus picks up rows another process committed (its polling fallback).
        let client = reqwest::Client::new();
        let mut total = 0;
        for _ in 0..100 {
            let result: Value = client.get(format!("{url}/api/v1/search?limit=1")).send().await.unwrap().json().await.unwrap();
            total = result["total"].as_u64().unwrap();
            if total == 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(total, 40, "the running server indexed the seeded products");
        // The index has one writer: a reindex beside the server says so, and what to do.
        let mut cmd = emporium(&db);
        cmd.args(["search", "reindex"]);
        with_backend(&mut cmd, &db);
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("in use by another Emporium process") && stderr.contains("stop it first"), "{stderr}");
        terminate(child);
    }

    async fn search_reindex_rebuilds_a_lost_index_from_the_catalog(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let run = |args: &[&str]| {
            let mut cmd = emporium(&db);
            cmd.args(args);
            with_backend(&mut cmd, &db);
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["seed", "--products", "60"]);
        assert!(run(&["search", "reindex"]).contains("indexed 60 products"));
        // Lost entirely (a disk swap): rebuilt again, category by category, with nothing missing.
        std::fs::remove_dir_all(db.dir.path().join("search")).unwrap();
        assert!(run(&["search", "reindex"]).contains("indexed 60 products"));
        let (child, url, _) = serve(&db, false);
        let result: Value =
            reqwest::Client::new().get(format!("{url}/api/v1/search?limit=1")).send().await.unwrap().json().await.unwrap();
        terminate(child);
        assert_eq!(result["total"], 60, "served from the rebuilt index right away");
        let per_category: u64 =
            result["facets"]["category"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum();
        assert_eq!(per_category, 60, "every product is counted under its top-level category");
    }

    async fn serve_demo_gives_a_usable_shop_and_stops_cleanly(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let (child, url, printed) = serve(&db, true);
        let printed = printed.join("");
        assert!(printed.contains("admin@demo.emporium.dev / demo-admin-pass"), "{printed}");
        let client = reqwest::Client::new();
        let login: Value = client
            .post(format!("{url}/api/v1/users/login"))
            .json(&json!({"email": "shopper@demo.emporium.dev", "password": "demo-shopper-pass"}))
            .send().await.unwrap().json().await.unwrap();
        let token = login["access_token"].as_str().expect("demo shopper can log in");
        let profile = client.get(format!("{url}/api/v1/users/profile")).bearer_auth(token).send().await.unwrap();
        assert_eq!(profile.status(), 200);
        let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let admin: Value = client
            .post(format!("{url}/api/v1/users/login"))
            .json(&json!({"email": "admin@demo.emporium.dev", "password": "demo-admin-pass"}))
            .send().await.unwrap().json().await.unwrap();
        let partners: Value = client
            .get(format!("{url}/api/v1/delivery/partners"))
            .bearer_auth(admin["access_token"].as_str().unwrap())
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(partners["items"].as_array().unwrap().len(), 3, "a delivery partner around each warehouse: {partners}");
        terminate(child);

        // A second start on the same data keeps the demo accounts (the seed is idempotent) and
        // the same JWT secret (a token from the first run still works).
        let (child, url, _) = serve(&db, true);
        let profile = client.get(format!("{url}/api/v1/users/profile")).bearer_auth(token).send().await.unwrap();
        assert_eq!(profile.status(), 200, "tokens survive a restart");
        let addresses: Value =
            client.get(format!("{url}/api/v1/users/addresses")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        assert_eq!(addresses["items"].as_array().unwrap().len(), 1, "the demo shopper's address is seeded once");
        terminate(child);
    }

    async fn create_admin_from_the_command_line(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let mut cmd = emporium(&db);
        cmd.args(["users", "create-admin", "--email", "Boss@Example.com", "--password", "boss password 1"]);
        with_backend(&mut cmd, &db);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("created administrator boss@example.com"));

        let mut cmd = emporium(&db);
        cmd.args(["users", "create-admin", "--email", "x@example.com", "--password", "short"]);
        with_backend(&mut cmd, &db);
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--password must be at least 8 characters"));

        let (child, url, _) = serve(&db, false);
        let res = reqwest::Client::new()
            .post(format!("{url}/api/v1/users/login"))
            .json(&json!({"email": "boss@example.com", "password": "boss password 1"}))
            .send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["user"]["roles"], json!(["admin", "customer"]));
        terminate(child);
    }
}

#[test]
fn config_prints_effective_settings_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("emporium.toml");
    std::fs::write(&file, "rate_limit_auth = 3\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_emporium"))
        .env_clear()
        .env("EMPORIUM_RATE_LIMIT_AUTH", "4")
        .env("EMPORIUM_JWT_SECRET", "top-secret-top-secret-top-secret")
        .env("EMPORIUM_DATABASE_URL", "postgres://shop:hunter2@db/shop")
        .args(["--config", file.to_str().unwrap(), "config", "--listen", "127.0.0.1:7777"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let config: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(config["listen"], "127.0.0.1:7777", "flags win");
    assert_eq!(config["rate_limit_auth"], 4, "env wins over the file");
    assert_eq!(config["jwt_secret"], "[redacted]");
    assert_eq!(config["database_url"], "postgres://shop:[redacted]@db/shop");
    assert!(!printed.contains("top-secret") && !printed.contains("hunter2"));
}
