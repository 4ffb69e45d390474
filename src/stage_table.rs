//! The `stage.<dataset>` table a dataset's config implies, and how an existing
//! table differs from it.
//!
//! Declared columns come first, in config order, then the lineage columns. Column
//! order is fixed when the table is created; later checks compare names and types
//! (loads name their columns, so order cannot corrupt data).

use crate::config::Dataset;
pub use crate::db::PgColumn;
use crate::db::{Table, quote_ident};

/// Lineage column: the period the row belongs to (datasets with periods).
pub const DATA_PERIOD: &str = "_data_period";
/// Lineage column: the meta.ingestion_log id of the file the row came from.
pub const INGESTION_ID: &str = "_ingestion_id";
/// Lineage column: when the row was loaded.
pub const LOADED_AT: &str = "_loaded_at";

/// The columns `stage.<name>` must have for this dataset.
pub fn expected_columns(dataset: &Dataset) -> Vec<PgColumn> {
    let mut cols: Vec<PgColumn> = dataset
        .columns
        .iter()
        .map(|(name, c)| PgColumn {
            name: name.clone(),
            sql_type: c.ty.sql_type(),
            not_null: false,
        })
        .collect();
    if dataset.period.has_period() {
        cols.push(PgColumn {
            name: DATA_PERIOD.into(),
            sql_type: "text".into(),
            not_null: true,
        });
    }
    cols.push(PgColumn {
        name: INGESTION_ID.into(),
        sql_type: "bigint".into(),
        not_null: false,
    });
    cols.push(PgColumn {
        name: LOADED_AT.into(),
        sql_type: "timestamp with time zone".into(),
        not_null: true,
    });
    cols
}

/// `stage."<name>"`
pub fn qualified(name: &str) -> String {
    Table::stage(name).to_string()
}

/// The CREATE TABLE statement for a new stage table: partitioned by
/// `_data_period` for a dataset with periods (its partitions are made by the
/// loads, see [`crate::partition`]), by `_loaded_at` for a full-refresh one
/// (whose one DEFAULT partition each load swaps whole).
pub fn create_statements(name: &str, dataset: &Dataset) -> Vec<String> {
    let table = qualified(name);
    let cols: Vec<String> = expected_columns(dataset)
        .iter()
        .map(|c| {
            let mut def = format!("{} {}", quote_ident(&c.name), c.sql_type);
            if c.not_null {
                def.push_str(" NOT NULL");
            }
            if c.name == LOADED_AT {
                def.push_str(" DEFAULT now()");
            }
            def
        })
        .collect();
    // By period; a full-refresh table by its load time, with only a DEFAULT
    // partition, so a load swaps the whole of it in (src/partition.rs).
    let key = match dataset.period.has_period() {
        true => DATA_PERIOD,
        false => LOADED_AT,
    };
    let partitioned = format!(" PARTITION BY LIST ({})", quote_ident(key));
    vec![format!(
        "CREATE TABLE {table} (\n    {}\n){partitioned}",
        cols.join(",\n    ")
    )]
}

/// One way an existing stage table disagrees with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub column: String,
    pub problem: String,
    /// The statement that would make the table match the config.
    pub fix: String,
}

/// Every difference between the table PostgreSQL has (`table`, quoted) and the
/// one the config implies.
pub fn drift(table: &str, expected: &[PgColumn], actual: &[PgColumn]) -> Vec<Drift> {
    drift_from(
        table,
        expected,
        actual,
        ("config declares", "not declared in the config"),
    )
}

