//! Payment use cases. Each payment is keyed by its idempotency key: paying again with the same
//! key returns the first payment and never calls a gateway twice for it. A charge that does not
//! answer within the timeout is UNKNOWN and only ever resolved by asking the gateway that holds
//! it (lookup by key), a webhook, or reconciliation.

use crate::api::PayRequest;
use crate::api::events::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use crate::gateway::{ChargeRequest, Gateway, GatewayError};
use crate::model::{
    GatewayCharge, Payment, PaymentStatus, RefundRejection, accepts_report, refund_outcome, status_for,
};
use crate::sandbox::Delivery;
use crate::store::{self, RefundRecord, StatusChange};
use axum::http::HeaderMap;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::Db;
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events::PendingEvent;
use emporium_kernel::ids::{PaymentId, RefundId};
use emporium_kernel::money::Money;
use emporium_kernel::storage::Database;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("payment not found")]
    NotFound,
    #[error("no gateway is called {0:?}")]
    UnknownGateway(String),
    #[error("{0}")]
    Refund(#[from] RefundRejection),
    #[error("the payment gateway failed: {0}")]
    Gateway(String),
    #[error("{0}")]
    Webhook(String),
    #[error("storage failed")]
    Store(#[from] emporium_kernel::storage::Error),
    #[error("an event could not be encoded: {0}")]
    Event(String),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::Invalid(errors) => ApiError::validation(errors),
            Error::NotFound => ApiError::not_found("payment"),
            Error::UnknownGateway(_) => ApiError::new(ErrorCode::NotFound).with_detail(detail),
            Error::Refund(_) => ApiError::conflict(detail),
            Error::Gateway(_) => ApiError::new(ErrorCode::Unavailable).with_detail(detail),
            Error::Webhook(_) => ApiError::new(ErrorCode::MalformedRequest).with_detail(detail),
            Error::Store(e) => ApiError::internal(e),
            Error::Event(e) => ApiError::internal(anyhow::anyhow!(e)),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What reconciliation found for one payment.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub payment_id: PaymentId,
    pub reference: String,
    pub gateway: String,
    pub problem: String,
    /// What was done about it (`None`: reported only).
    pub repair: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    pub checked: usize,
    pub findings: Vec<Finding>,
}

pub struct PaymentsService {
    /// What the event bus reads the outbox through (the service itself writes with `storage`).
    db: Db,
    storage: Database,
    clock: SharedClock,
    /// Tried in order; a retryable failure moves to the next.
    gateways: Vec<Arc<dyn Gateway>>,
    timeout: Duration,
    /// Webhooks the in-process sandbox sends; drained by the worker.
    deliveries: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    failpoint: Option<Failpoint>,
}

/// Unresolved payments younger than this are left to the call or webhook still under way.
const RESOLVE_AFTER: Duration = Duration::from_secs(2);

/// How a charge call ended.
enum Call {
    Answered(GatewayCharge),
    Unavailable(String),
    Rejected(String),
    TimedOut,
}

/// Test hook: stop `pay` for good after the payment is recorded and before its gateway is
/// called, as if the process died there (`EMPORIUM_FAILPOINT=payments.before-charge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    BeforeCharge,
}

impl Failpoint {
    pub fn parse(raw: &str) -> Option<Failpoint> {
        (raw == "payments.before-charge").then_some(Failpoint::BeforeCharge)
    }
}

impl PaymentsService {
    pub fn new(
        db: Db,
        storage: Database,
        clock: SharedClock,
        gateways: Vec<Arc<dyn Gateway>>,
        timeout: Duration,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
    ) -> Self {
        assert!(!gateways.is_empty(), "at least one payment gateway");
        let storage = storage.ringing(db.commit_signal());
        Self { db, storage, clock, gateways, timeout, deliveries: Mutex::new(Some(deliveries)), failpoint: None }
    }

