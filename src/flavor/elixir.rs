//! Elixir releases (`mix release`): the release's `releases/VSN/env.sh`. The release script
//! sources it before every command (`$RELEASE_COMMAND` names the command), and the VM it starts
//! gets `$ELIXIR_ERL_OPTIONS`; so one line there reaches the server (start, daemon) and every
//! control command (rpc, remote, stop, restart, pid) alike. Editing vm.args would reach the
//! server only, and remote.vm.args the commands only (docs/flavor-elixir.md).

use super::{
    ADDED_MARK, FlavorError, FlavorIdentity, append_lines, hybrid_flags, shellenv, tls_flags,
};
use crate::argsfile::{Cookie, NameFlag};
use std::path::{Path, PathBuf};

pub const VAR: &str = "ELIXIR_ERL_OPTIONS";

/// The release commands that start the server; the others are control commands.
pub const SERVER_COMMANDS: &str = "start|start_iex|daemon|daemon_iex";

/// Appends one `export ELIXIR_ERL_OPTIONS=...` line that keeps what env.sh set before it.
pub fn enable_tls(original: &str, optfile: &Path) -> Result<String, FlavorError> {
    refuse_proto_dist(original)?;
    Ok(append_lines(
        original,
        &format!("# {ADDED_MARK}\n{}\n", export_line(&tls_flags(optfile)?)),
    ))
}

/// A zero-split hybrid stage: only the server commands get the hybrid flags; rpc, stop and pid
/// stay plain TCP (hybrid nodes accept it) until the node's TLS edit. The server runs in
/// interactive mode for this stage: in the release's default embedded mode the VM loads only
/// the boot script's modules and refuses `-proto_dist distls_hybrid` ("not supported").
pub fn enable_hybrid(
    original: &str,
    module_dir: &Path,
    mode: &str,
    optfile: &Path,
) -> Result<String, FlavorError> {
    refuse_proto_dist(original)?;
    let flags = hybrid_flags(module_dir, mode, optfile)?;
    Ok(append_lines(
        original,
        &format!(
            "# {ADDED_MARK}\n# zero-split stage: the server only; the release's commands stay plain TCP until the TLS edit\ncase \"$RELEASE_COMMAND\" in\n  {SERVER_COMMANDS})\n    # embedded mode would not load the hybrid module (it is not in the boot script)\n    export RELEASE_MODE=interactive\n    {}\n    ;;\nesac\n",
            export_line(&flags)
        ),
    ))
}

fn export_line(flags: &str) -> String {
    format!("export {VAR}=\"${{{VAR}:+${VAR} }}{flags}\"")
}

/// distls starts from plain TCP: an active line of env.sh that already picks a protocol is
/// refused rather than stacked on.
fn refuse_proto_dist(text: &str) -> Result<(), FlavorError> {
    for (index, line) in text.lines().enumerate() {
        let active = line.split('#').next().unwrap_or_default();
        if let Some(column) = active.find("-proto_dist") {
            return Err(FlavorError::at(
                index + 1,
                column + 1,
                "env.sh already sets -proto_dist",
                "distls starts from plain TCP: remove that setting (or restore env.sh from its backup) and run distls again",
            ));
        }
    }
    Ok(())
}

/// `RELEASE_NODE` and `RELEASE_DISTRIBUTION` from env.sh (the release script's defaults apply
/// only after env.sh), and `RELEASE_COOKIE` when env.sh sets it (it wins over releases/COOKIE).
/// A name without `@` gets the plan's host, as erl adds the host name.
pub fn identity(
    text: &str,
    plan_host: &str,
) -> Result<(FlavorIdentity, Option<Cookie>), FlavorError> {
    let Some((node, _)) = shellenv::plain_value(text, "RELEASE_NODE")? else {
        return Err(FlavorError::whole(
            "env.sh sets no RELEASE_NODE, so each node would be named after the release",
            "add `export RELEASE_NODE=NAME@HOST` (the node's name) to the node's env.sh, then run distls again",
        ));
    };
    let name_flag = match shellenv::plain_value(text, "RELEASE_DISTRIBUTION")? {
        None => NameFlag::Short,
        Some((value, _)) if value == "sname" => NameFlag::Short,
        Some((value, _)) if value == "name" => NameFlag::Long,
        Some((value, line)) => {
            return Err(FlavorError::at(
                line,
                1,
                format!(
                    "RELEASE_DISTRIBUTION is {value:?}: the node runs no distribution distls could move"
                ),
                "set RELEASE_DISTRIBUTION to sname or name, or leave this node out of the plan",
            ));
        }
    };
    let node_name = if node.contains('@') {
        node
    } else {
        format!("{node}@{plan_host}")
    };
    let cookie =
        shellenv::plain_value(text, "RELEASE_COOKIE")?.map(|(value, _)| Cookie::new(value));
    Ok((
        FlavorIdentity {
            node_name,
            name_flag,
        },
        cookie,
    ))
}

