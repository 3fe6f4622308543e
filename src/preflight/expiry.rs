//! `check --expiry`: the leaf every running TLS node serves now, judged against a window. Served,
//! not on disk: a node keeps presenting what its PEM cache read until that is cleared. One
//! finding per node (`served.expiry`), in the preflight's table.

use super::{Finding, Severity, Verdict, certs::describe_window, host_of};
use crate::error::Result;
use crate::plan::Plan;
use crate::served::{self, Expiry, Leaf};
use crate::transport::Transport;
use crate::{observe, target};
use std::time::{Duration, SystemTime};

pub const CHECK: &str = "served.expiry";
const FIX: &str = "issue a new certificate and install it with `distls rotate`; until the node's PEM cache is cleared it keeps serving this one";

/// Asks every node of the plan what it runs and, when TLS, which leaf it serves now; one finding
/// per node, in plan order. Changes nothing. `transports[i]` reaches `plan.nodes[i]`.
pub async fn run(plan: &Plan, transports: &[Transport], window: Duration) -> Result<Vec<Finding>> {
    // Only the node's name, cookie and probe flags are needed: not whether its flags file is at
    // a stage of a run (a cron job asks at any time).
    let mut targets = Vec::with_capacity(plan.nodes.len());
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        targets.push(target::read_node(spec, transport).await?);
    }
    let probes = observe::probe_pool(&targets)?;
    let now = SystemTime::now();
    let asked = async {
        let mut findings = Vec::new();
        for target in &targets {
            let info = observe::observe_with(&probes, target).await?;
            let leaf = served::leaf(&probes, target, &info).await?;
            findings.push(finding(
                host_of(&target.spec),
                target.name(),
                &leaf,
                window,
                now,
            ));
        }
        Ok(findings)
    }
    .await;
    probes.shutdown().await;
    asked
}

/// The finding of one node (`host`, `node`) for the leaf it serves.
pub fn finding(host: &str, node: &str, leaf: &Leaf, window: Duration, now: SystemTime) -> Finding {
    verdict(leaf, window, now).at(host, Some(node))
}

fn verdict(leaf: &Leaf, window: Duration, now: SystemTime) -> Verdict {
    let window_text = describe_window(window);
    let cert = match leaf {
        Leaf::NoTls(running) => {
            let text = served::no_tls_text(*running);
            return match running {
                crate::observe::Running::Plain => Verdict::ok(CHECK, text),
                _ => Verdict::warn(
                    CHECK,
                    text,
                    "start the node (`distls status` shows where it was looked for), then ask again",
                ),
            };
        }
        Leaf::Failed(why) => {
            return Verdict::fail(
                CHECK,
                format!("runs TLS, but its certificate could not be asked: {why}"),
                "check that the plan's tls files are a client certificate the node accepts (`distls check` without --expiry)",
            );
        }
        Leaf::Serves(cert) => cert,
    };
    let serves = cert.describe();
    match served::expiry(cert, window, now) {
        Expiry::Beyond { days } => {
            Verdict::ok(CHECK, format!("serves {serves} ({days} days left)"))
        }
        Expiry::Within { days } => Verdict::fail(
            CHECK,
            format!("serves {serves} ({days} days left, within the {window_text} window)"),
            FIX,
        ),
        Expiry::Expired { days } => Verdict::fail(
            CHECK,
            format!("serves {serves}, which expired {days} days ago"),
            FIX,
        ),
    }
}

/// The command's error when any node failed the check, naming those nodes.
pub fn refusal(findings: &[Finding], window: Duration) -> Option<String> {
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.check == CHECK && f.severity == Severity::Fail)
        .filter_map(|f| f.node.as_deref())
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{CHECK} FAIL on {}: the certificate it serves expires within the {} window, has expired, or could not be asked",
            failed.join(", "),
            describe_window(window)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_info::CertSummary;
    use crate::observe::Running;

    const DAY: i64 = 86_400;

    fn leaf(not_after: i64) -> Leaf {
        Leaf::Serves(CertSummary {
            subject: "CN=node".into(),
            issuer: "CN=ca".into(),
            serial: "0A".into(),
            not_after,
            sha256: String::new(),
        })
    }

    #[test]
    fn a_served_leaf_fails_within_the_window_and_once_expired() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * DAY as u64);
        let window = Duration::from_secs(30 * DAY as u64);
        let judge = |leaf: &Leaf| finding("h", "n@h", leaf, window, now);
        let fine = judge(&leaf(200 * DAY));
        assert_eq!(fine.severity, Severity::Ok, "{fine:?}");
        assert!(
            fine.message.ends_with("(100 days left)"),
            "{}",
            fine.message
        );
        let soon = judge(&leaf(112 * DAY));
        assert_eq!(soon.severity, Severity::Fail);
        assert!(
            soon.message
                .ends_with("(12 days left, within the 30-day window)"),
            "{}",
            soon.message
        );
        assert!(soon.fix.contains("distls rotate"));
        let gone = judge(&leaf(97 * DAY));
        assert_eq!(gone.severity, Severity::Fail);
        assert!(
            gone.message.ends_with("which expired 3 days ago"),
            "{}",
            gone.message
        );
        assert_eq!(judge(&Leaf::NoTls(Running::Plain)).severity, Severity::Ok);
        assert_eq!(judge(&Leaf::NoTls(Running::Down)).severity, Severity::Warn);
        assert_eq!(
            judge(&Leaf::Failed("closed".into())).severity,
            Severity::Fail
        );
        assert_eq!(refusal(std::slice::from_ref(&fine), window), None);
        let said = refusal(&[fine, soon, gone], window).unwrap();
        assert!(
            said.starts_with("served.expiry FAIL on n@h, n@h: "),
            "{said}"
        );
        assert!(said.contains("the 30-day window"), "{said}");
    }
}
