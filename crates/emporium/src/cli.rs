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
pub struct Overrides {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for SQLite files, index, blobs and the generated JWT secret (default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of SQLite files.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Comma-separated services to run in this process, or `all`.
    #[arg(long)]
    pub services: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub json_logs: bool,
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
    run_to_exit(run(Cli::parse()))
}

/// Runs a command on a multi-threaded runtime and turns its outcome into the process's exit
/// code, printing the error's whole chain (the `emporium` and `emporium-bench` binaries).
pub fn run_to_exit(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(command);
    // Work still running when the command ends (a connection cut off by a bounded stop, a storage
    // call on a blocking thread) gets a moment, not forever: dropping a runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of a command: defaults < config file < `EMPORIUM_*` env < `overrides`.
pub fn settings(config: Option<&std::path::Path>, overrides: Overrides) -> anyhow::Result<Settings> {
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
/// Logs only warnings and errors (commands whose output is their own report).
pub fn quiet(settings: Settings) -> Settings {
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
