//! The bad input corpus (tests/corpus/, docs/reliability.md): one directory per malformed or
//! hostile input, walked by one data-driven test.
//!
//! A case directory holds the inputs (`plan.yaml`, `vm.args`, `vm.dist.args`, any other file) and
//! `expect.txt`. Missing inputs get the defaults below: a one-node plan pointing at `vm.args` and
//! `vm.dist.args` beside it, a valid vm.args and MongooseIM's vm.dist.args template.
//!
//! `expect.txt`, one `key: value` per line (`#` starts a comment line):
//! * `expect: ok` or `expect: error`
//! * `exit: N`: the exit code (0 for ok)
//! * `contains: TEXT` (repeatable): a fragment stderr (error) or stdout (ok: the dry-run diff)
//!   must contain; `{dir}` stands for the case's directory, `<CR>` for a carriage return
//! * `lacks: TEXT` (repeatable): a fragment that must not appear in that output
//! * `setup: symlink LINK TARGET` | `readonly FILE` | `fifo FILE` | `append FILE BYTES LINE` |
//!   `chmod PATH OCTAL`:
//!   what git cannot carry, made in the copy before the run; `state FILE NAME`: the case's FILE
//!   copied into the state directory as NAME (e.g. a hand-edited journal)
//!
//! Each case runs on a fresh copy: `distls migrate --dry-run`, and for errors also the real
//! `distls migrate` (nodes are not running: it must refuse in its checks, before any change). Every
//! run must end within a time limit, and every file of the case (content, mode, symlink target)
//! must be the same afterwards, with no file added or removed.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// A whole case (its dry run and real run) on a loaded machine; a regression to the quadratic scan
/// of many-line files takes minutes.
const CASE_LIMIT: Duration = Duration::from_secs(30);

const DEFAULT_PLAN: &str = "version: 1
cluster: corpus
tls:
  certfile: /etc/distls/cert.pem
  keyfile: /etc/distls/key.pem
  cacertfile: /etc/distls/ca.pem
defaults:
  vm_dist_args: vm.dist.args
  vm_args: vm.args
  commands:
    stop: \"false\"
    start: \"false\"
nodes:
  - name: corpus@localhost
";

const DEFAULT_VM_ARGS: &str = "-sname corpus@localhost\n-setcookie SECRET\n";

const DEFAULT_VM_DIST_ARGS: &str = "## Define what port range the Erlang VM should listen on.
#-kernel inet_dist_listen_min 30000
#-kernel inet_dist_listen_max 30100

## Use TLS for connections between Erlang cluster members.
#-proto_dist inet_tls
#-ssl_dist_opt server_certfile   /old/cert.pem client_certfile   /old/cert.pem
#              server_keyfile    /old/key.pem  client_keyfile    /old/key.pem
#              server_cacertfile /old/ca.pem    client_cacertfile /old/ca.pem
#              client_verify     verify_peer
#              server_verify     verify_peer
#              server_fail_if_no_peer_cert true
";

#[derive(Debug, Default)]
struct Expect {
    ok: bool,
    exit: i32,
    contains: Vec<String>,
    lacks: Vec<String>,
    setup: Vec<Vec<String>>,
}

