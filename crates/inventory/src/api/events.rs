//! Events the inventory emits: the seeds' "inventory → Kafka → search feed". Search keeps
//! `in_stock`, `stock_left` and deliverability from them; product pages and carts read the
//! aggregate through the client instead.

use crate::model::Warehouse;
use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::{ProductId, WarehouseId};
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "inventory";

/// A product's stock after a movement: the aggregate plus where the available units are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockChanged {
    pub product_id: ProductId,
    pub available: i64,
    pub on_hand: i64,
    /// Warehouses holding available units of the product, with how many.
    pub warehouses: Vec<WarehouseStock>,
    /// The movement that caused it (`intake`, `reserve`, …).
    pub movement: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub warehouse_id: WarehouseId,
    pub available: i64,
}

impl DomainEvent for StockChanged {
    const TYPE: &'static str = "StockChanged";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

/// A warehouse was created or changed (location, radius, postal prefixes, active).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarehouseChanged(pub Warehouse);

impl DomainEvent for WarehouseChanged {
    const TYPE: &'static str = "WarehouseChanged";
    fn aggregate_id(&self) -> String {
        self.0.id.to_string()
    }
}
