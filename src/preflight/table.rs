//! The findings as a table for people. Identical findings (same check, result, message and fix)
//! on many nodes are one row with the node count and a few names, so a 1,000-node preflight
//! stays readable; `--verbose` names every node. JSON keeps one record per finding.

use super::{Finding, Severity};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// From this many identical findings on, they share one row; fewer keep a row each, so a small
/// cluster's table is what it always was.
pub const GROUP_FROM: usize = 4;
/// How many names a grouped row shows without `--verbose`.
const NAMES_SHOWN: usize = 3;

/// How many of a group's nodes (or hosts) a grouped row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// The first few, then how many more.
    #[default]
    Short,
    /// Every one (`--verbose`).
    Every,
}

impl Listing {
    pub fn verbose(verbose: bool) -> Self {
        if verbose {
            Listing::Every
        } else {
            Listing::Short
        }
    }
}

/// One row of the table: a finding, or identical findings of several nodes (or hosts).
#[derive(Debug, PartialEq, Eq)]
pub enum Row<'a> {
    One(&'a Finding),
    Group(Vec<&'a Finding>),
}

/// What makes two findings identical for people: all but where they were found. A finding of
/// a host (no node) is never grouped with a finding of a node.
type Key<'a> = (&'a str, Severity, &'a str, &'a str, bool);

fn key(finding: &Finding) -> Key<'_> {
    (
        finding.check,
        finding.severity,
        &finding.message,
        &finding.fix,
        finding.node.is_some(),
    )
}

/// The rows in the findings' order: a group of at least [`GROUP_FROM`] identical findings takes
/// the place of its first member; smaller groups keep a row per finding.
pub fn rows<'a>(findings: &[&'a Finding]) -> Vec<Row<'a>> {
    let mut members: BTreeMap<Key<'a>, Vec<&'a Finding>> = BTreeMap::new();
    for &finding in findings {
        members.entry(key(finding)).or_default().push(finding);
    }
    let mut rows = Vec::new();
    for &finding in findings {
        let key = key(finding);
        match members.get(&key).map(Vec::len) {
            Some(count) if count >= GROUP_FROM => {
                if let Some(group) = members.remove(&key) {
                    rows.push(Row::Group(group));
                }
            }
            // Already placed with its group.
            None => {}
            Some(_) => rows.push(Row::One(finding)),
        }
    }
    rows
}

/// The table of `rows` (HOST, NODE, CHECK, RESULT, MESSAGE; the fix under every warn and FAIL),
/// without the summary.
pub fn render(findings: &[&Finding], listing: Listing) -> String {
    let rows = rows(findings);
    let cells: Vec<(String, String, &Finding)> = rows.iter().map(cells).collect();
    let host_width = cells.iter().map(|c| c.0.len()).max().unwrap_or(4).max(4);
    let node_width = cells.iter().map(|c| c.1.len()).max().unwrap_or(4).max(4);
    let indent = host_width + node_width + 4 + 33 + 7;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<host_width$}  {:<node_width$}  {:<32} {:<6} MESSAGE",
        "HOST", "NODE", "CHECK", "RESULT"
    );
    for (row, (host, node, finding)) in rows.iter().zip(&cells) {
        let _ = writeln!(
            out,
            "{host:<host_width$}  {node:<node_width$}  {:<32} {:<6} {}",
            finding.check,
            finding.severity.label(),
            finding.message
        );
        if let Row::Group(members) = row {
            let _ = writeln!(out, "{:<indent$}{}", "", members_line(members, listing));
        }
        if finding.severity != Severity::Ok && !finding.fix.is_empty() {
            let _ = writeln!(out, "{:<indent$}fix: {}", "", finding.fix);
        }
    }
    out
}

/// The HOST and NODE cells of a row, and the finding it shows.
fn cells<'a>(row: &Row<'a>) -> (String, String, &'a Finding) {
    match row {
        Row::One(finding) => (
            finding.host.clone(),
            finding.node.clone().unwrap_or_else(|| "-".to_string()),
            finding,
        ),
        Row::Group(members) => {
            let first = members[0];
            let hosts = distinct_hosts(members);
            let host = if hosts.len() == 1 {
                first.host.clone()
            } else {
                format!("{} hosts", hosts.len())
            };
            let node = match first.node {
                Some(_) => format!("{} nodes", members.len()),
                None => "-".to_string(),
            };
            (host, node, first)
        }
    }
}

fn distinct_hosts<'a>(members: &[&'a Finding]) -> Vec<&'a str> {
    let mut hosts: Vec<&str> = Vec::new();
    for member in members {
        if !hosts.contains(&member.host.as_str()) {
            hosts.push(&member.host);
        }
    }
    hosts
}

