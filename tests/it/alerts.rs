//! Alerts end to end: the binary sends to a local HTTP receiver (a webhook) and a
//! local SMTP sink, both started by the test and recording what arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::support::*;

/// What a local server received, one entry per request or mail.
type Inbox = Arc<Mutex<Vec<String>>>;

/// An HTTP server answering every request with `status`; records "path\nbody".
fn http_receiver(status: u16) -> (u16, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let seen = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            seen.lock()
                .unwrap()
                .push(format!("{path}\n{}", String::from_utf8_lossy(&body)));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, inbox)
}

/// The least SMTP server a client can deliver to; records each message's data.
fn smtp_sink() -> (u16, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let seen = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = session(stream, &seen);
        }
    });
    (port, inbox)
}

fn session(stream: TcpStream, seen: &Inbox) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "DATA" => {
                out.write_all(b"354 end with .\r\n")?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    reader.read_line(&mut l)?;
                    if l == ".\r\n" || l.is_empty() {
                        break;
                    }
                    data.push_str(&l);
                }
                seen.lock().unwrap().push(data);
                out.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 ok\r\n")?,
        }
    }
}

fn config(smtp_port: u16) -> String {
    format!(
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{{4}}-\d{{2}})\.csv$'
    period: month
    min_quality_score: 0
    columns:
      id:     {{ type: int, required: true }}
      amount: {{ type: float, min: 0 }}
alerts:
  webhooks:
    - url_env: TEST_ALERT_HOOK
  email:
    smtp_host: 127.0.0.1
    smtp_port: {smtp_port}
    starttls: false
    from: pipeline@example.com
    to: [data-team@example.com]
  when:
    score_below: 99
    missing_after_days: 3
"#
    )
}

fn run_with_hook(project: &Project, hook: &str, args: &[&str]) -> Run {
    let mut all = vec!["--json"];
    all.extend(args);
    command(project.dir.path(), Some(&project.db.url), &all)
        .env("TEST_ALERT_HOOK", hook)
        .output()
        .unwrap()
        .into()
}

