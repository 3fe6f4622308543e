use crate::support::*;

/// Node 3's start command fails whenever its vm.dist.args enables TLS: the roll must bring the
/// whole cluster back to one plain mesh with every file byte-identical to its original.
#[test]
fn a_start_that_fails_with_tls_rolls_the_cluster_back() {
    let t = cluster("fail", 3);
    let originals = t.dist_args_files();
    let failing_start = t.fails_with_tls(2, "start", "refusing to start with TLS");
    t.cluster.write_plan_with(|index| {
        if index == 2 {
            format!("    commands:\n      start: \"{failing_start}\"\n")
        } else {
            String::new()
        }
    });

    let out = t.distls(&["migrate", "--classic", t.plan().to_str().unwrap()]);
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
    let failing_start = t.fails_with_tls(1, "start", "refusing to start with TLS");
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!("    commands:\n      start: \"{failing_start}\"\n")
        } else {
            String::new()
        }
    });
    let plan = t.plan();
    let out = t.distls(&[
        "migrate",
        "--classic",
        "--on-failure",
        "pause",
        plan.to_str().unwrap(),
    ]);
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

/// Node 1's and node 2's `ctl stop` hang without stopping them (a test knob of the rehearsal
/// ctl), and node 2 ignores SIGTERM. distls escalates the way MongooseIM's `force_stop` does:
/// after `timeouts.stop`, SIGTERM to the node's OS pid (learned from the node), then SIGKILL after
/// `timeouts.kill_grace`; the roll completes, and the hung ctl processes are gone too.
#[test]
fn a_stop_that_hangs_is_escalated_to_sigterm_then_sigkill() {
    let t = cluster("hang", 3);
    let roots: Vec<_> = t.cluster.nodes().iter().map(|n| n.root.clone()).collect();
    // Node 2 reads the SIGTERM knob at boot: restart it with the knob in place.
    std::fs::write(roots[1].join("var/ignore-sigterm"), "").unwrap();
    t.cluster.ctl_ok(1, &["stop"]).unwrap();
    t.cluster.ctl_ok(1, &["start"]).unwrap();
    t.wait_for_mesh("inet_tcp", "tcp");
    for root in &roots[..2] {
        std::fs::write(root.join("var/stop-hangs"), "").unwrap();
    }
    t.cluster.write_plan_with(|index| {
        match index {
            // A plain VM exits within a few seconds of SIGTERM (init:stop).
            0 => "    timeouts:\n      stop: 5s\n      kill_grace: 20s\n".to_string(),
            1 => "    timeouts:\n      stop: 5s\n      kill_grace: 3s\n".to_string(),
            _ => String::new(),
        }
    });
    let os_pids: Vec<u32> = (0..2).map(|i| t.cluster.node_os_pid(i).unwrap()).collect();
    let plan = t.plan();
    let mut run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    let hung = wait_for_hung_stop(&t.cluster, &mut run, &roots[0]);
    let out = run.wait_with_output().unwrap();
    // Looked at while the knobs still exist: a `ctl stop` distls did not kill would still hang.
    let left: Vec<u32> = roots[..2].iter().flat_map(|r| ctl_stop_pids(r)).collect();
    for root in &roots[..2] {
        std::fs::remove_file(root.join("var/stop-hangs")).unwrap();
    }
    std::fs::remove_file(roots[1].join("var/ignore-sigterm")).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", stderr(&out));
    t.assert_mesh("inet_tls", "tls");
    let text = stderr(&out);
    assert!(
        text.contains(&format!("SIGTERM to OS pid {}", os_pids[0])),
        "{text}"
    );
    assert!(
        !text.contains(&format!("SIGKILL to OS pid {}", os_pids[0])),
        "node 1 stops on SIGTERM: {text}"
    );
    assert!(
        text.contains(&format!("SIGKILL to OS pid {}", os_pids[1])),
        "node 2 ignores SIGTERM: {text}"
    );
    assert!(text.contains("it took SIGKILL"), "{text}");
    let events = journal(&plan)["events"].to_string();
    for pid in &os_pids {
        assert!(
            events.contains(&format!("SIGTERM to OS pid {pid}")),
            "the escalation is in the journal: {events}"
        );
    }
    assert!(
        left.is_empty(),
        "the hung `ctl stop` processes (first seen: {hung:?}) were stopped with their process group; still running: {left:?}"
    );
}

/// Node 2 gets a certificate from another CA (a per-node `tls:` override in the plan, which the
/// preflight accepts: the certificate chains to that node's own cacertfile). It starts on TLS, but
/// its peers reject it and it rejects them, so it never rejoins within `timeouts.rejoin`.
fn plan_with_a_foreign_certificate_on_node_2(t: &TestCluster) {
    let foreign = distls::rehearsal::write_foreign_ca_cert(&t.cluster.dir().join("foreign-ssl"))
        .expect("foreign certificate");
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!(
                "    timeouts:\n      rejoin: 15s\n    tls:\n      certfile: \"{}\"\n      keyfile: \"{}\"\n      cacertfile: \"{}\"\n",
                foreign.certfile.display(),
                foreign.keyfile.display(),
                foreign.cacertfile.display()
            )
        } else {
            String::new()
        }
    });
}

