//! What distls shows and where it acts, against real clusters: no cookie in any output, log,
//! journal or argv of a process distls starts; the run lock on the nodes' hosts holds across
//! plan copies; a journal of an earlier cluster is not trusted.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the sampler saw.
#[derive(Default)]
struct Sampled {
    /// Command lines of processes that are not the product's own and hold a secret.
    leaks: Vec<String>,
    /// distls's probe and handshake VMs seen (proof that the sampler saw its processes at all).
    distls_vms: usize,
    /// Command lines of `check --handshake` VMs that carry `-setcookie`.
    handshake_setcookie: Vec<String>,
    /// The addresses `check --handshake`'s listener VM listened on (`a.b.c.d:port`).
    handshake_listen: std::collections::BTreeSet<String>,
}

/// Samples the argv of every process on the machine while a run lasts, keeping those that hold
/// one of `secrets` and were not started by the cluster's own tooling; and what the handshake
/// VMs carry and listen on.
struct ArgvSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

impl ArgvSampler {
    fn start(secrets: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen_stop = stop.clone();
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let thread = std::thread::spawn(move || {
            let mut seen = Sampled::default();
            let mut vms = std::collections::BTreeSet::new();
            while !seen_stop.load(Ordering::SeqCst) {
                for (pid, _, argv) in processes() {
                    if argv.contains("distls_probe_") || argv.contains("distls_hs_") {
                        vms.insert(pid);
                    }
                    if argv.contains("distls_hs_") {
                        if argv.contains("-setcookie") {
                            seen.handshake_setcookie.push(argv.clone());
                        }
                        if argv.contains("distls_hs_a_") {
                            seen.handshake_listen.extend(listening_addresses(pid));
                        }
                    }
                    // The product's own VMs (nodes, ctl VMs, their `erl`/erlexec launchers)
                    // get `-setcookie` from its scripts; distls's VMs are named distls_*.
                    let erlang = argv.split(' ').take(2).any(|w| {
                        w == "erl"
                            || w.ends_with("/erl")
                            || w.contains("erlexec")
                            || w.contains("beam")
                    });
                    let product =
                        erlang && !argv.contains("distls_probe") && !argv.contains("distls_hs_");
                    let holds = secrets.iter().any(|s| argv.contains(s.as_str()));
                    if holds && !product && !seen.leaks.contains(&argv) {
                        seen.leaks.push(argv);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen.distls_vms = vms.len();
            seen
        });
        ArgvSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for ArgvSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The IPv4 addresses the process `pid` listens on (its socket inodes in /proc/net/tcp).
fn listening_addresses(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
            let (ip, port) = fields[1].split_once(':').unwrap();
            let ip = u32::from_str_radix(ip, 16).unwrap();
            let ip = std::net::Ipv4Addr::from(u32::from_be(ip));
            found.push(format!("{ip}:{}", u16::from_str_radix(port, 16).unwrap()));
        }
    }
    found
}

/// distls with RUST_LOG=trace, run from `cwd` (the operator's working directory).
fn distls_traced(t: &TestCluster, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(args)
        .envs(t.cluster.env())
        .env("RUST_LOG", "trace")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("distls runs")
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Dry run, check (--json, --handshake), migrate, status, rollback with RUST_LOG=trace: no
/// output, no journal, no file in the operator's working directory and no argv of a process
/// distls starts holds the cluster's cookie.
fn assert_no_cookie_anywhere(t: &TestCluster, plan: &Path) {
    assert_no_secret_anywhere(t, plan, &[]);
}

/// [`assert_no_cookie_anywhere`], also for the `others` secrets (e.g. values of the plan's `env`).
fn assert_no_secret_anywhere(t: &TestCluster, plan: &Path, others: &[&str]) {
    let cookie = t.cluster.cookie().to_string();
    assert!(cookie.len() >= 16, "a cookie worth grepping for");
    let plan = plan.to_str().unwrap();
    let cwd = tempfile::Builder::new()
        .prefix("distls-operator-cwd-")
        .tempdir()
        .unwrap();
    let mut secrets = vec![cookie.as_str()];
    secrets.extend_from_slice(others);
    let sampler = ArgvSampler::start(&secrets);
    // Both rolls: the classic one, then the default (its module compiled on the host, the seal).
    let runs: [&[&str]; 9] = [
        &["migrate", "--classic", "--dry-run", plan],
        &["check", "--json", "--handshake", plan],
        &["migrate", "--classic", plan],
        &["status", plan],
        &["check", "--expiry", "1d", plan],
        &["rollback", plan],
        &["migrate", "--dry-run", plan],
        &["migrate", plan],
        &["rollback", plan],
    ];
    let mut outputs = Vec::new();
    for args in runs {
        let out = distls_traced(t, cwd.path(), args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            !out.stderr.is_empty(),
            "{args:?}: RUST_LOG=trace logs something"
        );
        outputs.push((args, out));
    }
    let seen = sampler.finish();
    for (args, out) in &outputs {
        for secret in &secrets {
            assert!(
                !contains(&out.stdout, secret) && !contains(&out.stderr, secret),
                "{args:?} shows a secret: {}",
                describe(out)
            );
        }
    }
    let dry = stdout(&outputs[0].1);
    assert!(dry.contains("--- "), "the dry run shows diffs: {dry}");
    assert!(
        seen.leaks.is_empty(),
        "processes distls started hold a secret (the cookie or an env value) in argv: {:#?}",
        seen.leaks
    );
    assert!(
        seen.distls_vms > 0,
        "the sampler saw distls's probe VMs (else it proves nothing)"
    );
    // `check --handshake`: its VMs carry no cookie at all, and the listener listened on loopback
    // only (the nodes here are `@localhost`).
    assert!(
        seen.handshake_setcookie.is_empty(),
        "{:#?}",
        seen.handshake_setcookie
    );
    assert!(
        !seen.handshake_listen.is_empty(),
        "the sampler saw the handshake listener's socket"
    );
    assert!(
        seen.handshake_listen
            .iter()
            .all(|a| a.starts_with("127.0.0.1:")),
        "the handshake listener listened on {:?}",
        seen.handshake_listen
    );
    let state = Path::new(plan).parent().unwrap().join(".distls");
    let state_files = files_under(&state);
    assert!(
        state_files
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".journal.json")),
        "a journal was written: {state_files:?}"
    );
    for (path, bytes) in &state_files {
        assert!(
            !contains(bytes, &cookie),
            "{} holds the cookie",
            path.display()
        );
    }
    let left: Vec<PathBuf> = files_under(cwd.path())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        left.is_empty(),
        "nothing written into the operator's working directory: {left:?}"
    );
    // No run lock left on any node's host.
    for (path, _) in files_under(t.cluster.dir()) {
        assert!(
            !path.to_string_lossy().ends_with(".distls-lock"),
            "{} left behind",
            path.display()
        );
    }
}

#[test]
fn no_cookie_in_any_output_journal_or_argv() {
    let t = cluster("nocookie", 3);
    assert_no_cookie_anywhere(&t, &t.plan());
    t.wait_for_mesh("inet_tcp", "tcp");
}

/// Over SSH with `become`, every command line is `[become] sh -c '…'`: the plan's `env` (here
/// a secret-like value that each node's ping checks by its hash, so it must arrive) travels on
/// stdin, never in the argv `ps` shows on the host.
#[test]
fn no_cookie_or_env_value_in_argv_over_ssh_with_become() {
    use sha2::Digest;
    let t = cluster("nocookiessh", 3);
    let sshd = crate::sshd::TestSshd::start(&t.cluster.dir().join("sshd"));
    let secret = format!("EnvSecret{}x{}", std::process::id(), t.cluster.epmd_port());
    let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    t.cluster.write_plan_with(|i| {
        let ctl = t.cluster.nodes()[i].ctl_path().display().to_string();
        format!(
            "    commands:\n      ping: \"[ \\\"$(printf %s \\\"$DISTLS_TEST_SECRET\\\" | sha256sum | cut -c1-64)\\\" = {digest} ] && exec {ctl} ping\"\n"
        )
    });
    let mut env = t.cluster.env();
    env.push(("DISTLS_TEST_SECRET".to_string(), secret.clone()));
    let settings = format!(
        "{}  become: env\n",
        sshd.plan_settings("user_key", "known_hosts", &env)
    );
    let plan = t.plan();
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("  transport: local\n"), "{text}");
    std::fs::write(&plan, text.replace("  transport: local\n", &settings)).unwrap();
    assert_no_secret_anywhere(&t, &plan, &[&secret]);
    t.wait_for_mesh("inet_tcp", "tcp");
}

