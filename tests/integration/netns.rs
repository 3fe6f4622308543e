//! Several hosts for real: network namespaces joined by veth pairs to a bridge the test makes,
//! each with its own sshd, its own epmd (default port 4369) and one node named after its address
//! (`-name mimN@10.213.X.N`), each on its own OTP ([`crate::otp_hosts`]: this machine's OTP 25,
//! or a Debian trixie/sid root with OTP 27/29). distls runs in the root namespace and reaches
//! every node only through that node's sshd. Skipped, with a message, where namespaces cannot be
//! made. The OTP matrix (README) names the test of each cell.

use crate::netns_hosts::netns_id;
use crate::otp_hosts::{Otp, OtpCluster};
use crate::otp_rotate::{RotationTimings, rotate_and_roll_back};
use crate::support::*;
use std::time::{Duration, Instant};

/// What each host's epmd knows and what each node wrote, for a failure message.
pub fn diagnose(c: &OtpCluster) -> String {
    let mut out = String::new();
    for (i, node) in c.t.cluster.nodes().iter().enumerate() {
        let k = u8::try_from(i + 1).unwrap();
        let epmd = c.hosts.sh(k, "epmd -names");
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        out.push_str(&format!(
            "--- {}: epmd -names in {}:\n{}status: {}\npids: {}\nlog tail:\n{}\n",
            node.name,
            c.hosts.net.namespace(k),
            String::from_utf8_lossy(&epmd.stdout),
            read(node.root.join("var/status")),
            read(node.pids_log()).replace('\n', " "),
            read(node.log_file())
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    out
}

/// Wall times of one run of [`migrate_and_roll_back`].
pub struct Timings {
    /// `rotate --ca-rollover` and its `rotate --rollback`, where the run rotated.
    pub rotation: Option<RotationTimings>,
    pub zero_split: Duration,
    pub zero_split_rollback: Duration,
    pub setup: Duration,
    pub check: Duration,
    pub migrate: Duration,
    pub rollback: Duration,
}

/// Hosts on `otps` (one node each), a plain mesh across them; then `check --handshake`,
/// `migrate --dry-run` (changes nothing), `migrate` (every link TLS, every node's own ctl reaches
/// it, `status` says so), and `rollback` (plain mesh, every file byte-identical). None when
/// namespaces cannot be made here.
pub fn migrate_and_roll_back(prefix: &str, otps: &[Otp]) -> Option<Timings> {
    migrate_maybe_rotate_and_roll_back(prefix, otps, false)
}

/// [`migrate_and_roll_back`], with a CA rollover and its rollback on the TLS cluster between the
/// migration and its rollback ([`rotate_and_roll_back`]).
pub fn migrate_rotate_and_roll_back(prefix: &str, otps: &[Otp]) -> Option<Timings> {
    migrate_maybe_rotate_and_roll_back(prefix, otps, true)
}

fn migrate_maybe_rotate_and_roll_back(prefix: &str, otps: &[Otp], rotate: bool) -> Option<Timings> {
    let started = Instant::now();
    let c = OtpCluster::start(prefix, otps)?;
    let t = &c.t;
    let names = t.node_names();
    eprintln!(
        "{prefix}: hosts {}",
        names
            .iter()
            .zip(otps)
            .map(|(n, o)| format!("{n} (OTP {})", o.major()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            *name,
            format!("{prefix}{}@{}", i + 1, c.hosts.net.ip(i as u8 + 1))
        );
    }
    let in_own_namespace = |i: usize| {
        let pid = t.cluster.node_os_pid(i).expect("the node recorded its pid");
        let node_ns = netns_id(&format!("/proc/{pid}/ns/net"));
        node_ns.is_some()
            && node_ns == netns_id(&format!("/run/netns/{}", c.hosts.net.namespaces[i]))
    };
    // Plain TCP, fully meshed across the bridge, every node inside its own namespace, on its OTP.
    t.assert_mesh("inet_tcp", "tcp");
    for (i, otp) in otps.iter().enumerate() {
        assert!(in_own_namespace(i), "{} runs in its namespace", names[i]);
        assert_eq!(
            c.node_otp(i),
            otp.major(),
            "{} runs its host's OTP",
            names[i]
        );
    }
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let setup = started.elapsed();

    // The preflight, a real TLS handshake with the planned options on every host included.
    let check_started = Instant::now();
    let check = t.distls(&["check", "--handshake", plan]);
    let check_time = check_started.elapsed();
    assert!(check.status.success(), "{}", describe(&check));
    let report = stdout(&check);
    assert!(report.contains("0 FAIL"), "{}", describe(&check));
    for otp in otps {
        assert!(
            report.contains(&format!("OTP {}", otp.major())),
            "check names each host's OTP: {report}"
        );
    }
    assert_mixed_majors_reported(&report, otps);
    assert_zero_split_verdict(t, plan);

    let before = t.file_hashes();
    let dry = t.distls(&["migrate", "--classic", "--dry-run", plan]);
    assert!(dry.status.success(), "{}", describe(&dry));
    assert_eq!(t.file_hashes(), before, "the dry run changed nothing");

    let roll_started = Instant::now();
    let out = t.distls(&["migrate", "--classic", plan]);
    let migrate = roll_started.elapsed();
    assert!(out.status.success(), "{}\n{}", describe(&out), diagnose(&c));
    t.assert_mesh("inet_tls", "tls");
    for (i, name) in names.iter().enumerate() {
        let ping = t.cluster.ctl(i, &["ping"]);
        assert!(
            ping.status.success(),
            "{name}'s own ctl reaches it over TLS: {ping:?}"
        );
        assert!(
            in_own_namespace(i),
            "{name}, restarted by distls over SSH, runs inside {}",
            c.hosts.net.namespaces[i]
        );
        assert_eq!(c.node_otp(i), otps[i].major(), "{name} still on its OTP");
    }
    assert_eq!(journal(std::path::Path::new(plan))["phase"], "completed");
    assert_status_rows(t, plan, ["verified", "tls", "tls"]);
    let rotation = rotate.then(|| rotate_and_roll_back(&c, plan));

    let back_started = Instant::now();
    let back = t.distls(&["rollback", plan]);
    let rollback = back_started.elapsed();
    assert!(
        back.status.success(),
        "{}\n{}",
        describe(&back),
        diagnose(&c)
    );
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    assert_eq!(journal(std::path::Path::new(plan))["phase"], "rolled_back");

    // Zero split on the same hosts: one restart per node into the hybrid module (compiled on each
    // host by its own OTP), then the seal at run time; and back.
    let pids: Vec<_> = (0..names.len()).map(|i| t.cluster.node_os_pid(i)).collect();
    let zs_started = Instant::now();
    let zs = t.distls(&["migrate", "--zero-split", plan]);
    let zero_split = zs_started.elapsed();
    assert!(zs.status.success(), "{}\n{}", describe(&zs), diagnose(&c));
    t.assert_mesh("distls_hybrid", "tls");
    for (i, name) in names.iter().enumerate() {
        assert_ne!(t.cluster.node_os_pid(i), pids[i], "{name} restarted once");
        let ping = t.cluster.ctl(i, &["ping"]);
        assert!(
            ping.status.success(),
            "{name}'s ctl reaches its sealed node: {ping:?}"
        );
        assert!(in_own_namespace(i), "{name} runs inside its namespace");
    }
    assert_status_rows(t, plan, ["verified", "tls", "tls"]);
    let zs_back_started = Instant::now();
    let zs_back = t.distls(&["rollback", plan]);
    let zero_split_rollback = zs_back_started.elapsed();
    assert!(
        zs_back.status.success(),
        "{}\n{}",
        describe(&zs_back),
        diagnose(&c)
    );
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);

    let timings = Timings {
        rotation,
        setup,
        check: check_time,
        migrate,
        rollback,
        zero_split,
        zero_split_rollback,
    };
    eprintln!(
        "{prefix} (OTP {}): setup {:.1}s, check --handshake {:.1}s, migrate {:.1}s, rollback {:.1}s, migrate --zero-split {:.1}s, its rollback {:.1}s, total {:.1}s",
        otps.iter().map(|o| o.major()).collect::<Vec<_>>().join("/"),
        timings.setup.as_secs_f64(),
        timings.check.as_secs_f64(),
        timings.migrate.as_secs_f64(),
        timings.rollback.as_secs_f64(),
        timings.zero_split.as_secs_f64(),
        timings.zero_split_rollback.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if let Some(r) = &timings.rotation {
        eprintln!(
            "{prefix}: rotate --ca-rollover {:.1}s, rotate --rollback {:.1}s, the rotation step in all {:.1}s",
            r.rotate.as_secs_f64(),
            r.rollback.as_secs_f64(),
            r.added.as_secs_f64()
        );
    }
    Some(timings)
}

/// `status` shows every node with the journal step, the file's and the live transport wanted.
pub fn assert_status_rows(t: &TestCluster, plan: &str, wanted: [&str; 3]) {
    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    let status_text = stdout(&status);
    for name in t.node_names() {
        let row: Vec<&str> = status_text
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("status lists {name}: {status_text}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            &row[1..4],
            wanted,
            "journal step, file, live transport of {name}"
        );
    }
}

/// Zero-split's module runs on OTP 25 (`inet_tls_dist:gen_accept/2`) and on 27 and 29
/// (`fam_accept/2`): `check --zero-split` passes `mode.zero_split` on every host.
fn assert_zero_split_verdict(t: &TestCluster, plan: &str) {
    let out = t.distls(&["check", "--json", "--zero-split", plan]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let modes: Vec<&serde_json::Value> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "mode.zero_split")
        .collect();
    assert!(!modes.is_empty(), "{}", describe(&out));
    for mode in modes {
        assert_eq!(mode["severity"], "ok", "{mode}");
    }
}

/// A cluster on several OTP majors gets the `runtime.otp_mixed` warning naming each of them.
fn assert_mixed_majors_reported(report: &str, otps: &[Otp]) {
    let mut majors: Vec<&str> = otps.iter().map(|o| o.major()).collect();
    majors.sort_unstable();
    majors.dedup();
    let mixed = report
        .lines()
        .find(|l| l.contains("runtime.otp_mixed"))
        .unwrap_or_else(|| panic!("check reports runtime.otp_mixed: {report}"));
    if majors.len() > 1 {
        assert!(mixed.contains("warn"), "mixed majors warn: {mixed}");
        for major in majors {
            assert!(mixed.contains(major), "OTP {major} named: {mixed}");
        }
    } else {
        assert!(mixed.contains("ok"), "one major: {mixed}");
    }
}

#[test]
fn migrates_three_nodes_on_three_namespaced_hosts_over_ssh() {
    migrate_and_roll_back("nsmim", &[Otp::Machine; 3]);
}
