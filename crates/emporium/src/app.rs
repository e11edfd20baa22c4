//! Assembles the application from settings: opens each selected service's database, wires the
//! event bus and service clients, and mounts every router behind the shared HTTP edge.

use crate::health;
use anyhow::Context;
use axum::Router;
use axum::routing::get;
use emporium_cart::CartService;
use emporium_catalog::{CatalogClient, CatalogService};
use emporium_delivery::DeliveryService;
use emporium_inventory::{InventoryClient, InventoryService};
use emporium_kernel::auth::{Authenticator, TokenKeys, TokenVersions};
use emporium_kernel::clock::{self, SharedClock};
use emporium_kernel::config::{Settings, resolve_jwt_secret};
use emporium_kernel::db::Db;
use emporium_kernel::events::{EventBus, InProcessBus, InProcessBusOptions};
use emporium_kernel::http::{EdgeConfig, RateLimitScope, RateLimitState, describe_problem, edge, render_metrics};
use emporium_kernel::ratelimit::{KeyedLimiter, Quota, RateLimiter};
use emporium_orders::OrdersService;
use emporium_payments::{PaymentsClient, PaymentsService};
use emporium_search::SearchService;
use emporium_users::{UsersClient, UsersService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

/// Every service this binary knows, in start-up order.
pub const ALL_SERVICES: &[&str] = &[
    emporium_users::SERVICE,
    emporium_catalog::SERVICE,
    emporium_inventory::SERVICE,
    emporium_cart::SERVICE,
    emporium_payments::SERVICE,
    emporium_delivery::SERVICE,
    emporium_orders::SERVICE,
    emporium_search::SERVICE,
];

/// Which services run in this process (`--services`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSet(Vec<&'static str>);

impl ServiceSet {
    pub fn parse(list: &str) -> anyhow::Result<ServiceSet> {
        if list.trim() == "all" {
            return Ok(ServiceSet(ALL_SERVICES.to_vec()));
        }
        let mut selected = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let known = ALL_SERVICES
                .iter()
                .find(|s| **s == name)
                .with_context(|| format!("unknown service {name:?}; known services: {}", ALL_SERVICES.join(", ")))?;
            selected.push(*known);
        }
        anyhow::ensure!(!selected.is_empty(), "--services names no service");
        Ok(ServiceSet(selected))
    }

    pub fn contains(&self, service: &str) -> bool {
        self.0.contains(&service)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Emporium API",
        description = "Storefront, back office and services of the Emporium e-commerce platform.",
        version = env!("CARGO_PKG_VERSION"),
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "users", description = "Accounts, sessions and address book"),
        (name = "catalog", description = "Categories, products and reviews"),
        (name = "inventory", description = "Warehouses, stock, reservations and deliverability"),
        (name = "cart", description = "Carts (users and guests) and coupons"),
        (name = "payments", description = "Payment gateways' webhooks, refunds and reconciliation"),
        (name = "delivery", description = "Delivery partners and the warehouse orders they carry"),
        (name = "orders", description = "Checkout, orders, cancellations, returns and warehouse orders"),
        (name = "search", description = "Product search and suggestions"),
        (name = "operations", description = "Health and documentation")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// A built, not yet serving, application.
pub struct App {
    pub settings: Settings,
    pub router: Router,
    pub openapi: utoipa::openapi::OpenApi,
    pub users: Option<UsersClient>,
    pub catalog: Option<CatalogClient>,
    pub inventory: Option<InventoryClient>,
    /// Each running service's database, for readiness checks and shutdown.
    pub databases: Vec<Db>,
    pub bus: Arc<dyn EventBus>,
    users_service: Option<Arc<UsersService>>,
    catalog_service: Option<Arc<CatalogService>>,
    inventory_service: Option<Arc<InventoryService>>,
    cart_service: Option<Arc<CartService>>,
    payments_service: Option<Arc<PaymentsService>>,
    delivery_service: Option<Arc<DeliveryService>>,
    orders_service: Option<Arc<OrdersService>>,
    search_service: Option<Arc<SearchService>>,
    shutdown: CancellationToken,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        Self::build_with_clock(settings, clock::system()).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<App> {
        let services = ServiceSet::parse(&settings.services)?;
        let secret = resolve_jwt_secret(&settings).context("reading or creating the JWT secret in the data dir")?;
        let keys = Arc::new(TokenKeys::new(
            secret.expose().as_bytes(),
            chrono::Duration::seconds(settings.access_token_ttl_secs as i64),
        ));
        let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(InProcessBusOptions {
            poll_interval: Duration::from_millis(settings.outbox_poll_ms.max(10)),
            max_attempts: settings.outbox_max_attempts.max(1),
            ..InProcessBusOptions::default()
        }));
        let auth_limit = RateLimitState {
            limiter: limiter(Quota::per_minute(settings.rate_limit_auth)),
            scope: RateLimitScope::PerIp,
            trust_forwarded_for: settings.trust_forwarded_for,
        };

        let mut databases = Vec::new();
        let mut open = async |service: &'static str, migrations| -> anyhow::Result<Db> {
            let db = Db::open(service, &settings, &migrations).await?;
            bus.register_source(db.clone());
            databases.push(db.clone());
            Ok(db)
        };
        let mut users_service = None;
        if services.contains(emporium_users::SERVICE) {
            let db = open(emporium_users::SERVICE, emporium_users::migrations()).await?;
            let refresh_ttl = chrono::Duration::seconds(settings.refresh_token_ttl_secs as i64);
            // Token versions are checked on every request: shared through Redis when configured,
            // so a revocation on one node holds on all of them.
            let versions = emporium_kernel::cache::from_settings(&settings).await?;
            users_service = Some(Arc::new(UsersService::new(db, keys.clone(), clock.clone(), refresh_ttl, versions)));
        }
        let mut catalog_service = None;
        let mut shared_cache = None;
        if services.contains(emporium_catalog::SERVICE) {
            let db = open(emporium_catalog::SERVICE, emporium_catalog::migrations()).await?;
            let cache = emporium_kernel::cache::from_settings(&settings).await?;
            shared_cache = Some(cache.clone());
            tracing::info!(cache = cache.kind(), "catalog read cache");
            let ttl = Duration::from_secs(settings.cache_ttl_secs.max(1));
            let blobs = emporium_kernel::blob::BlobStore::from_settings(&settings)?;
            catalog_service = Some(Arc::new(CatalogService::new(db, clock.clone(), cache, ttl, blobs)));
        }

        let mut inventory_service = None;
        if services.contains(emporium_inventory::SERVICE) {
            let db = open(emporium_inventory::SERVICE, emporium_inventory::migrations()).await?;
            inventory_service = Some(Arc::new(InventoryService::new(
                db,
                clock.clone(),
                catalog_service.clone().map(CatalogClient::local),
                Arc::new(emporium_inventory::model::NearestThenMostStock),
                Duration::from_secs(settings.reservation_ttl_secs.max(1)),
            )));
        }

        let mut cart_service = None;
        if services.contains(emporium_cart::SERVICE) {
            let (Some(catalog), Some(inventory)) = (&catalog_service, &inventory_service) else {
                anyhow::bail!(
                    "the cart prices lines from the catalog and checks stock: run it with catalog and inventory"
                );
            };
            let db = open(emporium_cart::SERVICE, emporium_cart::migrations()).await?;
            let ttl = Duration::from_secs(settings.cart_ttl_days.max(1) * 24 * 3600);
            let store: Arc<dyn emporium_cart::store::CartStore> = match &settings.redis_url {
                Some(url) => Arc::new(
                    emporium_cart::store::RedisCartStore::connect(
                        url.expose(),
                        &settings.redis_prefix,
                        ttl,
                        db.clone(),
                    )
                    .await?,
                ),
                None => Arc::new(emporium_cart::store::SqlCartStore::new(db.clone(), ttl)),
            };
            tracing::info!(store = store.kind(), "cart store");
            let mut service = CartService::new(
                db,
                store,
                CatalogClient::local(catalog.clone()),
                InventoryClient::local(inventory.clone()),
                clock.clone(),
                i64::from(settings.cart_max_quantity.max(1)),
            );
            if let Some(users) = &users_service {
                service = service.with_users(UsersClient::local(users.clone()));
            }
            cart_service = Some(Arc::new(service));
        }
        if let (Some(users), Some(cart)) = (&users_service, &cart_service) {
            move_wishlists_to_the_cart(users, cart).await?;
        }

        let mut payments_service = None;
        if services.contains(emporium_payments::SERVICE) {
            let db = open(emporium_payments::SERVICE, emporium_payments::migrations()).await?;
            payments_service = Some(Arc::new(payments(&settings, db, clock.clone(), secret.expose())?));
        }

        let mut delivery_service = None;
        if services.contains(emporium_delivery::SERVICE) {
            let Some(inventory) = &inventory_service else {
                anyhow::bail!("delivery picks partners by where warehouses are: run it with inventory");
            };
            let db = open(emporium_delivery::SERVICE, emporium_delivery::migrations()).await?;
            delivery_service =
                Some(Arc::new(DeliveryService::new(db, clock.clone(), InventoryClient::local(inventory.clone()))));
        }

        let mut orders_service = None;
        if services.contains(emporium_orders::SERVICE) {
            let (Some(users), Some(inventory), Some(cart), Some(payments), Some(delivery)) =
                (&users_service, &inventory_service, &cart_service, &payments_service, &delivery_service)
            else {
                anyhow::bail!(
                    "orders run the checkout across users, inventory, cart, payments and delivery: run them together"
                );
            };
            let db = open(emporium_orders::SERVICE, emporium_orders::migrations()).await?;
            let clients = emporium_orders::service::OrderClients {
                cart: emporium_cart::CartClient::local(cart.clone()),
                users: UsersClient::local(users.clone()),
                inventory: InventoryClient::local(inventory.clone()),
                payments: PaymentsClient::local(payments.clone()),
                delivery: emporium_delivery::DeliveryClient::local(delivery.clone()),
            };
            let order_settings = emporium_orders::service::OrderSettings {
                return_window: chrono::Duration::days(settings.return_window_days as i64),
                restock_returns: settings.restock_returns,
            };
            let failpoint =
                std::env::var("EMPORIUM_FAILPOINT").ok().and_then(|f| emporium_orders::service::Failpoint::parse(&f));
            let service = Arc::new(OrdersService::new(db, clock.clone(), clients, order_settings, failpoint));
            bus.subscribe(
                emporium_payments::events::SOURCE,
                Arc::new(emporium_orders::events::PaymentOutcomes::new(service.clone())),
            );
            bus.subscribe(
                emporium_orders::events::SOURCE,
                Arc::new(emporium_orders::events::WarehouseAssignment::new(service.clone())),
            );
            bus.subscribe(
                emporium_orders::events::SOURCE,
                Arc::new(emporium_orders::events::DeliveryRequests::new(service.clone())),
            );
            bus.subscribe(
                emporium_delivery::events::SOURCE,
                Arc::new(emporium_orders::events::DeliveryPartners::new(service.clone())),
            );
            orders_service = Some(service);
        }
        if let (Some(_), Some(catalog)) = (&orders_service, &catalog_service) {
            let projection = emporium_catalog::events::PurchaseProjection::new(catalog.clone());
            bus.subscribe(emporium_orders::events::SOURCE, Arc::new(projection));
        }

        if let (Some(_), Some(catalog)) = (&inventory_service, &catalog_service) {
            let projection = emporium_catalog::events::StockProjection::new(catalog.clone());
            bus.subscribe(emporium_inventory::events::SOURCE, Arc::new(projection));
        }

        let mut search_service = None;
        if services.contains(emporium_search::SERVICE) {
            anyhow::ensure!(
                catalog_service.is_some(),
                "the search service is fed by catalog events: run it in the same process as catalog (split mode needs the Kafka bus)"
            );
            let mut synonyms = emporium_search::model::Synonyms::defaults();
            if let Ok(extra) = std::env::var("EMPORIUM_SEARCH_SYNONYMS") {
                synonyms.extend_from_config(&extra);
            }
            let mut service = SearchService::open(&settings.data_dir.join("search"), synonyms)?;
            if let Some(users) = &users_service {
                service = service.with_users(UsersClient::local(users.clone()));
            }
            let service = Arc::new(service);
            let indexer = Arc::new(emporium_search::events::SearchIndexer::new(&service));
            bus.subscribe(emporium_catalog::events::SOURCE, indexer.clone());
            if inventory_service.is_some() {
                bus.subscribe(emporium_inventory::events::SOURCE, indexer);
            }
            search_service = Some(service);
        }

        let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi());
        if let Some(service) = &users_service {
            let after_sign_in = cart_service.clone().map(|cart| cart as Arc<dyn emporium_users::AfterSignIn>);
            api = api.merge(emporium_users::http::router(service.clone(), auth_limit.clone(), after_sign_in));
        }
        if let Some(service) = &catalog_service {
            api = api.merge(emporium_catalog::http::router(service.clone()));
        }
        if let Some(service) = &inventory_service {
            api = api.merge(emporium_inventory::http::router(service.clone()));
        }
        if let Some(service) = &cart_service {
            api = api.merge(emporium_cart::http::router(service.clone()));
        }
        if let Some(service) = &payments_service {
            api = api.merge(emporium_payments::http::router(service.clone()));
        }
        if let Some(service) = &delivery_service {
            api = api.merge(emporium_delivery::http::router(service.clone()));
        }
        if let Some(service) = &orders_service {
            api = api.merge(emporium_orders::http::router(service.clone()));
        }
        if let Some(service) = &search_service {
            api = api.merge(emporium_search::http::router(service.clone()));
        }

        let (api_router, mut openapi) = OpenApiRouter::new()
            .nest("/api/v1", api)
            .merge(health::router(health::Dependencies { databases: databases.clone(), cache: shared_cache }))
            .split_for_parts();
        // The outer router's document starts from utoipa-axum's defaults: the API's own title,
        // version and licence are put back.
        openapi.info = ApiDoc::openapi().info;
        openapi.paths.paths.insert(
            "/api/v1/openapi.json".into(),
            utoipa::openapi::path::PathItem::new(
                utoipa::openapi::HttpMethod::Get,
                utoipa::openapi::path::OperationBuilder::new()
                    .summary(Some("This OpenAPI 3.1 document"))
                    .tag("operations")
                    .response("200", utoipa::openapi::Response::new("the OpenAPI document")),
            ),
        );
        let document = Arc::new(openapi.clone());
        let router = api_router
            .route("/api/v1/openapi.json", get(move || async move { axum::Json(document.as_ref().clone()) }))
            .route("/metrics", get(render_metrics))
            .route("/problems/{code}", get(describe_problem));
        // Install the recorder before the first request so every metric is captured.
        emporium_kernel::telemetry::metrics_handle();
        let router = edge(
            router,
            EdgeConfig {
                auth: Authenticator {
                    keys,
                    versions: users_service.clone().map(|users| users as Arc<dyn TokenVersions>),
                },
                api_limiter: limiter(Quota::per_second(settings.rate_limit_api)),
                trust_forwarded_for: settings.trust_forwarded_for,
                body_limit_bytes: settings.body_limit_bytes,
                request_timeout: Duration::from_secs(settings.request_timeout_secs.max(1)),
            },
        );

        Ok(App {
            users: users_service.clone().map(UsersClient::local),
            users_service,
            catalog: catalog_service.clone().map(CatalogClient::local),
            catalog_service,
            inventory: inventory_service.clone().map(InventoryClient::local),
            inventory_service,
            cart_service,
            payments_service,
            delivery_service,
            orders_service,
            search_service,
            router,
            openapi,
            databases,
            bus,
            settings,
            shutdown: CancellationToken::new(),
        })
    }

    /// The users service itself, for the CLI and the demo seed (other services use the client).
    pub fn users_service(&self) -> Option<&Arc<UsersService>> {
        self.users_service.as_ref()
    }

    pub fn catalog_service(&self) -> Option<&Arc<CatalogService>> {
        self.catalog_service.as_ref()
    }

    pub fn inventory_service(&self) -> Option<&Arc<InventoryService>> {
        self.inventory_service.as_ref()
    }

    pub fn cart_service(&self) -> Option<&Arc<CartService>> {
        self.cart_service.as_ref()
    }

    pub fn payments_service(&self) -> Option<&Arc<PaymentsService>> {
        self.payments_service.as_ref()
    }

    pub fn delivery_service(&self) -> Option<&Arc<DeliveryService>> {
        self.delivery_service.as_ref()
    }

    pub fn orders_service(&self) -> Option<&Arc<OrdersService>> {
        self.orders_service.as_ref()
    }

    pub fn search_service(&self) -> Option<&Arc<SearchService>> {
        self.search_service.as_ref()
    }

    /// A token that stops the server and background work when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: in-flight requests finish,
    /// event deliveries stop at an event boundary, databases close.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        self.rebuild_a_new_search_index().await?;
        self.bus.start(self.shutdown.clone())?;
        let maintenance = self.spawn_maintenance();
        if let Some(inventory) = &self.inventory_service {
            let interval = Duration::from_millis(self.settings.reservation_sweep_ms.max(10));
            tokio::spawn(inventory.clone().run_sweeper(interval, self.shutdown.clone()));
        }
        if let Some(payments) = &self.payments_service {
            tokio::spawn(payments.clone().run_worker(Duration::from_secs(1), self.shutdown.clone()));
        }
        if let Some(orders) = &self.orders_service {
            let interval = Duration::from_millis(self.settings.order_sweep_ms.max(10));
            tokio::spawn(orders.clone().run_worker(interval, self.shutdown.clone()));
        }
        let shutdown = self.shutdown.clone();
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("http server failed")?;
        self.shutdown.cancel();
        self.bus.join().await;
        if let Some(search) = &self.search_service {
            search.indexer().close().await;
        }
        maintenance.abort();
        for db in &self.databases {
            db.close().await;
        }
        tracing::info!("shut down cleanly");
        Ok(())
    }

    /// A new search index (first start, a schema change, a lost directory) that the catalog has
    /// products for is rebuilt from the catalog before events flow. Replaying the catalog's
    /// events would not do: the outbox keeps them only `outbox_retention_days`.
    async fn rebuild_a_new_search_index(&self) -> anyhow::Result<()> {
        let (Some(search), Some(catalog)) = (&self.search_service, &self.catalog_service) else { return Ok(()) };
        if search.indexer().checkpoint(emporium_catalog::events::SOURCE) != 0 || catalog.count_products().await? == 0 {
            return Ok(());
        }
        tracing::info!("the search index is new: rebuilding it from the catalog");
        let indexed = self.reindex_search().await?;
        tracing::info!(indexed, "search index rebuilt");
        Ok(())
    }

    /// Rebuilds the search index from the catalog, with progress on stderr.
    pub async fn reindex_search(&self) -> anyhow::Result<usize> {
        let search = self.search_service.as_ref().context("the search service is not running here")?;
        let catalog = self.catalog.as_ref().context("reindexing reads the catalog")?;
        let catalog_db =
            self.databases.iter().find(|db| db.service() == emporium_catalog::SERVICE).context("catalog database")?;
        // Read the event position first: changes made during the scan are re-applied from it.
        let position = emporium_kernel::events::OutboxStats::read(catalog_db).await?.max_seq;
        let total = self.catalog_service.as_ref().context("catalog")?.count_products().await?;
        let mut progress = crate::progress::Progress::new("indexing products", total as u64);
        let indexed = search.reindex(catalog, position, |n| progress.update(n as u64)).await?;
        progress.finish(indexed as u64);
        Ok(indexed)
    }

    /// Releases what a one-shot command opened (index writer, pools) without serving.
    pub async fn close(self) {
        if let Some(search) = &self.search_service {
            search.indexer().close().await;
        }
        for db in &self.databases {
            db.close().await;
        }
    }

    /// Periodic housekeeping that no request should pay for.
    fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let users = self.users_service.clone();
        let carts = self.cart_service.clone();
        let databases = self.databases.clone();
        let retention = chrono::Duration::days(self.settings.outbox_retention_days.max(1) as i64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(carts) = &carts {
                    match carts.purge_expired().await {
                        Ok(n) if n > 0 => tracing::info!(removed = n, "purged idle carts"),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "purging idle carts failed"),
                    }
                }
                for db in &databases {
                    match emporium_kernel::events::prune(db, chrono::Utc::now() - retention).await {
                        Ok(p) if p.events + p.processed > 0 => tracing::info!(
                            service = db.service(),
                            events = p.events,
                            processed = p.processed,
                            "pruned delivered events"
                        ),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(service = db.service(), error = %err, "pruning the outbox failed"),
                    }
                }
                if let Some(users) = &users {
                    match users.purge_expired_tokens().await {
                        Ok(n) if n > 0 => {
                            tracing::info!(removed = n, "purged expired refresh tokens")
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "purging expired refresh tokens failed")
                        }
                    }
                }
            }
        })
    }
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