/// `on 1000 nodes: a@h, b@h, c@h, … (+997; --verbose lists them)`, or every name.
pub fn members_line(members: &[&Finding], listing: Listing) -> String {
    let (what, names): (&str, Vec<&str>) = match members[0].node {
        Some(_) => (
            "nodes",
            members.iter().filter_map(|m| m.node.as_deref()).collect(),
        ),
        None => ("hosts", distinct_hosts(members)),
    };
    let count = names.len();
    if listing == Listing::Every || count <= NAMES_SHOWN {
        return format!("on {count} {what}: {}", names.join(", "));
    }
    format!(
        "on {count} {what}: {}, … (+{}; --verbose lists them)",
        names[..NAMES_SHOWN].join(", "),
        count - NAMES_SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(node: &str, check: &'static str, severity: Severity, message: &str) -> Finding {
        Finding {
            host: "h".to_string(),
            node: Some(node.to_string()),
            check,
            severity,
            message: message.to_string(),
            fix: if severity == Severity::Ok {
                String::new()
            } else {
                "renew it".to_string()
            },
        }
    }

    fn expiring(count: usize) -> Vec<Finding> {
        (1..=count)
            .map(|k| {
                finding(
                    &format!("mim{k}@h"),
                    "cert.expiry",
                    Severity::Warn,
                    "expires in 3 days",
                )
            })
            .collect()
    }

    fn all(findings: &[Finding]) -> Vec<&Finding> {
        findings.iter().collect()
    }

    #[test]
    fn identical_findings_of_many_nodes_are_one_row_with_the_count_and_three_names() {
        let findings = expiring(1000);
        let table = render(&all(&findings), Listing::Short);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].contains("1000 nodes"), "{table}");
        assert!(lines[1].contains("cert.expiry") && lines[1].contains("warn"));
        assert!(
            lines[2].trim().starts_with(
                "on 1000 nodes: mim1@h, mim2@h, mim3@h, … (+997; --verbose lists them)"
            ),
            "{table}"
        );
        assert_eq!(lines[3].trim(), "fix: renew it", "{table}");
    }

    #[test]
    fn verbose_names_every_node_of_a_group() {
        let findings = expiring(50);
        let table = render(&all(&findings), Listing::Every);
        let names: Vec<String> = (1..=50).map(|k| format!("mim{k}@h")).collect();
        assert!(
            table.contains(&format!("on 50 nodes: {}\n", names.join(", "))),
            "{table}"
        );
        assert!(!table.contains("--verbose"), "{table}");
    }

    #[test]
    fn three_identical_findings_keep_a_row_each() {
        let findings = expiring(3);
        let table = render(&all(&findings), Listing::Short);
        assert_eq!(rows(&all(&findings)).len(), 3);
        for k in 1..=3 {
            assert!(table.contains(&format!("mim{k}@h")), "{table}");
        }
        assert!(!table.contains("on 3 nodes"), "{table}");
    }

    #[test]
    fn a_different_message_or_severity_is_its_own_row_in_place() {
        let mut findings = expiring(5);
        findings[2].message = "expires in 1 day".to_string();
        findings.insert(
            1,
            finding("mim1@h", "cert.hostname", Severity::Ok, "covers h"),
        );
        let rows = rows(&all(&findings));
        assert_eq!(rows.len(), 3, "{rows:?}");
        let Row::Group(group) = &rows[0] else {
            panic!("{rows:?}")
        };
        let nodes: Vec<_> = group.iter().map(|f| f.node.as_deref().unwrap()).collect();
        assert_eq!(nodes, ["mim1@h", "mim2@h", "mim4@h", "mim5@h"]);
        assert_eq!(rows[1], Row::One(&findings[1]));
        assert_eq!(rows[2], Row::One(&findings[3]));
    }

    #[test]
    fn host_findings_group_by_host_and_never_with_node_findings() {
        let mut findings = Vec::new();
        for host in ["a", "b", "c", "d"] {
            let mut f = finding("-", "runtime.otp", Severity::Ok, "OTP 25, ssl 10.8.7");
            f.host = host.to_string();
            f.node = None;
            findings.push(f);
        }
        findings.push(finding(
            "x@a",
            "runtime.otp",
            Severity::Ok,
            "OTP 25, ssl 10.8.7",
        ));
        let rows = rows(&all(&findings));
        assert_eq!(rows.len(), 2, "{rows:?}");
        let Row::Group(group) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            members_line(group, Listing::Short),
            "on 4 hosts: a, b, c, … (+1; --verbose lists them)"
        );
        let table = render(&all(&findings), Listing::Short);
        assert!(
            table.lines().nth(1).unwrap().starts_with("4 hosts  -"),
            "{table}"
        );
    }

    #[test]
    fn nodes_on_several_hosts_say_how_many_hosts() {
        let mut findings = expiring(4);
        findings[3].host = "other".to_string();
        let table = render(&all(&findings), Listing::Short);
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("2 hosts  4 nodes"),
            "{table}"
        );
    }
}