#[test]
fn a_low_score_and_a_missing_period_reach_the_webhook_and_the_mailbox_once() {
    let (http_port, hooks) = http_receiver(200);
    let (smtp_port, mails) = smtp_sink();
    let project = Project::new("alerts_send", &config(smtp_port));
    let hook = format!("http://127.0.0.1:{http_port}/hook/SECRET-TOKEN");
    // 3 of 10 rows break `min`: score 96, below 99, but the file passes (threshold 0).
    let mut body = String::from("id,amount\n");
    for i in 1..=10 {
        body.push_str(&format!("{i},{}\n", if i <= 3 { "-1" } else { "5" }));
    }
    std::fs::write(project.path("landed/sales_2025-06.csv"), body).unwrap();

    let ingest = run_with_hook(&project, &hook, &["ingest", "--all"]);
    assert_eq!(ingest.code, 0, "{ingest:?}");
    assert!(
        hooks.lock().unwrap().is_empty(),
        "a clean ingest sends nothing"
    );

    let run = run_with_hook(
        &project,
        &hook,
        &["validate", "--dataset", "sales", "--period", "2025-06"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    {
        let hooks = hooks.lock().unwrap();
        assert_eq!(hooks.len(), 1, "one message per condition: {hooks:?}");
        let (path, body) = hooks[0].split_once('\n').unwrap();
        assert_eq!(path, "/hook/SECRET-TOKEN");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let text = json["text"].as_str().unwrap();
        assert!(text.contains("quality score below 99"), "{text}");
        assert!(text.contains("sales: quality score"), "{text}");
        let mails = mails.lock().unwrap();
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert!(
            mails[0].contains("Subject: [pipeline] quality score below 99"),
            "{}",
            mails[0]
        );
        assert!(
            mails[0].contains("To: data-team@example.com"),
            "{}",
            mails[0]
        );
    }

    // Nothing landed for 2020-01, long past its deadline.
    let run = run_with_hook(
        &project,
        &hook,
        &["validate", "--dataset", "sales", "--period", "2020-01"],
    );
    assert_eq!(run.code, 5, "{run:?}");
    let hooks = hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert!(
        hooks[1].contains("2020-01 still missing 3 day(s)"),
        "{}",
        hooks[1]
    );
    assert_eq!(mails.lock().unwrap().len(), 2);
    // The webhook URL (its path is the token) and the database password never
    // appear in what is sent.
    let bodies = hooks
        .iter()
        .map(|h| h.split_once('\n').unwrap().1.to_owned());
    for text in bodies.chain(mails.lock().unwrap().iter().cloned()) {
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
        assert!(!text.contains("pipeline:pipeline"), "{text}");
    }
    assert!(!run.stderr.contains("SECRET-TOKEN"), "{}", run.stderr);
}

#[test]
fn an_unreachable_target_is_logged_and_changes_no_exit_code() {
    let (http_port, _hooks) = http_receiver(500);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let project = Project::new("alerts_unreachable", &config(closed));
    let hook = format!("http://127.0.0.1:{http_port}/hook/SECRET-TOKEN");
    let run = run_with_hook(
        &project,
        &hook,
        &["validate", "--dataset", "sales", "--period", "2020-01"],
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains("alert not sent") && run.stderr.contains("500"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("alert not mailed"), "{}", run.stderr);
    assert!(!run.stderr.contains("SECRET-TOKEN"), "{}", run.stderr);
}

#[test]
fn alert_targets_are_checked_with_the_config() {
    let bad = config(25)
        .replace(
            "url_env: TEST_ALERT_HOOK",
            "url_env: https://hooks.example/T0/abc",
        )
        .replace("to: [data-team@example.com]", "to: [not-an-address]");
    let dir = project(&bad);
    let run = pipeline(dir.path(), None, &["status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("alerts.webhooks.url_env"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("`not-an-address` is not an email address"),
        "{}",
        run.stderr
    );
}

/// An SMTP server that refuses the login and echoes the AUTH line back, as
/// some do: the log says it refused, never what it echoed.
#[test]
fn an_smtp_server_echoing_the_login_is_not_quoted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut out = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let _ = out.write_all(b"220 echo ESMTP\r\n");
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply = match verb.as_str() {
                    "EHLO" => "250-echo\r\n250 AUTH PLAIN LOGIN\r\n".to_owned(),
                    "AUTH" => format!("535 5.7.8 rejected: {}\r\n", line.trim()),
                    "QUIT" => "221 bye\r\n".to_owned(),
                    _ => "250 ok\r\n".to_owned(),
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    let with_login = config(port).replace(
        "    starttls: false\n",
        "    starttls: false\n    username: ops\n    password_env: TEST_SMTP_PASSWORD\n",
    );
    let project = Project::new("alerts_smtp_echo", &with_login);
    let run: Run = command(
        project.dir.path(),
        Some(&project.db.url),
        &[
            "--json",
            "validate",
            "--dataset",
            "sales",
            "--period",
            "2020-01",
        ],
    )
    .env("TEST_ALERT_HOOK", "http://127.0.0.1:1/hook")
    .env("TEST_SMTP_PASSWORD", "Sm7pS3cret")
    .output()
    .unwrap()
    .into();
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains("alert not mailed") && run.stderr.contains("535"),
        "{}",
        run.stderr
    );
    // AUTH PLAIN carries base64("\0ops\0Sm7pS3cret"); LOGIN sends each alone.
    for secret in ["Sm7pS3cret", "AG9wcwBTbTdwUzNjcmV0", "U203cFMzY3JldA"] {
        assert!(!run.stderr.contains(secret), "{secret} in {}", run.stderr);
        assert!(!run.stdout.contains(secret), "{secret} in {}", run.stdout);
    }
}
