//! The discovered plan as the YAML an operator would write: values shared by every node go to
//! `defaults` (with `{sname}` where the node's short name appears in a path), the rest on the
//! node, each with a comment saying where it came from. Unknown values are placeholders that
//! `distls check` refuses (`crate::plan::FILL_IN_MARK`).

use crate::flavor::Flavor;
use crate::plan::FILL_IN_MARK;
use crate::yaml_text::double_quoted;
use std::fmt::Write as _;

/// One value of the plan: known (with where it came from), or a placeholder saying what to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Known { text: String, origin: String },
    FillIn { what: String, origin: String },
}

impl Value {
    pub fn known(text: impl Into<String>, origin: impl Into<String>) -> Value {
        Value::Known {
            text: text.into(),
            origin: origin.into(),
        }
    }

    pub fn fill_in(what: impl Into<String>, origin: impl Into<String>) -> Value {
        Value::FillIn {
            what: what.into(),
            origin: origin.into(),
        }
    }

    fn origin(&self) -> &str {
        match self {
            Value::Known { origin, .. } | Value::FillIn { origin, .. } => origin,
        }
    }

    /// The YAML scalar: a double-quoted string.
    fn scalar(&self) -> String {
        match self {
            Value::Known { text, .. } => double_quoted(text),
            Value::FillIn { what, .. } => double_quoted(&format!("{FILL_IN_MARK} {what}>>")),
        }
    }

    /// The same value with `sname` written as `{sname}` where it is a whole path component or
    /// word, so that nodes laid out alike share one default.
    fn templated(&self, sname: &str) -> Value {
        match self {
            Value::Known { text, origin } => {
                Value::known(template(text, sname), template(origin, sname))
            }
            Value::FillIn { what, origin } => Value::fill_in(what.clone(), template(origin, sname)),
        }
    }
}

