//! The distls plan (v1) for the cluster: `<dir>/plan.yaml`, or a variant with per-node additions.

use super::{RehearsalCluster, RehearsalError, io_err};
use crate::yaml_text::double_quoted;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

impl RehearsalCluster {
    /// `<dir>/plan.yaml`, written by [`Self::create`].
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.yaml")
    }

    /// The plan text. `extra_node_yaml(i)` returns YAML to insert verbatim after the `- name:` line
    /// of node `i` (0-based), already indented for a key of that list item, e.g.
    /// `"    commands:\n      start: /bin/false\n"`; an empty string adds nothing.
    pub fn plan_yaml(&self, extra_node_yaml: impl Fn(usize) -> String) -> String {
        let d = self.dir.display();
        let mut y = String::new();
        let _ = writeln!(y, "version: 1");
        let _ = writeln!(y, "cluster: {}", double_quoted(&self.cluster_name));
        let _ = writeln!(y, "tls:");
        for (key, path) in [
            ("certfile", &self.tls.certfile),
            ("keyfile", &self.tls.keyfile),
            ("cacertfile", &self.tls.cacertfile),
        ] {
            let _ = writeln!(y, "  {key}: {}", double_quoted(&path.display().to_string()));
        }
        let _ = writeln!(y, "defaults:");
        let _ = writeln!(y, "  transport: local");
        let _ = writeln!(
            y,
            "  vm_dist_args: {}",
            double_quoted(&format!("{d}/{{sname}}/etc/vm.dist.args"))
        );
        let _ = writeln!(
            y,
            "  vm_args: {}",
            double_quoted(&format!("{d}/{{sname}}/etc/vm.args"))
        );
        let _ = writeln!(y, "  commands:");
        // With Mnesia a node is ready once its tables have loaded (`ctl started`).
        let ready = self.mnesia.then_some(("ready", "started"));
        for (key, verb) in [("stop", "stop"), ("start", "start"), ("ping", "ping")]
            .into_iter()
            .chain(ready)
        {
            let _ = writeln!(
                y,
                "    {key}: {}",
                double_quoted(&format!("{d}/{{sname}}/bin/ctl {verb}"))
            );
        }
        let _ = writeln!(y, "nodes:");
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(y, "  - name: {}", double_quoted(&node.name));
            let extra = extra_node_yaml(i);
            y.push_str(&extra);
            if !extra.is_empty() && !extra.ends_with('\n') {
                y.push('\n');
            }
        }
        y
    }

    /// Writes [`Self::plan_yaml`] to `path` (e.g. a plan where node 2 gets another `commands.start`).
    pub fn write_plan(
        &self,
        path: &Path,
        extra_node_yaml: impl Fn(usize) -> String,
    ) -> Result<(), RehearsalError> {
        fs::write(path, self.plan_yaml(extra_node_yaml)).map_err(io_err("write", path))
    }

    /// Rewrites [`Self::plan_path`] with per-node additions (see [`Self::plan_yaml`]).
    ///
    /// # Panics
    /// If the plan cannot be written: this is test and demo plumbing.
    pub fn write_plan_with(&self, extra_node_yaml: impl Fn(usize) -> String) {
        let path = self.plan_path();
        if let Err(err) = self.write_plan(&path, extra_node_yaml) {
            panic!("{err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rehearsal::RehearsalNode;
    use crate::rehearsal::certs::write_cluster_certs;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn plan_lists_every_node_with_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fs::canonicalize(tmp.path()).unwrap();
        let tls = write_cluster_certs(&dir.join("ssl"), &[]).unwrap();
        let mut cluster = RehearsalCluster {
            nodes: (1..=3)
                .map(|k| RehearsalNode {
                    name: format!("mim{k}@localhost"),
                    sname: format!("mim{k}"),
                    root: dir.join(format!("mim{k}")),
                })
                .collect(),
            dir: dir.clone(),
            cluster_name: "demo".into(),
            cookie: "X".into(),
            tls,
            hosts: Vec::new(),
            mnesia: false,
            epmds: Vec::new(),
            epmd_port: 1,
            shut_down: true,
            _tempdir: None,
        };
        let yaml = cluster.plan_yaml(|i| {
            if i == 2 {
                "    commands:\n      start: /bin/false".into()
            } else {
                String::new()
            }
        });
        let d = dir.display();
        let expected = format!(
            "version: 1\n\
             cluster: \"demo\"\n\
             tls:\n  certfile: \"{d}/ssl/node_cert.pem\"\n  keyfile: \"{d}/ssl/node_key.pem\"\n  cacertfile: \"{d}/ssl/cacert.pem\"\n\
             defaults:\n  transport: local\n\
             \x20 vm_dist_args: \"{d}/{{sname}}/etc/vm.dist.args\"\n\
             \x20 vm_args: \"{d}/{{sname}}/etc/vm.args\"\n\
             \x20 commands:\n\
             \x20   stop: \"{d}/{{sname}}/bin/ctl stop\"\n\
             \x20   start: \"{d}/{{sname}}/bin/ctl start\"\n\
             \x20   ping: \"{d}/{{sname}}/bin/ctl ping\"\n\
             nodes:\n  - name: \"mim1@localhost\"\n  - name: \"mim2@localhost\"\n  - name: \"mim3@localhost\"\n\
             \x20   commands:\n      start: /bin/false\n"
        );
        assert_eq!(yaml, expected);
        assert_eq!(double_quoted("a\"b\\c"), r#""a\"b\\c""#);
        cluster.mnesia = true;
        let with_ready = cluster.plan_yaml(|_| String::new());
        assert!(
            with_ready.contains(&format!(
                "    ping: \"{d}/{{sname}}/bin/ctl ping\"\n    ready: \"{d}/{{sname}}/bin/ctl started\"\nnodes:\n"
            )),
            "{with_ready}"
        );
        let key_mode = fs::metadata(&cluster.tls.keyfile)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }
}
