//! How distls reaches a node's host: read and write its files, run its commands, start a probe VM.
//! Locally, or over a shared SSH connection; optionally as the service user (`become`).

use crate::atomic_file;
use crate::shell::shell_quote;
use crate::ssh::SshConnection;

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

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

    /// Plain local file access works only without `become`; everything else goes through a shell.
    /// Whether the node's environment (the plan's `env`) sets `name` for its commands.
    pub fn sets_env(&self, name: &str) -> bool {
        self.env.iter().any(|(key, _)| key == name)
    }

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

    /// `[become] sh -c 'script'`, and what goes to its stdin first: the node's environment as
    /// `export K='V'` lines read by the shell before the script runs. Never in argv (`ps` shows
    /// argv to every user of the host), and it reaches the command even through sudo, which
    /// resets the environment.
    fn shell_line(&self, script: &str, extra_env: &[(String, String)]) -> (String, Vec<u8>) {
        let mut words: Vec<String> = Vec::new();
        if let Some(become_command) = &self.become_command {
            words.push(become_command.clone());
        }
        let env: Vec<&(String, String)> = self.env.iter().chain(extra_env).collect();
        let preamble = env_preamble(&env);
        words.push("sh -c".into());
        if preamble.is_empty() {
            words.push(shell_quote(script));
        } else {
            words.push(shell_quote(&format!("{ENV_READER}\n{script}")));
        }
        (words.join(" "), preamble)
    }

    /// Run a shell script on the host and collect its output (as text, for people); `input` is
    /// fed to its stdin.
    async fn exec(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutcome, TransportError> {
        let out = self
            .exec_bytes(script, script, input, timeout, OUTPUT_LIMIT)
            .await?;
        Ok(CommandOutcome {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: out.elapsed,
        })
    }

    /// Run a shell script on the host; its output comes back as raw bytes, at most `stdout_limit`
    /// of stdout and [`OUTPUT_LIMIT`] of stderr kept (the rest is read and dropped). `label`
    /// names the command in errors.
    async fn exec_bytes(
        &self,
        script: &str,
        label: &str,
        input: Option<&[u8]>,
        timeout: Duration,
        stdout_limit: usize,
    ) -> Result<RawOutcome, TransportError> {
        let started = Instant::now();
        let spawn_error = |detail: String| TransportError::Spawn {
            host: self.describe(),
            command: label.to_string(),
            detail,
        };
        let timed_out = || TransportError::Timeout {
            host: self.describe(),
            command: label.to_string(),
            timeout,
        };
        let (status, stdout, stderr) = match &self.access {
            Access::Local => {
                let mut cmd = Command::new("/bin/sh");
                let mut feed = Vec::new();
                if self.become_command.is_some() {
                    let (line, preamble) = self.shell_line(script, &[]);
                    cmd.arg("-c").arg(line);
                    feed = preamble;
                } else {
                    cmd.arg("-c").arg(script).envs(self.env.iter().cloned());
                }
                let piped = input.is_some() || !feed.is_empty();
                feed.extend_from_slice(input.unwrap_or_default());
                let stdin = if piped { Stdio::piped() } else { Stdio::null() };
                // Own process group: the operator's Ctrl-C reaches distls only, and a timeout
                // can kill everything the command started.
                cmd.stdin(stdin)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true);
                let mut child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
                // Timed out or abandoned (its future dropped): the whole group goes.
                let mut group = GroupGuard(child.id());
                let (pipe_in, out, err) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take());
                let run = async {
                    let (fed, stdout, stderr) = tokio::join!(
                        feed_input(pipe_in, piped.then_some(&feed[..])),
                        read_limited(out, stdout_limit),
                        read_limited(err, OUTPUT_LIMIT)
                    );
                    let status = child.wait().await;
                    fed.map_err(|e| spawn_error(e.to_string()))?;
                    let status = status.map_err(|e| spawn_error(e.to_string()))?;
                    Ok::<_, TransportError>((
                        status.code(),
                        stdout.map_err(|e| spawn_error(e.to_string()))?,
                        stderr.map_err(|e| spawn_error(e.to_string()))?,
                    ))
                };
                match tokio::time::timeout(timeout, run).await {
                    Ok(result) => {
                        group.0 = None;
                        result?
                    }
                    Err(_) => return Err(timed_out()),
                }
            }
            Access::Ssh(connection) => {
                // sshd runs each command as the leader of its own session: its first line of
                // output is that pid, so a timeout can kill the whole remote process group (the
                // way the local path does), not just drop the channel and leave it running.
                let (line, mut feed) = self.shell_line(script, &[]);
                let line = format!("printf '{PGID_MARKER}%s\\n' \"$$\"; exec {line}");
                let piped = input.is_some() || !feed.is_empty();
                feed.extend_from_slice(input.unwrap_or_default());
                let session = connection.session();
                let mut cmd = session.arc_raw_command(line);
                cmd.stdin(if piped {
                    openssh::Stdio::piped()
                } else {
                    openssh::Stdio::null()
                })
                .stdout(openssh::Stdio::piped())
                .stderr(openssh::Stdio::piped());
                let leader = Arc::new(std::sync::Mutex::new(None::<u32>));
                let seen = leader.clone();
                let run = async {
                    let mut child = cmd.spawn().await.map_err(|e| spawn_error(ssh_detail(&e)))?;
                    let pipe_in = child.stdin().take();
                    let out_pipe = child.stdout().take();
                    let err_pipe = child.stderr().take();
                    let read_out = async move {
                        let Some(pipe) = out_pipe else {
                            return Ok(Vec::new());
                        };
                        let mut reader = tokio::io::BufReader::new(pipe);
                        let mut first = Vec::new();
                        (&mut reader)
                            .take(PGID_MARKER.len() as u64 + 24)
                            .read_until(b'\n', &mut first)
                            .await?;
                        let mut bytes = match parse_pgid_marker(&first) {
                            Some(pid) => {
                                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
                                Vec::new()
                            }
                            None => first,
                        };
                        let rest = read_limited(Some(reader), stdout_limit).await?;
                        bytes.extend_from_slice(&rest);
                        bytes.truncate(stdout_limit);
                        Ok::<_, std::io::Error>(bytes)
                    };
                    let (fed, stdout, stderr) = tokio::join!(
                        feed_input(pipe_in, piped.then_some(&feed[..])),
                        read_out,
                        read_limited(err_pipe, OUTPUT_LIMIT)
                    );
                    let status = child
                        .wait()
                        .await
                        .map_err(|e| spawn_error(ssh_detail(&e)))?;
                    fed.map_err(|e| spawn_error(e.to_string()))?;
                    Ok::<_, TransportError>((
                        status.code(),
                        stdout.map_err(|e| spawn_error(e.to_string()))?,
                        stderr.map_err(|e| spawn_error(e.to_string()))?,
                    ))
                };
                match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result?,
                    Err(_) => {
                        let pid = *leader.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(pid) = pid {
                            self.kill_remote_group(connection, pid).await;
                        }
                        return Err(timed_out());
                    }
                }
            }
        };
        Ok(RawOutcome {
            status,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        })
    }

    /// SIGKILL a timed-out remote command's process group (as the `become` user, who owns it).
    async fn kill_remote_group(&self, connection: &SshConnection, leader: u32) {
        // Without the environment: nothing to feed on stdin.
        let kill = shell_quote(&format!("kill -KILL -{leader}"));
        let line = match &self.become_command {
            Some(become_command) => format!("{become_command} sh -c {kill}"),
            None => format!("sh -c {kill}"),
        };
        let mut cmd = connection.session().arc_raw_command(line);
        cmd.stdin(openssh::Stdio::null())
            .stdout(openssh::Stdio::null())
            .stderr(openssh::Stdio::null());
        let outcome = tokio::time::timeout(Duration::from_secs(10), cmd.status()).await;
        tracing::debug!(
            leader,
            ?outcome,
            "killed a timed-out remote command's process group"
        );
    }

    /// Run one operation of the file agent (`atomic_file.pl`) on the host.
    async fn agent(
        &self,
        op: &str,
        path: &Path,
        args: &[String],
        input: Option<&[u8]>,
        stdout_limit: usize,
    ) -> Result<RawOutcome, TransportError> {
        // The node's environment reaches its commands, not the agent: no module path or option
        // of the plan's env (or the host's) changes what this program does.
        let mut words = vec![
            "exec env -u PERL5LIB -u PERL5OPT -u PERLLIB -u PERLIO -u PERL_UNICODE perl -e"
                .to_owned(),
            shell_quote(AGENT),
            "--".to_owned(),
            op.to_owned(),
            shell_quote(&path.display().to_string()),
        ];
        words.extend(args.iter().map(|a| shell_quote(a)));
        let label = format!("distls file agent: {op} {}", path.display());
        self.exec_bytes(&words.join(" "), &label, input, FILE_TIMEOUT, stdout_limit)
            .await
    }

    /// An agent operation that must succeed (exit 0); its stdout.
    async fn agent_ok(
        &self,
        op: &str,
        path: &Path,
        args: &[String],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, TransportError> {
        let out = self.agent(op, path, args, input, OUTPUT_LIMIT).await?;
        if out.status != Some(0) {
            return Err(self.agent_error(path, &out));
        }
        Ok(out.stdout)
    }

    fn agent_error(&self, path: &Path, out: &RawOutcome) -> TransportError {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // The agent's own messages start with the path; anything else (no perl, sudo said no)
        // is shown as it came.
        let detail = match said.split_once(": ") {
            Some((first, rest)) if Path::new(first) == path => rest.to_string(),
            _ if said.is_empty() => format!("the file agent exited with {:?}", out.status),
            _ => said,
        };
        self.file_error(path, detail)
    }

    /// Run a blocking local file operation off the async threads.
    async fn on_local_disk<T: Send + 'static>(
        &self,
        path: &Path,
        op: impl FnOnce(PathBuf) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, TransportError> {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || op(owned))
            .await
            .expect("file task")
            .map_err(|e| self.io_error(path, e))
    }

    fn io_error(&self, path: &Path, err: std::io::Error) -> TransportError {
        if let Some(too_large) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<atomic_file::TooLarge>())
        {
            return TransportError::TooLarge {
                host: self.describe(),
                path: path.to_path_buf(),
                size: too_large.size,
                limit: too_large.limit,
            };
        }
        let text = err.to_string();
        let prefix = format!("{}: ", path.display());
        self.file_error(path, text.strip_prefix(&prefix).unwrap_or(&text))
    }

    /// A regular file's bytes, exactly as stored, at most [`atomic_file::READ_LIMIT`] of them.
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, TransportError> {
        self.read_file_limited(path, atomic_file::READ_LIMIT).await
    }

    /// A regular file's bytes, exactly as stored; more than `limit` is [`TransportError::TooLarge`].
    pub async fn read_file_limited(
        &self,
        path: &Path,
        limit: u64,
    ) -> Result<Vec<u8>, TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, move |p| atomic_file::read(&p, limit))
                .await;
        }
        let out = self
            .agent("read", path, &[limit.to_string()], None, limit as usize + 1)
            .await?;
        match out.status {
            Some(0) if out.stdout.len() as u64 <= limit => Ok(out.stdout),
            Some(3) => {
                let said = String::from_utf8_lossy(&out.stderr);
                let size = said
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(limit + 1);
                Err(TransportError::TooLarge {
                    host: self.describe(),
                    path: path.to_path_buf(),
                    size,
                    limit,
                })
            }
            _ => Err(self.agent_error(path, &out)),
        }
    }

    /// Whether a path names something. A path distls may not look through counts as there, so
    /// the read that follows explains why: see [`Transport::try_exists`].
    pub async fn file_exists(&self, path: &Path) -> bool {
        self.try_exists(path).await.unwrap_or(true)
    }

    /// Whether a path names something (a trusted link is looked through, docs/security.md).
    pub async fn try_exists(&self, path: &Path) -> Result<bool, TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::exists(&p)).await;
        }
        let out = self.agent("exists", path, &[], None, OUTPUT_LIMIT).await?;
        match out.status {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.agent_error(path, &out)),
        }
    }

    /// The real file behind a path: trusted links followed, any other link refused
    /// (docs/security.md). Edits go to the real file, so the link stays.
    pub async fn canonicalize(&self, path: &Path) -> Result<PathBuf, TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::resolve(&p)).await;
        }
        let out = self.agent_ok("resolve", path, &[], None).await?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
    }

    /// Atomic, verified replace keeping mode and owner (a new file gets `mode_if_new`).
    pub async fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode_if_new: u32,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let data = bytes.to_vec();
            return self
                .on_local_disk(path, move |p| atomic_file::write(&p, &data, mode_if_new))
                .await;
        }
        self.agent_write(
            path,
            bytes,
            &format!("keep:{mode_if_new:o}"),
            None,
            bytes.len(),
        )
        .await
    }

    /// Atomic, verified write with exactly `mode` and the owner and group of `like`.
    pub async fn write_file_owned_like(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        like: &Path,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let (like, data) = (like.to_path_buf(), bytes.to_vec());
            return self
                .on_local_disk(path, move |p| {
                    atomic_file::write_owned_like(&p, &data, mode, &like)
                })
                .await;
        }
        self.agent_write(path, bytes, &format!("{mode:o}"), Some(like), bytes.len())
            .await
    }

    /// The agent's write: it gets the length and sha256 of `bytes` and renames nothing unless the
    /// bytes it received and wrote match both. `send` is how many bytes actually go (all of them,
    /// except in the test of a stream cut short).
    async fn agent_write(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: &str,
        like: Option<&Path>,
        send: usize,
    ) -> Result<(), TransportError> {
        let mut args = vec![
            bytes.len().to_string(),
            atomic_file::sha256_hex(bytes),
            mode.to_owned(),
        ];
        args.extend(like.map(|l| l.display().to_string()));
        self.agent_ok("write", path, &args, Some(&bytes[..send]))
            .await
            .map(|_| ())
    }

    /// A write whose stream to the host is cut after `send` bytes, for the tests that prove it
    /// changes nothing.
    #[doc(hidden)]
    pub async fn write_file_cut_short(
        &self,
        path: &Path,
        bytes: &[u8],
        send: usize,
    ) -> Result<(), TransportError> {
        self.agent_write(path, bytes, "keep:644", None, send.min(bytes.len()))
            .await
    }

    /// Remove a file (a link itself, never its target); a file that is not there is fine.
    pub async fn remove_file(&self, path: &Path) -> Result<(), TransportError> {
        if self.is_direct() {
            return self.on_local_disk(path, |p| atomic_file::remove(&p)).await;
        }
        self.agent_ok("remove", path, &[], None).await.map(|_| ())
    }

    /// Create a directory with `mode` (an existing one is kept); whether it was created.
    pub async fn make_dir(&self, path: &Path, mode: u32) -> Result<bool, TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, move |p| atomic_file::make_dir(&p, mode))
                .await;
        }
        let out = self
            .agent_ok("mkdir", path, &[format!("{mode:o}")], None)
            .await?;
        Ok(out == b"created")
    }

    /// Remove a directory if it is there and empty.
    pub async fn remove_dir_if_empty(&self, path: &Path) -> Result<(), TransportError> {
        if self.is_direct() {
            return self
                .on_local_disk(path, |p| atomic_file::remove_dir_if_empty(&p))
                .await;
        }
        self.agent_ok("rmdir", path, &[], None).await.map(|_| ())
    }

    /// Run a shell script with `input` on stdin; its stdout as raw bytes (e.g. a compiled file).
    pub async fn run_for_bytes(
        &self,
        script: &str,
        input: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let out = self
            .exec_bytes(
                script,
                script,
                Some(input),
                timeout,
                atomic_file::READ_LIMIT as usize,
            )
            .await?;
        if out.status != Some(0) {
            let said = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
            return Err(TransportError::Spawn {
                host: self.describe(),
                command: script.to_string(),
                detail: format!(
                    "exit {:?}: {}",
                    out.status,
                    lines[lines.len().saturating_sub(6)..].join("\n")
                ),
            });
        }
        Ok(out.stdout)
    }

    /// Run a shell command with a deadline.
    pub async fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutcome, TransportError> {
        self.exec(command, None, timeout).await
    }

    /// Start a long-lived process with piped stdio on the host, in directory `dir`.
    pub async fn spawn(
        &self,
        program: &str,
        args: &[String],
        extra_env: &[(String, String)],
        dir: &Path,
    ) -> Result<Spawned, TransportError> {
        let spawn_error = |detail: String| TransportError::Spawn {
            host: self.describe(),
            command: program.to_string(),
            detail,
        };
        let script = format!(
            "cd {} && exec {}",
            shell_quote(&dir.display().to_string()),
            std::iter::once(shell_quote(program))
                .chain(args.iter().map(|a| shell_quote(a)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        match &self.access {
            Access::Local => {
                let mut cmd = Command::new("/bin/sh");
                let mut feed = Vec::new();
                if self.become_command.is_some() {
                    let (line, preamble) = self.shell_line(&script, extra_env);
                    cmd.arg("-c").arg(line);
                    feed = preamble;
                } else {
                    cmd.arg("-c")
                        .arg(&script)
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
            Access::Ssh(connection) => {
                let (line, feed) = self.shell_line(&script, extra_env);
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
    }
}

/// The file agent: the operations of atomic_file.rs, in Perl, for the shell path.
const AGENT: &str = include_str!("atomic_file.pl");

/// A file operation on a host gets this long (a write of a few kilobytes over a slow link).
const FILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Output of a command kept at most (stdout and stderr each); the rest is read and dropped.
const OUTPUT_LIMIT: usize = 1024 * 1024;

/// Reads the environment `shell_line` feeds on stdin: a byte count line, then that many bytes of
/// `export` lines. `read` and `dd bs=1` take exactly those bytes from the pipe, so whatever
/// follows (a file's bytes, a probe's requests) stays for the command.
const ENV_READER: &str = r#"IFS= read -r distls_env_bytes || exit 125
eval "$(dd bs=1 count="$distls_env_bytes" 2>/dev/null)" || exit 125
unset distls_env_bytes"#;

/// `<byte count>\nexport K='V'\n…` for [`ENV_READER`]; empty without an environment.
fn env_preamble(env: &[&(String, String)]) -> Vec<u8> {
    if env.is_empty() {
        return Vec::new();
    }
    let body: String = env
        .iter()
        .map(|(key, value)| format!("export {key}={}\n", shell_quote(value)))
        .collect();
    format!("{}\n{body}", body.len()).into_bytes()
}

/// What a finished command left behind, as bytes.
struct RawOutcome {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

/// Feed a command's stdin and close it; a command that exits without reading it all is not an
/// error here (its status and stderr say what happened).
async fn feed_input<W: AsyncWrite + Unpin>(
    pipe: Option<W>,
    input: Option<&[u8]>,
) -> std::io::Result<()> {
    let (Some(mut pipe), Some(bytes)) = (pipe, input) else {
        return Ok(());
    };
    match pipe.write_all(bytes).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
    match pipe.shutdown().await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Read a pipe to its end, keeping at most `limit` bytes.
async fn read_limited<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(kept);
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

const PGID_MARKER: &str = "distls-pgid ";

fn parse_pgid_marker(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix(PGID_MARKER)?
        .trim_end()
        .parse()
        .ok()
        .filter(|pid| *pid > 1)
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

/// Kills the process group of a command distls gave up on, when dropped armed.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(leader) = self.0 {
            kill_process_group(leader);
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

    fn local() -> Transport {
        Transport::local(vec![("DISTLS_TEST_VAR".into(), "it's set".into())], None)
    }

    #[tokio::test]
    async fn runs_a_command_with_the_node_environment() {
        let out = local()
            .run(
                "echo \"$DISTLS_TEST_VAR\"; echo err >&2; exit 3",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout.trim(), "it's set");
        assert_eq!(out.tail(), "it's set\nerr");
    }

    /// The argv of every process between distls and the command, read from /proc.
    const ANCESTRY_ARGV: &str = r#"p=$$
while [ "$p" -gt 1 ]; do
  tr '\0' ' ' < /proc/$p/cmdline; echo
  p=$(sed -e 's/^.*) //' /proc/$p/stat | cut -d' ' -f2)
  [ "$p" = "$DISTLS_TEST_PARENT" ] && break
done"#;

    /// The plan's env reaches commands (and long-lived processes) through `become` without
    /// appearing in any argv: `ps` shows argv to every user of the host.
    #[tokio::test]
    async fn the_node_environment_never_appears_in_argv() {
        let secret = "s3cr3t value with 'quotes' and\nnewline";
        let env = vec![
            ("DISTLS_SECRET".to_string(), secret.to_string()),
            (
                "DISTLS_TEST_PARENT".to_string(),
                std::process::id().to_string(),
            ),
        ];
        for become_command in [None, Some("env".to_string())] {
            let transport = Transport::local(env.clone(), become_command.clone());
            let script = format!("printf '%s' \"$DISTLS_SECRET\" > /dev/stderr; {ANCESTRY_ARGV}");
            let out = transport
                .run(&script, Duration::from_secs(10))
                .await
                .unwrap();
            assert!(out.success(), "{out:?}");
            assert_eq!(out.stderr, secret, "become {become_command:?}");
            assert!(!out.stdout.is_empty());
            assert!(!out.stdout.contains("s3cr3t"), "{}", out.stdout);
            // With input after the environment, the command gets exactly the input.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            transport
                .write_file(&path, b"line one\nline two", 0o600)
                .await
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"line one\nline two");
            // A long-lived process: the environment first, then its own stdin.
            let mut spawned = transport
                .spawn(
                    "sh",
                    &[
                        "-c".into(),
                        format!("read -r line; printf '%s|%s|' \"$line\" \"$DISTLS_SECRET\"; {ANCESTRY_ARGV}"),
                    ],
                    &[],
                    dir.path(),
                )
                .await
                .unwrap();
            spawned.stdin.write_all(b"hello\n").await.unwrap();
            drop(spawned.stdin);
            let mut text = String::new();
            spawned.stdout.read_to_string(&mut text).await.unwrap();
            spawned.handle.finish().await;
            let expected = format!("hello|{secret}|");
            assert!(text.starts_with(&expected), "{text}");
            assert!(!text[expected.len()..].contains("s3cr3t"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_killed() {
        let err = local()
            .run("sleep 30", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }));
    }

    /// A command whose future is dropped (an abandoned early ping) takes its children with it.
    #[tokio::test]
    async fn an_abandoned_command_takes_its_process_group_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let transport = local();
        let mut run = Box::pin(transport.run(&script, Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let child: libc::pid_t = loop {
            tokio::select! {
                _ = &mut run => panic!("the command ended by itself"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the command never started its child"
            );
        };
        drop(run);
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = || unsafe { libc::kill(child, 0) } == 0 && !is_zombie(child);
        while alive() {
            assert!(
                Instant::now() < deadline,
                "the abandoned command's child still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn is_zombie(pid: libc::pid_t) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    }

    #[test]
    fn the_remote_process_group_marker_is_parsed_strictly() {
        assert_eq!(parse_pgid_marker(b"distls-pgid 4242\n"), Some(4242));
        assert_eq!(parse_pgid_marker(b"distls-pgid 1\n"), None);
        assert_eq!(parse_pgid_marker(b"distls-pgid x\n"), None);
        assert_eq!(parse_pgid_marker(b"4242\n"), None);
    }

    /// The two ways to a node's files: direct (Rust, fds) and the shell path (the Perl agent,
    /// as over SSH; `become env` runs it locally).
    fn both() -> [(Transport, &'static str); 2] {
        [
            (local(), "direct"),
            (Transport::local(vec![], Some("env".into())), "shell"),
        ]
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A new file owned like another one, by both paths.
    #[tokio::test]
    async fn writes_a_file_owned_like_another_with_an_exact_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let like = dir.path().join("flags");
        std::fs::write(&like, "x").unwrap();
        for (transport, name) in both() {
            let path = dir.path().join(name);
            std::fs::write(&path, "old").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            transport
                .write_file_owned_like(&path, b"[].", 0o600, &like)
                .await
                .unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            assert_eq!(meta.uid(), std::fs::metadata(&like).unwrap().uid());
            assert_eq!(std::fs::read(&path).unwrap(), b"[].");
            transport.remove_file(&path).await.unwrap();
            transport.remove_file(&path).await.unwrap();
            assert!(!path.exists());
        }
    }

    /// Both paths edit through a trusted link, keep the mode, leave no temp file, and move every
    /// byte as it is (Latin-1, CR LF, NUL, no final newline).
    #[tokio::test]
    async fn file_operations_follow_trusted_links_keep_the_mode_and_move_raw_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let bytes: &[u8] = b"## r\xe9seau\r\n-x 'quoted' $text\r\n\x00\xff\xfe-end";
        for (transport, name) in both() {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real args");
            let link = dir.path().join("vm.dist.args");
            std::fs::write(&real, "old").unwrap();
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
            std::os::unix::fs::symlink(&real, &link).unwrap();
            assert_eq!(transport.canonicalize(&link).await.unwrap(), real, "{name}");
            transport.write_file(&link, bytes, 0o600).await.unwrap();
            assert_eq!(transport.read_file(&link).await.unwrap(), bytes, "{name}");
            assert_eq!(std::fs::read(&real).unwrap(), bytes, "{name}");
            assert!(
                std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(
                std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
                0o640
            );
            assert!(transport.file_exists(&real).await);
            assert!(!transport.file_exists(&dir.path().join("missing")).await);
            assert!(
                !transport
                    .try_exists(&dir.path().join("no/such/dir/file"))
                    .await
                    .unwrap()
            );
            assert_eq!(entries(dir.path()), ["real args", "vm.dist.args"], "{name}");
            let sub = dir.path().join("distls-hybrid");
            assert!(transport.make_dir(&sub, 0o755).await.unwrap(), "{name}");
            assert!(!transport.make_dir(&sub, 0o755).await.unwrap(), "{name}");
            assert_eq!(
                std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
                0o755
            );
            transport.remove_dir_if_empty(&sub).await.unwrap();
            transport.remove_dir_if_empty(&sub).await.unwrap();
            assert!(!sub.exists(), "{name}");
        }
    }

    /// Reads take regular files only, up to a limit; the same refusal by both paths.
    #[tokio::test]
    async fn reads_refuse_devices_fifos_and_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 1000]).unwrap();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        for (transport, name) in both() {
            match transport.read_file_limited(&big, 999).await {
                Err(TransportError::TooLarge { size, limit, .. }) => {
                    assert_eq!((size, limit), (1000, 999), "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                transport.read_file_limited(&big, 1000).await.unwrap().len(),
                1000
            );
            let err = transport
                .read_file(Path::new("/dev/zero"))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/dev/zero: is not a regular file (a character device)"),
                "{name}: {err}"
            );
            let started = Instant::now();
            let err = transport.read_file(&fifo).await.unwrap_err().to_string();
            assert!(
                err.contains("is not a regular file (a FIFO)"),
                "{name}: {err}"
            );
            assert!(started.elapsed() < Duration::from_secs(10), "{name}");
            let err = transport
                .write_file(&fifo, b"x", 0o600)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("(a FIFO)"), "{name}: {err}");
        }
    }

    /// A command's output is kept up to a bound, the rest read and dropped (a probe or ctl that
    /// floods its stderr cannot exhaust memory), and the command still ends normally.
    #[tokio::test]
    async fn command_output_is_bounded() {
        let out = local()
            .run(
                "head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2; exit 7",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(out.status, Some(7));
        assert_eq!(out.stdout.len(), OUTPUT_LIMIT);
        assert_eq!(out.stderr.len(), OUTPUT_LIMIT);
    }

    /// The plan's env reaches commands, not the file agent: a PERL5OPT there changes nothing.
    #[tokio::test]
    async fn the_file_agent_ignores_perl_options_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let env = vec![
            ("PERL5OPT".to_owned(), "-Mdistls_no_such_module".to_owned()),
            ("PERL_UNICODE".to_owned(), "SDA".to_owned()),
        ];
        let shell = Transport::local(env, Some("env".into()));
        shell.write_file(&path, b"\xe9\r\n", 0o600).await.unwrap();
        assert_eq!(shell.read_file(&path).await.unwrap(), b"\xe9\r\n");
    }

    /// A write whose stream stops early renames nothing: the old file stays, no temp file.
    #[tokio::test]
    async fn a_write_cut_short_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.dist.args");
        std::fs::write(&path, "old text\n").unwrap();
        let shell = Transport::local(vec![], Some("env".into()));
        let new = b"-proto_dist inet_tls\n".repeat(5000);
        let err = shell
            .write_file_cut_short(&path, &new, 4096)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("received 4096 of {} bytes", new.len())),
            "{err}"
        );
        assert!(err.contains("nothing changed"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old text\n");
        assert_eq!(entries(dir.path()), ["vm.dist.args"]);
        shell
            .write_file_cut_short(&path, &new, new.len())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
    }

    /// A link in a directory others may write into is not followed, whoever owns it: refused
    /// with the link, the culprit and the fix, by both paths; nothing written.
    #[tokio::test]
    async fn a_link_in_a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = open.join("vm.dist.args");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for (transport, name) in both() {
            for err in [
                transport.read_file(&link).await.unwrap_err(),
                transport.write_file(&link, b"x", 0o644).await.unwrap_err(),
                transport.canonicalize(&link).await.unwrap_err(),
            ] {
                let err = err.to_string();
                assert!(
                    err.contains(&format!(
                        "{}: a symbolic link distls does not follow: {} is writable by group or others (mode 0777)",
                        link.display(),
                        open.display()
                    )),
                    "{name}: {err}"
                );
                assert!(err.contains("hint: check where it points"), "{name}: {err}");
            }
            assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
            // Removing the link itself is fine: it never touches the target.
            transport.remove_file(&link).await.unwrap();
            std::os::unix::fs::symlink(&victim, &link).unwrap();
        }
    }
}
