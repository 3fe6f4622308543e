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
        let out = t.distls_env(&["migrate", plan], &[("DISTLS_FAILPOINT", point)]);
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
    let out = t.distls(&["migrate", plan]);
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
    let out = t.distls(&["migrate", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    let point = format!("{}:revert-restoring", t.node_names()[1]);
    let out = t.distls_env(&["rollback", plan], &[("DISTLS_FAILPOINT", &point)]);
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let out = t.distls(&["rollback", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}
