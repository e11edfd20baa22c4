//! Delivery partners, jobs and the choice of a partner for a job. Pure: no I/O.

use chrono::{DateTime, Utc};
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::geo::{Destination, coverage};
use emporium_kernel::ids::{DeliveryPartnerId, OrderId, WarehouseId, WarehouseOrderId};
use serde::{Deserialize, Serialize};

/// A carrier: where it works, how many deliveries it can have in hand, the largest order it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Partner {
    pub id: DeliveryPartnerId,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Its service area: within `radius_km` of `base`…
    pub base: GeoPoint,
    pub radius_km: f64,
    /// …or postal codes starting with one of these (drop-offs only: pickups are warehouses,
    /// which have coordinates).
    pub postal_prefixes: Vec<String>,
    /// Most jobs in hand at once.
    pub capacity: i64,
    /// Most units in one job (a bike courier takes less than a van).
    pub max_units: i64,
    pub active_jobs: i64,
    /// Inactive partners keep their jobs but get no new ones.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// No partner serving it has room yet; assigned as soon as one has.
    Waiting,
    Assigned,
    /// Delivered or cancelled: the partner's place is free again.
    Finished,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Assigned => "assigned",
            JobStatus::Finished => "finished",
        }
    }

    pub fn parse(raw: &str) -> Option<JobStatus> {
        match raw {
            "waiting" => Some(JobStatus::Waiting),
            "assigned" => Some(JobStatus::Assigned),
            "finished" => Some(JobStatus::Finished),
            _ => None,
        }
    }
}

/// One warehouse order to carry from its warehouse to the shopper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub pickup: GeoPoint,
    pub drop_off: Destination,
    pub units: i64,
    pub status: JobStatus,
    pub partner_id: Option<DeliveryPartnerId>,
    pub created_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Partner {
    /// Whether this partner may take `job` if it has room: active, the job within the size it
    /// takes, its area taking in both the warehouse and the address. Returns the distance from
    /// its base to the pickup.
    pub fn serves(&self, job: &Job) -> Option<f64> {
        if !self.active || job.units > self.max_units {
            return None;
        }
        let pickup = Destination { point: Some(job.pickup), postal_code: None };
        let at_pickup = coverage(self.base, self.radius_km, &self.postal_prefixes, &pickup);
        let at_drop_off = coverage(self.base, self.radius_km, &self.postal_prefixes, &job.drop_off);
        (at_pickup.covers && at_drop_off.covers).then(|| at_pickup.distance_km.unwrap_or(0.0))
    }

    pub fn has_room(&self) -> bool {
        self.active_jobs < self.capacity
    }
}

/// The partners that may take `job` now, best first: the least busy for its capacity, then the
/// nearest to the pickup, then the oldest. The first whose place is still free when the
/// assignment is written gets the job (another assignment may take the last place meanwhile).
pub fn candidates(partners: &[Partner], job: &Job) -> Vec<DeliveryPartnerId> {
    let mut ranked: Vec<(f64, f64, DeliveryPartnerId)> = partners
        .iter()
        .filter(|p| p.has_room())
        .filter_map(|p| p.serves(job).map(|distance| (p.active_jobs as f64 / p.capacity as f64, distance, p.id)))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked.into_iter().map(|(_, _, id)| id).collect()
}

