//! The semantic layer: from the plan as written to resolved nodes (defaults merged,
//! placeholders expanded, paths resolved), every mistake located.
//!
//! This file holds the top-level flow; each child module adds the methods of one concern to
//! [`Resolver`]: the top-level keys, settings values, placeholders and paths, one node, its
//! flavor's files and its SSH settings.

use super::*;

mod flavor_files;
mod node;
mod settings;
mod ssh;
mod template;
mod top_level;

use template::expand;
pub use template::expand_for_node;

pub(super) struct Resolver<'a> {
    pub(super) text: SourceText<'a>,
    pub(super) plan_dir: PathBuf,
}

/// The plan's values once every one is checked.
pub(super) struct Resolved {
    pub(super) cluster: String,
    pub(super) on_failure: OnFailure,
    pub(super) batch: Batch,
    pub(super) nodes: Vec<NodeSpec>,
}

/// A node name split into the parts placeholders expand to.
pub(super) struct NodeName<'a> {
    pub(super) full: &'a str,
    pub(super) sname: &'a str,
    pub(super) host: &'a str,
}

/// A node's files as its flavor uses them.
pub(super) struct FlavorFiles {
    pub(super) flags_file: PathBuf,
    pub(super) flags_at: SourceLocation,
    pub(super) identity_file: PathBuf,
    pub(super) identity_at: SourceLocation,
    pub(super) cookie_file: Option<PathBuf>,
}

/// The top-level `tls` section, complete.
pub(super) struct TopTls<'r> {
    pub(super) certfile: &'r Text,
    pub(super) keyfile: &'r Text,
    pub(super) cacertfile: &'r Text,
}

