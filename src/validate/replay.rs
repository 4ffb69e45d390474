//! Quarantine replay: validating a period again when its landed file is gone,
//! from what the pipeline kept of the verdict in force — its cleaned rows
//! (typed, rendered back to text the way a Parquet delivery's values are) and
//! its quarantined rows (their original text and lines).
//!
//! Only rules over values can be judged again this way: `allowed`, `regex`,
//! `min`, `max`, `required`, `unique`, the primary key and the thresholds. A
//! changed type, date format, column set or reader setting (delimiter, quote,
//! headers, sheet) decides how the file's text becomes values, which the
//! cleaned rows no longer show: those changes need the file. Cleaned rows keep
//! their line in the file (`_line`), so should a tightened rule reject one,
//! its quarantine row names its line (0 only for rows cleaned before lines
//! were kept; a blank value, kept as null, is null there where the file had
//! empty text).

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, ListArray, StringArray, StructArray};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::TryStreamExt;

use super::*;
use crate::config::ColumnRule;
use crate::ledger::Verdict;

pub use crate::decision::replay_refusal as refusal;
#[cfg(test)]
use crate::decision::replayable;

/// The rows a replay reads: the verdict's Delta versions and counts.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) validation_id: i64,
    cleaned_version: i64,
    quarantine_version: i64,
    rows_valid: i64,
    rows_rejected: i64,
}

impl Kept {
    /// What `verdict` kept, when [`refusal`] found nothing against it.
    pub(super) fn of(verdict: &Verdict) -> Option<Kept> {
        Some(Kept {
            validation_id: verdict.validation_id,
            cleaned_version: verdict.cleaned_version?,
            quarantine_version: verdict.quarantine_version?,
            rows_valid: verdict.rows_valid,
            rows_rejected: verdict.rows_rejected,
        })
    }
}

/// The kept rows of `row`'s period as a source table of text (with
/// `amending`, its quarantined rows and the cleaned rows at those lines
/// alone: an amendment, see [`amendable`]), both kept tables checked to hold
/// exactly as many rows as the verdict counted.
pub(super) async fn open(
    ctx: &SessionContext,
    config: &Config,
    ds: &Dataset,
    row: &FileRow,
    (kept, amending): (&Kept, Option<&Lines>),
) -> Result<Opened, ValidateError> {
    let cleaned = rows_of(ctx, config, "cleaned", kept.cleaned_version, row).await?;
    let quarantine = rows_of(ctx, config, "quarantine", kept.quarantine_version, row).await?;
    counted(row, kept, &cleaned, &quarantine).await?;
    let Some(lines) = amending else {
        return opened(ds, kept, (cleaned, None), quarantine, row);
    };
    // A relaxation reads no cleaned row.
    let cleaned = match lines.is_empty() {
        true => cleaned
            .filter(lit(false))
            .map_err(engine_error(row, "reading the kept rows"))?,
        false => cleaned,
    };
    let mut opened = opened(ds, kept, (cleaned, Some(lines.clone())), quarantine, row)?;
    opened.rows_estimate = Some(kept.rows_rejected as u64 + lines.len() as u64);
    Ok(opened)
}

/// Lines of a file's rows (`_line`), as a set.
pub(super) type Lines = Arc<std::collections::HashSet<i64>>;

