//! The engine on an in-memory cluster (tests/engine/fake.rs): every roll kind, killed at every
//! journal write and resumed, in-process and in seconds. The real-cluster walks
//! (tests/integration/resume.rs, zero_split.rs) prove the same against real Erlang nodes; these
//! prove it for every crash point of every roll kind on every change.

mod fake;
#[path = "../json_schema.rs"]
mod json_schema;

use distls::cluster::Cluster;
use distls::failpoint::{Crash, walk_in_process};
use distls::journal::{Journal, JournalStore, Phase};
use distls::json_report::JsonReporter;
use distls::plan::{Batch, OnFailure, Plan};
use distls::rollout::{Canary, Options, Rollout};
use distls::stage::{RollPath, RollState, SEALED_SIGNATURE, Stage};
use distls::target::{NodeTarget, read_node};
use distls::transport::Transport;
use distls::zero_split::{self, Intent, ZeroSplitNode};
use fake::{Event, FakeCluster};
use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};
use std::time::Instant;

const NODES: usize = 3;
const VM_ARGS: &str = "-sname {sname}@localhost\n-setcookie SECRET\n";
/// MongooseIM's vm.dist.args: the TLS block, commented out.
const DIST_ARGS: &str = "## TLS distribution
#-proto_dist inet_tls
#-ssl_dist_opt server_certfile /a.pem client_certfile /a.pem
#  server_keyfile /k.pem client_keyfile /k.pem
#  server_cacertfile /c.pem client_cacertfile /c.pem
#  client_verify verify_peer server_verify verify_peer
";

/// A plan of three MongooseIM-layout nodes in a temp directory; their files are read from disk
/// once, then live in the fake cluster.
struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    plan: Plan,
    targets: Vec<NodeTarget>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("ssl")).unwrap();
    for file in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(root.join("ssl").join(file), "").unwrap();
    }
    for n in 1..=NODES {
        let etc = root.join(format!("n{n}/etc"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("vm.args"),
            VM_ARGS.replace("{sname}", &format!("n{n}")),
        )
        .unwrap();
        std::fs::write(etc.join("vm.dist.args"), DIST_ARGS).unwrap();
    }
    let plan_path = root.join("plan.yaml");
    let nodes: String = (1..=NODES)
        .map(|n| format!("  - name: n{n}@localhost\n"))
        .collect();
    std::fs::write(
        &plan_path,
        format!(
            "version: 1
cluster: fake
tls:
  certfile: {root}/ssl/cert.pem
  keyfile: {root}/ssl/key.pem
  cacertfile: {root}/ssl/ca.pem
defaults:
  vm_dist_args: {root}/{{sname}}/etc/vm.dist.args
  vm_args: {root}/{{sname}}/etc/vm.args
  commands:
    start: start {{sname}}
    stop: stop {{sname}}
    ping: ping {{sname}}
    ready: ready {{sname}}
  timeouts:
    start: 100ms
nodes:
{nodes}",
            root = root.display()
        ),
    )
    .unwrap();
    let plan = Plan::load(&plan_path).unwrap();
    let transport = Transport::local(Vec::new(), None);
    let mut targets = Vec::new();
    for spec in &plan.nodes {
        targets.push(read_node(spec, &transport).await.unwrap());
    }
    let state = root.join("state");
    distls::journal::create_private_dir(&state).unwrap();
    Fixture {
        _dir: dir,
        state,
        plan,
        targets,
    }
}