impl Resolver<'_> {
    pub(super) fn error(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        self.text.error(at, message, hint)
    }

    pub(super) fn missing_top_level(&self, key: &str, message: &str, hint: &str) -> PlanError {
        let at = self
            .text
            .top_level_key(key)
            .unwrap_or(SourceLocation::START);
        self.error(at, message, hint)
    }

    pub(super) fn resolve(&self, raw: RawPlan) -> Result<Resolved, PlanError> {
        if raw.is_empty() {
            return Err(self.error(
                SourceLocation::START,
                "the plan file is empty",
                "write a plan: version: 1, cluster, tls, defaults and nodes",
            ));
        }
        let version = raw.version.as_ref().ok_or_else(|| {
            self.missing_top_level(
                "version",
                "the plan has no `version`",
                "add `version: 1` as the first line",
            )
        })?;
        self.check_version(version)?;
        let cluster = self.cluster(raw.cluster.as_ref())?;
        let on_failure = self.on_failure(raw.on_failure.as_ref())?;
        let batch = self.batch(raw.batch.as_ref())?;
        let top_tls = self.top_tls(raw.tls.as_ref())?;
        let top_flavor = match &raw.flavor {
            Some(text) => self.flavor(text)?,
            None => Flavor::default(),
        };
        let defaults = raw.defaults.unwrap_or_default();
        self.check_settings(&defaults)?;

        let nodes = self.node_list(raw.nodes)?;
        let resolved = self.resolve_nodes(nodes, &defaults, &top_tls, top_flavor)?;
        self.check_distinct_dist_args(&resolved)?;
        Ok(Resolved {
            cluster,
            on_failure,
            batch,
            nodes: resolved,
        })
    }

    /// The `nodes` list, refused when missing or empty: a plan migrates at least one node.
    fn node_list(
        &self,
        nodes: Option<Spanned<Vec<Spanned<RawNode>>>>,
    ) -> Result<Vec<Spanned<RawNode>>, PlanError> {
        let nodes = nodes.ok_or_else(|| {
            self.missing_top_level(
                "nodes",
                "the plan has no nodes",
                "add a `nodes:` list with one `- name: NAME@HOST` entry per node",
            )
        })?;
        if nodes.value.is_empty() {
            return Err(self.error(
                referenced(&nodes),
                "the `nodes` list is empty",
                "add one `- name: NAME@HOST` entry per node, e.g. `- name: mim1@db1`",
            ));
        }
        Ok(nodes.value)
    }

    /// Resolves every node entry in plan order; a node listed twice is refused at its
    /// second entry, naming the line of the first.
    fn resolve_nodes(
        &self,
        nodes: Vec<Spanned<RawNode>>,
        defaults: &RawSettings,
        top_tls: &TopTls,
        top_flavor: Flavor,
    ) -> Result<Vec<NodeSpec>, PlanError> {
        let mut resolved: Vec<NodeSpec> = Vec::with_capacity(nodes.len());
        let mut first_seen: HashMap<String, SourceLocation> = HashMap::new();
        for node in nodes {
            let entry = referenced(&node);
            let (name, settings) = node.value.into_parts();
            let name = name.ok_or_else(|| {
                self.error(
                    entry,
                    "this node entry has no `name`",
                    "add `name: NAME@HOST`, e.g. `- name: mim1@db1`",
                )
            })?;
            let spec = self.node(&name, &settings, defaults, top_tls, top_flavor)?;
            if let Some(first) = first_seen.get(&spec.name) {
                return Err(self.error(
                    defined(&name),
                    format!(
                        "node \"{}\" is listed twice (first at line {})",
                        spec.name, first.line
                    ),
                    "remove one of the two entries; each node is migrated once",
                ));
            }
            first_seen.insert(spec.name.clone(), defined(&name));
            resolved.push(spec);
        }
        Ok(resolved)
    }

    pub(super) fn check_distinct_dist_args(&self, nodes: &[NodeSpec]) -> Result<(), PlanError> {
        // The same path on two different hosts is two different files.
        let host_of = |node: &NodeSpec| {
            node.ssh
                .as_ref()
                .map_or_else(String::new, |s| format!("{}:{:?}", s.host, s.port))
        };
        let mut first_user: HashMap<(String, &Path), &NodeSpec> = HashMap::new();
        for node in nodes {
            let key = (host_of(node), node.vm_dist_args.as_path());
            let Some(first) = first_user.get(&key) else {
                first_user.insert(key, node);
                continue;
            };
            let key = match node.flavor {
                Flavor::MongooseIm => "vm_dist_args",
                Flavor::Relx => "vm_args",
                Flavor::Ejabberd | Flavor::RabbitMq | Flavor::Elixir => "flags_file",
            };
            let message = format!(
                "nodes \"{}\" and \"{}\" both use {} as {key}",
                first.name,
                node.name,
                node.vm_dist_args.display()
            );
            let hint = if node.flavor != Flavor::MongooseIm {
                format!(
                    "each node needs its own {}: set `{key}` per node or put {{sname}} in its path",
                    node.flavor.file_label()
                )
            } else if first.origins.vm_dist_args == node.origins.vm_dist_args {
                "each node needs its own vm.dist.args: put {sname} in the path, e.g. /opt/mim/{sname}/etc/vm.dist.args".to_owned()
            } else {
                format!(
                    "each node needs its own vm.dist.args; fix this path or the one at line {}",
                    first.origins.vm_dist_args.line
                )
            };
            return Err(self.error(node.origins.vm_dist_args, message, hint));
        }
        Ok(())
    }
}

/// A node's value for a key: from its own entry, else from `defaults`.
fn own_or_default<'r>(
    own: &'r RawSettings,
    defaults: &'r RawSettings,
    key: fn(&RawSettings) -> &Option<Text>,
) -> Option<&'r Text> {
    key(own).as_ref().or(key(defaults).as_ref())
}

pub(super) fn where_to_set(key: &str) -> String {
    match key.split_once('.') {
        Some((section, leaf)) => format!(
            "set `{leaf}` under `{section}:` in `defaults:` (for every node) or in this node's entry"
        ),
        None => format!("set `{key}` under `defaults:` (for every node) or in this node's entry"),
    }
}
