//! Before a rotation changes anything: what each node runs with (asked from the node itself),
//! what its files hold, what the operator's new files hold, and whether every moment of the
//! rotation keeps every pair of nodes able to link. Read-only.

use super::journal::{Move, RotationJournal, RunState};
use super::moves::{self, FileKind, NodeFile, NodeFiles, PlannedMove};
use super::trust::{self, NodeTrust, TrustChange};
use super::{Request, new_journal};
use crate::atomic_file::sha256_hex;
use crate::cert_info::pem_certificates;
use crate::error::{Error, Message, Result};
use crate::plan::Plan;
use crate::preflight::Severity;
use crate::preflight::certs::{self, Clock, TlsMaterial};
use crate::probe::{NodeInfo, Probe, ProbePool, TlsFiles};
use crate::target::NodeTarget;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The OTP internal a rotation relies on: ssl's own PEM cache instance for the distribution.
const PEM_CACHE_NEED: &str = "ssl_pem_cache:start_link_dist/1";

/// A node as a rotation reaches it: its TLS probe (started with the node's own files), the OS
/// pid it runs as (a rotation must not change it) and the files its running options name.
pub struct RotationNode<'a> {
    pub target: &'a NodeTarget,
    pub probe: Arc<Probe>,
    pub os_pid: u32,
    pub files: TlsFiles,
}

/// The node's probe that speaks TLS with the node's own files (as its flags file is now).
async fn tls_probe(probes: &ProbePool, target: &NodeTarget) -> Result<Arc<Probe>> {
    Ok(probes
        .probe_for(&target.probe_site(), &target.current_probe_args(), "tls")
        .await?)
}

fn refused(node: &str, what: String, hint: &str) -> Error {
    Error::Refused(Message::new(format!("{node}: {what}")).hint(hint.to_string()))
}

pub async fn nodes<'a>(
    probes: &ProbePool,
    targets: &'a [NodeTarget],
) -> Result<Vec<RotationNode<'a>>> {
    let mut nodes = Vec::new();
    for target in targets {
        let name = target.name();
        let probe = tls_probe(probes, target).await?;
        let info = probe.info(name).await?;
        let NodeInfo::Up { os_pid, .. } = info else {
            return Err(refused(
                name,
                "is not reachable over TLS distribution".into(),
                "a rotation needs every node running TLS: start it, or `distls migrate` first",
            ));
        };
        // A zero-split run ends on distls's sealed module, which speaks TLS through inet_tls_dist
        // (the same PEM cache) until the node's next restart boots stock TLS.
        if !info.runs_tls() && info.proto_dist() != Some("distls_hybrid:sealed") {
            return Err(refused(
                name,
                format!(
                    "runs {}, not TLS distribution",
                    info.proto_dist().unwrap_or("?")
                ),
                "finish the migration first: distls migrate PLAN",
            ));
        }
        // One question per probe VM (per host and flags text), not per node.
        let asked = nodes
            .iter()
            .any(|n: &RotationNode| Arc::ptr_eq(&n.probe, &probe));
        if !asked && !probe.lacks(&[PEM_CACHE_NEED.to_string()]).await?.is_empty() {
            return Err(refused(
                name,
                format!(
                    "the OTP on its host lacks {PEM_CACHE_NEED} (ssl's distribution PEM cache), which a rotation clears"
                ),
                "rotate it with a rolling restart instead: the new files are read at boot",
            ));
        }
        let files = probe.tls_files(name).await?;
        check_options(target, &files)?;
        nodes.push(RotationNode {
            target,
            probe,
            os_pid,
            files,
        });
    }
    Ok(nodes)
}

