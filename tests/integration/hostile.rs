//! A hostile host (docs/security.md): a real unprivileged service user owns every node's `etc/`
//! and stages each attack there as itself (symbolic links at the flags file, its backup, the
//! relx optfile, the hybrid module's path and every predictable temp name, pointing at a root-owned 0600 victim
//! outside the node directories; a dangling link; a link to /dev/zero). Each run is refused with
//! a clear error or the attack has no effect; the victim stays byte-identical, root-owned, same
//! mode; the node directories end as they began. Both transports: local, and SSH through the
//! loopback sshd. Needs root (to create the user); skipped otherwise.

use crate::sshd::TestSshd;
use crate::support::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway system user, removed when dropped.
struct ServiceUser {
    name: String,
    uid: u32,
}

impl ServiceUser {
    fn create(tag: &str) -> Option<Self> {
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the hostile-host suite needs root to create a service user");
            return None;
        }
        let name = format!("distls-svc-{}-{tag}", std::process::id());
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .output()
            .expect("useradd runs");
        assert!(out.status.success(), "useradd: {}", describe(&out));
        let id = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        Some(ServiceUser { name, uid })
    }

    /// Run a shell script as this user (the attacker's own hands).
    fn run(&self, script: &str) {
        let out = Command::new("runuser")
            .args(["-u", &self.name, "--", "/bin/sh", "-c", script])
            .output()
            .expect("runuser runs");
        assert!(
            out.status.success(),
            "as {}: {script}: {}",
            self.name,
            describe(&out)
        );
    }

    fn owns(&self, path: &Path) {
        let out = Command::new("chown")
            .args(["-R", &format!("{0}:{0}", self.name)])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }
}

impl Drop for ServiceUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A root-owned 0600 file outside the node directories, that no attack may change.
struct Victim {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Victim {
    fn plant(dir: &Path) -> Self {
        let path = dir.join("victim-root-secret");
        let bytes = b"root:$6$secret-hash:19000:0:99999:7:::\n".to_vec();
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Victim { path, bytes }
    }

    fn assert_untouched(&self, after: &str) {
        let meta = std::fs::symlink_metadata(&self.path).unwrap();
        assert!(meta.is_file(), "after {after}: the victim is still a file");
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            self.bytes,
            "after {after}: victim byte-identical"
        );
        assert_eq!(meta.uid(), 0, "after {after}: victim root-owned");
        assert_eq!(meta.gid(), 0, "after {after}: victim group root");
        assert_eq!(meta.mode() & 0o7777, 0o600, "after {after}: victim mode");
    }
}

/// Every entry under each node's `etc/`: type, owner, mode, and content or link target.
fn snapshot(t: &TestCluster) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(&path, out);
                "dir".to_owned()
            } else {
                format!("file {:?}", std::fs::read(&path).unwrap())
            };
            let key = format!("{what} uid {} mode {:o}", meta.uid(), meta.mode() & 0o7777);
            out.insert(path, key);
        }
    }
    let mut out = BTreeMap::new();
    for node in t.cluster.nodes() {
        walk(&node.root.join("etc"), &mut out);
    }
    out
}

/// A cluster whose `etc/` directories the service user owns, reachable by it.
fn hostile_cluster(prefix: &str, tag: &str) -> Option<(TestCluster, ServiceUser, Victim)> {
    let svc = ServiceUser::create(tag)?;
    let t = cluster(prefix, 2);
    let dir = t.cluster.dir().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for node in t.cluster.nodes() {
        let mut up = node.root.clone();
        while up.starts_with(&dir) && up != dir {
            std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o755)).unwrap();
            up.pop();
        }
        svc.owns(&node.root.join("etc"));
    }
    let victim = Victim::plant(&dir);
    Some((t, svc, victim))
}

