//! The `alerts:` section: where alerts go and when they are sent.
//!
//! Secrets (a webhook URL's token, the SMTP password) are named by environment
//! variable, never written in the file that analysts edit and commit.

use serde::Deserialize;

use super::Problem;

/// Where alerts go and what triggers them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Slack-compatible webhooks: a JSON body `{"text": …}` is POSTed.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// Email through an SMTP server.
    #[serde(default)]
    pub email: Option<Email>,
    /// The conditions; each is sent at most once per command.
    #[serde(default)]
    pub when: When,
}

/// One webhook target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The environment variable holding the URL (the URL is the secret).
    pub url_env: String,
}

/// An SMTP server and the mail's addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub smtp_host: String,
    /// Default 587.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// Upgrade the connection with STARTTLS (default true); false only for a
    /// relay on localhost.
    #[serde(default = "yes")]
    pub starttls: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

fn default_smtp_port() -> u16 {
    587
}

fn yes() -> bool {
    true
}

/// When an alert is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A validated file scored below this (0–100).
    #[serde(default)]
    pub score_below: Option<u8>,
    /// A validated file rejected more than this share of its rows (0–1).
    #[serde(default)]
    pub rejected_ratio_above: Option<f64>,
    /// A command or stage failed or was refused (exit 1, 3 or 4). Default true.
    #[serde(default = "yes")]
    pub failure: bool,
    /// No file for the period this many days after the period ended.
    #[serde(default)]
    pub missing_after_days: Option<u32>,
}

impl Default for When {
    fn default() -> Self {
        When {
            score_below: None,
            rejected_ratio_above: None,
            failure: true,
            missing_after_days: None,
        }
    }
}

impl Alerts {
    pub(super) fn check(&self, line: impl Fn(&[&str]) -> Option<usize>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: &[&str], message: String| {
            problems.push(Problem {
                line: line(path),
                dataset: None,
                column: None,
                key: Some(path.join(".")),
                message,
            })
        };
        for hook in &self.webhooks {
            if !is_env_name(&hook.url_env) {
                problem(
                    &["alerts", "webhooks", "url_env"],
                    format!(
                        "`{}` is not an environment variable name; put the URL in a variable \
                         (e.g. PIPELINE_SLACK_WEBHOOK) and name it here",
                        hook.url_env
                    ),
                );
            }
        }
        if let Some(email) = &self.email {
            if email.smtp_host.trim().is_empty() {
                problem(
                    &["alerts", "email", "smtp_host"],
                    "must not be empty".into(),
                );
            }
            for (key, address) in
                std::iter::once(("from", &email.from)).chain(email.to.iter().map(|a| ("to", a)))
            {
                if address.parse::<lettre::message::Mailbox>().is_err() {
                    problem(
                        &["alerts", "email", key],
                        format!("`{address}` is not an email address"),
                    );
                }
            }
            if email.to.is_empty() {
                problem(&["alerts", "email", "to"], "lists no recipient".into());
            }
            if let Some(var) = &email.password_env
                && !is_env_name(var)
            {
                problem(
                    &["alerts", "email", "password_env"],
                    format!("`{var}` is not an environment variable name"),
                );
            }
        }
        if let Some(score) = self.when.score_below
            && score > 100
        {
            problem(
                &["alerts", "when", "score_below"],
                format!("{score} is not a score (0–100)"),
            );
        }
        if let Some(r) = self.when.rejected_ratio_above
            && !(0.0..=1.0).contains(&r)
        {
            problem(
                &["alerts", "when", "rejected_ratio_above"],
                format!("{r} is not a fraction (0–1)"),
            );
        }
        problems
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
