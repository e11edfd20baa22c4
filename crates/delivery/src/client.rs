//! How other services reach delivery (the order service requests and finishes jobs).

use crate::model::Job;
use crate::service::{DeliveryError, DeliveryService, JobRequest};
use emporium_kernel::ids::WarehouseOrderId;
use std::sync::Arc;

#[derive(Clone)]
pub enum DeliveryClient {
    Local(Arc<DeliveryService>),
}

impl DeliveryClient {
    pub fn local(service: Arc<DeliveryService>) -> Self {
        DeliveryClient::Local(service)
    }

    /// Have a warehouse order carried (idempotent per warehouse order).
    pub async fn request(&self, req: JobRequest) -> Result<Job, DeliveryError> {
        match self {
            DeliveryClient::Local(svc) => svc.request(req).await,
        }
    }

    /// Many warehouse orders at once (one transaction; idempotent per warehouse order).
    pub async fn request_all(&self, requests: Vec<JobRequest>) -> Result<Vec<Job>, DeliveryError> {
        match self {
            DeliveryClient::Local(svc) => svc.request_all(requests).await,
        }
    }

    /// The warehouse order was delivered or cancelled (idempotent).
    pub async fn finish(&self, id: WarehouseOrderId) -> Result<(), DeliveryError> {
        match self {
            DeliveryClient::Local(svc) => svc.finish(id).await,
        }
    }
}
