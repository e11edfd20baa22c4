//! Events the delivery service emits. The order service records the partner on its warehouse
//! order from `DeliveryPartnerAssigned`, whether the job was assigned at once or after waiting.

use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::{DeliveryPartnerId, OrderId, WarehouseOrderId};
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "delivery";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPartnerAssigned {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub partner_id: DeliveryPartnerId,
}

impl DomainEvent for DeliveryPartnerAssigned {
    const TYPE: &'static str = "DeliveryPartnerAssigned";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}
