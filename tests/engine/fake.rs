//! An in-memory cluster: each node's host (files, the node's commands) and the nodes'
//! distribution as the probes would see it. Deterministic and instant, so the engine can be
//! driven through every crash point in-process. What it models, and nothing more:
//! - a node boots what its flags file says: the file's bytes name a protocol (`boots`);
//! - two running nodes are linked when one can dial the other (plain TCP, TLS, the hybrid
//!   module's stages); the link is TLS or not as the dialing side's stage says;
//! - a probe speaks plain TCP or TLS and reaches only nodes that accept it.

use distls::host::{Host, HostFuture};
use distls::observe::{ObserveFuture, Observer, Via};
use distls::probe::{NodeInfo, PeerLink, ProbeError};
use distls::stage::{SEALED_SIGNATURE, Stage};
use distls::target::NodeTarget;
use distls::transport::{CommandOutcome, TransportError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happened to the nodes, in order (for the tests' assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started { node: usize, runs: String },
    Stopped { node: usize },
}

struct Vm {
    os_pid: u32,
    /// What the probe reports as its protocol (`Stage::signature`, or the sealed module).
    signature: String,
}

struct Node {
    name: String,
    flags_file: PathBuf,
    start: String,
    stop: String,
    /// Answered with success while the node runs (ping, ready).
    asks: Vec<String>,
    vm: Option<Vm>,
}

struct World {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    nodes: Vec<Node>,
    /// A flags file's bytes → the protocol a node boots with it.
    boots: Vec<(Vec<u8>, String)>,
    next_pid: u32,
    events: Vec<Event>,
    /// Each moment two running nodes were not linked (a split), as "a ↮ b after <event>".
    splits: Vec<String>,
    /// (node, protocol) a node cannot boot: its VM exits (a rejected certificate, say).
    refused: Vec<(usize, String)>,
}

pub struct FakeCluster {
    world: Mutex<World>,
}

impl FakeCluster {
    /// Every node's files as they are on disk now (the flags file, and whatever else `seed`
    /// names), every node running what its flags file boots.
    pub fn new(targets: &[NodeTarget], boots: Vec<(String, String)>) -> Arc<Self> {
        let mut world = World {
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            nodes: Vec::new(),
            boots: boots
                .into_iter()
                .map(|(text, runs)| (text.into_bytes(), runs))
                .collect(),
            next_pid: 1000,
            events: Vec::new(),
            splits: Vec::new(),
            refused: Vec::new(),
        };
        for target in targets {
            let bytes = std::fs::read(&target.dist_args).expect("flags file on disk");
            world.files.insert(target.dist_args.clone(), bytes);
            let commands = &target.spec.commands;
            world.nodes.push(Node {
                name: target.name().to_string(),
                flags_file: target.dist_args.clone(),
                start: commands.start.clone(),
                stop: commands.stop.clone(),
                asks: [
                    commands.ping.clone(),
                    commands.ready.clone(),
                    commands.before_stop.clone(),
                    commands.after_start.clone(),
                ]
                .into_iter()
                .flatten()
                .collect(),
                vm: None,
            });
        }
        for node in 0..world.nodes.len() {
            world.boot(node).expect("every node boots its flags file");
        }
        world.events.clear();
        world.splits.clear();
        Arc::new(FakeCluster {
            world: Mutex::new(world),
        })
    }

    /// Node `node` can no longer boot `runs` (a protocol): its VM exits at boot.
    pub fn refuse(&self, node: usize, runs: &str) {
        self.world().refused.push((node, runs.to_string()));
    }

    /// One host per node, in the order of the targets.
    pub fn hosts(self: &Arc<Self>) -> Vec<Arc<dyn Host>> {
        let count = self.world().nodes.len();
        (0..count)
            .map(|node| {
                Arc::new(FakeHost {
                    cluster: self.clone(),
                    node,
                }) as Arc<dyn Host>
            })
            .collect()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        self.world().files.get(path).cloned()
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        let world = self.world();
        world.files.keys().chain(&world.dirs).cloned().collect()
    }

    /// What node `node` runs (its protocol), if it runs.
    pub fn runs(&self, node: usize) -> Option<String> {
        self.world().nodes[node]
            .vm
            .as_ref()
            .map(|vm| vm.signature.clone())
    }

    pub fn os_pid(&self, node: usize) -> Option<u32> {
        self.world().nodes[node].vm.as_ref().map(|vm| vm.os_pid)
    }

    pub fn events(&self) -> Vec<Event> {
        self.world().events.clone()
    }

    /// Every moment two running nodes could not reach each other, since the cluster was made.
    pub fn splits(&self) -> Vec<String> {
        self.world().splits.clone()
    }

    fn index_of(&self, target: &NodeTarget) -> usize {
        self.world()
            .nodes
            .iter()
            .position(|n| n.name == target.name())
            .expect("a node of the fake cluster")
    }

    fn info(&self, node: usize, via: Option<Via>) -> NodeInfo {
        let world = self.world();
        let Some(vm) = &world.nodes[node].vm else {
            return NodeInfo::Down {
                reason: "not registered with epmd".into(),
                asked: None,
            };
        };
        let (plain, tls) = accepts(&vm.signature);
        if via.is_some_and(|via| {
            !matches!(via, Via::Plain if plain) && !matches!(via, Via::Tls if tls)
        }) {
            return NodeInfo::Unreachable {
                epmd_port: 4369,
                reason: "the probe speaks the other protocol".into(),
            };
        }
        let peers = (0..world.nodes.len())
            .filter(|&peer| peer != node)
            .filter_map(|peer| {
                world.link(node, peer).map(|tls| PeerLink {
                    node: world.nodes[peer].name.clone(),
                    up: true,
                    tls,
                    hidden: false,
                })
            })
            .collect();
        NodeInfo::Up {
            proto_dist: vm.signature.clone(),
            os_pid: vm.os_pid,
            peers,
        }
    }
}

impl World {
    fn boot(&mut self, node: usize) -> Result<(), &'static str> {
        let flags = self
            .files
            .get(&self.nodes[node].flags_file)
            .ok_or("its flags file is missing")?;
        let signature = self
            .boots
            .iter()
            .find(|(text, _)| text == flags)
            .map(|(_, runs)| runs.clone())
            .ok_or("its flags file is none the fake cluster knows: the VM exits at boot")?;
        if self.refused.contains(&(node, signature.clone())) {
            return Err("the VM exits at boot");
        }
        self.next_pid += 1;
        self.nodes[node].vm = Some(Vm {
            os_pid: self.next_pid,
            signature: signature.clone(),
        });
        self.events.push(Event::Started {
            node,
            runs: signature.clone(),
        });
        self.note_split(&format!(
            "{} started running {signature}",
            self.nodes[node].name
        ));
        Ok(())
    }

    /// Records a pair of running nodes that cannot reach each other now (after `what`).
    fn note_split(&mut self, what: &str) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].vm.is_some())
            .collect();
        for (i, &a) in running.iter().enumerate() {
            for &b in &running[i + 1..] {
                if self.link(a, b).is_none() {
                    let (x, y) = (&self.nodes[a].name, &self.nodes[b].name);
                    self.splits.push(format!("{x} ↮ {y} after {what}"));
                }
            }
        }
    }

    fn halt(&mut self, node: usize) {
        if self.nodes[node].vm.take().is_some() {
            self.events.push(Event::Stopped { node });
        }
    }

    /// The link between two running nodes, if either can dial the other: whether it is TLS.
    fn link(&self, a: usize, b: usize) -> Option<bool> {
        let (Some(x), Some(y)) = (&self.nodes[a].vm, &self.nodes[b].vm) else {
            return None;
        };
        let dial = |from: &str, to: &str| {
            let tls = dials_tls(from, to);
            let (plain_ok, tls_ok) = accepts(to);
            (if tls { tls_ok } else { plain_ok }).then_some(tls)
        };
        // The node first in the plan dials first.
        dial(&x.signature, &y.signature).or_else(|| dial(&y.signature, &x.signature))
    }

    fn run(&mut self, node: usize, command: &str) -> (i32, String) {
        let this = &self.nodes[node];
        if command == this.start {
            if this.vm.is_some() {
                return (1, "already running".into());
            }
            return match self.boot(node) {
                Ok(()) => (0, String::new()),
                Err(why) => (1, why.to_string()),
            };
        }
        if command == this.stop {
            if this.vm.is_none() {
                return (1, "not running".into());
            }
            self.halt(node);
            return (0, String::new());
        }
        // A quorum gate: at least this many nodes of the cluster run.
        if let Some(quorum) = command
            .strip_prefix("quorum ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let running = self.nodes.iter().filter(|n| n.vm.is_some()).count();
            return match running >= quorum {
                true => (0, String::new()),
                false => (1, format!("{running} of {quorum} nodes run")),
            };
        }
        if this.asks.iter().any(|a| a == command) {
            return match this.vm {
                Some(_) => (0, "pong".into()),
                None => (1, "pang".into()),
            };
        }
        if let Some(pid) = command
            .strip_prefix("kill -")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        {
            if this.vm.as_ref().is_some_and(|vm| vm.os_pid == pid) {
                self.halt(node);
                return (0, String::new());
            }
            return (1, "no such process".into());
        }
        (127, format!("fake host: no command `{command}`"))
    }
}

