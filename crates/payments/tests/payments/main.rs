//! The payments service against real databases (SQLite and a fresh PostgreSQL database per test)
//! and a real local HTTP server speaking the Stripe-style protocol: charges, declines, timeouts
//! resolved by lookup (never by charging again), fallback, signed webhooks, refunds,
//! reconciliation.

use axum::http::{HeaderMap, HeaderValue};
use emporium_kernel::backend_tests;
use emporium_kernel::clock::{self};
use emporium_kernel::config::Secret;
use emporium_kernel::db::Db;
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::testing::{Backend, TestDatabase};
use emporium_payments::api::PayRequest;
use emporium_payments::gateway::Gateway;
use emporium_payments::model::PaymentStatus;
use emporium_payments::sandbox::{Delivery, SandboxGateway};
use emporium_payments::service::Error as PaymentsError;
use emporium_payments::stripe::StripeGateway;
use emporium_payments::stripe_server::StripeServer;
use emporium_payments::{PaymentsService, migrations};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

struct Harness {
    service: Arc<PaymentsService>,
    server: StripeServer,
    db: Db,
    _database: TestDatabase,
}

/// Gateways: the Stripe-style one (against the local server) first, then the sandbox.
async fn harness(backend: Backend, timeout: Duration) -> Harness {
    let database = TestDatabase::create(backend).await;
    let db = database.open(emporium_payments::SERVICE, &migrations()).await;
    let storage = database.storage(emporium_payments::SERVICE, &migrations()).await;
    let server = StripeServer::start().await;
    let stripe =
        StripeGateway::new(&server.url, Secret::new(server.secret_key.clone()), &server.webhook_secret).unwrap();
    let (tx, rx) = mpsc::unbounded_channel::<Delivery>();
    let sandbox = SandboxGateway::new(
        storage.clone(),
        clock::system(),
        b"sandbox-secret".to_vec(),
        Duration::from_millis(50),
        tx,
    );
    let gateways: Vec<Arc<dyn Gateway>> = vec![Arc::new(stripe), Arc::new(sandbox)];
    let service = Arc::new(PaymentsService::new(db.clone(), storage, clock::system(), gateways, timeout, rx));
    Harness { service, server, db, _database: database }
}

fn pay(reference: &str, amount: i64, token: &str) -> PayRequest {
    PayRequest {
        reference: reference.into(),
        idempotency_key: format!("order:{reference}"),
        amount: Money::new(amount, Currency::EUR),
        token: token.into(),
    }
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    emporium_kernel::sql!(db, |c| sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await).unwrap()
}

