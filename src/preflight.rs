//! Preflight: read-only checks that find, before any node is stopped, what would make the TLS
//! switch fail. Each host is checked in its own task; a few checks then compare across nodes.
//! Every check id, message and fix is listed in docs/preflight.md.

pub mod access;
pub mod certs;
pub mod expiry;
mod handshake;
mod options;
mod otp;
mod release;
mod table;

pub use table::Listing;

use crate::argsfile::{self, DistSettings};
use crate::plan::{NodeSpec, Plan};
use crate::probe::{NodeInfo, ProbeError, RuntimeVersions};
use crate::target::{self, NodeTarget};
use crate::transport::Transport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const DEFAULT_EXPIRY_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// The `host` of findings that compare nodes across the cluster.
pub const CLUSTER: &str = "(cluster)";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The checks `target::read_node` performs, in its order; all passed when it succeeds.
const NODE_FILE_CHECKS: [(&str, &str); 4] = [
    ("plan.files", "vm.args and vm.dist.args are readable text"),
    ("plan.proto_dist", "vm.args sets no -proto_dist"),
    (
        "plan.identity",
        "vm.args names the node and sets its cookie",
    ),
    ("plan.dist_args", "vm.dist.args can be switched to TLS"),
];

/// The checks `target::read_node` had passed when it stopped at `failed` (none for a file it
/// could not read: that may be either file).
fn passed_before(failed: &str) -> &'static [(&'static str, &'static str)] {
    // An unknown key stops the same step as any other problem of the TLS edit.
    let step = if failed == "tls.known_keys" {
        "plan.dist_args"
    } else {
        failed
    };
    let end = NODE_FILE_CHECKS
        .iter()
        .position(|(check, _)| *check == step)
        .unwrap_or(0);
    &NODE_FILE_CHECKS[..end]
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub expiry_window: Duration,
    pub handshake: bool,
    /// Also check that every host can run distls's zero-split module (`mode.zero_split`).
    pub zero_split: bool,
    /// Report missing peer verification and a server that does not require a client
    /// certificate as warnings instead of FAILs (`--allow-weak-tls`).
    pub allow_weak_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Fail => "FAIL",
        }
    }
}

/// One check's result for one node (or host, or the whole cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub host: String,
    pub node: Option<String>,
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    /// What to do about it; empty when the check passed.
    pub fix: String,
}

/// A finding before it is placed on a host and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    pub fix: String,
}

impl Verdict {
    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Ok, message.into(), String::new())
    }

    pub fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Severity::Warn, message.into(), fix.into())
    }

    pub fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Severity::Fail, message.into(), fix.into())
    }

    fn new(check: &'static str, severity: Severity, message: String, fix: String) -> Self {
        Verdict {
            check,
            severity,
            message,
            fix,
        }
    }

    fn at(self, host: &str, node: Option<&str>) -> Finding {
        Finding {
            host: host.to_string(),
            node: node.map(str::to_string),
            check: self.check,
            severity: self.severity,
            message: self.message,
            fix: self.fix,
        }
    }
}

/// What the cross-node checks need from each node.
struct NodeFacts {
    name: String,
    shared_options: Option<Vec<(String, String)>>,
}

#[derive(Default)]
struct HostReport {
    host: String,
    findings: Vec<Finding>,
    nodes: Vec<NodeFacts>,
    otp_release: Option<String>,
}

/// Runs every check on every node of the plan. Changes nothing anywhere.
/// `transports[i]` reaches `plan.nodes[i]`.
pub async fn run(plan: &Plan, transports: &[Transport], options: Options) -> Vec<Finding> {
    let now = SystemTime::now();
    let mut by_host: BTreeMap<String, Vec<(NodeSpec, Transport)>> = BTreeMap::new();
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        by_host
            .entry(host_of(spec).to_string())
            .or_default()
            .push((spec.clone(), transport.clone()));
    }
    let reports: Vec<HostReport> = in_plan_order(
        by_host
            .into_iter()
            .map(|(host, specs)| check_host(host, specs, options, now)),
    )
    .await;
    let mut findings: Vec<Finding> = reports
        .iter()
        .flat_map(|report| report.findings.iter().cloned())
        .collect();
    findings.push(same_options(&reports).at(CLUSTER, None));
    findings.push(mixed_otp(&reports).at(CLUSTER, None));
    if let Some(verdict) = table_wait(plan) {
        findings.push(verdict.at(CLUSTER, None));
    }
    findings
}

/// The host a node's findings are reported on: the one distls reaches it through.
fn host_of(spec: &NodeSpec) -> &str {
    spec.ssh.as_ref().map_or(&spec.host, |ssh| &ssh.host)
}

