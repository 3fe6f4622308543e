//! Running a shell script on the host under a deadline: locally in a process group of its own, or
//! over SSH with the remote process group noted, so a timeout kills everything the script
//! started. Output is kept up to a bound; the rest is read and dropped.

use super::{
    Access, CommandOutcome, OUTPUT_LIMIT, RawOutcome, Transport, TransportError, ssh_detail,
};
use crate::atomic_file;
use crate::shell::shell_quote;
use crate::ssh::SshConnection;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

/// One run of a script: what runs, its name in errors, its stdin and its bounds.
struct Job<'a> {
    script: &'a str,
    label: &'a str,
    input: Option<&'a [u8]>,
    timeout: Duration,
    stdout_limit: usize,
}

/// A finished command's exit status, stdout and stderr.
type Collected = (Option<i32>, Vec<u8>, Vec<u8>);

impl Transport {
    /// Run a shell command with a deadline.
    pub async fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutcome, TransportError> {
        self.exec(command, None, timeout).await
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
            return Err(self.spawn_error(
                script,
                format!(
                    "exit {:?}: {}",
                    out.status,
                    lines[lines.len().saturating_sub(6)..].join("\n")
                ),
            ));
        }
        Ok(out.stdout)
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
    pub(super) async fn exec_bytes(
        &self,
        script: &str,
        label: &str,
        input: Option<&[u8]>,
        timeout: Duration,
        stdout_limit: usize,
    ) -> Result<RawOutcome, TransportError> {
        let started = Instant::now();
        let job = Job {
            script,
            label,
            input,
            timeout,
            stdout_limit,
        };
        let (status, stdout, stderr) = match &self.access {
            Access::Local => self.exec_local(&job).await?,
            Access::Ssh(connection) => self.exec_remote(connection, &job).await?,
        };
        Ok(RawOutcome {
            status,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        })
    }

    /// The job in a local `/bin/sh`, killed with its whole process group on timeout.
    async fn exec_local(&self, job: &Job<'_>) -> Result<Collected, TransportError> {
        let spawn_error = |detail: String| self.spawn_error(job.label, detail);
        let (mut cmd, feed) = self.local_command(job);
        let mut child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
        // Timed out or abandoned (its future dropped): the whole group goes.
        let mut group = GroupGuard(child.id());
        let (pipe_in, out, err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let run = async {
            let (fed, stdout, stderr) = tokio::join!(
                feed_input(pipe_in, feed.as_deref()),
                read_limited(out, job.stdout_limit),
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
        match tokio::time::timeout(job.timeout, run).await {
            Ok(result) => {
                group.0 = None;
                result
            }
            Err(_) => Err(self.timeout_error(job)),
        }
    }

    /// `/bin/sh -c` running the job's script, and what goes to its stdin (see [`stdin_feed`]).
    fn local_command(&self, job: &Job<'_>) -> (Command, Option<Vec<u8>>) {
        let mut cmd = Command::new("/bin/sh");
        let mut preamble = Vec::new();
        if self.become_command.is_some() {
            let (line, env) = self.shell_line(job.script, &[]);
            cmd.arg("-c").arg(line);
            preamble = env;
        } else {
            cmd.arg("-c").arg(job.script).envs(self.env.iter().cloned());
        }
        let feed = stdin_feed(preamble, job.input);
        let stdin = if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        // Own process group: the operator's Ctrl-C reaches distls only, and a timeout
        // can kill everything the command started.
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        (cmd, feed)
    }

    /// The job over the SSH connection, its remote process group killed on timeout.
    async fn exec_remote(
        &self,
        connection: &SshConnection,
        job: &Job<'_>,
    ) -> Result<Collected, TransportError> {
        // sshd runs each command as the leader of its own session: its first line of
        // output is that pid, so a timeout can kill the whole remote process group (the
        // way the local path does), not just drop the channel and leave it running.
        let (line, preamble) = self.shell_line(job.script, &[]);
        let line = format!("printf '{PGID_MARKER}%s\\n' \"$$\"; exec {line}");
        let feed = stdin_feed(preamble, job.input);
        let mut cmd = connection.session().arc_raw_command(line);
        cmd.stdin(if feed.is_some() {
            openssh::Stdio::piped()
        } else {
            openssh::Stdio::null()
        })
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped());
        let leader = Mutex::new(None::<u32>);
        let run = self.collect_remote(&mut cmd, feed.as_deref(), job, &leader);
        match tokio::time::timeout(job.timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                let pid = *leader.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pid) = pid {
                    self.kill_remote_group(connection, pid).await;
                }
                Err(self.timeout_error(job))
            }
        }
    }

    /// Start the remote command, feed its stdin and collect its output; the session leader's
    /// pid goes to `leader` as soon as it is read.
    async fn collect_remote(
        &self,
        cmd: &mut openssh::OwningCommand<Arc<openssh::Session>>,
        feed: Option<&[u8]>,
        job: &Job<'_>,
        leader: &Mutex<Option<u32>>,
    ) -> Result<Collected, TransportError> {
        let spawn_error = |detail: String| self.spawn_error(job.label, detail);
        let mut child = cmd.spawn().await.map_err(|e| spawn_error(ssh_detail(&e)))?;
        let pipe_in = child.stdin().take();
        let out_pipe = child.stdout().take();
        let err_pipe = child.stderr().take();
        let (fed, stdout, stderr) = tokio::join!(
            feed_input(pipe_in, feed),
            read_after_pgid_marker(out_pipe, job.stdout_limit, leader),
            read_limited(err_pipe, OUTPUT_LIMIT)
        );
        let status = child
            .wait()
            .await
            .map_err(|e| spawn_error(ssh_detail(&e)))?;
        fed.map_err(|e| spawn_error(e.to_string()))?;
        Ok((
            status.code(),
            stdout.map_err(|e| spawn_error(e.to_string()))?,
            stderr.map_err(|e| spawn_error(e.to_string()))?,
        ))
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

    fn timeout_error(&self, job: &Job<'_>) -> TransportError {
        TransportError::Timeout {
            host: self.describe(),
            command: job.label.to_string(),
            timeout: job.timeout,
        }
    }
}

/// What a command's stdin gets: the environment preamble, then `input`; `None` when there is
/// neither, and stdin is /dev/null.
fn stdin_feed(mut preamble: Vec<u8>, input: Option<&[u8]>) -> Option<Vec<u8>> {
    let piped = input.is_some() || !preamble.is_empty();
    preamble.extend_from_slice(input.unwrap_or_default());
    piped.then_some(preamble)
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

/// A remote command's stdout: a first line with the session leader's pid (see
/// [`PGID_MARKER`]) goes to `leader`, not to the output; at most `limit` bytes are kept.
async fn read_after_pgid_marker<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: usize,
    leader: &Mutex<Option<u32>>,
) -> std::io::Result<Vec<u8>> {
    let Some(pipe) = pipe else {
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
            *leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
            Vec::new()
        }
        None => first,
    };
    let rest = read_limited(Some(reader), limit).await?;
    bytes.extend_from_slice(&rest);
    bytes.truncate(limit);
    Ok(bytes)
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
    use crate::transport::test_support::local;

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
}
