//! The intent log of a roll: written (atomically, fsynced) before every side effect, so an
//! interrupted run can resume where it stopped. It holds hashes and paths, never secrets.

use crate::atomic_file;
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A journal larger than this is not one distls wrote (a few KiB per node).
const JOURNAL_LIMIT: u64 = 16 * 1024 * 1024;

/// Bumped on any incompatible change; an unknown format is refused, never guessed at.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Migrating,
    Paused,
    RollingBack,
    RolledBack,
    Completed,
}

/// Per-node progress. The `*ing` steps are intents recorded before the side effect; the others are
/// facts recorded after it. On resume the world is observed anyway; the journal says what to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Pending,
    Stopping,
    Stopped,
    Editing,
    Edited,
    Starting,
    Started,
    Rejoined,
    Verified,
    RevertStopping,
    RevertRestoring,
    RevertStarting,
    Reverted,
    /// Zero-split, one-restart path: the seal at run time (no restart), and its undoing.
    Sealing,
    Sealed,
    Unsealing,
}

impl Phase {
    /// Whether a run may go from this phase to `next`. The same phase again is always allowed (a
    /// resumed run records it again). Only a zero-split run goes on after `completed` or
    /// `rolled_back` (its next roll begins `migrating`); a rollback ends `rolled_back`, or
    /// `paused` when a rerun's rollback step fails under the pause policy.
    pub fn may_go_to(self, next: Phase, zero_split: bool) -> bool {
        use Phase::*;
        self == next
            || matches!(
                (self, next),
                (Migrating, Paused | RollingBack | Completed)
                    | (Paused, Migrating | RollingBack)
                    | (RollingBack, RolledBack | Paused)
                    | (RolledBack, RollingBack)
                    // A finished run checked again (`migrate` on a completed journal) whose
                    // check fails: the failure policy applies.
                    | (Completed, Paused | RollingBack | RolledBack)
            )
            || (zero_split && matches!((self, next), (Completed | RolledBack, Migrating)))
    }
}

impl Step {
    pub const ALL: [Step; 16] = [
        Step::Pending,
        Step::Stopping,
        Step::Stopped,
        Step::Editing,
        Step::Edited,
        Step::Starting,
        Step::Started,
        Step::Rejoined,
        Step::Verified,
        Step::RevertStopping,
        Step::RevertRestoring,
        Step::RevertStarting,
        Step::Reverted,
        Step::Sealing,
        Step::Sealed,
        Step::Unsealing,
    ];

    /// Whether this step may be recorded after `previous`. The journal is an intent log: a
    /// side effect's completion (`stopped`, `edited`, `started`, `sealed`) is recorded only after
    /// its intent; `pending` again only after a file put back on the way forward. Intents and
    /// the observed facts (`rejoined`, `verified`, `reverted`) may follow any step: the engine
    /// chooses them from what it observes, whatever the journal last said.
    pub fn may_follow(self, previous: Step) -> bool {
        use Step::*;
        self == previous
            || match self {
                Stopped => matches!(
                    previous,
                    Stopping | RevertStopping | RevertRestoring | Unsealing
                ),
                Edited => previous == Editing,
                Started => matches!(previous, Starting | RevertStarting),
                Sealed => previous == Sealing,
                Pending => previous == RevertRestoring,
                _ => true,
            }
    }

    /// On the way forward, the node has not been seen rejoined yet (a step of the forward
    /// sequence before `rejoined`). Steps have no order of their own: forward, revert and seal
    /// steps are different sequences.
    pub fn before_rejoin(self) -> bool {
        use Step::*;
        matches!(
            self,
            Pending | Stopping | Stopped | Editing | Edited | Starting | Started
        )
    }

    /// Recorded only once the node's flags file was edited at least once (so distls made its
    /// backup): every step from `edited` on, forward, revert or seal.
    pub fn after_first_edit(self) -> bool {
        use Step::*;
        !matches!(self, Pending | Stopping | Stopped | Editing)
    }

