//! The command line: what the operator types. Parsing only; `app` does the work.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "distls",
    version,
    about = "Move a live Erlang cluster from plain-TCP distribution to TLS distribution, one node at a time",
    after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=distls=debug) for more. Exit codes: docs/exit-codes.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Switch every node of the plan to TLS, one at a time, never splitting the cluster (--classic: the stock-only roll); resumes an interrupted run.
    Migrate(MigrateArgs),
    /// Return every node to plain TCP and its original vm.dist.args, newest first.
    Rollback(RollbackArgs),
    /// Show the journal and what every node really runs right now.
    Status(StatusArgs),
    /// Read-only preflight: files, certificates, TLS options and runtime of every node (exit 3 on any FAIL);
    /// `--expiry 30d`: only whether a served certificate expires within 30 days (exit 3 if so).
    Check(CheckArgs),
    /// Replace the certificates, keys or CA of a running TLS cluster without a restart (docs/rotate.md).
    Rotate(RotateArgs),
    /// Write plans: `distls plan discover NODE@HOST` asks a running node for its cluster.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Build a throwaway local 3-node cluster (MongooseIM layout, fresh certificates) and migrate it.
    Demo(DemoArgs),
    /// Print a completion script: `distls completions bash > /etc/bash_completion.d/distls`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `distls man > distls.1`; docs/distls.1 is its output.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Ask one running node for its cluster and print a commented plan to review (docs/discover.md);
    /// unknown values are `<<FILL IN: …>>` placeholders that `distls check` refuses.
    Discover(DiscoverArgs),
}

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The node to ask, exactly as it runs (name@host); its peers are found through it.
    pub node: String,
    /// The product [default: told from the node's applications and args files].
    #[arg(long, value_parser = ["mongooseim", "ejabberd", "rabbitmq", "relx", "elixir"])]
    pub flavor: Option<String>,
    /// The cluster's cookie: a file holding it, or the node's vm.args (-setcookie) [default: the
    /// flavor's cookie file, else ~/.erlang.cookie]. Never printed.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// The plan's `cluster` name [default: from the node's name].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The nodes' certificate for TLS distribution [default: what their files name, else a placeholder].
    #[arg(long, value_name = "PATH")]
    pub certfile: Option<String>,
    /// The nodes' private key [default: what their files name, else a placeholder].
    #[arg(long, value_name = "PATH")]
    pub keyfile: Option<String>,
    /// The CA bundle [default: what their files name, else a placeholder].
    #[arg(long, value_name = "PATH")]
    pub cacertfile: Option<String>,
    /// The erl that runs the discovery VM.
    #[arg(long, value_name = "PATH", default_value = "erl")]
    pub erl: String,
    /// Write the plan to FILE (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file (format v1, see docs/plan-format.md).
    pub plan: PathBuf,
    /// Where the journal and lock live [default: .distls/ next to the plan].
    #[arg(long, env = "DISTLS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print the journal and every node as one JSON object (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Print the run as JSON events, one object per line (docs/json.md), instead of progress
    /// lines and the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Take over the run locks on the nodes' hosts even if another run's are there and fresh;
    /// only when that run is certainly gone (docs/locks.md).
    #[arg(long)]
    pub break_lock: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Start a new run when the journal belongs to an earlier cluster (every node plain with its
    /// original file and no backup): the old journal is kept as `<journal>.archived-<time>`.
    #[arg(long)]
    pub new_run: bool,
    /// Print every step and each vm.dist.args diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// What to do when a step fails [default: the plan's on_failure, else rollback].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub on_failure: Option<OnFailureArg>,
    /// Resume even though the plan file changed since the journal was started.
    #[arg(long)]
    pub allow_plan_change: bool,
    /// The canary: stop at a safe point once N nodes were restarted by this run (the journal
    /// says `paused`; `distls status` says why). Rerun `migrate` to go on, or `rollback`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub pause_after: Option<u32>,
    /// Restart up to K nodes at once (a number, or a share of the cluster such as 30%; never all
    /// of them) [default: the plan's batch, else 1]. Before-stop gates still admit one node at a time
    /// (docs/batches.md).
    #[arg(long, value_name = "K|P%", value_parser = parse_batch)]
    pub batch: Option<crate::batch::Batch>,
    /// Do not ask before the first stop of a new run (asked only on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the run as JSON events, one object per line (docs/json.md), instead of progress
    /// lines and the table; never asks.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub mode: ModeArgs,
    #[command(flatten)]
    pub preflight: PreflightArgs,
}