/// relx keeps the cookie in the very file distls edits: `-setcookie` is diff context in the dry run.
#[test]
fn no_cookie_in_any_output_journal_or_argv_with_relx() {
    let t = cluster("nocookierelx", 3);
    let plan = relx_plan(&t);
    assert_no_cookie_anywhere(&t, &plan);
    t.wait_for_mesh("inet_tcp", "tcp");
}

/// A relx plan for the rehearsal cluster, each vm.args ending with its `-setcookie` line.
fn relx_plan(t: &TestCluster) -> PathBuf {
    for node in t.cluster.nodes() {
        // As in a generated relx vm.args, the cookie is the last flag: the dry run's diff (two
        // lines of context above the appended ones) shows it.
        let text = std::fs::read_to_string(node.vm_args()).unwrap();
        let (cookie, rest): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("-setcookie "));
        std::fs::write(
            node.vm_args(),
            format!("{}\n{}\n", rest.join("\n"), cookie.join("\n")),
        )
        .unwrap();
    }
    let dir = t.cluster.dir().join("relx");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.yaml");
    write_relx_plan(t, "relx-secrets", &plan);
    plan
}

/// The nodes' files (the state directory's flock file records each run's pid: left out).
fn node_files(t: &TestCluster) -> std::collections::BTreeMap<PathBuf, String> {
    let mut files = t.file_hashes();
    files.retain(|path, _| !path.components().any(|c| c.as_os_str() == ".distls"));
    files
}

