//! The exit codes orchestrators rely on, and how an error reads on one screen.
//!
//! A leaf: it imports nothing of this crate, so every module can say its own
//! exit code without a cycle through the top-level [`crate::error::Error`].

use std::error::Error as StdError;
use std::process::ExitCode;

/// Exit codes of the design's table; Airflow skips a task on 99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Rejected = 3,
    Locked = 4,
    /// The period's file has not landed yet: wait and try again later.
    NotArrived = 5,
    NothingToDo = 99,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Serialises an [`Exit`] as its number (`"exit_code": 3` in `--json`).
pub fn as_code<S: serde::Serializer>(exit: &Exit, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(exit.code())
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// The error and its causes, one per line, skipping causes the message already
/// quotes (many messages embed their source for one-line logs).
pub fn report(err: &(dyn StdError + 'static)) -> String {
    let mut out = without_backtrace(&err.to_string()).to_owned();
    let mut last = out.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = without_backtrace(&cause.to_string()).to_owned();
        // tokio-postgres wraps the server's message in an error that says only "db error".
        // A server message quoted without its severity is quoted all the same.
        let bare = text
            .split_once(": ")
            .map_or(text.as_str(), |(severity, rest)| match severity {
                "ERROR" | "FATAL" | "PANIC" => rest,
                _ => text.as_str(),
            });
        if text != "db error" && !last.contains(bare) && !out.contains(bare) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    if out.contains("connection closed")
        && let Some(why) = connection_end_awaited()
        && !out.contains(&why)
    {
        out.push_str("\n  caused by: the server ended the session: ");
        out.push_str(&why);
    }
    without_row_values(&out)
}

/// What the server last said as it closed one of the process's connections
/// (`FATAL: terminating connection due to idle-in-transaction timeout`, an
/// administrator's command, a shutdown): the client's own error says only
/// "connection closed", so [`report`] adds it.
static CONNECTION_END: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Records why the server closed a connection (see [`CONNECTION_END`]).
pub fn note_connection_end(why: String) {
    if let Ok(mut slot) = CONNECTION_END.lock() {
        *slot = Some(why);
    }
}

fn connection_end() -> Option<String> {
    CONNECTION_END.lock().ok().and_then(|slot| slot.clone())
}

/// [`connection_end`], given the connection's task a moment to record it: the
/// client sees its channel closed as soon as the connection ends, a little
/// before the task that owned it has noted what the server said (on a busy
/// machine, after the error was reported without it).
fn connection_end_awaited() -> Option<String> {
    for _ in 0..20 {
        if let Some(why) = connection_end() {
            return Some(why);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    connection_end()
}

/// `text` without the values of a delivered row a server's DETAIL quotes
/// ("Failing row contains (…)", "Key (id)=(…) already exists"): rows may hold
/// personal data, and a message goes to logs, the ledger, status, `--json`
/// and the report. The constraint and the columns stay; the rows themselves
/// are for `pipeline quarantine` and the tables.
pub fn without_row_values(text: &str) -> String {
    static FAILING: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"Failing row contains \(.*").expect("a valid pattern")
    });
    static KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"Key \(([^)]*)\)=\((?:[^()\n]|\([^()\n]*\))*\)")
            .expect("a valid pattern")
    });
    let text = FAILING.replace_all(text, "Failing row contains (values not shown)");
    KEY.replace_all(&text, "Key ($1)=(values not shown)")
        .into_owned()
}

/// [`report`] on one line (causes joined by `: `), for a log field or a
/// stage's detail.
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    report(err).replace("\n  caused by: ", ": ")
}

/// `text` up to a backtrace some libraries put in their messages (delta's
/// kernel errors: `Json error: … 0: buoyant_kernel::error::…`): frames are
/// for the library's developers, not in an operator's message.
pub fn without_backtrace(text: &str) -> &str {
    static FRAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(\n|\s{2,})\s*0: [A-Za-z_<]").expect("a valid pattern")
    });
    match FRAME.find(text) {
        Some(m) => text[..m.start()].trim_end(),
        None => text,
    }
}

/// The first line of `text`, without a backtrace.
pub fn first_line(text: &str) -> &str {
    without_backtrace(text).lines().next().unwrap_or_default()
}

#[cfg(test)]
mod backtrace_tests {
    use super::*;

    #[test]
    fn backtraces_are_cut_from_messages() {
        let kernel = "Kernel error: Json error: Truncated record whilst reading object    0: buoyant_kernel::error::Error::with_backtrace    1: <buoyant_kernel::error::Error as core::convert::From>::from";
        assert_eq!(
            without_backtrace(kernel),
            "Kernel error: Json error: Truncated record whilst reading object"
        );
        assert_eq!(
            without_backtrace("a\n   0: std::rt::lang_start\n   1: main"),
            "a"
        );
        assert_eq!(without_backtrace("rows 0: none"), "rows 0: none");
        assert_eq!(first_line("one\ntwo"), "one");
    }

    #[test]
    fn a_delivered_rows_values_never_reach_a_message() {
        let check = "ERROR: new row for relation \"sales_p\" violates check constraint \"amount_positive\"\nDETAIL: Failing row contains (7, Jane Doe, -5.00, 2025-06).";
        let out = without_row_values(check);
        assert!(
            out.contains("amount_positive") && out.contains("values not shown"),
            "{out}"
        );
        assert!(!out.contains("Jane"), "{out}");
        let key = "DETAIL: Key (email, name)=(jane@example.org, Doe (Jane)) already exists.";
        assert_eq!(
            without_row_values(key),
            "DETAIL: Key (email, name)=(values not shown) already exists."
        );
        assert_eq!(without_row_values("no detail"), "no detail");
    }

    #[test]
    fn one_line_keeps_the_cause_a_wrapper_hides() {
        #[derive(Debug, thiserror::Error)]
        #[error("db error")]
        struct Wrapper(#[source] std::io::Error);
        let e = datafusion::error::DataFusionError::External(Box::new(Wrapper(
            std::io::Error::other("ERROR: canceling statement due to statement timeout"),
        )));
        assert_eq!(
            one_line(&e),
            "External error: db error: ERROR: canceling statement due to statement timeout"
        );
    }
}
