use crate::sshd::TestSshd;
use crate::support::*;

/// Rewrite the cluster's plan so every node is reached through the test sshd.
fn plan_over_ssh(t: &TestCluster, sshd: &TestSshd, identity: &str, known_hosts: &str) {
    let plan = t.plan();
    let text = std::fs::read_to_string(&plan).unwrap();
    let settings = sshd.plan_settings(identity, known_hosts, &t.cluster.env());
    assert!(text.contains("  transport: local\n"), "{text}");
    std::fs::write(&plan, text.replace("  transport: local\n", &settings)).unwrap();
}

/// The same 3-node cluster as the local tests, every file edit, command and probe VM going
/// through a real sshd: migrate, then roll back.
#[test]
fn migrates_and_rolls_back_over_ssh() {
    let t = cluster("sshmig", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();

    // The preflight reaches every node's files, OTP and certificates through the same connection.
    let check = t.distls(&["check", "--handshake", plan]);
    assert!(check.status.success(), "{}", describe(&check));
    assert!(stdout(&check).contains("0 FAIL"), "{}", describe(&check));

    let dry = t.distls(&["migrate", "--classic", "--dry-run", plan]);
    assert!(dry.status.success(), "{}", describe(&dry));
    assert!(
        stdout(&dry).contains("+-proto_dist inet_tls"),
        "{}",
        describe(&dry)
    );

    let started = std::time::Instant::now();
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!(
        "migration over ssh took {:.1}s\n{}",
        started.elapsed().as_secs_f64(),
        stderr(&out)
    );
    t.assert_mesh("inet_tls", "tls");
    for (node, original) in originals.iter().enumerate() {
        assert!(t.cluster.ctl(node, &["ping"]).status.success());
        let backup = format!("{}.distls-orig", t.dist_args_path(node).display());
        assert_eq!(
            &std::fs::read(&backup).unwrap(),
            original,
            "backup next to the file on the node's host"
        );
    }

    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));

    let back = t.distls(&["rollback", plan]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}

