//! The gates between steps: a node has rejoined (over the roll's transport), the nodes before
//! it still run, the cluster is ready at the end.

use super::*;

impl Rollout<'_> {
    /// Rollback, classic roll: the node's plain peers are the later nodes (never touched, or
    /// already reverted).
    pub(super) async fn await_plain_rejoin(&mut self, index: usize) -> StepResult {
        let peers: Vec<usize> = (index + 1..self.targets.len()).collect();
        self.report_node(index, NodeActivity::AwaitingPlainLinks);
        let deadline = Instant::now() + self.targets[index].spec.timeouts.rejoin;
        if let Err(missing) = self
            .wait_for_links(index, &peers, false, &[], deadline)
            .await?
        {
            return Err(self.step_failed(
                index,
                &format!("it did not rejoin the plain cluster: {missing}"),
            ));
        }
        self.mark(index, Step::Reverted)
    }

    pub(super) async fn await_tls_rejoin(&mut self, index: usize) -> StepResult {
        self.report_node(index, NodeActivity::AwaitingTlsLinks);
        let migrated: Vec<usize> = (0..index).collect();
        // Its batch mates after it are not on plain TCP any more: each rejoins in its turn.
        let plain: Vec<usize> = (index + 1..self.targets.len())
            .filter(|&j| !self.under_way(j))
            .collect();
        let deadline = Instant::now() + self.targets[index].spec.timeouts.rejoin;
        // In slices, so a migrated peer that died meanwhile is named at once instead of waiting
        // for the whole rejoin timeout.
        let missing = loop {
            let slice = (Instant::now() + Duration::from_secs(5)).min(deadline);
            let missing = self
                .wait_for_links(index, &migrated, true, &plain, slice)
                .await?;
            if missing.is_ok() || Instant::now() >= deadline {
                break missing;
            }
            self.check_migrated_alive(index, index).await?;
        };
        if let Err(missing) = missing {
            return Err(self.step_failed(
                index,
                &format!(
                    "it did not rejoin within {}: {missing}",
                    humantime::format_duration(self.targets[index].spec.timeouts.rejoin)
                ),
            ));
        }
        self.mark(index, Step::Rejoined)
    }

    /// Zero-split: wait until node `index` is linked to every other node and no pair of nodes
    /// misses the other (links between two nodes of one stage use that stage's transport).
    /// `done`: the step recorded then. `skip_down`: only running nodes count (in a rollback, a
    /// node not reverted yet may be down or unreachable).
    pub(super) async fn await_full_rejoin(
        &mut self,
        index: usize,
        done: Step,
        skip_down: bool,
    ) -> StepResult {
        self.report_node(index, NodeActivity::AwaitingFullMesh);
        let timeout = self.targets[index].spec.timeouts.rejoin;
        let deadline = Instant::now() + timeout;
        let mut last_kick: Option<Instant> = None;
        loop {
            // Batch mates after it may still be down (a resumed batch starts them in turn).
            let may_be_down = self.batch_mates_after(index);
            let (infos, missing) = self.full_mesh_missing(skip_down, &may_be_down).await?;
            let Err(missing) = missing else { break };
            if Instant::now() >= deadline {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it did not rejoin every node within {}: {missing}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            // A restarted node dials its peers itself (Mnesia, CETS, …); this covers the rest,
            // and any other pair that lost its link (e.g. `global` dropping one around the
            // restart): every running node is told to dial the nodes it misses.
            if last_kick.is_none_or(|t| t.elapsed() >= KICK_EVERY) {
                for (node, info) in infos.iter().enumerate() {
                    let running = self.running(info);
                    let missing: Vec<String> = (0..self.targets.len())
                        .filter(|&p| p != node && info.link_to(self.name(p)).is_none())
                        .map(|p| self.name(p).to_string())
                        .collect();
                    if missing.is_empty() || !matches!(running, Running::Plain | Running::Tls) {
                        continue;
                    }
                    let via = Via::tls(self.links_tls(running));
                    self.cluster
                        .observer
                        .connect(&self.targets[node], via, &missing)
                        .await?;
                }
                last_kick = Some(Instant::now());
            }
            self.pause_between_polls().await?;
        }
        self.mark(index, done)
    }

    /// Every node observed, and which links of the full mesh are missing (or use the wrong
    /// transport between two nodes of one stage).
    /// `skip_down`: only running nodes count; otherwise only those in `may_be_down` may be down.
    pub(super) async fn full_mesh_missing(
        &self,
        skip_down: bool,
        may_be_down: &[usize],
    ) -> Result<(Vec<NodeInfo>, std::result::Result<(), String>)> {
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let infos = self.observe_all(&everyone).await?;
        let stages: Vec<Option<Stage>> = infos
            .iter()
            .map(|i| i.proto_dist().and_then(Stage::of_signature))
            .collect();
        // In a rollback only the nodes that run count: a node not reverted yet may be down or
        // unreachable (a failed start, a rejected certificate) until its turn comes.
        let counts = |i: usize| (!skip_down && !may_be_down.contains(&i)) || infos[i].is_up();
        let mut missing = Vec::new();
        for (index, info) in infos.iter().enumerate().filter(|(i, _)| counts(*i)) {
            let Some(stage) = stages[index] else {
                missing.push(format!(
                    "{} is {}",
                    self.name(index),
                    self.label_of(self.running(info))
                ));
                continue;
            };
            for peer in (0..self.targets.len()).filter(|&p| p != index && counts(p)) {
                match info.link_to(self.name(peer)) {
                    None => missing.push(format!(
                        "{} does not see {}",
                        self.name(index),
                        self.name(peer)
                    )),
                    Some(tls) if stages[peer] == Some(stage) && tls != stage.links_tls() => missing
                        .push(format!(
                            "{} ↔ {} is {} between two nodes running {}",
                            self.name(index),
                            self.name(peer),
                            if tls { "TLS" } else { "plain TCP" },
                            stage.label()
                        )),
                    Some(_) => {}
                }
            }
        }
        let missing = if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        };
        Ok((infos, missing))
    }

    /// Every node migrated earlier in this roll must still run. With Mnesia disc tables a
    /// migrated node waits for the plain ones until the last node switches; RabbitMQ gives up
    /// after its table wait (10×30 s by default) and its VM exits.
    /// A failure is reported against `blame`, the newest touched node, so a rollback reverts
    /// every touched node.
    pub(super) async fn check_migrated_alive(&self, upto: usize, blame: usize) -> StepResult {
        for index in 0..upto {
            let running = self.running(&self.observe(index).await?);
            if running != Running::Tls {
                let flavor = self.targets[index].spec.flavor;
                let why = match flavor.table_wait() {
                    Some(wait) => format!(
                        "; {flavor} waits about {} for Mnesia tables held by nodes still on plain TCP, then {}: keep the roll shorter than that (see docs/flavor-{flavor}.md)",
                        humantime::format_duration(wait.limit),
                        wait.then
                    ),
                    None => String::new(),
                };
                return Err(self.step_failed(
                    blame,
                    &format!(
                        "node {} was migrated earlier in this roll but is now {}{why}",
                        self.name(index),
                        self.label_of(running)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After the mesh: every node's `commands.ready` succeeds (the application has finished
    /// starting, e.g. its Mnesia tables loaded), within `timeouts.ready`, while it keeps running
    /// `running` (TLS after a migration, plain after a rollback: a product whose nodes wait for
    /// their tables until the whole cluster is back answers its ctl long before it is usable).
    pub(super) async fn ready_gate(&mut self, running: Running) -> StepResult {
        let last = self.targets.len() - 1;
        let started = Instant::now();
        // Every node's ready command at once; the ones that fail are asked again next round.
        let mut waiting: Vec<(usize, String)> = (0..self.targets.len())
            .filter_map(|i| Some((i, self.targets[i].spec.commands.ready.clone()?)))
            .collect();
        for (index, _) in &waiting {
            self.report_node(*index, NodeActivity::AwaitingReady);
        }
        while !waiting.is_empty() {
            let mut round = tokio::task::JoinSet::new();
            for (index, ready) in &waiting {
                let timeout = self.targets[*index].spec.timeouts.ready;
                let left = timeout.saturating_sub(started.elapsed());
                let transport = self.cluster.hosts[*index].clone();
                let (index, ready) = (*index, ready.clone());
                round.spawn(async move {
                    let out = transport
                        .run(&ready, left.max(Duration::from_secs(1)))
                        .await;
                    let said = command_failure(&ready, &out);
                    (index, ready, said)
                });
            }
            let mut again = Vec::new();
            while let Some(joined) = round.join_next().await {
                let (index, ready, said) = joined.expect("ready command task");
                let Some(said) = said else { continue };
                let timeout = self.targets[index].spec.timeouts.ready;
                if started.elapsed() >= timeout {
                    return Err(self.step_failed(
                        last,
                        &format!(
                            "node {} runs {} and is linked to every node, but did not report ready within {}: {said}",
                            self.name(index),
                            self.roll.in_sentence(running),
                            humantime::format_duration(timeout)
                        ),
                    ));
                }
                if self.running(&self.observe(index).await?) != running {
                    return Err(self.step_failed(
                        last,
                        &format!(
                            "node {} stopped running while distls waited for it to report ready: {said}",
                            self.name(index)
                        ),
                    ));
                }
                again.push((index, ready));
            }
            again.sort();
            waiting = again;
            if !waiting.is_empty() {
                for _ in 0..10 {
                    self.pause_between_polls().await?;
                }
            }
        }
        Ok(())
    }

    /// After the last node: every node runs TLS and sees every other node over TLS.
    pub(super) async fn final_gate(&mut self) -> StepResult {
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + self.max_rejoin_timeout();
        let tls = self.links_tls(Running::Tls);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            let last = self.targets.len() - 1;
            return Err(self.step_failed(
                last,
                &format!(
                    "the cluster did not form one {} mesh: {missing}",
                    if tls { "TLS" } else { "plain-TCP" }
                ),
            ));
        }
        // A zero-split roll of restarts asked each node's ready command right after its own
        // restart, and the run's last roll (the seal, or the last roll of restarts) ends with
        // this gate: asking every node again in between only waits.
        if !self.roll.another_roll_follows() {
            self.ready_gate(Running::Tls).await?;
        }
        self.journal.set_phase(Phase::Completed)?;
        self.journal.record(None, "completed");
        self.store.save(&mut self.journal)?;
        Ok(())
    }

    pub(super) fn max_rejoin_timeout(&self) -> Duration {
        self.targets
            .iter()
            .map(|t| t.spec.timeouts.rejoin)
            .max()
            .unwrap_or(Duration::from_secs(120))
    }
}