    pub fn label(self) -> &'static str {
        match self {
            Step::Pending => "pending",
            Step::Stopping => "stopping",
            Step::Stopped => "stopped",
            Step::Editing => "editing",
            Step::Edited => "edited",
            Step::Starting => "starting",
            Step::Started => "started",
            Step::Rejoined => "rejoined",
            Step::Verified => "verified",
            Step::RevertStopping => "revert-stopping",
            Step::RevertRestoring => "revert-restoring",
            Step::RevertStarting => "revert-starting",
            Step::Reverted => "reverted",
            Step::Sealing => "sealing",
            Step::Sealed => "sealed",
            Step::Unsealing => "unsealing",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub vm_dist_args: PathBuf,
    pub backup: PathBuf,
    pub original_sha256: String,
    pub tls_sha256: String,
    pub step: Step,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    pub node: Option<String>,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub distls_version: String,
    pub cluster: String,
    pub plan_path: PathBuf,
    pub plan_sha256: String,
    pub created_at: String,
    pub updated_at: String,
    pub phase: Phase,
    pub failure: Option<String>,
    pub nodes: Vec<NodeRecord>,
    pub events: Vec<Event>,
    /// Only for a zero-split run: which of its rolls is under way (node steps are that
    /// roll's). Absent in the journal of a classic roll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_split: Option<crate::stage::RollState>,
}

/// A sha256 as distls writes it: 64 lowercase hex digits.
fn check_sha256(field: &str, value: &str) -> Result<(), String> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Ok(());
    }
    let shown: String = value.chars().take(80).collect();
    Err(format!(
        "`{field}` is {shown:?}, not a sha256 (64 lowercase hex digits)"
    ))
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Journal {
    pub fn new(cluster: &str, plan_path: &Path, plan_sha256: &str, nodes: Vec<NodeRecord>) -> Self {
        let at = now();
        Journal {
            format: FORMAT,
            distls_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster: cluster.to_string(),
            plan_path: plan_path.to_path_buf(),
            plan_sha256: plan_sha256.to_string(),
            created_at: at.clone(),
            updated_at: at,
            phase: Phase::Migrating,
            failure: None,
            nodes,
            events: Vec::new(),
            zero_split: None,
        }
    }

    /// What serde cannot check: a hand-edited journal is refused here, with what is wrong, rather
    /// than trusted (or sliced) later.
    pub fn validate(&self) -> Result<(), String> {
        check_sha256("plan_sha256", &self.plan_sha256)?;
        if self.cluster.is_empty() {
            return Err("`cluster` is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.name.is_empty() {
                return Err(format!("nodes[{index}].name is empty"));
            }
            if !seen.insert(node.name.as_str()) {
                return Err(format!("node {} is listed twice in `nodes`", node.name));
            }
            check_sha256(
                &format!("nodes[{index}].original_sha256"),
                &node.original_sha256,
            )?;
            check_sha256(&format!("nodes[{index}].tls_sha256"), &node.tls_sha256)?;
        }
        for (index, event) in self.events.iter().enumerate() {
            if let Some(node) = &event.node
                && !seen.contains(node.as_str())
            {
                return Err(format!(
                    "events[{index}] names node {node}, which is not in `nodes`"
                ));
            }
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The one way a node's step changes within a roll: an illegal move is a bug in distls,
    /// refused before it reaches the file.
    pub fn set_step(&mut self, name: &str, step: Step) -> Result<(), JournalError> {
        let record = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| JournalError::IllegalMove(format!("no node {name} in the journal")))?;
        if !step.may_follow(record.step) {
            return Err(JournalError::IllegalMove(format!(
                "node {name}: step `{}` cannot follow `{}`",
                step.label(),
                record.step.label()
            )));
        }
        record.step = step;
        self.record(Some(name), step.label());
        Ok(())
    }

    /// The one way the run's phase changes (see [`Phase::may_go_to`]).
    pub fn set_phase(&mut self, phase: Phase) -> Result<(), JournalError> {
        if !self.phase.may_go_to(phase, self.zero_split.is_some()) {
            return Err(JournalError::IllegalMove(format!(
                "phase {:?} cannot follow {:?}",
                phase, self.phase
            )));
        }
        self.phase = phase;
        Ok(())
    }

    /// The next roll of a zero-split run begins: every node's step starts over.
    pub fn begin_roll(&mut self, roll: crate::stage::RollState) -> Result<(), JournalError> {
        self.set_phase(Phase::Migrating)?;
        for node in &mut self.nodes {
            node.step = Step::Pending;
        }
        self.zero_split = Some(roll);
        self.record(None, &format!("next roll: {}", roll.describe()));
        Ok(())
    }

    pub fn record(&mut self, node: Option<&str>, what: &str) {
        self.events.push(Event {
            at: now(),
            node: node.map(str::to_string),
            what: what.to_string(),
        });
    }
}

/// Shown as its [`JournalError::message`]: what went wrong, then the hint on its own line.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    NoSpace {
        dir: PathBuf,
        available: u64,
        needed: u64,
    },
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    /// A step or phase change the journal refuses: a bug in distls, caught before it is saved.
    IllegalMove(String),
    Locked {
        path: PathBuf,
        holder: String,
    },
}

