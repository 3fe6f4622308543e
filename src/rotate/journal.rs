//! The intent log of a rotation: every move (one node's files in one phase) with the hashes of
//! what its files held before and hold after, written before each side effect. Hashes and paths
//! only, never a certificate or key.

use crate::journal::{JournalError, now, read_json, write_json};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped on any incompatible change; an unknown format is refused.
pub const FORMAT: u32 = 1;

/// The phases of a rotation. A plain rotation has one (`leaves`); a CA rollover three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// Every node trusts the old and the new CA.
    TrustBoth,
    /// Every node gets its new certificate and key (and, without a rollover, its new CA file).
    Leaves,
    /// Every node trusts only the new CA.
    TrustNew,
}

impl RotationPhase {
    pub fn label(self) -> &'static str {
        match self {
            RotationPhase::TrustBoth => "trust-both",
            RotationPhase::Leaves => "leaves",
            RotationPhase::TrustNew => "trust-new",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Rotating,
    Rotated,
    RollingBack,
    RolledBack,
    /// `--forget` is removing the before-copies: no rollback or new rotation until it is done.
    Forgetting,
}

/// A move's progress. `installing` and `restoring` are intents recorded before the files change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveStep {
    Pending,
    Installing,
    Installed,
    Verified,
    Restoring,
    Restored,
}

impl MoveStep {
    pub fn label(self) -> &'static str {
        match self {
            MoveStep::Pending => "pending",
            MoveStep::Installing => "installing",
            MoveStep::Installed => "installed",
            MoveStep::Verified => "verified",
            MoveStep::Restoring => "restoring",
            MoveStep::Restored => "restored",
        }
    }
}

/// What one file of a move holds before and after it, and where its before-copy is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// `certfile`, `keyfile` or `cacertfile`.
    pub kind: String,
    /// The path the node's running options name.
    pub path: PathBuf,
    pub backup: PathBuf,
    pub before_sha256: String,
    pub after_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub phase: RotationPhase,
    pub node: String,
    pub files: Vec<FileChange>,
    /// sha256 of the leaf (DER) the node serves before and after this move.
    pub leaf_before: String,
    pub leaf_after: String,
    pub step: MoveStep,
}

impl Move {
    pub fn describe(&self) -> String {
        format!("{} {}", self.phase.label(), self.node)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationJournal {
    pub format: u32,
    pub distls_version: String,
    pub cluster: String,
    pub plan_sha256: String,
    /// sha256 over every move's files and hashes: a rerun with other new files is refused.
    pub target_sha256: String,
    pub ca_rollover: bool,
    pub created_at: String,
    pub updated_at: String,
    pub state: RunState,
    pub moves: Vec<Move>,
    pub events: Vec<Event>,
}

impl RotationJournal {
    pub fn record(&mut self, what: &str) {
        self.events.push(Event {
            at: now(),
            what: what.to_string(),
        });
    }

    /// The one way a move's step changes; the event says which.
    pub fn set_step(&mut self, index: usize, step: MoveStep) {
        self.moves[index].step = step;
        let what = format!("{}: {}", self.moves[index].describe(), step.label());
        self.record(&what);
    }
}

/// Where a cluster's rotation journal lives: beside its migration journal, under the same lock.
pub struct RotationStore {
    path: PathBuf,
}

impl RotationStore {
    pub fn new(state_dir: &Path, cluster: &str) -> Self {
        RotationStore {
            path: state_dir.join(format!("{cluster}.rotation.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<RotationJournal>, JournalError> {
        read_json(&self.path, FORMAT)
    }

    /// The journal gone (`--forget`): a finished rotation nothing can roll back any more.
    pub fn remove(&self) -> std::io::Result<()> {
        crate::atomic_file::remove(&self.path)
    }

    /// Written atomically and fsynced, then the crash point of the step it records.
    pub fn save(&self, journal: &mut RotationJournal) -> Result<(), JournalError> {
        journal.updated_at = now();
        write_json(&self.path, journal)?;
        if let Some(event) = journal.events.last() {
            crate::failpoint::failpoint(&format!("rotate:{}", event.what));
        }
        Ok(())
    }
}