fn combined(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// A run refused because of a link the service user planted at `link`.
fn assert_refused_link(out: &std::process::Output, link: &Path, svc: &ServiceUser) {
    assert!(!out.status.success(), "refused: {}", describe(out));
    let text = combined(out);
    assert!(
        text.contains(&format!(
            "{}: a symbolic link distls does not follow",
            link.display()
        )),
        "names the link: {}",
        describe(out)
    );
    assert!(
        text.contains(&format!("is owned by {} (uid {})", svc.name, svc.uid)),
        "names the owner: {}",
        describe(out)
    );
    assert!(
        text.contains("hint: check where it points"),
        "says the fix: {}",
        describe(out)
    );
    eprintln!("refused as expected:\n{}", stderr(out).trim_end());
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// A relx-flavor plan for the same nodes (its optfile, `etc/distls-ssl_dist.conf`, is written
/// owned like the flags file), with `defaults_extra` under `defaults:` (the transport, the env).
fn relx_plan(t: &TestCluster, defaults_extra: &str) -> PathBuf {
    let tls = t.cluster.tls_files();
    let mut yaml = format!(
        "version: 1\ncluster: relx-hostile\nflavor: relx\ntls:\n  certfile: {}\n  keyfile: {}\n  cacertfile: {}\ndefaults:\n{defaults_extra}nodes:\n",
        tls.certfile.display(),
        tls.keyfile.display(),
        tls.cacertfile.display(),
    );
    for node in t.cluster.nodes() {
        let ctl = node.ctl_path();
        yaml.push_str(&format!(
            "  - name: {}\n    vm_args: {}\n    commands:\n      start: {ctl} start\n      stop: {ctl} stop\n      ping: {ctl} ping\n",
            node.name,
            node.vm_args().display(),
            ctl = ctl.display(),
        ));
    }
    let plan = t.cluster.dir().join("relx-plan.yaml");
    std::fs::write(&plan, yaml).unwrap();
    plan
}

/// Every attack against `t`, whose plans reach the nodes through `via` (for messages).
fn run_attacks(t: &TestCluster, relx: &Path, svc: &ServiceUser, victim: &Victim, via: &str) {
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let state = t.cluster.dir().join(".distls");
    let before = snapshot(t);
    let flags = t.dist_args_path(0);
    let etc = flags.parent().unwrap().to_path_buf();
    let backup = etc.join("vm.dist.args.distls-orig");
    let saved = etc.join("vm.dist.args.saved");
    let clean = |what: &str| {
        let _ = std::fs::remove_dir_all(&state);
        assert_eq!(
            snapshot(t),
            before,
            "{via}: after {what} the node directories are as before"
        );
        victim.assert_untouched(&format!("{via}: {what}"));
    };

    // The flags file is a link the service user made: to its own file, to the victim, to
    // /dev/zero. Each is refused before anything is written.
    for (what, target) in [
        (
            "a symlinked flags file owned by the service user",
            saved.clone(),
        ),
        ("a flags file linked to the victim", victim.path.clone()),
        (
            "a flags file linked to /dev/zero",
            PathBuf::from("/dev/zero"),
        ),
    ] {
        svc.run(&format!(
            "cp -p {f} {s} && rm {f} && ln -s {target} {f}",
            f = quoted(&flags),
            s = quoted(&saved),
            target = quoted(&target)
        ));
        let out = t.distls(&["migrate", "--classic", plan]);
        if target.starts_with("/dev") {
            // Locally the plan check already refuses a flags file that is no regular file.
            let text = combined(&out);
            assert!(!out.status.success(), "{}", describe(&out));
            assert!(
                text.contains("is not a regular file")
                    || text.contains("a symbolic link distls does not follow"),
                "{}",
                describe(&out)
            );
        } else {
            assert_refused_link(&out, &flags, svc);
        }
        svc.run(&format!(
            "rm {f} && mv {s} {f}",
            f = quoted(&flags),
            s = quoted(&saved)
        ));
        clean(what);
    }

    // A link at the backup path: to the victim, and dangling.
    for (what, target) in [
        ("a backup linked to the victim", victim.path.clone()),
        (
            "a dangling backup link",
            PathBuf::from("/nonexistent/distls-orig"),
        ),
    ] {
        svc.run(&format!("ln -s {} {}", quoted(&target), quoted(&backup)));
        let out = t.distls(&["migrate", "--classic", plan]);
        assert_refused_link(&out, &backup, svc);
        svc.run(&format!("rm {}", quoted(&backup)));
        clean(what);
    }

    // The relx flavor's optfile: a link to the victim, and a dangling one. Refused before
    // anything is written.
    let optfile = etc.join("distls-ssl_dist.conf");
    for (what, target) in [
        ("an optfile linked to the victim", victim.path.clone()),
        (
            "a dangling optfile link",
            PathBuf::from("/nonexistent/ssl_dist.conf"),
        ),
    ] {
        svc.run(&format!("ln -s {} {}", quoted(&target), quoted(&optfile)));
        let out = t.distls(&["migrate", "--classic", relx.to_str().unwrap()]);
        assert_refused_link(&out, &optfile, svc);
        svc.run(&format!("rm {}", quoted(&optfile)));
        clean(what);
    }

    // The hybrid module's path: the service user makes etc/distls-hybrid/ and links the module
    // source to the victim. The zero-split run stops before any node, and leaves no module on
    // the other node either.
    let module_dir = etc.join("distls-hybrid");
    let module = module_dir.join("distls_hybrid_dist.erl");
    svc.run(&format!(
        "mkdir {d} && ln -s {v} {m}",
        d = quoted(&module_dir),
        v = quoted(&victim.path),
        m = quoted(&module)
    ));
    let out = t.distls(&["migrate", "--zero-split", plan]);
    assert_refused_link(&out, &module, svc);
    t.assert_mesh("inet_tcp", "tcp");
    svc.run(&format!("rm -r {}", quoted(&module_dir)));
    clean("a module path linked to the victim");

    // Links at every temp name the old scheme could pick (`.NAME.distls-tmp-$$`, for the next
    // few thousand pids): distls's temp names are random and created O_EXCL, so a full
    // migration and rollback go through and never touch them.
    let next_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let originals = t.dist_args_files();
    for node in t.cluster.nodes() {
        svc.run(&format!(
            "cd {etc} && perl -e 'for my $n ({from}..{to}) {{ for my $f (qw(vm.dist.args vm.dist.args.distls-orig)) {{ symlink($ARGV[0], \".$f.distls-tmp-$n\") or die $! }} }}' {v}",
            etc = quoted(&node.root.join("etc")),
            from = next_pid,
            to = next_pid + 3000,
            v = quoted(&victim.path)
        ));
    }
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{via}: {}", describe(&out));
    t.assert_mesh("inet_tls", "tls");
    victim.assert_untouched(&format!("{via}: a migration among planted temp links"));
    for (node, original) in originals.iter().enumerate() {
        let flags = t.dist_args_path(node);
        let meta = std::fs::symlink_metadata(&flags).unwrap();
        assert!(
            meta.is_file(),
            "{via}: node {node}: the flags file is a file"
        );
        assert_eq!(
            meta.uid(),
            svc.uid,
            "{via}: node {node}: owner kept (fchown)"
        );
        let backup = std::fs::symlink_metadata(format!("{}.distls-orig", flags.display()));
        let backup = backup.unwrap();
        assert!(backup.is_file(), "{via}: node {node}: the backup is a file");
        assert_eq!(backup.mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read(format!("{}.distls-orig", flags.display())).unwrap(),
            *original
        );
    }
    let out = t.distls(&["rollback", plan]);
    assert!(out.status.success(), "{via}: {}", describe(&out));
    t.wait_for_mesh("inet_tcp", "tcp");
    t.assert_files_are(&originals);
    victim.assert_untouched(&format!("{via}: a rollback among planted temp links"));
    for node in t.cluster.nodes() {
        let etc = node.root.join("etc");
        let planted = std::fs::read_dir(&etc)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".distls-tmp-"))
            .inspect(|e| {
                assert_eq!(
                    std::fs::read_link(e.path()).unwrap(),
                    victim.path,
                    "{via}: a planted link is untouched"
                )
            })
            .count();
        assert_eq!(
            planted,
            2 * 3001,
            "{via}: every planted link is still there"
        );
        svc.run(&format!(
            "cd {} && rm -f .vm.dist.args*.distls-tmp-*",
            quoted(&etc)
        ));
        // A backup left after the rollback is distls's own file.
        let _ = std::fs::remove_file(etc.join("vm.dist.args.distls-orig"));
    }
    clean("a migration and rollback among planted temp links");
}