fn lock_files(t: &TestCluster) -> Vec<PathBuf> {
    (0..t.node_names().len())
        .map(|i| PathBuf::from(format!("{}.distls-lock", t.dist_args_path(i).display())))
        .filter(|p| p.exists())
        .collect()
}

fn plant_lock(path: &Path, host: &str, pid: u32) {
    std::fs::write(
        path,
        format!(
            "distls-lock 1\nrun feedfacefeedface\nhost {host}\npid {pid}\nstarted 2026-01-01T00:00:00Z\nplan /elsewhere/plan.yaml\n"
        ),
    )
    .unwrap();
}

/// Two copies of one plan in two directories (two state directories: the journal's flock cannot
/// see the other), one naming the files through a linked directory, started at once against the same nodes: one runs, the other is refused by the
/// lock on the nodes' hosts, naming the first (host, pid). Then: a fresh lock of another operator
/// host refuses a rollback; a lock whose same-host pid is gone and one not refreshed for 10
/// minutes are taken over; `--break-lock` takes over a fresh one.
#[test]
fn two_plan_copies_cannot_roll_the_same_nodes_at_once() {
    let t = cluster("lockx", 3);
    let plan_a = t.plan();
    let copy = tempfile::Builder::new()
        .prefix("distls-plan-copy-")
        .tempdir()
        .unwrap();
    // The copy reaches the same files through a (root-owned, so trusted) link to the cluster's
    // directory: the lock is keyed on the real file, not on the name a plan gives it.
    let dir = plan_a.parent().unwrap().to_str().unwrap().to_string();
    let via_link = copy.path().join("via-link");
    std::os::unix::fs::symlink(&dir, &via_link).unwrap();
    let text = std::fs::read_to_string(&plan_a).unwrap();
    assert!(
        text.contains(&dir),
        "the plan names the cluster's files by path: {text}"
    );
    let plan_b = copy.path().join("plan.yaml");
    std::fs::write(&plan_b, text.replace(&dir, via_link.to_str().unwrap())).unwrap();
    let first = t.spawn_distls(&["migrate", "--classic", plan_a.to_str().unwrap()]);
    let second = t.spawn_distls(&["migrate", "--classic", plan_b.to_str().unwrap()]);
    let pids = [first.id(), second.id()];
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let winners: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one run migrates:\n{}\n{}",
        describe(&outs[0]),
        describe(&outs[1])
    );
    let (won, lost) = (winners[0], 1 - winners[0]);
    let refused = &outs[lost];
    assert_eq!(refused.status.code(), Some(6), "{}", describe(refused));
    let said = stderr(refused);
    assert!(
        said.contains("another distls run holds its lock")
            && said.contains(&format!("pid {}", pids[won]))
            && said.contains(&format!("from host {}", distls::node_lock::this_host()))
            && said.contains("started "),
        "the refusal names the holder: {said}"
    );
    t.assert_mesh("inet_tls", "tls");
    assert!(lock_files(&t).is_empty(), "released: {:?}", lock_files(&t));
    let winner_plan = if won == 0 { &plan_a } else { &plan_b };
    let winner_plan = winner_plan.to_str().unwrap();

    // Another operator host's fresh lock on node 2: refused, nothing changed, no lock of ours left.
    let node2_lock = PathBuf::from(format!("{}.distls-lock", t.dist_args_path(1).display()));
    plant_lock(&node2_lock, "laptop-elsewhere", 4242);
    let files = node_files(&t);
    let out = t.distls(&["rollback", winner_plan]);
    assert_eq!(out.status.code(), Some(6), "{}", describe(&out));
    assert!(
        stderr(&out).contains("from host laptop-elsewhere, pid 4242"),
        "{}",
        describe(&out)
    );
    assert_eq!(lock_files(&t), vec![node2_lock.clone()]);
    assert_eq!(node_files(&t), files, "a refused run changes nothing");
    let status = t.distls(&["status", winner_plan]);
    assert!(status.status.success(), "{}", describe(&status));
    assert!(
        stdout(&status).contains(&format!(
            "run lock {}: run feedfacefeedface from host laptop-elsewhere, pid 4242",
            node2_lock.display()
        )),
        "status shows the holder: {}",
        describe(&status)
    );
    t.assert_mesh("inet_tls", "tls");

    // A holder on this host whose pid is gone, and one silent for 11 minutes: taken over.
    let gone = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    plant_lock(&node2_lock, &distls::node_lock::this_host(), gone);
    let node3_lock = PathBuf::from(format!("{}.distls-lock", t.dist_args_path(2).display()));
    plant_lock(&node3_lock, "laptop-elsewhere", 4242);
    let touched = Command::new("touch")
        .args(["-d", "11 minutes ago"])
        .arg(&node3_lock)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = t.distls(&["rollback", winner_plan]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert_eq!(
        said.matches("taking over the lock").count(),
        2,
        "both stale locks are taken over, with a warning: {said}"
    );
    t.wait_for_mesh("inet_tcp", "tcp");
    assert!(lock_files(&t).is_empty(), "{:?}", lock_files(&t));

    // A fresh foreign lock, broken on purpose.
    plant_lock(&node2_lock, "laptop-elsewhere", 4242);
    let out = t.distls(&["rollback", "--break-lock", winner_plan]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("(--break-lock)"),
        "{}",
        describe(&out)
    );
    assert!(lock_files(&t).is_empty(), "{:?}", lock_files(&t));
}

