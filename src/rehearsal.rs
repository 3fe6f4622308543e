//! A throwaway local Erlang cluster laid out like MongooseIM releases.
//!
//! Used by the integration tests and by `distls demo`. [`RehearsalCluster::create`] builds, under one
//! directory:
//!
//! ```text
//! <dir>/ssl/{cacert,node_cert,node_key}.pem   CA + node certificate for `localhost` (rcgen)
//! <dir>/plan.yaml                              a distls plan (v1) for the cluster
//! <dir>/log/epmd.log                           output of the cluster's own epmd
//!                                              (`epmd-<sname>.log` per host with `ClusterSpec::hosts`)
//! <dir>/<sname>/etc/vm.args                    -sname, -setcookie, ... (MongooseIM style)
//! <dir>/<sname>/etc/vm.dist.args               MongooseIM's template, TLS block commented out
//! <dir>/<sname>/etc/peers                      the other nodes, one per line
//! <dir>/<sname>/bin/ctl                        start|stop|ping|status|peers|links|started|... (ctl.sh)
//! <dir>/<sname>/var/{pid,pids.log,status}      written by the node itself
//! <dir>/<sname>/var/links.log                  with ClusterSpec::sample_links: the node's links, every 200 ms
//! <dir>/<sname>/var/mnesia/                    with ClusterSpec::mnesia: the node's Mnesia directory
//! <dir>/<sname>/log/erlang.log                 the node's log
//! ```
//!
//! The cluster runs its own epmd on a free loopback port; every command must get [`RehearsalCluster::env`]
//! (`ERL_EPMD_PORT`). Nothing here sleeps to synchronise: waits poll a condition under a deadline.
//! Every process started is stopped by its pid in [`RehearsalCluster::shutdown`], which also runs on drop.
//!
//! Node indexes are 0-based everywhere: node `i` is `<prefix>{i+1}@localhost`, or
//! `<prefix>{i+1}@<ip>` when the spec gives each node its own host ([`ClusterSpec::hosts`], e.g.
//! network namespaces: one epmd per host, long names, every ctl run inside its host).
//!
//! The parts: `spec` (what to build), `lifecycle` (create, start, tear down), `layout` (the files
//! of each node), `certs`, `epmd`, `ctl` (running a node's ctl and reading its links), `plan`
//! (the distls plan for the cluster), `waits` (polls under a deadline) and `processes` (pids, and
//! the shutdown that kills by pid).

mod certs;
mod ctl;
mod epmd;
mod layout;
mod lifecycle;
mod plan;
mod processes;
mod spec;
mod waits;

pub use certs::{write_custom_cert, write_foreign_ca_cert, write_host_certs, write_rotation_certs};
pub use epmd::{DEFAULT_EPMD_PORT, start_private_epmd, start_private_epmd_under};
pub use layout::uncomment_tls_block;
pub use processes::{is_zombie, read_pid};
pub use spec::{ClusterSpec, NodeHost};
pub use waits::poll_until;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// How long [`RehearsalCluster::create`] waits for the cluster to be fully meshed.
pub const MESH_DEADLINE: Duration = Duration::from_secs(60);

/// Errors of the rehearsal cluster. Messages say what failed and show the command's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RehearsalError {
    /// The [`ClusterSpec`] cannot be used.
    #[error("invalid rehearsal cluster spec: {0}")]
    Spec(String),
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A program could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}){}", show_output(stdout, stderr))]
    Command {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {output:?}")]
    Parse { command: String, output: String },
    /// Certificate generation failed.
    #[error("cannot generate rehearsal certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// The cluster's own epmd did not come up.
    #[error("epmd did not come up on {address}:{port}: {detail}")]
    Epmd {
        address: String,
        port: u16,
        detail: String,
    },
    /// A node index outside `0..nodes`.
    #[error("no rehearsal node with index {index} (the cluster has {count} nodes)")]
    NoSuchNode { index: usize, count: usize },
    /// [`RehearsalCluster::wait_until`] ran out of time.
    #[error("timed out after {after:?} waiting for {what}{}", last_seen(last))]
    Timeout {
        what: String,
        after: Duration,
        last: Option<String>,
    },
}

