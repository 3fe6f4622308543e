use crate::support::*;
use std::os::unix::process::ExitStatusExt;

/// distls is SIGKILLed right after the journal records a step (a test-build failpoint), at a
/// different step of a different node each time; every rerun picks up from the real state.
#[test]
fn kill_nine_at_several_steps_then_rerun_completes() {
    let t = cluster("kill", 3);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let names = t.node_names();
    let crash_points = [
        format!("{}:stopping", names[0]),
        format!("{}:stopped", names[0]),
        format!("{}:edited", names[1]),
        format!("{}:starting", names[1]),
        format!("{}:started", names[2]),
        format!("{}:rejoined", names[2]),
    ];
    for point in &crash_points {
        let out = t.distls_env(
            &["migrate", "--classic", plan],
            &[("DISTLS_FAILPOINT", point)],
        );
        assert_eq!(
            out.status.signal(),
            Some(9),
            "expected a SIGKILL at {point}: {}",
            describe(&out)
        );
        let journal = journal(t.plan().as_path());
        let node = point.split(':').next().unwrap();
        let step = point.split(':').nth(1).unwrap();
        let record = journal["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap();
        assert_eq!(
            record["step"], step,
            "journal written before the kill at {point}"
        );
    }
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    for node in 0..3 {
        assert!(t.cluster.ctl(node, &["ping"]).status.success());
    }
}

/// A crash in the middle of a rollback: the rerun finishes the rollback.
#[test]
fn a_killed_rollback_resumes() {
    let t = cluster("kback", 3);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    let point = format!("{}:revert-restoring", t.node_names()[1]);
    let out = t.distls_env(&["rollback", plan], &[("DISTLS_FAILPOINT", &point)]);
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let out = t.distls(&["rollback", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}

/// Every crash point of a 3-node roll, in order: SIGKILL right before and right after each
/// journal write of a node step (named by the journal's event count, which goes on across runs);
/// each rerun resumes from what the nodes really are and is killed at the next write, until a run
/// completes. At the end every link is TLS and every backup holds the original.
#[test]
fn a_crash_at_every_step_boundary_converges() {
    let t = cluster("every", 3);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let (points, finished) =
        crash_at_every_write(&t, &["migrate", "--classic", plan.to_str().unwrap()]);
    let killed = points.len();
    assert!(finished.status.success(), "{}", describe(&finished));
    t.assert_mesh("inet_tls", "tls");
    t.assert_backups_are(&originals);
    eprintln!("roll: {killed} crash points tried, {killed} converged");
    // 3 nodes × 8 steps × (before, after), less the "after" of stopped, edited and started: a
    // rerun killed just before those writes sees the effect done and moves on without writing them.
    assert!(killed >= 39, "every step write was crash-tested ({killed})");
}

/// Run `args` again and again, each run SIGKILLed at the first crash point (before or after a
/// step's journal write) not tried yet, until a run ends by itself. Returns the points tried.
fn crash_at_every_write(t: &TestCluster, args: &[&str]) -> (Vec<String>, std::process::Output) {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let seen_list = seen.join(",");
        let out = t.distls_env(
            args,
            &[
                ("DISTLS_FAILPOINT", "walk"),
                ("DISTLS_FAILPOINT_SEEN", &seen_list),
            ],
        );
        if out.status.signal() != Some(9) {
            let failure = journal_if_any(&t.plan()).map(|j| j["failure"].to_string());
            eprintln!(
                "after {} crash points ({}), the run ended by itself; journal failure: {failure:?}",
                seen.len(),
                seen.join(", ")
            );
            return (seen, out);
        }
        let point = stderr(&out)
            .lines()
            .find_map(|l| l.strip_prefix("failpoint: "))
            .unwrap_or_else(|| panic!("a killed run names its failpoint: {}", describe(&out)))
            .to_string();
        assert!(!seen.contains(&point), "{point} fired twice");
        assert!(
            journal_if_any(&t.plan()).is_some(),
            "the journal stays readable after a kill at {point}"
        );
        seen.push(point);
        assert!(seen.len() < 300, "the run never finishes");
    }
}

/// A roll paused at a failing node, then `distls rollback` killed right before and right after
/// every journal write it makes, in order (the journal's event count names them): each rerun
/// resumes, and the cluster ends plain with every file byte-identical.
#[test]
fn a_crash_at_every_rollback_step_converges() {
    let t = cluster("everyback", 3);
    let originals = t.dist_args_files();
    let third = t.cluster.nodes()[2].root.join("bin/ctl");
    let failing_start = format!(
        "if grep -q '^-proto_dist inet_tls' {}; then exit 1; fi; exec {} start",
        t.dist_args_path(2).display(),
        third.display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 2 {
            format!("    commands:\n      start: \"{failing_start}\"\n")
        } else {
            String::new()
        }
    });
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--classic", "--on-failure", "pause", plan]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));

    let (points, finished) = crash_at_every_write(&t, &["rollback", plan]);
    let killed = points.len();
    assert!(finished.status.success(), "{}", describe(&finished));
    assert_eq!(journal(t.plan().as_path())["phase"], "rolled_back");
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    eprintln!("rollback: {killed} crash points tried, all converged");
    assert!(
        killed >= 20,
        "every rollback write was crash-tested ({killed})"
    );
}

/// Zero-split: every crash point of both rolls (the restarts into the module, the seal at run
/// time, and the journal write between them), in order; each rerun of `migrate --zero-split`
/// resumes from what the nodes really are. At the end every link is TLS, every node sealed, the
/// module is gone from disk and every backup holds the original.
#[test]
fn a_zero_split_run_crashed_at_every_step_of_every_roll_converges() {
    let t = cluster("zsevery", 2);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let (points, finished) =
        crash_at_every_write(&t, &["migrate", "--zero-split", plan.to_str().unwrap()]);
    assert!(finished.status.success(), "{}", describe(&finished));
    t.assert_mesh("distls_hybrid", "tls");
    t.assert_backups_are(&originals);
    for node in 0..originals.len() {
        let module = t.cluster.nodes()[node].root.join("etc/distls-hybrid");
        assert!(!module.exists(), "node {node}: module removed");
    }
    for stage in ["h", "c"] {
        assert!(
            points.iter().any(|p| p.starts_with(&format!("{stage}:"))),
            "roll to {stage} was crash-tested: {points:?}"
        );
    }
    assert!(
        points.iter().any(|p| p.starts_with("next:")),
        "the switch between rolls was crash-tested: {points:?}"
    );
    eprintln!(
        "zero-split: {} crash points tried, all converged",
        points.len()
    );
    assert!(
        points.iter().any(|p| p.contains(":sealing")),
        "the seal was crash-tested: {points:?}"
    );
    assert!(
        points.len() >= 2 * 13 + 2 + 2 * 8,
        "every step write of both rolls ({})",
        points.len()
    );
}
