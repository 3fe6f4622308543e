//! A journal left by an earlier cluster: it says nodes were changed (or the run completed), but
//! the nodes show no trace of any change. Trusting it would wait for a TLS mesh that cannot exist
//! and then "roll back" nodes distls never touched; `migrate` refuses instead and names the flag
//! that starts a new run (`--new-run`, which archives the old journal).

use crate::error::Result;
use crate::journal::{Journal, Phase};
use crate::observe::{self, Running};
use crate::plan::Plan;
use crate::stage::Stage;
use crate::target;
use crate::transport::Transport;

/// The journal says at least one node's file was edited (so its backup exists), or the run got
/// past its first zero-split roll, or completed.
pub fn claims_changes(journal: &Journal) -> bool {
    journal.phase == Phase::Completed
        || journal.nodes.iter().any(|n| n.step.after_first_edit())
        || journal
            .zero_split
            .is_some_and(|roll| roll.from != Stage::Plain)
}

/// Every node contradicts the journal: it has no backup beside its flags file (distls writes it
/// before its first edit and never removes it), its file is not the TLS text the journal
/// recorded, and it runs plain TCP. A node that cannot be read or reached is no proof either way:
/// then the journal is trusted, as before.
pub async fn belongs_to_earlier_cluster(
    plan: &Plan,
    transports: &[Transport],
    journal: &Journal,
) -> Result<bool> {
    let mut targets = Vec::with_capacity(plan.nodes.len());
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        let Ok(target) = target::read_node(spec, transport).await else {
            return Ok(false);
        };
        if transport.file_exists(&target.backup).await {
            return Ok(false);
        }
        let current = crate::atomic_file::sha256_hex(target.current.as_bytes());
        if journal
            .node(target.name())
            .is_some_and(|record| record.tls_sha256 == current)
        {
            return Ok(false);
        }
        targets.push(target);
    }
    let probes = observe::probe_pool(&targets)?;
    let mut all_plain = true;
    for target in &targets {
        let running = match observe::observe_with(&probes, target).await {
            Ok(info) => Running::of_info(&info),
            Err(_) => Running::Unreachable,
        };
        if running != Running::Plain {
            all_plain = false;
            break;
        }
    }
    probes.shutdown().await;
    Ok(all_plain)
}
