//! `pipeline migrate`: the schema migrations in `migrations/`, then one stage table
//! per dataset, all in one transaction under an advisory lock.
//!
//! Applied migrations are recorded in `meta.schema_migrations` with a sha256 of
//! their text, so an edited migration is caught instead of silently skipped.

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Transaction};

use crate::config::Config;
use crate::db::Table;
use crate::exit::Exit;
use crate::partition;
use crate::stage_table::{self, Drift};

/// One schema migration, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this list against `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_meta_and_reporting",
        sql: include_str!("../migrations/0001_meta_and_reporting.sql"),
    },
    Migration {
        version: 2,
        name: "0002_integrity",
        sql: include_str!("../migrations/0002_integrity.sql"),
    },
    Migration {
        version: 3,
        name: "0003_incremental",
        sql: include_str!("../migrations/0003_incremental.sql"),
    },
    Migration {
        version: 4,
        name: "0004_key_history",
        sql: include_str!("../migrations/0004_key_history.sql"),
    },
    Migration {
        version: 5,
        name: "0005_fingerprints",
        sql: include_str!("../migrations/0005_fingerprints.sql"),
    },
    Migration {
        version: 6,
        name: "0006_audits",
        sql: include_str!("../migrations/0006_audits.sql"),
    },
    Migration {
        version: 7,
        name: "0007_kept_rows_and_history",
        sql: include_str!("../migrations/0007_kept_rows_and_history.sql"),
    },
    Migration {
        version: 8,
        name: "0008_stage_partitions",
        sql: include_str!("../migrations/0008_stage_partitions.sql"),
    },
    Migration {
        version: 9,
        name: "0009_model_engine",
        sql: include_str!("../migrations/0009_model_engine.sql"),
    },
    Migration {
        version: 10,
        name: "0010_drift",
        sql: include_str!("../migrations/0010_drift.sql"),
    },
    Migration {
        version: 11,
        name: "0011_redelivery",
        sql: include_str!("../migrations/0011_redelivery.sql"),
    },
    Migration {
        version: 12,
        name: "0012_rejudged",
        sql: include_str!("../migrations/0012_rejudged.sql"),
    },
    Migration {
        version: 13,
        name: "0013_amended",
        sql: include_str!("../migrations/0013_amended.sql"),
    },
    Migration {
        version: 14,
        name: "0014_withdrawn",
        sql: include_str!("../migrations/0014_withdrawn.sql"),
    },
];

/// Serialises concurrent `migrate` runs (any constant unique to this use).
const MIGRATE_LOCK: i64 = 0x7069_7065_6d69_6772; // "pipemigr"

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// What `migrate` did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Migrations applied by this run.
    pub applied: Vec<String>,
    /// Migrations that were already applied.
    pub already_applied: Vec<String>,
    /// Stage tables created by this run.
    pub stage_tables_created: Vec<String>,
    /// Stage tables that already matched the config.
    pub stage_tables_unchanged: Vec<String>,
    /// Plain stage tables of datasets with periods this run converted into
    /// tables partitioned by period, every row moved.
    pub stage_tables_partitioned: Vec<String>,
}

