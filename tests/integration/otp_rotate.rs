//! `distls rotate` on the OTP hosts (27, 29, and a cluster mixing them), inside the migration
//! test's TLS cluster: the rotation relies on an OTP internal (clearing ssl's distribution PEM
//! cache, `ssl_pem_cache_dist`), which the project proves on each OTP it supports.

use crate::otp_hosts::OtpCluster;
use crate::support::{describe, stdout};
use distls::rehearsal::write_rotation_certs;
use sha2::Digest;
use std::path::Path;
use std::time::{Duration, Instant};

/// Wall times of the rotation, of its rollback, and of the whole step the test adds (new
/// certificates, both commands and every check).
pub struct RotationTimings {
    pub rotate: Duration,
    pub rollback: Duration,
    pub added: Duration,
}

/// The sha256 of the certificate, key and CA files the nodes' options name, as host `k`
/// (1-based) reads them inside its own root (never their bytes in a message).
fn files_on_host(c: &OtpCluster, k: u8) -> Vec<String> {
    let tls = c.t.cluster.tls_files();
    let paths = [&tls.certfile, &tls.keyfile, &tls.cacertfile];
    let script = paths
        .iter()
        .map(|p| format!("sha256sum '{}'", p.display()))
        .collect::<Vec<_>>()
        .join(" && ");
    let out = c.hosts.sh(k, &script);
    assert!(out.status.success(), "host {k} reads the files: {out:?}");
    stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// On a migrated (TLS) cluster: a CA rollover to a fresh CA and new leaves (`--ca-rollover`,
/// 3 phases × every node), then `rotate --rollback`. Each ends with exit 0, every node on its
/// OS pid and in the TLS mesh; after the rollover every host reads the new set at the paths the
/// options name, after the rollback what they held before, byte for byte.
pub fn rotate_and_roll_back(c: &OtpCluster, plan: &str) -> RotationTimings {
    let step_started = Instant::now();
    let t = &c.t;
    let hosts = u8::try_from(t.node_names().len()).unwrap();
    // The nodes are named n@10.x.y.z: OTP's distribution client checks the address as a DNS
    // name, so each address is both an IP and a DNS SAN (as in the cluster's own certificates).
    let ips: Vec<String> = (1..=hosts).map(|k| c.hosts.net.ip(k).to_string()).collect();
    let dns: Vec<String> = ips.iter().map(|ip| format!("DNS:{ip}")).collect();
    let mut sans = vec!["localhost", "127.0.0.1"];
    sans.extend(ips.iter().chain(&dns).map(String::as_str));
    // Under the cluster directory: bound at the same path inside every root.
    let [new, _] = write_rotation_certs(&t.cluster.dir().join("rotation"), &sans)
        .expect("rotation certificates");
    let pids: Vec<_> = (0..usize::from(hosts))
        .map(|i| t.cluster.node_os_pid(i))
        .collect();
    let before: Vec<Vec<String>> = (1..=hosts).map(|k| files_on_host(c, k)).collect();
    let wanted = vec![
        sha256_of(&new.certfile),
        sha256_of(&new.keyfile),
        sha256_of(&new.cacertfile),
    ];
    let args = crate::support::rotate_args(&["--ca-rollover"], plan, &new, true);
    let args = crate::support::strs(&args);
    let started = Instant::now();
    let out = t.distls(&args);
    let rotate = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    for phase in ["trust-both", "leaves", "trust-new"] {
        assert_eq!(
            stdout(&out).matches(phase).count(),
            usize::from(hosts),
            "one {phase} move per node: {}",
            stdout(&out)
        );
    }
    assert_unrestarted_tls_mesh(c, &pids);
    for k in 1..=hosts {
        assert_eq!(files_on_host(c, k), wanted, "host {k} reads the new set");
    }

    let started = Instant::now();
    let back = t.distls(&["rotate", "--rollback", plan]);
    let rollback = started.elapsed();
    assert!(back.status.success(), "{}", describe(&back));
    assert_unrestarted_tls_mesh(c, &pids);
    for k in 1..=hosts {
        assert_eq!(
            files_on_host(c, k),
            before[usize::from(k) - 1],
            "host {k}: every file restored byte for byte"
        );
    }
    RotationTimings {
        rotate,
        rollback,
        added: step_started.elapsed(),
    }
}

/// Every node kept its OS pid (no restart) and every link is still TLS.
fn assert_unrestarted_tls_mesh(c: &OtpCluster, pids: &[Option<u32>]) {
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(&c.t.cluster.node_os_pid(i), pid, "node {i} kept its OS pid");
    }
    c.t.assert_mesh("inet_tls", "tls");
}
