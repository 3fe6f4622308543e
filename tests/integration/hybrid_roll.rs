//! The one-restart hybrid module (src/zero_split/distls_hybrid_dist.erl) on every OTP distls
//! supports: OTP 25 (this machine), 27 (trixie) and 29 (sid) hosts. The driver
//! tests/integration/hybrid_roll.erl, compiled with the host's own OTP, starts two hybrid nodes,
//! a stock plain node and stock TLS dialers with and without a good certificate, and checks
//! per-peer dialing, the refusal of plain dialers named as TLS peers, the stock TLS checks on the
//! hybrid accept path (no certificate, another CA, net_kernel:allow), the run-time seal (plain
//! links closed, TLS links kept, plain refused) and the unseal.

use crate::otp_hosts::{Otp, OtpHosts};
use crate::products::short_hostname;
use distls::rehearsal::{start_private_epmd_under, write_foreign_ca_cert, write_host_certs};
use std::path::Path;
use std::process::Command;

const MODULE_SRC: &str = include_str!("../../src/zero_split/distls_hybrid_dist.erl");
const DRIVER_SRC: &str = include_str!("hybrid_roll.erl");

/// Every check the driver makes, in its order.
const CHECKS: [&str; 18] = [
    "hybrid_dials_hybrid_tls",
    "hybrid_dialed_by_hybrid_tls",
    "plain_dials_hybrid_tcp",
    "hybrid_dials_plain_tcp",
    "plain_dialer_named_as_tls_peer_refused",
    "plain_dialer_let_in_again",
    "stock_tls_dialer_accepted",
    "tls_dialer_without_certificate_refused",
    "tls_dialer_from_another_ca_refused",
    "seal_closes_plain_links",
    "seal_keeps_tls_links",
    "sealed_refuses_plain_dialer",
    "sealed_dials_tls_only",
    "sealed_accepts_stock_tls",
    "sealed_refuses_tls_without_certificate",
    "unsealed_accepts_plain_again",
    "allow_refuses_tls_dialer",
    "done",
];

fn optfile(server: &str, client: &str) -> String {
    format!("[{{server, [{server}]}},\n {{client, [{client}]}}].\n")
}

fn files(cert: &Path, key: &Path, ca: &Path) -> String {
    format!(
        "{{certfile, {cert:?}}}, {{keyfile, {key:?}}}, {{cacertfile, {ca:?}}}, {{verify, verify_peer}}, {{secure_renegotiate, true}}"
    )
}

/// Writes the module, the driver, certificates and the three optfiles into `dir`.
fn prepare(dir: &Path, host: &str) {
    let tls = write_host_certs(&dir.join("tls"), host).expect("certificates");
    let foreign = write_foreign_ca_cert(&dir.join("foreign")).expect("foreign certificates");
    let good = files(&tls.certfile, &tls.keyfile, &tls.cacertfile);
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write(
        "good.conf",
        optfile(
            &format!(
                "{good}, {{fail_if_no_peer_cert, true}}, {{verify_fun, {{fun inet_tls_dist:verify_client/3, []}}}}"
            ),
            &good,
        ),
    );
    write(
        "nocert.conf",
        optfile(
            &good,
            &format!(
                "{{cacertfile, {:?}}}, {{verify, verify_peer}}",
                tls.cacertfile
            ),
        ),
    );
    write(
        "foreign.conf",
        optfile(
            &good,
            &files(&foreign.certfile, &foreign.keyfile, &tls.cacertfile),
        ),
    );
    std::fs::create_dir_all(dir.join("ebin")).unwrap();
    write("distls_hybrid_dist.erl", MODULE_SRC.to_owned());
    write("hybrid_roll.erl", DRIVER_SRC.to_owned());
}

/// Compiles and runs the driver on `prefix` (a host's exec prefix; empty: this machine).
fn run_driver(prefix: &[String], otp: &str) {
    let dir = tempfile::Builder::new()
        .prefix("distls-hybrid-roll-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let host = short_hostname();
    prepare(&dir, &host);
    let (mut epmd, epmd_port) = start_private_epmd_under(&dir, prefix).expect("epmd");
    let script = format!(
        "cd {dir} && export ERL_CRASH_DUMP={dir}/erl_crash.dump ERL_EPMD_PORT={epmd_port} && \
         erlc +warnings_as_errors -o ebin distls_hybrid_dist.erl hybrid_roll.erl && \
         timeout 300 erl -noshell -pa ebin -setcookie driver -run hybrid_roll main {dir} {host} hybridroll{pid}",
        dir = dir.display(),
        pid = std::process::id()
    );
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend(["/bin/sh".into(), "-c".into(), script]);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the driver runs");
    let _ = epmd.kill();
    let _ = epmd.wait();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ROLL "))
        .collect();
    let failed: Vec<&&str> = lines.iter().filter(|l| l.contains(" FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "OTP {otp}: {failed:#?}\n{}",
        crate::support::describe(&out)
    );
    let passed: Vec<&str> = lines.iter().filter_map(|l| l.strip_suffix(" ok")).collect();
    let expected = CHECKS.to_vec();
    assert_eq!(passed, expected, "OTP {otp}:\n{text}");
    eprintln!("OTP {otp}: {} checks passed", passed.len());
}

#[test]
fn one_restart_module_on_otp25() {
    run_driver(&[], "25");
}

#[test]
fn one_restart_module_on_otp27_and_otp29() {
    let Some(hosts) = OtpHosts::create(&[Otp::Trixie, Otp::Sid]) else {
        return;
    };
    run_driver(&hosts.exec_prefix(1), "27");
    run_driver(&hosts.exec_prefix(2), "29");
}
