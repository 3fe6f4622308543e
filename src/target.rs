//! What distls knows about each node before it touches anything: its identity (from vm.args), its
//! original vm.dist.args, and the TLS-enabled text it will write. Everything here is read-only.

use crate::argsfile::{self, ArgsFileError, Cookie, ErrorKind, NodeIdentity, TlsEdit};
use crate::atomic_file::sha256_hex;
use crate::error::{Error, Message, Result};
use crate::flavor::{self, Flavor, FlavorError};
use crate::journal::Journal;
use crate::node_ports::{self, NodePorts};
use crate::plan::{NodeSpec, Plan};
use crate::probe::ProbeArgs;
use crate::transport::{Transport, TransportError};
use std::path::{Path, PathBuf};

/// The suffix of the one-time backup written next to vm.dist.args before its first change.
pub const BACKUP_SUFFIX: &str = ".distls-orig";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Byte-identical to the original (plain TCP).
    Original,
    /// Byte-identical to the TLS text distls writes.
    Tls,
    /// Neither: somebody else changed it.
    Foreign,
}

#[derive(Clone)]
pub struct NodeTarget {
    pub spec: NodeSpec,
    pub transport: Transport,
    pub identity: NodeIdentity,
    /// The real file (symlinks followed), and its backup beside it.
    pub dist_args: PathBuf,
    pub backup: PathBuf,
    /// Whether the backup was there when the node was read, looked up on the node's host (the
    /// dry run says whether it will write it).
    pub backup_exists: bool,
    pub original: String,
    pub tls: TlsEdit,
    pub current: String,
    /// The flags file as it was before distls first changed it: what the backup holds. Equal to
    /// `original` except in a zero-split roll, whose `original` is the roll's starting text.
    pub pristine: String,
    /// The `-ssl_dist_optfile` distls writes next to the flags file (flavors other than mongooseim).
    pub optfile: Option<OptFile>,
    /// Whether `original` points at the optfile too, so going back to it keeps the optfile: false
    /// for the plain original; true in a zero-split roll that starts from a hybrid or TLS stage.
    pub original_uses_optfile: bool,
    /// Whether the TLS text (`tls`) points at the optfile: true, except in a zero-split roll
    /// toward plain, whose last edit writes the plain original.
    pub tls_uses_optfile: bool,
    /// What the probe VMs are started with: the node's distribution flags as its ctl gets them.
    pub probe_plain: ProbeArgs,
    pub probe_tls: ProbeArgs,
    /// Where the node is found, as its own files say (the plan's `env` wins): the probes are
    /// started with it, and a node reported down is described with it.
    pub ports: NodePorts,
    /// The TLS settings as a vm.dist.args text, for the preflight's option checks and handshake
    /// (for flavors: the `-ssl_dist_opt` equivalent of the optfile).
    pub preflight_args: String,
}

/// A file distls creates for the TLS state and removes on rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptFile {
    pub path: PathBuf,
    pub text: String,
}

/// Each node's cookie, for the probes to dial it with.
pub fn cookies(targets: &[NodeTarget]) -> Vec<(String, Cookie)> {
    targets
        .iter()
        .filter_map(|t| t.identity.cookie.clone().map(|c| (t.name().to_string(), c)))
        .collect()
}

impl NodeTarget {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn original_sha256(&self) -> String {
        sha256_hex(self.original.as_bytes())
    }

    pub fn tls_sha256(&self) -> String {
        sha256_hex(self.tls.text.as_bytes())
    }

    pub fn classify(&self, text: &str) -> FileState {
        if text == self.original {
            FileState::Original
        } else if text == self.tls.text {
            FileState::Tls
        } else {
            FileState::Foreign
        }
    }