fn show_output(stdout: &str, stderr: &str) -> String {
    let mut s = String::new();
    for (label, text) in [("stderr", stderr), ("stdout", stdout)] {
        let text = text.trim();
        if !text.is_empty() {
            let _ = write!(s, "\n{label}: {text}");
        }
    }
    s
}

fn last_seen(last: &Option<String>) -> String {
    last.as_ref()
        .map(|l| format!(" (last seen: {l})"))
        .unwrap_or_default()
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RehearsalError {
    let path = path.to_path_buf();
    move |source| RehearsalError::Io {
        action,
        path,
        source,
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RehearsalNode {
    /// Full node name, e.g. `mim1@localhost`.
    pub name: String,
    /// Short name, e.g. `mim1`; also the name of its directory.
    pub sname: String,
    /// `<dir>/<sname>`: holds `etc/`, `bin/`, `var/` and `log/`.
    pub root: PathBuf,
}

impl RehearsalNode {
    pub fn vm_args(&self) -> PathBuf {
        self.root.join("etc/vm.args")
    }
    pub fn vm_dist_args(&self) -> PathBuf {
        self.root.join("etc/vm.dist.args")
    }
    pub fn ctl_path(&self) -> PathBuf {
        self.root.join("bin/ctl")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("var/pid")
    }
    pub fn pids_log(&self) -> PathBuf {
        self.root.join("var/pids.log")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("log/erlang.log")
    }
    /// `var/status`: `starting`, `started` or `stopped` (see ctl.sh).
    pub fn status_file(&self) -> PathBuf {
        self.root.join("var/status")
    }
    /// `var/links.log`, written while the `var/sample-links` switch was on at boot.
    pub fn links_log(&self) -> PathBuf {
        self.root.join("var/links.log")
    }
    /// The switch file that makes the node sample its links from its next boot.
    pub fn sample_links_switch(&self) -> PathBuf {
        self.root.join("var/sample-links")
    }
    /// The node's Mnesia directory (present only with [`ClusterSpec::mnesia`]).
    pub fn mnesia_dir(&self) -> PathBuf {
        self.root.join("var/mnesia")
    }
}

/// Certificate, key and CA certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub cacertfile: PathBuf,
}

/// What a node reports about its distribution, through its own ctl.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeLinks {
    /// `inet_tcp` or `inet_tls`.
    pub proto_dist: String,
    /// Normal (not hidden) peers in state `up`, with the transport of the link: `tcp` or `tls`.
    pub peers: BTreeMap<String, String>,
}

/// A running rehearsal cluster. Dropping it shuts it down.
#[derive(Debug)]
pub struct RehearsalCluster {
    dir: PathBuf,
    cluster_name: String,
    cookie: String,
    tls: TlsFiles,
    nodes: Vec<RehearsalNode>,
    /// One per node with [`ClusterSpec::hosts`], same order; empty otherwise.
    hosts: Vec<NodeHost>,
    /// [`ClusterSpec::mnesia`].
    mnesia: bool,
    /// The cluster's epmd, or one per host.
    epmds: Vec<Child>,
    epmd_port: u16,
    /// Set by [`Self::shutdown`], so a second call does nothing.
    shut_down: bool,
    /// Set by [`Self::create_temp`]; removed after shutdown (fields drop after `Drop::drop`).
    _tempdir: Option<tempfile::TempDir>,
}

impl RehearsalCluster {
    /// Whether the cluster was built with [`ClusterSpec::mnesia`].
    pub fn mnesia(&self) -> bool {
        self.mnesia
    }

    /// What node `node`'s `var/status` says now (`starting`, `started`, `stopped`), if readable.
    pub fn status(&self, node: usize) -> Option<String> {
        let text = fs::read_to_string(self.nodes.get(node)?.status_file()).ok()?;
        Some(text.trim().to_owned())
    }

    /// `var/links.log` of node `node` (see [`ClusterSpec::sample_links`]).
    pub fn links_log(&self, node: usize) -> Result<PathBuf, RehearsalError> {
        Ok(self.node(node)?.links_log())
    }

    /// Every node's `var/links.log` as it is now, by node name (empty text for a node without one).
    pub fn links_logs(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .map(|n| {
                let text = fs::read_to_string(n.links_log()).unwrap_or_default();
                (n.name.clone(), text)
            })
            .collect()
    }

    /// The (canonical) directory holding the cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The cluster's cookie (32 random characters).
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The cluster's CA, node certificate and key (under `<dir>/ssl/`).
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls
    }

    pub fn nodes(&self) -> &[RehearsalNode] {
        &self.nodes
    }

    /// Node `index` (0-based), or [`RehearsalError::NoSuchNode`].
    pub fn node(&self, index: usize) -> Result<&RehearsalNode, RehearsalError> {
        self.nodes.get(index).ok_or(RehearsalError::NoSuchNode {
            index,
            count: self.nodes.len(),
        })
    }

    /// The port of the cluster's own epmd (on 127.0.0.1), or of every host's epmd
    /// ([`DEFAULT_EPMD_PORT`]) with [`ClusterSpec::hosts`].
    pub fn epmd_port(&self) -> u16 {
        self.epmd_port
    }

    /// `ERL_EPMD_PORT=<port>`: pass it to distls and to every command that talks to the cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("ERL_EPMD_PORT".to_owned(), self.epmd_port.to_string())]
    }

    /// The hosts of the nodes ([`ClusterSpec::hosts`]); empty when every node is on localhost.
    pub fn hosts(&self) -> &[NodeHost] {
        &self.hosts
    }
}

