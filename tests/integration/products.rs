//! Real ejabberd and RabbitMQ clusters (Debian packages) for the flavor tests: three nodes on this
//! host, each product with its own epmd on its own loopback port (ERL_EPMD_PORT exported in every
//! node's config file), certificates for the host name the nodes use. Everything a cluster starts is
//! stopped by pid when it is dropped. Recipe: docs/flavor-ejabberd.md, docs/flavor-rabbitmq.md.
//! A cluster runs on this machine (its Debian 12 packages, OTP 25) or on one OTP host
//! ([`crate::otp_hosts`]: the products of Debian trixie or sid, OTP 27 or 29), which distls
//! then reaches over SSH like a remote host.

use crate::otp_hosts::{Otp, OtpHosts};
use crate::sshd::TestSshd;
use crate::support::describe;
use distls::rehearsal::{
    TlsFiles, is_zombie, poll_until, read_pid, start_private_epmd_under, write_host_certs,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One product cluster at a time: they are heavy for a 2-core CI machine, and the ejabberd
/// tests share the ejabberd user's cookie file.
static PRODUCTS: Mutex<()> = Mutex::new(());

pub fn products_lock() -> MutexGuard<'static, ()> {
    PRODUCTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a product cluster runs: this machine, or one OTP host with its own sshd.
pub struct OnHost {
    pub otp: Otp,
    /// The host's sshd and the host itself (dropped in that order); None on this machine.
    remote: Option<(TestSshd, OtpHosts)>,
}

impl OnHost {
    /// None where an OTP host cannot be made here (the caller skips, having said why).
    fn create(otp: Otp, dir: &Path) -> Option<OnHost> {
        if otp == Otp::Machine {
            return Some(OnHost { otp, remote: None });
        }
        let hosts = OtpHosts::create(&[otp])?;
        let sshd = hosts.sshd(1, &dir.join("sshd"));
        Some(OnHost {
            otp,
            remote: Some((sshd, hosts)),
        })
    }

    fn prefix(&self) -> Vec<String> {
        self.remote
            .as_ref()
            .map_or_else(Vec::new, |(_, hosts)| hosts.exec_prefix(1))
    }

    /// `path` of the host's filesystem, as this machine sees it.
    pub fn path(&self, path: &str) -> PathBuf {
        match &self.remote {
            None => PathBuf::from(path),
            Some((_, hosts)) => hosts
                .root(1)
                .expect("an OTP host has a root")
                .path
                .join(path.trim_start_matches('/')),
        }
    }

    /// `sh -c script` on the host.
    pub fn sh(&self, script: &str) -> Output {
        match &self.remote {
            None => sh(script),
            Some((_, hosts)) => hosts.sh(1, script),
        }
    }

    /// The plan's `defaults:` lines that reach the host (none on this machine).
    pub fn plan_transport(&self) -> String {
        match &self.remote {
            None => String::new(),
            Some((sshd, _)) => sshd.plan_settings("user_key", "known_hosts", &[]),
        }
    }

    /// The product tests never pass silently: without the package they fail and say what to install.
    fn require_installed(&self, program: &str, package: &str) {
        assert!(
            self.path(program).exists(),
            "{program} is missing on the OTP {} host: the {package} flavor test needs the real product. Install it with `bash scripts/install-deps` (apt-get install -y ejabberd rabbitmq-server)",
            self.otp.major()
        );
    }
}

pub fn short_hostname() -> String {
    let out = Command::new("hostname").arg("-s").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn sh(script: &str) -> Output {
    Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("sh runs")
}

/// `chown -R user:user path` on the host (its user names).
fn chown_r(on: &OnHost, path: &Path, user: &str) {
    let out = on.sh(&format!("chown -R {user}:{user} {}", path.display()));
    assert!(out.status.success(), "chown: {}", describe(&out));
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// SIGKILL a beam by its pid and wait until it is gone.
fn kill_pid(pid: u32) {
    // SAFETY: a pid this test's cluster started (from its pid file).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let _ = poll_until("beam exit", Duration::from_secs(20), &mut || {
        if pid_alive(pid) && !is_zombie(pid) {
            Err(format!("{pid} still runs"))
        } else {
            Ok(())
        }
    });
}

/// What every product cluster has: a directory the service user can read, certificates, an epmd,
/// the host it runs on (dropped last).
pub struct Base {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub tls: TlsFiles,
    epmd: Option<Child>,
    pub epmd_port: u16,
    pub on: OnHost,
}

impl Base {
    /// None where the OTP host cannot be made here.
    pub fn new(prefix: &str, user: &str, otp: Otp) -> Option<Base> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("distls-{prefix}-"))
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let on = OnHost::create(otp, dir.path())?;
        let host = short_hostname();
        let tls = write_host_certs(&dir.path().join("tls"), &host).expect("certificates");
        chown_r(&on, &dir.path().join("tls"), user);
        let (epmd, epmd_port) =
            start_private_epmd_under(dir.path(), &on.prefix()).expect("private epmd");
        Some(Base {
            dir,
            host,
            tls,
            epmd: Some(epmd),
            epmd_port,
            on,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plan_head(&self, cluster: &str, flavor: &str) -> String {
        format!(
            "version: 1\ncluster: {cluster}\nflavor: {flavor}\ntls:\n  certfile: {}\n  keyfile: {}\n  cacertfile: {}\n",
            self.tls.certfile.display(),
            self.tls.keyfile.display(),
            self.tls.cacertfile.display()
        )
    }

    pub fn stop_epmd(&mut self) {
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}

/// Wait for `check` to pass (a command's success), polling with a deadline.
pub fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<(), String>) {
    poll_until(what, deadline, &mut check).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------------
// ejabberd

/// The ejabberd user's cookie file on the product's host.
pub const EJ_COOKIE: &str = "/var/lib/ejabberd/.erlang.cookie";

pub struct Ejabberd {
    pub base: Base,
    pub n: usize,
    created_cookie: bool,
}

impl Ejabberd {
    /// `n` plain nodes `ejabberdN@host`, clustered, with user alice@localhost registered.
    pub fn cluster(prefix: &str, n: usize) -> Ejabberd {
        Self::cluster_on(prefix, n, Otp::Machine).expect("this machine is a host")
    }

    /// [`Self::cluster`] on a host of `otp`; None where such a host cannot be made here.
    pub fn cluster_on(prefix: &str, n: usize, otp: Otp) -> Option<Ejabberd> {
        let base = Base::new(prefix, "ejabberd", otp)?;
        base.on
            .require_installed("/usr/sbin/ejabberdctl", "ejabberd");
        let cookie_path = base.on.path(EJ_COOKIE);
        let created_cookie = !cookie_path.exists();
        if created_cookie {
            let cookie = format!("DISTLSTEST{}", std::process::id());
            std::fs::write(&cookie_path, cookie).unwrap();
            base.on.sh(&format!(
                "chown ejabberd:ejabberd {EJ_COOKIE} && chmod 400 {EJ_COOKIE}"
            ));
        }
        let cluster = Ejabberd {
            base,
            n,
            created_cookie,
        };
        for i in 1..=n {
            cluster.write_node(i);
        }
        chown_r(&cluster.base.on, cluster.base.path(), "ejabberd");
        for i in 1..=n {
            cluster.start_plain(i);
        }
        let first = cluster.node_name(1);
        for i in 2..=n {
            cluster.ctl_ok(i, &["join_cluster", &first]);
        }
        cluster.ctl_ok(1, &["register", "alice", "localhost", "s3cret"]);
        Some(cluster)
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("ejabberd{i}@{}", self.base.host)
    }

    /// Node `i` lists every node of `names` in its cluster, and alice@localhost still exists.
    pub fn assert_whole_with_alice(&self, i: usize, names: &[String]) {
        let cluster = self.ctl_ok(i, &["list_cluster"]);
        for name in names {
            assert!(
                cluster.contains(name.as_str()),
                "node {i} lists {name}: {cluster}"
            );
        }
        let account = self.ctl(i, &["check_account", "alice", "localhost"]);
        assert!(
            account.status.success(),
            "alice still exists: {}",
            describe(&account)
        );
    }

    pub fn etc(&self, i: usize) -> PathBuf {
        self.base.path().join(format!("ejabberd{i}/etc"))
    }

    pub fn cfg(&self, i: usize) -> PathBuf {
        self.etc(i).join("ejabberdctl.cfg")
    }

    fn pid_file(&self, i: usize) -> PathBuf {
        self.base
            .path()
            .join(format!("ejabberd{i}/run/ejabberd.pid"))
    }

    fn write_node(&self, i: usize) {
        let root = self.base.path().join(format!("ejabberd{i}"));
        for sub in ["etc", "spool", "logs", "run"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let cfg = format!(
            "# ejabberdctl.cfg of a distls test node\nexport ERL_EPMD_PORT={port}\nERLANG_NODE={name}\nSPOOL_DIR={root}/spool\nLOGS_DIR={root}/logs\nEJABBERD_PID_PATH={root}/run/ejabberd.pid\nEJABBERD_BYPASS_WARNINGS=true\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\n",
            port = self.base.epmd_port,
            name = self.node_name(i),
            root = root.display()
        );
        std::fs::write(self.cfg(i), cfg).unwrap();
        let yml = "hosts:\n  - localhost\nloglevel: warning\ncertfiles:\n  - /etc/ejabberd/ejabberd.pem\nlisten: []\nacl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local:\n    allow: local\napi_permissions:\n  \"console commands\":\n    from:\n      - ejabberd_ctl\n    who: all\n    what: \"*\"\nmodules:\n  mod_admin_extra: {}\n  mod_roster: {}\n";
        std::fs::write(self.etc(i).join("ejabberd.yml"), yml).unwrap();
        let _ = std::fs::copy(
            self.base.on.path("/etc/ejabberd/inetrc"),
            self.etc(i).join("inetrc"),
        );
    }

    /// Node `i`'s OS pid (its beam, from the pid file ejabberd writes at boot).
    pub fn os_pid(&self, i: usize) -> u32 {
        read_pid(&self.pid_file(i)).unwrap_or_else(|| panic!("node {i} has a pid file"))
    }

    pub fn ctl_command(&self, i: usize) -> String {
        format!(
            "ejabberdctl --config-dir {} --ctl-config {}",
            self.etc(i).display(),
            self.cfg(i).display()
        )
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        run_ctl(&self.base.on, &self.ctl_command(i), args)
    }

    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        run_ctl_ok(&self.base.on, &self.ctl_command(i), i, args)
    }

    /// Start and wait until ejabberd has started (`started` polls the node itself).
    pub fn start_plain(&self, i: usize) {
        self.ctl_ok(i, &["start"]);
        self.ctl_ok(i, &["started"]);
    }

    pub fn stop(&self, i: usize) {
        self.ctl_ok(i, &["stop"]);
        self.ctl_ok(i, &["stopped"]);
    }

    pub fn plan(&self, cluster: &str, extra_node_yaml: impl Fn(usize) -> String) -> PathBuf {
        let mut yaml = self.base.plan_head(cluster, "ejabberd");
        yaml.push_str("defaults:\n");
        yaml.push_str(&self.base.on.plan_transport());
        yaml.push_str(&format!(
            "  flags_file: {}/{{sname}}/etc/ejabberdctl.cfg\n  env: {{ ERL_EPMD_PORT: \"{}\" }}\n  timeouts: {{ start: 90s, stop: 90s, ready: 3m }}\nnodes:\n",
            self.base.path().display(),
            self.base.epmd_port
        ));
        for i in 1..=self.n {
            yaml.push_str(&format!(
                "  - name: {}\n{}",
                self.node_name(i),
                extra_node_yaml(i)
            ));
        }
        let path = self.base.path().join("plan.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        for i in 1..=self.n {
            if let Some(pid) = read_pid(&self.pid_file(i)) {
                kill_pid(pid);
            }
        }
        self.base.stop_epmd();
        if self.created_cookie {
            let _ = std::fs::remove_file(self.base.on.path(EJ_COOKIE));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

pub struct RabbitMq {
    pub base: Base,
    pub n: usize,
}

impl RabbitMq {
    /// `n` plain nodes `rabbitN@host`, clustered, with a durable classic queue `cq1` on node 1
    /// holding one persistent message.
    pub fn cluster(prefix: &str, n: usize) -> RabbitMq {
        Self::cluster_on(prefix, n, Otp::Machine).expect("this machine is a host")
    }

    /// [`Self::cluster`] on a host of `otp`; None where such a host cannot be made here.
    pub fn cluster_on(prefix: &str, n: usize, otp: Otp) -> Option<RabbitMq> {
        let base = Base::new(prefix, "rabbitmq", otp)?;
        base.on
            .require_installed("/usr/sbin/rabbitmqctl", "rabbitmq");
        base.on
            .require_installed("/var/lib/rabbitmq/.erlang.cookie", "rabbitmq");
        let cluster = RabbitMq { base, n };
        for i in 1..=n {
            cluster.write_node(i);
        }
        chown_r(&cluster.base.on, cluster.base.path(), "rabbitmq");
        for i in 1..=n {
            cluster.start(i);
            cluster.wait_started(i);
        }
        let first = cluster.node_name(1);
        for i in 2..=n {
            cluster.ctl_ok(i, &["stop_app"]);
            cluster.ctl_ok(i, &["join_cluster", &first]);
            cluster.ctl_ok(i, &["start_app"]);
        }
        cluster.ctl_ok(
            1,
            &["eval", "'rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>,queue,<<\"cq1\">>),true,false,[],none,<<\"t\">>).'"],
        );
        if otp == Otp::Machine {
            cluster.ctl_ok(
                1,
                &["eval", "'rabbit_basic:publish(rabbit_misc:r(<<\"/\">>,exchange,<<\"\">>),<<\"cq1\">>,[{delivery_mode,2}],<<\"m1\">>).'"],
            );
        }
        cluster.wait_queue_count(1, cluster.queue_row(), Duration::from_secs(60));
        // Metadata that lives in the metadata store (Mnesia, or Khepri on 4.x clusters).
        cluster.ctl_ok(1, &["add_vhost", "distls"]);
        cluster.ctl_ok(1, &["add_user", "alice", "s3cret"]);
        Some(cluster)
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("rabbit{i}@{}", self.base.host)
    }

    /// `list_queues -q name messages` of the durable queue `cq1`: one persistent message on this
    /// machine's RabbitMQ 3.10; none on 4.x, whose internal publish API (`rabbit_basic:publish/4`)
    /// is gone (the queue and the metadata are what the roll must keep there).
    pub fn queue_row(&self) -> &'static str {
        if self.base.on.otp == Otp::Machine {
            "cq1\t1"
        } else {
            "cq1\t0"
        }
    }

    /// The durable queue, the vhost and the user the cluster was made with are all there, seen
    /// from node `i`.
    pub fn assert_data(&self, i: usize) {
        self.wait_queue_count(i, self.queue_row(), Duration::from_secs(60));
        let vhosts = self.ctl_ok(i, &["list_vhosts", "-q"]);
        assert!(vhosts.lines().any(|l| l.trim() == "distls"), "{vhosts}");
        let users = self.ctl_ok(i, &["list_users", "-q"]);
        assert!(users.lines().any(|l| l.starts_with("alice")), "{users}");
    }

    pub fn root(&self, i: usize) -> PathBuf {
        self.base.path().join(format!("rabbit{i}"))
    }

    pub fn env_file(&self, i: usize) -> PathBuf {
        self.root(i).join("rabbitmq-env.conf")
    }

    fn write_node(&self, i: usize) {
        let root = self.root(i);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let env = format!(
            "# rabbitmq-env.conf of a distls test node\nexport ERL_EPMD_PORT={port}\nNODENAME={name}\nNODE_IP_ADDRESS=127.0.0.1\nNODE_PORT={node_port}\nDIST_PORT={dist_port}\nMNESIA_BASE={root}/mnesia\nLOG_BASE={root}/log\nCONFIG_FILE={root}/rabbitmq.conf\nENABLED_PLUGINS_FILE={root}/enabled_plugins\nPID_FILE={root}/rabbit.pid\n",
            port = self.base.epmd_port,
            name = self.node_name(i),
            node_port = 5700 + i,
            dist_port = 25700 + i,
            root = root.display()
        );
        std::fs::write(self.env_file(i), env).unwrap();
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users.guest = true\n",
                5700 + i
            ),
        )
        .unwrap();
        std::fs::write(root.join("enabled_plugins"), "[].\n").unwrap();
    }

    pub fn ctl_command(&self, i: usize) -> String {
        format!(
            "RABBITMQ_CONF_ENV_FILE={} rabbitmqctl",
            self.env_file(i).display()
        )
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        run_ctl(&self.base.on, &self.ctl_command(i), args)
    }

    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        run_ctl_ok(&self.base.on, &self.ctl_command(i), i, args)
    }

    pub fn start(&self, i: usize) {
        let out = self.base.on.sh(&format!(
            "RABBITMQ_CONF_ENV_FILE={} setsid nohup rabbitmq-server >{}/startup.log 2>&1 </dev/null &",
            self.env_file(i).display(),
            self.root(i).display()
        ));
        assert!(out.status.success(), "{}", describe(&out));
    }

    /// `ping` until it answers (await_startup fails at once before the node is in epmd), then
    /// `await_startup`.
    pub fn wait_started(&self, i: usize) {
        let waited = poll_until(
            &format!("rabbit{i} ping"),
            Duration::from_secs(90),
            &mut || {
                let out = self.ctl(i, &["ping"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(describe(&out))
                }
            },
        );
        if let Err(e) = waited {
            panic!("{e}\n{}", self.startup_story(i));
        }
        self.ctl_ok(i, &["await_startup"]);
    }

    /// The node's startup output and the tail of its log, for a failure message.
    pub fn startup_story(&self, i: usize) -> String {
        let startup = std::fs::read_to_string(self.root(i).join("startup.log")).unwrap_or_default();
        let log = std::fs::read_to_string(
            self.root(i)
                .join("log")
                .join(format!("{}.log", self.node_name(i))),
        )
        .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        format!(
            "--- startup.log of rabbit{i}:\n{startup}\n--- last lines of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    pub fn stop(&self, i: usize) {
        self.ctl_ok(i, &["shutdown"]);
    }

    pub fn wait_queue_count(&self, i: usize, want: &str, deadline: Duration) {
        wait_for("queue count", deadline, || {
            let out = self.ctl(i, &["list_queues", "-q", "name", "messages"]);
            let shown = String::from_utf8_lossy(&out.stdout).into_owned();
            if shown.lines().any(|l| l.trim() == want) {
                Ok(())
            } else {
                Err(format!("list_queues: {shown}"))
            }
        });
    }

    pub fn plan(&self, cluster: &str) -> PathBuf {
        let mut yaml = self.base.plan_head(cluster, "rabbitmq");
        yaml.push_str("defaults:\n");
        yaml.push_str(&self.base.on.plan_transport());
        yaml.push_str(&format!(
            "  flags_file: {}/{{sname}}/rabbitmq-env.conf\n  env: {{ ERL_EPMD_PORT: \"{}\" }}\n  timeouts: {{ start: 90s, stop: 90s, ready: 4m }}\nnodes:\n",
            self.base.path().display(),
            self.base.epmd_port
        ));
        for i in 1..=self.n {
            yaml.push_str(&format!("  - name: {}\n", self.node_name(i)));
        }
        let path = self.base.path().join("plan.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        for i in 1..=self.n {
            if let Some(pid) = read_pid(&self.root(i).join("rabbit.pid")) {
                kill_pid(pid);
            }
        }
        self.base.stop_epmd();
    }
}

/// Time a closure.
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `ctl_command args` through the host's shell.
fn run_ctl(on: &OnHost, ctl_command: &str, args: &[&str]) -> Output {
    on.sh(&format!("{ctl_command} {}", args.join(" ")))
}

/// `ctl_command args`'s stdout; panics with its output when it fails.
fn run_ctl_ok(on: &OnHost, ctl_command: &str, i: usize, args: &[&str]) -> String {
    let out = run_ctl(on, ctl_command, args);
    assert!(
        out.status.success(),
        "`{ctl_command} {args:?}` on node {i}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The established TCP connections between two of `pids` (this machine's sockets, as `ss` lists
/// them), each once as (pid, local address, pid, peer address). A distribution link that was lost
/// and made again has a new source port, so an equal set is the same links, never re-made.
pub fn links_between(pids: &[u32]) -> std::collections::BTreeSet<(u32, String, u32, String)> {
    let out = sh("ss -Htnp state established");
    assert!(out.status.success(), "ss: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let sockets: Vec<(u32, String, String)> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let pid = line
                .split("pid=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?;
            let pid: u32 = pid.parse().ok()?;
            if !pids.contains(&pid) {
                return None;
            }
            Some((pid, fields.get(2)?.to_string(), fields.get(3)?.to_string()))
        })
        .collect();
    let mut links = std::collections::BTreeSet::new();
    for (pid, local, peer) in &sockets {
        let other = sockets.iter().find(|(_, l, p)| l == peer && p == local);
        if let Some((other_pid, _, _)) = other
            && (pid, local) < (other_pid, peer)
        {
            links.insert((*pid, local.clone(), *other_pid, peer.clone()));
        }
    }
    links
}
