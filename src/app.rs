//! What each subcommand does, wired from the library's parts.

use crate::cli::{
    CheckArgs, Cli, Command, DemoArgs, LockArgs, MigrateArgs, OnFailureArg, PlanArgs,
    PreflightArgs, RollbackArgs, StatusArgs,
};
use crate::cluster::Cluster;
use crate::error::{Error, Message, Result, exit_code};
use crate::journal::{Journal, JournalStore, Phase};
use crate::json_report::{self, JsonReporter};
use crate::manual;
use crate::observe::{self, Running};
use crate::plan::{Batch, OnFailure, Plan};
use crate::roll_mode::{self, RollMode};
use crate::rollout::{Canary, NodeSummary, Options, Rollout};
use crate::ssh;
use crate::ssh::SshSpec;
use crate::target::{self, FileState};
use crate::transport::Transport;
use crate::{confirm, node_lock, preflight, preview, rehearsal, served, stale_journal, zero_split};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Threads for blocking work: local file operations, and the rehearsal cluster's creation.
const BLOCKING_THREADS: usize = 8;

pub fn main_with(cli: Cli) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The blocking pool runs short local file operations: with tokio's default (512) a
        // 1,000-node preflight started ~450 threads to read small files.
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::INTERNAL);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", err.report());
            if let Some(json) = JSON_OUT.get() {
                json.emit(&json_report::Failed::of(&err));
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// `--json`: the stream this command's events and records go to (set once, at its start).
static JSON_OUT: std::sync::OnceLock<Arc<JsonReporter>> = std::sync::OnceLock::new();

/// With `--json`, a JSON stream on stdout from now on (what would be printed for people goes to
/// stderr then).
fn start_json(on: bool) -> Option<Arc<JsonReporter>> {
    on.then(|| {
        JSON_OUT
            .get_or_init(|| Arc::new(JsonReporter::stdout()))
            .clone()
    })
}

/// A line for people: stdout, or stderr when stdout is the JSON stream.
fn say(text: &str) {
    match JSON_OUT.get() {
        Some(_) => eprintln!("{text}"),
        None => println!("{text}"),
    }
}

/// The run's options from the command line and the plan.
fn run_options(args: &MigrateArgs, plan: &Plan) -> Options {
    Options {
        on_failure: on_failure(args, plan),
        pause_after: args.pause_after.map(|n| Canary::after(n as usize)),
        batch: args.batch.unwrap_or(plan.batch),
        json: JSON_OUT.get().cloned(),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Migrate(args) => migrate(args).await,
        Command::Rollback(args) => rollback(args).await,
        Command::Status(args) => status(args).await,
        Command::Check(args) => check(args).await,
        Command::Rotate(args) => rotate(args).await,
        Command::Plan(crate::cli::PlanCommand::Discover(args)) => discover_plan(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Completions(args) => manual::print_completions(args.shell),
        Command::Man => manual::print_man_page(),
    }
}

/// `distls rotate`: docs/rotate.md.
async fn rotate(args: crate::cli::RotateArgs) -> Result<()> {
    // Before the plan is read: a bad plan or a bad --to is a `failed` record too.
    let json = start_json(args.json && !args.dry_run);
    let mut to = Vec::new();
    for text in &args.to {
        to.push(
            crate::rotate::parse_to(text)
                .map_err(|e| Error::InvalidInput(Message::new(format!("--to {e}"))))?,
        );
    }
    let request = crate::rotate::Request {
        to,
        ca_rollover: args.ca_rollover,
        rollback: args.rollback,
        forget: args.forget,
        dry_run: args.dry_run,
        ask: !args.yes && !args.json,
        out: crate::rotate::events::Output::new(json.clone()),
    };
    let plan = Plan::load(&args.plan.plan)?;
    if let Some(json) = json {
        json.emit(&json_report::Started::of("rotate", &plan));
    }
    let (transports, connections) = open_transports(&plan).await?;
    let outcome = async {
        let targets = target::prepare(&plan, &transports, None).await?;
        // The same run locks as a migration: no roll restarts a node while its files change.
        let locks = if request.dry_run {
            None
        } else {
            Some(node_lock::acquire(&plan, &transports, args.lock.break_lock).await?)
        };
        let outcome =
            crate::rotate::run(&plan, &targets, &state_dir(&args.plan, &plan), &request).await;
        if let Some(locks) = locks {
            locks.release().await;
        }
        outcome
    }
    .await;
    ssh::close_all(connections).await;
    outcome
}

/// First Ctrl-C: finish the current step and stop at a safe point. Second: leave now.
/// `distls plan discover`: docs/discover.md.
async fn discover_plan(args: crate::cli::DiscoverArgs) -> Result<()> {
    let options = crate::discover::Options {
        node: args.node,
        flavor: args.flavor.as_deref().and_then(|f| f.parse().ok()),
        cookie_file: args.cookie_file,
        cluster: args.cluster,
        tls: [args.certfile, args.keyfile, args.cacertfile],
        erl: args.erl,
    };
    let yaml = crate::discover::discover(&options).await?;
    crate::discover::write_plan(&yaml, args.output.as_deref(), args.force)
}

fn watch_interrupts() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if seen.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "interrupted again: leaving now; the journal is consistent, rerun to resume"
                );
                std::process::exit(i32::from(exit_code::INTERRUPTED));
            }
            eprintln!(
                "interrupt: finishing the current step, then stopping (Ctrl-C again to leave now)"
            );
        }
    });
    flag
}

