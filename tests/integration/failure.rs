use crate::support::*;

/// Node 3's start command fails whenever its vm.dist.args enables TLS: the roll must bring the
/// whole cluster back to one plain mesh with every file byte-identical to its original.
#[test]
fn a_start_that_fails_with_tls_rolls_the_cluster_back() {
    let t = cluster("fail", 3);
    let originals = t.dist_args_files();
    let third = &t.cluster.nodes()[2];
    let failing_start = format!(
        "if grep -q '^-proto_dist inet_tls' {args}; then echo 'refusing to start with TLS' >&2; exit 1; fi; exec {ctl} start",
        args = t.dist_args_path(2).display(),
        ctl = third.root.join("bin/ctl").display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 2 {
            format!(
                "    commands:\n      start: \"{}\"\n",
                failing_start.replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            String::new()
        }
    });

    let out = t.distls(&["migrate", t.plan().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refusing to start with TLS"),
        "the start command's stderr is shown: {}",
        describe(&out)
    );
    assert!(stderr(&out).contains("rolled back"), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(t.plan().as_path())["phase"], "rolled_back");
}

/// With `--on-failure pause` nothing is reverted; `distls rollback` does it afterwards.
#[test]
fn pause_leaves_the_cluster_for_the_operator_and_rollback_reverts_it() {
    let t = cluster("pause", 3);
    let originals = t.dist_args_files();
    let second = &t.cluster.nodes()[1];
    let failing_start = format!(
        "if grep -q '^-proto_dist inet_tls' {args}; then exit 1; fi; exec {ctl} start",
        args = t.dist_args_path(1).display(),
        ctl = second.root.join("bin/ctl").display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!("    commands:\n      start: \"{failing_start}\"\n")
        } else {
            String::new()
        }
    });
    let plan = t.plan();
    let out = t.distls(&["migrate", "--on-failure", "pause", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(stderr(&out).contains("paused"), "{}", describe(&out));
    let journal_now = journal(plan.as_path());
    assert_eq!(journal_now["phase"], "paused");
    assert_ne!(
        std::fs::read(t.dist_args_path(1)).unwrap(),
        originals[1],
        "paused: node 2's file still enables TLS"
    );

    let back = t.distls(&["rollback", plan.to_str().unwrap()]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}

/// Node 2's own ctl cannot reach it once TLS is on: the verify step fails at its first ping after
/// the node is up (it does not wait for the background ping to give up) and the cluster goes back
/// to one plain mesh with every file byte-identical.
#[test]
fn a_ctl_that_cannot_reach_the_tls_node_rolls_the_cluster_back() {
    let t = cluster("noping", 3);
    let originals = t.dist_args_files();
    let second = &t.cluster.nodes()[1];
    let failing_ping = format!(
        "if grep -q '^-proto_dist inet_tls' {args}; then echo 'ctl: cannot reach the node over TLS' >&2; exit 1; fi; exec {ctl} ping",
        args = t.dist_args_path(1).display(),
        ctl = second.root.join("bin/ctl").display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!(
                "    commands:\n      ping: \"{}\"\n    timeouts:\n      start: 120s\n      rejoin: 120s\n",
                failing_ping.replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            String::new()
        }
    });

    let started = std::time::Instant::now();
    let out = t.distls(&["migrate", t.plan().to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stderr(&out).contains("its ctl cannot reach it")
            && stderr(&out).contains("cannot reach the node over TLS"),
        "the ping's own words are shown: {}",
        describe(&out)
    );
    // Waiting for the background ping to give up would take start + rejoin = 240 s.
    assert!(
        took < std::time::Duration::from_secs(200),
        "the failure waited for the background ping: {took:?}"
    );
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(t.plan().as_path())["phase"], "rolled_back");
}
