//! The ejabberd and RabbitMQ flavors against the real products (Debian packages): a 3-node cluster
//! each, migrated end to end with the flavor's default commands, and a rollback.

use crate::products::*;
use crate::support::{describe, down_together, journal, stderr, stdout};
use distls::rehearsal::{TlsFiles, write_rotation_certs};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary, with no cluster environment (the plans and the nodes' own files carry what the
/// products need).
pub fn distls(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distls"))
        .env_remove("ERL_EPMD_PORT")
        .args(args)
        .output()
        .expect("distls runs")
}

/// `distls COMMAND FLAGS PLAN` and its wall time.
fn distls_on_plan(command: &[&str], flags: &[&str], plan: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let args: Vec<&str> = command
        .iter()
        .chain(flags)
        .copied()
        .chain([plan.to_str().unwrap()])
        .collect();
    let out = distls(&args);
    (out, started.elapsed())
}

/// `distls status`: every node's row says verified / tls / tls and lists both peers over TLS.
pub fn assert_status_all_tls(plan: &Path, names: &[String]) {
    let status = distls(&["status", plan.to_str().unwrap()]);
    assert!(status.status.success(), "{}", describe(&status));
    let shown = stdout(&status);
    for name in names {
        let row = shown
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("status lists {name}: {shown}"));
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&words[1..4], ["verified", "tls", "tls"], "{row}");
        for peer in names.iter().filter(|p| *p != name) {
            assert!(
                row.contains(&format!("{peer}:tls")),
                "{name} ↔ {peer} over TLS: {row}"
            );
        }
    }
}

/// `distls migrate` succeeds, its wall time is printed next to the nodes' own stop+start time
/// (`own`), the journal is completed and every link is TLS.
fn migrate_to_tls(plan: &Path, names: &[String], product: &str, own: Duration) {
    migrate_to_tls_with(plan, names, product, own, &[]);
}

/// [`migrate_to_tls`] with more flags for `distls migrate`.
fn migrate_to_tls_with(
    plan: &Path,
    names: &[String],
    product: &str,
    own: Duration,
    flags: &[&str],
) {
    let (out, took) = distls_on_plan(&["migrate", "--classic"], flags, plan);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", describe(&out));
    eprintln!(
        "MEASURED {product} 3 nodes: distls migrate {:.1} s; sum of the nodes' own stop+start {:.1} s",
        took.as_secs_f64(),
        own.as_secs_f64()
    );
    assert_eq!(journal(plan)["phase"], "completed");
    assert_status_all_tls(plan, names);
}

fn assert_optfile(flags_file: &Path, owner_uid: u32) {
    let optfile = flags_file.parent().unwrap().join("distls-ssl_dist.conf");
    let meta = std::fs::metadata(&optfile).expect("the optfile exists");
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", optfile.display());
    assert_eq!(meta.uid(), owner_uid, "owned like the flags file");
    let text = std::fs::read_to_string(&optfile).unwrap();
    assert!(text.contains("{fail_if_no_peer_cert, true}"), "{text}");
}

/// ejabberd node `i`'s ejabberdctl.cfg holds the TLS flags, and its optfile is in place.
fn assert_ejabberd_tls_files(ej: &Ejabberd, i: usize) {
    let cfg = std::fs::read_to_string(ej.cfg(i)).unwrap();
    assert!(
        cfg.contains(&format!(
            "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -proto_dist inet_tls -ssl_dist_optfile {}/distls-ssl_dist.conf\"",
            ej.etc(i).display()
        )),
        "{cfg}"
    );
    assert_optfile(&ej.cfg(i), uid_of(&ej.cfg(i)));
}

