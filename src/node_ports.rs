//! Where a node's distribution is found, as its own files say: the epmd it registers with, a
//! fixed distribution port that skips epmd, and a pinned listen range. Pure: texts in, settings
//! out. The probes are started with these (so they find the node as its ctl does), and a node
//! reported down is described with them.
//!
//! How OTP and the products read them (docs/plan-format.md `env`):
//! - erlexec turns the `ERL_EPMD_PORT` environment variable into `-epmd_port P`, placed before
//!   every other argument; `erl_epmd` uses the first `-epmd_port`. So the environment wins over
//!   `-epmd_port` in an args file, and in args files the first one read wins.
//! - `-erl_epmd_port P`: the node listens on P and dials every node at P, without epmd.
//!   ejabberdctl maps its `ERL_DIST_PORT` to `-erl_epmd_port P -start_epmd false` (OTP 25's erl
//!   itself ignores `ERL_DIST_PORT`). Given twice, erl_epmd ignores it.
//! - `-kernel inet_dist_listen_min/max` pin the listen port (ejabberdctl: `FIREWALL_WINDOW`;
//!   RabbitMQ: `DIST_PORT`, the server's only listen port).
//! - ejabberdctl sources ejabberdctl.cfg: `ERL_EPMD_PORT` reaches erl only when the file exports
//!   it. rabbitmq-env sources rabbitmq-env.conf and exports `ERL_EPMD_PORT` when it is set; its
//!   ctl gets `CTL_ERL_ARGS`. relx's script passes only a few vm.args lines to its ctl, never
//!   `-epmd_port`: for relx only the plan's `env` counts.

use crate::argsfile::{self, Flag};
use crate::flavor::{Flavor, FlavorError, shellenv};

/// A setting and where it was read, for messages (`ejabberdctl.cfg ERL_EPMD_PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: String,
}

/// What a node's files say about how it is found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePorts {
    /// The port of the epmd the node registers with (and its ctl asks).
    pub epmd_port: Option<Setting<u16>>,
    /// A fixed distribution port without epmd (`-erl_epmd_port`, ejabberd's `ERL_DIST_PORT`).
    pub dist_port: Option<Setting<u16>>,
    /// The listen range the node is pinned to (`inet_dist_listen_min`..`max`).
    pub listen: Option<Setting<(u16, u16)>>,
}

impl NodePorts {
    /// Keeps what `self` has and takes the rest from `later` (a file read after this one).
    fn or(self, later: NodePorts) -> NodePorts {
        NodePorts {
            epmd_port: self.epmd_port.or(later.epmd_port),
            dist_port: self.dist_port.or(later.dist_port),
            listen: self.listen.or(later.listen),
        }
    }

    /// The plan's `env` wins: what it sets is not taken from the files.
    pub fn without_plan_env(mut self, env: &[(String, String)]) -> NodePorts {
        let sets = |name: &str| env.iter().any(|(key, _)| key == name);
        if sets("ERL_EPMD_PORT") {
            self.epmd_port = None;
        }
        if sets("ERL_DIST_PORT") {
            self.dist_port = None;
        }
        self
    }

    /// The args-file line that points a VM at the node's own epmd, if its files name one.
    pub fn epmd_flag(&self) -> String {
        self.epmd_port
            .as_ref()
            .map(|port| format!("-epmd_port {}\n", port.value))
            .unwrap_or_default()
    }

    /// Args-file lines that make a probe VM find the node as its ctl does, to put before the
    /// probe's other flags (`rest`); the plan's `ERL_EPMD_PORT`, if any, still comes first
    /// (erlexec puts it before all arguments). No `-erl_epmd_port` when `rest` has one:
    /// erl_epmd ignores the setting when it is given twice.
    pub fn probe_flags(&self, rest: &str) -> String {
        let mut flags = self.epmd_flag();
        if let Some(port) = &self.dist_port
            && from_args(rest, "").dist_port.is_none()
        {
            flags.push_str(&format!("-erl_epmd_port {}\n", port.value));
        }
        flags
    }

