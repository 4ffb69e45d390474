//! Recording the verdict: the `meta.validation_log` row that makes a
//! validation real, and the `reporting.*` rows of its quality and profile.

use super::*;

/// The dataset's rules as JSON, for monitoring_file_schema_definition.definition.
pub(super) fn definition(ds: &Dataset) -> Value {
    let bound = |b: &Option<Bound>| match b {
        Some(Bound::Int(i)) => json!(i),
        Some(Bound::Number(x)) => json!(x),
        Some(Bound::Text(t)) => json!(t),
        None => Value::Null,
    };
    let columns: serde_json::Map<String, Value> = ds
        .columns
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                json!({
                    "type": c.ty.to_string(),
                    "required": c.required,
                    "unique": c.unique,
                    "regex": c.regex,
                    "min": bound(&c.min),
                    "max": bound(&c.max),
                    "allowed": c.allowed.as_ref().map(|a| a.iter().map(|v| v.to_string().trim_matches('\'').to_owned()).collect::<Vec<_>>()),
                    "format": c.format,
                }),
            )
        })
        .collect();
    json!({
        "file_pattern": ds.file_pattern,
        "period": ds.period.to_string(),
        "headers": format!("{:?}", ds.headers).to_lowercase(),
        "primary_key": ds.primary_key,
        "min_quality_score": ds.min_quality_score,
        "columns": columns,
    })
}

/// Writes the verdict into the validation's `running` row and the reporting rows,
/// in one transaction: the commit point of the validation.
pub(super) async fn persist(
    client: &mut Client,
    ds: &Dataset,
    input: &Input,
    checked: &mut Checked,
    report: &Report,
    started: Instant,
) -> Result<(), ValidateError> {
    let tx = client
        .transaction()
        .await
        .map_err(db("begin a transaction"))?;
    record_verdict(&tx, ds, report, checked, started).await?;
    // The night's keys become processed with the verdict that stores their rows.
    if let (Some(keys), Some(period)) = (checked.manifest.as_mut(), &input.row.period) {
        std::mem::take(keys)
            .write(
                &tx,
                &input.row.dataset,
                period,
                input.row.id,
                report.validation_id,
            )
            .await?;
    }
    let (file_id, run_id) = upsert_run(&tx, ds, input).await?;
    write_quality(&tx, file_id, run_id, checked).await?;
    tx.commit()
        .await
        .map_err(db("commit the validation report"))?;
    Ok(())
}

/// The verdict: the `running` row becomes passed or failed, with its counts and
/// the Delta versions it approves. Fails if another process marked it meanwhile.
pub(super) async fn record_verdict(
    tx: &tokio_postgres::Transaction<'_>,
    ds: &Dataset,
    report: &Report,
    checked: &Checked,
    started: Instant,
) -> Result<(), ValidateError> {
    let status = if report.passed { "passed" } else { "failed" };
    let duration = started.elapsed().as_millis() as i64;
    let updated = tx
        .execute(
            "UPDATE meta.validation_log
                SET status = $2, rows_in = $3, rows_valid = $4, rows_rejected = $5, score = $6,
                    passed = $7, min_quality_score = $8, cleaned_version = $9,
                    quarantine_version = $10, error = $11, sha256 = $12, finished_at = clock_timestamp(),
                    duration_ms = $13, rows_skipped = $14, duplicate_check = $15,
                    duplicated_rows = $16, replayed_from = $17, cleaned_table_id = $18,
                    quarantine_table_id = $19, missing = $20, amended_from = $21,
                    rows_withdrawn = $22
              WHERE id = $1 AND status = 'running'",
            &[
                &report.validation_id,
                &status,
                &(report.rows_in as i64),
                &(report.rows_valid as i64),
                &(report.rows_rejected as i64),
                &report.score,
                &report.passed,
                &i32::from(ds.min_quality_score),
                &report.cleaned_version,
                &report.quarantine_version,
                &report.error,
                &checked.sha256,
                &duration,
                &report.rows_skipped.map(|n| n as i64),
                &report.duplicate_check,
                // Unknown when the file could not be parsed.
                &(checked.counts.parse_error.is_none())
                    .then_some(checked.counts.uniqueness_rows as i64),
                &report.replayed_from,
                &checked.table_ids.0,
                &checked.table_ids.1,
                &checked.profiler.missing(),
                &checked.amended_from,
                &checked.rows_withdrawn,
            ],
        )
        .await
        .map_err(db("write meta.validation_log"))?;
    if updated != 1 {
        return Err(ValidateError::Superseded {
            validation_id: report.validation_id,
        });
    }
    Ok(())
}

