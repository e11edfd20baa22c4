//! How other services reach payments (the order service pays, resolves, gives up, refunds).

use crate::model::Payment;
use crate::service::{PayRequest, PaymentsError, PaymentsService};
use std::sync::Arc;

#[derive(Clone)]
pub enum PaymentsClient {
    Local(Arc<PaymentsService>),
}

impl PaymentsClient {
    pub fn local(service: Arc<PaymentsService>) -> Self {
        PaymentsClient::Local(service)
    }

    /// Whether `token` may be charged (checked before a checkout holds anything).
    pub fn check_token(&self, token: &str) -> Result<(), PaymentsError> {
        match self {
            PaymentsClient::Local(svc) => svc.check_token(token),
        }
    }

    pub async fn pay(&self, req: PayRequest) -> Result<Payment, PaymentsError> {
        match self {
            PaymentsClient::Local(svc) => svc.pay(req).await,
        }
    }

    /// The latest payment for `reference`, asking its gateway first when it is unresolved.
    pub async fn current(&self, reference: &str) -> Result<Option<Payment>, PaymentsError> {
        match self {
            PaymentsClient::Local(svc) => match svc.payment_for(reference).await? {
                Some(p) => svc.resolve(p).await.map(Some),
                None => Ok(None),
            },
        }
    }

    pub async fn give_up(&self, reference: &str) -> Result<Option<Payment>, PaymentsError> {
        match self {
            PaymentsClient::Local(svc) => svc.give_up(reference).await,
        }
    }

    pub async fn refund(
        &self,
        reference: &str,
        amount: Option<i64>,
        reason: &str,
        key: &str,
    ) -> Result<Payment, PaymentsError> {
        match self {
            PaymentsClient::Local(svc) => svc.refund(reference, amount, reason, key).await,
        }
    }
}
