//! The cart stores against real backends: the same conformance test runs on SQL (SQLite and
//! PostgreSQL) and on Redis, plus each store's own expiry.

use chrono::{Duration, TimeZone, Utc};
use emporium_cart::api::events::{CartItemAdded, CartItemRemoved};
use emporium_cart::model::CartLine;
use emporium_cart::store::{CartStore, RedisCartStore, Seen, SqlCartStore};
use emporium_kernel::backend_tests;
use emporium_kernel::db::Db;
use emporium_kernel::events::{PendingEvent, outbox_events};
use emporium_kernel::ids::ProductId;
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::testing::{Backend, TestDatabase, redis_url};

const TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

fn line(product: ProductId, quantity: i64, price: i64) -> CartLine {
    CartLine {
        product_id: product,
        quantity,
        unit_price: Money::new(price, Currency::USD),
        added_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    }
}

fn removed(product_id: ProductId) -> PendingEvent {
    PendingEvent::of(&CartItemRemoved { user_id: None, product_id }).unwrap()
}

/// Event types in `outbox` after `after`, with their aggregate (the product).
async fn events_after(outbox: &Db, after: i64) -> Vec<(String, String)> {
    let events = outbox_events(outbox, after, 100).await.unwrap();
    events.into_iter().map(|e| (e.event_type, e.aggregate_id)).collect()
}

/// What every store must do; `outbox` is the cart database the store appends events to.
async fn conformance(store: &dyn CartStore, outbox: &Db) {
    let now = Utc::now();
    let owner = format!("user:{}", uuid_like());
    assert!(store.load(&owner, now).await.unwrap().is_none(), "no cart yet");
    let (a, b) = (ProductId::new(), ProductId::new());
    let start = outbox_events(outbox, 0, 10_000).await.unwrap().last().map_or(0, |e| e.seq);
    let added =
        PendingEvent::of(&CartItemAdded { user_id: None, product_id: a, quantity: 2, line_quantity: 2 }).unwrap();
    store.put_line(&owner, &line(a, 2, 500), Seen::Unknown, now, &[added]).await.unwrap();
    assert_eq!(events_after(outbox, start).await, [("CartItemAdded".to_owned(), a.to_string())], "the write's event");
    store.put_line(&owner, &line(b, 1, 900), Seen::Live, now, &[]).await.unwrap();
    // A second put changes the quantity and keeps the first price snapshot.
    store.put_line(&owner, &line(a, 5, 777), Seen::Live, now, &[]).await.unwrap();
    let cart = store.load(&owner, now).await.unwrap().expect("cart exists");
    let got: Vec<_> = cart.lines.iter().map(|l| (l.product_id, l.quantity, l.unit_price.amount)).collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&(a, 5, 500)) && got.contains(&(b, 1, 900)), "{got:?}");
    assert_eq!(cart.coupon, None);

    store.set_coupon(&owner, Some("SAVE10"), now, &[]).await.unwrap();
    assert_eq!(store.load(&owner, now).await.unwrap().unwrap().coupon.as_deref(), Some("SAVE10"));
    store.set_coupon(&owner, None, now, &[]).await.unwrap();
    assert_eq!(store.load(&owner, now).await.unwrap().unwrap().coupon, None);

    // Removing several lines at once: only those that were there count, and get an event.
    let c = ProductId::new();
    store.put_line(&owner, &line(c, 1, 300), Seen::Unknown, now, &[]).await.unwrap();
    let before = outbox_events(outbox, 0, 10_000).await.unwrap().last().map_or(0, |e| e.seq);
    let never_added = ProductId::new();
    let mut expected = vec![a, c];
    expected.sort();
    assert_eq!(store.remove_lines(&owner, &[c, never_added, a], now, &removed).await.unwrap(), expected);
    let events = events_after(outbox, before).await;
    assert_eq!(events, expected.iter().map(|p| ("CartItemRemoved".to_owned(), p.to_string())).collect::<Vec<_>>());
    assert!(store.remove_lines(&owner, &[a], now, &removed).await.unwrap().is_empty(), "removing twice finds nothing");
    assert_eq!(events_after(outbox, before).await.len(), 2, "and says nothing");
    assert_eq!(store.load(&owner, now).await.unwrap().unwrap().lines.len(), 1);

    let other = format!("guest:{}", uuid_like());
    store.put_line(&other, &line(a, 1, 1), Seen::Unknown, now, &[]).await.unwrap();
    store.delete(&owner).await.unwrap();
    assert!(store.load(&owner, now).await.unwrap().is_none());
    assert_eq!(store.load(&other, now).await.unwrap().unwrap().lines.len(), 1, "other carts are untouched");
}

fn uuid_like() -> String {
    ProductId::new().to_string()
}

