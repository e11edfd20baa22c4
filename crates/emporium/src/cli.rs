//! The command line. Settings precedence: defaults < config file < `EMPORIUM_*` env < flags.

use crate::app::App;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use emporium_kernel::config::{Secret, Settings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "emporium", version, about = "Emporium: an e-commerce platform in one binary")]
struct Cli {
    /// Config file (TOML; keys as in `emporium config`). Default: ./emporium.toml if present.
    #[arg(long, global = true, env = "EMPORIUM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the shop (every service in this process unless --services says otherwise).
    Serve {
        /// Seed demo accounts (printed at start-up) so the shop is usable at once.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print the effective configuration with secrets redacted.
    Config {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Add a generated, deterministic demo catalog (categories, brands, attributes, prices).
    Seed {
        /// How many products to add.
        #[arg(long)]
        products: u64,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Search index maintenance.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Benchmarks that print p50/p95/p99, throughput and the ratio to a baseline from the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
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
}

#[derive(Subcommand, Debug)]
enum SearchCommand {
    /// Rebuild the search index from the catalog (stop `serve` on this data dir first).
    Reindex {
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Create an administrator, or grant `admin` to an existing account.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// Flags that override the file and environment.
#[derive(Args, Debug, Default)]
struct Overrides {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for SQLite files, index, blobs and the generated JWT secret (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of SQLite files.
    #[arg(long)]
    database_url: Option<String>,
    /// Comma-separated services to run in this process, or `all`.
    #[arg(long)]
    services: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

impl Overrides {
    fn apply(self, settings: &mut Settings) {
        if let Some(listen) = self.listen {
            settings.listen = listen;
        }
        if let Some(dir) = self.data_dir {
            settings.data_dir = dir;
        }
        if let Some(url) = self.database_url {
            settings.database_url = Some(Secret::new(url));
        }
        if let Some(services) = self.services {
            settings.services = services;
        }
        if self.json_logs {
            settings.log_format = emporium_kernel::config::LogFormat::Json;
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(config: Option<&std::path::Path>, overrides: Overrides) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(config)?;
    overrides.apply(&mut settings);
    Ok(settings)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { demo, overrides } => {
            let settings = settings(cli.config.as_deref(), overrides)?;
            emporium_kernel::telemetry::init_tracing(&settings);
            serve(settings, demo).await
        }
        Command::Config { overrides } => {
            let settings = settings(cli.config.as_deref(), overrides)?;
            println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
            Ok(())
        }
        Command::Users { command: UsersCommand::CreateAdmin { email, password, name, overrides } } => {
            let mut settings = settings(cli.config.as_deref(), overrides)?;
            settings.services = emporium_users::SERVICE.into();
            emporium_kernel::telemetry::init_tracing(&Settings { log_level: "warn".into(), ..settings.clone() });
            let app = App::build(settings).await?;
            let users = app.users_service().context("the users service is not running")?;
            let (user, created) = crate::demo::create_admin(users, &email, &password, &name).await?;
            if created {
                println!("created administrator {} ({})", user.email, user.id);
            } else {
                println!("granted admin to existing account {} ({})", user.email, user.id);
            }
            for db in &app.databases {
                db.close().await;
            }
            Ok(())
        }
        Command::Seed { products, overrides } => {
            let mut settings = quiet(settings(cli.config.as_deref(), overrides)?);
            // Not search: a server running on the same data indexes the new products from their
            // events, and the index has a single writer.
            settings.services = "users,catalog".into();
            let app = App::build(settings).await?;
            let total = crate::seed::load::seed_products(&app, products).await?;
            println!(
                "the catalog now has {total} products; the search index catches up from their events when `serve` runs (or run `emporium search reindex`)"
            );
            app.close().await;
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Search { products, seconds, concurrency, pg_url, no_postgres, only, mut overrides },
        } => {
            overrides.data_dir.get_or_insert_with(|| PathBuf::from("./bench-data"));
            let mut settings = quiet(settings(cli.config.as_deref(), overrides)?);
            // Benchmarks measure the engine, not the limiter.
            settings.rate_limit_api = 0;
            settings.rate_limit_auth = 0;
            let app = App::build(settings).await?;
            let options = crate::bench::SearchBenchOptions {
                products,
                seconds,
                concurrency,
                pg_url: (!no_postgres).then_some(pg_url),
                only,
            };
            crate::bench::run_search_bench(app, options).await
        }
        Command::Bench { command: BenchCommand::Reserve { seconds, concurrency, products, pg_url, no_postgres } } => {
            let options = crate::bench_reserve::ReserveBenchOptions {
                seconds,
                concurrency,
                products: products.max(1),
                pg_url: (!no_postgres).then_some(pg_url),
            };
            crate::bench_reserve::run_reserve_bench(options).await
        }
        Command::Bench {
            command:
                BenchCommand::Checkout {
                    seconds,
                    concurrency,
                    products,
                    flash_buyers,
                    flash_units,
                    pg_url,
                    no_postgres,
                    no_sqlite,
                    hot,
                },
        } => {
            emporium_kernel::telemetry::init_tracing(&Settings { log_level: "warn".into(), ..Settings::default() });
            let options = crate::bench_checkout::CheckoutBenchOptions {
                seconds,
                concurrency: concurrency.max(1),
                products: products.max(1),
                flash_buyers,
                flash_units: flash_units.max(1),
                pg_url: (!no_postgres).then_some(pg_url),
                sqlite: !no_sqlite,
                hot_only: hot,
            };
            crate::bench_checkout::run_checkout_bench(options).await
        }
        Command::Search { command: SearchCommand::Reindex { overrides } } => {
            let mut settings = quiet(settings(cli.config.as_deref(), overrides)?);
            settings.services = "catalog,search".into();
            let app = App::build(settings).await?;
            let indexed = app.reindex_search().await?;
            println!("indexed {indexed} products");
            app.close().await;
            Ok(())
        }
    }
}

/// Batch commands log warnings only; their progress goes to stderr.
fn quiet(settings: Settings) -> Settings {
    emporium_kernel::telemetry::init_tracing(&Settings { log_level: "warn".into(), ..settings.clone() });
    settings
}

async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    let listen = settings.listen;
    let app = App::build(settings).await?;
    if demo {
        crate::demo::seed(&app).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another process using it? try --listen)"))?;
    let addr = listener.local_addr()?;
    println!("Emporium is serving on http://{addr}  (API under /api/v1, docs at /api/v1/openapi.json)");
    tracing::info!(%addr, backend = if app.settings.is_postgres() { "postgres" } else { "sqlite" }, "listening");
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining");
        shutdown.cancel();
    });
    app.serve(listener).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
