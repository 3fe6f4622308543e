//! Where a node's distribution is on the way from plain TCP to TLS (its stage), and the rolls
//! between stages, as the journal keeps them. A leaf: the journal, the flavors and the engine
//! all speak of stages, none of them needs the zero-split machinery for it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `-proto_dist distls_hybrid` loads distls's transitional module, `distls_hybrid_dist`.
pub const PROTO_DIST: &str = "distls_hybrid";

/// How the probe reports a node that runs the module sealed (TLS only until its next restart,
/// which boots stock inet_tls from its rewritten flags file).
pub const SEALED_SIGNATURE: &str = "distls_hybrid:sealed";

/// Where a node's distribution configuration is on the way from plain TCP to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The original file: stock inet_tcp.
    Plain,
    /// Phase A: the hybrid module, accepting both, dialing plain TCP.
    HybridTcp,
    /// Phase B: the hybrid module, accepting both, dialing TLS.
    HybridTls,
    /// Phase C: stock inet_tls, the file distls's classic roll writes (or, before the node's next
    /// restart, the module sealed).
    Tls,
    /// One-restart path: the module, dialing TLS to the nodes that run it, plain to the others.
    Hybrid,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Plain,
        Stage::HybridTcp,
        Stage::HybridTls,
        Stage::Tls,
        Stage::Hybrid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Plain => "plain tcp",
            Stage::HybridTcp => "A (hybrid, dials tcp)",
            Stage::HybridTls => "B (hybrid, dials tls)",
            Stage::Tls => "tls",
            Stage::Hybrid => "H (hybrid, tls to hybrid peers)",
        }
    }

    /// A short name: `plain`, `a`, `b`, `c` (failpoints, logs).
    pub fn tag(self) -> &'static str {
        match self {
            Stage::Plain => "plain",
            Stage::HybridTcp => "a",
            Stage::HybridTls => "b",
            Stage::Tls => "c",
            Stage::Hybrid => "h",
        }
    }

    /// How the probe reports a node running this stage (`proto_dist`, plus the dial mode for
    /// the hybrid module).
    pub fn signature(self) -> &'static str {
        match self {
            Stage::Plain => "inet_tcp",
            Stage::HybridTcp => "distls_hybrid:tcp",
            Stage::HybridTls => "distls_hybrid:tls",
            Stage::Tls => "inet_tls",
            Stage::Hybrid => "distls_hybrid:h",
        }
    }

    /// A sealed module counts as TLS: it is TLS-only, and stock TLS from its next restart.
    pub fn of_signature(signature: &str) -> Option<Stage> {
        if signature == SEALED_SIGNATURE {
            return Some(Stage::Tls);
        }
        Stage::ALL.into_iter().find(|s| s.signature() == signature)
    }

    /// The transport of a link between two nodes that both run this stage.
    pub fn links_tls(self) -> bool {
        matches!(self, Stage::HybridTls | Stage::Tls | Stage::Hybrid)
    }

    pub fn uses_module(self) -> bool {
        matches!(self, Stage::HybridTcp | Stage::HybridTls | Stage::Hybrid)
    }
}

/// Which way a zero-split run goes from plain to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollPath {
    /// Three rolls of restarts: plain → A → B → C (runs begun before the one-restart path; a
    /// journal without a path is one of those).
    #[default]
    ThreeRolls,
    /// One roll of restarts, plain → H, then the seal at run time, H → TLS.
    OneRestart,
}

