//! What a model's period was made of, and whether it still is: each `done` run
//! in `meta.transform_log` records the model's fingerprint (its normalised SQL)
//! and the version of every input it read — the `meta.load_log` id of each
//! stage table, the `meta.transform_log` id of each upstream model. A model's
//! period is stale when its SQL changed or an input was replaced since.
//!
//! The inputs are read before the model reads its tables: a load committed in
//! between makes the run look older than it is (it is redone once), never newer.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::GenericClient;

/// One table a model reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// `stage.<dataset>` or `<schema>.<model>`.
    pub table: String,
    /// Another model's target (else a stage table).
    pub model: bool,
    /// Whether it holds periods (else it is replaced whole).
    pub periodic: bool,
}

/// A model as the ledger needs it: its target, fingerprint, inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// `<schema>.<model>`
    pub target: String,
    pub fingerprint: String,
    /// Whether its rows are per period (else it is replaced whole).
    pub periodic: bool,
    pub inputs: Vec<Input>,
}

/// Each input's version: `table → id` (None where nothing is in force).
pub type InputVersions = BTreeMap<String, Option<i64>>;

/// The period a lookup is for: a periodic table's own, else any.
fn scope(periodic: bool, period: &str) -> Option<&str> {
    periodic.then_some(period)
}

/// `stale` (indices into `specs`) and every model reading one of them,
/// directly or not: what `run` redoes once those are stale. `transform`'s own
/// choice and `status` both ask this.
pub fn with_dependants(specs: &[ModelSpec], stale: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut out = stale.clone();
    loop {
        let before = out.len();
        for (j, s) in specs.iter().enumerate() {
            let reads_one = (s.inputs.iter())
                .any(|x| x.model && out.iter().any(|&i| specs[i].target == x.table));
            if reads_one {
                out.insert(j);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

impl ModelSpec {
    /// The version of each input in force now, for `period`.
    pub async fn inputs_now(
        &self,
        client: &impl GenericClient,
        period: &str,
    ) -> Result<InputVersions, tokio_postgres::Error> {
        let mut out = InputVersions::new();
        for i in &self.inputs {
            let p = scope(i.periodic, period);
            let id = if i.model {
                ModelRun::latest(client, &i.table, p).await?.map(|r| r.id)
            } else {
                let dataset = i.table.strip_prefix("stage.").unwrap_or(&i.table);
                let row = client
                    .query_opt(
                        "SELECT id FROM meta.load_log
                          WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2
                            AND status = 'loaded'
                          ORDER BY id DESC LIMIT 1",
                        &[&dataset, &p],
                    )
                    .await?;
                row.map(|r| r.get(0))
            };
            out.insert(i.table.clone(), id);
        }
        Ok(out)
    }

    /// Whether the model's period is stale, and why: reads its latest run
    /// and its inputs now. None when it never ran and nothing feeds the
    /// period (no periodic input holds it: a lookup table replaced whole
    /// holds every period, so it does not count) — nothing to run it on.
    pub async fn state(
        &self,
        client: &impl GenericClient,
        period: &str,
    ) -> Result<Option<ModelState>, tokio_postgres::Error> {
        let last = ModelRun::latest(client, &self.target, scope(self.periodic, period)).await?;
        let now = self.inputs_now(client, period).await?;
        let state = ModelState::of(self, last.as_ref(), &now, period);
        let fed = (self.inputs.iter())
            .filter(|i| i.periodic || !self.periodic)
            .any(|i| now.get(&i.table).copied().flatten().is_some());
        Ok((state != ModelState::NeverRan || fed).then_some(state))
    }
}

/// A model's latest `done` run for a period (for a model replaced whole, its
/// latest of any period).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRun {
    pub id: i64,
    /// None for runs recorded before fingerprints were.
    pub fingerprint: Option<String>,
    pub inputs: Option<InputVersions>,
    /// The engine that computed it (`datafusion 55.2.0/dialect 1`, plus where
    /// on a cluster); None for runs recorded before one engine computed every
    /// model (inside PostgreSQL or DataFusion, unrecorded).
    pub engine: Option<String>,
    /// How the latest run ended when one newer than this ended otherwise
    /// (`failed`, `rejected`, `skipped`): the period is not what a good run
    /// would make now, or its status would not be red.
    pub then_not_done: Option<String>,
}

impl ModelRun {
    pub async fn latest(
        client: &impl GenericClient,
        target: &str,
        period: Option<&str>,
    ) -> Result<Option<ModelRun>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT d.id, d.fingerprint, d.inputs, d.engine,
                        (SELECT f.status FROM meta.transform_log AS f
                          WHERE f.model = $1 AND ($2::text IS NULL OR f.period = $2)
                            AND f.id > d.id
                          ORDER BY f.id DESC LIMIT 1)
                   FROM meta.transform_log AS d
                  WHERE d.model = $1 AND d.status = 'done' AND ($2::text IS NULL OR d.period = $2)
                  ORDER BY d.id DESC LIMIT 1",
                &[&target, &period],
            )
            .await?;
        Ok(row.map(|r| ModelRun {
            id: r.get(0),
            fingerprint: r.get(1),
            inputs: r
                .get::<_, Option<serde_json::Value>>(2)
                .and_then(|v| serde_json::from_value(v).ok()),
            engine: r.get(3),
            then_not_done: r.get(4),
        }))
    }
}

/// Whether a model's period is what its SQL and inputs make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// No successful run for the period.
    NeverRan,
    /// Its SQL changed since the run.
    Changed,
    /// Another engine (or dialect revision) computed the run: what it was.
    EngineChanged(Option<String>),
    /// Its latest run failed, was rejected by an audit or skipped (the period
    /// keeps the rows of an earlier run).
    LastRunNotDone(String),
    /// These inputs were replaced since the run, in words.
    InputsReplaced(Vec<String>),
    UpToDate {
        run_id: i64,
    },
}