/// `distls plan discover` asked the first node of the product cluster whose hand-written plan is
/// `plan` (`extra`: its flags): the discovered plan equals it in every value a run uses, and
/// `distls check` passes it unchanged. The operator's shell has the cluster's epmd port.
fn discover_the_same_plan(plan: &Path, base: &Base, extra: &[&str]) {
    let written = distls::plan::Plan::load(plan).unwrap();
    let discovered_path = plan.with_file_name("discovered.yaml");
    let port = base.epmd_port.to_string();
    let tls = [&base.tls.certfile, &base.tls.keyfile, &base.tls.cacertfile]
        .map(|p| p.to_str().unwrap().to_string());
    let mut args = vec![
        "plan",
        "discover",
        &written.nodes[0].name,
        "--cluster",
        &written.cluster,
        "--certfile",
        &tls[0],
        "--keyfile",
        &tls[1],
        "--cacertfile",
        &tls[2],
        "-o",
        discovered_path.to_str().unwrap(),
    ];
    args.extend(extra);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(&args)
        .env("ERL_EPMD_PORT", &port)
        .output()
        .expect("distls runs");
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("plan discover took {:?}", started.elapsed());
    let yaml = std::fs::read_to_string(&discovered_path).unwrap();
    let found =
        distls::plan::Plan::load(&discovered_path).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    crate::support::assert_discovered_like_written(&found, &written, &yaml);
    for (found, written) in found.nodes.iter().zip(&written.nodes) {
        assert_eq!(found.cookie_file, written.cookie_file, "{yaml}");
        assert_eq!(found.env, written.env, "{yaml}");
    }
    let check = distls(&["check", discovered_path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));
}

fn uid_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().uid()
}