/// One transport per node; SSH nodes of one host share one multiplexed connection.
async fn open_transports(plan: &Plan) -> Result<(Vec<Transport>, SshConnections)> {
    let specs: Vec<&SshSpec> = plan.nodes.iter().filter_map(|n| n.ssh.as_ref()).collect();
    let connections = ssh::connect_all(&specs).await?;
    let transports = plan
        .nodes
        .iter()
        .map(|node| match &node.ssh {
            Some(spec) => Transport::ssh(
                connections[spec].clone(),
                node.env.clone(),
                node.become_command.clone(),
            ),
            None => Transport::local(node.env.clone(), node.become_command.clone()),
        })
        .collect();
    Ok((transports, connections))
}

type SshConnections = std::collections::HashMap<SshSpec, Arc<ssh::SshConnection>>;

fn state_dir(args: &PlanArgs, plan: &Plan) -> PathBuf {
    args.state_dir.clone().unwrap_or_else(|| {
        plan.path
            .parent()
            .map(|p| p.join(".distls"))
            .unwrap_or_else(|| PathBuf::from(".distls"))
    })
}

async fn migrate(args: MigrateArgs) -> Result<()> {
    // Before the plan is read: a bad plan is a `failed` record too.
    let json = start_json(args.json && !args.dry_run);
    let plan = Plan::load(&args.plan.plan)?;
    if let Some(json) = json {
        json.emit(&json_report::Started::of("migrate", &plan));
    }
    let store = JournalStore::new(&state_dir(&args.plan, &plan), &plan.cluster);
    let preflight_options = preflight::Options {
        expiry_window: args.preflight.expiry_window,
        handshake: false,
        zero_split: false,
        allow_weak_tls: args.preflight.allow_weak_tls,
    };
    let (transports, connections) = open_transports(&plan).await?;
    let outcome = if args.dry_run {
        dry_run_in_mode(&plan, &args, &store, &transports, preflight_options).await
    } else {
        migrate_checked(&plan, &args, store, transports, preflight_options).await
    };
    ssh::close_all(connections).await;
    outcome
}

/// The roll a run takes (`roll_mode`), saying so when the default fell back to classic.
fn choose_mode(args: &MigrateArgs, plan: &Plan, journal: Option<&Journal>) -> Result<RollMode> {
    let choice = roll_mode::choose(args.mode, plan, journal)?;
    if let Some(why) = &choice.fallback {
        eprintln!("{why}");
    }
    Ok(choice.mode)
}

async fn dry_run_in_mode(
    plan: &Plan,
    args: &MigrateArgs,
    store: &JournalStore,
    transports: &[Transport],
    mut preflight_options: preflight::Options,
) -> Result<()> {
    // With --new-run the real run starts over when the journal is an earlier cluster's: preview
    // the roll a new run takes.
    let journal = resumable(store.load()?).filter(|_| !args.new_run);
    let mode = choose_mode(args, plan, journal.as_ref())?;
    preflight_options.zero_split = mode.is_zero_split();
    let listing = preflight::Listing::verbose(args.preflight.verbose);
    let batch = args.batch.unwrap_or(plan.batch);
    if mode.is_zero_split() {
        dry_run_zero_split(plan, store, transports, preflight_options, listing, batch).await
    } else {
        dry_run(plan, store, transports, preflight_options, listing, batch).await
    }
}

/// The dry run's line on batches (none when nodes go one at a time).
fn print_batches(plan: &Plan, batch: Batch) {
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    if let Some(line) = batch.groups_line(&names) {
        println!("{line}");
    }
}

