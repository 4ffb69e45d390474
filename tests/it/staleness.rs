//! Change-aware runs: the second run after an edit. A rule, a model or a
//! re-delivery makes exactly its periods stale; `status` says why, `run`
//! redoes exactly that, `run --plan` shows it and changes nothing, and a range
//! run killed midway finishes on the next try without redoing what finished.

use std::path::Path;

use crate::support::*;

/// `flights` with its `origin` and `carrier` rules as given.
fn config(allowed: &str, regex: &str) -> String {
    format!(
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  flights:
    file_pattern: '^flights_(?P<period>\d{{4}}-\d{{2}})\.csv$'
    period: month
    primary_key: [id]
    min_quality_score: 80
    columns:
      id:      {{ type: int, required: true }}
      origin:  {{ type: string, allowed: [{allowed}] }}
      carrier: {{ type: string, regex: '{regex}' }}
"#
    )
}

const STRICT: (&str, &str) = ("JFK, LGA", "^[A-Z]{2}$");

fn write(p: &Path, rel: &str, text: &str) {
    let path = p.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `rows` flights, each from `origin(i)` flown by `carrier`.
fn flights(
    p: &Project,
    period: &str,
    rows: usize,
    origin: impl Fn(usize) -> &'static str,
    carrier: &str,
) {
    let mut text = String::from("id,origin,carrier\n");
    for i in 1..=rows {
        text.push_str(&format!("{i},{},{carrier}\n", origin(i)));
    }
    write(p.dir.path(), &format!("landed/flights_{period}.csv"), &text);
}

/// Two core models and a mart model over one of them.
fn models(p: &Project) {
    write(
        p.dir.path(),
        "sql/core/by_origin.sql",
        "SELECT origin, count(*) AS n FROM stage.flights WHERE _data_period = $period GROUP BY origin\n",
    );
    write(
        p.dir.path(),
        "sql/core/by_carrier.sql",
        "SELECT carrier, count(*) AS n FROM stage.flights WHERE _data_period = $period GROUP BY carrier\n",
    );
    write(
        p.dir.path(),
        "sql/mart/origins.sql",
        "SELECT origin, n FROM core.by_origin WHERE _data_period = $period\n",
    );
}

fn set_config(p: &Project, text: &str) {
    std::fs::write(p.path("datasets_config.yml"), text).unwrap();
}

fn count(p: &Project, sql: &str) -> i64 {
    p.db.client().query_one(sql, &[]).unwrap().get(0)
}

/// Every meta table's rows and every Delta log file: what `--plan` must not change.
fn everything(p: &Project) -> String {
    let mut c = p.db.client();
    let mut out = String::new();
    for t in [
        "ingestion_log",
        "validation_log",
        "load_log",
        "transform_log",
        "processed_keys",
    ] {
        let rows = c
            .query(&format!("SELECT t::text FROM meta.{t} t ORDER BY 1"), &[])
            .unwrap();
        for r in rows {
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
    }
    let mut logs: Vec<String> = walk(&p.path("stage"));
    logs.sort();
    out.push_str(&logs.join("\n"));
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path.display().to_string()]
            }
        })
        .collect()
}

#[test]
fn a_relaxed_rule_makes_a_rejected_period_pass_on_the_next_plain_run() {
    let p = Project::new("stale_relaxed", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 10, |_| "SFO", "B6X");
    let first = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(first.code, 3, "{first:?}");
    assert_eq!(stage_of(&first.json(), "flights", "validate")["score"], 50);
    // Rejected as the rules stand: nothing to redo, but not green either.
    let again = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 3, "{again:?}");

    set_config(&p, &config("JFK, LGA, SFO", "^[A-Z0-9]{2,3}$"));
    let status = p.run(&["status", "--period", "2013-05"]);
    let period = &status.json()["periods"][0];
    assert_eq!(
        period["stale"], "rules changed: carrier.regex, origin.allowed",
        "{period}"
    );
    let check = p.run(&["status", "--check"]);
    assert_eq!(check.code, 3, "stale items fail --check: {check:?}");

    let before = everything(&p);
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let items = plan.json()["items"].as_array().unwrap().clone();
    assert_eq!(items[0]["target"], "stage.flights", "{items:?}");
    assert_eq!(items[0]["action"], "validate, load");
    assert_eq!(
        items[0]["reason"],
        "rules changed: carrier.regex, origin.allowed; judged on its kept rows: 10 row(s) move \
         from quarantine to stage, 0 from stage to quarantine; an amendment: only its quarantined \
         rows and the cleaned rows that move are judged again (the file is not read)"
    );
    assert_eq!(everything(&p), before, "--plan changed something");

    let fixed = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(fixed.code, 0, "{fixed:?}");
    let out = fixed.json();
    assert_eq!(stage_of(&out, "flights", "validate")["status"], "done");
    assert_eq!(stage_of(&out, "flights", "load-stage")["status"], "done");
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 10);
    let done = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(done.code, 99, "{done:?}");
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 99, "{plan:?}");
    assert_eq!(p.run(&["status", "--check"]).code, 0);
}

#[test]
fn a_tightened_rule_moves_rows_to_quarantine_and_gates_still_apply() {
    let p = Project::new("stale_tightened", &config(STRICT.0, STRICT.1));
    // Rows 1 and 2 fly from LGA, the rest from JFK.
    flights(
        &p,
        "2013-05",
        10,
        |i| if i <= 2 { "LGA" } else { "JFK" },
        "AA",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 10);

    set_config(&p, &config("JFK", STRICT.1));
    let status = p.run(&["status", "--check"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(
        status.stdout.contains("rules changed: origin.allowed"),
        "{}",
        status.stdout
    );
    // load-stage alone refuses rows judged by rules that are gone.
    let load = p.run(&["load-stage", "--dataset", "flights", "--period", "2013-05"]);
    assert_eq!(load.code, 3, "{load:?}");
    assert!(load.stdout.contains("rules changed"), "{}", load.stdout);

    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 8);
    let quarantined = delta_rows(
        &p.path("stage/quarantine/flights"),
        "SELECT count(*) FROM t WHERE _data_period = '2013-05'",
    );
    assert_eq!(quarantined[0][0], "2", "{quarantined:?}");

    // Tighter still: every row fails, and the period is not emptied.
    set_config(&p, &config("EWR", STRICT.1));
    let emptied = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(emptied.code, 3, "{emptied:?}");
    let load = stage_of(&emptied.json(), "flights", "load-stage").clone();
    assert_eq!(load["status"], "rejected", "{load}");
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 8);
    assert_eq!(p.run(&["status", "--check"]).code, 3);
}

#[test]
fn a_cosmetic_yaml_edit_makes_nothing_stale() {
    let p = Project::new("stale_cosmetic", &config(STRICT.0, STRICT.1));
    models(&p);
    flights(&p, "2013-05", 4, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    let reordered = "# the same rules, written differently
version: 1
landed_dir: landed
stage_dir: stage
datasets:
  flights:
    description: comments and order are not rules
    columns:
      id:      { required: true, type: int, unique: false }
      origin:  { allowed: [LGA, JFK], type: string }   # order of a set
      carrier: { regex: '^[A-Z]{2}$', type: string }
    min_quality_score: 80
    primary_key: [id]
    period: month
    file_pattern: '^flights_(?P<period>\\d{4}-\\d{2})\\.csv$'
";
    set_config(&p, reordered);
    write(
        p.dir.path(),
        "sql/core/by_origin.sql",
        "-- origins\nselect origin,\n       count(*) as n\n  from stage.flights\n where _data_period = $period\n group by origin\n",
    );
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 99, "{plan:?}");
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 99, "{run:?}");
    assert_eq!(p.run(&["status", "--check"]).code, 0);
}