    /// The pinned listen port(s), for a node reported down: `25672 (rabbitmq-env.conf DIST_PORT)`.
    pub fn describe_listen(&self) -> Option<String> {
        if let Some(port) = &self.dist_port {
            return Some(format!("{} ({}, no epmd)", port.value, port.source));
        }
        self.listen.as_ref().map(|range| {
            let (min, max) = range.value;
            let ports = if min == max {
                min.to_string()
            } else {
                format!("{min}-{max}")
            };
            format!("{ports} ({})", range.source)
        })
    }
}

/// The MongooseIM layout: vm.args, then vm.dist.args (the node reads both, in that order).
pub fn from_args_files(files: &[(&str, &str)]) -> NodePorts {
    files
        .iter()
        .map(|(label, text)| from_args(text, label))
        .fold(NodePorts::default(), NodePorts::or)
}

/// The settings in an args text (`-epmd_port`, `-erl_epmd_port`, `-kernel inet_dist_listen_*`);
/// the first of each wins, as in `init:get_argument/1`'s first value.
pub fn from_args(text: &str, label: &str) -> NodePorts {
    let flags = argsfile::parse_flags(text);
    let first_port = |name: &str| {
        flags
            .iter()
            .filter(|flag| flag.name.text == name)
            .find_map(|flag| port_of(flag.values.first().map(|t| t.text.as_str())))
            .map(|value| Setting {
                value,
                source: format!("{label} {name}"),
            })
    };
    let kernel = |key: &str| kernel_port(&flags, key);
    let listen = match (
        kernel("inet_dist_listen_min"),
        kernel("inet_dist_listen_max"),
    ) {
        (Some(min), max) => Some(Setting {
            value: (min, max.unwrap_or(min)),
            source: format!("{label} -kernel inet_dist_listen_min"),
        }),
        _ => None,
    };
    NodePorts {
        epmd_port: first_port("-epmd_port"),
        dist_port: first_port("-erl_epmd_port"),
        listen,
    }
}

/// `-kernel K V` (one flag may carry several pairs), the first value of `key`.
fn kernel_port(flags: &[Flag], key: &str) -> Option<u16> {
    flags
        .iter()
        .filter(|flag| flag.name.text == "-kernel")
        .flat_map(|flag| flag.values.chunks(2))
        .find(|pair| pair.first().is_some_and(|k| k.text == key))
        .and_then(|pair| port_of(pair.get(1).map(|v| v.text.as_str())))
}

fn port_of(text: Option<&str>) -> Option<u16> {
    text?.trim().parse().ok().filter(|port| *port > 0)
}

/// A flavor's flags file (ejabberdctl.cfg, rabbitmq-env.conf); relx: nothing (see the module
/// docs). What the plan's `env` sets is not read. An epmd or distribution port distls cannot read
/// literally is an error naming the file and line; the listen range is only shown, so a value it
/// cannot read is left out.
pub fn from_flavor_file(
    flavor: Flavor,
    text: &str,
    plan_env: &[(String, String)],
) -> Result<NodePorts, FlavorError> {
    let file = ShellFile {
        text,
        label: flavor.file_label(),
        plan_env,
    };
    let ports = match flavor {
        Flavor::Ejabberd => ejabberd(&file)?,
        Flavor::RabbitMq => rabbitmq(&file)?,
        Flavor::Elixir => elixir(&file)?,
        Flavor::Relx | Flavor::MongooseIm => NodePorts::default(),
    };
    Ok(ports.without_plan_env(plan_env))
}

/// ejabberdctl.cfg: the exported ERL_EPMD_PORT comes first (erlexec); ERL_OPTIONS comes before
/// the flags ejabberdctl makes of ERL_DIST_PORT and FIREWALL_WINDOW.
fn ejabberd(file: &ShellFile) -> Result<NodePorts, FlavorError> {
    let epmd_port = file
        .port("ERL_EPMD_PORT")?
        .filter(|_| exports(file.text, "ERL_EPMD_PORT"));
    let listen = file.lenient("FIREWALL_WINDOW").and_then(|window| {
        let (min, max) = window.value.split_once('-')?;
        Some(Setting {
            value: (port_of(Some(min))?, port_of(Some(max))?),
            source: window.source,
        })
    });
    let options = file.args_in("ERL_OPTIONS");
    Ok(NodePorts {
        epmd_port: epmd_port.or(options.epmd_port),
        dist_port: options.dist_port.or(file.port("ERL_DIST_PORT")?),
        listen: options.listen.or(listen),
    })
}

