//! `emporium-bench checkout`: confirmed checkouts per second through the whole saga (cart
//! re-priced, stock held, sandbox charge, reservation committed, cart emptied, events out), on
//! SQLite and PostgreSQL, next to pgbench on the same server; then the hot run (every cart four
//! of the same six products, so checkouts contend for the same stock rows; `--hot` runs it alone)
//! with its failures, which must be 0; then a flash sale (thousands of buyers, a few units of one
//! product) reporting oversell and how fast sold-out answers come.
//!
//! The app runs whole, as `serve` runs it (event relays, the order, payment and reservation
//! workers), so the background work a checkout causes is paid during the run, not after it.

use crate::measure::{CpuTimes, Stats, context_switches};
use anyhow::Context;
use emporium::App;
use emporium_cart::CartService;
use emporium_cart::model::CartOwner;
use emporium_inventory::InventoryService;
use emporium_kernel::config::{Secret, Settings};
use emporium_kernel::db::Db;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{AddressId, ProductId, UserId};
use emporium_orders::OrdersService;
use emporium_orders::service::OrdersError;
use emporium_users::model::{AddressInput, Email, PersonName};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct CheckoutBenchOptions {
    pub seconds: u64,
    /// Concurrent shoppers, each with an account, an address and a cart of its own.
    pub concurrency: usize,
    pub products: u64,
    pub flash_buyers: usize,
    pub flash_units: i64,
    /// PostgreSQL server for the PostgreSQL runs (its own database); `None` skips them.
    pub pg_url: Option<String>,
    /// Whether to run on SQLite too.
    pub sqlite: bool,
    /// Only the hot run (every cart four of the same six products), not the spread one, the
    /// baselines or the flash sale.
    pub hot_only: bool,
}

/// What each shopper puts in the cart before every checkout.
#[derive(Clone, Copy)]
enum Basket {
    /// 1–3 products drawn from the whole catalogue, 1–2 units each.
    Spread,
    /// `lines` distinct products out of the first `of`, one unit each: every checkout competes
    /// for the same few stock rows, which is where writers' lock order matters.
    Hot { lines: usize, of: usize },
}

const HOT: Basket = Basket::Hot { lines: 4, of: 6 };

impl Basket {
    fn label(self) -> String {
        match self {
            Basket::Spread => "checkout + pay (1–3 lines, sandbox card)".into(),
            Basket::Hot { lines, of } => format!("hot: checkout + pay ({lines} of the same {of} products)"),
        }
    }
}

/// Units per product and warehouse in the steady run: no checkout ever finds a line short.
const PLENTY: i64 = 1_000_000;
/// The sandbox's always-succeeding test card.
const CARD: &str = "tok_visa";