/// Replaces every occurrence of `sname` bounded by `/`, a space or the ends with `{sname}`.
fn template(text: &str, sname: &str) -> String {
    if sname.is_empty() {
        return text.to_string();
    }
    let is_boundary = |c: Option<char>| c.is_none_or(|c| c == '/' || c == ' ');
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = text[from..].find(sname) {
        let at = from + found;
        let end = at + sname.len();
        out.push_str(&text[from..at]);
        if is_boundary(text[..at].chars().last()) && is_boundary(text[end..].chars().next()) {
            out.push_str("{sname}");
        } else {
            out.push_str(sname);
        }
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

/// One node as discovered: its name and its values, keyed like the plan (`commands.stop` is
/// written under `commands:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredNode {
    pub name: String,
    /// What was found about the node, for its comment (e.g. `pid 4242, user mongooseim`).
    pub summary: String,
    pub values: Vec<(&'static str, Value)>,
}

impl DiscoveredNode {
    fn sname(&self) -> &str {
        self.name.split('@').next().unwrap_or("")
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPlan {
    pub cluster: Value,
    pub flavor: Flavor,
    pub flavor_origin: String,
    /// certfile, keyfile, cacertfile.
    pub tls: [Value; 3],
    pub asked: String,
    pub nodes: Vec<DiscoveredNode>,
}

/// The order keys are written in, with the keys of each node.
const KEY_ORDER: [&str; 13] = [
    "transport",
    "host",
    "user",
    "become",
    "env.ERL_EPMD_PORT",
    "vm_dist_args",
    "vm_args",
    "flags_file",
    "cookie_file",
    "commands.stop",
    "commands.start",
    "commands.ping",
    "commands.ready",
];

impl DiscoveredPlan {
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "# Discovered by `distls plan discover {}`: review every value before you use it.",
            self.asked
        );
        let _ = writeln!(
            y,
            "# A value written {FILL_IN_MARK} ...>> is unknown: `distls check` refuses the plan until it is filled in."
        );
        let _ = writeln!(y, "version: 1");
        comment(&mut y, "", self.cluster.origin());
        let _ = writeln!(y, "cluster: {}", self.cluster.scalar());
        comment(&mut y, "", &self.flavor_origin);
        let _ = writeln!(y, "flavor: {}", self.flavor.as_str());
        let _ = writeln!(y, "tls:");
        for (key, value) in ["certfile", "keyfile", "cacertfile"].iter().zip(&self.tls) {
            comment(&mut y, "  ", value.origin());
            let _ = writeln!(y, "  {key}: {}", value.scalar());
        }
        let shared = self.shared_values();
        if !shared.is_empty() {
            let _ = writeln!(y, "defaults:");
            write_values(&mut y, "  ", &shared);
        }
        let _ = writeln!(y, "nodes:");
        for node in &self.nodes {
            comment(&mut y, "  ", &node.summary);
            let _ = writeln!(y, "  - name: {}", double_quoted(&node.name));
            let own: Vec<(&str, Value)> = KEY_ORDER
                .iter()
                .filter(|key| !shared.iter().any(|(k, _)| k == *key))
                .filter_map(|key| Some((*key, node.value(key)?.clone())))
                .collect();
            write_values(&mut y, "    ", &own);
        }
        y
    }

    /// The keys every node has with the same value once its short name is templated.
    fn shared_values(&self) -> Vec<(&'static str, Value)> {
        let Some(first) = self.nodes.first() else {
            return Vec::new();
        };
        KEY_ORDER
            .iter()
            .filter_map(|key| {
                let value = first.value(key)?.templated(first.sname());
                let same = self.nodes.iter().all(|node| {
                    node.value(key)
                        .is_some_and(|v| v.templated(node.sname()) == value)
                });
                same.then_some((*key, value))
            })
            .collect()
    }
}

fn comment(y: &mut String, indent: &str, text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        let _ = writeln!(y, "{indent}# {line}");
    }
}

/// Writes `key: value` lines; a dotted key (`commands.stop`, `env.ERL_EPMD_PORT`) goes under
/// its section, which is opened once for consecutive keys.
fn write_values(y: &mut String, indent: &str, values: &[(&str, Value)]) {
    let mut open_section: Option<&str> = None;
    for (key, value) in values {
        match key.split_once('.') {
            Some((section, inner)) => {
                if open_section != Some(section) {
                    let _ = writeln!(y, "{indent}{section}:");
                    open_section = Some(section);
                }
                comment(y, &format!("{indent}  "), value.origin());
                let _ = writeln!(y, "{indent}  {inner}: {}", value.scalar());
            }
            None => {
                open_section = None;
                comment(y, indent, value.origin());
                let _ = writeln!(y, "{indent}{key}: {}", value.scalar());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, root: &str) -> DiscoveredNode {
        DiscoveredNode {
            name: name.into(),
            summary: format!("{name}: pid 1"),
            values: vec![
                (
                    "transport",
                    Value::known("local", "the host is this machine"),
                ),
                (
                    "vm_args",
                    Value::known(format!("{root}/etc/vm.args"), "-args_file"),
                ),
                (
                    "commands.stop",
                    Value::known(format!("{root}/bin/ctl stop"), "bin/ctl exists"),
                ),
            ],
        }
    }

    fn plan(nodes: Vec<DiscoveredNode>) -> DiscoveredPlan {
        DiscoveredPlan {
            cluster: Value::known("mim", "from the first node's name"),
            flavor: Flavor::MongooseIm,
            flavor_origin: "vm.dist.args".into(),
            tls: [
                Value::known("/ssl/cert.pem", "the commented TLS block"),
                Value::known("/ssl/key.pem", "the commented TLS block"),
                Value::fill_in("path of the CA bundle", "not named anywhere"),
            ],
            asked: "mim1@db1".into(),
            nodes,
        }
    }

    #[test]
    fn nodes_laid_out_alike_share_templated_defaults() {
        let yaml = plan(vec![
            node("mim1@db1", "/opt/mim1"),
            node("mim2@db1", "/opt/mim2"),
        ])
        .to_yaml();
        assert!(
            yaml.contains("defaults:\n  # the host is this machine\n  transport: \"local\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("  # -args_file\n  vm_args: \"/opt/{sname}/etc/vm.args\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains(
                "  commands:\n    # bin/ctl exists\n    stop: \"/opt/{sname}/bin/ctl stop\"\n"
            ),
            "{yaml}"
        );
        // A node laid out differently keeps its own values; the shared ones stay in defaults.
        let mixed = plan(vec![
            node("mim1@db1", "/opt/mim1"),
            node("mim2@db1", "/srv/x"),
        ])
        .to_yaml();
        assert!(
            mixed.contains(
                "  - name: \"mim2@db1\"\n    # -args_file\n    vm_args: \"/srv/x/etc/vm.args\"\n"
            ),
            "{mixed}"
        );
        assert!(
            mixed.contains(
                "defaults:\n  # the host is this machine\n  transport: \"local\"\nnodes:"
            ),
            "{mixed}"
        );
        assert!(
            yaml.contains("cacertfile: \"<<FILL IN: path of the CA bundle>>\""),
            "{yaml}"
        );
        assert!(yaml.contains("nodes:\n  # mim1@db1: pid 1\n  - name: \"mim1@db1\"\n  # mim2@db1: pid 1\n  - name: \"mim2@db1\"\n"), "{yaml}");
    }

    #[test]
    fn templates_only_whole_components() {
        assert_eq!(
            template("/opt/mim1/etc/vm.args", "mim1"),
            "/opt/{sname}/etc/vm.args"
        );
        assert_eq!(template("/opt/mim10/etc", "mim1"), "/opt/mim10/etc");
        assert_eq!(
            template("/a/mim1/bin/ctl stop mim1", "mim1"),
            "/a/{sname}/bin/ctl stop {sname}"
        );
        assert_eq!(template("xmim1/mim1", "mim1"), "xmim1/{sname}");
        assert_eq!(template("mim1", ""), "mim1");
    }
}
