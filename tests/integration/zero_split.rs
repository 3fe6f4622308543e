//! `migrate --zero-split`: one restart per node into the hybrid module, then the seal at run time,
//! on real nodes, never split, and never a plain link between two nodes that run the module.

use crate::split::wait_for_sampled_mesh;
use crate::split_checker::{self, CtlPinger, Params, SplitReport, now_ms};
use crate::support::*;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

/// The restart window: a node may miss a peer this long after either (re)started.
const WINDOW: Duration = Duration::from_secs(5);

/// Runs distls with `args` on a cluster whose nodes sample their links every 200 ms, with every
/// node's own ctl pinged over and over meanwhile; returns its output and what the checker found.
fn run_watched(t: &TestCluster, args: &[&str], transport_after: &str) -> (Output, SplitReport) {
    run_watched_from(t, args, Some("tcp"), transport_after)
}

fn run_watched_from(
    t: &TestCluster,
    args: &[&str],
    transport_before: Option<&str>,
    transport_after: &str,
) -> (Output, SplitReport) {
    if let Some(transport) = transport_before {
        wait_for_sampled_mesh(t, transport, 0);
    }
    let since = now_ms();
    let pinger = CtlPinger::start(&t.cluster, Duration::from_millis(200));
    let out = t.distls(args);
    if out.status.success() || out.status.code() == Some(4) {
        wait_for_sampled_mesh(t, transport_after, now_ms());
    }
    let pings = pinger.stop();
    let report = split_checker::check(
        &t.cluster.links_logs(),
        &pings,
        &Params::new(WINDOW).since(since),
    );
    println!(
        "{} ({} nodes):\n{report}",
        args.join(" "),
        t.node_names().len()
    );
    (out, report)
}

/// No running node ever missed a running node outside the restart windows, every restart
/// rejoined, and every node's ctl reached it whenever it ran.
fn assert_never_split(report: &SplitReport, restarts: usize) {
    assert!(report.violations.is_empty(), "no split: {report}");
    assert_eq!(report.split_seconds, 0.0, "{report}");
    assert_eq!(report.rejoins.len(), restarts, "restarts seen: {report}");
    let max = report
        .max_rejoin()
        .unwrap_or_else(|e| panic!("{e}: {report}"));
    eprintln!("max rejoin window: {max:?}");
    assert!(report.pings_counted > 0, "{report}");
    assert!(
        report.ping_failures.is_empty(),
        "every node's ctl reached it: {report}"
    );
}

fn module_dir(t: &TestCluster, node: usize) -> PathBuf {
    t.cluster.nodes()[node].root.join("etc/distls-hybrid")
}

/// Every node runs the sealed module (stock TLS from its next restart) in a TLS mesh, its flags
/// file is the stock TLS text, the hybrid module is gone from every host, every backup holds the
/// original.
fn assert_finished_on_tls(t: &TestCluster, originals: &[Vec<u8>]) {
    t.assert_mesh("distls_hybrid", "tls");
    t.assert_backups_are(originals);
    for node in 0..originals.len() {
        let text = std::fs::read_to_string(t.dist_args_path(node)).unwrap();
        assert!(
            text.contains("\n-proto_dist inet_tls\n") && !text.contains("distls_hybrid"),
            "node {node} ends on stock inet_tls:\n{text}"
        );
        assert!(
            !module_dir(t, node).exists(),
            "node {node}: the hybrid module is removed at the end"
        );
    }
    assert_eq!(journal(t.plan().as_path())["phase"], "completed");
}

fn assert_back_on_plain(t: &TestCluster, originals: &[Vec<u8>]) {
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(originals);
    for node in 0..originals.len() {
        assert!(!module_dir(t, node).exists(), "node {node}: module removed");
    }
    assert_eq!(journal(t.plan().as_path())["phase"], "rolled_back");
}