fn parse_expect(case: &Path) -> Result<Expect, String> {
    let path = case.join("expect.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut expect = Expect::default();
    let mut kind = None;
    let mut exit = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else {
            return Err(format!(
                "{}:{}: not `key: value`",
                path.display(),
                index + 1
            ));
        };
        match key {
            "expect" => kind = Some(value == "ok"),
            "exit" => exit = value.parse().ok(),
            "contains" => expect.contains.push(value.replace("<CR>", "\r")),
            "lacks" => expect.lacks.push(value.replace("<CR>", "\r")),
            "setup" => expect
                .setup
                .push(value.splitn(4, ' ').map(str::to_owned).collect()),
            other => {
                return Err(format!(
                    "{}:{}: unknown key {other}",
                    path.display(),
                    index + 1
                ));
            }
        }
    }
    expect.ok = kind.ok_or_else(|| format!("{}: no `expect:`", path.display()))?;
    expect.exit = exit.ok_or_else(|| format!("{}: no `exit:`", path.display()))?;
    if expect.contains.is_empty() {
        return Err(format!("{}: no `contains:`", path.display()));
    }
    if expect.ok != (expect.exit == 0) {
        return Err(format!("{}: `expect: ok` goes with exit 0", path.display()));
    }
    Ok(expect)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "expect.txt" || name == ".keep" {
            continue;
        }
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

fn apply_setup(dir: &Path, step: &[String]) {
    let file = |i: usize| dir.join(&step[i]);
    match step[0].as_str() {
        "symlink" => std::os::unix::fs::symlink(&step[2], file(1)).unwrap(),
        "readonly" => {
            std::fs::set_permissions(file(1), std::fs::Permissions::from_mode(0o444)).unwrap()
        }
        "fifo" => {
            let status = Command::new("mkfifo").arg(file(1)).status().unwrap();
            assert!(status.success(), "mkfifo");
        }
        "chmod" => {
            let mode = u32::from_str_radix(&step[2], 8).unwrap();
            std::fs::set_permissions(file(1), std::fs::Permissions::from_mode(mode)).unwrap()
        }
        "append" => {
            let size: usize = step[2].parse().unwrap();
            let line = format!("{}\n", step[3]);
            let mut text = std::fs::read(file(1)).unwrap_or_default();
            while text.len() < size {
                text.extend_from_slice(line.as_bytes());
            }
            std::fs::write(file(1), text).unwrap();
        }
        other => panic!("unknown setup step {other}"),
    }
}

fn fill_defaults(dir: &Path) {
    for (name, text) in [
        ("plan.yaml", DEFAULT_PLAN),
        ("vm.args", DEFAULT_VM_ARGS),
        ("vm.dist.args", DEFAULT_VM_DIST_ARGS),
    ] {
        let path = dir.join(name);
        if path.symlink_metadata().is_err() {
            std::fs::write(path, text).unwrap();
        }
    }
}

/// Every entry under `dir`: kind, mode, and the content's sha256 or the link's target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    snapshot_into(dir, &mut out);
    out
}

