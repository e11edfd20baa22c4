//! A Stripe-style gateway over HTTP: PaymentIntents created and confirmed in one call
//! (`POST /v1/payment_intents`, form-encoded, `Idempotency-Key` forwarded), looked up by the
//! key kept in their metadata (`GET /v1/payment_intents/search`), refunded
//! (`POST /v1/refunds`), and webhooks signed in the `Stripe-Signature` header.

use crate::gateway::{ChargeRequest, Gateway, GatewayError, IntentBody, WebhookError, WebhookEvent, read_signed_event};
use crate::model::{ChargeState, GatewayCharge};
use axum::http::HeaderMap;
use emporium_kernel::config::Secret;
use emporium_kernel::money::Money;
use serde::Deserialize;
use std::time::Duration;

pub const NAME: &str = "stripe";
pub const SIGNATURE_HEADER: &str = "stripe-signature";

pub struct StripeGateway {
    http: reqwest::Client,
    base: String,
    secret_key: Secret<String>,
    webhook_secret: Vec<u8>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiErrorBody,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    payment_intent: Option<IntentBody>,
}

#[derive(Deserialize)]
struct SearchResult {
    data: Vec<IntentBody>,
}

#[derive(Deserialize)]
struct RefundBody {
    id: String,
}

impl StripeGateway {
    pub fn new(base: &str, secret_key: Secret<String>, webhook_secret: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret_key,
            webhook_secret: webhook_secret.as_bytes().to_vec(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>), GatewayError> {
        let res = req.bearer_auth(self.secret_key.expose()).send().await.map_err(|e| unavailable(&e))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| unavailable(&e))?.to_vec();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(GatewayError::Unavailable(format!("HTTP {status}")));
        }
        Ok((status, body))
    }
}

fn unavailable(err: &reqwest::Error) -> GatewayError {
    GatewayError::Unavailable(err.to_string())
}

fn rejected(status: reqwest::StatusCode, body: &[u8]) -> GatewayError {
    let message = serde_json::from_slice::<ErrorEnvelope>(body).map(|e| e.error.message).unwrap_or_default();
    GatewayError::Rejected(format!("HTTP {status}: {message}"))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::Rejected(format!("unexpected answer: {e}")))
}

#[async_trait::async_trait]
impl Gateway for StripeGateway {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn charge(&self, req: &ChargeRequest<'_>) -> Result<GatewayCharge, GatewayError> {
        let form = [
            ("amount", req.amount.amount.to_string()),
            ("currency", req.amount.currency.as_str().to_ascii_lowercase()),
            ("payment_method", req.token.to_owned()),
            ("confirm", "true".to_owned()),
            ("metadata[reference]", req.reference.to_owned()),
            ("metadata[idempotency_key]", req.idempotency_key.to_owned()),
        ];
        let request =
            self.http.post(self.url("/v1/payment_intents")).header("Idempotency-Key", req.idempotency_key).form(&form);
        let (status, body) = self.send(request).await?;
        if status.is_success() {
            return Ok(parse::<IntentBody>(&body)?.charge());
        }
        if status == reqwest::StatusCode::PAYMENT_REQUIRED {
            // A card error: the intent exists and says why.
            let error: ErrorEnvelope = parse(&body)?;
            let mut charge = error.error.payment_intent.map(|i| i.charge()).unwrap_or(GatewayCharge {
                transaction_id: None,
                state: ChargeState::Declined(String::new()),
                amount: req.amount.amount,
                refunded: 0,
            });
            charge.state = ChargeState::Declined(error.error.message);
            return Ok(charge);
        }
        Err(rejected(status, &body))
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<GatewayCharge>, GatewayError> {
        let query = format!("metadata['idempotency_key']:'{}'", idempotency_key.replace('\'', "\\'"));
        let request = self.http.get(self.url("/v1/payment_intents/search")).query(&[("query", query)]);
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(rejected(status, &body));
        }
        Ok(parse::<SearchResult>(&body)?.data.first().map(IntentBody::charge))
    }

    async fn refund(&self, transaction_id: &str, amount: Money, idempotency_key: &str) -> Result<String, GatewayError> {
        let form = [("payment_intent", transaction_id.to_owned()), ("amount", amount.amount.to_string())];
        let request = self.http.post(self.url("/v1/refunds")).header("Idempotency-Key", idempotency_key).form(&form);
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(rejected(status, &body));
        }
        Ok(parse::<RefundBody>(&body)?.id)
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<WebhookEvent, WebhookError> {
        read_signed_event(&self.webhook_secret, headers, SIGNATURE_HEADER, body, now)
    }
}
