//! The ejabberd and RabbitMQ flavors on the products of Debian trixie (OTP 27: ejabberd 24.12,
//! RabbitMQ 4.0) and sid (OTP 29: ejabberd 26.07, RabbitMQ 4.3), each a 3-node cluster on one OTP
//! host that distls reaches over SSH: migrated with the flavor defaults (every link TLS, the data
//! still there), then rolled back (every file byte-identical, the cluster plain and whole; a
//! CR LF line and a missing final newline included). A file holding a Latin-1 byte is refused
//! over SSH before anything is touched.
//! Skipped, with a message, where network namespaces cannot be made.

use crate::flavors::{assert_status_all_tls, distls};
use crate::otp_hosts::Otp;
use crate::products::*;
use crate::support::{describe, journal, stdout};
use std::path::Path;
use std::time::{Duration, Instant};

/// The roll a test migrates with: each product runs the default (zero-split) roll on one OTP and
/// the classic roll on the other, so both rolls meet both products and both OTPs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Roll {
    ZeroSplit,
    Classic,
}

impl Roll {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Roll::ZeroSplit => &[],
            Roll::Classic => &["--classic"],
        }
    }
}

/// `distls <verb> [flags] plan`, which must succeed; returns its wall time. A zero-split migrate
/// must say the cluster stayed one mesh (its own split check of every observation round).
fn run_ok(verb: &str, flags: &[&str], plan: &Path) -> Duration {
    let started = Instant::now();
    let mut args = vec![verb];
    args.extend_from_slice(flags);
    args.push(plan.to_str().unwrap());
    let out = distls(&args);
    assert!(out.status.success(), "{verb}: {}", describe(&out));
    if verb == "migrate" && flags.is_empty() {
        assert!(
            stdout(&out).contains("the cluster stayed one mesh throughout"),
            "{}",
            describe(&out)
        );
    }
    started.elapsed()
}

fn check_ok(plan: &Path, otp: Otp) {
    let check = distls(&["check", plan.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));
    let shown = stdout(&check);
    assert!(shown.contains(&format!("OTP {}", otp.major())), "{shown}");
    assert!(shown.contains(" 0 FAIL"), "{shown}");
}

/// Over SSH, the flavor's file holding a Latin-1 byte is refused before anything is touched
/// (as locally); then node 2's file gets a CR LF comment line and node 3's loses its final
/// newline, which the migration and rollback must give back byte for byte. Returns the files'
/// bytes from then on (the originals the rollback is compared with).
fn stage_raw_bytes(files: &[std::path::PathBuf], plan: &Path, roll: Roll) -> Vec<Vec<u8>> {
    let first = std::fs::read(&files[0]).unwrap();
    let mut latin1 = first.clone();
    latin1.extend_from_slice(b"# r\xe9seau\n");
    std::fs::write(&files[0], &latin1).unwrap();
    let mut args = vec!["migrate"];
    args.extend_from_slice(roll.flags());
    args.push(plan.to_str().unwrap());
    let out = distls(&args);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let said = crate::support::stderr(&out);
    assert!(
        said.contains(&format!(
            "{}",
            files[0].file_name().unwrap().to_string_lossy()
        )) && said.contains("is not UTF-8 text")
            && said.contains("(byte 0xe9)"),
        "refused over SSH, naming the file and the byte: {said}"
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), latin1, "nothing touched");
    // Refused while reading the nodes' files, before the preflight: not even a state directory.
    let state = plan.parent().unwrap().join(".distls");
    assert!(
        !state.exists(),
        "no trace of the refused run: {}",
        state.display()
    );
    std::fs::write(&files[0], &first).unwrap();
    // In place (owner and mode kept). A CR LF comment is harmless to the shell that sources it.
    let mut crlf = std::fs::read(&files[1]).unwrap();
    crlf.extend_from_slice(b"# added by the distls test: a CR LF line\r\n");
    std::fs::write(&files[1], &crlf).unwrap();
    let mut unterminated = std::fs::read(&files[2]).unwrap();
    while unterminated.last() == Some(&b'\n') {
        unterminated.pop();
    }
    std::fs::write(&files[2], &unterminated).unwrap();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn ejabberd_migrates_and_rolls_back_on(otp: Otp, prefix: &str, roll: Roll) {
    // No products lock: each cluster has its own host (namespace, root, cookie, ports).
    let Some(ej) = Ejabberd::cluster_on(prefix, 3, otp) else {
        return;
    };
    let names: Vec<String> = (1..=3).map(|i| ej.node_name(i)).collect();
    let plan = ej.plan(&format!("{prefix}-test"), |_| String::new());
    check_ok(&plan, otp);
    let cfgs: Vec<_> = (1..=3).map(|i| ej.cfg(i)).collect();
    let originals = stage_raw_bytes(&cfgs, &plan, roll);

    let migrate = run_ok("migrate", roll.flags(), &plan);
    assert_eq!(journal(&plan)["phase"], "completed");
    assert_status_all_tls(&plan, &names);
    for i in 1..=3 {
        let cfg = std::fs::read_to_string(ej.cfg(i)).unwrap();
        assert!(
            cfg.contains("-proto_dist inet_tls -ssl_dist_optfile"),
            "{cfg}"
        );
        ej.assert_whole_with_alice(i, &names);
    }

    let rollback = run_ok("rollback", &[], &plan);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
    for i in 1..=3 {
        assert_eq!(
            std::fs::read(ej.cfg(i)).unwrap(),
            originals[i - 1],
            "ejabberdctl.cfg of node {i} is byte-identical to its original"
        );
        assert!(!ej.etc(i).join("distls-ssl_dist.conf").exists());
        ej.ctl_ok(i, &["started"]);
        let cluster = ej.ctl_ok(i, &["list_cluster"]);
        assert_eq!(cluster.matches("ejabberd").count(), 3, "{cluster}");
    }
    let account = ej.ctl(1, &["check_account", "alice", "localhost"]);
    assert!(account.status.success(), "{}", describe(&account));
    eprintln!(
        "MEASURED ejabberd on OTP {} 3 nodes, {roll:?} roll: migrate {:.1} s, rollback {:.1} s",
        otp.major(),
        migrate.as_secs_f64(),
        rollback.as_secs_f64()
    );
}