/// Polls a future, turning a panic inside it into an `Err` (a [`Crash`] is distls dying at a
/// failpoint: nothing after it runs, what it did before stays done).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Run `once` until it finishes, killing it at every failpoint it passes that no earlier run
/// died at; each rerun resumes from the journal. The points it died at, in order.
async fn crash_walk<F, Fut>(once: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = distls::error::Result<()>>,
{
    let (points, outcome) = crash_walk_to_end(once).await;
    if let Err(e) = outcome {
        panic!(
            "the run after dying at {:?} failed: {}",
            points.last(),
            e.report()
        );
    }
    points
}

/// [`crash_walk`] of a run that may fail: the points, and how the last run ended.
async fn crash_walk_to_end<F, Fut>(once: F) -> (Vec<String>, distls::error::Result<()>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = distls::error::Result<()>>,
{
    crash_walk_until(once, None).await
}

/// [`crash_walk_to_end`], or only until the run that dies at `stop_at` (the cluster and the
/// journal are then as a kill at that point leaves them).
async fn crash_walk_until<F, Fut>(
    mut once: F,
    stop_at: Option<&str>,
) -> (Vec<String>, distls::error::Result<()>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = distls::error::Result<()>>,
{
    quiet_crashes();
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    loop {
        walk_in_process(Some(seen.clone()));
        let outcome = CatchUnwind(Box::pin(once())).await;
        walk_in_process(None);
        match outcome {
            Ok(result) => return (order, result),
            Err(payload) => match payload.downcast::<Crash>() {
                Ok(crash) => {
                    assert!(seen.insert(crash.0.clone()), "died twice at {}", crash.0);
                    order.push(crash.0);
                    if order.last().map(String::as_str) == stop_at {
                        return (order, Ok(()));
                    }
                }
                Err(other) => std::panic::resume_unwind(other),
            },
        }
        assert!(order.len() < 1000, "the walk does not end: {order:?}");
    }
}

/// A crash is expected: the default panic message for each would bury the test's output.
fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Crash>().is_none() {
                default(info);
            }
        }));
    });
}

fn cluster_of(fake: &Arc<FakeCluster>) -> Cluster {
    Cluster {
        hosts: fake.hosts(),
        observer: fake.clone(),
    }
}

fn load(fx: &Fixture) -> (JournalStore, Option<Journal>) {
    let store = JournalStore::new(&fx.state, &fx.plan.cluster);
    let journal = store.load().unwrap();
    (store, journal)
}

/// One `distls migrate` (classic roll), resuming the journal if there is one.
async fn migrate_classic(fx: &Fixture, fake: &Arc<FakeCluster>) -> distls::error::Result<()> {
    run_classic(fx, fake, Intent::Migrate).await
}

/// One `distls rollback` of a classic run.
async fn rollback_classic(fx: &Fixture, fake: &Arc<FakeCluster>) -> distls::error::Result<()> {
    run_classic(fx, fake, Intent::Rollback).await
}

/// As `distls migrate` and `distls rollback` do: a rollback pauses on a failure.
fn options_for(intent: Intent) -> Options {
    Options::on_failure(match intent {
        Intent::Migrate => OnFailure::Rollback,
        Intent::Rollback => OnFailure::Pause,
    })
}

async fn run_classic(
    fx: &Fixture,
    fake: &Arc<FakeCluster>,
    intent: Intent,
) -> distls::error::Result<()> {
    run_classic_with(fx, fake, intent, options_for(intent)).await
}

async fn run_classic_with(
    fx: &Fixture,
    fake: &Arc<FakeCluster>,
    intent: Intent,
    options: Options,
) -> distls::error::Result<()> {
    let (store, journal) = load(fx);
    let journal = journal.unwrap_or_else(|| Rollout::new_journal(&fx.plan, &fx.targets));
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut rollout = Rollout::new(
        &fx.plan,
        fx.targets.clone(),
        store,
        journal,
        options,
        interrupted,
    )?
    .on_cluster(cluster_of(fake));
    let (_, outcome) = match intent {
        Intent::Migrate => rollout.migrate().await,
        Intent::Rollback => rollout.rollback().await,
    };
    outcome
}

/// One zero-split `distls migrate` or `rollback`, resuming the journal; a new run takes `path`.
async fn run_zero_split(
    fx: &Fixture,
    nodes: &[ZeroSplitNode],
    fake: &Arc<FakeCluster>,
    path: RollPath,
    intent: Intent,
) -> distls::error::Result<()> {
    run_zero_split_with(fx, nodes, fake, path, intent, options_for(intent)).await
}

