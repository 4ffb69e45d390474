//! A dataset's rules in canonical form: everything that decides a validation
//! (reader settings, columns and their types, formats and rules, the key, the
//! thresholds), flattened to `key → value` text. Two configs that differ only in
//! comments, the order of YAML keys, an `allowed` list's order or a default
//! written out have the same rules; a verdict records them (and their
//! fingerprint) so the ledger can say which rules changed since.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{Bound, Column, Dataset};

/// `column.rule` (or a dataset-level key such as `primary_key`) → its value.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Rules(BTreeMap<String, String>);

fn bound(b: &Bound) -> String {
    match b {
        Bound::Int(_) | Bound::Number(_) => b.to_string(),
        Bound::Text(t) => format!("'{t}'"),
    }
}

/// Each rule a column can carry, listed once: its key in [`Rules`]
/// (`<column>.<key>`), its canonical value, and whether a change of it can be
/// answered by replaying the rows a verdict kept (quarantine replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRule {
    Type,
    Required,
    Unique,
    Regex,
    Min,
    Max,
    Allowed,
    Format,
}

impl ColumnRule {
    pub const ALL: [ColumnRule; 8] = [
        ColumnRule::Type,
        ColumnRule::Required,
        ColumnRule::Unique,
        ColumnRule::Regex,
        ColumnRule::Min,
        ColumnRule::Max,
        ColumnRule::Allowed,
        ColumnRule::Format,
    ];

    pub fn key(self) -> &'static str {
        match self {
            ColumnRule::Type => "type",
            ColumnRule::Required => "required",
            ColumnRule::Unique => "unique",
            ColumnRule::Regex => "regex",
            ColumnRule::Min => "min",
            ColumnRule::Max => "max",
            ColumnRule::Allowed => "allowed",
            ColumnRule::Format => "format",
        }
    }

    /// Whether the rows a verdict kept can answer a change of this rule: a
    /// rule on values can; a new type or format needs the file's text.
    pub fn replayable(self) -> bool {
        match self {
            ColumnRule::Required
            | ColumnRule::Unique
            | ColumnRule::Regex
            | ColumnRule::Min
            | ColumnRule::Max
            | ColumnRule::Allowed => true,
            ColumnRule::Type | ColumnRule::Format => false,
        }
    }

    /// The rule's canonical value in `c`; None when absent or the default.
    /// Every field of [`Column`] is named here: a new one does not compile
    /// until it is a rule of this list (or said not to be).
    pub fn value(self, c: &Column) -> Option<String> {
        let Column {
            ty,
            required,
            unique,
            regex,
            min,
            max,
            allowed,
            format,
        } = c;
        match self {
            ColumnRule::Type => Some(ty.to_string()),
            ColumnRule::Required => required.then(|| "true".into()),
            ColumnRule::Unique => unique.then(|| "true".into()),
            ColumnRule::Regex => regex.clone(),
            ColumnRule::Min => min.as_ref().map(bound),
            ColumnRule::Max => max.as_ref().map(bound),
            ColumnRule::Allowed => allowed.as_ref().map(|values| {
                let set: BTreeSet<String> = values.iter().map(|v| v.to_string()).collect();
                set.into_iter().collect::<Vec<_>>().join(", ")
            }),
            ColumnRule::Format => format.clone(),
        }
    }

    /// The rule a `<column>.<key>` key of [`Rules`] names.
    pub fn of_key(key: &str) -> Option<ColumnRule> {
        let (_, suffix) = key.rsplit_once('.')?;
        ColumnRule::ALL.into_iter().find(|r| r.key() == suffix)
    }
}

impl Rules {
    /// The rules `ds` validates by. Defaults are spelled out (so writing one
    /// is no change) and absent optional rules are absent keys. Every field of
    /// [`Dataset`] is named: a new one does not compile until it is a rule
    /// here or said not to be one.
    pub fn of(ds: &Dataset) -> Rules {
        let Dataset {
            // Not rules: what names the file, and words for people.
            description: _,
            agency_slug: _,
            file_pattern: _,
            compiled: _,
            // A load gate comparing periods, not a rule a verdict applies.
            drift: _,
            period,
            format,
            headers,
            delimiter,
            quote,
            sheet,
            primary_key,
            min_quality_score,
            max_shrink,
            max_rejected_ratio,
            incremental,
            columns,
        } = ds;
        let mut r = BTreeMap::new();
        let mut put = |k: String, v: String| {
            r.insert(k, v);
        };
        put("period".into(), format!("{period:?}"));
        if let Some(f) = format {
            put("format".into(), format!("{f:?}"));
        }
        put("headers".into(), format!("{headers:?}"));
        put("delimiter".into(), delimiter.to_string());
        put("quote".into(), quote.to_string());
        if let Some(s) = sheet {
            put("sheet".into(), s.clone());
        }
        if !primary_key.is_empty() {
            put("primary_key".into(), primary_key.join(", "));
        }
        put("min_quality_score".into(), min_quality_score.to_string());
        put("max_shrink".into(), max_shrink.to_string());
        if let Some(x) = max_rejected_ratio {
            put("max_rejected_ratio".into(), x.to_string());
        }
        if let Some(i) = incremental {
            put("incremental".into(), format!("{:?}", i.changed_rows));
        }
        let names: Vec<&str> = columns.keys().map(String::as_str).collect();
        put("columns".into(), names.join(", "));
        for (name, c) in columns {
            for rule in ColumnRule::ALL {
                if let Some(v) = rule.value(c) {
                    put(format!("{name}.{}", rule.key()), v);
                }
            }
        }
        Rules(r)
    }

