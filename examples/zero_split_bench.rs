//! Benchmark helper (used by `bench/zero-split`, never by CI): one run of `distls migrate` or
//! `distls migrate --zero-split` on a FRESH rehearsal cluster whose nodes sample their links every
//! 200 ms, judged by the split checker of the integration tests.
//!
//! ```text
//! zero_split_bench --distls target/release/distls --nodes 3 --mode default|zero-split
//!                  [--rep 1] [--mnesia] [--window-secs 5] [--gap-ms 450] [--dir /tmp]
//!                  [--log-prefix PATH]
//! ```
//!
//! Builds the cluster in a temp dir (distinct node names and cluster name per run), waits until
//! every node has sampled the full plain mesh, runs distls (with the cluster's `ERL_EPMD_PORT`),
//! takes its wall time, waits until every node has sampled the full TLS mesh, runs the checker
//! from the moment distls started, shuts the cluster down (every process by pid) and prints one
//! TSV line (see [`HEADER`]; `--header` prints the header line only). With `--log-prefix P`,
//! distls's output goes to `P.distls.log`, the checker's summary to `P.check.txt` and every
//! node's `links.log` to `P.links/`.
//! SIGINT/SIGTERM stop distls (by pid) and the cluster, then exit 130.

#[allow(dead_code)] // the ctl pinger and a few report helpers are not used here
#[path = "../tests/integration/split_checker.rs"]
mod split_checker;

use distls::rehearsal::{ClusterSpec, RehearsalCluster};
use split_checker::{Params, now_ms, parse_log};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Columns of the TSV line.
const HEADER: &str = "nodes\tmode\tmnesia\trep\twall_s\tsplit_s\tsplit_with_windows_s\tviolations\tmax_rejoin_s\trestarts\tload1\tstatus";

/// The checker's default gap (1 s) is longer than a whole restart of a rehearsal node on a fast
/// machine: the old VM's last sample and the new VM's first one were 0.45-1.4 s apart, most of
/// them under 1 s (release build, 2 cores, load 3-11), against at most 0.35 s between the
/// samples of a running VM. With 1 s the checker does not see most restarts (no restart window,
/// so the restart itself counts as a split). The `restarts` column lets a reader check the gap:
/// it must be N for the default roll and 3N for zero-split.
const DEFAULT_GAP: Duration = Duration::from_millis(400);

/// How long to wait for every node to sample a full mesh.
const SAMPLED_MESH_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Default,
    ZeroSplit,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::ZeroSplit => "zero-split",
        }
    }
}

struct Args {
    distls: PathBuf,
    nodes: usize,
    mode: Mode,
    rep: u32,
    mnesia: bool,
    window: Duration,
    /// The checker's gap: two samples of a node further apart than this mean it restarted.
    gap: Duration,
    dir: PathBuf,
    log_prefix: Option<PathBuf>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: zero_split_bench --distls PATH --nodes N --mode default|zero-split [--rep R] \
         [--mnesia] [--window-secs S] [--gap-ms MS] [--dir DIR] [--log-prefix PATH]\n       \
         zero_split_bench --header\n       \
         zero_split_bench --recheck P.links [--window-secs S] [--gap-ms MS]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, ExitCode> {
    let mut distls = None;
    let mut nodes = None;
    let mut mode = None;
    let mut rep = 1;
    let mut mnesia = false;
    let mut window = Duration::from_secs(5);
    let mut gap = DEFAULT_GAP;
    let mut dir = std::env::temp_dir();
    let mut log_prefix = None;
    let mut recheck = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--header" => {
                println!("{HEADER}");
                return Err(ExitCode::SUCCESS);
            }
            "--mnesia" => mnesia = true,
            _ => {
                let Some(v) = args.next() else {
                    return Err(usage());
                };
                match arg.as_str() {
                    "--distls" => distls = Some(PathBuf::from(v)),
                    "--nodes" => nodes = v.parse().ok(),
                    "--mode" => {
                        mode = match v.as_str() {
                            "default" => Some(Mode::Default),
                            "zero-split" => Some(Mode::ZeroSplit),
                            _ => return Err(usage()),
                        }
                    }
                    "--rep" => rep = v.parse().map_err(|_| usage())?,
                    "--window-secs" => {
                        window = Duration::from_secs_f64(v.parse().map_err(|_| usage())?)
                    }
                    "--gap-ms" => gap = Duration::from_millis(v.parse().map_err(|_| usage())?),
                    "--dir" => dir = PathBuf::from(v),
                    "--log-prefix" => log_prefix = Some(PathBuf::from(v)),
                    "--recheck" => recheck = Some(PathBuf::from(v)),
                    _ => return Err(usage()),
                }
            }
        }
    }
    if let Some(dir) = recheck {
        return Err(recheck_dir(&dir, window, gap));
    }
    let (Some(distls), Some(nodes), Some(mode)) = (distls, nodes, mode) else {
        return Err(usage());
    };
    Ok(Args {
        distls,
        nodes,
        mode,
        rep,
        mnesia,
        window,
        gap,
        dir,
        log_prefix,
    })
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

