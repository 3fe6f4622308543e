//! Starting a node, and proving its own ctl reaches it afterwards.

use super::*;

impl Rollout<'_> {
    pub(super) async fn start(
        &mut self,
        index: usize,
        intent: Step,
        done: Step,
        expect: Running,
    ) -> StepResult {
        self.start_announced(index, expect).await?;
        let spec = &self.targets[index].spec;
        let (command, timeout) = (spec.commands.start.clone(), spec.timeouts.start);
        if self.step_of(index) == intent {
            // A previous run died while starting it: give that start a chance to finish rather
            // than launching a second VM under the same name.
            let grace = Instant::now() + timeout.min(Duration::from_secs(15));
            if self.wait_running(index, expect, grace).await? {
                return self.mark(index, done);
            }
        }
        self.mark(index, intent)?;
        let deadline = Instant::now() + timeout;
        let outcome = self.cluster.hosts[index].run(&command, timeout).await;
        self.start_ends(index, &outcome, deadline, expect, done)
            .await
    }

    /// Before the start command: the start reported, and (zero-split) the running hybrid nodes
    /// told that this node will speak TLS.
    pub(super) async fn start_announced(&mut self, index: usize, expect: Running) -> StepResult {
        let runs = self.label_of(expect).to_string();
        self.report_node(index, NodeActivity::Starting { runs });
        self.tell_hybrid_peers(index, expect).await
    }

    /// After the start command (`outcome`): the node runs `expect` by `deadline`, then `done`
    /// journaled.
    pub(super) async fn start_ends(
        &mut self,
        index: usize,
        outcome: &CommandResult,
        deadline: Instant,
        expect: Running,
        done: Step,
    ) -> StepResult {
        let spec = &self.targets[index].spec;
        let (command, timeout) = (spec.commands.start.clone(), spec.timeouts.start);
        if let Some(why) = command_failure(&command, outcome) {
            let info = self.observe(index).await?;
            if self.running(&info) != expect {
                return Err(self.step_failed(index, &format!("its start command failed: {why}")));
            }
        }
        if expect == Running::Tls {
            self.start_early_ping(index);
        }
        if !self.wait_running(index, expect, deadline).await? {
            let info = self.observe(index).await?;
            let now = self.running(&info);
            let why = if now == Running::Unreachable {
                ": its VM runs (registered with epmd) but answers neither over plain TCP nor over TLS, as happens when its certificate, key or CA is rejected; see its log".to_string()
            } else {
                crate::observe::why_down(&self.targets[index], &info)
                    .map_or_else(String::new, |why| format!(" ({why})"))
            };
            return Err(self.step_failed(
                index,
                &format!(
                    "it is {} {} after its start command (expected {}){why}",
                    self.label_of(now),
                    humantime::format_duration(timeout),
                    self.label_of(expect)
                ),
            ));
        }
        self.mark(index, done)
    }

    pub(super) async fn verify(&mut self, index: usize) -> StepResult {
        let early = self
            .early_pings
            .iter()
            .position(|e| e.node == index)
            .map(|at| self.early_pings.swap_remove(at));
        let Some(ping) = self.targets[index].spec.commands.ping.clone() else {
            if self.roll.ready_after_each_node() {
                self.await_node_ready(index).await?;
            }
            self.after_start_gate(index).await?;
            return self.mark(index, Step::Verified);
        };
        self.report_node(index, NodeActivity::CheckingCtl);
        let timeout = self.targets[index].spec.timeouts.ping;
        let fresh = self.cluster.hosts[index].run(&ping, timeout);
        // The early ping may be halfway through an attempt begun before the node was up: race it
        // against a fresh one. The fresh one decides unless the early one succeeds first; with
        // no early ping (a resumed run) the fresh one alone decides.
        let outcome = match early {
            Some(mut early) => {
                tokio::pin!(fresh);
                tokio::select! {
                    joined = &mut early.task => match joined {
                        Ok(Ok(())) => None,
                        _ => Some(fresh.await),
                    },
                    out = &mut fresh => Some(out),
                }
            }
            None => Some(fresh.await),
        };
        let failure = outcome.and_then(|outcome| command_failure(&ping, &outcome));
        if let Some(why) = failure {
            return Err(self.step_failed(index, &format!("its ctl cannot reach it: {why}")));
        }
        if self.roll.ready_after_each_node() {
            self.await_node_ready(index).await?;
        }
        self.after_start_gate(index).await?;
        self.mark(index, Step::Verified)
    }

    /// Retry the node's ctl ping in the background until it answers, or until the node's start
    /// and rejoin timeouts have passed; `verify` collects the outcome.
    pub(super) fn start_early_ping(&mut self, index: usize) {
        let spec = &self.targets[index].spec;
        let Some(ping) = spec.commands.ping.clone() else {
            return;
        };
        let (timeout, give_up) = (
            spec.timeouts.ping,
            Instant::now() + spec.timeouts.start + spec.timeouts.rejoin,
        );
        let transport = self.cluster.hosts[index].clone();
        let task = tokio::spawn(async move {
            loop {
                match transport.run(&ping, timeout).await {
                    Ok(out) if out.success() => return Ok(()),
                    Ok(out) => {
                        if Instant::now() >= give_up {
                            return Err(out.tail());
                        }
                    }
                    Err(e) => {
                        if Instant::now() >= give_up {
                            return Err(e.to_string());
                        }
                    }
                }
                tokio::time::sleep(EARLY_PING_RETRY).await;
            }
        });
        // A node's newer ping replaces an older one (dropping it aborts its task).
        self.early_pings.retain(|e| e.node != index);
        self.early_pings.push(EarlyPing { node: index, task });
    }

    /// Zero-split: the node's `commands.ready` succeeds (it has finished starting, e.g. loaded
    /// its Mnesia tables from the others) before the roll goes on.
    pub(super) async fn await_node_ready(&mut self, index: usize) -> StepResult {
        let spec = &self.targets[index].spec;
        let Some(ready) = spec.commands.ready.clone() else {
            return Ok(());
        };
        let timeout = spec.timeouts.ready;
        self.report_node(index, NodeActivity::AwaitingReady);
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let transport = self.cluster.hosts[index].clone();
            let outcome = transport
                .run(&ready, left.max(Duration::from_secs(1)))
                .await;
            let Some(said) = command_failure(&ready, &outcome) else {
                return Ok(());
            };
            if started.elapsed() >= timeout {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it is linked to every node but did not report ready within {}: {said}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            for _ in 0..5 {
                self.pause_between_polls().await?;
            }
        }
    }

    /// After its seal: the node's own ctl (`commands.ping`, now on the stock TLS text) is run
    /// in the background; [`Self::every_ctl_reaches_its_node`] collects the outcomes.
    pub(super) fn start_ctl_ping(&self, index: usize, pings: &mut CtlPings) {
        let target = &self.targets[index];
        let Some(ping) = target.spec.commands.ping.clone() else {
            return;
        };
        self.report_node(index, NodeActivity::CheckingCtl);
        let (transport, timeout) = (self.cluster.hosts[index].clone(), target.spec.timeouts.ping);
        pings.spawn(async move {
            let failure = command_failure(&ping, &transport.run(&ping, timeout).await);
            (index, failure)
        });
    }

    /// After the seal: every node's own ctl reached it (collects the pings started as each
    /// node's file was switched).
    pub(super) async fn every_ctl_reaches_its_node(&mut self, mut pings: CtlPings) -> StepResult {
        let mut failed = Vec::new();
        while let Some(joined) = pings.join_next().await {
            if let (index, Some(why)) = joined.expect("ctl ping task") {
                failed.push((index, why));
            }
        }
        failed.sort();
        // Reported against the last node, so that a rollback unseals every node.
        let last = self.targets.len() - 1;
        match failed.into_iter().next() {
            Some((index, why)) => Err(self.step_failed(
                last,
                &format!(
                    "after the seal, the ctl of {} cannot reach it: {why}",
                    self.name(index)
                ),
            )),
            None => Ok(()),
        }
    }
}
