//! The rolling switch: one node at a time, stop → edit → start → rejoin over TLS → verify, with a
//! journal entry before every side effect. Each step is chosen from what the node really is (its
//! file and what it runs), so a resumed run continues correctly whatever the journal last said.

use crate::atomic_file::sha256_hex;
use crate::cluster::Cluster;
use crate::error::{Error, Message, Result};
use crate::failpoint::failpoint;
use crate::journal::{Journal, JournalStore, NodeRecord, Phase, Step};
use crate::observe::{Running, Via, describe_links};
use crate::plan::{OnFailure, Plan};
use crate::probe::NodeInfo;
use crate::progress::{NodeActivity, Progress};
use crate::stage::{RollPath, RollState, Stage};
use crate::target::{FileState, NodeTarget};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);
/// How often a node that has not rejoined yet is told again to dial its peers.
const KICK_EVERY: Duration = Duration::from_secs(2);
/// Each action changes the node's observed state; more rounds than this means something fights back.
const MAX_ROUNDS: usize = 16;
/// Pause between two early ctl pings of a node that is still booting (each is a VM boot).
const EARLY_PING_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct Options {
    pub on_failure: OnFailure,
}

const UNREACHABLE: &str = "its VM runs (it is registered with epmd) but answers neither over plain TCP nor over TLS; check its log, then stop or fix it by hand";

/// What to do next for a node on its way to TLS, given its file and what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAction {
    Stop,
    Edit,
    Start,
    AwaitRejoin,
    Verify,
    Done,
    /// The node runs plain but its file already says TLS (edited by hand while running): put the
    /// original back so its ctl can reach it again, then carry on.
    RestoreFile,
}

pub fn forward_action(
    file: FileState,
    running: Running,
    step: Step,
) -> std::result::Result<ForwardAction, String> {
    use ForwardAction::*;
    match (file, running) {
        (FileState::Original, Running::Plain) => Ok(Stop),
        (FileState::Original, Running::Down) => Ok(Edit),
        (FileState::Tls, Running::Down) => Ok(Start),
        (FileState::Tls, Running::Tls) if step.before_rejoin() => Ok(AwaitRejoin),
        (FileState::Tls, Running::Tls) if step == Step::Rejoined => Ok(Verify),
        (FileState::Tls, Running::Tls) => Ok(Done),
        (FileState::Tls, Running::Plain) => Ok(RestoreFile),
        // Still booting after a start, or up with something its peers reject: the start step
        // waits for it, and fails (policy applies) if it never answers.
        (FileState::Tls, Running::Unreachable) => Ok(Start),
        (FileState::Original, Running::Unreachable) => Err(UNREACHABLE.into()),
        (FileState::Original, Running::Tls) => Err(
            "it runs TLS but its vm.dist.args is the plain original; its ctl cannot reach it"
                .into(),
        ),
        (FileState::Foreign, _) => Err("its vm.dist.args was changed outside distls".into()),
        (_, Running::Other) => Err(OTHER_STAGE.into()),
    }
}

const OTHER_STAGE: &str = "it runs a distribution configuration that is neither where this roll starts nor where it goes (zero-split); check `distls status`";

/// What to do next for a node on its way back to plain TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardAction {
    Stop,
    RestoreFile,
    Start,
    AwaitRejoin,
}

pub fn backward_action(
    file: FileState,
    running: Running,
) -> std::result::Result<BackwardAction, String> {
    match (file, running) {
        (FileState::Tls, Running::Tls | Running::Unreachable) => Ok(BackwardAction::Stop),
        (FileState::Original, Running::Unreachable) => Err(UNREACHABLE.into()),
        (FileState::Tls, _) => Ok(BackwardAction::RestoreFile),
        (FileState::Original, Running::Down) => Ok(BackwardAction::Start),
        (FileState::Original, Running::Plain) => Ok(BackwardAction::AwaitRejoin),
        (FileState::Original, Running::Tls) => Err(
            "it runs TLS but its vm.dist.args is the plain original; stop it by hand (its ctl cannot reach it)".into(),
        ),
        (FileState::Foreign, _) => Err("its vm.dist.args was changed outside distls".into()),
        (_, Running::Other) => Err(OTHER_STAGE.into()),
    }
}

/// Which way the per-node driver takes a node: toward the roll's `to` stage, or back to `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// The next action of the per-node driver, either way; each carries the journal steps and the
/// protocol that differ between the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop { intent: Step },
    Edit,
    RestoreFile { done: Step },
    Start { intent: Step, expect: Running },
    AwaitRejoin,
    Verify,
    Done,
}

