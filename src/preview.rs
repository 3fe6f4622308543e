//! `migrate --dry-run`: the steps a roll would take and the exact change to each vm.dist.args.
//! Reads files only; starts nothing, writes nothing.

use crate::argsfile::Cookie;
use crate::journal::Journal;
use crate::plan::Plan;
use crate::redact::redact;
use crate::target::{FileState, NodeTarget};
use similar::TextDiff;
use std::fmt::Write;

/// The one place a dry run shows file contents: a unified diff with every cookie masked (a relx
/// vm.args holds `-setcookie`, shown as context).
fn write_diff(out: &mut String, old: &str, new: &str, headers: (&str, &str), cookies: &[&Cookie]) {
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header(headers.0, headers.1)
        .to_string();
    out.push_str(&redact(&text, cookies));
}

/// Every distinct cookie of the nodes, for masking: a cluster's nodes usually share one, and
/// masking it once per node in every diff made a 1,000-node dry run take seconds.
fn cookies(targets: &[&NodeTarget]) -> Vec<Cookie> {
    let mut cookies: Vec<Cookie> = targets
        .iter()
        .filter_map(|t| t.identity.cookie.clone())
        .collect();
    cookies.sort_by(|a, b| a.expose().cmp(b.expose()));
    cookies.dedup_by(|a, b| a.expose() == b.expose());
    cookies
}

pub fn render(plan: &Plan, targets: &[NodeTarget], journal: Option<&Journal>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dry run: migrate cluster {} ({} nodes) to TLS distribution; nothing will be changed",
        plan.cluster,
        targets.len()
    );
    if let Some(journal) = journal {
        let _ = writeln!(
            out,
            "journal: phase {:?}, updated {}; a real run resumes from it",
            journal.phase, journal.updated_at
        );
    }
    let _ = writeln!(out);
    let cookies = cookies(&targets.iter().collect::<Vec<_>>());
    let cookies: Vec<&Cookie> = cookies.iter().collect();
    for (index, target) in targets.iter().enumerate() {
        render_node(&mut out, index, targets, journal);
        let _ = writeln!(out);
        render_diff(&mut out, target, &cookies);
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "finally: wait until every node sees every other node over TLS"
    );
    out
}

fn render_node(out: &mut String, index: usize, targets: &[NodeTarget], journal: Option<&Journal>) {
    let target = &targets[index];
    let spec = &target.spec;
    let step = journal
        .and_then(|j| j.node(target.name()))
        .map(|r| r.step.label())
        .unwrap_or("pending");
    let _ = writeln!(
        out,
        "node {}/{} {} (journal: {step})",
        index + 1,
        targets.len(),
        target.name()
    );
    write_before_stop_gate(out, spec, false);
    let _ = writeln!(
        out,
        "  1. stop:   {}   (timeout {})",
        spec.commands.stop,
        humantime::format_duration(spec.timeouts.stop)
    );
    write_backup_and_edit_step(out, target);
    let _ = writeln!(
        out,
        "  3. start:  {}   (timeout {})",
        spec.commands.start,
        humantime::format_duration(spec.timeouts.start)
    );
    let peers: Vec<&str> = targets[..index].iter().map(NodeTarget::name).collect();
    let _ = writeln!(
        out,
        "  4. rejoin: {} runs inet_tls with a TLS link to {} (timeout {}); the plain nodes stay meshed",
        target.name(),
        if peers.is_empty() {
            "no migrated node yet".to_string()
        } else {
            peers.join(", ")
        },
        humantime::format_duration(spec.timeouts.rejoin)
    );
    write_verify_and_ready_steps(out, spec);
}

