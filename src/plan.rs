//! The plan file (format v1): which nodes of a cluster to move to TLS distribution,
//! where each node's `vm.args` / `vm.dist.args` live, how to stop and start it, and which
//! TLS files it uses.
//!
//! Loading never touches the files the plan refers to, so a plan can be validated on any
//! machine; [`Plan::check_local_files`] is the separate step that looks at them.
//!
//! Every error is a [`PlanError`] that names the plan file, line and column, shows the
//! offending line and says how to fix it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, Location, MessageFormatter, Spanned, UserMessageFormatter};
use sha2::{Digest, Sha256};

pub use crate::batch::Batch;
use crate::batch::{BATCH_HINT, BadBatch};
use crate::flavor::Flavor;
use crate::spelling::edit_distance;
use crate::ssh::SshSpec;

mod error;
mod fill_in;
mod raw;
mod resolve;

pub use error::PlanError;
use error::*;
pub use fill_in::FILL_IN_MARK;
use raw::*;
/// A path template given outside the plan, expanded for one node (`{name}`, `{sname}`, `{host}`).
pub use resolve::expand_for_node;
use resolve::*;

/// The plan format this distls reads.
pub const PLAN_FORMAT_VERSION: u64 = 1;

const PLACEHOLDERS: [&str; 3] = ["name", "sname", "host"];
const PLACEHOLDERS_HINT: &str = "the placeholders are {name} (the full node name), {sname} (the part before @) and {host} (the part after @)";
const SYNTAX_HINT: &str = "fix the YAML syntax here: check the indentation, and quote values that start with @, `, %, !, & or *";
const DURATION_HINT: &str = "write a number with a unit, e.g. 90s, 2m or 1m30s";

// ---------------------------------------------------------------------------------------
// The loaded plan
// ---------------------------------------------------------------------------------------

/// A validated plan: every node fully resolved (defaults merged, placeholders expanded,
/// relative paths resolved against the plan file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub path: PathBuf,
    pub source: String,
    /// Hex SHA-256 of the plan file's bytes, to tie a migration journal to the exact plan.
    pub sha256: String,
    pub cluster: String,
    pub on_failure: OnFailure,
    /// `batch:`: how many nodes a roll may restart at once (`migrate --batch` overrides it).
    pub batch: Batch,
    pub nodes: Vec<NodeSpec>,
}

/// What to do when a node fails to come back on TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    #[default]
    Rollback,
    Pause,
}

impl OnFailure {
    pub const NAMES: [&'static str; 2] = ["rollback", "pause"];

    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
        }
    }
}

impl FromStr for OnFailure {
    /// A plain message, so the type plugs into clap's `value_parser!` through `FromStr`.
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rollback" => Ok(OnFailure::Rollback),
            "pause" => Ok(OnFailure::Pause),
            other => Err(format!(
                "\"{other}\" is not a failure policy; expected one of: {}",
                OnFailure::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How distls reaches a node to edit its files and run its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Local,
    Ssh,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub cacertfile: PathBuf,
}

/// Shell command lines, placeholders expanded, otherwise exactly as written in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub start: String,
    pub stop: String,
    pub ping: Option<String>,
    /// After the last node: must exit 0 once the node's application has fully started.
    pub ready: Option<String>,
    /// A gate before each stop of the node: must exit 0 (retried until `timeouts.before_stop`)
    /// before distls stops it, e.g. RabbitMQ's quorum check and drain.
    pub before_stop: Option<String>,
    /// A gate after each start on the way forward, once its ctl reaches it: must exit 0
    /// (retried until `timeouts.after_start`) before the roll goes on.
    pub after_start: Option<String>,
    /// Which gates are the flavor's defaults rather than the plan's (`before_stop`,
    /// `after_start`): those run only in a roll that keeps one mesh (docs/hooks.md).
    pub gates_from_flavor: (bool, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub stop: Duration,
    pub start: Duration,
    pub rejoin: Duration,
    pub ping: Duration,
    /// After a stop command that did not bring the node down within `stop`: how long to wait after
    /// SIGTERM to the node's OS pid before SIGKILL (and after SIGKILL before giving up).
    pub kill_grace: Duration,
    /// How long the final gate waits for `commands.ready` to succeed on every node.
    pub ready: Duration,
    /// How long `commands.before_stop` is retried until it exits 0.
    pub before_stop: Duration,
    /// How long `commands.after_start` is retried until it exits 0.
    pub after_start: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stop: Duration::from_secs(60),
            start: Duration::from_secs(60),
            rejoin: Duration::from_secs(120),
            ping: Duration::from_secs(30),
            kill_grace: Duration::from_secs(10),
            ready: Duration::from_secs(300),
            before_stop: Duration::from_secs(300),
            after_start: Duration::from_secs(300),
        }
    }
}

