//! The cluster's processes, found by pid, and the shutdown that kills them by pid (never by name).

use super::RehearsalCluster;
use super::waits::poll_until;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`RehearsalCluster::shutdown`] waits for killed processes to disappear.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// The argv marker that identifies the server VM of a rehearsal node (followed by the node's root).
const ROOT_MARKER: &str = "-rehearsal_root";

impl RehearsalCluster {
    /// The OS pid in `<root>/var/pid` of node `node`, if any.
    pub fn node_os_pid(&self, node: usize) -> Option<u32> {
        read_pid(&self.nodes.get(node)?.pid_file())
    }

    /// Every pid node `node` ever recorded in `var/pids.log`.
    pub fn recorded_pids(&self, node: usize) -> Vec<u32> {
        self.nodes
            .get(node)
            .map(|n| read_pids_log(&n.pids_log()))
            .unwrap_or_default()
    }

    /// Kills (SIGKILL) every server VM of the cluster by pid: the pids in `var/pid` and
    /// `var/pids.log`, plus, as a safety net for a VM killed before it recorded itself, any process
    /// whose argv carries `-rehearsal_root <node root>`. A pid is only signalled after its
    /// `/proc/<pid>/cmdline` shows it is that node's VM (pids get reused). Waits for them to be
    /// gone (exited or zombie), then kills and reaps the epmd children. Idempotent; also run on drop.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let mut victims: Vec<(u32, PathBuf)> = Vec::new();
        for node in &self.nodes {
            let mut pids = read_pids_log(&node.pids_log());
            pids.extend(read_pid(&node.pid_file()));
            pids.extend(pids_with_root_marker(&node.root));
            pids.sort_unstable();
            pids.dedup();
            victims.extend(pids.into_iter().map(|p| (p, node.root.clone())));
        }
        victims.retain(|(pid, root)| is_node_vm(*pid, root));
        for (pid, _) in &victims {
            // SAFETY: plain syscall on a pid checked above to be this cluster's VM.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = poll_until("rehearsal nodes to die", KILL_DEADLINE, &mut || {
            let alive: Vec<String> = victims
                .iter()
                .filter(|(pid, root)| is_node_vm(*pid, root) && !is_zombie(*pid))
                .map(|(pid, _)| pid.to_string())
                .collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(alive.join(" "))
            }
        });
        for mut epmd in self.epmds.drain(..) {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}

/// The pid written in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pids_log(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn proc_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Is `pid` a live (or zombie-to-be) server VM of the node rooted at `root`?
pub(super) fn is_node_vm(pid: u32, root: &Path) -> bool {
    let Some(root) = root.to_str() else {
        return false;
    };
    proc_cmdline(pid)
        .is_some_and(|args| args.windows(2).any(|w| w[0] == ROOT_MARKER && w[1] == root))
}

/// Gone, or a zombie: the process no longer runs (also for a pid that does not exist).
pub fn is_zombie(pid: u32) -> bool {
    proc_state(pid).is_none_or(|s| s == 'Z' || s == 'X')
}

/// The state letter in `/proc/<pid>/stat` (after the parenthesised command name).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn pids_with_root_marker(root: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_node_vm(*pid, root))
        .collect()
}
