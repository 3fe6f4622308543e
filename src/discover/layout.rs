//! Each node's plan values, from its facts and the files on its host, the way its flavor lays
//! them out. Only what differs from the flavor's defaults is written.

use super::facts::NodeFacts;
use super::render::Value;
use super::session::Session;
use crate::argsfile;
use crate::error::Result;
use crate::flavor::Flavor;
use std::path::{Path, PathBuf};

/// Asks the node's own host about files (by rpc, so it works for remote nodes too).
pub struct HostFiles<'a> {
    pub session: &'a mut Session,
    pub node: &'a str,
}

impl HostFiles<'_> {
    pub async fn exists(&mut self, path: &Path) -> Result<bool> {
        let hex_path = hex::encode(path.as_os_str().as_encoded_bytes());
        Ok(self
            .session
            .ask(&format!("exists {} {hex_path}", self.node))
            .await?
            == "yes")
    }

    pub async fn read(&mut self, path: &Path) -> Result<Option<String>> {
        let hex_path = hex::encode(path.as_os_str().as_encoded_bytes());
        let reply = self
            .session
            .ask(&format!("read {} {hex_path}", self.node))
            .await?;
        Ok(reply
            .strip_prefix("file ")
            .and_then(|h| hex::decode(h.trim()).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok()))
    }
}

/// The TLS paths a flags file already names (MongooseIM's commented block counts): certfile,
/// keyfile, cacertfile, each `None` when not named.
pub fn tls_named_in(text: &str) -> [Option<String>; 3] {
    let Ok(settings) = argsfile::settings_once_enabled(text) else {
        return [None, None, None];
    };
    ["server_certfile", "server_keyfile", "server_cacertfile"].map(|key| {
        settings
            .ssl_dist_opt_values(key)
            .next()
            .map(|v| v.value.clone())
    })
}

