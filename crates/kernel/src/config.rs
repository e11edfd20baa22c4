//! Typed settings. Precedence: built-in defaults < config file < `EMPORIUM_*` environment < CLI
//! flags (applied by the binary). Every key is also its environment name: `data_dir` is
//! `EMPORIUM_DATA_DIR`. Secrets are wrapped in [`Secret`] so `Debug` and logs never show them, and
//! [`Settings::redacted`] is the only way settings are printed.

use crate::money::Currency;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A value that must never be printed. `Debug`/`Display` show a placeholder; use
/// [`Secret::expose`] at the one place the value is needed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Where SQLite files, the search index, blobs and the generated JWT secret live.
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL (one schema per service); unset means SQLite files.
    pub database_url: Option<Secret<String>>,
    pub redis_url: Option<Secret<String>>,
    /// Prefix of every Redis key, so several shops (or test runs) can share one Redis.
    pub redis_prefix: String,
    /// How long cached product reads may be served before they are read again.
    pub cache_ttl_secs: u64,
    pub kafka_brokers: Option<String>,
    /// Where blobs (images) go: `file:///dir`, or `s3://bucket[/prefix]` (any S3-compatible store).
    pub blob_url: Option<String>,
    /// S3 endpoint for non-AWS stores (MinIO, Ceph, moto…); `http://` allows plain HTTP.
    pub blob_endpoint: Option<String>,
    pub blob_region: Option<String>,
    /// S3 credentials; when unset the standard `AWS_*` environment variables are used.
    pub blob_access_key_id: Option<String>,
    pub blob_secret_access_key: Option<Secret<String>>,
    pub smtp_url: Option<Secret<String>>,
    /// Comma-separated services this process runs; `all` runs every one.
    pub services: String,
    /// HMAC key for access tokens; generated into the data dir when unset.
    pub jwt_secret: Option<Secret<String>>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Login/register attempts per minute per client; 0 disables the limit.
    pub rate_limit_auth: u32,
    /// Requests per second per client on every other endpoint; 0 disables the limit.
    pub rate_limit_api: u32,
    /// Honour `X-Forwarded-For` for the client address (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub log_format: LogFormat,
    /// A `tracing` filter directive such as `info` or `emporium=debug,sqlx=warn`.
    pub log_level: String,
    /// Connections per service pool on PostgreSQL.
    pub database_max_connections: u32,
    /// Reading connections per service database on SQLite, besides its one writing connection;
    /// 0 means one per core (at least 2). SQLite runs one writer at a time, and in WAL mode a
    /// connection drops its page cache whenever another one has written: connections beyond the
    /// cores only add threads and cold caches (measured in docs/benchmarks.md, "Checkout").
    pub sqlite_max_connections: u32,
    /// How often event dispatchers look for new outbox rows when nobody woke them.
    pub outbox_poll_ms: u64,
    /// Deliveries tried before an event is parked in the dead-letter table.
    pub outbox_max_attempts: u32,
    /// Delivered events are kept this long (to inspect, or to replay to a new consumer), then
    /// deleted by the hourly maintenance; events a consumer has not passed are always kept.
    pub outbox_retention_days: u64,
    /// How long a checkout's stock reservation holds before it is released.
    pub reservation_ttl_secs: u64,
    /// How often the sweeper looks for expired reservations.
    pub reservation_sweep_ms: u64,
    /// Carts untouched for this long are dropped.
    pub cart_ttl_days: u64,
    /// Most units of one product a cart line may hold.
    pub cart_max_quantity: u32,
    /// Payment gateways in the order they are tried (`sandbox`, `stripe`); a retryable failure
    /// (unavailable, 5xx) of one moves on to the next.
    pub payment_gateways: String,
    /// How long a gateway call may take before the payment is UNKNOWN (resolved later by asking
    /// the gateway, never by charging again).
    pub payment_timeout_ms: u64,
    /// The built-in sandbox gateway: webhook signing secret and how long `tok_async` takes.
    pub sandbox_webhook_secret: Option<Secret<String>>,
    pub sandbox_async_delay_ms: u64,
    /// The Stripe-style gateway: API base URL, secret key and webhook signing secret.
    pub stripe_api_url: Option<String>,
    pub stripe_secret_key: Option<Secret<String>>,
    pub stripe_webhook_secret: Option<Secret<String>>,
    /// How much an out-of-stock product's relevance counts in search, from 0 to 1: below 1,
    /// in-stock products come first at equal relevance; 1 ignores stock.
    pub search_out_of_stock_factor: f64,
    /// The shop's one currency (ISO 4217): every product price is in it, and a price in
    /// another is refused.
    pub shop_currency: Currency,
    /// Days after delivery during which an order may be returned; then it is COMPLETED.
    pub return_window_days: u64,
    /// Whether returned units go back on sale by default (a return may say per line).
    pub restock_returns: bool,
    /// How often the order worker expires unpaid checkouts and resumes interrupted ones.
    pub order_sweep_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            redis_prefix: "emporium".into(),
            cache_ttl_secs: 300,
            kafka_brokers: None,
            blob_url: None,
            blob_endpoint: None,
            blob_region: None,
            blob_access_key_id: None,
            blob_secret_access_key: None,
            smtp_url: None,
            services: "all".into(),
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            rate_limit_auth: 10,
            rate_limit_api: 200,
            trust_forwarded_for: false,
            body_limit_bytes: 256 * 1024,
            request_timeout_secs: 30,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            database_max_connections: 16,
            sqlite_max_connections: 0,
            outbox_poll_ms: 500,
            outbox_max_attempts: 10,
            outbox_retention_days: 7,
            reservation_ttl_secs: 10 * 60,
            reservation_sweep_ms: 1000,
            cart_ttl_days: 30,
            cart_max_quantity: 99,
            payment_gateways: "sandbox".into(),
            payment_timeout_ms: 5_000,
            sandbox_webhook_secret: None,
            sandbox_async_delay_ms: 200,
            stripe_api_url: None,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            search_out_of_stock_factor: 0.75,
            shop_currency: Currency::USD,
            return_window_days: 14,
            restock_returns: true,
            order_sweep_ms: 1000,
        }
    }
}

