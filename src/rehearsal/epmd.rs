//! epmd: the cluster's own (on a free loopback port), one per host, or a private one for a test.

use super::waits::poll_until;
#[cfg(doc)]
use super::{ClusterSpec, NodeHost};
use super::{RehearsalError, io_err, prefixed_command, show_output};

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// How long to wait for epmd to answer.
const EPMD_DEADLINE: Duration = Duration::from_secs(10);

/// The port every epmd of a cluster with [`ClusterSpec::hosts`] listens on: epmd's default.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// A private epmd (`epmd -port P -address 127.0.0.1`, foreground) on a free loopback port, its
/// output in `<dir>/log/epmd.log`. The caller stops it by its pid (kill + wait on the child).
pub fn start_private_epmd(dir: &Path) -> Result<(Child, u16), RehearsalError> {
    start_private_epmd_under(dir, &[])
}

/// [`start_private_epmd`] started as `prefix... epmd ...` (see [`NodeHost::exec_prefix`]).
pub fn start_private_epmd_under(
    dir: &Path,
    prefix: &[String],
) -> Result<(Child, u16), RehearsalError> {
    start_epmd(dir, "epmd.log", prefix, Ipv4Addr::LOCALHOST, None)
}

/// Starts `epmd -port P -address <address>` in the foreground (under `prefix`, see
/// [`NodeHost::exec_prefix`]) and waits until `epmd -port P -names` (under the same prefix)
/// answers. `port`: that port, or a free loopback port, retried with another one if it got taken.
pub(super) fn start_epmd(
    dir: &Path,
    log_name: &str,
    prefix: &[String],
    address: Ipv4Addr,
    port: Option<u16>,
) -> Result<(Child, u16), RehearsalError> {
    let log_dir = dir.join("log");
    fs::create_dir_all(&log_dir).map_err(io_err("create directory", &log_dir))?;
    let log_path = log_dir.join(log_name);
    let mut last_err = None;
    let attempts = if port.is_some() { 1 } else { 5 };
    for _ in 0..attempts {
        let port = match port {
            Some(port) => port,
            None => free_loopback_port()
                .map_err(io_err("find a free port on", Path::new("127.0.0.1")))?,
        };
        let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
        let log2 = log.try_clone().map_err(io_err("open", &log_path))?;
        let command = format!(
            "{}epmd -port {port} -address {address}",
            prefix_display(prefix)
        );
        let mut child = prefixed_command(prefix, "epmd".as_ref())
            .args(["-port", &port.to_string(), "-address", &address.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env_remove("ERL_EPMD_PORT")
            .spawn()
            .map_err(|source| RehearsalError::Spawn { command, source })?;
        match wait_epmd(&mut child, port, prefix) {
            Ok(()) => return Ok((child, port)),
            Err(detail) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                last_err = Some(RehearsalError::Epmd {
                    address: address.to_string(),
                    port,
                    detail: format!("{detail}{}", show_output("", &log)),
                });
            }
        }
    }
    Err(last_err.expect("at least one attempt"))
}

fn prefix_display(prefix: &[String]) -> String {
    prefix.iter().map(|p| format!("{p} ")).collect()
}

fn wait_epmd(child: &mut Child, port: u16, prefix: &[String]) -> Result<(), String> {
    let mut exited = None;
    let result = poll_until("epmd", EPMD_DEADLINE, &mut || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return Ok(());
        }
        let names = prefixed_command(prefix, "epmd".as_ref())
            .args(["-port", &port.to_string(), "-names"])
            .stdin(Stdio::null())
            .env_remove("ERL_EPMD_PORT")
            .output();
        match names {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Err(err) => Err(err.to_string()),
        }
    });
    if let Some(status) = exited {
        return Err(format!("epmd exited ({status})"));
    }
    result.map_err(|e| e.to_string())?;
    // `-names` may have reached someone else's epmd if ours failed to bind the port.
    match child.try_wait() {
        Ok(Some(status)) => Err(format!("epmd exited ({status})")),
        _ => Ok(()),
    }
}

fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
