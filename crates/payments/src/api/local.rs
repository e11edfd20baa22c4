//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{PayRequest, Payment, PaymentsApi, PaymentsError, RefundRequest};
use crate::service::{self, PaymentsService};

#[async_trait::async_trait]
impl PaymentsApi for PaymentsService {
    async fn check_token(&self, token: &str) -> Result<(), PaymentsError> {
        Ok(PaymentsService::check_token(self, token)?)
    }

    async fn pay(&self, req: PayRequest) -> Result<Payment, PaymentsError> {
        Ok(PaymentsService::pay(self, req).await?)
    }

    async fn current(&self, reference: &str) -> Result<Option<Payment>, PaymentsError> {
        match self.payment_for(reference).await? {
            Some(p) => Ok(Some(self.resolve(p).await?)),
            None => Ok(None),
        }
    }

    async fn give_up(&self, reference: &str) -> Result<Option<Payment>, PaymentsError> {
        Ok(PaymentsService::give_up(self, reference).await?)
    }

    async fn refund(&self, req: RefundRequest) -> Result<Payment, PaymentsError> {
        Ok(PaymentsService::refund(self, &req.reference, req.amount, &req.reason, &req.key).await?)
    }
}

impl From<service::Error> for PaymentsError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::Invalid(fields) => PaymentsError::Invalid { fields },
            E::NotFound => PaymentsError::NotFound,
            E::Refund(rejection) => PaymentsError::RefundRejected { reason: rejection.to_string() },
            E::UnknownGateway(_) | E::Gateway(_) | E::Webhook(_) => {
                PaymentsError::Unavailable { message: err.to_string() }
            }
            E::Store(_) | E::Event(_) => {
                PaymentsError::Unavailable { message: emporium_kernel::error::internal_failure(&err) }
            }
        }
    }
}