/// `roll.table_wait`: with Mnesia disc tables the first migrated node waits for its tables until
/// the last node has switched. A product that gives up (RabbitMQ: 10×30 s, then the VM exits)
/// must not be made to wait longer than that by the plan's worst case: every later node using its
/// whole stop, start and rejoin timeouts.
pub fn table_wait(plan: &Plan) -> Option<Verdict> {
    let first = plan.nodes.first()?;
    let wait = first.flavor.table_wait()?;
    let worst: Duration = plan.nodes[1..]
        .iter()
        .map(|n| n.timeouts.stop + n.timeouts.start + n.timeouts.rejoin)
        .sum();
    let flavor = first.flavor;
    let limit = humantime::format_duration(wait.limit);
    if worst <= wait.limit {
        return Some(Verdict::ok(
            "roll.table_wait",
            format!(
                "the roll after {} may take up to {} (timeouts), within {flavor}'s {limit} table wait",
                first.name,
                humantime::format_duration(worst)
            ),
        ));
    }
    Some(Verdict::warn(
        "roll.table_wait",
        format!(
            "{} waits for its Mnesia tables until the last node has switched; with the plan's timeouts the roll after it may take up to {}, longer than {flavor}'s table wait ({limit}), after which {}",
            first.name,
            humantime::format_duration(worst),
            wait.then
        ),
        format!(
            "lower timeouts.stop/start/rejoin of the later nodes so their sum stays under {limit}, or raise mnesia_table_loading_retry_limit (advanced.config) for the roll; a typical switch takes seconds per node (docs/flavor-{flavor}.md)"
        ),
    ))
}

pub fn has_failures(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Fail)
}

/// One node's commands and files as read on its host.
struct NodeRead {
    spec: NodeSpec,
    transport: Transport,
    commands: Verdict,
    /// An Elixir release's own files (None for the other flavors).
    release: Option<Verdict>,
    read: Result<NodeTarget, target::NodeProblem>,
    /// The TLS options of a node whose files stop at one check.
    fallback: Option<DistSettings>,
}

/// A node of the host, with the TLS options its vm.dist.args would get (when they can be read).
type NodeSettings = (NodeSpec, Transport, Option<DistSettings>);

impl HostReport {
    /// Records the verdict as a finding on this host (and on `node`, if given).
    fn add(&mut self, verdict: Verdict, node: Option<&str>) {
        let finding = verdict.at(&self.host, node);
        self.findings.push(finding);
    }
}

async fn check_host(
    host: String,
    specs: Vec<(NodeSpec, Transport)>,
    options: Options,
    now: SystemTime,
) -> HostReport {
    let mut report = HostReport {
        host,
        ..HostReport::default()
    };
    let relx_nodes: Vec<String> = specs
        .iter()
        .filter(|(spec, _)| spec.flavor == crate::flavor::Flavor::Relx)
        .map(|(spec, _)| spec.name.clone())
        .collect();
    let mut targets: Vec<NodeTarget> = Vec::new();
    let mut settings: Vec<NodeSettings> = Vec::new();
    let started = std::time::Instant::now();
    // Boots on while the files are read and the certificates checked.
    let early = specs
        .first()
        .map(|(spec, transport)| tokio::spawn(boot_early(spec.clone(), transport.clone())));
    let reads = read_nodes(specs).await;
    tracing::debug!(host = %report.host, took = ?started.elapsed(), "preflight: node files read");
    for read in reads {
        settings.push(add_node_files(&mut report, read, &mut targets));
    }
    let needs = options.zero_split.then(crate::zero_split::module_needs);
    let clock = certs::Clock {
        now,
        expiry_window: options.expiry_window,
    };
    let started = std::time::Instant::now();
    // The certificate files do not depend on what the probe says: read and check them while it
    // boots and asks for the OS pids; only cert.readable waits for those.
    let (runtime, cert_files) = tokio::join!(
        runtime(&targets, needs.as_deref(), early),
        cert_files(&settings, clock)
    );
    tracing::debug!(host = %report.host, took = ?started.elapsed(), "preflight: runtime asked, certificate files checked");
    let otp_major = runtime
        .versions
        .as_ref()
        .and_then(RuntimeVersions::otp_major);
    add_runtime(&mut report, &runtime, otp_major);
    if options.zero_split {
        report.add(zero_split_verdict(&runtime, relx_nodes), None);
    }
    report.otp_release = runtime.versions.map(|v| v.otp_release);
    let tls = NodeTls {
        settings: &settings,
        cert_files,
        os_pids: &runtime.os_pids,
    };
    add_node_tls(&mut report, tls, options, otp_major).await;
    if options.handshake {
        report.add(handshake_verdict(&targets).await, None);
    }
    host_findings_first(&mut report.findings, &settings);
    report
}

/// Each node's commands and files, read concurrently (each is a few commands on the host); the
/// results, and so the findings, keep plan order.
async fn read_nodes(specs: Vec<(NodeSpec, Transport)>) -> Vec<NodeRead> {
    in_plan_order(specs.into_iter().map(|(spec, transport)| async move {
        let commands = commands(&transport, &spec).await;
        let release = release::verdict(&transport, &spec).await;
        let read = target::read_node(&spec, &transport).await;
        // A node whose files stop at one check still gets its TLS options checked.
        let fallback = match &read {
            Ok(_) => None,
            Err(_) => target::read_dist_args(&spec, &transport)
                .await
                .ok()
                .and_then(|file| argsfile::settings_once_enabled(&file.original).ok()),
        };
        NodeRead {
            spec,
            transport,
            commands,
            release,
            read,
            fallback,
        }
    }))
    .await
}