async fn run_zero_split_with(
    fx: &Fixture,
    nodes: &[ZeroSplitNode],
    fake: &Arc<FakeCluster>,
    path: RollPath,
    intent: Intent,
    options: Options,
) -> distls::error::Result<()> {
    let (store, journal) = load(fx);
    let journal = journal.unwrap_or_else(|| {
        let mut journal = Rollout::new_journal(&fx.plan, &fx.targets);
        journal.zero_split = Some(RollState::first(path));
        journal
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    let (_, outcome) = zero_split::run(
        &fx.plan,
        nodes,
        cluster_of(fake),
        store,
        journal,
        options,
        interrupted,
        intent,
    )
    .await;
    outcome
}

/// The most nodes down at once over the events (every node ran at the start).
fn most_down_at_once(events: &[Event]) -> usize {
    let (mut down, mut most) = (0usize, 0usize);
    for event in events {
        match event {
            Event::Stopped { .. } => down += 1,
            Event::Started { .. } => down -= 1,
        }
        most = most.max(down);
    }
    most
}

fn assert_every_node(
    fx: &Fixture,
    fake: &FakeCluster,
    runs: &str,
    file: impl Fn(&NodeTarget) -> String,
) {
    for (index, target) in fx.targets.iter().enumerate() {
        assert_eq!(fake.runs(index).as_deref(), Some(runs), "{}", target.name());
        assert_eq!(
            fake.file(&target.dist_args),
            Some(file(target).into_bytes()),
            "{}'s flags file",
            target.name()
        );
    }
}

/// Kill at every journal write of a classic 3-node roll, resume; then the same for its rollback.
#[tokio::test]
async fn a_classic_roll_and_its_rollback_survive_a_kill_at_every_journal_write() {
    let started = Instant::now();
    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    let before = fake.paths();

    let points = crash_walk(|| migrate_classic(&fx, &fake)).await;
    // Each node: stopping, stopped, editing, edited, starting, started, rejoined, verified, each
    // before and after its write (a resumed run goes on past a point it finds done).
    assert!(points.len() >= NODES * 12, "walked only {points:?}");
    assert!(points.iter().any(|p| p == "n2@localhost:edited:before"));
    assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());
    for target in &fx.targets {
        assert_eq!(
            fake.file(&target.backup),
            Some(target.original.clone().into_bytes()),
            "the backup holds the original"
        );
    }
    assert_eq!(most_down_at_once(&fake.events()), 1, "one node at a time");
    assert!(
        !fake.splits().is_empty(),
        "a classic roll splits the cluster, the fake sees it"
    );
    let restarts = fake.events().len() / 2;

    let back = crash_walk(|| rollback_classic(&fx, &fake)).await;
    assert!(back.len() >= NODES * 8, "walked only {back:?}");
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
    assert_eq!(most_down_at_once(&fake.events()), 1, "one node at a time");
    assert!(fake.events().len() / 2 > restarts);
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::RolledBack);
    let after = fake.paths();
    let extra: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(
        extra
            .iter()
            .all(|p| fx.targets.iter().any(|t| **p == t.backup)),
        "only the backups are left beside the original files: {extra:?}"
    );
    eprintln!(
        "classic: {} + {} crash points in {:.1}s",
        points.len(),
        back.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The fixture's nodes as a zero-split run reads them (its texts at every stage).
async fn zero_split_nodes(fx: &Fixture) -> Vec<ZeroSplitNode> {
    let transports = vec![Transport::local(Vec::new(), None); NODES];
    zero_split::prepare(&fx.plan, &transports, None)
        .await
        .unwrap()
}

/// What a node boots from each of its stage texts.
fn boots_of(nodes: &[ZeroSplitNode]) -> Vec<(String, String)> {
    nodes
        .iter()
        .flat_map(|n| {
            Stage::ALL.into_iter().map(|stage| {
                (
                    n.texts.text(stage).to_string(),
                    stage.signature().to_string(),
                )
            })
        })
        .collect()
}

async fn zero_split_walk(path: RollPath) {
    let started = Instant::now();
    let fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    let before = fake.paths();
    let pids: Vec<_> = (0..NODES).map(|n| fake.os_pid(n)).collect();

    let points = crash_walk(|| run_zero_split(&fx, &nodes, &fake, path, Intent::Migrate)).await;
    assert!(points.len() >= NODES * 12, "walked only {points:?}");
    // The one-restart path seals the module (TLS only) instead of restarting into stock TLS.
    let runs = match path {
        RollPath::OneRestart => SEALED_SIGNATURE,
        RollPath::ThreeRolls => "inet_tls",
    };
    assert_every_node(&fx, &fake, runs, |t| t.tls.text.clone());
    assert_eq!(fake.splits(), Vec::<String>::new(), "one mesh throughout");
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::Completed);
    if path == RollPath::OneRestart {
        let pids_now: Vec<_> = (0..NODES).map(|n| fake.os_pid(n)).collect();
        assert!(
            pids.iter().zip(&pids_now).all(|(a, b)| a != b),
            "every node restarted"
        );
    }

    let back = crash_walk(|| run_zero_split(&fx, &nodes, &fake, path, Intent::Rollback)).await;
    assert!(back.len() >= NODES * 8, "walked only {back:?}");
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
    assert_eq!(fake.splits(), Vec::<String>::new(), "one mesh throughout");
    let after = fake.paths();
    let extra: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(
        extra
            .iter()
            .all(|p| fx.targets.iter().any(|t| **p == t.backup)),
        "only the backups are left, no module and no optfile: {extra:?}"
    );
    eprintln!(
        "zero-split {path:?}: {} + {} crash points in {:.1}s",
        points.len(),
        back.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The one-restart path (plain → H, then the seal H → TLS) and its rollback.
#[tokio::test]
async fn a_one_restart_zero_split_run_and_its_rollback_survive_a_kill_at_every_journal_write() {
    zero_split_walk(RollPath::OneRestart).await;
}

/// The three-roll path (plain → A → B → C) of runs begun before the one-restart path.
#[tokio::test]
async fn a_three_roll_zero_split_run_and_its_rollback_survive_a_kill_at_every_journal_write() {
    zero_split_walk(RollPath::ThreeRolls).await;
}

/// The third node cannot boot TLS: the roll turns back on its own (`on_failure: rollback`), and
/// a kill at any journal write of the way there or back still ends with every node on plain TCP
/// and its original file, and the run reported failed.
#[tokio::test]
async fn a_classic_roll_that_fails_rolls_back_through_a_kill_at_every_journal_write() {
    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    fake.refuse(2, "inet_tls");
    let (points, outcome) = crash_walk_to_end(|| migrate_classic(&fx, &fake)).await;
    let error = outcome.expect_err("the run fails").report();
    assert!(error.contains("n3@localhost"), "{error}");
    assert!(
        points.iter().any(|p| p.starts_with("n2@localhost:revert")),
        "the walk went through the rollback: {points:?}"
    );
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::RolledBack);
}

/// A node cannot boot the hybrid module: the zero-split roll goes back to plain, one mesh all
/// the way, through a kill at every journal write.
#[tokio::test]
async fn a_zero_split_run_that_fails_goes_back_to_plain_through_a_kill_at_every_journal_write() {
    let fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    fake.refuse(2, Stage::Hybrid.signature());
    let path = RollPath::OneRestart;
    let (points, outcome) =
        crash_walk_to_end(|| run_zero_split(&fx, &nodes, &fake, path, Intent::Migrate)).await;
    let error = outcome.expect_err("the run fails").report();
    assert!(error.contains("never split"), "{error}");
    assert!(points.len() >= NODES * 8, "walked only {points:?}");
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
    assert_eq!(fake.splits(), Vec::<String>::new(), "one mesh throughout");
}

/// Journals written by distls before the engine redesign (checked in under
/// tests/engine/journals/, the run's temp directory as `{root}` and the plan's hash as
/// `{plan_sha256}`), each at a kill point: the new engine resumes each to the end.
#[tokio::test]
async fn journals_written_before_the_redesign_are_resumed() {
    for (file, point) in JOURNAL_FIXTURES {
        let fx = fixture().await;
        let nodes = match file.starts_with("classic") {
            true => None,
            false => Some(zero_split_nodes(&fx).await),
        };
        let fake = match &nodes {
            None => FakeCluster::new(&fx.targets, classic_boots(&fx)),
            Some(nodes) => FakeCluster::new(&fx.targets, boots_of(nodes)),
        };
        let rollback = file.contains("rollback");
        let run = |intent: Intent| {
            let (fx, fake, nodes) = (&fx, &fake, nodes.as_deref());
            async move {
                match (nodes, intent) {
                    (None, Intent::Rollback) => rollback_classic(fx, fake).await,
                    (None, Intent::Migrate) => migrate_classic(fx, fake).await,
                    (Some(nodes), intent) => {
                        run_zero_split(fx, nodes, fake, RollPath::OneRestart, intent).await
                    }
                }
            }
        };
        let intent = if rollback {
            // The run to roll back, finished first.
            run(Intent::Migrate).await.unwrap();
            Intent::Rollback
        } else {
            Intent::Migrate
        };
        // The cluster as a kill at that point left it; the journal as the old distls wrote it.
        let (points, _) = crash_walk_until(|| run(intent), Some(point)).await;
        assert_eq!(
            points.last().map(String::as_str),
            Some(*point),
            "{file}: {points:?}"
        );
        let journal_path = fx.state.join("fake.journal.json");
        let root = fx.state.parent().unwrap().display().to_string();
        if std::env::var_os("DISTLS_WRITE_JOURNAL_FIXTURES").is_some() {
            let written = std::fs::read_to_string(&journal_path).unwrap();
            let templated = written
                .replace(&root, "{root}")
                .replace(&fx.plan.sha256, "{plan_sha256}");
            std::fs::write(fixture_path(file), templated).unwrap();
            continue;
        }
        let fixture = std::fs::read_to_string(fixture_path(file))
            .unwrap()
            .replace("{root}", &root)
            .replace("{plan_sha256}", &fx.plan.sha256);
        std::fs::write(&journal_path, fixture).unwrap();
        run(intent)
            .await
            .unwrap_or_else(|e| panic!("{file}: {}", e.report()));
        match (nodes.is_some(), rollback) {
            (_, true) => assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone()),
            (false, false) => assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone()),
            (true, false) => {
                assert_every_node(&fx, &fake, SEALED_SIGNATURE, |t| t.tls.text.clone())
            }
        }
    }
}