/// `batch`'s rows whose line is in `lines` (`inside`), or is not.
pub(super) fn at_lines(
    batch: &RecordBatch,
    lines: &Lines,
    inside: bool,
) -> Result<RecordBatch, DataFusionError> {
    let Some(line) = batch.column_by_name(source::LINE) else {
        return Err(DataFusionError::Execution(format!(
            "the kept rows have no column {}",
            source::LINE
        )));
    };
    let line = datafusion::arrow::compute::cast(line, &DataType::Int64)?;
    let line = line.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let mask: BooleanArray = (line.iter())
        .map(|v| Some(v.is_some_and(|v| lines.contains(&v)) == inside))
        .collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// The cleaned rows an amendment keeps as they are: the verdict's period
/// without the rows at `withdrawn` (judged again with the quarantined ones),
/// typed as the cleaned table holds them. Nothing is parsed.
pub(super) async fn kept_cleaned(
    ctx: &SessionContext,
    config: &Config,
    row: &FileRow,
    (kept, withdrawn): (&Kept, &Lines),
) -> Result<SendableRecordBatchStream, ValidateError> {
    let df = rows_of(ctx, config, "cleaned", kept.cleaned_version, row).await?;
    let stream = df
        .execute_stream()
        .await
        .map_err(engine_error(row, "reading the kept cleaned rows"))?;
    let schema = stream.schema();
    let withdrawn = withdrawn.clone();
    let rows = stream.map(move |batch| batch.and_then(|b| at_lines(&b, &withdrawn, false)));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
}

/// Fails unless the kept tables hold exactly as many of the period's rows as
/// the verdict counted.
async fn counted(
    row: &FileRow,
    kept: &Kept,
    cleaned: &DataFrame,
    quarantine: &DataFrame,
) -> Result<(), ValidateError> {
    for (which, df, want) in [
        ("cleaned", cleaned, kept.rows_valid),
        ("quarantine", quarantine, kept.rows_rejected),
    ] {
        let have = df
            .clone()
            .count()
            .await
            .map_err(engine_error(row, "counting the kept rows"))?;
        if have as i64 != want {
            return Err(ValidateError::Unreplayable {
                file_id: row.id,
                name: row.file_name.clone(),
                uri: row.source_uri.clone(),
                why: format!(
                    "the {which} table holds {have} of its rows where validation {} counted {want}",
                    kept.validation_id
                ),
            });
        }
    }
    Ok(())
}

/// The kept rows as a source table of text: the cleaned rows rendered, then
/// the quarantined ones as delivered.
fn opened(
    ds: &Dataset,
    kept: &Kept,
    (cleaned, only): (DataFrame, Option<Lines>),
    quarantine: DataFrame,
    row: &FileRow,
) -> Result<Opened, ValidateError> {
    let spec = source::Spec::new(ds, FileFormat::Parquet, &[], &[]);
    let schema = spec.schema();
    let render = Arc::new(Render {
        schema: schema.clone(),
        columns: spec.columns,
        formats: spec.temporal_formats,
    });
    let rows = Arc::new(KeptRows {
        cleaned,
        only,
        quarantine,
        render,
    });
    let table = StreamingTable::try_new(schema, vec![rows])
        .map_err(engine_error(row, "reading the kept rows"))?;
    Ok(Opened {
        table: Arc::new(table),
        missing: Vec::new(),
        rows_estimate: Some((kept.rows_valid + kept.rows_rejected) as u64),
    })
}

/// What re-judging a verdict's kept rows under the rules now would move:
/// cleaned rows a rule now rejects, and quarantined rows no rule rejects any
/// more (a row quarantined for a repeated key stays: keys are judged on the
/// whole file, which `run` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moves {
    pub to_stage: u64,
    pub to_quarantine: u64,
}

/// [`Moves`] of `verdict`'s period, computed from its kept rows under `ds`'s
/// rules now (their values checks only; nothing written). None when the
/// verdict kept no rows to judge.
pub async fn moves(
    config: &Config,
    ds: &Dataset,
    dataset: &str,
    period: Option<&str>,
    verdict: &Verdict,
) -> Result<Option<Moves>, DataFusionError> {
    let (Some(cleaned_v), Some(quarantine_v)) =
        (verdict.cleaned_version, verdict.quarantine_version)
    else {
        return Ok(None);
    };
    let ctx = crate::context::session(config.limits.memory_bytes);
    let kept =
        |which, version| kept_table(&ctx, config, (which, dataset, version), verdict, period);
    let (cleaned, quarantine) = (
        kept("cleaned", cleaned_v).await?,
        kept("quarantine", quarantine_v).await?,
    );
    let spec = source::Spec::new(ds, FileFormat::Parquet, &[], &[]);
    let render = Arc::new(Render {
        schema: spec.schema(),
        columns: spec.columns,
        formats: spec.temporal_formats,
    });
    let compiled = rules::compile(ds);
    let bad = (compiled.checks.iter())
        .filter(|c| c.rule != "unique")
        .map(|c| c.flag())
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false));
    // A relaxation cannot fail a cleaned row: they are not read.
    let relaxation =
        (verdict.rules.as_ref()).is_some_and(|then| relaxed(then, &crate::config::Rules::of(ds)));
    let mut counts = [0u64; 2];
    for (k, (df, is_cleaned)) in [(cleaned, true), (quarantine, false)]
        .into_iter()
        .enumerate()
    {
        if is_cleaned && relaxation {
            continue;
        }
        let side = Arc::new(OneSide::new(df, render.clone(), is_cleaned));
        let table = StreamingTable::try_new(side.schema.clone(), vec![side])?;
        let rows = ctx.read_table(Arc::new(table))?;
        // Cleaned rows a rule now rejects; quarantined rows none rejects, but
        // for a repeated key, which stays judged as it was.
        let moving = match is_cleaned {
            true => bad.clone(),
            false => std::ops::Not::not(bad.clone()).and(std::ops::Not::not(col(KEPT_UNIQUE))),
        };
        counts[k] = rows.filter(moving)?.count().await? as u64;
    }
    Ok(Some(Moves {
        to_quarantine: counts[0],
        to_stage: counts[1],
    }))
}

