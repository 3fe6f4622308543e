//! A roll as a value: which stage the nodes leave and which they reach, and what the engine
//! must prove on the way. The engine asks the roll, never "am I zero-split?": the classic roll,
//! each roll of a zero-split run and their rollbacks are one engine given different rolls.

use crate::observe::Running;
use crate::probe::NodeInfo;
use crate::stage::{RollPath, RollState, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roll {
    /// Plain TCP to stock TLS, one restart per node. The cluster is two islands while mixed (a
    /// plain node and a TLS node cannot link), so a restarted node proves it rejoined the TLS
    /// island, and the plain island stays whole.
    Classic,
    /// One roll of a zero-split run (journaled as its `RollState`): every node from one stage to
    /// the next, the cluster one mesh throughout.
    Stages(RollState),
}

/// What a restarted node must show before the roll goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinGate {
    /// Linked over TLS to the nodes already switched, and the rest still one plain island.
    TlsIsland,
    /// Every node linked to every other node (one mesh), each pair of one stage over that
    /// stage's transport.
    FullMesh,
}

impl Roll {
    /// The zero-split roll, if this is one (for what only its journal record holds).
    pub fn state(self) -> Option<RollState> {
        match self {
            Roll::Classic => None,
            Roll::Stages(state) => Some(state),
        }
    }

    /// What the node runs, in this roll's terms: `Plain` is where the roll starts, `Tls` where
    /// it goes, `Other` any other stage.
    pub fn running(self, info: &NodeInfo) -> Running {
        let Roll::Stages(roll) = self else {
            return Running::of_info(info);
        };
        match info.proto_dist().map(Stage::of_signature) {
            None => Running::of_info(info),
            Some(Some(stage)) if stage == roll.from => Running::Plain,
            Some(Some(stage)) if stage == roll.to => Running::Tls,
            Some(_) => Running::Other,
        }
    }