async fn dry_run(
    plan: &Plan,
    store: &JournalStore,
    transports: &[Transport],
    preflight_options: preflight::Options,
    listing: preflight::Listing,
    batch: Batch,
) -> Result<()> {
    let journal = store.load()?;
    // Both only read: the preflight runs while the nodes are read for the preview.
    let (targets, findings) = tokio::join!(
        target::prepare(plan, transports, journal.as_ref()),
        preflight::run(plan, transports, preflight_options)
    );
    print!("{}", preview::render(plan, &targets?, journal.as_ref()));
    print_batches(plan, batch);
    // Information only: a real run would refuse to start on a FAIL.
    print!("\n{}", preflight::render_problems(&findings, listing));
    Ok(())
}

async fn dry_run_zero_split(
    plan: &Plan,
    store: &JournalStore,
    transports: &[Transport],
    preflight_options: preflight::Options,
    listing: preflight::Listing,
    batch: Batch,
) -> Result<()> {
    let journal = resumable(store.load()?);
    let (nodes, findings) = tokio::join!(
        zero_split::prepare(plan, transports, journal.as_ref()),
        preflight::run(plan, transports, preflight_options)
    );
    print!(
        "{}",
        preview::render_zero_split(plan, &nodes?, journal.as_ref())
    );
    print_batches(plan, batch);
    print!("\n{}", preflight::render_problems(&findings, listing));
    Ok(())
}

/// Zero-split or not: the flag starts one, the journal carries on the one it holds.
async fn migrate_checked(
    plan: &Plan,
    args: &MigrateArgs,
    mut store: JournalStore,
    transports: Vec<Transport>,
    mut preflight_options: preflight::Options,
) -> Result<()> {
    // Read-only, before the lock: a bad plan or node file is still invalid input (exit 2), and a
    // refused preflight leaves no trace, not even a state directory.
    let mut before = resumable(store.load()?);
    let archive = match &before {
        Some(journal) => check_journal_is_current(plan, args, &store, &transports, journal).await?,
        None => false,
    };
    if archive {
        before = None;
    }
    let mode = choose_mode(args, plan, before.as_ref())?;
    let zero_split = mode.is_zero_split();
    preflight_options.zero_split = zero_split;
    if zero_split {
        zero_split::prepare(plan, &transports, before.as_ref()).await?;
    } else {
        target::prepare(plan, &transports, before.as_ref()).await?;
    }
    let findings = if zero_split {
        let (findings, ()) = tokio::join!(
            preflight::run(plan, &transports, preflight_options),
            zero_split::precompile(plan, &transports)
        );
        findings
    } else {
        preflight::run(plan, &transports, preflight_options).await
    };
    let listing = preflight::Listing::verbose(args.preflight.verbose);
    refuse_on_failures(&findings, &plan.path, mode, listing)?;
    let problems = preflight::render_problems(&findings, listing);
    if !problems.is_empty() {
        say(problems.trim_end());
    }
    if before.is_none() && !args.yes && !args.json {
        confirm::before_first_stop(plan, mode, args.batch.unwrap_or(plan.batch))?;
    }
    store.lock()?;
    if archive {
        let archived = store.archive()?;
        say(&format!(
            "--new-run: the journal of the earlier cluster is kept as {}",
            archived.display()
        ));
    }
    store.check_space(plan.nodes.len())?;
    let journal = resumable(store.load()?);
    if let Some(journal) = &journal {
        check_resumable(journal, plan, args.allow_plan_change)?;
    }
    if journal.is_some() && roll_mode::choose(args.mode, plan, journal.as_ref())?.mode != mode {
        return Err(Error::Refused(
            Message::new("another run started a journal with the other roll while this one ran its preflight; nothing was touched")
                .hint("rerun to carry that run on"),
        ));
    }
    let locks = node_lock::acquire(plan, &transports, args.lock.break_lock).await?;
    let outcome = if zero_split {
        migrate_zero_split(plan, args, store, journal, transports).await
    } else {
        migrate_over(plan, args, store, journal, transports).await
    };
    locks.release().await;
    outcome
}

