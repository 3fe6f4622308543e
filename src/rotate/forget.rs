//! `distls rotate --forget`: a finished rotation's before-copies removed (one of them is the
//! old private key), then its journal; nothing can roll it back after this. docs/rotate.md.

use super::events::{Forgotten, Output};
use super::journal::{RotationJournal, RotationPhase, RotationStore, RunState};
use super::moves::backup_path;
use crate::atomic_file::sha256_hex;
use crate::error::{Error, Message, Result};
use crate::target::NodeTarget;
use std::collections::HashSet;
use std::path::PathBuf;

const PHASES: [RotationPhase; 3] = [
    RotationPhase::TrustBoth,
    RotationPhase::Leaves,
    RotationPhase::TrustNew,
];

/// A before-copy on a node's host, and what the journal says it holds (None: one an earlier
/// rotation left beside a file this one did not change).
struct Copy<'a> {
    target: &'a NodeTarget,
    path: PathBuf,
    kept_sha256: Option<String>,
}

/// Every copy first (a node the plan lacks, or a journal naming a copy that is not distls's,
/// stops it before anything is removed); then the journal says `forgetting`, so a rerun goes on
/// and neither a rollback nor a new rotation starts on half-removed copies; then each copy;
/// then the journal. A copy that cannot be read, or holds something else now, is left and named.
pub async fn forget(
    store: &RotationStore,
    mut journal: RotationJournal,
    targets: &[NodeTarget],
    ask: bool,
    out: &Output,
) -> Result<()> {
    if !matches!(
        journal.state,
        RunState::Rotated | RunState::RolledBack | RunState::Forgetting
    ) {
        return Err(Error::Refused(
            Message::new(format!(
                "{}: the rotation is not finished, and its before-copies are what its rollback needs",
                store.path().display()
            ))
            .hint("finish it (rerun the same distls rotate) or roll it back (--rollback), then --forget"),
        ));
    }
    let copies = copies(store, &journal, targets)?;
    if ask && journal.state != RunState::Forgetting {
        let names: Vec<String> = copies
            .iter()
            .filter(|c| c.kept_sha256.is_some())
            .map(|c| format!("  {}: {}\n", c.target.name(), c.path.display()))
            .collect();
        let earlier = "  and any copy an earlier rotation left beside the nodes' certificate, key and CA files\n";
        crate::confirm::before_forget(&journal.cluster, &(names.concat() + earlier))?;
    }
    journal.state = RunState::Forgetting;
    journal.record("forgetting");
    store.save(&mut journal)?;
    let mut removed = Vec::new();
    let mut left = Vec::new();
    for copy in &copies {
        match remove_copy(copy).await {
            Ok(true) => removed.push(format!("{}: {}", copy.target.name(), copy.path.display())),
            Ok(false) => {}
            Err(why) => left.push(format!(
                "{}: {}: {why}",
                copy.target.name(),
                copy.path.display()
            )),
        }
    }
    store
        .remove()
        .map_err(|e| Error::Internal(Message::new(format!("{}: {e}", store.path().display()))))?;
    out.say(&format!(
        "forgotten: {} before-copies removed and the rotation's journal with them; it can no longer be rolled back",
        removed.len()
    ));
    for line in &left {
        out.say(&format!("left in place: {line}"));
    }
    out.emit(&Forgotten::new(removed, left));
    Ok(())
}

/// The copies the journal names (each checked to be the name distls gives it), then any copy an
/// earlier rotation left beside one of the node's files.
fn copies<'a>(
    store: &RotationStore,
    journal: &RotationJournal,
    targets: &'a [NodeTarget],
) -> Result<Vec<Copy<'a>>> {
    let target_of = |name: &str| {
        targets.iter().find(|t| t.name() == name).ok_or_else(|| {
            Error::InvalidInput(Message::new(format!(
                "{}: the rotation names node {name}, which is not in the plan",
                store.path().display()
            )))
        })
    };
    let mut copies: Vec<Copy<'a>> = Vec::new();
    // (node, copy) pairs already listed: nodes sharing a file name its copy once each.
    let mut listed: HashSet<(&str, PathBuf)> = HashSet::new();
    for m in &journal.moves {
        let target = target_of(&m.node)?;
        for change in &m.files {
            if change.backup != backup_path(&change.path, m.phase) {
                return Err(Error::Refused(Message::new(format!(
                    "{}: names {} as the before-copy of {}, which is not the name distls gives it; nothing removed",
                    store.path().display(),
                    change.backup.display(),
                    change.path.display()
                ))));
            }
            if listed.insert((target.name(), change.backup.clone())) {
                copies.push(Copy {
                    target,
                    path: change.backup.clone(),
                    kept_sha256: Some(change.before_sha256.clone()),
                });
            }
        }
    }
    for target in targets {
        let tls = &target.spec.tls;
        for file in [&tls.certfile, &tls.keyfile, &tls.cacertfile] {
            for phase in PHASES {
                let path = backup_path(file, phase);
                if listed.insert((target.name(), path.clone())) {
                    copies.push(Copy {
                        target,
                        path,
                        kept_sha256: None,
                    });
                }
            }
        }
    }
    Ok(copies)
}

/// Whether the copy was there and is gone now; Err: why it stays.
async fn remove_copy(copy: &Copy<'_>) -> std::result::Result<bool, String> {
    let transport = &copy.target.transport;
    if !transport
        .try_exists(&copy.path)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(false);
    }
    // Read first: a link distls does not follow, a FIFO or a directory is refused here.
    let bytes = transport
        .read_file(&copy.path)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(kept) = &copy.kept_sha256
        && &sha256_hex(&bytes) != kept
    {
        return Err("it holds something else than what the rotation kept".to_string());
    }
    transport
        .remove_file(&copy.path)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}
