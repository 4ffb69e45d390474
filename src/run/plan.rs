//! `run --plan`: what `run` would redo in each period and why, read from the
//! ledger and the landed listing only (nothing is written): each dataset's
//! action and reason, the models stale with it, a model table its
//! `on_schema_change` will alter, and where a rule change lands.

use super::*;
use crate::ledger::StageState;
/// One thing `run` would redo, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Planned {
    pub period: String,
    /// `stage.<dataset>` or `<schema>.<model>`.
    pub target: String,
    /// What would be done: `ingest, validate, load`, `validate, load`,
    /// `load` or `run`.
    pub action: &'static str,
    pub reason: String,
}

/// What `run --plan` found stale; nothing was changed.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The period asked for, or `FROM..TO`.
    pub period: String,
    pub periods: Vec<String>,
    pub items: Vec<Planned>,
}

impl Plan {
    /// 1 when a model would fail, 0 when something would be redone, 99
    /// when nothing is stale.
    pub fn exit(&self) -> Exit {
        if self.items.iter().any(|i| i.action == "fail") {
            Exit::Failure
        } else if self.items.is_empty() {
            Exit::NothingToDo
        } else {
            Exit::Ok
        }
    }

    pub fn table(&self) -> String {
        if self.items.is_empty() {
            return format!(
                "nothing is stale in {}: run would do nothing\n",
                self.period
            );
        }
        let mut table = crate::table::Table::new(&["PERIOD", "TARGET", "WOULD", "WHY"], &[]);
        for i in &self.items {
            table.row(vec![
                i.period.clone(),
                i.target.clone(),
                i.action.to_owned(),
                i.reason.clone(),
            ]);
        }
        format!(
            "{}{} item(s) stale; nothing was changed (run without --plan to redo them)\n",
            table.render(),
            self.items.len()
        )
    }
}

/// `run --plan`: what `run` would redo in each period of `args` and why,
/// reading the ledger and the landed listing only. A file counts as new when
/// its name, size or modification time differs from the current version
/// (ingest itself compares contents).
pub async fn plan(config: &Config, args: &Request) -> Result<Plan, RunError> {
    let (mut run, periods) = Run::open(config, args).await?;
    let mut items = Vec::new();
    // A model that does not plan would fail in run: said now, where it is.
    let first = periods.first().cloned().unwrap_or_default();
    match transform::plan_all(config, &transform::sql_dir(config)).await {
        Err(problem) => items.push(Planned {
            period: first.clone(),
            target: problem.model.unwrap_or_else(|| "sql/".into()),
            action: "fail",
            reason: problem.message,
        }),
        // A model whose result's columns differ from its table: how the
        // table will change (and that every period is recomputed), or why
        // the model will stop.
        Ok((all, planned)) => {
            let changes = transform::schema_changes(&run.client, &all, &planned)
                .await
                .map_err(read_err("compare the models' tables with their results"))?;
            for (target, said) in changes {
                let (action, reason) = match said {
                    Ok(words) => ("alter", words),
                    Err(refusal) => ("fail", refusal),
                };
                items.push(Planned {
                    period: first.clone(),
                    target,
                    action,
                    reason,
                });
            }
        }
    }
    for (n, period) in periods.iter().enumerate() {
        items.extend(plan_period(&mut run, period, n == 0).await?);
    }
    Ok(Plan {
        period: label(&periods),
        periods,
        items,
    })
}

pub(super) fn read_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> RunError {
    move |source| RunError::Read { what, source }
}

pub(super) async fn plan_period(
    run: &mut Run<'_>,
    period: &str,
    first: bool,
) -> Result<Vec<Planned>, RunError> {
    let mut items = Vec::new();
    for (name, ds) in run.datasets_of(first) {
        let c = DatasetRun {
            config: run.config,
            client: &mut run.client,
            pool: &run.pool,
            name,
            ds,
            period: ds.period.has_period().then_some(period),
            label: period,
            counted: None,
        };
        let listing = Listing {
            landed: &run.landed,
            entries: &run.entries,
        };
        let Some((d, action, reason)) = plan_dataset(&c, listing).await? else {
            continue;
        };
        // A rule edit that changes no row of a period is re-judged, as `run`
        // will: its rows, load and models stay, so nothing downstream is stale.
        let (action, reason) = match rejudged(&c, &d).await {
            true => (
                "re-judge",
                format!(
                    "{reason}; judged on its kept rows: no row changes, so its rows, load and models are kept"
                ),
            ),
            false => (action, reason),
        };
        items.push(Planned {
            period: period.to_owned(),
            target: format!("stage.{name}"),
            action,
            reason,
        });
    }
    let reloading: BTreeSet<String> = (items.iter())
        .filter(|i| i.action != "re-judge")
        .filter_map(|i| i.target.strip_prefix("stage.").map(str::to_owned))
        .collect();
    let stale =
        transform::stale_models(run.config, &run.client, period, &reloading, &run.skipped).await?;
    items.extend(stale.reasons.into_iter().map(|(model, reason)| Planned {
        period: period.to_owned(),
        target: model,
        action: "run",
        reason,
    }));
    // Where a rule change lands: the model columns computed from (or
    // filtering on) the columns whose rules changed, from the plans' lineage.
    let moves = rule_moves(run, period, &reloading).await?;
    for item in &mut items {
        if let Some(words) = moves.get(&item.target) {
            item.reason = format!("{}; {words}", item.reason);
        }
    }
    let reach = rule_reach(run, period, &reloading).await?;
    for item in &mut items {
        let Some(columns) = reach.get(&item.target) else {
            continue;
        };
        item.reason = format!(
            "{}; the changed rules reach {}",
            item.reason,
            columns.join(", ")
        );
    }
    Ok(items)
}