/// Step 2 of a classic roll: the backup (or that it exists already), then the edit, through an
/// optfile when the flavor needs one.
fn write_backup_and_edit_step(out: &mut String, target: &NodeTarget) {
    if !target.backup_exists {
        let _ = writeln!(
            out,
            "  2. back up {} to {}",
            target.dist_args.display(),
            target.backup.display()
        );
    } else {
        let _ = writeln!(
            out,
            "  2. backup {} already holds the original",
            target.backup.display()
        );
    }
    if let Some(optfile) = &target.optfile {
        let _ = writeln!(
            out,
            "     write {} (-ssl_dist_optfile, mode 0600, owned like {}; removed on rollback)",
            optfile.path.display(),
            target.dist_args.display()
        );
        let _ = writeln!(
            out,
            "     edit {} ({} flavor; atomic replace, mode kept): append -proto_dist inet_tls -ssl_dist_optfile",
            target.dist_args.display(),
            target.spec.flavor
        );
    } else {
        let _ = writeln!(
            out,
            "     edit {} (atomic replace, mode kept): {}",
            target.dist_args.display(),
            target.tls.outcome
        );
    }
}

/// Step 5 of a classic roll (the ping, or that the plan has none), then the ready command run
/// after the last node.
fn write_verify_and_ready_steps(out: &mut String, spec: &crate::plan::NodeSpec) {
    match &spec.commands.ping {
        Some(ping) => {
            let _ = writeln!(
                out,
                "  5. verify: {ping}   (must exit 0 within {})",
                humantime::format_duration(spec.timeouts.ping)
            );
        }
        None => {
            let _ = writeln!(out, "  5. verify: (no commands.ping in the plan)");
        }
    }
    write_after_start_gate(out, spec, false);
    if let Some(ready) = &spec.commands.ready {
        let _ = writeln!(
            out,
            "  after the last node: {ready}   (must exit 0 within {}; with Mnesia disc tables a node finishes starting only once every node runs TLS)",
            humantime::format_duration(spec.timeouts.ready)
        );
    }
}

fn render_diff(out: &mut String, target: &NodeTarget, cookies: &[&Cookie]) {
    if target.classify(&target.current) == FileState::Tls {
        let _ = writeln!(
            out,
            "  {} already enables TLS: no change",
            target.dist_args.display()
        );
        return;
    }
    let path = target.dist_args.display().to_string();
    let tls_path = format!("{path} (TLS)");
    write_diff(
        out,
        &target.original,
        &target.tls.text,
        (&path, &tls_path),
        cookies,
    );
    if let Some(optfile) = &target.optfile {
        let shown = optfile.path.display().to_string();
        write_diff(out, "", &optfile.text, ("/dev/null", &shown), cookies);
    }
}

/// `migrate --dry-run` of a zero-split run: its rolls, each node's steps and exact diffs per roll.
pub fn render_zero_split(
    plan: &Plan,
    nodes: &[crate::zero_split::ZeroSplitNode],
    journal: Option<&Journal>,
) -> String {
    use crate::stage::{RollPath, RollState};
    let mut out = String::new();
    let path = journal
        .and_then(|j| j.zero_split)
        .map_or(RollPath::OneRestart, |r| r.path);
    write_zero_split_header(&mut out, plan, nodes.len(), path, journal);
    write_module_install(&mut out, nodes);
    let cookies = cookies(&nodes.iter().map(|n| &n.target).collect::<Vec<_>>());
    let cookies: Vec<&Cookie> = cookies.iter().collect();
    let mut roll = Some(RollState::first(path));
    let mut number = 1;
    while let Some(this) = roll {
        write_roll(&mut out, nodes, (number, path.rolls()), this, &cookies);
        roll = this.next();
        number += 1;
    }
    let _ = writeln!(
        out,
        "\nfinally: remove the hybrid module from every host (no flags file points at it any more{})",
        match path {
            RollPath::OneRestart =>
                "; the sealed nodes keep it loaded until their next restart, which boots stock TLS",
            RollPath::ThreeRolls => "",
        }
    );
    out
}

/// The first lines of a zero-split dry run: the cluster, how it will be rolled, and the journal
/// a real run would resume from.
fn write_zero_split_header(
    out: &mut String,
    plan: &Plan,
    node_count: usize,
    path: crate::stage::RollPath,
    journal: Option<&Journal>,
) {
    use crate::stage::RollPath;
    let how = match path {
        RollPath::OneRestart => {
            "with one restart per node, then a seal at run time (no restart)".to_string()
        }
        RollPath::ThreeRolls => "in three rolls".to_string(),
    };
    let _ = writeln!(
        out,
        "dry run: migrate cluster {} ({} nodes) to TLS distribution {how}, never split; nothing will be changed",
        plan.cluster, node_count
    );
    if let Some(journal) = journal {
        let under_way = journal
            .zero_split
            .map_or("none".to_string(), |r| r.describe());
        let _ = writeln!(
            out,
            "journal: phase {:?}, roll under way: {under_way}, updated {}; a real run resumes from it",
            journal.phase, journal.updated_at
        );
    }
}

