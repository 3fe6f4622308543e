//! Checks of the `-ssl_dist_opt` options a node will run with: keys OTP accepts, peer verification
//! on both sides and a required client certificate (weak TLS: FAIL unless allowed), the OTP 26
//! client rules (preflight::otp), and the same options on every node. Pure functions.

use super::otp::{CLIENT_FAIL_IF_NO_PEER_CERT_REJECTED, CLIENT_VERIFIES_BY_DEFAULT};
use super::{Severity, Verdict};
use crate::argsfile::{self, DistSettings};

/// Keys whose values legitimately differ per node (each node may have its own files).
const PER_NODE_SUFFIXES: [&str; 4] = ["certfile", "keyfile", "cacertfile", "password"];
const CLIENT_FAIL_IF_NO_PEER_CERT: &str = "client_fail_if_no_peer_cert";

/// The verdicts for one node's options; `otp_major` is the host's OTP release, when known.
/// `allow_weak_tls` turns the weak-TLS FAILs (no peer verification, no required client
/// certificate) into warnings that say they were accepted.
pub fn check(
    settings: &DistSettings,
    otp_major: Option<u32>,
    allow_weak_tls: bool,
) -> Vec<Verdict> {
    vec![
        known_keys(settings),
        client_fail_if_no_peer_cert(settings, otp_major),
        weak_unless_allowed(verify_peer(settings, otp_major), allow_weak_tls),
        weak_unless_allowed(server_fail_if_no_peer_cert(settings), allow_weak_tls),
    ]
}

/// A weak-TLS FAIL becomes a warning when the operator passed `--allow-weak-tls`.
fn weak_unless_allowed(verdict: Verdict, allow_weak_tls: bool) -> Verdict {
    if !allow_weak_tls || verdict.severity != Severity::Fail {
        return verdict;
    }
    Verdict::warn(
        verdict.check,
        format!("accepted with --allow-weak-tls: {}", verdict.message),
        verdict.fix,
    )
}

fn known_keys(settings: &DistSettings) -> Verdict {
    let unknown: Vec<String> = settings
        .ssl_dist_opts
        .iter()
        .filter(|opt| {
            opt.key.value != CLIENT_FAIL_IF_NO_PEER_CERT
                && !argsfile::is_known_ssl_dist_opt(&opt.key.value)
        })
        .map(|opt| match argsfile::closest_known_key(&opt.key.value) {
            Some(known) => format!(
                "`{}` (line {}; did you mean `{known}`?)",
                opt.key.value, opt.key.line
            ),
            None => format!("`{}` (line {})", opt.key.value, opt.key.line),
        })
        .collect();
    if unknown.is_empty() {
        return Verdict::ok(
            "tls.known_keys",
            "every -ssl_dist_opt key is one OTP accepts",
        );
    }
    Verdict::fail(
        "tls.known_keys",
        format!(
            "unknown -ssl_dist_opt key {}: the node would boot and then fail every TLS connection (malformed_ssl_dist_opt)",
            unknown.join(", ")
        ),
        "correct the key in vm.dist.args: client_/server_ followed by certfile, keyfile, password, cacertfile, verify, verify_fun, crl_check, crl_cache, reuse_sessions, secure_renegotiate, depth, hibernate_after, ciphers, versions or ktls (server_ also dhfile, fail_if_no_peer_cert)",
    )
}

/// `fail_if_no_peer_cert` is a server option. `inet_tls_dist` does not take it for the client,
/// and from OTP 26 on ssl itself rejects it there (erlang/otp#7497): fatal on every release.
fn client_fail_if_no_peer_cert(settings: &DistSettings, otp_major: Option<u32>) -> Verdict {
    let check = "tls.client_fail_if_no_peer_cert";
    let Some(value) = settings
        .ssl_dist_opt_values(CLIENT_FAIL_IF_NO_PEER_CERT)
        .next()
    else {
        return Verdict::ok(check, "no fail_if_no_peer_cert in the client options");
    };
    let why = match otp_major {
        Some(major) if CLIENT_FAIL_IF_NO_PEER_CERT_REJECTED.applies(major) => format!(
            "OTP {major} rejects fail_if_no_peer_cert in the client options ({{option, server_only, fail_if_no_peer_cert}}), so every outgoing TLS distribution connection fails without a useful message"
        ),
        _ => "inet_tls_dist accepts fail_if_no_peer_cert only for the server, so outgoing TLS distribution connections fail (malformed_ssl_dist_opt); OTP 26 and later reject it outright".to_string(),
    };
    Verdict::fail(
        check,
        format!("{CLIENT_FAIL_IF_NO_PEER_CERT} (line {}): {why}", value.line),
        "delete client_fail_if_no_peer_cert; keep server_fail_if_no_peer_cert true (with server_verify verify_peer)",
    )
}

