//! The inventory service against real databases: every test runs on SQLite and on its own fresh
//! PostgreSQL database. Time is a ManualClock, so expiry is tested without sleeping.

use chrono::{Duration, TimeZone, Utc};
use emporium_inventory::api::ReserveRequest;
use emporium_inventory::api::events::StockChanged;
use emporium_inventory::model::{LineRequest, NearestThenMostStock, Quantity, ReservationStatus, StockLevels};
use emporium_inventory::service::{Error as InventoryError, NewWarehouse, WarehousePatch};
use emporium_inventory::{InventoryService, migrations};
use emporium_kernel::backend_tests;
use emporium_kernel::clock::{Clock, ManualClock};
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{ProductId, WarehouseId};
use emporium_kernel::testing::{Backend, TestDatabase};
use std::sync::Arc;

struct Harness {
    service: Arc<InventoryService>,
    clock: Arc<ManualClock>,
    _db: TestDatabase,
}

async fn harness(backend: Backend) -> Harness {
    let db = TestDatabase::create(backend).await;
    let handle = db.open(emporium_inventory::SERVICE, &migrations()).await;
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()));
    let service = Arc::new(InventoryService::new(
        handle,
        clock.clone(),
        None,
        Arc::new(NearestThenMostStock),
        std::time::Duration::from_secs(600),
    ));
    Harness { service, clock, _db: db }
}

const BERLIN: (f64, f64) = (52.52, 13.405);
const HAMBURG: (f64, f64) = (53.55, 9.99);
const POTSDAM: (f64, f64) = (52.39, 13.06);

async fn warehouse(svc: &InventoryService, name: &str, at: (f64, f64), radius_km: f64) -> WarehouseId {
    svc.create_warehouse(NewWarehouse {
        name: name.into(),
        address: format!("{name} address"),
        location: GeoPoint::new(at.0, at.1).unwrap(),
        delivery_radius_km: radius_km,
        postal_prefixes: vec![],
    })
    .await
    .unwrap()
    .id
}

fn line(product: ProductId, n: i64) -> LineRequest {
    LineRequest { product_id: product, quantity: Quantity::parse(n).unwrap() }
}

fn request(reference: &str, lines: Vec<LineRequest>) -> ReserveRequest {
    ReserveRequest { reference: reference.into(), lines, destination: Destination::default(), ttl: None }
}

fn at(point: (f64, f64)) -> Destination {
    Destination { point: Some(GeoPoint::new(point.0, point.1).unwrap()), postal_code: None }
}

async fn levels(svc: &InventoryService, product: ProductId) -> StockLevels {
    svc.stock(product).await.unwrap().total
}

async fn assert_ledger_replays(svc: &InventoryService) {
    let findings = svc.audit().await.unwrap();
    assert!(findings.is_empty(), "stock rows disagree with their ledger: {findings:?}");
}