impl JournalError {
    pub fn message(&self) -> Message {
        match self {
            JournalError::Io { path, source } => Message::new(format!("{}: {source}", path.display())).hint(format!(
                "distls keeps its journal and lock in {}: make it a writable directory with free space (or pass --state-dir DIR), then rerun",
                path.parent().unwrap_or(Path::new(".")).display()
            )),
            JournalError::NoSpace { dir, available, needed } => Message::new(format!(
                "{}: only {available} bytes free, the journal of this run needs {needed}; this run changed nothing",
                dir.display()
            ))
            .hint("free space there, or pass --state-dir DIR on a filesystem with room, then rerun"),
            JournalError::Unreadable { path, reason } => Message::new(format!(
                "{}: not a distls journal this version can read ({reason})",
                path.display()
            ))
            .hint("finish or roll back with the distls version that wrote it, or move the file away to start over"),
            JournalError::IllegalMove(what) => Message::new(format!("internal error: refused journal change: {what}"))
                .hint("this is a bug in distls; the journal on disk is unchanged, rerun to resume and report it"),
            JournalError::Locked { path, holder } => Message::new(format!(
                "another distls run (pid {holder}) holds the lock {} for this cluster",
                path.display()
            ))
            .hint("wait for it to finish; if that process is gone the lock is released automatically"),
        }
    }
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.message().fmt(f)
    }
}

/// Where a cluster's journal and lock live, and the held lock.
pub struct JournalStore {
    journal_path: PathBuf,
    lock_path: PathBuf,
    _lock: Option<File>,
}

impl JournalStore {
    pub fn new(state_dir: &Path, cluster: &str) -> Self {
        JournalStore {
            journal_path: state_dir.join(format!("{cluster}.journal.json")),
            lock_path: state_dir.join(format!("{cluster}.lock")),
            _lock: None,
        }
    }