    /// sha256 of the canonical JSON (keys sorted): equal rules, equal print.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_string(&self.0).expect("a map of strings serialises");
        hex::encode(Sha256::digest(json.as_bytes()))
    }

    /// The keys whose value differs between `self` (then) and `now`, sorted:
    /// added, removed and changed alike.
    pub fn changed(&self, now: &Rules) -> Vec<String> {
        let keys: BTreeSet<&String> = self.0.keys().chain(now.0.keys()).collect();
        keys.into_iter()
            .filter(|k| self.0.get(*k) != now.0.get(*k))
            .cloned()
            .collect()
    }

    /// The canonical value of rule `key`, when set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("a map of strings serialises")
    }

    /// Rules read back from `meta.validation_log.rules`; None when the value is
    /// not a map of strings.
    pub fn from_json(value: serde_json::Value) -> Option<Rules> {
        serde_json::from_value(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(yaml: &str) -> Dataset {
        serde_yaml::from_str(yaml).expect("a dataset")
    }

    const BASE: &str = "
file_pattern: '^f_(?P<period>\\d{4}-\\d{2})\\.csv$'
period: month
primary_key: [id]
columns:
  id: { type: int, required: true, min: 1 }
  origin: { type: string, allowed: [JFK, LGA, EWR] }
  carrier: { type: string, regex: '^[A-Z0-9]{2}$' }
";

    /// Each rule kind has a fingerprint key, a row in data-schemas.md's
    /// column table, and is found back from its key; a changed value of any
    /// one makes exactly that key changed.
    #[test]
    fn every_column_rule_is_keyed_documented_and_changes_its_key() {
        let doc = include_str!("../../documentation/data-schemas.md");
        for rule in ColumnRule::ALL {
            let key = rule.key();
            assert!(
                doc.contains(&format!("| `{key}`")) || doc.contains(&format!(", `{key}` |")),
                "data-schemas.md has no row for `{key}`"
            );
            assert_eq!(ColumnRule::of_key(&format!("col.{key}")), Some(rule));
        }
        let base = Rules::of(&dataset(BASE));
        let edits = [
            (
                "type: int, required: true, min: 1",
                "type: float, required: true, min: 1",
                "id.type",
            ),
            (
                "type: int, required: true, min: 1",
                "type: int, min: 1",
                "id.required",
            ),
            (
                "type: int, required: true, min: 1",
                "type: int, required: true, min: 1, unique: true",
                "id.unique",
            ),
            ("'^[A-Z0-9]{2}$'", "'^[A-Z]{2}$'", "carrier.regex"),
            ("min: 1 }", "min: 2 }", "id.min"),
            // Beyond a float's 53 bits the bound still changes its key.
            ("min: 1 }", "min: 9007199254740992 }", "id.min"),
            ("min: 1 }", "min: 1, max: 9 }", "id.max"),
            ("[JFK, LGA, EWR]", "[JFK, LGA]", "origin.allowed"),
        ];
        for (from, to, key) in edits {
            let now = Rules::of(&dataset(&BASE.replace(from, to)));
            assert_eq!(base.changed(&now), [key], "{from} -> {to}");
        }
        let near = |min: &str| Rules::of(&dataset(&BASE.replace("min: 1 }", min)));
        let (a, b) = (
            near("min: 9007199254740992 }"),
            near("min: 9007199254740993 }"),
        );
        assert_eq!(
            a.changed(&b),
            ["id.min"],
            "2^53 and 2^53 + 1 are two bounds"
        );
    }

    #[test]
    fn comments_key_order_defaults_and_list_order_are_not_changes() {
        let same = dataset(
            "
# a comment
period: month          # another
columns:
  id: { min: 1.0, required: true, type: int, unique: false }
  origin: { allowed: [EWR, JFK, LGA], type: string }
  carrier: { regex: '^[A-Z0-9]{2}$', type: string }
primary_key: [id]
min_quality_score: 80
delimiter: ','
file_pattern: '^f_(?P<period>\\d{4}-\\d{2})\\.csv$'
description: words do not decide a verdict
",
        );
        let base = Rules::of(&dataset(BASE));
        assert_eq!(base, Rules::of(&same));
        assert_eq!(base.fingerprint(), Rules::of(&same).fingerprint());
        assert_eq!(base.fingerprint().len(), 64);
    }

    #[test]
    fn a_changed_rule_is_named_by_column_and_rule() {
        let relaxed = dataset(
            &BASE
                .replace("[JFK, LGA, EWR]", "[JFK, LGA, EWR, SFO]")
                .replace("regex: '^[A-Z0-9]{2}$'", "regex: '^[A-Z0-9]{2,3}$'"),
        );
        let (then, now) = (Rules::of(&dataset(BASE)), Rules::of(&relaxed));
        assert_ne!(then.fingerprint(), now.fingerprint());
        assert_eq!(then.changed(&now), ["carrier.regex", "origin.allowed"]);
        let added = dataset(&format!("{BASE}  extra: {{ type: string }}\n"));
        assert_eq!(then.changed(&Rules::of(&added)), ["columns", "extra.type"]);
        let threshold = dataset(&format!("{BASE}min_quality_score: 90\n"));
        assert_eq!(then.changed(&Rules::of(&threshold)), ["min_quality_score"]);
    }

    #[test]
    fn rules_survive_the_round_trip_through_jsonb() {
        let r = Rules::of(&dataset(BASE));
        assert_eq!(Rules::from_json(r.to_json()), Some(r));
        assert_eq!(Rules::from_json(serde_json::json!([1])), None);
    }
}
