//! `distls rotate`: new certificates, keys or CA for a cluster that runs TLS distribution,
//! without a restart. The new files are installed at the paths the nodes' running options name,
//! each node's distribution PEM cache is cleared (its next connections read the files again),
//! and every move is proven: the node serves the new leaf to a fresh handshake, and new links
//! from its peers' credentials succeed. Existing links keep their sessions. docs/rotate.md.

pub mod events;
mod forget;
mod gather;
pub mod journal;
pub mod moves;
pub mod trust;

use crate::atomic_file::sha256_hex;
use crate::cert_info::CertSummary;
use crate::error::{Error, Message, Result};
use crate::journal::{JournalStore, now};
use crate::plan::Plan;
use crate::probe::Probe;
use crate::target::NodeTarget;
use events::{MoveBegins, MoveDone, MoveRestored, Output};
use gather::RotationNode;
use journal::{MoveStep, RotationJournal, RotationStore, RunState};
use moves::{FileKind, PlannedMove, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--to KIND=PATH`: the new files (placeholders per node), on each node's host.
    pub to: Vec<(FileKind, String)>,
    pub ca_rollover: bool,
    pub rollback: bool,
    /// `--forget`: a finished rotation's before-copies and journal removed.
    pub forget: bool,
    pub dry_run: bool,
    /// Ask on a terminal before a new rotation's first change (not `--yes`, not `--json`).
    pub ask: bool,
    /// Lines for people, and with `--json` the records (docs/json.md).
    pub out: Output,
}

/// `certfile=/etc/ssl/new/{sname}.pem` → (certfile, the template).
pub fn parse_to(text: &str) -> std::result::Result<(FileKind, String), String> {
    let (kind, path) = text.split_once('=').ok_or_else(|| {
        format!("`{text}`: expected KIND=PATH, e.g. certfile=/etc/ssl/new/{{sname}}.pem")
    })?;
    let kind = FileKind::parse(kind).ok_or_else(|| {
        format!("`{kind}` is not a file distls rotates: use certfile, keyfile or cacertfile")
    })?;
    if path.is_empty() {
        return Err(format!("`{text}`: the path is empty"));
    }
    Ok((kind, path.to_string()))
}

pub async fn run(
    plan: &Plan,
    targets: &[NodeTarget],
    state_dir: &Path,
    request: &Request,
) -> Result<()> {
    let mut lock = JournalStore::new(state_dir, &plan.cluster);
    if !request.dry_run {
        lock.lock()?;
    }
    let store = RotationStore::new(state_dir, &plan.cluster);
    let existing = store.load()?;
    let probes = crate::observe::probe_pool(targets)?;
    let out = &request.out;
    let outcome = async {
        if request.forget {
            let journal = last_rotation(existing, &store, "forget")?;
            forget::forget(&store, journal, targets, request.ask, out).await?;
            out.emit(&crate::json_report::Done::new("forgotten"));
            return Ok(());
        }
        if existing
            .as_ref()
            .is_some_and(|j| j.state == RunState::Forgetting)
        {
            return Err(Error::Refused(
                Message::new("a --forget of the last rotation is under way: some of its before-copies may be gone already".to_string())
                    .hint("finish it: distls rotate --forget PLAN"),
            ));
        }
        if request.rollback {
            let journal = last_rotation(existing, &store, "roll back")?;
            // Files first, whatever the nodes answer: a node down, or unreachable with the files
            // being rolled back, must not keep the others on them.
            let nodes = gather::nodes_for_rollback(&probes, targets).await?;
            let mut engine = Engine::new(&store, journal, &nodes, out.clone());
            engine.rollback_all().await?;
            out.emit(&crate::json_report::Done::new("rolled_back"));
            return Ok(());
        }
        if existing
            .as_ref()
            .is_some_and(|j| j.state == RunState::RollingBack)
        {
            return Err(rollback_under_way());
        }
        let nodes = gather::nodes(&probes, targets).await?;
        let rotation = gather::rotation(plan, &nodes, request, existing.as_ref()).await?;
        if request.dry_run {
            print_moves(&rotation.journal.moves);
            println!("dry run: nothing changed");
            return Ok(());
        }
        let journal = match existing {
            Some(j) if j.state == RunState::Rotating => j,
            _ if rotation.journal.moves.is_empty() => {
                // Kept as it is: the last rotation stays the one `--rollback` undoes.
                out.say("nothing to rotate: every node's files already hold what --to names");
                out.emit(&crate::json_report::Done::new("nothing_to_rotate"));
                return Ok(());
            }
            _ => {
                if request.ask {
                    crate::confirm::before_rotation(
                        &plan.cluster,
                        &rotation_summary(&rotation.journal),
                    )?;
                }
                rotation.journal
            }
        };
        let mut engine = Engine::new(&store, journal, &nodes, out.clone());
        engine.planned = rotation.planned;
        engine.forward().await?;
        out.emit(&crate::json_report::Done::new("rotated"));
        Ok(())
    }
    .await;
    probes.shutdown().await;
    outcome
}

/// What a new rotation is about to do, for the question before its first change.
fn rotation_summary(journal: &RotationJournal) -> String {
    let mut text = String::new();
    for m in &journal.moves {
        let kinds: Vec<String> = m.files.iter().map(|f| f.kind.to_string()).collect();
        text.push_str(&format!(
            "  {:<11} {:<28} {}\n",
            m.phase.label(),
            m.node,
            kinds.join(", ")
        ));
    }
    let rollover = if journal.ca_rollover {
        "CA rollover: every node trusts both CAs, then gets its new certificate, then trusts only the new CA\n  "
    } else {
        ""
    };
    format!(
        "{text}  {rollover}no node restarts; each file's original is kept beside it (FILE.distls-rotate-PHASE); `distls rotate --rollback` puts them back\n"
    )
}

fn print_moves(moves: &[journal::Move]) {
    for m in moves {
        let files: Vec<String> = m
            .files
            .iter()
            .map(|f| {
                format!(
                    "{} {} ({}… → {}…)",
                    f.kind,
                    f.path.display(),
                    &f.before_sha256[..12],
                    &f.after_sha256[..12]
                )
            })
            .collect();
        println!(
            "{:<11} {:<28} {}",
            m.phase.label(),
            m.node,
            files.join(", ")
        );
    }
}

struct Engine<'a> {
    store: &'a RotationStore,
    journal: RotationJournal,
    nodes: &'a [RotationNode<'a>],
    planned: Vec<PlannedMove>,
    out: Output,
}

impl<'a> Engine<'a> {
    fn new(
        store: &'a RotationStore,
        journal: RotationJournal,
        nodes: &'a [RotationNode<'a>],
        out: Output,
    ) -> Self {
        Engine {
            store,
            journal,
            nodes,
            planned: Vec::new(),
            out,
        }
    }

    fn save(&mut self) -> Result<()> {
        Ok(self.store.save(&mut self.journal)?)
    }

    fn node(&self, name: &str) -> Result<&'a RotationNode<'a>> {
        self.nodes
            .iter()
            .find(|n| n.target.name() == name)
            .ok_or_else(|| {
                Error::InvalidInput(Message::new(format!(
                    "{}: the rotation names node {name}, which is not in the plan",
                    self.store.path().display()
                )))
            })
    }

    async fn forward(&mut self) -> Result<()> {
        // A new rotation (a resumed one has recorded its start already).
        if self.journal.events.is_empty() {
            self.journal.record("rotation started");
            self.save()?;
        }
        for index in 0..self.journal.moves.len() {
            if self.journal.moves[index].step == MoveStep::Verified {
                continue;
            }
            if let Err(err) = self.apply(index).await {
                if !matches!(err, Error::StepFailed(_)) {
                    // Not a proof that failed (a probe or the network): the journal stays
                    // resumable, a rerun goes on from this step.
                    return Err(err);
                }
                let failed =
                    Message::new(format!("{}: {err}", self.journal.moves[index].describe()));
                self.journal.record(&format!("failed: {err}"));
                self.save()?;
                return match self.rollback_all().await {
                    Ok(()) => Err(Error::StepFailed(failed.hint(
                        "every node's files were restored and its cache cleared; fix the cause, then rerun",
                    ))),
                    Err(rollback) => Err(Error::NeedsOperator(Message::new(format!(
                        "{failed}; rolling back failed too: {rollback}"
                    )))),
                };
            }
        }
        self.journal.state = RunState::Rotated;
        self.journal.record("rotated");
        self.save()?;
        self.out
            .say("rotated: every node serves its new certificate; no node restarted");
        Ok(())
    }

    /// Install, clear, prove: one move, resumable at each journal write.
    async fn apply(&mut self, index: usize) -> Result<()> {
        let started = Instant::now();
        let record = self.journal.moves[index].clone();
        let node = self.node(&record.node)?;
        let planned = self.planned.get(index).cloned().ok_or_else(|| {
            Error::InvalidInput(Message::new(
                "the rotation's moves changed since it began".to_string(),
            ))
        })?;
        let files = record
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        self.out.emit(&MoveBegins::new(
            index,
            &record.node,
            record.phase.label(),
            files,
        ));
        self.journal.set_step(index, MoveStep::Installing);
        self.save()?;
        install(node, &planned.writes, &record).await?;
        self.journal.set_step(index, MoveStep::Installed);
        self.save()?;
        clear(node).await?;
        let served = self.prove(node, &record.leaf_after).await?;
        self.journal.set_step(index, MoveStep::Verified);
        self.save()?;
        self.out.say(&format!(
            "{:<11} {:<28} {} file(s) installed, cache cleared, serves {}, new links ok ({:.1} s)",
            record.phase.label(),
            record.node,
            planned.writes.len(),
            served.describe(),
            started.elapsed().as_secs_f64()
        ));
        self.out.emit(&MoveDone::new(
            index,
            &record.node,
            record.phase.label(),
            &served,
            started.elapsed(),
        ));
        Ok(())
    }

    /// The node serves the leaf whose DER hashes to `leaf`, its OS pid is the one it had, and a
    /// new link from every peer's credentials (and its own) is accepted.
    async fn prove(&self, node: &RotationNode<'_>, leaf: &str) -> Result<CertSummary> {
        let name = node.target.name();
        node.probe.refresh().await?;
        let der = node.probe.served(name).await?;
        let served = CertSummary::from_der(&der).map_err(|e| step_failed(name, &e))?;
        if !leaf.is_empty() && served.sha256 != leaf {
            return Err(step_failed(
                name,
                &format!(
                    "still serves {} (not the certificate of this step)",
                    served.describe()
                ),
            ));
        }
        let mut asked: Vec<&Arc<Probe>> = Vec::new();
        for peer in self.nodes {
            if asked.iter().any(|p| Arc::ptr_eq(p, &peer.probe)) {
                continue;
            }
            asked.push(&peer.probe);
            peer.probe.refresh().await?;
            peer.probe.relink(name).await.map_err(|e| {
                step_failed(
                    name,
                    &format!(
                        "a new link with the credentials of {} was refused: {e}",
                        peer.target.name()
                    ),
                )
            })?;
        }
        let info = node.probe.info(name).await?;
        if let crate::probe::NodeInfo::Up { os_pid, .. } = info
            && node.os_pid != 0
            && os_pid != node.os_pid
        {
            return Err(step_failed(
                name,
                &format!(
                    "its OS pid changed ({} → {os_pid}): it restarted",
                    node.os_pid
                ),
            ));
        }
        Ok(served)
    }

    async fn rollback_all(&mut self) -> Result<()> {
        if self.journal.state == RunState::RolledBack {
            self.out.say("the rotation is already rolled back");
            return Ok(());
        }
        self.journal.state = RunState::RollingBack;
        self.journal.record("rolling back");
        self.save()?;
        for index in (0..self.journal.moves.len()).rev() {
            if matches!(
                self.journal.moves[index].step,
                MoveStep::Pending | MoveStep::Restored
            ) {
                continue;
            }
            self.restore(index).await?;
        }
        self.journal.state = RunState::RolledBack;
        self.journal.record("rolled back");
        self.save()?;
        self.out.say(
            "rolled back: every node's files restored and its cache cleared; no node restarted",
        );
        Ok(())
    }

    async fn restore(&mut self, index: usize) -> Result<()> {
        let record = self.journal.moves[index].clone();
        let node = self.node(&record.node)?;
        self.journal.set_step(index, MoveStep::Restoring);
        self.save()?;
        restore_files(node, &record.files).await?;
        // The probe presents the node's files too: its own caches must drop what was rolled back.
        node.probe.refresh().await?;
        let reachable = node.probe.info(node.target.name()).await?.is_up();
        if !reachable {
            self.out.say(&format!(
                "{:<11} {:<28} files restored; the node is not reachable, it reads them when it starts",
                record.phase.label(),
                record.node
            ));
        } else {
            clear(node).await?;
            self.prove(node, &record.leaf_before).await?;
        }
        self.journal.set_step(index, MoveStep::Restored);
        self.save()?;
        self.out.say(&format!(
            "{:<11} {:<28} restored",
            record.phase.label(),
            record.node
        ));
        self.out.emit(&MoveRestored::new(
            index,
            &record.node,
            record.phase.label(),
            reachable,
        ));
        Ok(())
    }
}

/// The journal `--forget` or `--rollback` works on: there must be one.
fn last_rotation(
    existing: Option<RotationJournal>,
    store: &RotationStore,
    to: &str,
) -> Result<RotationJournal> {
    existing.ok_or_else(|| {
        Error::InvalidInput(Message::new(format!(
            "{}: no rotation to {to}",
            store.path().display()
        )))
    })
}

fn rollback_under_way() -> Error {
    Error::Refused(
        Message::new("a rollback of this rotation is under way".to_string())
            .hint("finish it: distls rotate --rollback PLAN"),
    )
}

fn step_failed(node: &str, what: &str) -> Error {
    Error::StepFailed(Message::new(format!("{node}: {what}")))
}

/// The files of a move: each one's before-copy first (kept once), then all the new bytes
/// together, atomically, owner and mode kept ([`Transport::write_files_together`]: a ctl or a
/// node starting mid-move does not read a new certificate beside an old key). A file that already
/// holds the new bytes (a resumed move) is left alone; one that holds neither is someone else's
/// change, and stops the rotation.
async fn install(node: &RotationNode<'_>, writes: &[Write], record: &journal::Move) -> Result<()> {
    let transport = &node.target.transport;
    let mut pending: Vec<(&Path, &[u8])> = Vec::new();
    for write in writes {
        let change = record
            .files
            .iter()
            .find(|f| f.path == write.path)
            .ok_or_else(|| step_failed(&record.node, "the journal lacks a file of this move"))?;
        let live_sha = sha256_hex(&transport.read_file(&write.path).await?);
        if live_sha == change.after_sha256 {
            continue;
        }
        if live_sha != change.before_sha256 {
            return Err(Error::NeedsOperator(Message::new(format!(
                "{}: {} changed since the rotation began (it holds neither what it held nor the new file)",
                record.node,
                write.path.display()
            ))
            .hint("put back what it held, or roll the rotation back with distls rotate --rollback")));
        }
        let backup_ok = match transport.read_file(&change.backup).await {
            Ok(bytes) => sha256_hex(&bytes) == change.before_sha256,
            Err(_) => false,
        };
        if !backup_ok {
            transport
                .write_file_owned_like(&change.backup, &write.before, 0o600, &write.path)
                .await?;
        }
        pending.push((&write.path, &write.after));
    }
    transport.write_files_together(&pending, 0o600).await?;
    Ok(())
}

/// Puts back what a move's files held before it, from their before-copies (verified by hash),
/// all renamed together as the move wrote them.
async fn restore_files(node: &RotationNode<'_>, changes: &[journal::FileChange]) -> Result<()> {
    let transport = &node.target.transport;
    let mut restored: Vec<(&Path, Vec<u8>)> = Vec::new();
    for change in changes {
        let live_sha = sha256_hex(&transport.read_file(&change.path).await?);
        if live_sha == change.before_sha256 {
            continue;
        }
        if live_sha != change.after_sha256 {
            return Err(Error::NeedsOperator(
                Message::new(format!(
                    "{}: {} holds neither what the rotation wrote nor what it held before: someone changed it since",
                    node.target.name(),
                    change.path.display()
                ))
                .hint(format!(
                    "distls leaves it alone; its content before the rotation is in {}",
                    change.backup.display()
                )),
            ));
        }
        let backup = transport.read_file(&change.backup).await?;
        if sha256_hex(&backup) != change.before_sha256 {
            return Err(Error::NeedsOperator(Message::new(format!(
                "{}: the before-copy {} does not hold what {} held",
                node.target.name(),
                change.backup.display(),
                change.path.display()
            ))));
        }
        restored.push((&change.path, backup));
    }
    let files: Vec<(&Path, &[u8])> = restored.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    transport.write_files_together(&files, 0o600).await?;
    Ok(())
}

async fn clear(node: &RotationNode<'_>) -> Result<()> {
    let name = node.target.name();
    if !node.probe.clear_pem(name).await? {
        return Err(step_failed(
            name,
            "its ssl has no distribution PEM cache (ssl_pem_cache_dist) to clear",
        ));
    }
    Ok(())
}

/// A new journal for these moves.
fn new_journal(plan: &Plan, moves: Vec<journal::Move>, ca_rollover: bool) -> RotationJournal {
    let at = now();
    RotationJournal {
        format: journal::FORMAT,
        distls_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: plan.cluster.clone(),
        plan_sha256: plan.sha256.clone(),
        target_sha256: moves::target_sha256(&moves),
        ca_rollover,
        created_at: at.clone(),
        updated_at: at,
        state: RunState::Rotating,
        moves,
        events: Vec::new(),
    }
}
