//! `distls check` and the preflight of `migrate` against a real 3-node cluster. The checks are
//! read-only, so the defect cases share one cluster: each gets its own plan (outside the cluster's
//! directory) that points node 1 at a broken copy, and must FAIL naming that defect while the
//! untouched nodes pass the same check.

use crate::support::*;
use distls::rehearsal::{TlsFiles, write_custom_cert, write_foreign_ca_cert};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every check that runs on a healthy cluster without `--handshake` or `--zero-split`.
const CHECK_IDS: [&str; 23] = [
    "plan.commands",
    "plan.files",
    "plan.identity",
    "plan.proto_dist",
    "plan.dist_args",
    "plan.listen_port",
    "runtime.otp",
    "runtime.otp_rules",
    "runtime.advisories",
    "runtime.otp_mixed",
    "tls.known_keys",
    "tls.client_fail_if_no_peer_cert",
    "tls.verify_peer",
    "tls.server_fail_if_no_peer_cert",
    "cert.files",
    "cert.readable",
    "cert.key_permissions",
    "cert.pem",
    "cert.key_matches",
    "cert.chain",
    "cert.expiry",
    "cert.hostname",
    "tls.same_options",
];

struct Check {
    code: Option<i32>,
    findings: Vec<Value>,
    output: String,
}

impl Check {
    fn finding(&self, node: Option<&str>, check: &str) -> &Value {
        self.findings
            .iter()
            .find(|f| f["check"] == check && f["node"].as_str() == node)
            .unwrap_or_else(|| panic!("no {check} finding for {node:?}:\n{}", self.output))
    }

    /// `check` FAILs for `node` with a message containing `needle`.
    fn assert_fails(&self, node: &str, check: &str, needle: &str) {
        assert_eq!(self.code, Some(3), "{}", self.output);
        let finding = self.finding(Some(node), check);
        assert_eq!(finding["severity"], "fail", "{finding}");
        let message = finding["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{check} should name {needle:?}: {message}"
        );
        assert!(!finding["fix"].as_str().unwrap().is_empty(), "{finding}");
    }

    fn assert_ok(&self, node: Option<&str>, check: &str) {
        let finding = self.finding(node, check);
        assert_eq!(finding["severity"], "ok", "{finding}");
    }
}

fn check(t: &TestCluster, plan: &Path, extra: &[&str]) -> Check {
    let mut args = vec!["check", "--json"];
    args.extend_from_slice(extra);
    args.push(plan.to_str().unwrap());
    let out = t.distls(&args);
    let json: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", describe(&out)));
    Check {
        code: out.status.code(),
        findings: json["findings"].as_array().unwrap().clone(),
        output: describe(&out),
    }
}

/// A plan for the cluster in which node 1 (index 0) gets `node_yaml`, written to `dir/name.yaml`.
fn defect_plan(t: &TestCluster, dir: &Path, name: &str, node_yaml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = t.cluster.plan_yaml(|index| {
        if index == 0 {
            node_yaml.to_string()
        } else {
            String::new()
        }
    });
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_yaml(files: &TlsFiles) -> String {
    format!(
        "    tls:\n      certfile: {}\n      keyfile: {}\n      cacertfile: {}\n",
        files.certfile.display(),
        files.keyfile.display(),
        files.cacertfile.display()
    )
}

/// A copy of the cluster's certificate files in `dir`, each with mode `modes`.
fn copy_tls(t: &TestCluster, dir: &Path, modes: [u32; 3]) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let source = t.cluster.tls_files();
    let copy = |from: &Path, mode: u32| {
        let to = dir.join(from.file_name().unwrap());
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        to
    };
    TlsFiles {
        certfile: copy(&source.certfile, modes[0]),
        keyfile: copy(&source.keyfile, modes[1]),
        cacertfile: copy(&source.cacertfile, modes[2]),
    }
}

/// Node 1's vm.dist.args (or vm.args) copied to `dir` with `edit` applied; returns plan YAML.
fn edited_args(t: &TestCluster, dir: &Path, key: &str, edit: impl Fn(&str) -> String) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let node = &t.cluster.nodes()[0];
    let source = if key == "vm_args" {
        node.vm_args()
    } else {
        node.vm_dist_args()
    };
    let text = std::fs::read_to_string(&source).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changes the file");
    let copy = dir.join(source.file_name().unwrap());
    std::fs::write(&copy, edited).unwrap();
    format!("    {key}: {}\n", copy.display())
}

struct Untouched {
    hashes: std::collections::BTreeMap<PathBuf, String>,
    pids: Vec<Option<u32>>,
}

