//! One function per service: it opens the service's database, builds the service from the
//! clients of the services it needs (refusing, with a message, to run without them), and
//! subscribes the service's consumers to the bus. `App::build` calls them in dependency order.

use anyhow::Context;
use emporium_cart::CartService;
use emporium_catalog::CatalogService;
use emporium_catalog::api::CatalogClient;
use emporium_delivery::DeliveryService;
use emporium_inventory::InventoryService;
use emporium_kernel::auth::TokenKeys;
use emporium_kernel::cache::Cache;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::config::Settings;
use emporium_kernel::db::{Db, ServiceMigrations};
use emporium_kernel::events::EventBus;
use emporium_kernel::storage::Database;
use emporium_orders::OrdersService;
use emporium_payments::PaymentsService;
use emporium_search::SearchService;
use emporium_users::UsersService;
use std::sync::Arc;
use std::time::Duration;

/// What every service is built with.
pub(crate) struct Wiring<'a> {
    pub settings: &'a Settings,
    pub clock: SharedClock,
    pub bus: Arc<dyn EventBus>,
    pub keys: Arc<TokenKeys>,
    pub jwt_secret: &'a str,
    /// Each opened service's database, for readiness checks and shutdown.
    pub databases: Vec<Db>,
}

impl Wiring<'_> {
    /// Opens and migrates a service's database; its outbox becomes a source of the bus.
    async fn open(&mut self, service: &'static str, migrations: ServiceMigrations) -> anyhow::Result<Db> {
        let db = Db::open(service, self.settings, &migrations).await?;
        self.bus.register_source(db.clone());
        self.databases.push(db.clone());
        Ok(db)
    }
}

pub(crate) async fn users(w: &mut Wiring<'_>) -> anyhow::Result<Arc<UsersService>> {
    let db = w.open(emporium_users::SERVICE, emporium_users::migrations()).await?;
    let refresh_ttl = chrono::Duration::seconds(w.settings.refresh_token_ttl_secs as i64);
    // Token versions are checked on every request: shared through Redis when configured, so a
    // revocation on one node holds on all of them.
    let versions = emporium_kernel::cache::from_settings(w.settings).await?;
    Ok(Arc::new(UsersService::new(db, w.keys.clone(), w.clock.clone(), refresh_ttl, versions)))
}

/// The catalog, and the read cache it shares with the health check.
pub(crate) async fn catalog(w: &mut Wiring<'_>) -> anyhow::Result<(Arc<CatalogService>, Arc<dyn Cache>)> {
    let db = w.open(emporium_catalog::SERVICE, emporium_catalog::migrations()).await?;
    // The catalog writes through the storage layer; `db` stays for the event bus and health checks.
    let storage = Database::open(emporium_catalog::SERVICE, w.settings, &emporium_catalog::migrations())
        .await
        .context("opening the catalog database (storage layer)")?;
    let cache = emporium_kernel::cache::from_settings(w.settings).await?;
    tracing::info!(cache = cache.kind(), "catalog read cache");
    let ttl = Duration::from_secs(w.settings.cache_ttl_secs.max(1));
    let blobs = emporium_kernel::blob::BlobStore::from_settings(w.settings)?;
    let service =
        CatalogService::new(db, storage, w.clock.clone(), cache.clone(), ttl, blobs, w.settings.shop_currency);
    Ok((Arc::new(service), cache))
}

pub(crate) async fn inventory(
    w: &mut Wiring<'_>,
    catalog: Option<&Arc<CatalogService>>,
) -> anyhow::Result<Arc<InventoryService>> {
    let db = w.open(emporium_inventory::SERVICE, emporium_inventory::migrations()).await?;
    let service = Arc::new(InventoryService::new(
        db,
        w.clock.clone(),
        catalog.map(|c| c.clone() as CatalogClient),
        Arc::new(emporium_inventory::model::NearestThenMostStock),
        Duration::from_secs(w.settings.reservation_ttl_secs.max(1)),
    ));
    if let Some(catalog) = catalog {
        let projection = emporium_catalog::consumers::StockProjection::new(catalog.clone());
        w.bus.subscribe(emporium_inventory::api::events::SOURCE, Arc::new(projection));
    }
    Ok(service)
}

