//! What people watching an import see: a bar on a terminal, a log line
//! every few seconds otherwise, so a run under a systemd timer still shows
//! it is moving without a line for every page.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use crate::event::Kind;
use crate::store::import::Counts;

/// How often progress is logged when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What people watching see: a bar on a terminal, a log line every few
/// seconds otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
}

impl Progress {
    pub(super) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            last_log: Instant::now(),
        }
    }

    pub(super) fn expect(&self, kind: Kind, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(kind.name());
        }
    }

    pub(super) fn show(&mut self, kind: Kind, counts: &Counts) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(kind.name());
                bar.set_position(counts.listed);
            }
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(
                    kind = kind.name(),
                    listed = counts.listed,
                    inserted = counts.inserted,
                    updated = counts.updated,
                    "import progress"
                );
            }
            None => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
