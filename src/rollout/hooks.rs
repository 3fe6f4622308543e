//! The plan's own gates around a node's restart: `commands.before_stop` and
//! `commands.after_start` (docs/hooks.md).

use super::*;

impl Rollout<'_> {
    /// The plan's gate after a start (`commands.after_start`), if it has one.
    pub(super) async fn after_start_gate(&mut self, index: usize) -> StepResult {
        if !self.gate_applies(index, Hook::AfterStart) {
            return Ok(());
        }
        let spec = &self.targets[index].spec;
        match spec.commands.after_start.clone() {
            Some(gate) => {
                let timeout = spec.timeouts.after_start;
                self.command_gate(index, Hook::AfterStart, &gate, timeout)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Whether node `index`'s `hook` runs in this roll: only on the way to TLS, and a flavor's
    /// default gate only where the roll keeps one mesh.
    pub(super) fn gate_applies(&self, index: usize, hook: Hook) -> bool {
        let (before_stop, after_start) = self.targets[index].spec.commands.gates_from_flavor;
        let from_flavor = match hook {
            Hook::BeforeStop => before_stop,
            Hook::AfterStart => after_start,
        };
        self.roll.toward_tls() && (!from_flavor || self.roll.runs_flavor_gates())
    }

    /// A command of the plan's that must exit 0 before the roll goes on: retried (every
    /// second) until it does or `timeout` has passed, which fails the node's step. Passing is
    /// journaled; a resumed run asks again (the gates are checks, and drain is idempotent).
    pub(super) async fn command_gate(
        &mut self,
        index: usize,
        hook: Hook,
        gate: &str,
        timeout: Duration,
    ) -> StepResult {
        self.report_node(index, hook.activity());
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let host = self.cluster.hosts[index].clone();
            let outcome = host.run(gate, left.max(Duration::from_secs(1))).await;
            let Some(said) = command_failure(gate, &outcome) else {
                let name = self.name(index).to_string();
                let what = format!(
                    "{} passed after {:.1}s",
                    hook.key(),
                    started.elapsed().as_secs_f64()
                );
                self.journal.record(Some(&name), &what);
                self.store.save(&mut self.journal)?;
                return Ok(());
            };
            if started.elapsed() >= timeout {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "its {} did not pass within {} ({}): {said}",
                        hook.key(),
                        humantime::format_duration(timeout),
                        hook.when()
                    ),
                ));
            }
            for _ in 0..10 {
                self.pause_between_polls().await?;
            }
        }
    }
}

impl Rollout<'_> {
    /// A batch's later node: its before-stop gate asked once, with the batch's earlier nodes
    /// already stopped (quorum first). Passing is journaled like [`Self::command_gate`]; not
    /// passing ends the batch there, and the node waits for the next one (where its gate gets
    /// its whole timeout).
    pub(super) async fn before_stop_gate_passes_now(
        &mut self,
        index: usize,
        gate: &str,
    ) -> StepResult<bool> {
        self.report_node(index, NodeActivity::AwaitingBeforeStop);
        let timeout = self.targets[index].spec.timeouts.before_stop;
        let started = Instant::now();
        let host = self.cluster.hosts[index].clone();
        let outcome = host.run(gate, timeout).await;
        let name = self.name(index).to_string();
        let what = match command_failure(gate, &outcome) {
            None => format!(
                "{} passed after {:.1}s",
                Hook::BeforeStop.key(),
                started.elapsed().as_secs_f64()
            ),
            Some(_) => format!(
                "{} did not pass with the batch's earlier nodes stopped: it waits for the next batch",
                Hook::BeforeStop.key()
            ),
        };
        self.journal.record(Some(&name), &what);
        self.store.save(&mut self.journal)?;
        Ok(outcome.is_ok_and(|out| out.success()))
    }
}

/// The plan's command gates around a node's restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    BeforeStop,
    AfterStart,
}

impl Hook {
    fn key(self) -> &'static str {
        match self {
            Hook::BeforeStop => "commands.before_stop",
            Hook::AfterStart => "commands.after_start",
        }
    }

    fn when(self) -> &'static str {
        match self {
            Hook::BeforeStop => "the node was not stopped",
            Hook::AfterStart => "the node runs, the roll did not go on",
        }
    }

    fn activity(self) -> NodeActivity {
        match self {
            Hook::BeforeStop => NodeActivity::AwaitingBeforeStop,
            Hook::AfterStart => NodeActivity::AwaitingAfterStart,
        }
    }
}