impl RollPath {
    pub fn stages(self) -> &'static [Stage] {
        match self {
            RollPath::ThreeRolls => &[Stage::Plain, Stage::HybridTcp, Stage::HybridTls, Stage::Tls],
            RollPath::OneRestart => &[Stage::Plain, Stage::Hybrid, Stage::Tls],
        }
    }

    /// The next stage toward `toward` (`Tls` or `Plain`), if not there yet.
    pub fn next_toward(self, from: Stage, toward: Stage) -> Option<Stage> {
        let stages = self.stages();
        let i = stages.iter().position(|s| *s == from)?;
        let j = stages.iter().position(|s| *s == toward)?;
        match i.cmp(&j) {
            std::cmp::Ordering::Less => Some(stages[i + 1]),
            std::cmp::Ordering::Greater => Some(stages[i - 1]),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// How many rolls a run from plain to TLS takes.
    pub fn rolls(self) -> usize {
        self.stages().len() - 1
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which roll of a zero-split run is under way; kept in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollState {
    pub from: Stage,
    pub to: Stage,
    /// Where the whole run heads: `tls` (migrate) or `plain` (after a failure, or `distls rollback`).
    pub toward: Stage,
    /// Whether this roll's starting state was checked (every node at `from`, one mesh).
    pub started: bool,
    #[serde(default)]
    pub path: RollPath,
}

impl RollState {
    pub fn first(path: RollPath) -> Self {
        RollState {
            from: Stage::Plain,
            to: path.stages()[1],
            toward: Stage::Tls,
            started: false,
            path,
        }
    }

    /// The roll after this one, if the run is not at `toward` yet.
    pub fn next(self) -> Option<RollState> {
        let to = self.path.next_toward(self.to, self.toward)?;
        Some(RollState {
            from: self.to,
            to,
            started: false,
            ..self
        })
    }

    /// Turn back to plain from a roll rolled back to its `from` stage.
    pub fn back_to_plain(self) -> Option<RollState> {
        let to = self.path.next_toward(self.from, Stage::Plain)?;
        Some(RollState {
            from: self.from,
            to,
            toward: Stage::Plain,
            started: false,
            path: self.path,
        })
    }

    /// A roll of the seal (H → TLS) or its undoing: nodes change at run time, none restarts.
    pub fn at_run_time(self) -> bool {
        matches!(
            (self.from, self.to),
            (Stage::Hybrid, Stage::Tls) | (Stage::Tls, Stage::Hybrid)
        )
    }

    pub fn describe(self) -> String {
        format!("{} → {}", self.from.label(), self.to.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_go_forward_and_back() {
        let one = RollState::first(RollPath::OneRestart);
        assert_eq!((one.from, one.to), (Stage::Plain, Stage::Hybrid));
        assert!(!one.at_run_time());
        let seal = one.next().unwrap();
        assert_eq!((seal.from, seal.to), (Stage::Hybrid, Stage::Tls));
        assert!(seal.at_run_time() && seal.next().is_none());
        let back = seal.back_to_plain().unwrap();
        assert_eq!((back.from, back.to), (Stage::Hybrid, Stage::Plain));
        assert!(!back.at_run_time() && back.next().is_none());
        // A journal written before the one-restart path has no `path`: three rolls.
        let old: RollState = serde_json::from_str(
            r#"{"from":"hybrid_tcp","to":"hybrid_tls","toward":"tls","started":true}"#,
        )
        .unwrap();
        assert_eq!(old.path, RollPath::ThreeRolls);
        assert_eq!(old.next().unwrap().to, Stage::Tls);

        let first = RollState::first(RollPath::ThreeRolls);
        let second = first.next().unwrap();
        assert_eq!(
            (second.from, second.to),
            (Stage::HybridTcp, Stage::HybridTls)
        );
        let third = second.next().unwrap();
        assert_eq!((third.from, third.to), (Stage::HybridTls, Stage::Tls));
        assert!(third.next().is_none());
        let back = third.back_to_plain().unwrap();
        assert_eq!((back.from, back.to), (Stage::HybridTls, Stage::HybridTcp));
        let back2 = back.next().unwrap();
        assert_eq!((back2.from, back2.to), (Stage::HybridTcp, Stage::Plain));
        assert!(back2.next().is_none());
        assert!(first.back_to_plain().is_none());
    }

    #[test]
    fn signatures_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::of_signature(stage.signature()), Some(stage));
        }
        assert!(Stage::HybridTls.links_tls() && !Stage::HybridTcp.links_tls());
        assert!(Stage::Hybrid.links_tls() && Stage::Hybrid.uses_module());
        assert_eq!(Stage::of_signature(SEALED_SIGNATURE), Some(Stage::Tls));
    }
}