/// Whether a node running `signature` accepts plain TCP and TLS connections.
fn accepts(signature: &str) -> (bool, bool) {
    if signature == SEALED_SIGNATURE {
        return (false, true);
    }
    match Stage::of_signature(signature) {
        Some(Stage::Plain) => (true, false),
        Some(Stage::Tls) => (false, true),
        Some(_) => (true, true),
        None => (false, false),
    }
}

/// Whether a node running `from` dials a node running `to` over TLS.
fn dials_tls(from: &str, to: &str) -> bool {
    if from == SEALED_SIGNATURE {
        return true;
    }
    match Stage::of_signature(from) {
        Some(Stage::Plain | Stage::HybridTcp) | None => false,
        Some(Stage::Tls | Stage::HybridTls) => true,
        // TLS to the nodes that run the module (or stock TLS), plain TCP to the others.
        Some(Stage::Hybrid) => !accepts(to).0 || to == Stage::Hybrid.signature(),
    }
}

pub struct FakeHost {
    cluster: Arc<FakeCluster>,
    node: usize,
}

impl FakeHost {
    fn no_file(&self, path: &Path) -> TransportError {
        TransportError::File {
            host: self.describe(),
            path: path.to_path_buf(),
            detail: "No such file or directory".into(),
        }
    }
}