/// (fixture file, the kill point it was written at).
const JOURNAL_FIXTURES: &[(&str, &str)] = &[
    ("classic-migrate.json", "n2@localhost:edited:before"),
    ("classic-rollback.json", "n2@localhost:revert-restoring"),
    ("one-restart-migrate.json", "h:n2@localhost:started:before"),
    ("one-restart-seal.json", "c:n2@localhost:sealing"),
    (
        "one-restart-rollback.json",
        "plain:n2@localhost:edited:before",
    ),
];

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/engine/journals")
        .join(file)
}

fn classic_boots(fx: &Fixture) -> Vec<(String, String)> {
    fx.targets
        .iter()
        .flat_map(|t| {
            [
                (t.original.clone(), "inet_tcp".to_string()),
                (t.tls.text.clone(), "inet_tls".to_string()),
            ]
        })
        .collect()
}

/// `--pause-after 1`, classic: the canary node on TLS, the others untouched, the journal
/// `paused`; the rerun goes on to the end.
#[tokio::test]
async fn a_classic_canary_pauses_after_its_nodes_and_the_rerun_goes_on() {
    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    let pids: Vec<_> = (0..NODES).map(|n| fake.os_pid(n)).collect();
    let canary = Options {
        pause_after: Some(Canary::after(1)),
        ..options_for(Intent::Migrate)
    };
    run_classic_with(&fx, &fake, Intent::Migrate, canary)
        .await
        .unwrap();
    let (_, journal) = load(&fx);
    let journal = journal.unwrap();
    assert_eq!(journal.phase, Phase::Paused);
    assert!(
        journal
            .events
            .iter()
            .any(|e| e.what.contains("--pause-after 1"))
    );
    assert_eq!(fake.runs(0).as_deref(), Some("inet_tls"));
    for (node, pid) in pids.iter().enumerate().skip(1) {
        assert_eq!(fake.runs(node).as_deref(), Some("inet_tcp"));
        assert_eq!(fake.os_pid(node), *pid, "node {node} was not restarted");
        let target = &fx.targets[node];
        assert_eq!(
            fake.file(&target.dist_args),
            Some(target.original.clone().into_bytes())
        );
    }
    migrate_classic(&fx, &fake).await.unwrap();
    assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::Completed);
}

