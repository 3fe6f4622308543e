//! `distls plan discover`: asks one running node for its cluster and writes the plan an
//! operator would write for it (docs/discover.md). Read-only on the cluster.

mod facts;
mod layout;
mod render;
mod session;

use crate::argsfile::{self, Cookie};
use crate::atomic_file;
use crate::error::{Error, Message, Result};
use crate::flavor::Flavor;
use facts::{NodeFacts, parse_nodes};
use layout::{HostFiles, locate, node_layout};
use render::{DiscoveredNode, DiscoveredPlan, Value};
use session::Session;
use std::path::{Path, PathBuf};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node to ask first (`name@host`).
    pub node: String,
    pub flavor: Option<Flavor>,
    /// A file holding the cookie, or a vm.args with `-setcookie`.
    pub cookie_file: Option<PathBuf>,
    pub cluster: Option<String>,
    /// certfile, keyfile, cacertfile when the operator gives them.
    pub tls: [Option<String>; 3],
    pub erl: String,
}

/// The plan's YAML.
pub async fn discover(options: &Options) -> Result<String> {
    if !options.node.contains('@') {
        return Err(Error::InvalidInput(
            Message::new(format!("`{}` is not a node name", options.node))
                .hint("give the node as name@host, exactly as it runs (e.g. mongooseim@db1)"),
        ));
    }
    let cookie = read_cookie(options)?;
    let mut session = Session::start(&options.erl, &options.node, &cookie).await?;
    let plan = ask_cluster(&mut session, options).await;
    session.stop().await;
    Ok(plan?.to_yaml())
}

/// Writes the YAML to `output` (atomically, never over a file unless `force`) or stdout.
pub fn write_plan(yaml: &str, output: Option<&Path>, force: bool) -> Result<()> {
    let Some(path) = output else {
        print!("{yaml}");
        return Ok(());
    };
    let io_error = |e: std::io::Error| {
        Error::InvalidInput(
            Message::new(format!("cannot write {}: {e}", path.display()))
                .hint("choose a path in a directory you can write"),
        )
    };
    if !force && atomic_file::exists(path).map_err(io_error)? {
        return Err(Error::InvalidInput(
            Message::new(format!("{} already exists", path.display()))
                .hint("pass --force to replace it, or choose another --output"),
        ));
    }
    atomic_file::write(path, yaml.as_bytes(), 0o644).map_err(io_error)
}

/// The cookie: `--cookie-file` (a cookie file, or a vm.args with `-setcookie`), else the flavor's
/// cookie file, else `~/.erlang.cookie`.
fn read_cookie(options: &Options) -> Result<Cookie> {
    let (path, origin) = match (&options.cookie_file, options.flavor) {
        (Some(path), _) => (path.clone(), "--cookie-file"),
        (None, Some(flavor)) if flavor.default_cookie_file().is_some() => (
            PathBuf::from(flavor.default_cookie_file().unwrap_or_default()),
            "the flavor's cookie file",
        ),
        _ => (
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".erlang.cookie"),
            "your ~/.erlang.cookie",
        ),
    };
    let unreadable = |detail: String| {
        Error::InvalidInput(
            Message::new(format!(
                "cannot read the cookie from {} ({origin}): {detail}",
                path.display()
            ))
            .hint("pass --cookie-file with the node's cookie file or its vm.args (-setcookie), readable by you"),
        )
    };
    let bytes = atomic_file::read(&path, 64 * 1024).map_err(|e| unreadable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8".into()))?;
    let from_vm_args = argsfile::parse_flags(&text)
        .into_iter()
        .find(|flag| flag.name.text == "-setcookie")
        .and_then(|flag| flag.values.first().map(|v| v.text.clone()));
    let cookie = from_vm_args.unwrap_or_else(|| text.trim().to_string());
    if cookie.is_empty() || cookie.chars().any(char::is_whitespace) {
        return Err(unreadable(
            "no cookie in it (one word, or a -setcookie line)".into(),
        ));
    }
    Ok(Cookie::new(cookie))
}