    /// Another handle on the same journal, for reading: it holds no lock.
    pub fn reader(&self) -> JournalStore {
        JournalStore {
            journal_path: self.journal_path.clone(),
            lock_path: self.lock_path.clone(),
            _lock: None,
        }
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// Take the per-cluster lock. It is an flock, so a killed run leaves no stale lock behind.
    pub fn lock(&mut self) -> Result<(), JournalError> {
        let io_err = |source| JournalError::Io {
            path: self.lock_path.clone(),
            source,
        };
        create_private_dir(self.lock_path.parent().unwrap_or(Path::new("."))).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode_private()
            .open(&self.lock_path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(JournalError::Locked {
                    path: self.lock_path.clone(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        self._lock = Some(file);
        Ok(())
    }

    /// Before the first side effect: the state directory must have room for every journal write
    /// of the run (each one is a complete copy beside the old file until the rename), so a full
    /// disk stops the run here rather than between a node's stop and its next journal entry.
    pub fn check_space(&self, nodes: usize) -> Result<(), JournalError> {
        let dir = self.journal_path.parent().unwrap_or(Path::new("."));
        let needed = JOURNAL_SPACE_BASE + JOURNAL_SPACE_PER_NODE * nodes as u64;
        let available = free_bytes(dir).map_err(|source| JournalError::Io {
            path: self.journal_path.clone(),
            source,
        })?;
        if available < needed {
            return Err(JournalError::NoSpace {
                dir: dir.to_path_buf(),
                available,
                needed,
            });
        }
        Ok(())
    }

    pub fn load(&self) -> Result<Option<Journal>, JournalError> {
        let Some(journal) = read_json::<Journal>(&self.journal_path, FORMAT)? else {
            return Ok(None);
        };
        journal
            .validate()
            .map_err(|reason| JournalError::Unreadable {
                path: self.journal_path.clone(),
                reason,
            })?;
        Ok(Some(journal))
    }

    /// Move the journal aside (`<journal>.archived-<time>`), for `migrate --new-run`; the
    /// archived name is returned.
    pub fn archive(&self) -> Result<PathBuf, JournalError> {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(':', "");
        let mut name = self.journal_path.as_os_str().to_owned();
        name.push(format!(".archived-{stamp}"));
        let archived = PathBuf::from(name);
        fs::rename(&self.journal_path, &archived).map_err(|source| JournalError::Io {
            path: self.journal_path.clone(),
            source,
        })?;
        Ok(archived)
    }

    pub fn save(&self, journal: &mut Journal) -> Result<(), JournalError> {
        journal.updated_at = now();
        write_json(&self.journal_path, journal)
    }
}

/// A journal file of distls (`format` first): none yet is `None`; an unknown format, or JSON
/// that does not fit, is refused, never guessed at. Read through the same no-unexpected-links
/// reader as every node file (docs/security.md).
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: u32,
) -> Result<Option<T>, JournalError> {
    let bytes = match crate::atomic_file::read(path, JOURNAL_LIMIT) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let unreadable = |reason: String| JournalError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    let found = value.get("format").and_then(|f| f.as_u64());
    if found != Some(u64::from(format)) {
        return Err(unreadable(format!(
            "format {}, this distls reads format {format}",
            found.map_or("missing".to_string(), |f| f.to_string())
        )));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| unreadable(e.to_string()))
}

/// Written atomically and fsynced, mode 0600.
pub fn write_json<T: Serialize>(path: &Path, journal: &T) -> Result<(), JournalError> {
    let text = serde_json::to_vec_pretty(journal).expect("journal serializes");
    atomic_file::write(path, &text, 0o600).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Room the journal needs: twice its largest size (old file + new copy), with margin. A node's
/// record and its events over a whole roll and rollback stay well under 4 KiB.
const JOURNAL_SPACE_BASE: u64 = 64 * 1024;
const JOURNAL_SPACE_PER_NODE: u64 = 8 * 1024;

fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid NUL-terminated string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(u64::from(stat.f_bavail as u64) * u64::from(stat.f_frsize as u64))
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        Journal::new(
            "c",
            Path::new("/p.yaml"),
            &"a".repeat(64),
            vec![NodeRecord {
                name: "a@h".into(),
                vm_dist_args: "/x".into(),
                backup: "/x.distls-orig".into(),
                original_sha256: "1".repeat(64),
                tls_sha256: "2".repeat(64),
                step: Step::Pending,
            }],
        )
    }

    #[test]
    fn a_completion_is_recorded_only_after_its_intent() {
        let mut journal = sample();
        let err = journal.set_step("a@h", Step::Edited).unwrap_err();
        assert!(
            err.to_string()
                .contains("node a@h: step `edited` cannot follow `pending`"),
            "{err}"
        );
        assert_eq!(journal.nodes[0].step, Step::Pending, "nothing changed");
        for step in [Step::Stopping, Step::Stopped, Step::Editing, Step::Edited] {
            journal.set_step("a@h", step).unwrap();
        }
        assert!(journal.set_step("a@h", Step::Started).is_err());
        assert!(journal.set_step("a@h", Step::Sealed).is_err());
        // Observed facts follow whatever the journal said: a resumed run finds the node up.
        journal.set_step("a@h", Step::Rejoined).unwrap();
        journal.set_step("a@h", Step::Verified).unwrap();
        // Rollback: intent first, then its completion; `pending` only after a file put back.
        assert!(journal.set_step("a@h", Step::Pending).is_err());
        journal.set_step("a@h", Step::RevertStopping).unwrap();
        journal.set_step("a@h", Step::Stopped).unwrap();
        journal.set_step("a@h", Step::RevertRestoring).unwrap();
        journal.set_step("a@h", Step::Pending).unwrap();
        assert!(journal.set_step("nobody@h", Step::Stopping).is_err());
    }

    #[test]
    fn steps_answer_questions_instead_of_being_compared() {
        use Step::*;
        let before_rejoin = [
            Pending, Stopping, Stopped, Editing, Edited, Starting, Started,
        ];
        let after_first_edit = [
            Edited,
            Starting,
            Started,
            Rejoined,
            Verified,
            RevertStopping,
            RevertRestoring,
            RevertStarting,
            Reverted,
            Sealing,
            Sealed,
            Unsealing,
        ];
        for step in Step::ALL {
            assert_eq!(
                step.before_rejoin(),
                before_rejoin.contains(&step),
                "{step:?}"
            );
            assert_eq!(
                step.after_first_edit(),
                after_first_edit.contains(&step),
                "{step:?}"
            );
        }
    }

    #[test]
    fn a_rollback_never_turns_into_a_migration() {
        use Phase::*;
        let mut journal = sample();
        assert!(journal.set_phase(RolledBack).is_err());
        journal.set_phase(Paused).unwrap();
        assert!(journal.set_phase(Completed).is_err());
        journal.set_phase(RollingBack).unwrap();
        for refused in [Migrating, Completed] {
            assert!(journal.set_phase(refused).is_err(), "{refused:?}");
        }
        journal.set_phase(RolledBack).unwrap();
        assert!(journal.set_phase(Completed).is_err());
        assert!(
            journal.set_phase(Migrating).is_err(),
            "a classic run is over once rolled back"
        );
        // A zero-split run goes on after a roll went back: its next roll heads to plain.
        journal.zero_split = Some(crate::stage::RollState::first(
            crate::stage::RollPath::OneRestart,
        ));
        let back = journal
            .zero_split
            .unwrap()
            .next()
            .unwrap()
            .back_to_plain()
            .unwrap();
        journal.begin_roll(back).unwrap();
        assert_eq!(journal.phase, Migrating);
        assert!(journal.nodes.iter().all(|n| n.step == Step::Pending));
        journal.set_phase(Completed).unwrap();
        // A finished run checked again may pause when its check fails.
        journal.set_phase(Paused).unwrap();
    }

    #[test]
    fn round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::new(dir.path(), "c");
        let mut journal = sample();
        journal.set_step("a@h", Step::Stopping).unwrap();
        store.save(&mut journal).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.nodes[0].step, Step::Stopping);
        let mode = fs::metadata(store.journal_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::new(dir.path(), "c");
        fs::write(store.journal_path(), r#"{"format": 99}"#).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
    }

    /// A hand-edited journal is refused with the file and the field, never trusted or sliced.
    #[test]
    fn a_hand_edited_journal_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::new(dir.path(), "c");
        let mut journal = sample();
        store.save(&mut journal).unwrap();
        let text = fs::read_to_string(store.journal_path()).unwrap();
        for (from, to, field) in [
            (&"a".repeat(64), "abc", "plan_sha256"),
            (&"1".repeat(64), "", "nodes[0].original_sha256"),
            (&"2".repeat(64), &"Z".repeat(64), "nodes[0].tls_sha256"),
        ] {
            fs::write(store.journal_path(), text.replace(from.as_str(), to)).unwrap();
            let err = store.load().unwrap_err().to_string();
            assert!(
                err.contains(&store.journal_path().display().to_string()),
                "{err}"
            );
            assert!(err.contains(field) && err.contains("hint:"), "{err}");
        }
    }

    #[test]
    fn second_lock_is_refused_with_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = JournalStore::new(dir.path(), "c");
        first.lock().unwrap();
        let mut second = JournalStore::new(dir.path(), "c");
        let err = second.lock().unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        second.lock().unwrap();
    }
}
