//! Alerts: the `alerts:` section's conditions, checked against what a command
//! just did (its typed [`Outcome`]), and sent to
//! Slack-compatible webhooks and by email.
//!
//! Each condition that holds sends one message per command, listing every
//! dataset it holds for. Messages carry dataset names, periods, scores and
//! errors (already redacted); never a webhook URL or a password. A target that
//! cannot be reached is logged and never changes the exit code.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;

use crate::config::{Alerts, Email, PeriodKind, When};
use crate::exit::Exit;
use crate::outcome::{Outcome, Report, Validation};
use crate::period::Period;
use crate::run::StageStatus;

/// One condition that holds, and for what.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `score`, `rejected_ratio`, `failure` or `missing`.
    pub condition: &'static str,
    pub title: String,
    pub lines: Vec<String>,
}

impl Alert {
    /// The message body: the title, then one line per dataset.
    pub fn text(&self) -> String {
        let mut text = self.title.clone();
        for line in &self.lines {
            text.push_str("\n• ");
            text.push_str(line);
        }
        text
    }
}

/// The first moment the period is late: its end plus `days`.
fn deadline(period: &str, days: u32) -> Option<NaiveDateTime> {
    let kind = match period.len() {
        7 => PeriodKind::Month,
        10 => PeriodKind::Day,
        13 => PeriodKind::Hour,
        _ => return None,
    };
    let period = Period::parse(kind, period).ok()?;
    Some(period.next().start() + TimeDelta::days(i64::from(days)))
}

/// The conditions of `when` that hold for `outcome`; `period` is the one the
/// command was asked for, `now` the current UTC time.
pub fn evaluate(
    when: &When,
    outcome: &Outcome,
    period: Option<&str>,
    now: NaiveDateTime,
) -> Vec<Alert> {
    let report = outcome.report();
    let period = report.and_then(Report::period).or(period).unwrap_or("");
    let at = if period.is_empty() {
        outcome.command.to_owned()
    } else {
        format!("{} {period}", outcome.command)
    };
    let validations = report.map(Report::validations).unwrap_or_default();
    let mut alerts = Vec::new();
    if let Some(min) = when.score_below {
        alerts.extend(score_below(&validations, min, &at));
    }
    if let Some(max) = when.rejected_ratio_above {
        alerts.extend(rejected_above(&validations, max, &at));
    }
    let exit = outcome.exit();
    if when.failure && matches!(exit, Exit::Failure | Exit::Rejected | Exit::Locked) {
        let mut lines = outcome.failed_stages();
        if lines.is_empty() {
            lines.push(outcome.error().unwrap_or_else(|| "see the log".to_owned()));
        }
        alerts.push(Alert {
            condition: "failure",
            title: format!("[pipeline] {at} failed (exit {})", exit.code()),
            lines,
        });
    }
    if let Some(days) = when.missing_after_days
        && let Some(due) = deadline(period, days)
        && now >= due
    {
        alerts.extend(missing(outcome, period, days));
    }
    alerts
}

fn score_below(validations: &[Validation], min: u8, at: &str) -> Option<Alert> {
    let lines: Vec<String> = validations
        .iter()
        .filter_map(|v| {
            let score = v.score?;
            (score < i32::from(min))
                .then(|| format!("{}: quality score {score} is below {min}", v.dataset))
        })
        .collect();
    (!lines.is_empty()).then(|| Alert {
        condition: "score",
        title: format!("[pipeline] quality score below {min} ({at})"),
        lines,
    })
}

fn rejected_above(validations: &[Validation], max: f64, at: &str) -> Option<Alert> {
    let lines: Vec<String> = validations
        .iter()
        .filter_map(|v| {
            let (rows, rejected) = (v.rows_in? as f64, v.rows_rejected? as f64);
            let ratio = if rows > 0.0 { rejected / rows } else { 0.0 };
            (ratio > max).then(|| {
                format!(
                    "{}: {rejected} of {rows} rows rejected ({:.1}%, above {:.1}%)",
                    v.dataset,
                    ratio * 100.0,
                    max * 100.0
                )
            })
        })
        .collect();
    (!lines.is_empty()).then(|| Alert {
        condition: "rejected_ratio",
        title: format!("[pipeline] rejected rows above {:.1}% ({at})", max * 100.0),
        lines,
    })
}

