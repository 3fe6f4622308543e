//! Three hosts for real: three network namespaces joined by veth pairs to a bridge the test makes,
//! each with its own sshd, its own epmd (default port 4369) and one node named after its address
//! (`-name mimN@10.213.X.N`). distls runs in the root namespace and reaches every node only through
//! that node's sshd. Skipped, with a message, where namespaces cannot be made.

use crate::sshd::TestSshd;
use crate::support::*;
use distls::rehearsal::NodeHost;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::Instant;

const HOSTS: u8 = 3;
/// The root namespace's address on the bridge: 10.213.X.254.
const ROOT_HOST: u8 = 254;

/// `ip args...`: Ok(stdout) or Err(what failed, with stderr).
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, bridge and veth pairs this test made; removed by [`Self::teardown`], which
/// also runs on drop (a panic included). Everything is named after the test's pid.
struct Netns {
    subnet: u8,
    namespaces: Vec<String>,
    veths: Vec<String>,
    bridge: Option<String>,
}

impl Netns {
    /// Err(reason) when the first namespace cannot be created (not root, no CAP_NET_ADMIN, no `ip`).
    fn create() -> Result<Result<Self, String>, String> {
        let pid = std::process::id();
        let mut net = Netns {
            subnet: 0,
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge: None,
        };
        let first = format!("distls-{pid}-1");
        ip(&["netns", "add", &first])?;
        net.namespaces.push(first);
        Ok(net.build(pid).map(|()| net))
    }

    fn build(&mut self, pid: u32) -> Result<(), String> {
        self.subnet = free_subnet(pid)?;
        let bridge = format!("dtbr{pid}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.ip(ROOT_HOST)),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for k in 1..=HOSTS {
            let ns = format!("distls-{pid}-{k}");
            if k > 1 {
                ip(&["netns", "add", &ns])?;
                self.namespaces.push(ns.clone());
            }
            let veth = format!("dtv{pid}-{k}");
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            self.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", self.ip(k));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// 10.213.<subnet>.k
    fn ip(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, k)
    }

    fn namespace(&self, k: u8) -> &str {
        &self.namespaces[usize::from(k) - 1]
    }

    fn exec_prefix(&self, k: u8) -> Vec<String> {
        ["ip", "netns", "exec", self.namespace(k)]
            .map(String::from)
            .to_vec()
    }

    /// [`Self::exec_prefix`] for the host's sshd. Its sessions run the user's login shell, which
    /// reads `~/.bashrc`: on a shared machine that file may do slow or lock-bound work (a
    /// `pyenv rehash` waits up to 60 s for a lock every other shell of the machine also takes), so
    /// this host gets an empty one: `/dev/null` bound over it in the private mount namespace that
    /// `ip netns exec` gives the sshd (nothing changes outside it).
    fn sshd_prefix(&self, k: u8) -> Vec<String> {
        let mut prefix = self.exec_prefix(k);
        prefix.extend(
            [
                "sh",
                "-c",
                r#"if [ -f "$HOME/.bashrc" ]; then mount --bind /dev/null "$HOME/.bashrc" || exit 1; fi; exec "$0" "$@""#,
            ]
            .map(String::from),
        );
        prefix
    }

    /// Removes everything; returns what could not be removed.
    fn teardown(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        // Deleting the root end of a veth pair deletes both ends.
        for veth in self.veths.drain(..) {
            failed.extend(ip(&["link", "del", &veth]).err());
        }
        for ns in self.namespaces.drain(..) {
            failed.extend(ip(&["netns", "del", &ns]).err());
        }
        if let Some(bridge) = self.bridge.take() {
            failed.extend(ip(&["link", "del", &bridge]).err());
        }
        failed
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("netns teardown: {problem}");
        }
    }
}

/// A 10.213.X.0/24 no interface or route of this machine uses yet, X chosen from the pid.
fn free_subnet(pid: u32) -> Result<u8, String> {
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let start = pid % 250;
    (0..250)
        .map(|i| u8::try_from((start + i) % 250 + 1).expect("1..=250"))
        .find(|x| {
            let prefix = format!("10.213.{x}.");
            !addrs.contains(&prefix) && !routes.contains(&prefix)
        })
        .ok_or_else(|| "no free 10.213.X.0/24".to_string())
}

