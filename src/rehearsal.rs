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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The ctl script installed as `<node>/bin/ctl`.
const CTL_SCRIPT: &str = include_str!("rehearsal/ctl.sh");

/// How long [`RehearsalCluster::create`] waits for the cluster to be fully meshed.
pub const MESH_DEADLINE: Duration = Duration::from_secs(60);
/// Poll interval of [`RehearsalCluster::wait_until`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait for epmd to answer.
const EPMD_DEADLINE: Duration = Duration::from_secs(10);
/// How long [`RehearsalCluster::shutdown`] waits for killed processes to disappear.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// Environment variables that would change how `erl` behaves under the ctl script.
const ERL_ENV_TO_CLEAR: [&str; 4] = ["ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_LIBS"];
/// The argv marker that identifies the server VM of a rehearsal node (followed by the node's root).
const ROOT_MARKER: &str = "-rehearsal_root";

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

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of nodes (3 is the usual choice).
    pub nodes: usize,
    /// Where to build the cluster; created if missing. Must not contain whitespace, `#`, quotes or
    /// backslashes (its paths end up in args files and shell commands).
    pub dir: PathBuf,
    /// The `cluster:` of the plan.
    pub cluster_name: String,
    /// Node short names are `<name_prefix>1`, `<name_prefix>2`, ... (`mim` by default). Give
    /// clusters that run at the same time different prefixes so their names and logs never mix.
    pub name_prefix: String,
    /// Empty (the default): every node is `<prefix>N@localhost` (`-sname`), listens on loopback and
    /// uses one epmd on a free loopback port. Otherwise one [`NodeHost`] per node: node `i` is
    /// `<prefix>{i+1}@<ip>` (`-name`), listens on that address, and gets its own epmd, started like
    /// its ctl under [`NodeHost::exec_prefix`], listening on that address (and loopback) on the
    /// default port 4369 (see [`DEFAULT_EPMD_PORT`]). Meant for hosts that are separate network
    /// namespaces; the certificate also covers every host address.
    pub hosts: Vec<NodeHost>,
    /// Every node samples its links into `var/links.log` from its first boot (the
    /// `var/sample-links` switch of ctl.sh): one line every 200 ms,
    /// `<unix ms> <peer:tcp|tls,...|->`. Off by default; see
    /// [`RehearsalCluster::enable_link_sampling`] and [`RehearsalCluster::links_log`].
    pub sample_links: bool,
    /// Every node keeps Mnesia in `var/mnesia`. Once the cluster meshes, [`RehearsalCluster::create`]
    /// creates a disc schema on all nodes and a `disc_copies` table `rehearsal` replicated on every
    /// node (one row per node, `ctl mnesia-init`) and waits for `ctl started` on every node. From
    /// then on every boot waits for its tables (without limit) before `var/status` says `started`,
    /// like MongooseIM, and the plan gets `commands.ready: <ctl> started`. Off by default.
    pub mnesia: bool,
}

/// The port every epmd of a cluster with [`ClusterSpec::hosts`] listens on: epmd's default.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// Where one node of a multi-host cluster runs (see [`ClusterSpec::hosts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHost {
    /// The host part of the node name, the address its distribution listener and its epmd use.
    pub ip: Ipv4Addr,
    /// Every process of this host (its epmd, every `ctl` command of its node) is started as
    /// `exec_prefix... program args...`, e.g. `["ip", "netns", "exec", "ns1"]`; empty runs it directly.
    pub exec_prefix: Vec<String>,
}

impl ClusterSpec {
    /// `nodes` nodes `mim1@localhost`, `mim2@localhost`, ... in `dir`; cluster name `rehearsal`.
    pub fn new(dir: impl Into<PathBuf>, nodes: usize) -> Self {
        Self {
            nodes,
            dir: dir.into(),
            cluster_name: "rehearsal".to_owned(),
            name_prefix: "mim".to_owned(),
            hosts: Vec::new(),
            sample_links: false,
            mnesia: false,
        }
    }

    fn validate(&self) -> Result<(), RehearsalError> {
        if self.nodes == 0 {
            return Err(RehearsalError::Spec(
                "a cluster needs at least one node".into(),
            ));
        }
        let prefix_ok = self
            .name_prefix
            .starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !prefix_ok {
            return Err(RehearsalError::Spec(format!(
                "node-name prefix {:?} must be a lowercase letter followed by [a-z0-9_]",
                self.name_prefix
            )));
        }
        let name_ok = !self.cluster_name.is_empty()
            && self
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(RehearsalError::Spec(format!(
                "cluster name {:?} must match [A-Za-z0-9_.-]+ (it names the plan's journal)",
                self.cluster_name
            )));
        }
        if !self.hosts.is_empty() && self.hosts.len() != self.nodes {
            return Err(RehearsalError::Spec(format!(
                "{} hosts for {} nodes: give one host per node, or none",
                self.hosts.len(),
                self.nodes
            )));
        }
        check_path_chars(&self.dir)
    }
}