/// One node, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Full node name, `sname@host`.
    pub name: String,
    pub sname: String,
    pub host: String,
    pub transport: TransportKind,
    /// The product: which file carries the distribution flags and how it is edited.
    pub flavor: Flavor,
    /// Where the cookie is read from (flavors other than mongooseim and relx, which read vm.args).
    pub cookie_file: Option<PathBuf>,
    /// Set when `transport` is `ssh`.
    pub ssh: Option<SshSpec>,
    /// Prefix for commands and file edits that need the service user, e.g. `sudo -n -u mongooseim`.
    pub become_command: Option<String>,
    /// Environment for the node's commands and probe VMs (e.g. ERL_EPMD_PORT), sorted by name.
    pub env: Vec<(String, String)>,
    /// The file distls edits: vm.dist.args (mongooseim), or the flavor's flags file
    /// (ejabberdctl.cfg, rabbitmq-env.conf, relx's vm.args).
    pub vm_dist_args: PathBuf,
    /// Where the node name and cookie are read (mongooseim, relx); the flags file otherwise.
    pub vm_args: PathBuf,
    pub erl: String,
    pub commands: Commands,
    pub timeouts: Timeouts,
    pub tls: TlsPaths,
    /// Where in the plan each value came from (the node entry or `defaults`).
    pub origins: NodeOrigins,
}

/// Plan locations of the values of one node, for reporting later problems (a file that
/// cannot be edited, a command that fails) at the line that configured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOrigins {
    pub name: SourceLocation,
    pub vm_dist_args: SourceLocation,
    pub vm_args: SourceLocation,
    pub start: SourceLocation,
    pub stop: SourceLocation,
    pub ping: Option<SourceLocation>,
}

/// A position in the plan file: 1-based line and column (in characters), and how many
/// characters to underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceLocation {
    pub line: u32,
    pub column: u32,
    pub width: u32,
}

impl SourceLocation {
    pub const START: SourceLocation = SourceLocation {
        line: 1,
        column: 1,
        width: 1,
    };

    fn from_yaml(location: Location) -> Option<SourceLocation> {
        if location.line() == 0 {
            return None;
        }
        let width = u32::try_from(location.span().len())
            .unwrap_or(u32::MAX)
            .max(1);
        Some(SourceLocation {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX).max(1),
            width,
        })
    }
}

impl Plan {
    /// Reads and validates a plan file. Does not look at the files the plan refers to.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let bytes = read_bounded(path)?;
        match String::from_utf8(bytes) {
            Ok(source) => Plan::from_source(path, &source),
            Err(err) => Err(PlanError::not_utf8(path, err.as_bytes(), err.utf8_error())),
        }
    }

    /// Validates plan text as if it had been read from `path` (used for error messages and
    /// to resolve relative paths).
    pub fn from_source(path: &Path, source: &str) -> Result<Plan, PlanError> {
        let text = SourceText { path, text: source };
        let raw = parse_yaml(&text)?;
        fill_in::refuse_fill_ins(&text)?;
        let plan_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let resolved = Resolver { text, plan_dir }.resolve(raw)?;
        Ok(Plan {
            path: path.to_path_buf(),
            source: source.to_owned(),
            sha256: hex::encode(Sha256::digest(source.as_bytes())),
            cluster: resolved.cluster,
            on_failure: resolved.on_failure,
            batch: resolved.batch,
            nodes: resolved.nodes,
        })
    }

    /// Verifies, for every local node, that its `vm_dist_args` and `vm_args` are existing
    /// regular files (symlinks followed). Reports the first problem; see
    /// [`Plan::local_file_problems`] for all of them.
    pub fn check_local_files(&self) -> Result<(), PlanError> {
        match self.local_file_problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem [`Plan::check_local_files`] would report, so an operator can fix them
    /// in one go.
    pub fn local_file_problems(&self) -> Vec<PlanError> {
        let mut problems = Vec::new();
        let mut reported = Vec::new();
        for node in &self.nodes {
            // Exhaustive on purpose: a new transport must decide how its files get checked.
            match node.transport {
                TransportKind::Local => {}
                // Remote files are checked on their host, through the SSH connection.
                TransportKind::Ssh => continue,
            }
            let mut files = vec![
                (
                    "vm_dist_args",
                    "vm.dist.args",
                    &node.vm_dist_args,
                    node.origins.vm_dist_args,
                ),
                ("vm_args", "vm.args", &node.vm_args, node.origins.vm_args),
            ];
            match node.flavor {
                Flavor::MongooseIm => {}
                Flavor::Relx => files.truncate(1),
                Flavor::Ejabberd | Flavor::RabbitMq | Flavor::Elixir => files.truncate(1),
            }
            if node.flavor != Flavor::MongooseIm {
                let key = if node.flavor == Flavor::Relx {
                    "vm_args"
                } else {
                    "flags_file"
                };
                files[0].0 = key;
                files[0].1 = node.flavor.file_label();
            }
            for (key, file_name, path, origin) in files {
                let Some((problem, hint)) = local_file_problem(path, key, file_name) else {
                    continue;
                };
                // Nodes sharing one default path would otherwise repeat the same report.
                if reported.contains(&(origin, path)) {
                    continue;
                }
                reported.push((origin, path));
                let message = format!(
                    "node {}: {key} file {} {problem}",
                    node.name,
                    path.display()
                );
                problems.push(self.error_at(origin, message, hint));
            }
        }
        problems
    }

    /// Location of a node's entry (its `name` value), for reporting problems about the
    /// node as a whole.
    pub fn locate_node(&self, node_index: usize) -> Option<SourceLocation> {
        self.nodes.get(node_index).map(|node| node.origins.name)
    }

    pub fn find_node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// Builds an error pointing into this plan, e.g. at `node.origins.vm_dist_args`.
    pub fn error_at(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        SourceText {
            path: &self.path,
            text: &self.source,
        }
        .error(at, message, hint)
    }
}