#[test]
fn a_node_that_never_rejoins_rolls_the_cluster_back() {
    let t = cluster("norejoin", 3);
    let originals = t.dist_args_files();
    plan_with_a_foreign_certificate_on_node_2(&t);
    let plan = t.plan();
    let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let text = stderr(&out);
    let second = &t.node_names()[1];
    assert!(
        text.contains(&format!("node {second}: it did not rejoin within 15s")),
        "names the node and the wait: {}",
        describe(&out)
    );
    assert!(text.contains("rolled back"), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    let journal = journal(&plan);
    assert_eq!(journal["phase"], "rolled_back");
    for node in journal["nodes"].as_array().unwrap() {
        if node["name"] != t.node_names()[2].as_str() {
            assert_eq!(node["step"], "reverted", "{node}");
        }
    }
}

#[test]
fn a_node_that_never_rejoins_pauses_and_rollback_reverts_it() {
    let t = cluster("norejoinp", 3);
    let originals = t.dist_args_files();
    plan_with_a_foreign_certificate_on_node_2(&t);
    let plan = t.plan();
    let out = t.distls(&[
        "migrate",
        "--classic",
        "--on-failure",
        "pause",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(stderr(&out).contains("paused"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("it did not rejoin within 15s"),
        "{}",
        describe(&out)
    );
    assert_eq!(journal(&plan)["phase"], "paused");
    // Paused: node 2 still runs TLS (alone), node 1 TLS, node 3 plain.
    assert_eq!(t.cluster.links(1).unwrap().proto_dist, "inet_tls");
    assert_eq!(t.cluster.links(2).unwrap().proto_dist, "inet_tcp");

    let back = t.distls(&["rollback", plan.to_str().unwrap()]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
}

/// A tmpfs mounted for one test and unmounted (by its path) when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// `None` (with the reason) where mounting is not permitted here.
    fn mount(path: &std::path::Path, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// The state directory cannot take the journal: a path under a regular file (ENOTDIR), a
/// read-only filesystem (EROFS, which stops root too), a full one (ENOSPC), and one with less free
/// space than the run's journal needs. Each time `distls migrate` fails before any node is stopped,
/// naming the path and what to do; no node restarted, no node file changed.
#[test]
fn an_unusable_state_directory_fails_before_any_node_is_stopped() {
    let t = cluster("statedir", 3);
    let before = t.file_hashes();
    let pids: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    let plan = t.plan();
    let scratch = tempfile::Builder::new()
        .prefix("distls-statedir-")
        .tempdir()
        .unwrap();
    let migrate_with_state_dir = |dir: &std::path::Path, expect: &[&str]| {
        let out = t.distls(&[
            "migrate",
            "--classic",
            "--state-dir",
            dir.to_str().unwrap(),
            plan.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let text = stderr(&out);
        for fragment in expect {
            assert!(
                text.contains(fragment),
                "{fragment:?} in {}",
                describe(&out)
            );
        }
        assert!(text.contains("hint:"), "{}", describe(&out));
        eprintln!("{text}");
        assert!(
            !text.contains("stopping"),
            "no node was stopped: {}",
            describe(&out)
        );
    };

    let file = scratch.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("state");
    migrate_with_state_dir(
        &under_file,
        &[
            under_file.to_str().unwrap(),
            "not a directory",
            "--state-dir",
        ],
    );

    let mut skipped = Vec::new();
    match Tmpfs::mount(&scratch.path().join("ro"), "size=1m,ro") {
        Ok(ro) => migrate_with_state_dir(
            &ro.path.join("state"),
            &[ro.path.to_str().unwrap(), "Read-only file system"],
        ),
        Err(why) => skipped.push(format!("read-only state directory: mount failed: {why}")),
    }
    match Tmpfs::mount(&scratch.path().join("full"), "size=64k") {
        Ok(full) => {
            let filler = std::fs::write(full.path.join("filler"), vec![0u8; 128 * 1024]);
            assert!(filler.is_err(), "the tmpfs is full");
            migrate_with_state_dir(&full.path, &["No space left on device"]);
        }
        Err(why) => skipped.push(format!("full state directory: mount failed: {why}")),
    }
    match Tmpfs::mount(&scratch.path().join("small"), "size=64k") {
        Ok(small) => migrate_with_state_dir(
            &small.path,
            &[small.path.to_str().unwrap(), "bytes free", "needs"],
        ),
        Err(why) => skipped.push(format!("small state directory: mount failed: {why}")),
    }
    for why in &skipped {
        eprintln!("SKIPPED (not possible on this machine): {why}");
    }

    assert_eq!(t.file_hashes(), before, "no node file changed");
    let after: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    assert_eq!(pids, after, "no node restarted");
    t.assert_mesh("inet_tcp", "tcp");
}

/// Replace `path` atomically (temp file + rename), as an operator's deploy tool would.
fn replace_file(path: &std::path::Path, from: &std::path::Path) {
    let temp = path.with_extension("swap-tmp");
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Node 2's certificate and key (its own per-node `tls:` files, a copy of the cluster's that the
/// preflight accepts) are replaced, once the roll has reached node 2, by ones from another CA.
/// It starts on TLS, but nobody accepts it: not its peers, not distls's probes, not its own ctl.
/// distls sees its VM running but unreachable (registered with epmd), fails the start, and rolls
/// back: node 2's `ctl stop` cannot reach it either, so distls finds the VM listening on the port
/// epmd gives for it and escalates (SIGTERM); then one plain mesh, every file byte-identical.
#[test]
fn a_node_that_everyone_rejects_is_stopped_by_pid_and_rolled_back() {
    let t = cluster("rejected", 3);
    let originals = t.dist_args_files();
    let own = t.cluster.dir().join("node2-ssl");
    std::fs::create_dir_all(&own).unwrap();
    let tls = t.cluster.tls_files().clone();
    let (cert, key, ca) = (
        own.join("cert.pem"),
        own.join("key.pem"),
        own.join("cacert.pem"),
    );
    for (from, to) in [
        (&tls.certfile, &cert),
        (&tls.keyfile, &key),
        (&tls.cacertfile, &ca),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!(
                "    timeouts:\n      start: 20s\n      stop: 10s\n      kill_grace: 10s\n    tls:\n      certfile: \"{}\"\n      keyfile: \"{}\"\n      cacertfile: \"{}\"\n",
                cert.display(),
                key.display(),
                ca.display()
            )
        } else {
            String::new()
        }
    });
    let plan = t.plan();
    let run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    t.wait_until_node_touched(1);
    let foreign = distls::rehearsal::write_foreign_ca_cert(&t.cluster.dir().join("foreign-ssl"))
        .expect("foreign certificate");
    replace_file(&key, &foreign.keyfile);
    replace_file(&cert, &foreign.certfile);
    let out = run.wait_with_output().unwrap();
    eprintln!("{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let text = stderr(&out);
    let second = &t.node_names()[1];
    assert!(
        text.contains(&format!(
            "node {second}: it is unreachable 20s after its start command (expected tls)"
        )) && text.contains("registered with epmd"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("SIGTERM to OS pid"),
        "stopped by pid: {}",
        describe(&out)
    );
    assert!(text.contains("rolled back"), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
}

/// Rollback under a fault: node 3's start fails with TLS, and by then node 1's `ctl stop` hangs
/// (the knob is set once node 1 is verified). The rollback escalates on node 1 (SIGTERM to its
/// OS pid) and still brings the whole cluster back to one plain mesh, files byte-identical.
#[test]
fn a_rollback_whose_stop_hangs_escalates_and_still_converges() {
    let t = cluster("rbhang", 3);
    let originals = t.dist_args_files();
    let roots: Vec<_> = t.cluster.nodes().iter().map(|n| n.root.clone()).collect();
    let failing_start = t.fails_with_tls(2, "start", "refusing to start with TLS");
    t.cluster.write_plan_with(|index| match index {
        0 => "    timeouts:\n      stop: 5s\n      kill_grace: 20s\n".to_string(),
        2 => format!("    commands:\n      start: \"{failing_start}\"\n"),
        _ => String::new(),
    });
    let plan = t.plan();
    let first = t.node_names()[0].clone();
    let run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    t.wait_for_step(&first, "verified on TLS", |step| step == "verified");
    std::fs::write(roots[0].join("var/stop-hangs"), "").unwrap();
    let os_pid = t.cluster.node_os_pid(0).unwrap();
    let out = run.wait_with_output().unwrap();
    // Looked at while the knob still exists: a `ctl stop` distls did not kill would still hang.
    let left = ctl_stop_pids(&roots[0]);
    std::fs::remove_file(roots[0].join("var/stop-hangs")).unwrap();
    eprintln!("{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("refusing to start with TLS"), "{text}");
    assert!(
        text.contains(&format!("SIGTERM to OS pid {os_pid}")),
        "the rollback escalated on node 1: {text}"
    );
    assert!(text.contains("rolled back"), "{text}");
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
    assert!(left.is_empty(), "no hung ctl stop left: {left:?}");
}

/// Node 2's own ctl cannot reach it once TLS is on: the verify step fails at its first ping after
/// the node is up (it does not wait for the background ping to give up) and the cluster goes back
/// to one plain mesh with every file byte-identical.
#[test]
fn a_ctl_that_cannot_reach_the_tls_node_rolls_the_cluster_back() {
    let t = cluster("noping", 3);
    let originals = t.dist_args_files();
    let failing_ping = t.fails_with_tls(1, "ping", "ctl: cannot reach the node over TLS");
    t.cluster.write_plan_with(|index| {
        if index == 1 {
            format!(
                "    commands:\n      ping: \"{failing_ping}\"\n    timeouts:\n      start: 120s\n      rejoin: 120s\n"
            )
        } else {
            String::new()
        }
    });

    let started = std::time::Instant::now();
    let out = t.distls(&["migrate", "--classic", t.plan().to_str().unwrap()]);
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
    let out = t.distls(&["migrate", "--classic", t.plan().to_str().unwrap()]);
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
