//! Restarting several nodes at once (`batch: K`, docs/batches.md): a batch's stop commands run
//! together, then its start commands (zero-split: one VM boot after the other), then each node's
//! rejoin gate and checks in plan order.
//! Only on the way to TLS: going back, and the seal, take one node at a time. Every node keeps
//! its own journal steps, so a run killed mid-batch resumes each node where it was.

use super::hooks::Hook;
use super::*;

impl Rollout<'_> {
    /// The nodes the batch starting at `first` may take: up to the batch size of nodes not done
    /// yet, no more than the canary has left, and at least every node a killed run left under way.
    /// A node a resumed run finds done is driven alone, as without batches.
    pub(super) fn batch_from(&self, first: usize) -> Vec<usize> {
        if !self.roll.toward_tls() || self.roll.at_run_time() || !self.pending_or_under_way(first) {
            return vec![first];
        }
        let nodes = self.targets.len();
        let mut size = self.options.batch.size(nodes);
        if let Some(canary) = &self.options.pause_after
            && canary.left() > 0
        {
            size = size.min(canary.left());
        }
        let mut end = (first + size).min(nodes);
        if let Some(last) = (first..nodes).rev().find(|&j| self.under_way(j)) {
            end = end.max(last + 1);
        }
        (first..end).collect()
    }

    /// Node `index` is somewhere on its way forward in this roll, not through yet: taken into a
    /// batch (a rollback's or the seal's steps are not this way).
    pub(super) fn under_way(&self, index: usize) -> bool {
        use Step::*;
        matches!(
            self.step_of(index),
            Stopping | Stopped | Editing | Edited | Starting | Started | Rejoined
        )
    }

    /// Not started yet in this roll, or under way.
    fn pending_or_under_way(&self, index: usize) -> bool {
        self.step_of(index) == Step::Pending || self.under_way(index)
    }

    /// Nodes after `index` that a batch took along with it: they may be down, or already on
    /// the roll's far side, while `index` rejoins.
    pub(super) fn batch_mates_after(&self, index: usize) -> Vec<usize> {
        (index + 1..self.targets.len())
            .filter(|&j| self.under_way(j))
            .collect()
    }

    /// Drive `members` (consecutive, in plan order) to the end of the roll together. Returns
    /// those it took: a prefix of `members`, shorter when a before-stop gate ends the batch.
    pub(super) async fn drive_batch(&mut self, members: &[usize]) -> StepResult<Vec<usize>> {
        let taken = self.stop_batch(members).await?;
        let mut starts = Vec::new();
        for &m in &taken {
            if let Some(start) = self.advance_to_start(m).await.map_err(|f| f.on_node(m))? {
                starts.push(start);
            }
        }
        self.start_batch(&starts).await?;
        for &m in &taken {
            self.drive_node(m, Direction::Forward)
                .await
                .map_err(|f| f.on_node(m))?;
        }
        Ok(taken)
    }

    /// The nodes of a batch (or the one node) `taken` are through: their times and events, the
    /// seal's ctl pings, and whether that makes the canary's count (every restart counts, the
    /// roll's last too). `was_done`: each was through before this run.
    pub(super) fn batch_done(
        &mut self,
        taken: &[usize],
        was_done: &[bool],
        started: Instant,
        ctl_pings: &mut CtlPings,
    ) -> bool {
        let at_run_time = self.roll.at_run_time();
        let mut canary_done = false;
        for (&index, &was_done) in taken.iter().zip(was_done) {
            if at_run_time {
                // Its file is switched: its ctl boots while the next nodes are sealed.
                self.start_ctl_ping(index, ctl_pings);
            }
            let took = started.elapsed();
            self.timings[index] = Some(took);
            self.reporter.report(Event::NodeDone {
                index,
                node: self.name(index).to_string(),
                seconds: (took.as_secs_f64() * 10.0).round() / 10.0,
            });
            canary_done |= !was_done
                && !at_run_time
                && self
                    .options
                    .pause_after
                    .as_ref()
                    .is_some_and(Canary::node_done);
        }
        canary_done
    }

    /// Admit the batch's nodes and stop the fresh ones. A node with a before-stop gate is
    /// stopped on its own right after its gate passed, and every node admitted before it is
    /// stopped before its gate is asked, so each gate sees the nodes before it gone (quorum
    /// first); a gate asked with no node of the batch down waits its whole timeout, a later one is
    /// asked once and, if it says no, ends the batch. The other fresh nodes stop together.
    async fn stop_batch(&mut self, members: &[usize]) -> StepResult<Vec<usize>> {
        let mut taken: Vec<usize> = Vec::new();
        let mut together: Vec<(usize, NodeInfo)> = Vec::new();
        for &m in members {
            self.check_interrupt()?;
            let info = self
                .observe(m)
                .await
                .map_err(|e| Failure::from(e).on_node(m))?;
            let fresh = self.step_of(m) == Step::Pending
                && self.running(&info) == Running::Plain
                && self
                    .file_state(m)
                    .await
                    .map_err(|e| Failure::from(e).on_node(m))?
                    == FileState::Original;
            match self.before_stop_gate(m, &info, Step::Stopping) {
                Some(gate) if fresh => {
                    self.stop_together(std::mem::take(&mut together)).await?;
                    let one_down = taken.iter().any(|&t| self.under_way(t));
                    if one_down {
                        if !self
                            .before_stop_gate_passes_now(m, &gate)
                            .await
                            .map_err(|f| f.on_node(m))?
                        {
                            break;
                        }
                    } else {
                        let timeout = self.targets[m].spec.timeouts.before_stop;
                        self.command_gate(m, Hook::BeforeStop, &gate, timeout)
                            .await
                            .map_err(|f| f.on_node(m))?;
                    }
                    self.stop_together(vec![(m, info)]).await?;
                }
                None if fresh => together.push((m, info)),
                _ => {}
            }
            taken.push(m);
        }
        self.stop_together(together).await?;
        Ok(taken)
    }

    /// Stop `nodes` (each as observed just before) together: their stop commands at once, then
    /// each down by its deadline (with the escalation by OS pid), journaled per node.
    async fn stop_together(&mut self, nodes: Vec<(usize, NodeInfo)>) -> StepResult {
        let mut begun = Vec::new();
        for (m, info) in &nodes {
            let os_pid = self
                .stop_begins(*m, info, Step::Stopping)
                .await
                .map_err(|f| f.on_node(*m))?;
            begun.push((*m, os_pid));
        }
        let indices: Vec<usize> = begun.iter().map(|(m, _)| *m).collect();
        let started = Instant::now();
        let outcomes = self.run_together(&indices, Restart::Stop).await;
        for ((m, os_pid), outcome) in begun.into_iter().zip(outcomes) {
            let deadline = started + self.targets[m].spec.timeouts.stop;
            self.stop_ends(m, os_pid, &outcome, deadline, Step::Stopped)
                .await
                .map_err(|f| f.on_node(m))?;
        }
        Ok(())
    }

    /// One node's own steps up to its start (stop, edit, restore: a resumed node may need any),
    /// one after the other; the start it then needs, if it needs one.
    async fn advance_to_start(&mut self, index: usize) -> StepResult<Option<(usize, Running)>> {
        for _ in 0..MAX_ROUNDS {
            let (info, step, action) = self.next_action(index, Direction::Forward).await?;
            match action {
                Action::Stop { intent } => self.stop(index, &info, intent, Step::Stopped).await?,
                Action::Edit => self.edit(index).await?,
                Action::RestoreFile { done } => self.restore(index, done).await?,
                // Killed while starting it: its own start gives that start a chance first.
                Action::Start { intent, expect } if step == intent => {
                    self.start(index, intent, Step::Started, expect).await?;
                    return Ok(None);
                }
                Action::Start { expect, .. } => return Ok(Some((index, expect))),
                Action::AwaitRejoin | Action::Verify | Action::Done => return Ok(None),
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// The batch's start commands, together; then each node running what it should. Where the
    /// roll tells running hybrid nodes about a node before it starts (zero-split), the nodes start
    /// one after the other up to their VM answering, so that each is told of the next before the
    /// next boots: a hybrid node not told would dial its batch mate over plain TCP and be refused
    /// (on RabbitMQ, a node then never finished booting). Their rejoins and checks still overlap.
    async fn start_batch(&mut self, starts: &[(usize, Running)]) -> StepResult {
        if self.roll.tells_hybrid_peers().is_some() {
            for &(m, expect) in starts {
                self.start(m, Step::Starting, Step::Started, expect)
                    .await
                    .map_err(|f| f.on_node(m))?;
            }
            return Ok(());
        }
        for &(m, expect) in starts {
            self.start_announced(m, expect)
                .await
                .map_err(|f| f.on_node(m))?;
            self.mark(m, Step::Starting)?;
        }
        let indices: Vec<usize> = starts.iter().map(|(m, _)| *m).collect();
        let started = Instant::now();
        let outcomes = self.run_together(&indices, Restart::Start).await;
        for (&(m, expect), outcome) in starts.iter().zip(outcomes) {
            let deadline = started + self.targets[m].spec.timeouts.start;
            self.start_ends(m, &outcome, deadline, expect, Step::Started)
                .await
                .map_err(|f| f.on_node(m))?;
        }
        Ok(())
    }

    /// Each node's stop or start command, all at once; their outcomes in order.
    async fn run_together(&self, indices: &[usize], which: Restart) -> Vec<CommandResult> {
        let runs: Vec<_> = indices
            .iter()
            .map(|&m| {
                let spec = &self.targets[m].spec;
                let (command, timeout) = match which {
                    Restart::Stop => (spec.commands.stop.clone(), spec.timeouts.stop),
                    Restart::Start => (spec.commands.start.clone(), spec.timeouts.start),
                };
                let host = self.cluster.hosts[m].clone();
                tokio::spawn(async move { host.run(&command, timeout).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(runs.len());
        for run in runs {
            outcomes.push(run.await.expect("a node's command task"));
        }
        outcomes
    }
}

/// Which of a node's commands [`Rollout::run_together`] runs.
#[derive(Clone, Copy)]
enum Restart {
    Stop,
    Start,
}
