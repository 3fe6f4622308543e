//! Which roll a run takes (docs/zero-split.md). A new run takes the zero-split roll (one restart
//! per node into the hybrid module, sealed at run time; never split) unless the operator asks for
//! the classic roll or a node's flavor cannot take the module (relx: its nodetool gets neither the
//! optfile nor the module's code path). A run in progress goes on with the roll its journal
//! records; a flag naming the other roll is refused.

use crate::cli::ModeArgs;
use crate::error::{Error, Message, Result};
use crate::flavor::Flavor;
use crate::journal::{Journal, Phase};
use crate::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollMode {
    /// Stock TLS straight away, one node at a time; the cluster is split while it runs.
    Classic,
    /// Through the hybrid module; never split.
    ZeroSplit,
}

impl RollMode {
    pub fn is_zero_split(self) -> bool {
        self == RollMode::ZeroSplit
    }

    /// The flag that names this roll, as the operator would type it after the subcommand.
    pub fn flag(self) -> &'static str {
        match self {
            RollMode::Classic => " --classic",
            RollMode::ZeroSplit => "",
        }
    }
}

/// The roll, and why the default fell back to classic if it did (a line for the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub mode: RollMode,
    pub fallback: Option<String>,
}

/// The roll a run takes: the journal's when a run is in progress (`journal`), else the flags',
/// else zero-split where every node's flavor can take the module.
pub fn choose(flags: ModeArgs, plan: &Plan, journal: Option<&Journal>) -> Result<Choice> {
    if let Some(journal) = journal {
        return of_journal(flags, journal).map(|mode| Choice {
            mode,
            fallback: None,
        });
    }
    Ok(for_new_run(flags, plan))
}

fn for_new_run(flags: ModeArgs, plan: &Plan) -> Choice {
    if flags.classic {
        return Choice {
            mode: RollMode::Classic,
            fallback: None,
        };
    }
    if flags.zero_split {
        return Choice {
            mode: RollMode::ZeroSplit,
            fallback: None,
        };
    }
    match plan.nodes.iter().find(|n| n.flavor == Flavor::Relx) {
        Some(node) => Choice {
            mode: RollMode::Classic,
            fallback: Some(format!(
                "note: node {} is relx, which cannot take the hybrid module (its nodetool gets neither the optfile nor the module's code path): this run takes the classic roll, and the migrated nodes cannot see the plain ones until the last node switches (pass --classic to choose it explicitly; docs/zero-split.md)",
                node.name
            )),
        },
        None => Choice {
            mode: RollMode::ZeroSplit,
            fallback: None,
        },
    }
}

fn of_journal(flags: ModeArgs, journal: &Journal) -> Result<RollMode> {
    let mode = if journal.zero_split.is_some() {
        RollMode::ZeroSplit
    } else {
        RollMode::Classic
    };
    if journal.phase == Phase::Completed {
        // Nothing left to roll: `migrate` only verifies the cluster, whichever flag it got.
        return Ok(mode);
    }
    match (mode, flags.classic, flags.zero_split) {
        (RollMode::ZeroSplit, true, _) => Err(Error::InvalidInput(
            Message::new("the journal holds a zero-split run in progress").hint(
                "rerun without --classic to carry it on, or run `distls rollback` with this plan",
            ),
        )),
        (RollMode::Classic, _, true) => Err(Error::InvalidInput(
            Message::new(
                "the journal holds a classic (split) roll in progress; finish or roll it back first",
            )
            .hint("rerun without --zero-split (or with --classic) to carry it on, or run `distls rollback` with this plan"),
        )),
        _ => Ok(mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(flavors: &[&str]) -> Plan {
        let mut yaml = String::from(
            "version: 1\ncluster: c\ntls:\n  certfile: /c.pem\n  keyfile: /k.pem\n  cacertfile: /ca.pem\ndefaults:\n  commands: { start: s, stop: s, ping: p }\nnodes:\n",
        );
        for (i, flavor) in flavors.iter().enumerate() {
            yaml.push_str(&match *flavor {
                "relx" => format!(
                    "  - name: n{i}@h\n    flavor: relx\n    vm_args: /opt/n{i}/vm.args\n"
                ),
                _ => format!("  - name: n{i}@h\n    vm_dist_args: /opt/n{i}/etc/vm.dist.args\n    vm_args: /opt/n{i}/etc/vm.args\n"),
            });
        }
        Plan::from_source(std::path::Path::new("/p/plan.yaml"), &yaml).unwrap()
    }

    fn flags(classic: bool, zero_split: bool) -> ModeArgs {
        ModeArgs {
            classic,
            zero_split,
        }
    }

    #[test]
    fn a_new_run_is_zero_split_unless_asked_or_relx() {
        let mim = plan(&["mim", "mim"]);
        let pick = |f, p: &Plan| choose(f, p, None).unwrap();
        assert_eq!(pick(flags(false, false), &mim).mode, RollMode::ZeroSplit);
        assert_eq!(pick(flags(true, false), &mim).mode, RollMode::Classic);
        assert_eq!(pick(flags(false, true), &mim).mode, RollMode::ZeroSplit);
        let relx = plan(&["mim", "relx"]);
        let fallback = pick(flags(false, false), &relx);
        assert_eq!(fallback.mode, RollMode::Classic);
        assert!(fallback.fallback.unwrap().contains("node n1@h is relx"));
        assert_eq!(pick(flags(true, false), &relx).fallback, None);
        // Named explicitly, zero-split is not swapped for classic: the run refuses later.
        assert_eq!(pick(flags(false, true), &relx).mode, RollMode::ZeroSplit);
    }

    #[test]
    fn a_run_in_progress_keeps_its_roll() {
        let mim = plan(&["mim"]);
        let mut journal = Journal::new("c", &mim.path, "sha", Vec::new());
        assert_eq!(
            choose(flags(false, false), &mim, Some(&journal))
                .unwrap()
                .mode,
            RollMode::Classic,
            "a classic run started before the default changed goes on classic"
        );
        assert!(choose(flags(false, true), &mim, Some(&journal)).is_err());
        journal.zero_split = Some(crate::stage::RollState::first(
            crate::stage::RollPath::OneRestart,
        ));
        assert_eq!(
            choose(flags(false, false), &mim, Some(&journal))
                .unwrap()
                .mode,
            RollMode::ZeroSplit
        );
        assert!(choose(flags(true, false), &mim, Some(&journal)).is_err());
        // A finished run has nothing left to roll: any flag just verifies it.
        journal.phase = Phase::Completed;
        assert_eq!(
            choose(flags(true, false), &mim, Some(&journal))
                .unwrap()
                .mode,
            RollMode::ZeroSplit
        );
    }
}