#[test]
fn a_hostile_service_user_cannot_redirect_local_writes() {
    let Some((t, svc, victim)) = hostile_cluster("hostloc", "l") else {
        return;
    };
    let env = format!(
        "  env: {{ ERL_EPMD_PORT: \"{}\" }}\n",
        t.cluster.epmd_port()
    );
    let relx = relx_plan(&t, &env);
    run_attacks(&t, &relx, &svc, &victim, "local");
}

/// The same attacks over SSH; and a flags file that is not UTF-8 is refused over SSH exactly as
/// locally, while CR LF line ends and a missing final newline come back byte for byte.
#[test]
fn a_hostile_service_user_cannot_redirect_writes_over_ssh() {
    let Some((t, svc, victim)) = hostile_cluster("hostssh", "s") else {
        return;
    };
    let plan = t.plan();
    let local_plan = std::fs::read_to_string(&plan).unwrap();
    let sshd = TestSshd::start(&t.cluster.dir().join("sshd"));
    let settings = sshd.plan_settings("user_key", "known_hosts", &t.cluster.env());
    let ssh_plan = local_plan.replace("  transport: local\n", &settings);
    assert_ne!(ssh_plan, local_plan);

    // A Latin-1 byte: the same located refusal both ways, nothing touched.
    let flags = t.dist_args_path(1);
    let original = std::fs::read(&flags).unwrap();
    let mut latin1 = original.clone();
    latin1.extend_from_slice(b"## r\xe9seau\n");
    std::fs::write(&flags, &latin1).unwrap();
    let mut refusals = Vec::new();
    for text in [&local_plan, &ssh_plan] {
        std::fs::write(&plan, text).unwrap();
        let out = t.distls(&["migrate", "--classic", plan.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let line = stderr(&out)
            .lines()
            .find(|l| l.contains("is not UTF-8 text"))
            .unwrap_or_else(|| panic!("{}", describe(&out)))
            .to_owned();
        refusals.push(line);
        assert_eq!(std::fs::read(&flags).unwrap(), latin1, "nothing touched");
    }
    assert_eq!(
        refusals[0], refusals[1],
        "refused over SSH exactly as locally"
    );
    assert!(refusals[1].contains("(byte 0xe9)"), "{}", refusals[1]);
    std::fs::write(&flags, &original).unwrap();
    svc.owns(&flags);
    let _ = std::fs::remove_dir_all(t.cluster.dir().join(".distls"));

    // CR LF and no final newline on node 0: the migration and rollback below give it back
    // byte for byte.
    let flags = t.dist_args_path(0);
    let text = String::from_utf8(std::fs::read(&flags).unwrap()).unwrap();
    let crlf = text.trim_end_matches('\n').replace('\n', "\r\n");
    std::fs::write(&flags, crlf.as_bytes()).unwrap();
    svc.owns(&flags);

    std::fs::write(&plan, &ssh_plan).unwrap();
    let relx = relx_plan(&t, &settings);
    run_attacks(&t, &relx, &svc, &victim, "ssh");
    assert_eq!(std::fs::read(&flags).unwrap(), crlf.as_bytes());
}

/// The file agent over a real SSH connection: bytes that are not UTF-8 (Latin-1, CR LF, NUL, no
/// final newline) go and come back as they are; a write whose stream stops early renames nothing
/// and leaves no temp file; a FIFO is refused at once. No service user needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_agent_over_ssh_moves_raw_bytes_and_renames_nothing_cut_short() {
    use distls::ssh::SshSpec;
    use distls::transport::Transport;
    let dir = tempfile::tempdir().unwrap();
    let sshd = TestSshd::start(&dir.path().join("sshd"));
    let spec = SshSpec {
        host: sshd.address.clone(),
        port: Some(sshd.port),
        user: Some(sshd.user.clone()),
        identity_file: Some(sshd.dir.join("user_key")),
        config_file: None,
        known_hosts: Some(sshd.dir.join("known_hosts")),
        accept_unknown_host_keys: false,
        options: Vec::new(),
    };
    let connections = distls::ssh::connect_all(&[&spec]).await.expect("connects");
    let transport = Transport::ssh(connections[&spec].clone(), Vec::new(), None);

    let path = dir.path().join("vm.dist.args");
    let bytes: &[u8] = b"## r\xe9seau\r\n-proto_dist inet_tls\r\n\x00\xff-no-final-newline";
    std::fs::write(&path, b"old\n").unwrap();
    transport.write_file(&path, bytes, 0o644).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "written as sent");
    assert_eq!(
        transport.read_file(&path).await.unwrap(),
        bytes,
        "read as stored"
    );

    let new = b"-proto_dist inet_tls\n".repeat(20_000);
    let started = std::time::Instant::now();
    let err = transport
        .write_file_cut_short(&path, &new, 100_000)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("received 100000 of {} bytes", new.len())),
        "{err}"
    );
    eprintln!(
        "a write cut short over ssh was refused in {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the old file stays");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "sshd")
        .collect();
    assert_eq!(names, ["vm.dist.args"], "no temp file left");

    // What one file operation costs over the connection (each is one remote command).
    let started = std::time::Instant::now();
    for _ in 0..10 {
        transport.write_file(&path, bytes, 0o644).await.unwrap();
        transport.read_file(&path).await.unwrap();
    }
    let agent = started.elapsed() / 10;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        for _ in 0..2 {
            let out = transport
                .run("true", std::time::Duration::from_secs(30))
                .await
                .unwrap();
            assert!(out.success());
        }
    }
    eprintln!(
        "one write + one read over ssh: {agent:?} on average; two bare commands: {:?}",
        started.elapsed() / 10
    );

    let fifo = dir.path().join("cookie");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = transport.read_file(&fifo).await.unwrap_err().to_string();
    assert!(err.contains("is not a regular file (a FIFO)"), "{err}");
    distls::ssh::close_all(connections).await;
}