/// The value rules whose change can leave every row as it was: whether a
/// value passes them is all they decide.
fn value_rule(key: &str) -> Option<(String, &'static str)> {
    let rule = ColumnRule::of_key(key)?;
    let name = match rule {
        ColumnRule::Required => "required",
        ColumnRule::Regex => "regex",
        ColumnRule::Min => "min",
        ColumnRule::Max => "max",
        ColumnRule::Allowed => "allowed",
        ColumnRule::Type | ColumnRule::Format | ColumnRule::Unique => return None,
    };
    let (column, _) = key.rsplit_once('.')?;
    Some((column.to_owned(), name))
}

/// One kept table's rows of `verdict`'s file and period, at `version`.
async fn kept_table(
    ctx: &SessionContext,
    config: &Config,
    (which, dataset, version): (&'static str, &str, i64),
    verdict: &Verdict,
    period: Option<&str>,
) -> Result<DataFrame, DataFusionError> {
    let table = ledger::delta_location(config, which, dataset)
        .open_version(version)
        .await
        .map_err(DataFusionError::External)?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut df = ctx
        .read_table(provider)?
        .filter(col("_ingestion_id").eq(lit(verdict.ingestion_id)))?;
    if let Some(p) = period {
        df = df.filter(col("_data_period").eq(lit(p)))?;
    }
    Ok(df)
}

/// Whether the change of value rule `rule` from `then` to `now` can only let
/// more values pass (a relaxation): then a cleaned row cannot fail it now,
/// and only the quarantined rows need judging. Conservative: anything it
/// cannot tell is not a relaxation.
fn relaxes(rule: &str, then: Option<&str>, now: Option<&str>) -> bool {
    let number = |v: &str| v.parse::<f64>().ok();
    match (rule, then, now) {
        (_, Some(_), None) => true,
        ("allowed", Some(a), Some(b)) => {
            let now: std::collections::BTreeSet<&str> = b.split(", ").collect();
            a.split(", ").all(|v| now.contains(v))
        }
        ("min", Some(a), Some(b)) => matches!((number(a), number(b)), (Some(a), Some(b)) if b <= a),
        ("max", Some(a), Some(b)) => matches!((number(a), number(b)), (Some(a), Some(b)) if b >= a),
        _ => false,
    }
}

/// What an amendment reads and keeps ([`amendable`]).
#[derive(Debug, Clone)]
pub(super) struct Amendment {
    pub(super) kept: Kept,
    pub(super) base: profile::Base,
    /// The lines of the verdict's cleaned rows that a changed rule now
    /// rejects: judged again with its quarantined rows and left out of the
    /// cleaned rows it keeps. Empty for a relaxation.
    pub(super) withdrawn: Lines,
}

/// `input` validated by amending its verdict when that is all the rules now
/// ask ([`amendable`]): its quarantined rows, and the cleaned rows a changed
/// rule now rejects, judged again; its other cleaned rows kept. Anything that
/// cannot tell validates as before (from the file, or by replay when it is
/// gone).
pub(super) async fn amend(
    config: &Config,
    client: &Client,
    input: Input,
) -> Result<Input, ValidateError> {
    match amendable(config, client, &input).await {
        Ok(Some(amendment)) => Ok(Input {
            from: super::input::Origin::Amend(amendment),
            ..input
        }),
        Ok(None) => Ok(input),
        Err(e) => {
            let error = crate::exit::report(&e);
            tracing::info!(event = "amend_skipped", error = %error, "could not tell whether the verdict can be amended: validating the whole file");
            Ok(input)
        }
    }
}

/// Whether `input`'s verdict in force can be amended instead of validating
/// the file again: it is the latest verdict of this very file (no attempt
/// cut off since), its period's rows are intact and kept their lines, and
/// every rule that changed since is a value rule ([`amends`]). Typing is
/// unchanged, so a cleaned row keeps its values, and a row can only move by
/// a changed rule: a cleaned row that no changed rule rejects now stays as it
/// is, and every other row — the quarantined ones, and the cleaned ones a
/// changed rule rejects (found reading the changed columns alone) — is judged
/// again. A key repeats only among quarantined rows (every row of a repeated
/// key is quarantined), so the verdict is the one the whole file would get.
/// Its profile stands but for the rule failures ([`profile::Base`]).
/// Periodic, non-incremental datasets only.
pub(super) async fn amendable(
    config: &Config,
    client: &Client,
    input: &Input,
) -> Result<Option<Amendment>, ValidateError> {
    let row = &input.row;
    let Some(ds) = config.datasets.get(&row.dataset) else {
        return Ok(None);
    };
    let Some(period) = row.period.as_deref().filter(|_| ds.period.has_period()) else {
        return Ok(None);
    };
    let Some(v) = Verdict::latest(client, &row.dataset, Some(period))
        .await
        .map_err(db("read meta.validation_log"))?
    else {
        return Ok(None);
    };
    let Some(kept) = Kept::of(&v).filter(|_| v.settles(row.id) && amends(ds, &v)) else {
        return Ok(None);
    };
    // The cleaned table the verdict wrote to is still the one there.
    let location = ledger::delta_location(config, "cleaned", &row.dataset);
    let Ok(table) = location.open_version(kept.cleaned_version).await else {
        return Ok(None);
    };
    if v.cleaned_table_id.is_some() && v.cleaned_table_id != ledger::table_id(&table) {
        return Ok(None);
    }
    let Some(withdrawn) = withdrawn(config, ds, (&row.dataset, period), &v).await? else {
        return Ok(None);
    };
    let missing: Option<serde_json::Value> = client
        .query_one(
            "SELECT missing FROM meta.validation_log WHERE id = $1",
            &[&v.validation_id],
        )
        .await
        .map_err(db("read meta.validation_log"))?
        .get(0);
    let Some(missing) = missing else {
        return Ok(None);
    };
    let Some(profile) = super::verdict::reported_profile(client, ds, input).await? else {
        return Ok(None);
    };
    let base = profile::Base {
        kept_rows: v.rows_valid as u64 - withdrawn.len() as u64,
        profile,
        missing,
    };
    Ok(Some(Amendment {
        kept,
        base,
        withdrawn,
    }))
}

/// The lines of `verdict`'s cleaned rows that a changed rule rejects now
/// (none for a relaxation, which is not read); None when a row flagged has
/// no line (rows cleaned before lines were kept: the file tells them apart).
async fn withdrawn(
    config: &Config,
    ds: &Dataset,
    (dataset, period): (&str, &str),
    verdict: &Verdict,
) -> Result<Option<Lines>, ValidateError> {
    let now = crate::config::Rules::of(ds);
    let (Some(then), Some(cleaned_v)) = (&verdict.rules, verdict.cleaned_version) else {
        return Ok(None);
    };
    if relaxed(then, &now) {
        return Ok(Some(Lines::default()));
    }
    let rules: Vec<(String, &'static str)> = (then.changed(&now).iter())
        .filter_map(|k| value_rule(k))
        .collect();
    let engine = |e: DataFusionError| ValidateError::Engine {
        dataset: dataset.to_owned(),
        step: "finding the cleaned rows the new rules reject",
        source: e,
    };
    let ctx = crate::context::session(config.limits.memory_bytes);
    let (render, flags) = flagging(ds, &rules).map_err(engine)?;
    let side = (("cleaned", cleaned_v, true), render, flags);
    let flagged = flagged_side(&ctx, config, (dataset, Some(period)), verdict, side, &rules)
        .await
        .and_then(|df| df.select_columns(&[source::LINE]))
        .map_err(engine)?;
    let mut lines = std::collections::HashSet::new();
    for batch in flagged.collect().await.map_err(engine)? {
        let line = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        lines.extend(line.iter().map(|l| l.unwrap_or(0)));
    }
    Ok((!lines.contains(&0)).then(|| Arc::new(lines)))
}

/// Whether validating `verdict`'s file again would amend it, as far as the
/// verdict and the config tell ([`amendable`] checks the rest: the same file,
/// its table, lines and profile): a periodic, non-incremental dataset whose
/// rules changed since only as value rules, and a verdict that kept its
/// rows. What `run --plan` says it will do.
pub fn amends(ds: &Dataset, verdict: &Verdict) -> bool {
    let now = crate::config::Rules::of(ds);
    ds.period.has_period()
        && ds.incremental.is_none()
        && !verdict.malformed
        && !verdict.interrupted_after
        && Kept::of(verdict).is_some()
        && (verdict.rules.as_ref()).is_some_and(|then| {
            let changed = then.changed(&now);
            !changed.is_empty() && changed.iter().all(|k| value_rule(k).is_some())
        })
}

/// Whether the rules changed from `then` to `now` only by letting more
/// values pass (see [`amends`]): what `run --plan` calls a relaxation.
pub fn relaxes_only(ds: &Dataset, verdict: &Verdict) -> bool {
    (verdict.rules.as_ref()).is_some_and(|then| relaxed(then, &crate::config::Rules::of(ds)))
}

/// Whether every rule that changed from `then` to `now` is a value rule that
/// now lets more values pass ([`relaxes`]): no cleaned row can fail them.
fn relaxed(then: &crate::config::Rules, now: &crate::config::Rules) -> bool {
    then.changed(now).iter().all(|k| {
        let rule = k.rsplit_once('.').map_or("", |(_, r)| r);
        value_rule(k).is_some() && relaxes(rule, then.get(k), now.get(k))
    })
}

/// A rule edit that changes nothing in `verdict`'s period: when every rule
/// that changed is a value rule, no kept row failed it before and none fails
/// it now, no row moves and no row's errors, counts or score change. Then a
/// verdict under the new rules is recorded that keeps `verdict`'s rows (its
/// Delta versions and counts, `kept_from`), which the load of those rows
/// holds too: nothing is validated, loaded or transformed again. Returns its
/// id; None when the edit changes (or may change) something.
pub async fn rejudge(
    config: &Config,
    client: &Client,
    ds: &Dataset,
    dataset: &str,
    period: Option<&str>,
    verdict: &Verdict,
) -> Result<Option<i64>, ValidateError> {
    if !changes_no_row(config, ds, dataset, period, verdict).await? {
        return Ok(None);
    }
    let now = crate::config::Rules::of(ds);
    let changed = verdict
        .rules
        .as_ref()
        .map(|then| then.changed(&now))
        .unwrap_or_default();
    let id: i64 = client
        .query_one(
            "INSERT INTO meta.validation_log
                 (ingestion_id, dataset, period, status, rows_in, rows_valid, rows_rejected, score,
                  passed, min_quality_score, cleaned_version, quarantine_version, started_at,
                  finished_at, duration_ms, sha256, rows_skipped, duplicate_check, duplicated_rows,
                  rules, rules_fingerprint, replayed_from, cleaned_table_id, quarantine_table_id,
                  missing, kept_from)
             SELECT ingestion_id, dataset, period, status, rows_in, rows_valid, rows_rejected, score,
                    passed, min_quality_score, cleaned_version, quarantine_version, now(),
                    clock_timestamp(), 0, sha256, rows_skipped, duplicate_check, duplicated_rows,
                    $2, $3, replayed_from, cleaned_table_id, quarantine_table_id,
                    missing, coalesce(kept_from, id)
               FROM meta.validation_log WHERE id = $1
             RETURNING id",
            &[&verdict.validation_id, &now.to_json(), &now.fingerprint()],
        )
        .await
        .map_err(db("record the re-judged verdict in meta.validation_log"))?
        .get(0);
    tracing::info!(event = "rejudged", validation_id = id, kept_from = verdict.validation_id, changed = %changed.join(", "), "re-judged under the new rules: no row changes; the period keeps its rows, its load and its models");
    Ok(Some(id))
}

/// Whether a rule edit leaves every row of `verdict`'s period as it was
/// (see [`rejudge`]): what `run` re-judges instead of rewriting, and what
/// `run --plan` says it will. Reads the changed columns of the kept rows.
pub async fn changes_no_row(
    config: &Config,
    ds: &Dataset,
    dataset: &str,
    period: Option<&str>,
    verdict: &Verdict,
) -> Result<bool, ValidateError> {
    let now = crate::config::Rules::of(ds);
    let Some(then) = &verdict.rules else {
        return Ok(false);
    };
    let changed = then.changed(&now);
    let rules: Option<Vec<(String, &'static str)>> =
        changed.iter().map(|k| value_rule(k)).collect();
    let (Some(rules), Some(cleaned_v), Some(quarantine_v)) =
        (rules, verdict.cleaned_version, verdict.quarantine_version)
    else {
        return Ok(false);
    };
    if changed.is_empty() || verdict.malformed || ds.incremental.is_some() {
        return Ok(false);
    }
    let engine = |e: DataFusionError| ValidateError::Engine {
        dataset: dataset.to_owned(),
        step: "judging the kept rows under the new rules",
        source: e,
    };
    // A relaxation cannot fail a cleaned row: the quarantined ones alone say.
    let relaxed = relaxed(then, &now);
    let flagged = flagged_rows(
        config,
        ds,
        dataset,
        period,
        verdict,
        ((!relaxed).then_some(cleaned_v), quarantine_v),
        &rules,
    )
    .await
    .map_err(engine)?;
    Ok(flagged == 0)
}

/// Kept rows of the period that a changed value rule flags now, or whose
/// errors held it before (quarantined rows failing it).
async fn flagged_rows(
    config: &Config,
    ds: &Dataset,
    dataset: &str,
    period: Option<&str>,
    verdict: &Verdict,
    (cleaned_v, quarantine_v): (Option<i64>, i64),
    rules: &[(String, &'static str)],
) -> Result<u64, DataFusionError> {
    let ctx = crate::context::session(config.limits.memory_bytes);
    let (render, now) = flagging(ds, rules)?;
    let mut flagged = 0;
    let sides = [
        cleaned_v.map(|v| ("cleaned", v, true)),
        Some(("quarantine", quarantine_v, false)),
    ];
    for side in sides.into_iter().flatten() {
        let side = (side, render.clone(), now.clone());
        let rows = flagged_side(&ctx, config, (dataset, period), verdict, side, rules).await?;
        flagged += rows.count().await? as u64;
    }
    Ok(flagged)
}

/// How [`flagged_side`] reads kept rows under changed `rules`: only their
/// columns rendered, and the flag of any of their checks now.
fn flagging(
    ds: &Dataset,
    rules: &[(String, &'static str)],
) -> Result<(Arc<Render>, Expr), DataFusionError> {
    let spec = source::Spec::new(ds, FileFormat::Parquet, &[], &[]);
    // Only the columns whose rules changed are read and rendered: the checks
    // of the other columns are not asked.
    let wanted = |c: &String| rules.iter().any(|(col, _)| col == c);
    let schema = spec.schema();
    let keep: Vec<usize> = (schema.fields().iter().enumerate())
        .filter(|(_, f)| wanted(f.name()) || !ds.columns.contains_key(f.name()))
        .map(|(i, _)| i)
        .collect();
    let (columns, formats): (Vec<String>, Vec<Option<String>>) = (spec.columns.into_iter())
        .zip(spec.temporal_formats)
        .filter(|(c, _)| wanted(c))
        .unzip();
    let render = Arc::new(Render {
        schema: Arc::new(schema.project(&keep)?),
        columns,
        formats,
    });
    let compiled = rules::compile(ds);
    let now = (compiled.checks.iter())
        .filter(|c| {
            rules
                .iter()
                .any(|(col, rule)| c.column == *col && c.rule == *rule)
        })
        .map(|c| c.flag())
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false));
    Ok((render, now))
}

/// One kept table's rows (of the cleaned table or the quarantine, at
/// `version`) that a changed rule flags now ([`flagging`]), or — quarantined
/// — whose errors held one of `rules`.
async fn flagged_side(
    ctx: &SessionContext,
    config: &Config,
    (dataset, period): (&str, Option<&str>),
    verdict: &Verdict,
    ((which, version, cleaned), render, now): ((&'static str, i64, bool), Arc<Render>, Expr),
    rules: &[(String, &'static str)],
) -> Result<DataFrame, DataFusionError> {
    let wanted = |c: &String| rules.iter().any(|(col, _)| col == c);
    let df = kept_table(ctx, config, (which, dataset, version), verdict, period).await?;
    let read: Vec<String> = (df.schema().fields().iter())
        .map(|f| f.name().clone())
        .filter(|n| wanted(n) || n == source::LINE || n == "_errors")
        .collect();
    let df = df.select_columns(&read.iter().map(String::as_str).collect::<Vec<_>>())?;
    let side = Arc::new(OneSide::new(df, render, cleaned).failing(rules.to_vec()));
    let table = StreamingTable::try_new(side.schema.clone(), vec![side])?;
    ctx.read_table(Arc::new(table))?
        .filter(now.or(col(KEPT_UNIQUE)))
}

/// The column [`OneSide`] adds: the row was quarantined for a repeated key.
const KEPT_UNIQUE: &str = "__kept_unique";

/// One kept table's rows as the source's text columns, with [`KEPT_UNIQUE`].
struct OneSide {
    df: DataFrame,
    render: Arc<Render>,
    cleaned: bool,
    /// The render's schema and [`KEPT_UNIQUE`].
    schema: SchemaRef,
    /// The errors [`KEPT_UNIQUE`] flags: a repeated key (any column), or
    /// these (column, rule) pairs.
    flags: Option<Vec<(String, &'static str)>>,
}

impl std::fmt::Debug for OneSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneSide")
    }
}

impl OneSide {
    fn new(df: DataFrame, render: Arc<Render>, cleaned: bool) -> OneSide {
        let mut fields: Vec<Field> = (render.schema.fields().iter())
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(KEPT_UNIQUE, DataType::Boolean, false));
        OneSide {
            df,
            render,
            cleaned,
            schema: Arc::new(Schema::new(fields)),
            flags: None,
        }
    }

    /// [`KEPT_UNIQUE`] flags a quarantined row failing one of `rules` instead.
    fn failing(mut self, rules: Vec<(String, &'static str)>) -> OneSide {
        self.flags = Some(rules);
        self
    }

    fn batch(&self, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let text = match self.cleaned {
            true => self.render.cleaned(batch)?,
            false => self.render.quarantined(batch)?,
        };
        let unique: BooleanArray = match (self.cleaned, batch.column_by_name("_errors")) {
            (false, Some(errors)) => match &self.flags {
                None => errors_of(errors, |_, rule| rule == "unique")?,
                Some(pairs) => errors_of(errors, |column, rule| {
                    pairs.iter().any(|(c, r)| c == column && *r == rule)
                })?,
            },
            _ => BooleanArray::from(vec![false; batch.num_rows()]),
        };
        let mut columns = text.columns().to_vec();
        columns.push(Arc::new(unique));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl PartitionStream for OneSide {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let df = self.df.clone();
        let mut me = OneSide::new(self.df.clone(), self.render.clone(), self.cleaned);
        me.flags = self.flags.clone();
        let stream = futures::stream::once(async move { df.execute_stream().await })
            .try_flatten()
            .map(move |batch| batch.and_then(|b| me.batch(&b)));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Whether each row's `_errors` holds an error `wanted(column, rule)` says.
fn errors_of(
    errors: &ArrayRef,
    wanted: impl Fn(&str, &str) -> bool,
) -> Result<BooleanArray, DataFusionError> {
    let list = errors
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| DataFusionError::Execution("_errors is not a list".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        let has = (!list.is_null(i))
            .then(|| list.value(i))
            .and_then(|items| {
                let items = items.as_any().downcast_ref::<StructArray>()?;
                let text = |name: &str| {
                    let a = items.column_by_name(name)?;
                    datafusion::arrow::compute::cast(a, &DataType::Utf8).ok()
                };
                let (columns, rules) = (text("column")?, text("rule")?);
                let (columns, rules) = (columns.as_string::<i32>(), rules.as_string::<i32>());
                Some((0..rules.len()).any(|k| wanted(columns.value(k), rules.value(k))))
            })
            .unwrap_or(false);
        out.push(has);
    }
    Ok(BooleanArray::from(out))
}

/// One kept table's rows of the validated file, at the verdict's version.
async fn rows_of(
    ctx: &SessionContext,
    config: &Config,
    which: &'static str,
    version: i64,
    row: &FileRow,
) -> Result<DataFrame, ValidateError> {
    let location = ledger::delta_location(config, which, &row.dataset);
    let delta = |source: Box<dyn std::error::Error + Send + Sync>| ValidateError::StageDir {
        path: format!("{}@v{version}", location.display),
        source,
    };
    let table = location.open_version(version).await.map_err(delta)?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| delta(Box::new(e)))?;
    let mut df = ctx
        .read_table(provider)
        .and_then(|df| df.filter(col("_ingestion_id").eq(lit(row.id))))
        .map_err(|e| delta(Box::new(e)))?;
    if let Some(p) = &row.period {
        df = df
            .filter(col("_data_period").eq(lit(p.as_str())))
            .map_err(|e| delta(Box::new(e)))?;
    }
    Ok(df)
}

/// How kept rows become the source's text columns.
#[derive(Debug)]
struct Render {
    schema: SchemaRef,
    columns: Vec<String>,
    formats: Vec<Option<String>>,
}

impl Render {
    /// Cleaned rows: typed values as text in the column's format, and the
    /// line each kept.
    fn cleaned(&self, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let n = batch.num_rows();
        let mut arrays = Vec::with_capacity(self.columns.len() + 2);
        for (name, format) in self.columns.iter().zip(&self.formats) {
            let column = batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Execution(format!("the cleaned table has no column {name}"))
            })?;
            arrays.push(source::text_of(column, format.as_deref())?);
        }
        // Its line in the file, kept with it (0 for rows written before lines were).
        let lines: ArrayRef = match batch.column_by_name(source::LINE) {
            Some(line) => {
                let line = datafusion::arrow::compute::cast(line, &DataType::Int64)?;
                let line = line.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                Arc::new(
                    line.iter()
                        .map(|v| Some(v.unwrap_or(0)))
                        .collect::<Int64Array>(),
                )
            }
            None => Arc::new(Int64Array::from(vec![0; n])),
        };
        arrays.push(lines);
        arrays.push(datafusion::arrow::array::new_null_array(&DataType::Utf8, n));
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// Quarantined rows: their original text and line; a malformed row stays so.
    fn quarantined(&self, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let text = |name: &str| -> Result<ArrayRef, DataFusionError> {
            let column = batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Execution(format!("the quarantine table has no column {name}"))
            })?;
            Ok(datafusion::arrow::compute::cast(column, &DataType::Utf8)?)
        };
        let mut arrays = Vec::with_capacity(self.columns.len() + 2);
        for name in &self.columns {
            arrays.push(text(name)?);
        }
        let line = text(source::LINE)?;
        arrays.push(datafusion::arrow::compute::cast(&line, &DataType::Int64)?);
        let errors = batch.column_by_name("_errors").ok_or_else(|| {
            DataFusionError::Execution("the quarantine table has no column _errors".into())
        })?;
        arrays.push(Arc::new(shapes(errors)?));
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// Each row's malformed-row message (its `_row` error's value), or null.
fn shapes(errors: &ArrayRef) -> Result<StringArray, DataFusionError> {
    let list = errors
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| DataFusionError::Execution("_errors is not a list".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        let shape = (!list.is_null(i)).then(|| list.value(i)).and_then(|items| {
            let items = items.as_any().downcast_ref::<StructArray>()?;
            let column = items.column_by_name("column")?;
            let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).ok()?;
            let value = items.column_by_name("value")?;
            let value = datafusion::arrow::compute::cast(value, &DataType::Utf8).ok()?;
            let (column, value) = (column.as_string::<i32>(), value.as_string::<i32>());
            (0..items.len())
                .find(|&k| column.value(k) == "_row")
                .map(|k| value.value(k).to_owned())
        });
        out.push(shape);
    }
    Ok(StringArray::from(out))
}

/// The kept rows as one stream: the cleaned rows, then the quarantined ones,
/// read in this process; [`open`] wraps it in DataFusion's `StreamingTable`.
struct KeptRows {
    cleaned: DataFrame,
    /// The lines of the cleaned rows read; None: all.
    only: Option<Lines>,
    quarantine: DataFrame,
    render: Arc<Render>,
}

impl std::fmt::Debug for KeptRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptRows")
    }
}

impl PartitionStream for KeptRows {
    fn schema(&self) -> &SchemaRef {
        &self.render.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (cleaned, quarantine) = (self.cleaned.clone(), self.quarantine.clone());
        let (a, b) = (self.render.clone(), self.render.clone());
        let only = self.only.clone();
        let cleaned = futures::stream::once(async move { cleaned.execute_stream().await })
            .try_flatten()
            .map(move |batch| {
                batch.and_then(|batch| match &only {
                    Some(lines) => a.cleaned(&at_lines(&batch, lines, true)?),
                    None => a.cleaned(&batch),
                })
            });
        let quarantined = futures::stream::once(async move { quarantine.execute_stream().await })
            .try_flatten()
            .map(move |batch| batch.and_then(|batch| b.quarantined(&batch)));
        Box::pin(RecordBatchStreamAdapter::new(
            self.render.schema.clone(),
            cleaned.chain(quarantined),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(allowed: &str, ty: &str) -> Dataset {
        serde_yaml::from_str(&format!(
            "file_pattern: '^f_(?P<period>\\d{{4}}-\\d{{2}})\\.csv$'\nperiod: month\n\
             columns:\n  id: {{ type: {ty} }}\n  origin: {{ type: string, allowed: [{allowed}] }}\n"
        ))
        .expect("a dataset")
    }

    fn verdict(ds: &Dataset) -> Verdict {
        Verdict {
            passed: false,
            score: Some(50),
            rows_valid: 5,
            rows_rejected: 5,
            rules: Some(crate::config::Rules::of(ds)),
            ..Verdict::sample()
        }
    }

    /// Only what can let more values pass is a relaxation; anything unclear is not.
    #[test]
    fn relaxations_are_told_conservatively() {
        assert!(relaxes(
            "allowed",
            Some("'EWR', 'JFK'"),
            Some("'EWR', 'JFK', 'SFO'")
        ));
        assert!(!relaxes(
            "allowed",
            Some("'EWR', 'JFK'"),
            Some("'EWR', 'SFO'")
        ));
        assert!(relaxes("min", Some("0"), Some("-10")));
        assert!(!relaxes("min", Some("0"), Some("1")));
        assert!(relaxes("max", Some("10"), Some("10.5")));
        assert!(
            !relaxes("max", Some("'2020-01-01'"), Some("'2021-01-01'")),
            "dates are not told"
        );
        assert!(relaxes("required", Some("true"), None));
        assert!(relaxes("regex", Some("^a$"), None));
        assert!(!relaxes("regex", Some("^a$"), Some("^a|b$")));
        assert!(
            !relaxes("min", None, Some("0")),
            "a new rule is no relaxation"
        );
    }

    #[test]
    fn value_rules_replay_and_reading_rules_need_the_file() {
        let then = dataset("JFK", "int");
        let v = verdict(&then);
        assert_eq!(refusal(&dataset("JFK, LGA", "int"), Some(&v), 2), None);
        assert_eq!(
            refusal(&then, Some(&v), 2),
            None,
            "no change replays the same"
        );
        let why = refusal(&dataset("JFK", "string"), Some(&v), 2).expect("a type change");
        assert!(why.contains("id.type"), "{why}");
        assert!(refusal(&dataset("JFK, LGA", "int"), Some(&v), 3).is_some());
        assert!(refusal(&then, None, 2).is_some());
        // A later validation that did not finish leaves the verdict's own
        // Delta versions as they were (a version is never rewritten): the
        // replay reads them, and checks their counts.
        let cut = Verdict {
            interrupted_after: true,
            ..v.clone()
        };
        assert_eq!(refusal(&dataset("JFK, LGA", "int"), Some(&cut), 2), None);
        let malformed = Verdict {
            malformed: true,
            ..v.clone()
        };
        assert!(
            refusal(&then, Some(&malformed), 2)
                .expect("")
                .contains("parsed")
        );
    }

    #[test]
    fn replayable_keys_are_value_rules_and_thresholds() {
        for key in [
            "a.allowed",
            "a.regex",
            "a.min",
            "a.max",
            "a.required",
            "a.unique",
        ] {
            assert!(replayable(key), "{key}");
        }
        for key in [
            "primary_key",
            "min_quality_score",
            "max_shrink",
            "max_rejected_ratio",
        ] {
            assert!(replayable(key), "{key}");
        }
        for key in [
            "a.type",
            "a.format",
            "columns",
            "delimiter",
            "quote",
            "headers",
            "sheet",
            "period",
            "format",
            "incremental",
        ] {
            assert!(!replayable(key), "{key}");
        }
    }
}