/// Whether `run` would re-judge the decided period rather than validate it
/// again ([`validate::replay::changes_no_row`], as `run`'s own re-judge
/// asks): only rules changed since a verdict of the current file.
async fn rejudged(c: &DatasetRun<'_>, d: &Decision) -> bool {
    let (Action::Validate, StageState::RulesChanged { .. }, Some(v), None) =
        (&d.action, &d.state, &d.verdict, &d.lost)
    else {
        return false;
    };
    // Cannot be judged now: run says why when it validates.
    validate::replay::changes_no_row(c.config, c.ds, c.name, c.period, v)
        .await
        .unwrap_or(false)
}

/// For each dataset whose rules changed since its period's verdict: what
/// the new rules would do to its rows, judged on the rows the verdict kept
/// (nothing written) — how many move between quarantine and stage, and
/// whether the shrink gate would then refuse the load.
async fn rule_moves(
    run: &Run<'_>,
    period: &str,
    reloading: &BTreeSet<String>,
) -> Result<std::collections::BTreeMap<String, String>, RunError> {
    let mut out = std::collections::BTreeMap::new();
    for name in reloading {
        let Some(ds) = run.config.datasets.get(name) else {
            continue;
        };
        let p = ds.period.has_period().then_some(period);
        let Some(v) = Verdict::latest(&*run.client, name, p)
            .await
            .map_err(read_err("read the verdicts"))?
        else {
            continue;
        };
        if v.rules_changed(&Rules::of(ds)).is_empty() {
            continue;
        }
        let words = match validate::replay::moves(run.config, ds, name, p, &v).await {
            Ok(Some(m)) if m.to_stage == 0 && m.to_quarantine == 0 => {
                "judged on its kept rows: no row moves".to_owned()
            }
            Ok(Some(m)) => {
                let stage = crate::partition::row_count(&run.client, name, p)
                    .await
                    .map_err(read_err("count the stage rows"))?;
                let refusals = refusing_gates(ds, &v, m, stage);
                let shrink = match refusals.is_empty() {
                    true => String::new(),
                    false => format!(" ({})", refusals.join("; ")),
                };
                let how = match (
                    validate::replay::amends(ds, &v),
                    validate::replay::relaxes_only(ds, &v),
                ) {
                    (true, true) => {
                        "; a relaxation: only its quarantined rows are judged again (the file is not read) and the rows that now pass are appended"
                    }
                    (true, false) => {
                        "; an amendment: only its quarantined rows and the cleaned rows that move are judged again (the file is not read)"
                    }
                    (false, _) => "",
                };
                format!(
                    "judged on its kept rows: {} row(s) move from quarantine to stage, {} from stage to quarantine{shrink}{how}",
                    m.to_stage, m.to_quarantine
                )
            }
            Ok(None) => continue,
            Err(e) => format!(
                "its rows could not be judged now: {}",
                crate::exit::one_line(&e)
            ),
        };
        out.insert(format!("stage.{name}"), words);
    }
    Ok(out)
}

/// The load gates that would refuse `verdict`'s period once `m` moves its
/// rows, and by how much, in words: those the counts alone decide — the
/// shrink gate against the `stage` rows the period holds, the rejected share
/// and the zero-rows gate. (The quality score and the drift gate depend on
/// the rules' failures by kind and on the history: run says.)
fn refusing_gates(
    ds: &Dataset,
    verdict: &Verdict,
    m: validate::replay::Moves,
    stage: i64,
) -> Vec<String> {
    let valid = verdict.rows_valid + m.to_stage as i64 - m.to_quarantine as i64;
    let rejected = verdict.rows_rejected + m.to_quarantine as i64 - m.to_stage as i64;
    let mut out = Vec::new();
    if stage > 0 && (valid as f64) < stage as f64 * (1.0 - ds.max_shrink) {
        out.push(format!(
            "the shrink gate would refuse: {valid} rows for the {stage} stage holds"
        ));
    }
    if let Some(max) = ds.max_rejected_ratio
        && verdict.rows_in > 0
        && rejected as f64 / verdict.rows_in as f64 > max
    {
        out.push(format!(
            "the rejected-ratio gate would refuse: {rejected} of {} rows rejected (max_rejected_ratio {max})",
            verdict.rows_in
        ));
    }
    if valid == 0 && verdict.rows_in > 0 {
        out.push(format!(
            "the zero-rows gate would refuse: all {} rows rejected",
            verdict.rows_in
        ));
    }
    out
}