/// The findings of one node's commands and files; a node whose files pass joins `targets`.
/// Returns the node with the TLS options to check.
fn add_node_files(
    report: &mut HostReport,
    node_read: NodeRead,
    targets: &mut Vec<NodeTarget>,
) -> NodeSettings {
    let NodeRead {
        spec,
        transport,
        commands,
        release,
        read,
        fallback,
    } = node_read;
    let node = Some(spec.name.as_str());
    report.add(commands, node);
    if let Some(release) = release {
        report.add(release, node);
    }
    let node_settings = match read {
        Ok(target) => {
            for (check, message) in NODE_FILE_CHECKS {
                report.add(Verdict::ok(check, message), node);
            }
            report.add(listen_port(&target.preflight_args), node);
            let settings = argsfile::dist_settings(&target.preflight_args);
            targets.push(target);
            Some(settings)
        }
        Err(problem) => {
            for (check, message) in passed_before(problem.check) {
                report.add(Verdict::ok(check, *message), node);
            }
            // An unknown key is reported by tls.known_keys, with every key and a suggestion.
            if problem.check != "tls.known_keys" {
                report.add(
                    Verdict::fail(problem.check, problem.message, problem.fix),
                    node,
                );
            }
            fallback
        }
    };
    (spec, transport, node_settings)
}

/// The host-wide findings of its runtime: whether it answered, the OTP rules that apply to its
/// release and the advisories for its ssl.
fn add_runtime(report: &mut HostReport, runtime: &Runtime, otp_major: Option<u32>) {
    report.add(runtime.verdict.clone(), None);
    if let Some(versions) = &runtime.versions {
        report.add(otp::rules_verdict(&versions.otp_release, otp_major), None);
        if let Some(ssl) = &versions.ssl {
            let vendor = runtime
                .vendor_fixed
                .as_ref()
                .map(|(source, ids)| (source.as_str(), ids.as_slice()));
            report.add(otp::advisories_verdict(ssl, vendor), None);
        }
    }
}

/// `mode.zero_split`: whether the host can run distls's zero-split module.
fn zero_split_verdict(runtime: &Runtime, relx_nodes: Vec<String>) -> Verdict {
    let lacking = match runtime.lacking.clone() {
        Some(lacking) => lacking,
        None => Err(runtime.verdict.message.clone()),
    };
    otp::zero_split_verdict(&otp::ZeroSplitHost {
        otp_release: runtime.versions.as_ref().map(|v| v.otp_release.as_str()),
        lacking,
        relx_nodes,
    })
}

/// Each node's certificate files checked (all nodes concurrently), but for `cert.readable`.
async fn cert_files(settings: &[NodeSettings], clock: certs::Clock) -> Vec<Vec<Verdict>> {
    in_plan_order(settings.iter().map(|(spec, transport, _)| {
        let (spec, transport) = (spec.clone(), transport.clone());
        async move { tls_files(&transport, &spec, clock).await }
    }))
    .await
}

/// What a host's nodes need for their TLS findings: `cert_files[i]` are `settings[i]`'s.
struct NodeTls<'a> {
    settings: &'a [NodeSettings],
    cert_files: Vec<Vec<Verdict>>,
    os_pids: &'a BTreeMap<String, u32>,
}

/// Each node's TLS options and certificate files, with `cert.readable` (asked for every node
/// concurrently) in its place, and what the cross-node checks need from it.
async fn add_node_tls(
    report: &mut HostReport,
    tls: NodeTls<'_>,
    options: Options,
    otp_major: Option<u32>,
) {
    let NodeTls {
        settings,
        cert_files,
        os_pids,
    } = tls;
    let readable = in_plan_order(settings.iter().zip(&cert_files).map(
        |((spec, transport, _), files)| {
            // Only when the files exist (`cert.files` passed), as before.
            let exist = files.first().is_some_and(|v| v.severity == Severity::Ok);
            let os_pid = os_pids.get(&spec.name).copied();
            let (spec, transport) = (spec.clone(), transport.clone());
            async move {
                if exist {
                    Some(readable(&transport, &spec, os_pid).await)
                } else {
                    None
                }
            }
        },
    ))
    .await;
    for (((spec, _, node_settings), mut verdicts), readable) in
        settings.iter().zip(cert_files).zip(readable)
    {
        let node = Some(spec.name.as_str());
        if let Some(node_settings) = node_settings {
            for verdict in options::check(node_settings, otp_major, options.allow_weak_tls) {
                report.add(verdict, node);
            }
        }
        if let Some(readable) = readable {
            verdicts.insert(1, readable);
        }
        for verdict in verdicts {
            report.add(verdict, node);
        }
        report.nodes.push(NodeFacts {
            name: spec.name.clone(),
            shared_options: node_settings.as_ref().map(options::shared_options),
        });
    }
}

/// `handshake`, tried with the first node whose files passed.
async fn handshake_verdict(targets: &[NodeTarget]) -> Verdict {
    match targets.first() {
        Some(target) => handshake::check(target).await,
        None => Verdict::fail(
            "handshake",
            "no node on this host has a usable TLS text to try",
            "fix the failed plan.* checks first",
        ),
    }
}

/// Host-wide findings first, then node by node, each in check order (the sort is stable).
fn host_findings_first(findings: &mut [Finding], settings: &[NodeSettings]) {
    // By name, not by a search per comparison: that made the sort quadratic in the nodes.
    let mut positions = std::collections::HashMap::new();
    for (index, (spec, _, _)) in settings.iter().enumerate() {
        positions.entry(spec.name.as_str()).or_insert(index + 1);
    }
    findings.sort_by_key(|finding| {
        finding
            .node
            .as_deref()
            .and_then(|node| positions.get(node).copied())
            .unwrap_or(0)
    });
}