/// (model, period) of every done transform_log row after `after`.
fn model_runs(p: &Project, after: i64) -> Vec<(String, String)> {
    p.db.client()
        .query(
            "SELECT model, period FROM meta.transform_log WHERE id > $1 AND status = 'done'
              ORDER BY period, model",
            &[&after],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn last_model_run(p: &Project) -> i64 {
    count(p, "SELECT coalesce(max(id), 0) FROM meta.transform_log")
}

#[test]
fn an_edited_model_reruns_it_and_its_dependants_in_every_period_of_the_range() {
    let p = Project::new("stale_model_edit", &config(STRICT.0, STRICT.1));
    models(&p);
    for period in ["2013-05", "2013-06", "2013-07"] {
        flights(&p, period, 3, |_| "JFK", "AA");
    }
    let range = ["run", "--from", "2013-05", "--to", "2013-07"];
    let first = p.run(&range);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.json()["periods"].as_array().unwrap().len(), 3);
    // Each load's log line names the period it loaded, not the range's first.
    let loaded: Vec<&str> = (first.stderr.lines())
        .filter(|l| l.contains(" loaded ") && l.contains("load_id="))
        .filter_map(|l| l.split(" period=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(
        loaded,
        ["2013-05", "2013-06", "2013-07"],
        "{}",
        first.stderr
    );
    assert_eq!(p.run(&range).code, 99);

    // The mart model alone.
    let mark = last_model_run(&p);
    write(
        p.dir.path(),
        "sql/mart/origins.sql",
        "SELECT origin, n AS flights FROM core.by_origin WHERE _data_period = $period\n",
    );
    let status = p.run(&["status"]).json();
    let stale: Vec<String> = status["stale_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {} {}", m["model"], m["period"], m["reason"]))
        .collect();
    assert_eq!(stale.len(), 3, "{stale:?}");
    assert!(stale[0].contains("model changed"), "{stale:?}");
    p.db.client()
        .batch_execute("DROP TABLE mart.origins")
        .unwrap();
    assert_eq!(p.run(&range).code, 0);
    let expect = |models: &[&str]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = ["2013-05", "2013-06", "2013-07"]
            .iter()
            .flat_map(|p| models.iter().map(|m| (m.to_string(), p.to_string())))
            .collect();
        v.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        v
    };
    assert_eq!(model_runs(&p, mark), expect(&["mart.origins"]));

    // A core model: it and the mart model over it, not its sibling.
    let mark = last_model_run(&p);
    write(
        p.dir.path(),
        "sql/core/by_origin.sql",
        "SELECT origin, count(id) AS n FROM stage.flights WHERE _data_period = $period GROUP BY origin\n",
    );
    let plan = p.run(&["run", "--plan", "--from", "2013-05", "--to", "2013-07"]);
    let targets: Vec<String> = plan.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{} {} {}", i["period"], i["target"], i["reason"]))
        .collect();
    assert_eq!(targets.len(), 6, "{targets:?}");
    assert!(
        targets[1].contains("mart.origins") && targets[1].contains("an upstream model re-runs"),
        "{targets:?}"
    );
    // status names the same six: the edited model and what reads it.
    let status = p.run(&["status"]).json();
    let mut stale: Vec<String> = (status["stale_models"].as_array().unwrap().iter())
        .map(|m| format!("{} {} {}", m["period"], m["model"], m["reason"]))
        .collect();
    stale.sort();
    let mut planned = targets.clone();
    planned.sort();
    assert_eq!(stale, planned, "status and run --plan agree");
    // The model table says stale on the row itself (#48, 5).
    let text = pipeline(p.dir.path(), Some(&p.db.url), &["status"]).stdout;
    let row = (text.lines())
        .find(|l| l.starts_with("core.by_origin") && l.contains("2013-05"))
        .unwrap_or_else(|| panic!("no core.by_origin row:\n{text}"));
    assert!(row.contains("done, stale"), "{text}");
    assert!(text.contains("  !! stale: model changed"), "{text}");
    assert_eq!(p.run(&range).code, 0);
    assert_eq!(
        model_runs(&p, mark),
        expect(&["core.by_origin", "mart.origins"])
    );
    assert_eq!(p.run(&range).code, 99);
}

#[test]
fn a_redelivered_period_reruns_its_dependants_and_no_other_period() {
    let p = Project::new("stale_redelivery", &config(STRICT.0, STRICT.1));
    models(&p);
    for period in ["2013-05", "2013-06"] {
        flights(&p, period, 3, |_| "JFK", "AA");
    }
    assert_eq!(
        p.run(&["run", "--from", "2013-05", "--to", "2013-06"]).code,
        0
    );
    let mark = last_model_run(&p);
    flights(&p, "2013-06", 5, |_| "LGA", "AA");
    let plan = p.run(&["run", "--plan", "--from", "2013-05", "--to", "2013-06"]);
    let items = plan.json()["items"].as_array().unwrap().clone();
    assert!(
        items.iter().all(|i| i["period"] == "2013-06"),
        "only the re-delivered period: {items:?}"
    );
    assert_eq!(items[0]["action"], "ingest, validate, load", "{items:?}");
    assert_eq!(
        p.run(&["run", "--from", "2013-05", "--to", "2013-06"]).code,
        0
    );
    let runs = model_runs(&p, mark);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter().all(|(_, period)| period == "2013-06"),
        "{runs:?}"
    );
    assert_eq!(
        count(
            &p,
            "SELECT sum(n)::bigint FROM mart.origins WHERE _data_period = '2013-06'"
        ),
        5
    );

    // A reload by hand (load-stage --force) makes the models stale too.
    let mark = last_model_run(&p);
    let forced = p.run(&[
        "load-stage",
        "--dataset",
        "flights",
        "--period",
        "2013-05",
        "--force",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");
    let status = p.run(&["status", "--period", "2013-05"]).json();
    let reasons: Vec<&str> = status["stale_models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"stage.flights 2013-05 reloaded since"),
        "{reasons:?}"
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    assert_eq!(model_runs(&p, mark).len(), 3);
}

#[test]
fn a_backfill_killed_midway_finishes_on_the_next_try_with_every_period_done_once() {
    let p = Project::new("stale_backfill_kill", &config(STRICT.0, STRICT.1));
    models(&p);
    let periods: Vec<String> = (1..=12).map(|m| format!("2013-{m:02}")).collect();
    for period in &periods {
        flights(
            &p,
            period,
            2000,
            |i| if i % 2 == 0 { "JFK" } else { "LGA" },
            "AA",
        );
    }
    let range = ["--json", "run", "--from", "2013-01", "--to", "2013-12"];
    let mut child = command(p.dir.path(), Some(&p.db.url), &range)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while count(&p, "SELECT count(*) FROM meta.load_log") < 4 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the backfill made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let loaded_before = count(
        &p,
        "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'",
    );
    assert!(loaded_before < 12, "killed before the end");

    let again = pipeline(p.dir.path(), Some(&p.db.url), &range);
    assert_eq!(again.code, 0, "{again:?}");
    let out = again.json();
    let loads_now = out["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "load-stage" && s["status"] == "done")
        .count() as i64;
    assert_eq!(
        loads_now,
        12 - loaded_before,
        "only the periods not loaded before were loaded: {out}"
    );
    for (what, sql) in [
        (
            "one passed verdict per period",
            "SELECT count(*) FROM (SELECT period FROM meta.validation_log WHERE status = 'passed'
               GROUP BY period HAVING count(*) = 1) x",
        ),
        (
            "one load per period",
            "SELECT count(*) FROM (SELECT period FROM meta.load_log WHERE status = 'loaded'
               GROUP BY period HAVING count(*) = 1) x",
        ),
    ] {
        assert_eq!(count(&p, sql), 12, "{what}");
    }
    // Each model of each period ran once after its period's load.
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM (SELECT model, period FROM meta.transform_log WHERE status = 'done'
               GROUP BY model, period HAVING count(*) = 1) x"
        ),
        36
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 12 * 2000);
    assert_eq!(pipeline(p.dir.path(), Some(&p.db.url), &range).code, 99);
}

