//! Assembles the application from settings: builds each selected service in dependency order
//! (each in its own function, see `wiring`), and mounts every router behind the shared HTTP edge.

use crate::{health, wiring};
use anyhow::Context;
use axum::Router;
use axum::routing::get;
use emporium_cart::CartService;
use emporium_catalog::CatalogService;
use emporium_catalog::api::CatalogClient;
use emporium_delivery::DeliveryService;
use emporium_inventory::InventoryService;
use emporium_inventory::api::InventoryClient;
use emporium_kernel::auth::{Authenticator, TokenKeys, TokenVersions};
use emporium_kernel::clock::{self, SharedClock};
use emporium_kernel::config::{Settings, resolve_jwt_secret};
use emporium_kernel::db::Db;
use emporium_kernel::events::{EventBus, InProcessBus, InProcessBusOptions};
use emporium_kernel::http::{EdgeConfig, RateLimitScope, RateLimitState, describe_problem, edge, render_metrics};
use emporium_kernel::ratelimit::{KeyedLimiter, Quota, RateLimiter};
use emporium_orders::OrdersService;
use emporium_payments::PaymentsService;
use emporium_search::SearchService;
use emporium_users::UsersService;
use emporium_users::api::UsersClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

/// After a stop is asked for, requests still running get this long to finish, and then event
/// deliveries and the search index's last commit as long again; the process then stops without
/// them. What they leave half done is what a crash leaves, and every service recovers that at its
/// next start (unpaid checkouts are adopted or expired, undelivered events are delivered again),
/// so a bounded stop loses nothing and an operator's SIGTERM is never stuck behind a slow call.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

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

        let mut w = wiring::Wiring {
            settings: &settings,
            clock: clock.clone(),
            bus: bus.clone(),
            keys: keys.clone(),
            jwt_secret: secret.expose(),
            databases: Vec::new(),
        };
        let wanted = |service: &str| services.contains(service);
        let users_service = if wanted(emporium_users::SERVICE) { Some(wiring::users(&mut w).await?) } else { None };
        let (catalog_service, shared_cache) = if wanted(emporium_catalog::SERVICE) {
            let (service, cache) = wiring::catalog(&mut w).await?;
            (Some(service), Some(cache))
        } else {
            (None, None)
        };
        let inventory_service = if wanted(emporium_inventory::SERVICE) {
            Some(wiring::inventory(&mut w, catalog_service.as_ref()).await?)
        } else {
            None
        };
        let cart_service = if wanted(emporium_cart::SERVICE) {
            Some(
                wiring::cart(&mut w, catalog_service.as_ref(), inventory_service.as_ref(), users_service.as_ref())
                    .await?,
            )
        } else {
            None
        };
        let payments_service =
            if wanted(emporium_payments::SERVICE) { Some(wiring::payments(&mut w).await?) } else { None };
        let delivery_service = if wanted(emporium_delivery::SERVICE) {
            Some(wiring::delivery(&mut w, inventory_service.as_ref()).await?)
        } else {
            None
        };
        let orders_service = if wanted(emporium_orders::SERVICE) {
            let deps = wiring::OrderDependencies {
                users: users_service.as_ref(),
                catalog: catalog_service.as_ref(),
                inventory: inventory_service.as_ref(),
                cart: cart_service.as_ref(),
                payments: payments_service.as_ref(),
                delivery: delivery_service.as_ref(),
            };
            Some(wiring::orders(&mut w, deps).await?)
        } else {
            None
        };
        let search_service = if wanted(emporium_search::SERVICE) {
            Some(wiring::search(&mut w, catalog_service.as_ref(), inventory_service.as_ref(), users_service.as_ref())?)
        } else {
            None
        };
        let databases = w.databases;

        let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi());
        if let Some(service) = &users_service {
            let after_sign_in = cart_service.clone().map(|cart| cart as Arc<dyn emporium_users::api::AfterSignIn>);
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
            users: users_service.clone().map(|u| u as UsersClient),
            users_service,
            catalog: catalog_service.clone().map(|c| c as CatalogClient),
            catalog_service,
            inventory: inventory_service.clone().map(|i| i as InventoryClient),
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
        let server = axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await });
        let asked = self.shutdown.clone();
        let grace_over = async move {
            asked.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = server.into_future() => served.context("http server failed")?,
            () = grace_over => tracing::warn!("requests still running after the shutdown grace; stopping without them"),
        }
        self.shutdown.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.bus.join()).await.is_err() {
            tracing::warn!("event deliveries still running after the shutdown grace; they resume at the next start");
        }
        if let Some(search) = &self.search_service
            && tokio::time::timeout(SHUTDOWN_GRACE, search.indexer().close()).await.is_err()
        {
            tracing::warn!(
                "the search index did not commit within the shutdown grace; it catches up at the next start"
            );
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
        if search.indexer().checkpoint(emporium_catalog::api::events::SOURCE) != 0
            || catalog.count_products().await? == 0
        {
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

fn limiter(quota: Option<Quota>) -> Option<Arc<dyn RateLimiter>> {
    quota.map(|q| Arc::new(KeyedLimiter::new(q)) as Arc<dyn RateLimiter>)
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