/// Runs the futures concurrently as tasks and returns their outputs in the order given; a
/// panic in one of them surfaces here.
async fn in_plan_order<T, F>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, future) in futures.into_iter().enumerate() {
        tasks.spawn(async move { (index, future.await) });
    }
    let mut outputs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(output) => outputs.push(output),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    outputs.sort_by_key(|(index, _)| *index);
    outputs.into_iter().map(|(_, output)| output).collect()
}

/// The program each command line starts: its first word after any `VAR=value` assignments
/// (a quoted value may hold spaces: `ERL_FLAGS="-a b" bin/app ping`).
fn program_of(command: &str) -> Option<String> {
    shell_words(command)
        .into_iter()
        .find(|word| {
            !word
                .split_once('=')
                .is_some_and(|(name, _)| !name.is_empty() && !name.contains('/'))
        })
        .map(|word| word.trim_matches(['"', '\'']).to_string())
}

/// Words split on whitespace outside single and double quotes (quotes kept), enough to find
/// where assignments end.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

async fn commands(transport: &Transport, spec: &NodeSpec) -> Verdict {
    let lines = [
        ("erl", Some(spec.erl.as_str())),
        ("commands.start", Some(spec.commands.start.as_str())),
        ("commands.stop", Some(spec.commands.stop.as_str())),
        ("commands.ping", spec.commands.ping.as_deref()),
    ];
    let mut missing = Vec::new();
    for (key, line) in lines {
        let Some(program) = line.and_then(program_of) else {
            continue;
        };
        let same_lookup = transport.is_direct() && !transport.sets_env("PATH");
        // In-process answers are final for a path; a bare name not found on PATH may still be
        // a shell builtin, which only the shell knows.
        let found = if same_lookup && (program.contains('/') || executable_here(&program)) {
            executable_here(&program)
        } else {
            let quoted = crate::shell::shell_quote(&program);
            // A path must be an executable file; a bare name must be found on PATH (or be a
            // builtin, which only the shell knows).
            let test = if program.contains('/') {
                format!("test -f {quoted} && test -x {quoted}")
            } else {
                format!("command -v {quoted} >/dev/null")
            };
            transport
                .run(&test, COMMAND_TIMEOUT)
                .await
                .is_ok_and(|outcome| outcome.success())
        };
        if !found {
            missing.push(format!("{key} runs `{program}`"));
        }
    }
    if missing.is_empty() {
        return Verdict::ok(
            "plan.commands",
            "erl and the start, stop and ping commands exist",
        );
    }
    Verdict::fail(
        "plan.commands",
        format!(
            "{}, which is not an executable file on this host (nor on PATH)",
            missing.join("; ")
        ),
        "fix the command in the plan, or install the program; commands run through /bin/sh as the user running distls",
    )
}

/// What `test -f P && test -x P` (a path) or a PATH search (a bare name) says on this host, for
/// this user, without starting a shell.
fn executable_here(program: &str) -> bool {
    let executable = |path: &Path| {
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: access(2) on a NUL-terminated path; it only reads the string.
        path.is_file() && unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// The ctl and nodetool VMs read the same vm.dist.args as the node: a single pinned port makes
/// them fail with eaddrinuse while the node holds it.
fn listen_port(tls_text: &str) -> Verdict {
    let check = "plan.listen_port";
    let mut min = None;
    let mut max = None;
    for flag in argsfile::parse_flags(tls_text) {
        if flag.name.text != "-kernel" {
            continue;
        }
        for pair in flag.values.chunks_exact(2) {
            match pair[0].text.as_str() {
                "inet_dist_listen_min" => min = Some(pair[1].text.clone()),
                "inet_dist_listen_max" => max = Some(pair[1].text.clone()),
                _ => {}
            }
        }
    }
    let pinned = match (&min, &max) {
        // Without a max, OTP listens on min only.
        (Some(min), None) => Some(min.clone()),
        (Some(min), Some(max)) if min == max => Some(min.clone()),
        _ => None,
    };
    match pinned {
        Some(port) => Verdict::fail(
            check,
            format!(
                "vm.dist.args pins the distribution listen port to {port}; the ctl and nodetool VMs read the same file and fail to bind it (eaddrinuse) while the node runs"
            ),
            "give a range: -kernel inet_dist_listen_min P -kernel inet_dist_listen_max P+N (or remove both)",
        ),
        None => Verdict::ok(check, "no single pinned listen port"),
    }
}

struct Runtime {
    verdict: Verdict,
    versions: Option<RuntimeVersions>,
    os_pids: BTreeMap<String, u32>,
    /// What the host's OTP lacks of the asked functions (asked only for a zero-split check).
    lacking: Option<Result<Vec<String>, String>>,
    /// The CVE ids the OTP vendor's package says it fixed, and where that was read.
    vendor_fixed: Option<(String, Vec<String>)>,
}

/// Debian's erl, whose package changelog lists the fixes it backports.
const DEBIAN_ROOT: &str = "/usr/lib/erlang";
const DEBIAN_SSL_CHANGELOG: &str = "/usr/share/doc/erlang-ssl/changelog.Debian.gz";

/// A probe VM booted from the host's first node while the other nodes' files are read: the
/// boot (a VM start and the probe's compile) is the longest step of a big host's preflight.
struct EarlyProbe {
    node: String,
    args: crate::probe::ProbeArgs,
    pool: crate::probe::ProbePool,
    probe: Result<std::sync::Arc<crate::probe::Probe>, ProbeError>,
}

/// Reads the node's files itself (a node whose files fail gets no early probe) and boots the
/// probe `runtime` would boot for it, without cookies: those are known once every node is read.
async fn boot_early(spec: NodeSpec, transport: Transport) -> Option<EarlyProbe> {
    let target = target::read_node(&spec, &transport).await.ok()?;
    let pool = crate::probe::ProbePool::new(target.identity.name_flag, Vec::new());
    let args = target.current_probe_args();
    let probe = pool
        .probe_for(&target.probe_site(), &args, "preflight")
        .await;
    Some(EarlyProbe {
        node: spec.name,
        args,
        pool,
        probe,
    })
}

/// The host's OTP and ssl versions, the OS pid of every running node and, when `needs` is
/// given, which of those functions the host's OTP lacks; through one probe VM (the early one
/// when it was booted for the same node and args).
async fn runtime(
    targets: &[NodeTarget],
    needs: Option<&[String]>,
    early: Option<tokio::task::JoinHandle<Option<EarlyProbe>>>,
) -> Runtime {
    let failed = |message: String| Runtime {
        verdict: Verdict::fail(
            "runtime.otp",
            message,
            "install Erlang/OTP with its ssl application on this host, and check the plan's erl",
        ),
        versions: None,
        os_pids: BTreeMap::new(),
        lacking: None,
        vendor_fixed: None,
    };
    let first = targets.first();
    let early = match early {
        Some(task) => task
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic())),
        None => None,
    };
    let early = match early {
        Some(early)
            if first.is_some_and(|f| {
                f.name() == early.node && f.current_probe_args() == early.args
            }) =>
        {
            Some(early)
        }
        Some(unused) => {
            unused.pool.shutdown().await;
            None
        }
        None => None,
    };
    let Some(first) = first else {
        return failed(
            "no node on this host passed the plan checks, so no probe was started".into(),
        );
    };
    let (pool, booted) = match early {
        Some(early) => (early.pool, Some(early.probe)),
        None => match crate::observe::probe_pool(targets) {
            Ok(pool) => (pool, None),
            Err(err) => return failed(err.to_string()),
        },
    };
    let outcome = ask_runtime(&pool, booted, targets, needs).await;
    pool.shutdown().await;
    match outcome {
        Err(err) => failed(format!("cannot ask the host's Erlang: {err}")),
        Ok((versions, os_pids, lacking)) => {
            let verdict = otp_verdict(&versions);
            let vendor_fixed = if versions.root_dir.as_deref() == Some(DEBIAN_ROOT) {
                debian_fixed_cves(&first.transport).await
            } else {
                None
            };
            Runtime {
                verdict,
                versions: Some(versions),
                os_pids,
                lacking,
                vendor_fixed,
            }
        }
    }
}