/// `verify_none` on either side (an unset `server_verify` is verify_none; an unset
/// `client_verify` too before OTP 26): that side accepts any certificate.
fn verify_peer(settings: &DistSettings, otp_major: Option<u32>) -> Verdict {
    let check = "tls.verify_peer";
    let value_of = |key: &str| {
        settings
            .ssl_dist_opt_values(key)
            .next()
            .map(|v| v.value.clone())
    };
    let client_default = otp_major.is_some_and(|major| CLIENT_VERIFIES_BY_DEFAULT.applies(major));
    let sides = [
        ("server_verify", value_of("server_verify"), false),
        ("client_verify", value_of("client_verify"), client_default),
    ];
    let weak: Vec<String> = sides
        .iter()
        .filter(|(_, value, default_peer)| match value {
            Some(value) => value != "verify_peer",
            None => !default_peer,
        })
        .map(|(key, value, _)| match value {
            Some(value) => format!("{key} is {value}"),
            None => format!("{key} is not set (verify_none)"),
        })
        .collect();
    if weak.is_empty() {
        let client = match sides[1].1 {
            Some(_) => "client_verify verify_peer".to_string(),
            None => format!(
                "client_verify unset, verify_peer by default on OTP {}",
                otp_major.unwrap_or(CLIENT_VERIFIES_BY_DEFAULT.since)
            ),
        };
        return Verdict::ok(
            check,
            format!(
                "both sides verify their peer's certificate (server_verify verify_peer, {client})"
            ),
        );
    }
    Verdict::fail(
        check,
        format!(
            "NO PEER VERIFICATION: {}; a side that does not verify accepts any certificate, so any host that reaches the port can join the cluster or pose as a node (TLS then only encrypts)",
            weak.join(", ")
        ),
        "set `server_verify verify_peer`, `client_verify verify_peer` and `server_fail_if_no_peer_cert true` in vm.dist.args (or pass --allow-weak-tls to accept weaker TLS, docs/preflight.md)",
    )
}

/// Without `server_fail_if_no_peer_cert true` the server's `verify_peer` checks only the
/// certificates clients choose to send: a client that sends none is let in.
fn server_fail_if_no_peer_cert(settings: &DistSettings) -> Verdict {
    let check = "tls.server_fail_if_no_peer_cert";
    let value = settings
        .ssl_dist_opt_values("server_fail_if_no_peer_cert")
        .next();
    let problem = match value {
        Some(value) if value.value == "true" => {
            return Verdict::ok(
                check,
                "the server requires a client certificate (server_fail_if_no_peer_cert true)",
            );
        }
        Some(value) => format!(
            "server_fail_if_no_peer_cert is {} (line {})",
            value.value, value.line
        ),
        None => "server_fail_if_no_peer_cert is not set".to_string(),
    };
    Verdict::fail(
        check,
        format!(
            "{problem}: the server accepts a client that presents no certificate, so with the cookie any host that reaches the port can join the cluster"
        ),
        "add `server_fail_if_no_peer_cert true` to the -ssl_dist_opt options in vm.dist.args, with `server_verify verify_peer` (or pass --allow-weak-tls to accept weaker TLS, docs/preflight.md)",
    )
}

