//! What depends on a host's OTP release: the OTP-specific rules the other checks apply, whether
//! distls's zero-split module can run there, and the published advisories its ssl version is
//! affected by. Pure functions, given what the host's probe VM reported.

use super::Verdict;

/// A rule that holds from one OTP major release on; `check` applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpRule {
    pub since: u32,
    pub what: &'static str,
    pub check: &'static str,
}

pub const CLIENT_FAIL_IF_NO_PEER_CERT_REJECTED: OtpRule = OtpRule {
    since: 26,
    what: "ssl rejects fail_if_no_peer_cert in the client options",
    check: "tls.client_fail_if_no_peer_cert",
};

pub const CLIENT_VERIFIES_BY_DEFAULT: OtpRule = OtpRule {
    since: 26,
    what: "the client verifies the server's certificate by default (an unset client_verify is verify_peer)",
    check: "tls.verify_peer",
};

pub const NO_GEN_ACCEPT: OtpRule = OtpRule {
    since: 27,
    what: "inet_tls_dist has no gen_accept/2: distls's hybrid module hands its TLS sockets to fam_accept/2 instead",
    check: "mode.zero_split",
};

/// Every OTP-specific rule, in the order docs/preflight.md lists them.
pub const RULES: [OtpRule; 3] = [
    CLIENT_FAIL_IF_NO_PEER_CERT_REJECTED,
    CLIENT_VERIFIES_BY_DEFAULT,
    NO_GEN_ACCEPT,
];

impl OtpRule {
    pub fn applies(self, major: u32) -> bool {
        major >= self.since
    }
}

/// `runtime.otp_rules`: which OTP-specific rules hold for this host's release.
pub fn rules_verdict(release: &str, major: Option<u32>) -> Verdict {
    let check = "runtime.otp_rules";
    let Some(major) = major else {
        return Verdict::warn(
            check,
            format!(
                "OTP release `{release}` is not a number: the OTP-specific rules are applied as for OTP 25"
            ),
            "check the plan's erl: it should be the erl the nodes run",
        );
    };
    let applying: Vec<String> = RULES
        .iter()
        .filter(|rule| rule.applies(major))
        .map(|rule| format!("{}+: {} ({})", rule.since, rule.what, rule.check))
        .collect();
    if applying.is_empty() {
        return Verdict::ok(
            check,
            format!("OTP {major}: none of the OTP-specific rules applies (they start at OTP 26)"),
        );
    }
    Verdict::ok(check, format!("OTP {major}: {}", applying.join("; ")))
}

/// What a zero-split run needs on one host.
pub struct ZeroSplitHost<'a> {
    pub otp_release: Option<&'a str>,
    /// The functions the hybrid module needs that the host's OTP lacks, or why that could not
    /// be asked.
    pub lacking: Result<Vec<String>, String>,
    /// Nodes of this host with a flavor zero-split does not support.
    pub relx_nodes: Vec<String>,
}

/// `mode.zero_split` (for the zero-split roll, the default): can every node of this host go through the
/// hybrid module? A node that cannot would not start its distribution at all.
pub fn zero_split_verdict(host: &ZeroSplitHost) -> Verdict {
    let check = "mode.zero_split";
    let release = host.otp_release.unwrap_or("?");
    let mut problems = Vec::new();
    if !host.relx_nodes.is_empty() {
        problems.push(format!(
            "{} use flavor relx, whose control commands (nodetool) get neither the node's -ssl_dist_optfile nor a code path for the hybrid module",
            host.relx_nodes.join(", ")
        ));
    }
    match &host.lacking {
        Ok(lacking) if lacking.is_empty() => {}
        Ok(lacking) => problems.push(format!(
            "OTP {release} lacks {} (needed by distls's hybrid module): a node started with it would stop at boot with `undef` and no distribution",
            lacking.join(", ")
        )),
        Err(why) => problems.push(format!(
            "cannot ask the host's Erlang whether it can run the hybrid module: {why}"
        )),
    }
    if problems.is_empty() {
        return Verdict::ok(
            check,
            format!("OTP {release} has every function the hybrid module needs"),
        );
    }
    Verdict::fail(
        check,
        format!("the zero-split roll (the default) cannot run here: {}", problems.join("; ")),
        "use the classic roll on this cluster (distls migrate --classic; it splits the cluster until the last node switches, docs/zero-split.md) or give the hosts an OTP the hybrid module supports (it needs gen_tcp:unrecv/2 and inet_tls_dist:gen_accept/2, OTP 25, or inet_tls_dist:fam_accept/2, OTP 27 and later; tested on 25, 27 and 29)"
            .to_string(),
    )
}

