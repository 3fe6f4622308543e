//! What each node serves and trusts right now: the leaf its distribution listener presents to a
//! fresh TLS handshake (not the file on disk: a running node keeps what its PEM cache read), and
//! the CAs of the cacertfile(s) its running options name. `status` shows it; `check --expiry`
//! judges it.

use crate::cert_info::{CertSummary, pem_certificates};
use crate::error::Result;
use crate::observe::{Running, Via, probe_via};
use crate::probe::{NodeInfo, ProbeError, ProbePool};
use crate::stage::Stage;
use crate::target::NodeTarget;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The leaf a node serves on its distribution port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// Its port accepts no TLS (plain, down, unreachable): there is nothing to ask.
    NoTls(Running),
    Serves(CertSummary),
    /// It runs TLS, but the handshake did not give its certificate.
    Failed(String),
}

/// One cacertfile a node's running options name, and the CAs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub file: PathBuf,
    pub cas: std::result::Result<Vec<CertSummary>, String>,
}

/// What a node serves and whom it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub leaf: Leaf,
    /// Empty for a node that runs no TLS; `Err`: its options could not be asked.
    pub trusts: std::result::Result<Vec<Trusted>, String>,
}

/// How close a served leaf is to its expiry, against a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Beyond { days: i64 },
    Within { days: i64 },
    Expired { days: i64 },
}

/// Whether the node's distribution port accepts TLS: stock TLS, or distls's hybrid module at
/// any stage (it accepts both until sealed, then TLS only).
pub fn accepts_tls(info: &NodeInfo) -> bool {
    info.runs_tls()
        || info
            .proto_dist()
            .and_then(Stage::of_signature)
            .is_some_and(|stage| stage != Stage::Plain)
}

/// The leaf `target` serves, asked through its TLS probe when `info` says its port accepts TLS.
/// Only a probe VM that fails is an error: a failed handshake is this node's answer.
pub async fn leaf(probes: &ProbePool, target: &NodeTarget, info: &NodeInfo) -> Result<Leaf> {
    if !accepts_tls(info) {
        return Ok(Leaf::NoTls(Running::of_info(info)));
    }
    let probe = probe_via(probes, target, Via::Tls).await?;
    Ok(match probe.served(target.name()).await {
        Ok(der) => match CertSummary::from_der(&der) {
            Ok(summary) => Leaf::Serves(summary),
            Err(why) => Leaf::Failed(why),
        },
        Err(err) => Leaf::Failed(answer_error(err)?),
    })
}

/// The leaf and the trusted CAs of `target` (the CAs only for a node that runs TLS).
pub async fn served(probes: &ProbePool, target: &NodeTarget, info: &NodeInfo) -> Result<Served> {
    let leaf = leaf(probes, target, info).await?;
    let trusts = match leaf {
        Leaf::NoTls(_) => Ok(Vec::new()),
        _ => trusted(probes, target).await?,
    };
    Ok(Served { leaf, trusts })
}

/// The cacertfiles the node's running options name, read from its host as raw bytes.
async fn trusted(
    probes: &ProbePool,
    target: &NodeTarget,
) -> Result<std::result::Result<Vec<Trusted>, String>> {
    let probe = probe_via(probes, target, Via::Tls).await?;
    let files = match probe.tls_files(target.name()).await {
        Ok(files) => files,
        Err(err) => return Ok(Err(answer_error(err)?)),
    };
    let mut trusted = Vec::new();
    for file in files.paths("cacertfile") {
        let cas = match target.transport.read_file(&file).await {
            Ok(pem) => pem_certificates(&pem).and_then(|certs| {
                certs
                    .iter()
                    .map(|der| CertSummary::from_der(der))
                    .collect::<std::result::Result<Vec<_>, _>>()
            }),
            Err(err) => Err(err.to_string()),
        };
        trusted.push(Trusted { file, cas });
    }
    Ok(Ok(trusted))
}

/// A probe's answer about this node as text; a probe VM that failed or went away is an error of
/// the command (exit 1), not of the node.
fn answer_error(err: ProbeError) -> Result<String> {
    match err {
        ProbeError::Failed { detail, .. } => Ok(detail),
        other => Err(other.into()),
    }
}

