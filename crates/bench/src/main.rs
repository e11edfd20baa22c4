//! `emporium-bench`: the benchmarks, apart from the shop's binary. Each prints p50/p95/p99,
//! throughput and the ratio to a baseline measured in the same run (docs/benchmarks.md).

mod checkout;
mod measure;
mod reserve;
mod search;
mod sqlite;
mod storage;

use clap::{Parser, Subcommand};
use emporium::App;
use emporium::cli::{Overrides, quiet, settings};
use emporium_kernel::config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

/// The shop's allocator (see the `emporium` binary), so what is measured is what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "emporium-bench",
    version,
    about = "Emporium's benchmarks: p50/p95/p99, throughput, and a same-run baseline"
)]
struct Cli {
    /// Config file (TOML; keys as in `emporium config`). Default: ./emporium.toml if present.
    #[arg(long, global = true, env = "EMPORIUM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Search: the engine called directly vs HTTP vs PostgreSQL full-text, on one index.
    Search {
        /// Products in the benchmark catalog (seeded if missing; default data dir ./bench-data).
        #[arg(long, default_value_t = 100_000)]
        products: u64,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent HTTP / PostgreSQL clients.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// PostgreSQL for the full-text baseline (its own database).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/emporium_bench")]
        pg_url: String,
        /// Skip the PostgreSQL baseline.
        #[arg(long)]
        no_postgres: bool,
        /// Only these query kinds (comma-separated: plain, typo, synonym, filtered, faceted,
        /// sorted), to study one kind; the targets are for the whole mix.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Reservations per second (spread and one hot product) on SQLite and PostgreSQL, next to
    /// raw conditional UPDATEs on the same database and pgbench.
    Reserve {
        /// Seconds per measured run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Products the spread runs reserve from.
        #[arg(long, default_value_t = 2_000)]
        products: usize,
        /// PostgreSQL server for the PostgreSQL runs (its own database).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/emporium_bench")]
        pg_url: String,
        /// Skip the PostgreSQL runs.
        #[arg(long)]
        no_postgres: bool,
    },
    /// Confirmed checkouts per second through the whole saga on SQLite and PostgreSQL (next to
    /// pgbench), then a flash sale reporting oversell and sold-out answers per second.
    Checkout {
        /// Seconds of the steady run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent shoppers (each with its own account and cart).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Products the shoppers pick from.
        #[arg(long, default_value_t = 1_000)]
        products: u64,
        /// Buyers arriving at once for the flash sale.
        #[arg(long, default_value_t = 10_000)]
        flash_buyers: usize,
        /// Units on sale in the flash sale.
        #[arg(long, default_value_t = 100)]
        flash_units: i64,
        /// PostgreSQL server for the PostgreSQL runs (its own database).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/emporium_bench")]
        pg_url: String,
        /// Skip the PostgreSQL runs.
        #[arg(long)]
        no_postgres: bool,
        /// Skip the SQLite runs (PostgreSQL and pgbench only).
        #[arg(long, conflicts_with = "no_postgres")]
        no_sqlite: bool,
        /// Only the hot run: every cart four of the same six products, so checkouts compete for
        /// the same stock rows (no spread run, baselines or flash sale).
        #[arg(long)]
        hot: bool,
    },
    /// One checkout-shaped write transaction through the older storage (`kernel::db`) and the
    /// storage layer (`kernel::storage`), on SQLite and PostgreSQL, in the same run.
    Storage {
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Counter rows the writes spread over.
        #[arg(long, default_value_t = 1_000)]
        rows: i64,
        /// PostgreSQL server for the PostgreSQL runs (its own database).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/emporium_bench")]
        pg_url: String,
        /// Skip the PostgreSQL runs.
        #[arg(long)]
        no_postgres: bool,
    },
}

fn main() -> ExitCode {
    emporium::cli::run_to_exit(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Search { products, seconds, concurrency, pg_url, no_postgres, only, mut overrides } => {
            overrides.data_dir.get_or_insert_with(|| PathBuf::from("./bench-data"));
            let mut settings = quiet(settings(cli.config.as_deref(), overrides)?);
            // Benchmarks measure the engine, not the limiter.
            settings.rate_limit_api = 0;
            settings.rate_limit_auth = 0;
            let app = App::build(settings).await?;
            let options = crate::search::SearchBenchOptions {
                products,
                seconds,
                concurrency,
                pg_url: (!no_postgres).then_some(pg_url),
                only,
            };
            crate::search::run_search_bench(app, options).await
        }
        Command::Reserve { seconds, concurrency, products, pg_url, no_postgres } => {
            let options = crate::reserve::ReserveBenchOptions {
                seconds,
                concurrency,
                products: products.max(1),
                pg_url: (!no_postgres).then_some(pg_url),
            };
            crate::reserve::run_reserve_bench(options).await
        }
        Command::Checkout {
            seconds,
            concurrency,
            products,
            flash_buyers,
            flash_units,
            pg_url,
            no_postgres,
            no_sqlite,
            hot,
        } => {
            emporium_kernel::telemetry::init_tracing(&Settings { log_level: "warn".into(), ..Settings::default() });
            let options = crate::checkout::CheckoutBenchOptions {
                seconds,
                concurrency: concurrency.max(1),
                products: products.max(1),
                flash_buyers,
                flash_units: flash_units.max(1),
                pg_url: (!no_postgres).then_some(pg_url),
                sqlite: !no_sqlite,
                hot_only: hot,
            };
            crate::checkout::run_checkout_bench(options).await
        }
        Command::Storage { seconds, concurrency, rows, pg_url, no_postgres } => {
            let options = crate::storage::StorageBenchOptions {
                seconds,
                concurrency: concurrency.max(1),
                rows,
                pg_url: (!no_postgres).then_some(pg_url),
            };
            crate::storage::run_storage_bench(options).await
        }
    }
}