impl ModelState {
    /// Decides from the model's latest run and its inputs now. A run recorded
    /// before fingerprints is taken as current (nothing says otherwise).
    pub fn of(
        spec: &ModelSpec,
        last: Option<&ModelRun>,
        now: &InputVersions,
        period: &str,
    ) -> ModelState {
        let Some(run) = last else {
            return ModelState::NeverRan;
        };
        if run
            .fingerprint
            .as_ref()
            .is_some_and(|f| *f != spec.fingerprint)
        {
            return ModelState::Changed;
        }
        if let Some(status) = &run.then_not_done {
            return ModelState::LastRunNotDone(status.clone());
        }
        let engine = run.engine.as_deref().map(crate::dialect::engine_version);
        if engine != Some(crate::dialect::ENGINE.as_str()) {
            return ModelState::EngineChanged(run.engine.clone());
        }
        let Some(then) = &run.inputs else {
            return ModelState::UpToDate { run_id: run.id };
        };
        let replaced: Vec<String> = spec
            .inputs
            .iter()
            .filter(|i| {
                then.get(&i.table).copied().flatten() != now.get(&i.table).copied().flatten()
            })
            .map(|i| {
                let p = if i.periodic {
                    format!(" {period}")
                } else {
                    String::new()
                };
                if i.model {
                    format!("{}{p} re-ran since", i.table)
                } else {
                    format!("{}{p} reloaded since", i.table)
                }
            })
            .collect();
        if replaced.is_empty() {
            ModelState::UpToDate { run_id: run.id }
        } else {
            ModelState::InputsReplaced(replaced)
        }
    }