/// Samples (of the 200 ms link sampler) in which a node that runs the module sees a node that
/// also runs it over plain TCP: a node runs the module from its first sample under a new VM
/// (its one restart) on.
fn plain_links_between_hybrid_nodes(t: &TestCluster, since: split_checker::Millis) -> Vec<String> {
    let logs: Vec<(String, Vec<split_checker::Sample>)> = t
        .cluster
        .links_logs()
        .into_iter()
        .map(|(name, text)| (name, split_checker::parse_log(&text)))
        .collect();
    let hybrid_from: std::collections::BTreeMap<&str, split_checker::Millis> = logs
        .iter()
        .filter_map(|(name, samples)| {
            let before = samples.iter().find(|s| s.t >= since)?.vm;
            let first = samples.iter().find(|s| s.t >= since && s.vm != before)?;
            Some((name.as_str(), first.t))
        })
        .collect();
    // Every node's restart must be seen, or the check below would pass on nothing.
    assert_eq!(
        hybrid_from.len(),
        logs.len(),
        "every node's restart into the module shows in its samples: {hybrid_from:?}"
    );
    let mut found = Vec::new();
    for (name, samples) in &logs {
        let Some(&mine) = hybrid_from.get(name.as_str()) else {
            continue;
        };
        for sample in samples.iter().filter(|s| s.t >= mine) {
            for (peer, transport) in &sample.peers {
                if transport == "tcp"
                    && hybrid_from
                        .get(peer.as_str())
                        .is_some_and(|&p| sample.t >= p)
                {
                    found.push(format!("{name} sees {peer} over tcp at {}", sample.t));
                }
            }
        }
    }
    found
}

/// A stock VM with the cluster's cookie dials `node`: `-proto_dist inet_tcp` (`None`), or
/// `inet_tls` with the optfile text given. Whether it got a link.
fn stock_vm_connects(t: &TestCluster, node: &str, optfile: Option<&str>) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("erl");
    cmd.args([
        "-noshell",
        "-hidden",
        "-sname",
        &format!("dialer{}", std::process::id()),
    ])
    .args(["-setcookie", t.cluster.cookie()])
    .env("ERL_EPMD_PORT", t.cluster.epmd_port().to_string())
    .env("ERL_CRASH_DUMP", dir.path().join("erl_crash.dump"));
    if let Some(text) = optfile {
        let path = dir.path().join("dialer.conf");
        std::fs::write(&path, text).unwrap();
        cmd.args(["-proto_dist", "inet_tls", "-ssl_dist_optfile"])
            .arg(&path);
    }
    let out = cmd
        .args([
            "-eval",
            &format!("io:format(\"DIALED ~p~n\", [net_kernel:connect_node('{node}')]), halt()."),
        ])
        .output()
        .expect("erl runs");
    String::from_utf8_lossy(&out.stdout).contains("DIALED true")
}

/// After the seal, before any restart: a plain VM with the right cookie reaches no node, nor
/// does a TLS VM without a certificate; a TLS VM with one reaches every node (the control).
fn assert_sealed(t: &TestCluster) {
    let tls = t.cluster.tls_files();
    let (cert, key, ca) = (&tls.certfile, &tls.keyfile, &tls.cacertfile);
    let with_cert = format!(
        "[{{server, [{{certfile, {cert:?}}}, {{keyfile, {key:?}}}, {{cacertfile, {ca:?}}}, {{verify, verify_peer}}]}}, {{client, [{{certfile, {cert:?}}}, {{keyfile, {key:?}}}, {{cacertfile, {ca:?}}}, {{verify, verify_peer}}]}}]."
    );
    let without_cert =
        format!("[{{server, []}}, {{client, [{{cacertfile, {ca:?}}}, {{verify, verify_peer}}]}}].");
    for name in t.node_names() {
        assert!(
            !stock_vm_connects(t, &name, None),
            "a plain VM reached {name} after the seal"
        );
        assert!(
            !stock_vm_connects(t, &name, Some(&without_cert)),
            "a TLS VM without a certificate reached {name}"
        );
        assert!(
            stock_vm_connects(t, &name, Some(&with_cert)),
            "a TLS VM with a certificate reaches {name}"
        );
    }
}