/// A journal that claims changes no node shows belongs to an earlier cluster: refused, or with
/// `--new-run` archived (true: archive it once the lock is held). `--new-run` against a journal
/// the cluster bears out is refused: it would forget a run in progress.
async fn check_journal_is_current(
    plan: &Plan,
    args: &MigrateArgs,
    store: &JournalStore,
    transports: &[Transport],
    journal: &Journal,
) -> Result<bool> {
    let claims = stale_journal::claims_changes(journal);
    if !claims && !args.new_run {
        return Ok(false);
    }
    let stale = stale_journal::belongs_to_earlier_cluster(plan, transports, journal).await?;
    match (stale, args.new_run) {
        (true, true) => Ok(true),
        (true, false) => Err(Error::Refused(Message::new(format!("{} says this run {} (updated {}), but every node runs plain TCP from a flags file with no distls backup beside it: the journal belongs to an earlier cluster; distls changed nothing", store.journal_path().display(), match journal.phase {
                Phase::Completed => "completed",
                _ => "changed nodes",
            }, journal.updated_at)).hint(format!("rerun with --new-run to start a new run (the old journal is kept as {}.archived-<time>)", store.journal_path().display())))),
        (false, true) if claims => Err(Error::InvalidInput(Message::new(format!("--new-run: {} belongs to this cluster (a node has a distls backup, or runs or is configured for TLS); a new run would forget it", store.journal_path().display())).hint("rerun without --new-run to resume it, or run `distls rollback` with this plan"))),
        // Nothing changed yet by that run: nothing to forget, it is simply resumed.
        (false, _) => Ok(false),
    }
}

async fn migrate_zero_split(
    plan: &Plan,
    args: &MigrateArgs,
    store: JournalStore,
    journal: Option<Journal>,
    transports: Vec<Transport>,
) -> Result<()> {
    let options = run_options(args, plan);
    let intent = zero_split::Intent::Migrate;
    run_zero_split(plan, store, journal, &transports, options, intent).await
}

/// Both ways of a zero-split run: the rolls the journal says are left, then the final table.
async fn run_zero_split(
    plan: &Plan,
    store: JournalStore,
    journal: Option<Journal>,
    transports: &[Transport],
    options: Options,
    intent: zero_split::Intent,
) -> Result<()> {
    let nodes = zero_split::prepare(plan, transports, journal.as_ref()).await?;
    let journal = journal.unwrap_or_else(|| {
        let targets: Vec<_> = nodes.iter().map(|n| n.target.clone()).collect();
        Rollout::new_journal(plan, &targets)
    });
    let targets: Vec<_> = nodes.iter().map(|n| n.target.clone()).collect();
    let cluster = Cluster::of_targets(&targets)?;
    let started = std::time::Instant::now();
    let interrupted = watch_interrupts();
    let reader = store.reader();
    let (summary, outcome) = zero_split::run(
        plan,
        &nodes,
        cluster,
        store,
        journal,
        options,
        interrupted,
        intent,
    )
    .await;
    print_summary(&summary);
    let paused = reader.load()?.is_some_and(|j| j.phase == Phase::Paused);
    if outcome.is_ok() && paused {
        say_paused(plan);
    } else if outcome.is_ok() {
        let outcome = match intent {
            zero_split::Intent::Migrate => {
                "every node runs TLS distribution and sees every other node over TLS"
            }
            zero_split::Intent::Rollback => {
                "every node runs plain TCP again with its original vm.dist.args"
            }
        };
        say(&format!(
            "cluster {}: {outcome}; the cluster stayed one mesh throughout ({:.1}s)",
            plan.cluster,
            started.elapsed().as_secs_f64()
        ));
        emit_done(match intent {
            zero_split::Intent::Migrate => "completed",
            zero_split::Intent::Rollback => "rolled_back",
        });
    }
    outcome
}

fn on_failure(args: &MigrateArgs, plan: &Plan) -> OnFailure {
    match args.on_failure {
        Some(OnFailureArg::Rollback) => OnFailure::Rollback,
        Some(OnFailureArg::Pause) => OnFailure::Pause,
        None => plan.on_failure,
    }
}

async fn migrate_over(
    plan: &Plan,
    args: &MigrateArgs,
    store: JournalStore,
    journal: Option<Journal>,
    transports: Vec<Transport>,
) -> Result<()> {
    let mut rollout =
        default_rollout(plan, store, journal, &transports, run_options(args, plan)).await?;
    let started = std::time::Instant::now();
    let (summary, outcome) = rollout.migrate().await;
    print_summary(&summary);
    if outcome.is_ok() && rollout.paused() {
        say_paused(plan);
    } else if outcome.is_ok() {
        say(&format!(
            "cluster {}: every node runs TLS distribution and sees every other node over TLS ({:.1}s)",
            plan.cluster,
            started.elapsed().as_secs_f64()
        ));
        emit_done("completed");
    }
    outcome
}

/// `--pause-after`: where the run stopped and how to go on.
fn say_paused(plan: &Plan) {
    say(&format!(
        "cluster {}: paused after the canary (--pause-after); the journal says `paused`: rerun `distls migrate {plan}` to go on, or `distls rollback {plan}`",
        plan.cluster,
        plan = plan.path.display()
    ));
    emit_done("paused");
}

