//! Progress reporting: an indicatif bar on a terminal, nothing elsewhere.
//!
//! Pipeline threads only bump counters; the bar's own thread redraws at a steady rate, so a
//! million small files cost a million atomic adds and no terminal writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress sink shared by the pipeline threads.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    files: Arc<AtomicU64>,
}

impl Progress {
    /// No output at all.
    pub fn hidden() -> Self {
        Progress {
            bar: None,
            files: Arc::default(),
        }
    }

    /// A byte bar on stderr when stderr is a terminal, otherwise hidden.
    pub fn bytes_bar(verb: &str) -> Self {
        let target = ProgressDrawTarget::stderr_with_hz(5);
        if target.is_hidden() {
            return Self::hidden();
        }
        let files: Arc<AtomicU64> = Arc::default();
        let counted = files.clone();
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{verb} {{bytes}}/{{total_bytes}} {{files}} files [{{bar:30}}] {{binary_bytes_per_sec}} ETA {{eta}} {{msg}}"
            ))
            .expect("invariant: progress template is valid")
            .with_key("files", move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", counted.load(Ordering::Relaxed));
            })
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar: Some(bar),
            files,
        }
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

    /// Counts one more file done.
    pub fn inc_file(&self) {
        if self.bar.is_some() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