/// Paths end up unquoted in args files (where `#` starts a comment and whitespace splits) and in
/// plan commands, so refuse the characters that would need quoting.
fn check_path_chars(path: &Path) -> Result<(), RehearsalError> {
    let Some(s) = path.to_str() else {
        return Err(RehearsalError::Spec(format!(
            "directory {} is not valid UTF-8",
            path.display()
        )));
    };
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "#\"'\\$`{}".contains(*c))
    {
        return Err(RehearsalError::Spec(format!(
            "directory {s:?} contains {c:?}; pick a path without whitespace, quotes, #, $, braces or backslashes"
        )));
    }
    Ok(())
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
    /// Builds the layout, certificates and plan, starts the cluster's epmd, starts every node on
    /// plain TCP and waits (up to [`MESH_DEADLINE`]) until every node sees all others.
    /// On error, whatever was already started is shut down.
    pub fn create(spec: &ClusterSpec) -> Result<Self, RehearsalError> {
        spec.validate()?;
        fs::create_dir_all(&spec.dir).map_err(io_err("create directory", &spec.dir))?;
        // The physical path: ctl computes its root with `pwd -P`, and shutdown matches it in argv.
        let dir = fs::canonicalize(&spec.dir).map_err(io_err("resolve", &spec.dir))?;
        check_path_chars(&dir)?;

        let host_ips: Vec<String> = spec.hosts.iter().map(|h| h.ip.to_string()).collect();
        let tls = write_cluster_certs(&dir.join("ssl"), &host_ips)?;
        let cookie = random_cookie()?;
        let nodes: Vec<RehearsalNode> = (1..=spec.nodes)
            .map(|k| {
                let sname = format!("{}{k}", spec.name_prefix);
                let host = host_ips.get(k - 1).map_or("localhost", String::as_str);
                RehearsalNode {
                    name: format!("{sname}@{host}"),
                    root: dir.join(&sname),
                    sname,
                }
            })
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            let listen = spec.hosts.get(i).map_or(Ipv4Addr::LOCALHOST, |h| h.ip);
            write_node_layout(node, &nodes, &cookie, &tls, listen)?;
            if spec.sample_links {
                write_file(&node.sample_links_switch(), "", 0o644)?;
            }
            if spec.mnesia {
                let d = node.mnesia_dir();
                fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
            }
        }

        let mut cluster = Self {
            dir,
            cluster_name: spec.cluster_name.clone(),
            cookie,
            tls,
            nodes,
            hosts: spec.hosts.clone(),
            mnesia: spec.mnesia,
            epmds: Vec::new(),
            epmd_port: DEFAULT_EPMD_PORT,
            shut_down: false,
            _tempdir: None,
        };
        if spec.hosts.is_empty() {
            let (epmd, port) =
                start_epmd(&cluster.dir, "epmd.log", &[], Ipv4Addr::LOCALHOST, None)?;
            cluster.epmds.push(epmd);
            cluster.epmd_port = port;
        } else {
            for (i, host) in spec.hosts.iter().enumerate() {
                let log = format!("epmd-{}.log", cluster.nodes[i].sname);
                let (epmd, _) = start_epmd(
                    &cluster.dir,
                    &log,
                    &host.exec_prefix,
                    host.ip,
                    Some(DEFAULT_EPMD_PORT),
                )?;
                cluster.epmds.push(epmd);
            }
        }
        cluster.write_plan(&cluster.plan_path(), |_| String::new())?;
        cluster.start_all()?;
        cluster.wait_meshed(MESH_DEADLINE)?;
        if spec.mnesia {
            cluster.mnesia_init()?;
            cluster.wait_started(MESH_DEADLINE)?;
        }
        Ok(cluster)
    }

    /// `ctl mnesia-init <every node>` on node 0: disc schema on all nodes, Mnesia started, table
    /// `rehearsal` (disc_copies everywhere, one row per node).
    fn mnesia_init(&self) -> Result<(), RehearsalError> {
        let mut args = vec!["mnesia-init"];
        args.extend(self.nodes.iter().map(|n| n.name.as_str()));
        let out = self.ctl_ok(0, &args)?;
        if out.trim() == "ok" {
            Ok(())
        } else {
            Err(RehearsalError::Parse {
                command: self.ctl_display(0, &args),
                output: out,
            })
        }
    }

    /// Whether the cluster was built with [`ClusterSpec::mnesia`].
    pub fn mnesia(&self) -> bool {
        self.mnesia
    }

    /// What node `node`'s `var/status` says now (`starting`, `started`, `stopped`), if readable.
    pub fn status(&self, node: usize) -> Option<String> {
        let text = fs::read_to_string(self.nodes.get(node)?.status_file()).ok()?;
        Some(text.trim().to_owned())
    }

    /// Waits until `ctl started` succeeds on every node (status `started` and answering pings).
    pub fn wait_started(&self, deadline: Duration) -> Result<(), RehearsalError> {
        poll_until("every rehearsal node to be started", deadline, &mut || {
            let problems: Vec<String> = thread::scope(|s| {
                let handles: Vec<_> = (0..self.nodes.len())
                    .map(|i| s.spawn(move || self.ctl(i, &["started"])))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("ctl started thread panicked"))
                    .zip(&self.nodes)
                    .filter(|(out, _)| !out.status.success())
                    .map(|(out, node)| {
                        let why = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                        format!("{}: {why}", node.name)
                    })
                    .collect()
            });
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    }

    /// Turns on link sampling (ctl.sh's `var/sample-links` switch) on every node; it takes effect
    /// at each node's next boot. [`ClusterSpec::sample_links`] samples from the first boot.
    pub fn enable_link_sampling(&self) -> Result<(), RehearsalError> {
        for node in &self.nodes {
            write_file(&node.sample_links_switch(), "", 0o644)?;
        }
        Ok(())
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

    /// [`Self::create`] in a fresh temporary directory that is removed when the cluster is dropped.
    pub fn create_temp(prefix: &str, nodes: usize) -> Result<Self, RehearsalError> {
        let tmp = tempfile::Builder::new()
            .prefix("distls-rehearsal-")
            .tempdir()
            .map_err(io_err(
                "create temporary directory in",
                &std::env::temp_dir(),
            ))?;
        let mut spec = ClusterSpec::new(tmp.path(), nodes);
        spec.name_prefix = prefix.to_owned();
        let mut cluster = Self::create(&spec)?;
        cluster._tempdir = Some(tmp);
        Ok(cluster)
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

    /// `<dir>/plan.yaml`, written by [`Self::create`].
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.yaml")
    }

    /// The plan text. `extra_node_yaml(i)` returns YAML to insert verbatim after the `- name:` line
    /// of node `i` (0-based), already indented for a key of that list item, e.g.
    /// `"    commands:\n      start: /bin/false\n"`; an empty string adds nothing.
    pub fn plan_yaml(&self, extra_node_yaml: impl Fn(usize) -> String) -> String {
        let d = self.dir.display();
        let mut y = String::new();
        let _ = writeln!(y, "version: 1");
        let _ = writeln!(y, "cluster: {}", yaml_str(&self.cluster_name));
        let _ = writeln!(y, "tls:");
        for (key, path) in [
            ("certfile", &self.tls.certfile),
            ("keyfile", &self.tls.keyfile),
            ("cacertfile", &self.tls.cacertfile),
        ] {
            let _ = writeln!(y, "  {key}: {}", yaml_str(&path.display().to_string()));
        }
        let _ = writeln!(y, "defaults:");
        let _ = writeln!(y, "  transport: local");
        let _ = writeln!(
            y,
            "  vm_dist_args: {}",
            yaml_str(&format!("{d}/{{sname}}/etc/vm.dist.args"))
        );
        let _ = writeln!(
            y,
            "  vm_args: {}",
            yaml_str(&format!("{d}/{{sname}}/etc/vm.args"))
        );
        let _ = writeln!(y, "  commands:");
        // With Mnesia a node is ready once its tables have loaded (`ctl started`).
        let ready = self.mnesia.then_some(("ready", "started"));
        for (key, verb) in [("stop", "stop"), ("start", "start"), ("ping", "ping")]
            .into_iter()
            .chain(ready)
        {
            let _ = writeln!(
                y,
                "    {key}: {}",
                yaml_str(&format!("{d}/{{sname}}/bin/ctl {verb}"))
            );
        }
        let _ = writeln!(y, "nodes:");
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(y, "  - name: {}", yaml_str(&node.name));
            let extra = extra_node_yaml(i);
            y.push_str(&extra);
            if !extra.is_empty() && !extra.ends_with('\n') {
                y.push('\n');
            }
        }
        y
    }

    /// Writes [`Self::plan_yaml`] to `path` (e.g. a plan where node 2 gets another `commands.start`).
    pub fn write_plan(
        &self,
        path: &Path,
        extra_node_yaml: impl Fn(usize) -> String,
    ) -> Result<(), RehearsalError> {
        fs::write(path, self.plan_yaml(extra_node_yaml)).map_err(io_err("write", path))
    }

    /// Rewrites [`Self::plan_path`] with per-node additions (see [`Self::plan_yaml`]).
    ///
    /// # Panics
    /// If the plan cannot be written: this is test and demo plumbing.
    pub fn write_plan_with(&self, extra_node_yaml: impl Fn(usize) -> String) {
        let path = self.plan_path();
        if let Err(err) = self.write_plan(&path, extra_node_yaml) {
            panic!("{err}");
        }
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

    /// A [`Command`] for `<root>/bin/ctl args...` (under the node's [`NodeHost::exec_prefix`], if
    /// any) with [`Self::env`], stdin closed and the `ERL_*FLAGS`/`ERL_LIBS` of the caller's
    /// environment removed.
    pub fn ctl_command(&self, index: usize, args: &[&str]) -> Result<Command, RehearsalError> {
        let node = self.node(index)?;
        let prefix = self
            .hosts
            .get(index)
            .map_or(&[][..], |h| &h.exec_prefix[..]);
        let mut cmd = prefixed_command(prefix, node.ctl_path().as_os_str());
        cmd.args(args).stdin(Stdio::null());
        for var in ERL_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        Ok(cmd)
    }

    /// Runs `<root>/bin/ctl args...` of node `node` (0-based) and returns its output whatever the
    /// exit status. A bad index or a ctl that cannot be spawned gives exit status 127 with the
    /// reason on stderr.
    pub fn ctl(&self, node: usize, args: &[&str]) -> Output {
        let result = self
            .ctl_command(node, args)
            .and_then(|mut cmd| run(&mut cmd, &self.ctl_display(node, args)));
        result.unwrap_or_else(|err| Output {
            status: ExitStatus::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: err.to_string().into_bytes(),
        })
    }

    /// [`Self::ctl`] that fails unless the exit status is 0; returns stdout.
    pub fn ctl_ok(&self, node: usize, args: &[&str]) -> Result<String, RehearsalError> {
        let display = self.ctl_display(node, args);
        let output = run(&mut self.ctl_command(node, args)?, &display)?;
        check_output(display, output)
    }

    fn ctl_display(&self, node: usize, args: &[&str]) -> String {
        let ctl = self.nodes.get(node).map_or_else(
            || format!("<node {node}>/bin/ctl"),
            |n| n.ctl_path().display().to_string(),
        );
        std::iter::once(ctl)
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Protocol and links of node `node`, through its own ctl (`ctl links`, one control VM).
    /// Fails (exit 3 of ctl) when the ctl cannot reach the node.
    pub fn links(&self, node: usize) -> Result<NodeLinks, RehearsalError> {
        let display = self.ctl_display(node, &["links"]);
        let stdout = self.ctl_ok(node, &["links"])?;
        parse_links(&stdout).ok_or(RehearsalError::Parse {
            command: display,
            output: stdout,
        })
    }

    /// [`Self::links`] of every node, queried in parallel.
    pub fn links_all(&self) -> Vec<Result<NodeLinks, RehearsalError>> {
        thread::scope(|s| {
            let handles: Vec<_> = (0..self.nodes.len())
                .map(|i| s.spawn(move || self.links(i)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("links thread panicked"))
                .collect()
        })
    }

    /// Waits until every node has every other node as an `up` peer, whatever the protocol.
    pub fn wait_meshed(&self, deadline: Duration) -> Result<(), RehearsalError> {
        poll_until(
            "the rehearsal cluster to be fully meshed",
            deadline,
            &mut || {
                let problems: Vec<String> = self
                    .links_all()
                    .into_iter()
                    .zip(&self.nodes)
                    .filter_map(|(links, node)| match links {
                        Err(err) => Some(format!("{}: {err}", node.name)),
                        Ok(links) => {
                            let missing: Vec<&str> = self
                                .nodes
                                .iter()
                                .filter(|n| {
                                    n.name != node.name && !links.peers.contains_key(&n.name)
                                })
                                .map(|n| n.name.as_str())
                                .collect();
                            (!missing.is_empty())
                                .then(|| format!("{} misses {}", node.name, missing.join(", ")))
                        }
                    })
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            },
        )
    }

    /// Polls `cond` every ~100 ms until it holds, or fails with [`RehearsalError::Timeout`]
    /// once `deadline` has passed. `cond` is always tried at least once.
    pub fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), RehearsalError> {
        poll_until(what, deadline, &mut || {
            if cond() { Ok(()) } else { Err(String::new()) }
        })
    }

    /// The OS pid in `<root>/var/pid` of node `node`, if any.
    pub fn node_os_pid(&self, node: usize) -> Option<u32> {
        read_pid(&self.nodes.get(node)?.pid_file())
    }

    /// Every pid node `node` ever recorded in `var/pids.log`.
    pub fn recorded_pids(&self, node: usize) -> Vec<u32> {
        self.nodes
            .get(node)
            .map(|n| read_pids_log(&n.pids_log()))
            .unwrap_or_default()
    }

    /// Naively enables TLS in node `node`'s vm.dist.args, the way a person would by hand: strips
    /// the leading `#` of every line of the commented-out TLS block (see [`uncomment_tls_block`]).
    /// For tests and demos only; distls itself edits the file properly.
    pub fn enable_tls_by_hand(&self, node: usize) -> Result<(), RehearsalError> {
        let path = self.node(node)?.vm_dist_args();
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        fs::write(&path, uncomment_tls_block(&text)).map_err(io_err("write", &path))
    }

    /// Kills (SIGKILL) every server VM of the cluster by pid: the pids in `var/pid` and
    /// `var/pids.log`, plus, as a safety net for a VM killed before it recorded itself, any process
    /// whose argv carries `-rehearsal_root <node root>`. A pid is only signalled after its
    /// `/proc/<pid>/cmdline` shows it is that node's VM (pids get reused). Waits for them to be
    /// gone (exited or zombie), then kills and reaps the epmd children. Idempotent; also run on drop.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let mut victims: Vec<(u32, PathBuf)> = Vec::new();
        for node in &self.nodes {
            let mut pids = read_pids_log(&node.pids_log());
            pids.extend(read_pid(&node.pid_file()));
            pids.extend(pids_with_root_marker(&node.root));
            pids.sort_unstable();
            pids.dedup();
            victims.extend(pids.into_iter().map(|p| (p, node.root.clone())));
        }
        victims.retain(|(pid, root)| is_node_vm(*pid, root));
        for (pid, _) in &victims {
            // SAFETY: plain syscall on a pid checked above to be this cluster's VM.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = poll_until("rehearsal nodes to die", KILL_DEADLINE, &mut || {
            let alive: Vec<String> = victims
                .iter()
                .filter(|(pid, root)| is_node_vm(*pid, root) && !is_zombie(*pid))
                .map(|(pid, _)| pid.to_string())
                .collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(alive.join(" "))
            }
        });
        for mut epmd in self.epmds.drain(..) {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }

    /// Starts every node at once (`ctl start` in parallel) and checks every ctl exited 0.
    fn start_all(&self) -> Result<(), RehearsalError> {
        let children = (0..self.nodes.len())
            .map(|i| {
                let display = self.ctl_display(i, &["start"]);
                let child = self
                    .ctl_command(i, &["start"])?
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|source| RehearsalError::Spawn {
                        command: display.clone(),
                        source,
                    })?;
                Ok((display, child))
            })
            .collect::<Result<Vec<_>, RehearsalError>>()?;
        let mut first_err = None;
        for (display, child) in children {
            let result = child
                .wait_with_output()
                .map_err(|source| RehearsalError::Spawn {
                    command: display.clone(),
                    source,
                })
                .and_then(|out| check_output(display, out));
            if let Err(err) = result {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for RehearsalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn poll_until(
    what: &str,
    deadline: Duration,
    check: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), RehearsalError> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(RehearsalError::Timeout {
                what: what.to_owned(),
                after: deadline,
                last: (!last.is_empty()).then_some(last),
            });
        }
        thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
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

fn run(cmd: &mut Command, display: &str) -> Result<Output, RehearsalError> {
    cmd.output().map_err(|source| RehearsalError::Spawn {
        command: display.to_owned(),
        source,
    })
}

fn check_output(command: String, output: Output) -> Result<String, RehearsalError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(RehearsalError::Command {
            command,
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Parses `ctl links`: `distribution protocol: P` then `<peer> <tcp|tls>` lines.
fn parse_links(stdout: &str) -> Option<NodeLinks> {
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let proto_dist = lines
        .next()?
        .strip_prefix("distribution protocol: ")?
        .trim()
        .to_owned();
    let mut peers = BTreeMap::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let (Some(peer), Some(transport), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        if !peer.contains('@') {
            return None;
        }
        peers.insert(peer.to_owned(), transport.to_owned());
    }
    Some(NodeLinks { proto_dist, peers })
}

/// Strips the leading `#` from every line of the commented-out TLS block: from `#-proto_dist` to
/// the next blank line, leaving `##` comments alone. What a person does by hand in an editor.
pub fn uncomment_tls_block(text: &str) -> String {
    let mut in_block = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("#-proto_dist") {
            in_block = true;
        } else if line.trim().is_empty() {
            in_block = false;
        }
        match line.strip_prefix('#') {
            Some(rest) if in_block && !rest.starts_with('#') => out.push_str(rest),
            _ => out.push_str(line),
        }
    }
    out
}

/// Double-quoted YAML scalar.
fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Layout

fn write_node_layout(
    node: &RehearsalNode,
    all: &[RehearsalNode],
    cookie: &str,
    tls: &TlsFiles,
    listen: Ipv4Addr,
) -> Result<(), RehearsalError> {
    for sub in ["etc", "bin", "var", "log"] {
        let d = node.root.join(sub);
        fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
    }
    write_file(
        &node.vm_args(),
        &vm_args_text(&node.name, cookie, listen),
        0o644,
    )?;
    write_file(&node.vm_dist_args(), &vm_dist_args_text(tls), 0o644)?;
    let peers: String = all
        .iter()
        .filter(|n| n.name != node.name)
        .map(|n| format!("{}\n", n.name))
        .collect();
    write_file(&node.root.join("etc/peers"), &peers, 0o644)?;
    write_file(&node.ctl_path(), CTL_SCRIPT, 0o755)?;
    // A fresh cluster: forget the pids of a previous cluster built in the same directory.
    let _ = fs::remove_file(node.pid_file());
    Ok(())
}

/// MongooseIM's `rel/files/vm.args`, plus a listen interface: loopback only (`-sname`), or the
/// host's own address (`-name`, the address is the host part of `name`).
fn vm_args_text(name: &str, cookie: &str, listen: Ipv4Addr) -> String {
    let (flag, scope) = if listen.is_loopback() {
        ("-sname", "loopback only".to_owned())
    } else {
        ("-name", format!("the host's address {listen} only"))
    };
    let [a, b, c, d] = listen.octets();
    format!(
        "{flag} {name}\n\
         -setcookie {cookie}\n\
         -env ERL_FULLSWEEP_AFTER 2\n\
         ## Rehearsal cluster: listen for distribution on {scope}.\n\
         -kernel inet_dist_use_interface {{{a},{b},{c},{d}}}\n"
    )
}

/// MongooseIM's `rel/files/vm.dist.args` with the TLS block commented out, pointing at `<dir>/ssl`.
fn vm_dist_args_text(tls: &TlsFiles) -> String {
    let cert = tls.certfile.display();
    let key = tls.keyfile.display();
    let ca = tls.cacertfile.display();
    format!(
        "## Define what port range the Erlang VM should\n\
         ## listen on for Distributed Erlang connectivity,\n\
         ## aka communication within an Erlang cluster.\n\
         ## By default a random port in the ephemeral port range is used.\n\
         ## If you want to open specific ports on your firewall,\n\
         ## you have to explicitly set (uncomment) these ports here, too.\n\
         #-kernel inet_dist_listen_min 30000\n\
         #-kernel inet_dist_listen_max 30100\n\
         \n\
         ## Use TLS for connections between Erlang cluster members.\n\
         #-proto_dist inet_tls\n\
         #-ssl_dist_opt server_certfile   {cert} client_certfile   {cert}\n\
         #              server_keyfile    {key}  client_keyfile    {key}\n\
         #              server_cacertfile {ca}    client_cacertfile {ca}\n\
         #              client_verify     verify_peer\n\
         #              server_verify     verify_peer\n\
         #              server_fail_if_no_peer_cert true\n"
    )
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), RehearsalError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("write", path))?;
    // `mode` only applies to a newly created file.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err("write", path))
}

fn random_cookie() -> Result<String, RehearsalError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("read", path))?;
    Ok(hex::encode_upper(bytes))
}

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn make_ca(common_name: &str) -> Result<Ca, RehearsalError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "distls rehearsal");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, -1..364);
    let key = KeyPair::generate()?;
    let pem = params.self_signed(&key)?.pem();
    Ok(Ca { params, key, pem })
}