/// A published advisory on OTP's ssl application that weakens TLS distribution links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advisory {
    pub id: &'static str,
    pub what: &'static str,
    /// The affected ssl versions: half-open ranges `[first, fixed)`, one per release branch.
    pub affected: &'static [(&'static str, &'static str)],
    pub fixed_in: &'static str,
}

/// The advisories for OTP 25 to 29 that concern TLS distribution (inet_tls_dist, or ssl's
/// client and server handshake that every distribution link goes through), from the CVE records
/// of the Erlang Ecosystem Foundation's CNA; see docs/preflight.md.
pub const ADVISORIES: [Advisory; 4] = [
    Advisory {
        id: "CVE-2022-37026",
        what: "client authentication bypass in some client-certificate situations",
        affected: &[("10.8", "10.8.2")],
        fixed_in: "OTP 25.0.2 (ssl 10.8.2)",
    },
    Advisory {
        id: "CVE-2026-48860 (GHSA-gp7x-mfv6-52cv)",
        what: "inet_tls_dist's check_ip LAN allowlist compares the local address with itself, so it admits any peer with a CA-signed certificate (matters only with check_ip enabled)",
        affected: &[
            ("11.0", "11.2.12.9"),
            ("11.3", "11.6.0.2"),
            ("11.7", "11.7.2"),
        ],
        fixed_in: "OTP 27.3.4.13, 28.5.0.2, 29.0.2 (ssl 11.2.12.9, 11.6.0.2, 11.7.2)",
    },
    Advisory {
        id: "CVE-2026-54891 (GHSA-gf6r-99xw-6qg6)",
        what: "a TLS client accepts plaintext application data injected before the handshake completes",
        affected: &[
            ("5.3.4", "11.2.12.10"),
            ("11.3", "11.6.0.3"),
            ("11.7", "11.7.3"),
        ],
        fixed_in: "OTP 27.3.4.14, 28.5.0.3, 29.0.3 (ssl 11.2.12.10, 11.6.0.3, 11.7.3)",
    },
    Advisory {
        id: "CVE-2026-89422",
        what: "a TLS 1.3 client completes the handshake without checking the server's certificate when the ServerHello carries an unoffered pre_shared_key: a dialing node can be made to talk to an impostor",
        affected: &[
            ("9.5", "11.2.12.13"),
            ("11.3", "11.6.0.6"),
            ("11.7", "11.7.7"),
        ],
        fixed_in: "OTP 27.3.4.18, 28.5.0.7, 29.1.1 (ssl 11.2.12.13, 11.6.0.6, 11.7.7)",
    },
];

/// `a.b.c…` as numbers; `None` for anything else.
fn version(text: &str) -> Option<Vec<u64>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

impl Advisory {
    /// Whether this ssl version lies in an affected range.
    pub fn affects(&self, ssl: &str) -> bool {
        let Some(v) = version(ssl) else { return false };
        self.affected.iter().any(|(first, fixed)| {
            let (Some(first), Some(fixed)) = (version(first), version(fixed)) else {
                return false;
            };
            first <= v && v < fixed
        })
    }