pub(crate) async fn cart(
    w: &mut Wiring<'_>,
    catalog: Option<&Arc<CatalogService>>,
    inventory: Option<&Arc<InventoryService>>,
    users: Option<&Arc<UsersService>>,
) -> anyhow::Result<Arc<CartService>> {
    let (Some(catalog), Some(inventory)) = (catalog, inventory) else {
        anyhow::bail!("the cart prices lines from the catalog and checks stock: run it with catalog and inventory");
    };
    let db = w.open(emporium_cart::SERVICE, emporium_cart::migrations()).await?;
    let ttl = Duration::from_secs(w.settings.cart_ttl_days.max(1) * 24 * 3600);
    let store: Arc<dyn emporium_cart::store::CartStore> = match &w.settings.redis_url {
        Some(url) => Arc::new(
            emporium_cart::store::RedisCartStore::connect(url.expose(), &w.settings.redis_prefix, ttl, db.clone())
                .await?,
        ),
        None => Arc::new(emporium_cart::store::SqlCartStore::new(db.clone(), ttl)),
    };
    tracing::info!(store = store.kind(), "cart store");
    let mut service = CartService::new(
        db,
        store,
        catalog.clone(),
        inventory.clone(),
        w.clock.clone(),
        i64::from(w.settings.cart_max_quantity.max(1)),
        w.settings.shop_currency,
    );
    if let Some(users) = users {
        service = service.with_users(users.clone());
    }
    let service = Arc::new(service);
    if let Some(users) = users {
        move_wishlists_to_the_cart(users, &service).await?;
    }
    Ok(service)
}

/// The wishlist was the users service's before it became the cart's: rows an older database
/// still keeps there move to the cart's (once; a crash midway repeats a batch harmlessly).
async fn move_wishlists_to_the_cart(users: &UsersService, cart: &Arc<CartService>) -> anyhow::Result<()> {
    let moved = users
        .hand_over_legacy_wishlist(|rows| {
            let cart = cart.clone();
            async move { cart.import_wishlist(&rows).await.map(|_| ()) }
        })
        .await
        .context("moving wishlists from the users database to the cart's")?;
    if moved > 0 {
        tracing::info!(moved, "wishlist rows moved from the users database to the cart's");
    }
    Ok(())
}

/// The payments service with its gateways in the configured order (`payment_gateways`).
pub(crate) async fn payments(w: &mut Wiring<'_>) -> anyhow::Result<Arc<PaymentsService>> {
    use emporium_payments::gateway::Gateway;
    let db = w.open(emporium_payments::SERVICE, emporium_payments::migrations()).await?;
    // Payments writes through the storage layer; `db` stays for the event bus and health checks.
    let storage = Database::open(emporium_payments::SERVICE, w.settings, &emporium_payments::migrations())
        .await
        .context("opening the payments database (storage layer)")?;
    let settings = w.settings;
    let (webhooks, deliveries) = tokio::sync::mpsc::unbounded_channel();
    let mut gateways: Vec<Arc<dyn Gateway>> = Vec::new();
    for name in settings.payment_gateways.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            emporium_payments::sandbox::NAME => {
                // Without a configured secret the sandbox signs with one derived from the JWT
                // secret: stable across restarts, never the JWT secret itself.
                let secret = match &settings.sandbox_webhook_secret {
                    Some(s) => s.expose().clone(),
                    None => emporium_kernel::sha256_hex(format!("sandbox-webhook:{}", w.jwt_secret)),
                };
                gateways.push(Arc::new(emporium_payments::sandbox::SandboxGateway::new(
                    storage.clone(),
                    w.clock.clone(),
                    secret.into_bytes(),
                    Duration::from_millis(settings.sandbox_async_delay_ms),
                    webhooks.clone(),
                )));
            }
            emporium_payments::stripe::NAME => {
                let (Some(url), Some(key), Some(webhook)) =
                    (&settings.stripe_api_url, &settings.stripe_secret_key, &settings.stripe_webhook_secret)
                else {
                    anyhow::bail!(
                        "the stripe gateway needs EMPORIUM_STRIPE_API_URL, EMPORIUM_STRIPE_SECRET_KEY and EMPORIUM_STRIPE_WEBHOOK_SECRET"
                    );
                };
                gateways.push(Arc::new(emporium_payments::stripe::StripeGateway::new(
                    url,
                    key.clone(),
                    webhook.expose(),
                )?));
            }
            other => {
                anyhow::bail!("unknown payment gateway {other:?} in EMPORIUM_PAYMENT_GATEWAYS (known: sandbox, stripe)")
            }
        }
    }
    anyhow::ensure!(!gateways.is_empty(), "EMPORIUM_PAYMENT_GATEWAYS names no gateway");
    let timeout = Duration::from_millis(settings.payment_timeout_ms.max(1));
    let failpoint =
        std::env::var("EMPORIUM_FAILPOINT").ok().and_then(|f| emporium_payments::service::Failpoint::parse(&f));
    let service =
        PaymentsService::new(db, storage, w.clock.clone(), gateways, timeout, deliveries).with_failpoint(failpoint);
    Ok(Arc::new(service))
}