/// The options that must match across the cluster, in a stable order: everything but the
/// per-node file paths and password.
pub fn shared_options(settings: &DistSettings) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = settings
        .ssl_dist_opt_pairs()
        .into_iter()
        .filter(|(key, _)| {
            let suffix = key
                .strip_prefix("server_")
                .or_else(|| key.strip_prefix("client_"))
                .unwrap_or(key);
            !PER_NODE_SUFFIXES.contains(&suffix)
        })
        .collect();
    pairs.sort();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Severity;

    fn settings(opts: &str) -> DistSettings {
        argsfile::dist_settings(&format!("-proto_dist inet_tls\n-ssl_dist_opt {opts}\n"))
    }

    fn verdict(opts: &str, otp: Option<u32>, check_id: &str) -> Verdict {
        check(&settings(opts), otp, false)
            .into_iter()
            .find(|v| v.check == check_id)
            .unwrap()
    }

    const GOOD: &str =
        "server_verify verify_peer client_verify verify_peer server_fail_if_no_peer_cert true";

    #[test]
    fn good_options_pass() {
        assert!(
            check(&settings(GOOD), Some(25), false)
                .iter()
                .all(|v| v.severity == Severity::Ok)
        );
    }

    #[test]
    fn a_typo_is_named_with_a_suggestion() {
        let v = verdict(
            &format!("{GOOD} server_certfle /c.pem"),
            Some(25),
            "tls.known_keys",
        );
        assert_eq!(v.severity, Severity::Fail);
        assert!(v.message.contains("`server_certfle`"), "{v:?}");
        assert!(
            v.message.contains("did you mean `server_certfile`"),
            "{v:?}"
        );
    }

    /// The OTP here is 25, so the OTP 26 wording is tested with a made-up release.
    #[test]
    fn client_fail_if_no_peer_cert_fails_with_the_otp_26_reason() {
        let opts = format!("{GOOD} client_fail_if_no_peer_cert true");
        let on_26 = verdict(&opts, Some(26), "tls.client_fail_if_no_peer_cert");
        assert_eq!(on_26.severity, Severity::Fail);
        assert!(on_26.message.contains("OTP 26 rejects"), "{on_26:?}");
        let on_27 = verdict(&opts, Some(27), "tls.client_fail_if_no_peer_cert");
        assert!(on_27.message.contains("OTP 27 rejects"), "{on_27:?}");
        let on_25 = verdict(&opts, Some(25), "tls.client_fail_if_no_peer_cert");
        assert_eq!(on_25.severity, Severity::Fail);
        assert!(on_25.message.contains("only for the server"), "{on_25:?}");
        assert_eq!(
            verdict(&opts, Some(26), "tls.known_keys").severity,
            Severity::Ok,
            "reported once, by its own check"
        );
    }

    #[test]
    fn missing_verification_fails() {
        let v = verdict("server_verify verify_none", Some(25), "tls.verify_peer");
        assert_eq!(v.severity, Severity::Fail);
        assert!(v.message.starts_with("NO PEER VERIFICATION"), "{v:?}");
        assert!(v.message.contains("server_verify is verify_none"), "{v:?}");
        assert!(v.message.contains("client_verify is not set"), "{v:?}");
        assert!(v.fix.contains("--allow-weak-tls"), "{v:?}");
        let unset = verdict("client_verify verify_peer", Some(26), "tls.verify_peer");
        assert_eq!(
            unset.severity,
            Severity::Fail,
            "an unset server_verify is verify_none"
        );
        assert!(
            unset.message.contains("server_verify is not set"),
            "{unset:?}"
        );
        let client_none = verdict(
            "server_verify verify_peer client_verify verify_none",
            Some(27),
            "tls.verify_peer",
        );
        assert_eq!(client_none.severity, Severity::Fail);
    }

    /// The OTP 26 client default: an unset client_verify is verify_peer from 26 on, and
    /// verify_none before (and when the release is unknown).
    #[test]
    fn the_client_default_depends_on_the_otp_release() {
        let opts = "server_verify verify_peer server_fail_if_no_peer_cert true";
        for (otp, severity) in [
            (Some(25), Severity::Fail),
            (None, Severity::Fail),
            (Some(26), Severity::Ok),
            (Some(29), Severity::Ok),
        ] {
            let v = verdict(opts, otp, "tls.verify_peer");
            assert_eq!(v.severity, severity, "OTP {otp:?}: {v:?}");
        }
        let on_27 = verdict(opts, Some(27), "tls.verify_peer");
        assert!(
            on_27.message.contains("verify_peer by default on OTP 27"),
            "{on_27:?}"
        );
    }

    #[test]
    fn a_server_that_does_not_require_a_client_certificate_fails() {
        let check_id = "tls.server_fail_if_no_peer_cert";
        let unset = verdict(
            "server_verify verify_peer client_verify verify_peer",
            Some(25),
            check_id,
        );
        assert_eq!(unset.severity, Severity::Fail);
        assert!(
            unset
                .message
                .contains("server_fail_if_no_peer_cert is not set"),
            "{unset:?}"
        );
        assert!(
            unset.message.contains("presents no certificate"),
            "{unset:?}"
        );
        let off = verdict("server_fail_if_no_peer_cert false", Some(25), check_id);
        assert_eq!(off.severity, Severity::Fail);
        assert!(off.message.contains("is false (line 2)"), "{off:?}");
        assert_eq!(verdict(GOOD, Some(25), check_id).severity, Severity::Ok);
        // The good verify options do not hide it.
        assert_eq!(
            verdict(
                "server_verify verify_peer client_verify verify_peer",
                Some(25),
                "tls.verify_peer"
            )
            .severity,
            Severity::Ok
        );
    }

    #[test]
    fn allow_weak_tls_turns_exactly_the_weak_tls_fails_into_warnings() {
        let weak = settings("server_verify verify_none client_fail_if_no_peer_cert true");
        let strict = check(&weak, Some(25), false);
        let allowed = check(&weak, Some(25), true);
        for (before, after) in strict.iter().zip(&allowed) {
            assert_eq!(before.check, after.check);
            match before.check {
                "tls.verify_peer" | "tls.server_fail_if_no_peer_cert" => {
                    assert_eq!(before.severity, Severity::Fail, "{before:?}");
                    assert_eq!(after.severity, Severity::Warn, "{after:?}");
                    assert!(
                        after
                            .message
                            .starts_with("accepted with --allow-weak-tls: "),
                        "{after:?}"
                    );
                    assert!(after.message.ends_with(&before.message));
                }
                _ => assert_eq!(before, after, "only the weak-TLS checks change"),
            }
        }
        let fatal = allowed
            .iter()
            .find(|v| v.check == "tls.client_fail_if_no_peer_cert")
            .unwrap();
        assert_eq!(fatal.severity, Severity::Fail, "a broken option stays FAIL");
    }

    #[test]
    fn shared_options_ignore_per_node_paths() {
        let a = settings(&format!("{GOOD} server_certfile /a.pem"));
        let b = settings(&format!("server_certfile /b.pem {GOOD}"));
        assert_eq!(shared_options(&a), shared_options(&b));
        let c = settings("server_verify verify_none");
        assert_ne!(shared_options(&a), shared_options(&c));
    }
}
