//! The OTP matrix: the same user-facing sequence (check --handshake, dry run, migrate, status,
//! rollback) on hosts that run OTP 27 (Debian trixie) and OTP 29 (Debian sid), and on clusters
//! that mix two majors as during an OTP upgrade. Each test names a cell of the README's support
//! matrix. On 27, 29 and 27/29 the TLS cluster also rotates its CA and leaves between the
//! migration and its rollback (`distls rotate`: tests/integration/otp_rotate.rs). Skipped, with a message, where network namespaces cannot be made.

use crate::netns::{migrate_and_roll_back, migrate_rotate_and_roll_back};
use crate::otp_hosts::Otp;

#[test]
fn otp27_cluster_migrates_and_rolls_back_over_ssh() {
    migrate_rotate_and_roll_back("otpa", &[Otp::Trixie; 3]);
}

#[test]
fn otp29_cluster_migrates_and_rolls_back_over_ssh() {
    migrate_rotate_and_roll_back("otpb", &[Otp::Sid; 3]);
}

#[test]
fn mixed_otp25_otp27_cluster_migrates_and_rolls_back() {
    migrate_and_roll_back("mixa", &[Otp::Machine, Otp::Machine, Otp::Trixie]);
}

#[test]
fn mixed_otp27_otp29_cluster_migrates_and_rolls_back() {
    migrate_rotate_and_roll_back("mixb", &[Otp::Trixie, Otp::Sid, Otp::Sid]);
}

/// distls SIGKILLed at a few journal writes of a roll on hosts of `otp` (over SSH), then of a
/// rollback: each rerun resumes from what the nodes really are; the roll ends all TLS, the
/// rollback all plain with every file byte-identical. (The walk over every crash point runs on
/// this machine's OTP: tests/integration/resume.rs.)
#[cfg(feature = "failpoints")]
fn killed_runs_resume_on(prefix: &str, otp: Otp) {
    use crate::otp_hosts::OtpCluster;
    use crate::support::*;
    use std::os::unix::process::ExitStatusExt;

    let Some(c) = OtpCluster::start(prefix, &[otp; 3]) else {
        return;
    };
    let t = &c.t;
    let originals = t.dist_args_files();
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let names = t.node_names();
    let kill_at = |verb: &str, point: String| {
        // The first run picks the roll (the classic one); the journal keeps it for the reruns,
        // which pass no flag (a plain `migrate` carries a classic run on).
        let args: &[&str] = if verb == "migrate"
            && crate::support::journal_if_any(std::path::Path::new(plan)).is_none()
        {
            &[verb, "--classic", plan]
        } else {
            &[verb, plan]
        };
        let out = t.distls_env(args, &[("DISTLS_FAILPOINT", &point)]);
        assert_eq!(
            out.status.signal(),
            Some(9),
            "expected a SIGKILL at {point}: {}",
            describe(&out)
        );
    };
    kill_at("migrate", format!("{}:stopped", names[0]));
    kill_at("migrate", format!("{}:starting", names[1]));
    kill_at("migrate", format!("{}:rejoined", names[2]));
    let out = t.distls(&["migrate", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    t.assert_backups_are(&originals);

    kill_at("rollback", format!("{}:revert-restoring", names[1]));
    let out = t.distls(&["rollback", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
}

#[cfg(feature = "failpoints")]
#[test]
fn otp27_killed_migrate_and_rollback_resume() {
    killed_runs_resume_on("kila", Otp::Trixie);
}

#[cfg(feature = "failpoints")]
#[test]
fn otp29_killed_migrate_and_rollback_resume() {
    killed_runs_resume_on("kilb", Otp::Sid);
}