impl Drop for RehearsalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `prefix[0] prefix[1..] program` (or just `program` when `prefix` is empty).
fn prefixed_command(prefix: &[String], program: &std::ffi::OsStr) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
    }
}

#[cfg(test)]
mod test_support {
    use super::NodeLinks;

    pub(super) fn peer_names(links: &NodeLinks) -> Vec<&str> {
        links.peers.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::processes::is_node_vm;
    use super::test_support::peer_names;
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::process::Output;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(30);

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Gone: exited, reaped or a zombie (a zombie holds no port and runs no code).
    fn vm_gone(pid: u32, root: &Path) -> bool {
        !is_node_vm(pid, root) || is_zombie(pid)
    }

    fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let value = f();
        eprintln!("[timing] {label}: {:.2?}", start.elapsed());
        value
    }

    #[test]
    fn plain_cluster_meshes_stops_restarts_and_shuts_down() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cluster = timed("create 3-node cluster", || {
            let mut spec = ClusterSpec::new(tmp.path(), 3);
            spec.name_prefix = "rha".into();
            RehearsalCluster::create(&spec).unwrap()
        });
        let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
        assert_eq!(
            names,
            ["rha1@localhost", "rha2@localhost", "rha3@localhost"]
        );

        for i in 0..3 {
            let links = cluster.links(i).unwrap();
            assert_eq!(links.proto_dist, "inet_tcp");
            let expected: BTreeMap<String, String> = names
                .iter()
                .filter(|n| **n != names[i])
                .map(|n| (n.clone(), "tcp".to_owned()))
                .collect();
            assert_eq!(links.peers, expected, "links of {}", names[i]);
            let ping = cluster.ctl(i, &["ping"]);
            assert!(ping.status.success(), "{ping:?}");
            assert_eq!(stdout(&ping), "pong\n");
            assert!(is_node_vm(
                cluster.node_os_pid(i).unwrap(),
                &cluster.nodes()[i].root
            ));
        }