/// A node certificate for `localhost` / 127.0.0.1 and the addresses `host_ips` (each both as an IP
/// SAN and as a DNS SAN spelled as the address: OTP's TLS distribution client checks the host part
/// of a `-name n@10.0.0.5` node as a DNS name), usable as TLS server and client, valid from
/// yesterday for a year; returns (certificate PEM, key PEM).
fn make_node_cert(
    ca: &Ca,
    common_name: &str,
    host_ips: &[String],
) -> Result<(String, String), RehearsalError> {
    let dns_ips: Vec<String> = host_ips.iter().map(|ip| format!("DNS:{ip}")).collect();
    let mut sans = vec!["localhost", "127.0.0.1"];
    sans.extend(host_ips.iter().chain(&dns_ips).map(String::as_str));
    make_leaf_cert(ca, common_name, &sans, -1..364)
}

/// A certificate for `sans` valid over `valid_days`, in days from now. A SAN that parses as an IP
/// address is an IP SAN, anything else a DNS name; `DNS:<text>` forces a DNS name (e.g.
/// `DNS:10.0.0.5`, which is what OTP's TLS distribution checks for a node named `n@10.0.0.5`).
fn make_leaf_cert(
    ca: &Ca,
    common_name: &str,
    sans: &[&str],
    valid_days: Range<i64>,
) -> Result<(String, String), RehearsalError> {
    let (forced_dns, auto): (Vec<&str>, Vec<&str>) =
        sans.iter().partition(|san| san.starts_with("DNS:"));
    let mut params =
        CertificateParams::new(auto.iter().map(|san| (*san).to_owned()).collect::<Vec<_>>())?;
    for san in forced_dns {
        let name = san.trim_start_matches("DNS:").to_owned();
        params
            .subject_alt_names
            .push(SanType::DnsName(name.try_into()?));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // ECDSA key: signing only (keyEncipherment is for RSA key transport).
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, valid_days);
    let key = KeyPair::generate()?;
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid over `valid_days`, counted in days from now.
fn set_validity(params: &mut CertificateParams, valid_days: Range<i64>) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let at = |days: i64| {
        let offset = Duration::from_secs(days.unsigned_abs() * 24 * 3600);
        if days < 0 { now - offset } else { now + offset }
    };
    params.not_before = at(valid_days.start);
    params.not_after = at(valid_days.end);
}