pub(crate) async fn delivery(
    w: &mut Wiring<'_>,
    inventory: Option<&Arc<InventoryService>>,
) -> anyhow::Result<Arc<DeliveryService>> {
    let Some(inventory) = inventory else {
        anyhow::bail!("delivery picks partners by where warehouses are: run it with inventory");
    };
    let db = w.open(emporium_delivery::SERVICE, emporium_delivery::migrations()).await?;
    // Delivery writes through the storage layer; `db` stays for the event bus and health checks.
    let storage = Database::open(emporium_delivery::SERVICE, w.settings, &emporium_delivery::migrations())
        .await
        .context("opening the delivery database (storage layer)")?;
    Ok(Arc::new(DeliveryService::new(db, storage, w.clock.clone(), inventory.clone())))
}

/// The services the checkout runs across.
pub(crate) struct OrderDependencies<'s> {
    pub users: Option<&'s Arc<UsersService>>,
    pub catalog: Option<&'s Arc<CatalogService>>,
    pub inventory: Option<&'s Arc<InventoryService>>,
    pub cart: Option<&'s Arc<CartService>>,
    pub payments: Option<&'s Arc<PaymentsService>>,
    pub delivery: Option<&'s Arc<DeliveryService>>,
}

pub(crate) async fn orders(w: &mut Wiring<'_>, deps: OrderDependencies<'_>) -> anyhow::Result<Arc<OrdersService>> {
    let (Some(users), Some(inventory), Some(cart), Some(payments), Some(delivery)) =
        (deps.users, deps.inventory, deps.cart, deps.payments, deps.delivery)
    else {
        anyhow::bail!(
            "orders run the checkout across users, inventory, cart, payments and delivery: run them together"
        );
    };
    let db = w.open(emporium_orders::SERVICE, emporium_orders::migrations()).await?;
    let clients = emporium_orders::service::OrderClients {
        cart: cart.clone(),
        users: users.clone(),
        inventory: inventory.clone(),
        payments: payments.clone(),
        delivery: delivery.clone(),
    };
    let order_settings = emporium_orders::service::OrderSettings {
        return_window: chrono::Duration::days(w.settings.return_window_days as i64),
        restock_returns: w.settings.restock_returns,
    };
    let failpoint =
        std::env::var("EMPORIUM_FAILPOINT").ok().and_then(|f| emporium_orders::service::Failpoint::parse(&f));
    let service = Arc::new(OrdersService::new(db, w.clock.clone(), clients, order_settings, failpoint));
    use emporium_orders::consumers::{DeliveryPartners, DeliveryRequests, PaymentOutcomes, WarehouseAssignment};
    let bus = &w.bus;
    bus.subscribe(emporium_payments::api::events::SOURCE, Arc::new(PaymentOutcomes::new(service.clone())));
    bus.subscribe(emporium_orders::api::events::SOURCE, Arc::new(WarehouseAssignment::new(service.clone())));
    bus.subscribe(emporium_orders::api::events::SOURCE, Arc::new(DeliveryRequests::new(service.clone())));
    bus.subscribe(emporium_delivery::api::events::SOURCE, Arc::new(DeliveryPartners::new(service.clone())));
    if let Some(catalog) = deps.catalog {
        let projection = emporium_catalog::consumers::PurchaseProjection::new(catalog.clone());
        bus.subscribe(emporium_orders::api::events::SOURCE, Arc::new(projection));
    }
    Ok(service)
}

pub(crate) fn search(
    w: &mut Wiring<'_>,
    catalog: Option<&Arc<CatalogService>>,
    inventory: Option<&Arc<InventoryService>>,
    users: Option<&Arc<UsersService>>,
) -> anyhow::Result<Arc<SearchService>> {
    anyhow::ensure!(
        catalog.is_some(),
        "the search service is fed by catalog events: run it in the same process as catalog (split mode needs the Kafka bus)"
    );
    let mut synonyms = emporium_search::model::Synonyms::defaults();
    if let Ok(extra) = std::env::var("EMPORIUM_SEARCH_SYNONYMS") {
        synonyms.extend_from_config(&extra);
    }
    let factor = w.settings.search_out_of_stock_factor;
    anyhow::ensure!(
        (0.0..=1.0).contains(&factor),
        "search_out_of_stock_factor must be between 0 and 1 (1 ignores stock), not {factor}"
    );
    let mut service =
        SearchService::open(&w.settings.data_dir.join("search"), synonyms)?.with_out_of_stock_factor(factor as f32);
    if let Some(users) = users {
        service = service.with_users(users.clone());
    }
    let service = Arc::new(service);
    let indexer = Arc::new(emporium_search::consumers::SearchIndexer::new(&service));
    w.bus.subscribe(emporium_catalog::api::events::SOURCE, indexer.clone());
    if inventory.is_some() {
        w.bus.subscribe(emporium_inventory::api::events::SOURCE, indexer);
    }
    Ok(service)
}
