//! A local server that speaks the Stripe-style protocol the [`StripeGateway`](crate::stripe)
//! uses, for tests and benchmarks: intents created and confirmed in one call with
//! `Idempotency-Key` replay, search by metadata, refunds, signed webhooks for async payments, and
//! switches to make it fail (503) or hang. It keeps its books in memory and counts every charge
//! it actually makes, so tests can prove nothing was charged twice.

use crate::signature;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Books {
    intents: HashMap<String, Value>,
    /// Idempotency-Key → the first answer.
    answers: HashMap<String, (u16, Value)>,
    charges: u64,
    refunds: u64,
    fail_next: u32,
    webhook_target: Option<String>,
}

#[derive(Clone)]
pub struct StripeServer {
    pub url: String,
    pub secret_key: String,
    pub webhook_secret: String,
    books: Arc<Mutex<Books>>,
    hang: Duration,
}

impl StripeServer {
    /// Serves on a free local port until the runtime ends.
    pub async fn start() -> StripeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let server = StripeServer {
            url: format!("http://{}", listener.local_addr().expect("address")),
            secret_key: "sk_test_emporium".into(),
            webhook_secret: "whsec_emporium".into(),
            books: Arc::default(),
            hang: Duration::from_secs(30),
        };
        let app = Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/search", get(search_intents))
            .route("/v1/refunds", post(create_refund))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        server
    }

    /// Charges actually made (replays and declines excluded).
    pub fn charges(&self) -> u64 {
        self.books.lock().expect("not poisoned").charges
    }

    pub fn refunds(&self) -> u64 {
        self.books.lock().expect("not poisoned").refunds
    }

    /// The next `n` requests answer 503 without doing anything.
    pub fn fail_next(&self, n: u32) {
        self.books.lock().expect("not poisoned").fail_next = n;
    }

    /// Where async payments are announced (`…/api/v1/payments/webhooks/stripe`).
    pub fn send_webhooks_to(&self, url: &str) {
        self.books.lock().expect("not poisoned").webhook_target = Some(url.to_owned());
    }

    /// A signed event for `intent`, as the server would deliver it.
    pub fn signed_event(&self, intent: &Value, event_id: &str) -> (String, Vec<u8>) {
        let body = crate::gateway::event_body(event_id, intent);
        let header = signature::sign(self.webhook_secret.as_bytes(), chrono::Utc::now().timestamp(), &body);
        (header, body)
    }

    /// The intent charged under `key`, as the books hold it.
    pub fn intent_by_key(&self, key: &str) -> Option<Value> {
        let books = self.books.lock().expect("not poisoned");
        books.intents.values().find(|i| i["metadata"]["idempotency_key"] == key).cloned()
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", self.secret_key))
    }

    /// Common gate: auth, injected failures, idempotent replay.
    fn gate(&self, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
        if !self.authorised(headers) {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Invalid API key provided",
                None,
            )));
        }
        let mut books = self.books.lock().expect("not poisoned");
        if books.fail_next > 0 {
            books.fail_next -= 1;
            return Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "temporarily unavailable", None)));
        }
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some((status, body)) = key.as_ref().and_then(|k| books.answers.get(k)) {
            let status = StatusCode::from_u16(*status).expect("stored status");
            return Err(Box::new((status, Json(body.clone())).into_response()));
        }
        Ok(key)
    }

    fn remember(&self, key: Option<String>, status: StatusCode, body: &Value) {
        if let Some(key) = key {
            self.books.lock().expect("not poisoned").answers.insert(key, (status.as_u16(), body.clone()));
        }
    }
}

fn error(status: StatusCode, kind: &str, message: &str, intent: Option<&Value>) -> Response {
    let mut body = json!({"error": {"type": kind, "message": message}});
    if let Some(intent) = intent {
        body["error"]["payment_intent"] = intent.clone();
    }
    (status, Json(body)).into_response()
}

