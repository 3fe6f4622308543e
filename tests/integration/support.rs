//! Shared test plumbing: a rehearsal cluster per test and a way to run the binary against it.

use distls::rehearsal::{ClusterSpec, RehearsalCluster};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestCluster {
    pub cluster: RehearsalCluster,
    _dir: tempfile::TempDir,
}

/// A fresh cluster of `n` plain-TCP nodes, named with `prefix` so tests can run side by side.
pub fn cluster(prefix: &str, n: usize) -> TestCluster {
    cluster_with(prefix, n, |_| {})
}

/// [`cluster`] with a spec changed by `customize` first (e.g. one host per node).
pub fn cluster_with(
    prefix: &str,
    n: usize,
    customize: impl FnOnce(&mut ClusterSpec),
) -> TestCluster {
    let dir = tempfile::Builder::new()
        .prefix(&format!("distls-{prefix}-"))
        .tempdir()
        .unwrap();
    let mut spec = ClusterSpec::new(dir.path(), n);
    spec.name_prefix = prefix.to_string();
    spec.cluster_name = format!("test-{prefix}");
    customize(&mut spec);
    let cluster = RehearsalCluster::create(&spec).expect("rehearsal cluster comes up");
    TestCluster { cluster, _dir: dir }
}

impl TestCluster {
    pub fn plan(&self) -> PathBuf {
        self.cluster.plan_path()
    }

    /// Where a VM distls starts locally writes its crash dump (inside the test's temp directory;
    /// a dump holds the cookie).
    pub fn crash_dump_path(&self) -> PathBuf {
        self.cluster.dir().join("erl_crash.dump")
    }

    /// Run distls with this cluster's epmd.
    pub fn distls(&self, args: &[&str]) -> Output {
        self.distls_env(args, &[])
    }

    pub fn distls_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distls"));
        cmd.args(args)
            .envs(self.cluster.env())
            .env("ERL_CRASH_DUMP", self.crash_dump_path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("distls runs")
    }

    /// Run distls on a terminal (a pty from `script`), typing `input`; its terminal output
    /// (stdout and stderr together) is the `stdout` of the result.
    pub fn distls_on_terminal(&self, args: &[&str], input: &str) -> Output {
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_distls"))
            .chain(args.iter().copied())
            .map(quote)
            .collect();
        let mut child = Command::new("script")
            .args(["-qec", &line.join(" "), "/dev/null"])
            .envs(self.cluster.env())
            .env("ERL_CRASH_DUMP", self.crash_dump_path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("script finishes")
    }

    /// Start distls in the background (stdout and stderr captured).
    pub fn spawn_distls(&self, args: &[&str]) -> DistlsRun {
        self.spawn_distls_env(args, &[])
    }

    pub fn spawn_distls_env(&self, args: &[&str], env: &[(&str, &str)]) -> DistlsRun {
        let child = Command::new(env!("CARGO_BIN_EXE_distls"))
            .args(args)
            .envs(self.cluster.env())
            .env("ERL_CRASH_DUMP", self.crash_dump_path())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("distls starts");
        DistlsRun(Some(child))
    }

    /// Wait until the journal shows node `index` past `pending`.
    pub fn wait_until_node_touched(&self, index: usize) {
        let name = self.node_names()[index].clone();
        self.wait_for_step(&name, "being switched", |step| step != "pending");
    }

    /// Wait (up to 120 s) until the journal's step of node `name` satisfies `wanted`.
    pub fn wait_for_step(&self, name: &str, what: &str, wanted: impl Fn(&str) -> bool) {
        let plan = self.plan();
        self.cluster
            .wait_until(
                &format!("{name} {what}"),
                std::time::Duration::from_secs(120),
                || {
                    journal_if_any(&plan).is_some_and(|j| {
                        j["nodes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["name"] == name && n["step"].as_str().is_some_and(&wanted))
                    })
                },
            )
            .unwrap();
    }

    /// A plan command for node `index` that runs its ctl `verb`, except when its vm.dist.args
    /// enables TLS: then it prints `message` and fails. Escaped for a double-quoted YAML string.
    pub fn fails_with_tls(&self, index: usize, verb: &str, message: &str) -> String {
        let command = format!(
            "if grep -q '^-proto_dist inet_tls' {args}; then echo '{message}' >&2; exit 1; fi; exec {ctl} {verb}",
            args = self.dist_args_path(index).display(),
            ctl = self.cluster.nodes()[index].root.join("bin/ctl").display()
        );
        command.replace('\\', "\\\\").replace('"', "\\\"")
    }

    /// Every node's vm.dist.args as it is now.
    pub fn dist_args_files(&self) -> Vec<Vec<u8>> {
        (0..self.node_names().len())
            .map(|i| std::fs::read(self.dist_args_path(i)).unwrap())
            .collect()
    }

    pub fn assert_files_are(&self, originals: &[Vec<u8>]) {
        for (node, original) in originals.iter().enumerate() {
            assert_eq!(
                &std::fs::read(self.dist_args_path(node)).unwrap(),
                original,
                "node {node}: vm.dist.args byte-identical to its original"
            );
        }
    }

    /// Every node's backup (`vm.dist.args.distls-orig`) holds its original.
    pub fn assert_backups_are(&self, originals: &[Vec<u8>]) {
        for (node, original) in originals.iter().enumerate() {
            let backup = format!("{}.distls-orig", self.dist_args_path(node).display());
            assert_eq!(
                &std::fs::read(backup).unwrap(),
                original,
                "backup of node {node} intact"
            );
        }
    }

    pub fn dist_args_path(&self, node: usize) -> PathBuf {
        self.cluster.nodes()[node].root.join("etc/vm.dist.args")
    }

    pub fn node_names(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every node runs `proto` and sees every other node over `transport`, as its own ctl reports.
    pub fn assert_mesh(&self, proto: &str, transport: &str) {
        let names = self.node_names();
        for (index, name) in names.iter().enumerate() {
            let links = self
                .cluster
                .links(index)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(links.proto_dist, proto, "{name} runs {}", links.proto_dist);
            for other in names.iter().filter(|o| *o != name) {
                assert_eq!(
                    links.peers.get(other).map(String::as_str),
                    Some(transport),
                    "{name} should see {other} over {transport}; it sees {:?}",
                    links.peers
                );
            }
        }
    }

    /// The plain mesh may need a moment to re-form after a rollback's last restart.
    pub fn wait_for_mesh(&self, proto: &str, transport: &str) {
        let names = self.node_names();
        self.cluster
            .wait_until("full mesh", std::time::Duration::from_secs(60), || {
                (0..names.len()).all(|i| {
                    self.cluster.links(i).is_ok_and(|l| {
                        l.proto_dist == proto
                            && names
                                .iter()
                                .filter(|o| **o != names[i])
                                .all(|o| l.peers.get(o).map(String::as_str) == Some(transport))
                    })
                })
            })
            .expect("mesh forms");
        self.assert_mesh(proto, transport);
    }

    /// sha256 of every file under the cluster directory (logs and pid files excluded).
    pub fn file_hashes(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        hash_tree(self.cluster.dir(), &mut out);
        out
    }
}

fn hash_tree(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            if path.file_name().is_some_and(|n| n == "var" || n == "log") {
                continue;
            }
            hash_tree(&path, out);
        } else if file_type.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(path, hex::encode(Sha256::digest(bytes)));
        }
    }
}

