//! Progress on a terminal: one spinner per stage of `pipeline run`, with the time
//! spent; nothing when stderr is not a terminal or logs are JSON.
//!
//! Log lines are written through [`Writer`], which hides the spinners while a
//! line is printed so the two never garble each other.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();

/// Decides once whether progress is drawn: `on` when logs are pretty lines on
/// a terminal (logging decides).
pub fn init(on: bool) {
    let _ = BARS.set(on.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())));
}

fn bars() -> Option<&'static MultiProgress> {
    BARS.get().and_then(Option::as_ref)
}

/// A spinner for one piece of work; a no-op when progress is off.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn start(message: String) -> Spinner {
        Spinner(bars().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            bar.set_message(message);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }))
    }

    /// Replaces the spinner with a one-line verdict printed above the live
    /// spinners, where it stays: a finished bar left inside the group would be
    /// wiped by the next log line.
    pub fn finish(self, verdict: &str) {
        if let (Some(bar), Some(m)) = (self.0, bars()) {
            let message = bar.message();
            bar.finish_and_clear();
            m.remove(&bar);
            // Written with its line end while the spinners are hidden, like a
            // log line: MultiProgress::println drew it as the last line with
            // no line end when no spinner was left, so the next log line was
            // glued to it.
            m.suspend(|| {
                // A failed write to the terminal has nowhere to be reported.
                let _ = writeln!(std::io::stderr(), "{verdict} {message}");
            });
        }
    }
}

/// stderr for log lines, suspending the spinners while a line is written.
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bars() {
            Some(m) => m.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