fn rabbitmq_migrates_and_rolls_back_on(otp: Otp, prefix: &str, roll: Roll) {
    // No products lock: each cluster has its own host (namespace, root, cookie, ports).
    let Some(rmq) = RabbitMq::cluster_on(prefix, 3, otp) else {
        return;
    };
    let names: Vec<String> = (1..=3).map(|i| rmq.node_name(i)).collect();
    let plan = rmq.plan(&format!("{prefix}-test"));
    check_ok(&plan, otp);
    let envs: Vec<_> = (1..=3).map(|i| rmq.env_file(i)).collect();
    let originals = stage_raw_bytes(&envs, &plan, roll);

    let store = rmq.ctl(1, &["eval", "'rabbit_khepri:is_enabled().'"]);
    let store = if stdout(&store).trim() == "true" {
        "Khepri"
    } else {
        "Mnesia"
    };
    let migrate = run_ok("migrate", roll.flags(), &plan);
    assert_eq!(journal(&plan)["phase"], "completed");
    assert_status_all_tls(&plan, &names);
    for i in 1..=3 {
        let env = std::fs::read_to_string(rmq.env_file(i)).unwrap();
        assert!(
            env.contains("\nCTL_ERL_ARGS=\"-proto_dist inet_tls"),
            "{env}"
        );
        let status = rmq.ctl(i, &["cluster_status"]);
        assert!(
            status.status.success(),
            "{}\n{}",
            describe(&status),
            (1..=3).map(|k| rmq.startup_story(k)).collect::<String>()
        );
        let status = String::from_utf8_lossy(&status.stdout);
        for name in &names {
            assert!(status.contains(name.as_str()), "{status}");
        }
    }
    for i in 1..=3 {
        rmq.assert_data(i);
    }

    let rollback = run_ok("rollback", &[], &plan);
    assert_eq!(journal(&plan)["phase"], "rolled_back");
    for i in 1..=3 {
        assert_eq!(
            std::fs::read(rmq.env_file(i)).unwrap(),
            originals[i - 1],
            "rabbitmq-env.conf of node {i} is byte-identical to its original"
        );
        let status = rmq.ctl_ok(i, &["cluster_status"]);
        for name in &names {
            assert!(status.contains(name.as_str()), "{status}");
        }
    }
    for i in 1..=3 {
        rmq.assert_data(i);
    }
    eprintln!(
        "MEASURED RabbitMQ on OTP {} ({store}) 3 nodes, {roll:?} roll: migrate {:.1} s, rollback {:.1} s",
        otp.major(),
        migrate.as_secs_f64(),
        rollback.as_secs_f64()
    );
}

#[test]
fn otp27_ejabberd_24_cluster_migrates_with_zero_split_and_rolls_back() {
    ejabberd_migrates_and_rolls_back_on(Otp::Trixie, "eja", Roll::ZeroSplit);
}

#[test]
fn otp29_ejabberd_26_cluster_migrates_classic_and_rolls_back() {
    ejabberd_migrates_and_rolls_back_on(Otp::Sid, "ejb", Roll::Classic);
}

#[test]
fn otp27_rabbitmq_40_cluster_migrates_classic_and_rolls_back() {
    rabbitmq_migrates_and_rolls_back_on(Otp::Trixie, "rba", Roll::Classic);
}

#[test]
fn otp29_rabbitmq_43_cluster_migrates_with_zero_split_and_rolls_back() {
    rabbitmq_migrates_and_rolls_back_on(Otp::Sid, "rbb", Roll::ZeroSplit);
}
