//! The rolling switch: one node at a time, stop → edit → start → rejoin over TLS → verify, with a
//! journal entry before every side effect. Each step is chosen from what the node really is (its
//! file and what it runs), so a resumed run continues correctly whatever the journal last said.

use crate::atomic_file::sha256_hex;
use crate::cluster::Cluster;
use crate::error::{Error, Message, Result};
pub use crate::event::NodeSummary;
use crate::event::{Event, NodeActivity, Note, Reporter};
use crate::failpoint::failpoint;
use crate::journal::{Journal, JournalStore, NodeRecord, Phase, Step};
use crate::observe::{Running, Via, describe_links};
use crate::plan::{Batch, OnFailure, Plan};
use crate::probe::NodeInfo;
use crate::progress::Progress;
use crate::roll::{RejoinGate, Roll};
use crate::stage::{RollState, Stage};
use crate::target::{FileState, NodeTarget};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use decide::{
    Action, BackwardAction, Direction, ForwardAction, backward_action, decide, forward_action,
};

mod batches;
mod decide;
mod drive;
mod failure;
mod files;
mod gates;
mod hooks;
mod links;
mod seal;
mod start;
mod stop;

const POLL: Duration = Duration::from_millis(100);
/// How often a node that has not rejoined yet is told again to dial its peers.
const KICK_EVERY: Duration = Duration::from_secs(2);
/// Each action changes the node's observed state; more rounds than this means something fights back.
const MAX_ROUNDS: usize = 16;
/// Pause between two early ctl pings of a node that is still booting (each is a VM boot).
const EARLY_PING_RETRY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Options {
    pub on_failure: OnFailure,
    /// `--pause-after N`: the canary. Shared by the rolls of one run.
    pub pause_after: Option<Canary>,
    /// `--batch` or the plan's `batch`: how many nodes a roll toward TLS restarts at once.
    pub batch: Batch,
    /// `--json`: the run's events go to this stream instead of the progress display.
    pub json: Option<Arc<crate::json_report::JsonReporter>>,
}

impl Options {
    pub fn on_failure(on_failure: OnFailure) -> Self {
        Options {
            on_failure,
            pause_after: None,
            batch: Batch::One,
            json: None,
        }
    }

    /// The reporter of a roll titled `title` over `nodes` nodes.
    fn reporter(&self, nodes: usize, title: &str) -> Arc<dyn Reporter> {
        match &self.json {
            Some(json) => json.clone(),
            None => Arc::new(Progress::new(nodes, title)),
        }
    }
}