    /// Sets the test hook (see [`Failpoint`]).
    pub fn with_failpoint(mut self, failpoint: Option<Failpoint>) -> Self {
        self.failpoint = failpoint;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn gateway(&self, name: &str) -> Result<&Arc<dyn Gateway>> {
        self.gateways.iter().find(|g| g.name() == name).ok_or_else(|| Error::UnknownGateway(name.to_owned()))
    }

    pub async fn payment(&self, id: PaymentId) -> Result<Payment> {
        self.reload(id).await
    }

    /// The latest payment for `reference` (an order), if any.
    pub async fn payment_for(&self, reference: &str) -> Result<Option<Payment>> {
        let reference = reference.to_owned();
        Ok(self.storage.read(move |tx| store::payment_by_reference(tx, &reference)).await?)
    }

    /// Refuses a token that may not be charged: empty, too long, or a card number (see
    /// `model::token_refusal`), before anything is recorded.
    pub fn check_token(&self, token: &str) -> Result<()> {
        let refusal = if token.trim().is_empty() || token.len() > 200 {
            Some("must be 1 to 200 characters")
        } else {
            crate::model::token_refusal(token, self.gateways[0].name() == crate::sandbox::NAME)
        };
        match refusal {
            Some(why) => Err(Error::Invalid(vec![FieldError::new("payment_method.token", why)])),
            None => Ok(()),
        }
    }

    /// Charges once per idempotency key. A retry returns the payment as it stands (asking the
    /// gateway first when it is still unresolved).
    pub async fn pay(&self, req: PayRequest) -> Result<Payment> {
        if req.amount.amount <= 0 {
            return Err(Error::Invalid(vec![FieldError::new("amount", "must be positive")]));
        }
        self.check_token(&req.token)?;
        // A retry (the key is taken) is found by the insert below failing on the key's unique
        // index: no read ahead of every first attempt.
        let now = self.clock.now();
        let first = self.gateways[0].name().to_owned();
        let mut payment = Payment {
            id: PaymentId::new(),
            reference: req.reference.clone(),
            idempotency_key: req.idempotency_key.clone(),
            amount: req.amount,
            gateway: first.clone(),
            attempted: vec![first],
            transaction_id: None,
            status: PaymentStatus::Pending,
            failure_reason: None,
            refunded: 0,
            created_at: now,
            updated_at: now,
        };
        // A card number (a sandbox test card) is never stored: such a charge is not sent again.
        let stored_token = if crate::model::is_card_number(&req.token) { None } else { Some(req.token.as_str()) };
        let (stored, token) = (payment.clone(), stored_token.map(str::to_owned));
        match self.storage.write(move |tx| store::insert_payment(tx, &stored, token.as_deref())).await {
            Err(err) if err.is_unique_violation() => {
                // The same key, earlier or concurrently: that request charges; we report what it got.
                let key = req.idempotency_key.clone();
                let existing =
                    self.storage.read(move |tx| store::payment_by_key(tx, &key)).await?.ok_or(Error::NotFound)?;
                return self.settle_existing(existing).await;
            }
            other => other?,
        }
        if self.failpoint == Some(Failpoint::BeforeCharge) {
            tracing::error!("failpoint payments.before-charge reached: this request stops here for good");
            std::future::pending::<()>().await;
        }
        let charge = ChargeRequest {
            idempotency_key: &req.idempotency_key,
            reference: &req.reference,
            amount: req.amount,
            token: &req.token,
        };
        let mut last_error = String::new();
        for (i, gateway) in self.gateways.iter().enumerate() {
            if i > 0 {
                payment.attempted.push(gateway.name().to_owned());
                payment.gateway = gateway.name().to_owned();
                let (id, name, attempted, now) =
                    (payment.id, payment.gateway.clone(), payment.attempted.clone(), self.clock.now());
                self.storage.write(move |tx| store::set_gateway(tx, id, &name, &attempted, now)).await?;
            }
            match self.call(gateway, &charge).await {
                Call::Answered(result) => return self.report(payment, &result).await,
                Call::Unavailable(why) => {
                    tracing::warn!(gateway = gateway.name(), error = %why, "payment gateway unavailable; trying the next");
                    metrics::counter!("payments_gateway_fallbacks_total", "gateway" => gateway.name()).increment(1);
                    last_error = why;
                }
                Call::Rejected(why) => return self.fail(payment, &why).await,
                // It may or may not have charged: never try another gateway, never retry.
                Call::TimedOut => return self.mark_unknown(payment).await,
            }
        }
        self.fail(payment, &format!("no payment gateway is available ({last_error})")).await
    }

    /// One charge call to `gateway`, bounded by the timeout.
    async fn call(&self, gateway: &Arc<dyn Gateway>, charge: &ChargeRequest<'_>) -> Call {
        match tokio::time::timeout(self.timeout, gateway.charge(charge)).await {
            Ok(Ok(result)) => Call::Answered(result),
            Ok(Err(GatewayError::Unavailable(why))) => Call::Unavailable(why),
            Ok(Err(GatewayError::Rejected(why))) => Call::Rejected(why),
            Err(_elapsed) => {
                metrics::counter!("payments_unknown_total").increment(1);
                Call::TimedOut
            }
        }
    }

    async fn settle_existing(&self, existing: Payment) -> Result<Payment> {
        if existing.status.is_unresolved() { self.resolve(existing).await } else { Ok(existing) }
    }

    async fn mark_unknown(&self, payment: Payment) -> Result<Payment> {
        let change = StatusChange {
            id: payment.id,
            from: payment.status,
            to: PaymentStatus::Unknown,
            transaction_id: None,
            failure_reason: None,
            at: self.clock.now(),
        };
        self.storage.write(move |tx| store::change_status(tx, &change, &[])).await?;
        self.reload(payment.id).await
    }

    async fn fail(&self, payment: Payment, why: &str) -> Result<Payment> {
        let charge = GatewayCharge {
            transaction_id: None,
            state: crate::model::ChargeState::Declined(why.to_owned()),
            amount: payment.amount.amount,
            refunded: 0,
        };
        self.report(payment, &charge).await
    }

    async fn reload(&self, id: PaymentId) -> Result<Payment> {
        self.storage.read(move |tx| store::payment(tx, id)).await?.ok_or(Error::NotFound)
    }

    /// Applies what the gateway says about `payment`'s charge, with its event, once.
    async fn report(&self, payment: Payment, charge: &GatewayCharge) -> Result<Payment> {
        // Usually nothing touched the payment since it was read: skip re-reading it. If something
        // did, the conditional status change refuses and the stored payment decides.
        match self.report_on(payment, charge).await? {
            Ok(done) => Ok(done),
            Err(stale) => {
                let current = self.reload(stale.id).await?;
                match self.report_on(current, charge).await? {
                    Ok(done) => Ok(done),
                    Err(current) => self.reload(current.id).await,
                }
            }
        }
    }

    /// Records `charge` on `current` if its status still is what `current` says; `Err(current)`
    /// when it moved meanwhile.
    async fn report_on(&self, mut current: Payment, charge: &GatewayCharge) -> Result<Result<Payment, Payment>> {
        let to = status_for(&charge.state);
        if !accepts_report(current.status, to) {
            return Ok(Ok(current));
        }
        let reason = match &charge.state {
            crate::model::ChargeState::Declined(why) => Some(why.as_str()),
            _ => None,
        };
        let change = StatusChange {
            id: current.id,
            from: current.status,
            to,
            transaction_id: charge.transaction_id.clone(),
            failure_reason: reason.map(str::to_owned),
            at: self.clock.now(),
        };
        let event = match to {
            PaymentStatus::Captured => Some(PendingEvent::of(&PaymentSucceeded {
                payment_id: current.id,
                reference: current.reference.clone(),
                amount: current.amount,
                gateway: current.gateway.clone(),
            })),
            PaymentStatus::Failed => Some(PendingEvent::of(&PaymentFailed {
                payment_id: current.id,
                reference: current.reference.clone(),
                reason: reason.unwrap_or_default().to_owned(),
            })),
            _ => None,
        };
        let events: Vec<PendingEvent> =
            event.transpose().map_err(|e| Error::Event(e.to_string()))?.into_iter().collect();
        let at = change.at;
        if !self.storage.write(move |tx| store::change_status(tx, &change, &events)).await? {
            return Ok(Err(current));
        }
        match to {
            PaymentStatus::Captured => metrics::counter!("payments_captured_total").increment(1),
            PaymentStatus::Failed => metrics::counter!("payments_failed_total").increment(1),
            _ => {}
        }
        current.status = to;
        current.transaction_id = charge.transaction_id.clone().or(current.transaction_id);
        current.failure_reason = reason.map(str::to_owned);
        current.updated_at = at;
        Ok(Ok(current))
    }

    /// Asks the payment's gateway what became of an unresolved charge and records the answer. A
    /// pending charge the gateway never saw, whose call began longer ago than a call may last,
    /// was abandoned (its sender died before calling) and is sent again.
    pub async fn resolve(&self, payment: Payment) -> Result<Payment> {
        if !payment.status.is_unresolved() {
            return Ok(payment);
        }
        let gateway = self.gateway(&payment.gateway)?;
        match tokio::time::timeout(self.timeout, gateway.lookup(&payment.idempotency_key)).await {
            Ok(Ok(Some(charge))) => self.report(payment, &charge).await,
            Ok(Ok(None)) if payment.status == PaymentStatus::Pending => self.charge_abandoned(payment).await,
            // Unknown: the call timed out, and the gateway may yet show a charge; or the gateway
            // cannot say now. It stays unresolved and is asked again.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => Ok(payment),
        }
    }

    /// Sends a pending charge again if its last call began before the longest a call lasts
    /// (`timeout`, plus `RESOLVE_AFTER` for the recording around it): its sender died before
    /// the gateway saw it. It goes to the gateway it was last sent to, with the same
    /// idempotency key, so a first call that did arrive after all is answered, not repeated.
    async fn charge_abandoned(&self, payment: Payment) -> Result<Payment> {
        let now = self.clock.now();
        let patience = chrono::Duration::from_std(self.timeout + RESOLVE_AFTER).expect("timeouts are small");
        // Taken by one resolver at a time: the worker and a client's retry may both find it.
        let id = payment.id;
        let Some(token) = self.storage.write(move |tx| store::take_abandoned(tx, id, now - patience, now)).await?
        else {
            return Ok(payment);
        };
        let Some(token) = token else {
            tracing::warn!(payment = %payment.id, "an abandoned charge has no token to send again; left pending");
            return Ok(payment);
        };
        tracing::warn!(payment = %payment.id, gateway = %payment.gateway, "sending an abandoned charge again");
        metrics::counter!("payments_abandoned_resent_total").increment(1);
        let gateway = self.gateway(&payment.gateway)?;
        let charge = ChargeRequest {
            idempotency_key: &payment.idempotency_key,
            reference: &payment.reference,
            amount: payment.amount,
            token: &token,
        };
        match self.call(gateway, &charge).await {
            Call::Answered(result) => self.report(payment, &result).await,
            Call::Rejected(why) => self.fail(payment, &why).await,
            Call::TimedOut => self.mark_unknown(payment).await,
            // Still pending: sent again once another call's time has passed.
            Call::Unavailable(_) => self.reload(payment.id).await,
        }
    }

    /// The order gave up on this payment (its hold expired): an unresolved payment is asked
    /// once more and otherwise marked failed. A success arriving later is still recorded (and
    /// the order service refunds it).
    pub async fn give_up(&self, reference: &str) -> Result<Option<Payment>> {
        let Some(payment) = self.payment_for(reference).await? else { return Ok(None) };
        let payment = self.resolve(payment).await?;
        if !payment.status.is_unresolved() {
            return Ok(Some(payment));
        }
        self.fail(payment, "abandoned: no answer from the gateway before the checkout expired").await.map(Some)
    }

    /// Refunds `amount` (everything left when `None`) of `reference`'s payment. A retry with the
    /// same `key` is the same refund.
    pub async fn refund(&self, reference: &str, amount: Option<i64>, reason: &str, key: &str) -> Result<Payment> {
        let payment = self.payment_for(reference).await?.ok_or(Error::NotFound)?;
        let known = key.to_owned();
        if self.storage.read(move |tx| store::refund_exists(tx, &known)).await? {
            return Ok(payment);
        }
        let amount = amount.unwrap_or(payment.amount.amount - payment.refunded);
        let status = refund_outcome(&payment, amount)?;
        let transaction_id = payment.transaction_id.clone().ok_or(RefundRejection::NotCaptured("without a charge"))?;
        let gateway = self.gateway(&payment.gateway)?;
        let money = Money::new(amount, payment.amount.currency);
        let gateway_refund_id =
            match tokio::time::timeout(self.timeout, gateway.refund(&transaction_id, money, key)).await {
                Ok(Ok(id)) => id,
                Ok(Err(err)) => return Err(Error::Gateway(err.to_string())),
                Err(_) => return Err(Error::Gateway("the refund timed out; retry with the same key".into())),
            };
        let now = self.clock.now();
        let record = RefundRecord {
            id: RefundId::new(),
            payment_id: payment.id,
            idempotency_key: key.to_owned(),
            amount,
            reason: reason.to_owned(),
            gateway_refund_id,
            at: now,
        };
        let event = PendingEvent::of(&PaymentRefunded {
            payment_id: payment.id,
            reference: payment.reference.clone(),
            amount: money,
            refunded_total: payment.refunded + amount,
            reason: reason.to_owned(),
        })
        .map_err(|e| Error::Event(e.to_string()))?;
        let added = self
            .storage
            .write(move |tx| -> Result<bool> {
                store::insert_refund(tx, &record)?;
                if !store::add_refunded(tx, record.payment_id, amount, status, now)? {
                    // Nothing of it stays: the insert above is rolled back with the refusal.
                    return Err(RefundRejection::TooMuch { remaining: 0 }.into());
                }
                emporium_kernel::events::append_to(tx, &[event])?;
                Ok(true)
            })
            .await;
        match added {
            // The same refund recorded concurrently.
            Err(Error::Store(err)) if err.is_unique_violation() => return self.reload(payment.id).await,
            other => other?,
        };
        metrics::counter!("payments_refunds_total").increment(1);
        self.reload(payment.id).await
    }

    /// A gateway's callback: signature checked, applied once however often it is delivered.
    pub async fn handle_webhook(&self, gateway: &str, headers: &HeaderMap, body: &[u8]) -> Result<Option<Payment>> {
        let gw = self.gateway(gateway)?;
        let event = gw
            .verify_webhook(headers, body, self.clock.now().timestamp())
            .map_err(|e| Error::Webhook(e.to_string()))?;
        let (key, name, event_id, now) =
            (event.idempotency_key.clone(), gateway.to_owned(), event.id.clone(), self.clock.now());
        let seen = self
            .storage
            .write(move |tx| -> Result<Option<(Payment, bool)>> {
                let Some(payment) = store::payment_by_key(tx, &key)? else { return Ok(None) };
                let first = store::first_webhook(tx, &name, &event_id, now)?;
                Ok(Some((payment, first)))
            })
            .await?;
        let Some((payment, first)) = seen else {
            tracing::warn!(gateway, "webhook for a payment we do not know; ignored");
            return Ok(None);
        };
        if !first {
            return Ok(Some(payment));
        }
        // Recorded before it is applied: if the process dies in between, the payment stays
        // unresolved and the worker's lookup at the gateway applies the same answer.
        self.report(payment, &event.charge).await.map(Some)
    }

    /// Compares every payment with its gateway's books. With `repair`, unresolved payments take
    /// the gateway's answer and charges left at a gateway that was given up on (fallback after
    /// an ambiguous failure) are refunded there.
    pub async fn reconcile(&self, repair: bool) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let mut after = None;
        loop {
            let batch = self.storage.read(move |tx| store::payments_after(tx, after, 200)).await?;
            let Some(last) = batch.last() else { return Ok(report) };
            after = Some(last.id);
            for payment in batch {
                report.checked += 1;
                self.reconcile_one(payment, repair, &mut report.findings).await?;
            }
        }
    }

