//! The node's flags file: switched with a backup taken first, restored byte for byte, read
//! back after every write.

use super::*;

impl Rollout<'_> {
    pub(super) async fn edit(&mut self, index: usize) -> StepResult {
        let file = self.file_label(index).to_string();
        let activity = match self.roll.to_stage() {
            Some(to) => NodeActivity::SwitchingFile {
                file,
                to: to.to_string(),
            },
            None => NodeActivity::EnablingTls { file },
        };
        self.report_node(index, activity);
        self.mark(index, Step::Editing)?;
        self.ensure_backup(index).await?;
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        if let Some(optfile) = target.optfile.as_ref().filter(|_| target.tls_uses_optfile) {
            // The file the new flags point at exists before they do.
            host.write_file_owned_like(
                &optfile.path,
                optfile.text.as_bytes(),
                0o600,
                &target.dist_args,
            )
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        host.write_file(&target.dist_args, target.tls.text.as_bytes(), 0o644)
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        if self.file_state(index).await? != FileState::Tls {
            let label = self.file_label(index);
            return Err(self.step_failed(index, &format!("{label} does not read back as written")));
        }
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        if let Some(optfile) = target.optfile.as_ref().filter(|_| !target.tls_uses_optfile) {
            // A zero-split roll toward plain: the flags no longer point at it.
            host.remove_file(&optfile.path)
                .await
                .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        self.mark(index, Step::Edited)
    }

    /// The original is saved once, before the first change, and never overwritten.
    pub(super) async fn ensure_backup(&mut self, index: usize) -> StepResult {
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        // An answer other than "absent" keeps distls from writing over what may be the backup.
        if host.try_exists(&target.backup).await.unwrap_or(true) {
            let bytes = host.read_file(&target.backup).await?;
            if sha256_hex(&bytes) != sha256_hex(target.pristine.as_bytes()) {
                return Err(self.needs_operator(
                    index,
                    &format!(
                        "its backup {} does not match the original",
                        target.backup.display()
                    ),
                ));
            }
            return Ok(());
        }
        host.write_file(&target.backup, target.pristine.as_bytes(), 0o600)
            .await
            .map_err(|e| Failure::Fatal(e.into()))
    }

    pub(super) async fn restore(&mut self, index: usize, done: Step) -> StepResult {
        let activity = NodeActivity::RestoringFile {
            file: self.file_label(index).to_string(),
            back_to: self.roll.from_stage().map(|from| from.to_string()),
        };
        self.report_node(index, activity);
        self.mark(index, Step::RevertRestoring)?;
        let (target, host) = (&self.targets[index], &self.cluster.hosts[index]);
        host.write_file(&target.dist_args, target.original.as_bytes(), 0o644)
            .await
            .map_err(|e| self.step_failed(index, &e.to_string()))?;
        if self.file_state(index).await? != FileState::Original {
            let label = self.file_label(index);
            return Err(self.step_failed(
                index,
                &format!("{label} does not read back as the original"),
            ));
        }
        self.remove_optfile(index).await?;
        self.mark(index, done)
    }

    /// The optfile goes once the flags no longer point at it: when the file is back at a text
    /// without it (plain), not when a zero-split roll returns to a hybrid or TLS stage.
    pub(super) async fn remove_optfile(&self, index: usize) -> StepResult {
        let target = &self.targets[index];
        if target.original_uses_optfile {
            return Ok(());
        }
        if let Some(optfile) = &target.optfile {
            self.cluster.hosts[index]
                .remove_file(&optfile.path)
                .await
                .map_err(|e| self.step_failed(index, &e.to_string()))?;
        }
        Ok(())
    }

    pub(super) async fn file_state(&self, index: usize) -> Result<FileState> {
        let target = &self.targets[index];
        let bytes = self.cluster.hosts[index]
            .read_file(&target.dist_args)
            .await?;
        Ok(target.classify_bytes(&bytes))
    }
}