fn snapshot(t: &TestCluster) -> Untouched {
    Untouched {
        hashes: t.file_hashes(),
        pids: (0..3).map(|i| t.cluster.node_os_pid(i)).collect(),
    }
}

fn assert_untouched(t: &TestCluster, before: &Untouched) {
    assert_eq!(t.file_hashes(), before.hashes, "files byte-identical");
    let pids: Vec<Option<u32>> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    assert_eq!(pids, before.pids, "no node restarted");
    assert!(before.pids.iter().all(Option::is_some));
    t.assert_mesh("inet_tcp", "tcp");
}

#[test]
fn a_healthy_cluster_passes_every_check() {
    let t = cluster("pfok", 3);
    let before = snapshot(&t);
    let names = t.node_names();

    let result = check(&t, &t.plan(), &["--handshake", "--classic"]);
    assert_eq!(result.code, Some(0), "{}", result.output);
    for finding in &result.findings {
        // This machine's ssl (Debian 12's OTP 25) is, by version and Debian's changelog,
        // affected by advisories on TLS client handshakes: the one warning a healthy
        // cluster may get, and it names them.
        if finding["check"] == "runtime.advisories" && finding["severity"] == "warn" {
            assert!(
                finding["message"]
                    .as_str()
                    .unwrap()
                    .contains("is affected by CVE-"),
                "{finding}"
            );
            continue;
        }
        assert_eq!(finding["severity"], "ok", "{finding}");
    }
    assert!(
        !result
            .findings
            .iter()
            .any(|f| f["check"] == "mode.zero_split"),
        "the zero-split check is left out with --classic"
    );
    let rules = result.finding(None, "runtime.otp_rules")["message"]
        .as_str()
        .unwrap();
    assert!(rules.starts_with("OTP "), "{rules}");
    result.assert_ok(Some(&names[0]), "tls.server_fail_if_no_peer_cert");
    for id in CHECK_IDS {
        assert!(
            result.findings.iter().any(|f| f["check"] == id),
            "{id} ran: {}",
            result.output
        );
    }
    result.assert_ok(None, "handshake");
    for name in &names {
        result.assert_ok(Some(name), "cert.chain");
        result.assert_ok(Some(name), "cert.readable");
        // Its epmd lists it, so the probe was asked for its OS pid: the VM's own user counts.
        let readable = result.finding(Some(name), "cert.readable");
        assert!(
            readable["message"]
                .as_str()
                .unwrap()
                .contains("the user of the node's running VM"),
            "{readable}"
        );
    }
    let otp = result.finding(None, "runtime.otp")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(otp.starts_with("OTP ") && otp.contains("ssl "), "{otp}");

    // The rehearsal certificate has about a year left: a 400-day window warns, and warnings pass.
    let window = check(&t, &t.plan(), &["--expiry-window", "400d"]);
    assert_eq!(window.code, Some(0), "{}", window.output);
    let expiry = window.finding(Some(&names[0]), "cert.expiry");
    assert_eq!(expiry["severity"], "warn", "{expiry}");
    assert!(
        expiry["message"]
            .as_str()
            .unwrap()
            .contains("within the 400-day window"),
        "{expiry}"
    );

    let table = t.distls(&["check", t.plan().to_str().unwrap()]);
    assert!(table.status.success(), "{}", describe(&table));
    let text = stdout(&table);
    assert!(text.starts_with("HOST"), "{text}");
    assert!(text.contains("cert.key_matches"), "{text}");
    assert!(text.contains(", 0 FAIL"), "{text}");

    // This machine's OTP 25 has everything distls's hybrid module needs: zero-split, the
    // default roll, may run; `check` checks for it unless told --classic.
    let zero_split = check(&t, &t.plan(), &[]);
    assert_eq!(zero_split.code, Some(0), "{}", zero_split.output);
    let mode = zero_split.finding(None, "mode.zero_split");
    assert_eq!(mode["severity"], "ok", "{mode}");
    assert!(
        mode["message"]
            .as_str()
            .unwrap()
            .contains("has every function the hybrid module needs"),
        "{mode}"
    );

    fifty_nodes_are_grouped_for_people_and_listed_in_json(&t);
    assert_untouched(&t, &before);
}

