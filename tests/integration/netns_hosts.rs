//! Hosts made of network namespaces: one namespace per host, each joined by a veth pair to a
//! bridge in the root namespace (10.213.X.0/24, X free on this machine; the root namespace is
//! 10.213.X.254). Created and removed by the test that uses them; everything is named after the
//! test process's pid and a per-process serial, so tests of one binary can hold several at once.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The root namespace's address on the bridge: 10.213.X.254.
pub const ROOT_HOST: u8 = 254;

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

/// The namespaces, bridge and veth pairs one test made; removed by [`Self::teardown`], which
/// also runs on drop (a panic included).
pub struct Netns {
    subnet: u8,
    /// `<pid>` for the first set of this process, `<pid>s<n>` for the n-th after it.
    tag: String,
    pub namespaces: Vec<String>,
    veths: Vec<String>,
    bridge: Option<String>,
}

/// Serial of the sets one test process makes (names and subnets must not collide).
static SETS: AtomicU32 = AtomicU32::new(0);
/// Choosing a free subnet and claiming it (the bridge's address) is one step per process.
static SUBNET_CLAIM: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Netns {
    /// `hosts` namespaces. Err(reason) when the first namespace cannot be created (not root, no
    /// CAP_NET_ADMIN, no `ip`); Ok(Err(problem)) when namespaces work but the network failed.
    pub fn create(hosts: u8) -> Result<Result<Self, String>, String> {
        let pid = std::process::id();
        let serial = SETS.fetch_add(1, Ordering::Relaxed);
        let tag = if serial == 0 {
            pid.to_string()
        } else {
            format!("{pid}s{serial}")
        };
        let mut net = Netns {
            subnet: 0,
            tag,
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge: None,
        };
        let first = format!("distls-{}-1", net.tag);
        ip(&["netns", "add", &first])?;
        net.namespaces.push(first);
        Ok(net.build(pid, hosts).map(|()| net))
    }

    fn build(&mut self, pid: u32, hosts: u8) -> Result<(), String> {
        let bridge = format!("dtbr{}", self.tag);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        {
            let _claim = SUBNET_CLAIM.lock().unwrap_or_else(|p| p.into_inner());
            self.subnet = free_subnet(pid)?;
            ip(&[
                "addr",
                "add",
                &format!("{}/24", self.ip(ROOT_HOST)),
                "dev",
                &bridge,
            ])?;
        }
        ip(&["link", "set", &bridge, "up"])?;
        for k in 1..=hosts {
            let ns = format!("distls-{}-{k}", self.tag);
            if k > 1 {
                ip(&["netns", "add", &ns])?;
                self.namespaces.push(ns.clone());
            }
            let veth = format!("dtv{}-{k}", self.tag);
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
    pub fn ip(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, k)
    }

    pub fn namespace(&self, k: u8) -> &str {
        &self.namespaces[usize::from(k) - 1]
    }

    pub fn exec_prefix(&self, k: u8) -> Vec<String> {
        ["ip", "netns", "exec", self.namespace(k)]
            .map(String::from)
            .to_vec()
    }

    /// [`Self::exec_prefix`] for the host's sshd. Its sessions run the user's login shell, which
    /// reads `~/.bashrc`: on a shared machine that file may do slow or lock-bound work (a
    /// `pyenv rehash` waits up to 60 s for a lock every other shell of the machine also takes), so
    /// this host gets an empty one: `/dev/null` bound over it in the private mount namespace that
    /// `ip netns exec` gives the sshd (nothing changes outside it).
    pub fn sshd_prefix(&self, k: u8) -> Vec<String> {
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
    pub fn teardown(&mut self) -> Vec<String> {
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
pub fn netns_id(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