/// Through a non-root `become` (the service user itself), an owner change distls cannot make is
/// an error, not a silent change of owner: nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn an_owner_change_that_fails_is_an_error() {
    let Some(svc) = ServiceUser::create("b") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    svc.owns(&etc);
    let root_file = dir.path().join("root-owned");
    std::fs::write(&root_file, "x").unwrap();
    let become_svc = distls::transport::Transport::local(
        Vec::new(),
        Some(format!("runuser -u {} --", svc.name)),
    );
    let optfile = etc.join("distls-ssl_dist.conf");
    let err = become_svc
        .write_file_owned_like(&optfile, b"[].", 0o600, &root_file)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot give the new file the owner 0:0"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&etc).unwrap().count(),
        0,
        "nothing written, no temp file left"
    );
    // Owned like a file of its own: fine.
    let own = etc.join("vm.dist.args");
    svc.run(&format!("echo x > {}", quoted(&own)));
    become_svc
        .write_file_owned_like(&optfile, b"[].", 0o600, &own)
        .await
        .unwrap();
    let meta = std::fs::metadata(&optfile).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (svc.uid, 0o600));
}

/// A process a hostile-host test starts, stopped by its pid when dropped.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `epmd -names` of the cluster's epmd: the port each name is registered at.
fn epmd_names(t: &TestCluster) -> BTreeMap<String, u16> {
    let out = Command::new("epmd")
        .args(["-port", &t.cluster.epmd_port().to_string(), "-names"])
        .output()
        .expect("epmd runs");
    stdout(&out)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("name ")?;
            let (name, port) = rest.split_once(" at port ")?;
            Some((name.to_string(), port.trim().parse().ok()?))
        })
        .collect()
}