/// How `cert` stands against `window` at `now`.
pub fn expiry(cert: &CertSummary, window: Duration, now: SystemTime) -> Expiry {
    let left = cert.not_after - crate::cert_info::unix_seconds(now);
    let days = cert.days_left(now);
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if left <= 0 {
        Expiry::Expired { days: -days }
    } else if left < window {
        Expiry::Within { days }
    } else {
        Expiry::Beyond { days }
    }
}

/// `412 days left`, `expired 3 days ago`.
pub fn days_text(cert: &CertSummary, now: SystemTime) -> String {
    match expiry(cert, Duration::ZERO, now) {
        Expiry::Expired { days } => format!("expired {days} days ago"),
        Expiry::Beyond { days } | Expiry::Within { days } => format!("{days} days left"),
    }
}

/// What a node that is not asked shows: `plain TCP: no certificate`, `down: not asked`.
pub fn no_tls_text(running: Running) -> String {
    match running {
        Running::Plain => "plain TCP: no certificate".to_string(),
        other => format!("{}: not asked", other.label()),
    }
}

impl Served {
    /// The node's line in `status`: `serves CN=…, serial …, expires … (N days left); trusts
    /// CN=ca (until …) [/etc/ca.pem]`.
    pub fn describe(&self, now: SystemTime) -> String {
        let leaf = match &self.leaf {
            Leaf::NoTls(running) => return no_tls_text(*running),
            Leaf::Serves(cert) => format!("serves {} ({})", cert.describe(), days_text(cert, now)),
            Leaf::Failed(why) => format!("serves ?: {why}"),
        };
        let trusts = match &self.trusts {
            Ok(files) if files.is_empty() => "trusts ?: its options name no cacertfile".to_string(),
            Ok(files) => {
                let files: Vec<String> = files.iter().map(Trusted::describe).collect();
                format!("trusts {}", files.join("; "))
            }
            Err(why) => format!("trusts ?: {why}"),
        };
        format!("{leaf}; {trusts}")
    }

    /// The `served`, `served_error`, `trusts` and `trusts_error` fields of a `status --json`
    /// node (docs/json.md).
    pub fn json_fields(&self, now: SystemTime) -> [(&'static str, serde_json::Value); 4] {
        let (served, served_error) = match &self.leaf {
            Leaf::NoTls(_) => (None, None),
            Leaf::Serves(cert) => (Some(cert_json(cert, now)), None),
            Leaf::Failed(why) => (None, Some(why.clone())),
        };
        let (trusts, trusts_error) = match &self.trusts {
            Ok(files) => (files.iter().map(|f| f.json(now)).collect(), None),
            Err(why) => (Vec::new(), Some(why.clone())),
        };
        [
            ("served", served.into()),
            ("served_error", served_error.into()),
            ("trusts", trusts.into()),
            ("trusts_error", trusts_error.into()),
        ]
    }
}

impl Trusted {
    /// `CN=ca A (until 2036-…), CN=ca B (until …) [/etc/ssl/ca.pem]`.
    fn describe(&self) -> String {
        let file = self.file.display();
        match &self.cas {
            Ok(cas) => {
                let cas: Vec<String> = cas
                    .iter()
                    .map(|ca| format!("{} (until {})", ca.subject, ca.not_after_text()))
                    .collect();
                format!("{} [{file}]", cas.join(", "))
            }
            Err(why) => format!("? [{file}: {why}]"),
        }
    }

