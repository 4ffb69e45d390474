//! A model's result columns against its table's: what differs, and what the
//! model's `on_schema_change` makes of it — the statements applied before the
//! replace transaction, or the refusal that names them. `run --plan` and
//! `transform --dry-run` say the same before anything runs.

use crate::db::{PgColumn, Table};
use crate::stage_table::{self, Drift};

use super::audits::OnSchemaChange;

/// One difference between the result and the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub column: String,
    pub kind: Kind,
    /// In words: `adds shop_id bigint`, `drops city (text)`.
    pub words: String,
    /// The statement that makes the table follow the result.
    pub statement: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In the result, not in the table (and NULL in the table's other rows).
    Added,
    /// A column the result must never leave NULL (`_data_period`) that the
    /// table lacks: the rows it holds have none to give.
    AddedNotNull,
    Removed,
    Retyped,
    /// The table allows NULL where the result never has one.
    NotNull,
}

/// Every difference, the statements as `stage_table::drift_from` writes them.
pub fn changes(target: &Table, expected: &[PgColumn], actual: &[PgColumn]) -> Vec<Change> {
    let table = target.to_string();
    let drifts = stage_table::drift_from(
        &table,
        expected,
        actual,
        ("the model's result has", "not in the model's result"),
    );
    drifts
        .into_iter()
        .map(|Drift { column, fix, .. }| {
            let now = actual.iter().find(|a| a.name == column);
            let then = expected.iter().find(|e| e.name == column);
            let (kind, words) = match (now, then) {
                (None, Some(e)) if e.not_null => (
                    Kind::AddedNotNull,
                    format!("adds {column} {} NOT NULL", e.sql_type),
                ),
                (None, Some(e)) => (Kind::Added, format!("adds {column} {}", e.sql_type)),
                (Some(a), None) => (Kind::Removed, format!("drops {column} ({})", a.sql_type)),
                (Some(a), Some(e)) if a.sql_type != e.sql_type => (
                    Kind::Retyped,
                    format!("retypes {column} from {} to {}", a.sql_type, e.sql_type),
                ),
                _ => (Kind::NotNull, format!("makes {column} NOT NULL")),
            };
            Change {
                column,
                kind,
                words,
                statement: fix,
            }
        })
        .collect()
}

/// What `policy` does with `changes`: the ones applied, the ones refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub apply: Vec<Change>,
    pub refuse: Vec<Change>,
}

pub fn decide(policy: OnSchemaChange, changes: Vec<Change>) -> Decision {
    let mut d = Decision::default();
    for c in changes {
        let applied = match (policy, c.kind) {
            // No policy fills a NOT NULL column in rows that have no value.
            (_, Kind::AddedNotNull) | (OnSchemaChange::Fail, _) => false,
            (OnSchemaChange::Add, kind) => kind == Kind::Added,
            (OnSchemaChange::Sync, _) => true,
        };
        if applied {
            d.apply.push(c);
        } else {
            d.refuse.push(c);
        }
    }
    d
}

impl Decision {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.refuse.is_empty()
    }

    /// The plan's line: what will change, or why the model will stop.
    pub fn words(&self, target: &Table, policy: OnSchemaChange) -> String {
        if !self.refuse.is_empty() {
            return self.refusal(target, policy);
        }
        let what: Vec<&str> = self.apply.iter().map(|c| c.words.as_str()).collect();
        format!(
            "{} (on_schema_change: {}); every other period the table holds is recomputed",
            what.join("; "),
            policy.as_str()
        )
    }

    /// Why the model stops, with each statement that would resolve it.
    pub fn refusal(&self, target: &Table, policy: OnSchemaChange) -> String {
        let hint = match policy {
            OnSchemaChange::Fail => "set `on_schema_change: add` or `sync` in the model's YAML, or",
            OnSchemaChange::Add => {
                "set `on_schema_change: sync` in the model's YAML to have them applied, or"
            }
            OnSchemaChange::Sync => "no policy fills a NOT NULL column in rows already there:",
        };
        let lines: Vec<String> = (self.refuse.iter())
            .map(|c| format!("  - {}\n      {}", c.words, c.statement))
            .collect();
        format!(
            "the result's columns differ from {target} (on_schema_change: {}); nothing was \
             changed. {hint} apply these or change the model:\n{}",
            policy.as_str(),
            lines.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> PgColumn {
        PgColumn {
            name: name.into(),
            sql_type: ty.into(),
            not_null: name == "_data_period",
        }
    }

    /// Each policy applies and refuses what its documentation says, and the
    /// plan's words name every change.
    #[test]
    fn each_policy_applies_what_it_says() {
        let target = Table::new("core", "sales");
        let actual = [
            col("id", "bigint"),
            col("city", "text"),
            col("n", "integer"),
        ];
        let expected = [
            col("id", "bigint"),
            col("n", "bigint"),
            col("shop", "bigint"),
        ];
        let all = changes(&target, &expected, &actual);
        let kinds: Vec<(String, Kind)> = all.iter().map(|c| (c.column.clone(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("n".into(), Kind::Retyped),
                ("shop".into(), Kind::Added),
                ("city".into(), Kind::Removed)
            ]
        );
        let add = decide(OnSchemaChange::Add, all.clone());
        assert_eq!(add.apply.len(), 1);
        assert_eq!(add.refuse.len(), 2);
        let words = add.words(&target, OnSchemaChange::Add);
        assert!(
            words.contains("retypes n from integer to bigint")
                && words.contains("DROP COLUMN \"city\"")
                && words.contains("on_schema_change: sync"),
            "{words}"
        );
        let sync = decide(OnSchemaChange::Sync, all.clone());
        assert_eq!((sync.apply.len(), sync.refuse.len()), (3, 0));
        let words = sync.words(&target, OnSchemaChange::Sync);
        assert!(
            words.starts_with(
                "retypes n from integer to bigint; adds shop bigint; drops city (text)"
            ) && words.contains("every other period"),
            "{words}"
        );
        let fail = decide(OnSchemaChange::Fail, all);
        assert_eq!((fail.apply.len(), fail.refuse.len()), (0, 3));
        let periodic = [col("id", "bigint"), col("_data_period", "text")];
        let d = decide(
            OnSchemaChange::Sync,
            changes(&target, &periodic, &[col("id", "bigint")]),
        );
        assert_eq!(d.refuse[0].kind, Kind::AddedNotNull);
        assert!(decide(OnSchemaChange::Fail, Vec::new()).is_empty());
    }
}
