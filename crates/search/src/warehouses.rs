//! The warehouses search knows of, from the inventory's `WarehouseChanged` events, kept in a
//! small JSON file beside the index. The file is written before the event's position is
//! acknowledged, so after a crash it is never behind the index's checkpoint.

use emporium_inventory::api::Warehouse;
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::WarehouseId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

pub struct WarehouseDirectory {
    path: PathBuf,
    warehouses: RwLock<HashMap<WarehouseId, Warehouse>>,
}

impl WarehouseDirectory {
    /// Loads the directory file, or starts empty (the events fill it).
    pub fn open(path: PathBuf) -> WarehouseDirectory {
        let warehouses = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<Warehouse>>(&bytes).ok())
            .map(|list| list.into_iter().map(|w| (w.id, w)).collect())
            .unwrap_or_default();
        WarehouseDirectory { path, warehouses: RwLock::new(warehouses) }
    }

    pub fn upsert(&self, warehouse: Warehouse) -> anyhow::Result<()> {
        let snapshot: Vec<Warehouse> = {
            let mut map = self.warehouses.write().expect("warehouse lock");
            map.insert(warehouse.id, warehouse);
            map.values().cloned().collect()
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&snapshot)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// Warehouses that deliver to `point`.
    pub fn covering(&self, point: GeoPoint) -> Vec<WarehouseId> {
        let to = Destination { point: Some(point), postal_code: None };
        let map = self.warehouses.read().expect("warehouse lock");
        map.values().filter(|w| w.coverage(&to).covers).map(|w| w.id).collect()
    }
}

/// A product is deliverable when a warehouse covering the location holds it (which of the
/// nearest ones ships, and when, is `/delivery/availability`'s answer).
pub fn deliverable(covering: &[WarehouseId], holding: &[WarehouseId]) -> bool {
    covering.iter().any(|w| holding.contains(w))
}
