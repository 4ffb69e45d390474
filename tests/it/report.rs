//! `pipeline report`: the static HTML page, opened in a real headless browser
//! (Chromium from Debian; `CHROMIUM` names another binary): it loads with no
//! console message, and every score and rule count on it equals reporting.*.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// The DOM after the page loaded, and the console lines Chromium logged.
fn open_in_browser(page: &Path) -> (String, Vec<String>) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): install Debian's chromium or set CHROMIUM",
                chromium()
            )
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The text of the first `<tag …marker…>…</tag>` after `from` in `html`.
fn inner<'a>(html: &'a str, marker: &str, close: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not on the page"));
    let rest = &html[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let end = rest.find(close).unwrap();
    &rest[open_end..end]
}

#[test]
fn the_browser_sees_a_clean_page_with_the_numbers_of_reporting() {
    // The console check has teeth: a page that throws is caught.
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad.html");
    std::fs::write(
        &bad,
        "<html><body><script>throw new Error('boom')</script></body></html>",
    )
    .unwrap();
    let (_, console) = open_in_browser(&bad);
    assert!(
        !console.is_empty(),
        "a thrown error must reach the console check"
    );

    let dir = sample_project();
    let db = TestDb::new("report_page");
    let run = |args: &[&str]| pipeline(dir.path(), Some(&db.url), args);
    assert_eq!(run(&["migrate"]).code, 0);
    // A dirty row in June, so the page has rule failures and a quarantine file.
    let june = dir.path().join("data/landed/citizens_2025-06.csv");
    let mut text = std::fs::read_to_string(&june).unwrap();
    text.push_str("9999,<b>Eve</b>,not-an-email,XX,-5,2020-01-01,active\n");
    std::fs::write(&june, text).unwrap();
    for period in ["2025-05", "2025-06"] {
        assert_eq!(run(&["run", "--period", period]).code, 0);
    }
    let out = dir.path().join("site");
    let report = run(&["--json", "report", "--out", out.to_str().unwrap()]);
    assert_eq!(report.code, 0, "{report:?}");
    let summary = report.json();
    assert_eq!(summary["periods"], 3, "{summary}");
    let files = summary["quarantine_files"].as_array().unwrap();
    assert!(
        files.contains(&"quarantine/citizens_2025-06.csv".into()),
        "{summary}"
    );
    for f in files {
        assert!(out.join(f.as_str().unwrap()).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(out.join("quarantine/citizens_2025-06.csv")).unwrap();
    assert!(csv.contains("not-an-email"), "{csv}");

    let (dom, console) = open_in_browser(&out.join("index.html"));
    assert!(console.is_empty(), "console: {console:?}");
    assert!(!dom.contains("<b>Eve</b>"), "values are escaped");

    let mut db = db.client();
    let scores = db
        .query(
            "SELECT f.file_name, to_char(r.file_range_lower_limit, 'YYYY-MM'), q.score, r.id
               FROM reporting.monitoring_file f
               JOIN reporting.monitoring_file_run r ON r.monitoring_file_id = f.id
               JOIN reporting.monitoring_file_data_quality q ON q.monitoring_file_run_id = r.id",
            &[],
        )
        .unwrap();
    assert_eq!(scores.len(), 3);
    for row in scores {
        let (dataset, period, score, run_id): (String, Option<String>, i32, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let section = inner(
            &dom,
            &format!("<section data-dataset=\"{dataset}\""),
            "</section>",
        );
        let period = period.unwrap_or_else(|| "(all)".into());
        let tr = inner(section, &format!("<tr data-period=\"{period}\""), "</tr>");
        let shown = inner(tr, "<td class=\"n score\"", "</td>");
        assert_eq!(shown, score.to_string(), "{dataset} {period}");
        let details = inner(
            section,
            &format!("data-period=\"{period}\"><summary"),
            "</details>",
        );
        for rule in db
            .query(
                "SELECT column_name, rule, failed_count FROM reporting.monitoring_file_failed_validation
                  WHERE monitoring_file_run_id = $1",
                &[&run_id],
            )
            .unwrap()
        {
            let (column, name, count): (String, String, i64) = (rule.get(0), rule.get(1), rule.get(2));
            let tr = inner(details, &format!("<tr data-column=\"{column}\" data-rule=\"{name}\""), "</tr>");
            assert_eq!(inner(tr, "<td class=\"n count\"", "</td>"), count.to_string());
        }
    }
}

/// The morning after a bad night — a delivery refused at ingest, a load
/// refused by its gate, an audit that blocked a model — the page answers
/// "what went wrong?" at the top: each failure with when, where, why and a
/// command that will work, failures first; the failing period open; its bar
/// red although its verdict passed; audits grouped by model, failures first,
/// samples folded. Rendered by headless Chromium to a screenshot.
#[test]
fn the_page_answers_what_went_wrong_last_night() {
    let dir = sample_project();
    let db = TestDb::new("report_night");
    let run = |args: &[&str]| pipeline(dir.path(), Some(&db.url), args);
    assert_eq!(run(&["migrate"]).code, 0);
    assert_eq!(run(&["run", "--period", "2025-05"]).code, 0);
    // The night: June's citizens shrink to one row (the shrink gate refuses
    // the load of a re-delivery: first load May into June's place), a file
    // no dataset matches is refused at ingest, and an audit blocks the mart.
    let landed = dir.path().join("data/landed");
    let may = std::fs::read_to_string(landed.join("citizens_2025-05.csv")).unwrap();
    let june = landed.join("citizens_2025-06.csv");
    assert_eq!(run(&["run", "--period", "2025-06"]).code, 0);
    let header = may.lines().next().unwrap();
    let one = may.lines().nth(1).unwrap();
    std::fs::write(&june, format!("{header}\n{one}\n")).unwrap();
    std::fs::write(landed.join("citizens-2025-07.csv"), "x\n1\n").unwrap();
    let model = std::fs::read_dir(dir.path().join("sql/mart"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sql"))
        .expect("a mart model");
    std::fs::write(
        model.with_extension("yml"),
        "audits:\n  - name: never_empty_again\n    sql: select 1 as one\n",
    )
    .unwrap();
    let night = run(&["run", "--period", "2025-06"]);
    assert_ne!(night.code, 0, "{night:?}");
    let _ = run(&["ingest", "--all"]);
    let _ = run(&["transform", "--period", "2025-05"]);

    let out = dir.path().join("site");
    let report = run(&["report", "--out", out.to_str().unwrap()]);
    assert_eq!(report.code, 0, "{report:?}");
    let (dom, console) = open_in_browser(&out.join("index.html"));
    assert!(console.is_empty(), "console: {console:?}");
    let latest = inner(&dom, "<section id=\"latest\"", "</section>");
    let first_ok = latest.find("class=\"ok\"").unwrap_or(latest.len());
    for (stage, status, command) in [
        (
            "load-stage",
            "refused",
            "pipeline load-stage --dataset citizens --period 2025-06 --force",
        ),
        (
            "transform",
            "rejected",
            "pipeline transform --period 2025-05 --model mart.",
        ),
        ("ingest", "rejected", "deliver it again"),
    ] {
        let at = latest
            .find(&format!("data-stage=\"{stage}\" data-status=\"{status}\""))
            .unwrap_or_else(|| panic!("{stage} {status} not at the top: {latest}"));
        assert!(at < first_ok, "failures come first: {latest}");
        let row = &latest[at..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(row.contains(command), "{stage}: {row}");
        assert!(row.contains(" UTC"), "a time: {row}");
    }
    let ok = &latest[first_ok..];
    assert!(
        !ok.contains("<code>"),
        "nothing to do for what went well: {ok}"
    );
    // June's details are open, its bar red (the load was refused), and the
    // stale line suggests the load, not a re-run that ends the same way.
    let citizens = inner(&dom, "<section data-dataset=\"citizens\"", "</section>");
    assert!(
        citizens.contains("<details open=\"\" data-period=\"2025-06\""),
        "{citizens}"
    );
    assert!(
        !citizens.contains("<details open=\"\" data-period=\"2025-05\""),
        "{citizens}"
    );
    assert!(
        citizens.contains("2025-06 score 100, load refused"),
        "{citizens}"
    );
    assert!(
        !citizens.contains("<code>pipeline run --period 2025-06</code> redoes it"),
        "{citizens}"
    );
    // Audits: the failing model first and open, its sample folded.
    let audits = inner(&dom, "<section id=\"audits\"", "</section>");
    assert!(
        audits
            .starts_with("<h2>Model audits</h2><details class=\"model-audits\" data-model=\"mart."),
        "{audits}"
    );
    assert!(audits.contains("1 failing of"), "{audits}");
    assert!(
        audits.contains("<details class=\"sample\"><summary>sample</summary>"),
        "{audits}"
    );

    // The project drawn (#50): datasets → mart, each node's state, linked to
    // its section; the model's section shows its columns' lineage.
    let graph = inner(&dom, "<section id=\"project\"", "</section>");
    assert!(
        graph.contains(
            "<a href=\"#dataset-citizens\" data-node=\"stage.citizens\" data-state=\"refused\""
        ) && graph.contains("data-node=\"stage.regions\" data-state=\"current\""),
        "{graph}"
    );
    let mart = model.file_stem().unwrap().to_str().unwrap();
    assert!(
        graph.contains(&format!(
            "<a href=\"#model-mart.{mart}\" data-node=\"mart.{mart}\" data-state=\"rejected\""
        )) && graph.contains(&format!(
            "data-from=\"stage.citizens\" data-to=\"mart.{mart}\""
        )),
        "{graph}"
    );
    let lineage = inner(
        &dom,
        &format!("<div class=\"model\" id=\"model-mart.{mart}\""),
        "</div>",
    );
    assert!(lineage.contains("stage.citizens."), "{lineage}");
    assert!(
        dom.contains("id=\"dataset-citizens\""),
        "the node's link has a target"
    );

    // The trends (#49): rows per period beside the scores.
    assert!(
        citizens.contains("<svg class=\"rows\"") && citizens.contains("2025-06 rows 1</title>"),
        "{citizens}"
    );

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_night.png");
    let _ = std::fs::remove_file(&shot);
    let status = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1800",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.join("index.html").display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a rendered page: {} bytes",
        png.len()
    );
}