backend_tests! {
    async fn flash_sale_never_oversells(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let w = warehouse(svc, "Berlin", BERLIN, 50.0).await;
        let product = ProductId::new();
        svc.intake("test", w, product, 10, None).await.unwrap();

        let buyers: Vec<_> = (0..200)
            .map(|i| {
                let svc = svc.clone();
                tokio::spawn(async move { svc.reserve("test", request(&format!("order-{i}"), vec![line(product, 1)])).await })
            })
            .collect();
        let (mut won, mut sold_out) = (0, 0);
        for buyer in buyers {
            match buyer.await.unwrap() {
                Ok(r) => {
                    assert_eq!(r.status, ReservationStatus::Held);
                    won += 1;
                }
                Err(InventoryError::OutOfStock(lines)) => {
                    assert_eq!(lines.len(), 1);
                    assert_eq!((lines[0].product_id, lines[0].requested, lines[0].available), (product, 1, 0));
                    sold_out += 1;
                }
                Err(other) => panic!("a buyer got neither a reservation nor out-of-stock: {other:?}"),
            }
        }
        assert_eq!((won, sold_out), (10, 190));
        let total = levels(svc, product).await;
        assert_eq!(total, StockLevels { on_hand: 10, available: 0, reserved: 10, allocated: 0, shipped: 0 });
        assert!(total.is_consistent());
        assert_ledger_replays(svc).await;
    }

    async fn multi_line_reservations_are_all_or_nothing(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (a, b) = (warehouse(svc, "A", BERLIN, 50.0).await, warehouse(svc, "B", HAMBURG, 50.0).await);
        let (p1, p2) = (ProductId::new(), ProductId::new());
        svc.intake("test", a, p1, 3, None).await.unwrap();
        svc.intake("test", b, p1, 2, None).await.unwrap();
        svc.intake("test", b, p2, 1, None).await.unwrap();

        let err = svc.reserve("test", request("short", vec![line(p1, 5), line(p2, 2)])).await.unwrap_err();
        let InventoryError::OutOfStock(short) = err else { panic!("expected out of stock, got {err:?}") };
        assert_eq!(short.len(), 1, "only the short line is named: {short:?}");
        assert_eq!((short[0].product_id, short[0].requested, short[0].available), (p2, 2, 1));
        assert_eq!(levels(svc, p1).await.available, 5, "nothing was held");
        assert_eq!(levels(svc, p2).await.available, 1);

        let r = svc.reserve("test", request("fits", vec![line(p1, 5), line(p2, 1)])).await.unwrap();
        let p1_lines: Vec<_> = r.lines.iter().filter(|l| l.product_id == p1).map(|l| (l.warehouse_id, l.quantity)).collect();
        assert_eq!(p1_lines.len(), 2, "five units of p1 split over both warehouses: {p1_lines:?}");
        assert!(p1_lines.contains(&(a, 3)) && p1_lines.contains(&(b, 2)));
        assert_eq!(levels(svc, p1).await.reserved, 5);
        assert_ledger_replays(svc).await;
    }

    // Every hold moves several stock rows with one statement: when a concurrent buyer took one
    // of them first, none of the hold may stay (the attempt rolls back and reads again).
    async fn concurrent_multi_line_holds_take_every_line_or_none(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (a, b) = (warehouse(svc, "A", BERLIN, 50.0).await, warehouse(svc, "B", POTSDAM, 50.0).await);
        let (p1, p2, p3) = (ProductId::new(), ProductId::new(), ProductId::new());
        svc.intake("test", a, p1, 12, None).await.unwrap();
        svc.intake("test", b, p2, 8, None).await.unwrap();
        svc.intake("test", a, p3, 30, None).await.unwrap();

        // Every buyer wants p1 and p3; odd buyers also want p2, which runs out first.
        let buyers: Vec<_> = (0..40)
            .map(|i| {
                let svc = svc.clone();
                let mut lines = vec![line(p1, 1), line(p3, 1)];
                if i % 2 == 1 {
                    lines.push(line(p2, 1));
                }
                tokio::spawn(async move { (i, svc.reserve("test", request(&format!("basket-{i}"), lines)).await) })
            })
            .collect();
        let mut held = Vec::new();
        for buyer in buyers {
            match buyer.await.unwrap() {
                (i, Ok(r)) => held.push((i, r)),
                (_, Err(InventoryError::OutOfStock(_))) => {}
                (_, Err(other)) => panic!("a buyer got neither a hold nor out-of-stock: {other:?}"),
            }
        }
        let with_p2 = held.iter().filter(|(i, _)| i % 2 == 1).count() as i64;
        assert!(with_p2 <= 8, "p2 has 8 units, {with_p2} holds took one");
        assert_eq!(held.len(), 12, "p1 (12 units) runs out before p3; every hold took a unit of it");
        for (i, r) in &held {
            assert_eq!(r.lines.len(), if i % 2 == 1 { 3 } else { 2 }, "every line of basket {i} held: {r:?}");
        }
        let taken = |product: ProductId| held.iter().flat_map(|(_, r)| &r.lines).filter(|l| l.product_id == product).count() as i64;
        for (product, units) in [(p1, 12), (p2, 8), (p3, 30)] {
            let total = levels(svc, product).await;
            assert_eq!(total.reserved, taken(product), "reserved units of {product} match the holds");
            assert_eq!(total.available, units - taken(product));
            assert!(total.is_consistent());
        }

        // Committing them all at once moves the same rows concurrently: every commit must land.
        let commits: Vec<_> = held
            .iter()
            .map(|(_, r)| {
                let (svc, id) = (svc.clone(), r.id);
                tokio::spawn(async move { svc.commit("test", id).await })
            })
            .collect();
        for commit in commits {
            let committed = commit.await.unwrap().expect("a commit of a live hold never fails");
            assert_eq!(committed.status, ReservationStatus::Committed);
        }
        for (product, units) in [(p1, 12), (p2, 8), (p3, 30)] {
            let total = levels(svc, product).await;
            assert_eq!((total.reserved, total.allocated), (0, taken(product)), "{product}: every hold allocated");
            assert_eq!(total.on_hand, units);
            assert!(total.is_consistent());
        }
        assert_ledger_replays(svc).await;
    }

    async fn the_nearest_covering_warehouse_is_used(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let berlin = warehouse(svc, "Berlin", BERLIN, 60.0).await;
        let hamburg = warehouse(svc, "Hamburg", HAMBURG, 400.0).await;
        let product = ProductId::new();
        svc.intake("test", berlin, product, 1, None).await.unwrap();
        svc.intake("test", hamburg, product, 50, None).await.unwrap();

        let mut near = request("near", vec![line(product, 1)]);
        near.destination = at(POTSDAM);
        let r = svc.reserve("test", near).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, berlin, "Berlin is nearest to Potsdam and delivers there");

        // Without a location, most stock wins.
        let r = svc.reserve("test", request("anywhere", vec![line(product, 1)])).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, hamburg);

        // Nobody delivers to Munich.
        let mut far = request("munich", vec![line(product, 1)]);
        far.destination = at((48.14, 11.58));
        let err = svc.reserve("test", far).await.unwrap_err();
        assert!(matches!(err, InventoryError::OutOfStock(ref l) if l[0].available == 0), "{err:?}");

        let options = svc.delivery_options(product, &at(POTSDAM), 1).await.unwrap();
        assert_eq!(options.iter().map(|o| o.warehouse_id).collect::<Vec<_>>(), [hamburg], "Berlin's unit is held now");
        assert!(svc.delivery_options(product, &at((48.14, 11.58)), 1).await.unwrap().is_empty());
    }

    async fn holds_expire_and_are_never_committed_after(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let w = warehouse(svc, "Berlin", BERLIN, 50.0).await;
        let product = ProductId::new();
        svc.intake("test", w, product, 4, None).await.unwrap();
        let r = svc.reserve("test", request("slow", vec![line(product, 3)])).await.unwrap();
        assert_eq!(r.expires_at, h.clock.now() + Duration::minutes(10));

        h.clock.advance(Duration::minutes(9));
        assert_eq!(svc.expire_due().await.unwrap(), 0, "still within its ten minutes");
        assert_eq!(levels(svc, product).await.reserved, 3);

        h.clock.advance(Duration::minutes(2));
        // Past its time, the hold cannot be committed even before the sweeper ran.
        assert!(matches!(svc.commit("test", r.id).await, Err(InventoryError::ReservationExpired)));
        assert_eq!(svc.expire_due().await.unwrap(), 1);
        assert_eq!(svc.expire_due().await.unwrap(), 0, "expiring is done once");
        assert_eq!(levels(svc, product).await, StockLevels { on_hand: 4, available: 4, ..Default::default() });
        assert_eq!(svc.reservation(r.id).await.unwrap().status, ReservationStatus::Expired);
        assert!(matches!(svc.commit("test", r.id).await, Err(InventoryError::ReservationExpired)));
        // Releasing what already expired changes nothing.
        assert_eq!(svc.release("test", r.id, None).await.unwrap().status, ReservationStatus::Expired);
        assert_eq!(levels(svc, product).await.available, 4);
        assert_ledger_replays(svc).await;
    }

    async fn reservations_commit_ship_and_release_idempotently(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (a, b) = (warehouse(svc, "A", BERLIN, 50.0).await, warehouse(svc, "B", HAMBURG, 50.0).await);
        let product = ProductId::new();
        svc.intake("test", a, product, 2, None).await.unwrap();
        svc.intake("test", b, product, 2, None).await.unwrap();

        let r = svc.reserve("orders", request("order-1", vec![line(product, 3)])).await.unwrap();
        let again = svc.reserve("orders", request("order-1", vec![line(product, 3)])).await.unwrap();
        assert_eq!(again.id, r.id, "the same reference is the same reservation");
        assert_eq!(levels(svc, product).await.reserved, 3, "and holds nothing more");
        let clash = svc.reserve("orders", request("order-1", vec![line(product, 1)])).await.unwrap_err();
        assert!(matches!(clash, InventoryError::Conflict(_)), "{clash:?}");

        svc.commit("orders", r.id).await.unwrap();
        svc.commit("orders", r.id).await.unwrap();
        assert_eq!(levels(svc, product).await, StockLevels { on_hand: 4, available: 1, allocated: 3, ..Default::default() });

        let first = r.lines[0].warehouse_id;
        svc.ship("orders", r.id, first).await.unwrap();
        svc.ship("orders", r.id, first).await.unwrap();
        let shipped = r.lines.iter().filter(|l| l.warehouse_id == first).map(|l| l.quantity).sum::<i64>();
        let after = levels(svc, product).await;
        assert_eq!((after.shipped, after.on_hand, after.allocated), (shipped, 4 - shipped, 3 - shipped));
        assert!(matches!(svc.release("orders", r.id, None).await, Err(InventoryError::Conflict(_))), "part has shipped");

        // A paid but unshipped order can be cancelled: its units become available again.
        let r2 = svc.reserve("orders", request("order-2", vec![line(product, 1)])).await.unwrap();
        svc.commit("orders", r2.id).await.unwrap();
        let released = svc.release("orders", r2.id, Some("cancelled")).await.unwrap();
        assert_eq!(released.status, ReservationStatus::Released);
        assert!(matches!(svc.commit("orders", r2.id).await, Err(InventoryError::ReservationReleased)));
        assert_eq!(levels(svc, product).await.available, 1);
        assert!(levels(svc, product).await.is_consistent());
        assert_ledger_replays(svc).await;
    }

    // A reference is looked up only when something says it may not be new: a unique-key refusal
    // of its write, or lines short (perhaps because it holds them itself). Either way a retry
    // answers with the first reservation and holds nothing more.
    async fn a_retried_reference_finds_its_reservation_whatever_the_stock_says(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let w = warehouse(svc, "A", BERLIN, 50.0).await;
        let (plenty, scarce) = (ProductId::new(), ProductId::new());
        svc.intake("test", w, plenty, 100, None).await.unwrap();
        svc.intake("test", w, scarce, 2, None).await.unwrap();

        let first = svc.reserve("orders", request("roomy", vec![line(plenty, 3)])).await.unwrap();
        let again = svc.reserve("orders", request("roomy", vec![line(plenty, 3)])).await.unwrap();
        assert_eq!(again.id, first.id, "refused as a duplicate, then found");
        assert_eq!(levels(svc, plenty).await.reserved, 3);

        let last = svc.reserve("orders", request("last-two", vec![line(scarce, 2)])).await.unwrap();
        let again = svc.reserve("orders", request("last-two", vec![line(scarce, 2)])).await.unwrap();
        assert_eq!(again.id, last.id, "short because it holds them itself, then found");
        assert_eq!(levels(svc, scarce).await.reserved, 2);

        let short = svc.reserve("orders", request("too-late", vec![line(scarce, 1)])).await.unwrap_err();
        assert!(matches!(short, InventoryError::OutOfStock(ref l) if l[0].available == 0), "{short:?}");
        let clash = svc.reserve("orders", request("roomy", vec![line(plenty, 1)])).await.unwrap_err();
        assert!(matches!(clash, InventoryError::Conflict(_)), "{clash:?}");
        assert_eq!(levels(svc, plenty).await.reserved, 3, "nothing more held");
        assert_ledger_replays(svc).await;
    }

    // Reservations see the warehouses through an in-process copy (DIRECTORY_MAX_AGE): a change
    // made here shows at once.
    async fn a_warehouse_switched_off_here_is_passed_over_at_once(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (big, small) = (warehouse(svc, "Big", BERLIN, 50.0).await, warehouse(svc, "Small", HAMBURG, 50.0).await);
        let product = ProductId::new();
        svc.intake("test", big, product, 10, None).await.unwrap();
        svc.intake("test", small, product, 5, None).await.unwrap();
        let r = svc.reserve("orders", request("before", vec![line(product, 1)])).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, big, "most stock wins");

        let off = WarehousePatch { active: Some(false), ..WarehousePatch::default() };
        svc.update_warehouse(big, off).await.unwrap();
        let r = svc.reserve("orders", request("while-off", vec![line(product, 1)])).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, small, "the switched-off warehouse is not used");
        let err = svc.reserve("orders", request("too-many", vec![line(product, 5)])).await.unwrap_err();
        assert!(matches!(err, InventoryError::OutOfStock(ref l) if l[0].available == 4), "{err:?}");

        let on = WarehousePatch { active: Some(true), ..WarehousePatch::default() };
        svc.update_warehouse(big, on).await.unwrap();
        let r = svc.reserve("orders", request("after", vec![line(product, 1)])).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, big);

        let fresh = warehouse(svc, "Fresh", BERLIN, 50.0).await;
        svc.intake("test", fresh, product, 100, None).await.unwrap();
        let r = svc.reserve("orders", request("new-one", vec![line(product, 1)])).await.unwrap();
        assert_eq!(r.lines[0].warehouse_id, fresh, "a warehouse created here is used at once");
    }

    // A reservation's StockChanged carries the rows as they stand after it (on SQLite worked out
    // from what the transaction read, on PostgreSQL read again): the same as reading them.
    async fn stock_changed_after_a_reservation_matches_the_rows(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (a, b) = (warehouse(svc, "A", BERLIN, 50.0).await, warehouse(svc, "B", HAMBURG, 50.0).await);
        let (split, single, untouched) = (ProductId::new(), ProductId::new(), ProductId::new());
        for (w, product, units) in [(a, split, 2), (b, split, 3), (a, single, 5), (b, untouched, 7)] {
            svc.intake("test", w, product, units, None).await.unwrap();
        }
        svc.reserve("orders", request("mixed", vec![line(split, 4), line(single, 1)])).await.unwrap();
        let events = emporium_kernel::events::outbox_events(svc.db(), 0, 1_000).await.unwrap();
        let reserved: Vec<StockChanged> = events
            .iter()
            .filter(|e| e.is::<StockChanged>())
            .map(|e| e.decode::<StockChanged>().unwrap())
            .filter(|c| c.movement == "reserve")
            .collect();
        let mut products: Vec<ProductId> = reserved.iter().map(|c| c.product_id).collect();
        products.sort();
        let mut expected = vec![split, single];
        expected.sort();
        assert_eq!(products, expected, "one event per reserved product, none for others");
        for changed in reserved {
            let now = svc.stock(changed.product_id).await.unwrap();
            assert_eq!((changed.available, changed.on_hand), (now.total.available, now.total.on_hand));
            let mut rows: Vec<(WarehouseId, i64)> =
                now.warehouses.iter().filter(|(_, l)| l.available > 0).map(|(w, l)| (*w, l.available)).collect();
            rows.sort();
            let mut said: Vec<(WarehouseId, i64)> = changed.warehouses.iter().map(|w| (w.warehouse_id, w.available)).collect();
            said.sort();
            assert_eq!(said, rows, "{changed:?}");
        }
        assert_eq!(levels(svc, split).await, StockLevels { on_hand: 5, available: 1, reserved: 4, ..Default::default() });
    }

    // Committing a hold is one conditional step (on PostgreSQL one statement, see
    // `store::commit_transition`): confirmed many times at once it moves the stock once, and a
    // hold whose rows no longer carry its units is refused with nothing moved.
    async fn a_hold_commits_once_and_never_past_its_rows(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let (a, b) = (warehouse(svc, "A", BERLIN, 50.0).await, warehouse(svc, "B", HAMBURG, 50.0).await);
        let (p, q) = (ProductId::new(), ProductId::new());
        svc.intake("test", a, p, 2, None).await.unwrap();
        svc.intake("test", b, p, 2, None).await.unwrap();
        svc.intake("test", a, q, 5, None).await.unwrap();
        let r = svc.reserve("orders", request("order-1", vec![line(p, 3), line(q, 2)])).await.unwrap();
        assert_eq!(r.lines.len(), 3, "p from both warehouses, q from one");
        let commits: Vec<_> = (0..8)
            .map(|_| {
                let (svc, id) = (svc.clone(), r.id);
                tokio::spawn(async move { svc.commit("orders", id).await })
            })
            .collect();
        for commit in commits {
            assert_eq!(commit.await.unwrap().unwrap().status, ReservationStatus::Committed);
        }
        assert_eq!(levels(svc, p).await, StockLevels { on_hand: 4, available: 1, allocated: 3, ..Default::default() });
        let q_after = StockLevels { on_hand: 5, available: 3, allocated: 2, ..Default::default() };
        assert_eq!(levels(svc, q).await, q_after);
        let commits = svc.ledger(q, 0, 10).await.unwrap().into_iter().filter(|l| l.movement.as_str() == "commit").count();
        assert_eq!(commits, 1);
        assert_ledger_replays(svc).await;

        let r2 = svc.reserve("orders", request("order-2", vec![line(q, 1)])).await.unwrap();
        let db = h._db.open(emporium_inventory::SERVICE, &migrations()).await;
        emporium_kernel::sql_exec!(db, |c| sqlx::query(
            "UPDATE stock SET reserved = reserved - 1, available = available + 1 WHERE product_id = $1"
        )
        .bind(q)
        .execute(c)
        .await)
        .unwrap();
        let err = svc.commit("orders", r2.id).await.unwrap_err();
        assert!(matches!(err, InventoryError::Conflict(_)), "{err:?}");
        assert_eq!(svc.reservation(r2.id).await.unwrap().status, ReservationStatus::Held);
        assert_eq!(levels(svc, q).await, q_after, "the refused commit moved nothing");
        db.close().await;
    }

    async fn a_restock_happens_once_per_operation_key(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let w = warehouse(svc, "A", BERLIN, 50.0).await;
        let product = ProductId::new();
        svc.intake("test", w, product, 5, None).await.unwrap();
        svc.restock("service:orders", w, product, 2, "return of order 1", "return:1").await.unwrap();
        // The caller crashed before recording it and retries, several times at once.
        let retries: Vec<_> = (0..8)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { svc.restock("service:orders", w, product, 2, "return of order 1", "return:1").await })
            })
            .collect();
        for retry in retries {
            // A concurrent twin on PostgreSQL may lose to the ledger's unique key: an error, never a second movement.
            let _ = retry.await.unwrap();
        }
        assert_eq!(levels(svc, product).await, StockLevels { on_hand: 7, available: 7, ..Default::default() });
        svc.restock("service:orders", w, product, 1, "return of order 2", "return:2").await.unwrap();
        assert_eq!(levels(svc, product).await.on_hand, 8, "another operation restocks again");
        let ledger = svc.ledger(product, 0, 10).await.unwrap();
        assert_eq!(ledger.iter().map(|l| l.movement.as_str()).collect::<Vec<_>>(), ["intake", "intake", "intake"]);
        assert!(svc.restock("service:orders", w, product, 0, "nothing", "return:3").await.is_err(), "quantity is validated");
        assert_ledger_replays(svc).await;
    }

    async fn stock_never_goes_negative(backend: Backend) {
        let h = harness(backend).await;
        let svc = &h.service;
        let w = warehouse(svc, "A", BERLIN, 50.0).await;
        let product = ProductId::new();
        svc.intake("test", w, product, 5, None).await.unwrap();
        let err = svc.adjust("test", w, product, -6, "lost").await.unwrap_err();
        assert!(matches!(err, InventoryError::InsufficientStock { available: 5 }), "{err:?}");
        svc.adjust("test", w, product, -2, "damaged in transit").await.unwrap();
        assert_eq!(levels(svc, product).await, StockLevels { on_hand: 3, available: 3, ..Default::default() });
        let ledger = svc.ledger(product, 0, 10).await.unwrap();
        assert_eq!(ledger.iter().map(|l| l.movement.as_str()).collect::<Vec<_>>(), ["intake", "adjustment"]);
        assert_eq!(ledger[1].reason.as_deref(), Some("damaged in transit"));
        assert!(matches!(svc.intake("test", WarehouseId::new(), product, 1, None).await, Err(InventoryError::WarehouseNotFound)));

        // The database itself refuses a figure below zero or an unbalanced row, whatever the code does.
        let db = svc.db();
        let negative = emporium_kernel::sql_exec!(db, |c| sqlx::query("UPDATE stock SET available = available - 10, on_hand = on_hand - 10").execute(c).await);
        assert!(negative.as_ref().is_err_and(emporium_kernel::db::is_check_violation), "{negative:?}");
        let unbalanced = emporium_kernel::sql_exec!(db, |c| sqlx::query("UPDATE stock SET available = available + 1").execute(c).await);
        assert!(unbalanced.as_ref().is_err_and(emporium_kernel::db::is_check_violation), "{unbalanced:?}");
        assert_ledger_replays(svc).await;
    }
}
