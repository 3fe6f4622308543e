//! The files of each node, laid out like a MongooseIM release (see the module docs of
//! `rehearsal`), and the hand edits tests and demos make to them.

#[cfg(doc)]
use super::ClusterSpec;
use super::{RehearsalCluster, RehearsalError, RehearsalNode, TlsFiles, io_err};

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The ctl script installed as `<node>/bin/ctl`.
const CTL_SCRIPT: &str = include_str!("ctl.sh");

impl RehearsalCluster {
    /// Turns on link sampling (ctl.sh's `var/sample-links` switch) on every node; it takes effect
    /// at each node's next boot. [`ClusterSpec::sample_links`] samples from the first boot.
    pub fn enable_link_sampling(&self) -> Result<(), RehearsalError> {
        for node in &self.nodes {
            write_file(&node.sample_links_switch(), "", 0o644)?;
        }
        Ok(())
    }

    /// Naively enables TLS in node `node`'s vm.dist.args, the way a person would by hand: strips
    /// the leading `#` of every line of the commented-out TLS block (see [`uncomment_tls_block`]).
    /// For tests and demos only; distls itself edits the file properly.
    pub fn enable_tls_by_hand(&self, node: usize) -> Result<(), RehearsalError> {
        let path = self.node(node)?.vm_dist_args();
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        fs::write(&path, uncomment_tls_block(&text)).map_err(io_err("write", &path))
    }
}

/// Strips the leading `#` from every line of the commented-out TLS block: from `#-proto_dist` to
/// the next blank line, leaving `##` comments alone. What a person does by hand in an editor.
pub fn uncomment_tls_block(text: &str) -> String {
    let mut in_block = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("#-proto_dist") {
            in_block = true;
        } else if line.trim().is_empty() {
            in_block = false;
        }
        match line.strip_prefix('#') {
            Some(rest) if in_block && !rest.starts_with('#') => out.push_str(rest),
            _ => out.push_str(line),
        }
    }
    out
}

pub(super) fn write_node_layout(
    node: &RehearsalNode,
    all: &[RehearsalNode],
    cookie: &str,
    tls: &TlsFiles,
    listen: Ipv4Addr,
) -> Result<(), RehearsalError> {
    for sub in ["etc", "bin", "var", "log"] {
        let d = node.root.join(sub);
        fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
    }
    write_file(
        &node.vm_args(),
        &vm_args_text(&node.name, cookie, listen),
        0o644,
    )?;
    write_file(&node.vm_dist_args(), &vm_dist_args_text(tls), 0o644)?;
    let peers: String = all
        .iter()
        .filter(|n| n.name != node.name)
        .map(|n| format!("{}\n", n.name))
        .collect();
    write_file(&node.root.join("etc/peers"), &peers, 0o644)?;
    write_file(&node.ctl_path(), CTL_SCRIPT, 0o755)?;
    // A fresh cluster: forget the pids of a previous cluster built in the same directory.
    let _ = fs::remove_file(node.pid_file());
    Ok(())
}

/// MongooseIM's `rel/files/vm.args`, plus a listen interface: loopback only (`-sname`), or the
/// host's own address (`-name`, the address is the host part of `name`).
fn vm_args_text(name: &str, cookie: &str, listen: Ipv4Addr) -> String {
    let (flag, scope) = if listen.is_loopback() {
        ("-sname", "loopback only".to_owned())
    } else {
        ("-name", format!("the host's address {listen} only"))
    };
    let [a, b, c, d] = listen.octets();
    format!(
        "{flag} {name}\n\
         -setcookie {cookie}\n\
         -env ERL_FULLSWEEP_AFTER 2\n\
         ## Rehearsal cluster: listen for distribution on {scope}.\n\
         -kernel inet_dist_use_interface {{{a},{b},{c},{d}}}\n"
    )
}

/// MongooseIM's `rel/files/vm.dist.args` with the TLS block commented out, pointing at `<dir>/ssl`.
fn vm_dist_args_text(tls: &TlsFiles) -> String {
    let cert = tls.certfile.display();
    let key = tls.keyfile.display();
    let ca = tls.cacertfile.display();
    format!(
        "## Define what port range the Erlang VM should\n\
         ## listen on for Distributed Erlang connectivity,\n\
         ## aka communication within an Erlang cluster.\n\
         ## By default a random port in the ephemeral port range is used.\n\
         ## If you want to open specific ports on your firewall,\n\
         ## you have to explicitly set (uncomment) these ports here, too.\n\
         #-kernel inet_dist_listen_min 30000\n\
         #-kernel inet_dist_listen_max 30100\n\
         \n\
         ## Use TLS for connections between Erlang cluster members.\n\
         #-proto_dist inet_tls\n\
         #-ssl_dist_opt server_certfile   {cert} client_certfile   {cert}\n\
         #              server_keyfile    {key}  client_keyfile    {key}\n\
         #              server_cacertfile {ca}    client_cacertfile {ca}\n\
         #              client_verify     verify_peer\n\
         #              server_verify     verify_peer\n\
         #              server_fail_if_no_peer_cert true\n"
    )
}

pub(super) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), RehearsalError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("write", path))?;
    // `mode` only applies to a newly created file.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err("write", path))
}

pub(super) fn random_cookie() -> Result<String, RehearsalError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("read", path))?;
    Ok(hex::encode_upper(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_files_follow_mongooseim() {
        let tls = TlsFiles {
            certfile: "/r/ssl/node_cert.pem".into(),
            keyfile: "/r/ssl/node_key.pem".into(),
            cacertfile: "/r/ssl/cacert.pem".into(),
        };
        let vm_args = vm_args_text("mim1@localhost", "C00K1E", Ipv4Addr::LOCALHOST);
        assert!(vm_args.lines().any(|l| l == "-sname mim1@localhost"));
        assert!(vm_args.lines().any(|l| l == "-setcookie C00K1E"));
        assert!(vm_args.contains("-env ERL_FULLSWEEP_AFTER 2\n"));
        assert!(vm_args.contains("-kernel inet_dist_use_interface {127,0,0,1}\n"));
        assert!(!vm_args.contains("proto_dist"));
        let long = vm_args_text("mim2@10.213.7.2", "C00K1E", Ipv4Addr::new(10, 213, 7, 2));
        assert!(long.lines().any(|l| l == "-name mim2@10.213.7.2"), "{long}");
        assert!(long.contains("-kernel inet_dist_use_interface {10,213,7,2}\n"));
        assert!(!long.contains("-sname"));

        let dist = vm_dist_args_text(&tls);
        assert!(
            dist.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "all commented:\n{dist}"
        );
        assert!(dist.contains("#-ssl_dist_opt server_certfile   /r/ssl/node_cert.pem client_certfile   /r/ssl/node_cert.pem\n"));
        assert!(dist.contains("#              server_cacertfile /r/ssl/cacert.pem    client_cacertfile /r/ssl/cacert.pem\n"));

        let tls_on = uncomment_tls_block(&dist);
        let active: Vec<&str> = tls_on
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(active.len(), 7, "{tls_on}");
        assert_eq!(active[0], "-proto_dist inet_tls");
        assert_eq!(active[6], "              server_fail_if_no_peer_cert true");
        assert!(
            tls_on.contains("#-kernel inet_dist_listen_min 30000\n"),
            "port range stays commented"
        );
        assert!(tls_on.contains("## Use TLS for connections between Erlang cluster members.\n"));
        assert_eq!(uncomment_tls_block(&tls_on), tls_on);
    }
}