fn refused(node: &str, reason: &str) -> Error {
    Error::Refused(
        Message::new(format!("cannot ask {node}: {reason}")).hint(
            "check that the node runs on plain TCP, the cookie (--cookie-file) and ERL_EPMD_PORT in this shell; distls discovers clusters that are not yet on TLS",
        ),
    )
}

async fn ask_cluster(session: &mut Session, options: &Options) -> Result<DiscoveredPlan> {
    let asked = &options.node;
    let reply = session.ask(&format!("nodes {asked}")).await?;
    let mut names = parse_nodes(&reply).map_err(|reason| refused(asked, &reason))?;
    // The plan's order is the migration order: by name, numbers in names compared as numbers.
    names.sort_by_key(|name| natural_key(name));
    let mut all_facts = Vec::new();
    for name in &names {
        let reply = session.ask(&format!("facts {name}")).await?;
        let mut facts = NodeFacts::parse(name, &reply).map_err(|reason| refused(name, &reason))?;
        let mut files = HostFiles {
            session,
            node: name,
        };
        locate(&mut facts, &mut files).await?;
        all_facts.push(facts);
    }
    let (flavor, flavor_origin) = match options.flavor {
        Some(flavor) => (flavor, "--flavor".to_string()),
        None => all_facts[0].detect_flavor().ok_or_else(|| {
            Error::InvalidInput(
                Message::new(format!("cannot tell which product {asked} runs"))
                    .hint("pass --flavor mongooseim|ejabberd|rabbitmq|relx"),
            )
        })?,
    };
    let mut nodes = Vec::new();
    let mut tls_found: [Option<(String, String)>; 3] = [None, None, None];
    for facts in &all_facts {
        let mut files = HostFiles {
            session,
            node: &facts.name,
        };
        let layout = node_layout(flavor, facts, &mut files).await?;
        for (slot, path) in tls_found.iter_mut().zip(layout.tls) {
            if slot.is_none() {
                *slot = path.map(|p| (p, format!("{} ({})", layout.tls_origin, facts.name)));
            }
        }
        let mut values = access_values(facts);
        values.extend(layout.values);
        nodes.push(DiscoveredNode {
            name: facts.name.clone(),
            summary: summary(facts),
            values,
        });
    }
    Ok(DiscoveredPlan {
        cluster: cluster_value(options),
        flavor,
        flavor_origin: format!("flavor: {flavor_origin}"),
        tls: tls_values(options, tls_found),
        asked: asked.clone(),
        nodes,
    })
}

/// `mim10@h` after `mim9@h`: the name split into text and numbers.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            key.push((
                std::mem::take(&mut text),
                digits.parse().unwrap_or(u64::MAX),
            ));
            digits.clear();
        }
        text.push(c);
    }
    key.push((text, 0));
    key
}

fn summary(facts: &NodeFacts) -> String {
    let pid = facts
        .os_pid
        .map_or("unknown".to_string(), |p| p.to_string());
    format!(
        "{}: OS pid {pid} on host {}, Erlang in {}",
        facts.name, facts.hostname, facts.root_dir
    )
}

fn cluster_value(options: &Options) -> Value {
    if let Some(name) = &options.cluster {
        return Value::known(name, "--cluster");
    }
    let sname = options.node.split('@').next().unwrap_or("");
    let name: String = sname
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .collect();
    let name = if name.is_empty() {
        "cluster".into()
    } else {
        name
    };
    Value::known(
        name,
        "from the asked node's name (--cluster to choose): names the journal and the lock",
    )
}

