//! What the operator sees while a roll runs: an indicatif bar on a terminal, plain timestamped
//! lines otherwise (CI logs, `| tee`). Logs from `tracing` go to stderr separately.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    total: usize,
}

impl Progress {
    pub fn new(total: usize, title: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{elapsed_precise}] {bar:24.cyan/blue} {pos}/{len} {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(title.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            total,
        }
    }

    /// A node's current step: `node 2/3 mim2@db1: stopping`.
    pub fn step(&self, index: usize, node: &str, what: &str) {
        let text = format!("node {}/{} {node}: {what}", index + 1, self.total);
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => self.line(&text),
        }
    }

    pub fn node_done(&self, index: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(index as u64 + 1);
        }
    }

    /// A line that must stay visible (a warning, a phase change).
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => self.line(text),
        }
    }

    fn line(&self, text: &str) {
        eprintln!("[{:>7.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
