//! The failure policy (pause or roll back), the rollback itself, and the errors a step reports.

use super::*;

impl Rollout<'_> {
    pub(super) async fn handle_failure(&mut self, failure: StepFailure) -> Error {
        self.early_pings.clear();
        let node = self.name(failure.node).to_string();
        let message = format!("node {node}: {}", failure.message);
        self.note(Note::StepFailed {
            message: message.clone(),
        });
        self.journal.failure = Some(message.clone());
        if self.options.on_failure == OnFailure::Pause {
            if let Err(e) = self.journal.set_phase(Phase::Paused) {
                return e.into();
            }
            self.journal.record(Some(&node), "paused after failure");
            if let Err(e) = self.store.save(&mut self.journal) {
                return e.into();
            }
            let table = self.node_states().await;
            return Error::StepFailed(Message::new(format!("{message}\npaused (--on-failure pause): nothing was reverted; the journal {journal} says `paused`.\nnode states (journal step, then what distls sees now):{table}", journal = self.store.journal_path().display())).hint(format!("fix the cause and rerun `distls migrate {plan}` to retry from {node}, or run `distls rollback {plan}` to go back to plain TCP", plan = self.plan.path.display())));
        }
        if let Err(e) = self.journal.set_phase(Phase::RollingBack) {
            return e.into();
        }
        self.journal
            .record(Some(&node), "rolling back after failure");
        if let Err(e) = self.store.save(&mut self.journal) {
            return e.into();
        }
        let back_to = self.label_of(Running::Plain).to_string();
        self.note(Note::RollingBack { back_to });
        // A batch may have taken nodes after the one that failed: the rollback starts at the last.
        let last = self
            .batch_mates_after(failure.node)
            .last()
            .copied()
            .unwrap_or(failure.node);
        match self.rollback_from(last).await {
            Ok(()) => Error::StepFailed(Message::from(format!(
                "{message}\n{}",
                self.roll.rolled_back_after_failure()
            ))),
            Err(Failure::Step(f)) => {
                self.rollback_stuck(&format!("node {}: {}", self.name(f.node), f.message))
                    .await
            }
            Err(Failure::Fatal(e)) if e.exit_code() == crate::error::exit_code::INTERRUPTED => e,
            Err(Failure::Fatal(e)) => self.rollback_stuck(&e.to_string()).await,
        }
    }

    /// Revert nodes `last` down to the first, then check the plain mesh.
    pub(super) async fn rollback_from(&mut self, last: usize) -> StepResult {
        for index in (0..=last).rev() {
            let started = Instant::now();
            self.drive_node(index, Direction::Backward).await?;
            self.timings[index] = Some(started.elapsed());
        }
        // A run killed between restoring a flags file and removing its optfile left the optfile.
        for index in 0..self.targets.len() {
            if self.file_state(index).await? == FileState::Original {
                self.remove_optfile(index).await?;
            }
        }
        let everyone: Vec<usize> = (0..self.targets.len()).collect();
        let deadline = Instant::now() + self.max_rejoin_timeout();
        let tls = self.links_tls(Running::Plain);
        if let Err(missing) = self.wait_for_mesh(&everyone, tls, deadline).await? {
            return Err(self.step_failed(
                0,
                &format!(
                    "the {} cluster did not re-form: {missing}",
                    self.label_of(Running::Plain)
                ),
            ));
        }
        self.ready_gate(Running::Plain).await?;
        self.journal.set_phase(Phase::RolledBack)?;
        self.journal.record(None, "rolled back");
        self.store.save(&mut self.journal)?;
        if let Some(to) = self.roll.to_stage() {
            // Zero-split: the roll is back at its start, the run has not turned to plain yet.
            failpoint(&format!("{}:rolled-back", to.tag()));
        }
        Ok(())
    }

    /// One line per node: its journal step, then what distls can see of it now (or why not).
    pub(super) async fn node_states(&self) -> String {
        let mut table = String::new();
        let short = |e: &Error| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            if first.chars().count() > 160 {
                format!("{}…", first.chars().take(160).collect::<String>())
            } else {
                first
            }
        };
        for index in 0..self.targets.len() {
            let file = self.file_state(index).await;
            let running = match &file {
                // The same way in failed a moment ago: do not wait for a probe too.
                Err(_) => None,
                Ok(_) => self.observe(index).await.map(|i| self.running(&i)).ok(),
            };
            let unreachable = match &file {
                Err(e) => format!(" (cannot reach it: {})", short(e)),
                Ok(_) => String::new(),
            };
            table.push_str(&format!(
                "\n  {:<32} journal {:<17} runs {:<10} vm.dist.args {}{unreachable}",
                self.name(index),
                self.step_of(index).label(),
                running.map_or("unknown", |r| self.label_of(r)),
                match file {
                    Ok(FileState::Original) => "original",
                    Ok(FileState::Tls) => "TLS",
                    Ok(FileState::Foreign) => "changed outside distls",
                    Err(_) => "unknown",
                }
            ));
        }
        table
    }

    pub(super) async fn rollback_stuck(&mut self, why: &str) -> Error {
        let table = self.node_states().await;
        let began_after = match &self.journal.failure {
            Some(cause) if !cause.starts_with("rollback stopped:") => {
                format!("\nthe rollback began after: {cause}")
            }
            _ => String::new(),
        };
        self.journal.failure = Some(format!("rollback stopped: {why}"));
        let saved = self.store.save(&mut self.journal);
        let journal_note = match saved {
            Ok(()) => format!(
                "the journal {} is consistent (phase rolling_back)",
                self.store.journal_path().display()
            ),
            Err(e) => format!("the journal could not be updated: {e}"),
        };
        Error::NeedsOperator(Message::new(format!("the rollback could not finish: {why}{began_after}\nnode states (journal step, then what distls sees now):{table}\n{journal_note}; every node distls edited has its original vm.dist.args backed up next to it (.distls-orig).")).hint(format!("fix the cause (bring the host back if it is unreachable), then run `distls rollback {plan}`; `distls status {plan}` shows where each node is", plan = self.plan.path.display())))
    }

    /// `distls rollback`: every node back to plain TCP, newest first.
    pub async fn rollback(&mut self) -> (Vec<NodeSummary>, Result<()>) {
        if let Err(e) = self.journal.set_phase(Phase::RollingBack) {
            self.release_probes().await;
            return (Vec::new(), Err(e.into()));
        }
        self.journal.record(None, "rollback requested");
        if let Err(e) = self.store.save(&mut self.journal) {
            self.release_probes().await;
            return (Vec::new(), Err(e.into()));
        }
        let last = self.targets.len() - 1;
        let outcome = match self.rollback_from(last).await {
            Ok(()) => Ok(()),
            Err(Failure::Fatal(e)) if e.exit_code() == crate::error::exit_code::INTERRUPTED => {
                Err(e)
            }
            Err(Failure::Fatal(e)) => Err(self.rollback_stuck(&e.to_string()).await),
            Err(Failure::Step(f)) => {
                let why = format!("node {}: {}", self.name(f.node), f.message);
                Err(self.rollback_stuck(&why).await)
            }
        };
        self.reporter.report(Event::Finished);
        let summary = self.summary().await;
        self.release_probes().await;
        (summary, outcome)
    }

    pub(super) fn step_failed(&self, index: usize, message: &str) -> Failure {
        Failure::Step(StepFailure {
            node: index,
            message: message.to_string(),
        })
    }

    pub(super) fn needs_operator(&self, index: usize, why: &str) -> Failure {
        Failure::Fatal(Error::NeedsOperator(
            Message::new(format!("node {}: {why}", self.name(index))).hint(format!(
                "inspect it with `distls status {}`; the original vm.dist.args is at {}",
                self.plan.path.display(),
                self.targets[index].backup.display()
            )),
        ))
    }
}