backend_tests! {
    async fn sql_store_conforms_and_expires_idle_carts(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let cart_db = db.open(emporium_cart::SERVICE, &emporium_cart::migrations()).await;
        let store = SqlCartStore::new(cart_db.clone(), TTL);
        conformance(&store, &cart_db).await;

        let now = Utc::now();
        store.put_line("user:idle", &line(ProductId::new(), 1, 100), Seen::Unknown, now, &[]).await.unwrap();
        let later = now + Duration::days(29);
        assert!(store.load("user:idle", later).await.unwrap().is_some(), "29 idle days: still there");
        // Touching it restarts the clock.
        store.put_line("user:idle", &line(ProductId::new(), 1, 100), Seen::Unknown, later, &[]).await.unwrap();
        assert!(store.load("user:idle", now + Duration::days(58)).await.unwrap().is_some());
        // So does taking a line out of a live cart.
        let kept = ProductId::new();
        store.put_line("user:trimmed", &line(kept, 1, 100), Seen::Unknown, now, &[]).await.unwrap();
        let dropped = ProductId::new();
        store.put_line("user:trimmed", &line(dropped, 1, 100), Seen::Live, now, &[]).await.unwrap();
        assert_eq!(store.remove_lines("user:trimmed", &[dropped], later, &removed).await.unwrap(), [dropped]);
        let trimmed = store.load("user:trimmed", now + Duration::days(58)).await.unwrap().expect("refreshed by the removal");
        assert_eq!(trimmed.lines.iter().map(|l| l.product_id).collect::<Vec<_>>(), [kept]);
        let gone = later + Duration::days(31);
        assert!(store.load("user:idle", gone).await.unwrap().is_none(), "past 30 idle days it is gone");
        // Taking a line out of it then finds nothing, says nothing and does not bring it back.
        let idle_lines: Vec<ProductId> = emporium_kernel::sql!(cart_db, |c| sqlx::query_scalar(
            "SELECT product_id FROM cart_lines WHERE owner_key = 'user:idle'"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(idle_lines.len(), 2);
        let before = outbox_events(&cart_db, 0, 10_000).await.unwrap().last().map_or(0, |e| e.seq);
        assert!(store.remove_lines("user:idle", &idle_lines, gone, &removed).await.unwrap().is_empty());
        assert!(events_after(&cart_db, before).await.is_empty());
        assert!(store.load("user:idle", gone).await.unwrap().is_none(), "still expired");
        // A write after expiry starts an empty cart rather than reviving the old lines.
        let fresh = ProductId::new();
        store.put_line("user:idle", &line(fresh, 1, 100), Seen::Unknown, gone, &[]).await.unwrap();
        let cart = store.load("user:idle", gone).await.unwrap().unwrap();
        assert_eq!(cart.lines.iter().map(|l| l.product_id).collect::<Vec<_>>(), [fresh]);
        assert!(store.purge_expired(gone + Duration::days(31)).await.unwrap() >= 1);
    }

    // An add and a removal of the same line at once (a shopper adding while the confirmation of
    // an order takes the line out): both write the cart row before the line, so on PostgreSQL
    // neither waits on the other in the opposite order (a deadlock would fail one of them).
    async fn adding_and_taking_out_the_same_line_at_once_never_fails(backend: Backend) {
        let db = TestDatabase::create(backend).await;
        let cart_db = db.open(emporium_cart::SERVICE, &emporium_cart::migrations()).await;
        let store = std::sync::Arc::new(SqlCartStore::new(cart_db.clone(), TTL));
        let product = ProductId::new();
        let now = Utc::now();
        for round in 0..40 {
            let owner = format!("user:race-{}", round % 4);
            store.put_line(&owner, &line(product, 1, 100), Seen::Unknown, now, &[]).await.unwrap();
            let (adder, remover) = (store.clone(), store.clone());
            let (add_owner, remove_owner) = (owner.clone(), owner.clone());
            let add = tokio::spawn(async move {
                let added = PendingEvent::of(&CartItemAdded { user_id: None, product_id: product, quantity: 1, line_quantity: 2 })
                    .unwrap();
                adder.put_line(&add_owner, &line(product, 2, 100), Seen::Live, now, &[added]).await
            });
            let remove = tokio::spawn(async move { remover.remove_lines(&remove_owner, &[product], now, &removed).await });
            add.await.unwrap().unwrap_or_else(|err| panic!("round {round}: the add failed: {err}"));
            let gone = remove.await.unwrap().unwrap_or_else(|err| panic!("round {round}: the removal failed: {err}"));
            // The line was there before both (an add upserts it): the removal always finds it.
            assert_eq!(gone, [product], "round {round}");
            // Whichever ran second decides whether it is back, and then as the add left it.
            let left = store.load(&owner, now).await.unwrap().expect("the cart is live").lines;
            assert!(left.iter().all(|l| l.product_id == product && l.quantity == 2), "round {round}: {left:?}");
        }
    }
}

#[tokio::test]
async fn redis_store_conforms_and_sets_a_ttl() {
    let prefix = format!("emporium-test-{}", uuid_like());
    let db = TestDatabase::create(Backend::Sqlite).await;
    let cart_db = db.open(emporium_cart::SERVICE, &emporium_cart::migrations()).await;
    let store = RedisCartStore::connect(&redis_url(), &prefix, TTL, cart_db.clone()).await.unwrap_or_else(|err| {
        panic!("Redis is not reachable at {} ({err:#}). Run ./scripts/test, which starts it", redis_url())
    });
    conformance(&store, &cart_db).await;
    store.put_line("user:ttl", &line(ProductId::new(), 1, 100), Seen::Unknown, Utc::now(), &[]).await.unwrap();
    let ttl = store.ttl_of("user:ttl").await.unwrap();
    assert!((TTL.as_secs() as i64 - 5..=TTL.as_secs() as i64).contains(&ttl), "the cart key expires in 30 days: {ttl}");
    store.delete("user:ttl").await.unwrap();
    assert_eq!(store.ttl_of("user:ttl").await.unwrap(), -2, "deleted keys are gone");
}
