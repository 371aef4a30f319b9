//! Progress of a run: indicatif bars on a terminal, plain timestamped lines elsewhere (CI),
//! or only `tracing` events when quiet (a library user's tests, where bars would draw over
//! the test harness's output).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where a run reports its phases; see the module docs.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Lines go to `tracing` only; no bar, nothing on stderr.
    quiet: bool,
    started: Instant,
    last_line: Option<Instant>,
    last_text: String,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new() -> Self {
        Progress {
            bar: None,
            quiet: false,
            started: Instant::now(),
            last_line: None,
            last_text: String::new(),
        }
        .with_terminal(std::io::stderr().is_terminal())
    }

    /// No bar and nothing on stderr: lines become `tracing` info events (target
    /// `peerlab::progress`), for runs inside a user's tests.
    pub fn quiet() -> Self {
        Progress {
            bar: None,
            quiet: true,
            started: Instant::now(),
            last_line: None,
            last_text: String::new(),
        }
    }

    fn with_terminal(mut self, terminal: bool) -> Self {
        if terminal {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        }
        self
    }

    /// A new phase with `total` steps (nodes started, nodes ready, ...).
    pub fn phase(&mut self, name: &str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(name.to_string());
            bar.set_length(total);
            bar.set_position(0);
            bar.set_message("");
        }
        self.last_line = None;
        self.last_text.clear();
    }

    /// Progress within the phase; plain mode prints at most one line a second (and on change
    /// of the message), so CI logs stay readable.
    pub fn update(&mut self, position: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message.to_string());
            return;
        }
        if self.quiet {
            return;
        }
        let text = format!("{position} {message}");
        let due = self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due && text != self.last_text {
            self.line(&format!("{message} ({position})"));
            self.last_text = text;
            self.last_line = Some(Instant::now());
        }
    }

    /// A line that stays (above the bar on a terminal).
    pub fn line(&self, text: &str) {
        let stamped = format!("[{:>6.1}s] {text}", self.started.elapsed().as_secs_f64());
        if self.quiet {
            tracing::info!(target: "peerlab::progress", "{stamped}");
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(stamped),
            None => eprintln!("{stamped}"),
        }
    }

    /// Clears the bar (lines printed above it stay).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
