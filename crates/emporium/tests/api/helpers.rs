//! `spawn_app` and typed helpers for talking to it.

use emporium::App;
use emporium_kernel::config::Settings;
use emporium_kernel::db::Db;
pub use emporium_kernel::testing::Backend;
use emporium_kernel::testing::TestDatabase;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub databases: Vec<Db>,
    pub catalog: emporium_catalog::api::CatalogClient,
    pub catalog_service: Arc<emporium_catalog::CatalogService>,
    pub users: Arc<emporium_users::UsersService>,
    pub search: Arc<emporium_search::SearchService>,
    pub cart: Arc<emporium_cart::CartService>,
    pub orders: Arc<emporium_orders::OrdersService>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    // Dropped last: the server stops before its database disappears.
    _database: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// What the sandbox gateway signs its webhooks with in tests.
pub const SANDBOX_WEBHOOK_SECRET: &str = "whsec_sandbox_test";

fn test_settings() -> Settings {
    Settings {
        rate_limit_auth: 0,
        rate_limit_api: 0,
        outbox_poll_ms: 50,
        order_sweep_ms: 200,
        sandbox_async_delay_ms: 100,
        sandbox_webhook_secret: Some(emporium_kernel::config::Secret::new(SANDBOX_WEBHOOK_SECRET.into())),
        ..Settings::default()
    }
}

/// Spawns the app with test defaults (rate limits off) adjusted by `tweak`.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut settings = test_settings();
    database.apply(&mut settings);
    tweak(&mut settings);
    serve(settings, database).await
}

/// Spawns the app on a clock the test moves.
pub async fn spawn_app_with_clock(
    backend: Backend,
    clock: emporium_kernel::clock::SharedClock,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut settings = test_settings();
    database.apply(&mut settings);
    tweak(&mut settings);
    serve_on(settings, database, clock).await
}

async fn serve(settings: Settings, database: TestDatabase) -> TestApp {
    serve_on(settings, database, emporium_kernel::clock::system()).await
}

async fn serve_on(settings: Settings, database: TestDatabase, clock: emporium_kernel::clock::SharedClock) -> TestApp {
    let app = App::build_with_clock(settings, clock).await.expect("the app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let databases = app.databases.clone();
    let catalog = app.catalog.clone().expect("catalog runs");
    let catalog_service = app.catalog_service().expect("catalog runs").clone();
    let users = app.users_service().expect("users runs").clone();
    let search = app.search_service().expect("search runs").clone();
    let cart = app.cart_service().expect("cart runs").clone();
    let orders = app.orders_service().expect("orders run").clone();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(async move { app.serve(listener).await.expect("server runs") });
    TestApp {
        address,
        client: reqwest::Client::new(),
        databases,
        catalog,
        catalog_service,
        users,
        search,
        cart,
        orders,
        shutdown,
        server: Some(server),
        _database: database,
    }
}

impl TestApp {
    /// Stops the app gracefully and starts it again on the same data (databases, index).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        self.restart_stopped().await
    }

    /// Stops the server gracefully (the index is committed and released).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        self.server.take().expect("running").await.expect("server stopped cleanly");
    }

    /// Starts again after the server task was already awaited (to change files in between).
    pub async fn restart_stopped(mut self) -> TestApp {
        let mut settings = test_settings();
        self._database.apply(&mut settings);
        let database = std::mem::replace(&mut self._database, TestDatabase::placeholder());
        drop(self);
        serve(settings, database).await
    }

    /// The data directory (SQLite files, search index).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._database.dir.path().to_owned()
    }
}