    pub fn up_to_date(&self) -> bool {
        matches!(self, ModelState::UpToDate { .. })
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelState::NeverRan => f.write_str("never ran for the period"),
            ModelState::Changed => f.write_str("model changed"),
            ModelState::LastRunNotDone(status) => write!(
                f,
                "its latest run {} (the period keeps an earlier run's rows)",
                match status.as_str() {
                    "rejected" => "was rejected by an audit",
                    "skipped" => "was skipped",
                    _ => "failed",
                }
            ),
            ModelState::EngineChanged(None) => {
                f.write_str("computed before one engine computed every model (engine not recorded)")
            }
            ModelState::EngineChanged(Some(was)) => write!(
                f,
                "computed by {was}, now {}",
                crate::dialect::ENGINE.as_str()
            ),
            ModelState::InputsReplaced(what) => f.write_str(&what.join("; ")),
            ModelState::UpToDate { run_id } => write!(f, "up to date (run {run_id})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec {
            target: "mart.by_region".into(),
            fingerprint: "f1".into(),
            periodic: true,
            inputs: vec![
                Input {
                    table: "stage.citizens".into(),
                    model: false,
                    periodic: true,
                },
                Input {
                    table: "stage.regions".into(),
                    model: false,
                    periodic: false,
                },
                Input {
                    table: "core.people".into(),
                    model: true,
                    periodic: true,
                },
            ],
        }
    }

    fn versions(c: i64, r: i64, p: i64) -> InputVersions {
        [
            ("stage.citizens".to_owned(), Some(c)),
            ("stage.regions".to_owned(), Some(r)),
            ("core.people".to_owned(), Some(p)),
        ]
        .into()
    }

    fn run(fingerprint: Option<&str>, inputs: Option<InputVersions>) -> ModelRun {
        ModelRun {
            id: 9,
            fingerprint: fingerprint.map(str::to_owned),
            inputs,
            engine: Some(crate::dialect::ENGINE.clone()),
            then_not_done: None,
        }
    }

    #[test]
    fn a_model_is_stale_when_its_sql_or_an_input_changed() {
        let s = spec();
        let now = versions(1, 2, 3);
        let state = |r: Option<&ModelRun>| ModelState::of(&s, r, &now, "2013-05");
        assert_eq!(state(None), ModelState::NeverRan);
        assert_eq!(
            state(Some(&run(Some("f0"), Some(now.clone())))),
            ModelState::Changed
        );
        assert!(state(Some(&run(Some("f1"), Some(now.clone())))).up_to_date());
        let older = run(Some("f1"), Some(versions(0, 2, 0)));
        assert_eq!(
            state(Some(&older)).to_string(),
            "stage.citizens 2013-05 reloaded since; core.people 2013-05 re-ran since"
        );
        let regions = run(Some("f1"), Some(versions(1, 1, 3)));
        assert_eq!(
            state(Some(&regions)).to_string(),
            "stage.regions reloaded since"
        );
    }

    #[test]
    fn a_run_from_before_fingerprints_is_taken_as_current() {
        let s = spec();
        let now = versions(1, 2, 3);
        assert!(ModelState::of(&s, Some(&run(None, None)), &now, "2013-05").up_to_date());
    }

    #[test]
    fn a_period_whose_latest_run_failed_or_was_rejected_is_stale() {
        let s = spec();
        let now = versions(1, 2, 3);
        let mut r = run(Some("f1"), Some(now.clone()));
        r.then_not_done = Some("rejected".into());
        assert_eq!(
            ModelState::of(&s, Some(&r), &now, "2013-05").to_string(),
            "its latest run was rejected by an audit (the period keeps an earlier run's rows)"
        );
        r.then_not_done = None;
        assert!(ModelState::of(&s, Some(&r), &now, "2013-05").up_to_date());
    }

    #[test]
    fn a_run_by_another_engine_or_none_recorded_is_stale() {
        let s = spec();
        let now = versions(1, 2, 3);
        let mut r = run(Some("f1"), Some(now.clone()));
        r.engine = Some(format!("{} ballista://h:50050", *crate::dialect::ENGINE));
        assert!(
            ModelState::of(&s, Some(&r), &now, "2013-05").up_to_date(),
            "a cluster runs the same plans"
        );
        r.engine = Some("datafusion 54.0.0/dialect 1".into());
        assert_eq!(
            ModelState::of(&s, Some(&r), &now, "2013-05").to_string(),
            format!(
                "computed by datafusion 54.0.0/dialect 1, now {}",
                *crate::dialect::ENGINE
            )
        );
        r.engine = None;
        assert_eq!(
            ModelState::of(&s, Some(&r), &now, "2013-05"),
            ModelState::EngineChanged(None)
        );
    }
}