/// rabbitmq-env.conf: rabbitmq-env exports ERL_EPMD_PORT whenever it is set; the ctl gets
/// CTL_ERL_ARGS; DIST_PORT is the server's one listen port.
fn rabbitmq(file: &ShellFile) -> Result<NodePorts, FlavorError> {
    let listen_port = |name| file.port(name).ok().flatten();
    let dist = listen_port("RABBITMQ_DIST_PORT").or_else(|| listen_port("DIST_PORT"));
    Ok(NodePorts {
        epmd_port: file.port("ERL_EPMD_PORT")?,
        dist_port: None,
        listen: dist.map(|d| Setting {
            value: (d.value, d.value),
            source: d.source,
        }),
    }
    .or(file.args_in("CTL_ERL_ARGS")))
}

/// An Elixir release's env.sh: sourced by the release script, so an exported ERL_EPMD_PORT
/// reaches every VM it starts, as do the flags in ELIXIR_ERL_OPTIONS.
fn elixir(file: &ShellFile) -> Result<NodePorts, FlavorError> {
    let epmd_port = file
        .port("ERL_EPMD_PORT")?
        .filter(|_| exports(file.text, "ERL_EPMD_PORT"));
    Ok(NodePorts {
        epmd_port,
        dist_port: None,
        listen: None,
    }
    .or(file.args_in(crate::flavor::elixir::VAR)))
}

/// A shell-sourced flags file, read variable by variable.
struct ShellFile<'a> {
    text: &'a str,
    label: &'static str,
    plan_env: &'a [(String, String)],
}

impl ShellFile<'_> {
    fn var(&self, name: &str) -> Result<Option<Setting<String>>, FlavorError> {
        Ok(
            shellenv::plain_value(self.text, name)?.map(|(value, line)| Setting {
                value,
                source: format!("{}:{line} {name}", self.label),
            }),
        )
    }

    /// A value only shown in messages: one distls cannot read literally is left out.
    fn lenient(&self, name: &str) -> Option<Setting<String>> {
        self.var(name).ok().flatten()
    }

    /// The settings in an args-like variable (ERL_OPTIONS, CTL_ERL_ARGS).
    fn args_in(&self, name: &str) -> NodePorts {
        self.lenient(name)
            .map(|flags| from_args(&flags.value, &format!("{} {name}", self.label)))
            .unwrap_or_default()
    }

    /// A port variable; not read at all when the plan's `env` sets it.
    fn port(&self, name: &str) -> Result<Option<Setting<u16>>, FlavorError> {
        if self.plan_env.iter().any(|(key, _)| key == name) {
            return Ok(None);
        }
        let Some((value, line)) = shellenv::plain_value(self.text, name)? else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        match port_of(Some(&value)) {
            Some(port) => Ok(Some(Setting {
                value: port,
                source: format!("{}:{line} {name}", self.label),
            })),
            None => Err(FlavorError::at(
                line,
                1,
                format!(
                    "{name} is `{value}`, not a port number (distls reads it to find the node's epmd)"
                ),
                format!(
                    "set {name} to a port number (1-65535), or set it in the plan's `env`, which wins"
                ),
            )),
        }
    }
}

