//! How distls reaches a node's host: read and write its files, run its commands, start a probe VM.
//! Only the local host for now; every operation goes through here so another transport can slot in.

use crate::atomic_file;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Debug, Clone)]
pub enum Transport {
    Local,
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct CommandOutcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CommandOutcome {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last few lines of output, for error messages.
    pub fn tail(&self) -> String {
        let text = format!("{}{}", self.stdout, self.stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("`{command}` did not finish within {}", humantime::format_duration(*.timeout))]
    Timeout { command: String, timeout: Duration },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
}

impl Transport {
    pub fn describe(&self) -> &'static str {
        match self {
            Transport::Local => "local",
        }
    }

    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, TransportError> {
        match self {
            Transport::Local => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| TransportError::File {
                        path: path.to_path_buf(),
                        source,
                    })
            }
        }
    }

    pub async fn file_exists(&self, path: &Path) -> bool {
        match self {
            Transport::Local => tokio::fs::metadata(path).await.is_ok(),
        }
    }

    /// Atomic replace keeping mode and owner (see `atomic_file::write`).
    pub async fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode_if_new: u32,
    ) -> Result<(), TransportError> {
        match self {
            Transport::Local => {
                let path_owned = path.to_path_buf();
                let bytes = bytes.to_vec();
                tokio::task::spawn_blocking(move || {
                    atomic_file::write(&path_owned, &bytes, mode_if_new)
                })
                .await
                .expect("file writer task")
                .map_err(|source| TransportError::File {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }

    /// Run a shell command with a deadline. It gets its own process group, so the operator's
    /// Ctrl-C reaches distls only, and a timeout can kill everything the command started.
    pub async fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutcome, TransportError> {
        match self {
            Transport::Local => run_local(command, timeout).await,
        }
    }

    /// Start a long-lived process with piped stdin/stdout (the probe VM).
    pub fn spawn(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Child, TransportError> {
        match self {
            Transport::Local => {
                let mut cmd = Command::new(program);
                cmd.args(args)
                    .envs(env.iter().cloned())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true);
                cmd.spawn().map_err(|source| TransportError::Spawn {
                    command: program.to_string(),
                    source,
                })
            }
        }
    }
}

async fn run_local(command: &str, timeout: Duration) -> Result<CommandOutcome, TransportError> {
    let started = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| TransportError::Spawn {
        command: command.to_string(),
        source,
    })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(CommandOutcome {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }),
        Ok(Err(source)) => Err(TransportError::Spawn {
            command: command.to_string(),
            source,
        }),
        Err(_) => {
            if let Some(pid) = pid {
                kill_process_group(pid);
            }
            Err(TransportError::Timeout {
                command: command.to_string(),
                timeout,
            })
        }
    }
}

fn kill_process_group(leader: u32) {
    // SAFETY: plain syscall on a process group this process created.
    unsafe {
        libc::killpg(leader as libc::pid_t, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_a_command_and_captures_output() {
        let out = Transport::Local
            .run("echo hi; echo err >&2; exit 3", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout.trim(), "hi");
        assert_eq!(out.tail(), "hi\nerr");
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_killed() {
        let err = Transport::Local
            .run("sleep 30", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }));
    }
}