/// Which roll a new run takes (docs/zero-split.md). A run in progress goes on with the roll its
/// journal records.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ModeArgs {
    /// The roll without distls's module: each node restarts straight into stock TLS, so the
    /// migrated nodes and the plain ones cannot see each other until the last node switches.
    /// For hosts where no extra module may be loaded.
    #[arg(long, conflicts_with = "zero_split")]
    pub classic: bool,
    /// The default roll, named explicitly: never split; one restart per node into distls's hybrid
    /// distribution module, then sealed to TLS at run time (docs/zero-split.md). Refused, rather
    /// than falling back to --classic, where a node cannot take the module.
    #[arg(long)]
    pub zero_split: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PreflightArgs {
    /// Warn about a certificate that expires within this time (e.g. 30d, 2w, 72h).
    #[arg(long, value_name = "DUR", default_value = "30d", value_parser = humantime::parse_duration)]
    pub expiry_window: std::time::Duration,
    /// Accept weak TLS: report verify_none (server or client) and a server without
    /// `server_fail_if_no_peer_cert true` as warnings instead of FAILs (docs/preflight.md).
    #[arg(long)]
    pub allow_weak_tls: bool,
    /// Name every node in the preflight's table: identical findings of 4 or more nodes share a
    /// row that names only the first 3 (docs/preflight.md).
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plan file (format v1, see docs/plan-format.md).
    pub plan: PathBuf,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also start two throwaway TLS VMs on each host and ping between them.
    #[arg(long)]
    pub handshake: bool,
    /// Only ask every running TLS node which certificate it serves now (not the files on disk)
    /// and FAIL, exit 3, when one expires within DUR (e.g. 30d) or has expired; the other checks
    /// do not run. Read-only and quick, for cron and monitoring (docs/preflight.md).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, conflicts_with = "handshake")]
    pub expiry: Option<std::time::Duration>,
    /// Check for the roll `migrate` would take with these flags: by default also that every host
    /// can run the zero-split roll (its OTP, the node's flavor); `--classic` leaves that out.
    #[command(flatten)]
    pub mode: ModeArgs,
    #[command(flatten)]
    pub preflight: PreflightArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// A new file, on each node's host: certfile=PATH, keyfile=PATH or cacertfile=PATH
    /// (placeholders {name}, {sname}, {host}). Installed at the paths the nodes' running
    /// options name (the plan's `tls`).
    #[arg(long, value_name = "KIND=PATH")]
    pub to: Vec<String>,
    /// Change the CA too, in three phases: every node trusts both CAs, every node gets its new
    /// certificate, every node trusts only the new CA.
    #[arg(long)]
    pub ca_rollover: bool,
    /// Show the moves and check them; change nothing.
    #[arg(long, conflicts_with = "rollback")]
    pub dry_run: bool,
    /// Put back every file the rotation changed, newest first, clearing each node's cache again.
    #[arg(long)]
    pub rollback: bool,
    /// Remove a finished rotation's before-copies (one holds the old key) and its journal; it can
    /// no longer be rolled back.
    #[arg(long, conflicts_with_all = ["rollback", "dry_run", "to", "ca_rollover"])]
    pub forget: bool,
    /// Do not ask before the first change of a new rotation (asked only on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the rotation as JSON records, one object per line (docs/json.md), instead of its
    /// lines; never asks.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnFailureArg {
    /// Bring every touched node back to plain TCP.
    Rollback,
    /// Stop where it failed and leave the journal for the operator.
    Pause,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many nodes the rehearsal cluster has.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=20))]
    pub nodes: u16,
    /// Keep the cluster directory (nodes are stopped either way).
    #[arg(long)]
    pub keep: bool,
    /// The roll to migrate the rehearsal with (default: zero-split, never split).
    #[command(flatten)]
    pub mode: ModeArgs,
}

fn parse_batch(text: &str) -> Result<crate::batch::Batch, String> {
    text.parse()
        .map_err(|e: crate::batch::BadBatch| format!("{e}; {}", crate::batch::BATCH_HINT))
}