/// `--pause-after 2`, zero-split: two nodes on the hybrid module, one mesh, the seal not begun;
/// the rerun finishes the roll and the seal.
#[tokio::test]
async fn a_zero_split_canary_pauses_in_one_mesh_and_the_rerun_goes_on() {
    let fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    let canary = Options {
        pause_after: Some(Canary::after(2)),
        ..options_for(Intent::Migrate)
    };
    let path = RollPath::OneRestart;
    run_zero_split_with(&fx, &nodes, &fake, path, Intent::Migrate, canary)
        .await
        .unwrap();
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::Paused);
    assert_eq!(fake.runs(0).as_deref(), Some(Stage::Hybrid.signature()));
    assert_eq!(fake.runs(1).as_deref(), Some(Stage::Hybrid.signature()));
    assert_eq!(fake.runs(2).as_deref(), Some("inet_tcp"));
    run_zero_split(&fx, &nodes, &fake, path, Intent::Migrate)
        .await
        .unwrap();
    assert_every_node(&fx, &fake, SEALED_SIGNATURE, |t| t.tls.text.clone());
    assert_eq!(fake.splits(), Vec::<String>::new(), "one mesh throughout");
}

/// A `Write` that keeps what it is given, for the JSON stream.
#[derive(Clone, Default)]
struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Every event of a canary pause, a failing roll that rolls back, and a zero-split run with its
/// rollback, as `--json` streams them, fits docs/json.md.
#[tokio::test]
async fn every_event_the_engine_emits_fits_the_documented_json_schema() {
    let sink = Sink::default();
    let json = Arc::new(JsonReporter::to(Box::new(sink.clone())));
    let with_json = |intent: Intent| Options {
        json: Some(json.clone()),
        ..options_for(intent)
    };

    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    let canary = Options {
        pause_after: Some(Canary::after(1)),
        ..with_json(Intent::Migrate)
    };
    run_classic_with(&fx, &fake, Intent::Migrate, canary)
        .await
        .unwrap();
    fake.refuse(2, "inet_tls");
    run_classic_with(&fx, &fake, Intent::Migrate, with_json(Intent::Migrate))
        .await
        .expect_err("n3 cannot boot TLS");

    let fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    let path = RollPath::OneRestart;
    for intent in [Intent::Migrate, Intent::Rollback] {
        run_zero_split_with(&fx, &nodes, &fake, path, intent, with_json(intent))
            .await
            .unwrap();
    }

    let text = sink.text();
    let events = json_schema::check_stream(&text);
    for event in ["node", "node_done", "note", "finished"] {
        assert!(events.iter().any(|e| e == event), "no `{event}` in {text}");
    }
    for kind in [
        r#""kind":"paused_after_canary""#,
        r#""kind":"step_failed""#,
        r#""kind":"rolling_back""#,
        r#""kind":"roll_begins""#,
        r#""kind":"sealing""#,
        r#""kind":"unsealing""#,
        r#""kind":"awaiting_full_mesh""#,
        r#""kind":"restoring_file""#,
    ] {
        assert!(text.contains(kind), "no {kind} in the stream");
    }
}