/// `--json`: the run ended well, and how (`completed`, `rolled_back`, `paused`).
fn emit_done(outcome: &'static str) {
    if let Some(json) = JSON_OUT.get() {
        json.emit(&json_report::Done::new(outcome));
    }
}

/// A classic (split) roll over every node, resuming `journal` if there is one.
async fn default_rollout<'a>(
    plan: &'a Plan,
    store: JournalStore,
    journal: Option<Journal>,
    transports: &[Transport],
    options: Options,
) -> Result<Rollout<'a>> {
    let (targets, journal) = prepare_with_journal(plan, transports, journal).await?;
    Rollout::new(plan, targets, store, journal, options, watch_interrupts())
}

/// Read every node and start a fresh journal if there is none to resume.
async fn prepare_with_journal(
    plan: &Plan,
    transports: &[Transport],
    journal: Option<Journal>,
) -> Result<(Vec<target::NodeTarget>, Journal)> {
    let targets = target::prepare(plan, transports, journal.as_ref()).await?;
    let journal = journal.unwrap_or_else(|| Rollout::new_journal(plan, &targets));
    Ok((targets, journal))
}

/// The journal a migrate run continues from: a finished rollback leaves nothing to resume.
fn resumable(journal: Option<Journal>) -> Option<Journal> {
    // A zero-split run is over only when its `zero_split` object is gone; `rolled_back` with it
    // still there means one of its rolls went back, with nodes on the hybrid module.
    journal.filter(|j| j.phase != Phase::RolledBack || j.zero_split.is_some())
}

/// Prints the warned and failed findings and refuses the run if any check failed.
fn refuse_on_failures(
    findings: &[preflight::Finding],
    plan: &std::path::Path,
    mode: RollMode,
    listing: preflight::Listing,
) -> Result<()> {
    if !preflight::has_failures(findings) {
        return Ok(());
    }
    eprint!("{}", preflight::render_problems(findings, listing));
    let flag = mode.flag();
    Err(Error::Refused(
        Message::new(
            "preflight found problems that would make the switch fail; nothing was touched",
        )
        .hint(format!(
            "fix every FAIL above (`distls check{flag} {}` shows all checks), then run again",
            plan.display()
        )),
    ))
}

async fn check(args: CheckArgs) -> Result<()> {
    if let Some(window) = args.expiry {
        return check_expiry(&args, window).await;
    }
    let plan = Plan::load(&args.plan)?;
    let choice = roll_mode::choose(args.mode, &plan, None)?;
    if let Some(why) = &choice.fallback {
        eprintln!("{why}");
    }
    let options = preflight::Options {
        expiry_window: args.preflight.expiry_window,
        handshake: args.handshake,
        zero_split: choice.mode.is_zero_split(),
        allow_weak_tls: args.preflight.allow_weak_tls,
    };
    let (transports, connections) = open_transports(&plan).await?;
    let findings = preflight::run(&plan, &transports, options).await;
    drop(transports);
    ssh::close_all(connections).await;
    if args.json {
        println!("{}", preflight::render_json(&findings));
    } else {
        let listing = preflight::Listing::verbose(args.preflight.verbose);
        print!("{}", preflight::render_table(&findings, listing));
    }
    if preflight::has_failures(&findings) {
        return Err(Error::Refused(Message::from(format!(
            "{}: the plan would fail; nothing was touched",
            preflight::summary(&findings)
        ))));
    }
    Ok(())
}

/// `check --expiry`: only what the running TLS nodes serve, against the window.
async fn check_expiry(args: &CheckArgs, window: std::time::Duration) -> Result<()> {
    let plan = Plan::load(&args.plan)?;
    let (transports, connections) = open_transports(&plan).await?;
    let asked = preflight::expiry::run(&plan, &transports, window).await;
    drop(transports);
    ssh::close_all(connections).await;
    let findings = asked?;
    if args.json {
        println!("{}", preflight::render_json(&findings));
    } else {
        let listing = preflight::Listing::verbose(args.preflight.verbose);
        print!("{}", preflight::render_table(&findings, listing));
    }
    match preflight::expiry::refusal(&findings, window) {
        None => Ok(()),
        Some(why) => Err(Error::Refused(Message::new(why).hint(
            "reissue it and install it with `distls rotate` (docs/preflight.md, served.expiry)",
        ))),
    }
}

