//! What to build: the [`ClusterSpec`], checked before anything is written.

use super::RehearsalError;
#[cfg(doc)]
use super::{DEFAULT_EPMD_PORT, RehearsalCluster};

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of nodes (3 is the usual choice).
    pub nodes: usize,
    /// Where to build the cluster; created if missing. Must not contain whitespace, `#`, quotes or
    /// backslashes (its paths end up in args files and shell commands).
    pub dir: PathBuf,
    /// The `cluster:` of the plan.
    pub cluster_name: String,
    /// Node short names are `<name_prefix>1`, `<name_prefix>2`, ... (`mim` by default). Give
    /// clusters that run at the same time different prefixes so their names and logs never mix.
    pub name_prefix: String,
    /// Empty (the default): every node is `<prefix>N@localhost` (`-sname`), listens on loopback and
    /// uses one epmd on a free loopback port. Otherwise one [`NodeHost`] per node: node `i` is
    /// `<prefix>{i+1}@<ip>` (`-name`), listens on that address, and gets its own epmd, started like
    /// its ctl under [`NodeHost::exec_prefix`], listening on that address (and loopback) on the
    /// default port 4369 (see [`DEFAULT_EPMD_PORT`]). Meant for hosts that are separate network
    /// namespaces; the certificate also covers every host address.
    pub hosts: Vec<NodeHost>,
    /// Every node samples its links into `var/links.log` from its first boot (the
    /// `var/sample-links` switch of ctl.sh): one line every 200 ms,
    /// `<unix ms> <peer:tcp|tls,...|->`. Off by default; see
    /// [`RehearsalCluster::enable_link_sampling`] and [`RehearsalCluster::links_log`].
    pub sample_links: bool,
    /// Every node keeps Mnesia in `var/mnesia`. Once the cluster meshes, [`RehearsalCluster::create`]
    /// creates a disc schema on all nodes and a `disc_copies` table `rehearsal` replicated on every
    /// node (one row per node, `ctl mnesia-init`) and waits for `ctl started` on every node. From
    /// then on every boot waits for its tables (without limit) before `var/status` says `started`,
    /// like MongooseIM, and the plan gets `commands.ready: <ctl> started`. Off by default.
    pub mnesia: bool,
}

/// Where one node of a multi-host cluster runs (see [`ClusterSpec::hosts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHost {
    /// The host part of the node name, the address its distribution listener and its epmd use.
    pub ip: Ipv4Addr,
    /// Every process of this host (its epmd, every `ctl` command of its node) is started as
    /// `exec_prefix... program args...`, e.g. `["ip", "netns", "exec", "ns1"]`; empty runs it directly.
    pub exec_prefix: Vec<String>,
}

impl ClusterSpec {
    /// `nodes` nodes `mim1@localhost`, `mim2@localhost`, ... in `dir`; cluster name `rehearsal`.
    pub fn new(dir: impl Into<PathBuf>, nodes: usize) -> Self {
        Self {
            nodes,
            dir: dir.into(),
            cluster_name: "rehearsal".to_owned(),
            name_prefix: "mim".to_owned(),
            hosts: Vec::new(),
            sample_links: false,
            mnesia: false,
        }
    }

    pub(super) fn validate(&self) -> Result<(), RehearsalError> {
        if self.nodes == 0 {
            return Err(RehearsalError::Spec(
                "a cluster needs at least one node".into(),
            ));
        }
        let prefix_ok = self
            .name_prefix
            .starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !prefix_ok {
            return Err(RehearsalError::Spec(format!(
                "node-name prefix {:?} must be a lowercase letter followed by [a-z0-9_]",
                self.name_prefix
            )));
        }
        let name_ok = !self.cluster_name.is_empty()
            && self
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(RehearsalError::Spec(format!(
                "cluster name {:?} must match [A-Za-z0-9_.-]+ (it names the plan's journal)",
                self.cluster_name
            )));
        }
        if !self.hosts.is_empty() && self.hosts.len() != self.nodes {
            return Err(RehearsalError::Spec(format!(
                "{} hosts for {} nodes: give one host per node, or none",
                self.hosts.len(),
                self.nodes
            )));
        }
        check_path_chars(&self.dir)
    }
}

/// Paths end up unquoted in args files (where `#` starts a comment and whitespace splits) and in
/// plan commands, so refuse the characters that would need quoting.
pub(super) fn check_path_chars(path: &Path) -> Result<(), RehearsalError> {
    let Some(s) = path.to_str() else {
        return Err(RehearsalError::Spec(format!(
            "directory {} is not valid UTF-8",
            path.display()
        )));
    };
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "#\"'\\$`{}".contains(*c))
    {
        return Err(RehearsalError::Spec(format!(
            "directory {s:?} contains {c:?}; pick a path without whitespace, quotes, #, $, braces or backslashes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rehearsal::prefixed_command;

    #[test]
    fn spec_validation_rejects_unusable_names_and_paths() {
        let spec = |prefix: &str, nodes: usize| ClusterSpec {
            name_prefix: prefix.into(),
            ..ClusterSpec::new("/tmp/x", nodes)
        };
        assert!(spec("mim", 3).validate().is_ok());
        assert!(spec("t3a", 1).validate().is_ok());
        assert!(spec("mim", 0).validate().is_err());
        assert!(spec("Mim", 3).validate().is_err());
        assert!(spec("m-1", 3).validate().is_err());
        let host = |k: u8| NodeHost {
            ip: Ipv4Addr::new(10, 213, 7, k),
            exec_prefix: vec!["ip".into(), "netns".into(), "exec".into(), format!("ns{k}")],
        };
        let hosted = |n: u8| ClusterSpec {
            hosts: (1..=n).map(host).collect(),
            ..ClusterSpec::new("/tmp/x", 3)
        };
        assert!(hosted(3).validate().is_ok());
        assert!(hosted(2).validate().is_err(), "one host per node");
        let cmd = prefixed_command(&host(1).exec_prefix, "epmd".as_ref());
        assert_eq!(cmd.get_program(), "ip");
        assert_eq!(
            cmd.get_args().collect::<Vec<_>>(),
            ["netns", "exec", "ns1", "epmd"]
        );
        assert_eq!(prefixed_command(&[], "epmd".as_ref()).get_program(), "epmd");
        let named = |name: &str| ClusterSpec {
            cluster_name: name.into(),
            ..ClusterSpec::new("/tmp/x", 3)
        };
        assert!(named("test-rha.1_x").validate().is_ok());
        assert!(named("").validate().is_err());
        assert!(named("two words").validate().is_err());
        for bad in [
            "/tmp/a b",
            "/tmp/a#b",
            "/tmp/a\"b",
            "/tmp/a\\b",
            "/tmp/$HOME",
        ] {
            let err = ClusterSpec::new(bad, 3).validate().unwrap_err();
            assert!(matches!(err, RehearsalError::Spec(_)), "{bad}: {err}");
        }
    }
}
