//! Progress reporting: an indicatif bar on a terminal, nothing elsewhere.
//!
//! Pipeline threads only bump counters; the bar's own thread redraws at a steady rate, so a
//! million small files cost a million atomic adds and no terminal writes.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress sink shared by the pipeline threads.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No output at all.
    pub fn hidden() -> Self {
        Progress { bar: None }
    }

    /// A byte bar on stderr when stderr is a terminal, otherwise hidden.
    pub fn bytes_bar(verb: &str) -> Self {
        let target = ProgressDrawTarget::stderr_with_hz(5);
        if target.is_hidden() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{verb} {{bytes}}/{{total_bytes}} {{msg}} [{{bar:30}}] {{binary_bytes_per_sec}} ETA {{eta}}"
            ))
            .expect("invariant: progress template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// True when something is drawn (callers skip work that only feeds the bar).
    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn inc_total(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(bytes);
        }
    }

    pub fn inc(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
