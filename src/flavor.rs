//! Product flavors: which file carries a node's distribution flags, how TLS is switched on and off
//! in it, the default commands, and where the node name and cookie come from.
//!
//! `mongooseim` is the original behaviour (vm.dist.args, edited by [`crate::argsfile`]) and is not
//! handled here. The other flavors share one shape: the flags file gets
//! `-proto_dist inet_tls -ssl_dist_optfile F` (where the product's server *and* ctl read it), and F,
//! an Erlang-terms file with the plan's certificates, is written next to the flags file. Each
//! product is a small module with two pure functions: `enable_tls(original, optfile)` and
//! `identity(text, ...)`.

pub mod ejabberd;
pub mod elixir;
pub mod rabbitmq;
pub mod relx;
pub mod shellenv;

use crate::argsfile::{NameFlag, TlsPaths};
use crate::shell::shell_quote;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The comment above every line distls adds to a flavor's flags file (after the file's own
/// comment sign).
pub(crate) const ADDED_MARK: &str =
    "added by distls (TLS distribution); `distls rollback` restores the original file";

/// The optfile distls writes next to a flavor's flags file.
pub const OPTFILE_NAME: &str = "distls-ssl_dist.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Flavor {
    #[default]
    MongooseIm,
    Ejabberd,
    RabbitMq,
    Relx,
    Elixir,
}

impl Flavor {
    pub const NAMES: [&'static str; 5] = ["mongooseim", "ejabberd", "rabbitmq", "relx", "elixir"];

    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::MongooseIm => "mongooseim",
            Flavor::Ejabberd => "ejabberd",
            Flavor::RabbitMq => "rabbitmq",
            Flavor::Relx => "relx",
            Flavor::Elixir => "elixir",
        }
    }

    /// What the operator calls the file distls edits.
    pub fn file_label(self) -> &'static str {
        match self {
            Flavor::MongooseIm => "vm.dist.args",
            Flavor::Ejabberd => "ejabberdctl.cfg",
            Flavor::RabbitMq => "rabbitmq-env.conf",
            Flavor::Relx => "vm.args",
            Flavor::Elixir => "env.sh",
        }
    }

    /// The flags file when the plan names none (`flags_file`).
    pub fn default_flags_file(self) -> Option<&'static str> {
        match self {
            Flavor::Ejabberd => Some("/etc/ejabberd/ejabberdctl.cfg"),
            Flavor::RabbitMq => Some("/etc/rabbitmq/rabbitmq-env.conf"),
            Flavor::MongooseIm | Flavor::Relx | Flavor::Elixir => None,
        }
    }

    /// The cookie file when the plan names none (`cookie_file`): the service user's HOME.
    pub fn default_cookie_file(self) -> Option<&'static str> {
        match self {
            Flavor::Ejabberd => Some("/var/lib/ejabberd/.erlang.cookie"),
            Flavor::RabbitMq => Some("/var/lib/rabbitmq/.erlang.cookie"),
            Flavor::MongooseIm | Flavor::Relx | Flavor::Elixir => None,
        }
    }

    /// The product's own commands for a node whose flags file is `flags_file` (as written in the
    /// plan, not resolved: ejabberdctl finds its siblings through it). `None` for flavors whose
    /// commands the plan must give.
    pub fn default_commands(self, flags_file: &Path) -> Option<DefaultCommands> {
        let file = shell_quote(&flags_file.display().to_string());
        match self {
            Flavor::Ejabberd => {
                let dir = flags_file.parent().unwrap_or(Path::new("/"));
                let ctl = format!(
                    "ejabberdctl --config-dir {} --ctl-config {file}",
                    shell_quote(&dir.display().to_string())
                );
                Some(DefaultCommands {
                    // `stopped` waits until the name has left epmd, so the next start is not refused.
                    stop: format!("{ctl} stop && {ctl} stopped"),
                    start: format!("{ctl} start"),
                    // rc 0: started, rc 1: the VM answers but ejabberd is still starting (e.g. waiting
                    // for Mnesia tables held by plain nodes); rc 3: unreachable.
                    ping: format!("{ctl} status >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 1 ]"),
                    ready: format!("{ctl} started"),
                    // ejabberd has no drain or quorum check of its own (docs/hooks.md).
                    before_stop: None,
                    after_start: None,
                })
            }
            Flavor::RabbitMq => {
                let ctl = format!("RABBITMQ_CONF_ENV_FILE={file} rabbitmqctl");
                Some(DefaultCommands {
                    // `shutdown` returns once the runtime has exited.
                    stop: format!("{ctl} shutdown"),
                    start: format!(
                        "RABBITMQ_CONF_ENV_FILE={file} setsid nohup rabbitmq-server >/dev/null 2>&1 </dev/null &"
                    ),
                    ping: format!("{ctl} ping"),
                    ready: format!("{ctl} await_startup"),
                    // What the RabbitMQ Kubernetes operator does before it stops a pod: wait
                    // until losing this node keeps every quorum queue and stream available, then
                    // move its clients and queue leaders away (maintenance mode; the restart
                    // ends it). Both are retried together until they pass.
                    before_stop: Some(format!(
                        "RABBITMQ_CONF_ENV_FILE={file} rabbitmq-upgrade await_online_quorum_plus_one -t 10 && RABBITMQ_CONF_ENV_FILE={file} rabbitmq-upgrade drain"
                    )),
                    // Out of maintenance mode for certain (a no-op on a node that is not in it).
                    after_start: Some(format!(
                        "RABBITMQ_CONF_ENV_FILE={file} rabbitmq-upgrade revive"
                    )),
                })
            }
            Flavor::Elixir => Some(elixir_commands(flags_file)),
            Flavor::MongooseIm | Flavor::Relx => None,
        }
    }

    /// Whether distls may stop the VM itself (init:stop, then halt) when the stop command fails
    /// and the node still runs: an ejabberd node that is still booting (waiting for Mnesia tables
    /// held by plain nodes, e.g. during a rollback) has no ctl commands yet, so `ejabberdctl stop`
    /// answers "unknown command".
    pub fn stops_booting_vm(self) -> bool {
        matches!(self, Flavor::Ejabberd | Flavor::RabbitMq)
    }

    /// How long the product waits for its Mnesia tables when it starts while peers holding them
    /// are unreachable, and what happens then.
    pub fn table_wait(self) -> Option<TableWait> {
        match self {
            // mnesia_table_loading_retry_limit 10 × mnesia_table_loading_retry_timeout 30 s.
            Flavor::RabbitMq => Some(TableWait {
                limit: Duration::from_secs(300),
                then: "the VM exits (timeout_waiting_for_tables)",
            }),
            // ejabberd_mnesia waits forever; MongooseIM as well.
            _ => None,
        }
    }
}