fn check_resumable(journal: &Journal, plan: &Plan, allow_plan_change: bool) -> Result<()> {
    let journal_nodes: Vec<&str> = journal.nodes.iter().map(|n| n.name.as_str()).collect();
    let plan_nodes: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    if journal_nodes != plan_nodes {
        return Err(Error::InvalidInput(
            Message::new(format!(
                "the journal's run covers nodes [{}] but the plan lists [{}]",
                journal_nodes.join(", "),
                plan_nodes.join(", ")
            ))
            .hint("finish or roll back that run with the plan it started with"),
        ));
    }
    if journal.plan_sha256 != plan.sha256 && !allow_plan_change {
        return Err(Error::InvalidInput(
            Message::new(format!(
                "{} changed since this run started (sha256 {} then, {} now)",
                plan.path.display(),
                journal
                    .plan_sha256
                    .get(..12)
                    .unwrap_or(&journal.plan_sha256),
                &plan.sha256[..12]
            ))
            .hint("put the plan back, or pass --allow-plan-change if the change is intended"),
        ));
    }
    Ok(())
}

async fn rollback(args: RollbackArgs) -> Result<()> {
    // Before the plan is read: a bad plan is a `failed` record too.
    let json = start_json(args.json);
    let plan = Plan::load(&args.plan.plan)?;
    let mut store = JournalStore::new(&state_dir(&args.plan, &plan), &plan.cluster);
    if let Some(json) = json {
        json.emit(&json_report::Started::of("rollback", &plan));
    }
    store.lock()?;
    store.check_space(plan.nodes.len())?;
    let journal = store.load()?;
    let (transports, connections) = open_transports(&plan).await?;
    let outcome = match node_lock::acquire(&plan, &transports, args.lock.break_lock).await {
        Ok(locks) => {
            let outcome = match journal {
                Some(journal) if journal.zero_split.is_some() => {
                    rollback_zero_split(&plan, store, journal, transports).await
                }
                journal => rollback_over(&plan, store, journal, transports).await,
            };
            locks.release().await;
            outcome
        }
        Err(e) => Err(e),
    };
    ssh::close_all(connections).await;
    outcome
}

async fn rollback_over(
    plan: &Plan,
    store: JournalStore,
    journal: Option<Journal>,
    transports: Vec<Transport>,
) -> Result<()> {
    let options = Options {
        json: JSON_OUT.get().cloned(),
        ..Options::on_failure(OnFailure::Pause)
    };
    let mut rollout = default_rollout(plan, store, journal, &transports, options).await?;
    let (summary, outcome) = rollout.rollback().await;
    print_summary(&summary);
    if outcome.is_ok() {
        say(&format!(
            "cluster {}: every node runs plain TCP again with its original vm.dist.args",
            plan.cluster
        ));
        emit_done("rolled_back");
    }
    outcome
}

async fn rollback_zero_split(
    plan: &Plan,
    store: JournalStore,
    journal: Journal,
    transports: Vec<Transport>,
) -> Result<()> {
    let options = Options {
        json: JSON_OUT.get().cloned(),
        ..Options::on_failure(OnFailure::Pause)
    };
    let intent = zero_split::Intent::Rollback;
    run_zero_split(plan, store, Some(journal), &transports, options, intent).await
}

async fn status(args: StatusArgs) -> Result<()> {
    let plan = Plan::load(&args.plan.plan)?;
    let store = JournalStore::new(&state_dir(&args.plan, &plan), &plan.cluster);
    let journal = store.load()?;
    let (transports, connections) = open_transports(&plan).await?;
    let outcome = if args.json {
        status_json(&plan, journal, transports).await
    } else {
        status_over(&plan, &store, journal, transports).await
    };
    ssh::close_all(connections).await;
    outcome
}

async fn status_over(
    plan: &Plan,
    store: &JournalStore,
    journal: Option<Journal>,
    transports: Vec<Transport>,
) -> Result<()> {
    let (targets, texts) = status_targets(plan, &transports, journal.as_ref()).await?;
    print_journal_state(store, journal.as_ref());
    print_run_locks(plan, &transports).await;
    let probes = observe::probe_pool(&targets)?;
    println!(
        "{:<28} {:<16} {:<22} {:<22} LINKS",
        "NODE", "JOURNAL", "FILE", "RUNS"
    );
    for (target, texts) in targets.iter().zip(&texts) {
        let info = observe::observe_with(&probes, target).await?;
        let step = journal
            .as_ref()
            .and_then(|j| j.node(target.name()))
            .map_or("-", |r| r.step.label());
        let (file, runs) = match texts {
            Some(texts) => zero_split_file_and_runs(target, texts, &info).await?,
            None => classic_file_and_runs(target, &info).await?,
        };
        println!(
            "{:<28} {:<16} {:<22} {:<22} {}",
            target.name(),
            step,
            file,
            runs,
            observe::describe_links(&info)
        );
        if let Some(why) = observe::why_down(target, &info) {
            println!("  {why}");
        }
        let served = served::served(&probes, target, &info).await?;
        println!("  {}", served.describe(std::time::SystemTime::now()));
    }
    probes.shutdown().await;
    Ok(())
}

