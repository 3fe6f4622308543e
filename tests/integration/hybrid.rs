//! The transitional distribution module src/zero_split/distls_hybrid_dist.erl on real nodes:
//! two hybrid nodes (each naming both as TLS peers, as at the end of a one-restart roll;
//! verify_peer both ways) on loopback with a private epmd, dialled over and over by a stock
//! `-proto_dist inet_tls` VM and a stock plain VM (tests/integration/hybrid_driver.erl). Every
//! accept must give a link of the dialer's protocol, with no failure; then one node is sealed at
//! run time and the TLS stress runs against it again (0 failures) while plain is refused. Also: hybrid <-> hybrid in both directions, a crash of any acceptor process
//! is recovered from (net_kernel restarts the set), a TLS client with a certificate
//! from another CA is refused, and a client that sends nothing is closed.

use crate::products::short_hostname;
use distls::rehearsal::{
    TlsFiles, poll_until, start_private_epmd, write_foreign_ca_cert, write_host_certs,
};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODULE_SRC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/zero_split/distls_hybrid_dist.erl"
);
const DRIVER_SRC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/hybrid_driver.erl"
);
/// Connect -> check -> disconnect cycles per dialer protocol per hybrid node.
const CYCLES: usize = 200;
/// Idle connections held open during the stress: more than the stock listen backlog (128).
const IDLE_CLIENTS: usize = 300;

