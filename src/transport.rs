//! How distls reaches a node's host: read and write its files, run its commands, start a probe VM.
//! Locally, or over a shared SSH connection; optionally as the service user (`become`).

use crate::atomic_file;
use crate::ssh::SshConnection;

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

/// Single-quote a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
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

    /// Run a shell script on the host and collect its output; `input` is fed to its stdin.
    async fn exec(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutcome, TransportError> {
        let started = Instant::now();
        let spawn_error = |detail: String| TransportError::Spawn {
            host: self.describe(),
            command: script.to_string(),
            detail,
        };
        let timed_out = || TransportError::Timeout {
            host: self.describe(),
            command: script.to_string(),
            timeout,
        };
        let output = match &self.access {
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
                if let Some(mut pipe) = child.stdin.take() {
                    pipe.write_all(&feed)
                        .await
                        .map_err(|e| spawn_error(e.to_string()))?;
                }
                match tokio::time::timeout(timeout, child.wait_with_output()).await {
                    Ok(result) => {
                        group.0 = None;
                        result.map_err(|e| spawn_error(e.to_string()))?
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
                    if let Some(mut pipe) = child.stdin().take() {
                        pipe.write_all(&feed)
                            .await
                            .map_err(|e| spawn_error(e.to_string()))?;
                        pipe.shutdown()
                            .await
                            .map_err(|e| spawn_error(e.to_string()))?;
                    }
                    let out_pipe = child.stdout().take();
                    let err_pipe = child.stderr().take();
                    let read_out = async move {
                        let mut bytes = Vec::new();
                        if let Some(pipe) = out_pipe {
                            let mut reader = tokio::io::BufReader::new(pipe);
                            let mut first = Vec::new();
                            reader.read_until(b'\n', &mut first).await?;
                            match parse_pgid_marker(&first) {
                                Some(pid) => {
                                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid)
                                }
                                None => bytes.extend_from_slice(&first),
                            }
                            reader.read_to_end(&mut bytes).await?;
                        }
                        Ok::<_, std::io::Error>(bytes)
                    };
                    let read_err = async move {
                        let mut bytes = Vec::new();
                        if let Some(mut pipe) = err_pipe {
                            pipe.read_to_end(&mut bytes).await?;
                        }
                        Ok::<_, std::io::Error>(bytes)
                    };
                    let (stdout, stderr) = tokio::join!(read_out, read_err);
                    let status = child
                        .wait()
                        .await
                        .map_err(|e| spawn_error(ssh_detail(&e)))?;
                    Ok::<_, TransportError>(std::process::Output {
                        status,
                        stdout: stdout.map_err(|e| spawn_error(e.to_string()))?,
                        stderr: stderr.map_err(|e| spawn_error(e.to_string()))?,
                    })
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
        Ok(CommandOutcome {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
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

    async fn exec_ok(
        &self,
        script: &str,
        input: Option<&[u8]>,
        path: &Path,
    ) -> Result<Vec<u8>, TransportError> {
        let out = self.exec(script, input, Duration::from_secs(60)).await?;
        if !out.success() {
            return Err(self.file_error(path, out.stderr.trim().to_string()));
        }
        Ok(out.stdout.into_bytes())
    }

    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, TransportError> {
        if self.is_direct() {
            return tokio::fs::read(path)
                .await
                .map_err(|e| self.file_error(path, e.to_string()));
        }
        let quoted = shell_quote(&path.display().to_string());
        // stdout is collected as text; args files are text, and a binary file is refused upstream.
        self.exec_ok(&format!("cat -- {quoted}"), None, path).await
    }

    pub async fn file_exists(&self, path: &Path) -> bool {
        if self.is_direct() {
            return tokio::fs::metadata(path).await.is_ok();
        }
        let quoted = shell_quote(&path.display().to_string());
        self.exec(&format!("test -e {quoted}"), None, Duration::from_secs(60))
            .await
            .is_ok_and(|o| o.success())
    }

    /// The real file behind a path (symlinks followed), so edits keep the link.
    pub async fn canonicalize(&self, path: &Path) -> Result<PathBuf, TransportError> {
        if self.is_direct() {
            return atomic_file::resolve(path).map_err(|e| self.file_error(path, e.to_string()));
        }
        let quoted = shell_quote(&path.display().to_string());
        let out = self
            .exec_ok(
                &format!("test -e {quoted} && readlink -f -- {quoted}"),
                None,
                path,
            )
            .await?;
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out).trim_end_matches('\n'),
        ))
    }

    /// Atomic replace keeping mode and owner: temp file in the same directory, fsync, rename.
    pub async fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
        mode_if_new: u32,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let owned = path.to_path_buf();
            let data = bytes.to_vec();
            return tokio::task::spawn_blocking(move || {
                atomic_file::write(&owned, &data, mode_if_new)
            })
            .await
            .expect("file writer task")
            .map_err(|e| self.file_error(path, e.to_string()));
        }
        let script = remote_atomic_write_script(path, RemoteOwnership::KeepOrNew(mode_if_new));
        self.exec_ok(&script, Some(bytes), path).await.map(|_| ())
    }

    /// Atomic write of a new file with exactly `mode` and the owner and group of `like`.
    pub async fn write_file_owned_like(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        like: &Path,
    ) -> Result<(), TransportError> {
        if self.is_direct() {
            let (owned, like_owned) = (path.to_path_buf(), like.to_path_buf());
            let data = bytes.to_vec();
            return tokio::task::spawn_blocking(move || {
                atomic_file::write_owned_like(&owned, &data, mode, &like_owned)
            })
            .await
            .expect("file writer task")
            .map_err(|e| self.file_error(path, e.to_string()));
        }
        let script = remote_atomic_write_script(path, RemoteOwnership::Like(like, mode));
        self.exec_ok(&script, Some(bytes), path).await.map(|_| ())
    }

    /// Remove a file; a file that is not there is fine.
    pub async fn remove_file(&self, path: &Path) -> Result<(), TransportError> {
        if self.is_direct() {
            let owned = path.to_path_buf();
            return tokio::task::spawn_blocking(move || atomic_file::remove(&owned))
                .await
                .expect("file remover task")
                .map_err(|e| self.file_error(path, e.to_string()));
        }
        let quoted = shell_quote(&path.display().to_string());
        self.exec_ok(&format!("rm -f -- {quoted}"), None, path)
            .await
            .map(|_| ())
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

/// POSIX sh + coreutils: follow a symlink, write a sibling temp file, copy mode and owner, fsync,
/// rename over the target, fsync the directory.
/// Where the temp file's owner and mode come from before the rename.
enum RemoteOwnership<'a> {
    /// The file being replaced keeps its own; a new file gets this mode.
    KeepOrNew(u32),
    /// Owned like this other file, with exactly this mode.
    Like(&'a Path, u32),
}

fn remote_atomic_write_script(path: &Path, ownership: RemoteOwnership) -> String {
    let quoted = shell_quote(&path.display().to_string());
    let set_owner_and_mode = match ownership {
        RemoteOwnership::KeepOrNew(mode_if_new) => format!(
            r#"if [ -e "$t" ]; then
  chmod "$(stat -c %a -- "$t")" "$tmp"
  chown "$(stat -c %u:%g -- "$t")" "$tmp" 2>/dev/null || true
else
  chmod {mode_if_new:o} "$tmp"
fi"#
        ),
        RemoteOwnership::Like(like, mode) => {
            let like = shell_quote(&like.display().to_string());
            format!("chown \"$(stat -L -c %u:%g -- {like})\" \"$tmp\"\nchmod {mode:o} \"$tmp\"")
        }
    };
    format!(
        r#"set -e
p={quoted}
t=$(readlink -f -- "$p" 2>/dev/null || printf '%s' "$p")
d=$(dirname -- "$t")
tmp="$d/.$(basename -- "$t").distls-tmp-$$"
trap 'rm -f -- "$tmp"' EXIT
umask 077
cat > "$tmp"
{set_owner_and_mode}
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$t"
sync -- "$d" 2>/dev/null || true"#
    )
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

    /// A new file owned like another one, by both paths (direct and shell).
    #[tokio::test]
    async fn writes_a_file_owned_like_another_with_an_exact_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let like = dir.path().join("flags");
        std::fs::write(&like, "x").unwrap();
        for (transport, name) in [
            (local(), "direct.conf"),
            (Transport::local(vec![], Some("env".into())), "shell.conf"),
        ] {
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

    /// The shell path (used over SSH and with `become`) edits as atomically as the direct one.
    #[tokio::test]
    async fn shell_file_operations_follow_symlinks_and_keep_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real args");
        let link = dir.path().join("vm.dist.args");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let via_shell = Transport::local(vec![], Some("env".into()));
        assert_eq!(via_shell.canonicalize(&link).await.unwrap(), real);
        via_shell
            .write_file(&link, b"new 'quoted' $text", 0o600)
            .await
            .unwrap();
        assert_eq!(
            via_shell.read_file(&link).await.unwrap(),
            b"new 'quoted' $text"
        );
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
        assert!(via_shell.file_exists(&real).await);
        assert!(!via_shell.file_exists(&dir.path().join("missing")).await);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left"
        );
    }
}