/// The reporting rows the quality hangs on: the dataset's schema definition,
/// its monitoring file and the period's run; (monitoring file id, run id).
pub(super) async fn upsert_run(
    tx: &tokio_postgres::Transaction<'_>,
    ds: &Dataset,
    input: &Input,
) -> Result<(i32, i32), ValidateError> {
    let (row, file) = (&input.row, &input.file);
    let definition_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file_schema_definition (name, description, definition)
             VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                SET description = EXCLUDED.description, definition = EXCLUDED.definition, updated_at = now()
             RETURNING id",
            &[&row.dataset, &ds.description, &definition(ds)],
        )
        .await
        .map_err(db("write reporting.monitoring_file_schema_definition"))?
        .get(0);
    let agency = ds.agency();
    let file_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file (file_name, agency_slug, schema_definition_id)
             VALUES ($1, $2, $3)
             ON CONFLICT (agency_slug, file_name) DO UPDATE SET schema_definition_id = EXCLUDED.schema_definition_id
             RETURNING id",
            &[&row.dataset, &agency, &definition_id],
        )
        .await
        .map_err(db("write reporting.monitoring_file"))?
        .get(0);
    let (modified, lower, anchor) = run_anchor(ds, input);
    let run_date = anchor.date();
    let run_hour = anchor.hour() as i32;
    // Replayed events may validate the same run concurrently: one writer per
    // (monitoring file, run_date, run_hour) until this transaction ends.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('reporting.monitoring_file_run'),
                                      hashtext($1::int::text || ' ' || $2::date::text || ' ' || $3::int::text))",
        &[&file_id, &run_date, &run_hour],
    )
    .await
    .map_err(db("lock the monitoring run"))?;
    let run_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file_run
                (monitoring_file_id, file_last_modified, file_range_lower_limit, file_size, run_date, run_hour)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (monitoring_file_id, run_date, run_hour) DO UPDATE
                SET file_last_modified = EXCLUDED.file_last_modified,
                    file_range_lower_limit = EXCLUDED.file_range_lower_limit,
                    file_size = EXCLUDED.file_size, updated_at = now()
             RETURNING id",
            &[&file_id, &modified, &lower, &(file.size as i64), &run_date, &run_hour],
        )
        .await
        .map_err(db("write reporting.monitoring_file_run"))?
        .get(0);
    Ok((file_id, run_id))
}

/// The run a validation of `input` reports under: the window a
/// monitoring-layout key names, else the period's start, else (no periods)
/// the file's modification hour. (modified, the period's start, the anchor)
fn run_anchor(
    ds: &Dataset,
    input: &Input,
) -> (NaiveDateTime, Option<NaiveDateTime>, NaiveDateTime) {
    let (row, file) = (&input.row, &input.file);
    let modified: NaiveDateTime = file.modified.unwrap_or_else(Utc::now).naive_utc();
    let lower: Option<NaiveDateTime> = row
        .period
        .as_deref()
        .and_then(|p| Period::parse(ds.period, p).ok())
        .map(|p| p.start());
    let anchor = (file.window.as_ref())
        .map(|w| w.window)
        .or(lower)
        .unwrap_or(modified);
    (modified, lower, anchor)
}

