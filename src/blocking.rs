//! Blocking work (file-system calls, hashing, unzipping) runs here, off the
//! async runtime's threads, so one slow disk or large digest never stalls the
//! database connections and streams that share those threads.

/// Runs `f` on tokio's blocking pool and returns its result; a panic in `f`
/// continues in the caller.
pub async fn run<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task did not finish: {e}"),
    }
}