/// `run`'s datasets with no file, or the one a command said has not arrived.
fn missing(outcome: &Outcome, period: &str, days: u32) -> Option<Alert> {
    let report = outcome.report();
    let mut lines: Vec<String> = report
        .map(Report::stages)
        .unwrap_or_default()
        .iter()
        .filter(|s| s.status == StageStatus::Missing)
        .map(|s| format!("{}: no file has landed for {period}", s.dataset))
        .collect();
    if lines.is_empty() && outcome.exit() == Exit::NotArrived {
        let dataset = report.and_then(Report::dataset).unwrap_or("a dataset");
        lines.push(format!("{dataset}: no file has landed for {period}"));
    }
    (!lines.is_empty()).then(|| Alert {
        condition: "missing",
        title: format!("[pipeline] {period} still missing {days} day(s) after the period ended"),
        lines,
    })
}

/// Checks the conditions and sends what holds; every failure is a warning.
pub async fn send(alerts: &Alerts, outcome: &Outcome, period: Option<&str>) {
    let fired = evaluate(
        &alerts.when,
        outcome,
        period,
        chrono::Utc::now().naive_utc(),
    );
    for alert in &fired {
        tracing::warn!(event = "alert_fired", condition = alert.condition, alert = %alert.title, "alert");
        for hook in &alerts.webhooks {
            match post(&hook.url_env, alert).await {
                Ok(()) => {
                    tracing::info!(event = "alert_sent", condition = alert.condition, target = %hook.url_env, "alert sent")
                }
                Err(e) => {
                    tracing::warn!(event = "alert_send_failed", condition = alert.condition, target = %hook.url_env, error = %e, "alert not sent")
                }
            }
        }
        if let Some(email) = &alerts.email {
            match mail(email, alert).await {
                Ok(()) => {
                    tracing::info!(event = "alert_mailed", condition = alert.condition, target = %email.smtp_host, "alert mailed")
                }
                Err(e) => {
                    tracing::warn!(event = "alert_mail_failed", condition = alert.condition, target = %email.smtp_host, error = %e, "alert not mailed")
                }
            }
        }
    }
}

/// POSTs `{"text": …}` to the URL held by `$url_env`.
async fn post(url_env: &str, alert: &Alert) -> Result<(), String> {
    let url = std::env::var(url_env)
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            format!("the environment variable {url_env} (the webhook URL) is not set")
        })?;
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.without_url().to_string())?
        .post(&url)
        .header("Content-Type", "application/json")
        .body(json!({ "text": alert.text() }).to_string())
        .send()
        .await
        // The URL is the secret: errors never show it.
        .map_err(|e| e.without_url().to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}