    /// How the operator reads `running` (a stage's name in a zero-split roll).
    pub fn label(self, running: Running) -> &'static str {
        match (self, running) {
            (Roll::Stages(roll), Running::Plain) => roll.from.label(),
            (Roll::Stages(roll), Running::Tls) => roll.to.label(),
            _ => running.label(),
        }
    }

    /// How a sentence names what nodes run: "TLS" for stock TLS, a stage by its label.
    pub fn in_sentence(self, running: Running) -> &'static str {
        match (self, running) {
            (Roll::Classic, Running::Tls) => "TLS",
            _ => self.label(running),
        }
    }

    /// The transport of links among nodes that all run `running` (the roll's start or end).
    pub fn links_tls(self, running: Running) -> bool {
        match (self, running) {
            (Roll::Stages(roll), Running::Plain) => roll.from.links_tls(),
            (Roll::Stages(roll), _) => roll.to.links_tls(),
            (Roll::Classic, running) => running == Running::Tls,
        }
    }

    /// Whether this roll heads for TLS: the classic roll, and a zero-split roll of a run on its
    /// way to TLS (not one turning back to plain after a failure or for `distls rollback`).
    pub fn toward_tls(self) -> bool {
        self.state().is_none_or(|r| r.toward == Stage::Tls)
    }

    /// Whether a flavor's default gates (RabbitMQ's quorum check and drain) run in this roll:
    /// only where the cluster stays one mesh. In the classic roll the switched nodes and the
    /// plain ones cannot reach each other, so a quorum check cannot pass and a drain or revive
    /// may wait for the other side (docs/hooks.md); a plan's own gates always run.
    pub fn runs_flavor_gates(self) -> bool {
        matches!(self, Roll::Stages(_))
    }

    pub fn rejoin_gate(self) -> RejoinGate {
        match self {
            Roll::Classic => RejoinGate::TlsIsland,
            Roll::Stages(_) => RejoinGate::FullMesh,
        }
    }

    /// Whether each node reports ready (`commands.ready`) before the next one is touched: a
    /// zero-split roll keeps every node serving, so a node still loading its tables must not
    /// be followed by another restart.
    pub fn ready_after_each_node(self) -> bool {
        matches!(self, Roll::Stages(_))
    }

    /// The seal (H → TLS) or its undoing: nodes switch at run time, none restarts.
    pub fn at_run_time(self) -> bool {
        self.state().is_some_and(RollState::at_run_time)
    }

    /// A roll of restarts that another roll of the same run follows (the one-restart path's
    /// first roll, before the seal; the three-roll path's first two).
    pub fn another_roll_follows(self) -> bool {
        self.state()
            .is_some_and(|r| !r.at_run_time() && r.next().is_some())
    }

    /// The one-restart path's roll: nodes running the module learn who else does.
    pub fn tells_hybrid_peers(self) -> Option<RollState> {
        self.state().filter(|r| r.path == RollPath::OneRestart)
    }

    /// Where a node that starts over from this roll's beginning is (`None`: plain TCP).
    pub fn from_stage(self) -> Option<Stage> {
        self.state().map(|r| r.from)
    }

    /// Where the roll takes a node (`None`: stock TLS, the classic roll).
    pub fn to_stage(self) -> Option<Stage> {
        self.state().map(|r| r.to)
    }

    /// The failpoint of `step` on `node`: a zero-split roll's are named after the stage it goes
    /// to (`b:mim2@host:edited`).
    pub fn failpoint(self, node: &str, step: &str) -> String {
        match self {
            Roll::Classic => format!("{node}:{step}"),
            Roll::Stages(roll) => format!("{}:{node}:{step}", roll.to.tag()),
        }
    }

    /// The progress display's title.
    pub fn title(self, cluster: &str) -> String {
        match self {
            Roll::Classic => cluster.to_string(),
            Roll::Stages(roll) => format!("{cluster} ({} → {})", roll.from, roll.to),
        }
    }

    /// The line that opens the roll in the journal.
    pub fn started_event(self) -> String {
        match self {
            Roll::Classic => "started".to_string(),
            Roll::Stages(roll) => format!("roll {} started", roll.describe()),
        }
    }

    /// What a rollback after a failure left, under the failure's message.
    pub fn rolled_back_after_failure(self) -> String {
        match self {
            Roll::Classic => "rolled back: every node runs plain TCP in one mesh again and every vm.dist.args is byte-identical to its original.".to_string(),
            Roll::Stages(roll) => format!(
                "this roll rolled back: every node runs {} again, in one mesh",
                roll.from.label()
            ),
        }
    }

    /// Where a finished rollback of this roll leaves every node, for the operator.
    pub fn rolled_back_to(self) -> String {
        match self {
            Roll::Classic => {
                "every node runs plain TCP again; rerun `distls migrate` to try again".to_string()
            }
            Roll::Stages(roll) => format!("every node runs {} again", roll.from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::PeerLink;

    fn up(proto: &str) -> NodeInfo {
        NodeInfo::Up {
            proto_dist: proto.into(),
            os_pid: 1,
            peers: Vec::<PeerLink>::new(),
        }
    }

    #[test]
    fn each_roll_names_its_own_start_and_end() {
        let classic = Roll::Classic;
        assert_eq!(classic.running(&up("inet_tls")), Running::Tls);
        assert_eq!(classic.running(&up("inet_tcp")), Running::Plain);
        assert!(classic.links_tls(Running::Tls) && !classic.links_tls(Running::Plain));
        assert_eq!(classic.rejoin_gate(), RejoinGate::TlsIsland);
        assert_eq!(classic.failpoint("n1@h", "edited"), "n1@h:edited");

        let first = Roll::Stages(RollState::first(RollPath::OneRestart));
        assert_eq!(first.running(&up("inet_tcp")), Running::Plain);
        assert_eq!(first.running(&up("distls_hybrid:h")), Running::Tls);
        assert_eq!(first.running(&up("inet_tls")), Running::Other);
        assert!(first.links_tls(Running::Tls) && !first.links_tls(Running::Plain));
        assert_eq!(first.label(Running::Tls), Stage::Hybrid.label());
        assert_eq!(first.rejoin_gate(), RejoinGate::FullMesh);
        assert!(first.another_roll_follows() && !first.at_run_time());
        assert_eq!(first.failpoint("n1@h", "edited"), "h:n1@h:edited");

        let seal = Roll::Stages(RollState::first(RollPath::OneRestart).next().unwrap());
        assert!(seal.at_run_time() && !seal.another_roll_follows());
        assert_eq!(seal.running(&up("distls_hybrid:sealed")), Running::Tls);
    }
}