/// `commands.before_stop` passes on the first node and never on the second: the run stops
/// before the second node is stopped (`on_failure: pause`), the nodes after it untouched.
/// `commands.after_start` runs after each start.
#[tokio::test]
async fn a_before_stop_gate_that_never_passes_stops_the_run_before_that_node() {
    let mut fx = fixture().await;
    for (n, target) in fx.targets.iter_mut().enumerate() {
        let commands = &mut target.spec.commands;
        commands.before_stop = Some(format!("drain n{}", n + 1));
        commands.after_start = Some(format!("revive n{}", n + 1));
        target.spec.timeouts.before_stop = std::time::Duration::from_millis(300);
    }
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    // A command the fake host does not answer with success.
    fx.targets[1].spec.commands.before_stop = Some("a gate that never passes".into());
    let pids: Vec<_> = (0..NODES).map(|n| fake.os_pid(n)).collect();
    let pause = Options::on_failure(OnFailure::Pause);
    let error = run_classic_with(&fx, &fake, Intent::Migrate, pause)
        .await
        .expect_err("the gate never passes")
        .report();
    assert!(
        error.contains("n2@localhost: its commands.before_stop did not pass"),
        "{error}"
    );
    assert_eq!(fake.runs(0).as_deref(), Some("inet_tls"));
    assert_eq!(fake.os_pid(1), pids[1], "n2 was never stopped");
    assert_eq!(fake.os_pid(2), pids[2], "n3 was never stopped");
    let (_, journal) = load(&fx);
    let journal = journal.unwrap();
    assert_eq!(journal.phase, Phase::Paused);
    let passed = |node: &str, hook: &str| {
        journal.events.iter().any(|e| {
            e.node.as_deref() == Some(node) && e.what.starts_with(&format!("{hook} passed"))
        })
    };
    assert!(passed("n1@localhost", "commands.before_stop"));
    assert!(passed("n1@localhost", "commands.after_start"));
    assert!(!passed("n2@localhost", "commands.before_stop"));
}

