//! What a running node says about itself (the discovery VM's `facts` reply), and what that tells
//! about its product. Pure: parsing and deciding only.

use crate::flavor::Flavor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One node's answers: how its VM was started and what runs in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// `code:root_dir()`: the OTP (or the release's ERTS root) the node runs.
    pub root_dir: String,
    pub os_pid: Option<u32>,
    /// `inet:gethostname()` on the node.
    pub hostname: String,
    /// The VM's working directory (release scripts start it in the release's root).
    pub cwd: String,
    /// `application:which_applications()`, names only.
    pub apps: Vec<String>,
    /// The product's variables that are set in the node's environment.
    pub env: BTreeMap<String, String>,
    /// Where its vm.args and vm.dist.args are (MongooseIM's `etc`), once found on its host, and
    /// how they were found.
    pub etc_dir: Option<(PathBuf, String)>,
    /// A relx release's vm.args, once found on its host.
    pub relx_vm_args: Option<PathBuf>,
}

impl NodeFacts {
    /// Parses `facts <key>=<hex>...` for node `name`.
    pub fn parse(name: &str, reply: &str) -> Result<NodeFacts, String> {
        let mut words = reply.split_whitespace();
        if words.next() != Some("facts") {
            return Err(format!("unexpected reply `{}`", first_word(reply)));
        }
        let mut facts = NodeFacts {
            name: name.to_string(),
            ..NodeFacts::default()
        };
        for word in words {
            let (key, hex_value) = word.split_once('=').unwrap_or((word, ""));
            let bytes = hex::decode(hex_value).map_err(|_| format!("bad value for `{key}`"))?;
            let value = String::from_utf8_lossy(&bytes).into_owned();
            match key {
                "root" => facts.root_dir = value,
                "pid" => facts.os_pid = value.parse().ok(),
                "hostname" => facts.hostname = value,
                "cwd" => facts.cwd = value,
                "app" => facts.apps.push(value),
                _ => {
                    if let Some(var) = key.strip_prefix("env_") {
                        facts.env.insert(var.to_string(), value);
                    }
                }
            }
        }
        Ok(facts)
    }

    fn runs(&self, app: &str) -> bool {
        self.apps.iter().any(|a| a == app)
    }

    /// Where the node's release may keep `etc/vm.args`: the directories the product's scripts
    /// name, its working directory, and its root, each once.
    pub fn release_root_candidates(&self) -> Vec<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        let etc_parent = self
            .env
            .get("RUNNER_ETC_DIR")
            .and_then(|etc| Path::new(etc).parent().map(Path::to_path_buf));
        let named = ["RUNNER_BASE_DIR", "RELEASE_ROOT"]
            .iter()
            .filter_map(|var| self.env.get(*var).map(PathBuf::from));
        for dir in etc_parent
            .into_iter()
            .chain(named)
            .chain([PathBuf::from(&self.cwd), PathBuf::from(&self.root_dir)])
        {
            if dir.is_absolute() && !candidates.contains(&dir) {
                candidates.push(dir);
            }
        }
        candidates
    }

    /// Whether the node keeps Mnesia tables (its product then has a `ready` check worth waiting for).
    pub fn runs_mnesia(&self) -> bool {
        self.runs("mnesia")
    }

    /// The product, from what runs in the node, then from its args files; with the reason.
    pub fn detect_flavor(&self) -> Option<(Flavor, String)> {
        for (app, flavor) in [
            ("mongooseim", Flavor::MongooseIm),
            ("ejabberd", Flavor::Ejabberd),
            ("rabbit", Flavor::RabbitMq),
        ] {
            if self.runs(app) {
                return Some((flavor, format!("the node runs the `{app}` application")));
            }
        }
        // `mix release` scripts export RELEASE_ROOT and RELEASE_VSN to the VM (a relx release's
        // vm.args is found the same way, so this comes first).
        if self.runs("elixir")
            && self.env.contains_key("RELEASE_ROOT")
            && self.env.contains_key("RELEASE_VSN")
        {
            return Some((
                Flavor::Elixir,
                "the node runs the `elixir` application from a release (RELEASE_ROOT, RELEASE_VSN): a mix release".to_string(),
            ));
        }
        if let Some((etc, _)) = &self.etc_dir {
            return Some((
                Flavor::MongooseIm,
                format!(
                    "{} holds the node's vm.args and a vm.dist.args (MongooseIM's layout)",
                    etc.display()
                ),
            ));
        }
        self.relx_vm_args.as_ref().map(|vm_args| {
            (
                Flavor::Relx,
                format!(
                    "the node runs a relx release ({}) without a vm.dist.args",
                    vm_args.display()
                ),
            )
        })
    }
}

