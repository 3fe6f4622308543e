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

use crate::flavor::Flavor;
use crate::spelling::edit_distance;
use crate::ssh::SshSpec;

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
        let plan_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let (cluster, on_failure, nodes) = Resolver { text, plan_dir }.resolve(raw)?;
        Ok(Plan {
            path: path.to_path_buf(),
            source: source.to_owned(),
            sha256: hex::encode(Sha256::digest(source.as_bytes())),
            cluster,
            on_failure,
            nodes,
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
                Flavor::Ejabberd | Flavor::RabbitMq => files.truncate(1),
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
    let create_hint =
        format!("fix the path, or create the file; for MongooseIM it is REL_ROOT/etc/{file_name}");
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some((
            "is a directory, not a regular file".to_owned(),
            format!(
                "point {key} at the file itself; for MongooseIM it is REL_ROOT/etc/{file_name}"
            ),
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

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A problem with the plan, located in the plan file when it has a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    file: PathBuf,
    location: Option<SourceLocation>,
    source_line: Option<String>,
    message: String,
    hint: String,
}

impl PlanError {
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn location(&self) -> Option<SourceLocation> {
        self.location
    }

    pub fn line(&self) -> Option<u32> {
        self.location.map(|at| at.line)
    }

    pub fn column(&self) -> Option<u32> {
        self.location.map(|at| at.column)
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The plan line the error points at, as written.
    pub fn source_line(&self) -> Option<&str> {
        self.source_line.as_deref()
    }

    fn unlocated(file: &Path, message: impl Into<String>, hint: impl Into<String>) -> PlanError {
        PlanError {
            file: file.to_path_buf(),
            location: None,
            source_line: None,
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn unreadable(file: &Path, err: &std::io::Error) -> PlanError {
        use std::io::ErrorKind;
        let hint = match err.kind() {
            ErrorKind::NotFound => {
                "check the path (a relative path starts from the current directory), or write the plan file first"
            }
            ErrorKind::PermissionDenied => "make the plan file readable by the user running distls",
            ErrorKind::IsADirectory => {
                "give the path of the plan's YAML file, not of its directory"
            }
            _ => "check that the plan file exists and is readable by the user running distls",
        };
        PlanError::unlocated(file, format!("cannot read the plan file: {err}"), hint)
    }

    fn not_utf8(file: &Path, bytes: &[u8], err: std::str::Utf8Error) -> PlanError {
        let valid = String::from_utf8_lossy(&bytes[..err.valid_up_to()]);
        let line_start = valid.rfind('\n').map_or(0, |newline| newline + 1);
        let at = SourceLocation {
            line: u32::try_from(valid.matches('\n').count() + 1).unwrap_or(u32::MAX),
            column: u32::try_from(valid[line_start..].chars().count() + 1).unwrap_or(u32::MAX),
            width: 1,
        };
        let rest = String::from_utf8_lossy(&bytes[err.valid_up_to()..]);
        let line = format!(
            "{}{}",
            &valid[line_start..],
            rest.lines().next().unwrap_or("")
        );
        PlanError {
            file: file.to_path_buf(),
            location: Some(at),
            source_line: Some(line),
            message: "the plan file is not valid UTF-8".to_owned(),
            hint: "save the plan file as UTF-8".to_owned(),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let Some(at) = self.location else {
            writeln!(f, "error: {file}: {}", self.message)?;
            return write!(f, "  = hint: {}", self.hint);
        };
        writeln!(
            f,
            "error: {file}:{}:{}: {}",
            at.line, at.column, self.message
        )?;
        let number = at.line.to_string();
        let gutter = " ".repeat(number.len());
        let (line, at) = shown_window(self.source_line.as_deref().unwrap_or(""), at);
        let line = line.as_str();
        writeln!(f, "{gutter} |")?;
        if line.is_empty() {
            writeln!(f, "{number} |")?;
        } else {
            writeln!(f, "{number} | {line}")?;
        }
        writeln!(f, "{gutter} | {}", underline(line, at))?;
        write!(f, "{gutter} = hint: {}", self.hint)
    }
}

impl std::error::Error for PlanError {}

/// Longest source line shown whole; a longer one (a minified or hostile plan) is shown as a window
/// around the column, so an error never prints megabytes.
const MAX_SHOWN_LINE_CHARS: usize = 160;

fn shown_window(line: &str, at: SourceLocation) -> (String, SourceLocation) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN_LINE_CHARS {
        return (line.to_owned(), at);
    }
    let column = (at.column as usize).saturating_sub(1).min(chars.len());
    let start = column.saturating_sub(MAX_SHOWN_LINE_CHARS / 2);
    let end = (start + MAX_SHOWN_LINE_CHARS).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let shift = u32::try_from(start).unwrap_or(0);
    let marker = u32::from(start > 0);
    let moved = SourceLocation {
        column: at.column.saturating_sub(shift) + marker,
        ..at
    };
    (shown, moved)
}

/// The marker line under the source line; tabs are mirrored so the carets line up.
fn underline(line: &str, at: SourceLocation) -> String {
    let chars: Vec<char> = line.chars().collect();
    let start = (at.column as usize).saturating_sub(1);
    let mut marker: String = (0..start)
        .map(|i| {
            if chars.get(i) == Some(&'\t') {
                '\t'
            } else {
                ' '
            }
        })
        .collect();
    let available = chars.len().saturating_sub(start).max(1);
    let width = (at.width as usize).clamp(1, available);
    marker.push_str(&"^".repeat(width));
    marker
}

/// The plan text being validated, for building located errors.
#[derive(Clone, Copy)]
struct SourceText<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SourceText<'_> {
    fn error(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        let line = (at.line as usize)
            .checked_sub(1)
            .and_then(|index| self.text.lines().nth(index))
            .unwrap_or("");
        PlanError {
            file: self.path.to_path_buf(),
            location: Some(at),
            source_line: Some(line.to_owned()),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Location of `key:` written at the top level, for keys whose value is missing or
    /// empty (YAML gives no position for a value that is not there).
    fn top_level_key(&self, key: &str) -> Option<SourceLocation> {
        self.text.lines().enumerate().find_map(|(index, line)| {
            let rest = line.strip_prefix(key)?;
            rest.trim_start().starts_with(':').then(|| SourceLocation {
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
                column: 1,
                width: u32::try_from(key.chars().count()).unwrap_or(1),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// YAML layer: the file as written, every value with its position
// ---------------------------------------------------------------------------------------

type Text = Spanned<String>;

/// `[A-Za-z_][A-Za-z0-9_]*`: what `export` accepts.
fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    version: Option<Text>,
    cluster: Option<Text>,
    tls: Option<Spanned<RawTls>>,
    defaults: Option<RawSettings>,
    nodes: Option<Spanned<Vec<Spanned<RawNode>>>>,
    on_failure: Option<Text>,
    flavor: Option<Text>,
}

impl RawPlan {
    fn is_empty(&self) -> bool {
        self.version.is_none()
            && self.cluster.is_none()
            && self.tls.is_none()
            && self.defaults.is_none()
            && self.nodes.is_none()
            && self.on_failure.is_none()
            && self.flavor.is_none()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certfile: Option<Text>,
    keyfile: Option<Text>,
    cacertfile: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    start: Option<Text>,
    stop: Option<Text>,
    ping: Option<Text>,
    ready: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    stop: Option<Text>,
    start: Option<Text>,
    rejoin: Option<Text>,
    ping: Option<Text>,
    kill_grace: Option<Text>,
    ready: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    transport: Option<Text>,
    host: Option<Text>,
    port: Option<Text>,
    user: Option<Text>,
    identity_file: Option<Text>,
    ssh_config: Option<Text>,
    ssh_options: Option<Vec<Text>>,
    known_hosts: Option<Text>,
    accept_unknown_host_keys: Option<Text>,
    r#become: Option<Text>,
    env: Option<BTreeMap<String, Text>>,
    flavor: Option<Text>,
    flags_file: Option<Text>,
    cookie_file: Option<Text>,
    vm_dist_args: Option<Text>,
    vm_args: Option<Text>,
    erl: Option<Text>,
    commands: Option<RawCommands>,
    timeouts: Option<RawTimeouts>,
    tls: Option<RawTls>,
}

// The node-level keys repeat RawSettings': `#[serde(flatten)]` would lose both the value
// positions and deny_unknown_fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<Text>,
    transport: Option<Text>,
    host: Option<Text>,
    port: Option<Text>,
    user: Option<Text>,
    identity_file: Option<Text>,
    ssh_config: Option<Text>,
    ssh_options: Option<Vec<Text>>,
    known_hosts: Option<Text>,
    accept_unknown_host_keys: Option<Text>,
    r#become: Option<Text>,
    env: Option<BTreeMap<String, Text>>,
    flavor: Option<Text>,
    flags_file: Option<Text>,
    cookie_file: Option<Text>,
    vm_dist_args: Option<Text>,
    vm_args: Option<Text>,
    erl: Option<Text>,
    commands: Option<RawCommands>,
    timeouts: Option<RawTimeouts>,
    tls: Option<RawTls>,
}

impl RawNode {
    fn into_parts(self) -> (Option<Text>, RawSettings) {
        let settings = RawSettings {
            transport: self.transport,
            host: self.host,
            port: self.port,
            user: self.user,
            identity_file: self.identity_file,
            ssh_config: self.ssh_config,
            ssh_options: self.ssh_options,
            known_hosts: self.known_hosts,
            accept_unknown_host_keys: self.accept_unknown_host_keys,
            r#become: self.r#become,
            env: self.env,
            flavor: self.flavor,
            flags_file: self.flags_file,
            cookie_file: self.cookie_file,
            vm_dist_args: self.vm_dist_args,
            vm_args: self.vm_args,
            erl: self.erl,
            commands: self.commands,
            timeouts: self.timeouts,
            tls: self.tls,
        };
        (self.name, settings)
    }
}

impl RawSettings {
    fn command(&self, key: fn(&RawCommands) -> &Option<Text>) -> Option<&Text> {
        self.commands
            .as_ref()
            .and_then(|commands| key(commands).as_ref())
    }

    fn timeout(&self, key: fn(&RawTimeouts) -> &Option<Text>) -> Option<&Text> {
        self.timeouts
            .as_ref()
            .and_then(|timeouts| key(timeouts).as_ref())
    }

    fn tls_file(&self, key: fn(&RawTls) -> &Option<Text>) -> Option<&Text> {
        self.tls.as_ref().and_then(|tls| key(tls).as_ref())
    }
}

fn referenced<T>(value: &Spanned<T>) -> SourceLocation {
    SourceLocation::from_yaml(value.referenced)
        .or_else(|| SourceLocation::from_yaml(value.defined))
        .unwrap_or(SourceLocation::START)
}

/// Where the text itself is written (differs from `referenced` for YAML aliases).
fn defined<T>(value: &Spanned<T>) -> SourceLocation {
    SourceLocation::from_yaml(value.defined).unwrap_or_else(|| referenced(value))
}

fn parse_yaml(text: &SourceText) -> Result<RawPlan, PlanError> {
    // A plan is small and flat: tight limits turn alias bombs ("billion laughs"), deep nesting
    // and event floods into a located error instead of memory or stack exhaustion.
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: DuplicateKeyPolicy::Error,
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 16,
            max_nodes: 100_000,
            max_documents: 2,
            max_total_scalar_bytes: 1024 * 1024,
        },
    };
    serde_saphyr::from_str_with_options(text.text, options).map_err(|err| {
        let (message, hint) = describe_yaml_error(&err, text);
        match err.location().and_then(SourceLocation::from_yaml) {
            Some(at) => text.error(at, message, hint),
            None => PlanError::unlocated(text.path, message, hint),
        }
    })
}

fn describe_yaml_error(err: &serde_saphyr::Error, text: &SourceText) -> (String, String) {
    use serde_saphyr::Error as YamlError;
    match err {
        YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } => {
            describe_yaml_error(error, text)
        }
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => describe_unknown_key(field, expected),
        YamlError::DuplicateMappingKey { key, .. } => {
            let message = match key {
                Some(key) => format!("key \"{key}\" appears twice in the same mapping"),
                None => "the same key appears twice in one mapping".to_owned(),
            };
            (message, "keep only one of them".to_owned())
        }
        YamlError::Unexpected { expected, location } => {
            describe_wrong_shape(expected, text, *location)
        }
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (
            format!(
                "wrong kind of value: found {unexpected}, expected {}",
                if expected.starts_with("struct ") {
                    "a mapping"
                } else {
                    expected
                }
            ),
            "see the plan format for what this key takes".to_owned(),
        ),
        YamlError::Budget { breach, .. } => (
            format!("the plan exceeds a safety limit of the YAML reader: {breach:?}"),
            "a plan is a small, flat document: remove deep nesting and repeated aliases (`*name`)"
                .to_owned(),
        ),
        YamlError::MultipleDocuments { .. } => (
            "the plan file holds more than one YAML document".to_owned(),
            "keep a single document: remove the `---` line and what follows it".to_owned(),
        ),
        other => (
            format!(
                "invalid YAML: {}",
                UserMessageFormatter.format_message(other)
            ),
            SYNTAX_HINT.to_owned(),
        ),
    }
}

/// Names the section an unknown key was found in, recognised by its list of allowed keys.
fn describe_unknown_key(field: &str, allowed: &[&str]) -> (String, String) {
    let has = |key: &str| allowed.contains(&key);
    let section = if has("cluster") {
        "the top level of the plan"
    } else if has("name") {
        "a node entry"
    } else if has("vm_dist_args") {
        "`defaults`"
    } else if has("cacertfile") {
        "a `tls` section"
    } else if has("rejoin") {
        "a `timeouts` section"
    } else {
        "a `commands` section"
    };
    let message = format!(
        "unknown key \"{field}\" in {section}; allowed keys: {}",
        allowed.join(", ")
    );
    let settings_key = [
        "transport",
        "host",
        "port",
        "user",
        "identity_file",
        "ssh_config",
        "ssh_options",
        "known_hosts",
        "accept_unknown_host_keys",
        "become",
        "env",
        "flags_file",
        "cookie_file",
        "vm_dist_args",
        "vm_args",
        "erl",
        "commands",
        "timeouts",
    ]
    .contains(&field);
    let hint = if let Some(close) = closest(field, allowed) {
        format!("did you mean \"{close}\"?")
    } else if has("cluster") && settings_key {
        format!(
            "node settings go under `defaults:` (for every node) or on a node entry; move `{field}` there"
        )
    } else if has("vm_dist_args") && field == "name" {
        "`name` belongs on each entry under `nodes:`, not in `defaults`".to_owned()
    } else {
        "remove it, or use one of the allowed keys".to_owned()
    };
    (message, hint)
}

fn describe_wrong_shape(expected: &str, text: &SourceText, location: Location) -> (String, String) {
    match expected {
        "mapping start" => {
            let line = usize::try_from(location.line()).unwrap_or(0);
            let is_list_entry = line > 0
                && text
                    .text
                    .lines()
                    .nth(line - 1)
                    .is_some_and(|line| line.trim_start().starts_with('-'));
            let hint = if is_list_entry {
                "each entry here is a mapping, e.g. `- name: mim1@db1`"
            } else {
                "write `key: value` lines indented under this key"
            };
            ("expected a mapping here".to_owned(), hint.to_owned())
        }
        "sequence start" => (
            "expected a list here".to_owned(),
            "write one entry per line starting with `- `, e.g. `  - name: mim1@db1`".to_owned(),
        ),
        "string scalar" => (
            "expected a single value here, not a list or a mapping".to_owned(),
            "write a plain value, in quotes if it contains `: `, `#` or starts with `[`, `{`, `*` or `&`"
                .to_owned(),
        ),
        other => (
            format!("expected {other} here"),
            SYNTAX_HINT.to_owned(),
        ),
    }
}

/// The allowed word closest to a misspelled one, if it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.min(candidate.len() / 2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

// ---------------------------------------------------------------------------------------
// Semantic layer: from the file as written to resolved nodes
// ---------------------------------------------------------------------------------------

struct Resolver<'a> {
    text: SourceText<'a>,
    plan_dir: PathBuf,
}

/// A node name split into the parts placeholders expand to.
struct NodeName<'a> {
    full: &'a str,
    sname: &'a str,
    host: &'a str,
}

/// A node's files as its flavor uses them.
struct FlavorFiles {
    flags_file: PathBuf,
    flags_at: SourceLocation,
    identity_file: PathBuf,
    identity_at: SourceLocation,
    cookie_file: Option<PathBuf>,
}

/// The top-level `tls` section, complete.
struct TopTls<'r> {
    certfile: &'r Text,
    keyfile: &'r Text,
    cacertfile: &'r Text,
}

impl Resolver<'_> {
    fn error(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        self.text.error(at, message, hint)
    }

    fn missing_top_level(&self, key: &str, message: &str, hint: &str) -> PlanError {
        let at = self
            .text
            .top_level_key(key)
            .unwrap_or(SourceLocation::START);
        self.error(at, message, hint)
    }

    fn resolve(&self, raw: RawPlan) -> Result<(String, OnFailure, Vec<NodeSpec>), PlanError> {
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
        let on_failure = match &raw.on_failure {
            None => OnFailure::default(),
            Some(text) => text.value.parse().map_err(|_| {
                self.error(
                    defined(text),
                    format!(
                        "on_failure \"{}\" is not a failure policy; expected one of: {}",
                        text.value,
                        OnFailure::NAMES.join(", ")
                    ),
                    "write `on_failure: rollback` (the default) or `on_failure: pause`",
                )
            })?,
        };
        let top_tls = self.top_tls(raw.tls.as_ref())?;
        let top_flavor = match &raw.flavor {
            Some(text) => self.flavor(text)?,
            None => Flavor::default(),
        };
        let defaults = raw.defaults.unwrap_or_default();
        self.check_settings(&defaults)?;

        let nodes = raw.nodes.ok_or_else(|| {
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

        let mut resolved: Vec<NodeSpec> = Vec::with_capacity(nodes.value.len());
        let mut first_seen: HashMap<String, SourceLocation> = HashMap::new();
        for node in nodes.value {
            let entry = referenced(&node);
            let (name, settings) = node.value.into_parts();
            let name = name.ok_or_else(|| {
                self.error(
                    entry,
                    "this node entry has no `name`",
                    "add `name: NAME@HOST`, e.g. `- name: mim1@db1`",
                )
            })?;
            let spec = self.node(&name, &settings, &defaults, &top_tls, top_flavor)?;
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
        self.check_distinct_dist_args(&resolved)?;
        Ok((cluster, on_failure, resolved))
    }

    fn check_version(&self, version: &Text) -> Result<(), PlanError> {
        match version.value.trim().parse::<u64>() {
            Ok(PLAN_FORMAT_VERSION) => Ok(()),
            Ok(other) => Err(self.error(
                defined(version),
                format!(
                    "plan format {other} is not supported: this distls reads plan format {PLAN_FORMAT_VERSION}"
                ),
                format!(
                    "use a distls release that reads format {other}, or rewrite the plan for format {PLAN_FORMAT_VERSION}"
                ),
            )),
            Err(_) => Err(self.error(
                defined(version),
                format!("version \"{}\" is not a number", version.value),
                format!("write `version: {PLAN_FORMAT_VERSION}`"),
            )),
        }
    }

    fn cluster(&self, cluster: Option<&Text>) -> Result<String, PlanError> {
        let hint = "write e.g. `cluster: mim-prod` (letters, digits, _ . and -)";
        let cluster = cluster.ok_or_else(|| {
            self.missing_top_level("cluster", "the plan has no `cluster` name", hint)
        })?;
        let value = &cluster.value;
        if value.is_empty() {
            return Err(self.error(defined(cluster), "the cluster name is empty", hint));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(self.error(
                defined(cluster),
                format!("cluster name \"{value}\" contains {bad:?}"),
                hint,
            ));
        }
        Ok(value.clone())
    }

    fn top_tls<'r>(&self, tls: Option<&'r Spanned<RawTls>>) -> Result<TopTls<'r>, PlanError> {
        let Some(tls) = tls else {
            return Err(self.missing_top_level(
                "tls",
                "the plan has no top-level `tls` section",
                "add `tls:` with certfile, keyfile and cacertfile: the PEM files every node uses",
            ));
        };
        let require = |key: &str, value: &'r Option<Text>| {
            value.as_ref().ok_or_else(|| {
                let at = self.text.top_level_key("tls").unwrap_or_else(|| referenced(tls));
                self.error(
                    at,
                    format!("the top-level `tls` section has no `{key}`"),
                    format!("add `{key}: /path/to/file.pem` under `tls:`; certfile, keyfile and cacertfile are all required there"),
                )
            })
        };
        let top = TopTls {
            certfile: require("certfile", &tls.value.certfile)?,
            keyfile: require("keyfile", &tls.value.keyfile)?,
            cacertfile: require("cacertfile", &tls.value.cacertfile)?,
        };
        for (key, value) in [
            ("tls.certfile", top.certfile),
            ("tls.keyfile", top.keyfile),
            ("tls.cacertfile", top.cacertfile),
        ] {
            self.check_template(key, value)?;
        }
        Ok(top)
    }

    /// Checks what can be checked on settings alone, before any node is known.
    fn check_settings(&self, settings: &RawSettings) -> Result<(), PlanError> {
        if let Some(transport) = &settings.transport {
            self.transport(transport)?;
        }
        if let Some(flavor) = &settings.flavor {
            self.flavor(flavor)?;
        }
        let templates = [
            ("flags_file", settings.flags_file.as_ref()),
            ("cookie_file", settings.cookie_file.as_ref()),
            ("commands.ready", settings.command(|c| &c.ready)),
            ("vm_dist_args", settings.vm_dist_args.as_ref()),
            ("vm_args", settings.vm_args.as_ref()),
            ("erl", settings.erl.as_ref()),
            ("commands.start", settings.command(|c| &c.start)),
            ("commands.stop", settings.command(|c| &c.stop)),
            ("commands.ping", settings.command(|c| &c.ping)),
            ("tls.certfile", settings.tls_file(|t| &t.certfile)),
            ("tls.keyfile", settings.tls_file(|t| &t.keyfile)),
            ("tls.cacertfile", settings.tls_file(|t| &t.cacertfile)),
        ];
        for (key, value) in templates {
            if let Some(value) = value {
                self.check_template(key, value)?;
            }
        }
        let timeouts = [
            ("stop", settings.timeout(|t| &t.stop)),
            ("start", settings.timeout(|t| &t.start)),
            ("rejoin", settings.timeout(|t| &t.rejoin)),
            ("ping", settings.timeout(|t| &t.ping)),
            ("kill_grace", settings.timeout(|t| &t.kill_grace)),
            ("ready", settings.timeout(|t| &t.ready)),
        ];
        for (key, value) in timeouts {
            if let Some(value) = value {
                self.duration(key, value)?;
            }
        }
        Ok(())
    }

    fn node(
        &self,
        name_text: &Text,
        own: &RawSettings,
        defaults: &RawSettings,
        top_tls: &TopTls,
        top_flavor: Flavor,
    ) -> Result<NodeSpec, PlanError> {
        let name = self.node_name(name_text)?;
        self.check_settings(own)?;
        let name_at = defined(name_text);
        let flavor = match own.flavor.as_ref().or(defaults.flavor.as_ref()) {
            Some(text) => self.flavor(text)?,
            None => top_flavor,
        };
        let files = self.flavor_files(flavor, &name, name_at, own, defaults)?;
        let defaults_for_flavor = flavor.default_commands(&files.flags_file);
        let command = |key: &str,
                       pick: fn(&RawSettings) -> Option<&Text>,
                       fallback: Option<&String>|
         -> Result<(String, SourceLocation), PlanError> {
            match pick(own).or(pick(defaults)) {
                Some(text) => Ok((expand(&text.value, &name), referenced(text))),
                None => match fallback {
                    Some(default) => Ok((default.clone(), name_at)),
                    None => Err(self.error(
                        name_at,
                        format!("node \"{}\" has no {key}", name.full),
                        where_to_set(key),
                    )),
                },
            }
        };
        let (start, start_at) = command(
            "commands.start",
            |s| s.command(|c| &c.start),
            defaults_for_flavor.as_ref().map(|d| &d.start),
        )?;
        let (stop, stop_at) = command(
            "commands.stop",
            |s| s.command(|c| &c.stop),
            defaults_for_flavor.as_ref().map(|d| &d.stop),
        )?;
        let optional =
            |pick: fn(&RawSettings) -> Option<&Text>, fallback: Option<&String>| match pick(own)
                .or(pick(defaults))
            {
                Some(text) => Some((expand(&text.value, &name), Some(referenced(text)))),
                None => fallback.map(|d| (d.clone(), None)),
            };
        let ping = optional(
            |s| s.command(|c| &c.ping),
            defaults_for_flavor.as_ref().map(|d| &d.ping),
        );
        let ready = optional(
            |s| s.command(|c| &c.ready),
            defaults_for_flavor.as_ref().map(|d| &d.ready),
        );

        let transport = match own.transport.as_ref().or(defaults.transport.as_ref()) {
            Some(text) => self.transport(text)?,
            None => TransportKind::Local,
        };
        let ssh = match transport {
            TransportKind::Local => None,
            TransportKind::Ssh => Some(self.ssh(own, defaults, &name)?),
        };
        let become_command = own
            .r#become
            .as_ref()
            .or(defaults.r#become.as_ref())
            .map(|text| expand(&text.value, &name))
            .filter(|b| !b.trim().is_empty());
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for source in [defaults, own] {
            for (key, value) in source.env.iter().flatten() {
                // The environment reaches remote commands as `export KEY=...` on stdin (never
                // argv), so a key must be a name the shell can export.
                if !is_env_name(key) {
                    return Err(self.error(
                        referenced(value),
                        format!("env key \"{key}\" is not an environment variable name"),
                        "use letters, digits and underscores, not starting with a digit (e.g. ERL_EPMD_PORT)",
                    ));
                }
                env.insert(key.clone(), expand(&value.value, &name));
            }
        }
        let erl = match own.erl.as_ref().or(defaults.erl.as_ref()) {
            Some(text) => expand(&text.value, &name),
            None => "erl".to_owned(),
        };

        let built_in = Timeouts::default();
        let timeout =
            |key: &str, pick: fn(&RawTimeouts) -> &Option<Text>, fallback: Duration| match own
                .timeout(pick)
                .or(defaults.timeout(pick))
            {
                Some(text) => self.duration(key, text),
                None => Ok(fallback),
            };
        let timeouts = Timeouts {
            stop: timeout("stop", |t| &t.stop, built_in.stop)?,
            start: timeout("start", |t| &t.start, built_in.start)?,
            rejoin: timeout("rejoin", |t| &t.rejoin, built_in.rejoin)?,
            ping: timeout("ping", |t| &t.ping, built_in.ping)?,
            kill_grace: timeout("kill_grace", |t| &t.kill_grace, built_in.kill_grace)?,
            ready: timeout("ready", |t| &t.ready, built_in.ready)?,
        };

        let tls_file = |pick: fn(&RawTls) -> &Option<Text>, top: &Text| {
            let text = own
                .tls_file(pick)
                .or(defaults.tls_file(pick))
                .unwrap_or(top);
            self.path(&text.value, &name)
        };
        let tls = TlsPaths {
            certfile: tls_file(|t| &t.certfile, top_tls.certfile),
            keyfile: tls_file(|t| &t.keyfile, top_tls.keyfile),
            cacertfile: tls_file(|t| &t.cacertfile, top_tls.cacertfile),
        };

        Ok(NodeSpec {
            name: name.full.to_owned(),
            sname: name.sname.to_owned(),
            host: name.host.to_owned(),
            transport,
            flavor,
            cookie_file: files.cookie_file,
            ssh,
            become_command,
            env: env.into_iter().collect(),
            vm_dist_args: files.flags_file,
            vm_args: files.identity_file,
            erl,
            commands: Commands {
                start,
                stop,
                ping: ping.as_ref().map(|(c, _)| c.clone()),
                ready: ready.map(|(c, _)| c),
            },
            timeouts,
            tls,
            origins: NodeOrigins {
                name: name_at,
                vm_dist_args: files.flags_at,
                vm_args: files.identity_at,
                start: start_at,
                stop: stop_at,
                ping: ping.map(|(_, at)| at.unwrap_or(name_at)),
            },
        })
    }

    fn node_name<'t>(&self, text: &'t Text) -> Result<NodeName<'t>, PlanError> {
        let value = text.value.as_str();
        let at = defined(text);
        let example_sname = match value.split('@').next() {
            Some(sname) if !sname.is_empty() && sname.chars().all(is_sname_char) => sname,
            _ => "mim1",
        };
        let hint = format!("write it as name@host, e.g. {example_sname}@db1");
        let fail = |message: String| Err(self.error(at, message, hint.as_str()));
        if value.is_empty() {
            return fail("the node name is empty".to_owned());
        }
        let Some((sname, host)) = value.split_once('@') else {
            return fail(format!("node name \"{value}\" has no host part"));
        };
        if sname.is_empty() {
            return fail(format!("node name \"{value}\" has nothing before the @"));
        }
        if host.is_empty() {
            return fail(format!(
                "node name \"{value}\" has no host part after the @"
            ));
        }
        if let Some(bad) = sname.chars().find(|c| !is_sname_char(*c)) {
            return fail(format!(
                "node name \"{value}\": the part before @ may hold only letters, digits, _ and -, not {bad:?}"
            ));
        }
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            || host.parse::<Ipv6Addr>().is_ok();
        if !host_ok {
            let bad = host
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
                .unwrap_or('?');
            return fail(format!(
                "node name \"{value}\": the host part may hold only letters, digits, . and - (or be an IP address), not {bad:?}"
            ));
        }
        Ok(NodeName {
            full: value,
            sname,
            host,
        })
    }

    /// The SSH settings of one node: each key from the node, else from `defaults`.
    fn ssh(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
    ) -> Result<SshSpec, PlanError> {
        let pick =
            |key: fn(&RawSettings) -> &Option<Text>| key(own).as_ref().or(key(defaults).as_ref());
        let port = match pick(|s| &s.port) {
            Some(text) => Some(
                text.value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        self.error(
                            defined(text),
                            format!("port \"{}\" is not a TCP port number", text.value),
                            "write a number from 1 to 65535, e.g. `port: 22`",
                        )
                    })?,
            ),
            None => None,
        };
        let accept_unknown_host_keys = match pick(|s| &s.accept_unknown_host_keys) {
            Some(text) => match text.value.trim() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(self.error(
                        defined(text),
                        format!("accept_unknown_host_keys must be true or false, not \"{other}\""),
                        "host keys are checked strictly unless this is `true`",
                    ));
                }
            },
            None => false,
        };
        let options = own.ssh_options.as_ref().or(defaults.ssh_options.as_ref());
        for option in options.into_iter().flatten() {
            if !option.value.contains('=') || option.value.starts_with('-') {
                return Err(self.error(
                    defined(option),
                    format!(
                        "ssh option \"{}\" is not of the form Key=Value",
                        option.value
                    ),
                    "write options as ssh -o takes them, e.g. `ServerAliveInterval=10`",
                ));
            }
        }
        let path = |key: fn(&RawSettings) -> &Option<Text>| {
            pick(key).map(|text| self.path(&text.value, name))
        };
        Ok(SshSpec {
            host: pick(|s| &s.host)
                .map_or_else(|| name.host.to_owned(), |text| expand(&text.value, name)),
            port,
            user: pick(|s| &s.user).map(|text| expand(&text.value, name)),
            identity_file: path(|s| &s.identity_file),
            config_file: path(|s| &s.ssh_config),
            known_hosts: path(|s| &s.known_hosts),
            accept_unknown_host_keys,
            options: options
                .into_iter()
                .flatten()
                .map(|o| o.value.clone())
                .collect(),
        })
    }

    fn flavor(&self, text: &Text) -> Result<Flavor, PlanError> {
        text.value.parse().map_err(|message: String| {
            self.error(
                defined(text),
                message,
                "write `flavor: mongooseim` (the default), `ejabberd`, `rabbitmq` or `relx`",
            )
        })
    }

    /// The files a node's flavor reads and edits, each with the plan location that set it.
    fn flavor_files<'r>(
        &self,
        flavor: Flavor,
        name: &NodeName,
        name_at: SourceLocation,
        own: &'r RawSettings,
        defaults: &'r RawSettings,
    ) -> Result<FlavorFiles, PlanError> {
        let pick = |key: fn(&'r RawSettings) -> &'r Option<Text>| -> Option<&'r Text> {
            key(own).as_ref().or(key(defaults).as_ref())
        };
        let refuse = |key: &str, text: &Text, why: &str| {
            Err(self.error(
                defined(text),
                format!("`{key}` does not apply to flavor {flavor}: {why}"),
                format!("remove `{key}` for this node, or set the node's `flavor`"),
            ))
        };
        fn require<'t>(
            resolver: &Resolver,
            name: &NodeName,
            name_at: SourceLocation,
            key: &str,
            text: Option<&'t Text>,
        ) -> Result<&'t Text, PlanError> {
            text.ok_or_else(|| {
                resolver.error(
                    name_at,
                    format!("node \"{}\" has no {key}", name.full),
                    where_to_set(key),
                )
            })
        }
        let required = |key: &str, text: Option<&'r Text>| require(self, name, name_at, key, text);
        match flavor {
            Flavor::MongooseIm | Flavor::Relx => {
                for key in ["flags_file", "cookie_file"] {
                    let text = if key == "flags_file" {
                        pick(|s| &s.flags_file)
                    } else {
                        pick(|s| &s.cookie_file)
                    };
                    if let Some(text) = text {
                        return refuse(
                            key,
                            text,
                            "its flags and cookie are in vm.args / vm.dist.args",
                        );
                    }
                }
                let vm_args = required("vm_args", pick(|s| &s.vm_args))?;
                let dist_args = if flavor == Flavor::MongooseIm {
                    required("vm_dist_args", pick(|s| &s.vm_dist_args))?
                } else {
                    if let Some(text) = pick(|s| &s.vm_dist_args) {
                        return refuse(
                            "vm_dist_args",
                            text,
                            "relx's flags go into vm.args (`vm_args`)",
                        );
                    }
                    vm_args
                };
                Ok(FlavorFiles {
                    flags_file: self.path(&dist_args.value, name),
                    flags_at: referenced(dist_args),
                    identity_file: self.path(&vm_args.value, name),
                    identity_at: referenced(vm_args),
                    cookie_file: None,
                })
            }
            Flavor::Ejabberd | Flavor::RabbitMq => {
                for (key, text) in [
                    ("vm_dist_args", pick(|s| &s.vm_dist_args)),
                    ("vm_args", pick(|s| &s.vm_args)),
                ] {
                    if let Some(text) = text {
                        return refuse(
                            key,
                            text,
                            "its flags, node name and cookie location are in `flags_file`",
                        );
                    }
                }
                let (flags_file, flags_at) = match pick(|s| &s.flags_file) {
                    Some(text) => (self.path(&text.value, name), referenced(text)),
                    None => (
                        PathBuf::from(flavor.default_flags_file().unwrap_or_default()),
                        name_at,
                    ),
                };
                let cookie_file = match pick(|s| &s.cookie_file) {
                    Some(text) => self.path(&text.value, name),
                    None => PathBuf::from(flavor.default_cookie_file().unwrap_or_default()),
                };
                Ok(FlavorFiles {
                    flags_file: flags_file.clone(),
                    flags_at,
                    identity_file: flags_file,
                    identity_at: flags_at,
                    cookie_file: Some(cookie_file),
                })
            }
        }
    }

    fn transport(&self, text: &Text) -> Result<TransportKind, PlanError> {
        match text.value.as_str() {
            "local" => Ok(TransportKind::Local),
            "ssh" => Ok(TransportKind::Ssh),
            other => Err(self.error(
                defined(text),
                format!("unknown transport \"{other}\""),
                "use `transport: local` or `transport: ssh`",
            )),
        }
    }

    fn duration(&self, key: &str, text: &Text) -> Result<Duration, PlanError> {
        match humantime::parse_duration(text.value.trim()) {
            Ok(duration) if duration.is_zero() => Err(self.error(
                defined(text),
                format!("timeouts.{key} must be longer than zero"),
                DURATION_HINT,
            )),
            Ok(duration) => Ok(duration),
            Err(err) => Err(self.error(
                defined(text),
                format!("timeouts.{key} \"{}\" is not a duration: {err}", text.value),
                DURATION_HINT,
            )),
        }
    }

    /// Paths and commands must be non-empty and use only known placeholders.
    fn check_template(&self, key: &str, text: &Text) -> Result<(), PlanError> {
        if text.value.trim().is_empty() {
            return Err(self.error(
                defined(text),
                format!("{key} is empty"),
                format!("give {key} a value, or remove the key"),
            ));
        }
        if key.starts_with("tls.") && text.value.contains(['\n', '\r', '\0']) {
            return Err(self.error(
                defined(text),
                format!("{key} contains a line break or a NUL byte"),
                "vm.dist.args cannot carry such a path: move or link the file to a path without one",
            ));
        }
        match find_bad_placeholder(&text.value) {
            None => Ok(()),
            Some(BadPlaceholder::Unclosed(range)) => Err(self.error(
                self.locate_within(text, range),
                format!("unclosed placeholder in {key}: a `{{` without `}}`"),
                format!("close it; {PLACEHOLDERS_HINT}"),
            )),
            Some(BadPlaceholder::Unknown(range)) => {
                let written = &text.value[range.clone()];
                let inner = &written[1..written.len() - 1];
                let preceded_by_dollar = text.value[..range.start].ends_with('$');
                let hint = if let Some(close) = closest(inner, &PLACEHOLDERS) {
                    format!("did you mean {{{close}}}? {PLACEHOLDERS_HINT}")
                } else if preceded_by_dollar {
                    format!(
                        "write shell variables as ${inner}: {{...}} is reserved for placeholders; {PLACEHOLDERS_HINT}"
                    )
                } else {
                    PLACEHOLDERS_HINT.to_owned()
                };
                Err(self.error(
                    self.locate_within(text, range),
                    format!("unknown placeholder {written} in {key}"),
                    hint,
                ))
            }
        }
    }

    /// The location of a part of a string value. Exact when the value is written on one
    /// line as-is (plain, or quoted without escapes); otherwise the whole value.
    fn locate_within(&self, text: &Text, range: Range<usize>) -> SourceLocation {
        let whole = defined(text);
        let span = text.defined.span();
        let (Some(offset), Some(length)) = (span.byte_offset(), span.byte_len()) else {
            return whole;
        };
        let (Ok(offset), Ok(length)) = (usize::try_from(offset), usize::try_from(length)) else {
            return whole;
        };
        let Some(written) = self.text.text.get(offset..offset + length) else {
            return whole;
        };
        let value = text.value.as_str();
        let quote_width = if written == value {
            0
        } else if written.len() == value.len() + 2
            && (written.starts_with('"') || written.starts_with('\''))
            && &written[1..written.len() - 1] == value
        {
            1
        } else {
            return whole;
        };
        if written.contains('\n') {
            return whole;
        }
        let before = u32::try_from(value[..range.start].chars().count()).unwrap_or(0);
        SourceLocation {
            line: whole.line,
            column: whole.column + quote_width + before,
            width: u32::try_from(value[range].chars().count()).unwrap_or(1),
        }
    }

    fn path(&self, template: &str, name: &NodeName) -> PathBuf {
        let path = PathBuf::from(expand(template, name));
        if path.is_relative() {
            self.plan_dir.join(path)
        } else {
            path
        }
    }

    fn check_distinct_dist_args(&self, nodes: &[NodeSpec]) -> Result<(), PlanError> {
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
                Flavor::Ejabberd | Flavor::RabbitMq => "flags_file",
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

fn where_to_set(key: &str) -> String {
    match key.split_once('.') {
        Some((section, leaf)) => format!(
            "set `{leaf}` under `{section}:` in `defaults:` (for every node) or in this node's entry"
        ),
        None => format!("set `{key}` under `defaults:` (for every node) or in this node's entry"),
    }
}

fn is_sname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

enum BadPlaceholder {
    Unclosed(Range<usize>),
    Unknown(Range<usize>),
}

/// Every `{` opens a placeholder, so a typo such as `{snmae}` or `{sname` cannot slip
/// through as literal text.
fn find_bad_placeholder(template: &str) -> Option<BadPlaceholder> {
    let mut rest_start = 0;
    while let Some(open) = template[rest_start..].find('{').map(|i| rest_start + i) {
        let Some(close) = template[open..].find('}').map(|i| open + i) else {
            return Some(BadPlaceholder::Unclosed(open..open + 1));
        };
        if !PLACEHOLDERS.contains(&&template[open + 1..close]) {
            return Some(BadPlaceholder::Unknown(open..close + 1));
        }
        rest_start = close + 1;
    }
    None
}

/// Substitutes placeholders; the template was checked by `find_bad_placeholder`.
fn expand(template: &str, name: &NodeName) -> String {
    template
        .replace("{name}", name.full)
        .replace("{sname}", name.sname)
        .replace("{host}", name.host)
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