/// Where the hybrid module is written and compiled on each node's host, before the first roll.
fn write_module_install(out: &mut String, nodes: &[crate::zero_split::ZeroSplitNode]) {
    use crate::zero_split::{MODULE, module_dir};
    let _ = writeln!(
        out,
        "\nbefore the first roll, on every node's host: write {MODULE}.erl into the directory beside its vm.dist.args and compile it with the node's own erl:"
    );
    for node in nodes {
        let _ = writeln!(
            out,
            "  {}: {} (with {})",
            node.target.name(),
            module_dir(&node.target.dist_args).display(),
            node.target.spec.erl
        );
    }
}

/// One roll of a zero-split run (`number` of `total`): each node's steps and the diff of its
/// flags file, then what the mesh runs afterwards.
fn write_roll(
    out: &mut String,
    nodes: &[crate::zero_split::ZeroSplitNode],
    (number, total): (usize, usize),
    this: crate::stage::RollState,
    cookies: &[&Cookie],
) {
    let _ = writeln!(
        out,
        "\nroll {number}/{total}: {}{}",
        this.describe(),
        if this.at_run_time() {
            " (at run time: no node restarts)"
        } else {
            ""
        }
    );
    let targets = crate::zero_split::roll_targets(nodes, this);
    for (index, target) in targets.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nnode {}/{} {} ({} → {})",
            index + 1,
            targets.len(),
            target.name(),
            this.from,
            this.to
        );
        if this.at_run_time() {
            write_seal_steps(out, target);
        } else {
            write_restart_steps(out, target, this);
        }
        let path = target.dist_args.display().to_string();
        write_diff(
            out,
            &target.original,
            &target.tls.text,
            (
                &format!("{path} ({})", this.from),
                &format!("{path} ({})", this.to),
            ),
            cookies,
        );
    }
    let _ = writeln!(
        out,
        "\nthen: one mesh, every link {}",
        if this.to.links_tls() {
            "TLS"
        } else {
            "plain TCP"
        }
    );
}

/// A node's steps in the seal (H → TLS, at run time).
fn write_seal_steps(out: &mut String, target: &crate::target::NodeTarget) {
    let _ = writeln!(
        out,
        "  1. seal:   through a TLS probe VM: from now on it refuses plain TCP, closes plain links, dials only TLS (no restart)"
    );
    let _ = writeln!(
        out,
        "  2. edit {} to the stock TLS text (atomic replace, mode kept): its ctl reaches it over TLS, its next restart boots stock TLS",
        target.dist_args.display()
    );
    if let Some(ping) = &target.spec.commands.ping {
        let _ = writeln!(out, "  3. verify: {ping}");
    }
}

/// A node's steps in a roll of restarts.
/// The plan's gate before the stop (`commands.before_stop`), if it has one.
fn write_before_stop_gate(out: &mut String, spec: &crate::plan::NodeSpec, zero_split: bool) {
    // A flavor's default gates run only in a roll that keeps one mesh (docs/hooks.md).
    let runs = zero_split || !spec.commands.gates_from_flavor.0;
    if let Some(gate) = spec.commands.before_stop.as_ref().filter(|_| runs) {
        let _ = writeln!(
            out,
            "  0. gate:   {gate}   (must exit 0 before the stop; retried for up to {})",
            humantime::format_duration(spec.timeouts.before_stop)
        );
    }
}

/// The plan's gate after the start (`commands.after_start`), if it has one.
fn write_after_start_gate(out: &mut String, spec: &crate::plan::NodeSpec, zero_split: bool) {
    let runs = zero_split || !spec.commands.gates_from_flavor.1;
    if let Some(gate) = spec.commands.after_start.as_ref().filter(|_| runs) {
        let _ = writeln!(
            out,
            "     then:   {gate}   (must exit 0 before the next node; retried for up to {})",
            humantime::format_duration(spec.timeouts.after_start)
        );
    }
}

