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

/// A node migrated earlier dies while a later node waits to rejoin (with Mnesia disc tables,
/// RabbitMQ's VM exits after its table wait): distls names the dead node at once, not after the
/// rejoin timeout, and rolls every touched node back.
#[test]
fn a_migrated_node_that_dies_mid_roll_stops_the_roll() {
    let t = cluster("dies", 3);
    let originals = t.dist_args_files();
    let first_pid_file = t.cluster.nodes()[0].pid_file();
    let third = &t.cluster.nodes()[2];
    // Node 3's stop command first kills node 1 (restarted on TLS by then), by its pid.
    let stop = format!(
        "kill -9 $(cat {pids}) 2>/dev/null; exec {ctl} stop",
        pids = first_pid_file.display(),
        ctl = third.root.join("bin/ctl").display()
    );
    t.cluster.write_plan_with(|index| {
        if index == 2 {
            format!("    commands:\n      stop: \"{stop}\"\n")
        } else {
            String::new()
        }
    });
    let started = std::time::Instant::now();
    let out = t.distls(&["migrate", t.plan().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let name = &t.node_names()[0];
    assert!(
        stderr(&out).contains(&format!(
            "node {name} was migrated earlier in this roll but is now down"
        )),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("rolled back"), "{}", describe(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(100),
        "named before the 120 s rejoin timeout"
    );
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}