/// Stop at a safe point once this many nodes were restarted by this invocation, if any node of
/// the roll is left (the journal says `paused`; rerunning `migrate` goes on). A roll at run time
/// (the seal) restarts nothing and never pauses.
#[derive(Debug, Clone)]
pub struct Canary {
    pub nodes: usize,
    restarted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Canary {
    pub fn after(nodes: usize) -> Self {
        Canary {
            nodes,
            restarted: Arc::default(),
        }
    }

    /// How many nodes it still lets restart.
    fn left(&self) -> usize {
        self.nodes
            .saturating_sub(self.restarted.load(Ordering::SeqCst))
    }

    /// Counts one more node done; whether that makes `nodes`.
    fn node_done(&self) -> bool {
        self.restarted.fetch_add(1, Ordering::SeqCst) + 1 == self.nodes
    }
}

/// A step that failed on one node; the caller decides between rollback and pause.
struct StepFailure {
    node: usize,
    message: String,
}

type StepResult<T = ()> = std::result::Result<T, Failure>;

/// Inside a roll, errors are either a failed step (policy applies) or a hard stop (interrupt, I/O).
enum Failure {
    Step(StepFailure),
    Fatal(Error),
}

impl Failure {
    /// Losing the way to a node (SSH dropped, probe VM gone) mid-step fails that node's step, so
    /// the failure policy applies, rather than ending the run as an internal error.
    fn on_node(self, node: usize) -> Failure {
        match self {
            Failure::Fatal(e @ (Error::Probe(_) | Error::Transport(_) | Error::Ssh(_))) => {
                Failure::Step(StepFailure {
                    node,
                    message: e.to_string(),
                })
            }
            other => other,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

impl From<crate::journal::JournalError> for Failure {
    fn from(e: crate::journal::JournalError) -> Self {
        Failure::Fatal(e.into())
    }
}

impl From<crate::probe::ProbeError> for Failure {
    fn from(e: crate::probe::ProbeError) -> Self {
        Failure::Fatal(e.into())
    }
}

impl From<crate::transport::TransportError> for Failure {
    fn from(e: crate::transport::TransportError) -> Self {
        Failure::Fatal(e.into())
    }
}

/// A node's command, run to its end (whatever its exit status), or why it could not run.
type CommandResult =
    std::result::Result<crate::transport::CommandOutcome, crate::transport::TransportError>;

/// Why a node's command failed (its exit status and the tail of its output, or the transport's
/// error); None when it exited 0.
fn command_failure(command: &str, outcome: &CommandResult) -> Option<String> {
    match outcome {
        Ok(out) if out.success() => None,
        Ok(out) => Some(format!(
            "`{command}` exited with {:?}: {}",
            out.status,
            out.tail()
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// The ctl pings of sealed nodes under way: (node index, why it failed).
type CtlPings = tokio::task::JoinSet<(usize, Option<String>)>;

pub struct Rollout<'a> {
    plan: &'a Plan,
    targets: Vec<NodeTarget>,
    store: JournalStore,
    journal: Journal,
    /// Where each node's commands run and its files are, and how the nodes are seen.
    cluster: Cluster,
    /// Whether this roll stops its observer at its end (not when the caller shares it, as a
    /// zero-split run does across its rolls).
    owns_observer: bool,
    /// Where the engine's events go (the progress display, unless told otherwise).
    reporter: Arc<dyn Reporter>,
    interrupted: Arc<AtomicBool>,
    options: Options,
    timings: Vec<Option<Duration>>,
    /// One per node started and not verified yet (a batch starts several at once).
    early_pings: Vec<EarlyPing>,
    /// The canary's pause was reached: the roll stopped at a safe point, the journal says so.
    paused: bool,
    /// Which roll this is: the classic roll, or one of a zero-split run (its `from` plays
    /// plain's part, its `to` TLS's).
    roll: Roll,
}

/// The node's own ctl ping, retried from the moment its start command returns, so that the
/// control VM boots while the node is still booting instead of after it (one VM boot per node
/// saved from the critical path).
struct EarlyPing {
    node: usize,
    task: tokio::task::JoinHandle<std::result::Result<(), String>>,
}

impl Drop for EarlyPing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<'a> Rollout<'a> {
    pub fn new(
        plan: &'a Plan,
        targets: Vec<NodeTarget>,
        store: JournalStore,
        journal: Journal,
        options: Options,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self> {
        let cluster = Cluster::of_targets(&targets)?;
        let reporter = options.reporter(targets.len(), &plan.cluster);
        let timings = vec![None; targets.len()];
        Ok(Rollout {
            plan,
            targets,
            store,
            journal,
            cluster,
            owns_observer: true,
            reporter,
            interrupted,
            options,
            timings,
            early_pings: Vec::new(),
            paused: false,
            roll: Roll::Classic,
        })
    }

    /// Makes this one roll of a zero-split run: `targets` carry the roll's `from` text as their
    /// original and its `to` text as their TLS text.
    pub fn for_zero_split_roll(mut self, roll: RollState) -> Self {
        self.roll = Roll::Stages(roll);
        let title = self.roll.title(&self.plan.cluster);
        self.reporter = self.options.reporter(self.targets.len(), &title);
        self
    }

    /// Reach the nodes through `cluster`, whose observer outlives this roll (the caller shuts it
    /// down): the rolls of one zero-split run share their probe VMs instead of booting new ones
    /// per roll, and engine tests drive an in-memory cluster.
    pub fn on_cluster(mut self, cluster: Cluster) -> Self {
        assert_eq!(cluster.hosts.len(), self.targets.len(), "one host per node");
        self.cluster = cluster;
        self.owns_observer = false;
        self
    }

    async fn release_probes(&self) {
        if self.owns_observer {
            self.cluster.observer.shutdown().await;
        }
    }

    /// Send this roll's events to `reporter` instead of the progress display.
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// A note for the operator (a phase change).
    pub fn note(&self, note: Note) {
        self.reporter.report(Event::Note { note });
    }

    fn report_node(&self, index: usize, activity: NodeActivity) {
        self.reporter.report(Event::Node {
            index,
            name: self.name(index).to_string(),
            activity,
        });
    }

    /// The journal and its store back, for the next roll.
    pub fn into_parts(self) -> (JournalStore, Journal) {
        (self.store, self.journal)
    }

    /// What the node runs, in this roll's terms: `Plain` is where the roll starts, `Tls` where
    /// it goes.
    fn running(&self, info: &NodeInfo) -> Running {
        self.roll.running(info)
    }

    fn label_of(&self, running: Running) -> &'static str {
        self.roll.label(running)
    }

    /// The transport links have among nodes that all run `running` (plain or TLS side of the roll).
    fn links_tls(&self, running: Running) -> bool {
        self.roll.links_tls(running)
    }

    pub fn new_journal(plan: &Plan, targets: &[NodeTarget]) -> Journal {
        let nodes = targets
            .iter()
            .map(|t| NodeRecord {
                name: t.name().to_string(),
                vm_dist_args: t.dist_args.clone(),
                backup: t.backup.clone(),
                original_sha256: t.original_sha256(),
                tls_sha256: t.tls_sha256(),
                step: Step::Pending,
            })
            .collect();
        Journal::new(&plan.cluster, &plan.path, &plan.sha256, nodes)
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Whether the roll stopped after its canary (`--pause-after`) instead of finishing.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Run the roll to the end, resuming whatever the journal says is in progress.
    /// The final table comes back whatever happened, next to the outcome.
    pub async fn migrate(&mut self) -> (Vec<NodeSummary>, Result<()>) {
        let outcome = self.migrate_inner().await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Step(failure)) => Err(self.handle_failure(failure).await),
        };
        self.reporter.report(Event::Finished);
        let summary = self.summary().await;
        self.release_probes().await;
        (summary, result)
    }

    async fn migrate_inner(&mut self) -> StepResult {
        match self.journal.phase {
            Phase::RollingBack => {
                self.note(Note::FinishingInterruptedRollback);
                let last = self.targets.len().saturating_sub(1);
                self.rollback_from(last).await?;
                let cause = self
                    .journal
                    .failure
                    .clone()
                    .unwrap_or_else(|| "unknown".into());
                let now = self.roll.rolled_back_to();
                return Err(Failure::Fatal(Error::StepFailed(Message::from(format!(
                    "finished the interrupted rollback (it began after: {cause}): {now}"
                )))));
            }
            Phase::Completed => {
                self.note(Note::VerifyingCompletedRun);
                return self.final_gate().await;
            }
            Phase::Migrating if self.roll.state().is_none() && self.journal.events.is_empty() => {
                self.require_plain_meshed_cluster().await?
            }
            Phase::Migrating if self.roll.state().is_some_and(|r| !r.started) => {
                self.require_plain_meshed_cluster().await?;
                if let Some(roll) = self.journal.zero_split.as_mut() {
                    roll.started = true;
                }
            }
            Phase::Paused => {
                self.journal.set_phase(Phase::Migrating)?;
                self.journal.failure = None;
                self.journal.record(None, "resumed after pause");
            }
            _ => self.journal.record(None, "resumed"),
        }
        self.store.save(&mut self.journal)?;
        let at_run_time = self.roll.at_run_time();
        let mut ctl_pings = CtlPings::new();
        let mut first = 0;
        while first < self.targets.len() {
            let started = Instant::now();
            if first > 0 {
                self.check_migrated_alive(first, first - 1)
                    .await
                    .map_err(|f| f.on_node(first - 1))?;
            }
            let members = self.batch_from(first);
            let was_done: Vec<bool> = members
                .iter()
                .map(|&m| self.step_of(m) == Step::Verified)
                .collect();
            let taken = if members.len() == 1 {
                self.drive_node(first, Direction::Forward)
                    .await
                    .map_err(|f| f.on_node(first))?;
                members
            } else {
                self.drive_batch(&members).await?
            };
            let canary_done = self.batch_done(&taken, &was_done, started, &mut ctl_pings);
            first += taken.len();
            // The pause needs a node left after it.
            if canary_done && first < self.targets.len() {
                return self.pause_after_canary(first);
            }
        }
        if at_run_time {
            self.every_ctl_reaches_its_node(ctl_pings).await?;
        }
        self.final_gate().await
    }

    /// The canary's nodes are done: stop here, the journal `paused` (rerunning `migrate` goes on).
    fn pause_after_canary(&mut self, next: usize) -> StepResult {
        let nodes = self.options.pause_after.as_ref().map_or(0, |c| c.nodes);
        self.journal.set_phase(Phase::Paused)?;
        let what = format!("paused after {nodes} node(s) (--pause-after {nodes})");
        self.journal.record(None, &what);
        self.store.save(&mut self.journal)?;
        self.note(Note::PausedAfterCanary {
            nodes,
            next: self.name(next).to_string(),
        });
        self.paused = true;
        Ok(())
    }

    fn name(&self, index: usize) -> &str {
        self.targets[index].name()
    }

    /// vm.dist.args, or the flavor's flags file (ejabberdctl.cfg, rabbitmq-env.conf, vm.args).
    fn file_label(&self, index: usize) -> &'static str {
        self.targets[index].spec.flavor.file_label()
    }

    fn step_of(&self, index: usize) -> Step {
        self.journal
            .node(self.name(index))
            .map_or(Step::Pending, |r| r.step)
    }

    fn mark(&mut self, index: usize, step: Step) -> StepResult {
        let name = self.name(index).to_string();
        // "before": the side effect this step records has happened, the journal does not know yet.
        let point = self.roll.failpoint(&name, step.label());
        failpoint(&format!("{point}:before"));
        self.journal.set_step(&name, step)?;
        self.store.save(&mut self.journal)?;
        failpoint(&point);
        Ok(())
    }

    fn check_interrupt(&self) -> StepResult {
        self.interruption().map_err(Failure::Fatal)
    }

    fn interruption(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Error::Interrupted(
                Message::new(format!(
                    "interrupted: stopped at a safe point, journal {} is consistent",
                    self.store.journal_path().display()
                ))
                .hint("rerun the same command to resume"),
            ));
        }
        Ok(())
    }

    /// Waiting is a safe point: Ctrl-C during a long wait stops there, not at the deadline.
    async fn pause_between_polls(&self) -> Result<()> {
        self.interruption()?;
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    async fn summary(&self) -> Vec<NodeSummary> {
        let mut rows = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            let info = self.observe(index).await.unwrap_or(NodeInfo::Down {
                reason: "probe failed".into(),
                asked: None,
            });
            rows.push(NodeSummary {
                name: target.name().to_string(),
                runs: self.label_of(self.running(&info)),
                links: describe_links(&info),
                took: self.timings[index],
            });
        }
        rows
    }
}