/// What one node's layout gives: its values, and the TLS paths its files name.
pub struct NodeLayout {
    pub values: Vec<(&'static str, Value)>,
    pub tls: [Option<String>; 3],
    pub tls_origin: String,
}

pub async fn node_layout(
    flavor: Flavor,
    facts: &NodeFacts,
    files: &mut HostFiles<'_>,
) -> Result<NodeLayout> {
    match flavor {
        Flavor::MongooseIm => mongooseim(facts, files).await,
        Flavor::Relx => Ok(relx(facts)),
        Flavor::Elixir => Ok(elixir(facts)),
        Flavor::Ejabberd | Flavor::RabbitMq => product(flavor, facts, files).await,
    }
}

/// Finds the node's release files on its host: MongooseIM's `etc/` (a vm.args naming this node
/// and a vm.dist.args beside it) under one of its candidate roots, or a relx release's vm.args.
pub async fn locate(facts: &mut NodeFacts, files: &mut HostFiles<'_>) -> Result<()> {
    for root in facts.release_root_candidates() {
        let etc = root.join("etc");
        if !files.exists(&etc.join("vm.dist.args")).await? {
            continue;
        }
        let vm_args = files.read(&etc.join("vm.args")).await?;
        if vm_args.is_some_and(|text| names_node(&text, &facts.name)) {
            let how = format!(
                "{} names this node, with vm.dist.args beside it",
                etc.join("vm.args").display()
            );
            facts.etc_dir = Some((etc, how));
            return Ok(());
        }
    }
    if let (Some(root), Some(vsn)) = (facts.env.get("RELEASE_ROOT"), facts.env.get("RELEASE_VSN")) {
        let vm_args = Path::new(root).join("releases").join(vsn).join("vm.args");
        if files.exists(&vm_args).await? {
            facts.relx_vm_args = Some(vm_args);
        }
    }
    Ok(())
}

/// Whether a vm.args text names `node` (`-sname`/`-name`, with or without its host part).
fn names_node(vm_args: &str, node: &str) -> bool {
    let Ok(identity) = argsfile::node_identity(vm_args) else {
        return false;
    };
    let sname = node.split('@').next().unwrap_or(node);
    identity.node_name == node || identity.node_name == sname
}

async fn mongooseim(facts: &NodeFacts, files: &mut HostFiles<'_>) -> Result<NodeLayout> {
    let Some((etc, how)) = &facts.etc_dir else {
        let why = "no etc/vm.args naming this node under its working directory or release root";
        let mut values = vec![
            (
                "vm_dist_args",
                Value::fill_in("the path of the node's vm.dist.args", why),
            ),
            (
                "vm_args",
                Value::fill_in("the path of the node's vm.args", why),
            ),
        ];
        values.extend(fill_in_commands(why));
        return Ok(NodeLayout {
            values,
            tls: [None, None, None],
            tls_origin: why.into(),
        });
    };
    let dist_path = etc.join("vm.dist.args");
    let mut values = vec![
        (
            "vm_dist_args",
            Value::known(dist_path.display().to_string(), how),
        ),
        (
            "vm_args",
            Value::known(etc.join("vm.args").display().to_string(), how),
        ),
    ];
    values.extend(mongooseim_commands(etc.parent(), facts.runs_mnesia(), files).await?);
    let (tls, tls_origin) = match files.read(&dist_path).await? {
        Some(text) => (
            tls_named_in(&text),
            format!("named in {}'s TLS block", dist_path.display()),
        ),
        None => (
            [None, None, None],
            format!("{} is unreadable", dist_path.display()),
        ),
    };
    Ok(NodeLayout {
        values,
        tls,
        tls_origin,
    })
}

/// The release's control scripts, the first that exists in `<root>/bin`: MongooseIM's own, or
/// a `ctl` with the same verbs.
async fn mongooseim_commands(
    root: Option<&Path>,
    mnesia: bool,
    files: &mut HostFiles<'_>,
) -> Result<Vec<(&'static str, Value)>> {
    let Some(root) = root else {
        return Ok(fill_in_commands(
            "the node's vm.args is not in <release>/etc",
        ));
    };
    let bin = root.join("bin");
    for (ctl, ping) in [("mongooseimctl", "mongooseim"), ("ctl", "ctl")] {
        let ctl_path = bin.join(ctl);
        if !files.exists(&ctl_path).await? {
            continue;
        }
        let ping_path = bin.join(ping);
        let ping_path = if files.exists(&ping_path).await? {
            ping_path
        } else {
            ctl_path.clone()
        };
        let origin = format!("{} exists on the node's host", ctl_path.display());
        let run = |path: &Path, verb: &str| format!("{} {verb}", path.display());
        let mut commands = vec![
            (
                "commands.stop",
                Value::known(run(&ctl_path, "stop"), &origin),
            ),
            (
                "commands.start",
                Value::known(run(&ctl_path, "start"), &origin),
            ),
            (
                "commands.ping",
                Value::known(run(&ping_path, "ping"), &origin),
            ),
        ];
        if mnesia {
            let why = format!("{origin}; the node runs Mnesia, so wait until it has started");
            commands.push((
                "commands.ready",
                Value::known(run(&ctl_path, "started"), why),
            ));
        }
        return Ok(commands);
    }
    Ok(fill_in_commands(&format!(
        "no mongooseimctl or ctl in {}",
        bin.display()
    )))
}

fn fill_in_commands(why: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "commands.stop",
            Value::fill_in("the command that stops this node", why),
        ),
        (
            "commands.start",
            Value::fill_in("the command that starts this node", why),
        ),
    ]
}

fn relx(facts: &NodeFacts) -> NodeLayout {
    let vm_args = match &facts.relx_vm_args {
        Some(path) => Value::known(
            path.display().to_string(),
            "the node's RELEASE_ROOT and RELEASE_VSN",
        ),
        None => Value::fill_in(
            "the path of the release's vm.args",
            "the node's RELEASE_ROOT/releases/RELEASE_VSN has no vm.args",
        ),
    };
    let mut values = vec![("vm_args", vm_args)];
    let why = match facts.env.get("RELEASE_ROOT") {
        Some(root) => format!("the release is {root}; relx's script name is not known"),
        None => "relx's script name is not known".to_string(),
    };
    values.extend(fill_in_commands(&why));
    NodeLayout {
        values,
        tls: [None, None, None],
        tls_origin: "relx's vm.args names no certificate before the migration".into(),
    }
}

