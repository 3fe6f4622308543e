use crate::support::*;

#[test]
fn migrates_a_three_node_cluster_and_rolls_it_back() {
    let t = cluster("mig", 3);
    let originals = t.dist_args_files();
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
    t.assert_files_are(&originals);
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
    assert!(
        text.contains("preflight: ") && text.contains(" 0 FAIL"),
        "the preflight is shown as information:\n{text}"
    );
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
    let first = t.spawn_distls(&["migrate", plan.to_str().unwrap()]);
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
    let status = first.wait_with_output().unwrap().status;
    assert_eq!(second.status.code(), Some(6), "{}", describe(&second));
    assert!(
        stderr(&second).contains(&format!("pid {first_pid}")),
        "{}",
        describe(&second)
    );
    assert!(status.success(), "the first run is unaffected");
    t.assert_mesh("inet_tls", "tls");
}

/// Ctrl-C (SIGINT to distls alone, as a terminal's process group would not reach the nodes'
/// commands, which run in their own groups): stop at a safe point, exit 130, resume on rerun.
#[test]
fn ctrl_c_stops_at_a_safe_point_and_the_rerun_resumes() {
    let t = cluster("intr", 3);
    let plan = t.plan();
    let run = t.spawn_distls(&["migrate", plan.to_str().unwrap()]);
    t.wait_until_node_touched(1);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGINT) };
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rerun the same command to resume"),
        "{}",
        describe(&out)
    );
    assert_eq!(journal(&plan)["phase"], "migrating");

    let out = t.distls(&["migrate", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
}

/// The cookie never shows up in distls's output, logs (even at debug), journal, or the argv of
/// the probe VMs it starts.
#[test]
fn the_cookie_stays_secret() {
    let t = cluster("secret", 3);
    let cookie = t.cluster.cookie().to_string();
    let plan = t.plan();
    let run = t.spawn_distls_env(
        &["migrate", plan.to_str().unwrap()],
        &[("RUST_LOG", "distls=trace")],
    );
    let mut probes_seen = 0;
    t.cluster
        .wait_until(
            "probe VMs are running",
            std::time::Duration::from_secs(60),
            || {
                let argvs = probe_argvs();
                probes_seen = probes_seen.max(argvs.len());
                for argv in &argvs {
                    assert!(
                        !argv.contains(&cookie),
                        "the cookie is in a probe's argv: {argv}"
                    );
                }
                probes_seen >= 2
            },
        )
        .unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).contains(&cookie) && !stderr(&out).contains(&cookie));
    let journal_text = journal(&plan).to_string();
    assert!(!journal_text.contains(&cookie));
}

fn probe_argvs() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
            if argv.contains("distls_probe_") {
                out.push(argv);
            }
        }
    }
    out
}
