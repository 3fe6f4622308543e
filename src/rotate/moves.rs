//! What a rotation changes, as data: per node, the files its running options name and what each
//! holds before and after every move. Pure: bytes in, moves out.

use super::journal::{FileChange, Move, MoveStep, RotationPhase};
use crate::atomic_file::sha256_hex;
use std::path::{Path, PathBuf};

/// The three kinds of file a distribution's options name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Certfile,
    Keyfile,
    Cacertfile,
}

impl FileKind {
    pub const ALL: [FileKind; 3] = [FileKind::Certfile, FileKind::Keyfile, FileKind::Cacertfile];

    pub fn label(self) -> &'static str {
        match self {
            FileKind::Certfile => "certfile",
            FileKind::Keyfile => "keyfile",
            FileKind::Cacertfile => "cacertfile",
        }
    }

    pub fn parse(text: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.label() == text)
    }
}

/// One kind of file on one node: the path(s) its options name, what they hold before the
/// rotation, and what the operator asked them to hold (`None`: unchanged).
#[derive(Debug, Clone)]
pub struct NodeFile {
    pub kind: FileKind,
    pub paths: Vec<PathBuf>,
    pub original: Vec<u8>,
    pub new: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub name: String,
    pub files: Vec<NodeFile>,
}

impl NodeFiles {
    pub fn file(&self, kind: FileKind) -> Option<&NodeFile> {
        self.files.iter().find(|f| f.kind == kind)
    }
}

/// A move with the bytes it writes (kept out of the journal: keys are never written there).
#[derive(Debug, Clone)]
pub struct PlannedMove {
    pub phase: RotationPhase,
    pub node: usize,
    pub writes: Vec<Write>,
    pub leaf_before: Vec<u8>,
    pub leaf_after: Vec<u8>,
}

impl PlannedMove {
    /// What the move writes into the node's file of `kind`, when it changes it.
    pub fn after(&self, kind: FileKind) -> Option<&[u8]> {
        self.writes
            .iter()
            .find(|w| w.kind == kind)
            .map(|w| w.after.as_slice())
    }
}

#[derive(Debug, Clone)]
pub struct Write {
    pub kind: FileKind,
    pub path: PathBuf,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
}

/// Where a file's content before `phase` is kept, beside it (the file's owner, mode 0600).
pub fn backup_path(path: &Path, phase: RotationPhase) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".distls-rotate-{}", phase.label()));
    PathBuf::from(name)
}

/// The moves, in order. A plain rotation: one `leaves` move per node that has anything new.
/// A CA rollover: every node trusts old and new CA, then every node gets its new leaf, then
/// every node trusts only the new CA.
pub fn plan(nodes: &[NodeFiles], ca_rollover: bool) -> Vec<PlannedMove> {
    let mut moves = Vec::new();
    if ca_rollover {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(ca) = node.file(FileKind::Cacertfile)
                && let Some(new) = &ca.new
            {
                let both = bundle(&ca.original, new);
                moves.push(planned(i, RotationPhase::TrustBoth, &[(ca, both)]));
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let mut writes = Vec::new();
        for kind in [FileKind::Certfile, FileKind::Keyfile] {
            if let Some(file) = node.file(kind)
                && let Some(new) = &file.new
            {
                writes.push((file, new.clone()));
            }
        }
        if !ca_rollover
            && let Some(ca) = node.file(FileKind::Cacertfile)
            && let Some(new) = &ca.new
        {
            writes.push((ca, new.clone()));
        }
        if !writes.is_empty() {
            moves.push(planned(i, RotationPhase::Leaves, &writes));
        }
    }
    if ca_rollover {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(ca) = node.file(FileKind::Cacertfile)
                && let Some(new) = &ca.new
            {
                moves.push(planned(i, RotationPhase::TrustNew, &[(ca, new.clone())]));
            }
        }
    }
    chain_befores(nodes, &mut moves);
    moves
}

/// `old` then `new`, each whole, a newline between them when `old` lacks its last one.
pub fn bundle(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut both = old.to_vec();
    if !both.is_empty() && !both.ends_with(b"\n") {
        both.push(b'\n');
    }
    both.extend_from_slice(new);
    both
}

fn planned(index: usize, phase: RotationPhase, writes: &[(&NodeFile, Vec<u8>)]) -> PlannedMove {
    let mut out = Vec::new();
    for (file, after) in writes {
        for path in &file.paths {
            out.push(Write {
                kind: file.kind,
                path: path.clone(),
                before: file.original.clone(),
                after: after.clone(),
            });
        }
    }
    PlannedMove {
        phase,
        node: index,
        writes: out,
        leaf_before: Vec::new(),
        leaf_after: Vec::new(),
    }
}

