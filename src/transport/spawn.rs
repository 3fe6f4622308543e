//! Long-lived processes with piped stdio on the host (the probe VM), local or remote.

use super::{Access, Transport, TransportError, ssh_detail};
use crate::shell::shell_quote;
use crate::ssh::SshConnection;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

/// A long-lived process with piped stdio (the probe VM), local or remote.
pub struct Spawned {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    pub handle: ProcessHandle,
}

pub enum ProcessHandle {
    Local(tokio::process::Child),
    Remote(openssh::Child<Arc<openssh::Session>>),
}

impl ProcessHandle {
    /// Its stdin is already closed (the probe halts on EOF); make sure it is gone.
    pub async fn finish(self) {
        match self {
            ProcessHandle::Local(mut child) => {
                if tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            ProcessHandle::Remote(child) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }
}

impl Transport {
    /// Start a long-lived process with piped stdio on the host, in directory `dir`.
    pub async fn spawn(
        &self,
        program: &str,
        args: &[String],
        extra_env: &[(String, String)],
        dir: &Path,
    ) -> Result<Spawned, TransportError> {
        let script = format!(
            "cd {} && exec {}",
            shell_quote(&dir.display().to_string()),
            std::iter::once(shell_quote(program))
                .chain(args.iter().map(|a| shell_quote(a)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        match &self.access {
            Access::Local => self.spawn_local(program, &script, extra_env).await,
            Access::Ssh(connection) => {
                self.spawn_remote(connection, program, &script, extra_env)
                    .await
            }
        }
    }

    /// `script` in a local `/bin/sh`, in a process group of its own; `program` names it in errors.
    async fn spawn_local(
        &self,
        program: &str,
        script: &str,
        extra_env: &[(String, String)],
    ) -> Result<Spawned, TransportError> {
        let spawn_error = |detail: String| self.spawn_error(program, detail);
        let mut cmd = Command::new("/bin/sh");
        let mut feed = Vec::new();
        if self.become_command.is_some() {
            let (line, preamble) = self.shell_line(script, extra_env);
            cmd.arg("-c").arg(line);
            feed = preamble;
        } else {
            cmd.arg("-c")
                .arg(script)
                .envs(self.env.iter().chain(extra_env).cloned());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(&feed)
            .await
            .map_err(|e| spawn_error(e.to_string()))?;
        Ok(Spawned {
            stdin: Box::new(stdin),
            stdout: Box::new(child.stdout.take().expect("piped stdout")),
            stderr: Box::new(child.stderr.take().expect("piped stderr")),
            handle: ProcessHandle::Local(child),
        })
    }

    /// `script` over the SSH connection; `program` names it in errors.
    async fn spawn_remote(
        &self,
        connection: &SshConnection,
        program: &str,
        script: &str,
        extra_env: &[(String, String)],
    ) -> Result<Spawned, TransportError> {
        let spawn_error = |detail: String| self.spawn_error(program, detail);
        let (line, feed) = self.shell_line(script, extra_env);
        let mut cmd = connection.session().arc_raw_command(line);
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| spawn_error(ssh_detail(&e)))?;
        let mut stdin = child.stdin().take().expect("piped stdin");
        stdin
            .write_all(&feed)
            .await
            .map_err(|e| spawn_error(e.to_string()))?;
        Ok(Spawned {
            stdin: Box::new(stdin),
            stdout: Box::new(child.stdout().take().expect("piped stdout")),
            stderr: Box::new(child.stderr().take().expect("piped stderr")),
            handle: ProcessHandle::Remote(child),
        })
    }
}