/// A `flavor: relx` plan for the rehearsal cluster standing in for a relx release: the server
/// reads vm.args, and the control commands get only what relx's `extended_bin` forwards from
/// vm.args (`^-proto_dist` lines) plus the documented `ERL_FLAGS="-ssl_dist_optfile F"`.
pub fn write_relx_plan(t: &TestCluster, cluster: &str, plan: &Path) {
    let tls = t.cluster.tls_files();
    let mut yaml = format!(
        "version: 1\ncluster: {cluster}\nflavor: relx\ntls:\n  certfile: {}\n  keyfile: {}\n  cacertfile: {}\ndefaults:\n  env: {{ ERL_EPMD_PORT: \"{}\" }}\nnodes:\n",
        tls.certfile.display(),
        tls.keyfile.display(),
        tls.cacertfile.display(),
        t.cluster.epmd_port()
    );
    for node in t.cluster.nodes() {
        let optfile = node.root.join("etc/distls-ssl_dist.conf");
        // What relx's control VMs get: DIST_ARGS from vm.args, plus ERL_FLAGS.
        let relx_ctl = |command: &str| {
            format!(
                "ERL_FLAGS=\"$(grep -E '^-proto_dist' {vm_args}) -ssl_dist_optfile {optfile}\" exec {ctl} {command}",
                vm_args = node.vm_args().display(),
                optfile = optfile.display(),
                ctl = node.ctl_path().display()
            )
        };
        let quote = |s: String| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        yaml.push_str(&format!(
            "  - name: {}\n    vm_args: {}\n    commands:\n      start: {} start\n      stop: {}\n      ping: {}\n",
            node.name,
            node.vm_args().display(),
            node.ctl_path().display(),
            quote(relx_ctl("stop")),
            quote(relx_ctl("ping"))
        ));
    }
    std::fs::write(plan, yaml).unwrap();
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

pub fn journal(plan: &Path) -> serde_json::Value {
    journal_if_any(plan).expect("a journal exists")
}

/// `plan discover`'s plan has every node as the hand-written plan has it, in the values both
/// always share (the callers compare the rest that applies to them); `yaml`: the discovered text.
pub fn assert_discovered_like_written(
    found: &distls::plan::Plan,
    written: &distls::plan::Plan,
    yaml: &str,
) {
    assert_eq!(found.nodes.len(), written.nodes.len(), "{yaml}");
    for (found, written) in found.nodes.iter().zip(&written.nodes) {
        assert_eq!(found.name, written.name, "{yaml}");
        assert_eq!(found.flavor, written.flavor, "{yaml}");
        assert_eq!(found.transport, written.transport, "{yaml}");
        assert_eq!(found.become_command, written.become_command, "{yaml}");
        assert_eq!(found.vm_dist_args, written.vm_dist_args, "{yaml}");
        assert_eq!(found.commands, written.commands, "{yaml}");
        assert_eq!(found.tls, written.tls, "{yaml}");
    }
}

/// Where in the journal's events node `node` first recorded `what` (a step's label).
pub fn journal_position(journal: &serde_json::Value, node: &str, what: &str) -> usize {
    journal["events"]
        .as_array()
        .expect("the journal's events")
        .iter()
        .position(|e| e["node"] == node && e["what"] == what)
        .unwrap_or_else(|| panic!("{node} recorded no `{what}`: {journal}"))
}

/// Whether nodes `a` and `b` were down at the same time: each was stopping before the other
/// was starting (a batch), judged from the journal.
pub fn down_together(journal: &serde_json::Value, a: &str, b: &str) -> bool {
    let at = |node: &str, what: &str| journal_position(journal, node, what);
    at(a, "stopping") < at(b, "starting") && at(b, "stopping") < at(a, "starting")
}

/// The journal next to the plan, if one has been written (and is complete: writes are atomic).
pub fn journal_if_any(plan: &Path) -> Option<serde_json::Value> {
    let dir = plan.parent()?.join(".distls");
    let file = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".journal.json"))?;
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Processes whose argv runs `<root>/bin/ctl stop` (a stop command in progress), by pid.
/// Wait until the `ctl stop` of the node at `root` hangs under the running distls `run`; the
/// pids of the hung `ctl stop` processes. Panics, with distls's output, if distls ends first.
pub fn wait_for_hung_stop(
    cluster: &distls::rehearsal::RehearsalCluster,
    run: &mut std::process::Child,
    root: &std::path::Path,
) -> Vec<u32> {
    let mut hung = Vec::new();
    let mut exited = false;
    cluster
        .wait_until(
            "node 1's ctl stop to hang",
            std::time::Duration::from_secs(120),
            || {
                hung = ctl_stop_pids(root);
                exited = run.try_wait().unwrap().is_some();
                !hung.is_empty() || exited
            },
        )
        .unwrap();
    if exited {
        let stderr = run
            .stderr
            .take()
            .map(|mut pipe| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
                text
            })
            .unwrap_or_default();
        panic!("distls ended before the node's stop hung: {stderr}");
    }
    hung
}