/// Connections one source address may have waiting for classification (the module's
/// `max_per_source` for its default cap of 1024).
const PER_SOURCE: usize = 64;
/// Silent connections from one flooding source: far more than it may hold.
const FLOOD: usize = 200;

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (the whole of
/// 127.0.0.0/8 is local on Linux), so that the test can play several clients.
fn connect_from(source: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream (which closes it); the addresses are valid sockaddr_in values of `len` bytes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        let bound = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(
            bound,
            0,
            "bind {source}: {}",
            std::io::Error::last_os_error()
        );
        let remote = sockaddr(std::net::Ipv4Addr::LOCALHOST, port);
        let connected = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(
            connected,
            0,
            "connect from {source}: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}

/// Whether the peer has closed `stream` (a read of 0 bytes, or a reset) within `wait`.
fn closed_by_peer(mut stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("the node sent {n} bytes to a silent client"),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Every process the test starts, killed by its pid and reaped when dropped (also on panic).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Env {
    dir: PathBuf,
    ebin: PathBuf,
    host: String,
    epmd_port: u16,
    cookie: String,
}

impl Env {
    /// `erl -noshell -sname <name>` against the private epmd, output in `<dir>/<name>.log`.
    fn erl(&self, name: &str, args: &[String]) -> Command {
        let log = std::fs::File::create(self.log(name)).unwrap();
        let mut cmd = Command::new("erl");
        cmd.args(["-noshell", "-sname", name, "-setcookie", &self.cookie])
            .arg("-pa")
            .arg(&self.ebin)
            .args(args)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            // A dump holds the cookie: into the test's directory, never the checkout.
            .env(
                "ERL_CRASH_DUMP",
                self.dir.join(format!("{name}.erl_crash.dump")),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn node(&self, name: &str) -> String {
        format!("{name}@{}", self.host)
    }

    /// Runs the driver VM to its end (with a deadline) and returns its `HYBRID ` lines.
    fn driver(
        &self,
        procs: &mut Procs,
        name: &str,
        vm_args: &[String],
        job: &[&str],
    ) -> Vec<String> {
        let mut args = vm_args.to_vec();
        args.extend(["-hidden", "-run", "hybrid_driver", "main"].map(String::from));
        args.extend(job.iter().map(|s| s.to_string()));
        let child = self.erl(name, &args).spawn().expect("erl starts");
        procs.0.push(child);
        self.finish(procs, procs.0.len() - 1, name)
    }

    /// Starts a driver VM that dials each of `targets` CYCLES times expecting `expect` links;
    /// its index in `procs` (for [`Self::finish`]).
    fn start_stress(
        &self,
        procs: &mut Procs,
        name: &str,
        vm_args: &[String],
        expect: &str,
        targets: &[String],
    ) -> usize {
        let mut args = vm_args.to_vec();
        args.extend(
            ["-hidden", "-run", "hybrid_driver", "main", "stress", expect].map(String::from),
        );
        args.push(CYCLES.to_string());
        args.extend(targets.iter().cloned());
        procs
            .0
            .push(self.erl(name, &args).spawn().expect("erl starts"));
        procs.0.len() - 1
    }

    fn finish(&self, procs: &mut Procs, index: usize, name: &str) -> Vec<String> {
        let child = &mut procs.0[index];
        let mut status = None;
        poll_until(
            &format!("driver {name}"),
            Duration::from_secs(120),
            &mut || {
                status = child.try_wait().unwrap();
                status.map(|_| ()).ok_or_else(String::new)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.read_log(name)));
        let log = self.read_log(name);
        assert!(status.unwrap().success(), "driver {name} failed:\n{log}");
        log.lines()
            .filter_map(|l| l.strip_prefix("HYBRID "))
            .map(str::to_owned)
            .collect()
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// The node's port as epmd reports it (`name <name> at port <port>`).
    fn epmd_port_of(&self, name: &str) -> Option<u16> {
        let out = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-names"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            l.strip_prefix(&format!("name {name} at port "))?
                .trim()
                .parse()
                .ok()
        })
    }
}

/// `-ssl_dist_opt ...`: these files on both sides, verify_peer both ways.
fn ssl_dist_opt(tls: &TlsFiles) -> Vec<String> {
    let (cert, key, ca) = (
        tls.certfile.display().to_string(),
        tls.keyfile.display().to_string(),
        tls.cacertfile.display().to_string(),
    );
    let mut args = vec!["-ssl_dist_opt".to_owned()];
    for side in ["server", "client"] {
        for (opt, value) in [
            ("certfile", &cert),
            ("keyfile", &key),
            ("cacertfile", &ca),
            ("verify", &"verify_peer".to_owned()),
        ] {
            args.push(format!("{side}_{opt}"));
            args.push(value.clone());
        }
    }
    args.extend(["server_fail_if_no_peer_cert", "true"].map(String::from));
    args
}

fn erlc(args: &[&str], out: &Path, src: &str) -> std::process::Output {
    Command::new("erlc")
        .env("ERL_CRASH_DUMP", out.join("erlc_crash.dump"))
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .expect("erlc runs")
}

fn compile(ebin: &Path) {
    std::fs::create_dir_all(ebin).unwrap();
    let out = erlc(&[], ebin, MODULE_SRC);
    assert!(
        out.status.success(),
        "{MODULE_SRC} does not compile:\n{}",
        crate::support::describe(&out)
    );
    let out = erlc(&["+warnings_as_errors"], ebin, MODULE_SRC);
    assert!(
        out.status.success(),
        "{MODULE_SRC} compiles with warnings:\n{}",
        crate::support::describe(&out)
    );
    let out = erlc(&["+warnings_as_errors"], ebin, DRIVER_SRC);
    assert!(
        out.status.success(),
        "{DRIVER_SRC}:\n{}",
        crate::support::describe(&out)
    );
}

/// One `stress` summary line: (target, expected transport, cycles, failures).
fn parse_stress(line: &str) -> Option<(String, String, usize, usize)> {
    let mut parts = line.split_whitespace();
    (parts.next()? == "stress").then_some(())?;
    let (target, expect) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let field = |name: &str| -> Option<usize> {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(&format!("{name}=")))?
            .parse()
            .ok()
    };
    Some((target, expect, field("cycles")?, field("failures")?))
}

#[test]
fn hybrid_listener_accepts_tcp_and_tls_under_stress() {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("distls-hybrid-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let ebin = dir.join("ebin");
    compile(&ebin);

    let host = short_hostname();
    let tls = write_host_certs(&dir.join("tls"), &host).expect("certificates");
    let foreign = write_foreign_ca_cert(&dir.join("foreign")).expect("foreign certificate");
    let mut procs = Procs(Vec::new());
    let (epmd, epmd_port) = start_private_epmd(&dir).expect("private epmd");
    procs.0.push(epmd);
    let env = Env {
        dir,
        ebin,
        host,
        epmd_port,
        cookie: format!("hybrid{}", std::process::id()),
    };

    // The two hybrid nodes.
    let loopback = ["-kernel", "inet_dist_use_interface", "{127,0,0,1}"].map(String::from);
    let tls_args = ssl_dist_opt(&tls);
    let peers = [env.node("hyb_tcp"), env.node("hyb_tls")];
    for name in ["hyb_tcp", "hyb_tls"] {
        let mut args: Vec<String> = [
            "-proto_dist",
            "distls_hybrid",
            "-distls_hybrid",
            "tls_peers",
        ]
        .map(String::from)
        .to_vec();
        args.extend(peers.iter().cloned());
        args.extend(loopback.iter().cloned());
        args.extend(tls_args.iter().cloned());
        procs
            .0
            .push(env.erl(name, &args).spawn().expect("erl starts"));
    }
    let nodes = [env.node("hyb_tcp"), env.node("hyb_tls")];
    let mut ports = Vec::new();
    for (index, name) in ["hyb_tcp", "hyb_tls"].into_iter().enumerate() {
        let child = &mut procs.0[1 + index];
        poll_until(
            &format!("{name} registered in epmd"),
            Duration::from_secs(30),
            &mut || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("{name} exited ({status}):\n{}", env.read_log(name));
                }
                env.epmd_port_of(name)
                    .map(|_| ())
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
        .unwrap();
        ports.push(env.epmd_port_of(name).unwrap());
    }
    let booted = started.elapsed();

    // A client that connects and sends nothing; it must be closed (after connecttime, 7 s), and
    // must not hold up the accepts below.
    let mut silent = TcpStream::connect(("127.0.0.1", ports[0])).expect("connect to hyb_tcp");
    let silent_since = Instant::now();

    // Still open a moment later: the node waits for a first byte (up to connecttime, 7 s).
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16];
    let early = silent.read(&mut buf);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut)
            || silent_since.elapsed() >= Duration::from_secs(6),
        "the silent client was closed early: {early:?}"
    );

    // More idle clients than the stock listen backlog (128), a third of them stalled after the
    // first bytes of a TLS record: they must neither hold the port shut for the stress below nor
    // stay open past connecttime. (Stalled TLS clients are kept below 128: past that, stock
    // inet_tls_dist, whose accept loop the module reuses, stops taking TLS connections until
    // its pending handshakes time out; so does the module, no worse.)
    // They come from five source addresses, each within the per-source limit.
    let mut idle: Vec<TcpStream> = (0..IDLE_CLIENTS)
        .map(|i| {
            let source = std::net::Ipv4Addr::new(127, 0, 0, 10 + (i % 5) as u8);
            let mut s = connect_from(source, ports[0]);
            if i % 3 == 0 {
                s.write_all(&[0x16, 0x03]).unwrap();
            }
            s
        })
        .collect();

    // Hybrid <-> hybrid: TLS whichever side dials (each names the other), seen alike on both sides.
    let mut tls_vm = loopback.to_vec();
    tls_vm.extend(["-proto_dist", "inet_tls"].map(String::from));
    tls_vm.extend(tls_args.iter().cloned());
    let pairs = env.driver(
        &mut procs,
        "pairs",
        &tls_vm,
        &["pairs", &nodes[0], &nodes[1]],
    );
    assert_eq!(
        pairs,
        vec![
            format!("pair {} {} tls tls true", nodes[0], nodes[1]),
            format!("pair {} {} tls tls true", nodes[1], nodes[0]),
        ],
        "hybrid <-> hybrid links\n{}",
        env.read_log("pairs")
    );

    // A crash of any of the acceptor's processes takes the set down and net_kernel starts a new
    // one (the stress below then runs against the restarted hyb_tls acceptor).
    let crash = env.driver(&mut procs, "crash", &tls_vm, &["crash", &nodes[1]]);
    assert_eq!(
        crash,
        vec![format!(
            "crash {} [{{raw_accept_loop,restarted}},{{tls_accept_loop,restarted}},{{acceptor,restarted}}]",
            nodes[1]
        )],
        "acceptor restart\n{}",
        env.read_log("crash")
    );

    // One source floods hyb_tcp with silent connections: it keeps at most PER_SOURCE of them
    // waiting (the rest are closed at once, long before connecttime), so it cannot fill the
    // node's 1024 slots; the stress below, from other clients, runs while they are held.
    let flood_source = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let flood_since = Instant::now();
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| connect_from(flood_source, ports[0]))
        .collect();
    let mut refused = 0;
    poll_until(
        "the flood beyond the per-source limit closed",
        Duration::from_secs(5),
        &mut || {
            refused = flood
                .iter()
                .filter(|s| closed_by_peer(s, Duration::from_millis(1)))
                .count();
            (refused >= FLOOD - PER_SOURCE)
                .then_some(())
                .ok_or_else(|| format!("{refused} closed"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", env.read_log("hyb_tcp")));
    let held = flood
        .iter()
        .filter(|s| !closed_by_peer(s, Duration::from_millis(1)))
        .count();
    let after = flood_since.elapsed();
    assert!(
        after < Duration::from_secs(6),
        "counted after {after:.1?}: the held ones may have reached connecttime"
    );
    assert_eq!(
        held, PER_SOURCE,
        "one source holds exactly its limit ({refused} closed at once)"
    );
    println!("flood from {flood_source}: {refused} of {FLOOD} closed at once, {held} held");

    // The stress: a stock TLS VM and a stock plain VM at the same time, each dialling both hybrid
    // nodes CYCLES times; meanwhile a TLS VM with a certificate from another CA is refused.
    let stress_start = Instant::now();
    let mut jobs = Vec::new();
    for (name, vm, expect) in [
        ("stress_tls", &tls_vm[..], "tls"),
        ("stress_tcp", &loopback[..], "tcp"),
    ] {
        jobs.push((name, env.start_stress(&mut procs, name, vm, expect, &nodes)));
    }
    let mut foreign_vm = loopback.to_vec();
    foreign_vm.extend(["-proto_dist", "inet_tls"].map(String::from));
    foreign_vm.extend(ssl_dist_opt(&foreign));
    for (index, node) in nodes.iter().enumerate() {
        let name = format!("foreign{index}");
        let refused = env.driver(&mut procs, &name, &foreign_vm, &["refused", node]);
        assert_eq!(
            refused,
            vec![format!("refused {node} true")],
            "a certificate from another CA must be refused\n{}",
            env.read_log(&name)
        );
    }
    let mut lines = Vec::new();
    for (name, index) in jobs {
        lines.extend(env.finish(&mut procs, index, name));
    }
    let stress_time = stress_start.elapsed();

    println!(
        "hybrid stress: nodes up in {booted:.1?}; {} accepts in {stress_time:.1?} (both dialers in parallel)",
        4 * CYCLES
    );
    for line in &lines {
        println!("  {line}");
    }
    let summaries: Vec<_> = lines.iter().filter_map(|l| parse_stress(l)).collect();
    let mut seen = Vec::new();
    for (target, expect, cycles, failures) in &summaries {
        assert_eq!(*cycles, CYCLES, "{target} {expect}: cycles");
        assert_eq!(
            *failures,
            0,
            "{target} {expect}: failures\n{}\n--- hyb_tcp log\n{}\n--- hyb_tls log\n{}",
            lines.join("\n"),
            env.read_log("hyb_tcp"),
            env.read_log("hyb_tls")
        );
        seen.push(format!("{target} {expect}"));
    }
    seen.sort();
    let mut wanted: Vec<String> = nodes
        .iter()
        .flat_map(|n| [format!("{n} tcp"), format!("{n} tls")])
        .collect();
    wanted.sort();
    assert_eq!(seen, wanted, "a stress summary per node and protocol");

    // Sealed at run time: hyb_tcp takes only TLS from now on; the TLS stress runs against it
    // again with 0 failures, a plain dialer is refused.
    let sealed = env.driver(&mut procs, "sealing", &tls_vm, &["seal", &nodes[0]]);
    assert_eq!(
        sealed,
        vec![format!("seal {} ok", nodes[0])],
        "{}",
        env.read_log("sealing")
    );
    let seal_start = Instant::now();
    let index = env.start_stress(&mut procs, "sealed_tls", &tls_vm, "tls", &nodes[..1]);
    let refused = env.driver(&mut procs, "sealed_tcp", &loopback, &["refused", &nodes[0]]);
    assert_eq!(
        refused,
        vec![format!("refused {} true", nodes[0])],
        "a plain dialer is refused by a sealed node\n{}",
        env.read_log("sealed_tcp")
    );
    let sealed_lines = env.finish(&mut procs, index, "sealed_tls");
    let sealed_summary: Vec<_> = sealed_lines
        .iter()
        .filter_map(|l| parse_stress(l))
        .collect();
    assert_eq!(
        sealed_summary,
        vec![(nodes[0].clone(), "tls".to_owned(), CYCLES, 0)],
        "TLS stress against the sealed node\n{}\n--- hyb_tcp log\n{}",
        sealed_lines.join("\n"),
        env.read_log("hyb_tcp")
    );
    println!(
        "  sealed {}: {CYCLES} TLS accepts in {:.1?}, 0 failures; plain refused",
        nodes[0],
        seal_start.elapsed()
    );

    // net_kernel:allow holds on a hybrid node for both protocols: once hyb_tls allows only a
    // node elsewhere, a TLS node with a good certificate (stock inet_tls_dist turns the allowed
    // entries into host names its certificate must carry) and a plain node are refused.
    let allowed = env.driver(
        &mut procs,
        "allowing",
        &tls_vm,
        &["allow", &nodes[1], "nobody@elsewhere.invalid"],
    );
    assert_eq!(
        allowed,
        vec![format!("allow {} false", nodes[1])],
        "after net_kernel:allow the dialer is refused over TLS\n{}",
        env.read_log("allowing")
    );
    for (name, vm) in [
        ("other_tls", tls_vm.clone()),
        ("other_tcp", loopback.to_vec()),
    ] {
        let refused = env.driver(&mut procs, name, &vm, &["refused", &nodes[1]]);
        assert_eq!(
            refused,
            vec![format!("refused {} true", nodes[1])],
            "{name}: a node net_kernel:allow leaves out is refused\n{}",
            env.read_log(name)
        );
    }

    // The silent client: closed by the node once connecttime has passed.
    silent
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    poll_until(
        "silent client closed by hyb_tcp",
        Duration::from_secs(20),
        &mut || match silent.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(n) => panic!("hyb_tcp sent {n} bytes to a silent client"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e.to_string()),
        },
    )
    .unwrap();
    let closed_after = silent_since.elapsed();
    for (i, client) in idle.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        poll_until(
            &format!("idle client {i} closed by hyb_tcp"),
            Duration::from_secs(20),
            &mut || match client.read(&mut buf) {
                Ok(0) => Ok(()),
                Ok(n) => panic!("hyb_tcp sent {n} bytes to an idle client"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        )
        .unwrap();
    }
    println!(
        "  silent client closed after {closed_after:.1?}; test took {:.1?}",
        started.elapsed()
    );
    drop(procs);
}