/// `runtime.otp`: the host's OTP, and whether it has the ssl application.
fn otp_verdict(versions: &RuntimeVersions) -> Verdict {
    match &versions.ssl {
        Some(ssl) => Verdict::ok(
            "runtime.otp",
            format!("OTP {}, ssl {ssl}", versions.otp_release),
        ),
        None => Verdict::fail(
            "runtime.otp",
            format!(
                "OTP {} has no ssl application: TLS distribution cannot start",
                versions.otp_release
            ),
            "install the ssl application (Debian: erlang-ssl) for the erl the nodes use",
        ),
    }
}

type Asked = (
    RuntimeVersions,
    BTreeMap<String, u32>,
    Option<Result<Vec<String>, String>>,
);

/// The probe's answers: the early probe (given every node's cookie now), or one booted here.
async fn ask_runtime(
    pool: &crate::probe::ProbePool,
    booted: Option<Result<std::sync::Arc<crate::probe::Probe>, ProbeError>>,
    targets: &[NodeTarget],
    needs: Option<&[String]>,
) -> Result<Asked, ProbeError> {
    let started = std::time::Instant::now();
    let probe = match booted {
        Some(probe) => {
            let probe = probe?;
            probe.set_cookies(&target::cookies(targets)).await?;
            probe
        }
        None => {
            let first = &targets[0];
            pool.probe_for(
                &first.probe_site(),
                &first.current_probe_args(),
                "preflight",
            )
            .await?
        }
    };
    tracing::debug!(took = ?started.elapsed(), "preflight: probe up");
    let versions = probe.versions().await?;
    let lacking = match needs {
        Some(needs) => Some(probe.lacks(needs).await.map_err(|e| e.to_string())),
        None => None,
    };
    let os_pids = os_pids(&probe, targets).await;
    tracing::debug!(took = ?started.elapsed(), "preflight: pids asked");
    Ok((versions, os_pids, lacking))
}

/// How many nodes the probe is asked about at once: one at a time made a 1,000-node preflight
/// wait ~1.6 s on the round trips; each question may dial the node and ask epmd, so a bound
/// keeps the host's epmd and the probe's sockets within reason.
const CONCURRENT_INFO: usize = 32;

