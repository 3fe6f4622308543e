use crate::support::*;

#[test]
fn migrates_a_three_node_cluster_and_rolls_it_back() {
    let t = cluster("mig", 3);
    let originals = t.dist_args_files();
    // The rest of this test runs on the plan `plan discover` writes over the hand-written one.
    discover_the_plan_of(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();

    // On a terminal a new run asks first; "n" leaves everything as it was.
    let asked = t.distls_on_terminal(&["migrate", "--classic", plan], "n\n");
    let said = stdout(&asked);
    assert_eq!(asked.status.code(), Some(3), "{said}");
    assert!(
        said.contains("nodes, in this order:") && said.contains("Proceed? [y/N]"),
        "{said}"
    );
    assert!(said.contains("not confirmed"), "{said}");
    assert_eq!(t.dist_args_files(), originals);

    // The canary first: one node, then a safe-point pause; the others untouched.
    let canary = t.distls(&["migrate", "--classic", "--pause-after", "1", "--json", plan]);
    assert!(canary.status.success(), "{}", describe(&canary));
    let events = crate::json_schema::check_stream(&stdout(&canary));
    assert_eq!(events.iter().filter(|e| *e == "node_done").count(), 1);
    assert!(stdout(&canary).contains(r#""outcome":"paused""#));
    assert_eq!(journal(t.plan().as_path())["phase"], "paused");
    assert_eq!(std::fs::read(t.dist_args_path(1)).unwrap(), originals[1]);
    let status = t.distls(&["status", "--json", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    assert_eq!(
        crate::json_schema::check_stream(&stdout(&status)),
        ["status"]
    );
    let report: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert_eq!(report["journal"]["phase"], "paused");
    let why = report["journal"]["paused_because"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("--pause-after 1"), "{report}");
    assert_eq!(report["nodes"][0]["runs"], "tls");
    assert_eq!(report["nodes"][1]["file"], "original");
    // The migrated node serves its certfile and trusts the cacertfile; a plain node serves none.
    let (serial, ca_subject) = certfile_serial_and_ca(&t);
    assert_eq!(
        report["nodes"][0]["served"]["serial"],
        serial.as_str(),
        "{report}"
    );
    assert_eq!(
        report["nodes"][0]["trusts"][0]["cas"][0]["subject"],
        ca_subject.as_str()
    );
    assert!(report["nodes"][1]["served"].is_null(), "{report}");
    assert_eq!(report["nodes"][1]["trusts"], serde_json::json!([]));

    // The rest, as a script would run it: a JSON stream on stdout, every object as
    // docs/json.md says; the two nodes left restart together (--batch 2).
    let out = t.distls(&["migrate", "--classic", "--json", "--batch", "2", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    let events = crate::json_schema::check_stream(&stdout(&out));
    assert_eq!(events.first().map(String::as_str), Some("started"));
    assert_eq!(events.last().map(String::as_str), Some("done"));
    assert!(events.iter().filter(|e| *e == "node_done").count() >= 2);
    assert!(events.iter().any(|e| e == "summary"));
    assert!(stdout(&out).contains(r#""outcome":"completed""#));
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
    let done = journal(t.plan().as_path());
    assert_eq!(done["phase"], "completed");
    let names = t.node_names();
    assert!(down_together(&done, &names[1], &names[2]), "{done}");
    assert!(!down_together(&done, &names[0], &names[1]), "{done}");

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

    served_certificates_and_their_expiry(&t, &stdout(&status), plan);

    // Running it again is a no-op that still verifies the mesh.
    let again = t.distls(&["migrate", "--classic", plan]);
    assert!(again.status.success(), "{}", describe(&again));

    let back = t.distls(&["rollback", "--json", plan]);
    assert!(back.status.success(), "{}", describe(&back));
    let events = crate::json_schema::check_stream(&stdout(&back));
    assert_eq!(events.last().map(String::as_str), Some("done"));
    assert!(stdout(&back).contains(r#""outcome":"rolled_back""#));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);

    // The hand-written plan: the discovered one repeats the epmd port in its `env`.
    epmd_port_from_vm_args(&t, hand_written_plan(&t).to_str().unwrap());
}

/// The serial of the rehearsal's certfile (every node's) and the subject of its CA.
fn certfile_serial_and_ca(t: &TestCluster) -> (String, String) {
    use distls::cert_info::{CertSummary, pem_certificates};
    let summary = |path: &std::path::Path| {
        let certs = pem_certificates(&std::fs::read(path).unwrap()).unwrap();
        CertSummary::from_der(&certs[0]).unwrap()
    };
    let tls = t.cluster.tls_files();
    (
        summary(&tls.certfile).serial,
        summary(&tls.cacertfile).subject,
    )
}

/// On the migrated cluster: `status` shows what each node serves (its certfile's serial) and
/// trusts; `check --expiry` passes a short window and fails a window past the expiry, naming
/// every node.
fn served_certificates_and_their_expiry(t: &TestCluster, status: &str, plan: &str) {
    let (serial, ca_subject) = certfile_serial_and_ca(t);
    for name in t.node_names() {
        let served = status
            .lines()
            .skip_while(|l| !l.starts_with(&name))
            .nth(1)
            .unwrap_or_else(|| panic!("a served line under {name}: {status}"));
        assert!(
            served.contains(&format!("serial {serial}")) && served.contains("days left"),
            "{served}"
        );
        assert!(served.contains(&format!("trusts {ca_subject}")), "{served}");
    }
    let started = std::time::Instant::now();
    let fine = t.distls(&["check", "--expiry", "1d", plan]);
    assert!(fine.status.success(), "{}", describe(&fine));
    assert!(
        stdout(&fine).contains("served.expiry"),
        "{}",
        describe(&fine)
    );
    let soon = t.distls(&["check", "--expiry", "100000d", plan]);
    assert_eq!(soon.status.code(), Some(3), "{}", describe(&soon));
    let said = stderr(&soon);
    assert!(said.contains("served.expiry FAIL on"), "{said}");
    for name in t.node_names() {
        assert!(said.contains(&name), "{name} named: {said}");
    }
    eprintln!("check --expiry twice took {:?}", started.elapsed());
}

/// Where the hand-written plan is kept once the discovered one has replaced it.
fn hand_written_plan(t: &TestCluster) -> std::path::PathBuf {
    t.plan().with_file_name("hand-written.yaml")
}

/// MongooseIM layout: `-epmd_port` in the nodes' vm.args, and no ERL_EPMD_PORT in distls's
/// environment or the plan: `status` finds the nodes there; a stopped node is reported with the
/// epmd asked and the names it lists, and a node pinned to a fixed port with that port.
fn epmd_port_from_vm_args(t: &TestCluster, plan: &str) {
    let port = t.cluster.epmd_port();
    for node in t.cluster.nodes() {
        let mut text = std::fs::read_to_string(node.vm_args()).unwrap();
        text.push_str(&format!("-epmd_port {port}\n"));
        std::fs::write(node.vm_args(), text).unwrap();
    }
    let started = std::time::Instant::now();
    let status_with = |flags: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_distls"))
            .env_remove("ERL_EPMD_PORT")
            .env("ERL_CRASH_DUMP", t.crash_dump_path())
            .arg("status")
            .args(flags)
            .arg(plan)
            .output()
            .expect("distls runs");
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
    };
    let status = || status_with(&[]);
    let names = t.node_names();
    let runs = |shown: &str, name: &str| -> String {
        let row = shown
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("status lists {name}: {shown}"));
        row.split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_string()
    };
    let shown = status();
    for name in &names {
        assert_eq!(runs(&shown, name), "plain", "{shown}");
    }
    t.cluster.ctl_ok(2, &["stop"]).expect("node 3 stops");
    let mut shown = String::new();
    distls::rehearsal::poll_until(
        "node 3 down",
        std::time::Duration::from_secs(30),
        &mut || {
            shown = status();
            (runs(&shown, &names[2]) == "down")
                .then_some(())
                .ok_or_else(|| shown.clone())
        },
    )
    .unwrap();
    let host = names[2].split('@').nth(1).unwrap();
    let found = format!(
        "  {} not found: epmd {host}:{port} (vm.args -epmd_port) lists ",
        names[2]
    );
    let why = shown
        .lines()
        .find(|l| l.starts_with(&found))
        .unwrap_or_else(|| panic!("`{found}` in: {shown}"));
    let listed: Vec<&str> = why[found.len()..].split(", ").collect();
    let sname = |name: &String| name.split('@').next().unwrap().to_string();
    assert!(
        listed.contains(&sname(&names[0]).as_str())
            && listed.contains(&sname(&names[1]).as_str())
            && !listed.contains(&sname(&names[2]).as_str()),
        "{why}"
    );
    let report: serde_json::Value = serde_json::from_str(status_with(&["--json"]).trim()).unwrap();
    assert_eq!(
        report["nodes"][0]["not_found"],
        serde_json::Value::Null,
        "{report}"
    );
    assert_eq!(
        report["nodes"][2]["not_found"].as_str(),
        Some(why.trim_start()),
        "{report}"
    );
    // A fixed distribution port (no epmd) where nothing listens: the probe says so.
    let vm_args = t.cluster.nodes()[2].vm_args();
    let fixed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixed_port = fixed.local_addr().unwrap().port();
    drop(fixed);
    let text = std::fs::read_to_string(&vm_args).unwrap();
    std::fs::write(&vm_args, format!("{text}-erl_epmd_port {fixed_port}\n")).unwrap();
    let shown = status();
    let expected = format!(
        "  {} not found: nothing accepts at {host}:{fixed_port} (vm.args -erl_epmd_port), a fixed distribution port (no epmd); its files pin its listen port to {fixed_port} (vm.args -erl_epmd_port, no epmd)",
        names[2]
    );
    assert!(
        shown.lines().any(|l| l == expected),
        "`{expected}` in: {shown}"
    );
    eprintln!(
        "MEASURED epmd port from vm.args, stopped and fixed-port node: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `distls plan discover` asked the first node: the plan equals the hand-written one in every
/// value a run uses, `check` passes it unchanged, and it replaces the hand-written plan.
fn discover_the_plan_of(t: &TestCluster) {
    let hand_written = distls::plan::Plan::load(&t.plan()).unwrap();
    let discovered_path = t.cluster.dir().join("discovered.yaml");
    let vm_args = t.cluster.nodes()[0].root.join("etc/vm.args");
    let started = std::time::Instant::now();
    let out = t.distls(&[
        "plan",
        "discover",
        &t.node_names()[0],
        "--cookie-file",
        vm_args.to_str().unwrap(),
        "--cluster",
        &hand_written.cluster,
        "--output",
        discovered_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("plan discover took {:?}", started.elapsed());
    let yaml = std::fs::read_to_string(&discovered_path).unwrap();
    let cookie = std::fs::read_to_string(&vm_args).unwrap();
    let cookie = cookie
        .lines()
        .find_map(|l| l.strip_prefix("-setcookie "))
        .unwrap();
    assert!(!yaml.contains(cookie.trim()) && !stdout(&out).contains(cookie.trim()));
    let values = yaml.lines().filter(|l| !l.trim_start().starts_with('#'));
    assert!(!values.clone().any(|l| l.contains("<<FILL IN")), "{yaml}");
    assert!(yaml.contains("flavor: mongooseim"), "{yaml}");
    let discovered = distls::plan::Plan::load(&discovered_path).unwrap();
    assert_discovered_like_written(&discovered, &hand_written, &yaml);
    for (found, written) in discovered.nodes.iter().zip(&hand_written.nodes) {
        assert_eq!(found.vm_args, written.vm_args, "{yaml}");
    }
    // Never over an existing file without --force.
    let again = t.distls(&[
        "plan",
        "discover",
        &t.node_names()[0],
        "--cookie-file",
        vm_args.to_str().unwrap(),
        "--output",
        discovered_path.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", describe(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        describe(&again)
    );

    // A node that is not there is refused (3), an unreadable cookie file is bad input (2).
    let vm_args = vm_args.to_str().unwrap();
    let absent = t.distls(&[
        "plan",
        "discover",
        "nosuch@localhost",
        "--cookie-file",
        vm_args,
    ]);
    assert_eq!(absent.status.code(), Some(3), "{}", describe(&absent));
    assert!(
        stderr(&absent).contains("cannot ask nosuch@localhost"),
        "{}",
        describe(&absent)
    );
    let no_cookie = t.distls(&[
        "plan",
        "discover",
        &t.node_names()[0],
        "--cookie-file",
        "/nonexistent",
    ]);
    assert_eq!(no_cookie.status.code(), Some(2), "{}", describe(&no_cookie));

    let check = t.distls(&["check", discovered_path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));
    std::fs::copy(t.plan(), hand_written_plan(t)).unwrap();
    std::fs::copy(&discovered_path, t.plan()).unwrap();
    eprintln!("the discovery step took {:?}", started.elapsed());
}

#[test]
fn dry_run_changes_nothing_and_shows_the_diff() {
    let t = cluster("dry", 3);
    let before = t.file_hashes();
    let pids: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    let out = t.distls(&[
        "migrate",
        "--classic",
        "--dry-run",
        t.plan().to_str().unwrap(),
    ]);
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
    let first = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
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
    let second = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
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
    let run = t.spawn_distls(&["migrate", "--classic", plan.to_str().unwrap()]);
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

    let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
}

/// Neither the cookie nor the private key's PEM body shows up in distls's output, its logs (at
/// trace level), the journal or anything else in the state directory, the backups, or the argv
/// of any process distls starts (sampled from /proc all through the run: probe VMs, shells, kill
/// and file helpers). The plan's own commands (the node's ctl, which passes the cookie in its VMs'
/// argv the way MongooseIM's nodetool does) are the operator's, and are left out with their
/// children.
#[test]
fn the_cookie_and_the_private_key_stay_secret() {
    let t = cluster("secret", 3);
    let cookie = t.cluster.cookie().to_string();
    let key_pem = std::fs::read_to_string(&t.cluster.tls_files().keyfile).unwrap();
    let key_lines: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect();
    assert!(!key_lines.is_empty(), "the key has a PEM body: {key_pem}");
    let leaks = |text: &str| -> Vec<String> {
        let mut found = Vec::new();
        if text.contains(&cookie) {
            found.push("the cookie".to_string());
        }
        for line in &key_lines {
            if text.contains(line.as_str()) {
                found.push(format!("the private key line {line}"));
            }
        }
        found
    };
    let plan = t.plan();
    let mut run = t.spawn_distls_env(
        &["migrate", "--classic", plan.to_str().unwrap()],
        &[("RUST_LOG", "distls=trace")],
    );
    let (mut checked, mut probes_seen) = (std::collections::BTreeSet::new(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while run.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "distls did not finish"
        );
        for (pid, argv) in argvs_started_by(run.id()) {
            let found = leaks(&argv);
            assert!(
                found.is_empty(),
                "{found:?} in the argv of pid {pid}: {argv}"
            );
            if argv.contains("distls_probe_") {
                probes_seen += 1;
            }
            checked.insert(argv);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        probes_seen > 0 && checked.len() >= 3,
        "processes were sampled ({} distinct argvs, probes seen {probes_seen} times)",
        checked.len()
    );
    eprintln!("{} distinct argvs checked", checked.len());
    assert!(stderr(&out).contains("DEBUG"), "debug logs are on");
    for (what, text) in [("stdout", stdout(&out)), ("stderr", stderr(&out))] {
        let found = leaks(&text);
        assert!(found.is_empty(), "{found:?} in {what}");
    }
    let state_dir = plan.parent().unwrap().join(".distls");
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&state_dir), 0o700, "the state directory is private");
    let mut files = 0;
    for entry in std::fs::read_dir(&state_dir).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
        let found = leaks(&text);
        assert!(found.is_empty(), "{found:?} in {}", entry.path().display());
        files += 1;
    }
    assert!(files >= 2, "journal and lock checked");
    for node in 0..3 {
        let backup = format!("{}.distls-orig", t.dist_args_path(node).display());
        assert_eq!(mode(std::path::Path::new(&backup)), 0o600, "{backup}");
        let text = std::fs::read_to_string(&backup).unwrap();
        assert!(leaks(&text).is_empty(), "{backup}");
        let etc = t.dist_args_path(node).parent().unwrap().to_path_buf();
        for entry in std::fs::read_dir(&etc).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains("distls") {
                assert!(
                    name == "vm.dist.args.distls-orig",
                    "only the backup is left next to vm.dist.args: {name}"
                );
            }
        }
    }
}

/// `(pid, argv)` of every live descendant of `root`, except the plan's commands (argv naming a
/// node's `bin/ctl`) and their descendants.
fn argvs_started_by(root: u32) -> Vec<(u32, String)> {
    let mut parent = std::collections::HashMap::new();
    let mut argv = std::collections::HashMap::new();
    for (pid, ppid, text) in processes() {
        parent.insert(pid, ppid);
        argv.insert(pid, text);
    }
    let mut out = Vec::new();
    for (&pid, text) in &argv {
        let mut cursor = pid;
        let mut operator_command = false;
        let mut under_root = false;
        for _ in 0..64 {
            if argv.get(&cursor).is_some_and(|a| a.contains("/bin/ctl")) {
                operator_command = true;
            }
            if cursor == root {
                under_root = true;
                break;
            }
            match parent.get(&cursor) {
                Some(&p) if p != 0 => cursor = p,
                _ => break,
            }
        }
        if under_root && !operator_command {
            out.push((pid, text.clone()));
        }
    }
    out
}