impl Host for FakeHost {
    fn describe(&self) -> String {
        format!("fake host {}", self.node)
    }

    fn command_context(&self) -> String {
        self.describe()
    }

    fn run<'a>(&'a self, command: &'a str, _timeout: Duration) -> HostFuture<'a, CommandOutcome> {
        let (status, said) = self.cluster.world().run(self.node, command);
        Box::pin(async move {
            Ok(CommandOutcome {
                status: Some(status),
                stdout: if status == 0 {
                    said.clone()
                } else {
                    String::new()
                },
                stderr: if status == 0 { String::new() } else { said },
                elapsed: Duration::ZERO,
            })
        })
    }

    fn run_for_bytes<'a>(
        &'a self,
        script: &'a str,
        _input: &'a [u8],
        _timeout: Duration,
    ) -> HostFuture<'a, Vec<u8>> {
        // The hybrid module's compile: a beam's magic, nothing to run.
        let out = if script.contains("compile:file") {
            Ok(b"FOR1 fake beam".to_vec())
        } else {
            Err(TransportError::Spawn {
                host: self.describe(),
                command: "script".into(),
                detail: "the fake host runs no scripts".into(),
            })
        };
        Box::pin(async move { out })
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, Vec<u8>> {
        let out = self.cluster.file(path).ok_or_else(|| self.no_file(path));
        Box::pin(async move { out })
    }

    fn try_exists<'a>(&'a self, path: &'a Path) -> HostFuture<'a, bool> {
        let world = self.cluster.world();
        let out = world.files.contains_key(path) || world.dirs.contains(path);
        Box::pin(async move { Ok(out) })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        _mode_if_new: u32,
    ) -> HostFuture<'a, ()> {
        self.cluster
            .world()
            .files
            .insert(path.to_path_buf(), bytes.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn write_file_owned_like<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        mode: u32,
        _like: &'a Path,
    ) -> HostFuture<'a, ()> {
        self.write_file(path, bytes, mode)
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()> {
        self.cluster.world().files.remove(path);
        Box::pin(async { Ok(()) })
    }

    fn make_dir<'a>(&'a self, path: &'a Path, _mode: u32) -> HostFuture<'a, bool> {
        let created = self.cluster.world().dirs.insert(path.to_path_buf());
        Box::pin(async move { Ok(created) })
    }

    fn remove_dir_if_empty<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()> {
        let mut world = self.cluster.world();
        if !world.files.keys().any(|f| f.starts_with(path)) {
            world.dirs.remove(path);
        }
        Box::pin(async { Ok(()) })
    }
}