    /// Where this node's probe VMs run.
    pub fn probe_site(&self) -> crate::probe::ProbeSite<'_> {
        crate::probe::ProbeSite {
            transport: &self.transport,
            erl: &self.spec.erl,
            host: &self.spec.host,
        }
    }

    /// The probe arguments matching the flags file as it is now.
    pub fn current_probe_args(&self) -> ProbeArgs {
        if self.optfile.is_none() {
            return ProbeArgs {
                text: probe_text(&self.ports, &self.current),
                optfile: None,
            };
        }
        match self.classify(&self.current) {
            FileState::Tls => self.probe_tls.clone(),
            _ => self.probe_plain.clone(),
        }
    }

    pub async fn read_file_state(&self) -> Result<FileState> {
        let bytes = self.transport.read_file(&self.dist_args).await?;
        Ok(self.classify_bytes(&bytes))
    }

    /// [`Self::classify`] of the file's bytes: a file that is not UTF-8 is none of distls's texts.
    pub fn classify_bytes(&self, bytes: &[u8]) -> FileState {
        std::str::from_utf8(bytes).map_or(FileState::Foreign, |text| self.classify(text))
    }
}

/// Why a node's files cannot be migrated, tied to the preflight check that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    /// A preflight check id (docs/preflight.md).
    pub check: &'static str,
    pub message: String,
    pub fix: String,
}

impl NodeProblem {
    fn new(check: &'static str, message: String, fix: impl Into<String>) -> Self {
        NodeProblem {
            check,
            message,
            fix: fix.into(),
        }
    }
}

impl From<NodeProblem> for Error {
    fn from(problem: NodeProblem) -> Self {
        Error::InvalidInput(Message::new(problem.message).hint(problem.fix))
    }
}

/// An args file bigger than this is refused: real ones are a few kilobytes, and everything
/// distls does with the text (diff, journal hashes, the edit) is kept in memory.
pub const MAX_ARGS_FILE_BYTES: usize = 1024 * 1024;

/// A cookie file holds one line; anything bigger is not one.
const MAX_COOKIE_FILE_BYTES: u64 = 64 * 1024;

/// `FILE:LINE:COLUMN: node N: message` (or `FILE: node N: message` without a position).
fn args_problem(check: &'static str, path: &Path, node: &str, err: &ArgsFileError) -> NodeProblem {
    let at = (err.line, err.column);
    located_problem(check, path, at, node, &err.message, err.hint().to_string())
}

/// `FILE:LINE:COLUMN: node N: message`; line 0 means the file as a whole (`FILE: node N: …`).
fn located_problem(
    check: &'static str,
    path: &Path,
    (line, column): (usize, usize),
    node: &str,
    message: &str,
    hint: String,
) -> NodeProblem {
    let at = if line == 0 {
        String::new()
    } else {
        format!("{line}:{column}:")
    };
    NodeProblem::new(
        check,
        format!("{}:{at} node {node}: {message}", path.display()),
        hint,
    )
}

/// A file the safe layer refused or could not reach; its own hint (a link it does not follow:
/// what to do about that link) replaces the generic one.
fn file_problem(message: String, fix: &str) -> NodeProblem {
    let message = crate::message::Message::from_rendered(&message);
    let fix = message.hint.unwrap_or_else(|| fix.to_string());
    NodeProblem::new("plan.files", message.text, fix)
}

async fn read_text(
    transport: &Transport,
    path: &Path,
    node: &str,
    what: &str,
) -> Result<String, NodeProblem> {
    let bytes = match transport
        .read_file_limited(path, MAX_ARGS_FILE_BYTES as u64)
        .await
    {
        Ok(bytes) => bytes,
        Err(TransportError::TooLarge { size, .. }) => {
            return Err(NodeProblem::new(
                "plan.files",
                format!(
                    "{}: node {node}: its {what} is {size} bytes, more than the {MAX_ARGS_FILE_BYTES} distls accepts for an args file",
                    path.display(),
                ),
                "an args file holds a few flags; restore it from the release (e.g. from a backup), then run distls again",
            ));
        }
        Err(e) => {
            return Err(file_problem(
                format!("node {node}: cannot read its {what}: {e}"),
                "check the path in the plan and that distls (or `become`) may read it",
            ));
        }
    };
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        NodeProblem::new(
            "plan.files",
            format!(
                "{}:{line}:{column}: node {node}: its {what} is not UTF-8 text (byte 0x{:02x})",
                path.display(),
                err.as_bytes()[valid.len()]
            ),
            "an args file is plain text: save it as UTF-8 (or ASCII), or restore it from the release",
        )
    })
}