/// The cluster's plan grown to 50 nodes: 47 more (not running) with their own vm.args and
/// vm.dist.args outside the cluster's directory, sharing node 1's ctl and the certificates.
fn fifty_node_plan(t: &TestCluster, dir: &Path) -> PathBuf {
    let first = &t.cluster.nodes()[0];
    let names = t.node_names();
    let (_, host) = names[0].split_once('@').unwrap();
    let ctl = first
        .vm_args()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bin/ctl");
    let dist_args = std::fs::read_to_string(first.vm_dist_args()).unwrap();
    let mut yaml = t.cluster.plan_yaml(|_| String::new());
    for k in 4..=50 {
        let name = format!("pfok{k}@{host}");
        let etc = dir.join(format!("pfok{k}/etc"));
        std::fs::create_dir_all(&etc).unwrap();
        let sname = name.split('@').next().unwrap();
        std::fs::write(
            etc.join("vm.args"),
            format!("-sname {sname}\n-setcookie grouped\n"),
        )
        .unwrap();
        std::fs::write(etc.join("vm.dist.args"), &dist_args).unwrap();
        let ctl = ctl.display();
        yaml.push_str(&format!(
            "  - name: \"{name}\"\n    vm_args: {}\n    vm_dist_args: {}\n    commands: {{ stop: \"{ctl} stop\", start: \"{ctl} start\", ping: \"{ctl} ping\" }}\n",
            etc.join("vm.args").display(),
            etc.join("vm.dist.args").display(),
        ));
    }
    let path = dir.join("fifty.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Issue 17, item 7: identical findings of many nodes are one row (the count and 3 names);
/// `--verbose` names every node; JSON keeps one record per node and check.
fn fifty_nodes_are_grouped_for_people_and_listed_in_json(t: &TestCluster) {
    let dir = tempfile::tempdir().unwrap();
    let plan = fifty_node_plan(t, dir.path());
    let plan = plan.to_str().unwrap();
    let names = t.node_names();
    let all: Vec<String> = names
        .iter()
        .cloned()
        .chain((4..=50).map(|k| format!("pfok{k}@{}", names[0].split_once('@').unwrap().1)))
        .collect();

    let table = t.distls(&["check", "--classic", plan]);
    assert!(table.status.success(), "{}", describe(&table));
    let text = stdout(&table);
    let files_row = text
        .lines()
        .position(|l| l.contains(" plan.files ") && l.contains("50 nodes"))
        .unwrap_or_else(|| panic!("plan.files is one row for 50 nodes:\n{text}"));
    let listed = format!(
        "on 50 nodes: {}, {}, {}, … (+47; --verbose lists them)",
        all[0], all[1], all[2]
    );
    assert_eq!(
        text.lines().nth(files_row + 1).unwrap().trim(),
        listed,
        "{text}"
    );
    // Down nodes: their files' owner; running ones: their VM's user; two messages, two rows.
    assert!(
        text.lines()
            .any(|l| l.contains(" cert.readable ") && l.contains("47 nodes")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("{} ", all[49])),
        "no row of its own: {text}"
    );
    let rows = text.lines().count();
    assert!(rows < 80, "{rows} lines for 50 nodes:\n{text}");
    assert!(
        text.contains("preflight: ") && text.contains(", 0 FAIL"),
        "{text}"
    );

    let verbose = t.distls(&["check", "--classic", "--verbose", plan]);
    assert!(verbose.status.success(), "{}", describe(&verbose));
    let every = format!("on 50 nodes: {}", all.join(", "));
    assert!(stdout(&verbose).contains(&every), "{}", stdout(&verbose));

    let json = check(t, Path::new(plan), &["--classic"]);
    assert_eq!(json.code, Some(0), "{}", json.output);
    for name in &all {
        json.assert_ok(Some(name), "plan.files");
        json.assert_ok(Some(name), "cert.expiry");
    }
    let per_node = json
        .findings
        .iter()
        .filter(|f| f["check"] == "plan.files")
        .count();
    assert_eq!(per_node, 50, "{}", json.output);
}

/// Weak TLS (a server that verifies nothing and does not require a client certificate) is a
/// FAIL that `check` and `migrate` refuse, until `--allow-weak-tls` accepts it: then both are
/// warnings saying so, and the migration runs.
#[test]
fn weak_tls_is_refused_unless_allowed() {
    let t = cluster("pfweak", 3);
    let names = t.node_names();
    for index in 0..3 {
        let path = t.dist_args_path(index);
        let text = std::fs::read_to_string(&path).unwrap();
        let weak = text
            .replace(
                "server_verify     verify_peer",
                "server_verify     verify_none",
            )
            .replace("#              server_fail_if_no_peer_cert true\n", "");
        assert_ne!(weak, text);
        std::fs::write(&path, weak).unwrap();
    }
    let before = snapshot(&t);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();

    let strict = check(&t, Path::new(plan), &[]);
    for name in &names {
        strict.assert_fails(name, "tls.verify_peer", "server_verify is verify_none");
        strict.assert_fails(
            name,
            "tls.server_fail_if_no_peer_cert",
            "server_fail_if_no_peer_cert is not set",
        );
        strict.assert_ok(Some(name), "tls.known_keys");
    }
    let fails = |c: &Check| {
        c.findings
            .iter()
            .filter(|f| f["severity"] == "fail")
            .map(|f| f["check"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        fails(&strict),
        ["tls.server_fail_if_no_peer_cert", "tls.verify_peer"]
            .map(String::from)
            .into(),
        "only the weak-TLS checks fail: {}",
        strict.output
    );

    let allowed = check(&t, Path::new(plan), &["--allow-weak-tls"]);
    assert_eq!(allowed.code, Some(0), "{}", allowed.output);
    for name in &names {
        for id in ["tls.verify_peer", "tls.server_fail_if_no_peer_cert"] {
            let finding = allowed.finding(Some(name), id);
            assert_eq!(finding["severity"], "warn", "{finding}");
            assert!(
                finding["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("accepted with --allow-weak-tls: "),
                "{finding}"
            );
        }
    }

    // migrate refuses it like any FAIL: exit 3, nothing touched, no state directory.
    let refused = t.distls(&["migrate", "--classic", plan]);
    assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
    let err = stderr(&refused);
    assert!(err.contains("tls.verify_peer"), "{}", describe(&refused));
    assert!(
        err.contains("--allow-weak-tls"),
        "the fix names the flag: {err}"
    );
    assert!(!t.plan().parent().unwrap().join(".distls").exists());
    assert_untouched(&t, &before);
    // The dry run shows the FAILs as information.
    let dry = t.distls(&["migrate", "--classic", "--dry-run", plan]);
    assert!(dry.status.success(), "{}", describe(&dry));
    assert!(
        stdout(&dry).contains("NO PEER VERIFICATION"),
        "{}",
        describe(&dry)
    );

    // Accepted, the switch runs, and the nodes run TLS with the options as written.
    let migrated = t.distls(&["migrate", "--classic", "--allow-weak-tls", plan]);
    assert!(migrated.status.success(), "{}", describe(&migrated));
    assert!(
        stdout(&migrated).contains("accepted with --allow-weak-tls"),
        "the warnings are shown: {}",
        describe(&migrated)
    );
    t.assert_mesh("inet_tls", "tls");
    let text = std::fs::read_to_string(t.dist_args_path(0)).unwrap();
    assert!(
        text.contains("\n              server_verify     verify_none"),
        "{text}"
    );
}

/// One broken copy for node 1: the plan YAML that points at it, and what preflight must say.
struct Defect {
    name: &'static str,
    node_yaml: String,
    check: &'static str,
    /// Each must appear in the FAIL message.
    names: &'static [&'static str],
    /// Checks that must still pass for node 1: the defect is reported by its own check only.
    still_ok: &'static [&'static str],
}

fn defects(t: &TestCluster, dir: &Path) -> Vec<Defect> {
    let good_modes = [0o644, 0o600, 0o644];
    let mut missing = copy_tls(t, &dir.join("missing"), good_modes);
    missing.certfile = dir.join("missing/no_such_cert.pem");
    let foreign = write_foreign_ca_cert(&dir.join("foreign")).unwrap();
    let mut mismatch = copy_tls(t, &dir.join("mismatch"), good_modes);
    mismatch.keyfile = foreign.keyfile.clone();
    let wrong_ca = TlsFiles {
        cacertfile: t.cluster.tls_files().cacertfile.clone(),
        ..foreign
    };
    let tls_defect = |name, files: &TlsFiles, check, names, still_ok| Defect {
        name,
        node_yaml: tls_yaml(files),
        check,
        names,
        still_ok,
    };
    let args_defect =
        |name: &'static str, key, edit: &dyn Fn(&str) -> String, check, names, still_ok| Defect {
            name,
            node_yaml: edited_args(t, &dir.join(name), key, edit),
            check,
            names,
            still_ok,
        };
    vec![
        tls_defect(
            "missing",
            &missing,
            "cert.files",
            &["no_such_cert.pem does not exist"],
            &["plan.files"],
        ),
        // distls runs as root here, and root reads anything; the check judges the mode bits for
        // the node's user without root's override, so mode 000 fails (see preflight/access.rs).
        tls_defect(
            "unreadable",
            &copy_tls(t, &dir.join("unreadable"), [0o000, 0o600, 0o644]),
            "cert.readable",
            &["node_cert.pem (mode 000"],
            &["cert.pem", "cert.chain"],
        ),
        tls_defect(
            "mismatch",
            &mismatch,
            "cert.key_matches",
            &["does not belong to certfile"],
            &["cert.chain"],
        ),
        tls_defect(
            "wrong_ca",
            &wrong_ca,
            "cert.chain",
            &["not issued by a CA in cacertfile"],
            &["cert.key_matches", "cert.hostname"],
        ),
        tls_defect(
            "san",
            &write_custom_cert(&dir.join("san"), &["otherhost.example"], -1..365).unwrap(),
            "cert.hostname",
            &["does not cover host localhost", "DNS:otherhost.example"],
            &["cert.chain", "cert.expiry"],
        ),
        tls_defect(
            "expired",
            &write_custom_cert(&dir.join("expired"), &["localhost"], -400..-1).unwrap(),
            "cert.expiry",
            &["expired on"],
            &["cert.chain", "cert.hostname"],
        ),
        tls_defect(
            "world_readable",
            &copy_tls(t, &dir.join("world"), [0o644, 0o644, 0o644]),
            "cert.key_permissions",
            &["world-readable (mode 644)"],
            &["cert.readable"],
        ),
        args_defect(
            "typo",
            "vm_dist_args",
            &|text| text.replace("server_certfile", "server_certfle"),
            "tls.known_keys",
            &["`server_certfle`", "did you mean `server_certfile`?"],
            &["plan.identity", "plan.proto_dist", "tls.verify_peer"],
        ),
        // Fatal on OTP 25 too; the OTP >= 26 wording is unit-tested in preflight::options with a
        // made-up release, since this machine runs OTP 25.
        args_defect(
            "client_fail",
            "vm_dist_args",
            &|text| {
                let line = "#              server_fail_if_no_peer_cert true";
                text.replace(
                    line,
                    &format!("{line}\n#              client_fail_if_no_peer_cert true"),
                )
            },
            "tls.client_fail_if_no_peer_cert",
            &["client_fail_if_no_peer_cert (line ", "only for the server"],
            &["tls.known_keys"],
        ),
        args_defect(
            "proto_dist",
            "vm_args",
            &|text| format!("{text}-proto_dist inet_tcp\n"),
            "plan.proto_dist",
            &["vm.args sets -proto_dist inet_tcp"],
            &["plan.files", "plan.commands", "cert.chain"],
        ),
        // A single pinned listen port, which the ctl VMs would also try to bind.
        args_defect(
            "pinned_port",
            "vm_dist_args",
            &|text| {
                text.replace(
                    "#-kernel inet_dist_listen_min",
                    "-kernel inet_dist_listen_min",
                )
            },
            "plan.listen_port",
            &["pins the distribution listen port to 30000"],
            &["plan.dist_args"],
        ),
    ]
}

#[test]
fn each_defect_fails_its_check_and_touches_nothing() {
    let t = cluster("pfbad", 3);
    let before = snapshot(&t);
    let first = t.node_names()[0].clone();
    let second = t.node_names()[1].clone();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    for defect in defects(&t, dir) {
        let plan = defect_plan(&t, dir, defect.name, &defect.node_yaml);
        let result = check(&t, &plan, &[]);
        for name in defect.names {
            result.assert_fails(&first, defect.check, name);
        }
        for check in defect.still_ok {
            result.assert_ok(Some(&first), check);
        }
        result.assert_ok(Some(&second), defect.check);
    }

    // With the SAN-less certificate on every node, two real TLS VMs cannot connect either.
    let san = write_custom_cert(&dir.join("san_all"), &["otherhost.example"], -1..365).unwrap();
    let plan = dir.join("san_all.yaml");
    std::fs::write(&plan, t.cluster.plan_yaml(|_| tls_yaml(&san))).unwrap();
    let result = check(&t, &plan, &["--handshake"]);
    let handshake = result.finding(None, "handshake");
    assert_eq!(handshake["severity"], "fail", "{}", result.output);
    assert!(
        handshake["message"]
            .as_str()
            .unwrap()
            .contains("hostname_check_failed"),
        "OTP's own reason is shown: {handshake}"
    );

    // migrate runs the same checks first and refuses, touching nothing.
    let plan = dir.join("expired.yaml");
    let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains("cert.expiry"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("nothing was touched"),
        "{}",
        describe(&out)
    );
    assert!(!dir.join(".distls").exists(), "no journal, no lock");

    assert_untouched(&t, &before);
}
