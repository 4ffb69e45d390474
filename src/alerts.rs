//! Alerts: the `alerts:` section's conditions, checked against what a command
//! just did (its result document, the JSON `--json` prints), and sent to
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
use serde_json::{Value, json};

use crate::config::{Alerts, Email, PeriodKind, When};
use crate::period::Period;

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

fn number(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// One validation a result holds: dataset, score, rows in, rows rejected.
type Validation = (String, Option<f64>, Option<f64>, Option<f64>);

fn validations(summary: &Value) -> Vec<Validation> {
    let mut found = Vec::new();
    if summary["command"] == "validate" && summary.get("rows_in").is_some() {
        found.push((
            text(summary, "dataset").to_owned(),
            number(summary, "score"),
            number(summary, "rows_in"),
            number(summary, "rows_rejected"),
        ));
    }
    for stage in summary["stages"].as_array().into_iter().flatten() {
        if stage["stage"] == "validate" {
            found.push((
                text(stage, "dataset").to_owned(),
                number(stage, "score"),
                number(stage, "rows"),
                number(stage, "rows_rejected"),
            ));
        }
    }
    found
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

/// The conditions of `when` that hold for `summary`; `period` is the one the
/// command was asked for, `now` the current UTC time.
pub fn evaluate(
    when: &When,
    summary: &Value,
    period: Option<&str>,
    now: NaiveDateTime,
) -> Vec<Alert> {
    let command = text(summary, "command");
    let code = summary["exit_code"].as_u64().unwrap_or(1);
    let period = summary["period"].as_str().or(period).unwrap_or("");
    let at = if period.is_empty() {
        command.to_owned()
    } else {
        format!("{command} {period}")
    };
    let mut alerts = Vec::new();

    if let Some(min) = when.score_below {
        let lines: Vec<String> = validations(summary)
            .into_iter()
            .filter_map(|(dataset, score, _, _)| {
                let score = score?;
                (score < f64::from(min))
                    .then(|| format!("{dataset}: quality score {score} is below {min}"))
            })
            .collect();
        if !lines.is_empty() {
            alerts.push(Alert {
                condition: "score",
                title: format!("[pipeline] quality score below {min} ({at})"),
                lines,
            });
        }
    }

    if let Some(max) = when.rejected_ratio_above {
        let lines: Vec<String> = validations(summary)
            .into_iter()
            .filter_map(|(dataset, _, rows, rejected)| {
                let (rows, rejected) = (rows?, rejected?);
                let ratio = if rows > 0.0 { rejected / rows } else { 0.0 };
                (ratio > max).then(|| {
                    format!(
                        "{dataset}: {rejected} of {rows} rows rejected ({:.1}%, above {:.1}%)",
                        ratio * 100.0,
                        max * 100.0
                    )
                })
            })
            .collect();
        if !lines.is_empty() {
            alerts.push(Alert {
                condition: "rejected_ratio",
                title: format!("[pipeline] rejected rows above {:.1}% ({at})", max * 100.0),
                lines,
            });
        }
    }

    if when.failure && matches!(code, 1 | 3 | 4) {
        let mut lines: Vec<String> = summary["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "failed" || s["status"] == "rejected")
            .map(|s| {
                let detail = s["detail"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                format!(
                    "{} {}: {}{detail}",
                    text(s, "dataset"),
                    text(s, "stage"),
                    text(s, "status")
                )
            })
            .collect();
        if lines.is_empty() {
            lines.push(
                summary["error"]
                    .as_str()
                    .unwrap_or("see the log")
                    .to_owned(),
            );
        }
        alerts.push(Alert {
            condition: "failure",
            title: format!("[pipeline] {at} failed (exit {code})"),
            lines,
        });
    }

    if let Some(days) = when.missing_after_days
        && let Some(due) = deadline(period, days)
        && now >= due
    {
        let mut lines: Vec<String> = summary["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "missing")
            .map(|s| format!("{}: no file has landed for {period}", text(s, "dataset")))
            .collect();
        if lines.is_empty() && code == 5 {
            let dataset = summary["dataset"].as_str().unwrap_or("a dataset");
            lines.push(format!("{dataset}: no file has landed for {period}"));
        }
        if !lines.is_empty() {
            alerts.push(Alert {
                condition: "missing",
                title: format!(
                    "[pipeline] {period} still missing {days} day(s) after the period ended"
                ),
                lines,
            });
        }
    }
    alerts
}

/// Checks the conditions and sends what holds; every failure is a warning.
pub async fn send(alerts: &Alerts, summary: &Value, period: Option<&str>) {
    let fired = evaluate(
        &alerts.when,
        summary,
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
    transport
        .build()
        .send(message)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;

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

    #[test]
    fn a_low_score_and_many_rejected_rows_fire_once_each() {
        let summary = json!({
            "command": "run", "exit_code": 3, "period": "2025-06",
            "stages": [
                {"dataset": "a", "stage": "validate", "status": "rejected", "rows": 100, "rows_rejected": 40, "score": 61, "detail": "top rule: x.min ×40"},
                {"dataset": "b", "stage": "validate", "status": "done", "rows": 10, "rows_rejected": 5, "score": 79},
                {"dataset": "c", "stage": "validate", "status": "done", "rows": 10, "rows_rejected": 0, "score": 100},
            ],
        });
        let fired = evaluate(&when(), &summary, None, on(2025, 7, 2));
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
        let summary = json!({"command": "validate", "exit_code": 5, "error": "no file"});
        let early = evaluate(&when(), &summary, Some("2025-06"), on(2025, 7, 5));
        assert!(early.is_empty(), "{early:?}");
        let late = evaluate(&when(), &summary, Some("2025-06"), on(2025, 7, 6));
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
        for code in [0, 99] {
            let summary =
                json!({"command": "run", "exit_code": code, "period": "2025-06", "stages": []});
            assert!(evaluate(&when(), &summary, None, on(2030, 1, 1)).is_empty());
        }
        let quiet = When {
            failure: false,
            ..when()
        };
        let failed = json!({"command": "load-stage", "exit_code": 1, "error": "boom"});
        assert!(evaluate(&quiet, &failed, None, on(2030, 1, 1)).is_empty());
        assert_eq!(
            evaluate(&when(), &failed, None, on(2030, 1, 1))[0].lines,
            ["boom"]
        );
    }
}
