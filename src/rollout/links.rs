//! What the nodes run and whom they are linked to, through the cluster's observer, polled until
//! a deadline.

use super::*;

impl Rollout<'_> {
    /// What the node runs, asked through both probes at once: the one that speaks the node's
    /// protocol answers fast, the other would hang until the connection setup timeout.
    pub async fn observe(&self, index: usize) -> Result<NodeInfo> {
        self.cluster.observer.observe(&self.targets[index]).await
    }

    /// [`Self::observe`] of several nodes at once (a gate over the whole cluster asks every node
    /// each round; one after the other that grows with the square of the cluster).
    pub(super) async fn observe_all(&self, indices: &[usize]) -> Result<Vec<NodeInfo>> {
        let mut asks = tokio::task::JoinSet::new();
        for (slot, &index) in indices.iter().enumerate() {
            let (observer, target) = (self.cluster.observer.clone(), self.targets[index].clone());
            asks.spawn(async move { (slot, observer.observe(&target).await) });
        }
        let mut infos: Vec<Option<NodeInfo>> = vec![None; indices.len()];
        while let Some(joined) = asks.join_next().await {
            let (slot, info) = joined.expect("observation task");
            infos[slot] = Some(info?);
        }
        Ok(infos
            .into_iter()
            .map(|i| i.expect("every node observed"))
            .collect())
    }

    pub(super) async fn wait_running(
        &self,
        index: usize,
        want: Running,
        deadline: Instant,
    ) -> Result<bool> {
        loop {
            if self.running(&self.observe(index).await?) == want {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.pause_between_polls().await?;
        }
    }

    /// Wait until node `index` has an up link (TLS or plain as asked) to every node in `peers`, and
    /// every node in `plain_island` still sees the rest of that island over plain TCP.
    pub(super) async fn wait_for_links(
        &self,
        index: usize,
        peers: &[usize],
        tls: bool,
        plain_island: &[usize],
        deadline: Instant,
    ) -> Result<std::result::Result<(), String>> {
        let (target, via) = (&self.targets[index], Via::tls(tls));
        let peer_names: Vec<String> = peers.iter().map(|&p| self.name(p).to_string()).collect();
        let mut last_kick: Option<Instant> = None;
        loop {
            if last_kick.is_none_or(|t| t.elapsed() >= KICK_EVERY) {
                self.cluster
                    .observer
                    .connect(target, via, &peer_names)
                    .await?;
                last_kick = Some(Instant::now());
            }
            let info = self.cluster.observer.info(target, via).await?;
            let mut missing: Vec<String> = peer_names
                .iter()
                .filter(|p| !info.has_link(p, tls))
                .map(|p| {
                    format!(
                        "no {} link {} ↔ {p}",
                        if tls { "TLS" } else { "plain" },
                        self.name(index)
                    )
                })
                .collect();
            if missing.is_empty()
                && let Err(island) = self.mesh_missing(plain_island, false).await?
            {
                missing.push(island);
            }
            if missing.is_empty() {
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                return Ok(Err(missing.join("; ")));
            }
            self.pause_between_polls().await?;
        }
    }

    pub(super) async fn wait_for_mesh(
        &self,
        nodes: &[usize],
        tls: bool,
        deadline: Instant,
    ) -> Result<std::result::Result<(), String>> {
        let mut kicked = false;
        loop {
            let missing = self.mesh_missing(nodes, tls).await?;
            if missing.is_ok() || Instant::now() >= deadline {
                return Ok(missing);
            }
            if !kicked {
                for &index in nodes {
                    let others: Vec<String> = nodes
                        .iter()
                        .filter(|&&p| p != index)
                        .map(|&p| self.name(p).to_string())
                        .collect();
                    self.cluster
                        .observer
                        .connect(&self.targets[index], Via::tls(tls), &others)
                        .await?;
                }
                kicked = true;
            }
            self.pause_between_polls().await?;
        }
    }

    /// Which links of a full mesh among `nodes` are missing, if any.
    pub(super) async fn mesh_missing(
        &self,
        nodes: &[usize],
        tls: bool,
    ) -> Result<std::result::Result<(), String>> {
        let mut missing = Vec::new();
        for &index in nodes {
            let info = self
                .cluster
                .observer
                .info(&self.targets[index], Via::tls(tls))
                .await?;
            if !info.is_up() {
                missing.push(format!(
                    "{} is not reachable over {}",
                    self.name(index),
                    if tls { "TLS" } else { "plain TCP" }
                ));
                continue;
            }
            for &peer in nodes.iter().filter(|&&p| p != index) {
                if !info.has_link(self.name(peer), tls) {
                    missing.push(format!(
                        "{} does not see {}",
                        self.name(index),
                        self.name(peer)
                    ));
                }
            }
        }
        Ok(if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        })
    }
}
