//! Checks of the `-ssl_dist_opt` options a node will run with: keys OTP accepts, peer verification,
//! the OTP 26 client rule, and the same options on every node. Pure functions.

use super::Verdict;
use crate::argsfile::{self, DistSettings};

/// Keys whose values legitimately differ per node (each node may have its own files).
const PER_NODE_SUFFIXES: [&str; 4] = ["certfile", "keyfile", "cacertfile", "password"];
const CLIENT_FAIL_IF_NO_PEER_CERT: &str = "client_fail_if_no_peer_cert";

/// The verdicts for one node's options; `otp_major` is the host's OTP release, when known.
pub fn check(settings: &DistSettings, otp_major: Option<u32>) -> Vec<Verdict> {
    vec![
        known_keys(settings),
        client_fail_if_no_peer_cert(settings, otp_major),
        verify_peer(settings, otp_major),
    ]
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
        Some(major) if major >= 26 => format!(
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

fn verify_peer(settings: &DistSettings, otp_major: Option<u32>) -> Verdict {
    let value_of = |key: &str| {
        settings
            .ssl_dist_opt_values(key)
            .next()
            .map(|v| v.value.clone())
    };
    // OTP 26 made verify_peer the client default; before, the default accepts any certificate.
    let client_default = if otp_major.is_some_and(|major| major >= 26) {
        Some("verify_peer".to_string())
    } else {
        None
    };
    let weak: Vec<String> = [
        ("server_verify", value_of("server_verify")),
        (
            "client_verify",
            value_of("client_verify").or(client_default),
        ),
    ]
    .into_iter()
    .filter(|(_, value)| value.as_deref() != Some("verify_peer"))
    .map(|(key, value)| match value {
        Some(value) => format!("{key} is {value}"),
        None => format!("{key} is not set (verify_none)"),
    })
    .collect();
    if weak.is_empty() {
        return Verdict::ok(
            "tls.verify_peer",
            "both sides verify their peer's certificate",
        );
    }
    Verdict::warn(
        "tls.verify_peer",
        format!(
            "NO PEER VERIFICATION: {}; any host that reaches the port can join the cluster with any certificate (TLS then only encrypts)",
            weak.join(", ")
        ),
        "set `server_verify verify_peer`, `client_verify verify_peer` and `server_fail_if_no_peer_cert true` in vm.dist.args",
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
        check(&settings(opts), otp)
            .into_iter()
            .find(|v| v.check == check_id)
            .unwrap()
    }

    const GOOD: &str =
        "server_verify verify_peer client_verify verify_peer server_fail_if_no_peer_cert true";

    #[test]
    fn good_options_pass() {
        assert!(
            check(&settings(GOOD), Some(25))
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
    fn missing_verification_warns_loudly() {
        let v = verdict("server_verify verify_none", Some(25), "tls.verify_peer");
        assert_eq!(v.severity, Severity::Warn);
        assert!(v.message.starts_with("NO PEER VERIFICATION"), "{v:?}");
        assert!(v.message.contains("client_verify is not set"), "{v:?}");
        let on_26 = verdict("server_verify verify_peer", Some(26), "tls.verify_peer");
        assert_eq!(on_26.severity, Severity::Ok, "client default on OTP 26");
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