fn first_word(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or("")
}

/// The peers in a `nodes <node> <peer>...` reply: the node itself first, then its visible peers.
pub fn parse_nodes(reply: &str) -> Result<Vec<String>, String> {
    let mut words = reply.split_whitespace();
    match words.next() {
        Some("nodes") => Ok(words.map(str::to_string).collect()),
        Some("down") => Err(words.collect::<Vec<_>>().join(" ")),
        _ => Err(format!("unexpected reply `{}`", first_word(reply))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        hex::encode_upper(s)
    }

    #[test]
    fn parses_facts_and_tells_the_products_apart() {
        let reply = format!(
            "facts root={} pid={} hostname={} cwd={} app={} app={} env_HOME={} env_RUNNER_ETC_DIR={}",
            hex("/usr/lib/erlang"),
            hex("4242"),
            hex("db1"),
            hex("/opt/mim/mim1"),
            hex("kernel"),
            hex("mnesia"),
            hex("/home/mim"),
            hex("/opt/mim/etc"),
        );
        let facts = NodeFacts::parse("mim1@db1", &reply).unwrap();
        assert_eq!(facts.os_pid, Some(4242));
        assert_eq!(facts.hostname, "db1");
        assert!(facts.runs_mnesia());
        assert_eq!(
            facts.release_root_candidates(),
            [
                PathBuf::from("/opt/mim"),
                "/opt/mim/mim1".into(),
                "/usr/lib/erlang".into()
            ]
        );
        assert_eq!(facts.env["HOME"], "/home/mim");
        assert_eq!(facts.detect_flavor(), None, "nothing found on its host yet");
        let mut mim = facts.clone();
        mim.etc_dir = Some(("/opt/mim/etc".into(), "found".into()));
        assert_eq!(mim.detect_flavor().unwrap().0, Flavor::MongooseIm);

        let mut rabbit = mim.clone();
        rabbit.apps.push("rabbit".into());
        assert_eq!(rabbit.detect_flavor().unwrap().0, Flavor::RabbitMq);
        let ejabberd = NodeFacts {
            apps: vec!["ejabberd".into()],
            ..NodeFacts::default()
        };
        assert_eq!(ejabberd.detect_flavor().unwrap().0, Flavor::Ejabberd);
        let relx = NodeFacts {
            relx_vm_args: Some("/opt/app/releases/1/vm.args".into()),
            ..NodeFacts::default()
        };
        assert_eq!(relx.detect_flavor().unwrap().0, Flavor::Relx);
        let mut mix = relx.clone();
        mix.apps.push("elixir".into());
        mix.env.insert("RELEASE_ROOT".into(), "/opt/app".into());
        mix.env.insert("RELEASE_VSN".into(), "0.1.0".into());
        assert_eq!(mix.detect_flavor().unwrap().0, Flavor::Elixir);
        assert_eq!(NodeFacts::default().detect_flavor(), None);
        assert!(NodeFacts::parse("a@b", "down nodedown").is_err());
        assert!(NodeFacts::parse("a@b", "facts root=XYZ").is_err());
    }

    #[test]
    fn parses_node_lists() {
        assert_eq!(
            parse_nodes("nodes a@h b@h").unwrap(),
            vec!["a@h".to_string(), "b@h".to_string()]
        );
        assert_eq!(parse_nodes("down nodedown").unwrap_err(), "nodedown");
    }
}
