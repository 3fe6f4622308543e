//! `--handshake`: two throwaway VMs on the host, started with the TLS text distls would write,
//! ping each other. Proof that the options, files and host names work there, short of a real node.
//! Both use the cluster's epmd (inherited `ERL_EPMD_PORT`, or the port the node's files name), a private HOME holding a random cookie,
//! and write no crash dump; the listener binds the one address its host name resolves to.

use super::Verdict;
use crate::shell::shell_quote;
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
    // A private directory on the node's host (through its transport): args copy and a HOME.
    let transport = &target.transport;
    let made = transport
        .run(
            r#"d=$(mktemp -d "${TMPDIR:-/tmp}/distls-handshake.XXXXXX") && printf '%s' "$d""#,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !made.success() {
        return Err(format!(
            "cannot create a private directory: {}",
            made.tail()
        ));
    }
    let dir = std::path::PathBuf::from(made.stdout.trim());
    let result = run_in(target, &dir).await;
    let cleanup = format!("rm -rf -- {}", shell_quote(&dir.display().to_string()));
    let _ = transport.run(&cleanup, Duration::from_secs(30)).await;
    result
}

/// The listener halts by itself after this long, should distls die before closing its stdin.
const LISTENER_LIFETIME: Duration = Duration::from_secs(50);

async fn run_in(target: &NodeTarget, dir: &std::path::Path) -> Result<(), String> {
    let args_file = dir.join("vm.dist.args");
    write_private_files(target, dir, &args_file).await?;
    let pid = std::process::id();
    let host = &target.spec.host;
    let listener = format!("distls_hs_a_{pid}@{host}");
    let dialer = format!("distls_hs_b_{pid}@{host}");
    let env = crate::probe::private_vm_env(dir);
    let listening = target
        .transport
        .spawn(
            &target.spec.erl,
            &listen_args(&args_file, &listener, target.identity.name_flag),
            &env,
            dir,
        )
        .await
        .map_err(|e| e.to_string())?;
    let dial_args = dial_args(&args_file, &listener, dialer, target.identity.name_flag);
    let command = dial_command(dir, &env, &target.spec.erl, &dial_args);
    let outcome = target.transport.run(&command, PING_TIMEOUT).await;
    let listener_output = stop_listener(listening).await;
    let outcome = outcome.map_err(|e| e.to_string())?;
    if outcome.stdout.contains("DISTLS_HANDSHAKE pong") {
        return Ok(());
    }
    Err(pang_reason(&outcome.tail(), &listener_output))
}

/// Writes the TLS text both VMs start with, and their cookie, into the private directory.
async fn write_private_files(
    target: &NodeTarget,
    dir: &std::path::Path,
    args_file: &std::path::Path,
) -> Result<(), String> {
    // The node's own epmd (its files may name one the environment does not): both VMs register
    // and look up there, as the node and its ctl do.
    let text = format!("{}{}", target.ports.epmd_flag(), target.preflight_args);
    target
        .transport
        .write_file(args_file, text.as_bytes(), 0o600)
        .await
        .map_err(|e| e.to_string())?;
    // A random cookie for two throwaway nodes (not the cluster's secret), read by both from their
    // private HOME: never on argv, where `ps` would show it.
    target
        .transport
        .write_file(
            &dir.join(".erlang.cookie"),
            crate::probe::throwaway_cookie().as_bytes(),
            0o400,
        )
        .await
        .map_err(|e| e.to_string())
}

/// The arguments both VMs start with: no shell, and the TLS text distls would write.
fn common_args(args_file: &std::path::Path) -> Vec<String> {
    vec![
        "-noshell".to_string(),
        "-args_file".to_string(),
        args_file.display().to_string(),
    ]
}

/// The listener's arguments.
fn listen_args(
    args_file: &std::path::Path,
    listener: &str,
    name_flag: crate::argsfile::NameFlag,
) -> Vec<String> {
    // The listener starts distribution itself, bound to the one address its host name resolves
    // to (loopback for `localhost`), not every interface; it halts when its stdin closes
    // (locally or over SSH), or by itself after LISTENER_LIFETIME should distls die.
    let names = match name_flag {
        crate::argsfile::NameFlag::Short => "shortnames",
        crate::argsfile::NameFlag::Long => "longnames",
    };
    let mut listen_args = common_args(args_file);
    listen_args.extend([
        "-eval".into(),
        format!(
            "Host = lists:last(string:split(\"{listener}\", \"@\")), \
             {{ok, Ip}} = case inet:getaddr(Host, inet) of {{ok, _}} = Ok4 -> Ok4; _ -> inet:getaddr(Host, inet6) end, \
             ok = application:set_env(kernel, inet_dist_use_interface, Ip), \
             {{ok, _}} = net_kernel:start(['{listener}', {names}]), \
             spawn(fun() -> io:get_line(''), halt() end), timer:sleep({}), halt().",
            LISTENER_LIFETIME.as_millis()
        ),
    ]);
    listen_args
}

/// The dialer's arguments: it pings the listener for a while and prints the answer.
fn dial_args(
    args_file: &std::path::Path,
    listener: &str,
    dialer: String,
    name_flag: crate::argsfile::NameFlag,
) -> Vec<String> {
    let ping = format!(
        "Ping = fun P(0) -> pang; P(N) -> case net_adm:ping('{listener}') of pong -> pong; pang -> timer:sleep(500), P(N - 1) end end, \
         io:format(\"DISTLS_HANDSHAKE ~p~n\", [Ping(20)]), halt()."
    );
    // The dialer only dials: no listener of its own.
    let mut dial_args = common_args(args_file);
    dial_args.extend([
        name_flag.flag().to_string(),
        dialer,
        "-hidden".to_string(),
        "-dist_listen".to_string(),
        "false".to_string(),
        "-eval".to_string(),
        ping,
    ]);
    dial_args
}

/// The shell command that runs the dialer in the private directory with the private
/// environment, every word quoted.
fn dial_command(
    dir: &std::path::Path,
    env: &[(String, String)],
    erl: &str,
    dial_args: &[String],
) -> String {
    format!(
        "cd {dir} && {env} exec {erl} {args}",
        dir = shell_quote(&dir.display().to_string()),
        env = env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect::<Vec<_>>()
            .join(" "),
        erl = shell_quote(erl),
        args = dial_args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Why the ping failed: the distinct lines both VMs printed (at most six), or that they printed
/// none.
fn pang_reason(dialer_tail: &str, listener_output: &str) -> String {
    let said: Vec<&str> = dialer_tail
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
    if said.is_empty() {
        "pang (no reason printed)".to_string()
    } else {
        format!("pang: {}", said.join(" | "))
    }
}

/// Stop the listening VM and return what it printed.
async fn stop_listener(mut listening: crate::transport::Spawned) -> String {
    use tokio::io::AsyncReadExt;
    drop(listening.stdin);
    listening.handle.finish().await;
    let mut said = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        listening.stderr.read_to_string(&mut said),
    )
    .await;
    let mut out = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        listening.stdout.read_to_string(&mut out),
    )
    .await;
    said + &out
}
