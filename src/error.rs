//! Every way a run can end badly, and the exit code each one gets (docs/exit-codes.md).

use crate::journal::JournalError;
pub use crate::message::Message;
use crate::plan::PlanError;
use crate::probe::ProbeError;
use crate::ssh::SshError;
use crate::transport::TransportError;

pub mod exit_code {
    /// Done: the cluster is where it was asked to be.
    pub const OK: u8 = 0;
    /// A bug or an unexpected local failure (I/O on the state directory, …).
    pub const INTERNAL: u8 = 1;
    /// The plan, a node's files or the command line are wrong; nothing was touched.
    pub const INVALID_INPUT: u8 = 2;
    /// The cluster is not in a state to start (a node down, not meshed, …); nothing was touched.
    pub const REFUSED: u8 = 3;
    /// A step failed; the cluster was rolled back to plain TCP (or paused, with `--on-failure pause`).
    pub const STEP_FAILED: u8 = 4;
    /// The cluster needs the operator: a rollback could not finish, or the world contradicts the journal.
    pub const NEEDS_OPERATOR: u8 = 5;
    /// Another distls run holds the lock for this cluster.
    pub const LOCKED: u8 = 6;
    /// Ctrl-C: stopped at a safe point; rerun to resume.
    pub const INTERRUPTED: u8 = 130;

    /// Every code with what it means, for the manual page (docs/exit-codes.md says more).
    pub const TABLE: &[(u8, &str)] = &[
        (
            OK,
            "done: the cluster is where the command was asked to take it",
        ),
        (
            INTERNAL,
            "internal error: a bug, or local I/O (state directory, probe VM); rerun to resume",
        ),
        (
            INVALID_INPUT,
            "invalid input: the plan, a node's files, the journal format or the command line; nothing was touched",
        ),
        (
            REFUSED,
            "refused: the cluster is not in a state to start, the journal belongs to an earlier cluster, or a preflight check FAILed (check --expiry: a served certificate expires within the window); nothing was touched",
        ),
        (
            STEP_FAILED,
            "a step failed: the cluster was rolled back to plain TCP (or paused with --on-failure pause)",
        ),
        (
            NEEDS_OPERATOR,
            "needs the operator: a rollback could not finish, or a node contradicts the journal",
        ),
        (
            LOCKED,
            "another distls run holds the lock (the state directory's, or a node's run lock on its host)",
        ),
        (
            INTERRUPTED,
            "interrupted (Ctrl-C) at a safe point; rerun to resume",
        ),
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    InvalidInput(Message),
    #[error("{0}")]
    Refused(Message),
    #[error("{0}")]
    StepFailed(Message),
    #[error("{0}")]
    NeedsOperator(Message),
    #[error("{0}")]
    Interrupted(Message),
    /// Another run holds a node's lock on its host (docs/locks.md).
    #[error("{0}")]
    Locked(Message),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{0}")]
    Internal(Message),
}

impl Error {
    /// What the operator reads on stderr: `error: …`; a plan error renders its own `error:`
    /// line, with its location and the offending source line.
    pub fn report(&self) -> String {
        match self {
            Error::Plan(plan) => plan.to_string(),
            other => format!("error: {other}"),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Plan(_) | Error::InvalidInput(_) => exit_code::INVALID_INPUT,
            Error::Refused(_) | Error::Ssh(_) => exit_code::REFUSED,
            Error::StepFailed(_) => exit_code::STEP_FAILED,
            Error::NeedsOperator(_) => exit_code::NEEDS_OPERATOR,
            Error::Interrupted(_) => exit_code::INTERRUPTED,
            Error::Journal(JournalError::Locked { .. }) | Error::Locked(_) => exit_code::LOCKED,
            Error::Journal(JournalError::Unreadable { .. }) => exit_code::INVALID_INPUT,
            Error::Journal(
                JournalError::Io { .. }
                | JournalError::NoSpace { .. }
                | JournalError::IllegalMove(_),
            )
            | Error::Probe(_)
            | Error::Transport(_)
            | Error::Internal(_) => exit_code::INTERNAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_data_and_shows_on_its_own_line() {
        let message = Message::new("node a@h is down").hint("start it, then rerun");
        assert_eq!(message.hint.as_deref(), Some("start it, then rerun"));
        let error = Error::Refused(message);
        assert_eq!(
            error.to_string(),
            "node a@h is down\n  hint: start it, then rerun"
        );
        assert_eq!(error.exit_code(), exit_code::REFUSED);
        assert_eq!(Error::Internal("no hint".into()).to_string(), "no hint");
    }
}
