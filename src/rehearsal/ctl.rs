//! A node's own ctl (`<root>/bin/ctl`, ctl.sh): run under the node's host, with the cluster's
//! environment, and what it says about the node's links.

#[cfg(doc)]
use super::NodeHost;
use super::{NodeLinks, RehearsalCluster, RehearsalError, prefixed_command};

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;

/// Environment variables that would change how `erl` behaves under the ctl script.
const ERL_ENV_TO_CLEAR: [&str; 4] = ["ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_LIBS"];

impl RehearsalCluster {
    /// A [`Command`] for `<root>/bin/ctl args...` (under the node's [`NodeHost::exec_prefix`], if
    /// any) with [`Self::env`], stdin closed and the `ERL_*FLAGS`/`ERL_LIBS` of the caller's
    /// environment removed.
    pub fn ctl_command(&self, index: usize, args: &[&str]) -> Result<Command, RehearsalError> {
        let node = self.node(index)?;
        let prefix = self
            .hosts
            .get(index)
            .map_or(&[][..], |h| &h.exec_prefix[..]);
        let mut cmd = prefixed_command(prefix, node.ctl_path().as_os_str());
        cmd.args(args).stdin(Stdio::null());
        for var in ERL_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        Ok(cmd)
    }

    /// Runs `<root>/bin/ctl args...` of node `node` (0-based) and returns its output whatever the
    /// exit status. A bad index or a ctl that cannot be spawned gives exit status 127 with the
    /// reason on stderr.
    pub fn ctl(&self, node: usize, args: &[&str]) -> Output {
        let result = self
            .ctl_command(node, args)
            .and_then(|mut cmd| run(&mut cmd, &self.ctl_display(node, args)));
        result.unwrap_or_else(|err| Output {
            status: ExitStatus::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: err.to_string().into_bytes(),
        })
    }

    /// [`Self::ctl`] that fails unless the exit status is 0; returns stdout.
    pub fn ctl_ok(&self, node: usize, args: &[&str]) -> Result<String, RehearsalError> {
        let display = self.ctl_display(node, args);
        let output = run(&mut self.ctl_command(node, args)?, &display)?;
        check_output(display, output)
    }

    pub(super) fn ctl_display(&self, node: usize, args: &[&str]) -> String {
        let ctl = self.nodes.get(node).map_or_else(
            || format!("<node {node}>/bin/ctl"),
            |n| n.ctl_path().display().to_string(),
        );
        std::iter::once(ctl)
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Protocol and links of node `node`, through its own ctl (`ctl links`, one control VM).
    /// Fails (exit 3 of ctl) when the ctl cannot reach the node.
    pub fn links(&self, node: usize) -> Result<NodeLinks, RehearsalError> {
        let display = self.ctl_display(node, &["links"]);
        let stdout = self.ctl_ok(node, &["links"])?;
        parse_links(&stdout).ok_or(RehearsalError::Parse {
            command: display,
            output: stdout,
        })
    }

    /// [`Self::links`] of every node, queried in parallel.
    pub fn links_all(&self) -> Vec<Result<NodeLinks, RehearsalError>> {
        thread::scope(|s| {
            let handles: Vec<_> = (0..self.nodes.len())
                .map(|i| s.spawn(move || self.links(i)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("links thread panicked"))
                .collect()
        })
    }
}

fn run(cmd: &mut Command, display: &str) -> Result<Output, RehearsalError> {
    cmd.output().map_err(|source| RehearsalError::Spawn {
        command: display.to_owned(),
        source,
    })
}

pub(super) fn check_output(command: String, output: Output) -> Result<String, RehearsalError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(RehearsalError::Command {
            command,
            status: output.status,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Parses `ctl links`: `distribution protocol: P` then `<peer> <tcp|tls>` lines.
fn parse_links(stdout: &str) -> Option<NodeLinks> {
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let proto_dist = lines
        .next()?
        .strip_prefix("distribution protocol: ")?
        .trim()
        .to_owned();
    let mut peers = BTreeMap::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let (Some(peer), Some(transport), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        if !peer.contains('@') {
            return None;
        }
        peers.insert(peer.to_owned(), transport.to_owned());
    }
    Some(NodeLinks { proto_dist, peers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rehearsal::test_support::peer_names;

    #[test]
    fn links_output_is_parsed_strictly() {
        let links =
            parse_links("distribution protocol: inet_tls\nb@localhost tls\na@localhost tcp\n")
                .unwrap();
        assert_eq!(links.proto_dist, "inet_tls");
        assert_eq!(peer_names(&links), ["a@localhost", "b@localhost"]);
        assert_eq!(links.peers["b@localhost"], "tls");
        assert_eq!(
            parse_links("distribution protocol: inet_tcp\n")
                .unwrap()
                .peers
                .len(),
            0
        );
        assert!(parse_links("").is_none());
        assert!(parse_links("pong\n").is_none());
        assert!(parse_links("distribution protocol: inet_tcp\n=NOTICE REPORT==== x\n").is_none());
    }

    #[test]
    fn command_errors_show_stderr() {
        let err = check_output(
            "ctl stop".into(),
            Output {
                status: ExitStatus::from_raw(1 << 8),
                stdout: b"Node x@localhost not responding to pings.\n".to_vec(),
                stderr: b"boom\n".to_vec(),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ctl stop` failed (exit status: 1)\nstderr: boom\nstdout: Node x@localhost not responding to pings."
        );
    }
}
