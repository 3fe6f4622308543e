//! Building and starting a cluster: layout, certificates, epmd, plan, then every node, meshed.
//! Any error on the way drops the half-built cluster, which shuts down what it started.

use super::certs::write_cluster_certs;
use super::ctl::check_output;
use super::epmd::{DEFAULT_EPMD_PORT, start_epmd};
use super::layout::{random_cookie, write_file, write_node_layout};
use super::spec::check_path_chars;
use super::{ClusterSpec, MESH_DEADLINE, RehearsalCluster, RehearsalError, RehearsalNode, io_err};

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

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
        let nodes = name_nodes(spec, &dir, &host_ips);
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
        cluster.start_epmds()?;
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

    /// The cluster's own epmd on a free loopback port or, with [`ClusterSpec::hosts`], one per
    /// host on [`DEFAULT_EPMD_PORT`]. Each is kept as soon as it runs, for shutdown to stop.
    fn start_epmds(&mut self) -> Result<(), RehearsalError> {
        if self.hosts.is_empty() {
            let (epmd, port) = start_epmd(&self.dir, "epmd.log", &[], Ipv4Addr::LOCALHOST, None)?;
            self.epmds.push(epmd);
            self.epmd_port = port;
        } else {
            for (i, host) in self.hosts.iter().enumerate() {
                let log = format!("epmd-{}.log", self.nodes[i].sname);
                let (epmd, _) = start_epmd(
                    &self.dir,
                    &log,
                    &host.exec_prefix,
                    host.ip,
                    Some(DEFAULT_EPMD_PORT),
                )?;
                self.epmds.push(epmd);
            }
        }
        Ok(())
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

/// Node `k` (from 1) is `<prefix>k@localhost`, or `<prefix>k@<ip>` on its own host; its root is
/// `<dir>/<prefix>k`.
fn name_nodes(spec: &ClusterSpec, dir: &Path, host_ips: &[String]) -> Vec<RehearsalNode> {
    (1..=spec.nodes)
        .map(|k| {
            let sname = format!("{}{k}", spec.name_prefix);
            let host = host_ips.get(k - 1).map_or("localhost", String::as_str);
            RehearsalNode {
                name: format!("{sname}@{host}"),
                root: dir.join(&sname),
                sname,
            }
        })
        .collect()
}