async fn mail(email: &Email, alert: &Alert) -> Result<(), String> {
    let mut message = Message::builder()
        .from(email.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(&alert.title)
        .header(ContentType::TEXT_PLAIN);
    for to in &email.to {
        message = message.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
    }
    let message = message.body(alert.text()).map_err(|e| e.to_string())?;
    let mut transport = if email.starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.smtp_host)
            .map_err(|e| e.to_string())?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.smtp_host)
    }
    .port(email.smtp_port)
    .timeout(Some(Duration::from_secs(10)));
    if let Some(user) = &email.username {
        let password = match &email.password_env {
            Some(var) => std::env::var(var).map_err(|_| {
                format!("the environment variable {var} (the SMTP password) is not set")
            })?,
            None => String::new(),
        };
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport.build().send(message).await.map(drop).map_err(|e| {
        // A server's reply may echo what it refused, the AUTH line (base64 of
        // the user and password) included: only its code is shown.
        match e.status() {
            Some(code) => format!(
                "the SMTP server answered {code} ({}; its text is not shown: it may echo the login)",
                if e.is_permanent() { "permanent" } else { "transient" }
            ),
            None => e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDate;

    use super::*;
    use crate::outcome::Failure;
    use crate::run::StageResult;

    fn when() -> When {
        When {
            score_below: Some(80),
            rejected_ratio_above: Some(0.1),
            failure: true,
            missing_after_days: Some(5),
        }
    }

    fn on(y: i32, m: u32, d: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
    }

    fn validated(
        dataset: &str,
        status: StageStatus,
        rows: u64,
        rejected: u64,
        score: i32,
    ) -> StageResult {
        StageResult {
            dataset: dataset.into(),
            period: "2025-06".into(),
            stage: "validate",
            status,
            exit: if status == StageStatus::Rejected {
                Exit::Rejected
            } else {
                Exit::Ok
            },
            rows: Some(rows),
            rows_rejected: Some(rejected),
            score: Some(score),
            duration_ms: 1,
            detail: (status == StageStatus::Rejected).then(|| "top rule: x.min ×40".into()),
        }
    }

    fn run(exit: Exit, stages: Vec<StageResult>) -> Outcome {
        Outcome {
            command: "run",
            result: Ok(Report::Run(crate::run::Report {
                period: "2025-06".into(),
                periods: vec!["2025-06".into()],
                skipped_datasets: Vec::new(),
                exit,
                stages,
            })),
            duration: Duration::ZERO,
        }
    }

    fn failed(command: &'static str, exit: Exit, error: &str) -> Outcome {
        Outcome {
            command,
            result: Err(Failure {
                exit,
                error: error.into(),
            }),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn a_low_score_and_many_rejected_rows_fire_once_each() {
        let outcome = run(
            Exit::Rejected,
            vec![
                validated("a", StageStatus::Rejected, 100, 40, 61),
                validated("b", StageStatus::Done, 10, 5, 79),
                validated("c", StageStatus::Done, 10, 0, 100),
            ],
        );
        let fired = evaluate(&when(), &outcome, None, on(2025, 7, 2));
        let conditions: Vec<&str> = fired.iter().map(|a| a.condition).collect();
        assert_eq!(conditions, ["score", "rejected_ratio", "failure"]);
        assert_eq!(
            fired[0].lines,
            [
                "a: quality score 61 is below 80",
                "b: quality score 79 is below 80"
            ]
        );
        assert_eq!(fired[1].lines.len(), 2, "{:?}", fired[1]);
        assert_eq!(
            fired[2].lines,
            ["a validate: rejected: top rule: x.min ×40"]
        );
        assert_eq!(fired[2].title, "[pipeline] run 2025-06 failed (exit 3)");
    }

    #[test]
    fn a_missing_period_fires_only_after_its_deadline() {
        let outcome = failed("validate", Exit::NotArrived, "no file");
        let early = evaluate(&when(), &outcome, Some("2025-06"), on(2025, 7, 5));
        assert!(early.is_empty(), "{early:?}");
        let late = evaluate(&when(), &outcome, Some("2025-06"), on(2025, 7, 6));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].condition, "missing");
        assert!(
            late[0].title.contains("2025-06 still missing 5 day(s)"),
            "{:?}",
            late[0]
        );
    }

    #[test]
    fn success_and_nothing_to_do_fire_nothing() {
        for exit in [Exit::Ok, Exit::NothingToDo] {
            assert!(evaluate(&when(), &run(exit, vec![]), None, on(2030, 1, 1)).is_empty());
        }
        let quiet = When {
            failure: false,
            ..when()
        };
        let failed = failed("load-stage", Exit::Failure, "boom");
        assert!(evaluate(&quiet, &failed, None, on(2030, 1, 1)).is_empty());
        assert_eq!(
            evaluate(&when(), &failed, None, on(2030, 1, 1))[0].lines,
            ["boom"]
        );
    }
}