#[test]
fn a_file_gone_from_the_landed_dir_keeps_its_period_and_a_rule_edit_replays_it() {
    let p = Project::new("stale_file_gone", &config(STRICT.0, STRICT.1));
    models(&p);
    flights(
        &p,
        "2013-05",
        4,
        |i| if i == 1 { "SFO" } else { "JFK" },
        "AA",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    let landed = p.path("landed/flights_2013-05.csv");
    let kept = std::fs::read(&landed).unwrap();
    std::fs::remove_file(&landed).unwrap();
    // Expired from the landed zone: nothing is stale, nothing is missing.
    let again = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 99, "{again:?}");
    let ingest = stage_of(&again.json(), "flights", "ingest").clone();
    assert_eq!(ingest["status"], "unchanged", "{ingest}");
    assert!(
        ingest["detail"]
            .as_str()
            .unwrap()
            .contains("no longer in the landed dir"),
        "{ingest}"
    );

    // A change to how the text becomes values needs the file: refused, named.
    let retyped = config(STRICT.0, STRICT.1).replace("type: int", "type: string");
    set_config(&p, &retyped);
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    let reason = plan.json()["items"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("put it back") && reason.contains("id.type"),
        "{reason}"
    );
    let refused = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    let validate = stage_of(&refused.json(), "flights", "validate").clone();
    let detail = validate["detail"].as_str().unwrap();
    assert!(
        detail.contains("id.type") && detail.contains("flights_2013-05.csv"),
        "the refusal names the rule and the missing file: {detail}"
    );
    let direct = p.run(&["validate", "--dataset", "flights", "--period", "2013-05"]);
    assert_eq!(direct.code, 3, "{direct:?}");
    assert!(
        direct.stderr.contains("Put the file back"),
        "{}",
        direct.stderr
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 3);

    // A value rule edit is judged on the kept rows: the quarantined row is
    // released. (With a threshold changed too, which an amendment does not
    // judge, the kept rows are replayed; value rules alone would amend the
    // verdict.)
    set_config(
        &p,
        &config("JFK, SFO", STRICT.1).replace("min_quality_score: 80", "min_quality_score: 79"),
    );
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    let reason = plan.json()["items"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("replayed"), "{reason}");
    let replayed = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(replayed.code, 0, "{replayed:?}");
    let validate = stage_of(&replayed.json(), "flights", "validate").clone();
    assert!(
        validate["detail"].as_str().unwrap().contains("replayed"),
        "{validate}"
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 4);
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM core.by_origin WHERE origin = 'SFO'"
        ),
        1,
        "the models read the released row"
    );
    let status = p.run(&["status", "--period", "2013-05"]);
    let period = &status.json()["periods"][0];
    assert!(period["replayed_from"].is_i64(), "{period}");
    assert_eq!(
        (
            &period["rows_in"],
            &period["rows_valid"],
            &period["stage_rows"]
        ),
        (&4.into(), &4.into(), &4.into())
    );
    let human = pipeline(
        p.dir.path(),
        Some(&p.db.url),
        &["status", "--period", "2013-05"],
    );
    assert!(
        human.stdout.contains("replayed: the file is gone"),
        "{}",
        human.stdout
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 99);

    // A replay killed after writing its rows, before its verdict, wedges
    // nothing: the verdict in force still names its own Delta versions, so
    // the next run replays from them and the tightened rule applies.
    set_config(&p, &config(STRICT.0, STRICT.1));
    let killed: Run = command(
        p.dir.path(),
        Some(&p.db.url),
        &["--json", "run", "--period", "2013-05"],
    )
    .env("PIPELINE_FAULT", "validate-after-delta")
    .output()
    .unwrap()
    .into();
    assert_ne!(killed.code, 0, "{killed:?}");
    assert!(
        killed.stderr.contains("aborting at validate-after-delta"),
        "{killed:?}"
    );
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    let reason = plan.json()["items"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("replayed"), "{reason}");
    let resumed = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(
        count(&p, "SELECT count(*) FROM stage.flights"),
        3,
        "SFO quarantined again"
    );
    set_config(&p, &config("JFK, LGA, SFO", STRICT.1));
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);

    std::fs::write(&landed, kept).unwrap();
    assert_eq!(
        p.run(&["run", "--period", "2013-05"]).code,
        99,
        "the same file, nothing stale"
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 4);
}

#[test]
fn a_month_run_leaves_out_day_datasets_and_their_models_and_says_so() {
    let with_days = format!(
        "{}  events:\n    file_pattern: '^events_(?P<period>\\d{{4}}-\\d{{2}}-\\d{{2}})\\.csv$'\n    period: day\n    columns:\n      id: {{ type: int }}\n",
        config(STRICT.0, STRICT.1)
    );
    let p = Project::new("stale_mixed_granularity", &with_days);
    models(&p);
    write(
        p.dir.path(),
        "sql/core/daily.sql",
        "SELECT count(*) AS n FROM stage.events WHERE _data_period = $period\n",
    );
    flights(&p, "2013-05", 3, |_| "JFK", "AA");
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(
        out["skipped_datasets"],
        serde_json::json!(["events"]),
        "{out}"
    );
    assert!(
        !out["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["dataset"] == "events"),
        "{out}"
    );
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM meta.transform_log WHERE model = 'core.daily'"
        ),
        0
    );
    // Nothing left to do: the day model does not keep the month run from 99.
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 99);
    // Asked by name, the misfit is a usage error.
    let named = p.run(&["run", "--period", "2013-05", "--dataset", "events"]);
    assert_eq!(named.code, 2, "{named:?}");
}

/// A re-delivery of a loaded period that ingest refuses leaves the earlier
/// version in force — and says so: status flags it, --check fails on it.
#[test]
fn a_refused_redelivery_of_a_loaded_period_is_not_green() {
    let p = Project::new("stale_refused_redelivery", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 3, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    assert_eq!(p.run(&["status", "--check"]).code, 0);
    write(
        p.dir.path(),
        "landed/flights_2013-05.csv",
        "id,origin\n1,JFK\n",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 3);
    // Nothing run could redo: the refused version would be refused again.
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 99, "{plan:?}");
    let check = p.run(&["status", "--check", "--period", "2013-05"]);
    assert_eq!(check.code, 3, "{check:?}");
    let problems = check.json()["periods"][0]["problems"].clone();
    assert!(
        problems.to_string().contains("was rejected at ingest")
            && problems.to_string().contains("carrier"),
        "{problems}"
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 3);
}

/// A dataset of every type, its `origin` allowed as given, nothing gated.
fn typed_config(allowed: &str) -> String {
    typed_config_gated(allowed, "")
}

/// [`typed_config`] with more dataset keys (`gates`, indented as a key).
fn typed_config_gated(allowed: &str, gates: &str) -> String {
    format!(
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  trips:
    file_pattern: '^trips_(?P<period>\d{{4}}-\d{{2}})\.csv$'
    period: month
    primary_key: [id]
    min_quality_score: 0
    max_rejected_ratio: 1
{gates}    columns:
      id:     {{ type: int, required: true }}
      origin: {{ type: string, allowed: [{allowed}] }}
      day:    {{ type: date, format: '%d/%m/%Y' }}
      at:     {{ type: timestamp }}
      dist:   {{ type: float }}
      fare:   {{ type: decimal(8,2) }}
      ok:     {{ type: bool }}
      note:   {{ type: string }}
"#
    )
}

const TRIPS: &str = "id,origin,day,at,dist,fare,ok,note
1,JFK,01/05/2013,2013-05-01T10:11:12.5,1.25,10.5,yes, padded text 
2,SFO,02/05/2013,2013-05-02 00:00:00,1e3,0.10,f,
3,SFO,31/05/2013,2013-05-31T23:59:59,-0.0,12345.67,TRUE,\"a, b\"
4,JFK,32/05/2013,2013-05-01T00:00:00,2,1,no,bad date
5,LGA,03/05/2013
6,SFO,04/05/2013,2013-05-04T04:04:04.000001,0.1,3.14,0,
";