fn write_restart_steps(
    out: &mut String,
    target: &crate::target::NodeTarget,
    roll: crate::stage::RollState,
) {
    use crate::stage::Stage;
    let spec = &target.spec;
    write_before_stop_gate(out, spec, true);
    let _ = writeln!(out, "  1. stop:   {}", spec.commands.stop);
    if roll.to == Stage::Hybrid {
        let _ = writeln!(
            out,
            "     then tell the nodes that run the module that {} speaks TLS (through a TLS probe VM)",
            target.name()
        );
    }
    if let Some(optfile) = target
        .optfile
        .as_ref()
        .filter(|_| roll.from == Stage::Plain)
    {
        let _ = writeln!(
            out,
            "     write {} (-ssl_dist_optfile, mode 0600, owned like {}; kept until the run is back at plain)",
            optfile.path.display(),
            target.dist_args.display()
        );
    }
    let _ = writeln!(
        out,
        "  2. edit {} (atomic replace, mode kept; backup {} of the original first)",
        target.dist_args.display(),
        target.backup.display()
    );
    let _ = writeln!(out, "  3. start:  {}", spec.commands.start);
    let _ = writeln!(
        out,
        "  4. rejoin: linked to every node, and every node to every other (timeout {})",
        humantime::format_duration(spec.timeouts.rejoin)
    );
    if let Some(ping) = &spec.commands.ping {
        let _ = writeln!(out, "  5. verify: {ping}");
    }
    if let Some(ready) = &spec.commands.ready {
        let _ = writeln!(
            out,
            "  6. ready:  {ready}   (it finishes starting before the next node)"
        );
    }
    write_after_start_gate(out, spec, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::read_node;
    use crate::transport::Transport;

    const VM_ARGS: &str = "-sname t@localhost\n-setcookie SECRET\n";
    const DIST_ARGS: &str = "## TLS\n#-proto_dist inet_tls\n#-ssl_dist_opt server_certfile /a.pem client_certfile /a.pem\n#  server_keyfile /k.pem client_keyfile /k.pem\n#  server_cacertfile /c.pem client_cacertfile /c.pem\n#  client_verify verify_peer server_verify verify_peer\n#  server_fail_if_no_peer_cert true\n";

    /// Whether the backup exists is asked of the node's host when the node is read, and the dry
    /// run shows that answer: it never looks at the local filesystem (wrong for an SSH node).
    #[tokio::test]
    async fn the_dry_run_shows_the_backup_as_the_nodes_host_reported_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vm.args"), VM_ARGS).unwrap();
        let flags = dir.path().join("vm.dist.args");
        std::fs::write(&flags, DIST_ARGS).unwrap();
        let backup = dir.path().join("vm.dist.args.distls-orig");
        std::fs::write(&backup, DIST_ARGS).unwrap();
        let plan_path = dir.path().join("plan.yaml");
        std::fs::write(
            &plan_path,
            "version: 1\ncluster: t\ntls:\n  certfile: /etc/distls/cert.pem\n  keyfile: /etc/distls/key.pem\n  cacertfile: /etc/distls/ca.pem\ndefaults:\n  vm_dist_args: vm.dist.args\n  vm_args: vm.args\n  commands:\n    stop: \"false\"\n    start: \"false\"\nnodes:\n  - name: t@localhost\n",
        )
        .unwrap();
        let plan = Plan::load(&plan_path).unwrap();
        let transport = Transport::local(Vec::new(), None);
        let target = read_node(&plan.nodes[0], &transport).await.unwrap();
        assert!(target.backup_exists);
        // Gone from here, still there on "the node's host" as it was read.
        std::fs::remove_file(&backup).unwrap();
        let shown = render(&plan, std::slice::from_ref(&target), None);
        assert!(
            shown.contains("already holds the original"),
            "the host's answer, not a local lookup: {shown}"
        );
    }
}