/// For `--rollback`: every node of the plan, whatever it runs (its pid unknown: 0). The files
/// a rollback restores are in the journal, not asked from the nodes.
pub async fn nodes_for_rollback<'a>(
    probes: &ProbePool,
    targets: &'a [NodeTarget],
) -> Result<Vec<RotationNode<'a>>> {
    let mut nodes = Vec::new();
    for target in targets {
        let probe = tls_probe(probes, target).await?;
        nodes.push(RotationNode {
            target,
            probe,
            os_pid: 0,
            files: TlsFiles::default(),
        });
    }
    Ok(nodes)
}

/// The node's running options must name files (not inline DER), and the plan's `tls` must name
/// the same: the plan describes what runs, `--to` what comes.
fn check_options(target: &NodeTarget, files: &TlsFiles) -> Result<()> {
    let name = target.name();
    if let Some(inline) = files.inline().first() {
        return Err(refused(
            name,
            format!("its distribution options give {inline} inline, not as a file"),
            "a rotation replaces files: change the options to name files (a restart), then rotate",
        ));
    }
    for (kind, plan_path) in [
        (FileKind::Certfile, &target.spec.tls.certfile),
        (FileKind::Keyfile, &target.spec.tls.keyfile),
        (FileKind::Cacertfile, &target.spec.tls.cacertfile),
    ] {
        let running = files.paths(kind.label());
        if running.is_empty() {
            return Err(refused(
                name,
                format!("its running distribution options name no {}", kind.label()),
                "a rotation replaces the files the options name: add the option (a restart), then rotate",
            ));
        }
        if running.iter().any(|p| p != plan_path) {
            let shown: Vec<String> = running.iter().map(|p| p.display().to_string()).collect();
            return Err(refused(
                name,
                format!(
                    "runs with {} {}, the plan's tls.{} is {}",
                    kind.label(),
                    shown.join(", "),
                    kind.label(),
                    plan_path.display()
                ),
                "make the plan's `tls` name the files the nodes run with; name the new files with --to",
            ));
        }
    }
    Ok(())
}

pub struct Rotation {
    pub journal: RotationJournal,
    pub planned: Vec<PlannedMove>,
}

