//! relx releases: `-proto_dist inet_tls` and `-ssl_dist_optfile F` appended to vm.args. The relx
//! start script forwards `-proto_dist` to its control VMs (nodetool, ping, stop…) but not
//! `-ssl_dist_optfile` (relx `extended_bin`), so the plan's commands must give the ctl the optfile
//! themselves, e.g. `ERL_FLAGS="-ssl_dist_optfile F" bin/app ping` (docs/flavor-relx.md).

use super::{FlavorError, FlavorIdentity, append_lines, optfile_word};
use crate::argsfile;
use std::path::Path;

pub fn enable_tls(original: &str, optfile: &Path) -> Result<String, FlavorError> {
    if let Some(flag) = argsfile::proto_dist_in_vm_args(original) {
        return Err(FlavorError::at(
            flag.line,
            flag.column,
            format!("vm.args already sets -proto_dist {}", flag.value),
            "distls starts from plain TCP: remove that line (or restore vm.args from its backup) and run distls again",
        ));
    }
    let optfile = optfile_word(optfile)?;
    Ok(append_lines(
        original,
        &format!(
            "## {}\n-proto_dist inet_tls\n-ssl_dist_optfile {optfile}\n",
            super::ADDED_MARK
        ),
    ))
}

pub fn identity(text: &str) -> Result<(FlavorIdentity, Option<argsfile::Cookie>), FlavorError> {
    let id = argsfile::node_identity(text)
        .map_err(|e| FlavorError::at(e.line, e.column, e.message.clone(), e.hint.clone()))?;
    Ok((
        FlavorIdentity {
            node_name: id.node_name,
            name_flag: id.name_flag,
        },
        id.cookie,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_two_lines_and_parses_back_as_tls() {
        let vm = "-sname app1@localhost\n-setcookie c\n";
        let tls = enable_tls(vm, Path::new("/rel/app/releases/1/distls-ssl_dist.conf")).unwrap();
        assert!(tls.starts_with(vm));
        assert!(tls.ends_with(
            "\n-proto_dist inet_tls\n-ssl_dist_optfile /rel/app/releases/1/distls-ssl_dist.conf\n"
        ));
        assert_eq!(
            argsfile::proto_dist_in_vm_args(&tls).unwrap().value,
            "inet_tls"
        );
        assert!(enable_tls(&tls, Path::new("/x")).is_err());
        let (id, cookie) = identity(vm).unwrap();
        assert_eq!(id.node_name, "app1@localhost");
        assert!(cookie.is_some());
    }
}