/// [`drift`] against what something else implies, in words: (`config
/// declares`, `not declared in the config`) or (`the model's result has`, `not
/// in the model's result`).
pub fn drift_from(
    table: &str,
    expected: &[PgColumn],
    actual: &[PgColumn],
    (has, absent): (&str, &str),
) -> Vec<Drift> {
    let mut out = Vec::new();
    for e in expected {
        let col = quote_ident(&e.name);
        match actual.iter().find(|a| a.name == e.name) {
            None => out.push(Drift {
                column: e.name.clone(),
                problem: format!("missing ({has} {})", e.sql_type),
                fix: format!(
                    "ALTER TABLE {table} ADD COLUMN {col} {}{};",
                    e.sql_type,
                    if e.not_null { " NOT NULL" } else { "" }
                ),
            }),
            Some(a) if a.sql_type != e.sql_type => out.push(Drift {
                column: e.name.clone(),
                problem: format!("is {} but {has} {}", a.sql_type, e.sql_type),
                fix: format!(
                    "ALTER TABLE {table} ALTER COLUMN {col} TYPE {t} USING {col}::{t};",
                    t = e.sql_type
                ),
            }),
            Some(a) if e.not_null && !a.not_null => out.push(Drift {
                column: e.name.clone(),
                problem: "allows NULL but must be NOT NULL".into(),
                fix: format!("ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL;"),
            }),
            Some(_) => {}
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.name == a.name) {
            out.push(Drift {
                column: a.name.clone(),
                problem: format!("{} is {absent}", a.sql_type),
                fix: format!("ALTER TABLE {table} DROP COLUMN {};", quote_ident(&a.name)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        Config::from_yaml(
            r#"version: 1
landed_dir: l
stage_dir: s
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{4}-\d{2})\.csv$'
    period: month
    columns:
      id: { type: int }
      amount: { type: 'decimal(10,2)' }
      note: { type: string }
  lookup:
    file_pattern: '^lookup\.csv$'
    period: none
    columns:
      code: { type: string }
"#,
        )
        .unwrap()
    }

    fn col(name: &str, ty: &str, not_null: bool) -> PgColumn {
        PgColumn {
            name: name.into(),
            sql_type: ty.into(),
            not_null,
        }
    }

    #[test]
    fn periodic_tables_get_period_column_and_partitions() {
        let c = config();
        let cols = expected_columns(&c.datasets["sales"]);
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "amount",
                "note",
                "_data_period",
                "_ingestion_id",
                "_loaded_at"
            ]
        );
        assert_eq!(cols[1].sql_type, "numeric(10,2)");
        let stmts = create_statements("sales", &c.datasets["sales"]);
        assert!(
            stmts[0].contains("\"_data_period\" text NOT NULL"),
            "{}",
            stmts[0]
        );
        assert!(
            stmts[0].ends_with(") PARTITION BY LIST (\"_data_period\")"),
            "{}",
            stmts[0]
        );
        assert_eq!(stmts.len(), 1, "no index: a partition holds one period");
    }

    #[test]
    fn period_less_tables_have_no_period_column() {
        let c = config();
        let cols = expected_columns(&c.datasets["lookup"]);
        assert!(cols.iter().all(|c| c.name != DATA_PERIOD));
        let stmts = create_statements("lookup", &c.datasets["lookup"]);
        assert!(!stmts[0].contains(DATA_PERIOD), "{}", stmts[0]);
        assert!(
            stmts[0].ends_with(") PARTITION BY LIST (\"_loaded_at\")"),
            "a full-refresh table is swapped whole through its one partition: {}",
            stmts[0]
        );
    }

    #[test]
    fn matching_table_has_no_drift() {
        let c = config();
        let expected = expected_columns(&c.datasets["sales"]);
        assert!(drift(&qualified("sales"), &expected, &expected).is_empty());
    }

    #[test]
    fn drift_names_each_difference_and_its_fix() {
        let c = config();
        let expected = expected_columns(&c.datasets["sales"]);
        let actual = vec![
            col("id", "integer", false),
            col("amount", "numeric(10,2)", false),
            col("legacy", "text", false),
            col("_data_period", "text", false),
            col("_ingestion_id", "bigint", false),
            col("_loaded_at", "timestamp with time zone", true),
        ];
        let d = drift(&qualified("sales"), &expected, &actual);
        let fixes: Vec<_> = d.iter().map(|d| d.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "ALTER TABLE stage.\"sales\" ALTER COLUMN \"id\" TYPE bigint USING \"id\"::bigint;",
                "ALTER TABLE stage.\"sales\" ADD COLUMN \"note\" text;",
                "ALTER TABLE stage.\"sales\" ALTER COLUMN \"_data_period\" SET NOT NULL;",
                "ALTER TABLE stage.\"sales\" DROP COLUMN \"legacy\";",
            ]
        );
        assert!(
            d[0].problem
                .contains("is integer but config declares bigint")
        );
    }
}