/// The gates are for the way to TLS: a zero-split rollback (its roll back to plain restarts every
/// node) finishes even though a `before_stop` gate can no longer pass.
#[tokio::test]
async fn a_zero_split_rollback_goes_without_the_gates() {
    let mut fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    let path = RollPath::OneRestart;
    run_zero_split(&fx, &nodes, &fake, path, Intent::Migrate)
        .await
        .unwrap();
    for target in &mut fx.targets {
        target.spec.commands.before_stop = Some("a gate that never passes".into());
        target.spec.commands.after_start = Some("another one".into());
        target.spec.timeouts.before_stop = std::time::Duration::from_millis(300);
    }
    let nodes: Vec<ZeroSplitNode> = nodes
        .into_iter()
        .zip(&fx.targets)
        .map(|(node, target)| ZeroSplitNode {
            target: target.clone(),
            ..node
        })
        .collect();
    run_zero_split(&fx, &nodes, &fake, path, Intent::Rollback)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
    let (_, journal) = load(&fx);
    let journal = journal.unwrap();
    assert!(
        !journal
            .events
            .iter()
            .any(|e| e.what.contains("before_stop"))
    );
}

/// `batch: k` for a run toward TLS.
fn batched(intent: Intent, k: usize) -> Options {
    Options {
        batch: Batch::Nodes(k),
        ..options_for(intent)
    }
}

/// `batch: 2` of a classic roll restarts two nodes at once, never more; a kill at every journal
/// write (with two nodes under way) resumes each node where it was; the rollback goes one at a time.
#[tokio::test]
async fn a_classic_batch_restarts_nodes_together_and_survives_a_kill_at_every_journal_write() {
    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    run_classic_with(&fx, &fake, Intent::Migrate, batched(Intent::Migrate, 2))
        .await
        .unwrap();
    assert_eq!(most_down_at_once(&fake.events()), 2, "two nodes at once");
    assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());

    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    let points =
        crash_walk(|| run_classic_with(&fx, &fake, Intent::Migrate, batched(Intent::Migrate, 2)))
            .await;
    assert!(points.len() >= NODES * 12, "walked only {points:?}");
    let at = |p: &str| points.iter().position(|q| q == p).expect(p);
    assert!(
        at("n2@localhost:stopping") < at("n1@localhost:stopped:before"),
        "n2 is stopped together with n1: {points:?}"
    );
    assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());
    assert!(most_down_at_once(&fake.events()) <= 2);
    for target in &fx.targets {
        assert_eq!(
            fake.file(&target.backup),
            Some(target.original.clone().into_bytes())
        );
    }
    let back = crash_walk(|| rollback_classic(&fx, &fake)).await;
    assert!(back.len() >= NODES * 8, "walked only {back:?}");
    assert_every_node(&fx, &fake, "inet_tcp", |t| t.original.clone());
}