/// Strict host-key checking by default; a key the server does not accept is named as such.
/// Nothing is touched in either case.
#[test]
fn unknown_host_keys_and_refused_user_keys_are_explained() {
    let t = cluster("sshkeys", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    let before = t.file_hashes();
    let plan_text = std::fs::read_to_string(t.plan()).unwrap();

    plan_over_ssh(&t, &sshd, "user_key", "empty_known_hosts");
    let out = t.distls(&["migrate", "--classic", t.plan().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stderr(&out).contains("127.0.0.1"),
        "names the host: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("known_hosts"),
        "says what to do: {}",
        describe(&out)
    );

    std::fs::write(t.plan(), &plan_text).unwrap();
    plan_over_ssh(&t, &sshd, "stranger_key", "known_hosts");
    let out = t.distls(&["migrate", "--classic", t.plan().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused the key"),
        "{}",
        describe(&out)
    );

    std::fs::write(t.plan(), &plan_text).unwrap();
    let mut after = t.file_hashes();
    // The sshd's own files and distls's lock file are not the cluster's.
    let cluster_file = |p: &std::path::PathBuf| {
        !p.starts_with(&sshd.dir) && !p.to_string_lossy().contains("/.distls/")
    };
    after.retain(|p, _| cluster_file(p));
    let mut before = before;
    before.retain(|p, _| cluster_file(p));
    assert_eq!(after, before, "nothing touched");
    t.assert_mesh("inet_tcp", "tcp");
}

/// distls killed (SIGKILL, so its SSH master is orphaned) in the middle of a node's start over
/// SSH: the rerun reconnects and completes.
#[cfg(feature = "failpoints")]
#[test]
fn a_run_killed_mid_step_over_ssh_resumes() {
    use std::os::unix::process::ExitStatusExt;
    let t = cluster("sshkill", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let plan = t.plan();
    let point = format!("{}:starting", t.node_names()[1]);
    let out = t.distls_env(
        &["migrate", "--classic", plan.to_str().unwrap()],
        &[("DISTLS_FAILPOINT", &point)],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
}

/// The SSH connection itself dies mid-roll (its ControlMaster is killed): the step fails with
/// the SSH error, the journal stays consistent (paused), and the rerun reconnects and completes.
#[test]
fn a_dropped_ssh_connection_fails_the_step_and_the_rerun_completes() {
    let t = cluster("sshdrop", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let plan = t.plan();
    let run = t.spawn_distls(&[
        "migrate",
        "--classic",
        "--on-failure",
        "pause",
        plan.to_str().unwrap(),
    ]);
    t.wait_until_node_touched(1);
    let master =
        ssh_master_pid(sshd.port).expect("distls's ControlMaster for the test sshd is running");
    // SAFETY: the pid was identified by its exact command line (-M, our port) a moment ago.
    unsafe { libc::kill(master as libc::pid_t, libc::SIGKILL) };
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stderr(&out).contains("127.0.0.1"),
        "the failure names the host: {}",
        describe(&out)
    );
    assert_eq!(journal(&plan)["phase"], "paused");

    let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
}

fn ssh_master_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_master = argv.first().is_some_and(|a| a.ends_with("ssh"))
                && argv.iter().any(|a| a == "-M")
                && argv.windows(2).any(|w| w[0] == "-p" && w[1] == port);
            is_master.then_some(pid)
        })
}

/// The host itself becomes unreachable mid-roll (its sshd and every session it forked are
/// killed, new connections are refused): distls cannot roll back the nodes on it, so it stops
/// with exit 5, the journal consistent (`rolling_back`), and a message that gives every node's
/// journal step and what it could see, and the command to run next. Once the host is back,
/// `distls rollback` converges: one plain mesh, every file byte-identical.
#[test]
fn an_unreachable_host_mid_roll_stops_with_a_consistent_journal_and_rollback_converges() {
    let t = cluster("sshgone", 3);
    let mut sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let originals = t.dist_args_files();
    let plan = t.plan();
    let run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    t.wait_until_node_touched(1);
    sshd.kill_all();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert_eq!(
        journal(&plan)["phase"],
        "rolling_back",
        "{}",
        describe(&out)
    );
    assert_every_node_state_is_named(&out, &plan, "rollback");
    eprintln!("{}", stderr(&out));

    sshd.restart();
    let back = t.distls(&["rollback", plan.to_str().unwrap()]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
}

/// The message lists every node with its journal step, says it cannot be reached (naming the
/// host), and gives the command to run next.
fn assert_every_node_state_is_named(
    out: &std::process::Output,
    plan: &std::path::Path,
    next: &str,
) {
    let text = stderr(out);
    for record in journal(plan)["nodes"].as_array().unwrap() {
        let (name, step) = (
            record["name"].as_str().unwrap(),
            record["step"].as_str().unwrap(),
        );
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("the message lists {name}: {}", describe(out)));
        assert!(
            line.contains(&format!("journal {step} ")),
            "{name}'s line gives its journal step {step}: {line}"
        );
        assert!(
            line.contains("cannot reach it") && line.contains("127.0.0.1"),
            "{name}'s line says it cannot be reached, naming the host: {line}"
        );
    }
    assert!(
        text.contains(&format!("distls {next} {}", plan.display())),
        "says what to run next: {}",
        describe(out)
    );
}

/// The same with `--on-failure pause`: exit 4, journal `paused`, every node's state named; once
/// the host is back, `distls migrate` resumes and completes.
#[test]
fn an_unreachable_host_mid_roll_pauses_and_the_rerun_completes() {
    let t = cluster("sshgonep", 3);
    let mut sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let plan = t.plan();
    let run = t.spawn_distls(&[
        "migrate",
        "--classic",
        "--on-failure",
        "pause",
        plan.to_str().unwrap(),
    ]);
    t.wait_until_node_touched(1);
    sshd.kill_all();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(journal(&plan)["phase"], "paused", "{}", describe(&out));
    assert_every_node_state_is_named(&out, &plan, "migrate");
    eprintln!("{}", stderr(&out));

    sshd.restart();
    let again = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert!(again.status.success(), "{}", describe(&again));
    t.assert_mesh("inet_tls", "tls");
    assert_eq!(journal(&plan)["phase"], "completed");
}

/// Node 1's `ctl stop` hangs over SSH (rehearsal knob `var/stop-hangs`): after `timeouts.stop` the
/// remote command's whole process group is killed through the same connection (not just
/// abandoned), distls sends SIGTERM to the node's OS pid over SSH, and the roll completes.
#[test]
fn a_hung_stop_over_ssh_is_killed_and_escalated() {
    let t = cluster("sshhang", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    let root = t.cluster.nodes()[0].root.clone();
    std::fs::write(root.join("var/stop-hangs"), "").unwrap();
    let plan = t.plan();
    t.cluster.write_plan_with(|index| {
        if index == 0 {
            "    timeouts:\n      stop: 5s\n      kill_grace: 20s\n".to_string()
        } else {
            String::new()
        }
    });
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let os_pid = t.cluster.node_os_pid(0).unwrap();
    let mut run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    let hung = wait_for_hung_stop(&t.cluster, &mut run, &root);
    let out = run.wait_with_output().unwrap();
    // Looked at while the knob still exists: a `ctl stop` distls did not kill would still hang.
    let left = ctl_stop_pids(&root);
    std::fs::remove_file(root.join("var/stop-hangs")).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("SIGTERM to OS pid {os_pid}")),
        "{}",
        describe(&out)
    );
    t.assert_mesh("inet_tls", "tls");
    assert!(
        left.is_empty(),
        "the remote `ctl stop` (first seen: {hung:?}) was killed with its process group; still running: {left:?}"
    );
}

/// `--zero-split` over SSH: the hybrid module is written, compiled with the node's erl and
/// removed on the node's host through the same connection; every link TLS at the end, then a
/// rollback back through B and A to the original files.
#[test]
fn zero_split_over_ssh_installs_the_module_remotely() {
    let t = cluster("sshzs", 3);
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    plan_over_ssh(&t, &sshd, "user_key", "known_hosts");
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--zero-split", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    // Every node runs the sealed module (stock TLS from its next restart) in a TLS mesh.
    t.assert_mesh("distls_hybrid", "tls");
    t.assert_backups_are(&originals);
    for node in 0..originals.len() {
        let text = std::fs::read_to_string(t.dist_args_path(node)).unwrap();
        assert!(
            text.contains("\n-proto_dist inet_tls\n") && !text.contains("distls_hybrid"),
            "node {node}'s file is the stock TLS text:\n{text}"
        );
    }
    for node in t.cluster.nodes() {
        assert!(
            !node.root.join("etc/distls-hybrid").exists(),
            "{}",
            node.name
        );
    }
    let back = t.distls(&["rollback", plan]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}
