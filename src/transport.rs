//! How distls reaches a node's host: read and write its files, run its commands, start a probe VM.
//! Locally, or over a shared SSH connection; optionally as the service user (`become`).
//!
//! One concern per file: `commands` runs shell scripts under a deadline, `files` and
//! `file_agent` reach the host's files, `spawn` starts long-lived processes, and `environment`
//! hands the node's environment to all of them.

mod commands;
mod environment;
mod file_agent;
mod files;
mod spawn;

pub use spawn::{ProcessHandle, Spawned};

use crate::ssh::SshConnection;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
enum Access {
    Local,
    Ssh(Arc<SshConnection>),
}

/// One node's way in: the host access, plus the node's environment and `become` prefix.
#[derive(Clone)]
pub struct Transport {
    access: Access,
    env: Arc<Vec<(String, String)>>,
    become_command: Option<String>,
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
    #[error("`{command}` on {host} did not finish within {}", humantime::format_duration(*.timeout))]
    Timeout {
        host: String,
        command: String,
        timeout: Duration,
    },
    #[error("cannot run `{command}` on {host}: {detail}")]
    Spawn {
        host: String,
        command: String,
        detail: String,
    },
    #[error("{host}: {path}: it is {size} bytes, more than the {limit} distls reads")]
    TooLarge {
        host: String,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{host}: {path}: {detail}")]
    File {
        host: String,
        path: PathBuf,
        detail: String,
    },
}

impl Transport {
    pub fn local(env: Vec<(String, String)>, become_command: Option<String>) -> Self {
        Transport {
            access: Access::Local,
            env: Arc::new(env),
            become_command,
        }
    }

    pub fn ssh(
        connection: Arc<SshConnection>,
        env: Vec<(String, String)>,
        become_command: Option<String>,
    ) -> Self {
        Transport {
            access: Access::Ssh(connection),
            env: Arc::new(env),
            become_command,
        }
    }

    /// Where commands run, for messages: `local` or `ssh root@db1:22`.
    pub fn describe(&self) -> String {
        match &self.access {
            Access::Local => "local host".to_string(),
            Access::Ssh(c) => format!("ssh {}", c.label()),
        }
    }

    /// Identifies the host and the user commands run as (probe VMs are shared per site).
    pub fn site(&self) -> String {
        format!(
            "{} as {}",
            self.describe(),
            self.become_command.as_deref().unwrap_or("self")
        )
    }

    /// The site and the plan's `env` for its commands: two transports with the same context run
    /// a command the same way (the same `erl` on PATH). Kept in memory only: `env` may hold
    /// secrets.
    pub fn command_context(&self) -> String {
        // One SSH connection per distinct way of reaching a host (config file, options): two
        // entries naming one host:port may still reach different machines.
        let reach = match &self.access {
            Access::Local => "local".to_string(),
            Access::Ssh(connection) => format!("ssh connection {:p}", Arc::as_ptr(connection)),
        };
        format!(
            "{reach} as {} with {:?}",
            self.become_command.as_deref().unwrap_or("self"),
            self.env
        )
    }

    pub fn is_local(&self) -> bool {
        matches!(self.access, Access::Local)
    }

    /// Whether the node's environment (the plan's `env`) sets `name` for its commands.
    pub fn sets_env(&self, name: &str) -> bool {
        self.env.iter().any(|(key, _)| key == name)
    }

    /// Plain local file access works only without `become`; everything else goes through a shell.
    pub fn is_direct(&self) -> bool {
        self.is_local() && self.become_command.is_none()
    }

    fn file_error(&self, path: &Path, detail: impl Into<String>) -> TransportError {
        TransportError::File {
            host: self.describe(),
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// `command` (a script, a program) could not be started or run to its end.
    fn spawn_error(&self, command: &str, detail: String) -> TransportError {
        TransportError::Spawn {
            host: self.describe(),
            command: command.to_string(),
            detail,
        }
    }
}

/// Output of a command kept at most (stdout and stderr each); the rest is read and dropped.
const OUTPUT_LIMIT: usize = 1024 * 1024;

/// What a finished command left behind, as bytes.
struct RawOutcome {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

fn ssh_detail(error: &openssh::Error) -> String {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    detail
}

#[cfg(test)]
mod test_support {
    use super::Transport;

    /// A local transport without `become`, with one variable in its environment.
    pub(super) fn local() -> Transport {
        Transport::local(vec![("DISTLS_TEST_VAR".into(), "it's set".into())], None)
    }
}
