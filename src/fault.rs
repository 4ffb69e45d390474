//! Crash points for tests of the seams between commits: when the environment
//! variable `PIPELINE_FAULT` names a point, the process aborts there, as a
//! `kill -9` would stop it (no destructors, no cleanup, nothing flushed).
//! Unset in production; the names are listed in documentation/development.md.

/// Aborts the process if `PIPELINE_FAULT` is `name`.
pub fn point(name: &str) {
    if std::env::var("PIPELINE_FAULT").is_ok_and(|v| v == name) {
        eprintln!("PIPELINE_FAULT: aborting at {name}");
        std::process::abort();
    }
}