backend_tests! {
    async fn charges_declines_and_retries_never_charge_twice(backend: Backend) {
        let h = harness(backend, Duration::from_secs(5)).await;
        let paid = h.service.pay(pay("o1", 2_500, "tok_visa")).await.unwrap();
        assert_eq!(paid.status, PaymentStatus::Captured);
        assert_eq!(paid.gateway, "stripe");
        assert!(paid.transaction_id.as_deref().unwrap().starts_with("pi_"));
        // The same key again, even concurrently: the same payment, no second charge.
        let retries: Vec<_> = (0..10).map(|_| {
            let svc = h.service.clone();
            tokio::spawn(async move { svc.pay(pay("o1", 2_500, "tok_visa")).await.unwrap() })
        }).collect();
        for retry in retries {
            assert_eq!(retry.await.unwrap().id, paid.id);
        }
        assert_eq!(h.server.charges(), 1);

        let declined = h.service.pay(pay("o2", 900, "tok_decline")).await.unwrap();
        assert_eq!(declined.status, PaymentStatus::Failed);
        assert_eq!(declined.failure_reason.as_deref(), Some("Your card was declined."));
        assert_eq!(h.server.charges(), 1, "a decline charges nothing");

        let err = h.service.pay(pay("o3", 0, "tok_visa")).await.unwrap_err();
        assert!(matches!(err, PaymentsError::Invalid(_)));
        let events = emporium_kernel::events::outbox_events(&h.db, 0, 100).await.unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["PaymentSucceeded", "PaymentFailed"]);
    }

    async fn a_timeout_is_unknown_and_resolved_by_asking_not_by_charging_again(backend: Backend) {
        let h = harness(backend, Duration::from_millis(300)).await;
        let unknown = h.service.pay(pay("slow", 4_000, "tok_timeout")).await.unwrap();
        assert_eq!(unknown.status, PaymentStatus::Unknown);
        assert_eq!(h.server.charges(), 1, "the gateway did charge; we just never heard");
        // Paying again with the key asks the gateway instead of charging.
        let resolved = h.service.pay(pay("slow", 4_000, "tok_timeout")).await.unwrap();
        assert_eq!(resolved.status, PaymentStatus::Captured);
        assert_eq!(resolved.id, unknown.id);
        assert_eq!(h.server.charges(), 1);
        assert_eq!(count(&h.db, "SELECT count(*) FROM payments").await, 1);
    }

    // A process that died after recording a payment and before calling its gateway left it
    // pending with nothing at the gateway: once a call's time has passed, the worker (or the
    // client's retry with the key) sends it again, once.
    async fn a_charge_whose_sender_died_before_the_gateway_is_sent_again_once(backend: Backend) {
        let h = harness(backend, Duration::from_millis(300)).await;
        let abandoned = |reference: &str, age: chrono::Duration| {
            let (db, reference) = (h.db.clone(), reference.to_owned());
            async move {
                let at = chrono::Utc::now() - age;
                emporium_kernel::sql_exec!(db, |c| sqlx::query(
                    "INSERT INTO payments (id, reference, idempotency_key, amount, currency, gateway, attempted,
                     status, refunded, created_at, updated_at, charge_token)
                     VALUES ($1, $2, $3, 1500, 'EUR', 'stripe', 'stripe', 'pending', 0, $4, $4, 'tok_visa')"
                )
                .bind(emporium_kernel::ids::PaymentId::new())
                .bind(&reference)
                .bind(format!("order:{reference}"))
                .bind(at)
                .execute(c)
                .await)
                .unwrap();
            }
        };
        // Its call may still be under way: left alone, by the worker and by a retry alike.
        abandoned("young", chrono::Duration::zero()).await;
        assert_eq!(h.service.resolve_stale().await.unwrap(), 0);
        let retried = h.service.pay(pay("young", 1_500, "tok_visa")).await.unwrap();
        assert_eq!(retried.status, PaymentStatus::Pending);
        assert_eq!(h.server.charges(), 0);
        assert_eq!(count(&h.db, "SELECT count(*) FROM payments WHERE charge_token IS NOT NULL").await, 1);
        // Out of the way of what follows, however slowly it runs.
        emporium_kernel::sql_exec!(h.db, |c| sqlx::query("DELETE FROM payments WHERE reference = 'young'").execute(c).await)
            .unwrap();

        // Older than a call lasts: the worker sends it, with its key, and records the capture.
        abandoned("dead", chrono::Duration::seconds(10)).await;
        assert_eq!(h.service.resolve_stale().await.unwrap(), 1);
        let paid = h.service.payment_for("dead").await.unwrap().unwrap();
        assert_eq!(paid.status, PaymentStatus::Captured);
        assert_eq!(h.server.charges(), 1);
        assert_eq!(h.service.resolve_stale().await.unwrap(), 0, "resolved once");
        assert_eq!(h.server.charges(), 1);

        // The client's retry finds one too, and answers with the capture at once.
        abandoned("retried", chrono::Duration::seconds(10)).await;
        let retried = h.service.pay(pay("retried", 1_500, "tok_visa")).await.unwrap();
        assert_eq!(retried.status, PaymentStatus::Captured);
        assert_eq!(h.server.charges(), 2);
        let events = emporium_kernel::events::outbox_events(&h.db, 0, 100).await.unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["PaymentSucceeded", "PaymentSucceeded"]);
        assert_eq!(count(&h.db, "SELECT count(*) FROM payments WHERE charge_token IS NOT NULL").await, 0,
            "a resolved payment keeps no token");
    }

    async fn an_unavailable_gateway_falls_back_to_the_next(backend: Backend) {
        let h = harness(backend, Duration::from_secs(5)).await;
        h.server.fail_next(1);
        let paid = h.service.pay(pay("fb", 1_200, "tok_visa")).await.unwrap();
        assert_eq!(paid.status, PaymentStatus::Captured);
        assert_eq!(paid.gateway, "sandbox", "the sandbox took over after the 503");
        assert_eq!(h.server.charges(), 0);
        // Refunds go to the gateway that holds the charge.
        let refunded = h.service.refund("fb", Some(200), "damaged box", "r1").await.unwrap();
        assert_eq!((refunded.status, refunded.refunded), (PaymentStatus::PartiallyRefunded, 200));
        let report = h.service.reconcile(false).await.unwrap();
        assert_eq!(report.checked, 1);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }

    async fn refunds_are_keyed_and_bounded(backend: Backend) {
        let h = harness(backend, Duration::from_secs(5)).await;
        h.service.pay(pay("r", 1_000, "tok_visa")).await.unwrap();
        let part = h.service.refund("r", Some(300), "late", "k1").await.unwrap();
        assert_eq!((part.status, part.refunded), (PaymentStatus::PartiallyRefunded, 300));
        let again = h.service.refund("r", Some(300), "late", "k1").await.unwrap();
        assert_eq!(again.refunded, 300, "the same key is the same refund");
        assert_eq!(h.server.refunds(), 1);
        let too_much = h.service.refund("r", Some(701), "x", "k2").await.unwrap_err();
        assert!(matches!(too_much, PaymentsError::Refund(_)), "{too_much:?}");
        let rest = h.service.refund("r", None, "cancelled", "k3").await.unwrap();
        assert_eq!((rest.status, rest.refunded), (PaymentStatus::Refunded, 1_000));
        let intent = h.server.intent_by_key("order:r").unwrap();
        assert_eq!(intent["amount_refunded"], 1_000, "the gateway's books agree");
        assert!(h.service.reconcile(false).await.unwrap().findings.is_empty());
    }

    async fn webhooks_are_verified_and_applied_once(backend: Backend) {
        let h = harness(backend, Duration::from_secs(5)).await;
        let pending = h.service.pay(pay("async", 700, "tok_async")).await.unwrap();
        assert_eq!(pending.status, PaymentStatus::Pending);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut intent = h.server.intent_by_key("order:async").unwrap();
        intent["status"] = "succeeded".into();
        let (signature, body) = h.server.signed_event(&intent, "evt_1");
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", HeaderValue::from_str(&signature).unwrap());

        // A forged or altered delivery is refused and changes nothing.
        let mut forged = HeaderMap::new();
        forged.insert("stripe-signature", HeaderValue::from_static("t=1,v1=00"));
        assert!(matches!(h.service.handle_webhook("stripe", &forged, &body).await, Err(PaymentsError::Webhook(_))));
        let mut altered = body.clone();
        altered.extend_from_slice(b" ");
        assert!(matches!(h.service.handle_webhook("stripe", &headers, &altered).await, Err(PaymentsError::Webhook(_))));
        assert_eq!(h.service.payment(pending.id).await.unwrap().status, PaymentStatus::Pending);

        for _ in 0..3 {
            let payment = h.service.handle_webhook("stripe", &headers, &body).await.unwrap().unwrap();
            assert_eq!(payment.status, PaymentStatus::Captured);
        }
        assert_eq!(count(&h.db, "SELECT count(*) FROM webhook_events").await, 1);
        let succeeded = emporium_kernel::events::outbox_events(&h.db, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "PaymentSucceeded")
            .count();
        assert_eq!(succeeded, 1, "duplicate deliveries emit nothing more");
    }

    async fn reconciliation_resolves_unknown_payments_and_refunds_strays(backend: Backend) {
        let h = harness(backend, Duration::from_millis(300)).await;
        let unknown = h.service.pay(pay("u", 1_500, "tok_timeout")).await.unwrap();
        assert_eq!(unknown.status, PaymentStatus::Unknown);
        let report = h.service.reconcile(false).await.unwrap();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].repair, None, "reporting changes nothing");
        let report = h.service.reconcile(true).await.unwrap();
        assert_eq!(report.findings[0].repair.as_deref(), Some("now captured"));
        assert_eq!(h.service.payment(unknown.id).await.unwrap().status, PaymentStatus::Captured);
        assert!(h.service.reconcile(false).await.unwrap().findings.is_empty());
        assert_eq!(h.server.charges(), 1);
    }
}
