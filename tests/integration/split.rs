//! The split checker against real rolls: the classic roll (`--classic`) splits the cluster into a TLS island and
//! a plain island, and the checker must see it (a checker that cannot fail proves nothing).

use std::path::Path;
use std::time::Duration;

use crate::split_checker::{self, CtlPinger, Params, now_ms, parse_log};
use crate::support::*;

/// The restart window the zero-split tests use too.
const WINDOW: Duration = Duration::from_secs(5);
/// How long the test holds the roll with the islands apart, as the checker measures it.
const HELD_SPLIT_SECONDS: f64 = 2.0;

/// Waits until every node's newest sample is from after `after` (unix ms) and shows every other
/// node over `transport`.
pub(crate) fn wait_for_sampled_mesh(t: &TestCluster, transport: &str, after: i64) {
    let names = t.node_names();
    t.cluster
        .wait_until(
            &format!("every node to sample the full {transport} mesh"),
            Duration::from_secs(60),
            || {
                let logs = t.cluster.links_logs();
                names.iter().all(|n| {
                    parse_log(&logs[n]).last().is_some_and(|s| {
                        s.t > after
                            && names.iter().filter(|o| *o != n).all(|o| {
                                s.peers
                                    .get(o)
                                    .is_some_and(|p| transport == "*" || p == transport)
                            })
                    })
                })
            },
        )
        .unwrap();
}

/// Plan YAML for node `index`: its `commands.start` waits until the file `gate` exists (or the
/// cluster directory is gone, when the test ended early), then runs its ctl start.
fn gated_start(t: &TestCluster, index: usize, gate: &Path) -> String {
    let command = format!(
        "while [ ! -e {gate} ] && [ -d {dir} ]; do sleep 0.1; done; [ -e {gate} ] || exit 1; exec {ctl} start",
        gate = gate.display(),
        dir = t.cluster.dir().display(),
        ctl = t.cluster.nodes()[index].ctl_path().display(),
    );
    format!(
        "    commands:\n      start: \"{}\"\n",
        command.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The classic roll (a stock TLS node cannot talk to a plain one): the first node switched is
/// alone on TLS until the second one is. The second node's start is held (by a file the test
/// creates) until the checker has measured a split outside the restart windows, so the result does
/// not depend on how fast the machine restarts nodes. Then the roll finishes: all links TLS.
#[test]
fn default_roll_splits_the_cluster_and_the_checker_sees_it() {
    let t = cluster_with("spl", 3, |spec| spec.sample_links = true);
    let plan = t.plan();
    let gate = t.cluster.dir().join("release-second-start");
    t.cluster.write_plan_with(|i| {
        if i == 1 {
            gated_start(&t, i, &gate)
        } else {
            String::new()
        }
    });
    wait_for_sampled_mesh(&t, "tcp", 0);
    let since = now_ms();
    let params = Params::new(WINDOW).since(since);
    let pinger = CtlPinger::start(&t.cluster, Duration::from_millis(300));

    let mut run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    let mut seen = 0.0;
    t.cluster
        .wait_until(
            "the checker to measure the islands' split",
            Duration::from_secs(120),
            || {
                seen = split_checker::check(&t.cluster.links_logs(), &[], &params).split_seconds;
                seen >= HELD_SPLIT_SECONDS || run.try_wait().unwrap().is_some()
            },
        )
        .unwrap();
    assert!(
        seen >= HELD_SPLIT_SECONDS,
        "distls ended before the checker saw a split: {}",
        describe(&run.wait_with_output().unwrap())
    );
    std::fs::write(&gate, "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_sampled_mesh(&t, "tls", now_ms());
    let pings = pinger.stop();

    let report = split_checker::check(&t.cluster.links_logs(), &pings, &params);
    println!("classic roll:\n{report}");
    assert!(
        !report.violations.is_empty(),
        "the TLS and plain islands cannot see each other: {report}"
    );
    assert!(report.split_seconds >= HELD_SPLIT_SECONDS, "{report}");
    assert!(
        report.split_seconds_with_windows >= report.split_seconds,
        "{report}"
    );
    // The first node switched is on one side of every violation (it is alone on TLS).
    let first = &t.node_names()[0];
    assert!(
        report
            .violations
            .iter()
            .all(|v| &v.node == first || &v.missing == first),
        "{report}"
    );
    assert_eq!(report.rejoins.len(), 3, "one restart per node: {report}");
    assert!(report.max_rejoin().unwrap().unwrap() > WINDOW, "{report}");
    assert!(report.final_links_all("tls"), "{report}");
    assert!(report.pings_counted > 0, "{report}");
    assert!(
        report.ping_failures.is_empty(),
        "a running node's own ctl always reaches it: {report}"
    );
}

/// A Mnesia cluster (disc_copies table on every node) comes up with every node `started` and the
/// table readable everywhere. In the classic roll a restarted node then stays `starting`: it waits
/// for tables held by plain nodes it cannot reach, until the last node switches; the plan's
/// `commands.ready` (`ctl started`) gate at the end then passes on every node.
#[test]
fn default_roll_with_mnesia_keeps_switched_nodes_starting_until_the_last_switches() {
    let t = cluster_with("spm", 3, |spec| spec.mnesia = true);
    let names = t.node_names();
    let mut sorted = names.clone();
    sorted.sort();
    let keys = |i: usize| -> Vec<String> {
        let out = t
            .cluster
            .ctl_ok(i, &["mnesia-keys"])
            .unwrap_or_else(|e| panic!("{}: {e}", names[i]));
        out.lines().map(str::to_owned).collect()
    };
    for i in 0..3 {
        let schema = t.cluster.nodes()[i].mnesia_dir().join("schema.DAT");
        assert!(schema.is_file(), "{} missing", schema.display());
        assert_eq!(t.cluster.status(i).as_deref(), Some("started"));
        assert_eq!(keys(i), sorted, "every node reads one row per node");
    }
    let plan_text = std::fs::read_to_string(t.plan()).unwrap();
    assert!(plan_text.contains("/bin/ctl started\""), "{plan_text}");

    let plan = t.plan();
    let run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    // Node 2 is being switched: node 1 has restarted on TLS and cannot load its tables.
    t.wait_until_node_touched(1);
    assert_eq!(t.cluster.status(0).as_deref(), Some("starting"));
    let started = t.cluster.ctl(0, &["started"]);
    assert_eq!(started.status.code(), Some(1), "{}", describe(&started));
    assert_eq!(
        stdout(&started),
        format!("Node {} is not started (status: starting)\n", names[0])
    );
    // Node 3 is being switched: nodes 1 and 2 see each other over TLS, and both still wait.
    t.wait_until_node_touched(2);
    assert_eq!(t.cluster.status(0).as_deref(), Some("starting"));
    assert_eq!(t.cluster.status(1).as_deref(), Some("starting"));

    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    for i in 0..3 {
        let started = t.cluster.ctl(i, &["started"]);
        assert!(started.status.success(), "{}", describe(&started));
        assert_eq!(keys(i), sorted);
    }
}