fn snapshot_into(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = path.symlink_metadata().unwrap();
        let mode = meta.permissions().mode();
        let what = if meta.is_symlink() {
            format!("link -> {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            snapshot_into(&path, out);
            "dir".to_owned()
        } else if meta.is_file() {
            hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
        } else {
            "special".to_owned()
        };
        out.insert(path, format!("{mode:o} {what}"));
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs distls, killing it (and failing the case) if it outlives [`RUN_LIMIT`].
fn run(args: &[&str], plan: &Path, state_dir: &Path) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(args)
        .arg(plan)
        .env("DISTLS_STATE_DIR", state_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(stdout));
    let stderr = read(Box::new(stderr));
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ok(Run {
                code: status.code(),
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
                took: started.elapsed(),
            });
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "distls {args:?} still running after {RUN_LIMIT:?}: killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_case(case: &Path) -> Result<Duration, String> {
    let expect = parse_expect(case)?;
    let scratch = tempfile::Builder::new()
        .prefix("distls-corpus-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().join("case");
    let state_dir = scratch.path().join("state");
    copy_tree(case, &dir);
    // Links and FIFOs take the place of a default file; the other steps change one.
    let (state, setup): (Vec<_>, Vec<_>) = expect.setup.iter().partition(|step| step[0] == "state");
    std::fs::create_dir_all(&state_dir).unwrap();
    for step in state {
        std::fs::copy(dir.join(&step[1]), state_dir.join(&step[2])).unwrap();
    }
    let state_before = snapshot(&state_dir);
    let (replacing, changing): (Vec<_>, Vec<_>) = setup
        .into_iter()
        .partition(|step| matches!(step[0].as_str(), "symlink" | "fifo"));
    for step in replacing {
        apply_setup(&dir, step);
    }
    fill_defaults(&dir);
    for step in changing {
        apply_setup(&dir, step);
    }
    let plan = dir.join("plan.yaml");
    let before = snapshot(&dir);
    let mut runs: Vec<&[&str]> = vec![&["migrate", "--classic", "--dry-run"]];
    if !expect.ok {
        runs.push(&["migrate", "--classic"]);
    }
    let mut took = Duration::ZERO;
    for args in runs {
        let out = run(args, &plan, &state_dir)?;
        took += out.took;
        let describe = || {
            format!(
                "distls {args:?}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.code, out.stdout, out.stderr
            )
        };
        if out.code != Some(expect.exit) {
            return Err(format!("expected exit {}; {}", expect.exit, describe()));
        }
        let output = if expect.ok { &out.stdout } else { &out.stderr };
        let dir_text = dir.display().to_string();
        for fragment in &expect.contains {
            let fragment = fragment.replace("{dir}", &dir_text);
            if !output.contains(&fragment) {
                return Err(format!("output lacks {fragment:?}; {}", describe()));
            }
        }
        for fragment in &expect.lacks {
            let fragment = fragment.replace("{dir}", &dir_text);
            if output.contains(&fragment) {
                return Err(format!("output contains {fragment:?}; {}", describe()));
            }
        }
        if !expect.ok {
            // Every refusal says what to do, once.
            if !out.stderr.contains("hint:") {
                return Err(format!("the error gives no hint; {}", describe()));
            }
            if out.stderr.contains("error: error:") || out.stderr.contains("panicked") {
                return Err(format!("garbled error output; {}", describe()));
            }
        }
        if !expect.ok {
            let journal = std::fs::read_dir(&state_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    let path = e.path();
                    state_before.get(&path) != snapshot(&state_dir).get(&path)
                })
                .find(|e| e.file_name().to_string_lossy().ends_with(".journal.json"));
            if let Some(journal) = journal {
                return Err(format!(
                    "distls {args:?} refused but wrote a journal {}",
                    journal.path().display()
                ));
            }
        }
        let after = snapshot(&dir);
        if after != before {
            return Err(format!(
                "distls {args:?} changed the case's files:\nbefore {before:#?}\nafter {after:#?}"
            ));
        }
    }
    Ok(took)
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_corpus_case_is_refused_or_handled_without_changing_a_file() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let started = Instant::now();
    let busy = std::sync::Mutex::new(Duration::ZERO);
    let busy = &busy;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|case| {
                            let name = case.file_name().unwrap().to_string_lossy().into_owned();
                            match check_case(case) {
                                Ok(took) if took > CASE_LIMIT => {
                                    Some(format!("{name}: took {took:?}"))
                                }
                                Ok(took) => {
                                    *busy.lock().unwrap() += took;
                                    None
                                }
                                Err(e) => Some(format!("{name}: {e}")),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "corpus: {} cases in {:.1}s ({:.1}s of distls runs)",
        cases.len(),
        started.elapsed().as_secs_f64(),
        busy.lock().unwrap().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The harness itself: a changed byte, mode or link target, or a new file, is noticed.
#[test]
fn the_corpus_snapshot_notices_every_kind_of_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fill_defaults(root);
    std::os::unix::fs::symlink("vm.args", root.join("link")).unwrap();
    let base = snapshot(root);
    let changes: [&dyn Fn(); 4] = [
        &|| std::fs::write(root.join("vm.args"), "-sname x@y\n").unwrap(),
        &|| {
            std::fs::set_permissions(root.join("vm.dist.args"), PermissionsExt::from_mode(0o400))
                .unwrap()
        },
        &|| {
            std::fs::remove_file(root.join("link")).unwrap();
            std::os::unix::fs::symlink("vm.dist.args", root.join("link")).unwrap();
        },
        &|| std::fs::write(root.join("vm.dist.args.distls-orig"), "x").unwrap(),
    ];
    let mut previous = base;
    for change in changes {
        change();
        let now = snapshot(root);
        assert_ne!(now, previous);
        previous = now;
    }
}

/// The expectations parse, and a wrong one is caught (the assertions can fail).
#[test]
fn a_wrong_expectation_fails_the_case() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("wrong");
    std::fs::create_dir(&case).unwrap();
    std::fs::write(case.join("plan.yaml"), "version: 1\ncluster: [\n").unwrap();
    std::fs::write(
        case.join("expect.txt"),
        "expect: error\nexit: 2\ncontains: plan.yaml:2:\n",
    )
    .unwrap();
    check_case(&case).expect("the right expectation passes");
    for wrong in [
        "expect: error\nexit: 3\ncontains: plan.yaml:2:\n",
        "expect: error\nexit: 2\ncontains: plan.yaml:7:\n",
        "expect: error\nexit: 2\ncontains: plan.yaml:2:\nlacks: hint\n",
    ] {
        std::fs::write(case.join("expect.txt"), wrong).unwrap();
        assert!(check_case(&case).is_err(), "{wrong}");
    }
}