/// Whether the shell file exports `var` (`export VAR=…`, or `export … VAR …` on its own line).
fn exports(text: &str, var: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        words.next() == Some("export") && words.any(|word| word.split('=').next() == Some(var))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejabberd_reads_an_exported_epmd_port_and_its_dist_settings() {
        let cfg =
            "export ERL_EPMD_PORT=4371\nERLANG_NODE=ejabberd1@vm\nFIREWALL_WINDOW=4200-4210\n";
        let ports = from_flavor_file(Flavor::Ejabberd, cfg, &[]).unwrap();
        assert_eq!(ports.epmd_port.as_ref().unwrap().value, 4371);
        assert_eq!(
            ports.epmd_port.as_ref().unwrap().source,
            "ejabberdctl.cfg:1 ERL_EPMD_PORT"
        );
        assert_eq!(ports.probe_flags(""), "-epmd_port 4371\n");
        assert_eq!(
            ports.describe_listen().unwrap(),
            "4200-4210 (ejabberdctl.cfg:3 FIREWALL_WINDOW)"
        );
        // Not exported: ejabberdctl does not pass it to erl.
        let quiet = from_flavor_file(Flavor::Ejabberd, "ERL_EPMD_PORT=4371\n", &[]).unwrap();
        assert_eq!(quiet.epmd_port, None);
        let later = from_flavor_file(
            Flavor::Ejabberd,
            "ERL_EPMD_PORT=4371\nexport ERL_EPMD_PORT\n",
            &[],
        )
        .unwrap();
        assert_eq!(later.epmd_port.unwrap().value, 4371);
        // ERL_DIST_PORT: no epmd, the probe dials that port.
        let fixed = from_flavor_file(Flavor::Ejabberd, "ERL_DIST_PORT=5210\n", &[]).unwrap();
        assert_eq!(fixed.probe_flags(""), "-erl_epmd_port 5210\n");
        assert_eq!(
            fixed.probe_flags("-erl_epmd_port 5210\n"),
            "",
            "never twice"
        );
        assert!(fixed.describe_listen().unwrap().starts_with("5210 ("));
        // -epmd_port inside ERL_OPTIONS.
        let options = from_flavor_file(
            Flavor::Ejabberd,
            "ERL_OPTIONS=\"-epmd_port 4999 +K true\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(options.epmd_port.unwrap().value, 4999);
    }

    #[test]
    fn rabbitmq_reads_epmd_and_dist_port_exported_or_not() {
        let env = "ERL_EPMD_PORT=4372\nNODENAME=rabbit1@vm\nDIST_PORT=25701\n";
        let ports = from_flavor_file(Flavor::RabbitMq, env, &[]).unwrap();
        assert_eq!(ports.epmd_port.unwrap().value, 4372);
        assert_eq!(ports.listen.unwrap().value, (25701, 25701));
        let bad = from_flavor_file(Flavor::RabbitMq, "ERL_EPMD_PORT=epmd\n", &[]).unwrap_err();
        assert_eq!(bad.line, 1, "{bad:?}");
        assert!(bad.message.contains("ERL_EPMD_PORT is `epmd`"), "{bad:?}");
        let expanded = "ERL_EPMD_PORT=$PORT\nDIST_PORT=$D\n";
        assert!(
            from_flavor_file(Flavor::RabbitMq, expanded, &[]).is_err(),
            "shell expansion is refused, located"
        );
        // The plan's env wins: the file's value is not even read, so it cannot fail.
        let env = vec![("ERL_EPMD_PORT".to_string(), "4372".to_string())];
        assert_eq!(
            from_flavor_file(Flavor::RabbitMq, expanded, &env).unwrap(),
            NodePorts::default()
        );
    }

    #[test]
    fn args_files_first_value_wins_and_the_plan_env_wins_over_files() {
        let vm_args = "-sname mim1\n-setcookie c\n-epmd_port 4380\n";
        let dist = "-epmd_port 4390\n-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9105\n";
        let ports = from_args_files(&[("vm.args", vm_args), ("vm.dist.args", dist)]);
        assert_eq!(ports.epmd_port.as_ref().unwrap().value, 4380);
        assert_eq!(
            ports.epmd_port.as_ref().unwrap().source,
            "vm.args -epmd_port"
        );
        assert_eq!(ports.listen.as_ref().unwrap().value, (9100, 9105));
        let env = vec![("ERL_EPMD_PORT".to_string(), "4369".to_string())];
        let ports = ports.without_plan_env(&env);
        assert_eq!(ports.epmd_port, None);
        assert_eq!(ports.probe_flags(""), "");
        assert_eq!(from_args("-epmd_port x\n", "vm.args").epmd_port, None);
        assert_eq!(
            from_flavor_file(Flavor::Relx, "-epmd_port 4380\n", &[]).unwrap(),
            NodePorts::default()
        );
    }

    #[test]
    fn elixir_env_sh_exported_epmd_port() {
        let env = "export RELEASE_NODE=a1@localhost\nexport ERL_EPMD_PORT=4381\n";
        let ports = from_flavor_file(Flavor::Elixir, env, &[]).unwrap();
        assert_eq!(ports.epmd_port.unwrap().value, 4381);
        let unexported = from_flavor_file(Flavor::Elixir, "ERL_EPMD_PORT=4381\n", &[]).unwrap();
        assert_eq!(unexported.epmd_port, None);
    }
}
