//! Migrations, run by this layer in the table sqlx's migrator keeps (the same columns and
//! checksums), so a database migrated by either is current for both. The scripts themselves are
//! still embedded by `sqlx::migrate!` (its `Migrator` is only read here).

use super::{Backend, Database, Error, Result};
use sqlx::migrate::{MigrationType, Migrator};

/// The kernel's own tables are versioned apart from the service's (see `db`).
pub(super) const KERNEL_TABLE: &str = "_emporium_kernel_migrations";
pub(super) const SERVICE_TABLE: &str = "_sqlx_migrations";

struct Pending {
    version: i64,
    description: String,
    sql: String,
    checksum: Vec<u8>,
}

/// Applies what `migrator` has that `table` does not list, all in one transaction; refuses a
/// database whose applied migration differs from the script now embedded.
pub(super) async fn run(database: &Database, migrator: &Migrator, table: &'static str) -> Result<()> {
    let migrations: Vec<Pending> = migrator
        .iter()
        .filter(|m| !matches!(m.migration_type, MigrationType::ReversibleDown))
        .map(|m| Pending {
            version: m.version,
            description: m.description.to_string(),
            sql: m.sql.as_str().to_owned(),
            checksum: m.checksum.to_vec(),
        })
        .collect();
    database
        .write(move |tx| -> Result<()> {
            let create = match tx.backend() {
                Backend::Sqlite => format!(
                    "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                     installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                     checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)"
                ),
                Backend::Postgres => {
                    // Two processes starting at once: the second waits, then finds the work done.
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))", &[])?;
                    format!(
                        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                         installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
                         checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
                    )
                }
            };
            tx.script(&create)?;
            for migration in &migrations {
                let applied =
                    tx.query_opt(&format!("SELECT checksum FROM {table} WHERE version = $1"), &[&migration.version])?;
                if let Some(row) = applied {
                    if row.get::<Vec<u8>>(0)? != migration.checksum {
                        return Err(Error::Migration(format!(
                            "migration {} ({}) was changed after it was applied",
                            migration.version, migration.description
                        )));
                    }
                    continue;
                }
                tx.script(&migration.sql)?;
                tx.execute(
                    &format!(
                        "INSERT INTO {table} (version, description, success, checksum, execution_time)
                         VALUES ($1, $2, TRUE, $3, -1)"
                    ),
                    &[&migration.version, &migration.description, &migration.checksum],
                )?;
            }
            Ok(())
        })
        .await
}
