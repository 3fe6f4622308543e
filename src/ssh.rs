//! SSH connections: one multiplexed master per host (ControlMaster via the `openssh` crate),
//! opened once, shared by every node of that host, closed at exit.

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How to reach a node's host over SSH (transport `ssh`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshSpec {
    /// Address to connect to; the node name's host part unless `host` is set.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    /// An ssh_config(5) file to use instead of the user's.
    pub config_file: Option<PathBuf>,
    /// known_hosts file to check the host key against (default: the user's).
    pub known_hosts: Option<PathBuf>,
    /// Accept and remember a host key never seen before (`StrictHostKeyChecking=accept-new`).
    pub accept_unknown_host_keys: bool,
    /// Extra `-o Key=Value` options for ssh.
    pub options: Vec<String>,
}

/// How many hosts are connected to at once.
const CONCURRENT_CONNECTS: usize = 8;

pub struct SshConnection {
    label: String,
    session: Arc<Session>,
    /// Holds the generated ssh_config (extra options) for as long as the master lives.
    _config_dir: Option<tempfile::TempDir>,
}

impl SshConnection {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("ssh to {host}: {message}\n  hint: {hint}")]
pub struct SshError {
    pub host: String,
    pub message: String,
    pub hint: String,
}

pub fn label(spec: &SshSpec) -> String {
    let user = spec
        .user
        .as_ref()
        .map_or(String::new(), |u| format!("{u}@"));
    let port = spec.port.map_or(String::new(), |p| format!(":{p}"));
    format!("{user}{}{port}", spec.host)
}

/// Open one connection per distinct SSH setting, a bounded number at a time.
pub async fn connect_all(
    specs: &[&SshSpec],
) -> Result<HashMap<SshSpec, Arc<SshConnection>>, SshError> {
    let mut unique: Vec<SshSpec> = Vec::new();
    for spec in specs {
        if !unique.contains(spec) {
            unique.push((*spec).clone());
        }
    }
    let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
    let mut tasks = tokio::task::JoinSet::new();
    for spec in unique {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let connection = connect(&spec).await;
            (spec, connection)
        });
    }
    let mut connections = HashMap::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (spec, connection) = joined.expect("connect task");
        match connection {
            Ok(c) => {
                connections.insert(spec, Arc::new(c));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => {
            close_all(connections).await;
            Err(e)
        }
        None => Ok(connections),
    }
}

/// Close every master, all at once (each close waits for its master to exit).
pub async fn close_all(connections: HashMap<SshSpec, Arc<SshConnection>>) {
    let started = std::time::Instant::now();
    let count = connections.len();
    let mut closing = tokio::task::JoinSet::new();
    for (_, connection) in connections {
        closing.spawn(async move {
            let started = std::time::Instant::now();
            let label = connection.label.clone();
            if let Ok(connection) = Arc::try_unwrap(connection)
                && let Ok(session) = Arc::try_unwrap(connection.session)
            {
                let _ = session.close().await;
            }
            tracing::debug!(connection = %label, took = ?started.elapsed(), "ssh connection closed");
        });
    }
    while closing.join_next().await.is_some() {}
    tracing::debug!(connections = count, took = ?started.elapsed(), "ssh connections closed");
}

async fn connect(spec: &SshSpec) -> Result<SshConnection, SshError> {
    let label = label(spec);
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(if spec.accept_unknown_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(Duration::from_secs(10))
        .server_alive_interval(Duration::from_secs(5))
        // If distls dies (kill -9), the master must not outlive it for long.
        .control_persist(ControlPersist::IdleFor(
            NonZeroUsize::new(30).expect("non-zero"),
        ))
        .control_directory(std::env::temp_dir());
    if let Some(port) = spec.port {
        builder.port(port);
    }
    if let Some(user) = &spec.user {
        builder.user(user.clone());
    }
    if let Some(key) = &spec.identity_file {
        builder.keyfile(key);
    }
    if let Some(known_hosts) = &spec.known_hosts {
        builder.user_known_hosts_file(known_hosts);
    }
    let config_dir = extra_options_config(spec).map_err(|e| SshError {
        host: label.clone(),
        message: format!("cannot write the ssh options file: {e}"),
        hint: "check that the temporary directory is writable".into(),
    })?;
    match (&config_dir, &spec.config_file) {
        (Some(dir), _) => {
            builder.config_file(dir.path().join("config"));
        }
        (None, Some(config)) => {
            builder.config_file(config);
        }
        (None, None) => {}
    }
    let session = builder
        .connect_mux(&spec.host)
        .await
        .map_err(|e| explain(&label, &e))?;
    Ok(SshConnection {
        label,
        session: Arc::new(session),
        _config_dir: config_dir,
    })
}

/// ssh has no flag for "these -o options plus the usual config", so extra options go into a
/// private config file that includes the operator's own (options first: ssh keeps first values).
fn extra_options_config(spec: &SshSpec) -> std::io::Result<Option<tempfile::TempDir>> {
    if spec.options.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("distls-ssh-").tempdir()?;
    let mut text = String::new();
    for option in &spec.options {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        text.push_str(&format!("{key} {value}\n"));
    }
    match &spec.config_file {
        Some(config) => text.push_str(&format!("Include {}\n", config.display())),
        None => text.push_str("Include ~/.ssh/config\n"),
    }
    std::fs::write(dir.path().join("config"), text)?;
    Ok(Some(dir))
}

fn explain(host: &str, error: &openssh::Error) -> SshError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let hint = if detail.contains("Host key verification failed")
        || detail.contains("No ED25519 host key")
        || detail.contains("host key")
    {
        "the host key is not in known_hosts (checked strictly): add it (e.g. ssh-keyscan, after checking its fingerprint), point `known_hosts:` at the right file, or set `accept_unknown_host_keys: true`"
    } else if detail.contains("Permission denied") {
        "the server refused the key: check `user:` and `identity_file:` and the server's authorized_keys"
    } else if detail.contains("Connection refused") || detail.contains("timed out") {
        "nothing answers there: check `host:` and `port:`, and that sshd runs"
    } else {
        "check the host's SSH settings in the plan; `ssh -v` with the same options shows more"
    };
    SshError {
        host: host.to_string(),
        message: detail.trim().to_string(),
        hint: hint.to_string(),
    }
}