    fn json(&self, now: SystemTime) -> serde_json::Value {
        let (cas, error) = match &self.cas {
            Ok(cas) => (cas.iter().map(|c| cert_json(c, now)).collect(), None),
            Err(why) => (Vec::new(), Some(why.clone())),
        };
        serde_json::json!({
            "file": self.file.to_string_lossy(),
            "cas": cas,
            "error": error,
        })
    }
}

/// A certificate in `status --json`: what `describe` shows, as fields.
pub fn cert_json(cert: &CertSummary, now: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "not_after": cert.not_after_text(),
        "days_left": cert.days_left(now),
        "sha256": cert.sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn cert(not_after: i64) -> CertSummary {
        CertSummary {
            subject: "CN=node".into(),
            issuer: "CN=ca".into(),
            serial: "0A1B".into(),
            not_after,
            sha256: "ab".repeat(32),
        }
    }

    fn at(seconds: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    }

    #[test]
    fn a_leaf_is_within_the_window_until_it_expires() {
        let now = at(1_000 * DAY);
        let window = Duration::from_secs(30 * 86_400);
        let judge = |left: i64| expiry(&cert(1_000 * DAY + left), window, now);
        assert_eq!(judge(31 * DAY), Expiry::Beyond { days: 31 });
        assert_eq!(judge(30 * DAY), Expiry::Beyond { days: 30 });
        assert_eq!(judge(30 * DAY - 1), Expiry::Within { days: 29 });
        assert_eq!(judge(1), Expiry::Within { days: 0 });
        assert_eq!(judge(0), Expiry::Expired { days: 0 });
        assert_eq!(judge(-3 * DAY), Expiry::Expired { days: 3 });
        assert_eq!(
            days_text(&cert(1_000 * DAY - 3 * DAY), now),
            "expired 3 days ago"
        );
        assert_eq!(days_text(&cert(1_012 * DAY), now), "12 days left");
    }

    #[test]
    fn tls_and_every_hybrid_stage_serve_a_certificate() {
        let up = |proto: &str| NodeInfo::Up {
            proto_dist: proto.into(),
            os_pid: 1,
            peers: Vec::new(),
        };
        for proto in [
            "inet_tls",
            "inet6_tls",
            "distls_hybrid:sealed",
            "distls_hybrid:h",
        ] {
            assert!(accepts_tls(&up(proto)), "{proto}");
        }
        assert!(accepts_tls(&up("distls_hybrid:tcp")));
        assert!(!accepts_tls(&up("inet_tcp")));
        let down = NodeInfo::Down {
            reason: "nodedown".into(),
            asked: None,
        };
        assert!(!accepts_tls(&down));
    }

    #[test]
    fn describes_what_a_node_serves_and_trusts() {
        let now = at(0);
        let served = Served {
            leaf: Leaf::Serves(cert(400 * DAY)),
            trusts: Ok(vec![
                Trusted {
                    file: "/etc/ca.pem".into(),
                    cas: Ok(vec![CertSummary {
                        subject: "CN=ca".into(),
                        ..cert(4_000 * DAY)
                    }]),
                },
                Trusted {
                    file: "/etc/gone.pem".into(),
                    cas: Err("no CERTIFICATE block".into()),
                },
            ]),
        };
        assert_eq!(
            served.describe(now),
            "serves CN=node, serial 0A1B, expires 1971-02-05T00:00:00Z (400 days left); \
             trusts CN=ca (until 1980-12-14T00:00:00Z) [/etc/ca.pem]; \
             ? [/etc/gone.pem: no CERTIFICATE block]"
        );
        let plain = Served {
            leaf: Leaf::NoTls(Running::Plain),
            trusts: Ok(Vec::new()),
        };
        assert_eq!(plain.describe(now), "plain TCP: no certificate");
        let down = Served {
            leaf: Leaf::NoTls(Running::Down),
            ..plain
        };
        assert_eq!(down.describe(now), "down: not asked");
    }

    #[test]
    fn json_fields_carry_the_leaf_or_why_not() {
        let now = at(0);
        let served = Served {
            leaf: Leaf::Failed("closed".into()),
            trusts: Err("nodedown".into()),
        };
        let fields = serde_json::Value::Object(
            served
                .json_fields(now)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(
            fields,
            serde_json::json!({"served": null, "served_error": "closed", "trusts": [], "trusts_error": "nodedown"})
        );
        let good = Served {
            leaf: Leaf::Serves(cert(2 * DAY)),
            trusts: Ok(Vec::new()),
        };
        let [(_, leaf), ..] = good.json_fields(now);
        assert_eq!(leaf["serial"], "0A1B");
        assert_eq!(leaf["days_left"], 2);
        assert_eq!(leaf["not_after"], "1970-01-03T00:00:00Z");
    }
}