/// A zero-split batch keeps one mesh: the nodes it starts together learn of each other.
#[tokio::test]
async fn a_zero_split_batch_keeps_one_mesh_through_a_kill_at_every_journal_write() {
    let fx = fixture().await;
    let nodes = zero_split_nodes(&fx).await;
    let fake = FakeCluster::new(&fx.targets, boots_of(&nodes));
    let path = RollPath::OneRestart;
    let run = || {
        run_zero_split_with(
            &fx,
            &nodes,
            &fake,
            path,
            Intent::Migrate,
            batched(Intent::Migrate, 2),
        )
    };
    let points = crash_walk(run).await;
    assert!(points.len() >= NODES * 12, "walked only {points:?}");
    assert_every_node(&fx, &fake, SEALED_SIGNATURE, |t| t.tls.text.clone());
    assert_eq!(fake.splits(), Vec::<String>::new(), "one mesh throughout");
    assert_eq!(most_down_at_once(&fake.events()), 2, "two nodes at once");
    let (_, journal) = load(&fx);
    assert_eq!(journal.unwrap().phase, Phase::Completed);
}

/// Quorum first: a batch's second node is asked its gate with the first one stopped. A gate that
/// needs 2 of the 3 nodes running admits two at once; one that needs all 3 ends every batch
/// after its first node, and the node it refused goes first in the next batch.
#[tokio::test]
async fn before_stop_gates_admit_a_batch_one_node_at_a_time() {
    for (quorum, most_down) in [(2, 2), (3, 1)] {
        let mut fx = fixture().await;
        for target in &mut fx.targets {
            target.spec.commands.before_stop = Some(format!("quorum {quorum}"));
            target.spec.timeouts.before_stop = std::time::Duration::from_millis(300);
        }
        let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
        run_classic_with(&fx, &fake, Intent::Migrate, batched(Intent::Migrate, 2))
            .await
            .unwrap();
        assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());
        assert_eq!(
            most_down_at_once(&fake.events()),
            most_down,
            "quorum {quorum}"
        );
        let (_, journal) = load(&fx);
        let journal = journal.unwrap();
        let said = |node: &str, what: &str| {
            journal
                .events
                .iter()
                .any(|e| e.node.as_deref() == Some(node) && e.what.starts_with(what))
        };
        let refused = "commands.before_stop did not pass with the batch's earlier nodes stopped";
        assert_eq!(
            said("n2@localhost", refused),
            quorum == 3,
            "quorum {quorum}"
        );
        assert!(said("n2@localhost", "commands.before_stop passed"));
        assert!(said("n3@localhost", "commands.before_stop passed"));
    }
}

/// A journal whose nodes were all reverted and then paused (a rollback rerun under the pause
/// policy): `migrate` takes them one at a time again, not as one batch (their rollback steps do
/// not make them "under way").
#[tokio::test]
async fn reverted_nodes_of_a_paused_journal_migrate_one_at_a_time() {
    let fx = fixture().await;
    let fake = FakeCluster::new(&fx.targets, classic_boots(&fx));
    migrate_classic(&fx, &fake).await.unwrap();
    rollback_classic(&fx, &fake).await.unwrap();
    let (store, _) = load(&fx);
    let path = store.journal_path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""phase": "rolled_back""#), "{text}");
    std::fs::write(
        &path,
        text.replace(r#""phase": "rolled_back""#, r#""phase": "paused""#),
    )
    .unwrap();
    let before = fake.events().len();
    migrate_classic(&fx, &fake).await.unwrap();
    assert_eq!(
        most_down_at_once(&fake.events()[before..]),
        1,
        "one node at a time"
    );
    assert_every_node(&fx, &fake, "inet_tls", |t| t.tls.text.clone());
}
