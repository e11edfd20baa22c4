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
    let mut cmd = emporium(db);
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

backend_tests! {
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
        terminate(child);
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
        terminate(child);

        // A second start on the same data keeps the demo accounts (the seed is idempotent) and
        // the same JWT secret (a token from the first run still works).
        let (child, url, _) = serve(&db, true);
        let profile = client.get(format!("{url}/api/v1/users/profile")).bearer_auth(token).send().await.unwrap();
        assert_eq!(profile.status(), 200, "tokens survive a restart");
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
