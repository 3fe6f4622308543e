//! What the engine tells the operator, as data: which node does what, and the notes worth
//! keeping on screen. A [`Reporter`] chooses the words (progress.rs) or, later, the JSON; the
//! engine never formats a line for a person itself.

use serde::Serialize;

/// One thing the engine reports. Serialized as one JSON object (`--json`, docs/json.md): the
/// variant's name in `event`, its fields beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Node `index` (plan order) is doing `activity` now.
    Node {
        index: usize,
        #[serde(rename = "node")]
        name: String,
        activity: NodeActivity,
    },
    /// Node `index` is where this roll takes it, `seconds` after this run turned to it.
    NodeDone {
        index: usize,
        node: String,
        seconds: f64,
    },
    Note {
        note: Note,
    },
    /// The roll ends (well or not): nothing more about it follows.
    Finished,
}

/// What distls is doing to one node right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeActivity {
    Stopping,
    /// The classic roll edits the flags file (`file`: its label, e.g. `vm.dist.args`).
    EnablingTls {
        file: String,
    },
    /// A zero-split roll switches the flags file to a stage.
    SwitchingFile {
        file: String,
        to: String,
    },
    /// Back to the original file (`back_to`: the stage of a zero-split roll).
    RestoringFile {
        file: String,
        back_to: Option<String>,
    },
    /// `runs`: what it should run once up (`tls`, `plain tcp`, a stage).
    Starting {
        runs: String,
    },
    AwaitingTlsLinks,
    AwaitingFullMesh,
    AwaitingPlainLinks,
    Sealing,
    Unsealing,
    CheckingCtl,
    AwaitingReady,
    /// `commands.before_stop` must pass before the node is stopped.
    AwaitingBeforeStop,
    /// `commands.after_start` must pass before the roll goes on.
    AwaitingAfterStart,
}

/// A line that must stay visible: a phase change, a warning, a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// A zero-split run begins one of its rolls (`roll`: its stages, `plain tcp → H (…)`).
    RollBegins {
        roll: String,
    },
    FinishingInterruptedRollback,
    VerifyingCompletedRun,
    /// A step failed; the failure policy comes next.
    StepFailed {
        message: String,
    },
    /// The rollback begins: every touched node returns to `back_to`, newest first.
    RollingBack {
        back_to: String,
    },
    /// The stop command failed (`said`), but the node went down anyway.
    StoppedDespiteItsCommand {
        node: String,
        said: String,
    },
    /// The stop command failed and the node still runs: distls asks the VM itself to stop.
    AskingVmToStop {
        node: String,
        halt: bool,
    },
    /// A force-stop signal, as journaled (`what`), and what the stop command said, if anything.
    Signalling {
        node: String,
        what: String,
        stop_said: Option<String>,
    },
    /// The force-stopped node's OS process is gone (`what`, as journaled).
    ForceStopped {
        node: String,
        what: String,
    },
    /// `--pause-after`: `nodes` were restarted; the run stopped before `next`.
    PausedAfterCanary {
        nodes: usize,
        next: String,
    },
}

/// One line of the final table.
pub struct NodeSummary {
    pub name: String,
    /// What it runs, e.g. `tls` (zero-split: the stage).
    pub runs: &'static str,
    pub links: String,
    pub took: Option<std::time::Duration>,
}

/// Who receives the engine's events: the human progress display, a JSON stream, a test.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);
}
