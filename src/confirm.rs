//! Before the first stop of a new run (or the first change of a new rotation), on a terminal:
//! what is about to happen, and a yes/no.
//! Asked only when stdin and stderr are terminals (never from CI, cron or a pipe into stdin),
//! and never with `--yes` or `--json`.

use crate::error::{Error, Message, Result};
use crate::plan::{Batch, Plan};
use crate::roll_mode::RollMode;
use std::io::{BufRead, IsTerminal, Write};

pub fn before_first_stop(plan: &Plan, mode: RollMode, batch: Batch) -> Result<()> {
    ask(&summary(plan, mode, batch))
}

/// Before a new rotation's first change (`distls rotate`): its moves, then the same question.
pub fn before_rotation(cluster: &str, moves: &str) -> Result<()> {
    ask(&format!(
        "distls will rotate the TLS files of cluster {cluster}, node by node:\n{moves}"
    ))
}

/// Before `distls rotate --forget` removes a finished rotation's before-copies.
pub fn before_forget(cluster: &str, copies: &str) -> Result<()> {
    ask(&format!(
        "distls will remove the before-copies of cluster {cluster}'s last rotation, then its journal; it can no longer be rolled back:\n{copies}"
    ))
}

/// The question, on a terminal only; anything but y/yes changes nothing.
fn ask(summary: &str) -> Result<()> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{summary}Proceed? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Internal(Message::new(format!("cannot read the answer: {e}"))))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Refused(
            Message::new("not confirmed: distls changed nothing")
                .hint("rerun and answer y, or pass --yes to skip the question"),
        )),
    }
}

/// The plan as the question shows it: cluster, nodes in order, the roll, what changes.
fn summary(plan: &Plan, mode: RollMode, batch: Batch) -> String {
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    let roll = match mode {
        RollMode::ZeroSplit => {
            "zero-split: each node restarts once into distls's hybrid module, then every node is sealed to TLS without a restart; the cluster stays one mesh"
        }
        RollMode::Classic => {
            "classic: each node restarts once into TLS; migrated and plain nodes cannot see each other until the last node switches"
        }
    };
    let mut files: Vec<&str> = plan.nodes.iter().map(|n| n.flavor.file_label()).collect();
    files.dedup();
    let batches = batch
        .groups_line(&names)
        .map(|line| format!("  {line}\n"))
        .unwrap_or_default();
    format!(
        "distls will switch cluster {} to TLS distribution:\n  nodes, in this order: {}\n  roll: {roll}\n{batches}  changes: each node's {} (its original kept beside it)\n",
        plan.cluster,
        names.join(", "),
        files.join(" / "),
    )
}