pub async fn rotation(
    plan: &Plan,
    nodes: &[RotationNode<'_>],
    request: &Request,
    existing: Option<&RotationJournal>,
) -> Result<Rotation> {
    check_request(request)?;
    let resume = existing.filter(|j| j.state == RunState::Rotating);
    let mut files = Vec::new();
    for node in nodes {
        files.push(node_files(node, request, resume).await?);
    }
    check_shared_paths(nodes, &files)?;
    let planned = moves::plan(&files, request.ca_rollover);
    check_certificates(nodes, &files)?;
    check_trust(&files, &planned, request.ca_rollover)?;
    let records: Vec<Move> = planned
        .iter()
        .map(|m| moves::journal_move(m, &files[m.node].name))
        .collect();
    let journal = new_journal(plan, records, request.ca_rollover);
    if let Some(under_way) = resume
        && under_way.target_sha256 != journal.target_sha256
    {
        return Err(Error::Refused(Message::new(format!(
            "a rotation to other files is under way (begun {})",
            under_way.created_at
        ))
        .hint("rerun with the same --to files to finish it, or roll it back: distls rotate --rollback PLAN")));
    }
    Ok(Rotation { journal, planned })
}

/// Nodes on one host whose options name the same file share it: the first one's move writes it
/// for all, so they must be given the same new bytes (one file cannot hold two certificates).
fn check_shared_paths(nodes: &[RotationNode<'_>], files: &[NodeFiles]) -> Result<()> {
    let mut seen: Vec<(String, &Path, &str, Option<&Vec<u8>>)> = Vec::new();
    for (node, node_files) in nodes.iter().zip(files) {
        let site = node.target.transport.site();
        for file in &node_files.files {
            for path in &file.paths {
                let earlier = seen
                    .iter()
                    .find(|(s, p, _, _)| *s == site && *p == path.as_path());
                match earlier {
                    Some((_, _, other, new)) if *new != file.new.as_ref() => {
                        return Err(refused(
                            node.target.name(),
                            format!(
                                "shares {} with {other}, but --to gives the two nodes different new files for it",
                                path.display()
                            ),
                            "give nodes that share a file the same new file, or give each node files of its own (a restart)",
                        ));
                    }
                    Some(_) => {}
                    None => seen.push((site.clone(), path, node.target.name(), file.new.as_ref())),
                }
            }
        }
    }
    Ok(())
}

fn check_request(request: &Request) -> Result<()> {
    if request.to.is_empty() {
        return Err(Error::InvalidInput(Message::new("no new files named".to_string()).hint(
            "name them with --to certfile=PATH --to keyfile=PATH [--to cacertfile=PATH] (placeholders {name}, {sname}, {host})",
        )));
    }
    let has = |kind| request.to.iter().any(|(k, _)| *k == kind);
    if has(FileKind::Certfile) != has(FileKind::Keyfile) {
        return Err(Error::InvalidInput(
            Message::new(
                "a new certificate needs its new key, and a new key its certificate".to_string(),
            )
            .hint("give both --to certfile=… and --to keyfile=…"),
        ));
    }
    if request.ca_rollover && !FileKind::ALL.into_iter().all(has) {
        return Err(Error::InvalidInput(
            Message::new(
                "a CA rollover needs the new CA and every node's new certificate and key"
                    .to_string(),
            )
            .hint("give --to certfile=… --to keyfile=… --to cacertfile=…"),
        ));
    }
    Ok(())
}

async fn node_files(
    node: &RotationNode<'_>,
    request: &Request,
    resume: Option<&RotationJournal>,
) -> Result<NodeFiles> {
    let name = node.target.name();
    let transport = &node.target.transport;
    let mut files: Vec<NodeFile> = Vec::new();
    for kind in FileKind::ALL {
        let paths = node.files.paths(kind.label());
        if let Some(other) = files
            .iter()
            .find(|f| f.paths.iter().any(|p| paths.contains(p)))
        {
            return Err(refused(
                name,
                format!(
                    "its options name one file as both {} and {}",
                    other.kind.label(),
                    kind.label()
                ),
                "a rotation writes each kind of file on its own: give the certificate and the key (and the CA) separate files (a restart), then rotate",
            ));
        }
        let mut original = None;
        for path in &paths {
            let real = transport.canonicalize(path).await?;
            if &real != path {
                return Err(refused(
                    name,
                    format!(
                        "{} is a link (to {}); distls replaces files, never what a link points at",
                        path.display(),
                        real.display()
                    ),
                    "point the node's options at the real file (a restart), or replace the file yourself and rotate with --to naming it",
                ));
            }
            let bytes = original_bytes(node, path, resume).await?;
            if original.as_ref().is_some_and(|o| o != &bytes) {
                return Err(refused(
                    name,
                    format!(
                        "its options name two {} files with different contents",
                        kind.label()
                    ),
                    "make them one file",
                ));
            }
            original = Some(bytes);
        }
        let original = original.unwrap_or_default();
        let new = match request.to.iter().find(|(k, _)| *k == kind) {
            Some((_, template)) => {
                let path =
                    crate::plan::expand_for_node(template, &node.target.spec).map_err(|e| {
                        Error::InvalidInput(Message::new(format!("--to {}: {e}", kind.label())))
                    })?;
                let bytes = transport.read_file(Path::new(&path)).await?;
                (bytes != original).then_some(bytes)
            }
            None => None,
        };
        files.push(NodeFile {
            kind,
            paths,
            original,
            new,
        });
    }
    Ok(NodeFiles {
        name: name.to_string(),
        files,
    })
}

/// What the file held before the rotation: itself, or (a resumed rotation that already
/// changed it) the before-copy of its first move, each checked against the journal's hash.
async fn original_bytes(
    node: &RotationNode<'_>,
    path: &PathBuf,
    resume: Option<&RotationJournal>,
) -> Result<Vec<u8>> {
    let transport = &node.target.transport;
    let live = transport.read_file(path).await?;
    let first = resume.and_then(|j| {
        j.moves
            .iter()
            .filter(|m| m.node == node.target.name())
            .flat_map(|m| m.files.iter())
            .find(|f| &f.path == path)
    });
    let Some(first) = first else {
        return Ok(live);
    };
    if sha256_hex(&live) == first.before_sha256 {
        return Ok(live);
    }
    if let Ok(backup) = transport.read_file(&first.backup).await
        && sha256_hex(&backup) == first.before_sha256
    {
        return Ok(backup);
    }
    Err(Error::NeedsOperator(Message::new(format!(
        "{}: neither {} nor its before-copy {} holds what the rotation journal says it held",
        node.target.name(),
        path.display(),
        first.backup.display()
    ))))
}

/// Everything `distls check` verifies of a node's certificate, on the set each node ends with.
fn check_certificates(nodes: &[RotationNode<'_>], files: &[NodeFiles]) -> Result<()> {
    let clock = Clock {
        now: SystemTime::now(),
        expiry_window: Duration::from_secs(30 * 86_400),
    };
    let mut failures = Vec::new();
    for (node, files) in nodes.iter().zip(files) {
        let end = |kind| {
            files
                .file(kind)
                .map(|f| f.new.clone().unwrap_or_else(|| f.original.clone()))
                .unwrap_or_default()
        };
        let (cert, key) = (end(FileKind::Certfile), end(FileKind::Keyfile));
        let ca = end(FileKind::Cacertfile);
        let tls = &node.target.spec.tls;
        let material = TlsMaterial {
            cert_path: &tls.certfile.to_string_lossy(),
            cert: &cert,
            key_path: &tls.keyfile.to_string_lossy(),
            key: &key,
            ca_path: &tls.cacertfile.to_string_lossy(),
            ca: &ca,
        };
        for verdict in certs::check(&material, &node.target.spec.host, clock) {
            if verdict.severity == Severity::Fail {
                failures.push(format!(
                    "{}: {} (new set): {}",
                    node.target.name(),
                    verdict.check,
                    verdict.message
                ));
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(
        Message::new(format!(
            "the new certificates fail preflight; nothing was changed:\n  {}",
            failures.join("\n  ")
        ))
        .hint("fix the new files, then rerun"),
    ))
}

/// Every pair of nodes can open a new link before the first move and after each one.
fn check_trust(files: &[NodeFiles], planned: &[PlannedMove], ca_rollover: bool) -> Result<()> {
    let certs_of = |bytes: &[u8]| pem_certificates(bytes).unwrap_or_default();
    let start: Vec<NodeTrust> = files
        .iter()
        .map(|f| NodeTrust {
            name: f.name.clone(),
            chain: f
                .file(FileKind::Certfile)
                .map(|c| certs_of(&c.original))
                .unwrap_or_default(),
            cas: f
                .file(FileKind::Cacertfile)
                .map(|c| certs_of(&c.original))
                .unwrap_or_default(),
        })
        .collect();
    let changes: Vec<TrustChange> = planned
        .iter()
        .map(|m| TrustChange {
            label: format!("{} {}", m.phase.label(), files[m.node].name),
            node: m.node,
            chain: m.after(FileKind::Certfile).map(certs_of),
            cas: m.after(FileKind::Cacertfile).map(certs_of),
        })
        .collect();
    trust::check_moments(start, &changes, SystemTime::now()).map_err(|broken| {
        let hint = if ca_rollover {
            "every new leaf must chain to the new CA, and every old one to the old CA"
        } else {
            "a leaf from a CA the other nodes do not trust yet needs a CA rollover: add --ca-rollover (trust both, new leaves, trust only the new CA)"
        };
        Error::Refused(Message::new(format!("the rotation would break new links; nothing was changed: {}", broken.describe())).hint(hint))
    })
}
