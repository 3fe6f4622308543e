//! Hosts that run another OTP release than this machine's: each host is a network namespace
//! (see [`crate::netns_hosts`]) whose processes run chrooted in a Debian root of its suite
//! (trixie: OTP 27, sid: OTP 29), built by `scripts/otp-host` from Debian's registry and cached
//! packed; every test unpacks its own copy and removes it when done. The host's sshd is the
//! root's own, so distls reaches the node exactly like a remote host, and every node, epmd and
//! probe VM on it runs the root's OTP. A host of [`Otp::Machine`] is a namespace without a root:
//! this machine's OTP 25.
//!
//! Nothing is mounted in the machine's own mount namespace: `ip netns exec` runs each command in
//! a private mount namespace, and the prefix of a root host mounts /proc, /dev and the temp
//! directory (bound at the same path, so cluster directories, certificates and sshd files have one
//! path inside and out) there before it chroots. The mounts go away with the last process that
//! uses them, and removing a root never reaches through a mount.

use crate::netns_hosts::Netns;
use crate::sshd::TestSshd;
use crate::support::{TestCluster, cluster_with};
use distls::rehearsal::NodeHost;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where unpacked roots live while a test uses them: `<pid>-<serial>-<suite>`.
const ROOTS_DIR: &str = "/var/tmp/distls-otp-roots";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otp {
    /// This machine's Erlang (Debian 12: OTP 25).
    Machine,
    /// Debian 13 (trixie): OTP 27, ejabberd 24.12, RabbitMQ 4.0.
    Trixie,
    /// Debian sid: OTP 29, ejabberd 26.07, RabbitMQ 4.3, Elixir 1.20.
    Sid,
}

impl Otp {
    pub fn suite(self) -> Option<&'static str> {
        match self {
            Otp::Machine => None,
            Otp::Trixie => Some("trixie"),
            Otp::Sid => Some("sid"),
        }
    }

    /// The OTP major release the host runs.
    pub fn major(self) -> &'static str {
        match self {
            Otp::Machine => "25",
            Otp::Trixie => "27",
            Otp::Sid => "29",
        }
    }
}

/// One unpacked root of a suite; removed (with everything in it) when dropped.
pub struct Root {
    pub path: PathBuf,
}

static ROOT_SERIAL: AtomicU32 = AtomicU32::new(0);