pub async fn run_checkout_bench(options: CheckoutBenchOptions) -> anyhow::Result<()> {
    if let (true, Basket::Hot { lines, of }) = (options.hot_only, HOT) {
        println!(
            "# Checkout benchmark, hot run only: {} s, {} concurrent shoppers, each cart {lines} of the same {of} products\n",
            options.seconds, options.concurrency
        );
    } else {
        println!(
            "# Checkout benchmark: {} s, {} concurrent shoppers, {} products; flash sale {} buyers for {} units\n",
            options.seconds, options.concurrency, options.products, options.flash_buyers, options.flash_units
        );
    }
    let dir = std::env::temp_dir().join(format!("emporium-bench-checkout-{}", std::process::id()));
    if options.sqlite {
        let confirmed = bench_backend("SQLite", settings(&dir.join("sqlite"), None), &options).await?;
        if !options.hot_only {
            sqlite_baselines(&dir.join("baselines"), confirmed, &options).await?;
        }
    }

    if let Some(url) = &options.pg_url {
        crate::reserve::reset_schemas(url, emporium::app::ALL_SERVICES).await?;
        let confirmed = bench_backend("PostgreSQL", settings(&dir.join("postgres"), Some(url)), &options).await?;
        match crate::reserve::pgbench(url, options.concurrency, options.seconds) {
            Ok(tps) if options.hot_only => println!(
                "pgbench simple-update, {} clients: {tps:.0} tps; hot checkout + pay / pgbench: {:.3} ×\n",
                options.concurrency,
                confirmed / tps
            ),
            Ok(tps) => println!(
                "pgbench simple-update, {} clients: {tps:.0} tps; checkout + pay / pgbench: **{:.3} ×** (target 0.4 ×)\n",
                options.concurrency,
                confirmed / tps
            ),
            Err(err) => println!("pgbench baseline skipped: {err:#}\n"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// SQLite's own baselines (`sqlite`), next to the app's `confirmed` checkouts/s.
async fn sqlite_baselines(dir: &std::path::Path, confirmed: f64, options: &CheckoutBenchOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (dir, seconds) = (dir.to_owned(), Duration::from_secs(options.seconds));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = options.concurrency;
    let (simple, bare, statements) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        use crate::sqlite::{PGBENCH_ACCOUNTS, STATEMENTS_ONLY, checkout_writes, simple_update};
        Ok((
            simple_update(&dir, PGBENCH_ACCOUNTS, seconds)?,
            checkout_writes(&dir, workers, seconds, 1)?,
            checkout_writes(&dir, workers, seconds, STATEMENTS_ONLY)?,
        ))
    })
    .await??;
    println!("SQLite alone on this machine, same run (rusqlite, no app around it; {cores} cores):\n");
    println!("| baseline | ops/s | p50 ms | p95 ms | p99 ms | ops | errors |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", simple.stats.row("pgbench's simple-update on one file, 1 thread"));
    println!("{}", bare.stats.row(&format!("a checkout cycle's 11 commits in 4 files, bare, {workers} threads")));
    println!(
        "{}",
        statements.stats.row(&format!(
            "the same statements, a COMMIT per {} steps (not durable step by step)",
            crate::sqlite::STATEMENTS_ONLY
        ))
    );
    println!(
        "\nCPU of this process per op: simple-update {:.3} ms; bare checkout cycle {:.3} ms, of which its \
         statements {:.3} ms and its 11 COMMITs the rest; the app: see above. checkout + pay / \
         simple-update: **{:.3} ×**; checkout + pay / bare checkout cycle: **{:.3} ×** (the target, 5,000 \
         checkouts/s, is {:.2} × the bare cycle)\n",
        simple.cpu_ms_per_op,
        bare.cpu_ms_per_op,
        statements.cpu_ms_per_op,
        confirmed / simple.stats.qps,
        confirmed / bare.stats.qps,
        5_000.0 / bare.stats.qps
    );
    Ok(())
}

fn settings(dir: &std::path::Path, pg_url: Option<&str>) -> Settings {
    Settings {
        data_dir: dir.to_owned(),
        database_url: pg_url.map(|u| Secret::new(u.to_owned())),
        log_level: "warn".into(),
        rate_limit_api: 0,
        rate_limit_auth: 0,
        ..Settings::default()
    }
}

/// The services one run talks to, taken from the app before it starts serving.
struct Shop {
    orders: Arc<OrdersService>,
    cart: Arc<CartService>,
    inventory: Arc<InventoryService>,
}

struct Shopper {
    user: UserId,
    address: AddressId,
}

/// Runs one backend's steady run and flash sale, printing both; returns confirmed checkouts/s.
async fn bench_backend(name: &str, settings: Settings, options: &CheckoutBenchOptions) -> anyhow::Result<f64> {
    let app = App::build(settings).await?;
    let flash_buyers = if options.hot_only { 0 } else { options.flash_buyers };
    eprintln!(
        "{name}: seeding {} products, {} shoppers, {flash_buyers} flash-sale buyers",
        options.products, options.concurrency
    );
    // One more product than asked: the last one is the flash sale's.
    emporium::seed::load::seed_products(&app, options.products + 1).await?;
    let mut products = product_ids(&app).await?;
    let flash_product = products.pop().context("no products")?;
    let shop = Shop {
        orders: app.orders_service().context("orders")?.clone(),
        cart: app.cart_service().context("cart")?.clone(),
        inventory: app.inventory_service().context("inventory")?.clone(),
    };
    let warehouses = crate::reserve::two_warehouses(&shop.inventory).await?;
    // Every product in one warehouse, every third in both: some orders split in two.
    for (i, product) in products.iter().enumerate() {
        shop.inventory.intake("bench", warehouses[i % 2], *product, PLENTY, None).await?;
        if i % 3 == 0 {
            shop.inventory.intake("bench", warehouses[(i + 1) % 2], *product, PLENTY, None).await?;
        }
    }
    shop.inventory.intake("bench", warehouses[0], flash_product, options.flash_units, None).await?;
    // A delivery partner at each warehouse with room for every job: each warehouse order is
    // assigned, the background work a shop with carriers pays.
    let delivery = app.delivery_service().context("delivery")?;
    for (name, lat, lon) in [("Berlin courier", 52.52, 13.405), ("Hamburg courier", 53.55, 9.99)] {
        delivery
            .create_partner(emporium_delivery::service::NewPartner {
                name: name.into(),
                email: None,
                phone: None,
                base: emporium_kernel::geo::GeoPoint::new(lat, lon).map_err(anyhow::Error::msg)?,
                radius_km: 500.0,
                postal_prefixes: vec![],
                capacity: 100_000,
                max_units: 100,
            })
            .await?;
    }
    let shoppers = create_shoppers(&app, "shopper", options.concurrency).await?;
    let buyers = create_shoppers(&app, "buyer", flash_buyers).await?;
    // Everyone has the product in their cart when the sale opens.
    for buyer in &buyers {
        shop.cart.add_item(&CartOwner::User(buyer.user), flash_product, 1).await?;
    }

    let shutdown = app.shutdown_token();
    let databases = app.databases.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = tokio::spawn(app.serve(listener));

    println!("## {name}\n");
    let run =
        |basket, seconds| measured_run(&shop, &databases, &shoppers, &products, basket, Duration::from_secs(seconds));
    if options.hot_only {
        let hot = run(HOT, options.seconds).await?;
        shutdown.cancel();
        server.await??;
        return Ok(hot);
    }
    let confirmed = run(Basket::Spread, options.seconds).await?;
    run(HOT, options.seconds).await?;

    let flash = flash_sale(&shop, &buyers, flash_product, options.flash_units).await?;
    println!(
        "flash sale, {} buyers at once for {} units: {} confirmed ({} units sold), {} sold out, {} other \
         errors in {:.2} s; **oversold {}**; stock consistent: {}; sold-out answers {:.0}/s, p50 {:.2} ms, \
         p99 {:.2} ms\n",
        buyers.len(),
        options.flash_units,
        flash.confirmed,
        flash.sold_units,
        flash.sold_out.requests,
        flash.errors,
        flash.elapsed.as_secs_f64(),
        flash.oversold,
        flash.consistent,
        flash.sold_out.qps,
        flash.sold_out.p50.as_secs_f64() * 1000.0,
        flash.sold_out.p99.as_secs_f64() * 1000.0,
    );
    shutdown.cancel();
    server.await??;
    Ok(confirmed)
}

/// One measured run of `basket`s: prints its table and what a confirmed checkout cost (round
/// trips, commits, CPU); returns confirmed checkouts/s.
async fn measured_run(
    shop: &Shop,
    databases: &[Db],
    shoppers: &[Shopper],
    products: &[ProductId],
    basket: Basket,
    duration: Duration,
) -> anyhow::Result<f64> {
    let (trips_before, commits_before) = (emporium_kernel::db::round_trips(), emporium_kernel::db::commits());
    let by_service_before: Vec<(u64, u64)> = databases.iter().map(|db| (db.round_trips(), db.commits())).collect();
    let group_commits = || databases.iter().filter_map(Db::group_commits).sum::<u64>();
    let group_commits_before = group_commits();
    let busy_before: Vec<Option<Duration>> = databases.iter().map(Db::writer_busy).collect();
    let (cpu_before, switches_before) = (CpuTimes::now(), context_switches());
    let steady_began = std::time::Instant::now();
    let steady = steady_run(shop, shoppers, products, basket, duration).await?;
    let steady_wall = steady_began.elapsed();
    let (cpu, switches) = (CpuTimes::now().since(&cpu_before).own, context_switches().saturating_sub(switches_before));
    let trips = emporium_kernel::db::round_trips() - trips_before;
    let commits = emporium_kernel::db::commits() - commits_before;
    let group_commits = group_commits() - group_commits_before;
    let writers_busy: Vec<String> = databases
        .iter()
        .zip(&busy_before)
        .filter_map(|(db, before)| {
            let busy = db.writer_busy()?.saturating_sub((*before)?);
            Some(format!("{} {:.0}%", db.service(), 100.0 * busy.as_secs_f64() / steady_wall.as_secs_f64()))
        })
        .collect();
    let by_service: Vec<(&'static str, u64, u64)> = databases
        .iter()
        .zip(&by_service_before)
        .map(|(db, before)| (db.service(), db.round_trips() - before.0, db.commits() - before.1))
        .collect();
    println!("| run | confirmed/s | p50 ms | p95 ms | p99 ms | checkouts | failed |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", steady.checkout.row(&basket.label()));
    println!("{}", steady.cart.row("add to cart (between checkouts)"));
    println!();
    for (reason, count) in &steady.failures {
        println!("failed checkout ({count}×): {reason}");
    }
    println!("failed checkouts: **{}** (refused for stock: {})\n", steady.checkout.errors, steady.refused);
    // The driver's floor: what one statement costs end to end, times the statements a checkout
    // needs, bounds checkouts/s whatever the statements do.
    let confirmed = (steady.checkout.requests - steady.checkout.errors).max(1);
    let per_checkout = trips as f64 / confirmed as f64;
    // Background work left over from the run (dispatch, indexing) competes for the CPU at
    // first: the best of three one-second rounds is the floor.
    let mut floor: f64 = 0.0;
    for _ in 0..3 {
        floor = floor.max(round_trip_floor(shop.orders.db(), shoppers.len(), Duration::from_secs(1)).await?);
    }
    println!(
        "round trips per confirmed checkout (its cart adds and background work included): {per_checkout:.1}; \
         `SELECT 1` round trips, {} tasks, best of 3 s: {floor:.0}/s; so at most {:.0} checkouts/s with this many round trips\n",
        shoppers.len(),
        floor / per_checkout
    );
    // Near all cores, checkouts/s is bound by CPU per checkout; well below, by waiting (a
    // writer's turn, a WAL flush).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "this process's CPU during the run: {:.2} of {cores} cores; {:.2} ms and {:.0} context switches per \
         confirmed checkout\n",
        cpu / steady_wall.as_secs_f64(),
        1000.0 * cpu / confirmed as f64,
        switches as f64 / confirmed as f64
    );
    // On PostgreSQL every commit waits for its WAL flush: pgbench's transaction is one such commit.
    let per_service = |count: fn(&(&'static str, u64, u64)) -> u64| {
        by_service
            .iter()
            .map(|counts| format!("{} {:.2}", counts.0, count(counts) as f64 / confirmed as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("round trips per confirmed checkout, by database: {}\n", per_service(|c| c.1));
    println!(
        "commits that wrote, per confirmed checkout (same scope): {:.1} ({})\n",
        commits as f64 / confirmed as f64,
        per_service(|c| c.2)
    );
    if group_commits > 0 {
        // SQLite writers queued behind each other share a COMMIT (kernel `db::group`).
        println!(
            "SQLite COMMITs sent per confirmed checkout: {:.1} ({:.1} commits that wrote per COMMIT)\n",
            group_commits as f64 / confirmed as f64,
            commits as f64 / group_commits as f64
        );
        // Writes to one SQLite file take turns: a writer near 100% caps checkouts/s whatever
        // else is idle.
        println!("SQLite writer's turn held, share of the run: {}\n", writers_busy.join(", "));
    }

    Ok(steady.checkout.qps)
}

/// Round trips per second of the cheapest statement from `tasks` concurrent tasks, through the
/// same connections and driver the services use.
async fn round_trip_floor(db: &Db, tasks: usize, duration: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut running = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let db = db.clone();
        running.push(tokio::spawn(async move {
            let mut trips = 0u64;
            while Instant::now() < deadline {
                let one: i32 = emporium_kernel::sql!(db, |c| sqlx::query_scalar("SELECT 1").fetch_one(c).await)?;
                anyhow::ensure!(one == 1, "SELECT 1 answered {one}");
                trips += 1;
            }
            Ok(trips)
        }));
    }
    let mut trips = 0;
    for task in running {
        trips += task.await??;
    }
    Ok(trips as f64 / start.elapsed().as_secs_f64())
}

async fn product_ids(app: &App) -> anyhow::Result<Vec<ProductId>> {
    let catalog = app.catalog_service().context("catalog")?;
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let batch = catalog.products_batch(after, 1_000).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.id);
        ids.extend(batch.iter().map(|p| p.id));
    }
    Ok(ids)
}

/// `count` customers with one address each, created in bulk (no argon2 per account).
async fn create_shoppers(app: &App, prefix: &str, count: usize) -> anyhow::Result<Vec<Shopper>> {
    let users = app.users_service().context("users")?;
    let mut shoppers = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(1_000) {
        let people = (chunk_start..count.min(chunk_start + 1_000))
            .map(|i| {
                let email = Email::parse(&format!("{prefix}{i}@bench.emporium.dev")).map_err(anyhow::Error::msg)?;
                let name = PersonName::parse(&format!("Shopper {i}")).map_err(anyhow::Error::msg)?;
                Ok((email, name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for user in users.import_customers(people).await? {
            let address = users
                .add_address(
                    user.id,
                    AddressInput {
                        label: None,
                        line1: "Friedrichstraße 1".into(),
                        line2: None,
                        city: "Berlin".into(),
                        region: None,
                        postal_code: "10117".into(),
                        country: "DE".into(),
                        location: Some(GeoPoint::new(52.52, 13.39).map_err(anyhow::Error::msg)?),
                        is_default: true,
                    },
                )
                .await?;
            shoppers.push(Shopper { user: user.id, address: address.id });
        }
    }
    Ok(shoppers)
}

struct SteadyRun {
    checkout: Stats,
    /// Checkouts refused for stock (counted among the checkout's errors too).
    refused: usize,
    cart: Stats,
    /// Why checkouts failed (a pending payment counts), each reason with how often.
    failures: std::collections::BTreeMap<String, usize>,
}

/// Every shopper, in a loop: fill the cart as `basket` says, then check out and pay in one call
/// with an idempotency key, as `POST /orders` does.
async fn steady_run(
    shop: &Shop,
    shoppers: &[Shopper],
    products: &[ProductId],
    basket: Basket,
    duration: Duration,
) -> anyhow::Result<SteadyRun> {
    let products = Arc::new(products.to_vec());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (n, shopper) in shoppers.iter().enumerate() {
        let (orders, cart, products) = (shop.orders.clone(), shop.cart.clone(), products.clone());
        let (user, address) = (shopper.user, shopper.address);
        tasks.push(tokio::spawn(async move {
            let mut checkouts = (Vec::new(), 0usize);
            let mut refused = 0usize;
            let mut failures: Vec<String> = Vec::new();
            let mut adds = (Vec::new(), 0usize);
            let mut rng = n as u64 * 0x9E37_79B9 + 1;
            let owner = CartOwner::User(user);
            let mut round = 0u64;
            while Instant::now() < deadline {
                let picks: Vec<(ProductId, i64)> = match basket {
                    Basket::Spread => (0..=next(&mut rng) % 3)
                        .map(|_| {
                            let product = products[(next(&mut rng) % products.len() as u64) as usize];
                            (product, 1 + (next(&mut rng) % 2) as i64)
                        })
                        .collect(),
                    Basket::Hot { lines, of } => {
                        let of = of.min(products.len());
                        let first = (next(&mut rng) % of as u64) as usize;
                        (0..lines.min(of)).map(|k| (products[(first + k) % of], 1)).collect()
                    }
                };
                for (product, quantity) in picks {
                    let began = Instant::now();
                    let added = cart.add_item(&owner, product, quantity).await;
                    adds.0.push(began.elapsed());
                    if let Err(err) = added {
                        tracing::warn!(error = %err, "add to cart failed");
                        adds.1 += 1;
                    }
                }
                let tag = if matches!(basket, Basket::Spread) { "spread" } else { "hot" };
                let key = format!("bench-{tag}-{n}-{round}");
                round += 1;
                let began = Instant::now();
                let placed = orders.place_order(user, address, CARD, Some(&key)).await;
                checkouts.0.push(began.elapsed());
                match placed {
                    Ok(outcome) if !outcome.pending => {}
                    Ok(outcome) => {
                        checkouts.1 += 1;
                        failures.push(format!("payment still pending ({:?})", outcome.order.payment));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "checkout failed");
                        checkouts.1 += 1;
                        if matches!(err, OrdersError::OutOfStock(_)) {
                            refused += 1;
                        }
                        failures.push(format!("{err:?}"));
                    }
                }
            }
            (checkouts, adds, failures, refused)
        }));
    }
    let (mut checkout_latencies, mut checkout_errors) = (Vec::new(), 0);
    let (mut add_latencies, mut add_errors) = (Vec::new(), 0);
    let mut failures = std::collections::BTreeMap::new();
    let mut refused = 0;
    for task in tasks {
        let ((c, ce), (a, ae), reasons, r) = task.await?;
        refused += r;
        for reason in reasons {
            *failures.entry(reason).or_insert(0) += 1;
        }
        checkout_latencies.extend(c);
        checkout_errors += ce;
        add_latencies.extend(a);
        add_errors += ae;
    }
    let elapsed = start.elapsed();
    Ok(SteadyRun {
        checkout: confirmed_stats(checkout_latencies, checkout_errors, elapsed),
        refused,
        cart: Stats::from_latencies(add_latencies, add_errors, elapsed),
        failures,
    })
}

/// Stats whose rate counts successes only (confirmed checkouts, not attempts).
fn confirmed_stats(latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Stats {
    let mut stats = Stats::from_latencies(latencies, errors, elapsed);
    stats.qps = (stats.requests - errors) as f64 / elapsed.as_secs_f64();
    stats
}

/// xorshift: a deterministic spread of products and quantities per shopper (and of the SQLite
/// baselines' picks). The state must not be 0.
pub(crate) fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct FlashSale {
    confirmed: usize,
    sold_units: i64,
    sold_out: Stats,
    errors: usize,
    /// Units sold beyond the stock: must be 0.
    oversold: i64,
    /// Every stock row of the product adds up and nothing is negative.
    consistent: bool,
    elapsed: Duration,
}

/// Every buyer checks out at once; exactly `units` may succeed, the rest must hear "sold out".
async fn flash_sale(shop: &Shop, buyers: &[Shopper], product: ProductId, units: i64) -> anyhow::Result<FlashSale> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(buyers.len());
    for (n, buyer) in buyers.iter().enumerate() {
        let orders = shop.orders.clone();
        let (user, address) = (buyer.user, buyer.address);
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let key = format!("flash-{n}");
            let outcome = orders.place_order(user, address, CARD, Some(&key)).await;
            (began.elapsed(), outcome.map(|o| o.order.lines.iter().map(|l| l.quantity).sum::<i64>()))
        }));
    }
    let (mut confirmed, mut sold_units, mut errors) = (0, 0, 0);
    let mut sold_out = Vec::new();
    for task in tasks {
        match task.await? {
            (_, Ok(quantity)) => {
                confirmed += 1;
                sold_units += quantity;
            }
            (latency, Err(OrdersError::OutOfStock(_))) => sold_out.push(latency),
            (_, Err(err)) => {
                tracing::warn!(error = %err, "flash-sale checkout failed");
                errors += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    let levels = shop.inventory.aggregated(&[product]).await?;
    let stock = levels.get(&product).context("the flash product has stock rows")?;
    let audit = shop.inventory.audit().await?;
    Ok(FlashSale {
        confirmed,
        sold_units,
        sold_out: Stats::from_latencies(sold_out, 0, elapsed),
        errors,
        oversold: (sold_units - units).max(0).max(stock.allocated + stock.shipped - units),
        consistent: stock.is_consistent() && stock.on_hand == units && audit.is_empty(),
        elapsed,
    })
}