/// What to do next for a node (a pure function of its file, what it runs and its journal
/// step); an error for a combination distls must not act on.
pub fn decide(
    direction: Direction,
    file: FileState,
    running: Running,
    step: Step,
) -> std::result::Result<Action, String> {
    Ok(match direction {
        Direction::Forward => match forward_action(file, running, step)? {
            ForwardAction::Stop => Action::Stop {
                intent: Step::Stopping,
            },
            ForwardAction::Edit => Action::Edit,
            ForwardAction::Start => Action::Start {
                intent: Step::Starting,
                expect: Running::Tls,
            },
            ForwardAction::AwaitRejoin => Action::AwaitRejoin,
            ForwardAction::Verify => Action::Verify,
            ForwardAction::Done => Action::Done,
            ForwardAction::RestoreFile => Action::RestoreFile {
                done: Step::Pending,
            },
        },
        Direction::Backward => match backward_action(file, running)? {
            BackwardAction::Stop => Action::Stop {
                intent: Step::RevertStopping,
            },
            BackwardAction::RestoreFile => Action::RestoreFile {
                done: Step::Stopped,
            },
            BackwardAction::Start => Action::Start {
                intent: Step::RevertStarting,
                expect: Running::Plain,
            },
            BackwardAction::AwaitRejoin => Action::AwaitRejoin,
        },
    })
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

/// Why a node's command failed (its exit status and the tail of its output, or the transport's
/// error); None when it exited 0.
fn command_failure(
    command: &str,
    outcome: &std::result::Result<
        crate::transport::CommandOutcome,
        crate::transport::TransportError,
    >,
) -> Option<String> {
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
    progress: Progress,
    interrupted: Arc<AtomicBool>,
    options: Options,
    timings: Vec<Option<Duration>>,
    early_ping: Option<EarlyPing>,
    /// Zero-split: the roll this is (its `from` plays plain's part, its `to` TLS's). None: the
    /// classic roll, plain TCP to TLS.
    roll: Option<RollState>,
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

/// One line of the final table.
pub struct NodeSummary {
    pub name: String,
    /// What it runs, e.g. `tls` (zero-split: the stage).
    pub runs: &'static str,
    pub links: String,
    pub took: Option<Duration>,
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
        let progress = Progress::new(targets.len(), &plan.cluster);
        let timings = vec![None; targets.len()];
        Ok(Rollout {
            plan,
            targets,
            store,
            journal,
            cluster,
            owns_observer: true,
            progress,
            interrupted,
            options,
            timings,
            early_ping: None,
            roll: None,
        })
    }

    /// Makes this one roll of a zero-split run: `targets` carry the roll's `from` text as their
    /// original and its `to` text as their TLS text.
    pub fn for_zero_split_roll(mut self, roll: RollState) -> Self {
        self.roll = Some(roll);
        let title = format!("{} ({} → {})", self.plan.cluster, roll.from, roll.to);
        self.progress = Progress::new(self.targets.len(), &title);
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

    /// A line for the operator (a phase change).
    pub fn note(&self, text: &str) {
        self.progress.note(text);
    }

    /// The journal and its store back, for the next roll.
    pub fn into_parts(self) -> (JournalStore, Journal) {
        (self.store, self.journal)
    }

    /// What the node runs, in this roll's terms: `Plain` is where the roll starts, `Tls` where
    /// it goes.
    fn running(&self, info: &NodeInfo) -> Running {
        let Some(roll) = self.roll else {
            return Running::of_info(info);
        };
        match info.proto_dist().map(Stage::of_signature) {
            None => Running::of_info(info),
            Some(Some(stage)) if stage == roll.from => Running::Plain,
            Some(Some(stage)) if stage == roll.to => Running::Tls,
            Some(_) => Running::Other,
        }
    }

    fn label_of(&self, running: Running) -> &'static str {
        match (self.roll, running) {
            (Some(roll), Running::Plain) => roll.from.label(),
            (Some(roll), Running::Tls) => roll.to.label(),
            _ => running.label(),
        }
    }

    /// The transport links have among nodes that all run `running` (plain or TLS side of the roll).
    fn links_tls(&self, running: Running) -> bool {
        match (self.roll, running) {
            (Some(roll), Running::Plain) => roll.from.links_tls(),
            (Some(roll), _) => roll.to.links_tls(),
            (None, running) => running == Running::Tls,
        }
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

    /// Run the roll to the end, resuming whatever the journal says is in progress.
    /// The final table comes back whatever happened, next to the outcome.
    pub async fn migrate(&mut self) -> (Vec<NodeSummary>, Result<()>) {
        let outcome = self.migrate_inner().await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Step(failure)) => Err(self.handle_failure(failure).await),
        };
        self.progress.finish();
        let summary = self.summary().await;
        self.release_probes().await;
        (summary, result)
    }

    async fn migrate_inner(&mut self) -> StepResult {
        match self.journal.phase {
            Phase::RollingBack => {
                self.progress
                    .note("an interrupted rollback is in the journal: finishing it first");
                let last = self.targets.len().saturating_sub(1);
                self.rollback_from(last).await?;
                let cause = self
                    .journal
                    .failure
                    .clone()
                    .unwrap_or_else(|| "unknown".into());
                let now = match self.roll {
                    Some(roll) => format!("every node runs {} again", roll.from),
                    None => "every node runs plain TCP again; rerun `distls migrate` to try again"
                        .to_string(),
                };
                return Err(Failure::Fatal(Error::StepFailed(Message::from(format!(
                    "finished the interrupted rollback (it began after: {cause}): {now}"
                )))));
            }
            Phase::Completed => {
                self.progress
                    .note("the journal says this migration completed; verifying the cluster");
                return self.final_gate().await;
            }
            Phase::Migrating if self.roll.is_none() && self.journal.events.is_empty() => {
                self.require_plain_meshed_cluster().await?
            }
            Phase::Migrating if self.roll.is_some_and(|r| !r.started) => {
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
        let at_run_time = self.roll.is_some_and(RollState::at_run_time);
        let mut ctl_pings = CtlPings::new();
        for index in 0..self.targets.len() {
            let started = Instant::now();
            if index > 0 {
                self.check_migrated_alive(index, index - 1)
                    .await
                    .map_err(|f| f.on_node(index - 1))?;
            }
            self.drive_node(index, Direction::Forward)
                .await
                .map_err(|f| f.on_node(index))?;
            if at_run_time {
                // Its file is switched: its ctl boots while the next nodes are sealed.
                self.start_ctl_ping(index, &mut ctl_pings);
            }
            self.timings[index] = Some(started.elapsed());
            self.progress.node_done(index);
        }
        if at_run_time {
            self.every_ctl_reaches_its_node(ctl_pings).await?;
        }
        self.final_gate().await
    }

    /// After its seal: the node's own ctl (`commands.ping`, now on the stock TLS text) is run
    /// in the background; [`Self::every_ctl_reaches_its_node`] collects the outcomes.
    fn start_ctl_ping(&self, index: usize, pings: &mut CtlPings) {
        let target = &self.targets[index];
        let Some(ping) = target.spec.commands.ping.clone() else {
            return;
        };
        self.progress
            .node(index, target.name(), NodeActivity::CheckingCtl);
        let (transport, timeout) = (self.cluster.hosts[index].clone(), target.spec.timeouts.ping);
        pings.spawn(async move {
            let failure = command_failure(&ping, &transport.run(&ping, timeout).await);
            (index, failure)
        });
    }

    /// After the seal: every node's own ctl reached it (collects the pings started as each
    /// node's file was switched).
    async fn every_ctl_reaches_its_node(&mut self, mut pings: CtlPings) -> StepResult {
        let mut failed = Vec::new();
        while let Some(joined) = pings.join_next().await {
            if let (index, Some(why)) = joined.expect("ctl ping task") {
                failed.push((index, why));
            }
        }
        failed.sort();
        // Reported against the last node, so that a rollback unseals every node.
        let last = self.targets.len() - 1;
        match failed.into_iter().next() {
            Some((index, why)) => Err(self.step_failed(
                last,
                &format!(
                    "after the seal, the ctl of {} cannot reach it: {why}",
                    self.name(index)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Before the first change: every node runs plain TCP from its original file, in one mesh
    /// (zero-split: every node runs the roll's `from` stage).
    async fn require_plain_meshed_cluster(&mut self) -> StepResult {
        match self.roll {
            Some(roll) => {
                let what = format!("roll {} started", roll.describe());
                self.journal.record(None, &what);
            }
            None => self.journal.record(None, "started"),
        }
        for index in 0..self.targets.len() {
            let file = self.file_state(index).await?;
            let info = self.observe(index).await?;
            let running = self.running(&info);
            if file != FileState::Original || running != Running::Plain {
                return Err(Failure::Fatal(Error::Refused(Message::new(format!("node {} is {} with its vm.dist.args {}; this roll starts from a running {} cluster and changed nothing", self.name(index), self.label_of(running), match file {
                        FileState::Original => "unchanged",
                        FileState::Tls => "already enabling TLS",
                        FileState::Foreign => "changed",
                    }, self.label_of(Running::Plain))).hint("start the node (or fix its file), then rerun"))));
            }
        }
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        let tls = self.links_tls(Running::Plain);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            return Err(Failure::Fatal(Error::Refused(Message::new(format!("the cluster is not fully meshed before the switch ({missing}); distls changed nothing")).hint("fix the cluster first: a roll would hide an existing split"))));
        }
        Ok(())
    }

    /// The per-node driver, both ways: observe the node (its file, what it runs), decide the
    /// next action from that and its journal step ([`decide`], a pure function), act, again
    /// until it is where `direction` leads.
    async fn drive_node(&mut self, index: usize, direction: Direction) -> StepResult {
        if self.roll.is_some_and(RollState::at_run_time) {
            return match direction {
                Direction::Forward => self.seal_node(index).await,
                Direction::Backward => self.unseal_node(index).await,
            };
        }
        for _ in 0..MAX_ROUNDS {
            self.check_interrupt()?;
            let file = self.file_state(index).await?;
            let info = self.observe(index).await?;
            let running = self.running(&info);
            let step = self.step_of(index);
            let action = decide(direction, file, running, step)
                .map_err(|why| self.needs_operator(index, &why))?;
            tracing::debug!(
                node = self.name(index),
                ?direction,
                ?file,
                ?running,
                ?step,
                ?action,
                "next action"
            );
            match action {
                Action::Stop { intent } => self.stop(index, &info, intent, Step::Stopped).await?,
                Action::Edit => self.edit(index).await?,
                Action::RestoreFile { done } => self.restore(index, done).await?,
                Action::Start { intent, expect } => {
                    self.start(index, intent, Step::Started, expect).await?
                }
                Action::AwaitRejoin => match direction {
                    Direction::Forward if self.roll.is_some() => {
                        self.await_full_rejoin(index, Step::Rejoined, false).await?
                    }
                    Direction::Forward => self.await_tls_rejoin(index).await?,
                    // Nodes reverted later in this rollback may be down now (a failed start).
                    Direction::Backward if self.roll.is_some() => {
                        return self.await_full_rejoin(index, Step::Reverted, true).await;
                    }
                    Direction::Backward => return self.await_plain_rejoin(index).await,
                },
                Action::Verify => self.verify(index).await?,
                Action::Done => return Ok(()),
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// Rollback, classic roll: the node's plain peers are the later nodes (never touched, or
    /// already reverted).
    async fn await_plain_rejoin(&mut self, index: usize) -> StepResult {
        let peers: Vec<usize> = (index + 1..self.targets.len()).collect();
        self.progress
            .node(index, self.name(index), NodeActivity::AwaitingPlainLinks);
        let deadline = Instant::now() + self.targets[index].spec.timeouts.rejoin;
        if let Err(missing) = self
            .wait_for_links(index, &peers, false, &[], deadline)
            .await?
        {
            return Err(self.step_failed(
                index,
                &format!("it did not rejoin the plain cluster: {missing}"),
            ));
        }
        self.mark(index, Step::Reverted)
    }

    // ---- steps -------------------------------------------------------------------------------

    /// `seen`: what the node was observed to run just before (its OS pid is taken from it).
    async fn stop(
        &mut self,
        index: usize,
        seen: &NodeInfo,
        intent: Step,
        done: Step,
    ) -> StepResult {
        self.progress
            .node(index, self.name(index), NodeActivity::Stopping);
        // Its OS pid, from the node itself, in case the stop command does not bring it down.
        let os_pid = match *seen {
            NodeInfo::Up { os_pid, .. } => Some(os_pid),
            // No rpc possible: the VM listening on the port epmd gives for it is the node.
            NodeInfo::Unreachable { epmd_port, .. } => {
                self.beam_listening_on(index, epmd_port).await?
            }
            NodeInfo::Down { .. } => None,
        };
        self.mark(index, intent)?;
        let spec = &self.targets[index].spec;
        let (command, timeout) = (spec.commands.stop.clone(), spec.timeouts.stop);
        let deadline = Instant::now() + timeout;
        let outcome = self.cluster.hosts[index].run(&command, timeout).await;
        let said = command_failure(&command, &outcome).unwrap_or_default();
        if !said.is_empty() && self.targets[index].spec.flavor.stops_booting_vm() {
            self.stop_vm_directly(index, deadline).await?;
        }
        if !self.wait_running(index, Running::Down, deadline).await? {
            let Some(os_pid) = os_pid else {
                return Err(self.step_failed(
                    index,
                    &format!("it still runs after its stop command. {said}"),
                ));
            };
            self.force_stop(index, os_pid, &said).await?;
        } else if !said.is_empty() {
            self.progress.note(&format!(
                "warning: {}: {said} (the node stopped anyway)",
                self.name(index)
            ));
        }
        self.mark(index, done)
    }

    /// The stop command did not bring the node down in time: SIGTERM to its OS pid, then SIGKILL
    /// after `timeouts.kill_grace`, the way MongooseIM's `force_stop` does, through the node's
    /// transport (so over SSH and with `become` too). Each signal is recorded in the journal first.
    async fn force_stop(&mut self, index: usize, os_pid: u32, said: &str) -> StepResult {
        let name = self.name(index).to_string();
        let spec = &self.targets[index].spec;
        let (grace, stop_timeout) = (spec.timeouts.kill_grace, spec.timeouts.stop);
        // Only the process the node itself reported, and only while it still reports it.
        match self.observe(index).await? {
            NodeInfo::Up { os_pid: now, .. } if now != os_pid => {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it still runs after its stop command (now as OS pid {now}, was {os_pid}; not signalled). {said}"
                    ),
                ));
            }
            _ => {}
        }
        let started = Instant::now();
        for signal in ["TERM", "KILL"] {
            let what = if signal == "TERM" {
                format!(
                    "force stop: still running {} after its stop command; SIGTERM to OS pid {os_pid}",
                    humantime::format_duration(stop_timeout)
                )
            } else {
                format!(
                    "force stop: still running {} after SIGTERM; SIGKILL to OS pid {os_pid}",
                    humantime::format_duration(grace)
                )
            };
            // Checked before each signal: the pid may have been reused since the last look.
            let transport = self.cluster.hosts[index].clone();
            let flags_file = self.targets[index].dist_args.clone();
            if let Err(why) =
                crate::signal_target::check(transport.as_ref(), os_pid, &name, &flags_file).await
            {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it still runs after its stop command, and distls refuses to signal OS pid {os_pid}: {why}. Stop the node by hand, then rerun. {said}"
                    ),
                ));
            }
            let detail = if signal == "TERM" && !said.is_empty() {
                format!(" (the stop command: {said})")
            } else {
                String::new()
            };
            self.progress
                .note(&format!("warning: {name}: {what}{detail}"));
            // The journal gets the fact, not the command's output.
            self.journal.record(Some(&name), &what);
            self.store.save(&mut self.journal)?;
            let out = transport
                .run(&format!("kill -{signal} {os_pid}"), Duration::from_secs(30))
                .await?;
            if !out.success() && self.os_process_alive(index, os_pid).await? {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "cannot signal its OS pid {os_pid} (`kill -{signal} {os_pid}` on {}: {})",
                        transport.describe(),
                        out.tail()
                    ),
                ));
            }
            let deadline = Instant::now() + grace;
            loop {
                if !self.os_process_alive(index, os_pid).await? {
                    let after = started.elapsed();
                    let done = format!(
                        "force stop: OS pid {os_pid} is gone {:.1}s after SIGTERM{}",
                        after.as_secs_f64(),
                        if signal == "KILL" {
                            " (it took SIGKILL)"
                        } else {
                            ""
                        }
                    );
                    self.progress.note(&format!("{name}: {done}"));
                    self.journal.record(Some(&name), &done);
                    let deadline = Instant::now() + grace;
                    if !self.wait_running(index, Running::Down, deadline).await? {
                        return Err(self.step_failed(
                            index,
                            &format!("OS pid {os_pid} is gone, but the node still answers"),
                        ));
                    }
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    break;
                }
                self.pause_between_polls().await?;
            }
        }
        Err(self.step_failed(
            index,
            &format!("it still runs after its stop command and SIGKILL to OS pid {os_pid}. {said}"),
        ))
    }

    /// The OS pid of the Erlang VM (`beam*`) listening on `port` on the node's host (Linux /proc),
    /// if there is one.
    async fn beam_listening_on(&self, index: usize, port: u16) -> Result<Option<u32>> {
        let script = format!(
            r#"hex=$(printf ':%04X' {port})
for inode in $(awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p {{ print $10 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
  for fd in $(find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null); do
    pid=${{fd#/proc/}}; pid=${{pid%%/*}}
    case "$(cat /proc/$pid/comm 2>/dev/null)" in beam*) echo "$pid"; exit 0;; esac
  done
done
exit 1"#
        );
        let out = self.cluster.hosts[index]
            .run(&script, Duration::from_secs(30))
            .await?;
        let pid = out.stdout.trim().parse().ok().filter(|_| out.success());
        tracing::debug!(
            node = self.name(index),
            port,
            ?pid,
            "VM listening on its port"
        );
        Ok(pid)
    }

    /// Whether the OS process is alive on the node's host (a zombie counts as gone).
    async fn os_process_alive(&self, index: usize, os_pid: u32) -> Result<bool> {
        let script = format!(
            "if [ -r /proc/{os_pid}/stat ]; then s=$(sed -e 's/^.*) //' /proc/{os_pid}/stat 2>/dev/null | cut -c1); [ -n \"$s\" ] && [ \"$s\" != Z ] && [ \"$s\" != X ]; else kill -0 {os_pid} 2>/dev/null; fi"
        );
        let out = self.cluster.hosts[index]
            .run(&script, Duration::from_secs(30))
            .await?;
        Ok(out.success())
    }

    async fn edit(&mut self, index: usize) -> StepResult {
        let file = self.file_label(index).to_string();
        let activity = match self.roll {
            Some(roll) => NodeActivity::SwitchingFile {
                file,
                to: roll.to.to_string(),
            },
            None => NodeActivity::EnablingTls { file },
        };
        self.progress.node(index, self.name(index), activity);
        self.mark(index, Step::Editing)?;
        self.ensure_backup(index).await?;
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        if let Some(optfile) = target.optfile.as_ref().filter(|_| target.tls_uses_optfile) {
            // The file the new flags point at exists before they do.
            host.write_file_owned_like(
                &optfile.path,
                optfile.text.as_bytes(),
                0o600,
                &target.dist_args,
            )
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        host.write_file(&target.dist_args, target.tls.text.as_bytes(), 0o644)
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        if self.file_state(index).await? != FileState::Tls {
            let label = self.file_label(index);
            return Err(self.step_failed(index, &format!("{label} does not read back as written")));
        }
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        if let Some(optfile) = target.optfile.as_ref().filter(|_| !target.tls_uses_optfile) {
            // A zero-split roll toward plain: the flags no longer point at it.
            host.remove_file(&optfile.path)
                .await
                .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        self.mark(index, Step::Edited)
    }

    /// The original is saved once, before the first change, and never overwritten.
    async fn ensure_backup(&mut self, index: usize) -> StepResult {
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        // An answer other than "absent" keeps distls from writing over what may be the backup.
        if host.try_exists(&target.backup).await.unwrap_or(true) {
            let bytes = host.read_file(&target.backup).await?;
            if sha256_hex(&bytes) != sha256_hex(target.pristine.as_bytes()) {
                return Err(self.needs_operator(
                    index,
                    &format!(
                        "its backup {} does not match the original",
                        target.backup.display()
                    ),
                ));
            }
            return Ok(());
        }
        host.write_file(&target.backup, target.pristine.as_bytes(), 0o600)
            .await
            .map_err(|e| Failure::Fatal(e.into()))
    }

    async fn restore(&mut self, index: usize, done: Step) -> StepResult {
        let activity = NodeActivity::RestoringFile {
            file: self.file_label(index).to_string(),
            back_to: self.roll.map(|roll| roll.from.to_string()),
        };
        self.progress.node(index, self.name(index), activity);
        self.mark(index, Step::RevertRestoring)?;
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        host.write_file(&target.dist_args, target.original.as_bytes(), 0o644)
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        if self.file_state(index).await? != FileState::Original {
            let label = self.file_label(index);
            return Err(self.step_failed(
                index,
                &format!("{label} does not read back as the original"),
            ));
        }
        self.remove_optfile(index).await?;
        self.mark(index, done)
    }

    /// The stop command failed and the node may still run (e.g. still booting): ask the VM
    /// itself, through the probe that reaches it, to stop; halt it if that does not work.
    async fn stop_vm_directly(&self, index: usize, deadline: Instant) -> StepResult {
        let grace = Duration::from_secs(10);
        for halt in [false, true] {
            let running = self.running(&self.observe(index).await?);
            let via = match running {
                Running::Down => return Ok(()),
                // No probe reaches it: the escalation by OS pid takes over.
                Running::Unreachable | Running::Other => return Ok(()),
                Running::Tls | Running::Plain => Via::tls(self.links_tls(running)),
            };
            self.progress.note(&format!(
                "{}: its stop command failed and it still runs; asking the VM to stop ({})",
                self.name(index),
                if halt { "erlang:halt()" } else { "init:stop()" }
            ));
            self.cluster
                .observer
                .stop_node(&self.targets[index], via, halt)
                .await?;
            let until = (Instant::now() + grace).min(deadline);
            if self.wait_running(index, Running::Down, until).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The optfile goes once the flags no longer point at it: when the file is back at a text
    /// without it (plain), not when a zero-split roll returns to a hybrid or TLS stage.
    async fn remove_optfile(&self, index: usize) -> StepResult {
        let target = &self.targets[index];
        if target.original_uses_optfile {
            return Ok(());
        }
        if let Some(optfile) = &target.optfile {
            self.cluster.hosts[index]
                .remove_file(&optfile.path)
                .await
                .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        Ok(())
    }

    /// Every node migrated earlier in this roll must still run. With Mnesia disc tables a
    /// migrated node waits for the plain ones until the last node switches; RabbitMQ gives up
    /// after its table wait (10×30 s by default) and its VM exits.
    /// A failure is reported against `blame`, the newest touched node, so a rollback reverts
    /// every touched node.
    async fn check_migrated_alive(&self, upto: usize, blame: usize) -> StepResult {
        for index in 0..upto {
            let running = self.running(&self.observe(index).await?);
            if running != Running::Tls {
                let flavor = self.targets[index].spec.flavor;
                let why = match flavor.table_wait() {
                    Some(wait) => format!(
                        "; {flavor} waits about {} for Mnesia tables held by nodes still on plain TCP, then {}: keep the roll shorter than that (see docs/flavor-{flavor}.md)",
                        humantime::format_duration(wait.limit),
                        wait.then
                    ),
                    None => String::new(),
                };
                return Err(self.step_failed(
                    blame,
                    &format!(
                        "node {} was migrated earlier in this roll but is now {}{why}",
                        self.name(index),
                        self.label_of(running)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After the mesh: every node's `commands.ready` succeeds (the application has finished
    /// starting, e.g. its Mnesia tables loaded), within `timeouts.ready`, while it keeps running
    /// `running` (TLS after a migration, plain after a rollback: a product whose nodes wait for
    /// their tables until the whole cluster is back answers its ctl long before it is usable).
    async fn ready_gate(&mut self, running: Running) -> StepResult {
        let last = self.targets.len() - 1;
        let started = Instant::now();
        // Every node's ready command at once; the ones that fail are asked again next round.
        let mut waiting: Vec<(usize, String)> = (0..self.targets.len())
            .filter_map(|i| Some((i, self.targets[i].spec.commands.ready.clone()?)))
            .collect();
        for (index, _) in &waiting {
            self.progress
                .node(*index, self.name(*index), NodeActivity::AwaitingReady);
        }
        while !waiting.is_empty() {
            let mut round = tokio::task::JoinSet::new();
            for (index, ready) in &waiting {
                let timeout = self.targets[*index].spec.timeouts.ready;
                let left = timeout.saturating_sub(started.elapsed());
                let transport = self.cluster.hosts[*index].clone();
                let (index, ready) = (*index, ready.clone());
                round.spawn(async move {
                    let out = transport
                        .run(&ready, left.max(Duration::from_secs(1)))
                        .await;
                    let said = command_failure(&ready, &out);
                    (index, ready, said)
                });
            }
            let mut again = Vec::new();
            while let Some(joined) = round.join_next().await {
                let (index, ready, said) = joined.expect("ready command task");
                let Some(said) = said else { continue };
                let timeout = self.targets[index].spec.timeouts.ready;
                if started.elapsed() >= timeout {
                    return Err(self.step_failed(
                        last,
                        &format!(
                            "node {} runs {} and is linked to every node, but did not report ready within {}: {said}",
                            self.name(index),
                            match (self.roll, running) {
                                (None, Running::Tls) => "TLS",
                                _ => self.label_of(running),
                            },
                            humantime::format_duration(timeout)
                        ),
                    ));
                }
                if self.running(&self.observe(index).await?) != running {
                    return Err(self.step_failed(
                        last,
                        &format!(
                            "node {} stopped running while distls waited for it to report ready: {said}",
                            self.name(index)
                        ),
                    ));
                }
                again.push((index, ready));
            }
            again.sort();
            waiting = again;
            if !waiting.is_empty() {
                for _ in 0..10 {
                    self.pause_between_polls().await?;
                }
            }
        }
        Ok(())
    }

    async fn start(
        &mut self,
        index: usize,
        intent: Step,
        done: Step,
        expect: Running,
    ) -> StepResult {
        let runs = self.label_of(expect).to_string();
        self.progress
            .node(index, self.name(index), NodeActivity::Starting { runs });
        self.tell_hybrid_peers(index, expect).await?;
        let spec = &self.targets[index].spec;
        let (command, timeout) = (spec.commands.start.clone(), spec.timeouts.start);
        if self.step_of(index) == intent {
            // A previous run died while starting it: give that start a chance to finish rather
            // than launching a second VM under the same name.
            let grace = Instant::now() + timeout.min(Duration::from_secs(15));
            if self.wait_running(index, expect, grace).await? {
                return self.mark(index, done);
            }
        }
        self.mark(index, intent)?;
        let deadline = Instant::now() + timeout;
        let outcome = self.cluster.hosts[index].run(&command, timeout).await;
        let failed = command_failure(&command, &outcome);
        if let Some(why) = failed {
            let info = self.observe(index).await?;
            if self.running(&info) != expect {
                return Err(self.step_failed(index, &format!("its start command failed: {why}")));
            }
        }
        if expect == Running::Tls {
            self.start_early_ping(index);
        }
        if !self.wait_running(index, expect, deadline).await? {
            let now = self.running(&self.observe(index).await?);
            let why = if now == Running::Unreachable {
                ": its VM runs (registered with epmd) but answers neither over plain TCP nor over TLS, as happens when its certificate, key or CA is rejected; see its log"
            } else {
                ""
            };
            return Err(self.step_failed(
                index,
                &format!(
                    "it is {} {} after its start command (expected {}){why}",
                    self.label_of(now),
                    humantime::format_duration(timeout),
                    self.label_of(expect)
                ),
            ));
        }
        self.mark(index, done)
    }

    async fn await_tls_rejoin(&mut self, index: usize) -> StepResult {
        self.progress
            .node(index, self.name(index), NodeActivity::AwaitingTlsLinks);
        let migrated: Vec<usize> = (0..index).collect();
        let plain: Vec<usize> = (index + 1..self.targets.len()).collect();
        let deadline = Instant::now() + self.targets[index].spec.timeouts.rejoin;
        // In slices, so a migrated peer that died meanwhile is named at once instead of waiting
        // for the whole rejoin timeout.
        let missing = loop {
            let slice = (Instant::now() + Duration::from_secs(5)).min(deadline);
            let missing = self
                .wait_for_links(index, &migrated, true, &plain, slice)
                .await?;
            if missing.is_ok() || Instant::now() >= deadline {
                break missing;
            }
            self.check_migrated_alive(index, index).await?;
        };
        if let Err(missing) = missing {
            return Err(self.step_failed(
                index,
                &format!(
                    "it did not rejoin within {}: {missing}",
                    humantime::format_duration(self.targets[index].spec.timeouts.rejoin)
                ),
            ));
        }
        self.mark(index, Step::Rejoined)
    }

    /// Zero-split: wait until node `index` is linked to every other node and no pair of nodes
    /// misses the other (links between two nodes of one stage use that stage's transport).
    /// `done`: the step recorded then. `skip_down`: only running nodes count (in a rollback, a
    /// node not reverted yet may be down or unreachable).
    async fn await_full_rejoin(&mut self, index: usize, done: Step, skip_down: bool) -> StepResult {
        self.progress
            .node(index, self.name(index), NodeActivity::AwaitingFullMesh);
        let timeout = self.targets[index].spec.timeouts.rejoin;
        let deadline = Instant::now() + timeout;
        let mut last_kick: Option<Instant> = None;
        loop {
            let (infos, missing) = self.full_mesh_missing(skip_down).await?;
            let Err(missing) = missing else { break };
            if Instant::now() >= deadline {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it did not rejoin every node within {}: {missing}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            // A restarted node dials its peers itself (Mnesia, CETS, …); this covers the rest,
            // and any other pair that lost its link (e.g. `global` dropping one around the
            // restart): every running node is told to dial the nodes it misses.
            if last_kick.is_none_or(|t| t.elapsed() >= KICK_EVERY) {
                for (node, info) in infos.iter().enumerate() {
                    let running = self.running(info);
                    let missing: Vec<String> = (0..self.targets.len())
                        .filter(|&p| p != node && info.link_to(self.name(p)).is_none())
                        .map(|p| self.name(p).to_string())
                        .collect();
                    if missing.is_empty() || !matches!(running, Running::Plain | Running::Tls) {
                        continue;
                    }
                    let via = Via::tls(self.links_tls(running));
                    self.cluster
                        .observer
                        .connect(&self.targets[node], via, &missing)
                        .await?;
                }
                last_kick = Some(Instant::now());
            }
            self.pause_between_polls().await?;
        }
        self.mark(index, done)
    }

    /// Every node observed, and which links of the full mesh are missing (or use the wrong
    /// transport between two nodes of one stage).
    async fn full_mesh_missing(
        &self,
        skip_down: bool,
    ) -> Result<(Vec<NodeInfo>, std::result::Result<(), String>)> {
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let infos = self.observe_all(&everyone).await?;
        let stages: Vec<Option<Stage>> = infos
            .iter()
            .map(|i| i.proto_dist().and_then(Stage::of_signature))
            .collect();
        // In a rollback only the nodes that run count: a node not reverted yet may be down or
        // unreachable (a failed start, a rejected certificate) until its turn comes.
        let counts = |i: usize| !skip_down || infos[i].is_up();
        let mut missing = Vec::new();
        for (index, info) in infos.iter().enumerate().filter(|(i, _)| counts(*i)) {
            let Some(stage) = stages[index] else {
                missing.push(format!(
                    "{} is {}",
                    self.name(index),
                    self.label_of(self.running(info))
                ));
                continue;
            };
            for peer in (0..self.targets.len()).filter(|&p| p != index && counts(p)) {
                match info.link_to(self.name(peer)) {
                    None => missing.push(format!(
                        "{} does not see {}",
                        self.name(index),
                        self.name(peer)
                    )),
                    Some(tls) if stages[peer] == Some(stage) && tls != stage.links_tls() => missing
                        .push(format!(
                            "{} ↔ {} is {} between two nodes running {}",
                            self.name(index),
                            self.name(peer),
                            if tls { "TLS" } else { "plain TCP" },
                            stage.label()
                        )),
                    Some(_) => {}
                }
            }
        }
        let missing = if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        };
        Ok((infos, missing))
    }

    /// Zero-split: the node's `commands.ready` succeeds (it has finished starting, e.g. loaded
    /// its Mnesia tables from the others) before the roll goes on.
    async fn await_node_ready(&mut self, index: usize) -> StepResult {
        let spec = &self.targets[index].spec;
        let Some(ready) = spec.commands.ready.clone() else {
            return Ok(());
        };
        let timeout = spec.timeouts.ready;
        self.progress
            .node(index, self.name(index), NodeActivity::AwaitingReady);
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let transport = self.cluster.hosts[index].clone();
            let outcome = transport
                .run(&ready, left.max(Duration::from_secs(1)))
                .await;
            let Some(said) = command_failure(&ready, &outcome) else {
                return Ok(());
            };
            if started.elapsed() >= timeout {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it is linked to every node but did not report ready within {}: {said}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            for _ in 0..5 {
                self.pause_between_polls().await?;
            }
        }
    }

    async fn verify(&mut self, index: usize) -> StepResult {
        let early = self.early_ping.take().filter(|e| e.node == index);
        let Some(ping) = self.targets[index].spec.commands.ping.clone() else {
            if self.roll.is_some() {
                self.await_node_ready(index).await?;
            }
            return self.mark(index, Step::Verified);
        };
        self.progress
            .node(index, self.name(index), NodeActivity::CheckingCtl);
        let timeout = self.targets[index].spec.timeouts.ping;
        let fresh = self.cluster.hosts[index].run(&ping, timeout);
        // The early ping may be halfway through an attempt begun before the node was up: race it
        // against a fresh one. The fresh one decides unless the early one succeeds first; with
        // no early ping (a resumed run) the fresh one alone decides.
        let outcome = match early {
            Some(mut early) => {
                tokio::pin!(fresh);
                tokio::select! {
                    joined = &mut early.task => match joined {
                        Ok(Ok(())) => None,
                        _ => Some(fresh.await),
                    },
                    out = &mut fresh => Some(out),
                }
            }
            None => Some(fresh.await),
        };
        let failure = outcome.and_then(|outcome| command_failure(&ping, &outcome));
        if let Some(why) = failure {
            return Err(self.step_failed(index, &format!("its ctl cannot reach it: {why}")));
        }
        if self.roll.is_some() {
            self.await_node_ready(index).await?;
        }
        self.mark(index, Step::Verified)
    }

    /// Retry the node's ctl ping in the background until it answers, or until the node's start
    /// and rejoin timeouts have passed; `verify` collects the outcome.
    fn start_early_ping(&mut self, index: usize) {
        let spec = &self.targets[index].spec;
        let Some(ping) = spec.commands.ping.clone() else {
            return;
        };
        let (timeout, give_up) = (
            spec.timeouts.ping,
            Instant::now() + spec.timeouts.start + spec.timeouts.rejoin,
        );
        let transport = self.cluster.hosts[index].clone();
        let task = tokio::spawn(async move {
            loop {
                match transport.run(&ping, timeout).await {
                    Ok(out) if out.success() => return Ok(()),
                    Ok(out) => {
                        if Instant::now() >= give_up {
                            return Err(out.tail());
                        }
                    }
                    Err(e) => {
                        if Instant::now() >= give_up {
                            return Err(e.to_string());
                        }
                    }
                }
                tokio::time::sleep(EARLY_PING_RETRY).await;
            }
        });
        self.early_ping = Some(EarlyPing { node: index, task });
    }

    /// After the last node: every node runs TLS and sees every other node over TLS.
    async fn final_gate(&mut self) -> StepResult {
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + self.max_rejoin_timeout();
        let tls = self.links_tls(Running::Tls);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            let last = self.targets.len() - 1;
            return Err(self.step_failed(
                last,
                &format!(
                    "the cluster did not form one {} mesh: {missing}",
                    if tls { "TLS" } else { "plain-TCP" }
                ),
            ));
        }
        // A zero-split roll of restarts asked each node's ready command right after its own
        // restart, and the run's last roll (the seal, or the last roll of restarts) ends with
        // this gate: asking every node again in between only waits.
        let another_roll_follows = self
            .roll
            .is_some_and(|roll| !roll.at_run_time() && roll.next().is_some());
        if !another_roll_follows {
            self.ready_gate(Running::Tls).await?;
        }
        self.journal.set_phase(Phase::Completed)?;
        self.journal.record(None, "completed");
        self.store.save(&mut self.journal)?;
        Ok(())
    }

    // ---- the one-restart path: who speaks TLS, and the seal ---------------------------------

    /// Before node `index` starts with the hybrid module (the one-restart path's H stage), the
    /// nodes that run the module learn that it speaks TLS; before it starts at the roll's other
    /// stage (plain, on the way back), that it no longer does. So no two nodes that run the module
    /// ever link in plain TCP, and none dials TLS to a plain node. Idempotent (a resumed run tells
    /// them again).
    async fn tell_hybrid_peers(&mut self, index: usize, expect: Running) -> StepResult {
        let Some(roll) = self.roll.filter(|r| r.path == RollPath::OneRestart) else {
            return Ok(());
        };
        let (starts_at, leaves) = match expect {
            Running::Tls => (roll.to, roll.from),
            _ => (roll.from, roll.to),
        };
        let op = match (starts_at, leaves) {
            (Stage::Hybrid, _) => "add",
            (_, Stage::Hybrid) => "remove",
            _ => return Ok(()),
        };
        let name = self.name(index).to_string();
        let others: Vec<usize> = (0..self.targets.len()).filter(|&p| p != index).collect();
        let infos = self.observe_all(&others).await?;
        for (&peer, info) in others.iter().zip(&infos) {
            if info.proto_dist().and_then(Stage::of_signature) != Some(Stage::Hybrid) {
                continue;
            }
            self.cluster
                .observer
                .hybrid(&self.targets[peer], Via::Tls, op, &[&name])
                .await
                .map_err(|e| {
                    self.step_failed(
                        index,
                        &format!(
                            "could not tell {} (it runs the hybrid module) about it: {e}",
                            self.name(peer)
                        ),
                    )
                })?;
        }
        Ok(())
    }

    /// The H → TLS roll, one node, no restart: seal the module (TLS only from now on), then write
    /// the stock TLS text (which its ctl uses from then on, and its next restart boots), then
    /// verify through its ctl.
    async fn seal_node(&mut self, index: usize) -> StepResult {
        for _ in 0..MAX_ROUNDS {
            self.check_interrupt()?;
            let file = self.file_state(index).await?;
            let running = self.running(&self.observe(index).await?);
            match (file, running) {
                (FileState::Foreign, _) => {
                    return Err(
                        self.needs_operator(index, "its flags file was changed outside distls")
                    );
                }
                (_, Running::Plain) => self.set_sealed(index, true).await?,
                (FileState::Original, Running::Tls) => self.edit(index).await?,
                // Its ctl is asked with every other node's once all are sealed (one VM boot
                // each, at once, instead of one after the other).
                (FileState::Tls, Running::Tls) if self.step_of(index) != Step::Verified => {
                    self.mark(index, Step::Verified)?
                }
                (FileState::Tls, Running::Tls) => return Ok(()),
                (_, running) => {
                    return Err(self.step_failed(
                        index,
                        &format!(
                            "it is {} while the cluster is sealed at run time (every node must run the hybrid module)",
                            self.label_of(running)
                        ),
                    ));
                }
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// Undoes [`Self::seal_node`]: the H text back, then the module unsealed. A node that was
    /// restarted since the seal runs stock TLS: it restarts into H.
    async fn unseal_node(&mut self, index: usize) -> StepResult {
        for _ in 0..MAX_ROUNDS {
            self.check_interrupt()?;
            let file = self.file_state(index).await?;
            let info = self.observe(index).await?;
            let running = self.running(&info);
            let sealed_module = info.proto_dist() == Some(crate::stage::SEALED_SIGNATURE);
            match (file, running) {
                (FileState::Foreign, _) => {
                    return Err(
                        self.needs_operator(index, "its flags file was changed outside distls")
                    );
                }
                (FileState::Tls, _) => self.restore(index, Step::Stopped).await?,
                (FileState::Original, Running::Tls) if sealed_module => {
                    self.set_sealed(index, false).await?
                }
                (FileState::Original, Running::Tls) => {
                    self.stop(index, &info, Step::RevertStopping, Step::Stopped)
                        .await?
                }
                (FileState::Original, Running::Down) => {
                    self.start(index, Step::RevertStarting, Step::Started, Running::Plain)
                        .await?
                }
                (FileState::Original, Running::Plain) => {
                    return self.await_full_rejoin(index, Step::Reverted, true).await;
                }
                (_, running) => {
                    return Err(self.step_failed(
                        index,
                        &format!(
                            "it is {} while the seal is undone at run time",
                            self.label_of(running)
                        ),
                    ));
                }
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// `seal` or `unseal` the module on node `index`, through a TLS probe VM (a sealed node takes
    /// only TLS), then wait until the node reports it.
    async fn set_sealed(&mut self, index: usize, sealed: bool) -> StepResult {
        let op = if sealed { "seal" } else { "unseal" };
        let (intent, done, want, activity) = match sealed {
            true => (
                Step::Sealing,
                Step::Sealed,
                Running::Tls,
                NodeActivity::Sealing,
            ),
            false => (
                Step::Unsealing,
                Step::Stopped,
                Running::Plain,
                NodeActivity::Unsealing,
            ),
        };
        self.progress.node(index, self.name(index), activity);
        self.mark(index, intent)?;
        match self
            .cluster
            .observer
            .hybrid(&self.targets[index], Via::Tls, op, &[])
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(self.step_failed(index, "the hybrid module is not loaded there"));
            }
            Err(e) => return Err(self.step_failed(index, &e.to_string())),
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        if !self.wait_running(index, want, deadline).await? {
            return Err(self.step_failed(index, &format!("it does not report `{op}` done")));
        }
        self.mark(index, done)
    }

    // ---- failure policy and rollback ---------------------------------------------------------

    async fn handle_failure(&mut self, failure: StepFailure) -> Error {
        self.early_ping = None;
        let node = self.name(failure.node).to_string();
        let message = format!("node {node}: {}", failure.message);
        self.progress.note(&format!("error: {message}"));
        self.journal.failure = Some(message.clone());
        if self.options.on_failure == OnFailure::Pause {
            if let Err(e) = self.journal.set_phase(Phase::Paused) {
                return e.into();
            }
            self.journal.record(Some(&node), "paused after failure");
            if let Err(e) = self.store.save(&mut self.journal) {
                return e.into();
            }
            let table = self.node_states().await;
            return Error::StepFailed(Message::new(format!("{message}\npaused (--on-failure pause): nothing was reverted; the journal {journal} says `paused`.\nnode states (journal step, then what distls sees now):{table}", journal = self.store.journal_path().display())).hint(format!("fix the cause and rerun `distls migrate {plan}` to retry from {node}, or run `distls rollback {plan}` to go back to plain TCP", plan = self.plan.path.display())));
        }
        if let Err(e) = self.journal.set_phase(Phase::RollingBack) {
            return e.into();
        }
        self.journal
            .record(Some(&node), "rolling back after failure");
        if let Err(e) = self.store.save(&mut self.journal) {
            return e.into();
        }
        let back_to = self.label_of(Running::Plain);
        self.progress.note(&format!(
            "rolling back: every touched node returns to {back_to}, newest first"
        ));
        match self.rollback_from(failure.node).await {
            Ok(()) => match self.roll {
                Some(roll) => Error::StepFailed(Message::from(format!(
                    "{message}\nthis roll rolled back: every node runs {} again, in one mesh",
                    roll.from.label()
                ))),
                None => Error::StepFailed(Message::from(format!(
                    "{message}\nrolled back: every node runs plain TCP in one mesh again and every vm.dist.args is byte-identical to its original."
                ))),
            },
            Err(Failure::Step(f)) => {
                self.rollback_stuck(&format!("node {}: {}", self.name(f.node), f.message))
                    .await
            }
            Err(Failure::Fatal(e)) if e.exit_code() == crate::error::exit_code::INTERRUPTED => e,
            Err(Failure::Fatal(e)) => self.rollback_stuck(&e.to_string()).await,
        }
    }

    /// Revert nodes `last` down to the first, then check the plain mesh.
    async fn rollback_from(&mut self, last: usize) -> StepResult {
        for index in (0..=last).rev() {
            let started = Instant::now();
            self.drive_node(index, Direction::Backward).await?;
            self.timings[index] = Some(started.elapsed());
        }
        // A run killed between restoring a flags file and removing its optfile left the optfile.
        for index in 0..self.targets.len() {
            if self.file_state(index).await? == FileState::Original {
                self.remove_optfile(index).await?;
            }
        }
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + self.max_rejoin_timeout();
        let tls = self.links_tls(Running::Plain);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            return Err(self.step_failed(
                0,
                &format!(
                    "the {} cluster did not re-form: {missing}",
                    self.label_of(Running::Plain)
                ),
            ));
        }
        self.ready_gate(Running::Plain).await?;
        self.journal.set_phase(Phase::RolledBack)?;
        self.journal.record(None, "rolled back");
        self.store.save(&mut self.journal)?;
        if let Some(roll) = self.roll {
            // Zero-split: the roll is back at its start, the run has not turned to plain yet.
            failpoint(&format!("{}:rolled-back", roll.to.tag()));
        }
        Ok(())
    }

    /// One line per node: its journal step, then what distls can see of it now (or why not).
    async fn node_states(&self) -> String {
        let mut table = String::new();
        let short = |e: &Error| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            if first.chars().count() > 160 {
                format!("{}…", first.chars().take(160).collect::<String>())
            } else {
                first
            }
        };
        for index in 0..self.targets.len() {
            let file = self.file_state(index).await;
            let running = match &file {
                // The same way in failed a moment ago: do not wait for a probe too.
                Err(_) => None,
                Ok(_) => self.observe(index).await.map(|i| self.running(&i)).ok(),
            };
            let unreachable = match &file {
                Err(e) => format!(" (cannot reach it: {})", short(e)),
                Ok(_) => String::new(),
            };
            table.push_str(&format!(
                "\n  {:<32} journal {:<17} runs {:<10} vm.dist.args {}{unreachable}",
                self.name(index),
                self.step_of(index).label(),
                running.map_or("unknown", |r| self.label_of(r)),
                match file {
                    Ok(FileState::Original) => "original",
                    Ok(FileState::Tls) => "TLS",
                    Ok(FileState::Foreign) => "changed outside distls",
                    Err(_) => "unknown",
                }
            ));
        }
        table
    }

    async fn rollback_stuck(&mut self, why: &str) -> Error {
        let table = self.node_states().await;
        let began_after = match &self.journal.failure {
            Some(cause) if !cause.starts_with("rollback stopped:") => {
                format!("\nthe rollback began after: {cause}")
            }
            _ => String::new(),
        };
        self.journal.failure = Some(format!("rollback stopped: {why}"));
        let saved = self.store.save(&mut self.journal);
        let journal_note = match saved {
            Ok(()) => format!(
                "the journal {} is consistent (phase rolling_back)",
                self.store.journal_path().display()
            ),
            Err(e) => format!("the journal could not be updated: {e}"),
        };
        Error::NeedsOperator(Message::new(format!("the rollback could not finish: {why}{began_after}\nnode states (journal step, then what distls sees now):{table}\n{journal_note}; every node distls edited has its original vm.dist.args backed up next to it (.distls-orig).")).hint(format!("fix the cause (bring the host back if it is unreachable), then run `distls rollback {plan}`; `distls status {plan}` shows where each node is", plan = self.plan.path.display())))
    }

    /// `distls rollback`: every node back to plain TCP, newest first.
    pub async fn rollback(&mut self) -> (Vec<NodeSummary>, Result<()>) {
        if let Err(e) = self.journal.set_phase(Phase::RollingBack) {
            self.release_probes().await;
            return (Vec::new(), Err(e.into()));
        }
        self.journal.record(None, "rollback requested");
        if let Err(e) = self.store.save(&mut self.journal) {
            self.release_probes().await;
            return (Vec::new(), Err(e.into()));
        }
        let last = self.targets.len() - 1;
        let outcome = match self.rollback_from(last).await {
            Ok(()) => Ok(()),
            Err(Failure::Fatal(e)) if e.exit_code() == crate::error::exit_code::INTERRUPTED => {
                Err(e)
            }
            Err(Failure::Fatal(e)) => Err(self.rollback_stuck(&e.to_string()).await),
            Err(Failure::Step(f)) => {
                let why = format!("node {}: {}", self.name(f.node), f.message);
                Err(self.rollback_stuck(&why).await)
            }
        };
        self.progress.finish();
        let summary = self.summary().await;
        self.release_probes().await;
        (summary, outcome)
    }

    // ---- observation -------------------------------------------------------------------------

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

    async fn file_state(&self, index: usize) -> Result<FileState> {
        let target = &self.targets[index];
        let bytes = self.cluster.hosts[index]
            .read_file(&target.dist_args)
            .await?;
        Ok(target.classify_bytes(&bytes))
    }

    /// What the node runs, asked through both probes at once: the one that speaks the node's
    /// protocol answers fast, the other would hang until the connection setup timeout.
    pub async fn observe(&self, index: usize) -> Result<NodeInfo> {
        self.cluster.observer.observe(&self.targets[index]).await
    }

    /// [`Self::observe`] of several nodes at once (a gate over the whole cluster asks every node
    /// each round; one after the other that grows with the square of the cluster).
    async fn observe_all(&self, indices: &[usize]) -> Result<Vec<NodeInfo>> {
        let mut asks = tokio::task::JoinSet::new();
        for (slot, &index) in indices.iter().enumerate() {
            let (observer, target) = (self.cluster.observer.clone(), self.targets[index].clone());
            asks.spawn(async move { (slot, observer.observe(&target).await) });
        }
        let mut infos: Vec<Option<NodeInfo>> = vec![None; indices.len()];
        while let Some(joined) = asks.join_next().await {
            let (slot, info) = joined.expect("observation task");
            infos[slot] = Some(info?);
        }
        Ok(infos
            .into_iter()
            .map(|i| i.expect("every node observed"))
            .collect())
    }

    async fn wait_running(&self, index: usize, want: Running, deadline: Instant) -> Result<bool> {
        loop {
            if self.running(&self.observe(index).await?) == want {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.pause_between_polls().await?;
        }
    }

    /// Wait until node `index` has an up link (TLS or plain as asked) to every node in `peers`, and
    /// every node in `plain_island` still sees the rest of that island over plain TCP.
    async fn wait_for_links(
        &self,
        index: usize,
        peers: &[usize],
        tls: bool,
        plain_island: &[usize],
        deadline: Instant,
    ) -> Result<std::result::Result<(), String>> {
        let (target, via) = (&self.targets[index], Via::tls(tls));
        let peer_names: Vec<String> = peers.iter().map(|&p| self.name(p).to_string()).collect();
        let mut last_kick: Option<Instant> = None;
        loop {
            if last_kick.is_none_or(|t| t.elapsed() >= KICK_EVERY) {
                self.cluster
                    .observer
                    .connect(target, via, &peer_names)
                    .await?;
                last_kick = Some(Instant::now());
            }
            let info = self.cluster.observer.info(target, via).await?;
            let mut missing: Vec<String> = peer_names
                .iter()
                .filter(|p| !info.has_link(p, tls))
                .map(|p| {
                    format!(
                        "no {} link {} ↔ {p}",
                        if tls { "TLS" } else { "plain" },
                        self.name(index)
                    )
                })
                .collect();
            if missing.is_empty()
                && let Err(island) = self.mesh_missing(plain_island, false).await?
            {
                missing.push(island);
            }
            if missing.is_empty() {
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                return Ok(Err(missing.join("; ")));
            }
            self.pause_between_polls().await?;
        }
    }

    async fn wait_for_mesh(
        &self,
        nodes: &[usize],
        tls: bool,
        deadline: Instant,
    ) -> Result<std::result::Result<(), String>> {
        let mut kicked = false;
        loop {
            let missing = self.mesh_missing(nodes, tls).await?;
            if missing.is_ok() || Instant::now() >= deadline {
                return Ok(missing);
            }
            if !kicked {
                for &index in nodes {
                    let others: Vec<String> = nodes
                        .iter()
                        .filter(|&&p| p != index)
                        .map(|&p| self.name(p).to_string())
                        .collect();
                    self.cluster
                        .observer
                        .connect(&self.targets[index], Via::tls(tls), &others)
                        .await?;
                }
                kicked = true;
            }
            self.pause_between_polls().await?;
        }
    }

    /// Which links of a full mesh among `nodes` are missing, if any.
    async fn mesh_missing(
        &self,
        nodes: &[usize],
        tls: bool,
    ) -> Result<std::result::Result<(), String>> {
        let mut missing = Vec::new();
        for &index in nodes {
            let info = self
                .cluster
                .observer
                .info(&self.targets[index], Via::tls(tls))
                .await?;
            if !info.is_up() {
                missing.push(format!(
                    "{} is not reachable over {}",
                    self.name(index),
                    if tls { "TLS" } else { "plain TCP" }
                ));
                continue;
            }
            for &peer in nodes.iter().filter(|&&p| p != index) {
                if !info.has_link(self.name(peer), tls) {
                    missing.push(format!(
                        "{} does not see {}",
                        self.name(index),
                        self.name(peer)
                    ));
                }
            }
        }
        Ok(if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        })
    }

    fn max_rejoin_timeout(&self) -> Duration {
        self.targets
            .iter()
            .map(|t| t.spec.timeouts.rejoin)
            .max()
            .unwrap_or(Duration::from_secs(120))
    }

    // ---- journal -----------------------------------------------------------------------------

    fn mark(&mut self, index: usize, step: Step) -> StepResult {
        let name = self.name(index).to_string();
        // "before": the side effect this step records has happened, the journal does not know yet.
        // A zero-split roll's points are named after the stage it goes to (`b:mim2@host:edited`).
        let point = match self.roll {
            Some(roll) => format!("{}:{name}:{}", roll.to.tag(), step.label()),
            None => format!("{name}:{}", step.label()),
        };
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

    fn step_failed(&self, index: usize, message: &str) -> Failure {
        Failure::Step(StepFailure {
            node: index,
            message: message.to_string(),
        })
    }

    fn needs_operator(&self, index: usize, why: &str) -> Failure {
        Failure::Fatal(Error::NeedsOperator(
            Message::new(format!("node {}: {why}", self.name(index))).hint(format!(
                "inspect it with `distls status {}`; the original vm.dist.args is at {}",
                self.plan.path.display(),
                self.targets[index].backup.display()
            )),
        ))
    }

    async fn summary(&self) -> Vec<NodeSummary> {
        let mut rows = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            let info = self.observe(index).await.unwrap_or(NodeInfo::Down {
                reason: "probe failed".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_driver_takes_each_direction_s_steps() {
        use crate::target::FileState::*;
        let forward = |file, running, step| decide(Direction::Forward, file, running, step);
        let backward = |file, running| decide(Direction::Backward, file, running, Step::Pending);
        assert_eq!(
            forward(Original, Running::Plain, Step::Pending),
            Ok(Action::Stop {
                intent: Step::Stopping
            })
        );
        assert_eq!(
            backward(Tls, Running::Tls),
            Ok(Action::Stop {
                intent: Step::RevertStopping
            })
        );
        assert_eq!(
            forward(Tls, Running::Down, Step::Edited),
            Ok(Action::Start {
                intent: Step::Starting,
                expect: Running::Tls
            })
        );
        assert_eq!(
            backward(Original, Running::Down),
            Ok(Action::Start {
                intent: Step::RevertStarting,
                expect: Running::Plain
            })
        );
        assert_eq!(
            forward(Tls, Running::Plain, Step::Started),
            Ok(Action::RestoreFile {
                done: Step::Pending
            })
        );
        assert_eq!(
            backward(Tls, Running::Down),
            Ok(Action::RestoreFile {
                done: Step::Stopped
            })
        );
        assert_eq!(
            forward(Tls, Running::Tls, Step::Rejoined),
            Ok(Action::Verify)
        );
        assert_eq!(forward(Tls, Running::Tls, Step::Verified), Ok(Action::Done));
        assert_eq!(backward(Original, Running::Plain), Ok(Action::AwaitRejoin));
        assert!(forward(Foreign, Running::Plain, Step::Pending).is_err());
        assert!(backward(Original, Running::Tls).is_err());
    }

    #[test]
    fn forward_actions_follow_the_observed_state() {
        use ForwardAction::*;
        let f = |file, running, step| forward_action(file, running, step).unwrap();
        assert_eq!(f(FileState::Original, Running::Plain, Step::Pending), Stop);
        // Killed after stopping but before the journal said so: the observation wins.
        assert_eq!(f(FileState::Original, Running::Down, Step::Stopping), Edit);
        assert_eq!(f(FileState::Tls, Running::Down, Step::Edited), Start);
        assert_eq!(f(FileState::Tls, Running::Down, Step::Editing), Start);
        assert_eq!(f(FileState::Tls, Running::Tls, Step::Starting), AwaitRejoin);
        assert_eq!(f(FileState::Tls, Running::Tls, Step::Rejoined), Verify);
        assert_eq!(f(FileState::Tls, Running::Tls, Step::Verified), Done);
        assert_eq!(
            f(FileState::Tls, Running::Plain, Step::Pending),
            RestoreFile
        );
        // Registered with epmd but answering neither probe: the start step waits for it (and
        // fails, policy applies, if it never answers); a plain-file node like that needs a person.
        assert_eq!(
            f(FileState::Tls, Running::Unreachable, Step::Starting),
            Start
        );
        assert!(forward_action(FileState::Original, Running::Unreachable, Step::Pending).is_err());
        assert!(forward_action(FileState::Original, Running::Tls, Step::Pending).is_err());
        assert!(forward_action(FileState::Foreign, Running::Plain, Step::Pending).is_err());
    }

    #[test]
    fn backward_actions_stop_tls_nodes_before_restoring_their_file() {
        use BackwardAction::*;
        assert_eq!(backward_action(FileState::Tls, Running::Tls).unwrap(), Stop);
        assert_eq!(
            backward_action(FileState::Tls, Running::Down).unwrap(),
            RestoreFile
        );
        assert_eq!(
            backward_action(FileState::Original, Running::Down).unwrap(),
            Start
        );
        assert_eq!(
            backward_action(FileState::Original, Running::Plain).unwrap(),
            AwaitRejoin
        );
        assert!(backward_action(FileState::Original, Running::Tls).is_err());
        // A TLS node nobody can reach is stopped (its ctl, then its pid from its epmd port).
        assert_eq!(
            backward_action(FileState::Tls, Running::Unreachable).unwrap(),
            Stop
        );
        assert!(backward_action(FileState::Original, Running::Unreachable).is_err());
    }
}