/// Read and check every node's files. Fails before anything is changed if any node cannot be migrated.
/// `transports[i]` reaches `plan.nodes[i]`.
pub async fn prepare(
    plan: &Plan,
    transports: &[Transport],
    journal: Option<&Journal>,
) -> Result<Vec<NodeTarget>> {
    plan.check_local_files()?;
    let mut targets = Vec::with_capacity(plan.nodes.len());
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        let target = read_node(spec, transport).await?;
        check_against_journal(&target, journal)?;
        targets.push(target);
    }
    check_consistent_naming(&targets)?;
    Ok(targets)
}

/// One node's identity, files and TLS text, without looking at any journal.
pub async fn read_node(spec: &NodeSpec, transport: &Transport) -> Result<NodeTarget, NodeProblem> {
    if spec.flavor != Flavor::MongooseIm {
        return read_flavor_node(spec, transport).await;
    }
    let name = spec.name.as_str();
    let vm_args_text = read_text(transport, &spec.vm_args, name, "vm.args").await?;
    if let Some(flag) = argsfile::proto_dist_in_vm_args(&vm_args_text) {
        return Err(NodeProblem::new(
            "plan.proto_dist",
            format!(
                "{}:{}:{}: node {name}: vm.args sets -proto_dist {}; it is read before vm.dist.args and the first -proto_dist wins silently, so the TLS switch would have no effect",
                spec.vm_args.display(),
                flag.line,
                flag.column,
                flag.value
            ),
            "delete that line from vm.args; distls enables TLS in vm.dist.args",
        ));
    }
    let identity = argsfile::node_identity(&vm_args_text)
        .map_err(|e| args_problem("plan.identity", &spec.vm_args, name, &e))?;
    check_identity(spec, &identity, "vm.args")?;
    let DistArgsFile {
        dist_args,
        backup,
        backup_exists,
        current,
        original,
    } = read_dist_args(spec, transport).await?;
    let paths = tls_paths(spec);
    let tls = argsfile::enable_tls(&original, &paths).map_err(|e| {
        let check = match e.kind {
            ErrorKind::UnknownOption => "tls.known_keys",
            _ => "plan.dist_args",
        };
        args_problem(check, &dist_args, name, &e)
    })?;
    let ports =
        node_ports::from_args_files(&[("vm.args", &vm_args_text), ("vm.dist.args", &original)])
            .without_plan_env(&spec.env);
    let probe_plain = ProbeArgs {
        text: probe_text(&ports, &original),
        optfile: None,
    };
    let probe_tls = ProbeArgs {
        text: probe_text(&ports, &tls.text),
        optfile: None,
    };
    let preflight_args = tls.text.clone();
    Ok(NodeTarget {
        spec: spec.clone(),
        transport: transport.clone(),
        identity,
        dist_args,
        backup,
        backup_exists,
        pristine: original.clone(),
        original,
        tls,
        current,
        optfile: None,
        original_uses_optfile: false,
        tls_uses_optfile: true,
        probe_plain,
        probe_tls,
        ports,
        preflight_args,
    })
}

/// A probe's args text: the node's epmd settings from its other files first (the first
/// `-epmd_port` wins), then its distribution flags.
fn probe_text(ports: &NodePorts, flags: &str) -> String {
    format!("{}{flags}", ports.probe_flags(flags))
}

fn flavor_problem(check: &'static str, path: &Path, node: &str, err: &FlavorError) -> NodeProblem {
    let at = (err.line, err.column);
    located_problem(check, path, at, node, &err.message, err.hint.clone())
}