#[test]
fn dry_run_shows_both_rolls_and_changes_nothing() {
    let t = cluster("zsdry", 3);
    let before = t.file_hashes();
    let out = t.distls(&[
        "migrate",
        "--zero-split",
        "--dry-run",
        t.plan().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let names = t.node_names();
    for wanted in [
        "with one restart per node, then a seal at run time (no restart), never split",
        "roll 1/2: plain tcp → H (hybrid, tls to hybrid peers)\n",
        "roll 2/2: H (hybrid, tls to hybrid peers) → tls (at run time: no node restarts)",
        "+-proto_dist distls_hybrid -pa ",
        &format!("-distls_hybrid tls_peers {}\n", names[0]),
        &format!(
            "-distls_hybrid tls_peers {} {} {}\n",
            names[0], names[1], names[2]
        ),
        "speaks TLS (through a TLS probe VM)",
        "1. seal:   through a TLS probe VM",
        "+-proto_dist inet_tls\n",
        "remove the hybrid module",
    ] {
        assert!(text.contains(wanted), "dry run shows {wanted:?}:\n{text}");
    }
    let diffs = text.matches("--- ").count();
    assert_eq!(diffs, 6, "3 nodes × 2 rolls of diffs:\n{text}");
    assert_eq!(t.file_hashes(), before, "a dry run changes no file");
    for node in 0..3 {
        assert!(
            !module_dir(&t, node).exists(),
            "no module installed by a dry run"
        );
    }
    assert!(journal_if_any(&t.plan()).is_none(), "no journal either");
}

/// The whole run on `n` nodes, watched: one restart per node, no split, no plain link between two
/// nodes that run the module, sealed at the end.
/// `batch`: `--batch K` (nodes restart K at a time).
fn migrate_without_split(
    prefix: &str,
    n: usize,
    mnesia: bool,
    batch: Option<&str>,
) -> (TestCluster, Output) {
    let t = cluster_with(prefix, n, |spec| {
        spec.sample_links = true;
        spec.mnesia = mnesia;
    });
    let originals = t.dist_args_files();
    let pids: Vec<_> = (0..n).map(|i| t.cluster.node_os_pid(i)).collect();
    let plan = t.plan();
    let since = now_ms();
    let mut args = vec!["migrate", plan.to_str().unwrap()];
    if let Some(batch) = batch {
        args.extend(["--batch", batch]);
    }
    let (out, report) = run_watched(&t, &args, "tls");
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    for roll in [
        "roll plain tcp → H (hybrid, tls to hybrid peers)",
        "roll H (hybrid, tls to hybrid peers) → tls",
    ] {
        assert!(err.contains(roll), "{roll} ran:\n{err}");
    }
    assert_eq!(
        err.matches(": stopping").count(),
        n,
        "one stop per node:\n{err}"
    );
    assert_eq!(err.matches(": sealing").count(), n, "{err}");
    assert_never_split(&report, n);
    assert!(report.final_links_all("tls"), "{report}");
    let plain = plain_links_between_hybrid_nodes(&t, since);
    assert!(
        plain.is_empty(),
        "plain links between hybrid nodes: {plain:#?}"
    );
    for (i, before) in pids.iter().enumerate() {
        let now = t.cluster.node_os_pid(i);
        assert!(now.is_some() && now != *before, "node {i} has a new OS pid");
    }
    assert_finished_on_tls(&t, &originals);
    assert_sealed(&t);
    let status = t.distls(&["status", plan.to_str().unwrap()]);
    assert!(status.status.success(), "{}", describe(&status));
    assert_eq!(
        stdout(&status).matches("tls (sealed module)").count(),
        n,
        "{}",
        describe(&status)
    );
    (t, out)
}

#[test]
fn three_nodes_go_to_tls_with_one_restart_each_without_a_split() {
    migrate_without_split("zs3", 3, false, None);
}

#[test]
fn five_nodes_go_to_tls_without_a_split_two_at_a_time() {
    let (t, _) = migrate_without_split("zs5", 5, false, Some("2"));
    let journal = journal(t.plan().as_path());
    let names = t.node_names();
    assert!(down_together(&journal, &names[0], &names[1]), "{journal}");
    assert!(down_together(&journal, &names[2], &names[3]), "{journal}");
    assert!(!down_together(&journal, &names[1], &names[2]), "{journal}");
    rotates_without_a_restart_or_a_lost_link(&t);
}

/// `distls rotate` on the sealed cluster: a CA rollover, then a rotation of the leaves alone;
/// every node keeps its OS pid and every link (sampled every 200 ms), its ctl reaches it
/// throughout, and it serves the new certificate.
fn rotates_without_a_restart_or_a_lost_link(t: &TestCluster) {
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let n = t.node_names().len();
    let [first, second] = distls::rehearsal::write_rotation_certs(
        &t.cluster.dir().join("rotated"),
        &["localhost", "127.0.0.1"],
    )
    .expect("rotation certificates");
    let pids: Vec<_> = (0..n).map(|i| t.cluster.node_os_pid(i)).collect();
    for (set, rollover, subject) in [
        (&first, true, "rotated node 1"),
        (&second, false, "rotated node 2"),
    ] {
        let flags: &[&str] = if rollover { &["--ca-rollover"] } else { &[] };
        let args = rotate_args(flags, plan, set, rollover);
        let args = strs(&args);
        let started = std::time::Instant::now();
        let (out, report) = run_watched_from(t, &args, Some("tls"), "tls");
        eprintln!(
            "MEASURED rotate{} of {n} nodes: {:.1} s",
            if rollover { " --ca-rollover" } else { "" },
            started.elapsed().as_secs_f64()
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert_never_split(&report, 0);
        assert!(report.final_links_all("tls"), "{report}");
        let served = stdout(&out);
        let phases = if rollover { 3 } else { 1 };
        assert_eq!(
            served.matches("new links ok").count(),
            phases * n,
            "{served}"
        );
        // A rollover's first phase still serves the old leaves; its other two the new ones.
        let serving_new = if rollover { 2 * n } else { n };
        assert_eq!(
            served
                .matches(&format!("serves CN=distls rehearsal {subject}"))
                .count(),
            serving_new,
            "{served}"
        );
        let tls = t.cluster.tls_files();
        assert_eq!(
            std::fs::read(&tls.certfile).unwrap(),
            std::fs::read(&set.certfile).unwrap()
        );
        assert_eq!(
            std::fs::read(&tls.cacertfile).unwrap(),
            std::fs::read(&set.cacertfile).unwrap()
        );
        for (i, pid) in pids.iter().enumerate() {
            assert_eq!(&t.cluster.node_os_pid(i), pid, "node {i} kept its OS pid");
        }
    }
}

/// Mnesia disc_copies tables on every node: after its restart the node loads its tables from
/// the others and reports `started` (the plan's ready command) before the next node is touched;
/// the table is still readable everywhere at the end.
#[test]
fn a_mnesia_cluster_finishes_starting_after_every_restart() {
    let (t, out) = migrate_without_split("zsm", 3, true, None);
    // Each node right after its own restart, before the next node is stopped (3), and every
    // node at the end of the run, after the seal (3).
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let first = |name: &str, what: &str| {
        lines
            .iter()
            .position(|l| l.contains(&format!("{name}: {what}")))
            .unwrap_or_else(|| panic!("no `{name}: {what}` line:\n{err}"))
    };
    let names = t.node_names();
    for pair in names.windows(2) {
        assert!(
            first(&pair[0], "waiting until it reports ready") < first(&pair[1], "stopping"),
            "{} reported ready before {} was stopped:\n{err}",
            pair[0],
            pair[1]
        );
    }
    let readies = err.matches("waiting until it reports ready").count();
    assert!(
        readies >= 2 * names.len(),
        "every node reported ready after its restart and at the end ({readies}):\n{err}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    for (node, name) in names.iter().enumerate() {
        assert_eq!(t.cluster.status(node).as_deref(), Some("started"), "{name}");
        let keys = t.cluster.ctl_ok(node, &["mnesia-keys"]).unwrap();
        let mut keys: Vec<String> = keys.lines().map(str::to_string).collect();
        keys.sort();
        assert_eq!(keys, sorted, "{name}: the table is readable");
    }
}

/// `distls rollback` after a finished run: the seal is undone at run time (no restart), then one
/// restart per node back to plain, one mesh throughout, every file byte-identical at the end.
#[test]
fn rollback_of_a_finished_run_unseals_then_restarts_each_node_once() {
    let t = cluster_with("zsback", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let (out, report) = run_watched(&t, &["migrate", "--zero-split", plan], "tls");
    assert!(out.status.success(), "{}", describe(&out));
    assert_never_split(&report, 3);
    let (back, report) = run_watched_from(&t, &["rollback", plan], Some("tls"), "tcp");
    assert!(back.status.success(), "{}", describe(&back));
    assert_never_split(&report, 3);
    let err = stderr(&back);
    assert_eq!(err.matches(": unsealing").count(), 3, "{err}");
    assert!(
        err.contains("roll H (hybrid, tls to hybrid peers) → plain tcp"),
        "{err}"
    );
    assert_back_on_plain(&t, &originals);
}

/// The plan's start command of node 2 fails once its file loads the hybrid module.
fn fail_second_start_into_the_module(t: &TestCluster) {
    let ctl = t.cluster.nodes()[1].root.join("bin/ctl");
    let failing = format!(
        "if grep -q 'distls_hybrid tls_peers' {}; then echo 'refusing the hybrid module' >&2; exit 1; fi; exec {} start",
        t.dist_args_path(1).display(),
        ctl.display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!("    commands:\n      start: \"{failing}\"\n")
        } else {
            String::new()
        }
    });
}

/// Node 2 refuses to start with the module: the roll goes back to plain, newest node first
/// (node 1 is told before node 2 starts plain again), never split.
#[test]
fn a_failed_start_into_the_module_goes_back_to_plain() {
    let t = cluster_with("zsfail", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    fail_second_start_into_the_module(&t);
    let plan = t.plan();
    let (out, report) = run_watched(
        &t,
        &["migrate", "--zero-split", plan.to_str().unwrap()],
        "tcp",
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    // Node 1: to H, back to plain; node 2: its start into H fails, plain again; node 3: untouched.
    assert_never_split(&report, 3);
    let err = stderr(&out);
    assert!(
        err.contains("refusing the hybrid module"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("rolled back"), "{}", describe(&out));
    assert_back_on_plain(&t, &originals);
}

/// `--on-failure pause` leaves the run for the operator: `migrate --classic` is refused with a
/// hint (the journal holds a zero-split run), `status` shows each node's stage, and `rollback` takes the cluster back
/// to plain without a split.
#[test]
fn a_paused_run_shows_its_stages_and_rolls_back_without_a_split() {
    let t = cluster_with("zspause", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    fail_second_start_into_the_module(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--zero-split", "--on-failure", "pause", plan]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(journal(t.plan().as_path())["phase"], "paused");

    let refused = t.distls(&["migrate", "--classic", plan]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains("rerun without --classic to carry it on"),
        "{}",
        describe(&refused)
    );

    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    let text = stdout(&status);
    assert!(
        text.contains("zero-split: roll plain tcp → H (hybrid, tls to hybrid peers)"),
        "{text}"
    );
    let line = |node: &str| {
        text.lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} in:\n{text}"))
            .to_string()
    };
    let names = t.node_names();
    assert!(
        line(&names[0]).contains("H (hybrid, tls to hybrid peers)"),
        "{text}"
    );
    assert!(line(&names[2]).contains("plain tcp"), "{text}");

    // Node 2 is down (its start failed): no full mesh to wait for first.
    let (back, report) = run_watched_from(&t, &["rollback", plan], None, "tcp");
    assert!(back.status.success(), "{}", describe(&back));
    // Node 1 back to plain; node 2 plain again.
    assert_never_split(&report, 2);
    assert_back_on_plain(&t, &originals);
}

/// A failure rolls the roll back; distls is killed right after (the journal says `rolled_back`):
/// the rerun does not retry, it reports the earlier failure and stays on plain.
#[cfg(feature = "failpoints")]
#[test]
fn a_run_killed_after_a_roll_went_back_goes_on_back_to_plain() {
    use std::os::unix::process::ExitStatusExt;
    let t = cluster("zskill", 3);
    let originals = t.dist_args_files();
    fail_second_start_into_the_module(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls_env(
        &["migrate", "--zero-split", plan],
        &[("DISTLS_FAILPOINT", "h:rolled-back")],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    assert_eq!(journal(t.plan().as_path())["phase"], "rolled_back");
    let again = t.distls(&["migrate", "--zero-split", plan]);
    assert_eq!(again.status.code(), Some(4), "{}", describe(&again));
    assert!(
        stderr(&again).contains("an earlier failure turned this run back"),
        "{}",
        describe(&again)
    );
    assert_back_on_plain(&t, &originals);
}
