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
        Flavor::Ejabberd | Flavor::RabbitMq => product(flavor, facts, files).await,
    }
}

fn args_file_value(facts: &NodeFacts, file_name: &str) -> (Option<PathBuf>, Value) {
    match facts.args_file_named(file_name) {
        Some(path) => (
            Some(path.to_path_buf()),
            Value::known(
                path.display().to_string(),
                format!("the node was started with -args_file {}", path.display()),
            ),
        ),
        None => (
            None,
            Value::fill_in(
                format!("the path of the node's {file_name}"),
                format!("the node was started without a {file_name} (-args_file)"),
            ),
        ),
    }
}

async fn mongooseim(facts: &NodeFacts, files: &mut HostFiles<'_>) -> Result<NodeLayout> {
    let (dist_path, vm_dist_args) = args_file_value(facts, "vm.dist.args");
    let (args_path, vm_args) = args_file_value(facts, "vm.args");
    let mut values = vec![("vm_dist_args", vm_dist_args), ("vm_args", vm_args)];
    // MongooseIM's release: <root>/etc/vm.args, its ctl in <root>/bin.
    let root = args_path
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent);
    values.extend(mongooseim_commands(root, facts.runs_mnesia(), files).await?);
    let (tls, tls_origin) = match &dist_path {
        Some(path) => match files.read(path).await? {
            Some(text) => (
                tls_named_in(&text),
                format!("named in {}'s TLS block", path.display()),
            ),
            None => ([None, None, None], format!("{} is unreadable", path.display())),
        },
        None => ([None, None, None], "no vm.dist.args".into()),
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
        return Ok(fill_in_commands("the node's vm.args is not in <release>/etc"));
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
            ("commands.stop", Value::known(run(&ctl_path, "stop"), &origin)),
            ("commands.start", Value::known(run(&ctl_path, "start"), &origin)),
            ("commands.ping", Value::known(run(&ping_path, "ping"), &origin)),
        ];
        if mnesia {
            let why = format!("{origin}; the node runs Mnesia, so wait until it has started");
            commands.push(("commands.ready", Value::known(run(&ctl_path, "started"), why)));
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
    let (_, vm_args) = args_file_value(facts, "vm.args");
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
            Some(file) => (PathBuf::from(file), "the node's RABBITMQ_CONF_ENV_FILE".into()),
            None => (PathBuf::from(default_file), "the flavor's default".into()),
        },
    };
    let mut values = Vec::new();
    if !files.exists(&candidate).await? {
        values.push((
            "flags_file",
            Value::fill_in(
                format!("the path of the node's {}", flavor.file_label()),
                format!("{} ({origin}) is not on the node's host", candidate.display()),
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