/// ejabberd, RabbitMQ, relx: one flags file carries the distribution flags for server and ctl;
/// TLS adds `-proto_dist inet_tls -ssl_dist_optfile F` there and F next to it.
async fn read_flavor_node(
    spec: &NodeSpec,
    transport: &Transport,
) -> Result<NodeTarget, NodeProblem> {
    let name = spec.name.as_str();
    let label = spec.flavor.file_label();
    let DistArgsFile {
        dist_args,
        backup,
        backup_exists,
        current,
        original,
    } = read_dist_args(spec, transport).await?;
    // Next to the flags file as the plan names it (ejabberd's Debian ejabberdctl.cfg is a symlink
    // into /etc/default).
    let optfile_path = flavor::optfile_path(&spec.vm_dist_args);
    let (node_identity, flags_cookie) = flavor_identity(spec, &original)
        .map_err(|e| flavor_problem("plan.identity", &dist_args, name, &e))?;
    let cookie = flavor_cookie(spec, transport, flags_cookie).await?;
    let identity = NodeIdentity {
        name_flag: node_identity.name_flag,
        node_name: node_identity.node_name,
        cookie,
    };
    check_identity(spec, &identity, label)?;
    let edited = flavor_enable_tls(spec.flavor, &original, &optfile_path)
        .map_err(|e| flavor_problem("plan.dist_args", &dist_args, name, &e))?;
    let paths = tls_paths(spec);
    let optfile = OptFile {
        path: optfile_path,
        text: flavor::optfile_text(&paths),
    };
    if current == original {
        check_optfile_is_ours(transport, &optfile, name).await?;
    }
    let preflight_args = argsfile::enable_tls("", &paths)
        .map_err(|e| args_problem("plan.dist_args", &dist_args, name, &e))?
        .text;
    let ports = node_ports::from_flavor_file(spec.flavor, &original, &spec.env)
        .map_err(|e| flavor_problem("plan.dist_args", &dist_args, name, &e))?;
    let probe_plain = ProbeArgs {
        text: probe_text(&ports, ""),
        optfile: None,
    };
    let probe_tls = ProbeArgs {
        text: probe_text(&ports, "-proto_dist inet_tls\n"),
        optfile: Some(optfile.text.clone()),
    };
    Ok(NodeTarget {
        spec: spec.clone(),
        transport: transport.clone(),
        identity,
        dist_args,
        backup,
        backup_exists,
        pristine: original.clone(),
        original,
        tls: TlsEdit {
            text: edited,
            outcome: argsfile::EditOutcome::AppendedBlock,
        },
        current,
        optfile: Some(optfile),
        original_uses_optfile: false,
        tls_uses_optfile: true,
        probe_plain,
        probe_tls,
        ports,
        preflight_args,
    })
}

/// The node name a flavor's flags file gives, and the cookie when the flags file carries it
/// too (relx, elixir's RELEASE_COOKIE); the others keep the cookie in a file of its own.
fn flavor_identity(
    spec: &NodeSpec,
    flags: &str,
) -> Result<(flavor::FlavorIdentity, Option<argsfile::Cookie>), FlavorError> {
    match spec.flavor {
        Flavor::Ejabberd => Ok((flavor::ejabberd::identity(flags)?, None)),
        Flavor::RabbitMq => Ok((flavor::rabbitmq::identity(flags, &spec.host)?, None)),
        Flavor::Relx => flavor::relx::identity(flags),
        Flavor::Elixir => flavor::elixir::identity(flags, &spec.host),
        Flavor::MongooseIm => unreachable!("handled by read_node"),
    }
}