fn wait_for(t: &TestCluster, what: &str, mut done: impl FnMut() -> bool) {
    t.cluster
        .wait_until(what, std::time::Duration::from_secs(60), &mut done)
        .unwrap();
}

/// Item 8: a force stop signals only the node's own VM. The service user stops its node and, as
/// any local user can, registers the node's name with epmd at the port of a root-owned VM.
/// The rollback finds the node unreachable there, its stop command cannot stop it, and the
/// force stop would signal the VM behind that port (root's, as distls itself): distls refuses,
/// saying why, and that VM lives on.
#[test]
fn a_force_stop_never_signals_a_vm_that_is_not_the_node() {
    let Some((t, svc, victim)) = hostile_cluster("hostpid", "p") else {
        return;
    };
    let plan = t.plan();
    let plan = plan.to_str().unwrap();
    let out = t.distls(&["migrate", "--classic", plan]);
    assert!(out.status.success(), "{}", describe(&out));
    t.assert_mesh("inet_tls", "tls");

    let dir = t.cluster.dir().join("root-vm");
    std::fs::create_dir(&dir).unwrap();
    let root_vm = Started(
        Command::new("erl")
            .args([
                "-noshell",
                "-sname",
                "rootvm",
                "-setcookie",
                "not-the-clusters",
            ])
            .envs(t.cluster.env())
            .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut port = 0;
    wait_for(&t, "the root VM to register with epmd", || {
        port = epmd_names(&t).get("rootvm").copied().unwrap_or(0);
        port != 0
    });

    let node = t.node_names()[0].clone();
    let short = node.split('@').next().unwrap().to_string();
    t.cluster.ctl_ok(0, &["stop"]).unwrap();
    wait_for(&t, "node 1 to leave epmd", || {
        !epmd_names(&t).contains_key(&short)
    });
    // ALIVE2_REQ for the node's name at the root VM's port, held open (the registration lasts
    // as long as the connection).
    let register = r#"use IO::Socket::INET;
my ($epmd, $name, $port) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $epmd) or die "connect: $!";
my $body = pack("C n C C n n n", 120, $port, 77, 0, 6, 5, length $name) . $name . pack("n", 0);
print $s pack("n", length $body) . $body; $s->flush;
sysread($s, my $reply, 16) or die "no reply";
my ($tag, $result) = unpack("C C", $reply);
die "epmd refused: $tag $result" unless ($tag == 121 || $tag == 118) && $result == 0;
sleep 3600;"#;
    let _squatter = Started(
        Command::new("setpriv")
            .args(["--reuid", &svc.name, "--regid", &svc.name, "--clear-groups"])
            .args(["perl", "-e", register])
            .arg(t.cluster.epmd_port().to_string())
            .arg(&short)
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&t, "the node's name to point at the root VM", || {
        epmd_names(&t).get(&short) == Some(&port)
    });

    t.cluster.write_plan_with(|index| {
        if index == 0 {
            "    timeouts:\n      stop: 3s\n      kill_grace: 3s\n".to_string()
        } else {
            String::new()
        }
    });
    let out = t.distls(&["rollback", plan]);
    assert!(!out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    let vm_pid = root_vm.0.id();
    assert!(
        said.contains(&format!("distls refuses to signal OS pid {vm_pid}"))
            && said.contains(&format!("not node {node}")),
        "refused, naming the pid and why: {}",
        describe(&out)
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{vm_pid}/comm"))
            .is_ok_and(|c| c.starts_with("beam")),
        "the root VM still runs"
    );
    victim.assert_untouched("a force stop aimed at a root VM");
    eprintln!("refused as expected:\n{}", said.trim_end());
}

/// Item 11: a probe VM that crashes (SIGUSR1: the VM's own crash-dump signal) writes no dump,
/// neither through the `erl_crash.dump` link the service user planted in the operator's working
/// directory (the node's `etc/`, which it owns) nor anywhere else; distls's own environment
/// has no ERL_CRASH_DUMP, as an operator's would not.
#[test]
fn a_crashing_probe_writes_no_dump_through_a_planted_link() {
    let Some((t, svc, victim)) = hostile_cluster("hostdump", "d") else {
        return;
    };
    let etc = t.dist_args_path(0).parent().unwrap().to_path_buf();
    let link = etc.join("erl_crash.dump");
    svc.run(&format!("ln -s {} {}", quoted(&victim.path), quoted(&link)));
    let plan = t.plan();
    let run = Command::new(env!("CARGO_BIN_EXE_distls"))
        .args(["migrate", "--classic", plan.to_str().unwrap()])
        .envs(t.cluster.env())
        .env_remove("ERL_CRASH_DUMP")
        .env_remove("ERL_CRASH_DUMP_SECONDS")
        .current_dir(&etc)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut probe = None;
    let marker = format!("distls_probe_{}_", run.id());
    wait_for(&t, "a probe VM of the run", || {
        probe = processes()
            .into_iter()
            .find(|(_, _, cmdline)| cmdline.contains(&marker))
            .map(|(pid, _, _)| pid);
        probe.is_some()
    });
    let probe = probe.unwrap();
    // SAFETY: a signal to the pid just found, a VM this test's distls started.
    assert_eq!(unsafe { libc::kill(probe as i32, libc::SIGUSR1) }, 0);
    wait_for(&t, "the probe VM to end", || {
        !Path::new(&format!("/proc/{probe}")).exists()
            || std::fs::read_to_string(format!("/proc/{probe}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
    });
    let out = run.wait_with_output().unwrap();
    eprintln!("the run, its probe crashed: {}", describe(&out));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        victim.path,
        "the planted link is untouched"
    );
    victim.assert_untouched("a probe VM crash");
    let dumps: Vec<PathBuf> = std::fs::read_dir(&etc)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &link && p.to_string_lossy().contains("crash.dump"))
        .collect();
    assert!(dumps.is_empty(), "no dump beside the link: {dumps:?}");
    // Whatever the run did, the cluster can be brought back.
    if !out.status.success() {
        let back = t.distls(&["rollback", plan.to_str().unwrap()]);
        assert!(back.status.success(), "{}", describe(&back));
    }
}
