//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{DeliveryApi, DeliveryError, Job, JobRequest};
use crate::service::{self, DeliveryService};
use emporium_kernel::ids::WarehouseOrderId;

#[async_trait::async_trait]
impl DeliveryApi for DeliveryService {
    async fn request_all(&self, requests: Vec<JobRequest>) -> Result<Vec<Job>, DeliveryError> {
        Ok(DeliveryService::request_all(self, requests).await?)
    }

    async fn finish(&self, id: WarehouseOrderId) -> Result<(), DeliveryError> {
        Ok(DeliveryService::finish(self, id).await?)
    }
}

impl From<service::Error> for DeliveryError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::Invalid(fields) => DeliveryError::Invalid { fields },
            E::PartnerNotFound | E::Dependency(_) | E::PlacesGone => {
                DeliveryError::Unavailable { message: err.to_string() }
            }
            E::Store(_) => DeliveryError::Unavailable { message: emporium_kernel::error::internal_failure(&err) },
        }
    }
}
