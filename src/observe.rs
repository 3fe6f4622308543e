//! What a node runs and whom it is linked to, as its probes see it: shared by the engine, its
//! gates, `status`, `check` and the stale-journal check, none of which owns it.

use crate::error::{Error, Message, Result};
use crate::probe::{NodeInfo, Probe, ProbeError, ProbePool};
use crate::target::NodeTarget;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Which of a node's two probes asks: the one that speaks plain TCP, or the one that speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Plain,
    Tls,
}

impl Via {
    pub fn tls(tls: bool) -> Via {
        if tls { Via::Tls } else { Via::Plain }
    }
}

/// An observer's answer, some time later (boxed, so the engine takes any observer at run time).
pub type ObserveFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the engine sees and nudges the nodes' distribution: the probe VMs for a real cluster,
/// an in-memory cluster in engine tests.
pub trait Observer: Send + Sync {
    /// What the node runs and whom it is linked to, asked through both probes.
    fn observe<'a>(&'a self, target: &'a NodeTarget) -> ObserveFuture<'a, Result<NodeInfo>>;

    /// The same, asked through one probe only (a node the probe cannot speak to is `Unreachable`).
    fn info<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
    ) -> ObserveFuture<'a, std::result::Result<NodeInfo, ProbeError>>;

    /// Ask the node to dial `peers` now instead of waiting for its own reconnect logic.
    fn connect<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        peers: &'a [String],
    ) -> ObserveFuture<'a, std::result::Result<(), ProbeError>>;

    /// Ask the node's VM to stop: `init:stop()`, or with `halt`, `erlang:halt()`.
    fn stop_node<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        halt: bool,
    ) -> ObserveFuture<'a, std::result::Result<(), ProbeError>>;

    /// Tell distls's hybrid module on the node to `seal`, `unseal`, `add` or `remove` (TLS
    /// peers). `Ok(false)`: the module does not run there.
    fn hybrid<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        op: &'a str,
        peers: &'a [&'a str],
    ) -> ObserveFuture<'a, std::result::Result<bool, ProbeError>>;

    /// Stop whatever the observer started (probe VMs).
    fn shutdown(&self) -> ObserveFuture<'_, ()>;
}

impl Observer for ProbePool {
    fn observe<'a>(&'a self, target: &'a NodeTarget) -> ObserveFuture<'a, Result<NodeInfo>> {
        Box::pin(observe_with(self, target))
    }

    fn info<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
    ) -> ObserveFuture<'a, std::result::Result<NodeInfo, ProbeError>> {
        Box::pin(async move {
            probe_via(self, target, via)
                .await?
                .info(target.name())
                .await
        })
    }

    fn connect<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        peers: &'a [String],
    ) -> ObserveFuture<'a, std::result::Result<(), ProbeError>> {
        Box::pin(async move {
            probe_via(self, target, via)
                .await?
                .connect(target.name(), peers)
                .await
        })
    }

    fn stop_node<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        halt: bool,
    ) -> ObserveFuture<'a, std::result::Result<(), ProbeError>> {
        Box::pin(async move {
            probe_via(self, target, via)
                .await?
                .stop_node(target.name(), halt)
                .await
        })
    }

    fn hybrid<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
        op: &'a str,
        peers: &'a [&'a str],
    ) -> ObserveFuture<'a, std::result::Result<bool, ProbeError>> {
        Box::pin(async move {
            probe_via(self, target, via)
                .await?
                .hybrid(target.name(), op, peers)
                .await
        })
    }

    fn shutdown(&self) -> ObserveFuture<'_, ()> {
        Box::pin(ProbePool::shutdown(self))
    }
}

/// The node's probe VM that speaks `via` (booted on first use, then shared).
pub(crate) async fn probe_via(
    probes: &ProbePool,
    target: &NodeTarget,
    via: Via,
) -> std::result::Result<Arc<Probe>, ProbeError> {
    let site = target.probe_site();
    match via {
        Via::Plain => {
            probes
                .probe_for(&site, &target.probe_plain, "plain tcp")
                .await
        }
        Via::Tls => probes.probe_for(&site, &target.probe_tls, "tls").await,
    }
}

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
    Ok(ProbePool::new(
        first.identity.name_flag,
        crate::target::cookies(targets),
    ))
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

/// Where a node found down was looked for, for messages: `epmd localhost:4371 (ejabberdctl.cfg:1
/// ERL_EPMD_PORT) lists ejabberd1, ejabberd2; its listen port is pinned to …`. `None` unless down.
pub fn why_down(target: &NodeTarget, info: &NodeInfo) -> Option<String> {
    let NodeInfo::Down {
        asked: Some(asked), ..
    } = info
    else {
        return None;
    };
    let ports = &target.ports;
    // In the order erlexec and erl_epmd apply them: the environment's port before any file's
    // (the plan's env before distls's own, which only local probes inherit).
    let source = if let Some(port) = ports.dist_port.as_ref() {
        port.source.clone()
    } else if target.transport.sets_env("ERL_EPMD_PORT") {
        "the plan's env".to_string()
    } else if target.transport.is_local() && std::env::var_os("ERL_EPMD_PORT").is_some() {
        "distls's environment".to_string()
    } else if let Some(port) = ports.epmd_port.as_ref() {
        port.source.clone()
    } else {
        "the default".to_string()
    };
    let mut text = asked.describe_from(Some(&source));
    if let Some(listen) = ports.describe_listen() {
        text.push_str(&format!("; its files pin its listen port to {listen}"));
    }
    Some(format!("{} not found: {text}", target.name()))
}
