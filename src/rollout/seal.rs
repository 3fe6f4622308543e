//! The one-restart path: telling hybrid nodes who speaks TLS, and the seal (H → TLS without a
//! restart) and its undoing.

use super::*;

impl Rollout<'_> {
    /// Before node `index` starts with the hybrid module (the one-restart path's H stage), the
    /// nodes that run the module learn that it speaks TLS; before it starts at the roll's other
    /// stage (plain, on the way back), that it no longer does. So no two nodes that run the module
    /// ever link in plain TCP, and none dials TLS to a plain node. Idempotent (a resumed run tells
    /// them again).
    pub(super) async fn tell_hybrid_peers(&mut self, index: usize, expect: Running) -> StepResult {
        let Some(roll) = self.roll.tells_hybrid_peers() else {
            return Ok(());
        };
        let (starts_at, leaves) = match expect {
            Running::Tls => (roll.to, roll.from),
            _ => (roll.from, roll.to),
        };
        let op = match (starts_at, leaves) {
            (Stage::Hybrid, _) => "add",
            (_, Stage::Hybrid) => "remove",
            _ => return Ok(()),
        };
        let name = self.name(index).to_string();
        let others: Vec<usize> = (0..self.targets.len()).filter(|&p| p != index).collect();
        let infos = self.observe_all(&others).await?;
        for (&peer, info) in others.iter().zip(&infos) {
            if info.proto_dist().and_then(Stage::of_signature) != Some(Stage::Hybrid) {
                continue;
            }
            self.cluster
                .observer
                .hybrid(&self.targets[peer], Via::Tls, op, &[&name])
                .await
                .map_err(|e| {
                    self.step_failed(
                        index,
                        &format!(
                            "could not tell {} (it runs the hybrid module) about it: {e}",
                            self.name(peer)
                        ),
                    )
                })?;
        }
        Ok(())
    }

    /// The H → TLS roll, one node, no restart: seal the module (TLS only from now on), then write
    /// the stock TLS text (which its ctl uses from then on, and its next restart boots), then
    /// verify through its ctl.
    pub(super) async fn seal_node(&mut self, index: usize) -> StepResult {
        for _ in 0..MAX_ROUNDS {
            self.check_interrupt()?;
            let file = self.file_state(index).await?;
            let running = self.running(&self.observe(index).await?);
            match (file, running) {
                (FileState::Foreign, _) => {
                    return Err(
                        self.needs_operator(index, "its flags file was changed outside distls")
                    );
                }
                (_, Running::Plain) => self.set_sealed(index, true).await?,
                (FileState::Original, Running::Tls) => self.edit(index).await?,
                // Its ctl is asked with every other node's once all are sealed (one VM boot
                // each, at once, instead of one after the other).
                (FileState::Tls, Running::Tls) if self.step_of(index) != Step::Verified => {
                    self.mark(index, Step::Verified)?
                }
                (FileState::Tls, Running::Tls) => return Ok(()),
                (_, running) => {
                    return Err(self.step_failed(
                        index,
                        &format!(
                            "it is {} while the cluster is sealed at run time (every node must run the hybrid module)",
                            self.label_of(running)
                        ),
                    ));
                }
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// Undoes [`Self::seal_node`]: the H text back, then the module unsealed. A node that was
    /// restarted since the seal runs stock TLS: it restarts into H.
    pub(super) async fn unseal_node(&mut self, index: usize) -> StepResult {
        for _ in 0..MAX_ROUNDS {
            self.check_interrupt()?;
            let file = self.file_state(index).await?;
            let info = self.observe(index).await?;
            let running = self.running(&info);
            let sealed_module = info.proto_dist() == Some(crate::stage::SEALED_SIGNATURE);
            match (file, running) {
                (FileState::Foreign, _) => {
                    return Err(
                        self.needs_operator(index, "its flags file was changed outside distls")
                    );
                }
                (FileState::Tls, _) => self.restore(index, Step::Stopped).await?,
                (FileState::Original, Running::Tls) if sealed_module => {
                    self.set_sealed(index, false).await?
                }
                (FileState::Original, Running::Tls) => {
                    self.stop(index, &info, Step::RevertStopping, Step::Stopped)
                        .await?
                }
                (FileState::Original, Running::Down) => {
                    self.start(index, Step::RevertStarting, Step::Started, Running::Plain)
                        .await?
                }
                (FileState::Original, Running::Plain) => {
                    return self.await_full_rejoin(index, Step::Reverted, true).await;
                }
                (_, running) => {
                    return Err(self.step_failed(
                        index,
                        &format!(
                            "it is {} while the seal is undone at run time",
                            self.label_of(running)
                        ),
                    ));
                }
            }
        }
        Err(self.needs_operator(index, "its state keeps changing under distls"))
    }

    /// `seal` or `unseal` the module on node `index`, through a TLS probe VM (a sealed node takes
    /// only TLS), then wait until the node reports it.
    pub(super) async fn set_sealed(&mut self, index: usize, sealed: bool) -> StepResult {
        let op = if sealed { "seal" } else { "unseal" };
        let (intent, done, want, activity) = match sealed {
            true => (
                Step::Sealing,
                Step::Sealed,
                Running::Tls,
                NodeActivity::Sealing,
            ),
            false => (
                Step::Unsealing,
                Step::Stopped,
                Running::Plain,
                NodeActivity::Unsealing,
            ),
        };
        self.report_node(index, activity);
        self.mark(index, intent)?;
        match self
            .cluster
            .observer
            .hybrid(&self.targets[index], Via::Tls, op, &[])
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(self.step_failed(index, "the hybrid module is not loaded there"));
            }
            Err(e) => return Err(self.step_failed(index, &e.to_string())),
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        if !self.wait_running(index, want, deadline).await? {
            return Err(self.step_failed(index, &format!("it does not report `{op}` done")));
        }
        self.mark(index, done)
    }
}