/// The node's cookie: the one its flags file sets, else the one in its `cookie_file`.
async fn flavor_cookie(
    spec: &NodeSpec,
    transport: &Transport,
    flags_cookie: Option<argsfile::Cookie>,
) -> Result<Option<argsfile::Cookie>, NodeProblem> {
    match (&spec.cookie_file, flags_cookie) {
        (_, Some(cookie)) => Ok(Some(cookie)),
        (Some(file), None) => Ok(Some(read_cookie_file(transport, file, &spec.name).await?)),
        (None, None) => Ok(None),
    }
}

/// Reads a cookie file on the node's host: UTF-8 text, not empty once trimmed.
async fn read_cookie_file(
    transport: &Transport,
    file: &Path,
    name: &str,
) -> Result<argsfile::Cookie, NodeProblem> {
    let bytes = transport.read_file_limited(file, MAX_COOKIE_FILE_BYTES).await.map_err(|e| {
        NodeProblem::new(
            "plan.identity",
            format!("node {name}: cannot read its cookie file {}: {e}", file.display()),
            "set `cookie_file` in the plan to the service user's ~/.erlang.cookie, readable by distls (or `become`)",
        )
    })?;
    // The cookie as its bytes say, or refused: a replaced byte would be another cookie.
    let secret = String::from_utf8(bytes).map_err(|_| {
        NodeProblem::new(
            "plan.identity",
            format!(
                "node {name}: its cookie file {} is not UTF-8 text",
                file.display()
            ),
            "distls reads the cookie as UTF-8 text; point `cookie_file` at the node's cookie",
        )
    })?;
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err(NodeProblem::new(
            "plan.identity",
            format!("node {name}: its cookie file {} is empty", file.display()),
            "point `cookie_file` at the file the node really uses",
        ));
    }
    Ok(argsfile::Cookie::new(secret))
}

/// The flags file with the flavor's TLS flags added, pointing at `optfile`.
fn flavor_enable_tls(
    flavor: Flavor,
    original: &str,
    optfile: &Path,
) -> Result<String, FlavorError> {
    match flavor {
        Flavor::Ejabberd => flavor::ejabberd::enable_tls(original, optfile),
        Flavor::RabbitMq => flavor::rabbitmq::enable_tls(original, optfile),
        Flavor::Elixir => flavor::elixir::enable_tls(original, optfile),
        _ => flavor::relx::enable_tls(original, optfile),
    }
}

/// Never overwrite (and later delete) a file distls did not write: an optfile already there
/// must hold exactly the text distls would write for this plan.
async fn check_optfile_is_ours(
    transport: &Transport,
    optfile: &OptFile,
    name: &str,
) -> Result<(), NodeProblem> {
    if !transport.file_exists(&optfile.path).await {
        return Ok(());
    }
    let move_it =
        "move that file away (distls writes and, on rollback, removes it), then run distls again";
    match transport.read_file(&optfile.path).await {
        Ok(there) if there == optfile.text.as_bytes() => Ok(()),
        Ok(_) => Err(NodeProblem::new(
            "plan.files",
            format!(
                "node {name}: {} already exists and was not written by distls for this plan",
                optfile.path.display()
            ),
            move_it,
        )),
        Err(e) => Err(file_problem(
            format!("node {name}: its optfile is there but cannot be read: {e}"),
            move_it,
        )),
    }
}

/// A node's vm.dist.args as it is now, and as it was before distls first changed it.
pub struct DistArgsFile {
    /// The real file (symlinks followed), and its backup beside it.
    pub dist_args: PathBuf,
    pub backup: PathBuf,
    /// Whether the backup was there when the node was read (on the node's host).
    pub backup_exists: bool,
    pub current: String,
    pub original: String,
}