/// The stage rows and the quarantined rows (with their lines) of `p`.
fn kept_rows(p: &Project) -> (Vec<String>, Vec<Vec<String>>) {
    let stage =
        p.db.client()
            .query(
                "SELECT (id, origin, day, at, dist, fare, ok, note, _data_period)::text
               FROM stage.trips ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let quarantine = delta_rows(
        &p.path("stage/quarantine/trips"),
        "SELECT id, origin, day, note, _line, _errors[1]['rule'], cardinality(_errors) FROM t ORDER BY _line",
    );
    (stage, quarantine)
}

/// A project of its own per (name, allowed origins), each with TRIPS landed
/// and run once.
fn trips_projects<const N: usize>(each: [(&str, &str); N]) -> [Project; N] {
    each.map(|(name, allowed)| {
        let p = Project::new(name, &typed_config(allowed));
        write(p.dir.path(), "landed/trips_2013-05.csv", TRIPS);
        let first = p.run(&["run", "--period", "2013-05"]);
        assert_eq!(first.code, 0, "{first:?}");
        p
    })
}

/// A replay (the file gone) and an amendment (the file there, only value
/// rules changed) give what validating the file under the new rules gives:
/// `file` is a project that validated it so from the start.
#[test]
fn a_replay_gives_what_validating_the_file_would_have_given() {
    let [file, amended, gone] = trips_projects([
        ("replay_file", "JFK, SFO"),
        ("replay_amended", "JFK, LGA"),
        ("replay_gone", "JFK, LGA"),
    ]);
    // Not only a relaxation (LGA goes out): rows move both ways. `gone`'s
    // shrink gate changes too, which an amendment cannot judge: replayed.
    set_config(&amended, &typed_config("JFK, SFO"));
    set_config(
        &gone,
        &typed_config_gated("JFK, SFO", "    max_shrink: 0.6\n"),
    );
    std::fs::remove_file(gone.path("landed/trips_2013-05.csv")).unwrap();
    for p in [&amended, &gone] {
        let again = p.run(&["run", "--period", "2013-05"]);
        assert_eq!(again.code, 0, "{again:?}");
    }
    assert_eq!(kept_rows(&amended), kept_rows(&file), "the amendment");
    let (want, have) = (kept_rows(&file), kept_rows(&gone));
    assert_eq!(
        want.0.len(),
        4,
        "rows 1, 2, 3, 6 pass once SFO is allowed: {want:?}"
    );
    assert_eq!(
        have, want,
        "the replay's stage and quarantine differ from the file's"
    );
    let verdict = |p: &Project| -> Vec<String> {
        p.db.client()
            .query(
                "SELECT (rows_in, rows_valid, rows_rejected, score, passed, replayed_from IS NOT NULL)::text
                   FROM meta.validation_log ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        verdict(&file)[0].replace(",f)", ""),
        verdict(&gone)[0].replace(",t)", "")
    );
    assert_eq!(verdict(&amended), verdict(&file));
    assert!(
        verdict(&gone)[0].starts_with("(6,4,2,"),
        "{:?}",
        verdict(&gone)
    );

    // Tightened again: replayed (and amended) valid rows move to quarantine
    // with the line their cleaned row kept, and the shrink gate refuses the
    // load as for a delivery; `file` validated the file under these rules.
    let [file] = trips_projects([("replay_file_again", "JFK, LGA")]);
    set_config(
        &gone,
        &typed_config_gated("JFK, LGA", "    max_shrink: 0.7\n"),
    );
    set_config(&amended, &typed_config("JFK, LGA"));
    for p in [&amended, &gone] {
        let again = p.run(&["run", "--period", "2013-05"]);
        assert_eq!(again.code, 3, "{again:?}");
        assert!(
            again.stdout.contains("refused by the shrink gate"),
            "{again:?}"
        );
        // The way out it names is a command that exists (run has no --force).
        assert!(
            again
                .stdout
                .contains("`pipeline load-stage --dataset trips --period 2013-05 --force`"),
            "{again:?}"
        );
    }
    let how = |p: &Project| -> String {
        p.db.client()
            .query_one(
                "SELECT (replayed_from IS NOT NULL, amended_from IS NOT NULL)::text
                   FROM meta.validation_log ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(
        (how(&gone), how(&amended)),
        ("(t,f)".into(), "(f,t)".into())
    );
    let (want, have) = (kept_rows(&amended), kept_rows(&gone));
    assert_eq!(want.0.len(), 4, "the period keeps its rows: {want:?}");
    assert_eq!(have.0, want.0, "stage after the tightened replay");
    assert_eq!(
        have.1, want.1,
        "the replay's and the amendment's quarantine"
    );
    let want = kept_rows(&file);
    let without_lines = |q: &[Vec<String>]| -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = q
            .iter()
            // A blank value of a valid row was kept as null: its text is gone too.
            .map(|r| {
                (r.iter().enumerate())
                    .filter(|(i, _)| *i != 4)
                    .map(|(_, v)| {
                        if v.is_empty() {
                            "NULL".into()
                        } else {
                            v.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(without_lines(&have.1), without_lines(&want.1));
    let lines = |q: &[Vec<String>]| -> Vec<String> { q.iter().map(|r| r[4].clone()).collect() };
    assert_eq!(
        lines(&have.1),
        lines(&want.1),
        "every row rejected by the replay names its line in the file"
    );
    assert!(!lines(&have.1).contains(&"0".to_owned()), "{:?}", have.1);
}

#[test]
fn a_lost_or_damaged_cleaned_table_is_named_and_run_validates_again_from_the_landed_file() {
    let p = Project::new("stale_lost_log", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 2, |_| "JFK", "AA");
    flights(&p, "2013-06", 3, |_| "LGA", "AA");
    for period in ["2013-05", "2013-06"] {
        assert_eq!(p.run(&["run", "--period", period]).code, 0);
    }
    let log = p.path("stage/cleaned/flights/_delta_log");
    std::fs::remove_dir_all(&log).unwrap();

    // Lost: stale with its reason; a version number of a recreated table is not the verdict's.
    let status = p.run(&["status", "--check"]);
    assert_eq!(status.code, 3, "{status:?}");
    let period = &status.json()["periods"][0];
    assert!(
        period["stale"].as_str().unwrap().contains("gone"),
        "{period}"
    );
    let validate = p.run(&["validate", "--dataset", "flights", "--period", "2013-06"]);
    assert_eq!(validate.code, 0, "{validate:?}");
    p.db.client()
        .execute(
            "DELETE FROM stage.flights WHERE _data_period = '2013-05'",
            &[],
        )
        .unwrap();
    let load = p.run(&["load-stage", "--dataset", "flights", "--period", "2013-05"]);
    assert_eq!(
        load.code, 1,
        "the recreated table's v0 is not validation 1's rows: {load:?}"
    );
    assert!(
        load.stdout.contains("holds 0 rows") && load.stdout.contains("counted 2"),
        "{}",
        load.stdout
    );
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(
        plan.json()["items"][0]["action"],
        "validate, load",
        "{plan:?}"
    );
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        stage_of(&run.json(), "flights", "validate")["status"],
        "done"
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 5);
    // 2013-06 was validated (into the new table) but not loaded since.
    assert_eq!(p.run(&["run", "--period", "2013-06"]).code, 0);
    assert_eq!(p.run(&["status", "--check"]).code, 0);

    // Damaged: a truncated commit is named, without a backtrace, with what to do.
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let head = commits.last().unwrap();
    let text = std::fs::read(head).unwrap();
    std::fs::write(head, &text[..text.len() / 2]).unwrap();
    let status = p.run(&["status", "--check"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(status.stdout.contains("is damaged"), "{}", status.stdout);
    flights(&p, "2013-05", 4, |_| "JFK", "AA");
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 1, "{run:?}");
    for out in [&run.stdout, &run.stderr] {
        assert!(out.contains("move the table aside"), "{out}");
        assert!(
            !out.contains("buoyant_kernel::"),
            "a backtrace in the message: {out}"
        );
    }
    assert_eq!(
        count(&p, "SELECT count(*) FROM stage.flights"),
        5,
        "nothing changed"
    );
    // Moved aside as the message says: every period is validated again from its file.
    std::fs::rename(
        p.path("stage/cleaned/flights"),
        p.path("stage/cleaned-flights.damaged"),
    )
    .unwrap();
    for period in ["2013-05", "2013-06"] {
        let run = p.run(&["run", "--period", period]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 7);
    assert_eq!(p.run(&["status", "--check"]).code, 0);

    // Lost with its landed file: nothing is left to rebuild it from; named.
    std::fs::remove_dir_all(p.path("stage/cleaned/flights")).unwrap();
    std::fs::remove_file(p.path("landed/flights_2013-06.csv")).unwrap();
    let refused = p.run(&["run", "--period", "2013-06"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    let detail = stage_of(&refused.json(), "flights", "validate")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("approved are gone") && detail.contains("flights_2013-06.csv"),
        "{detail}"
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM stage.flights"),
        7,
        "stage keeps its rows"
    );
}

#[test]
fn every_refusal_of_a_loaded_period_stays_in_its_history_and_status_report_show_it() {
    let p = Project::new("history_refusals", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 10, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    // A smaller delivery the shrink gate refuses.
    flights(&p, "2013-05", 2, |_| "JFK", "AA");
    let shrunk = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(shrunk.code, 3, "{shrunk:?}");
    let status = p.run(&["status", "--check", "--period", "2013-05"]);
    assert_eq!(status.code, 3, "{status:?}");
    let period = &status.json()["periods"][0];
    assert_eq!(period["load"], "refused", "{period}");
    let problems = period["problems"].to_string();
    assert!(
        problems.contains("load refused") && problems.contains("shrink"),
        "{problems}"
    );
    assert!(!problems.contains("ledger broken"), "{problems}");
    // Then a re-delivery ingest refuses (a column missing).
    write(
        p.dir.path(),
        "landed/flights_2013-05.csv",
        "id,origin\n1,JFK\n",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 3);
    assert_eq!(
        count(&p, "SELECT count(*) FROM stage.flights"),
        10,
        "stage kept its rows"
    );

    let report = p.run(&["report", "--out", "report"]);
    assert_eq!(report.code, 0, "{report:?}");
    let page = std::fs::read_to_string(p.path("report/index.html")).unwrap();
    let history = &page[page
        .find("<table class=\"history\">")
        .expect("a history table")..];
    let history = &history[..history.find("</table>").unwrap()];
    for (kind, status) in [
        ("file", "accepted"),
        ("validation", "passed"),
        ("load", "loaded"),
        ("load", "refused"),
        ("file", "rejected"),
    ] {
        assert!(
            history.contains(&format!("data-kind=\"{kind}\" data-status=\"{status}\"")),
            "no {kind} {status} in the history: {history}"
        );
    }
    assert!(history.contains("shrink gate"), "{history}");
    assert!(
        !history.contains("replayed from"),
        "nothing was replayed (#48): {history}"
    );
    let rejected = &page[page
        .find("id=\"rejections\"")
        .expect("the ingest rejections")..];
    assert!(rejected.contains("flights_2013-05.csv"), "{rejected}");
    assert!(
        page.contains("<td class=\"fail load\">refused</td>"),
        "the load state"
    );
}

/// A landed file touched (or uploaded again with the same bytes) is the same
/// version for ingest; `run --plan` says so too, and new bytes of the same
/// size and time are a new version for both.
#[test]
fn a_touched_file_is_nothing_to_do_for_plan_and_run_alike() {
    let p = Project::new("stale_touched", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 4, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    let path = p.path("landed/flights_2013-05.csv");
    let later = |secs| {
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
            .unwrap();
    };
    later(60);
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 99, "{plan:?}");
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 99, "{run:?}");

    // New bytes of the same size, the time set back to what it was: ingest
    // would see a new version, so the plan does too (#47, 4).
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    flights(&p, "2013-05", 4, |_| "LGA", "AA");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(plan.json()["items"][0]["action"], "ingest, validate, load");
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 0, "{run:?}");
}

/// A period asked for whose file never landed: run exits 5, and status for
/// that period shows it missing and fails --check, instead of a green board.
#[test]
fn a_period_that_never_arrived_is_shown_and_fails_status_check() {
    let p = Project::new("stale_never_arrived", &config(STRICT.0, STRICT.1));
    flights(&p, "2013-05", 3, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    let run = p.run(&["run", "--period", "2013-06"]);
    assert_eq!(run.code, 5, "{run:?}");
    let check = p.run(&["status", "--check", "--period", "2013-06"]);
    assert_ne!(check.code, 0, "{check:?}");
    let gaps = check.json()["gaps"].clone();
    assert_eq!(gaps[0]["dataset"], "flights", "{gaps}");
    assert_eq!(gaps[0]["period"], "2013-06", "{gaps}");
    assert_eq!(p.run(&["status", "--check", "--period", "2013-05"]).code, 0);
}

/// A typo in a model: run --plan says the model would fail, where (file:line:col),
/// and exits 1, as run and test would report it (#48, 5).
#[test]
fn run_plan_reports_a_model_that_would_fail_at_its_line() {
    let p = Project::new("stale_plan_typo", &config(STRICT.0, STRICT.1));
    models(&p);
    flights(&p, "2013-05", 3, |_| "JFK", "AA");
    write(
        p.dir.path(),
        "sql/core/by_origin.sql",
        "SELECT origin,\n       count(*) AS n, delay_typo\nFROM stage.flights WHERE _data_period = $period GROUP BY origin\n",
    );
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let out = plan.json();
    let failing: Vec<&serde_json::Value> = (out["items"].as_array().unwrap().iter())
        .filter(|i| i["action"] == "fail")
        .collect();
    assert_eq!(failing.len(), 1, "{out:#}");
    assert_eq!(failing[0]["target"], "core.by_origin");
    let reason = failing[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("by_origin.sql:2:") && reason.contains("delay_typo"),
        "{reason}"
    );
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("core.by_origin would fail"),
        "{out:#}"
    );
}

/// `run --plan` after a rule edit names where it lands (#50): the model
/// columns computed from the column whose rule changed, through the models
/// in between, from the plans' lineage; a model that does not read that
/// column is redone (its input is reloaded) but reached by nothing.
#[test]
fn the_plan_names_the_model_columns_a_rule_change_reaches() {
    let p = Project::new("stale_reach", &config(STRICT.0, STRICT.1));
    models(&p);
    flights(
        &p,
        "2013-05",
        4,
        |i| if i == 1 { "SFO" } else { "JFK" },
        "AA",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    set_config(&p, &config("JFK, LGA, SFO", STRICT.1));
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    let items = plan.json()["items"].as_array().unwrap().clone();
    let reason = |target: &str| -> String {
        let item = items.iter().find(|i| i["target"] == target);
        item.unwrap_or_else(|| panic!("{target}: {items:#?}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dataset = reason("stage.flights");
    assert!(
        dataset
            .starts_with("rules changed: origin.allowed; judged on its kept rows: 1 row(s) move")
            && dataset.contains("; the changed rules reach ")
            && dataset.contains("core.by_origin (origin ← origin)")
            && dataset.contains("mart.origins (origin ← origin)")
            && !dataset.contains("by_carrier"),
        "{dataset}"
    );
    assert!(
        reason("mart.origins").ends_with("; the changed rules reach origin ← origin"),
        "{items:#?}"
    );
    assert!(!reason("core.by_carrier").contains("reach"), "{items:#?}");
    // transform --dry-run says the same, model by model.
    let dry = p.run(&["transform", "--period", "2013-05", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let plans: Vec<String> = (dry.json()["models"].as_array().unwrap().iter())
        .map(|m| format!("{} {}", m["model"], m["plan"].as_str().unwrap_or_default()))
        .collect();
    let of = |model: &str| {
        plans
            .iter()
            .find(|p| p.contains(model))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        of("mart.origins").contains(
            "-- reached by rules changed since the period's verdict (flights.origin.allowed): origin ← stage.flights.origin"
        ),
        "{plans:#?}"
    );
    assert!(!of("core.by_carrier").contains("reached by"), "{plans:#?}");
}

/// A relaxed rule that rejected rows in one month of three: `run --plan`
/// says beforehand, from the kept rows, how many rows move in that month and
/// that none moves in the others (#49); a tightened one says which rows go to
/// quarantine and whether the shrink gate would refuse; `run` then does that.
#[test]
fn the_plan_says_how_many_rows_a_rule_edit_moves_in_each_period() {
    let p = Project::new("stale_moves", &config(STRICT.0, STRICT.1));
    for (period, sfo) in [("2013-04", 0), ("2013-05", 3), ("2013-06", 0)] {
        flights(
            &p,
            period,
            10,
            move |i| if i <= sfo { "SFO" } else { "JFK" },
            "AA",
        );
        assert_eq!(p.run(&["run", "--period", period]).code, 0);
    }
    set_config(&p, &config("JFK, LGA, SFO", STRICT.1));
    let plan = p.run(&["run", "--plan", "--from", "2013-04", "--to", "2013-06"]);
    let items = plan.json()["items"].as_array().unwrap().clone();
    let reason = |period: &str| -> String {
        let item = items
            .iter()
            .find(|i| i["target"] == "stage.flights" && i["period"] == period);
        item.unwrap_or_else(|| panic!("{period}: {items:#?}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("2013-05").contains(
            "3 row(s) move from quarantine to stage, 0 from stage to quarantine; a relaxation: \
             only its quarantined rows are judged again (the file is not read)"
        ),
        "{items:#?}"
    );
    assert!(
        reason("2013-04").ends_with(
            "judged on its kept rows: no row changes, so its rows, load and models are kept"
        ),
        "{items:#?}"
    );
    assert!(
        reason("2013-06").ends_with(
            "judged on its kept rows: no row changes, so its rows, load and models are kept"
        ),
        "{items:#?}"
    );
    // The plan names the action run takes: re-judge April and June, validate May.
    let action = |period: &str| {
        let item = items
            .iter()
            .find(|i| i["target"] == "stage.flights" && i["period"] == period);
        item.unwrap()["action"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        (action("2013-04"), action("2013-05"), action("2013-06")),
        (
            "re-judge".into(),
            "validate, load".into(),
            "re-judge".into()
        )
    );
    let loads = |period: &str| -> i64 {
        count(
            &p,
            &format!(
                "SELECT max(id) FROM meta.load_log WHERE period = '{period}' AND status = 'loaded'"
            ),
        )
    };
    let before: Vec<i64> = ["2013-04", "2013-05", "2013-06"]
        .iter()
        .map(|q| loads(q))
        .collect();
    // How often April's stage rows are read (PostgreSQL's own count of scans).
    let april_scans = || {
        count(
            &p,
            "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
             WHERE schemaname = 'stage_part' AND relname LIKE 'flights/2013-04%'",
        )
    };
    let scans_before = april_scans();
    let run = p.run(&["run", "--from", "2013-04", "--to", "2013-06"]);
    assert_eq!(run.code, 0, "{run:?}");
    // A backend's counts reach the statistics when it exits, just after.
    let mut scans = april_scans();
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = april_scans();
        if again == scans && scans > scans_before {
            break;
        }
        scans = again;
    }
    assert_eq!(
        scans - scans_before,
        1,
        "April's rows are counted once, not again before each step"
    );
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM stage.flights WHERE _data_period = '2013-05'"
        ),
        10
    );
    // Only May is rewritten: April and June are re-judged (no row changes)
    // and keep their load; a second run finds nothing stale.
    let after: Vec<i64> = ["2013-04", "2013-05", "2013-06"]
        .iter()
        .map(|q| loads(q))
        .collect();
    assert_eq!(
        (after[0], after[2]),
        (before[0], before[2]),
        "April's and June's loads kept"
    );
    assert_ne!(after[1], before[1], "May reloaded");
    let text = run.stdout.clone();
    assert_eq!(
        text.matches("re-judged under the new rules (origin.allowed): no row changes")
            .count(),
        2,
        "{text}"
    );
    let again = p.run(&["run", "--from", "2013-04", "--to", "2013-06"]);
    assert_eq!(again.code, 99, "{again:?}");
    assert_eq!(p.run(&["status", "--check"]).code, 0);

    // Tightened: 8 of May's 10 rows leave; the shrink gate (max 50 %) lets it.
    set_config(&p, &config("LGA, SFO", STRICT.1));
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    let items = plan.json()["items"].as_array().unwrap().clone();
    let may = items
        .iter()
        .find(|i| i["target"] == "stage.flights")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        may.contains(
            "0 row(s) move from quarantine to stage, 7 from stage to quarantine \
                       (the shrink gate would refuse: 3 rows for the 10 stage holds)"
        ),
        "{may}"
    );
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(
        run.code, 3,
        "the shrink gate refuses as the plan said: {run:?}"
    );
}

/// `run --plan`, `status` and `run` give one answer in each state a period
/// goes through (#46): the plan's action for `stage.flights` is exactly the
/// stages run then does (the others unchanged), status calls the period
/// stale exactly when the plan names it, and after run the plan is empty.
#[test]
fn plan_status_and_run_give_one_answer_in_every_state() {
    let p = Project::new("stale_one_answer", &config(STRICT.0, STRICT.1));
    let agree = |state: &str, want: Option<&str>| {
        let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
        let items = plan.json()["items"].clone();
        let planned = (items.as_array().unwrap().iter())
            .find(|i| i["target"] == "stage.flights")
            .map(|i| i["action"].as_str().unwrap().to_owned());
        assert_eq!(planned.as_deref(), want, "{state}: {plan:?}");
        let status = p.run(&["status", "--period", "2013-05"]);
        let stale = status.json()["periods"][0]["stale"].clone();
        // A new version is ingest's to find: status reads the ledger alone.
        let ingest = want == Some("ingest, validate, load");
        assert_eq!(
            stale.is_string(),
            want.is_some() && !ingest,
            "{state}: {status:?}"
        );
        let run = p.run(&["run", "--period", "2013-05"]);
        let stages = run.json()["stages"].clone();
        let did: Vec<String> = (stages.as_array().unwrap().iter())
            .filter(|s| s["dataset"] == "flights" && s["status"] == "done")
            .map(|s| s["stage"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<&str> = match want {
            Some("ingest, validate, load") => vec!["ingest", "validate", "load-stage"],
            Some("validate, load") => vec!["validate", "load-stage"],
            Some("load") => vec!["load-stage"],
            _ => vec![],
        };
        assert_eq!(did, expected, "{state}: {run:?}");
        assert_eq!(run.code == 99, want.is_none(), "{state}: {run:?}");
        let after = p.run(&["run", "--plan", "--period", "2013-05"]);
        assert_eq!(after.code, 99, "{state}, after run: {after:?}");
    };
    flights(&p, "2013-05", 10, |_| "JFK", "AA");
    agree("a new file", Some("ingest, validate, load"));
    agree("nothing changed", None);
    // A rule that rejects one row in ten: the score stays above 80.
    set_config(
        &p,
        &config(STRICT.0, STRICT.1).replace("min_quality_score: 80", "min_quality_score: 50"),
    );
    agree("a threshold edit", Some("validate, load"));
    flights(
        &p,
        "2013-05",
        10,
        |i| if i == 3 { "EWR" } else { "JFK" },
        "AA",
    );
    agree("new bytes", Some("ingest, validate, load"));
    p.db.client()
        .execute("DELETE FROM stage.flights WHERE id = 1", &[])
        .unwrap();
    agree("a stage row deleted by hand", Some("load"));
    std::fs::remove_dir_all(p.path("stage/cleaned/flights")).unwrap();
    agree("the cleaned table lost", Some("validate, load"));
}

/// A period whose only file ingest refused stays refused when the file is
/// taken away: run exits 3 as check-counts does (run said 5, "not arrived",
/// before the decision was one), until a good file lands.
#[test]
fn a_refused_period_stays_refused_for_run_and_check_counts_alike() {
    let p = Project::new("stale_refused_gone", &config(STRICT.0, STRICT.1));
    write(
        p.dir.path(),
        "landed/flights_2013-05.csv",
        "id,origin\n1,JFK\n",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 3);
    std::fs::remove_file(p.path("landed/flights_2013-05.csv")).unwrap();
    let run = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("flights_2013-05.csv"), "{run:?}");
    let counts = p.run(&[
        "check-counts",
        "--dataset",
        "flights",
        "--period",
        "2013-05",
    ]);
    assert_eq!(counts.code, 3, "{counts:?}");
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.code, 99, "{plan:?}");
    flights(&p, "2013-05", 3, |_| "JFK", "AA");
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
}

/// The sessions PostgreSQL has counted for the project's database.
fn sessions(p: &Project) -> i64 {
    let mut c = p.db.client();
    c.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
    c.query_one(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .unwrap()
    .get(0)
}

/// One pool per command (#46): a run over three periods, each ingested,
/// validated, loaded (with parallel COPY streams) and transformed, opens at
/// most 2 + streams connections in all (documented in architecture.md), where
/// each load and each transform opened their own before.
#[test]
fn a_run_of_three_periods_opens_at_most_two_connections_more_than_its_copy_streams() {
    let p = Project::new("stale_pool", &config(STRICT.0, STRICT.1));
    models(&p);
    for period in ["2013-05", "2013-06", "2013-07"] {
        flights(&p, period, 20, |_| "JFK", "AA");
    }
    let streams: i64 = 2;
    let mut cmd = command(
        p.dir.path(),
        Some(&p.db.url),
        &["--json", "run", "--from", "2013-05", "--to", "2013-07"],
    );
    cmd.env("PIPELINE_COPY_STREAMS", streams.to_string());
    cmd.env("PIPELINE_LOG", "debug");
    let before = sessions(&p);
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    // A backend's session is counted when it ends; the run's have ended.
    let mut opened = 0;
    for _ in 0..50 {
        // Less this test's own session to read the count.
        opened = sessions(&p) - before - 1;
        if opened > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(opened >= 1, "no session counted: {opened}");
    let connected: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("connected") || l.contains("connections"))
        .collect();
    assert!(
        opened <= 2 + streams,
        "the run opened {opened} connections: {connected:#?}"
    );
}

/// A relaxed rule is applied to the quarantined rows alone: the file is not
/// read again (new bytes of the same size and time would fail a read of it),
/// the rows that now pass are appended to the cleaned table in one Delta
/// commit, and the verdict keeps what did not change (the profile's
/// statistics) while its rule failures, counts and score are the new ones.
/// A tightened rule does not read the file either: it judges the cleaned
/// rows it rejects with the quarantined ones.
#[test]
fn a_relaxed_rule_judges_only_the_quarantined_rows_again() {
    let p = Project::new("stale_amend", &config(STRICT.0, STRICT.1));
    flights(
        &p,
        "2013-05",
        10,
        |i| if i <= 3 { "SFO" } else { "JFK" },
        "AA",
    );
    let first = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(first.code, 0, "{first:?}");
    let verdict = |field: &str| -> Option<i64> {
        p.db.client()
            .query_one(
                &format!("SELECT {field}::bigint FROM meta.validation_log WHERE status IN ('passed', 'failed') ORDER BY id DESC LIMIT 1"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    let v1 = verdict("id").unwrap();
    assert_eq!(verdict("rows_rejected"), Some(3));
    let profile = || -> serde_json::Value {
        p.db.client()
            .query_one(
                "SELECT profile_payload FROM reporting.monitoring_file_data_profile",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = profile();
    assert!(
        before["boundsAnomalies"]["origin"]["allowed"]["count"] == 3,
        "{before:#}"
    );

    // The file's bytes change (same size, same time): a read would see it.
    let path = p.path("landed/flights_2013-05.csv");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    flights(
        &p,
        "2013-05",
        10,
        |i| if i <= 3 { "SFO" } else { "JFK" },
        "BB",
    );
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    set_config(&p, &config("JFK, LGA, SFO", STRICT.1));
    let validate = p.run(&["validate", "--dataset", "flights", "--period", "2013-05"]);
    assert_eq!(validate.code, 0, "{validate:?}");
    let out = validate.json();
    assert_eq!(out["amended_from"], v1, "{out:#}");
    assert_eq!(
        (
            &out["rows_in"],
            &out["rows_valid"],
            &out["rows_rejected"],
            &out["score"]
        ),
        (&10.into(), &10.into(), &0.into(), &100.into()),
        "{out:#}"
    );
    assert_eq!(verdict("amended_from"), Some(v1));
    assert_eq!(verdict("rows_valid"), Some(10));
    let after = profile();
    assert_eq!(after["statisticalSummary"], before["statisticalSummary"]);
    assert_eq!(after["valueDistributions"], before["valueDistributions"]);
    assert_eq!(after["sampleData"], before["sampleData"]);
    assert_eq!(after["boundsAnomalies"], serde_json::json!({}), "{after:#}");

    // One Delta commit added the three rows to the period's seven.
    let log = p.path("stage/cleaned/flights/_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let last = std::fs::read_to_string(commits.last().unwrap()).unwrap();
    assert!(last.contains("pipeline.appendedPeriod"), "{last}");
    assert!(!last.contains("\"remove\""), "{last}");
    let rows = delta_rows(
        &p.path("stage/cleaned/flights"),
        "SELECT carrier, count(*) FROM t WHERE _data_period = '2013-05' GROUP BY carrier",
    );
    assert_eq!(
        rows,
        vec![vec!["AA".to_owned(), "10".to_owned()]],
        "the file's new bytes were not read"
    );

    // Stage holds exactly the amended verdict's base: the three rows are
    // added to the period's partition (no swap), at the period's load time.
    let partition = || -> String {
        p.db.client()
            .query_one(
                "SELECT string_agg(c.relname, ', ')::text FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'stage.flights'::regclass",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let swapped_in = partition();
    // load-stage of the period: (rows appended, inserted, deleted).
    let load = || -> [serde_json::Value; 3] {
        let load = p.run(&["load-stage", "--dataset", "flights", "--period", "2013-05"]);
        assert_eq!(load.code, 0, "{load:?}");
        let out = load.json();
        ["rows_appended", "rows_inserted", "rows_deleted"].map(|k| out[k].clone())
    };
    // check-counts: stage holds what the verdict in force produced.
    let counts_agree = || {
        let check = p.run(&[
            "check-counts",
            "--dataset",
            "flights",
            "--period",
            "2013-05",
        ]);
        assert_eq!(check.code, 99, "{check:?}");
    };
    assert_eq!(load(), [3, 10, 0].map(serde_json::Value::from));
    assert_eq!(partition(), swapped_in, "the period's partition is kept");
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM stage.flights WHERE _data_period = '2013-05'"
        ),
        10
    );
    assert_eq!(
        count(&p, "SELECT count(DISTINCT _loaded_at) FROM stage.flights"),
        1
    );
    assert_eq!(
        count(
            &p,
            "SELECT rows_appended FROM meta.load_log ORDER BY id DESC LIMIT 1"
        ),
        3
    );
    counts_agree();
    // status says so, in words and in --json.
    let status = p.run(&["status", "--period", "2013-05"]);
    assert_eq!(status.json()["periods"][0]["amended_from"], v1);
    let words = pipeline(
        p.dir.path(),
        Some(&p.db.url),
        &["status", "--period", "2013-05"],
    );
    assert!(
        words.stdout.contains(&format!(
            "amended validation {v1}: only value rules changed, so its quarantined rows were \
             judged again and its cleaned rows kept (the file was not read)"
        )),
        "{}",
        words.stdout
    );

    // Tightened again: the cleaned rows the rule now rejects are found by
    // their origin alone and judged with the quarantined ones; the file is
    // still not read, and the period's other cleaned rows are rewritten as
    // the table held them.
    let v2 = verdict("id").unwrap();
    set_config(&p, &config("JFK, LGA", STRICT.1));
    let tightened = p.run(&["validate", "--dataset", "flights", "--period", "2013-05"]);
    assert_eq!(tightened.code, 0, "{tightened:?}");
    let out = tightened.json();
    assert_eq!(
        (&out["amended_from"], &out["rows_withdrawn"]),
        (&v2.into(), &3.into()),
        "{out:#}"
    );
    assert_eq!(
        (&out["rows_in"], &out["rows_valid"], &out["rows_rejected"]),
        (&10.into(), &7.into(), &3.into()),
        "{out:#}"
    );
    let rows = delta_rows(
        &p.path("stage/cleaned/flights"),
        "SELECT carrier, count(*) FROM t WHERE _data_period = '2013-05' GROUP BY carrier",
    );
    assert_eq!(rows, vec![vec!["AA".to_owned(), "7".to_owned()]]);
    let lines = delta_rows(
        &p.path("stage/quarantine/flights"),
        "SELECT _line, origin, carrier, _errors[1]['rule'] FROM t ORDER BY _line",
    );
    assert_eq!(
        lines,
        (2..=4)
            .map(|l| [&l.to_string(), "SFO", "AA", "allowed"]
                .map(String::from)
                .to_vec())
            .collect::<Vec<_>>(),
        "each withdrawn row names its line"
    );
    // Stage holds the amended verdict's base: the withdrawn rows are deleted
    // from the period's partition by key (a 30 % shrink is within the gate),
    // nothing appended, the partition kept.
    assert_eq!(load(), [0, 7, 3].map(serde_json::Value::from));
    assert_eq!(partition(), swapped_in, "the period's partition is kept");
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM stage.flights WHERE origin = 'SFO'"
        ),
        0
    );
    counts_agree();
    let words = pipeline(
        p.dir.path(),
        Some(&p.db.url),
        &["status", "--period", "2013-05"],
    );
    assert!(
        words
            .stdout
            .contains("and the 3 cleaned row(s) a changed rule now rejects"),
        "{}",
        words.stdout
    );
}

/// `v` with every `examples` list sorted: a few of the failing values, in
/// the order the rows were read (which an amendment's do not keep).
fn examples_sorted(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                match (k.as_str(), item.as_array_mut()) {
                    ("examples", Some(list)) => list.sort_by_key(|e| e.to_string()),
                    _ => examples_sorted(item),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter_mut().for_each(examples_sorted),
        _ => {}
    }
}

/// The latest verdict's counts, score and missing values, and the profile
/// (its examples sorted).
fn verdict_of(p: &Project) -> (String, serde_json::Value) {
    let row =
        p.db.client()
            .query_one(
                "SELECT (rows_in, rows_valid, rows_rejected, score, passed, missing)::text,
                        (SELECT profile_payload FROM reporting.monitoring_file_data_profile)
                   FROM meta.validation_log ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap();
    let mut profile = row.get(1);
    examples_sorted(&mut profile);
    (row.get(0), profile)
}

/// The day after: run, its plan and status agree there is nothing to do.
fn nothing_left(p: &Project) {
    assert_eq!(p.run(&["status", "--check"]).code, 0);
    let plan = p.run(&["run", "--plan", "--period", "2013-05"]);
    assert_eq!(plan.json()["items"], serde_json::json!([]), "{plan:?}");
    let again = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 99, "{again:?}");
}

/// A model over the period's trips by origin, run; its rows. It reads the
/// period from the lake (asserted): the rows and load time there agree with
/// stage.
fn by_origin(p: &Project) -> Vec<String> {
    write(
        p.dir.path(),
        "sql/core/by_origin.sql",
        "SELECT origin, count(*) AS n, count(DISTINCT _loaded_at) AS times \
         FROM stage.trips WHERE _data_period = $period GROUP BY origin\n",
    );
    let t = p.run(&["transform", "--period", "2013-05"]);
    assert_eq!(t.code, 0, "{t:?}");
    assert!(t.stderr.contains("read from the lake"), "{}", t.stderr);
    p.db.client()
        .query(
            "SELECT (origin, n, times)::text FROM core.by_origin ORDER BY origin",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An amendment (a relaxed rule judged on the quarantined rows alone) gives
/// what validating the file under the relaxed rules gives: the same stage and
/// quarantined rows, counts, score and rule failures — on rows of every type,
/// a date format, padded text, a short row.
#[test]
fn an_amendment_gives_what_validating_the_file_would_have_given() {
    let [fresh, amended] = trips_projects([
        ("amend_fresh", "JFK, LGA, SFO"),
        ("amend_amended", "JFK, LGA"),
    ]);
    set_config(&amended, &typed_config("JFK, LGA, SFO"));
    let again = amended.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 0, "{again:?}");
    let validate = stage_of(&again.json(), "trips", "validate").clone();
    assert!(
        validate["detail"]
            .as_str()
            .unwrap()
            .contains("amended validation"),
        "{validate}"
    );
    let (want, have) = (kept_rows(&fresh), kept_rows(&amended));
    assert_eq!(want.0.len(), 4, "rows 1, 2, 3, 6 pass: {want:?}");
    assert_eq!(have, want, "the amendment's stage and quarantine");
    assert_eq!(verdict_of(&amended), verdict_of(&fresh));
    nothing_left(&amended);
    // A model reads the appended period from the lake (its rows and load
    // time agree with stage) and gives the fresh project's rows.
    assert_eq!(by_origin(&amended), by_origin(&fresh));
}

/// A tightened rule is judged on the rows it can move: the quarantined rows
/// and the cleaned rows it rejects (found by the changed column alone), never
/// the file (`a_relaxed_rule_judges_only_the_quarantined_rows_again` changes
/// its bytes to show it). It gives what validating the file under the tightened rules
/// gives — stage, quarantined lines and errors, counts, score, profile — and
/// the day after there is nothing left to do.
#[test]
fn a_tightened_rule_gives_what_validating_the_file_would_have_given() {
    let gated = |name: &str, allowed: &str| {
        let p = Project::new(name, &typed_config_gated(allowed, "    max_shrink: 1\n"));
        write(p.dir.path(), "landed/trips_2013-05.csv", TRIPS);
        let first = p.run(&["run", "--period", "2013-05"]);
        assert_eq!(first.code, 0, "{first:?}");
        p
    };
    let (fresh, amended) = (
        gated("tighten_fresh", "JFK"),
        gated("tighten_amended", "JFK, SFO"),
    );
    set_config(&amended, &typed_config_gated("JFK", "    max_shrink: 1\n"));
    let plan = amended.run(&["run", "--plan", "--period", "2013-05"]);
    assert!(
        plan.stdout
            .contains("0 row(s) move from quarantine to stage, 3 from stage to quarantine")
            && plan.stdout.contains("the file is not read"),
        "{plan:?}"
    );
    let again = amended.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 0, "{again:?}");
    let validate = stage_of(&again.json(), "trips", "validate").clone();
    assert!(
        validate["detail"]
            .as_str()
            .unwrap()
            .contains("and the 3 cleaned row(s) a changed rule now rejects were judged again"),
        "{validate}"
    );
    let load = stage_of(&again.json(), "trips", "load-stage").clone();
    assert_eq!(
        load["detail"],
        "deleted 3 withdrawn row(s) by key and appended 0 of the 4 the period held (an amended verdict)",
        "{load}"
    );
    let (want, have) = (kept_rows(&fresh), kept_rows(&amended));
    assert_eq!(have.0, want.0, "stage: row 1 only");
    assert_eq!(want.0.len(), 1, "{want:?}");
    // Quarantined rows: the same lines and errors; a withdrawn row's text is
    // its cleaned values rendered (a blank, kept as null, is null).
    let blank_is_null = |q: &[Vec<String>]| -> Vec<Vec<String>> {
        (q.iter())
            .map(|r| {
                (r.iter())
                    .map(|v| {
                        if v.is_empty() {
                            "NULL".into()
                        } else {
                            v.clone()
                        }
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(blank_is_null(&have.1), blank_is_null(&want.1));
    // A withdrawn row's text is its typed value written back: `1e3` as a float.
    let dist = |p: &Project| {
        delta_rows(
            &p.path("stage/quarantine/trips"),
            "SELECT dist FROM t WHERE _line = 3",
        )
    };
    assert_eq!(
        (dist(&fresh), dist(&amended)),
        (
            vec![vec!["1e3".to_owned()]],
            vec![vec!["1000.0".to_owned()]]
        )
    );
    assert_eq!(verdict_of(&amended), verdict_of(&fresh));
    assert_eq!(
        count(
            &amended,
            "SELECT rows_withdrawn FROM meta.validation_log ORDER BY id DESC LIMIT 1"
        ),
        3,
        "the cleaned rows withdrawn to quarantine"
    );
    nothing_left(&amended);
    // The rewritten period in the lake (row 1 copied as it was) is what a
    // model reads, and it gives the fresh project's rows.
    assert_eq!(by_origin(&amended), by_origin(&fresh));
}

/// Without a primary key the rows a tightened rule withdrew cannot be found
/// in stage: the amended verdict's load swaps the period whole, and stage
/// still holds exactly the verdict's rows.
#[test]
fn an_amendment_without_a_primary_key_swaps_the_period_to_withdraw_rows() {
    let keyless = |allowed: &str| config(allowed, STRICT.1).replace("    primary_key: [id]\n", "");
    let p = Project::new("stale_amend_keyless", &keyless("JFK, LGA, SFO"));
    flights(
        &p,
        "2013-05",
        10,
        |i| if i <= 3 { "SFO" } else { "JFK" },
        "AA",
    );
    assert_eq!(p.run(&["run", "--period", "2013-05"]).code, 0);
    set_config(&p, &keyless("JFK, LGA"));
    let again = p.run(&["run", "--period", "2013-05"]);
    assert_eq!(again.code, 0, "{again:?}");
    let stages = again.json();
    let validate = stage_of(&stages, "flights", "validate");
    assert!(
        validate["detail"]
            .as_str()
            .unwrap()
            .contains("and the 3 cleaned row(s)"),
        "{validate}"
    );
    let load = stage_of(&stages, "flights", "load-stage");
    assert_eq!(load["detail"], "replaced 10 row(s)", "{load}");
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM stage.flights WHERE origin = 'SFO'"
        ),
        0
    );
    assert_eq!(count(&p, "SELECT count(*) FROM stage.flights"), 7);
}