/// For each dataset about to be validated again because its rules changed,
/// and each model reading it: what the change reaches (`stage.flights` →
/// `mart.delays.avg_delay ← dep_delay`; a model → its columns). Empty when
/// no rule of a column changed or the models do not plan (said elsewhere).
pub(super) async fn rule_reach(
    run: &Run<'_>,
    period: &str,
    reloading: &BTreeSet<String>,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, RunError> {
    let mut reach: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut changed: Vec<(String, String)> = Vec::new();
    for name in reloading {
        let Some(ds) = run.config.datasets.get(name) else {
            continue;
        };
        let p = ds.period.has_period().then_some(period);
        let verdict = Verdict::latest(&*run.client, name, p)
            .await
            .map_err(read_err("read the verdicts"))?;
        let Some(v) = verdict else { continue };
        for key in v.rules_changed(&Rules::of(ds)) {
            if let Some((column, _)) = key.rsplit_once('.')
                && ds.columns.contains_key(column)
            {
                changed.push((format!("stage.{name}"), column.to_owned()));
            }
        }
    }
    if changed.is_empty() {
        return Ok(reach);
    }
    let Ok(lineage) = transform::lineage::run(run.config, None, None).await else {
        return Ok(reach);
    };
    for m in &lineage.models {
        let mut uses: Vec<String> = Vec::new();
        for c in &m.columns {
            for s in c
                .stage
                .iter()
                .filter(|s| changed.contains(&(s.table.clone(), s.column.clone())))
            {
                uses.push(format!("{} ← {}", c.column, s.column));
            }
        }
        for s in m
            .filters
            .iter()
            .filter(|s| changed.contains(&(s.table.clone(), s.column.clone())))
        {
            uses.push(format!("its filter on {}", s.column));
        }
        uses.dedup();
        if uses.is_empty() {
            continue;
        }
        for table in changed.iter().map(|(t, _)| t).collect::<BTreeSet<_>>() {
            let reads = m
                .columns
                .iter()
                .flat_map(|c| &c.stage)
                .chain(&m.filters)
                .any(|s| &s.table == table);
            if reads {
                reach.entry(table.clone()).or_default().push(format!(
                    "{} ({})",
                    m.model,
                    uses.join(", ")
                ));
            }
        }
        reach.insert(m.model.clone(), uses);
    }
    Ok(reach)
}

/// What one dataset's period would need, and why ([`decision::decide`]'s
/// first decision, which `run` performs); None when nothing would be redone.
pub(super) async fn plan_dataset(
    c: &DatasetRun<'_>,
    listing: Listing<'_>,
) -> Result<Option<(Decision, &'static str, String)>, RunError> {
    let d = decision::decide(&*c.client, c.subject(), Some(listing))
        .await
        .map_err(read_err("read the ledger"))?;
    let Some(words) = d.action.words() else {
        return Ok(None);
    };
    let reason = match &d.action {
        Action::Broken(why) => why.clone(),
        _ => d.reason.clone(),
    };
    Ok(Some((d, words, reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use validate::replay::Moves;

    fn dataset(gates: &str) -> Dataset {
        serde_yaml::from_str(&format!(
            "file_pattern: '^f_(?P<period>\\d{{4}}-\\d{{2}})\\.csv$'\nperiod: month\n{gates}\
             columns:\n  id: {{ type: int }}\n"
        ))
        .expect("a dataset")
    }

    fn verdict(valid: i64, rejected: i64) -> Verdict {
        Verdict {
            rows_in: valid + rejected,
            rows_valid: valid,
            rows_rejected: rejected,
            ..Verdict::sample()
        }
    }

    /// The gates the counts decide are told with their numbers; none when
    /// the moves leave the period within them.
    #[test]
    fn the_plan_names_the_gates_a_rule_edit_would_meet() {
        let moves = |to_stage, to_quarantine| Moves {
            to_stage,
            to_quarantine,
        };
        let ds = dataset("max_rejected_ratio: 0.2\n");
        assert!(refusing_gates(&ds, &verdict(90, 10), moves(5, 5), 90).is_empty());
        assert_eq!(
            refusing_gates(&ds, &verdict(90, 10), moves(0, 15), 90),
            vec![
                "the rejected-ratio gate would refuse: 25 of 100 rows rejected (max_rejected_ratio 0.2)"
            ]
        );
        assert_eq!(
            refusing_gates(&ds, &verdict(90, 10), moves(0, 90), 90),
            vec![
                "the shrink gate would refuse: 0 rows for the 90 stage holds",
                "the rejected-ratio gate would refuse: 100 of 100 rows rejected (max_rejected_ratio 0.2)",
                "the zero-rows gate would refuse: all 100 rows rejected",
            ]
        );
        // Nothing loaded yet: no shrink to speak of.
        let open = dataset("");
        assert_eq!(
            refusing_gates(&open, &verdict(90, 10), moves(0, 90), 0),
            vec!["the zero-rows gate would refuse: all 100 rows rejected"]
        );
    }
}