/// An Elixir release: its env.sh from the RELEASE_ROOT and RELEASE_VSN the release script
/// exports to the VM; the commands and the cookie file are the flavor's defaults from that path.
fn elixir(facts: &NodeFacts) -> NodeLayout {
    let flags_file = match (facts.env.get("RELEASE_ROOT"), facts.env.get("RELEASE_VSN")) {
        (Some(root), Some(vsn)) => Value::known(
            format!("{root}/releases/{vsn}/env.sh"),
            "the node's RELEASE_ROOT and RELEASE_VSN",
        ),
        _ => Value::fill_in(
            "the path of the release's releases/VSN/env.sh",
            "the node's environment has no RELEASE_ROOT and RELEASE_VSN",
        ),
    };
    NodeLayout {
        values: vec![("flags_file", flags_file)],
        tls: [None, None, None],
        tls_origin: "a release's env.sh names no certificate before the migration".into(),
    }
}

/// ejabberd and RabbitMQ: the flags file (only when not the default) and the cookie file of the
/// service user (only when not the default); their commands are the flavor's.
async fn product(
    flavor: Flavor,
    facts: &NodeFacts,
    files: &mut HostFiles<'_>,
) -> Result<NodeLayout> {
    let default_file = flavor.default_flags_file().unwrap_or_default();
    let (candidate, origin) = match flavor {
        Flavor::Ejabberd => match facts.env.get("EJABBERD_CONFIG_PATH") {
            Some(config) => (
                Path::new(config).with_file_name("ejabberdctl.cfg"),
                format!("next to the node's EJABBERD_CONFIG_PATH ({config})"),
            ),
            None => (PathBuf::from(default_file), "the flavor's default".into()),
        },
        _ => match facts.env.get("RABBITMQ_CONF_ENV_FILE") {
            Some(file) => (
                PathBuf::from(file),
                "the node's RABBITMQ_CONF_ENV_FILE".into(),
            ),
            None => (PathBuf::from(default_file), "the flavor's default".into()),
        },
    };
    let mut values = Vec::new();
    if !files.exists(&candidate).await? {
        values.push((
            "flags_file",
            Value::fill_in(
                format!("the path of the node's {}", flavor.file_label()),
                format!(
                    "{} ({origin}) is not on the node's host",
                    candidate.display()
                ),
            ),
        ));
    } else if candidate != Path::new(default_file) {
        values.push((
            "flags_file",
            Value::known(candidate.display().to_string(), origin),
        ));
    }
    if let Some(home) = facts.env.get("HOME") {
        let cookie = Path::new(home).join(".erlang.cookie");
        let default_cookie = flavor.default_cookie_file().unwrap_or_default();
        if cookie != Path::new(default_cookie) && files.exists(&cookie).await? {
            let origin = format!("the node's HOME is {home}");
            values.push((
                "cookie_file",
                Value::known(cookie.display().to_string(), origin),
            ));
        }
    }
    Ok(NodeLayout {
        values,
        tls: [None, None, None],
        tls_origin: format!(
            "{} names no certificate before the migration",
            flavor.file_label()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_args_names_its_node_with_or_without_the_host() {
        assert!(names_node(
            "-sname mim1@localhost\n-setcookie c\n",
            "mim1@localhost"
        ));
        assert!(names_node("-sname mim1\n", "mim1@db1"));
        assert!(!names_node("-sname mim2@localhost\n", "mim1@localhost"));
        assert!(!names_node("-setcookie c\n", "mim1@localhost"));
    }

    #[test]
    fn reads_the_tls_paths_of_a_commented_block() {
        let text = "## TLS\n#-proto_dist inet_tls\n#-ssl_dist_opt server_certfile /s/c.pem client_certfile /s/c.pem\n#  server_keyfile /s/k.pem client_keyfile /s/k.pem\n#  server_cacertfile /s/ca.pem client_cacertfile /s/ca.pem\n";
        assert_eq!(
            tls_named_in(text),
            [
                Some("/s/c.pem".to_string()),
                Some("/s/k.pem".to_string()),
                Some("/s/ca.pem".to_string())
            ]
        );
        assert_eq!(tls_named_in("-kernel x 1\n"), [None, None, None]);
    }
}