#[test]
fn ejabberd_cluster_migrates_with_the_flavor_defaults() {
    let _one_at_a_time = products_lock();
    let ej = Ejabberd::cluster("ejm", 3);
    let names: Vec<String> = (1..=3).map(|i| ej.node_name(i)).collect();
    // The nodes' own stop + start (plain), for comparison with the roll.
    let own: Duration = (1..=3)
        .map(|i| {
            timed(|| {
                ej.stop(i);
                ej.start_plain(i);
            })
        })
        .sum();
    let plan = ej.plan("ej-test", |_| String::new());
    // `plan discover` finds the same plan (the product told from the node; the cookie given).
    discover_the_same_plan(&plan, &ej.base, &["--cookie-file", EJ_COOKIE]);
    // From here the epmd port is only in the nodes' own ejabberdctl.cfg (`export
    // ERL_EPMD_PORT=…`), not in the plan's env: distls finds the nodes from their files, as
    // ejabberdctl does.
    let plan = without_plan_env(plan, ej.base.epmd_port);

    // The dry run shows both files and changes nothing.
    let before: Vec<Vec<u8>> = (1..=3).map(|i| std::fs::read(ej.cfg(i)).unwrap()).collect();
    let dry = distls(&["migrate", "--classic", "--dry-run", plan.to_str().unwrap()]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let shown = stdout(&dry);
    assert!(
        shown.contains("-ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"")
            && shown.contains(
                "+ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -proto_dist inet_tls -ssl_dist_optfile "
            ),
        "{shown}"
    );
    assert!(
        shown.contains("+ {client, ["),
        "the optfile is shown: {shown}"
    );
    assert!(
        shown.contains(" started   (must exit 0 within 3m"),
        "{shown}"
    );
    for i in 1..=3 {
        assert_eq!(std::fs::read(ej.cfg(i)).unwrap(), before[i - 1]);
        assert!(!ej.etc(i).join("distls-ssl_dist.conf").exists());
    }

    // `check --handshake`: its two throwaway VMs use the epmd the nodes' files name.
    let check = distls(&["check", "--handshake", plan.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));

    migrate_to_tls(&plan, &names, "ejabberd", own);
    for i in 1..=3 {
        assert_ejabberd_tls_files(&ej, i);
        ej.assert_whole_with_alice(i, &names);
    }

    // A node that is really gone: status says which epmd was asked (from its file) and what
    // that epmd lists.
    let started = Instant::now();
    ej.stop(3);
    let status = distls(&["status", plan.to_str().unwrap()]);
    assert!(status.status.success(), "{}", describe(&status));
    let shown = stdout(&status);
    let row = shown
        .lines()
        .find(|l| l.starts_with(names[2].as_str()))
        .unwrap_or_else(|| panic!("status lists {}: {shown}", names[2]));
    assert_eq!(row.split_whitespace().nth(3), Some("down"), "{row}");
    let found = format!(
        "  {} not found: epmd {}:{} (ejabberdctl.cfg:2 ERL_EPMD_PORT) lists ",
        names[2], ej.base.host, ej.base.epmd_port
    );
    let why = shown
        .lines()
        .find(|l| l.starts_with(&found))
        .unwrap_or_else(|| panic!("`{found}` in: {shown}"));
    let listed: Vec<&str> = why[found.len()..].split(", ").collect();
    assert!(
        listed.contains(&"ejabberd1")
            && listed.contains(&"ejabberd2")
            && !listed.contains(&"ejabberd3"),
        "{why}"
    );
    eprintln!(
        "MEASURED ejabberd: a stopped node reported with its epmd: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The plan without its `env` line: the nodes' own files must say where their epmd is.
fn without_plan_env(plan: std::path::PathBuf, epmd_port: u16) -> std::path::PathBuf {
    let yaml = std::fs::read_to_string(&plan).unwrap();
    let line = format!("  env: {{ ERL_EPMD_PORT: \"{epmd_port}\" }}\n");
    assert!(yaml.contains(&line), "{yaml}");
    std::fs::write(&plan, yaml.replace(&line, "")).unwrap();
    plan
}

#[test]
fn ejabberd_start_failing_on_tls_rolls_everything_back() {
    let _one_at_a_time = products_lock();
    let ej = Ejabberd::cluster("ejr", 3);
    let originals: Vec<Vec<u8>> = (1..=3).map(|i| std::fs::read(ej.cfg(i)).unwrap()).collect();
    let failing_start = format!(
        "if grep -q inet_tls {cfg}; then echo 'refusing to start with TLS' >&2; exit 1; fi; exec {ctl} start",
        cfg = ej.cfg(3).display(),
        ctl = ej.ctl_command(3)
    );
    let plan = ej.plan("ej-rollback", |i| {
        if i == 3 {
            format!("    commands: {{ start: \"{failing_start}\" }}\n")
        } else {
            String::new()
        }
    });

    let out = distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refusing to start with TLS"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("rolled back"), "{}", describe(&out));
    assert_eq!(journal(&plan)["phase"], "rolled_back");
    for i in 1..=3 {
        assert_eq!(
            std::fs::read(ej.cfg(i)).unwrap(),
            originals[i - 1],
            "ejabberdctl.cfg of node {i} is byte-identical to its original"
        );
        assert!(
            !ej.etc(i).join("distls-ssl_dist.conf").exists(),
            "the optfile of node {i} is removed"
        );
        ej.ctl_ok(i, &["started"]);
        let cluster = ej.ctl_ok(i, &["list_cluster"]);
        assert_eq!(cluster.matches("ejabberd").count(), 3, "{cluster}");
    }
    let account = ej.ctl(1, &["check_account", "alice", "localhost"]);
    assert!(account.status.success(), "{}", describe(&account));
}

#[test]
fn rabbitmq_cluster_migrates_with_the_flavor_defaults() {
    let _one_at_a_time = products_lock();
    let rmq = RabbitMq::cluster("rmq", 3);
    let names: Vec<String> = (1..=3).map(|i| rmq.node_name(i)).collect();
    let own: Duration = (1..=3)
        .map(|i| {
            timed(|| {
                rmq.stop(i);
                rmq.start(i);
                rmq.wait_started(i);
            })
        })
        .sum();
    let plan = rmq.plan("rmq-test");
    // `plan discover` finds the same plan (the flavor given; its cookie file by default).
    discover_the_same_plan(&plan, &rmq.base, &["--flavor", "rabbitmq"]);
    // Its timeouts allow a roll longer than RabbitMQ's table wait: the preflight says so.
    let check = distls(&["check", plan.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));
    let table_wait = stdout(&check)
        .lines()
        .find(|l| l.contains("roll.table_wait"))
        .unwrap_or_else(|| panic!("{}", describe(&check)))
        .to_owned();
    assert!(table_wait.contains("warn"), "{table_wait}");

    // A gate that never passes stops the run before its node: here the second node's, with
    // `on_failure: pause`, so the first node stays on TLS and the others are untouched.
    let original_plan = std::fs::read_to_string(&plan).unwrap();
    let gated = original_plan
        .replacen("defaults:\n", "on_failure: pause\ndefaults:\n", 1)
        .replacen(
            &format!("  - name: {}\n", names[1]),
            &format!(
                "  - name: {}\n    commands: {{ before_stop: \"false\" }}\n    timeouts: {{ before_stop: 3s }}\n",
                names[1]
            ),
            1,
        );
    std::fs::write(&plan, gated).unwrap();
    let envs_before: Vec<Vec<u8>> = (2..=3)
        .map(|i| std::fs::read(rmq.env_file(i)).unwrap())
        .collect();
    let stopped = distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert_eq!(stopped.status.code(), Some(4), "{}", describe(&stopped));
    assert!(
        stderr(&stopped).contains("its commands.before_stop did not pass within 3s"),
        "{}",
        describe(&stopped)
    );
    assert_eq!(journal(&plan)["phase"], "paused");
    // The flavor's default gates (quorum, drain, revive) are for rolls that keep one mesh:
    // not run here; the plan's own gate (node 2's) is.
    let events = journal(&plan)["events"].to_string();
    assert!(!events.contains("commands.after_start passed"), "{events}");
    for (i, before) in (2..=3).zip(&envs_before) {
        assert_eq!(&std::fs::read(rmq.env_file(i)).unwrap(), before);
        rmq.ctl_ok(i, &["ping"]);
    }
    // The operator drops the gate and goes on.
    std::fs::write(&plan, &original_plan).unwrap();
    migrate_to_tls_with(&plan, &names, "rabbitmq", own, &["--allow-plan-change"]);
    for i in 1..=3 {
        let env = std::fs::read_to_string(rmq.env_file(i)).unwrap();
        let flags = format!(
            "\"-proto_dist inet_tls -ssl_dist_optfile {}/distls-ssl_dist.conf\"",
            rmq.env_file(i).parent().unwrap().display()
        );
        assert!(
            env.contains(&format!("\nSERVER_ADDITIONAL_ERL_ARGS={flags}\n")),
            "{env}"
        );
        assert!(env.contains(&format!("\nCTL_ERL_ARGS={flags}\n")), "{env}");
        assert_optfile(&rmq.env_file(i), uid_of(&rmq.env_file(i)));
        let status = rmq.ctl_ok(i, &["cluster_status"]);
        for name in &names {
            assert!(status.contains(name.as_str()), "{status}");
        }
    }
    rmq.wait_queue_count(1, "cq1\t1", Duration::from_secs(60));
}

/// The relx flavor on the rehearsal cluster standing in for a relx release: the server reads
/// vm.args (+ vm.dist.args, left plain), and the control commands get only what relx's
/// `extended_bin` forwards from vm.args (`^-proto_dist` lines) plus the documented
/// `ERL_FLAGS="-ssl_dist_optfile F"` workaround. Migrate (`distls migrate` without a flag: the
/// classic roll, with a note), then roll back.
#[test]
fn relx_flavor_migrates_and_rolls_back_with_relx_like_control_commands() {
    let t = crate::support::cluster("relx", 3);
    let nodes = t.cluster.nodes();
    let originals: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| std::fs::read(n.vm_args()).unwrap())
        .collect();
    let plan = t.cluster.dir().join("relx-plan.yaml");
    crate::support::write_relx_plan(&t, "relx-test", &plan);
    let plan_s = plan.to_str().unwrap();

    // Without a flag: relx cannot take the hybrid module, so the default falls back to the
    // classic roll and says why.
    let out = t.distls(&["migrate", plan_s]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "note: node {} is relx, which cannot take the hybrid module",
            nodes[0].name
        )) && stderr(&out).contains("this run takes the classic roll"),
        "{}",
        describe(&out)
    );
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    assert_status_all_tls(&plan, &names);
    for node in nodes {
        let text = std::fs::read_to_string(node.vm_args()).unwrap();
        assert!(
            text.ends_with(&format!(
                "\n-proto_dist inet_tls\n-ssl_dist_optfile {}/etc/distls-ssl_dist.conf\n",
                node.root.display()
            )),
            "{text}"
        );
        assert_optfile(&node.vm_args(), uid_of(&node.vm_args()));
    }

    let back = t.distls(&["rollback", plan_s]);
    assert!(back.status.success(), "{}", describe(&back));
    t.wait_for_mesh("inet_tcp", "tcp");
    for (node, original) in nodes.iter().zip(&originals) {
        assert_eq!(&std::fs::read(node.vm_args()).unwrap(), original);
        assert!(!node.root.join("etc/distls-ssl_dist.conf").exists());
    }
}

/// The module directory zero-split installs beside a flags file.
fn hybrid_dir(flags_file: &Path) -> std::path::PathBuf {
    flags_file.parent().unwrap().join("distls-hybrid")
}

/// `distls migrate --zero-split` and print its wall time.
fn migrate_zero_split(plan: &Path, product: &str) -> Output {
    let started = Instant::now();
    let out = distls(&["migrate", "--zero-split", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", describe(&out));
    eprintln!(
        "MEASURED {product} 3 nodes: distls migrate --zero-split {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(journal(plan)["phase"], "completed");
    out
}

/// `distls rollback` of a finished zero-split run: unsealed at run time, then one restart per node
/// back to plain.
fn rollback_zero_split(plan: &Path, product: &str) {
    let started = Instant::now();
    let back = distls(&["rollback", plan.to_str().unwrap()]);
    assert!(back.status.success(), "{}", describe(&back));
    eprintln!(
        "MEASURED {product} 3 nodes: distls rollback (zero-split: unseal, one restart per node) {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(journal(plan)["phase"], "rolled_back");
}

/// RabbitMQ through the hybrid module: the server's flags go plain → H (one restart) → stock TLS
/// (the seal, no restart) while `CTL_ERL_ARGS` stays plain until a node's sealed edit; distls's
/// verify (`rabbitmqctl ping`, `await_startup`) after every step proves the ctl reached its node,
/// and every node's ctl is pinged again with the whole cluster at H and at the end. Every node
/// restarts once. Then back to plain, the queue and its message intact throughout.
#[test]
fn rabbitmq_cluster_migrates_with_zero_split_and_rolls_back() {
    let _one_at_a_time = products_lock();
    let rmq = RabbitMq::cluster("rmqz", 3);
    let names: Vec<String> = (1..=3).map(|i| rmq.node_name(i)).collect();
    let originals: Vec<Vec<u8>> = (1..=3)
        .map(|i| std::fs::read(rmq.env_file(i)).unwrap())
        .collect();
    let plan = rmq.plan("rmq-zero-split");

    let dry = distls(&[
        "migrate",
        "--zero-split",
        "--dry-run",
        plan.to_str().unwrap(),
    ]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let shown = stdout(&dry);
    assert!(
        shown.contains("-proto_dist distls_hybrid -distls_hybrid tls_peers ")
            && shown.contains("/distls-ssl_dist.conf (-ssl_dist_optfile, mode 0600"),
        "{shown}"
    );
    for i in 1..=3 {
        assert_eq!(std::fs::read(rmq.env_file(i)).unwrap(), originals[i - 1]);
    }

    // Stopped (SIGKILL at the failpoint) right after the roll of restarts, so every node's own
    // rabbitmqctl (still plain) is pinged with every node at H; then resumed (the seal).
    let pids: Vec<String> = (1..=3)
        .map(|i| rmq.ctl_ok(i, &["eval", "'os:getpid().'"]))
        .collect();
    let started = Instant::now();
    for point in ["next:h:c"] {
        let out = Command::new(env!("CARGO_BIN_EXE_distls"))
            .env("DISTLS_FAILPOINT", point)
            // Two nodes restart together (their gates admit them one after the other).
            .args(["migrate", "--zero-split", "--batch", "2"])
            .arg(&plan)
            .output()
            .unwrap();
        if out.status.signal() != Some(9) {
            let stories: Vec<String> = (1..=3)
                .map(|i| {
                    let log = rmq
                        .root(i)
                        .join("log")
                        .join(format!("{}.log", rmq.node_name(i)));
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    let mut telling: Vec<&str> = log
                        .lines()
                        .rev()
                        .filter(|l| {
                            ["rror", "aiting", "imeout", "aintenance", "artition", "down"]
                                .iter()
                                .any(|w| l.contains(w))
                        })
                        .take(80)
                        .collect();
                    telling.reverse();
                    format!(
                        "--- rabbit{i}'s log, the telling lines:\n{}",
                        telling.join("\n")
                    )
                })
                .collect();
            panic!("{}\n{}", describe(&out), stories.join("\n"));
        }
        for i in 1..=3 {
            let env = std::fs::read_to_string(rmq.env_file(i)).unwrap();
            assert!(
                env.contains("-distls_hybrid tls_peers ") && !env.contains("CTL_ERL_ARGS"),
                "node {i} after {point}: {env}"
            );
            assert!(
                rmq.env_file(i)
                    .parent()
                    .unwrap()
                    .join("distls-ssl_dist.conf")
                    .exists()
            );
            rmq.ctl_ok(i, &["ping"]);
        }
    }
    eprintln!(
        "MEASURED rabbitmq 3 nodes: the roll of restarts into H (then ctl pings) {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let out = migrate_zero_split(&plan, "rabbitmq");
    // The flavor's default gates ran around every restart (one mesh: the quorum check can pass).
    let done = journal(&plan);
    let events = done["events"].to_string();
    for gate in ["commands.before_stop passed", "commands.after_start passed"] {
        assert_eq!(events.matches(gate).count(), 3, "{gate}: {events}");
    }
    assert!(down_together(&done, &names[0], &names[1]), "{events}");
    assert!(!down_together(&done, &names[1], &names[2]), "{events}");
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        shown.contains(": sealing") && !shown.contains(": stopping"),
        "the rest of the run seals at run time, no stop: {shown}"
    );
    for i in 1..=3 {
        let pid = rmq.ctl_ok(i, &["eval", "'os:getpid().'"]);
        assert_ne!(
            pid,
            pids[i - 1],
            "node {i} restarted once (its only restart)"
        );
    }
    assert_status_all_tls(&plan, &names);
    for i in 1..=3 {
        let env = std::fs::read_to_string(rmq.env_file(i)).unwrap();
        let flags = format!(
            "\"-proto_dist inet_tls -ssl_dist_optfile {}/distls-ssl_dist.conf\"",
            rmq.env_file(i).parent().unwrap().display()
        );
        assert!(
            env.contains(&format!("\nSERVER_ADDITIONAL_ERL_ARGS={flags}\n"))
                && env.contains(&format!("\nCTL_ERL_ARGS={flags}\n"))
                && !env.contains("distls_hybrid"),
            "{env}"
        );
        assert_optfile(&rmq.env_file(i), uid_of(&rmq.env_file(i)));
        assert!(!hybrid_dir(&rmq.env_file(i)).exists(), "module removed");
        rmq.ctl_ok(i, &["ping"]);
        let status = rmq.ctl_ok(i, &["cluster_status"]);
        for name in &names {
            assert!(status.contains(name.as_str()), "{status}");
        }
    }
    rmq.wait_queue_count(1, "cq1\t1", Duration::from_secs(60));

    rollback_zero_split(&plan, "rabbitmq");
    for i in 1..=3 {
        assert_eq!(
            std::fs::read(rmq.env_file(i)).unwrap(),
            originals[i - 1],
            "rabbitmq-env.conf of node {i} is byte-identical to its original"
        );
        let optfile = rmq
            .env_file(i)
            .parent()
            .unwrap()
            .join("distls-ssl_dist.conf");
        assert!(!optfile.exists(), "node {i}: optfile removed");
        assert!(
            !hybrid_dir(&rmq.env_file(i)).exists(),
            "node {i}: module removed"
        );
        rmq.ctl_ok(i, &["ping"]);
    }
    rmq.wait_queue_count(1, "cq1\t1", Duration::from_secs(60));
}

/// ejabberd through the hybrid module: ERL_OPTIONS carries the hybrid flags, so server and ctl
/// switch together (one restart per node, then the seal). Migrate, rotate the certificates of the
/// sealed cluster (`distls rotate`: no restart), then roll the migration back.
#[test]
fn ejabberd_cluster_migrates_with_zero_split_and_rolls_back() {
    let _one_at_a_time = products_lock();
    let ej = Ejabberd::cluster("ejz", 3);
    let names: Vec<String> = (1..=3).map(|i| ej.node_name(i)).collect();
    let originals: Vec<Vec<u8>> = (1..=3).map(|i| std::fs::read(ej.cfg(i)).unwrap()).collect();
    let plan = ej.plan("ej-zero-split", |_| String::new());

    migrate_zero_split(&plan, "ejabberd");
    assert_status_all_tls(&plan, &names);
    for i in 1..=3 {
        assert_ejabberd_tls_files(&ej, i);
        assert!(!hybrid_dir(&ej.cfg(i)).exists(), "module removed");
        let cluster = ej.ctl_ok(i, &["list_cluster"]);
        assert_eq!(cluster.matches("ejabberd").count(), 3, "{cluster}");
    }

    // The sealed cluster's certificates, rotated without a restart (the certificate files are
    // not in the migration's journal, so its rollback below is unaffected).
    rotate_ejabberd_certificates(&ej, &plan, &names);

    rollback_zero_split(&plan, "ejabberd");
    for i in 1..=3 {
        assert_eq!(
            std::fs::read(ej.cfg(i)).unwrap(),
            originals[i - 1],
            "ejabberdctl.cfg of node {i} is byte-identical to its original"
        );
        assert!(!ej.etc(i).join("distls-ssl_dist.conf").exists());
        assert!(!hybrid_dir(&ej.cfg(i)).exists());
        ej.ctl_ok(i, &["started"]);
        let cluster = ej.ctl_ok(i, &["list_cluster"]);
        assert_eq!(cluster.matches("ejabberd").count(), 3, "{cluster}");
    }
    let account = ej.ctl(1, &["check_account", "alice", "localhost"]);
    assert!(
        account.status.success(),
        "alice still exists: {}",
        describe(&account)
    );
}

/// The bytes of a set's certificate, key and CA files.
fn tls_bytes(tls: &TlsFiles) -> [Vec<u8>; 3] {
    [&tls.certfile, &tls.keyfile, &tls.cacertfile].map(|p| std::fs::read(p).unwrap())
}

/// The files the nodes run with hold `want` (compared, never printed: one is a key).
fn assert_live_files(ej: &Ejabberd, want: [&Path; 3], what: &str) {
    let live = tls_bytes(&ej.base.tls);
    for ((kind, bytes), path) in ["certfile", "keyfile", "cacertfile"]
        .iter()
        .zip(&live)
        .zip(want)
    {
        assert!(
            *bytes == std::fs::read(path).unwrap(),
            "{what}: the node's {kind} holds the bytes of {}",
            path.display()
        );
    }
}

/// `distls rotate PLAN ARGS` succeeds, without a restart or a link lost or re-made, and every
/// node's ctl (the flavor's ping) still reaches it over TLS. Returns its wall time.
fn rotate_ok(ej: &Ejabberd, plan: &Path, names: &[String], args: &[&str]) -> Duration {
    let pids: Vec<u32> = (1..=3).map(|i| ej.os_pid(i)).collect();
    let links = links_between(&pids);
    assert_eq!(links.len(), 3, "the 3 nodes are a full mesh: {links:?}");
    let (out, took) = distls_on_plan(&["rotate"], args, plan);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    eprintln!("{}", describe(&out));
    let checks = Instant::now();
    let after: Vec<u32> = (1..=3).map(|i| ej.os_pid(i)).collect();
    assert_eq!(after, pids, "no node restarted ({args:?})");
    assert_eq!(
        links_between(&pids),
        links,
        "the same links: none lost or re-made ({args:?})"
    );
    assert_status_all_tls(plan, names);
    // Each ctl VM boots on the files the node names: three at once (each takes seconds).
    std::thread::scope(|scope| {
        let pings: Vec<_> = (1..=3)
            .map(|i| scope.spawn(move || (i, ej.ctl(i, &["status"]))))
            .collect();
        for ping in pings {
            let (i, out) = ping.join().expect("the ctl ran");
            assert!(out.status.success(), "node {i}: {}", describe(&out));
        }
    });
    eprintln!(
        "rotate {args:?}: the test's checks after it took {:.1} s",
        checks.elapsed().as_secs_f64()
    );
    took
}

/// A CA rollover to a fresh CA's first leaf set, a plain rotation to its second, and the
/// rotation's rollback (the journal keeps the last rotation only: back to the first set).
fn rotate_ejabberd_certificates(ej: &Ejabberd, plan: &Path, names: &[String]) {
    let started = Instant::now();
    let host = ej.base.host.as_str();
    let live = &ej.base.tls;
    let owners = |tls: &TlsFiles| {
        [&tls.certfile, &tls.keyfile, &tls.cacertfile].map(|p| {
            let meta = std::fs::metadata(p).unwrap();
            (meta.uid(), meta.gid(), meta.mode() & 0o7777)
        })
    };
    let owned = owners(live);
    let sets = write_rotation_certs(
        &ej.base.path().join("rotated"),
        &[host, "localhost", "127.0.0.1"],
    )
    .expect("rotation certificates");
    let to = |kind: &str, path: &Path| format!("{kind}={}", path.display());
    let (cert1, key1, ca) = (
        to("certfile", &sets[0].certfile),
        to("keyfile", &sets[0].keyfile),
        to("cacertfile", &sets[0].cacertfile),
    );
    let rollover = ["--ca-rollover", "--to", &cert1, "--to", &key1, "--to", &ca];
    let took_rollover = rotate_ok(ej, plan, names, &rollover);
    let set1 = [&sets[0].certfile, &sets[0].keyfile, &sets[0].cacertfile].map(|p| p.as_path());
    assert_live_files(ej, set1, "after the CA rollover");

    let (cert2, key2) = (
        to("certfile", &sets[1].certfile),
        to("keyfile", &sets[1].keyfile),
    );
    let took_leaves = rotate_ok(ej, plan, names, &["--to", &cert2, "--to", &key2]);
    let set2 = [&sets[1].certfile, &sets[1].keyfile, &sets[1].cacertfile].map(|p| p.as_path());
    assert_live_files(ej, set2, "after the leaf rotation");

    let took_back = rotate_ok(ej, plan, names, &["--rollback"]);
    assert_live_files(ej, set1, "the rollback undoes the last rotation only");
    // The ejabberd user's files stay its own (its nodes read them for every new link).
    assert_eq!(owners(live), owned, "owner, group and mode kept");
    // The before-copies beside them (one holds the old key): the file's owner, mode 0600.
    let tls_dir = live.keyfile.parent().unwrap();
    let copies: Vec<String> = std::fs::read_dir(tls_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().contains(".distls-rotate-"))
        .map(|e| {
            let meta = e.metadata().unwrap();
            assert_eq!(meta.mode() & 0o777, 0o600, "{:?}", e.path());
            assert_eq!((meta.uid(), meta.gid()), (owned[1].0, owned[1].1));
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(
        copies.len(),
        4,
        "cert, key (leaves), CA (trust-both, trust-new): {copies:?}"
    );
    eprintln!(
        "MEASURED ejabberd 3 nodes (sealed zero-split run): rotate --ca-rollover {:.1} s, rotate (leaves) {:.1} s, rotate --rollback {:.1} s; with the checks {:.1} s",
        took_rollover.as_secs_f64(),
        took_leaves.as_secs_f64(),
        took_back.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
