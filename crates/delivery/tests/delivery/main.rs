//! The delivery service against real databases (SQLite, and a fresh PostgreSQL database per
//! test), with a real inventory service for the warehouses: capacity holds under concurrent
//! requests, freed places go to the oldest waiting jobs, and repeated requests and finishes
//! change nothing.

use chrono::Utc;
use emporium_delivery::api::JobRequest;
use emporium_delivery::model::JobStatus;
use emporium_delivery::service::{NewPartner, PartnerPatch};
use emporium_delivery::{DeliveryService, migrations};
use emporium_inventory::InventoryService;
use emporium_inventory::model::NearestThenMostStock;
use emporium_inventory::service::NewWarehouse;
use emporium_kernel::backend_tests;
use emporium_kernel::clock;
use emporium_kernel::db::Db;
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{DeliveryPartnerId, OrderId, WarehouseId, WarehouseOrderId};
use emporium_kernel::testing::{Backend, TestDatabase};
use std::sync::Arc;

struct Harness {
    service: Arc<DeliveryService>,
    db: Db,
    warehouse: WarehouseId,
    _database: TestDatabase,
}

/// One warehouse in Berlin; no partners yet.
async fn harness(backend: Backend) -> Harness {
    let database = TestDatabase::create(backend).await;
    let inventory_db = database.open(emporium_inventory::SERVICE, &emporium_inventory::migrations()).await;
    let inventory = Arc::new(InventoryService::new(
        inventory_db,
        clock::system(),
        None,
        Arc::new(NearestThenMostStock),
        std::time::Duration::from_secs(600),
    ));
    let warehouse = inventory
        .create_warehouse(NewWarehouse {
            name: "Berlin".into(),
            address: "Berlin 1".into(),
            location: berlin(),
            delivery_radius_km: 50.0,
            postal_prefixes: vec![],
        })
        .await
        .unwrap()
        .id;
    let db = database.open(emporium_delivery::SERVICE, &migrations()).await;
    let storage = database.storage(emporium_delivery::SERVICE, &migrations()).await;
    let service = Arc::new(DeliveryService::new(db.clone(), storage, clock::system(), inventory));
    Harness { service, db, warehouse, _database: database }
}

fn berlin() -> GeoPoint {
    GeoPoint::new(52.52, 13.405).unwrap()
}

async fn partner(svc: &DeliveryService, name: &str, capacity: i64) -> DeliveryPartnerId {
    svc.create_partner(NewPartner {
        name: name.into(),
        email: None,
        phone: None,
        base: berlin(),
        radius_km: 30.0,
        postal_prefixes: vec![],
        capacity,
        max_units: 10,
    })
    .await
    .unwrap()
    .id
}

fn request(warehouse: WarehouseId, id: WarehouseOrderId) -> JobRequest {
    JobRequest {
        warehouse_order_id: id,
        order_id: OrderId::new(),
        warehouse_id: warehouse,
        drop_off: Destination { point: Some(GeoPoint::new(52.50, 13.45).unwrap()), postal_code: Some("10999".into()) },
        units: 2,
    }
}

async fn assigned_events(db: &Db) -> i64 {
    emporium_kernel::sql!(db, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'DeliveryPartnerAssigned'"
    )
    .fetch_one(c)
    .await)
    .unwrap()
}