    /// The CVE id alone (what a vendor changelog lists).
    pub fn cve(&self) -> &'static str {
        self.id.split_whitespace().next().unwrap_or(self.id)
    }
}

/// `runtime.advisories`: the advisories this ssl version is affected by. `vendor_fixed`: the
/// CVE ids the vendor's own package says it fixed (Debian backports fixes without changing
/// the version), with where that was read.
pub fn advisories_verdict(ssl: &str, vendor_fixed: Option<(&str, &[String])>) -> Verdict {
    let check = "runtime.advisories";
    let by_version: Vec<&Advisory> = ADVISORIES.iter().filter(|a| a.affects(ssl)).collect();
    let (patched, open): (Vec<&Advisory>, Vec<&Advisory>) =
        by_version.into_iter().partition(|advisory| {
            vendor_fixed.is_some_and(|(_, fixed)| fixed.iter().any(|id| id == advisory.cve()))
        });
    let patched_note = match (patched.is_empty(), vendor_fixed) {
        (false, Some((source, _))) => format!(
            "; by its version affected by {}, fixed by the vendor's package ({source})",
            patched
                .iter()
                .map(|a| a.cve())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    if open.is_empty() {
        return Verdict::ok(
            check,
            format!("ssl {ssl}: no open advisory on TLS distribution{patched_note}"),
        );
    }
    let listed: Vec<String> = open
        .iter()
        .map(|a| format!("{}: {}", a.id, a.what))
        .collect();
    let fixed: Vec<String> = open
        .iter()
        .map(|a| format!("{} in {}", a.cve(), a.fixed_in))
        .collect();
    Verdict::warn(
        check,
        format!(
            "ssl {ssl} is affected by {}{patched_note}",
            listed.join("; ")
        ),
        format!(
            "upgrade Erlang/OTP on this host (fixed: {}); a vendor package may carry the fix under the old version (Debian lists it in /usr/share/doc/erlang-ssl/changelog.Debian.gz, which distls reads for Debian's erl)",
            fixed.join("; ")
        ),
    )
}

/// Every `CVE-YYYY-N` in a text.
pub fn cve_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| {
            word.strip_prefix("CVE-")
                .and_then(|rest| rest.split_once('-'))
                .is_some_and(|(year, number)| {
                    !year.is_empty()
                        && !number.is_empty()
                        && year
                            .chars()
                            .chain(number.chars())
                            .all(|c| c.is_ascii_digit())
                })
        })
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Severity;

    #[test]
    fn rules_start_at_their_release() {
        let ids = |major| -> Vec<&str> {
            RULES
                .iter()
                .filter(|r| r.applies(major))
                .map(|r| r.check)
                .collect()
        };
        assert!(ids(25).is_empty());
        assert_eq!(
            ids(26),
            ["tls.client_fail_if_no_peer_cert", "tls.verify_peer"]
        );
        assert_eq!(ids(27).len(), 3);
        assert_eq!(ids(29).len(), 3);
        let on_25 = rules_verdict("25", Some(25));
        assert_eq!(on_25.severity, Severity::Ok);
        assert!(on_25.message.contains("none of"), "{on_25:?}");
        let on_27 = rules_verdict("27", Some(27));
        assert!(
            on_27
                .message
                .contains("27+: inet_tls_dist has no gen_accept/2: distls's hybrid module")
        );
        assert!(
            on_27
                .message
                .contains("26+: ssl rejects fail_if_no_peer_cert")
        );
        assert_eq!(rules_verdict("R16B", None).severity, Severity::Warn);
    }

    #[test]
    fn zero_split_fails_on_missing_functions_and_relx() {
        let host = |lacking: Result<Vec<String>, String>, relx: &[&str]| ZeroSplitHost {
            otp_release: Some("27"),
            lacking,
            relx_nodes: relx.iter().map(|n| n.to_string()).collect(),
        };
        let ok = zero_split_verdict(&host(Ok(vec![]), &[]));
        assert_eq!(ok.severity, Severity::Ok);
        let lacking = zero_split_verdict(&host(Ok(vec!["inet_tls_dist:gen_accept/2".into()]), &[]));
        assert_eq!(lacking.severity, Severity::Fail);
        assert!(
            lacking
                .message
                .contains("OTP 27 lacks inet_tls_dist:gen_accept/2"),
            "{lacking:?}"
        );
        assert!(lacking.fix.contains("use the classic roll"), "{lacking:?}");
        let relx = zero_split_verdict(&host(Ok(vec![]), &["a@h"]));
        assert_eq!(relx.severity, Severity::Fail);
        assert!(relx.message.contains("a@h use flavor relx"), "{relx:?}");
        let unknown = zero_split_verdict(&host(Err("probe gone".into()), &[]));
        assert_eq!(unknown.severity, Severity::Fail);
        assert!(unknown.message.contains("probe gone"), "{unknown:?}");
    }

    /// The ssl versions of the OTP releases distls is tried on (docs/preflight.md).
    #[test]
    fn advisories_by_ssl_version() {
        let ids = |ssl: &str| -> Vec<&str> {
            ADVISORIES
                .iter()
                .filter(|a| a.affects(ssl))
                .map(Advisory::cve)
                .collect()
        };
        // OTP 25.2.3 (Debian 12).
        assert_eq!(ids("10.8.7"), ["CVE-2026-54891", "CVE-2026-89422"]);
        assert_eq!(
            ids("10.8.1"),
            ["CVE-2022-37026", "CVE-2026-54891", "CVE-2026-89422"]
        );
        // OTP 27.3.4.1 (Debian 13).
        assert_eq!(
            ids("11.2.12.1"),
            ["CVE-2026-48860", "CVE-2026-54891", "CVE-2026-89422"]
        );
        assert_eq!(ids("11.2.12.13"), Vec::<&str>::new());
        assert_eq!(ids("11.6.0.2"), ["CVE-2026-54891", "CVE-2026-89422"]);
        // OTP 29.1.2.
        assert!(ids("11.7.8").is_empty());
        assert_eq!(ids("11.7.2"), ["CVE-2026-54891", "CVE-2026-89422"]);
        assert!(ids("not.a.version").is_empty());
    }

    #[test]
    fn a_vendor_fix_turns_the_warning_into_a_note() {
        let bare = advisories_verdict("11.2.12.1", None);
        assert_eq!(bare.severity, Severity::Warn);
        assert!(
            bare.message
                .contains("CVE-2026-48860 (GHSA-gp7x-mfv6-52cv)")
        );
        assert!(bare.fix.contains("11.2.12.9"), "{bare:?}");
        let fixed: Vec<String> = ["CVE-2026-48860", "CVE-2026-54891", "CVE-2026-89422"]
            .map(String::from)
            .to_vec();
        let patched = advisories_verdict("11.2.12.1", Some(("changelog", &fixed)));
        assert_eq!(patched.severity, Severity::Ok, "{patched:?}");
        assert!(
            patched
                .message
                .contains("fixed by the vendor's package (changelog)")
        );
        let partly = advisories_verdict("10.8.7", Some(("changelog", &fixed[..1])));
        assert_eq!(partly.severity, Severity::Warn);
        assert!(partly.message.contains("CVE-2026-89422"), "{partly:?}");
        assert_eq!(advisories_verdict("11.7.8", None).severity, Severity::Ok);
    }

    #[test]
    fn cve_ids_are_found_in_a_changelog() {
        let text = "  * Fixes: CVE-2026-48860, CVE-2026-54891,\n    CVE-2026-89422\n  * Fix CVE-2022-37026: x (CVE-20x-1) CVE-\n";
        assert_eq!(
            cve_ids(text),
            [
                "CVE-2022-37026",
                "CVE-2026-48860",
                "CVE-2026-54891",
                "CVE-2026-89422"
            ]
        );
    }
}
