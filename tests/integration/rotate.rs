//! `distls rotate` on a real TLS cluster: no restart, no link lost, the new certificate served,
//! a CA rollover killed at every journal write and rerun, and rolled back byte for byte.

use crate::split::wait_for_sampled_mesh;
use crate::split_checker::{self, Params, now_ms};
use crate::support::{TestCluster, cluster_with, describe, rotate_args, stdout, strs};
use distls::rehearsal::write_custom_cert;
use std::time::Duration;

/// The sha256 of the cluster's certificate, key and CA files (never their bytes in a message).
fn certs_bytes(t: &TestCluster) -> Vec<String> {
    let tls = t.cluster.tls_files();
    [&tls.certfile, &tls.keyfile, &tls.cacertfile]
        .iter()
        .map(|p| sha256(&std::fs::read(p).unwrap()))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs `distls rotate ARGS` under DISTLS_FAILPOINT=walk until a run gets past every journal
/// write: each run dies at the next write it has not died at, the next resumes from the journal.
fn rotate_killed_at_every_write(t: &TestCluster, args: &[&str]) -> usize {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let joined = seen.join(",");
        let out = t.distls_env(
            args,
            &[
                ("DISTLS_FAILPOINT", "walk"),
                ("DISTLS_FAILPOINT_SEEN", &joined),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        match err.lines().find_map(|l| l.strip_prefix("failpoint: ")) {
            Some(point) => {
                assert!(!seen.contains(&point.to_string()), "{point} twice:\n{err}");
                seen.push(point.to_string());
                assert!(seen.len() < 80, "the walk ends:\n{seen:#?}");
            }
            None => {
                assert!(out.status.success(), "{}", describe(&out));
                return seen.len();
            }
        }
    }
}

#[test]
#[cfg(feature = "failpoints")]
fn a_tls_cluster_rotates_its_ca_without_a_restart_or_a_lost_link() {
    let t = cluster_with("rot", 3, |spec| spec.sample_links = true);
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.wait_for_mesh("inet_tls", "tls");
    let pids: Vec<_> = (0..3).map(|i| t.cluster.node_os_pid(i)).collect();
    let before = certs_bytes(&t);
    let new = write_custom_cert(
        &t.cluster.dir().join("new"),
        &["localhost", "127.0.0.1"],
        -1..90,
    )
    .expect("new certificates");
    let rollover = rotate_args(&["--ca-rollover"], plan, &new, true);
    let rollover = strs(&rollover);
    // A leaf from a CA the peers do not trust yet: refused before anything changes.
    let refused = t.distls(&strs(&rotate_args(&[], plan, &new, true)));
    assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
    assert!(
        describe(&refused).contains("would be refused by")
            && describe(&refused).contains("--ca-rollover"),
        "{}",
        describe(&refused)
    );
    assert_eq!(certs_bytes(&t), before, "nothing changed");
    let dry = t.distls(&strs(&rotate_args(
        &["--dry-run", "--ca-rollover"],
        plan,
        &new,
        true,
    )));
    assert!(dry.status.success(), "{}", describe(&dry));
    assert_eq!(
        stdout(&dry).matches("trust-both").count(),
        3,
        "{}",
        stdout(&dry)
    );
    assert_eq!(certs_bytes(&t), before, "a dry run changes nothing");
    // On a terminal a new rotation shows its moves and asks; "n" changes nothing.
    let asked = t.distls_on_terminal(&rollover, "n\n");
    let said = stdout(&asked);
    assert_eq!(asked.status.code(), Some(3), "{said}");
    assert!(
        said.contains("rotate the TLS files of cluster")
            && said.matches("trust-both").count() == 3
            && said.contains("Proceed? [y/N]")
            && said.contains("not confirmed"),
        "{said}"
    );
    assert_eq!(certs_bytes(&t), before, "not confirmed: nothing changed");

    wait_for_sampled_mesh(&t, "tls", 0);
    let since = now_ms();
    let started = std::time::Instant::now();
    let points = rotate_killed_at_every_write(&t, &rollover);
    eprintln!(
        "MEASURED rotate --ca-rollover, 3 nodes, killed at {points} journal writes: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        points >= 3 * 3 * 3,
        "every move's writes were walked: {points}"
    );
    let report = split_checker::check(
        &t.cluster.links_logs(),
        &[],
        &Params::new(Duration::from_secs(2)).since(since),
    );
    assert!(report.violations.is_empty(), "no link lost: {report}");
    assert!(report.rejoins.is_empty(), "no restart: {report}");
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(&t.cluster.node_os_pid(i), pid, "node {i} kept its OS pid");
    }
    let after = certs_bytes(&t);
    assert_eq!(after[0], sha256(&std::fs::read(&new.certfile).unwrap()));
    assert_eq!(after[2], sha256(&std::fs::read(&new.cacertfile).unwrap()));
    t.assert_mesh("inet_tls", "tls");
    // What every node serves now, as `status` shows it: the new certificate's serial.
    let pem = std::fs::read(&new.certfile).unwrap();
    let der = distls::cert_info::pem_certificates(&pem).unwrap();
    let serial = distls::cert_info::CertSummary::from_der(&der[0])
        .unwrap()
        .serial;
    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    assert_eq!(
        stdout(&status).matches(&format!("serial {serial}")).count(),
        3,
        "{}",
        describe(&status)
    );
    // A rerun of a finished rotation changes nothing and says so (as JSON: docs/json.md).
    let again = t.distls(&[&rollover[..], &["--json"]].concat());
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(
        crate::json_schema::check_stream(&stdout(&again)),
        ["started", "done"]
    );
    assert!(stdout(&again).contains(r#""outcome":"nothing_to_rotate""#));
    assert!(
        describe(&again).contains("nothing to rotate"),
        "{}",
        describe(&again)
    );

    let started = std::time::Instant::now();
    let points = rotate_killed_at_every_write(&t, &["rotate", "--rollback", plan]);
    eprintln!(
        "MEASURED rotate --rollback, 3 nodes, killed at {points} journal writes: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        points >= 2 * 3 * 3,
        "every move's restore was walked: {points}"
    );
    assert_eq!(certs_bytes(&t), before, "every file restored byte for byte");

    // The same rollover and its rollback as a script runs them: JSON records, every one as
    // docs/json.md says; each move begins, then is proven serving the new certificate.
    let json = t.distls(&[&rollover[..], &["--json"]].concat());
    assert!(json.status.success(), "{}", describe(&json));
    let events = crate::json_schema::check_stream(&stdout(&json));
    assert_eq!(events.first().map(String::as_str), Some("started"));
    assert_eq!(events.last().map(String::as_str), Some("done"));
    assert_eq!(events.iter().filter(|e| *e == "move").count(), 9);
    assert_eq!(events.iter().filter(|e| *e == "move_done").count(), 9);
    assert!(stdout(&json).contains(r#""outcome":"rotated""#));
    assert_eq!(
        stdout(&json)
            .matches(&format!(r#""serial":"{serial}""#))
            .count(),
        6,
        "from the leaves phase on, each node serves the new certificate (leaves, trust-new): {}",
        stdout(&json)
    );
    let json = t.distls(&["rotate", "--rollback", "--json", plan]);
    assert!(json.status.success(), "{}", describe(&json));
    let events = crate::json_schema::check_stream(&stdout(&json));
    assert_eq!(events.iter().filter(|e| *e == "move_restored").count(), 9);
    assert!(stdout(&json).contains(r#""outcome":"rolled_back""#));
    assert_eq!(certs_bytes(&t), before, "every file restored byte for byte");

    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(&t.cluster.node_os_pid(i), pid, "node {i} kept its OS pid");
    }
    t.assert_mesh("inet_tls", "tls");

    // --forget: the before-copies (one holds the old key) and the journal go; no rollback after.
    let copies = || {
        let dir = t
            .cluster
            .tls_files()
            .certfile
            .parent()
            .unwrap()
            .to_path_buf();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".distls-rotate-"))
            .collect();
        names.sort();
        names
    };
    assert!(!copies().is_empty(), "the rotation kept its before-copies");
    // A copy an earlier rotation left beside the key (this journal does not name it) goes too.
    let keyfile = t.cluster.tls_files().keyfile.clone();
    let stale = keyfile.with_file_name(format!(
        "{}.distls-rotate-trust-new",
        keyfile.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&stale, "an earlier rotation's key").unwrap();
    let forgot = t.distls(&["rotate", "--forget", "--json", plan]);
    assert!(forgot.status.success(), "{}", describe(&forgot));
    assert_eq!(
        crate::json_schema::check_stream(&stdout(&forgot)),
        ["started", "forgotten", "done"]
    );
    let record: serde_json::Value =
        serde_json::from_str(stdout(&forgot).lines().nth(1).unwrap()).unwrap();
    assert!(record["left"].as_array().unwrap().is_empty(), "{record}");
    assert!(
        record["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().ends_with(&*stale.to_string_lossy())),
        "{record}"
    );
    assert!(
        describe(&forgot).contains("before-copies removed"),
        "{}",
        describe(&forgot)
    );
    assert_eq!(copies(), Vec::<String>::new());
    assert_eq!(certs_bytes(&t), before, "--forget changes no node's file");
    let gone = t.distls(&["rotate", "--rollback", plan]);
    assert!(
        !gone.status.success() && describe(&gone).contains("no rotation to roll back"),
        "{}",
        describe(&gone)
    );

    let out = t.distls(&["rollback", plan]);
    assert!(out.status.success(), "{}", describe(&out));
}