/// A signed-in test user.
pub struct Session {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post("/api/v1/users/register", None, json!({"email": email, "password": password, "name": "Test User"}))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/api/v1/users/login", None, json!({"email": email, "password": password})).await
    }

    /// Registers a fresh customer and returns its session.
    pub async fn signed_in_customer(&self) -> Session {
        let email = format!("user-{}@example.com", uuid::Uuid::now_v7().simple());
        let res = self.register(&email, "correct horse battery").await;
        assert_eq!(res.status(), StatusCode::CREATED);
        session(res.json().await.unwrap())
    }

    /// An administrator created the way `emporium users create-admin` does.
    pub async fn signed_in_admin(&self) -> Session {
        let email = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
        let registration = emporium_users::service::Registration {
            email: emporium_users::model::Email::parse(&email).unwrap(),
            password: emporium_users::model::Password::parse("admin password 1").unwrap(),
            name: emporium_users::model::PersonName::parse("Admin").unwrap(),
        };
        self.users.ensure_admin(registration).await.unwrap();
        let res = self.login(&email, "admin password 1").await;
        assert_eq!(res.status(), StatusCode::OK);
        session(res.json().await.unwrap())
    }

    /// A fresh account holding `roles`, signed in.
    pub async fn signed_in_with_roles(&self, roles: &[emporium_kernel::auth::Role]) -> Session {
        let email = format!("member-{}@example.com", uuid::Uuid::now_v7().simple());
        let registration = emporium_users::service::Registration {
            email: emporium_users::model::Email::parse(&email).unwrap(),
            password: emporium_users::model::Password::parse("member password 1").unwrap(),
            name: emporium_users::model::PersonName::parse("Member").unwrap(),
        };
        let session = self.users.create_user(registration, roles.to_vec()).await.unwrap();
        Session {
            id: session.user.id.to_string(),
            email,
            access_token: session.access_token,
            refresh_token: session.refresh_token,
        }
    }

    /// A fresh member of warehouse staff, assigned by `admin` to `warehouses`, signed in (the
    /// assignment rides in the token).
    pub async fn staff_at(&self, admin: &Session, warehouses: &[&str]) -> Session {
        let staff = self.signed_in_with_roles(&[emporium_kernel::auth::Role::Warehouse]).await;
        let path = format!("/api/v1/admin/users/{}/warehouses", staff.id);
        let res = self
            .request(Method::PUT, &path, Some(&admin.access_token), Some(json!({"warehouse_ids": warehouses})))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = self.post("/api/v1/users/token/refresh", None, json!({"refresh_token": staff.refresh_token})).await;
        assert_eq!(res.status(), StatusCode::OK);
        session(res.json().await.unwrap())
    }

    pub fn db(&self, service: &str) -> &Db {
        self.databases.iter().find(|db| db.service() == service).expect("service database")
    }

    pub fn users_db(&self) -> &Db {
        self.db("users")
    }

    /// Waits until the search index has committed every catalog and inventory event written so far.
    pub async fn search_caught_up(&self) {
        for source in ["catalog", "inventory"] {
            let head = emporium_kernel::events::OutboxStats::read(self.db(source)).await.unwrap().max_seq;
            let mut caught_up = false;
            for _ in 0..500 {
                if self.search.indexer().checkpoint(source) >= head {
                    caught_up = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(caught_up, "the search index did not catch up with {source} event {head} within 5 s");
        }
    }

    /// `GET /api/v1/search?{query}` after the index caught up; asserts 200.
    pub async fn search(&self, query: &str) -> Value {
        self.search_caught_up().await;
        let res = self.get(&format!("/api/v1/search?{query}"), None).await;
        assert_eq!(res.status(), StatusCode::OK, "search {query}");
        res.json().await.unwrap()
    }

    /// Event types in a service's outbox, oldest first.
    pub async fn event_types(&self, service: &str) -> Vec<String> {
        emporium_kernel::events::outbox_events(self.db(service), 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

pub fn session(body: Value) -> Session {
    Session {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        email: body["user"]["email"].as_str().unwrap().to_owned(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// Asserts an RFC 9457 problem with `status` and `code`, carrying the request id; returns it.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    let content_type = res.headers().get("content-type").expect("content type").to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = res.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("/problems/{code}"));
    assert!(body["title"].is_string());
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

/// The fields named in a 422 problem.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}