fn tls_values(options: &Options, found: [Option<(String, String)>; 3]) -> [Value; 3] {
    let what = ["certificate (PEM)", "private key (PEM)", "CA bundle (PEM)"];
    let flags = ["--certfile", "--keyfile", "--cacertfile"];
    let mut values =
        found
            .into_iter()
            .enumerate()
            .map(|(i, found)| match (&options.tls[i], found) {
                (Some(path), _) => Value::known(path, flags[i]),
                (None, Some((path, origin))) => Value::known(path, origin),
                (None, None) => Value::fill_in(
                    format!("the path of every node's {} for distribution", what[i]),
                    format!("no node's files name one ({} to give it)", flags[i]),
                ),
            });
    [(); 3].map(|_| values.next().expect("three TLS values"))
}

/// How distls reaches the node: locally when its host is this machine, else over SSH, and as
/// which user its VM runs.
fn access_values(facts: &NodeFacts) -> Vec<(&'static str, Value)> {
    let host = facts.name.split_once('@').map_or("", |(_, h)| h);
    let epmd = epmd_port_value(facts);
    if !is_this_machine(host) {
        let mut values = vec![
            (
                "transport",
                Value::known("ssh", format!("{host} is not this machine")),
            ),
            (
                "user",
                Value::fill_in(
                    "the SSH user distls logs in as",
                    "the host defaults to the node name's host part (docs/ssh.md)",
                ),
            ),
        ];
        values.extend(epmd);
        return values;
    }
    let mut values = vec![(
        "transport",
        Value::known("local", "the nodes' hosts are this machine"),
    )];
    values.extend(epmd);
    if let Some(user) = facts.os_pid.and_then(other_owner) {
        values.push((
            "become",
            Value::known(
                format!("sudo -n -u {user}"),
                format!("the node's VM runs as {user}, not as you"),
            ),
        ));
    }
    values
}

/// `env.ERL_EPMD_PORT` when the node's epmd is not on the default port: the node's own variable,
/// else this shell's (the node was found through it).
fn epmd_port_value(facts: &NodeFacts) -> Option<(&'static str, Value)> {
    let (port, origin) = match facts.env.get("ERL_EPMD_PORT") {
        Some(port) => (port.clone(), "the node's own ERL_EPMD_PORT: its epmd"),
        None => (
            std::env::var("ERL_EPMD_PORT").ok()?,
            "this shell's ERL_EPMD_PORT, through which the node was found",
        ),
    };
    (port != "4369").then(|| ("env.ERL_EPMD_PORT", Value::known(port, origin)))
}

/// The user owning local process `pid`, when distls (not root: root acts for every user, and
/// the products' ctls switch to their user themselves) runs as another user.
fn other_owner(pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    (me != 0 && uid != me).then(|| atomic_file::user_label(uid))
}

fn is_this_machine(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Ok(address) = host.parse::<std::net::IpAddr>() {
        return address.is_loopback();
    }
    let me = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = me.trim();
    !me.is_empty() && (host == me || host.split('.').next() == me.split('.').next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_ordered_by_name_with_numbers_as_numbers() {
        let mut names = vec!["mim10@h", "mim2@h", "mim1@h", "db@h"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["db@h", "mim1@h", "mim2@h", "mim10@h"]);
    }

    #[test]
    fn the_cluster_is_named_after_the_asked_node_unless_given() {
        let mut options = Options {
            node: "mim1@db1".into(),
            flavor: None,
            cookie_file: None,
            cluster: None,
            tls: [None, None, None],
            erl: "erl".into(),
        };
        assert!(matches!(cluster_value(&options), Value::Known { text, .. } if text == "mim"));
        options.cluster = Some("prod".into());
        assert!(matches!(cluster_value(&options), Value::Known { text, .. } if text == "prod"));
    }

    #[test]
    fn only_local_names_are_this_machine() {
        assert!(is_this_machine("localhost"));
        assert!(is_this_machine("127.0.0.1"));
        assert!(!is_this_machine("10.1.2.3"));
        assert!(!is_this_machine("no-such-host.example.com"));
    }
}
