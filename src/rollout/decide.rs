//! The decision of the per-node driver, a pure function of what the node's file says, what it
//! runs and its journal step: the next action, or why no action is safe.

use crate::journal::Step;
use crate::observe::Running;
use crate::target::FileState;

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