/// Why `migrate` stopped; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {name} failed")]
    Apply {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "migration {name} was edited after it was applied (checksum {applied} in the database, \
         {now} in this binary); restore it and add a new migration for the change"
    )]
    Edited {
        name: String,
        applied: String,
        now: String,
    },
    #[error(
        "the database has migration {name}, which this binary does not know; \
         run a newer pipeline or restore the database"
    )]
    Unknown { name: String },
    #[error("stage tables disagree with the config; nothing was changed. Apply these or fix the config:\n{}", list(.0))]
    Drift(Vec<(String, Drift)>),
    #[error(
        "{table} cannot be partitioned by period while these depend on it: {}; nothing was \
         changed. Drop them, run `pipeline migrate`, then create them again", .views.join(", ")
    )]
    Dependents { table: String, views: Vec<String> },
    #[error("{step}")]
    Db {
        step: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn list(drifts: &[(String, Drift)]) -> String {
    drifts
        .iter()
        .map(|(table, d)| {
            format!(
                "  - stage.{table}.{}: {}\n      {}",
                d.column, d.problem, d.fix
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl MigrateError {
    pub fn exit(&self) -> Exit {
        match self {
            MigrateError::Edited { .. }
            | MigrateError::Unknown { .. }
            | MigrateError::Drift(_)
            | MigrateError::Dependents { .. } => Exit::Usage,
            MigrateError::Apply { .. } | MigrateError::Db { .. } => Exit::Failure,
        }
    }
}

fn step(step: &str) -> impl FnOnce(tokio_postgres::Error) -> MigrateError + '_ {
    move |source| MigrateError::Db {
        step: step.to_owned(),
        source,
    }
}

/// Applies pending migrations and creates missing stage tables, or changes nothing.
#[tracing::instrument(name = "migrate", skip_all, fields(stage = "migrate"))]
pub async fn run(client: &mut Client, config: &Config) -> Result<Report, MigrateError> {
    let tx = client
        .transaction()
        .await
        .map_err(step("begin transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(step("take the migration lock"))?;
    let mut report = Report::default();
    apply_migrations(&tx, &mut report).await?;
    sync_stage_tables(&tx, config, &mut report).await?;
    for table in crate::partition::drop_dead_staging(&tx)
        .await
        .map_err(step("drop the staging tables of loads that ended"))?
    {
        tracing::info!(event = "staging_dropped", %table, "dropped a staging table a killed load left");
    }
    tx.commit().await.map_err(step("commit"))?;
    tracing::info!(
        event = "migrated",
        applied = report.applied.len(),
        already_applied = report.already_applied.len(),
        stage_tables_created = report.stage_tables_created.len(),
        stage_tables_partitioned = report.stage_tables_partitioned.len(),
        "database is up to date"
    );
    Ok(report)
}

async fn apply_migrations(tx: &Transaction<'_>, report: &mut Report) -> Result<(), MigrateError> {
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS meta;
         CREATE TABLE IF NOT EXISTS meta.schema_migrations (
             version    integer PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(step("create meta.schema_migrations"))?;
    let rows = tx
        .query(
            "SELECT version, name, checksum FROM meta.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(step("read meta.schema_migrations"))?;
    let applied: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (version, name, _) in &applied {
        if !MIGRATIONS.iter().any(|m| m.version == *version) {
            return Err(MigrateError::Unknown {
                name: format!("{version:04} ({name})"),
            });
        }
    }
    for m in MIGRATIONS {
        let checksum = m.checksum();
        if let Some((_, _, old)) = applied.iter().find(|(v, _, _)| *v == m.version) {
            if *old != checksum {
                return Err(MigrateError::Edited {
                    name: m.name.to_owned(),
                    applied: old.clone(),
                    now: checksum,
                });
            }
            report.already_applied.push(m.name.to_owned());
            continue;
        }
        tracing::info!(
            event = "migration_applying",
            migration = m.name,
            "applying migration"
        );
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Apply {
                name: m.name.to_owned(),
                source,
            })?;
        tx.execute(
            "INSERT INTO meta.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum],
        )
        .await
        .map_err(step("record the migration"))?;
        report.applied.push(m.name.to_owned());
    }
    Ok(())
}

async fn sync_stage_tables(
    tx: &Transaction<'_>,
    config: &Config,
    report: &mut Report,
) -> Result<(), MigrateError> {
    let mut drifts = Vec::new();
    let mut to_create = Vec::new();
    for (name, dataset) in &config.datasets {
        let actual = crate::db::table_columns(tx, &crate::db::Table::stage(name))
            .await
            .map_err(step("read stage table columns"))?;
        match actual {
            None => to_create.push((name, dataset)),
            Some(actual) => {
                let expected = stage_table::expected_columns(dataset);
                let found = stage_table::drift(&stage_table::qualified(name), &expected, &actual);
                if found.is_empty() {
                    report.stage_tables_unchanged.push(name.clone());
                } else {
                    drifts.extend(found.into_iter().map(|d| (name.clone(), d)));
                }
            }
        }
    }
    if !drifts.is_empty() {
        // Returning drops the transaction, which rolls back any migration applied above.
        return Err(MigrateError::Drift(drifts));
    }
    // A plain table of a dataset with periods (made before 0008) is partitioned;
    // a partitioned one may lack its DEFAULT partition (dropped by hand).
    let unchanged = std::mem::take(&mut report.stage_tables_unchanged);
    for name in unchanged {
        let dataset = &config.datasets[&name];
        let table = crate::db::Table::stage(&name);
        if partition::is_partitioned(tx, &table)
            .await
            .map_err(step("read the stage table's kind"))?
        {
            tx.batch_execute(&partition::default_statement(&table))
                .await
                .map_err(step("create the DEFAULT partition"))?;
            report.stage_tables_unchanged.push(name);
        } else if let Some(why) = stays_plain(tx, &table, dataset).await? {
            // A full-refresh table: loaded by DELETE + one COPY as before.
            tracing::info!(event = "stage_table_plain", dataset = %name, reason = %why, "the full-refresh stage table stays plain: loads replace it by DELETE and one COPY");
            report.stage_tables_unchanged.push(name);
        } else {
            partition_plain(tx, &name, dataset).await?;
            report.stage_tables_partitioned.push(name);
        }
    }
    for (name, dataset) in to_create {
        for stmt in create_statements(name, dataset) {
            tx.batch_execute(&stmt)
                .await
                .map_err(step("create a stage table"))?;
        }
        tracing::info!(event = "stage_table_created", dataset = %name, "created stage table");
        report.stage_tables_created.push(name.clone());
    }
    Ok(())
}

/// Why a plain full-refresh stage table cannot be partitioned for its loads to
/// swap it whole (views read it, or a unique index that cannot hold on a
/// partitioned table); None when it can, and always for a dataset with periods
/// (those must be partitioned: [`partition_plain`] refuses what stops it).
async fn stays_plain(
    tx: &Transaction<'_>,
    table: &Table,
    dataset: &crate::config::Dataset,
) -> Result<Option<String>, MigrateError> {
    if dataset.period.has_period() {
        return Ok(None);
    }
    let views = dependents(tx, table).await?;
    if !views.is_empty() {
        return Ok(Some(format!("read by {}", views.join(", "))));
    }
    let unique: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::text::regclass AND indisunique)",
            &[&table.to_string()],
        )
        .await
        .map_err(step("read the stage table's indexes"))?
        .get(0);
    Ok(unique.then(|| "it has a unique index".to_owned()))
}

/// Views (and other rules) that read `table`: they would follow the renamed
/// plain table and stop its DROP.
async fn dependents(tx: &Transaction<'_>, table: &Table) -> Result<Vec<String>, MigrateError> {
    let rows = tx
        .query(
            "SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(v.relname) FROM pg_depend d
               JOIN pg_rewrite r ON r.oid = d.objid
               JOIN pg_class v ON v.oid = r.ev_class
               JOIN pg_namespace n ON n.oid = v.relnamespace
              WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1::text::regclass
                AND v.oid <> $1::text::regclass
              ORDER BY 1",
            &[&table.to_string()],
        )
        .await
        .map_err(step("find the views that read a stage table"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The GRANTs on `table` (beyond its owner's) and its indexes other than the
/// period index, as statements to run again on the partitioned table.
async fn grants_and_indexes(
    tx: &Transaction<'_>,
    table: &Table,
    name: &str,
) -> Result<Vec<String>, MigrateError> {
    let grants = tx
        .query(
            "SELECT 'GRANT ' || a.privilege_type || ' ON ' || $1 || ' TO '
                    || CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END
                    || CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
               FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
               LEFT JOIN pg_roles g ON g.oid = a.grantee
              WHERE c.oid = $1::text::regclass AND a.grantee <> c.relowner",
            &[&table.to_string()],
        )
        .await
        .map_err(step("read the stage table's grants"))?;
    let indexes = tx
        .query(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = $1::text::regclass AND c.relname <> $2",
            &[&table.to_string(), &format!("{name}_data_period_idx")],
        )
        .await
        .map_err(step("read the stage table's indexes"))?;
    Ok(grants.iter().chain(&indexes).map(|r| r.get(0)).collect())
}

/// Turns the plain `stage.<name>` into one partitioned by period, in the
/// migration's transaction: renamed aside, the partitioned table created with a
/// partition per period it holds, every row moved, its grants and
/// indexes made again, the plain table dropped.
async fn partition_plain(
    tx: &Transaction<'_>,
    name: &str,
    dataset: &crate::config::Dataset,
) -> Result<(), MigrateError> {
    let table = Table::stage(name);
    let views = dependents(tx, &table).await?;
    if !views.is_empty() {
        return Err(MigrateError::Dependents {
            table: table.to_string(),
            views,
        });
    }
    let again = grants_and_indexes(tx, &table, name).await?;
    let aside = Table::new("stage", &format!("{name} (plain)"));
    let (period, cols) = (
        crate::db::quote_ident(stage_table::DATA_PERIOD),
        column_list(dataset),
    );
    tx.batch_execute(&format!(
        "ALTER TABLE {table} RENAME TO {}",
        crate::db::quote_ident(aside.name())
    ))
    .await
    .map_err(step("rename the plain stage table aside"))?;
    for stmt in stage_table::create_statements(name, dataset) {
        tx.batch_execute(&stmt)
            .await
            .map_err(step("create the partitioned stage table"))?;
    }
    // Named partitions first: creating one scans a DEFAULT partition. (A
    // full-refresh table has its DEFAULT partition only.)
    let periods = match dataset.period.has_period() {
        true => tx
            .query(
                &format!("SELECT DISTINCT {period} FROM {aside} ORDER BY 1"),
                &[],
            )
            .await
            .map_err(step("list the periods of the plain stage table"))?,
        false => {
            tx.batch_execute(&partition::default_statement(&table))
                .await
                .map_err(step("create the DEFAULT partition"))?;
            Vec::new()
        }
    };
    for row in &periods {
        partition::create_partition(tx, &table, row.get(0), "migrated")
            .await
            .map_err(step("create a period's partition"))?;
    }
    let moved = tx
        .execute(
            &format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM {aside}"),
            &[],
        )
        .await
        .map_err(step("move the rows into the partitioned stage table"))?;
    tx.batch_execute(&partition::default_statement(&table))
        .await
        .map_err(step("create the DEFAULT partition"))?;
    tx.batch_execute(&format!("DROP TABLE {aside}"))
        .await
        .map_err(step("drop the plain stage table"))?;
    for stmt in again {
        tx.batch_execute(&stmt).await.map_err(step(
            "grant or index the partitioned stage table as the plain one was",
        ))?;
    }
    tracing::info!(event = "stage_table_partitioned", dataset = %name, periods = periods.len(), rows = moved, "partitioned the stage table by period");
    Ok(())
}

/// A new stage table: with its DEFAULT partition when partitioned by period.
fn create_statements(name: &str, dataset: &crate::config::Dataset) -> Vec<String> {
    let mut stmts = stage_table::create_statements(name, dataset);
    stmts.push(partition::default_statement(&Table::stage(name)));
    stmts
}

/// Every column of the dataset's stage table, quoted, comma-separated.
fn column_list(dataset: &crate::config::Dataset) -> String {
    stage_table::expected_columns(dataset)
        .iter()
        .map(|c| crate::db::quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_list_matches_the_migrations_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.name))
            .collect();
        assert_eq!(
            files, listed,
            "add every migrations/*.sql to MIGRATIONS, in order"
        );
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "versions are 1, 2, 3, ...");
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }
}
