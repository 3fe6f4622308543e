use crate::support::*;

#[test]
fn migrates_a_three_node_cluster_and_rolls_it_back() {
    let t = cluster("mig", 3);
    let originals: Vec<Vec<u8>> = (0..3)
        .map(|i| std::fs::read(t.dist_args_path(i)).unwrap())
        .collect();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();

    let out = t.distls(&["migrate", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    for node in 0..3 {
        let ping = t.cluster.ctl(node, &["ping"]);
        assert!(
            ping.status.success(),
            "the node's own ctl must reach it over TLS: {ping:?}"
        );
        let text = std::fs::read_to_string(t.dist_args_path(node)).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("-proto_dist inet_tls")),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("#") && l.contains("server_verify")),
            "whole block uncommented:\n{text}"
        );
    }
    assert_eq!(journal(t.plan().as_path())["phase"], "completed");

    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    for name in t.node_names() {
        let row: Vec<String> = stdout(&status)
            .lines()
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("status lists {name}: {}", stdout(&status)))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(
            &row[1..4],
            ["verified", "tls", "tls"],
            "journal step, file, live transport of {name}"
        );
    }

    // Running it again is a no-op that still verifies the mesh.
    let again = t.distls(&["migrate", plan]);
    assert!(again.status.success(), "{}", describe(&again));

    let back = t.distls(&["rollback", plan]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    for (node, original) in originals.iter().enumerate() {
        assert_eq!(
            &std::fs::read(t.dist_args_path(node)).unwrap(),
            original,
            "node {node} file restored byte for byte"
        );
    }
}

#[test]
fn dry_run_changes_nothing_and_shows_the_diff() {
    let t = cluster("dry", 3);
    let before = t.file_hashes();
    let pids: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    let out = t.distls(&["migrate", "--dry-run", t.plan().to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("+-proto_dist inet_tls"), "{text}");
    assert!(text.contains("-#-proto_dist inet_tls"), "{text}");
    assert!(
        text.contains("+              server_verify     verify_peer"),
        "continuation lines are uncommented too:\n{text}"
    );
    assert!(text.contains("node 3/3"), "{text}");
    assert_eq!(t.file_hashes(), before, "dry run wrote nothing");
    assert!(
        !t.plan().parent().unwrap().join(".distls").exists(),
        "no journal from a dry run"
    );
    let after: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    assert_eq!(pids, after, "no node restarted");
    t.assert_mesh("inet_tcp", "tcp");
}

#[test]
fn a_second_concurrent_run_is_refused() {
    let t = cluster("lock", 3);
    let plan = t.plan();
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(["migrate", plan.to_str().unwrap()])
        .envs(t.cluster.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = plan
        .parent()
        .unwrap()
        .join(".distls")
        .join("test-lock.lock");
    let first_pid = first.id().to_string();
    t.cluster
        .wait_until(
            "first run holds the lock",
            std::time::Duration::from_secs(30),
            || std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == first_pid),
        )
        .unwrap();
    let second = t.distls(&["migrate", plan.to_str().unwrap()]);
    let status = first.wait().unwrap();
    assert_eq!(second.status.code(), Some(6), "{}", describe(&second));
    assert!(
        stderr(&second).contains(&format!("pid {first_pid}")),
        "{}",
        describe(&second)
    );
    assert!(status.success(), "the first run is unaffected");
    t.assert_mesh("inet_tls", "tls");
}