fn write_tls_files(
    dir: &Path,
    names: [&str; 3],
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<TlsFiles, RehearsalError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let files = TlsFiles {
        cacertfile: dir.join(names[0]),
        certfile: dir.join(names[1]),
        keyfile: dir.join(names[2]),
    };
    write_file(&files.cacertfile, ca_pem, 0o644)?;
    write_file(&files.certfile, cert_pem, 0o644)?;
    write_file(&files.keyfile, key_pem, 0o600)?;
    Ok(files)
}

/// The cluster's CA and node certificate (also for `host_ips`): `<ssl_dir>/{cacert,node_cert,node_key}.pem`.
fn write_cluster_certs(ssl_dir: &Path, host_ips: &[String]) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal CA")?;
    let (cert, key) = make_node_cert(&ca, "distls rehearsal node", host_ips)?;
    write_tls_files(
        ssl_dir,
        ["cacert.pem", "node_cert.pem", "node_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A fresh CA and a certificate for `sans` (see `make_leaf_cert`: `DNS:` forces a DNS name) valid over `valid_days` (in days from now, e.g. `-400..-1`
/// for an expired one), written as `<dir>/{cacert,cert,key}.pem`: certificates with a chosen defect.
pub fn write_custom_cert(
    dir: &Path,
    sans: &[&str],
    valid_days: Range<i64>,
) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal custom CA")?;
    let (cert, key) = make_leaf_cert(&ca, "distls rehearsal custom node", sans, valid_days)?;
    write_tls_files(
        dir,
        ["cacert.pem", "cert.pem", "key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A certificate for `localhost` signed by a DIFFERENT, freshly made CA, written as
/// `<dir>/foreign_{cacert,cert,key}.pem`. A node that presents it is rejected by peers that trust
/// the cluster's CA.
pub fn write_foreign_ca_cert(dir: &Path) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal FOREIGN CA")?;
    let (cert, key) = make_node_cert(&ca, "distls rehearsal foreign node", &[])?;
    write_tls_files(
        dir,
        ["foreign_cacert.pem", "foreign_cert.pem", "foreign_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A CA and one node certificate for `host` (plus localhost and 127.0.0.1), written as
/// `<dir>/{cacert,node_cert,node_key}.pem`: the TLS files of a real-product test cluster whose
/// nodes are named `...@host`.
pub fn write_host_certs(dir: &Path, host: &str) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls product test CA")?;
    let (cert, key) = make_leaf_cert(&ca, host, &[host, "localhost", "127.0.0.1"], -1..364)?;
    write_tls_files(
        dir,
        ["cacert.pem", "node_cert.pem", "node_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A private epmd (`epmd -port P -address 127.0.0.1`, foreground) on a free loopback port, its
/// output in `<dir>/log/epmd.log`. The caller stops it by its pid (kill + wait on the child).
pub fn start_private_epmd(dir: &Path) -> Result<(Child, u16), RehearsalError> {
    start_private_epmd_under(dir, &[])
}

/// [`start_private_epmd`] started as `prefix... epmd ...` (see [`NodeHost::exec_prefix`]).
pub fn start_private_epmd_under(
    dir: &Path,
    prefix: &[String],
) -> Result<(Child, u16), RehearsalError> {
    start_epmd(dir, "epmd.log", prefix, Ipv4Addr::LOCALHOST, None)
}

// ---------------------------------------------------------------------------------------------
// epmd

/// Starts `epmd -port P -address <address>` in the foreground (under `prefix`, see
/// [`NodeHost::exec_prefix`]) and waits until `epmd -port P -names` (under the same prefix)
/// answers. `port`: that port, or a free loopback port, retried with another one if it got taken.
fn start_epmd(
    dir: &Path,
    log_name: &str,
    prefix: &[String],
    address: Ipv4Addr,
    port: Option<u16>,
) -> Result<(Child, u16), RehearsalError> {
    let log_dir = dir.join("log");
    fs::create_dir_all(&log_dir).map_err(io_err("create directory", &log_dir))?;
    let log_path = log_dir.join(log_name);
    let mut last_err = None;
    let attempts = if port.is_some() { 1 } else { 5 };
    for _ in 0..attempts {
        let port = match port {
            Some(port) => port,
            None => free_loopback_port()
                .map_err(io_err("find a free port on", Path::new("127.0.0.1")))?,
        };
        let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
        let log2 = log.try_clone().map_err(io_err("open", &log_path))?;
        let command = format!(
            "{}epmd -port {port} -address {address}",
            prefix_display(prefix)
        );
        let mut child = prefixed_command(prefix, "epmd".as_ref())
            .args(["-port", &port.to_string(), "-address", &address.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env_remove("ERL_EPMD_PORT")
            .spawn()
            .map_err(|source| RehearsalError::Spawn { command, source })?;
        match wait_epmd(&mut child, port, prefix) {
            Ok(()) => return Ok((child, port)),
            Err(detail) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                last_err = Some(RehearsalError::Epmd {
                    address: address.to_string(),
                    port,
                    detail: format!("{detail}{}", show_output("", &log)),
                });
            }
        }
    }
    Err(last_err.expect("at least one attempt"))
}

fn prefix_display(prefix: &[String]) -> String {
    prefix.iter().map(|p| format!("{p} ")).collect()
}

fn wait_epmd(child: &mut Child, port: u16, prefix: &[String]) -> Result<(), String> {
    let mut exited = None;
    let result = poll_until("epmd", EPMD_DEADLINE, &mut || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return Ok(());
        }
        let names = prefixed_command(prefix, "epmd".as_ref())
            .args(["-port", &port.to_string(), "-names"])
            .stdin(Stdio::null())
            .env_remove("ERL_EPMD_PORT")
            .output();
        match names {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Err(err) => Err(err.to_string()),
        }
    });
    if let Some(status) = exited {
        return Err(format!("epmd exited ({status})"));
    }
    result.map_err(|e| e.to_string())?;
    // `-names` may have reached someone else's epmd if ours failed to bind the port.
    match child.try_wait() {
        Ok(Some(status)) => Err(format!("epmd exited ({status})")),
        _ => Ok(()),
    }
}

fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The pid written in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pids_log(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn proc_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Is `pid` a live (or zombie-to-be) server VM of the node rooted at `root`?
fn is_node_vm(pid: u32, root: &Path) -> bool {
    let Some(root) = root.to_str() else {
        return false;
    };
    proc_cmdline(pid)
        .is_some_and(|args| args.windows(2).any(|w| w[0] == ROOT_MARKER && w[1] == root))
}

/// Gone, or a zombie: the process no longer runs (also for a pid that does not exist).
pub fn is_zombie(pid: u32) -> bool {
    proc_state(pid).is_none_or(|s| s == 'Z' || s == 'X')
}

/// The state letter in `/proc/<pid>/stat` (after the parenthesised command name).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn pids_with_root_marker(root: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_node_vm(*pid, root))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn peer_names(links: &NodeLinks) -> Vec<&str> {
        links.peers.keys().map(String::as_str).collect()
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

    #[test]
    fn layout_files_follow_mongooseim() {
        let tls = TlsFiles {
            certfile: "/r/ssl/node_cert.pem".into(),
            keyfile: "/r/ssl/node_key.pem".into(),
            cacertfile: "/r/ssl/cacert.pem".into(),
        };
        let vm_args = vm_args_text("mim1@localhost", "C00K1E", Ipv4Addr::LOCALHOST);
        assert!(vm_args.lines().any(|l| l == "-sname mim1@localhost"));
        assert!(vm_args.lines().any(|l| l == "-setcookie C00K1E"));
        assert!(vm_args.contains("-env ERL_FULLSWEEP_AFTER 2\n"));
        assert!(vm_args.contains("-kernel inet_dist_use_interface {127,0,0,1}\n"));
        assert!(!vm_args.contains("proto_dist"));
        let long = vm_args_text("mim2@10.213.7.2", "C00K1E", Ipv4Addr::new(10, 213, 7, 2));
        assert!(long.lines().any(|l| l == "-name mim2@10.213.7.2"), "{long}");
        assert!(long.contains("-kernel inet_dist_use_interface {10,213,7,2}\n"));
        assert!(!long.contains("-sname"));

        let dist = vm_dist_args_text(&tls);
        assert!(
            dist.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "all commented:\n{dist}"
        );
        assert!(dist.contains("#-ssl_dist_opt server_certfile   /r/ssl/node_cert.pem client_certfile   /r/ssl/node_cert.pem\n"));
        assert!(dist.contains("#              server_cacertfile /r/ssl/cacert.pem    client_cacertfile /r/ssl/cacert.pem\n"));

        let tls_on = uncomment_tls_block(&dist);
        let active: Vec<&str> = tls_on
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(active.len(), 7, "{tls_on}");
        assert_eq!(active[0], "-proto_dist inet_tls");
        assert_eq!(active[6], "              server_fail_if_no_peer_cert true");
        assert!(
            tls_on.contains("#-kernel inet_dist_listen_min 30000\n"),
            "port range stays commented"
        );
        assert!(tls_on.contains("## Use TLS for connections between Erlang cluster members.\n"));
        assert_eq!(uncomment_tls_block(&tls_on), tls_on);
    }

    #[test]
    fn links_output_is_parsed_strictly() {
        let links =
            parse_links("distribution protocol: inet_tls\nb@localhost tls\na@localhost tcp\n")
                .unwrap();
        assert_eq!(links.proto_dist, "inet_tls");
        assert_eq!(peer_names(&links), ["a@localhost", "b@localhost"]);
        assert_eq!(links.peers["b@localhost"], "tls");
        assert_eq!(
            parse_links("distribution protocol: inet_tcp\n")
                .unwrap()
                .peers
                .len(),
            0
        );
        assert!(parse_links("").is_none());
        assert!(parse_links("pong\n").is_none());
        assert!(parse_links("distribution protocol: inet_tcp\n=NOTICE REPORT==== x\n").is_none());
    }

    #[test]
    fn spec_validation_rejects_unusable_names_and_paths() {
        let spec = |prefix: &str, nodes: usize| ClusterSpec {
            name_prefix: prefix.into(),
            ..ClusterSpec::new("/tmp/x", nodes)
        };
        assert!(spec("mim", 3).validate().is_ok());
        assert!(spec("t3a", 1).validate().is_ok());
        assert!(spec("mim", 0).validate().is_err());
        assert!(spec("Mim", 3).validate().is_err());
        assert!(spec("m-1", 3).validate().is_err());
        let host = |k: u8| NodeHost {
            ip: Ipv4Addr::new(10, 213, 7, k),
            exec_prefix: vec!["ip".into(), "netns".into(), "exec".into(), format!("ns{k}")],
        };
        let hosted = |n: u8| ClusterSpec {
            hosts: (1..=n).map(host).collect(),
            ..ClusterSpec::new("/tmp/x", 3)
        };
        assert!(hosted(3).validate().is_ok());
        assert!(hosted(2).validate().is_err(), "one host per node");
        let cmd = prefixed_command(&host(1).exec_prefix, "epmd".as_ref());
        assert_eq!(cmd.get_program(), "ip");
        assert_eq!(
            cmd.get_args().collect::<Vec<_>>(),
            ["netns", "exec", "ns1", "epmd"]
        );
        assert_eq!(prefixed_command(&[], "epmd".as_ref()).get_program(), "epmd");
        let named = |name: &str| ClusterSpec {
            cluster_name: name.into(),
            ..ClusterSpec::new("/tmp/x", 3)
        };
        assert!(named("test-rha.1_x").validate().is_ok());
        assert!(named("").validate().is_err());
        assert!(named("two words").validate().is_err());
        for bad in [
            "/tmp/a b",
            "/tmp/a#b",
            "/tmp/a\"b",
            "/tmp/a\\b",
            "/tmp/$HOME",
        ] {
            let err = ClusterSpec::new(bad, 3).validate().unwrap_err();
            assert!(matches!(err, RehearsalError::Spec(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn wait_until_times_out_with_what_and_last_observation() {
        let mut calls = 0;
        let err = poll_until("the moon", Duration::from_millis(250), &mut || {
            calls += 1;
            Err(format!("try {calls}"))
        })
        .unwrap_err();
        assert!(calls >= 2, "{calls}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("timed out after 250ms waiting for the moon (last seen: try "),
            "{msg}"
        );
        assert!(poll_until("now", Duration::ZERO, &mut || Ok(())).is_ok());
    }

    #[test]
    fn command_errors_show_stderr() {
        let err = check_output(
            "ctl stop".into(),
            Output {
                status: ExitStatus::from_raw(1 << 8),
                stdout: b"Node x@localhost not responding to pings.\n".to_vec(),
                stderr: b"boom\n".to_vec(),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ctl stop` failed (exit status: 1)\nstderr: boom\nstdout: Node x@localhost not responding to pings."
        );
    }

    #[test]
    fn plan_lists_every_node_with_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fs::canonicalize(tmp.path()).unwrap();
        let tls = write_cluster_certs(&dir.join("ssl"), &[]).unwrap();
        let mut cluster = RehearsalCluster {
            nodes: (1..=3)
                .map(|k| RehearsalNode {
                    name: format!("mim{k}@localhost"),
                    sname: format!("mim{k}"),
                    root: dir.join(format!("mim{k}")),
                })
                .collect(),
            dir: dir.clone(),
            cluster_name: "demo".into(),
            cookie: "X".into(),
            tls,
            hosts: Vec::new(),
            mnesia: false,
            epmds: Vec::new(),
            epmd_port: 1,
            shut_down: true,
            _tempdir: None,
        };
        let yaml = cluster.plan_yaml(|i| {
            if i == 2 {
                "    commands:\n      start: /bin/false".into()
            } else {
                String::new()
            }
        });
        let d = dir.display();
        let expected = format!(
            "version: 1\n\
             cluster: \"demo\"\n\
             tls:\n  certfile: \"{d}/ssl/node_cert.pem\"\n  keyfile: \"{d}/ssl/node_key.pem\"\n  cacertfile: \"{d}/ssl/cacert.pem\"\n\
             defaults:\n  transport: local\n\
             \x20 vm_dist_args: \"{d}/{{sname}}/etc/vm.dist.args\"\n\
             \x20 vm_args: \"{d}/{{sname}}/etc/vm.args\"\n\
             \x20 commands:\n\
             \x20   stop: \"{d}/{{sname}}/bin/ctl stop\"\n\
             \x20   start: \"{d}/{{sname}}/bin/ctl start\"\n\
             \x20   ping: \"{d}/{{sname}}/bin/ctl ping\"\n\
             nodes:\n  - name: \"mim1@localhost\"\n  - name: \"mim2@localhost\"\n  - name: \"mim3@localhost\"\n\
             \x20   commands:\n      start: /bin/false\n"
        );
        assert_eq!(yaml, expected);
        assert_eq!(yaml_str("a\"b\\c"), r#""a\"b\\c""#);
        cluster.mnesia = true;
        let with_ready = cluster.plan_yaml(|_| String::new());
        assert!(
            with_ready.contains(&format!(
                "    ping: \"{d}/{{sname}}/bin/ctl ping\"\n    ready: \"{d}/{{sname}}/bin/ctl started\"\nnodes:\n"
            )),
            "{with_ready}"
        );
        let key_mode = fs::metadata(&cluster.tls.keyfile)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }
}