/// `status --json`: the journal's state and every node's row as one `status` record.
async fn status_json(
    plan: &Plan,
    journal: Option<Journal>,
    transports: Vec<Transport>,
) -> Result<()> {
    let (targets, texts) = status_targets(plan, &transports, journal.as_ref()).await?;
    let probes = observe::probe_pool(&targets)?;
    let mut nodes = Vec::new();
    for (target, texts) in targets.iter().zip(&texts) {
        let info = observe::observe_with(&probes, target).await?;
        let step = journal
            .as_ref()
            .and_then(|j| j.node(target.name()))
            .map(|r| r.step.label());
        let (file, runs) = match texts {
            Some(texts) => zero_split_file_and_runs(target, texts, &info).await?,
            None => classic_file_and_runs(target, &info).await?,
        };
        let mut node = serde_json::json!({
            "node": target.name(),
            "step": step,
            "file": file,
            "runs": runs,
            "links": observe::describe_links(&info),
            "not_found": observe::why_down(target, &info),
        });
        let served = served::served(&probes, target, &info).await?;
        for (field, value) in served.json_fields(std::time::SystemTime::now()) {
            node[field] = value;
        }
        nodes.push(node);
    }
    probes.shutdown().await;
    let journal = journal.map(|j| {
        let paused_because = (j.phase == Phase::Paused && j.failure.is_none())
            .then(|| j.events.iter().rev().find(|e| e.what.starts_with("paused")))
            .flatten()
            .map(|e| e.what.clone());
        serde_json::json!({
            "phase": j.phase,
            "updated_at": j.updated_at,
            "failure": j.failure,
            "paused_because": paused_because,
            "zero_split_roll": j.zero_split.map(|r| r.describe()),
        })
    });
    JsonReporter::stdout().emit(&serde_json::json!({
        "event": "status",
        "cluster": plan.cluster,
        "journal": journal,
        "nodes": nodes,
    }));
    Ok(())
}

/// Every node's target, with the texts of each zero-split stage when the journal holds a
/// zero-split run (`None` for each node otherwise).
async fn status_targets(
    plan: &Plan,
    transports: &[Transport],
    journal: Option<&Journal>,
) -> Result<(Vec<target::NodeTarget>, Vec<Option<zero_split::StageTexts>>)> {
    // A zero-split run's files may be at any of its stages.
    match journal {
        Some(j) if j.zero_split.is_some() => {
            let nodes = zero_split::prepare(plan, transports, Some(j)).await?;
            Ok(nodes.into_iter().map(|n| (n.target, Some(n.texts))).unzip())
        }
        _ => {
            let targets = target::prepare(plan, transports, journal).await?;
            let none = vec![None; targets.len()];
            Ok((targets, none))
        }
    }
}

/// Where the journal is and what it says: phase, zero-split roll and last failure.
fn print_journal_state(store: &JournalStore, journal: Option<&Journal>) {
    match journal {
        Some(j) => {
            println!(
                "journal {}: phase {:?}, updated {}",
                store.journal_path().display(),
                j.phase,
                j.updated_at
            );
            if let Some(roll) = &j.zero_split {
                println!(
                    "zero-split: roll {} (heading to {})",
                    roll.describe(),
                    roll.toward
                );
            }
            if let Some(failure) = &j.failure {
                println!("last failure: {failure}");
            } else if j.phase == Phase::Paused
                && let Some(why) = j.events.iter().rev().find(|e| e.what.starts_with("paused"))
            {
                // The canary's pause: why, and how to go on.
                println!("{}: rerun `distls migrate` to go on", why.what);
            }
        }
        None => println!(
            "journal {}: none (no run yet)",
            store.journal_path().display()
        ),
    }
}

/// Every run lock that is held, and by whom.
async fn print_run_locks(plan: &Plan, transports: &[Transport]) {
    for (lock, holder) in node_lock::holders(plan, transports).await {
        if let Some(holder) = holder {
            println!("run lock {}: {}", lock.display(), holder.describe());
        }
    }
}

