//! A real OpenSSH server on a loopback port (or on a chosen address and port, started under a
//! prefix such as `ip netns exec NS`), with a throwaway host key, user key and known_hosts file,
//! for the SSH transport tests. Stopped by pid when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The login shell of the test user may source an rc file that runs `pyenv rehash` (root's
/// .bashrc on these machines does); a session killed mid-rehash leaves its lock behind and every
/// later remote command would then wait 60 s for it. Not waiting keeps each command's cost its own.
pub const PYENV_GUARD: &str = "SetEnv PYENV_REHASH_TIMEOUT=0\n";

pub struct TestSshd {
    pub address: String,
    /// What the sshd runs under (e.g. `ip netns exec NS`), kept for a restart.
    exec_prefix: Vec<String>,
    pub port: u16,
    pub dir: PathBuf,
    pub user: String,
    child: Child,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "distls-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen for {}", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestSshd {
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1", free_port(), &[])
    }

    /// An sshd listening on `address:port`, started as `exec_prefix... sshd ...` (e.g. inside a
    /// network namespace with `ip netns exec NS`); ready once a connection from here succeeds.
    pub fn start_on(dir: &Path, address: &str, port: u16, exec_prefix: &[String]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        keygen(&dir.join("stranger_key"));
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let config = format!(
            "Port {port}\nListenAddress {address}\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             StrictModes no\nUsePAM no\nPrintMotd no\nMaxSessions 50\nMaxStartups 50\nLogLevel ERROR\n\
             {PYENV_GUARD}",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        // ssh looks a host up as `[host]:port`, except on port 22.
        let host = if port == 22 {
            address.to_string()
        } else {
            format!("[{address}]:{port}")
        };
        std::fs::write(dir.join("known_hosts"), format!("{host} {kind} {key}\n")).unwrap();
        std::fs::write(dir.join("empty_known_hosts"), "").unwrap();
        let child = spawn_sshd(dir, exec_prefix);
        let sshd = TestSshd {
            address: address.to_string(),
            exec_prefix: exec_prefix.to_vec(),
            port,
            dir: dir.to_path_buf(),
            user,
            child,
        };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.address.as_str(), self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host goes away: the listening sshd and every session process it forked (so every
    /// established connection drops too) are SIGKILLed by pid, and new connections are refused.
    pub fn kill_all(&mut self) {
        let listener = self.child.id();
        let sessions = descendants(listener);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in sessions {
            // SAFETY: a process forked by the sshd this fixture started, found a moment ago.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.address.as_str(), self.port)).is_ok() {
            assert!(Instant::now() < deadline, "sshd still accepts connections");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host is back: the same server (port, host key, users) starts again.
    pub fn restart(&mut self) {
        self.child = spawn_sshd(&self.dir, &self.exec_prefix);
        self.wait_listening();
    }

    /// Plan settings (under `defaults:`) that reach this server; `env` carries the cluster's epmd port.
    pub fn plan_settings(
        &self,
        identity: &str,
        known_hosts: &str,
        env: &[(String, String)],
    ) -> String {
        let mut text = format!(
            "  transport: ssh\n  host: {}\n  port: {}\n  user: {}\n  identity_file: {}/{identity}\n  known_hosts: {}/{known_hosts}\n",
            self.address,
            self.port,
            self.user,
            self.dir.display(),
            self.dir.display()
        );
        if !env.is_empty() {
            text.push_str("  env:\n");
            for (k, v) in env {
                text.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
        text
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_sshd(dir: &Path, exec_prefix: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sshd.log"))
        .unwrap();
    let mut command = match exec_prefix.split_first() {
        None => Command::new("/usr/sbin/sshd"),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("/usr/sbin/sshd");
            c
        }
    };
    command
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sshd starts (openssh-server is installed by scripts/install-deps)")
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parent: Vec<(u32, u32)> = crate::support::processes()
        .into_iter()
        .map(|(pid, ppid, _)| (pid, ppid))
        .collect();
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        // A node VM started through this server (detached, normally reparented already) is the
        // cluster's, not the connection's: the host being unreachable does not stop it.
        found.extend(
            parent
                .iter()
                .filter(|(child, p)| *p == current && !is_node_vm(*child))
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    found.remove(0);
    found
}

fn is_node_vm(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains("rehearsal_root"))
}