/// The OS pid of every running node, asked through the probe a few nodes at a time. Only nodes
/// that can be up are asked: a node its host's epmd does not list is down (the probe's own
/// `info` would look it up in that epmd and find nothing, at three epmd questions per node).
async fn os_pids(
    probe: &std::sync::Arc<crate::probe::Probe>,
    targets: &[NodeTarget],
) -> BTreeMap<String, u32> {
    let registered = registered_names(probe, targets).await;
    let may_be_up = |name: &str| match name.split_once('@') {
        Some((short, host)) => registered
            .get(host)
            .and_then(Option::as_ref)
            .is_none_or(|names| names.iter().any(|n| n == short)),
        None => true,
    };
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT_INFO));
    let asked = in_plan_order(
        targets
            .iter()
            .filter(|t| may_be_up(t.name()))
            .map(|target| {
                let (probe, gate, name) = (probe.clone(), gate.clone(), target.name().to_string());
                async move {
                    let _permit = gate.acquire_owned().await.ok();
                    let info = probe.info(&name).await;
                    (name, info)
                }
            }),
    )
    .await;
    asked
        .into_iter()
        .filter_map(|(name, info)| match info {
            Ok(NodeInfo::Up { os_pid, .. }) => Some((name, os_pid)),
            _ => None,
        })
        .collect()
}

/// The names each host's epmd lists, one question per host of the node names; `None` where
/// the probe cannot tell (no epmd: a fixed port; or no answer), so every node there is asked.
async fn registered_names(
    probe: &crate::probe::Probe,
    targets: &[NodeTarget],
) -> BTreeMap<String, Option<Vec<String>>> {
    let hosts: std::collections::BTreeSet<&str> = targets
        .iter()
        .filter_map(|t| t.name().split_once('@').map(|(_, host)| host))
        .collect();
    let mut registered = BTreeMap::new();
    for host in hosts {
        let names = match probe.registered(host).await {
            Ok(crate::probe::EpmdAsked {
                names: crate::probe::EpmdNames::Listed(names),
                ..
            }) => Some(names),
            _ => None,
        };
        registered.insert(host.to_string(), names);
    }
    registered
}

/// The CVE ids Debian's erlang-ssl changelog on the host mentions: Debian backports security
/// fixes without changing the upstream version the ssl application reports.
async fn debian_fixed_cves(transport: &Transport) -> Option<(String, Vec<String>)> {
    let script = format!("gzip -dc {DEBIAN_SSL_CHANGELOG}");
    let out = transport.run(&script, COMMAND_TIMEOUT).await.ok()?;
    if !out.success() {
        return None;
    }
    Some((DEBIAN_SSL_CHANGELOG.to_string(), otp::cve_ids(&out.stdout)))
}