/// A distls started in the background. A test that ends (or panics) before waiting for it
/// still stops it: SIGKILL by pid, then reaped.
pub struct DistlsRun(Option<std::process::Child>);

impl DistlsRun {
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0
            .take()
            .expect("not waited for yet")
            .wait_with_output()
    }
}

impl std::ops::Deref for DistlsRun {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("not waited for yet")
    }
}

impl std::ops::DerefMut for DistlsRun {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("not waited for yet")
    }
}

impl Drop for DistlsRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The live `bin/ctl … stop` processes of the node whose release root is `root`.
pub fn ctl_stop_pids(root: &std::path::Path) -> Vec<u32> {
    let ctl = root.join("bin/ctl").display().to_string();
    processes()
        .into_iter()
        .filter(|(_, _, argv)| {
            let words: Vec<&str> = argv.split_whitespace().collect();
            words.contains(&ctl.as_str()) && words.last() == Some(&"stop")
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

/// One live process, read from /proc: `(pid, parent pid, argv joined by spaces)`.
pub fn processes() -> Vec<(u32, u32, String)> {
    let mut table = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(raw)) = (
            std::fs::read_to_string(entry.path().join("stat")),
            std::fs::read(entry.path().join("cmdline")),
        ) else {
            continue;
        };
        // The command name in stat may hold spaces and parentheses: fields start after the last ')'.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            table.push((pid, ppid, String::from_utf8_lossy(&raw).replace('\0', " ")));
        }
    }
    table
}

/// `distls rotate FLAGS PLAN --to certfile=… --to keyfile=…` (and `--to cacertfile=…` when
/// `with_ca`) to the files of `set`.
pub fn rotate_args(
    flags: &[&str],
    plan: &str,
    set: &distls::rehearsal::TlsFiles,
    with_ca: bool,
) -> Vec<String> {
    let mut args = vec!["rotate".to_string()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.push(plan.to_string());
    let mut files = vec![("certfile", &set.certfile), ("keyfile", &set.keyfile)];
    if with_ca {
        files.push(("cacertfile", &set.cacertfile));
    }
    for (kind, path) in files {
        args.push("--to".to_string());
        args.push(format!("{kind}={}", path.display()));
    }
    args
}

/// `&[String]` as the `&[&str]` the runners take.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