backend_tests! {
    async fn capacity_holds_under_concurrent_requests_and_freed_places_go_to_the_oldest(backend: Backend) {
        let h = harness(backend).await;
        let (a, b) = (partner(&h.service, "A", 2).await, partner(&h.service, "B", 1).await);
        let ids: Vec<WarehouseOrderId> = (0..12).map(|_| WarehouseOrderId::new()).collect();
        let mut tasks = Vec::new();
        for id in &ids {
            let (svc, req) = (h.service.clone(), request(h.warehouse, *id));
            tasks.push(tokio::spawn(async move { svc.request(req).await.unwrap() }));
        }
        let mut jobs = Vec::new();
        for task in tasks {
            jobs.push(task.await.unwrap());
        }
        let held = |partner| jobs.iter().filter(|j| j.partner_id == Some(partner)).count();
        assert_eq!((held(a), held(b)), (2, 1), "no partner beyond its capacity");
        assert_eq!(jobs.iter().filter(|j| j.status == JobStatus::Waiting).count(), 9);
        assert_eq!(assigned_events(&h.db).await, 3, "one event per assignment");
        let partners = h.service.partners().await.unwrap();
        assert_eq!(partners.iter().map(|p| p.active_jobs).sum::<i64>(), 3);

        // Asked again, a job is the same job.
        let again = h.service.request(request(h.warehouse, ids[0])).await.unwrap();
        assert_eq!(again.status, jobs[0].status);
        assert_eq!(again.partner_id, jobs[0].partner_id);
        assert_eq!(h.service.jobs(None, None).await.unwrap().len(), 12);

        // The three in hand finish at once: three places free, the three oldest waiting take them.
        let mut waiting = h.service.jobs(None, Some(JobStatus::Waiting)).await.unwrap();
        waiting.truncate(3);
        let in_hand: Vec<WarehouseOrderId> =
            jobs.iter().filter(|j| j.status == JobStatus::Assigned).map(|j| j.warehouse_order_id).collect();
        let mut tasks = Vec::new();
        for id in in_hand.clone() {
            let svc = h.service.clone();
            tasks.push(tokio::spawn(async move { svc.finish(id).await.unwrap() }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let assigned = h.service.jobs(None, Some(JobStatus::Assigned)).await.unwrap();
        let mut expected: Vec<_> = waiting.iter().map(|j| j.warehouse_order_id).collect();
        let mut got: Vec<_> = assigned.iter().map(|j| j.warehouse_order_id).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "the oldest waiting jobs got the freed places");
        assert_eq!(h.service.jobs(None, Some(JobStatus::Finished)).await.unwrap().len(), 3);
        assert_eq!(assigned_events(&h.db).await, 6);

        // Finishing again, or a job never requested, changes nothing.
        h.service.finish(in_hand[0]).await.unwrap();
        h.service.finish(WarehouseOrderId::new()).await.unwrap();
        let partners = h.service.partners().await.unwrap();
        assert_eq!(partners.iter().map(|p| (p.id, p.active_jobs)).collect::<Vec<_>>(), [(a, 2), (b, 1)]);
    }

    async fn waiting_jobs_go_to_partners_who_get_room_or_reach(backend: Backend) {
        let h = harness(backend).await;
        let far = h
            .service
            .create_partner(NewPartner {
                name: "Far".into(),
                email: None,
                phone: None,
                base: GeoPoint::new(48.14, 11.58).unwrap(),
                radius_km: 30.0,
                postal_prefixes: vec!["10".into()],
                capacity: 5,
                max_units: 10,
            })
            .await
            .unwrap();
        let job = h.service.request(request(h.warehouse, WarehouseOrderId::new())).await.unwrap();
        assert_eq!(job.status, JobStatus::Waiting, "its area reaches the address by postal code, not the warehouse");
        let idle = partner(&h.service, "Idle", 0).await;
        assert_eq!(h.service.jobs(None, Some(JobStatus::Waiting)).await.unwrap().len(), 1, "no room");
        let idle = h.service.update_partner(idle, PartnerPatch { capacity: Some(1), ..Default::default() }).await.unwrap();
        assert_eq!(idle.active_jobs, 1, "given room, it took the waiting job at once");
        let jobs = h.service.jobs(Some(idle.id), None).await.unwrap();
        assert_eq!((jobs.len(), jobs[0].status, jobs[0].assigned_at.is_some()), (1, JobStatus::Assigned, true));
        assert!(jobs[0].assigned_at.unwrap() <= Utc::now());

        // Deactivated, a partner keeps its job but gets no new one.
        let off = PartnerPatch { active: Some(false), capacity: Some(5), ..Default::default() };
        assert_eq!(h.service.update_partner(idle.id, off).await.unwrap().active_jobs, 1);
        let next = h.service.request(request(h.warehouse, WarehouseOrderId::new())).await.unwrap();
        assert_eq!(next.status, JobStatus::Waiting);
        assert_eq!(h.service.partner(far.id).await.unwrap().active_jobs, 0);
    }

    async fn a_burst_is_assigned_in_one_go_spreading_the_load(backend: Backend) {
        let h = harness(backend).await;
        let (a, b) = (partner(&h.service, "A", 2).await, partner(&h.service, "B", 2).await);
        let requests: Vec<JobRequest> = (0..5).map(|_| request(h.warehouse, WarehouseOrderId::new())).collect();
        let jobs = h.service.request_all(requests).await.unwrap();
        let given: Vec<Option<DeliveryPartnerId>> = jobs.iter().map(|j| j.partner_id).collect();
        assert_eq!(given, [Some(a), Some(b), Some(a), Some(b), None], "each job goes to the least busy partner then");
        assert_eq!(jobs[4].status, JobStatus::Waiting);
        assert_eq!(assigned_events(&h.db).await, 4);
        let stored: Vec<Option<DeliveryPartnerId>> = {
            let mut by_id = Vec::new();
            for job in &jobs {
                by_id.push(h.service.jobs(None, None).await.unwrap().into_iter().find(|j| j.warehouse_order_id == job.warehouse_order_id).unwrap().partner_id);
            }
            by_id
        };
        assert_eq!(stored, given, "what was answered is what was stored");

        // Asked again in one burst, twice over: the same jobs, nothing assigned twice.
        let again: Vec<JobRequest> = jobs.iter().chain(&jobs[..1]).map(|j| request(h.warehouse, j.warehouse_order_id)).collect();
        let answered = h.service.request_all(again).await.unwrap();
        assert_eq!(answered.len(), 6);
        assert_eq!(answered.iter().map(|j| j.partner_id).collect::<Vec<_>>()[..5], given[..]);
        assert_eq!(answered[5].warehouse_order_id, jobs[0].warehouse_order_id);
        assert_eq!(assigned_events(&h.db).await, 4);
        assert_eq!(h.service.jobs(None, None).await.unwrap().len(), 5);
    }
}