/// A cluster migrated with a plan, torn down and rebuilt plain (original files, no backups,
/// nodes restarted), then `migrate` with the same plan: the completed journal belongs to the
/// earlier cluster. distls says so within seconds, changes nothing, and names `--new-run`, which
/// archives the old journal and migrates the new cluster.
#[test]
fn a_journal_of_an_earlier_cluster_is_not_trusted() {
    let t = cluster("stalej", 3);
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan_s = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--classic", plan_s]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(journal(&plan)["phase"], "completed");

    // Rebuilt plain from scratch, in place.
    for node in 0..3 {
        let stop = t.cluster.ctl(node, &["stop"]);
        assert!(stop.status.success(), "{stop:?}");
    }
    for (node, original) in originals.iter().enumerate() {
        std::fs::write(t.dist_args_path(node), original).unwrap();
        std::fs::remove_file(format!("{}.distls-orig", t.dist_args_path(node).display())).unwrap();
    }
    for node in 0..3 {
        let start = t.cluster.ctl(node, &["start"]);
        assert!(start.status.success(), "{start:?}");
    }
    t.wait_for_mesh("inet_tcp", "tcp");

    let files = node_files(&t);
    let started = Instant::now();
    let out = t.distls(&["migrate", "--classic", plan_s]);
    let took = started.elapsed();
    eprintln!(
        "MEASURED stale journal refused in {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let said = stderr(&out);
    assert!(
        said.contains("the journal belongs to an earlier cluster") && said.contains("--new-run"),
        "{said}"
    );
    assert!(took < Duration::from_secs(60), "refused quickly: {took:?}");
    assert_eq!(node_files(&t), files, "nothing changed");
    assert_eq!(journal(&plan)["phase"], "completed", "the journal is kept");
    t.assert_mesh("inet_tcp", "tcp");

    let out = t.distls(&["migrate", "--classic", "--new-run", plan_s]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains(".archived-"), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    let archived = std::fs::read_dir(plan.parent().unwrap().join(".distls"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(".journal.json.archived-")
        })
        .count();
    assert_eq!(archived, 1);

    // Against a journal the cluster bears out, --new-run is refused: it would forget that run.
    let out = t.distls(&["migrate", "--classic", "--new-run", plan_s]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("belongs to this cluster"),
        "{}",
        describe(&out)
    );
}