/// Waits until every node's last sample is newer than `after` and shows every other node over
/// `transport`.
fn wait_for_sampled_mesh(
    cluster: &RehearsalCluster,
    transport: &str,
    after: i64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    cluster
        .wait_until(
            &format!("every node to sample the full {transport} mesh"),
            SAMPLED_MESH_DEADLINE,
            || {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
                let logs = cluster.links_logs();
                names.iter().all(|n| {
                    parse_log(&logs[n]).last().is_some_and(|s| {
                        s.t > after
                            && names
                                .iter()
                                .filter(|o| *o != n)
                                .all(|o| s.peers.get(o).is_some_and(|p| p == transport))
                    })
                })
            },
        )
        .map_err(|e| e.to_string())?;
    if stop.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall on the pid of a child this process spawned and has not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Runs distls to completion; on `stop`, interrupts it (SIGINT twice: "leave now"), then kills it.
fn run_distls(
    args: &Args,
    cluster: &RehearsalCluster,
    stop: &AtomicBool,
) -> Result<(Duration, Option<i32>), String> {
    let plan = cluster.plan_path();
    let mut cmd = Command::new(&args.distls);
    cmd.arg("migrate");
    // Both rolls named explicitly: "default" is the classic roll (the default before issue 14;
    // the label is kept so earlier result files still compare).
    cmd.arg(match args.mode {
        Mode::ZeroSplit => "--zero-split",
        Mode::Default => "--classic",
    });
    cmd.arg(&plan).envs(cluster.env()).stdin(Stdio::null());
    for var in ["ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_LIBS"] {
        cmd.env_remove(var);
    }
    match &args.log_prefix {
        Some(p) => {
            let path = PathBuf::from(format!("{}.distls.log", p.display()));
            let out = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            cmd.stdout(out).stderr(err);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", args.distls.display()))?;
    let mut interrupted_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let wall = t0.elapsed();
            if interrupted_at.is_some() {
                return Err("interrupted".into());
            }
            return Ok((wall, status.code()));
        }
        if stop.load(Ordering::SeqCst) {
            match interrupted_at {
                None => {
                    signal(child.id(), libc::SIGINT);
                    std::thread::sleep(Duration::from_millis(200));
                    signal(child.id(), libc::SIGINT);
                    interrupted_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Outcome {
    wall: Option<Duration>,
    /// Split s, split s with windows, violations, max rejoin window, restarts seen.
    split: Option<(f64, f64, usize, String, usize)>,
    status: String,
}

fn bench(args: &Args, stop: &AtomicBool) -> Outcome {
    let mode_char = match args.mode {
        Mode::Default => 'd',
        Mode::ZeroSplit => 'z',
    };
    let m = if args.mnesia { "m" } else { "" };
    // Distinct names per run, so no two runs' names, logs or journals ever mix.
    let prefix = format!("zb{mode_char}{}{m}r{}n", args.nodes, args.rep);
    let tmp = match tempfile::Builder::new()
        .prefix(&format!("distls-zsbench-{prefix}-"))
        .tempdir_in(&args.dir)
    {
        Ok(t) => t,
        Err(e) => {
            return Outcome {
                wall: None,
                split: None,
                status: format!("error: temp dir in {}: {e}", args.dir.display()),
            };
        }
    };
    let mut spec = ClusterSpec::new(tmp.path(), args.nodes);
    spec.name_prefix = prefix.clone();
    spec.cluster_name = format!("zsbench-{prefix}-{}", std::process::id());
    spec.sample_links = true;
    spec.mnesia = args.mnesia;
    let mut cluster = match RehearsalCluster::create(&spec) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                wall: None,
                split: None,
                status: format!("error: cluster: {e}"),
            };
        }
    };
    let outcome = measure(args, &cluster, stop);
    cluster.shutdown();
    drop(cluster);
    drop(tmp);
    outcome
}

fn measure(args: &Args, cluster: &RehearsalCluster, stop: &AtomicBool) -> Outcome {
    let fail = |status: String| Outcome {
        wall: None,
        split: None,
        status,
    };
    if let Err(e) = wait_for_sampled_mesh(cluster, "tcp", 0, stop) {
        return fail(format!("error: before: {e}"));
    }
    let since = now_ms();
    let (wall, code) = match run_distls(args, cluster, stop) {
        Ok(r) => r,
        Err(e) => return fail(format!("error: {e}")),
    };
    if code != Some(0) {
        return Outcome {
            wall: Some(wall),
            split: None,
            status: format!(
                "fail:exit-{}",
                code.map_or("signal".into(), |c| c.to_string())
            ),
        };
    }
    let mut status = "ok".to_owned();
    if let Err(e) = wait_for_sampled_mesh(cluster, "tls", now_ms(), stop) {
        if stop.load(Ordering::SeqCst) {
            return fail("error: interrupted".into());
        }
        status = format!("no-tls-mesh: {e}");
    }
    let logs = cluster.links_logs();
    let report = split_checker::check(&logs, &[], &params(args.window, args.gap, since));
    if let Some(p) = &args.log_prefix {
        let path = format!("{}.check.txt", p.display());
        let _ = std::fs::write(&path, report.to_string());
        let dir = PathBuf::from(format!("{}.links", p.display()));
        if std::fs::create_dir_all(&dir).is_ok() {
            for (node, text) in &logs {
                let _ = std::fs::write(dir.join(format!("{node}.log")), text);
            }
            let _ = std::fs::write(dir.join("since"), format!("{since}\n"));
        }
    }
    Outcome {
        wall: Some(wall),
        split: Some(figures(&report)),
        status,
    }
}

fn params(window: Duration, gap: Duration, since: i64) -> Params {
    let mut params = Params::new(window).since(since);
    params.gap = gap;
    params
}

/// Split s, split s with windows, violations, max rejoin window, restarts seen.
fn figures(report: &split_checker::SplitReport) -> (f64, f64, usize, String, usize) {
    let rejoin = match report.max_rejoin() {
        Ok(Some(d)) => format!("{:.1}", d.as_secs_f64()),
        Ok(None) => "-".to_owned(),
        Err(_) => "never".to_owned(),
    };
    (
        report.split_seconds,
        report.split_seconds_with_windows,
        report.violations.len(),
        rejoin,
        report.rejoins.len(),
    )
}

/// `--recheck P.links`: the checker again over the saved `<node>.log` files and `since` of a run
/// (e.g. with another window or gap); prints its summary, then
/// `split_s split_with_windows_s violations max_rejoin_s restarts`.
fn recheck_dir(dir: &std::path::Path, window: Duration, gap: Duration) -> ExitCode {
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    let result = (|| -> Result<_, String> {
        let since: i64 = read(dir.join("since"))?
            .trim()
            .parse()
            .map_err(|e| format!("since: {e}"))?;
        let mut logs = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if let (Some(node), Some("log")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) {
                logs.insert(node.to_owned(), read(path.clone())?);
            }
        }
        Ok(split_checker::check(
            &logs,
            &[],
            &params(window, gap, since),
        ))
    })();
    match result {
        Ok(report) => {
            let (s, w, v, r, n) = figures(&report);
            println!("{report}");
            println!("{s:.1}\t{w:.1}\t{v}\t{r}\t{n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zero_split_bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zero_split_bench: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = load1();
    let (outcome, interrupted) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("zero_split_bench: cannot install signal handlers");
            return (None, true);
        };
        let flag = Arc::clone(&stop);
        let args = Arc::new(args);
        let work_args = Arc::clone(&args);
        let mut work = tokio::task::spawn_blocking(move || bench(&work_args, &flag));
        let mut interrupted = false;
        let outcome = loop {
            tokio::select! {
                r = &mut work => break r.ok(),
                _ = term.recv() => { interrupted = true; stop.store(true, Ordering::SeqCst); }
                _ = int.recv() => { interrupted = true; stop.store(true, Ordering::SeqCst); }
            }
        };
        (outcome.map(|o| (o, Arc::clone(&args))), interrupted)
    });
    if interrupted {
        eprintln!("zero_split_bench: interrupted; distls and the cluster were stopped");
        return ExitCode::from(130);
    }
    let Some((o, args)) = outcome else {
        eprintln!("zero_split_bench: the run panicked");
        return ExitCode::from(1);
    };
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let (split, split_w, viol, rejoin, restarts) = match &o.split {
        Some((s, w, v, r, n)) => (
            f(Some(*s)),
            f(Some(*w)),
            v.to_string(),
            r.clone(),
            n.to_string(),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
    };
    println!(
        "{}\t{}\t{}\t{}\t{}\t{split}\t{split_w}\t{viol}\t{rejoin}\t{restarts}\t{load}\t{}",
        args.nodes,
        args.mode.label(),
        u8::from(args.mnesia),
        args.rep,
        o.wall
            .map_or("-".to_owned(), |w| format!("{:.2}", w.as_secs_f64())),
        o.status.replace(['\t', '\n'], " "),
    );
    if o.status == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