impl FromStr for Flavor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mongooseim" => Ok(Flavor::MongooseIm),
            "ejabberd" => Ok(Flavor::Ejabberd),
            "rabbitmq" => Ok(Flavor::RabbitMq),
            "relx" => Ok(Flavor::Relx),
            "elixir" => Ok(Flavor::Elixir),
            other => Err(format!(
                "\"{other}\" is not a flavor; expected one of: {}",
                Flavor::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The release script's own commands (docs/flavor-elixir.md). `pid` answers only while the
/// node is up, so it is the ping; `stop` returns before the VM exits, so it waits for `pid` to
/// fail (distls's stop timeout bounds the wait).
fn elixir_commands(env_sh: &Path) -> DefaultCommands {
    let script = elixir::release_script(env_sh);
    let ping = format!("{script} pid >/dev/null");
    DefaultCommands {
        stop: format!("{script} stop >/dev/null && while {ping} 2>&1; do sleep 0.2; done"),
        start: format!("{script} daemon"),
        ready: ping.clone(),
        ping,
        before_stop: None,
        after_start: None,
    }
}

pub struct DefaultCommands {
    pub stop: String,
    pub start: String,
    pub ping: String,
    pub ready: String,
    /// The product's own gate before a stop, if it has one (docs/hooks.md says why not for the
    /// others).
    pub before_stop: Option<String>,
    /// And after a start.
    pub after_start: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct TableWait {
    pub limit: Duration,
    pub then: &'static str,
}

/// A problem in a flavor's flags file, located in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorError {
    /// 1-based; 0 when it concerns the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

impl FlavorError {
    pub fn at(
        line: usize,
        column: usize,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        FlavorError {
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn whole(message: impl Into<String>, hint: impl Into<String>) -> Self {
        FlavorError::at(0, 0, message, hint)
    }
}

/// The node identity a flavor reads from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorIdentity {
    pub node_name: String,
    pub name_flag: NameFlag,
}

/// Where the optfile of a node whose flags file is `flags_file` lives.
pub fn optfile_path(flags_file: &Path) -> PathBuf {
    flags_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(OPTFILE_NAME)
}

/// The flags a flavor puts where its server and ctl read them.
pub fn tls_flags(optfile: &Path) -> Result<String, FlavorError> {
    let path = optfile_word(optfile)?;
    Ok(format!("-proto_dist inet_tls -ssl_dist_optfile {path}"))
}

/// The flags of a zero-split hybrid stage (docs/zero-split.md): the hybrid module from
/// `module_dir` with its argument `mode` (`dial tcp`, `dial tls` or `tls_peers N...`), with the
/// same optfile as the TLS stage (the module's TLS side uses it).
pub fn hybrid_flags(module_dir: &Path, mode: &str, optfile: &Path) -> Result<String, FlavorError> {
    let dir = module_dir.display().to_string();
    check_plain_word(&dir)?;
    let path = optfile_word(optfile)?;
    Ok(format!(
        "-pa {dir} -proto_dist {} -{} {mode} -ssl_dist_optfile {path}",
        crate::stage::PROTO_DIST,
        crate::stage::PROTO_DIST
    ))
}

/// The optfile path as the one plain word the flags carry.
pub fn optfile_word(optfile: &Path) -> Result<String, FlavorError> {
    let path = optfile.display().to_string();
    check_plain_word(&path)?;
    Ok(path)
}

/// The optfile path travels through shell variables and erl's own word splitting unquoted: it
/// must be one plain word.
fn check_plain_word(path: &str) -> Result<(), FlavorError> {
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@,:=%".contains(*c)))
    {
        return Err(FlavorError::whole(
            format!(
                "the optfile path {path} contains {bad:?}, which the product's scripts would split or expand"
            ),
            "move the flags file to a directory whose path has only letters, digits and / . _ - + @ , : = %",
        ));
    }
    Ok(())
}

/// The `-ssl_dist_optfile` text: both sides verify the peer, the server requires a client
/// certificate, renegotiation only the secure way.
pub fn optfile_text(paths: &TlsPaths) -> String {
    let q = |p: &str| format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""));
    let files = format!(
        "{{certfile, {}}},\n    {{keyfile, {}}},\n    {{cacertfile, {}}},\n    {{verify, verify_peer}},\n    {{secure_renegotiate, true}}",
        q(&paths.certfile),
        q(&paths.keyfile),
        q(&paths.cacertfile)
    );
    format!(
        "%% Written by distls: TLS options for Erlang distribution (-ssl_dist_optfile).\n\
         %% `distls rollback` removes this file.\n\
         [{{server, [\n    {files},\n    {{fail_if_no_peer_cert, true}}]}},\n \
         {{client, [\n    {files}]}}].\n"
    )
}

/// Append `addition` (whole lines) to `text`, starting on a fresh line.
pub(crate) fn append_lines(text: &str, addition: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(addition);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optfile_has_both_sides_and_server_only_peer_cert() {
        let text = optfile_text(&TlsPaths {
            certfile: "/t/node.pem".into(),
            keyfile: "/t/node.key".into(),
            cacertfile: "/t/ca \"x\".pem".into(),
        });
        assert!(text.contains("{server, ["));
        assert!(text.contains("{client, ["));
        assert_eq!(text.matches("{verify, verify_peer}").count(), 2);
        assert_eq!(text.matches("{secure_renegotiate, true}").count(), 2);
        assert_eq!(text.matches("fail_if_no_peer_cert").count(), 1);
        let client = &text[text.find("{client").unwrap()..];
        assert!(!client.contains("fail_if_no_peer_cert"));
        assert!(text.contains(r#""/t/ca \"x\".pem""#));
    }

    #[test]
    fn flags_refuse_paths_the_scripts_would_split() {
        assert_eq!(
            tls_flags(Path::new("/etc/ejabberd/distls-ssl_dist.conf")).unwrap(),
            "-proto_dist inet_tls -ssl_dist_optfile /etc/ejabberd/distls-ssl_dist.conf"
        );
        assert!(tls_flags(Path::new("/etc/my ejabberd/x.conf")).is_err());
        assert!(tls_flags(Path::new("/etc/$HOME/x.conf")).is_err());
    }

    #[test]
    fn hybrid_flags_load_the_module_and_keep_the_optfile() {
        assert_eq!(
            hybrid_flags(
                Path::new("/e/distls-hybrid"),
                "dial tcp",
                Path::new("/e/o.conf")
            )
            .unwrap(),
            "-pa /e/distls-hybrid -proto_dist distls_hybrid -distls_hybrid dial tcp -ssl_dist_optfile /e/o.conf"
        );
        assert!(
            hybrid_flags(
                Path::new("/a b/distls-hybrid"),
                "dial tls",
                Path::new("/e/o.conf")
            )
            .is_err()
        );
    }

    #[test]
    fn flavors_parse_and_print() {
        for name in Flavor::NAMES {
            assert_eq!(name.parse::<Flavor>().unwrap().as_str(), name);
        }
        assert!("rabbit".parse::<Flavor>().is_err());
        assert_eq!(Flavor::default(), Flavor::MongooseIm);
    }
}
