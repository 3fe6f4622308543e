//! The elixir flavor against a real Elixir release (Debian's `elixir`): a tiny Mix app built with
//! `MIX_ENV=prod mix release` in the test's temp dir (HOME and MIX_HOME there, no Hex, no
//! network), copied once per node, started with `bin/APP daemon`. Each node's env.sh gives its
//! name, the private epmd's port, its crash dump path and its peers, which the app
//! `Node.connect`s in a loop. Every VM is stopped by `bin/APP stop`, then by pid.
//! On this machine: Elixir 1.14 on OTP 25. On the sid OTP host ([`crate::otp_hosts`]): sid's
//! Elixir 1.20 on OTP 29, the release built inside the host by its own mix, the nodes started
//! there, and distls reaching them over SSH.

use crate::flavors::{assert_status_all_tls, distls};
use crate::otp_hosts::Otp;
use crate::products::{Base, products_lock, wait_for};
use crate::support::{describe, journal, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const APP: &str = "distapp";
const VSN: &str = "0.1.0";

/// The app: `:ssl` in extra_applications (TLS distribution needs it in the release), and a task
/// that connects to the peers env.sh names, every 300 ms.
const APPLICATION_EX: &str = r#"defmodule Distapp.Application do
  use Application

  def start(_type, _args) do
    Supervisor.start_link([{Task, &connect_loop/0}], strategy: :one_for_one)
  end

  def connect_loop do
    System.get_env("DISTAPP_PEERS", "")
    |> String.split(" ", trim: true)
    |> Enum.each(&Node.connect(String.to_atom(&1)))

    Process.sleep(300)
    connect_loop()
  end
end
"#;

pub struct ElixirCluster {
    base: Base,
    n: usize,
}

impl ElixirCluster {
    /// Builds the release on a host of `otp` (with that host's own mix), makes `n` nodes of it
    /// and starts them there; returns once they are meshed. None where such a host cannot be
    /// made here.
    pub fn start_on(prefix: &str, n: usize, otp: Otp) -> Option<ElixirCluster> {
        let user = String::from_utf8(crate::products::sh("id -un").stdout).unwrap();
        let base = Base::new(prefix, user.trim(), otp)?;
        assert!(
            base.on.path("/usr/bin/mix").exists(),
            "mix is missing on the OTP {} host: the elixir flavor test needs Debian's elixir package. Install it with `bash scripts/install-deps` (apt-get install -y --no-install-recommends elixir); an OTP host's root lists it in scripts/otp-host",
            otp.major()
        );
        let cluster = ElixirCluster { base, n };
        let built = Instant::now();
        let release = cluster.build_release();
        eprintln!(
            "MEASURED elixir on OTP {}: mix new + mix release {:.1} s",
            otp.major(),
            built.elapsed().as_secs_f64()
        );
        for i in 1..=n {
            cluster.write_node(i, &release);
        }
        for i in 1..=n {
            cluster.run_ok(i, &["daemon"]);
        }
        for i in 1..=n {
            cluster.wait_meshed(i, "tcp");
        }
        Some(cluster)
    }

    /// [`Self::start_on`] this machine.
    pub fn start(prefix: &str, n: usize) -> ElixirCluster {
        Self::start_on(prefix, n, Otp::Machine).expect("this machine is a host")
    }

    fn build_release(&self) -> PathBuf {
        let home = self.base.path().join("build");
        std::fs::create_dir_all(&home).unwrap();
        let env = format!(
            "export HOME={h} MIX_HOME={h}/mix MIX_ENV=prod ERL_CRASH_DUMP={h}/erl_crash.dump; cd {h}",
            h = home.display()
        );
        let new = self.base.on.sh(&format!("{env} && mix new {APP} --sup"));
        assert!(new.status.success(), "mix new: {}", describe(&new));
        let project = home.join(APP);
        let mix_exs = std::fs::read_to_string(project.join("mix.exs")).unwrap();
        let with_ssl = mix_exs.replace(
            "extra_applications: [:logger]",
            "extra_applications: [:logger, :ssl]",
        );
        assert_ne!(with_ssl, mix_exs, "mix.exs lists extra_applications");
        std::fs::write(project.join("mix.exs"), with_ssl).unwrap();
        std::fs::write(
            project.join("lib").join(APP).join("application.ex"),
            APPLICATION_EX,
        )
        .unwrap();
        let release = self
            .base
            .on
            .sh(&format!("{env}/{APP} && mix release --quiet"));
        assert!(
            release.status.success(),
            "mix release: {}",
            describe(&release)
        );
        project.join("_build/prod/rel").join(APP)
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("{APP}{i}@{}", self.base.host)
    }

    fn root(&self, i: usize) -> PathBuf {
        self.base.path().join(format!("{APP}{i}"))
    }

    pub fn env_sh(&self, i: usize) -> PathBuf {
        self.root(i).join("releases").join(VSN).join("env.sh")
    }

    /// The release copied to the node's directory; its env.sh (the template mix generates) gets
    /// the node's own settings appended.
    fn write_node(&self, i: usize, release: &Path) {
        let out = self.base.on.sh(&format!(
            "cp -a {} {}",
            release.display(),
            self.root(i).display()
        ));
        assert!(out.status.success(), "{}", describe(&out));
        let peers: Vec<String> = (1..=self.n).map(|p| self.node_name(p)).collect();
        let mut env = std::fs::read_to_string(self.env_sh(i)).unwrap();
        env.push_str(&format!(
            "\n# this test's node\nexport RELEASE_DISTRIBUTION=sname\nexport RELEASE_NODE={}\nexport ERL_EPMD_PORT={}\nexport ERL_CRASH_DUMP={}/erl_crash.dump\nexport DISTAPP_PEERS=\"{}\"\n",
            self.node_name(i),
            self.base.epmd_port,
            self.root(i).display(),
            peers.join(" ")
        ));
        if i == 1 {
            // Node 1 sets its cookie in env.sh (the same cookie: RELEASE_COOKIE wins over
            // releases/COOKIE), so the dry run's diff has a cookie to mask.
            let cookie = std::fs::read_to_string(self.root(i).join("releases/COOKIE")).unwrap();
            env.push_str(&format!("export RELEASE_COOKIE={}\n", cookie.trim()));
        }
        std::fs::write(self.env_sh(i), env).unwrap();
    }

    /// `bin/APP args...` of node `i`, on its host.
    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        self.run_with(i, "", args)
    }

    /// `env bin/APP args...` (`env`: shell assignments, or empty).
    fn run_with(&self, i: usize, env: &str, args: &[&str]) -> Output {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        self.base.on.sh(&format!(
            "{env} {}/bin/{APP} {} </dev/null",
            self.root(i).display(),
            quoted.join(" ")
        ))
    }

    /// The VM command line each release command of node `i` would run, read with the release
    /// scripts' own `ELIXIR_CLI_DRY_RUN` (no VM starts): every server command's line (start,
    /// daemon and their iex forms) has each of `server`, every other command's (rpc, remote,
    /// stop, restart, pid, eval) each of `control`; an empty list means no `-proto_dist` at all
    /// (plain TCP). run_erl's shell escapes are removed; the cookie never reaches a message.
    fn assert_commands_read(&self, i: usize, server: &[&str], control: &[&str]) {
        let started = Instant::now();
        let cookie = std::fs::read_to_string(self.root(i).join("releases/COOKIE")).unwrap();
        for command in [
            &["start"][..],
            &["start_iex"],
            &["daemon"],
            &["daemon_iex"],
            &["rpc", "1"],
            &["remote"],
            &["stop"],
            &["restart"],
            &["pid"],
            &["eval", "1"],
        ] {
            let out = self.run_with(i, "ELIXIR_CLI_DRY_RUN=1", command);
            let line = stdout(&out)
                .replace('\\', "")
                .replace(cookie.trim(), "<cookie>");
            let is_server = ["start", "start_iex", "daemon", "daemon_iex"].contains(&command[0]);
            let want = if is_server { server } else { control };
            let read = match want {
                [] => !line.contains("-proto_dist"),
                _ => want.iter().all(|flag| line.contains(flag)),
            };
            assert!(
                out.status.success() && read,
                "bin/{APP} {command:?} of node {i} runs erl with {want:?} (none: plain): {line}"
            );
        }
        eprintln!(
            "MEASURED elixir: 10 commands' erl lines (dry run) {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    pub fn run_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.run(i, args);
        assert!(
            out.status.success(),
            "bin/{APP} {args:?} on node {i}: {}",
            describe(&out)
        );
        stdout(&out).trim().to_owned()
    }

    /// The node's own `rpc` sees both peers, each link over `protocol` (tcp or tls, as the
    /// node's net_kernel records it), and its `pid` answers.
    pub fn wait_meshed(&self, i: usize, protocol: &str) {
        let expr = "{:ok, nodes} = :net_kernel.nodes_info(); links = for {n, info} <- nodes, do: \"#{n}:#{elem(info[:address], 3)}\"; IO.puts(Enum.join(links, \" \"))";
        wait_for(
            &format!("node {i} meshed over {protocol}"),
            Duration::from_secs(30),
            || {
                let out = self.run(i, &["rpc", expr]);
                let shown = stdout(&out);
                let links: Vec<&str> = shown.split_whitespace().collect();
                let meshed = (1..=self.n)
                    .filter(|p| *p != i)
                    .all(|p| links.contains(&format!("{}:{protocol}", self.node_name(p)).as_str()));
                if out.status.success() && meshed {
                    Ok(())
                } else {
                    Err(describe(&out))
                }
            },
        );
        let pid = self.run_ok(i, &["pid"]);
        assert!(pid.parse::<u32>().is_ok(), "bin/{APP} pid: {pid}");
    }

    /// Every pid whose command line names the node's directory (run_erl, its shell, the beam):
    /// this test's own processes, found by their unique temp path.
    fn pids_of(&self, i: usize) -> Vec<i32> {
        let root = self.root(i).display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&root) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for ElixirCluster {
    fn drop(&mut self) {
        for i in 1..=self.n {
            let _ = self.run(i, &["stop"]);
        }
        for i in 1..=self.n {
            let gone = distls::rehearsal::poll_until(
                "release stopped",
                Duration::from_secs(10),
                &mut || match self.pids_of(i).is_empty() {
                    true => Ok(()),
                    false => Err("still running".into()),
                },
            );
            if gone.is_err() {
                for pid in self.pids_of(i) {
                    // SAFETY: a process of this test's node (its unique directory is in its argv).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        self.base.stop_epmd();
    }
}

fn plan(cluster: &ElixirCluster) -> PathBuf {
    let mut yaml = cluster.base.plan_head("elixir-test", "elixir");
    yaml.push_str("defaults:\n");
    yaml.push_str(&cluster.base.on.plan_transport());
    yaml.push_str(&format!(
        "  flags_file: {}/{{sname}}/releases/{VSN}/env.sh\n  timeouts: {{ start: 60s, stop: 60s, ready: 60s }}\nnodes:\n",
        cluster.base.path().display()
    ));
    for i in 1..=cluster.n {
        yaml.push_str(&format!("  - name: {}\n", cluster.node_name(i)));
    }
    let path = cluster.base.path().join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// One migrate (`extra` flags) and its checks: completed, every link TLS in distls's status and in
/// each node's own `rpc`, `pid` answering, env.sh ending with the one TLS line.
fn migrate_and_check(cluster: &ElixirCluster, plan: &Path, names: &[String], extra: &[&str]) {
    let started = Instant::now();
    let args: Vec<&str> = ["migrate"]
        .into_iter()
        .chain(extra.iter().copied())
        .chain([plan.to_str().unwrap()])
        .collect();
    let out = distls(&args);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!(
        "MEASURED elixir 3 nodes: distls migrate {extra:?} {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(journal(plan)["phase"], "completed");
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    let cookie = std::fs::read_to_string(cluster.root(1).join("releases/COOKIE")).unwrap();
    assert!(!shown.contains(cookie.trim()), "no cookie in the output");
    assert_status_all_tls(plan, names);
    for i in 1..=cluster.n {
        cluster.wait_meshed(i, "tls");
        let env = std::fs::read_to_string(cluster.env_sh(i)).unwrap();
        let optfile = cluster.env_sh(i).with_file_name("distls-ssl_dist.conf");
        assert!(
            env.ends_with(&format!(
                "\nexport ELIXIR_ERL_OPTIONS=\"${{ELIXIR_ERL_OPTIONS:+$ELIXIR_ERL_OPTIONS }}-proto_dist inet_tls -ssl_dist_optfile {}\"\n",
                optfile.display()
            )) && !env.contains("distls_hybrid"),
            "{env}"
        );
        assert!(optfile.exists());
        assert!(!cluster.env_sh(i).with_file_name("distls-hybrid").exists());
    }
    // Every release command reads the one TLS line; the server is back in embedded mode.
    let optfile = cluster.env_sh(1).with_file_name("distls-ssl_dist.conf");
    let tls = format!(
        "-proto_dist inet_tls -ssl_dist_optfile {}",
        optfile.display()
    );
    cluster.assert_commands_read(1, &[&tls, "-mode embedded"], &[&tls]);
}

/// `distls rollback`: every env.sh byte for byte as before, no optfile, the nodes meshed over TCP
/// with their commands working.
fn rollback_and_check(cluster: &ElixirCluster, plan: &Path, originals: &[Vec<u8>]) {
    let started = Instant::now();
    let back = distls(&["rollback", plan.to_str().unwrap()]);
    assert!(back.status.success(), "{}", describe(&back));
    eprintln!(
        "MEASURED elixir 3 nodes: distls rollback {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(journal(plan)["phase"], "rolled_back");
    for i in 1..=cluster.n {
        assert_eq!(
            std::fs::read(cluster.env_sh(i)).unwrap(),
            originals[i - 1],
            "env.sh of node {i} is byte-identical to its original"
        );
        assert!(
            !cluster
                .env_sh(i)
                .with_file_name("distls-ssl_dist.conf")
                .exists()
        );
        assert!(!cluster.env_sh(i).with_file_name("distls-hybrid").exists());
        cluster.wait_meshed(i, "tcp");
    }
    cluster.assert_commands_read(1, &[], &[]);
}

/// The default roll's canary: `--pause-after 1` stops after one node restarted into the hybrid
/// stage; that node's env.sh gives the hybrid module and interactive mode to its server commands
/// only, its `pid` still answers (a plain-TCP command), and the other nodes are untouched.
fn pause_in_the_hybrid_stage(cluster: &ElixirCluster, plan: &Path, originals: &[Vec<u8>]) {
    let started = Instant::now();
    let out = distls(&["migrate", "--pause-after", "1", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(journal(plan)["phase"], "paused");
    eprintln!(
        "MEASURED elixir 3 nodes: distls migrate --pause-after 1 {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let staged: Vec<usize> = (1..=cluster.n)
        .filter(|i| std::fs::read(cluster.env_sh(*i)).unwrap() != originals[i - 1])
        .collect();
    let [k] = staged[..] else {
        panic!("one node in the hybrid stage, not {staged:?}")
    };
    let module_dir = cluster.env_sh(k).with_file_name("distls-hybrid");
    let hybrid = format!("-pa {} -proto_dist distls_hybrid", module_dir.display());
    cluster.assert_commands_read(k, &[&hybrid, "-mode interactive"], &[]);
    let pid = cluster.run_ok(k, &["pid"]);
    assert!(pid.parse::<u32>().is_ok(), "bin/{APP} pid: {pid}");
}

/// A 3-node mix release, one cluster for both modes: the default roll (zero-split: the servers
/// run the hybrid module while the release's commands stay plain), rollback, the classic roll,
/// rollback. distls uses the flavor's defaults only: the commands from `bin/distapp`, the cookie
/// from releases/COOKIE, the epmd port from env.sh.
#[test]
fn elixir_release_migrates_in_both_modes_and_rolls_back() {
    let _one_at_a_time = products_lock();
    let started = Instant::now();
    let cluster = ElixirCluster::start("elixir", 3);
    migrates_in_both_modes_and_rolls_back(&cluster, started, false);
}

/// The same on sid's Elixir 1.20 and OTP 29, on one OTP host that distls reaches over SSH; the
/// default roll first pauses in the hybrid stage (its canary), then resumes.
#[test]
fn otp29_elixir_120_release_migrates_in_both_modes_and_rolls_back() {
    // No products lock: the cluster has its own host (namespace, root, epmd port).
    let started = Instant::now();
    let Some(cluster) = ElixirCluster::start_on("elx", 3, Otp::Sid) else {
        return;
    };
    let version = cluster.run_ok(1, &["rpc", "IO.puts(System.version())"]);
    let otp = cluster.run_ok(1, &["rpc", "IO.puts(System.otp_release())"]);
    assert_eq!((version.as_str(), otp.as_str()), ("1.20.4", "29"));
    migrates_in_both_modes_and_rolls_back(&cluster, started, true);
}

/// check, the dry run, the default roll (with `canary`, paused after one node first), rollback,
/// the classic roll, rollback, on one running cluster.
fn migrates_in_both_modes_and_rolls_back(cluster: &ElixirCluster, started: Instant, canary: bool) {
    let otp = cluster.base.on.otp.major();
    let names: Vec<String> = (1..=3).map(|i| cluster.node_name(i)).collect();
    let originals: Vec<Vec<u8>> = (1..=3)
        .map(|i| std::fs::read(cluster.env_sh(i)).unwrap())
        .collect();
    let plan = plan(cluster);
    eprintln!(
        "MEASURED elixir on OTP {otp}: build + 3 nodes meshed {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let check = distls(&["check", plan.to_str().unwrap()]);
    assert!(check.status.success(), "{}", describe(&check));
    let shown = stdout(&check);
    assert!(
        shown.contains("flavor.release") && shown.contains(&format!("OTP {otp}")),
        "{}",
        describe(&check)
    );
    let dry = distls(&["migrate", "--dry-run", plan.to_str().unwrap()]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let shown = format!("{}{}", stdout(&dry), stderr(&dry));
    let cookie = std::fs::read_to_string(cluster.root(1).join("releases/COOKIE")).unwrap();
    assert!(
        shown.contains("export RELEASE_COOKIE=<redacted>") && !shown.contains(cookie.trim()),
        "the dry run masks the cookie env.sh sets: {shown}"
    );
    assert!(shown.contains("distls_hybrid"), "{shown}");
    for i in 1..=3 {
        assert_eq!(std::fs::read(cluster.env_sh(i)).unwrap(), originals[i - 1]);
    }

    if canary {
        pause_in_the_hybrid_stage(cluster, &plan, &originals);
    }
    migrate_and_check(cluster, &plan, &names, &[]);
    rollback_and_check(cluster, &plan, &originals);
    migrate_and_check(cluster, &plan, &names, &["--classic"]);
    rollback_and_check(cluster, &plan, &originals);
    eprintln!(
        "MEASURED elixir on OTP {otp}: whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