/// The plan's certificate files of a node, named as the findings name them.
fn tls_paths(spec: &NodeSpec) -> [(&'static str, &PathBuf); 3] {
    [
        ("certfile", &spec.tls.certfile),
        ("keyfile", &spec.tls.keyfile),
        ("cacertfile", &spec.tls.cacertfile),
    ]
}

/// Existence and mode of the certificate files, then their content (`cert.readable`, which
/// needs the node's OS pid, is added later, second).
async fn tls_files(transport: &Transport, spec: &NodeSpec, clock: certs::Clock) -> Vec<Verdict> {
    let files = tls_paths(spec);
    let mut missing = Vec::new();
    for (what, path) in files {
        if !transport.file_exists(path).await {
            missing.push(format!("{what} {}", path.display()));
        }
    }
    if !missing.is_empty() {
        return vec![Verdict::fail(
            "cert.files",
            format!("{} does not exist", missing.join(", ")),
            "fix the tls paths in the plan, or install the files on this host; OTP would only report it when a connection is attempted",
        )];
    }
    let mut verdicts = vec![Verdict::ok(
        "cert.files",
        "certfile, keyfile and cacertfile exist",
    )];
    verdicts.push(key_permissions(transport, &spec.tls.keyfile).await);
    let mut contents = Vec::new();
    for (what, path) in files {
        match transport.read_file(path).await {
            Ok(bytes) => contents.push(bytes),
            Err(err) => {
                verdicts.push(Verdict::fail(
                    "cert.pem",
                    format!("cannot read {what}: {err}"),
                    "make the file readable by the user running distls too",
                ));
                return verdicts;
            }
        }
    }
    let paths: Vec<String> = files
        .iter()
        .map(|(_, path)| path.display().to_string())
        .collect();
    let material = certs::TlsMaterial {
        cert_path: &paths[0],
        cert: &contents[0],
        key_path: &paths[1],
        key: &contents[1],
        ca_path: &paths[2],
        ca: &contents[2],
    };
    verdicts.extend(checked_once(&material, &spec.host, clock));
    verdicts
}

/// `certs::check`, computed once per distinct input: the nodes of a cluster usually share one
/// certificate set, and a chain verification per node made a 1,000-node preflight CPU-bound.
fn checked_once(material: &certs::TlsMaterial, host: &str, clock: certs::Clock) -> Vec<Verdict> {
    type Known = std::sync::Mutex<std::collections::HashMap<String, Vec<Verdict>>>;
    static KNOWN: std::sync::OnceLock<Known> = std::sync::OnceLock::new();
    let since_epoch = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let key = [
        crate::atomic_file::sha256_hex(material.cert),
        crate::atomic_file::sha256_hex(material.key),
        crate::atomic_file::sha256_hex(material.ca),
        material.cert_path.to_string(),
        material.key_path.to_string(),
        material.ca_path.to_string(),
        host.to_string(),
        format!("{:?}", since_epoch(clock.now)),
        format!("{:?}", clock.expiry_window),
    ]
    .join("\0");
    let known = KNOWN.get_or_init(Default::default);
    if let Some(verdicts) = known.lock().expect("not poisoned").get(&key) {
        return verdicts.clone();
    }
    let verdicts = certs::check(material, host, clock);
    known
        .lock()
        .expect("not poisoned")
        .insert(key, verdicts.clone());
    verdicts
}

async fn readable(transport: &Transport, spec: &NodeSpec, os_pid: Option<u32>) -> Verdict {
    let check = "cert.readable";
    let files = tls_paths(spec);
    let user = match access::service_user(transport, os_pid, &spec.vm_args).await {
        Ok(user) => user,
        Err(err) => {
            return Verdict::warn(
                check,
                format!("cannot tell which user runs the node: {err}"),
                "check by hand that the node's user can read certfile, keyfile and cacertfile",
            );
        }
    };
    let mut blocked = Vec::new();
    for (what, path) in files {
        let verdict = match access::mode_chain(transport, path).await {
            Ok(chain) => access::can_read(&user, &chain),
            Err(err) => Err(err),
        };
        if let Err(why) = verdict {
            blocked.push(format!("{what}: {why}"));
        }
    }
    if blocked.is_empty() {
        return Verdict::ok(
            check,
            format!("readable by the node's user ({})", user.source),
        );
    }
    Verdict::fail(
        check,
        format!(
            "the node's user ({}) cannot read {}",
            user.source,
            blocked.join("; ")
        ),
        "chown the file to the node's user (or its group) and give it read permission (e.g. chmod 640 for the key, 644 for certificates); every directory above needs x",
    )
}

async fn key_permissions(transport: &Transport, keyfile: &Path) -> Verdict {
    let check = "cert.key_permissions";
    match access::mode_chain(transport, keyfile).await {
        Ok(chain) => match chain.last() {
            Some((_, mode)) if mode.bits & 0o004 != 0 => Verdict::fail(
                check,
                format!(
                    "keyfile {} is world-readable (mode {:03o}): every local user can read the cluster's private key",
                    keyfile.display(),
                    mode.bits
                ),
                "chmod o-r the key (600, or 640 with the node's group)",
            ),
            _ => Verdict::ok(check, "the key is not world-readable"),
        },
        Err(err) => Verdict::warn(
            check,
            format!("cannot read the mode of {}: {err}", keyfile.display()),
            "check by hand that the key is not world-readable",
        ),
    }
}

/// Every node must run the same TLS options, or some pairs of nodes may fail to connect.
fn same_options(reports: &[HostReport]) -> Verdict {
    let check = "tls.same_options";
    let mut groups: BTreeMap<&Vec<(String, String)>, Vec<&str>> = BTreeMap::new();
    for node in reports.iter().flat_map(|r| &r.nodes) {
        if let Some(options) = &node.shared_options {
            groups.entry(options).or_default().push(&node.name);
        }
    }
    if groups.len() <= 1 {
        return Verdict::ok(check, "every node gets the same TLS options");
    }
    let described: Vec<String> = groups
        .iter()
        .map(|(options, nodes)| {
            let options: Vec<String> = options.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{} use [{}]", nodes.join(", "), options.join(", "))
        })
        .collect();
    Verdict::fail(
        check,
        format!(
            "the nodes would run different TLS options: {}",
            described.join("; ")
        ),
        "make the -ssl_dist_opt options (other than the file paths) identical in every node's vm.dist.args",
    )
}

/// Which hosts (and their nodes) run which OTP release, when they differ.
fn mixed_otp(reports: &[HostReport]) -> Verdict {
    let check = "runtime.otp_mixed";
    let mut by_release: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for report in reports {
        if let Some(release) = report.otp_release.as_deref() {
            let nodes: Vec<&str> = report.nodes.iter().map(|n| n.name.as_str()).collect();
            by_release.entry(release).or_default().push(format!(
                "{} ({})",
                report.host,
                nodes.join(", ")
            ));
        }
    }
    if by_release.len() <= 1 {
        let release = by_release
            .keys()
            .next()
            .map_or(String::new(), |r| format!(" (OTP {r})"));
        return Verdict::ok(
            check,
            format!("one OTP release across the cluster{release}"),
        );
    }
    let described: Vec<String> = by_release
        .iter()
        .map(|(release, hosts)| format!("OTP {release} on {}", hosts.join(", ")))
        .collect();
    Verdict::warn(
        check,
        format!(
            "the hosts run different OTP releases: {}; defaults and rules differ (see each host's runtime.otp_rules)",
            described.join("; ")
        ),
        "finish the OTP upgrade first, or make sure the options suit every release (see docs/preflight.md, OTP-specific rules)",
    )
}

/// `host × check → result` with the message, and the fix under every warn and FAIL; identical
/// findings of many nodes share a row (`listing` says how many of their names it shows).
pub fn render_table(findings: &[Finding], listing: Listing) -> String {
    render(findings.iter().collect(), findings, listing)
}

/// Only the warn and FAIL rows (nothing but the summary when there are none), then the summary
/// of every finding: what `migrate` shows.
pub fn render_problems(findings: &[Finding], listing: Listing) -> String {
    let problems: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .collect();
    if problems.is_empty() {
        return format!("{}\n", summary(findings));
    }
    render(problems, findings, listing)
}

fn render(rows: Vec<&Finding>, all: &[Finding], listing: Listing) -> String {
    format!("{}{}\n", table::render(&rows, listing), summary(all))
}

/// `preflight: N ok, N warn, N FAIL`.
pub fn summary(findings: &[Finding]) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    format!(
        "preflight: {} ok, {} warn, {} FAIL",
        count(Severity::Ok),
        count(Severity::Warn),
        count(Severity::Fail)
    )
}

