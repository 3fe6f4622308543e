//! What a node runs and whom it is linked to, as its probes see it: shared by the engine, its
//! gates, `status`, `check` and the stale-journal check, none of which owns it.

use crate::error::{Error, Message, Result};
use crate::probe::{NodeInfo, Probe, ProbePool};
use crate::target::NodeTarget;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    Down,
    Plain,
    Tls,
    /// Its VM runs (registered with epmd) but answers neither probe, plain nor TLS.
    Unreachable,
    /// Zero-split: it runs a stage that is neither the roll's `from` nor its `to`.
    Other,
}

impl Running {
    pub fn of_info(info: &NodeInfo) -> Self {
        match info {
            NodeInfo::Down { .. } => Running::Down,
            NodeInfo::Unreachable { .. } => Running::Unreachable,
            _ if info.runs_tls() => Running::Tls,
            _ => Running::Plain,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Running::Down => "down",
            Running::Plain => "plain tcp",
            Running::Tls => "tls",
            Running::Unreachable => "unreachable",
            Running::Other => "another stage",
        }
    }
}

pub fn probe_pool(targets: &[NodeTarget]) -> Result<ProbePool> {
    let first = targets
        .first()
        .ok_or_else(|| Error::InvalidInput(Message::from("the plan has no nodes")))?;
    let cookies = targets
        .iter()
        .filter_map(|t| t.identity.cookie.clone().map(|c| (t.name().to_string(), c)))
        .collect();
    Ok(ProbePool::new(first.identity.name_flag, cookies))
}

pub async fn observe_with(probes: &ProbePool, target: &NodeTarget) -> Result<NodeInfo> {
    let (plain, tls) = probes_of(probes, target).await?;
    observe_pair(&plain, &tls, target.name()).await
}

/// The node's plain and TLS probe VMs (booted on first use, then shared).
pub(crate) async fn probes_of(
    probes: &ProbePool,
    target: &NodeTarget,
) -> Result<(Arc<Probe>, Arc<Probe>)> {
    let site = target.probe_site();
    Ok(tokio::try_join!(
        probes.probe_for(&site, &target.probe_plain, "plain tcp"),
        probes.probe_for(&site, &target.probe_tls, "tls"),
    )?)
}

/// What node `name` runs, asked through both probes at once: the one that speaks the node's
/// protocol answers fast, the other would hang until the connection setup timeout.
pub(crate) async fn observe_pair(plain: &Probe, tls: &Probe, name: &str) -> Result<NodeInfo> {
    let plain_info = plain.info(name);
    let tls_info = tls.info(name);
    tokio::pin!(plain_info, tls_info);
    let (mut plain_done, mut tls_done) = (None, None);
    loop {
        tokio::select! {
            r = &mut plain_info, if plain_done.is_none() => {
                let info = r?;
                if info.is_up() { return Ok(info); }
                plain_done = Some(info);
            }
            r = &mut tls_info, if tls_done.is_none() => {
                let info = r?;
                if info.is_up() { return Ok(info); }
                tls_done = Some(info);
            }
        }
        if let (Some(plain), Some(tls)) = (&plain_done, &tls_done) {
            // Unreachable only when both probes found it registered with epmd; a probe that
            // found it gone wins.
            return Ok(match (plain, tls) {
                (NodeInfo::Unreachable { .. }, NodeInfo::Unreachable { .. }) => plain.clone(),
                (NodeInfo::Down { .. }, _) => plain.clone(),
                _ => tls.clone(),
            });
        }
    }
}

pub fn describe_links(info: &NodeInfo) -> String {
    let links = info.live_links();
    if links.is_empty() {
        return "-".into();
    }
    links
        .iter()
        .map(|(node, tls)| format!("{node}:{}", if *tls { "tls" } else { "tcp" }))
        .collect::<Vec<_>>()
        .join(" ")
}
