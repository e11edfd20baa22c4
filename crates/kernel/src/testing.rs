//! Test support: a fresh database per test on either backend, dropped afterwards
//! (crates.io's test-database pattern). Compiled only with the `test-support` feature.
//!
//! PostgreSQL is never skipped: if it is unreachable the test fails and says how to start it.

use crate::config::{Secret, Settings};
use crate::db::{Db, ServiceMigrations};
use sqlx::{Connection, PgConnection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server tests create their databases on: `EMPORIUM_TEST_DATABASE_URL`, by default the
/// local PostgreSQL the test script starts.
pub fn admin_url() -> String {
    std::env::var("EMPORIUM_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use: `EMPORIUM_TEST_REDIS_URL`, by default the local one the test script starts.
pub fn redis_url() -> String {
    std::env::var("EMPORIUM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The S3-compatible server tests use: `EMPORIUM_TEST_S3_ENDPOINT`, by default the moto server
/// the test script starts.
pub fn s3_endpoint() -> String {
    std::env::var("EMPORIUM_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9555".into())
}

/// A data directory and, for PostgreSQL, a database of its own; both vanish on drop.
pub struct TestDatabase {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg_name) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("emporium_test_{}", uuid::Uuid::now_v7().simple());
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|err| {
                    panic!("PostgreSQL is not reachable at {admin} ({err}). Run ./scripts/test, which starts it, or set EMPORIUM_TEST_DATABASE_URL")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                (Some(replace_database(&admin, &name)), Some(name))
            }
        };
        TestDatabase { backend, dir, url, pg_name }
    }

    /// An empty stand-in owning nothing (for moving a database out of a struct that is dropped).
    pub fn placeholder() -> TestDatabase {
        TestDatabase { backend: Backend::Sqlite, dir: tempfile::tempdir().expect("temp dir"), url: None, pg_name: None }
    }

    /// Points `settings` at this database.
    pub fn apply(&self, settings: &mut Settings) {
        settings.data_dir = self.dir.path().to_owned();
        settings.database_url = self.url.clone().map(Secret::new);
    }

    /// Opens a service database here (kernel tests that need no whole app).
    pub async fn open(&self, service: &'static str, migrations: &ServiceMigrations) -> Db {
        match &self.url {
            Some(url) => Db::open_postgres(service, url, 8, migrations).await,
            None => Db::open_sqlite(service, &self.dir.path().join(format!("{service}.db")), 8, migrations).await,
        }
        .expect("open test database")
    }

    /// The same database as [`open`](Self::open), through the storage layer.
    pub async fn storage(&self, service: &'static str, migrations: &ServiceMigrations) -> crate::storage::Database {
        match &self.url {
            Some(url) => crate::storage::Database::open_postgres(url, service, 8, migrations).await,
            None => {
                let path = self.dir.path().join(format!("{service}.db"));
                crate::storage::Database::open_sqlite(&path, 4, migrations).await
            }
        }
        .expect("open test database (storage layer)")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop a test database; ./scripts/test removes leftovers");
        }
    }
}

/// No migrations: for tests that only need the kernel's own tables.
pub fn no_migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate::Migrator::with_migrations(Vec::new()),
        postgres: sqlx::migrate::Migrator::with_migrations(Vec::new()),
    }
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Declares one test per backend: `mod name { fn sqlite(); fn postgres(); }`.
///
/// ```text
/// backend_tests! {
///     async fn registers(backend: Backend) { let app = spawn_app(backend).await; … }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($backend: $crate::testing::Backend) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::testing::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run($crate::testing::Backend::Postgres).await
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::replace_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::replace_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(super::replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
