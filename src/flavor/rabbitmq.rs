//! RabbitMQ: `SERVER_ADDITIONAL_ERL_ARGS` (the server) and `CTL_ERL_ARGS` (rabbitmqctl and the
//! other CLI tools) in the node's rabbitmq-env.conf. Without the second, rabbitmqctl cannot reach a
//! TLS node ("Failed to connect and authenticate ... in 60000 ms").

use super::{FlavorError, FlavorIdentity, hybrid_flags, shellenv, tls_flags};
use crate::argsfile::NameFlag;
use std::path::Path;

pub const SERVER_VAR: &str = "SERVER_ADDITIONAL_ERL_ARGS";
pub const CTL_VAR: &str = "CTL_ERL_ARGS";

pub fn enable_tls(original: &str, optfile: &Path) -> Result<String, FlavorError> {
    let flags = tls_flags(optfile)?;
    let text = shellenv::append_flags(original, SERVER_VAR, &flags)?;
    shellenv::append_flags(&text, CTL_VAR, &flags)
}

/// A zero-split hybrid stage: only the server runs the hybrid module; `CTL_ERL_ARGS` stays as in
/// the original, so rabbitmqctl dials plain TCP, which hybrid nodes accept. The ctl switches to
/// TLS with the node's last edit (the TLS text, both variables).
pub fn enable_hybrid(
    original: &str,
    module_dir: &Path,
    mode: &str,
    optfile: &Path,
) -> Result<String, FlavorError> {
    shellenv::append_flags(
        original,
        SERVER_VAR,
        &hybrid_flags(module_dir, mode, optfile)?,
    )
}

/// `NODENAME` (default `rabbit@<host>`); a name without `@` gets the plan's host, as
/// rabbitmq-env adds the host name. `USE_LONGNAME=true` means `-name`.
pub fn identity(text: &str, plan_host: &str) -> Result<FlavorIdentity, FlavorError> {
    let node_name = match shellenv::plain_value(text, "NODENAME")? {
        Some((value, _)) if value.contains('@') => value,
        Some((value, _)) => format!("{value}@{plan_host}"),
        None => format!("rabbit@{plan_host}"),
    };
    let long = shellenv::plain_value(text, "USE_LONGNAME")?.is_some_and(|(v, _)| v == "true");
    Ok(FlavorIdentity {
        node_name,
        name_flag: if long {
            NameFlag::Long
        } else {
            NameFlag::Short
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_server_and_ctl_args() {
        let env =
            "export ERL_EPMD_PORT=4372\nNODENAME=rabbit1@vm\n#SERVER_ADDITIONAL_ERL_ARGS=\"\"\n";
        let tls = enable_tls(env, Path::new("/r/distls-ssl_dist.conf")).unwrap();
        assert!(tls.starts_with(env));
        let flags = "-proto_dist inet_tls -ssl_dist_optfile /r/distls-ssl_dist.conf";
        assert!(tls.contains(&format!("\nSERVER_ADDITIONAL_ERL_ARGS=\"{flags}\"\n")));
        assert!(tls.contains(&format!("\nCTL_ERL_ARGS=\"{flags}\"\n")));
        assert_eq!(identity(env, "vm").unwrap().node_name, "rabbit1@vm");
        assert_eq!(identity("NODENAME=r2\n", "h").unwrap().node_name, "r2@h");
        assert_eq!(identity("", "h").unwrap().node_name, "rabbit@h");
    }

    #[test]
    fn hybrid_stages_leave_the_ctl_plain() {
        let env = "NODENAME=rabbit1@vm\nCTL_ERL_ARGS=\"-x\"\n";
        let a = enable_hybrid(
            env,
            Path::new("/r/distls-hybrid"),
            "dial tcp",
            Path::new("/r/o.conf"),
        )
        .unwrap();
        assert_eq!(
            a,
            "NODENAME=rabbit1@vm\nCTL_ERL_ARGS=\"-x\"\n# added by distls (TLS distribution); `distls rollback` restores the original file\nSERVER_ADDITIONAL_ERL_ARGS=\"-pa /r/distls-hybrid -proto_dist distls_hybrid -distls_hybrid dial tcp -ssl_dist_optfile /r/o.conf\"\n"
        );
        let b = enable_hybrid(
            env,
            Path::new("/r/distls-hybrid"),
            "dial tls",
            Path::new("/r/o.conf"),
        )
        .unwrap();
        assert_eq!(b, a.replace("dial tcp", "dial tls"));
        assert_eq!(shellenv::plain_value(&b, CTL_VAR).unwrap().unwrap().0, "-x");
    }

    #[test]
    fn keeps_existing_server_args() {
        let env = "SERVER_ADDITIONAL_ERL_ARGS=\"+A 64\"\n";
        let tls = enable_tls(env, Path::new("/r/o.conf")).unwrap();
        assert!(tls.starts_with(
            "SERVER_ADDITIONAL_ERL_ARGS=\"+A 64 -proto_dist inet_tls -ssl_dist_optfile /r/o.conf\"\n"
        ));
    }
}