const SECRET_KEYS: &[&str] =
    &["jwt_secret", "blob_secret_access_key", "sandbox_webhook_secret", "stripe_secret_key", "stripe_webhook_secret"];
const URL_KEYS: &[&str] = &["database_url", "redis_url", "smtp_url"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults < `file` (if given, or `./emporium.toml` if present) < `EMPORIUM_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        let mut merged = serde_json::to_value(Settings::default()).expect("settings serialise");
        let merged_map = merged.as_object_mut().expect("settings are an object");

        let default_file = Path::new("emporium.toml");
        let file = file.or_else(|| default_file.exists().then_some(default_file));
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
            for (key, value) in table {
                let json = serde_json::to_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
                merged_map.insert(key, json);
            }
        }

        for (name, raw) in env {
            let Some(key) = name.strip_prefix("EMPORIUM_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // Variables that are not settings (EMPORIUM_CONFIG, test knobs) are simply not ours.
            let Some(current) = merged_map.get(&key) else {
                continue;
            };
            let value = match current {
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => serde_json::from_str(raw)
                    .map_err(|_| ConfigError::Invalid(format!("{name}={raw:?} is not a valid {key}")))?,
                _ if raw.is_empty() => serde_json::Value::Null,
                _ => serde_json::Value::String(raw.clone()),
            };
            merged_map.insert(key, value);
        }

        serde_json::from_value(merged).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The effective settings with every secret hidden, for `emporium config`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("settings serialise");
        let map = value.as_object_mut().expect("settings are an object");
        for key in SECRET_KEYS {
            if map.get(*key).is_some_and(|v| !v.is_null()) {
                map.insert((*key).into(), "[redacted]".into());
            }
        }
        for key in URL_KEYS {
            if let Some(serde_json::Value::String(url)) = map.get(*key) {
                let hidden = redact_url_password(url);
                map.insert((*key).into(), hidden.into());
            }
        }
        value
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url
            .as_ref()
            .is_some_and(|url| url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://"))
    }

    /// [`Settings::sqlite_max_connections`] with 0 resolved to the cores (at least 2, so a reader
    /// never waits for the writer's connection).
    pub fn sqlite_connections(&self) -> u32 {
        match self.sqlite_max_connections {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() as u32).max(2),
            n => n,
        }
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:[redacted]@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

/// The configured JWT secret, or the one persisted in the data dir (created on first use with
/// owner-only permissions), so tokens survive restarts without any setup.
pub fn resolve_jwt_secret(settings: &Settings) -> std::io::Result<Secret<String>> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok(secret.clone());
    }
    let path = settings.data_dir.join("jwt.secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(Secret::new(existing.to_owned()));
        }
    }
    std::fs::create_dir_all(&settings.data_dir)?;
    let secret = crate::random_token(48);
    write_private_file(&path, &secret)?;
    Ok(Secret::new(secret))
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("emporium.toml");
        std::fs::write(&file, "rate_limit_auth = 3\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        let settings =
            Settings::load_from(Some(&file), &env(&[("EMPORIUM_RATE_LIMIT_AUTH", "7"), ("EMPORIUM_UNRELATED", "x")]))
                .unwrap();
        assert_eq!(settings.rate_limit_auth, 7, "env wins over file");
        assert_eq!(settings.listen.port(), 9000, "file wins over defaults");
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Settings::load_from(None, &env(&[("EMPORIUM_RATE_LIMIT_API", "lots")])).unwrap_err();
        assert!(err.to_string().contains("EMPORIUM_RATE_LIMIT_API"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        assert!(Settings::load_from(Some(&file), &[]).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let settings = Settings::load_from(
            None,
            &env(&[
                ("EMPORIUM_JWT_SECRET", "supersecretsupersecretsupersecret"),
                ("EMPORIUM_DATABASE_URL", "postgres://app:pa55word@db:5432/shop"),
            ]),
        )
        .unwrap();
        let printed = format!("{settings:?} {}", settings.redacted());
        assert!(!printed.contains("supersecret"), "{printed}");
        assert!(!printed.contains("pa55word"), "{printed}");
        assert!(printed.contains("postgres://app:[redacted]@db:5432/shop"));
        assert!(settings.is_postgres());
    }

    #[test]
    fn jwt_secret_is_generated_once_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings { data_dir: dir.path().to_owned(), ..Settings::default() };
        let first = resolve_jwt_secret(&settings).unwrap();
        let second = resolve_jwt_secret(&settings).unwrap();
        assert_eq!(first.expose(), second.expose());
        assert!(first.expose().len() >= 48);
    }
}