fn limiter(quota: Option<Quota>) -> Option<Arc<dyn RateLimiter>> {
    quota.map(|q| Arc::new(KeyedLimiter::new(q)) as Arc<dyn RateLimiter>)
}

/// The payments service with its gateways in the configured order (`payment_gateways`).
fn payments(settings: &Settings, db: Db, clock: SharedClock, jwt_secret: &str) -> anyhow::Result<PaymentsService> {
    use emporium_payments::gateway::Gateway;
    let (webhooks, deliveries) = tokio::sync::mpsc::unbounded_channel();
    let mut gateways: Vec<Arc<dyn Gateway>> = Vec::new();
    for name in settings.payment_gateways.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            emporium_payments::sandbox::NAME => {
                // Without a configured secret the sandbox signs with one derived from the JWT
                // secret: stable across restarts, never the JWT secret itself.
                let secret = match &settings.sandbox_webhook_secret {
                    Some(s) => s.expose().clone(),
                    None => emporium_kernel::sha256_hex(format!("sandbox-webhook:{jwt_secret}")),
                };
                gateways.push(Arc::new(emporium_payments::sandbox::SandboxGateway::new(
                    db.clone(),
                    clock.clone(),
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
    Ok(PaymentsService::new(db, clock, gateways, timeout, deliveries).with_failpoint(failpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_lists_are_checked() {
        assert!(ServiceSet::parse("all").unwrap().contains("users"));
        assert!(ServiceSet::parse(" users ").unwrap().contains("users"));
        assert!(!ServiceSet::parse("users").unwrap().contains("catalog"));
        let err = ServiceSet::parse("users,serach").unwrap_err().to_string();
        assert!(err.contains("serach") && err.contains("known services"), "{err}");
        assert!(ServiceSet::parse(",").is_err());
    }
}
