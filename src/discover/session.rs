//! The discovery VM: a hidden, non-listening Erlang node on this machine that asks the cluster
//! by rpc (`distls_discover.erl`), one request per line over its stdin. The cookie reaches it
//! over that pipe only, never argv or a file the operator sees.

use crate::argsfile::{Cookie, NameFlag};
use crate::error::{Error, Message, Result};
use crate::probe::{private_vm_env, throwaway_cookie};
use crate::transport::{ProcessHandle, Transport};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};

const SOURCE: &str = include_str!("distls_discover.erl");
/// Longer than the module's own rpc timeouts (10 s per call, a few calls per request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Session {
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    replies: Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
    handle: Option<ProcessHandle>,
    _dir: tempfile::TempDir,
}

impl Session {
    /// Boots the VM with the operator's environment (ERL_EPMD_PORT…) and a private HOME, named in
    /// the mode `node`'s name implies, and gives it the cookie.
    pub async fn start(erl: &str, node: &str, cookie: &Cookie) -> Result<Session> {
        let dir = tempfile::Builder::new()
            .prefix("distls-discover-")
            .tempdir()
            .map_err(|e| internal(format!("cannot create a private directory: {e}")))?;
        let transport = Transport::local(vec![], None);
        let source = dir.path().join("distls_discover.erl");
        transport
            .write_file(&source, SOURCE.as_bytes(), 0o600)
            .await?;
        // As for the probes: a throwaway default cookie, so the VM never writes one for the
        // operator; the real one arrives over the pipe.
        let cookie_file = dir.path().join(".erlang.cookie");
        transport
            .write_file(&cookie_file, throwaway_cookie().as_bytes(), 0o400)
            .await?;
        let host = node.split_once('@').map_or("localhost", |(_, host)| host);
        let name = format!("distls_discover_{}@{host}", std::process::id());
        let args = vm_args(name_flag(node), &name, &source);
        let spawned = transport
            .spawn(erl, &args, &private_vm_env(dir.path()), dir.path())
            .await?;
        let mut session = Session {
            stdin: Some(spawned.stdin),
            replies: BufReader::new(spawned.stdout).lines(),
            handle: Some(spawned.handle),
            _dir: dir,
        };
        session
            .ask(&format!("cookie {}", cookie.expose()))
            .await
            .map_err(|e| match e {
                Error::Internal(m) => internal(format!(
                    "the discovery VM did not start ({}); is `{erl}` Erlang/OTP 24 or later?",
                    m.text
                )),
                other => other,
            })?;
        Ok(session)
    }

    /// One request, one reply (log noise on stdout is skipped).
    pub async fn ask(&mut self, request: &str) -> Result<String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(internal("the discovery VM was stopped".into()));
        };
        let line = format!("{request}\n");
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return Err(internal("the discovery VM exited".into()));
        }
        let read = async {
            while let Ok(Some(line)) = self.replies.next_line().await {
                if let Some(reply) = line.strip_prefix("DISTLS ") {
                    return Some(reply.to_string());
                }
            }
            None
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(internal("the discovery VM exited".into())),
            Err(_) => Err(internal(format!(
                "the discovery VM gave no answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    /// Closes its stdin (the VM halts on EOF) and reaps it.
    pub async fn stop(mut self) {
        self.stdin.take();
        if let Some(handle) = self.handle.take() {
            handle.finish().await;
        }
    }
}

fn internal(text: String) -> Error {
    Error::Internal(Message::new(text))
}

/// `-name` when the host part is a fully qualified name or an address, `-sname` otherwise.
pub fn name_flag(node: &str) -> NameFlag {
    let host = node.split_once('@').map_or("", |(_, host)| host);
    if host.contains('.') || host.contains(':') {
        NameFlag::Long
    } else {
        NameFlag::Short
    }
}

fn vm_args(name_flag: NameFlag, name: &str, source: &Path) -> Vec<String> {
    // As the probe's (src/probe.rs): no ERL_COMPILER_OPTIONS, no SSA optimisation passes.
    let boot = format!(
        "{{ok,M,B}}=compile:noenv_file(\"{}\",[binary,report,no_ssa_opt]),{{module,M}}=code:load_binary(M,\"distls_discover.erl\",B),distls_discover:main().",
        source.display()
    );
    [
        "-noshell",
        "-hidden",
        "-dist_listen",
        "false",
        "-start_epmd",
        "false",
        name_flag.flag(),
        name,
        "-eval",
        &boot,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_mode_follows_the_host_part() {
        assert_eq!(name_flag("mim1@localhost"), NameFlag::Short);
        assert_eq!(name_flag("rabbit@mq1"), NameFlag::Short);
        assert_eq!(name_flag("ejabberd@xmpp1.example.com"), NameFlag::Long);
        assert_eq!(name_flag("mim2@10.0.0.2"), NameFlag::Long);
    }
}
