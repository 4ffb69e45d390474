//! A dataset's rules in canonical form: everything that decides a validation
//! (reader settings, columns and their types, formats and rules, the key, the
//! thresholds), flattened to `key → value` text. Two configs that differ only in
//! comments, the order of YAML keys, an `allowed` list's order or a default
//! written out have the same rules; a verdict records them (and their
//! fingerprint) so the ledger can say which rules changed since.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{Bound, Dataset};

/// `column.rule` (or a dataset-level key such as `primary_key`) → its value.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Rules(BTreeMap<String, String>);

fn bound(b: &Bound) -> String {
    match b {
        Bound::Number(n) => n.to_string(),
        Bound::Text(t) => format!("'{t}'"),
    }
}

impl Rules {
    /// The rules `ds` validates by. Defaults are spelled out (so writing one
    /// is no change) and absent optional rules are absent keys.
    pub fn of(ds: &Dataset) -> Rules {
        let mut r = BTreeMap::new();
        let mut put = |k: String, v: String| {
            r.insert(k, v);
        };
        put("period".into(), format!("{:?}", ds.period));
        if let Some(f) = ds.format {
            put("format".into(), format!("{f:?}"));
        }
        put("headers".into(), format!("{:?}", ds.headers));
        put("delimiter".into(), ds.delimiter.to_string());
        put("quote".into(), ds.quote.to_string());
        if let Some(s) = &ds.sheet {
            put("sheet".into(), s.clone());
        }
        if !ds.primary_key.is_empty() {
            put("primary_key".into(), ds.primary_key.join(", "));
        }
        put("min_quality_score".into(), ds.min_quality_score.to_string());
        put("max_shrink".into(), ds.max_shrink.to_string());
        if let Some(x) = ds.max_rejected_ratio {
            put("max_rejected_ratio".into(), x.to_string());
        }
        if let Some(i) = &ds.incremental {
            put("incremental".into(), format!("{:?}", i.changed_rows));
        }
        let names: Vec<&str> = ds.columns.keys().map(String::as_str).collect();
        put("columns".into(), names.join(", "));
        for (name, c) in &ds.columns {
            put(format!("{name}.type"), c.ty.to_string());
            if c.required {
                put(format!("{name}.required"), "true".into());
            }
            if c.unique {
                put(format!("{name}.unique"), "true".into());
            }
            if let Some(x) = &c.regex {
                put(format!("{name}.regex"), x.clone());
            }
            if let Some(b) = &c.min {
                put(format!("{name}.min"), bound(b));
            }
            if let Some(b) = &c.max {
                put(format!("{name}.max"), bound(b));
            }
            if let Some(values) = &c.allowed {
                let set: BTreeSet<String> = values.iter().map(|v| v.to_string()).collect();
                put(
                    format!("{name}.allowed"),
                    set.into_iter().collect::<Vec<_>>().join(", "),
                );
            }
            if let Some(f) = &c.format {
                put(format!("{name}.format"), f.clone());
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
