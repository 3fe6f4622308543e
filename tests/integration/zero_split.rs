//! `migrate --zero-split`: three rolls through the hybrid module on real nodes, never split.

use crate::support::*;
use std::path::PathBuf;

fn module_dir(t: &TestCluster, node: usize) -> PathBuf {
    t.cluster.nodes()[node].root.join("etc/distls-hybrid")
}

/// Every node ends on stock TLS, the hybrid module is gone from every host, every backup holds
/// the original.
fn assert_finished_on_tls(t: &TestCluster, originals: &[Vec<u8>]) {
    t.assert_mesh("inet_tls", "tls");
    for (node, original) in originals.iter().enumerate() {
        let text = std::fs::read_to_string(t.dist_args_path(node)).unwrap();
        assert!(
            text.contains("\n-proto_dist inet_tls\n") && !text.contains("distls_hybrid"),
            "node {node} ends on stock inet_tls:\n{text}"
        );
        let backup = format!("{}.distls-orig", t.dist_args_path(node).display());
        assert_eq!(&std::fs::read(backup).unwrap(), original, "backup of node {node}");
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
    let out = t.distls(&["migrate", "--zero-split", "--dry-run", t.plan().to_str().unwrap()]);
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
        assert!(!module_dir(&t, node).exists(), "no module installed by a dry run");
    }
    assert!(journal_if_any(&t.plan()).is_none(), "no journal either");
}

#[test]
fn three_nodes_go_to_tls_through_both_hybrid_stages() {
    let t = cluster("zs3", 3);
    let originals = t.dist_args_files();
    let out = t.distls(&["migrate", "--zero-split", t.plan().to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    for roll in [
        "roll plain tcp → A (hybrid, dials tcp)",
        "roll A (hybrid, dials tcp) → B (hybrid, dials tls)",
        "roll B (hybrid, dials tls) → tls",
    ] {
        assert!(err.contains(roll), "{roll} ran:\n{err}");
    }
    assert_finished_on_tls(&t, &originals);
}

/// `distls rollback` after a finished zero-split run goes back one stage at a time: C → B → A →
/// plain, one mesh throughout, every file byte-identical at the end.
#[test]
fn rollback_of_a_finished_run_goes_back_through_b_and_a() {
    let t = cluster("zsback", 3);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--zero-split", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    let back = t.distls(&["rollback", plan]);
    assert!(back.status.success(), "{}", describe(&back));
    let err = stderr(&back);
    for roll in [
        "roll B (hybrid, dials tls) → A (hybrid, dials tcp)",
        "roll A (hybrid, dials tcp) → plain tcp",
    ] {
        assert!(err.contains(roll), "{roll} ran:\n{err}");
    }
    assert_back_on_plain(&t, &originals);
}

/// Node 2 refuses to start once it would dial TLS (phase B): that roll goes back to A, then the
/// run goes back to plain.
#[test]
fn a_failure_in_phase_b_goes_back_to_plain() {
    let t = cluster("zsfail", 3);
    let originals = t.dist_args_files();
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
    let out = t.distls(&["migrate", "--zero-split", t.plan().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
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