/// Each write's `before` is what the file holds when its move begins (an earlier move of the
/// same file wrote it), and each move's leaves are the node's certificate file before and after.
fn chain_befores(nodes: &[NodeFiles], moves: &mut [PlannedMove]) {
    let mut current: Vec<Vec<(PathBuf, Vec<u8>)>> = nodes
        .iter()
        .map(|n| {
            n.files
                .iter()
                .flat_map(|f| f.paths.iter().map(|p| (p.clone(), f.original.clone())))
                .collect()
        })
        .collect();
    let mut certs: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| {
            n.file(FileKind::Certfile)
                .map(|f| f.original.clone())
                .unwrap_or_default()
        })
        .collect();
    for planned in moves.iter_mut() {
        let files = &mut current[planned.node];
        for write in &mut planned.writes {
            if let Some((_, content)) = files.iter_mut().find(|(p, _)| *p == write.path) {
                write.before = content.clone();
                *content = write.after.clone();
            }
        }
        planned.leaf_before = certs[planned.node].clone();
        if let Some(cert) = planned.after(FileKind::Certfile) {
            certs[planned.node] = cert.to_vec();
        }
        planned.leaf_after = certs[planned.node].clone();
    }
}

/// A move as the journal keeps it: paths and hashes (the leaves as the sha256 of their DER).
pub fn journal_move(planned: &PlannedMove, node: &str) -> Move {
    Move {
        phase: planned.phase,
        node: node.to_string(),
        files: planned
            .writes
            .iter()
            .map(|w| FileChange {
                kind: w.kind.label().to_string(),
                path: w.path.clone(),
                backup: backup_path(&w.path, planned.phase),
                before_sha256: sha256_hex(&w.before),
                after_sha256: sha256_hex(&w.after),
            })
            .collect(),
        leaf_before: leaf_sha256(&planned.leaf_before),
        leaf_after: leaf_sha256(&planned.leaf_after),
        step: MoveStep::Pending,
    }
}

/// sha256 of the first certificate's DER in a PEM file (what the node serves); empty when none.
pub fn leaf_sha256(pem: &[u8]) -> String {
    crate::cert_info::pem_certificates(pem)
        .ok()
        .and_then(|certs| certs.first().map(|c| sha256_hex(c)))
        .unwrap_or_default()
}

/// What identifies a rotation's target: every move's files and hashes, in order.
pub fn target_sha256(moves: &[Move]) -> String {
    let mut text = String::new();
    for m in moves {
        text.push_str(&format!(
            "{} {} {} {}\n",
            m.phase.label(),
            m.node,
            m.leaf_before,
            m.leaf_after
        ));
        for f in &m.files {
            text.push_str(&format!(
                "  {} {} {} {}\n",
                f.kind,
                f.path.display(),
                f.before_sha256,
                f.after_sha256
            ));
        }
    }
    sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cert: &str, key: &str, ca: &str, new: [Option<&str>; 3]) -> NodeFiles {
        let file = |kind, path: &str, original: &str, new: Option<&str>| NodeFile {
            kind,
            paths: vec![PathBuf::from(path)],
            original: original.as_bytes().to_vec(),
            new: new.map(|n| n.as_bytes().to_vec()),
        };
        NodeFiles {
            name: name.to_string(),
            files: vec![
                file(
                    FileKind::Certfile,
                    &format!("/{name}/cert.pem"),
                    cert,
                    new[0],
                ),
                file(FileKind::Keyfile, &format!("/{name}/key.pem"), key, new[1]),
                file(FileKind::Cacertfile, &format!("/{name}/ca.pem"), ca, new[2]),
            ],
        }
    }

    #[test]
    fn a_ca_rollover_trusts_both_then_swaps_leaves_then_trusts_only_the_new_ca() {
        let nodes = [
            node(
                "a",
                "certA",
                "keyA",
                "caOld\n",
                [Some("certA2"), Some("keyA2"), Some("caNew\n")],
            ),
            node(
                "b",
                "certB",
                "keyB",
                "caOld",
                [Some("certB2"), Some("keyB2"), Some("caNew\n")],
            ),
        ];
        let moves = plan(&nodes, true);
        let labels: Vec<_> = moves.iter().map(|m| (m.phase.label(), m.node)).collect();
        assert_eq!(
            labels,
            [
                ("trust-both", 0),
                ("trust-both", 1),
                ("leaves", 0),
                ("leaves", 1),
                ("trust-new", 0),
                ("trust-new", 1)
            ]
        );
        assert_eq!(moves[1].writes[0].after, b"caOld\ncaNew\n");
        // The last phase's CA file starts from the bundle the first one wrote.
        assert_eq!(moves[5].writes[0].before, b"caOld\ncaNew\n");
        assert_eq!(moves[2].writes.len(), 2);
        assert_eq!(moves[2].writes[0].before, b"certA");
    }

    #[test]
    fn a_plain_rotation_is_one_move_per_node_with_something_new() {
        let nodes = [
            node(
                "a",
                "certA",
                "keyA",
                "ca",
                [Some("certA2"), Some("keyA2"), None],
            ),
            node("b", "certB", "keyB", "ca", [None, None, None]),
        ];
        let moves = plan(&nodes, false);
        assert_eq!(moves.len(), 1);
        let journal = journal_move(&moves[0], "a");
        assert_eq!(
            journal.files[0].backup,
            PathBuf::from("/a/cert.pem.distls-rotate-leaves")
        );
        assert_eq!(journal.files[0].after_sha256, sha256_hex(b"certA2"));
        assert_eq!(target_sha256(std::slice::from_ref(&journal)).len(), 64);
    }
}
