//! `migrate --zero-split`: three rolls through the hybrid module on real nodes, never split.

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

/// Every node ends on stock TLS, the hybrid module is gone from every host, every backup holds
/// the original.
fn assert_finished_on_tls(t: &TestCluster, originals: &[Vec<u8>]) {
    t.assert_mesh("inet_tls", "tls");
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

#[test]
fn dry_run_shows_the_three_rolls_and_changes_nothing() {
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
    for wanted in [
        "roll 1/3: plain tcp → A (hybrid, dials tcp)",
        "roll 2/3: A (hybrid, dials tcp) → B (hybrid, dials tls)",
        "roll 3/3: B (hybrid, dials tls) → tls",
        "+-proto_dist distls_hybrid -pa ",
        "-distls_hybrid dial tcp\n",
        "+-proto_dist distls_hybrid -pa ",
        "-distls_hybrid dial tls\n",
        "+-proto_dist inet_tls\n",
        "remove the hybrid module",
    ] {
        assert!(text.contains(wanted), "dry run shows {wanted:?}:\n{text}");
    }
    // Each node's three diffs: one per roll.
    let diffs = text.matches("--- ").count();
    assert_eq!(diffs, 9, "3 nodes × 3 rolls of diffs:\n{text}");
    assert_eq!(t.file_hashes(), before, "a dry run changes no file");
    for node in 0..3 {
        assert!(
            !module_dir(&t, node).exists(),
            "no module installed by a dry run"
        );
    }
    assert!(journal_if_any(&t.plan()).is_none(), "no journal either");
}

/// The whole run on `n` nodes, watched: three rolls, no split, every link TLS at the end.
fn migrate_without_split(prefix: &str, n: usize, mnesia: bool) -> (TestCluster, Output) {
    let t = cluster_with(prefix, n, |spec| {
        spec.sample_links = true;
        spec.mnesia = mnesia;
    });
    let originals = t.dist_args_files();
    let plan = t.plan();
    let (out, report) = run_watched(
        &t,
        &["migrate", "--zero-split", plan.to_str().unwrap()],
        "tls",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    for roll in [
        "roll plain tcp → A (hybrid, dials tcp)",
        "roll A (hybrid, dials tcp) → B (hybrid, dials tls)",
        "roll B (hybrid, dials tls) → tls",
    ] {
        assert!(err.contains(roll), "{roll} ran:\n{err}");
    }
    assert_never_split(&report, 3 * n);
    assert!(report.final_links_all("tls"), "{report}");
    assert_finished_on_tls(&t, &originals);
    (t, out)
}

#[test]
fn three_nodes_go_to_tls_through_both_hybrid_stages_without_a_split() {
    migrate_without_split("zs3", 3, false);
}

#[test]
fn five_nodes_go_to_tls_without_a_split() {
    migrate_without_split("zs5", 5, false);
}

/// Mnesia disc_copies tables on every node: after every restart of every roll the node loads
/// its tables from the others and reports `started` (the plan's ready command) before the next
/// node is touched; the table is still readable everywhere at the end.
#[test]
fn a_mnesia_cluster_finishes_starting_in_every_phase() {
    let (t, out) = migrate_without_split("zsm", 3, true);
    // Each node after each of its 3 restarts (9), and every node at the end of each roll (9): a
    // run without the per-node wait would show only the second 9.
    let readies = stderr(&out)
        .matches("waiting until it reports ready")
        .count();
    assert!(
        readies >= 18,
        "every node reported ready after each of its 3 restarts ({readies}):\n{}",
        stderr(&out)
    );
    let names = t.node_names();
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

/// `distls rollback` after a finished zero-split run goes back one stage at a time: C → B → A →
/// plain, one mesh throughout, every file byte-identical at the end.
#[test]
fn rollback_of_a_finished_run_goes_back_through_b_and_a() {
    let t = cluster_with("zsback", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let (out, report) = run_watched(&t, &["migrate", "--zero-split", plan], "tls");
    assert!(out.status.success(), "{}", describe(&out));
    assert_never_split(&report, 9);
    let (back, report) = run_watched_from(&t, &["rollback", plan], Some("tls"), "tcp");
    assert!(back.status.success(), "{}", describe(&back));
    assert_never_split(&report, 9);
    let err = stderr(&back);
    for roll in [
        "roll B (hybrid, dials tls) → A (hybrid, dials tcp)",
        "roll A (hybrid, dials tcp) → plain tcp",
    ] {
        assert!(err.contains(roll), "{roll} ran:\n{err}");
    }
    assert_back_on_plain(&t, &originals);
}

/// The plan's start command of node 2 fails once its file says `dial tls` (phase B).
fn fail_second_start_in_phase_b(t: &TestCluster) {
    let ctl = t.cluster.nodes()[1].root.join("bin/ctl");
    let failing = format!(
        "if grep -q 'distls_hybrid dial tls' {}; then echo 'refusing to dial TLS' >&2; exit 1; fi; exec {} start",
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

/// Node 2 refuses to start once it would dial TLS (phase B): that roll goes back to A, then the
/// run goes back to plain.
#[test]
fn a_failure_in_phase_b_goes_back_to_plain() {
    let t = cluster_with("zsfail", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    fail_second_start_in_phase_b(&t);
    let plan = t.plan();
    let (out, report) = run_watched(
        &t,
        &["migrate", "--zero-split", plan.to_str().unwrap()],
        "tcp",
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    // Node 1: to A, to B, back to A, to plain; node 2: to A, (B does not start), A again, plain;
    // node 3: to A, to plain.
    assert_never_split(&report, 9);
    let err = stderr(&out);
    assert!(err.contains("refusing to dial TLS"), "{}", describe(&out));
    assert!(
        err.contains("this roll rolled back: every node runs A (hybrid, dials tcp) again")
            && err.contains("roll A (hybrid, dials tcp) → plain tcp"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("rolled back"), "{}", describe(&out));
    assert_back_on_plain(&t, &originals);
}

/// `--on-failure pause` in phase B leaves the run for the operator: a plain `migrate` (without
/// the flag) is refused with a hint, `status` shows each node's stage, and `rollback` takes the
/// cluster back to plain without a split.
#[test]
fn a_paused_run_shows_its_stages_and_rolls_back_without_a_split() {
    let t = cluster_with("zspause", 3, |spec| spec.sample_links = true);
    let originals = t.dist_args_files();
    fail_second_start_in_phase_b(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--zero-split", "--on-failure", "pause", plan]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(journal(t.plan().as_path())["phase"], "paused");

    let refused = t.distls(&["migrate", plan]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains("rerun with --zero-split"),
        "{}",
        describe(&refused)
    );

    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    let text = stdout(&status);
    assert!(
        text.contains("zero-split: roll A (hybrid, dials tcp) → B (hybrid, dials tls)"),
        "{text}"
    );
    let line = |node: &str| {
        text.lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} in:\n{text}"))
            .to_string()
    };
    let names = t.node_names();
    assert!(line(&names[0]).contains("B (hybrid, dials tls)"), "{text}");
    assert!(line(&names[2]).contains("A (hybrid, dials tcp)"), "{text}");

    // Node 2 is down (its start into B failed): no full mesh to wait for first.
    let (back, report) = run_watched_from(&t, &["rollback", plan], None, "tcp");
    assert!(back.status.success(), "{}", describe(&back));
    // Node 1: B back to A, then plain; node 2: A again (its B start failed), then plain;
    // node 3: plain.
    assert_never_split(&report, 5);
    assert_back_on_plain(&t, &originals);
}

/// A failure in phase B rolls that roll back; distls is killed right after (the journal says
/// `rolled_back`, nodes on A): the rerun neither starts over from plain nor retries B, it goes
/// on back to plain.
#[cfg(feature = "failpoints")]
#[test]
fn a_run_killed_after_a_roll_went_back_goes_on_back_to_plain() {
    use std::os::unix::process::ExitStatusExt;
    let t = cluster("zskill", 3);
    let originals = t.dist_args_files();
    fail_second_start_in_phase_b(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls_env(
        &["migrate", "--zero-split", plan],
        &[("DISTLS_FAILPOINT", "b:rolled-back")],
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