/// The FILE and RUNS columns of a zero-split run: the stage its flags file holds, and the stage
/// it runs.
async fn zero_split_file_and_runs(
    target: &target::NodeTarget,
    texts: &zero_split::StageTexts,
    info: &crate::probe::NodeInfo,
) -> Result<(&'static str, &'static str)> {
    let now = target.transport.read_file(&target.dist_args).await?;
    let file = std::str::from_utf8(&now)
        .ok()
        .and_then(|now| texts.stage_of(now))
        .map_or("changed", crate::stage::Stage::label);
    let runs = match info.proto_dist() {
        // Stock TLS from its next restart (its flags file says so already).
        Some(crate::stage::SEALED_SIGNATURE) => "tls (sealed module)",
        proto => proto
            .and_then(crate::stage::Stage::of_signature)
            .map_or_else(
                || Running::of_info(info).label(),
                crate::stage::Stage::label,
            ),
    };
    Ok((file, runs))
}

/// The FILE and RUNS columns of a classic run: whether its vm.dist.args is the original or the
/// TLS text, and whether it runs TLS.
async fn classic_file_and_runs(
    target: &target::NodeTarget,
    info: &crate::probe::NodeInfo,
) -> Result<(&'static str, &'static str)> {
    let file = match target.read_file_state().await? {
        FileState::Original => "original",
        FileState::Tls => "tls",
        FileState::Foreign => "changed",
    };
    Ok((file, Running::of_info(info).label()))
}

fn default_preflight() -> PreflightArgs {
    PreflightArgs {
        expiry_window: preflight::DEFAULT_EXPIRY_WINDOW,
        allow_weak_tls: false,
        verbose: false,
    }
}

fn print_summary(rows: &[NodeSummary]) {
    if let Some(json) = JSON_OUT.get() {
        json.emit(&json_report::Summary::of(rows));
        return;
    }
    if rows.is_empty() {
        return;
    }
    println!("{:<28} {:<11} {:<8} LINKS", "NODE", "RUNS", "TOOK");
    for row in rows {
        let took = row
            .took
            .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        println!(
            "{:<28} {:<11} {:<8} {}",
            row.name, row.runs, took, row.links
        );
    }
}

/// `distls migrate` as the demo runs it (nothing asked: the demo says what it does).
fn demo_migrate_args(plan: PlanArgs, mode: crate::cli::ModeArgs, dry_run: bool) -> MigrateArgs {
    MigrateArgs {
        plan,
        lock: LockArgs { break_lock: false },
        new_run: false,
        dry_run,
        on_failure: None,
        allow_plan_change: false,
        pause_after: None,
        batch: None,
        yes: true,
        json: false,
        mode,
        preflight: default_preflight(),
    }
}

async fn demo(args: DemoArgs) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distls-demo-")
        .tempdir()
        .map_err(|e| {
            Error::Internal(Message::from(format!(
                "cannot create a directory for the demo cluster: {e}"
            )))
        })?;
    println!(
        "building a {}-node MongooseIM-layout cluster in {} (own epmd, fresh certificates)…",
        args.nodes,
        dir.path().display()
    );
    let spec = rehearsal::ClusterSpec::new(dir.path(), usize::from(args.nodes));
    let mut cluster =
        tokio::task::spawn_blocking(move || rehearsal::RehearsalCluster::create(&spec))
            .await
            .map_err(|e| Error::Internal(Message::from(e.to_string())))?
            .map_err(|e| {
                Error::Internal(Message::from(format!(
                    "the demo cluster did not come up: {e}"
                )))
            })?;
    for (key, value) in cluster.env() {
        // SAFETY: set before any thread reads the environment for this key; the probe and the
        // ctl scripts started below inherit it (they must use the demo's private epmd).
        unsafe { std::env::set_var(key, value) };
    }
    println!("plan: {}\n", cluster.plan_path().display());
    println!(
        "{}",
        std::fs::read_to_string(cluster.plan_path()).unwrap_or_default()
    );
    let result = async {
        let plan_args = || PlanArgs {
            plan: cluster.plan_path(),
            state_dir: None,
        };
        let mode = if args.mode.classic { " --classic" } else { "" };
        println!(
            "$ distls migrate{mode} --dry-run {}",
            cluster.plan_path().display()
        );
        migrate(demo_migrate_args(plan_args(), args.mode, true)).await?;
        println!("$ distls migrate{mode} {}", cluster.plan_path().display());
        migrate(demo_migrate_args(plan_args(), args.mode, false)).await?;
        println!("\n$ distls status {}", cluster.plan_path().display());
        status(StatusArgs {
            plan: plan_args(),
            json: false,
        })
        .await
    }
    .await;
    cluster.shutdown();
    if args.keep {
        let kept = dir.keep();
        println!("kept {} (nodes are stopped)", kept.display());
    }
    result
}
