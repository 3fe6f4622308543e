//! `--handshake`: two throwaway VMs on the host, started with the TLS text distls would write,
//! ping each other. Proof that the options, files and host names work there, short of a real node.
//! Both use the cluster's epmd (inherited `ERL_EPMD_PORT`) and a private HOME, and are stopped by pid.

use super::Verdict;
use super::access::shell_quote;
use crate::target::NodeTarget;
use std::time::Duration;

/// Long enough for a few TLS setup attempts while the listener registers in epmd.
const PING_TIMEOUT: Duration = Duration::from_secs(40);
const CHECK: &str = "handshake";

pub async fn check(target: &NodeTarget) -> Verdict {
    match run(target).await {
        Ok(()) => Verdict::ok(
            CHECK,
            "two throwaway VMs with the planned TLS options connected to each other",
        ),
        Err(reason) => Verdict::fail(
            CHECK,
            format!("two throwaway VMs with the planned TLS options could not connect: {reason}"),
            "fix the other failed checks first; the reason above comes from OTP itself",
        ),
    }
}

async fn run(target: &NodeTarget) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("distls-handshake-")
        .tempdir()
        .map_err(|e| format!("cannot create a private directory: {e}"))?;
    let args_file = dir.path().join("vm.dist.args");
    std::fs::write(&args_file, &target.tls.text)
        .map_err(|e| format!("cannot write {}: {e}", args_file.display()))?;
    std::fs::create_dir(dir.path().join("home"))
        .map_err(|e| format!("cannot create a private HOME: {e}"))?;
    let pid = std::process::id();
    let host = &target.spec.host;
    let name_flag = target.identity.name_flag.flag();
    let listener = format!("distls_hs_a_{pid}@{host}");
    let dialer = format!("distls_hs_b_{pid}@{host}");
    // A throwaway cookie for two throwaway nodes: not the cluster's secret.
    let cookie = format!("distls_hs_{pid}");
    let common = |name: &str| {
        vec![
            "-noshell".to_string(),
            name_flag.to_string(),
            name.to_string(),
            "-setcookie".to_string(),
            cookie.clone(),
            "-args_file".to_string(),
            args_file.display().to_string(),
        ]
    };
    let mut listen_args = common(&listener);
    // Halts by itself should distls die before stopping it.
    listen_args.extend(["-eval".into(), "timer:sleep(120000), halt().".into()]);
    let home = dir.path().join("home").display().to_string();
    let env = vec![("HOME".to_string(), home.clone())];
    let mut listening = target
        .transport
        .spawn(&target.spec.erl, &listen_args, &env)
        .map_err(|e| e.to_string())?;
    let ping = format!(
        "Ping = fun P(0) -> pang; P(N) -> case net_adm:ping('{listener}') of pong -> pong; pang -> timer:sleep(500), P(N - 1) end end, \
         io:format(\"DISTLS_HANDSHAKE ~p~n\", [Ping(20)]), halt()."
    );
    let mut dial_args = common(&dialer);
    dial_args.extend(["-eval".to_string(), ping]);
    let command = format!(
        "HOME={} exec {} {}",
        shell_quote(&home),
        shell_quote(&target.spec.erl),
        dial_args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let outcome = target.transport.run(&command, PING_TIMEOUT).await;
    let _ = listening.start_kill();
    let listener_output =
        match tokio::time::timeout(Duration::from_secs(10), listening.wait_with_output()).await {
            Ok(Ok(output)) => {
                String::from_utf8_lossy(&output.stderr).into_owned()
                    + &String::from_utf8_lossy(&output.stdout)
            }
            _ => String::new(),
        };
    let outcome = outcome.map_err(|e| e.to_string())?;
    if outcome.stdout.contains("DISTLS_HANDSHAKE pong") {
        return Ok(());
    }
    let tail = outcome.tail();
    let said: Vec<&str> = tail
        .lines()
        .chain(listener_output.lines())
        // Report headers (`=NOTICE REPORT==== date ===`) carry no reason.
        .filter(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('=') && !line.contains("DISTLS_HANDSHAKE")
        })
        .fold(Vec::new(), |mut kept, line| {
            if !kept.contains(&line) {
                kept.push(line);
            }
            kept
        })
        .into_iter()
        .take(6)
        .collect();
    Err(if said.is_empty() {
        "pang (no reason printed)".to_string()
    } else {
        format!("pang: {}", said.join(" | "))
    })
}