/// The profile payload the latest validation reported for `input`'s run
/// (what [`write_quality`] wrote), if any, and only when every declared
/// column was in its file: a file's missing columns are scored from its
/// header, which the kept rows do not show.
pub(super) async fn reported_profile(
    client: &Client,
    ds: &Dataset,
    input: &Input,
) -> Result<Option<Value>, ValidateError> {
    let (_, _, anchor) = run_anchor(ds, input);
    let row = client
        .query_opt(
            "SELECT p.profile_payload
               FROM reporting.monitoring_file_data_profile p
               JOIN reporting.monitoring_file_run r ON r.id = p.monitoring_file_run_id
               JOIN reporting.monitoring_file f ON f.id = r.monitoring_file_id
               JOIN reporting.monitoring_file_data_quality q ON q.monitoring_file_run_id = r.id
              WHERE f.file_name = $1 AND f.agency_slug = $2 AND r.run_date = $3 AND r.run_hour = $4
                AND (q.metrics->'schemaValidation'->>'passed')::boolean",
            &[
                &input.row.dataset,
                &ds.agency(),
                &anchor.date(),
                &(anchor.hour() as i32),
            ],
        )
        .await
        .map_err(db("read the reported profile"))?;
    Ok(row.and_then(|r| r.get::<_, Option<Value>>(0)))
}

/// The run's quality, failed rules, profile, and the file's latest score.
pub(super) async fn write_quality(
    tx: &tokio_postgres::Transaction<'_>,
    file_id: i32,
    run_id: i32,
    checked: &Checked,
) -> Result<(), ValidateError> {
    let (q, profiler) = (&checked.quality, &checked.profiler);
    let failing = profiler.failing_rules();
    let rules: Value = json!(failing
        .iter()
        .map(|f| json!({"column": f.column, "rule": f.rule, "count": f.count, "message": f.message}))
        .collect::<Vec<_>>());
    let rules = (!failing.is_empty()).then_some(rules);
    let failing = &failing;
    tx.execute(
        "INSERT INTO reporting.monitoring_file_data_quality
            (monitoring_file_run_id, score, passed, metrics, deductions, failed_validation_message, failed_validation_rules)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (monitoring_file_run_id) DO UPDATE
            SET score = EXCLUDED.score, passed = EXCLUDED.passed, metrics = EXCLUDED.metrics,
                deductions = EXCLUDED.deductions, failed_validation_message = EXCLUDED.failed_validation_message,
                failed_validation_rules = EXCLUDED.failed_validation_rules, updated_at = now()",
        &[&run_id, &q.score, &q.passed, &q.metrics, &q.deductions, &q.failed_validation_message, &rules],
    )
    .await
    .map_err(db("write reporting.monitoring_file_data_quality"))?;
    tx.execute(
        "DELETE FROM reporting.monitoring_file_failed_validation WHERE monitoring_file_run_id = $1",
        &[&run_id],
    )
    .await
    .map_err(db("clear reporting.monitoring_file_failed_validation"))?;
    for f in failing {
        tx.execute(
            "INSERT INTO reporting.monitoring_file_failed_validation
                (monitoring_file_run_id, column_name, rule, failed_count, example_values, message)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &run_id,
                &f.column,
                &f.rule,
                &(f.count as i64),
                &json!(f.examples),
                &f.message,
            ],
        )
        .await
        .map_err(db("write reporting.monitoring_file_failed_validation"))?;
    }
    tx.execute(
        "INSERT INTO reporting.monitoring_file_data_profile (monitoring_file_run_id, profile_payload)
         VALUES ($1, $2)
         ON CONFLICT (monitoring_file_run_id) DO UPDATE
            SET profile_payload = EXCLUDED.profile_payload, updated_at = now()",
        &[&run_id, &profiler.profile()],
    )
    .await
    .map_err(db("write reporting.monitoring_file_data_profile"))?;
    tx.execute(
        "UPDATE reporting.monitoring_file SET latest_data_quality_score = $1 WHERE id = $2",
        &[&q.score, &file_id],
    )
    .await
    .map_err(db("update reporting.monitoring_file"))?;
    Ok(())
}
