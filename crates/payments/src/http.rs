//! `/payments` endpoints: gateway webhooks (public, signed), and for admins a payment, a refund
//! and reconciliation. Shoppers pay through their order (`POST /orders/{id}/pay`).

use crate::model::Payment;
use crate::service::{PaymentsService, ReconcileReport};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiResult, Problem};
use emporium_kernel::http::{ApiJson, path_id};
use emporium_kernel::idempotency;
use emporium_kernel::ids::PaymentId;
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<PaymentsService>>;

pub fn router(service: Arc<PaymentsService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(webhook))
        .routes(routes!(get_payment))
        .routes(routes!(refund))
        .routes(routes!(reconcile))
        .with_state(service)
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
}

/// A gateway's callback. The signature is checked before anything is read; a duplicate
/// delivery is acknowledged and changes nothing.
#[utoipa::path(post, path = "/payments/webhooks/{gateway}", tag = "payments",
    params(("gateway" = String, Path, description = "`sandbox` or `stripe`")),
    responses((status = 200, body = WebhookAck), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn webhook(
    State(svc): Service,
    Path(gateway): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    svc.handle_webhook(&gateway, &headers, &body).await?;
    Ok(Json(WebhookAck { received: true }))
}

#[utoipa::path(get, path = "/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, body = Payment), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_payment(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Payment>> {
    user.require(Role::Admin)?;
    let id: PaymentId = path_id(&id, "payment")?;
    Ok(Json(svc.payment(id).await?))
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct RefundInput {
    /// Minor units; everything not yet refunded when absent.
    pub amount: Option<i64>,
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// An operator's refund (orders refund by themselves on cancel and return). `Idempotency-Key`
/// makes a retried refund one refund.
#[utoipa::path(post, path = "/payments/{id}/refund", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    request_body = RefundInput,
    responses((status = 200, body = Payment), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn refund(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RefundInput>,
) -> ApiResult<Response> {
    user.require(Role::Admin)?;
    let id: PaymentId = path_id(&id, "payment")?;
    let key = idempotency::key_from_headers(&headers)?;
    let mut v = Validator::new();
    let reason = v.required("reason", input.reason.clone(), |s| text(&s, 1, 500, false));
    if input.amount.is_some_and(|a| a < 1) {
        v.add("amount", "must be at least 1");
    }
    v.finish()?;
    let reason = validated(reason);
    let scope = format!("payments.refund:{id}");
    let db = svc.db().clone();
    Ok(idempotency::run(&db, &scope, key.clone(), &input, || async {
        let payment = svc.payment(id).await?;
        let refund_key = key.map_or_else(|| format!("admin:{}", uuid::Uuid::now_v7()), |k| format!("admin:{id}:{k}"));
        let payment = svc.refund(&payment.reference, input.amount, &reason, &refund_key).await?;
        Ok((StatusCode::OK, serde_json::to_value(payment).expect("serialises")))
    })
    .await)
}

#[derive(Deserialize, IntoParams)]
pub struct ReconcileQuery {
    /// Repair what can be repaired (resolve unresolved payments, refund stray charges).
    pub repair: Option<bool>,
}

#[utoipa::path(post, path = "/payments/reconcile", tag = "payments", security(("bearer" = [])),
    params(ReconcileQuery),
    responses((status = 200, body = ReconcileReport), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn reconcile(
    State(svc): Service,
    user: AuthUser,
    Query(q): Query<ReconcileQuery>,
) -> ApiResult<Json<ReconcileReport>> {
    user.require(Role::Admin)?;
    Ok(Json(svc.reconcile(q.repair.unwrap_or(false)).await?))
}