pub fn render_json(findings: &[Finding]) -> String {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let value = serde_json::json!({
        "findings": findings,
        "summary": {
            "ok": count(Severity::Ok),
            "warn": count(Severity::Warn),
            "fail": count(Severity::Fail),
        },
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rabbit_plan(timeouts: &str) -> Plan {
        let text = format!(
            "version: 1\ncluster: r\nflavor: rabbitmq\ntls: {{ certfile: /c, keyfile: /k, cacertfile: /a }}\ndefaults:\n  timeouts: {timeouts}\nnodes:\n  - name: rabbit1@h\n    flags_file: /r1/rabbitmq-env.conf\n  - name: rabbit2@h\n    flags_file: /r2/rabbitmq-env.conf\n  - name: rabbit3@h\n    flags_file: /r3/rabbitmq-env.conf\n"
        );
        Plan::from_source(Path::new("p.yaml"), &text).unwrap()
    }

    #[test]
    fn table_wait_warns_when_the_roll_may_outlast_rabbitmqs_wait() {
        let long = table_wait(&rabbit_plan("{ stop: 60s, start: 60s, rejoin: 120s }")).unwrap();
        assert_eq!(long.severity, Severity::Warn, "{long:?}");
        assert!(long.message.contains("8m"), "{}", long.message);
        let short = table_wait(&rabbit_plan("{ stop: 30s, start: 60s, rejoin: 30s }")).unwrap();
        assert_eq!(short.severity, Severity::Ok, "{short:?}");
    }

    #[test]
    fn a_pinned_port_fails_and_a_range_passes() {
        let pinned = listen_port("-kernel inet_dist_listen_min 30000\n");
        assert_eq!(pinned.severity, Severity::Fail);
        assert!(pinned.message.contains("30000"), "{pinned:?}");
        let same =
            listen_port("-kernel inet_dist_listen_min 9100\n-kernel inet_dist_listen_max 9100\n");
        assert_eq!(same.severity, Severity::Fail);
        let range =
            listen_port("-kernel inet_dist_listen_min 9100\n-kernel inet_dist_listen_max 9105\n");
        assert_eq!(range.severity, Severity::Ok);
        let commented = listen_port("#-kernel inet_dist_listen_min 30000\n");
        assert_eq!(commented.severity, Severity::Ok);
    }

    #[test]
    fn checks_before_the_failed_step_passed() {
        let names = |failed| -> Vec<&str> {
            passed_before(failed)
                .iter()
                .map(|(check, _)| *check)
                .collect()
        };
        assert_eq!(
            names("tls.known_keys"),
            ["plan.files", "plan.proto_dist", "plan.identity"]
        );
        assert_eq!(names("plan.identity"), ["plan.files", "plan.proto_dist"]);
        assert!(names("plan.files").is_empty());
    }

    #[test]
    fn the_program_is_the_first_word_after_assignments() {
        assert_eq!(
            program_of("/r/bin/ctl start").as_deref(),
            Some("/r/bin/ctl")
        );
        assert_eq!(
            program_of("HOME=/x LANG=C mongooseimctl start").as_deref(),
            Some("mongooseimctl")
        );
        assert_eq!(program_of("  ").as_deref(), None);
        assert_eq!(
            program_of("ERL_FLAGS=\"-ssl_dist_optfile /x/o.conf\" /r/bin/app ping").as_deref(),
            Some("/r/bin/app")
        );
        assert_eq!(
            program_of("A='x y' B=\"$(grep -E '^-p' f) z\" exec ctl").as_deref(),
            Some("exec")
        );
    }

    fn facts(name: &str, verify: &str) -> NodeFacts {
        NodeFacts {
            name: name.to_string(),
            shared_options: Some(vec![("server_verify".into(), verify.into())]),
        }
    }

    #[test]
    fn different_options_name_the_nodes() {
        let reports = [HostReport {
            nodes: vec![
                facts("a@h", "verify_peer"),
                facts("b@h", "verify_peer"),
                facts("c@h", "verify_none"),
            ],
            ..HostReport::default()
        }];
        let verdict = same_options(&reports);
        assert_eq!(verdict.severity, Severity::Fail);
        assert!(
            verdict
                .message
                .contains("c@h use [server_verify verify_none]"),
            "{verdict:?}"
        );
        assert!(verdict.message.contains("a@h, b@h use"), "{verdict:?}");
    }

    #[test]
    fn mixed_otp_releases_warn_naming_hosts_and_nodes() {
        let host = |name: &str, otp: &str, nodes: &[&str]| HostReport {
            host: name.to_string(),
            otp_release: Some(otp.to_string()),
            nodes: nodes.iter().map(|n| facts(n, "verify_peer")).collect(),
            ..HostReport::default()
        };
        let same = mixed_otp(&[host("a", "25", &["x@a"]), host("b", "25", &["y@b"])]);
        assert_eq!(same.severity, Severity::Ok);
        assert!(same.message.ends_with("(OTP 25)"), "{same:?}");
        let mixed = mixed_otp(&[
            host("a", "25", &["x@a", "z@a"]),
            host("b", "27", &["y@b"]),
            host("c", "25", &["w@c"]),
        ]);
        assert_eq!(mixed.severity, Severity::Warn);
        assert!(
            mixed
                .message
                .contains("OTP 25 on a (x@a, z@a), c (w@c); OTP 27 on b (y@b)"),
            "{mixed:?}"
        );
    }
}