        let peers = cluster.ctl_ok(2, &["peers"]).unwrap();
        assert_eq!(peers, "rha1@localhost tcp\nrha2@localhost tcp\n");
        let status = cluster.ctl_ok(2, &["status"]).unwrap();
        assert_eq!(status, "distribution protocol: inet_tcp\n");

        // MongooseIM's start refuses to start a node that answers.
        let again = cluster.ctl(0, &["start"]);
        assert_eq!(again.status.code(), Some(1), "{again:?}");
        assert_eq!(stdout(&again), "Node is already running!\n");

        // Stop node 2 (index 1).
        let pid = cluster.node_os_pid(1).unwrap();
        let stop = timed("ctl stop", || cluster.ctl(1, &["stop"]));
        assert!(stop.status.success(), "{stop:?}");
        assert!(vm_gone(pid, &cluster.nodes()[1].root));
        assert_eq!(
            fs::read_to_string(cluster.nodes()[1].root.join("var/status")).unwrap(),
            "stopped\n"
        );
        let ping = cluster.ctl(1, &["ping"]);
        assert_eq!(ping.status.code(), Some(1), "{ping:?}");
        assert_eq!(
            stdout(&ping),
            "Node rha2@localhost not responding to pings.\n"
        );
        let status = cluster.ctl(1, &["status"]);
        assert_eq!(status.status.code(), Some(3), "{status:?}");
        assert_eq!(
            stdout(&status),
            "Failed RPC connection to the node rha2@localhost: nodedown\n"
        );
        let stop_again = cluster.ctl(1, &["stop"]);
        assert_eq!(stop_again.status.code(), Some(1), "{stop_again:?}");
        assert!(matches!(
            cluster.links(1),
            Err(RehearsalError::Command { .. })
        ));
        cluster
            .wait_until("rha1 and rha3 to drop rha2", WAIT, || {
                [0, 2].iter().all(|&i| {
                    cluster.links(i).is_ok_and(|l| {
                        !l.peers.contains_key("rha2@localhost") && l.peers.len() == 1
                    })
                })
            })
            .unwrap();

        // Start it again: it rejoins by itself.
        let start = timed("ctl start", || cluster.ctl(1, &["start"]));
        assert!(start.status.success(), "{start:?}");
        timed("restarted node fully meshed again", || {
            cluster.wait_meshed(WAIT)
        })
        .unwrap();
        assert_ne!(cluster.node_os_pid(1), Some(pid));
        assert_eq!(
            cluster.links(1).unwrap().peers.values().collect::<Vec<_>>(),
            ["tcp", "tcp"]
        );

