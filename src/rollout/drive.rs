//! The per-node driver, both ways (observe → decide → act), and the check before a roll's
//! first change.

use super::*;

impl Rollout<'_> {
    /// The per-node driver, both ways: observe the node (its file, what it runs), decide the
    /// next action from that and its journal step ([`decide`], a pure function), act, again
    /// until it is where `direction` leads.
    pub(super) async fn drive_node(&mut self, index: usize, direction: Direction) -> StepResult {
        if self.roll.at_run_time() {
            return match direction {
                Direction::Forward => self.seal_node(index).await,
                Direction::Backward => self.unseal_node(index).await,
            };
        }
        for _ in 0..MAX_ROUNDS {
            let (info, _, action) = self.next_action(index, direction).await?;
            match action {
                Action::Stop { intent } => self.stop(index, &info, intent, Step::Stopped).await?,
                Action::Edit => self.edit(index).await?,
                Action::RestoreFile { done } => self.restore(index, done).await?,
                Action::Start { intent, expect } => {
                    self.start(index, intent, Step::Started, expect).await?
                }
                Action::AwaitRejoin => match (direction, self.roll.rejoin_gate()) {
                    (Direction::Forward, RejoinGate::FullMesh) => {
                        self.await_full_rejoin(index, Step::Rejoined, false).await?
                    }
                    (Direction::Forward, RejoinGate::TlsIsland) => {
                        self.await_tls_rejoin(index).await?
                    }
                    // Nodes reverted later in this rollback may be down now (a failed start).
                    (Direction::Backward, RejoinGate::FullMesh) => {
                        return self.await_full_rejoin(index, Step::Reverted, true).await;
                    }
                    (Direction::Backward, RejoinGate::TlsIsland) => {
                        return self.await_plain_rejoin(index).await;
                    }
                },
                Action::Verify => self.verify(index).await?,
                Action::Done => return Ok(()),
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// One round of the driver: the node observed (what it runs, with its OS pid), its journal
    /// step, and the action [`decide`] picks from them and its file.
    pub(super) async fn next_action(
        &mut self,
        index: usize,
        direction: Direction,
    ) -> StepResult<(NodeInfo, Step, Action)> {
        self.check_interrupt()?;
        let file = self.file_state(index).await?;
        let info = self.observe(index).await?;
        let running = self.running(&info);
        let step = self.step_of(index);
        let action = decide(direction, file, running, step)
            .map_err(|why| self.needs_operator(index, &why))?;
        tracing::debug!(
            node = self.name(index),
            ?direction,
            ?file,
            ?running,
            ?step,
            ?action,
            "next action"
        );
        Ok((info, step, action))
    }

    /// Before the first change: every node runs plain TCP from its original file, in one mesh
    /// (zero-split: every node runs the roll's `from` stage).
    pub(super) async fn require_plain_meshed_cluster(&mut self) -> StepResult {
        let started = self.roll.started_event();
        self.journal.record(None, &started);
        for index in 0..self.targets.len() {
            let file = self.file_state(index).await?;
            let info = self.observe(index).await?;
            let running = self.running(&info);
            if file != FileState::Original || running != Running::Plain {
                return Err(Failure::Fatal(Error::Refused(Message::new(format!("node {} is {} with its vm.dist.args {}; this roll starts from a running {} cluster and changed nothing", self.name(index), self.label_of(running), match file {
                        FileState::Original => "unchanged",
                        FileState::Tls => "already enabling TLS",
                        FileState::Foreign => "changed",
                    }, self.label_of(Running::Plain))).hint("start the node (or fix its file), then rerun"))));
            }
        }
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        let tls = self.links_tls(Running::Plain);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            return Err(Failure::Fatal(Error::Refused(Message::new(format!("the cluster is not fully meshed before the switch ({missing}); distls changed nothing")).hint("fix the cluster first: a roll would hide an existing split"))));
        }
        Ok(())
    }
}