/// A plan bigger than this is refused before it is parsed: real plans are a few kilobytes.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;

/// Reads at most [`MAX_PLAN_BYTES`] (+1 to notice a bigger file), so a huge or endless file
/// (a device, a FIFO fed forever) cannot exhaust memory.
fn read_bounded(path: &Path) -> Result<Vec<u8>, PlanError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| PlanError::unreadable(path, &err))?;
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| PlanError::unreadable(path, &err))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(PlanError::unlocated(
            path,
            format!(
                "the plan file is larger than {MAX_PLAN_BYTES} bytes ({} KiB); a plan is a few kilobytes",
                MAX_PLAN_BYTES / 1024
            ),
            "give the path of the plan's YAML file; if it is one, remove what does not belong in it",
        ));
    }
    Ok(bytes)
}

fn local_file_problem(path: &Path, key: &str, file_name: &str) -> Option<(String, String)> {
    // Where the file usually is (an Elixir release's env.sh is not under etc/).
    let usual = match file_name {
        "env.sh" => "for an Elixir release it is RELEASE_ROOT/releases/VSN/env.sh".to_owned(),
        _ => format!("for MongooseIM it is REL_ROOT/etc/{file_name}"),
    };
    let create_hint = format!("fix the path, or create the file; {usual}");
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some((
            "is a directory, not a regular file".to_owned(),
            format!("point {key} at the file itself; {usual}"),
        )),
        Ok(_) => Some(("is not a regular file".to_owned(), create_hint)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Some(("does not exist".to_owned(), create_hint))
        }
        Err(err) => Some((
            format!("cannot be checked: {err}"),
            "make the file and its directories accessible to the user running distls".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
version: 1
cluster: mim-prod
tls:
  certfile: /opt/mim/ssl/node_cert.pem
  keyfile: /opt/mim/ssl/node_key.pem
  cacertfile: /opt/mim/ssl/cacert.pem
defaults:
  transport: local
  vm_dist_args: /opt/mim/{sname}/etc/vm.dist.args
  vm_args: /opt/mim/{sname}/etc/vm.args
  commands:
    stop: /opt/mim/{sname}/bin/ctl stop
    start: /opt/mim/{sname}/bin/ctl start
nodes:
  - name: mim1@db1
  - name: mim2@db1
";

    /// Lines 1-13; `nodes:` written after it is line 14, its first entry line 15.
    const HEADER: &str = "\
version: 1
cluster: mim-prod
tls:
  certfile: /opt/mim/ssl/node_cert.pem
  keyfile: /opt/mim/ssl/node_key.pem
  cacertfile: /opt/mim/ssl/cacert.pem
defaults:
  transport: local
  vm_dist_args: /opt/mim/{sname}/etc/vm.dist.args
  vm_args: /opt/mim/{sname}/etc/vm.args
  commands:
    stop: /opt/mim/{sname}/bin/ctl stop
    start: /opt/mim/{sname}/bin/ctl start
";

    fn with_nodes(nodes: &str) -> String {
        format!("{HEADER}nodes:\n{nodes}")
    }

    fn load(source: &str) -> Plan {
        Plan::from_source(Path::new("plans/prod.yaml"), source)
            .unwrap_or_else(|err| panic!("plan should load:\n{err}"))
    }

    fn load_err(source: &str) -> PlanError {
        match Plan::from_source(Path::new("plans/prod.yaml"), source) {
            Ok(_) => panic!("plan should not load:\n{source}"),
            Err(err) => err,
        }
    }

    #[track_caller]
    fn assert_error(err: &PlanError, line: u32, column: u32, fragment: &str) {
        assert_eq!(
            (err.line(), err.column()),
            (Some(line), Some(column)),
            "wrong location for:\n{err}"
        );
        assert!(
            err.message().contains(fragment),
            "message lacks {fragment:?}:\n{err}"
        );
        assert!(!err.hint().is_empty(), "no hint:\n{err}");
    }

    #[test]
    fn sample_plan_loads_and_expands_sname() {
        let plan = load(SAMPLE);
        assert_eq!(plan.cluster, "mim-prod");
        assert_eq!(plan.on_failure, OnFailure::Rollback);
        assert_eq!(plan.path, Path::new("plans/prod.yaml"));
        assert_eq!(plan.sha256, hex::encode(Sha256::digest(SAMPLE.as_bytes())));
        assert_eq!(plan.nodes.len(), 2);

        let mim2 = &plan.nodes[1];
        assert_eq!(mim2.name, "mim2@db1");
        assert_eq!(mim2.sname, "mim2");
        assert_eq!(mim2.host, "db1");
        assert_eq!(mim2.transport, TransportKind::Local);
        assert_eq!(
            mim2.vm_dist_args,
            Path::new("/opt/mim/mim2/etc/vm.dist.args")
        );
        assert_eq!(mim2.vm_args, Path::new("/opt/mim/mim2/etc/vm.args"));
        assert_eq!(mim2.erl, "erl");
        assert_eq!(
            mim2.commands,
            Commands {
                start: "/opt/mim/mim2/bin/ctl start".to_owned(),
                stop: "/opt/mim/mim2/bin/ctl stop".to_owned(),
                ping: None,
                ready: None,
                before_stop: None,
                after_start: None,
                gates_from_flavor: (false, false),
            }
        );
        assert_eq!(mim2.timeouts, Timeouts::default());
        assert_eq!(mim2.timeouts.rejoin, Duration::from_secs(120));
        assert_eq!(mim2.tls.certfile, Path::new("/opt/mim/ssl/node_cert.pem"));
        assert_eq!(mim2.tls.keyfile, Path::new("/opt/mim/ssl/node_key.pem"));
        assert_eq!(mim2.tls.cacertfile, Path::new("/opt/mim/ssl/cacert.pem"));
        assert_eq!(mim2.origins.name.line, 16);
        assert_eq!(mim2.origins.vm_dist_args.line, 9);
        assert_eq!(
            plan.locate_node(0).map(|at| (at.line, at.column)),
            Some((15, 11))
        );
        assert_eq!(plan.locate_node(2), None);
        assert_eq!(
            plan.find_node("mim1@db1").map(|n| n.sname.as_str()),
            Some("mim1")
        );
    }

    #[test]
    fn batch_parses_from_the_plan_and_is_located_when_wrong() {
        assert_eq!(load(SAMPLE).batch, Batch::One);
        assert_eq!(load(&format!("{SAMPLE}batch: 3\n")).batch, Batch::Nodes(3));
        assert_eq!(
            load(&format!("{SAMPLE}batch: \"25%\"\n")).batch,
            Batch::Percent(25)
        );
        assert_eq!(
            load(&format!("{SAMPLE}batch: 25%\n")).batch,
            Batch::Percent(25)
        );
        let err = load_err(&format!("{SAMPLE}batch: 0\n"));
        assert_error(&err, 17, 8, "batch \"0\" is zero");
        assert!(err.hint().contains("e.g. 30%"), "{}", err.hint());
    }

    #[test]
    fn on_failure_parses_from_plan_and_from_cli_text() {
        let plan = load(&format!("{SAMPLE}on_failure: pause\n"));
        assert_eq!(plan.on_failure, OnFailure::Pause);
        assert_eq!("rollback".parse::<OnFailure>(), Ok(OnFailure::Rollback));
        assert_eq!(OnFailure::Pause.to_string(), "pause");
        assert!(
            "abort"
                .parse::<OnFailure>()
                .unwrap_err()
                .contains("rollback, pause")
        );

        let err = load_err(&format!("{SAMPLE}on_failure: abort\n"));
        assert_error(&err, 17, 13, "on_failure \"abort\"");
    }

    #[test]
    fn kill_grace_defaults_to_ten_seconds_and_is_overridable_per_node() {
        let source = format!(
            "{HEADER}  timeouts:\n    kill_grace: 30s\nnodes:\n  - name: mim1@db1\n    timeouts:\n      kill_grace: 3s\n  - name: mim2@db1\n"
        );
        let plan = load(&source);
        assert_eq!(plan.nodes[0].timeouts.kill_grace, Duration::from_secs(3));
        assert_eq!(plan.nodes[1].timeouts.kill_grace, Duration::from_secs(30));
        assert_eq!(Timeouts::default().kill_grace, Duration::from_secs(10));
        let err = load_err(&format!(
            "{HEADER}  timeouts:\n    kill_grace: soon\nnodes:\n  - name: mim1@db1\n"
        ));
        let text = err.to_string();
        assert!(
            text.contains("timeouts.kill_grace \"soon\" is not a duration"),
            "{text}"
        );
    }

    #[test]
    fn node_overrides_one_command_key_and_one_timeout() {
        let source = format!(
            "{HEADER}  timeouts:\n    stop: 2m\nnodes:\n  - name: mim1@db1\n    commands:\n      start: /usr/local/bin/start-{{name}}\n    timeouts:\n      rejoin: 5m\n    erl: /usr/lib/erlang/bin/erl\n  - name: mim2@db1\n"
        );
        let plan = load(&source);
        let mim1 = &plan.nodes[0];
        assert_eq!(mim1.commands.start, "/usr/local/bin/start-mim1@db1");
        assert_eq!(mim1.commands.stop, "/opt/mim/mim1/bin/ctl stop");
        assert_eq!(mim1.origins.start.line, 19);
        assert_eq!(mim1.origins.stop.line, 12);
        assert_eq!(mim1.timeouts.rejoin, Duration::from_secs(300));
        assert_eq!(mim1.timeouts.stop, Duration::from_secs(120));
        assert_eq!(mim1.timeouts.start, Duration::from_secs(60));
        assert_eq!(mim1.timeouts.ping, Duration::from_secs(30));
        assert_eq!(mim1.erl, "/usr/lib/erlang/bin/erl");

        let mim2 = &plan.nodes[1];
        assert_eq!(mim2.commands.start, "/opt/mim/mim2/bin/ctl start");
        assert_eq!(mim2.timeouts.rejoin, Duration::from_secs(120));
        assert_eq!(mim2.timeouts.stop, Duration::from_secs(120));
    }

    #[test]
    fn node_overrides_one_tls_file() {
        let plan = load(&with_nodes(
            "  - name: mim1@db1\n    tls:\n      certfile: /etc/ssl/{sname}.pem\n  - name: mim2@db1\n",
        ));
        assert_eq!(plan.nodes[0].tls.certfile, Path::new("/etc/ssl/mim1.pem"));
        assert_eq!(
            plan.nodes[0].tls.keyfile,
            Path::new("/opt/mim/ssl/node_key.pem")
        );
        assert_eq!(
            plan.nodes[1].tls.certfile,
            Path::new("/opt/mim/ssl/node_cert.pem")
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_plan_directory_and_commands_stay_as_written() {
        let source = "\
version: 1
cluster: lab
tls:
  certfile: ssl/cert.pem
  keyfile: /abs/key.pem
  cacertfile: ../ca/{host}.pem
defaults:
  vm_dist_args: rel/{sname}/vm.dist.args
  vm_args: /abs/{sname}/vm.args
  commands:
    start: bin/ctl start
    stop: ./ctl stop
nodes:
  - name: n1@h1
";
        let plan = Plan::from_source(Path::new("/srv/distls/plans/lab.yaml"), source)
            .unwrap_or_else(|err| panic!("{err}"));
        let node = &plan.nodes[0];
        assert_eq!(
            node.vm_dist_args,
            Path::new("/srv/distls/plans/rel/n1/vm.dist.args")
        );
        assert_eq!(node.vm_args, Path::new("/abs/n1/vm.args"));
        assert_eq!(
            node.tls.certfile,
            Path::new("/srv/distls/plans/ssl/cert.pem")
        );
        assert_eq!(node.tls.keyfile, Path::new("/abs/key.pem"));
        assert_eq!(
            node.tls.cacertfile,
            Path::new("/srv/distls/plans/../ca/h1.pem")
        );
        assert_eq!(node.commands.start, "bin/ctl start");
        assert_eq!(node.commands.stop, "./ctl stop");
    }

    #[test]
    fn error_renders_file_line_column_source_line_and_hint() {
        let source = SAMPLE
            .replace("  transport: local\n", "")
            .replace("mim1@db1", "mim1");
        let err = load_err(&source);
        let expected = "\
error: plans/prod.yaml:14:11: node name \"mim1\" has no host part
   |
14 |   - name: mim1
   |           ^^^^
   = hint: write it as name@host, e.g. mim1@db1";
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.file(), Path::new("plans/prod.yaml"));
        assert_eq!(err.source_line(), Some("  - name: mim1"));
        assert_eq!(err.location().map(|at| at.width), Some(4));
    }

    #[test]
    fn a_very_long_source_line_is_shown_as_a_window_around_the_column() {
        let line = format!("key: {}X{}", "a".repeat(1000), "b".repeat(1000));
        let at = SourceLocation {
            line: 1,
            column: 1006,
            width: 1,
        };
        let (shown, moved) = shown_window(&line, at);
        assert!(shown.chars().count() <= MAX_SHOWN_LINE_CHARS + 2, "{shown}");
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        let marker = underline(&shown, moved);
        assert_eq!(
            shown.chars().nth(marker.len() - 1),
            Some('X'),
            "{shown}\n{marker}"
        );
        let short = "key: value";
        assert_eq!(shown_window(short, at).0, short);
    }

    #[test]
    fn yaml_syntax_error_is_located() {
        let err = load_err("version: 1\ntls:\n  certfile: a\n keyfile: b\n");
        assert_error(&err, 4, 2, "invalid YAML");
        let err = load_err("version: 1\ncluster: \"mim-prod\n");
        assert_error(&err, 2, 10, "unclosed quote");
    }

    #[test]
    fn unknown_keys_are_located_at_the_key_and_list_the_allowed_keys() {
        let err = load_err(&format!("{SAMPLE}on_falure: pause\n"));
        assert_error(&err, 17, 1, "unknown key \"on_falure\" in the top level");
        assert!(
            err.message()
                .contains("version, cluster, tls, defaults, nodes, on_failure")
        );
        assert_eq!(err.hint(), "did you mean \"on_failure\"?");
        assert_eq!(err.location().map(|at| at.width), Some(9));

        let err = load_err(&SAMPLE.replace("  keyfile:", "  key_file:"));
        assert_error(&err, 5, 3, "unknown key \"key_file\" in a `tls` section");
        assert!(err.message().contains("certfile, keyfile, cacertfile"));

        let err = load_err(&with_nodes("  - name: mim1@db1\n    trasnport: local\n"));
        assert_error(&err, 16, 5, "unknown key \"trasnport\" in a node entry");
        assert_eq!(err.hint(), "did you mean \"transport\"?");

        let err = load_err(&format!("{SAMPLE}erl: /usr/bin/erl\n"));
        assert_error(&err, 17, 1, "unknown key \"erl\"");
        assert!(err.hint().contains("under `defaults:`"), "{err}");

        let err = load_err(&SAMPLE.replace("    stop:", "    halt:"));
        assert_error(&err, 12, 5, "unknown key \"halt\" in a `commands` section");
    }

    #[test]
    fn wrong_value_types_are_located() {
        let err = load_err(&format!("{HEADER}nodes: mim1@db1\n"));
        assert_error(&err, 14, 8, "expected a list");

        let err = load_err(&SAMPLE.replace("tls:\n  certfile: /opt/mim/ssl/node_cert.pem\n  keyfile: /opt/mim/ssl/node_key.pem\n  cacertfile: /opt/mim/ssl/cacert.pem\n", "tls: [a, b]\n"));
        assert_error(&err, 3, 6, "expected a mapping");

        let err = load_err(&with_nodes("  - mim1@db1\n"));
        assert_error(&err, 15, 5, "expected a mapping");
        assert!(err.hint().contains("- name: mim1@db1"), "{err}");

        let err = load_err(&with_nodes("  - name: [mim1@db1]\n"));
        assert_error(&err, 15, 11, "expected a single value");
    }

    #[test]
    fn duplicate_yaml_keys_are_rejected() {
        let err = load_err(&SAMPLE.replace("  vm_args:", "  vm_dist_args: /x\n  vm_args:"));
        assert_error(&err, 10, 3, "key \"vm_dist_args\" appears twice");
    }

    #[test]
    fn duplicate_node_names_point_at_the_second_and_name_the_first_line() {
        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n  - name: mim2@db1\n  - name: mim1@db1\n    vm_dist_args: /other\n",
        ));
        assert_error(
            &err,
            17,
            11,
            "node \"mim1@db1\" is listed twice (first at line 15)",
        );
    }

    #[test]
    fn bad_node_names_are_rejected() {
        let cases = [
            ("'@db1'", "has nothing before the @"),
            ("mim1@", "has no host part after the @"),
            ("mim1", "has no host part"),
            ("'mi m1@db1'", "not ' '"),
            ("mim1@db_1", "not '_'"),
            ("mim1@db1@x", "not '@'"),
            ("''", "the node name is empty"),
        ];
        for (name, fragment) in cases {
            let err = load_err(&with_nodes(&format!("  - name: {name}\n")));
            assert_error(&err, 15, 11, fragment);
        }
        let err = load_err(&with_nodes("  - vm_args: /x\n"));
        assert_error(&err, 15, 5, "has no `name`");

        for name in [
            "mim1@10.0.0.7",
            "mim1@::1",
            "'mim_1@fe80::1'",
            "mim-1@db1.example.com",
        ] {
            load(&with_nodes(&format!("  - name: {name}\n")));
        }
    }

    #[test]
    fn unknown_placeholders_are_located_inside_the_string() {
        let err = load_err(&SAMPLE.replace("etc/vm.args", "{snmae}/vm.args"));
        assert_error(&err, 10, 29, "unknown placeholder {snmae} in vm_args");
        assert_eq!(err.location().map(|at| at.width), Some(7));
        assert!(err.hint().starts_with("did you mean {sname}?"), "{err}");

        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n    commands:\n      ping: \"${HOME}/bin/ping {node}\"\n",
        ));
        assert_error(&err, 17, 15, "unknown placeholder {HOME} in commands.ping");
        assert!(err.hint().contains("$HOME"), "{err}");

        let err = load_err(&SAMPLE.replace("cacert.pem", "{host.pem"));
        assert_error(&err, 6, 28, "unclosed placeholder in tls.cacertfile");

        let err = load_err(&SAMPLE.replace("ctl start", "ctl start\n      --flag {x}"));
        assert_error(&err, 13, 12, "unknown placeholder {x} in commands.start");
    }

    #[test]
    fn two_nodes_sharing_vm_dist_args_are_rejected() {
        let err = load_err(&SAMPLE.replace(
            "/opt/mim/{sname}/etc/vm.dist.args",
            "/opt/mim/etc/vm.dist.args",
        ));
        assert_error(
            &err,
            9,
            17,
            "nodes \"mim1@db1\" and \"mim2@db1\" both use /opt/mim/etc/vm.dist.args",
        );
        assert!(err.hint().contains("{sname}"), "{err}");

        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n  - name: mim2@db1\n    vm_dist_args: /opt/mim/mim1/etc/vm.dist.args\n",
        ));
        assert_error(&err, 17, 19, "both use /opt/mim/mim1/etc/vm.dist.args");
        assert!(err.hint().contains("line 9"), "{err}");
    }

    #[test]
    fn other_plan_versions_are_rejected() {
        let err = load_err(&SAMPLE.replace("version: 1", "version: 2"));
        assert_error(&err, 1, 10, "this distls reads plan format 1");
        let err = load_err(&SAMPLE.replace("version: 1", "version: one"));
        assert_error(&err, 1, 10, "is not a number");
        let err = load_err(&SAMPLE.replace("version: 1\n", ""));
        assert_error(&err, 1, 1, "has no `version`");
    }

    #[test]
    fn an_empty_or_missing_node_list_is_rejected() {
        let err = load_err(&format!("{HEADER}nodes: []\n"));
        assert_error(&err, 14, 8, "the `nodes` list is empty");
        let err = load_err(&format!("{HEADER}nodes:\n"));
        assert_error(&err, 14, 1, "the plan has no nodes");
        let err = load_err(HEADER);
        assert_error(&err, 1, 1, "the plan has no nodes");
        let err = load_err("# nothing yet\n");
        assert_error(&err, 1, 1, "the plan file is empty");
    }

    #[test]
    fn ssh_transport_resolves_per_node_settings() {
        let plan = load(&with_nodes(
            "  - name: mim1@db1\n    transport: ssh\n    port: 2222\n    user: mim\n    become: sudo -n -u mongooseim\n    env:\n      ERL_EPMD_PORT: \"4370\"\n  - name: mim2@db2\n    transport: ssh\n    host: 10.0.0.2\n    accept_unknown_host_keys: true\n    ssh_options: [ServerAliveInterval=5]\n",
        ));
        let ssh = plan.nodes[0].ssh.as_ref().unwrap();
        assert_eq!(
            (ssh.host.as_str(), ssh.port, ssh.user.as_deref()),
            ("db1", Some(2222), Some("mim"))
        );
        assert!(!ssh.accept_unknown_host_keys, "strict host keys by default");
        assert_eq!(
            plan.nodes[0].become_command.as_deref(),
            Some("sudo -n -u mongooseim")
        );
        assert_eq!(
            plan.nodes[0].env,
            vec![("ERL_EPMD_PORT".to_string(), "4370".to_string())]
        );
        let ssh = plan.nodes[1].ssh.as_ref().unwrap();
        assert_eq!(ssh.host, "10.0.0.2");
        assert!(ssh.accept_unknown_host_keys);
        assert_eq!(ssh.options, vec!["ServerAliveInterval=5".to_string()]);
        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n    transport: ssh\n    port: many\n",
        ));
        assert!(err.message().contains("not a TCP port"), "{err}");
        let err = load_err(&SAMPLE.replace("transport: local", "transport: rsh"));
        assert_error(&err, 8, 14, "unknown transport \"rsh\"");
    }

    #[test]
    fn settings_missing_after_merge_name_the_node_and_where_to_put_them() {
        let err = load_err(&SAMPLE.replace("  vm_args: /opt/mim/{sname}/etc/vm.args\n", ""));
        assert_error(&err, 14, 11, "node \"mim1@db1\" has no vm_args");
        assert!(err.hint().contains("`defaults:`"), "{err}");

        let source = SAMPLE
            .replace("    start: /opt/mim/{sname}/bin/ctl start\n", "")
            .replace(
                "  - name: mim1@db1\n",
                "  - name: mim1@db1\n    commands: {start: go}\n",
            );
        let err = load_err(&source);
        assert_error(&err, 16, 11, "node \"mim2@db1\" has no commands.start");
        assert!(
            err.hint()
                .starts_with("set `start` under `commands:` in `defaults:`"),
            "{err}"
        );
    }

    #[test]
    fn bad_timeouts_are_located() {
        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n    timeouts:\n      stop: 60\n",
        ));
        assert_error(&err, 17, 13, "timeouts.stop \"60\" is not a duration");
        let err = load_err(&with_nodes(
            "  - name: mim1@db1\n    timeouts: {ping: 0s}\n",
        ));
        assert_error(&err, 16, 22, "timeouts.ping must be longer than zero");
    }

    #[test]
    fn top_level_tls_needs_all_three_files() {
        let err = load_err(&SAMPLE.replace("  keyfile: /opt/mim/ssl/node_key.pem\n", ""));
        assert_error(&err, 3, 1, "the top-level `tls` section has no `keyfile`");
        let err = load_err(&SAMPLE.replace("cluster: mim-prod\n", "cluster: mim prod\n"));
        assert_error(&err, 2, 10, "contains ' '");
    }

    #[test]
    fn unreadable_plan_file_names_the_file_and_the_fix() {
        let path = Path::new("/nonexistent/distls/plan.yaml");
        let err = Plan::load(path).unwrap_err();
        assert_eq!(err.file(), path);
        assert_eq!(err.line(), None);
        assert!(err.message().contains("cannot read the plan file"), "{err}");
        assert!(
            err.to_string()
                .starts_with("error: /nonexistent/distls/plan.yaml: ")
        );
        assert!(err.to_string().contains("= hint: check the path"));
    }

    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> ScratchDir {
            ScratchDir(tempfile::tempdir().expect("temp dir").keep())
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn local_plan(dir: &Path) -> Plan {
        let source = "\
version: 1
cluster: lab
tls: {certfile: c.pem, keyfile: k.pem, cacertfile: ca.pem}
defaults:
  vm_dist_args: '{sname}/vm.dist.args'
  vm_args: '{sname}/vm.args'
  commands: {start: start, stop: stop}
nodes:
  - name: a@h
  - name: b@h
    vm_args: b.args
";
        let path = dir.join("plan.yaml");
        std::fs::write(&path, source).expect("write plan");
        Plan::load(&path).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn check_local_files_accepts_files_and_symlinks_to_files() {
        let dir = ScratchDir::new();
        for sname in ["a", "b"] {
            std::fs::create_dir(dir.0.join(sname)).expect("mkdir");
            std::fs::write(dir.0.join(sname).join("vm.dist.args"), "").expect("write");
        }
        std::fs::write(dir.0.join("a/vm.args"), "").expect("write");
        std::os::unix::fs::symlink(dir.0.join("a/vm.args"), dir.0.join("b.args")).expect("symlink");
        let plan = local_plan(&dir.0);
        assert_eq!(plan.check_local_files(), Ok(()));
    }

    #[test]
    fn check_local_files_reports_missing_files_and_directories_where_configured() {
        let dir = ScratchDir::new();
        std::fs::create_dir_all(dir.0.join("a/vm.dist.args")).expect("mkdir");
        std::fs::create_dir(dir.0.join("b")).expect("mkdir");
        std::fs::write(dir.0.join("b/vm.dist.args"), "").expect("write");
        std::fs::write(dir.0.join("a/vm.args"), "").expect("write");
        std::os::unix::fs::symlink(dir.0.join("missing"), dir.0.join("b.args")).expect("symlink");
        let plan = local_plan(&dir.0);

        let problems = plan.local_file_problems();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_error(&problems[0], 5, 17, "node a@h: vm_dist_args file ");
        assert!(
            problems[0]
                .message()
                .ends_with("a/vm.dist.args is a directory, not a regular file")
        );
        assert_error(&problems[1], 11, 14, "node b@h: vm_args file ");
        assert!(
            problems[1].message().ends_with("b.args does not exist"),
            "{}",
            problems[1]
        );
        assert_eq!(
            problems[1].hint(),
            "fix the path, or create the file; for MongooseIM it is REL_ROOT/etc/vm.args"
        );
        assert_eq!(plan.check_local_files(), Err(problems[0].clone()));
    }

    #[test]
    fn callers_can_report_errors_at_a_node() {
        let plan = load(SAMPLE);
        let node = &plan.nodes[1];
        let err = plan.error_at(
            node.origins.vm_dist_args,
            format!("node {}: vm.dist.args cannot be edited", node.name),
            "make it writable",
        );
        assert_error(&err, 9, 17, "node mim2@db1: vm.dist.args cannot be edited");
        assert_eq!(
            err.source_line(),
            Some("  vm_dist_args: /opt/mim/{sname}/etc/vm.dist.args")
        );
    }

    const FLAVOR_HEAD: &str = "\
version: 1
cluster: ej
flavor: ejabberd
tls:
  certfile: /t/node.pem
  keyfile: /t/node.key
  cacertfile: /t/ca.pem
";

    #[test]
    fn flavor_defaults_come_from_the_product() {
        let text = format!(
            "{FLAVOR_HEAD}defaults:\n  flags_file: /srv/ej/{{sname}}/etc/ejabberdctl.cfg\nnodes:\n  - name: ejabberd1@vm\n  - name: rabbit1@vm\n    flavor: rabbitmq\n    flags_file: /srv/r/rabbitmq-env.conf\n    commands: {{ ready: \"true\" }}\n"
        );
        let plan = Plan::from_source(Path::new("/p/plan.yaml"), &text).unwrap();
        let ej = &plan.nodes[0];
        assert_eq!(ej.flavor, Flavor::Ejabberd);
        assert_eq!(
            ej.vm_dist_args,
            Path::new("/srv/ej/ejabberd1/etc/ejabberdctl.cfg")
        );
        assert_eq!(
            ej.cookie_file.as_deref(),
            Some(Path::new("/var/lib/ejabberd/.erlang.cookie"))
        );
        assert!(ej.commands.start.starts_with("ejabberdctl --config-dir "));
        assert!(ej.commands.start.contains("/srv/ej/ejabberd1/etc"));
        assert!(ej.commands.ping.as_deref().unwrap().contains("status"));
        assert!(ej.commands.ready.as_deref().unwrap().ends_with(" started"));
        let rb = &plan.nodes[1];
        assert_eq!(rb.flavor, Flavor::RabbitMq);
        assert!(rb.commands.stop.contains("/srv/r/rabbitmq-env.conf"));
        assert!(rb.commands.stop.ends_with("rabbitmqctl shutdown"));
        assert_eq!(rb.commands.ready.as_deref(), Some("true"));
        assert_eq!(rb.timeouts.ready, Duration::from_secs(300));
    }

    #[test]
    fn flavor_errors_are_located() {
        let text = format!("{FLAVOR_HEAD}nodes:\n  - name: a@h\n    flavor: rabbit\n");
        let err = Plan::from_source(Path::new("p.yaml"), &text).unwrap_err();
        assert_eq!(err.line(), Some(10));
        assert!(err.message().contains("not a flavor"), "{err}");
        let text = format!("{FLAVOR_HEAD}nodes:\n  - name: a@h\n    vm_dist_args: /x\n");
        let err = Plan::from_source(Path::new("p.yaml"), &text).unwrap_err();
        assert!(
            err.message().contains("does not apply to flavor ejabberd"),
            "{err}"
        );
        let text =
            format!("{FLAVOR_HEAD}nodes:\n  - name: a@h\n    flavor: relx\n    vm_args: /x\n");
        let err = Plan::from_source(Path::new("p.yaml"), &text).unwrap_err();
        assert!(err.message().contains("commands.start"), "{err}");
        let text = format!("{FLAVOR_HEAD}nodes:\n  - name: a@h\n  - name: b@h\n");
        let err = Plan::from_source(Path::new("p.yaml"), &text).unwrap_err();
        assert!(
            err.message()
                .contains("both use /etc/ejabberd/ejabberdctl.cfg as flags_file"),
            "{err}"
        );
    }
}