    async fn reconcile_one(&self, payment: Payment, repair: bool, findings: &mut Vec<Finding>) -> Result<()> {
        let mut finding = |gateway: &str, problem: String, repaired: Option<String>| {
            findings.push(Finding {
                payment_id: payment.id,
                reference: payment.reference.clone(),
                gateway: gateway.to_owned(),
                problem,
                repair: repaired,
            })
        };
        for name in &payment.attempted {
            let gateway = self.gateway(name)?;
            let books = match gateway.lookup(&payment.idempotency_key).await {
                Ok(books) => books,
                Err(err) => {
                    finding(name, format!("could not ask the gateway: {err}"), None);
                    continue;
                }
            };
            let holder = *name == payment.gateway;
            match (books, holder) {
                (None, true) if payment.status.was_charged() => {
                    finding(name, "charged here but the gateway has no such charge".into(), None);
                }
                (None, _) => {}
                (Some(charge), false) if charge.state == crate::model::ChargeState::Succeeded => {
                    let left = charge.amount - charge.refunded;
                    let repaired = if repair && left > 0 {
                        let tx_id = charge.transaction_id.clone().unwrap_or_default();
                        let key = format!("reconcile:{}:{name}", payment.id);
                        let money = Money::new(left, payment.amount.currency);
                        match gateway.refund(&tx_id, money, &key).await {
                            Ok(_) => Some(format!("refunded {left} at {name}")),
                            Err(err) => Some(format!("refund failed: {err}")),
                        }
                    } else {
                        None
                    };
                    if left > 0 {
                        finding(name, format!("a stray charge of {left} at a gateway given up on"), repaired);
                    }
                }
                (Some(_), false) => {}
                (Some(charge), true) => {
                    let theirs = status_for(&charge.state);
                    if payment.status.is_unresolved() && theirs != payment.status {
                        let repaired = if repair {
                            let resolved = self.report(payment.clone(), &charge).await?;
                            Some(format!("now {}", resolved.status.as_str()))
                        } else {
                            None
                        };
                        finding(name, format!("unresolved here, {} at the gateway", theirs.as_str()), repaired);
                    } else if payment.status.was_charged() != (theirs == PaymentStatus::Captured) {
                        finding(
                            name,
                            format!("{} here, {} at the gateway", payment.status.as_str(), theirs.as_str()),
                            None,
                        );
                    } else if payment.refunded != charge.refunded {
                        finding(
                            name,
                            format!("refunded {} here, {} at the gateway", payment.refunded, charge.refunded),
                            None,
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Background work: applies the sandbox's webhooks as they come and asks gateways about
    /// payments left unresolved (a lost webhook, a timed-out call), until shutdown.
    pub async fn run_worker(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut deliveries = self.deliveries.lock().expect("not poisoned").take();
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(delivery) = async { match deliveries.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    if let Err(err) = self.handle_webhook(delivery.gateway, &delivery.headers, &delivery.body).await {
                        tracing::warn!(error = %err, "applying a sandbox webhook failed; the worker will ask the gateway");
                    }
                }
                _ = tick.tick() => {
                    if let Err(err) = self.resolve_stale().await {
                        tracing::warn!(error = %err, "resolving payments failed; will retry");
                    }
                }
            }
        }
    }

    /// Asks the gateways about every payment unresolved for a while.
    pub async fn resolve_stale(&self) -> Result<usize> {
        let before = self.clock.now() - chrono::Duration::from_std(RESOLVE_AFTER).expect("small");
        let mut resolved = 0;
        for payment in self.storage.read(move |tx| store::unresolved(tx, before, 100)).await? {
            if !self.resolve(payment).await?.status.is_unresolved() {
                resolved += 1;
            }
        }
        Ok(resolved)
    }
}