pub async fn read_dist_args(
    spec: &NodeSpec,
    transport: &Transport,
) -> Result<DistArgsFile, NodeProblem> {
    let name = spec.name.as_str();
    let dist_args = transport
        .canonicalize(&spec.vm_dist_args)
        .await
        .map_err(|e| {
            file_problem(
                format!("node {name}: {}: {e}", spec.vm_dist_args.display()),
                "fix the vm_dist_args path in the plan",
            )
        })?;
    let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", dist_args.display()));
    let current = read_text(transport, &dist_args, name, "vm.dist.args").await?;
    let backup_exists = transport.try_exists(&backup).await.map_err(|e| {
        file_problem(
            format!("node {name}: its backup: {e}"),
            "the backup is distls's own file: remove whatever is at that name, then run distls again",
        )
    })?;
    let original = if backup_exists {
        read_text(transport, &backup, name, "backup").await?
    } else {
        current.clone()
    };
    Ok(DistArgsFile {
        dist_args,
        backup,
        backup_exists,
        current,
        original,
    })
}

/// The plan's certificate paths as they are written into the flags.
fn tls_paths(spec: &NodeSpec) -> argsfile::TlsPaths {
    argsfile::TlsPaths {
        certfile: spec.tls.certfile.display().to_string(),
        keyfile: spec.tls.keyfile.display().to_string(),
        cacertfile: spec.tls.cacertfile.display().to_string(),
    }
}

/// `label`: what the file that names the node is called (`vm.args`, `ejabberdctl.cfg`, …).
fn check_identity(
    spec: &NodeSpec,
    identity: &NodeIdentity,
    label: &str,
) -> Result<(), NodeProblem> {
    let vm_name = identity.node_name.as_str();
    let matches = vm_name == spec.name || (!vm_name.contains('@') && vm_name == spec.sname);
    if !matches {
        return Err(NodeProblem::new(
            "plan.identity",
            format!(
                "node {}: its {label} {} names the node {vm_name}",
                spec.name,
                spec.vm_args.display()
            ),
            "the plan's node name must be the name the node runs under",
        ));
    }
    if identity.cookie.is_none() {
        return Err(NodeProblem::new(
            "plan.identity",
            format!(
                "node {}: its {label} {} has no -setcookie line",
                spec.name,
                spec.vm_args.display()
            ),
            format!(
                "distls reaches the node the way its ctl does, with the cookie from its {label}"
            ),
        ));
    }
    Ok(())
}

fn check_against_journal(target: &NodeTarget, journal: Option<&Journal>) -> Result<()> {
    if target.classify(&target.current) == FileState::Foreign {
        return Err(changed_outside(target, "the TLS text distls writes"));
    }
    check_original_hash(target, journal)
}

/// The current file is none of the texts distls writes (`writes`).
pub(crate) fn changed_outside(target: &NodeTarget, writes: &str) -> Error {
    Error::NeedsOperator(Message::new(format!("node {}: {} differs both from its original (backup {}) and from {writes}; it was changed outside distls", target.name(), target.dist_args.display(), target.backup.display())).hint("restore it from the backup, or delete the backup if the new text is the one to migrate from"))
}

/// The original (backup) is the one the journal's run started from.
pub(crate) fn check_original_hash(target: &NodeTarget, journal: Option<&Journal>) -> Result<()> {
    let name = target.name();
    let Some(record) = journal.and_then(|j| j.node(name)) else {
        return Ok(());
    };
    if record.original_sha256 != target.original_sha256() {
        return Err(Error::NeedsOperator(Message::new(format!("node {name}: the journal recorded an original vm.dist.args with sha256 {} but the backup/current file has {}", record.original_sha256, target.original_sha256())).hint(format!("restore {} from the journal's run, or move the journal away to start over", target.backup.display()))));
    }
    Ok(())
}

pub(crate) fn check_consistent_naming(targets: &[NodeTarget]) -> Result<()> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    for target in targets {
        if target.identity.name_flag != first.identity.name_flag {
            return Err(Error::InvalidInput(Message::new(format!("node {} uses {} but node {} uses {}; Erlang nodes with short and long names cannot talk to each other", target.name(), target.identity.name_flag.flag(), first.name(), first.identity.name_flag.flag())).hint("fix the vm.args of one of them")));
        }
    }
    Ok(())
}