impl Root {
    /// Unpacks the suite's packed root (building it first with `scripts/otp-host` when this
    /// machine has none cached) and prepares it for a host: this machine's /etc/hosts (node names
    /// like `x@<hostname>` must resolve), sshd's privilege-separation directory, the temp directory
    /// as a mount point.
    pub fn unpack(suite: &str) -> Root {
        remove_stale_roots();
        let packed = packed_root(suite);
        let serial = ROOT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(ROOTS_DIR).join(format!("{}-{serial}-{suite}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let root = Root { path };
        // tar runs zstd itself: a failed decompression fails the unpack (no shell pipeline).
        let out = Command::new("tar")
            .args(["-x", "--zstd", "--numeric-owner", "-f"])
            .arg(&packed)
            .arg("-C")
            .arg(&root.path)
            .output()
            .expect("tar runs");
        assert!(
            out.status.success(),
            "unpacking {}: {}",
            packed.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy("/etc/hosts", root.path.join("etc/hosts")).unwrap();
        std::fs::create_dir_all(root.path.join("run/sshd")).unwrap();
        let tmp = inside(&root.path, &temp_dir());
        std::fs::create_dir_all(tmp).unwrap();
        root
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Nothing is mounted here in this mount namespace (see the module comment).
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The physical temp directory every test's files live under (bound into every root).
fn temp_dir() -> PathBuf {
    std::fs::canonicalize(std::env::temp_dir()).unwrap()
}

/// The cached packed root of `suite`, built by `scripts/otp-host` if missing (about a minute and
/// a half from Debian's registry; later runs find it cached).
fn packed_root(suite: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/otp-host");
    let out = Command::new("bash")
        .arg(&script)
        .args(["build", suite])
        .output()
        .expect("bash runs scripts/otp-host");
    assert!(
        out.status.success(),
        "scripts/otp-host build {suite} failed (it needs root, mmdebstrap and Debian's registry; `bash scripts/install-deps --otp-hosts` installs mmdebstrap): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Roots left by a test process that no longer runs (killed before its drops ran).
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(ROOTS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Namespaced hosts, each on its own OTP. Dropped after everything that runs on them.
pub struct OtpHosts {
    pub otps: Vec<Otp>,
    pub net: Netns,
    /// Per host; hosts of one suite share one root (their processes only write in the temp
    /// directory, which is the machine's, and in per-process temp files).
    roots: Vec<Option<Arc<Root>>>,
}

impl OtpHosts {
    /// None (after saying why) where network namespaces cannot be made.
    pub fn create(otps: &[Otp]) -> Option<OtpHosts> {
        let hosts = u8::try_from(otps.len()).unwrap();
        let net = match Netns::create(hosts) {
            Err(reason) => {
                eprintln!("skipped: network namespaces not permitted here ({reason})");
                return None;
            }
            Ok(Err(problem)) => {
                panic!("namespaces are permitted, but the network failed: {problem}")
            }
            Ok(Ok(net)) => net,
        };
        let mut unpacked: Vec<(Otp, Arc<Root>)> = Vec::new();
        let roots = otps
            .iter()
            .map(|otp| {
                let suite = otp.suite()?;
                if let Some((_, root)) = unpacked.iter().find(|(o, _)| o == otp) {
                    return Some(root.clone());
                }
                let root = Arc::new(Root::unpack(suite));
                unpacked.push((*otp, root.clone()));
                Some(root)
            })
            .collect();
        Some(OtpHosts {
            otps: otps.to_vec(),
            net,
            roots,
        })
    }

    /// The root of host `k` (1-based), if it has one.
    pub fn root(&self, k: u8) -> Option<&Root> {
        self.roots[usize::from(k) - 1].as_deref()
    }

    /// Every process of host `k` (1-based) starts as `prefix... program args...`.
    pub fn exec_prefix(&self, k: u8) -> Vec<String> {
        let Some(root) = self.root(k) else {
            return self.net.sshd_prefix(k);
        };
        let mut prefix = self.net.exec_prefix(k);
        let script = format!(
            r#"r={root}; t={tmp}
mount -t proc proc "$r/proc" && mount --bind /dev "$r/dev" && mount --bind /dev/pts "$r/dev/pts" &&
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm" && mount --bind "$t" "$r$t" || exit 125
exec chroot "$r" "$@""#,
            root = root.path.display(),
            tmp = temp_dir().display()
        );
        prefix.extend([
            "/bin/sh".into(),
            "-c".into(),
            script,
            format!("otp-host{k}"),
        ]);
        prefix
    }

    pub fn node_hosts(&self) -> Vec<NodeHost> {
        (1..=u8::try_from(self.otps.len()).unwrap())
            .map(|k| NodeHost {
                ip: self.net.ip(k),
                exec_prefix: self.exec_prefix(k),
            })
            .collect()
    }

    /// Runs `sh -c script` on host `k` (1-based).
    pub fn sh(&self, k: u8, script: &str) -> std::process::Output {
        let prefix = self.exec_prefix(k);
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["/bin/sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the host's shell runs")
    }

    /// A real sshd on host `k` (the root's own), on port 22 of the host's address.
    pub fn sshd(&self, k: u8, dir: &Path) -> TestSshd {
        TestSshd::start_on(dir, &self.net.ip(k).to_string(), 22, &self.exec_prefix(k))
    }
}

/// A fixture cluster (MongooseIM layout) with one node on each host, each host with its own sshd,
/// and a plan that reaches every node over SSH. Fields drop in order: nodes, sshds, hosts.
pub struct OtpCluster {
    pub t: TestCluster,
    pub sshds: Vec<TestSshd>,
    pub hosts: OtpHosts,
}

impl OtpCluster {
    /// None where network namespaces cannot be made (the caller returns: skipped).
    pub fn start(prefix: &str, otps: &[Otp]) -> Option<OtpCluster> {
        let hosts = OtpHosts::create(otps)?;
        let node_hosts = hosts.node_hosts();
        let t = cluster_with(prefix, otps.len(), |spec| spec.hosts = node_hosts);
        let sshds: Vec<TestSshd> = (1..=u8::try_from(otps.len()).unwrap())
            .map(|k| hosts.sshd(k, &t.cluster.dir().join(format!("sshd{k}"))))
            .collect();
        let cluster = OtpCluster { t, sshds, hosts };
        cluster.write_ssh_plan();
        Some(cluster)
    }

    /// The plan: every node through its own host's sshd (default epmd port inside each host).
    fn write_ssh_plan(&self) {
        let known_hosts = self.t.cluster.dir().join("known_hosts");
        let all_keys: String = self
            .sshds
            .iter()
            .map(|s| std::fs::read_to_string(s.dir.join("known_hosts")).unwrap())
            .collect();
        std::fs::write(&known_hosts, all_keys).unwrap();
        self.t.cluster.write_plan_with(|i| {
            format!(
                "    host: \"{}\"\n    identity_file: \"{}\"\n    known_hosts: \"{}\"\n",
                self.sshds[i].address,
                self.sshds[i].dir.join("user_key").display(),
                known_hosts.display()
            )
        });
        let plan = self.t.plan();
        let text = std::fs::read_to_string(&plan).unwrap();
        let ssh = format!(
            "  transport: ssh\n  port: 22\n  user: {}\n",
            self.sshds[0].user
        );
        assert!(text.contains("  transport: local\n"), "{text}");
        std::fs::write(&plan, text.replace("  transport: local\n", &ssh)).unwrap();
    }

    /// The OTP release node `i` (0-based) really runs, asked through its own ctl.
    pub fn node_otp(&self, i: usize) -> String {
        self.t
            .cluster
            .ctl_ok(i, &["otp"])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string()
    }
}