/// Partners for a burst of new jobs, in order: each job goes to its best candidate given the
/// jobs before it (their places counted as taken), or to none. `partners` as read at the start.
pub fn plan(partners: &[Partner], jobs: &[Job]) -> Vec<Option<DeliveryPartnerId>> {
    let mut partners = partners.to_vec();
    jobs.iter()
        .map(|job| {
            let chosen = candidates(&partners, job).first().copied();
            if let Some(p) = chosen.and_then(|id| partners.iter_mut().find(|p| p.id == id)) {
                p.active_jobs += 1;
            }
            chosen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).unwrap()
    }

    fn partner(base: GeoPoint, radius_km: f64, capacity: i64, active_jobs: i64) -> Partner {
        Partner {
            id: DeliveryPartnerId::new(),
            name: "p".into(),
            email: None,
            phone: None,
            base,
            radius_km,
            postal_prefixes: Vec::new(),
            capacity,
            max_units: 10,
            active_jobs,
            active: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn job(pickup: GeoPoint, drop_off: Destination, units: i64) -> Job {
        Job {
            warehouse_order_id: WarehouseOrderId::new(),
            order_id: OrderId::new(),
            warehouse_id: WarehouseId::new(),
            pickup,
            drop_off,
            units,
            status: JobStatus::Waiting,
            partner_id: None,
            created_at: Utc::now(),
            assigned_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn a_partner_serves_jobs_whose_pickup_and_address_are_both_in_its_area() {
        let (berlin, potsdam, munich) = (point(52.52, 13.40), point(52.39, 13.06), point(48.14, 11.58));
        let courier = partner(berlin, 50.0, 5, 0);
        let near = Destination { point: Some(potsdam), postal_code: None };
        assert!(courier.serves(&job(berlin, near.clone(), 2)).is_some());
        assert!(courier.serves(&job(munich, near.clone(), 2)).is_none(), "pickup out of its area");
        let far = Destination { point: Some(munich), postal_code: Some("80331".into()) };
        assert!(courier.serves(&job(berlin, far.clone(), 2)).is_none(), "address out of its area");
        let by_code = Partner { postal_prefixes: vec!["80".into()], ..courier.clone() };
        assert!(by_code.serves(&job(berlin, far, 2)).is_some(), "a postal prefix covers the address");
        assert!(courier.serves(&job(berlin, near.clone(), 11)).is_none(), "larger than it takes");
        let resting = Partner { active: false, ..courier };
        assert!(resting.serves(&job(berlin, near, 1)).is_none(), "inactive");
    }

    #[test]
    fn the_least_busy_then_the_nearest_partner_comes_first_and_full_ones_not_at_all() {
        let (berlin, potsdam) = (point(52.52, 13.40), point(52.39, 13.06));
        let to = Destination { point: Some(berlin), postal_code: None };
        let idle_far = partner(potsdam, 100.0, 4, 0);
        let idle_near = partner(berlin, 100.0, 4, 0);
        let half_busy = partner(berlin, 100.0, 4, 2);
        let full = partner(berlin, 100.0, 2, 2);
        let partners = [half_busy.clone(), full, idle_far.clone(), idle_near.clone()];
        assert_eq!(candidates(&partners, &job(berlin, to.clone(), 1)), [idle_near.id, idle_far.id, half_busy.id]);
        assert!(candidates(&[], &job(berlin, to, 1)).is_empty());
    }

    #[test]
    fn a_burst_spreads_over_the_partners_as_their_places_fill() {
        let berlin = point(52.52, 13.40);
        let to = Destination { point: Some(berlin), postal_code: None };
        let a = partner(berlin, 50.0, 2, 0);
        let b = partner(berlin, 50.0, 1, 0);
        let older = a.id.min(b.id);
        let jobs: Vec<Job> = (0..4).map(|_| job(berlin, to.clone(), 1)).collect();
        let planned = plan(&[a.clone(), b.clone()], &jobs);
        assert_eq!(planned.iter().filter(|p| **p == Some(a.id)).count(), 2, "a takes its 2 places");
        assert_eq!(planned.iter().filter(|p| **p == Some(b.id)).count(), 1, "b its 1");
        assert_eq!(planned[3], None, "the fourth waits");
        assert_eq!(planned[0], Some(older), "ties go to the older partner");
        assert_ne!(planned[0], planned[1], "the second job goes to the one now less busy");
    }

    #[test]
    fn job_statuses_round_trip() {
        for status in [JobStatus::Waiting, JobStatus::Assigned, JobStatus::Finished] {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("lost"), None);
    }
}