        // Shutdown kills every VM ever started and reaps epmd.
        let port = cluster.epmd_port();
        let mut all: Vec<(u32, PathBuf)> = Vec::new();
        for (i, node) in cluster.nodes().iter().enumerate() {
            all.extend(
                cluster
                    .recorded_pids(i)
                    .into_iter()
                    .map(|p| (p, node.root.clone())),
            );
        }
        assert_eq!(all.len(), 4, "{all:?}");
        timed("shutdown", || cluster.shutdown());
        for (pid, root) in &all {
            assert!(
                vm_gone(*pid, root),
                "pid {pid} of {} still alive",
                root.display()
            );
        }
        assert!(cluster.epmds.is_empty());
        let names = Command::new("epmd")
            .args(["-port", &port.to_string(), "-names"])
            .output()
            .unwrap();
        assert!(!names.status.success(), "epmd still answers on {port}");
        cluster.shutdown(); // idempotent
    }

    #[test]
    fn tls_by_hand_works_with_the_layout_certificates_and_ctl() {
        let cluster = RehearsalCluster::create_temp("rhb", 3).unwrap();
        let key_mode = fs::metadata(&cluster.tls_files().keyfile)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        for i in [0, 1] {
            cluster.ctl_ok(i, &["stop"]).unwrap();
            cluster.enable_tls_by_hand(i).unwrap();
            cluster.ctl_ok(i, &["start"]).unwrap();
            // The ctl now reads the TLS args too, so its ping goes over TLS.
            cluster
                .wait_until("the TLS node to answer its TLS ctl", WAIT, || {
                    cluster.ctl(i, &["ping"]).status.success()
                })
                .unwrap();
            let status = cluster.ctl(i, &["status"]);
            assert!(status.status.success(), "{status:?}");
            assert_eq!(stdout(&status), "distribution protocol: inet_tls\n");
        }
        cluster
            .wait_until("rhb1 and rhb2 to link over TLS", WAIT, || {
                let a = cluster.links(0);
                let b = cluster.links(1);
                a.is_ok_and(|l| l.peers.get("rhb2@localhost").is_some_and(|t| t == "tls"))
                    && b.is_ok_and(|l| l.peers.get("rhb1@localhost").is_some_and(|t| t == "tls"))
            })
            .unwrap();
        let a = cluster.links(0).unwrap();
        assert_eq!(a.proto_dist, "inet_tls");
        assert_eq!(
            peer_names(&a),
            ["rhb2@localhost"],
            "a TLS node cannot link to a plain one"
        );
        let c = cluster.links(2).unwrap();
        assert_eq!(c.proto_dist, "inet_tcp");
        assert!(c.peers.is_empty(), "{c:?}");
    }

    #[test]
    fn a_certificate_from_a_foreign_ca_is_rejected_by_peers() {
        let cluster = RehearsalCluster::create_temp("rhc", 2).unwrap();
        let foreign = write_foreign_ca_cert(&cluster.dir().join("ssl")).unwrap();
        assert_ne!(
            fs::read(&foreign.cacertfile).unwrap(),
            fs::read(&cluster.tls_files().cacertfile).unwrap()
        );
        let verify = |ca: &Path, cert: &Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .args([ca, cert])
                .output()
                .map(|o| o.status.success())
        };
        if let (Ok(own), Ok(cross)) = (
            verify(
                &cluster.tls_files().cacertfile,
                &cluster.tls_files().certfile,
            ),
            verify(&cluster.tls_files().cacertfile, &foreign.certfile),
        ) {
            assert!(
                own && !cross,
                "openssl verify: own chain {own}, foreign cert {cross}"
            );
        }

        for i in [0, 1] {
            cluster.ctl_ok(i, &["stop"]).unwrap();
            cluster.enable_tls_by_hand(i).unwrap();
        }
        // Node 2 uses the foreign certificate and trusts only the foreign CA.
        let path = cluster.nodes()[1].vm_dist_args();
        let tls = cluster.tls_files();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace(
                tls.certfile.to_str().unwrap(),
                foreign.certfile.to_str().unwrap(),
            )
            .replace(
                tls.keyfile.to_str().unwrap(),
                foreign.keyfile.to_str().unwrap(),
            )
            .replace(
                tls.cacertfile.to_str().unwrap(),
                foreign.cacertfile.to_str().unwrap(),
            );
        fs::write(&path, text).unwrap();
        for i in [0, 1] {
            cluster.ctl_ok(i, &["start"]).unwrap();
        }
        for i in [0, 1] {
            cluster
                .wait_until("both TLS nodes to answer their own ctl", WAIT, || {
                    cluster.ctl(i, &["ping"]).status.success()
                })
                .unwrap();
        }
        // rhc2 keeps dialing rhc1, which refuses its certificate.
        let log = cluster.nodes()[0].log_file();
        cluster
            .wait_until("rhc1 to reject rhc2's certificate", WAIT, || {
                fs::read_to_string(&log).is_ok_and(|l| l.contains("Unknown CA"))
            })
            .unwrap();
        assert!(cluster.links(0).unwrap().peers.is_empty());
        assert!(cluster.links(1).unwrap().peers.is_empty());
    }
}
