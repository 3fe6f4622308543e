//! ejabberd: `ERL_OPTIONS` in the node's ejabberdctl.cfg. ejabberdctl adds it to `ERLANG_OPTS`,
//! which every VM it starts gets: the server, and each ctl VM (status, started, stop…).

use super::{FlavorError, FlavorIdentity, hybrid_flags, shellenv, tls_flags};
use crate::argsfile::NameFlag;
use std::path::Path;

pub const VAR: &str = "ERL_OPTIONS";

pub fn enable_tls(original: &str, optfile: &Path) -> Result<String, FlavorError> {
    shellenv::append_flags(original, VAR, &tls_flags(optfile)?)
}

/// A zero-split hybrid stage: ERL_OPTIONS carries the hybrid flags, so the server and every ctl
/// VM run the hybrid module (the ctl dials what the node dials; hybrid nodes accept both).
pub fn enable_hybrid(
    original: &str,
    module_dir: &Path,
    mode: &str,
    optfile: &Path,
) -> Result<String, FlavorError> {
    shellenv::append_flags(original, VAR, &hybrid_flags(module_dir, mode, optfile)?)
}

/// `ERLANG_NODE` (default `ejabberd@localhost`); ejabberdctl uses `-sname` unless it has a dot.
pub fn identity(text: &str) -> Result<FlavorIdentity, FlavorError> {
    let node_name = shellenv::plain_value(text, "ERLANG_NODE")?
        .map_or_else(|| "ejabberd@localhost".to_owned(), |(value, _)| value);
    let name_flag = if node_name.contains('.') {
        NameFlag::Long
    } else {
        NameFlag::Short
    };
    Ok(FlavorIdentity {
        node_name,
        name_flag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_erl_options_byte_for_byte_elsewhere() {
        let cfg = "export ERL_EPMD_PORT=4371\nERLANG_NODE=ejabberd1@vm\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n";
        let tls = enable_tls(cfg, Path::new("/d/distls-ssl_dist.conf")).unwrap();
        assert_eq!(
            tls,
            "export ERL_EPMD_PORT=4371\nERLANG_NODE=ejabberd1@vm\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -proto_dist inet_tls -ssl_dist_optfile /d/distls-ssl_dist.conf\"\n"
        );
        let id = identity(cfg).unwrap();
        assert_eq!(id.node_name, "ejabberd1@vm");
        assert_eq!(id.name_flag, NameFlag::Short);
        assert_eq!(identity("").unwrap().node_name, "ejabberd@localhost");
        assert_eq!(
            identity("ERLANG_NODE=ej@h.example.com").unwrap().name_flag,
            NameFlag::Long
        );
    }

    #[test]
    fn hybrid_stages_put_the_module_in_erl_options() {
        let cfg = "ERLANG_NODE=ejabberd1@vm\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n";
        let a = enable_hybrid(
            cfg,
            Path::new("/d/distls-hybrid"),
            "dial tcp",
            Path::new("/d/o.conf"),
        )
        .unwrap();
        assert_eq!(
            a,
            "ERLANG_NODE=ejabberd1@vm\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -pa /d/distls-hybrid -proto_dist distls_hybrid -distls_hybrid dial tcp -ssl_dist_optfile /d/o.conf\"\n"
        );
        let b = enable_hybrid(
            cfg,
            Path::new("/d/distls-hybrid"),
            "dial tls",
            Path::new("/d/o.conf"),
        )
        .unwrap();
        assert_eq!(b, a.replace("dial tcp", "dial tls"));
    }
}
