//! The human reporter: what the operator sees while a roll runs, an indicatif bar on a terminal,
//! plain timestamped lines otherwise (CI logs, `| tee`). Logs from `tracing` go to stderr
//! separately.
//!
//! The engine emits [`Event`]s; the words the operator reads are chosen here, in one place (a
//! machine-readable reporter takes the same events).

use crate::event::{Event, NodeActivity, Note, Reporter};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

impl NodeActivity {
    pub fn text(&self) -> String {
        match self {
            NodeActivity::Stopping => "stopping".into(),
            NodeActivity::EnablingTls { file } => format!("enabling TLS in {file}"),
            NodeActivity::SwitchingFile { file, to } => format!("switching {file} to {to}"),
            NodeActivity::RestoringFile {
                file,
                back_to: Some(stage),
            } => format!("switching {file} back to {stage}"),
            NodeActivity::RestoringFile {
                file,
                back_to: None,
            } => format!("restoring the original {file}"),
            NodeActivity::Starting { runs } => format!("starting ({runs})"),
            NodeActivity::AwaitingTlsLinks => "waiting for TLS links to the migrated nodes".into(),
            NodeActivity::AwaitingFullMesh => "waiting until it is linked to every node".into(),
            NodeActivity::AwaitingPlainLinks => "waiting for plain links".into(),
            NodeActivity::Sealing => "sealing: TLS only from now on (no restart)".into(),
            NodeActivity::Unsealing => "unsealing: plain TCP accepted again (no restart)".into(),
            NodeActivity::CheckingCtl => "checking that its ctl reaches it".into(),
            NodeActivity::AwaitingReady => "waiting until it reports ready".into(),
            NodeActivity::AwaitingBeforeStop => {
                "waiting for its before_stop gate (commands.before_stop)".into()
            }
            NodeActivity::AwaitingAfterStart => {
                "waiting for its after_start gate (commands.after_start)".into()
            }
        }
    }
}

impl Note {
    pub fn text(&self) -> String {
        match self {
            Note::RollBegins { roll } => format!("roll {roll}"),
            Note::FinishingInterruptedRollback => {
                "an interrupted rollback is in the journal: finishing it first".into()
            }
            Note::VerifyingCompletedRun => {
                "the journal says this migration completed; verifying the cluster".into()
            }
            Note::StepFailed { message } => format!("error: {message}"),
            Note::RollingBack { back_to } => {
                format!("rolling back: every touched node returns to {back_to}, newest first")
            }
            Note::StoppedDespiteItsCommand { node, said } => {
                format!("warning: {node}: {said} (the node stopped anyway)")
            }
            Note::AskingVmToStop { node, halt } => format!(
                "{node}: its stop command failed and it still runs; asking the VM to stop ({})",
                if *halt {
                    "erlang:halt()"
                } else {
                    "init:stop()"
                }
            ),
            Note::Signalling {
                node,
                what,
                stop_said,
            } => match stop_said {
                Some(said) => format!("warning: {node}: {what} (the stop command: {said})"),
                None => format!("warning: {node}: {what}"),
            },
            Note::ForceStopped { node, what } => format!("{node}: {what}"),
            Note::PausedAfterCanary { nodes, next } => format!(
                "paused after {nodes} node(s) (--pause-after): {next} and the nodes after it are untouched"
            ),
        }
    }
}

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

    /// What a node is doing now: `node 2/3 mim2@db1: stopping`.
    pub fn node(&self, index: usize, node: &str, activity: NodeActivity) {
        let text = format!(
            "node {}/{} {node}: {}",
            index + 1,
            self.total,
            activity.text()
        );
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

impl Reporter for Progress {
    fn report(&self, event: Event) {
        match event {
            Event::Node {
                index,
                name,
                activity,
            } => self.node(index, &name, activity),
            Event::NodeDone { index, .. } => self.node_done(index),
            Event::Note { note } => self.note(&note.text()),
            Event::Finished => self.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are part of what operators (and their log scrapers) rely on.
    #[test]
    fn every_activity_reads_as_before() {
        let file = || "vm.dist.args".to_string();
        let cases = [
            (NodeActivity::Stopping, "stopping"),
            (
                NodeActivity::EnablingTls { file: file() },
                "enabling TLS in vm.dist.args",
            ),
            (
                NodeActivity::SwitchingFile {
                    file: file(),
                    to: "tls".into(),
                },
                "switching vm.dist.args to tls",
            ),
            (
                NodeActivity::RestoringFile {
                    file: file(),
                    back_to: Some("plain tcp".into()),
                },
                "switching vm.dist.args back to plain tcp",
            ),
            (
                NodeActivity::RestoringFile {
                    file: file(),
                    back_to: None,
                },
                "restoring the original vm.dist.args",
            ),
            (
                NodeActivity::Starting { runs: "tls".into() },
                "starting (tls)",
            ),
            (
                NodeActivity::AwaitingTlsLinks,
                "waiting for TLS links to the migrated nodes",
            ),
            (
                NodeActivity::AwaitingFullMesh,
                "waiting until it is linked to every node",
            ),
            (NodeActivity::AwaitingPlainLinks, "waiting for plain links"),
            (
                NodeActivity::Sealing,
                "sealing: TLS only from now on (no restart)",
            ),
            (
                NodeActivity::Unsealing,
                "unsealing: plain TCP accepted again (no restart)",
            ),
            (
                NodeActivity::CheckingCtl,
                "checking that its ctl reaches it",
            ),
            (
                NodeActivity::AwaitingReady,
                "waiting until it reports ready",
            ),
        ];
        for (activity, text) in cases {
            assert_eq!(activity.text(), text);
        }
    }
}
