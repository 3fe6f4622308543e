//! Benchmark helper (used by `bench/run`, never by CI): build a rehearsal cluster of N plain-TCP
//! nodes in MongooseIM layout under a directory, print where it is, and keep it running until
//! SIGTERM or SIGINT; then stop every process it started, by pid.
//!
//! ```text
//! cargo run --release --example rehearse -- --nodes 5 --dir /tmp/c1 [--prefix mim]
//! ```
//!
//! Prints, once the cluster is fully meshed, one `key value` line each:
//! `plan <path>`, `epmd_port <port>`, `dir <path>`, `nodes <n>`, then `ready`.

use distls::rehearsal::{ClusterSpec, RehearsalCluster};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: rehearse --nodes N --dir DIR [--prefix PREFIX]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut nodes: Option<usize> = None;
    let mut dir: Option<PathBuf> = None;
    let mut prefix = "mim".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--nodes", Some(v)) => nodes = v.parse().ok(),
            ("--dir", Some(v)) => dir = Some(PathBuf::from(v)),
            ("--prefix", Some(v)) => prefix = v,
            _ => return usage(),
        }
    }
    let (Some(nodes), Some(dir)) = (nodes, dir) else {
        return usage();
    };
    let mut spec = ClusterSpec::new(&dir, nodes);
    spec.name_prefix = prefix;
    spec.cluster_name = "bench".to_owned();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rehearse: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Install the signal handlers before the cluster exists, so no signal is lost in between.
    let signals = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    });
    let (Ok(mut term), Ok(mut int)) = signals else {
        eprintln!("rehearse: cannot install signal handlers");
        return ExitCode::from(1);
    };
    let mut cluster = match RehearsalCluster::create(&spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rehearse: the cluster did not come up: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "plan {}", cluster.plan_path().display());
    let _ = writeln!(out, "epmd_port {}", cluster.epmd_port());
    let _ = writeln!(out, "dir {}", cluster.dir().display());
    let _ = writeln!(out, "nodes {nodes}");
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    cluster.shutdown();
    ExitCode::SUCCESS
}