impl Observer for FakeCluster {
    fn observe<'a>(
        &'a self,
        target: &'a NodeTarget,
    ) -> ObserveFuture<'a, distls::error::Result<NodeInfo>> {
        let info = self.info(self.index_of(target), None);
        Box::pin(async move { Ok(info) })
    }

    fn info<'a>(
        &'a self,
        target: &'a NodeTarget,
        via: Via,
    ) -> ObserveFuture<'a, Result<NodeInfo, ProbeError>> {
        let info = FakeCluster::info(self, self.index_of(target), Some(via));
        Box::pin(async move { Ok(info) })
    }

    fn connect<'a>(
        &'a self,
        _target: &'a NodeTarget,
        _via: Via,
        _peers: &'a [String],
    ) -> ObserveFuture<'a, Result<(), ProbeError>> {
        // Links form as soon as both ends run (see `World::link`).
        Box::pin(async { Ok(()) })
    }

    fn stop_node<'a>(
        &'a self,
        target: &'a NodeTarget,
        _via: Via,
        _halt: bool,
    ) -> ObserveFuture<'a, Result<(), ProbeError>> {
        let node = self.index_of(target);
        self.world().halt(node);
        Box::pin(async { Ok(()) })
    }

    fn hybrid<'a>(
        &'a self,
        target: &'a NodeTarget,
        _via: Via,
        op: &'a str,
        _peers: &'a [&'a str],
    ) -> ObserveFuture<'a, Result<bool, ProbeError>> {
        let node = self.index_of(target);
        let mut world = self.world();
        let out = match world.nodes[node].vm.as_mut() {
            Some(vm) if vm.signature.starts_with(distls::stage::PROTO_DIST) => {
                match op {
                    "seal" => vm.signature = SEALED_SIGNATURE.to_string(),
                    "unseal" => vm.signature = Stage::Hybrid.signature().to_string(),
                    _ => {}
                }
                let what = format!("{} was told to {op}", target.name());
                world.note_split(&what);
                Ok(true)
            }
            _ => Ok(false),
        };
        Box::pin(async move { out })
    }

    fn shutdown(&self) -> ObserveFuture<'_, ()> {
        Box::pin(async {})
    }
}