async fn create_intent(
    State(server): State<StripeServer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = match server.gate(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let Some(amount) = form.get("amount").and_then(|a| a.parse::<i64>().ok()).filter(|a| *a > 0) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "amount must be a positive integer", None);
    };
    let method = form.get("payment_method").cloned().unwrap_or_default();
    let id = format!("pi_{}", uuid::Uuid::now_v7().simple());
    let status = match method.as_str() {
        "tok_visa" | "pm_card_visa" | "4242424242424242" | "tok_timeout" => "succeeded",
        "tok_async" => "processing",
        _ => "requires_payment_method",
    };
    let mut intent = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_refunded": 0,
        "currency": form.get("currency").cloned().unwrap_or_default(),
        "status": status,
        "metadata": {
            "reference": form.get("metadata[reference]").cloned().unwrap_or_default(),
            "idempotency_key": form.get("metadata[idempotency_key]").cloned().unwrap_or_default(),
        },
    });
    if status == "requires_payment_method" {
        intent["last_payment_error"] = json!({"message": "Your card was declined."});
    }
    {
        let mut books = server.books.lock().expect("not poisoned");
        if status != "requires_payment_method" {
            books.charges += 1;
        }
        books.intents.insert(id.clone(), intent.clone());
    }
    if status == "requires_payment_method" {
        let response =
            json!({"error": {"type": "card_error", "message": "Your card was declined.", "payment_intent": intent}});
        server.remember(key, StatusCode::PAYMENT_REQUIRED, &response);
        return (StatusCode::PAYMENT_REQUIRED, Json(response)).into_response();
    }
    server.remember(key, StatusCode::OK, &intent);
    if method == "tok_async" {
        tokio::spawn(settle_later(server.clone(), id));
    }
    if method == "tok_timeout" {
        tokio::time::sleep(server.hang).await;
    }
    (StatusCode::OK, Json(intent)).into_response()
}

async fn settle_later(server: StripeServer, id: String) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (intent, target) = {
        let mut books = server.books.lock().expect("not poisoned");
        let Some(intent) = books.intents.get_mut(&id) else { return };
        intent["status"] = json!("succeeded");
        (intent.clone(), books.webhook_target.clone())
    };
    let Some(target) = target else { return };
    let (header, body) = server.signed_event(&intent, &format!("evt_{}", uuid::Uuid::now_v7().simple()));
    let client = reqwest::Client::new();
    // Delivered twice, as real gateways sometimes do: the receiver must not care.
    for _ in 0..2 {
        let _ = client
            .post(&target)
            .header(crate::stripe::SIGNATURE_HEADER, &header)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
    }
}

async fn search_intents(
    State(server): State<StripeServer>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !server.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API key provided", None);
    }
    let query = q.get("query").cloned().unwrap_or_default();
    let Some(key) = query.strip_prefix("metadata['idempotency_key']:'").and_then(|r| r.strip_suffix('\'')) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "unsupported search query", None);
    };
    let data: Vec<Value> = server.intent_by_key(key).into_iter().collect();
    (StatusCode::OK, Json(json!({"object": "search_result", "data": data}))).into_response()
}

async fn create_refund(
    State(server): State<StripeServer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = match server.gate(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let intent_id = form.get("payment_intent").cloned().unwrap_or_default();
    let amount = form.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(0);
    let mut books = server.books.lock().expect("not poisoned");
    let Some(intent) = books.intents.get_mut(&intent_id) else {
        return error(StatusCode::NOT_FOUND, "invalid_request_error", "No such payment_intent", None);
    };
    let refunded = intent["amount_refunded"].as_i64().unwrap_or(0);
    let total = intent["amount"].as_i64().unwrap_or(0);
    if intent["status"] != "succeeded" || amount < 1 || refunded + amount > total {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "the refund exceeds the charge", None);
    }
    intent["amount_refunded"] = json!(refunded + amount);
    books.refunds += 1;
    drop(books);
    let refund =
        json!({"id": format!("re_{}", uuid::Uuid::now_v7().simple()), "amount": amount, "status": "succeeded"});
    server.remember(key, StatusCode::OK, &refund);
    (StatusCode::OK, Json(refund)).into_response()
}