/// The network namespace a process runs in (device and inode of its nsfs file).
fn netns_id(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What each host's epmd knows and what each node wrote, for a failure message.
fn diagnose(t: &TestCluster, net: &Netns) -> String {
    let mut out = String::new();
    for (i, node) in t.cluster.nodes().iter().enumerate() {
        let k = u8::try_from(i + 1).unwrap();
        let epmd = Command::new("ip")
            .args(["netns", "exec", net.namespace(k), "epmd", "-names"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string());
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        out.push_str(&format!(
            "--- {}: epmd -names in {}:\n{epmd}status: {}\npids: {}\nlog tail:\n{}\n",
            node.name,
            net.namespace(k),
            read(node.root.join("var/status")),
            read(node.pids_log()).replace('\n', " "),
            read(node.log_file())
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    out
}

#[test]
fn migrates_three_nodes_on_three_namespaced_hosts_over_ssh() {
    let started = Instant::now();
    let mut net = match Netns::create() {
        Err(reason) => {
            eprintln!("skipped: network namespaces not permitted here ({reason})");
            return;
        }
        Ok(Err(problem)) => panic!("namespaces are permitted, but the network failed: {problem}"),
        Ok(Ok(net)) => net,
    };
    let hosts: Vec<NodeHost> = (1..=HOSTS)
        .map(|k| NodeHost {
            ip: net.ip(k),
            exec_prefix: net.exec_prefix(k),
        })
        .collect();
    eprintln!(
        "hosts: {} on bridge dtbr{} (root namespace {})",
        (1..=HOSTS)
            .map(|k| format!("{}={}", net.namespace(k), net.ip(k)))
            .collect::<Vec<_>>()
            .join(" "),
        std::process::id(),
        net.ip(ROOT_HOST)
    );

    // Dropped before `net`: every process is stopped before the namespaces go.
    let t = cluster_with("nsmim", usize::from(HOSTS), |spec| spec.hosts = hosts);
    let sshds: Vec<TestSshd> = (1..=HOSTS)
        .map(|k| {
            TestSshd::start_on(
                &t.cluster.dir().join(format!("sshd{k}")),
                &net.ip(k).to_string(),
                22,
                &net.sshd_prefix(k),
            )
        })
        .collect();
    let known_hosts = t.cluster.dir().join("known_hosts");
    let all_keys: String = sshds
        .iter()
        .map(|s| std::fs::read_to_string(s.dir.join("known_hosts")).unwrap())
        .collect();
    std::fs::write(&known_hosts, all_keys).unwrap();

    let names = t.node_names();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(*name, format!("nsmim{}@{}", i + 1, net.ip(i as u8 + 1)));
    }
    let in_own_namespace = |i: usize| {
        let pid = t.cluster.node_os_pid(i).expect("the node recorded its pid");
        let node_ns = netns_id(&format!("/proc/{pid}/ns/net"));
        node_ns.is_some() && node_ns == netns_id(&format!("/run/netns/{}", net.namespaces[i]))
    };
    // Plain TCP, fully meshed across the bridge, every node inside its own namespace.
    t.assert_mesh("inet_tcp", "tcp");
    assert!((0..names.len()).all(in_own_namespace));
    let setup = started.elapsed();

    // Every node is reached through its own host's sshd; no ERL_EPMD_PORT: each host's epmd
    // listens on the default port inside its namespace.
    t.cluster.write_plan_with(|i| {
        format!(
            "    host: \"{}\"\n    identity_file: \"{}\"\n    known_hosts: \"{}\"\n",
            sshds[i].address,
            sshds[i].dir.join("user_key").display(),
            known_hosts.display()
        )
    });
    let plan = t.plan();
    let text = std::fs::read_to_string(&plan).unwrap();
    let ssh = format!("  transport: ssh\n  port: 22\n  user: {}\n", sshds[0].user);
    assert!(text.contains("  transport: local\n"), "{text}");
    std::fs::write(&plan, text.replace("  transport: local\n", &ssh)).unwrap();
    let plan = plan.to_str().unwrap();

    // The preflight, a real TLS handshake with the planned options on every host included.
    let check = t.distls(&["check", "--handshake", plan]);
    assert!(check.status.success(), "{}", describe(&check));
    assert!(stdout(&check).contains("0 FAIL"), "{}", describe(&check));

    let roll_started = Instant::now();
    let out = t.distls(&["migrate", plan]);
    let roll = roll_started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        diagnose(&t, &net)
    );
    eprintln!("{}", stderr(&out));

    t.assert_mesh("inet_tls", "tls");
    for (i, name) in names.iter().enumerate() {
        let ping = t.cluster.ctl(i, &["ping"]);
        assert!(
            ping.status.success(),
            "{name}'s own ctl reaches it over TLS: {ping:?}"
        );
        assert!(
            in_own_namespace(i),
            "{name}, restarted by distls over SSH, runs inside {}",
            net.namespaces[i]
        );
    }
    assert_eq!(journal(std::path::Path::new(plan))["phase"], "completed");
    let status = t.distls(&["status", plan]);
    assert!(status.status.success(), "{}", describe(&status));
    let status_text = stdout(&status);
    for name in &names {
        let row: Vec<&str> = status_text
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("status lists {name}: {status_text}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            &row[1..4],
            ["verified", "tls", "tls"],
            "journal step, file, live transport of {name}"
        );
    }

    eprintln!(
        "netns: setup (namespaces, sshds, epmds, plain mesh) {:.1}s, migration over ssh {:.1}s, total {:.1}s",
        setup.as_secs_f64(),
        roll.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(sshds);
    drop(t);
    let leftovers = net.teardown();
    assert!(leftovers.is_empty(), "teardown: {leftovers:?}");
}