/// The release root of a node whose env.sh is `ROOT/releases/VSN/env.sh`.
pub fn release_root(env_sh: &Path) -> PathBuf {
    env_sh
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// `releases/COOKIE`, the cookie the release script reads when `RELEASE_COOKIE` is unset.
pub fn default_cookie_file(env_sh: &Path) -> PathBuf {
    release_root(env_sh).join("releases").join("COOKIE")
}

/// The release script `bin/NAME` run from the release root; NAME is that of the one `NAME.rel`
/// beside env.sh (resolving a plan reads no file; `distls check` verifies the script is there:
/// `flavor.release`).
pub fn release_script(env_sh: &Path) -> String {
    use crate::shell::shell_quote;
    let vsn = env_sh
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "cd {} && bin/\"$(basename releases/{}/*.rel .rel)\"",
        shell_quote(&release_root(env_sh).display().to_string()),
        shell_quote(&vsn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str =
        "#!/bin/sh\nexport RELEASE_DISTRIBUTION=sname\nexport RELEASE_NODE=app1@localhost\n";

    #[test]
    fn tls_is_one_line_that_keeps_earlier_options() {
        let tls = enable_tls(ENV, Path::new("/r/releases/0.1.0/distls-ssl_dist.conf")).unwrap();
        assert!(tls.starts_with(ENV));
        assert!(tls.ends_with("\nexport ELIXIR_ERL_OPTIONS=\"${ELIXIR_ERL_OPTIONS:+$ELIXIR_ERL_OPTIONS }-proto_dist inet_tls -ssl_dist_optfile /r/releases/0.1.0/distls-ssl_dist.conf\"\n"));
        let again = enable_tls(&tls, Path::new("/x")).unwrap_err();
        assert_eq!(again.line, 5);
        // The template's commented-out examples are not settings.
        assert!(
            enable_tls(
                "# export ELIXIR_ERL_OPTIONS=\"-proto_dist x\"\n",
                Path::new("/x")
            )
            .is_ok()
        );
    }

    #[test]
    fn hybrid_reaches_the_server_commands_only() {
        let h = enable_hybrid(
            ENV,
            Path::new("/r/distls-hybrid"),
            "dial tcp",
            Path::new("/r/o.conf"),
        )
        .unwrap();
        assert!(h.starts_with(ENV));
        assert!(h.contains("case \"$RELEASE_COMMAND\" in\n  start|start_iex|daemon|daemon_iex)\n"));
        assert!(h.contains("export RELEASE_MODE=interactive\n"));
        assert!(h.contains("-pa /r/distls-hybrid -proto_dist distls_hybrid -distls_hybrid dial tcp -ssl_dist_optfile /r/o.conf\"\n    ;;\nesac\n"));
        assert!(
            enable_hybrid(
                &h,
                Path::new("/r/distls-hybrid"),
                "dial tls",
                Path::new("/r/o.conf")
            )
            .is_err()
        );
    }

    #[test]
    fn identity_from_env_sh() {
        let (id, cookie) = identity(ENV, "h").unwrap();
        assert_eq!(id.node_name, "app1@localhost");
        assert_eq!(id.name_flag, NameFlag::Short);
        assert!(cookie.is_none());
        let (id, cookie) = identity(
            "RELEASE_DISTRIBUTION=name\nRELEASE_NODE=a\nRELEASE_COOKIE=s\n",
            "h.example",
        )
        .unwrap();
        assert_eq!(id.node_name, "a@h.example");
        assert_eq!(id.name_flag, NameFlag::Long);
        assert!(cookie.is_some());
        assert!(identity("#!/bin/sh\n", "h").is_err());
        assert_eq!(
            identity("RELEASE_NODE=a\nRELEASE_DISTRIBUTION=none\n", "h")
                .unwrap_err()
                .line,
            2
        );
    }

    #[test]
    fn release_paths_from_env_sh() {
        let env = Path::new("/opt/app1/releases/0.1.0/env.sh");
        assert_eq!(
            default_cookie_file(env),
            Path::new("/opt/app1/releases/COOKIE")
        );
        assert_eq!(
            release_script(env),
            "cd '/opt/app1' && bin/\"$(basename releases/'0.1.0'/*.rel .rel)\""
        );
    }
}
