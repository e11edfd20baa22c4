//! `Idempotency-Key` for POSTs that create orders, payments and refunds (API.md): the first
//! request with a key runs and its answer is stored; a retry with the same key and body gets that
//! answer back without running again; the same key with a different body is a 422.
//!
//! Concurrent duplicates are the case that matters (a client retrying a slow request): the key is
//! claimed by an INSERT on the primary key, so exactly one request runs; the others wait for its
//! stored answer. A claim whose request died (process killed) without answering is taken over
//! after [`STALE_CLAIM`], and the use case itself must then resume rather than repeat (orders find
//! their checkout by the same key).

use crate::db::Db;
use crate::error::{ApiError, ErrorCode};
use crate::{sql, sql_exec};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use sqlx::types::Json;
use std::time::Duration;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that is a replay of the first one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a claim may stay unanswered before another request may take it over.
pub const STALE_CLAIM: Duration = Duration::from_secs(10);
/// How long a duplicate waits for the first request's answer before giving up with a 409.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(30);

/// The `Idempotency-Key` header, checked: 1 to 255 visible ASCII characters.
pub fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(HEADER) else { return Ok(None) };
    let key = raw.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
    }
    Ok(Some(key.to_owned()))
}

/// What a request learns when it presents its key.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This request owns the key: run, then [`complete`] (or [`abandon`] on a server error).
    Owned,
    /// The key was answered before: send this answer again.
    Answered { status: u16, body: serde_json::Value },
}

/// fingerprint, status, response, updated_at
type StoredKey = (String, Option<i32>, Option<Json<serde_json::Value>>, chrono::DateTime<Utc>);

/// Claims `(scope, key)` for a request whose body hashes to `fingerprint`.
pub async fn claim(db: &Db, scope: &str, key: &str, fingerprint: &str) -> Result<Claim, ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_ANSWER;
    loop {
        let now = Utc::now();
        let inserted = sql_exec!(db, |c| sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, status, response, created_at, updated_at)
             VALUES ($1, $2, $3, NULL, NULL, $4, $4) ON CONFLICT (scope, key) DO NOTHING"
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now)
        .execute(c)
        .await)?;
        if inserted == 1 {
            return Ok(Claim::Owned);
        }
        let row: Option<StoredKey> = sql!(db, |c| sqlx::query_as(
            "SELECT fingerprint, status, response, updated_at FROM idempotency_keys WHERE scope = $1 AND key = $2"
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(c)
        .await)?;
        // Abandoned (deleted) between our insert and our read: claim again.
        let Some((stored_fingerprint, status, response, updated_at)) = row else { continue };
        if stored_fingerprint != fingerprint {
            return Err(ApiError::new(ErrorCode::IdempotencyKeyReused)
                .with_detail("this Idempotency-Key was used with a different request body"));
        }
        if let (Some(status), Some(Json(body))) = (status, response) {
            return Ok(Claim::Answered { status: status as u16, body });
        }
        let stale_before = now - chrono::Duration::from_std(STALE_CLAIM).expect("small");
        if updated_at < stale_before {
            let taken = sql_exec!(db, |c| sqlx::query(
                "UPDATE idempotency_keys SET updated_at = $3
                 WHERE scope = $1 AND key = $2 AND status IS NULL AND updated_at = $4"
            )
            .bind(scope)
            .bind(key)
            .bind(now)
            .bind(updated_at)
            .execute(c)
            .await)?;
            if taken == 1 {
                tracing::warn!(scope, "taking over an idempotency key whose first request never answered");
                return Ok(Claim::Owned);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(ErrorCode::IdempotencyKeyInUse)
                .with_detail("the first request with this Idempotency-Key has not finished; retry later"));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Stores the answer of the request that owns the key.
pub async fn complete(db: &Db, scope: &str, key: &str, status: u16, body: &serde_json::Value) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query(
        "UPDATE idempotency_keys SET status = $3, response = $4, updated_at = $5 WHERE scope = $1 AND key = $2"
    )
    .bind(scope)
    .bind(key)
    .bind(i32::from(status))
    .bind(Json(body))
    .bind(Utc::now())
    .execute(c)
    .await)?;
    Ok(())
}

/// Frees the key after a server error, so a retry runs again instead of replaying a 5xx.
pub async fn abandon(db: &Db, scope: &str, key: &str) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
        .bind(scope)
        .bind(key)
        .execute(c)
        .await)?;
    Ok(())
}

/// A stable fingerprint of a request body.
pub fn fingerprint(body: &impl Serialize) -> String {
    crate::sha256_hex(serde_json::to_vec(body).unwrap_or_default())
}

/// Runs `handler` at most once per `(scope, key)`: without a key it simply runs; with one, the
/// first answer (success or 4xx) is stored and replayed to every retry.
pub async fn run<F, Fut>(db: &Db, scope: &str, key: Option<String>, body: &impl Serialize, handler: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(key) = key else {
        return answer(handler().await);
    };
    match claim(db, scope, &key, &fingerprint(body)).await {
        Err(err) => err.into_response(),
        Ok(Claim::Answered { status, body }) => replay(status, body),
        Ok(Claim::Owned) => {
            let result = handler().await;
            let (status, stored) = match &result {
                Ok((status, body)) => (*status, body.clone()),
                Err(err) => (err.status(), serde_json::to_value(err.problem()).unwrap_or_default()),
            };
            let saved = if status.is_server_error() {
                abandon(db, scope, &key).await
            } else {
                complete(db, scope, &key, status.as_u16(), &stored).await
            };
            if let Err(err) = saved {
                // The work is done; only the replay record is missing. A retry will find the
                // claim stale and the use case resumes instead of repeating.
                tracing::warn!(error = %err, "could not store the idempotent answer");
            }
            answer(result)
        }
    }
}

fn answer(result: Result<(StatusCode, serde_json::Value), ApiError>) -> Response {
    match result {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(err) => err.into_response(),
    }
}

fn replay(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    if status.is_client_error() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(crate::error::PROBLEM_JSON));
    }
    response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
