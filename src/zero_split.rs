//! Zero-split mode: a transitional distribution module, so that every running node talks to every
//! other running node at every moment of the switch.
//!
//! `distls_hybrid_dist` (shipped as source, compiled on each host with that host's own OTP,
//! installed next to the flags file) accepts plain-TCP and TLS connections on one port. Two paths:
//! - one restart per node (new runs): plain → H (the module, dialing TLS to the nodes that run it
//!   and plain to the others) by one roll of restarts, then the seal at run time, no restart:
//!   every node refuses plain and its flags file becomes the stock inet_tls text (H → TLS);
//! - three rolls (runs begun before, resumed as they were): plain → A (dial tcp) → B (dial tls)
//!   → C (stock inet_tls).
//!
//! Each roll is a roll of [`crate::rollout`]: journal, gates, rollback.

use crate::argsfile;
use crate::flavor::Flavor;
use crate::host::Host;
use crate::shell::shell_quote;
use crate::stage::{PROTO_DIST, RollPath, RollState, Stage};
use crate::transport::Transport;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The module's source; `-proto_dist distls_hybrid` loads `distls_hybrid_dist`.
pub const MODULE_SOURCE: &str = include_str!("zero_split/distls_hybrid_dist.erl");
pub const MODULE: &str = "distls_hybrid_dist";
/// The directory beside the flags file that holds the module while a node needs it.
pub const MODULE_DIR_NAME: &str = "distls-hybrid";
/// The OTP functions the module calls that not every OTP has (OTP 27 and later have no
/// `inet_tls_dist:gen_accept/2`): the one list that both the preflight (`mode.zero_split`, asked
/// through the host's probe VM) and [`install_module`] check.
/// Each need is met by any one of its functions: the stock TLS accept loop is
/// `inet_tls_dist:gen_accept/2` on OTP 25, `fam_accept/2` from OTP 27 on.
pub const MODULE_NEEDS: [&[(&str, &str, u8)]; 2] = [
    &[
        ("inet_tls_dist", "gen_accept", 2),
        ("inet_tls_dist", "fam_accept", 2),
    ],
    &[("gen_tcp", "unrecv", 2)],
];

/// [`MODULE_NEEDS`] as `module:function/arity`, alternatives joined by `|`.
pub fn module_needs() -> Vec<String> {
    MODULE_NEEDS
        .iter()
        .map(|any| {
            any.iter()
                .map(|(module, function, arity)| format!("{module}:{function}/{arity}"))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The flags-file text of one node at every stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageTexts {
    pub plain: String,
    pub hybrid_tcp: String,
    pub hybrid_tls: String,
    pub tls: String,
    /// One-restart path: the module, naming the nodes that run it when this one starts.
    pub hybrid: String,
}

impl StageTexts {
    pub fn text(&self, stage: Stage) -> &str {
        match stage {
            Stage::Plain => &self.plain,
            Stage::HybridTcp => &self.hybrid_tcp,
            Stage::HybridTls => &self.hybrid_tls,
            Stage::Tls => &self.tls,
            Stage::Hybrid => &self.hybrid,
        }
    }

    pub fn stage_of(&self, text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| self.text(*s) == text)
    }
}

pub fn module_dir(flags_file: &Path) -> PathBuf {
    flags_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(MODULE_DIR_NAME)
}

/// The module's argument naming the nodes that speak TLS when a node starts with it: the nodes
/// before it in the plan (they run the module by then, on the way to TLS; on the way back,
/// nodes go in reverse order) and the node itself (its own ctl dials it over TLS).
pub fn tls_peers_argument(peers: &[&str]) -> Result<String, String> {
    if let Some(bad) = peers.iter().find(|p| {
        p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c))
    }) {
        return Err(format!(
            "the node name {bad:?} has characters the hybrid module's argument cannot carry"
        ));
    }
    Ok(format!("tls_peers {}", peers.join(" ")))
}

/// The hybrid texts from the stock TLS text: its `-proto_dist inet_tls` becomes
/// `-proto_dist distls_hybrid`, followed on the same line by the code path and the module's
/// argument (`dial tcp|tls`, or `tls_peers` with `peers`). Everything else (the certificate
/// options the module's TLS side uses) stays as it is.
pub fn stage_texts(
    plain: &str,
    tls: &str,
    module_dir: &Path,
    peers: &[&str],
) -> Result<StageTexts, String> {
    let settings = argsfile::dist_settings(tls);
    let Some(proto) = settings.proto_dist.filter(|p| p.value == "inet_tls") else {
        return Err(
            "zero-split needs `-proto_dist inet_tls` in the TLS text (inet6_tls is not supported by the hybrid module)".into(),
        );
    };
    let dir = module_dir.display().to_string();
    if dir.is_empty()
        || dir
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "#\"'\\$`".contains(c))
    {
        return Err(format!(
            "the module directory {dir:?} contains characters an args file cannot carry unquoted"
        ));
    }
    let hybrid = |mode: &str| {
        let mut text = String::with_capacity(tls.len() + 80);
        text.push_str(&tls[..proto.span.start]);
        text.push_str(&format!("{PROTO_DIST} -pa {dir} -{PROTO_DIST} {mode}"));
        text.push_str(&tls[proto.span.end..]);
        text
    };
    Ok(StageTexts {
        plain: plain.to_owned(),
        hybrid_tcp: hybrid("dial tcp"),
        hybrid_tls: hybrid("dial tls"),
        tls: tls.to_owned(),
        hybrid: hybrid(&tls_peers_argument(peers)?),
    })
}

/// The stage texts of a flavor node (ejabberd, RabbitMQ, elixir): the hybrid stages add the hybrid flags
/// and `-ssl_dist_optfile` where the flavor's server reads its flags (for ejabberd that is also
/// where its ctl reads them; RabbitMQ's `CTL_ERL_ARGS` and an Elixir release's control commands stay plain until the TLS text). `tls` is
/// the flavor's default TLS text, the last stage.
pub fn flavor_stage_texts(
    flavor: Flavor,
    plain: &str,
    tls: &str,
    module_dir: &Path,
    optfile: &Path,
    peers: &[&str],
) -> Result<StageTexts, String> {
    let hybrid = |mode: &str| {
        match flavor {
            Flavor::Ejabberd => {
                crate::flavor::ejabberd::enable_hybrid(plain, module_dir, mode, optfile)
            }
            Flavor::RabbitMq => {
                crate::flavor::rabbitmq::enable_hybrid(plain, module_dir, mode, optfile)
            }
            Flavor::Elixir => {
                crate::flavor::elixir::enable_hybrid(plain, module_dir, mode, optfile)
            }
            Flavor::MongooseIm | Flavor::Relx => {
                return Err(format!("no flavor stage texts for {flavor}"));
            }
        }
        .map_err(|e| format!("{} (hint: {})", e.message, e.hint))
    };
    Ok(StageTexts {
        plain: plain.to_owned(),
        hybrid_tcp: hybrid("dial tcp")?,
        hybrid_tls: hybrid("dial tls")?,
        tls: tls.to_owned(),
        hybrid: hybrid(&tls_peers_argument(peers)?)?,
    })
}

/// Compiles the module with the node's own `erl` (the OTP the node runs), then writes its source
/// and beam into `distls-hybrid/` next to the flags file, owned like it. Compiling comes first,
/// in a private temp directory on the host, so an OTP that cannot run the module is refused
/// before anything is written beside the node's files. Idempotent: an installed module with the
/// same source is kept.
pub async fn install_module(
    transport: &dyn Host,
    erl: &str,
    flags_file: &Path,
) -> Result<(), String> {
    let dir = module_dir(flags_file);
    let source = dir.join(format!("{MODULE}.erl"));
    let beam = dir.join(format!("{MODULE}.beam"));
    let installed = transport.read_file(&source).await.ok();
    if installed.as_deref() == Some(MODULE_SOURCE.as_bytes())
        && matches!(transport.try_exists(&beam).await, Ok(true))
    {
        return Ok(());
    }
    let compiled = compiled_module(transport, erl).await?;
    transport
        .make_dir(&dir, 0o755)
        .await
        .map_err(|e| format!("cannot create the module directory: {e}"))?;
    for (path, bytes) in [(&source, MODULE_SOURCE.as_bytes()), (&beam, &compiled[..])] {
        transport
            .write_file_owned_like(path, bytes, 0o644, flags_file)
            .await
            .map_err(|e| format!("cannot install the hybrid module: {e}"))?;
    }
    Ok(())
}

/// One compile per host, `erl` and environment serves every node there: the source is fixed.
type CompileCell = Arc<tokio::sync::OnceCell<Vec<u8>>>;
static COMPILED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, CompileCell>>,
> = std::sync::LazyLock::new(Default::default);

/// The module's beam for this host and `erl`, compiled once per run (a failed compile is tried
/// again by the next caller).
async fn compiled_module(transport: &dyn Host, erl: &str) -> Result<Vec<u8>, String> {
    let key = format!("{}\0{erl}", transport.command_context());
    let cell = {
        let mut cells = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(key).or_default().clone()
    };
    cell.get_or_try_init(|| compile_module(transport, erl))
        .await
        .cloned()
}

/// Compiles the module on every node's host while the preflight runs (a compile is
/// read-only on the host: a temp directory that goes with it), so the first roll does not wait
/// for it. Its errors are not reported here: the install before the first roll says them.
pub async fn precompile(plan: &Plan, transports: &[Transport]) {
    let mut seen = std::collections::HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        if !seen.insert(format!("{}\0{}", transport.command_context(), spec.erl)) {
            continue;
        }
        let (transport, erl) = (transport.clone(), spec.erl.clone());
        tasks.spawn(async move {
            if let Err(why) = compiled_module(&transport, &erl).await {
                tracing::debug!(site = %transport.describe(), why, "precompile failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The module's beam, compiled on the node's host by its `erl` in a fresh temp directory (the
/// source goes in on stdin, the beam comes back on stdout as raw bytes; the directory, and any
/// crash dump, go with the command).
async fn compile_module(transport: &dyn Host, erl: &str) -> Result<Vec<u8>, String> {
    // One Erlang term, no shell word splitting inside. The module leans on two OTP functions; the
    // preflight refuses an OTP without them before anything is written, and this second check,
    // before any node is stopped, keeps a node from booting a module it cannot run.
    let needs: Vec<String> = MODULE_NEEDS
        .iter()
        .map(|any| {
            let any: Vec<String> = any
                .iter()
                .map(|(module, function, arity)| format!("{{{module}, {function}, {arity}}}"))
                .collect();
            format!("[{}]", any.join(", "))
        })
        .collect();
    let eval = format!(
        "Needs = [{needs}], \
         Missing = [[io_lib:format(\"~s:~s/~b \", [M, F, A]) || {{M, F, A}} <- Any] || Any <- Needs, \
                    not lists:any(fun({{M, F, A}}) -> code:ensure_loaded(M) =:= {{module, M}} andalso erlang:function_exported(M, F, A) end, Any)], \
         case Missing of \
             [] -> ok; \
             _ -> io:format(standard_error, \"this OTP ~s lacks ~s(needed by the hybrid module)~n\", [erlang:system_info(otp_release), Missing]), halt(2) \
         end, \
         [Out] = init:get_plain_arguments(), \
         case compile:file(filename:join(Out, \"{MODULE}.erl\"), [{{outdir, Out}}, report_errors, report_warnings]) of {{ok, _}} -> halt(0); _ -> halt(1) end.",
        needs = needs.join(", "),
    );
    let script = format!(
        "t=$(mktemp -d) || exit 1; trap 'rm -rf \"$t\"' EXIT; \
         cat > \"$t\"/{MODULE}.erl || exit 1; \
         ERL_CRASH_DUMP=\"$t\"/erl_crash.dump ERL_CRASH_DUMP_BYTES=0 \
         {erl} -noshell -noinput -boot start_clean -eval {eval} -extra \"$t\" >&2 || exit $?; \
         cat \"$t\"/{MODULE}.beam",
        erl = shell_quote(erl),
        eval = shell_quote(&eval),
    );
    let beam = transport
        .run_for_bytes(&script, MODULE_SOURCE.as_bytes(), Duration::from_secs(60))
        .await
        .map_err(|e| format!("cannot compile the hybrid module: {e}"))?;
    if !beam.starts_with(b"FOR1") {
        return Err(format!(
            "cannot compile the hybrid module on {}: `{erl}` did not produce a beam file",
            transport.describe()
        ));
    }
    Ok(beam)
}

/// Removes what [`install_module`] wrote (once no flags file points at it).
pub async fn remove_module(transport: &dyn Host, flags_file: &Path) -> Result<(), String> {
    let dir = module_dir(flags_file);
    for ext in ["erl", "beam"] {
        transport
            .remove_file(&dir.join(format!("{MODULE}.{ext}")))
            .await
            .map_err(|e| format!("cannot remove the hybrid module: {e}"))?;
    }
    transport
        .remove_dir_if_empty(&dir)
        .await
        .map_err(|e| format!("cannot remove the hybrid module: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &str = "## TLS\n-proto_dist inet_tls\n-ssl_dist_opt server_certfile /c.pem\n";

    #[test]
    fn hybrid_texts_replace_only_the_protocol() {
        let texts = stage_texts(
            "## plain\n",
            TLS,
            Path::new("/r/etc/distls-hybrid"),
            &["a@h", "b@h"],
        )
        .unwrap();
        assert_eq!(
            texts.hybrid,
            "## TLS\n-proto_dist distls_hybrid -pa /r/etc/distls-hybrid -distls_hybrid tls_peers a@h b@h\n-ssl_dist_opt server_certfile /c.pem\n"
        );
        assert_eq!(texts.stage_of(&texts.hybrid), Some(Stage::Hybrid));
        assert_eq!(
            texts.hybrid_tcp,
            "## TLS\n-proto_dist distls_hybrid -pa /r/etc/distls-hybrid -distls_hybrid dial tcp\n-ssl_dist_opt server_certfile /c.pem\n"
        );
        assert!(texts.hybrid_tls.contains("-distls_hybrid dial tls\n"));
        let settings = argsfile::dist_settings(&texts.hybrid_tls);
        assert_eq!(settings.proto_dist.unwrap().value, "distls_hybrid");
        assert!(settings.extra_proto_dist.is_empty());
        assert_eq!(texts.stage_of(&texts.hybrid_tls), Some(Stage::HybridTls));
        assert_eq!(texts.stage_of("other"), None);
    }

    #[test]
    fn flavor_texts_switch_the_rabbitmq_ctl_only_at_tls() {
        let plain = "NODENAME=rabbit1@vm\n";
        let optfile = Path::new("/r/distls-ssl_dist.conf");
        let tls = crate::flavor::rabbitmq::enable_tls(plain, optfile).unwrap();
        let dir = Path::new("/r/distls-hybrid");
        let texts =
            flavor_stage_texts(Flavor::RabbitMq, plain, &tls, dir, optfile, &["rabbit1@vm"])
                .unwrap();
        assert!(
            texts
                .hybrid
                .contains("-distls_hybrid tls_peers rabbit1@vm ")
        );
        for stage in [Stage::HybridTcp, Stage::HybridTls, Stage::Hybrid] {
            let text = texts.text(stage);
            assert!(text.contains(
                "SERVER_ADDITIONAL_ERL_ARGS=\"-pa /r/distls-hybrid -proto_dist distls_hybrid"
            ));
            assert!(text.contains("-ssl_dist_optfile /r/distls-ssl_dist.conf\""));
            assert!(
                !text.contains("CTL_ERL_ARGS"),
                "the ctl stays plain: {text}"
            );
            assert_eq!(texts.stage_of(text), Some(stage));
        }
        assert!(texts.hybrid_tls.contains("-distls_hybrid dial tls "));
        assert_eq!(texts.stage_of(&tls), Some(Stage::Tls));
        assert_eq!(texts.stage_of(plain), Some(Stage::Plain));

        let cfg = "ERL_OPTIONS=\"-env X 0\"\n";
        let ej_tls = crate::flavor::ejabberd::enable_tls(cfg, optfile).unwrap();
        let ej =
            flavor_stage_texts(Flavor::Ejabberd, cfg, &ej_tls, dir, optfile, &["e@vm"]).unwrap();
        assert!(ej.hybrid_tcp.starts_with("ERL_OPTIONS=\"-env X 0 -pa /r/distls-hybrid -proto_dist distls_hybrid -distls_hybrid dial tcp"));
        assert!(flavor_stage_texts(Flavor::Relx, cfg, &ej_tls, dir, optfile, &["e@vm"]).is_err());
    }

    #[test]
    fn only_inet_tls_and_plain_word_paths() {
        let six = "-proto_dist inet6_tls\n";
        assert!(stage_texts("", six, Path::new("/x"), &["a@h"]).is_err());
        assert!(stage_texts("", TLS, Path::new("/a b"), &["a@h"]).is_err());
        assert!(stage_texts("", TLS, Path::new("/x"), &["a b@h"]).is_err());
    }

    /// Installs, compiles (with the local OTP, as on a node's host), keeps an installed module,
    /// removes.
    #[tokio::test]
    async fn the_module_compiles_with_the_nodes_own_otp_and_goes_again() {
        let dir = tempfile::tempdir().unwrap();
        let flags = dir.path().join("vm.dist.args");
        std::fs::write(&flags, "## plain\n").unwrap();
        let transport = Transport::local(Vec::new(), None);
        install_module(&transport, "erl", &flags).await.unwrap();
        let beam = module_dir(&flags).join(format!("{MODULE}.beam"));
        let compiled = std::fs::metadata(&beam).unwrap().modified().unwrap();
        install_module(&transport, "erl", &flags).await.unwrap();
        let again = std::fs::metadata(&beam).unwrap().modified().unwrap();
        assert_eq!(
            compiled, again,
            "an installed module with the same source is kept"
        );
        remove_module(&transport, &flags).await.unwrap();
        assert!(!module_dir(&flags).exists());
        let err = install_module(&transport, "/nonexistent/erl", &flags)
            .await
            .unwrap_err();
        assert!(err.contains("cannot compile the hybrid module"), "{err}");
        assert!(
            !module_dir(&flags).exists(),
            "a refused install leaves nothing beside the flags file"
        );
        // Through the shell path (the Perl file agent, as over SSH) too.
        let shell = Transport::local(Vec::new(), Some("env".into()));
        install_module(&shell, "erl", &flags).await.unwrap();
        assert_eq!(
            std::fs::read(module_dir(&flags).join(format!("{MODULE}.erl"))).unwrap(),
            MODULE_SOURCE.as_bytes()
        );
        assert!(std::fs::read(&beam).unwrap().starts_with(b"FOR1"));
        remove_module(&shell, &flags).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the flags file is left"
        );
    }

    #[test]
    fn the_module_needs_are_named_for_the_preflight() {
        assert_eq!(
            module_needs(),
            [
                "inet_tls_dist:gen_accept/2|inet_tls_dist:fam_accept/2",
                "gen_tcp:unrecv/2"
            ]
        );
    }
}

// ---- the rolls ----------------------------------------------------------------------------------

use crate::cluster::Cluster;
use crate::error::{Error, Message, Result};
use crate::journal::{Journal, JournalStore, Phase};
use crate::plan::{OnFailure, Plan};
use crate::rollout::{NodeSummary, Options, Rollout};
use crate::target::{self, NodeTarget};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// One node: what distls read of it, and its flags file at every stage.
pub struct ZeroSplitNode {
    pub target: NodeTarget,
    pub texts: StageTexts,
}

/// Reads and checks every node for a zero-split run (read-only). Its flags file may be at any
/// stage: a resumed run finds hybrid texts.
pub async fn prepare(
    plan: &Plan,
    transports: &[Transport],
    journal: Option<&Journal>,
) -> Result<Vec<ZeroSplitNode>> {
    plan.check_local_files()?;
    let mut nodes: Vec<ZeroSplitNode> = Vec::with_capacity(plan.nodes.len());
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        if spec.flavor == Flavor::Relx {
            return Err(Error::InvalidInput(Message::new(format!("node {}: --zero-split supports the mongooseim, ejabberd and rabbitmq flavors; this node is relx, whose control commands (nodetool) do not get the node's -ssl_dist_optfile or a code path for the hybrid module", spec.name)).hint("use the classic roll for this cluster (distls migrate --classic; without --zero-split distls picks it for a relx plan), or see docs/zero-split.md")));
        }
        let target = target::read_node(spec, transport).await?;
        if spec.flavor == Flavor::MongooseIm
            && argsfile::dist_settings(&target.original)
                .proto_dist
                .is_some_and(|p| p.value == PROTO_DIST)
        {
            return Err(Error::NeedsOperator(Message::new(format!("node {}: {} runs the hybrid module but there is no backup of its original ({})", spec.name, target.dist_args.display(), target.backup.display())).hint("put the original vm.dist.args back, then rerun")));
        }
        // Its H text names the nodes before it and itself: they run the module when it starts.
        let peers: Vec<&str> = nodes
            .iter()
            .map(|n| n.target.name())
            .chain([target.name()])
            .collect();
        let texts = match &target.optfile {
            // Where install_module puts it: beside the real flags file.
            Some(optfile) => flavor_stage_texts(
                spec.flavor,
                &target.original,
                &target.tls.text,
                &module_dir(&target.dist_args),
                &optfile.path,
                &peers,
            ),
            None => stage_texts(
                &target.original,
                &target.tls.text,
                &module_dir(&target.dist_args),
                &peers,
            ),
        }
        .map_err(|why| {
            Error::InvalidInput(
                Message::new(format!(
                    "node {}: {}: {why}",
                    spec.name,
                    target.dist_args.display()
                ))
                .hint("see docs/zero-split.md"),
            )
        })?;
        if texts.stage_of(&target.current).is_none() {
            return Err(target::changed_outside(
                &target,
                "every text a zero-split run writes",
            ));
        }
        target::check_original_hash(&target, journal)?;
        nodes.push(ZeroSplitNode { target, texts });
    }
    let targets: Vec<NodeTarget> = nodes.iter().map(|n| n.target.clone()).collect();
    target::check_consistent_naming(&targets)?;
    Ok(nodes)
}

/// The nodes as one roll sees them: its `from` text is their original, its `to` text their
/// TLS text.
pub fn roll_targets(nodes: &[ZeroSplitNode], roll: RollState) -> Vec<NodeTarget> {
    nodes
        .iter()
        .map(|node| {
            let mut target = node.target.clone();
            target.original = node.texts.text(roll.from).to_owned();
            target.tls.text = node.texts.text(roll.to).to_owned();
            target.original_uses_optfile = roll.from != Stage::Plain;
            target.tls_uses_optfile = roll.to != Stage::Plain;
            target
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// `distls migrate` (the zero-split roll): on to TLS (a failure turns back to plain).
    Migrate,
    /// `distls rollback` of a zero-split run: back to plain.
    Rollback,
}

/// Runs the rolls the journal says are left, one after the other, on `cluster` (the nodes'
/// hosts in plan order; its observer is shut down at the end).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    plan: &Plan,
    nodes: &[ZeroSplitNode],
    cluster: Cluster,
    store: JournalStore,
    journal: Journal,
    options: Options,
    interrupted: Arc<AtomicBool>,
    intent: Intent,
) -> (Vec<NodeSummary>, Result<()>) {
    let rolls = Rolls {
        plan,
        nodes,
        interrupted,
        cluster: cluster.clone(),
    };
    let outcome = rolls.run(store, journal, options, intent).await;
    cluster.observer.shutdown().await;
    outcome
}

/// What every roll of one run shares: the way to the nodes (the probe VMs among it).
struct Rolls<'p, 'n> {
    plan: &'p Plan,
    nodes: &'n [ZeroSplitNode],
    interrupted: Arc<AtomicBool>,
    cluster: Cluster,
}

impl<'p> Rolls<'p, '_> {
    /// One roll, ready to run: the module is on every host if the roll's stages need it.
    async fn rollout(
        &self,
        roll: RollState,
        store: JournalStore,
        journal: Journal,
        options: Options,
    ) -> Result<Rollout<'p>> {
        install_modules(self.nodes, &self.cluster, roll).await?;
        let targets = roll_targets(self.nodes, roll);
        let interrupted = self.interrupted.clone();
        let rollout = Rollout::new(self.plan, targets, store, journal, options, interrupted)?;
        Ok(rollout
            .for_zero_split_roll(roll)
            .on_cluster(self.cluster.clone()))
    }

    async fn run(
        &self,
        mut store: JournalStore,
        mut journal: Journal,
        options: Options,
        intent: Intent,
    ) -> (Vec<NodeSummary>, Result<()>) {
        let nodes = self.nodes;
        let mut summary = Vec::new();
        let mut failure: Option<Error> = None;
        // A new run takes the one-restart path; a journal of a three-roll run goes on with that.
        let mut roll = *journal
            .zero_split
            .get_or_insert(RollState::first(RollPath::OneRestart));
        if journal.phase == Phase::RolledBack
            && roll.toward == Stage::Tls
            && intent == Intent::Migrate
        {
            // A roll went back after a failure, and the run was stopped before it turned to plain.
            failure = Some(Error::StepFailed(Message::from(format!(
                "an earlier failure turned this run back ({}); it goes back to plain first",
                journal.failure.as_deref().unwrap_or("see `distls status`")
            ))));
            match roll.back_to_plain() {
                Some(back) => roll = back,
                None => {
                    return (
                        summary,
                        finish(nodes, &self.cluster, &store, &mut journal, failure).await,
                    );
                }
            }
            if let Err(e) = advance(&store, &mut journal, roll) {
                return (summary, Err(e));
            }
        }
        if intent == Intent::Rollback && roll.toward == Stage::Tls {
            // The roll under way goes back to its `from` stage first; then the rolls back to plain.
            // Going back: no canary (a pause would hide the way back).
            let pause = Options {
                on_failure: OnFailure::Pause,
                pause_after: None,
                ..options.clone()
            };
            let mut rollout = match self.rollout(roll, store, journal, pause).await {
                Ok(r) => r,
                Err(e) => return (summary, Err(e)),
            };
            let (rows, outcome) = rollout.rollback().await;
            summary = rows;
            (store, journal) = rollout.into_parts();
            if let Err(e) = outcome {
                return (summary, Err(e));
            }
            match roll.back_to_plain() {
                Some(next) => roll = next,
                None => {
                    return (
                        summary,
                        finish(nodes, &self.cluster, &store, &mut journal, None).await,
                    );
                }
            }
            if let Err(e) = advance(&store, &mut journal, roll) {
                return (summary, Err(e));
            }
        }
        loop {
            if roll.toward == Stage::Plain && intent == Intent::Migrate && failure.is_none() {
                failure = Some(Error::StepFailed(Message::new(
                    "an earlier failure (see `distls status`) turned this run back toward plain TCP; it finishes that first",
                )));
            }
            // On the way back a failure pauses: rolling back a roll toward plain would move away
            // from plain.
            // The canary is for the way to TLS: a pause would hide the failure being undone.
            let options = match roll.toward {
                Stage::Plain => Options {
                    on_failure: OnFailure::Pause,
                    pause_after: None,
                    ..options.clone()
                },
                _ => options.clone(),
            };
            let mut rollout = match self.rollout(roll, store, journal, options).await {
                Ok(r) => r,
                Err(e) => return (summary, Err(e)),
            };
            rollout.note(crate::event::Note::RollBegins {
                roll: roll.describe(),
            });
            let (rows, outcome) = rollout.migrate().await;
            summary = rows;
            let paused = rollout.paused();
            (store, journal) = rollout.into_parts();
            let next = match outcome {
                // The canary's pause: the journal says `paused`; a rerun goes on with this roll.
                Ok(()) if paused => return (summary, Ok(())),
                Ok(()) => roll.next(),
                // The roll went back to where it started (one mesh, no split): on back to plain.
                Err(e) if journal.phase == Phase::RolledBack && roll.toward == Stage::Tls => {
                    failure = Some(e);
                    match roll.back_to_plain() {
                        Some(back) => Some(back),
                        None => {
                            return (
                                summary,
                                finish(nodes, &self.cluster, &store, &mut journal, failure).await,
                            );
                        }
                    }
                }
                Err(e) => return (summary, Err(e)),
            };
            match next {
                Some(next) => {
                    roll = next;
                    if let Err(e) = advance(&store, &mut journal, roll) {
                        return (summary, Err(e));
                    }
                }
                None => {
                    return (
                        summary,
                        finish(nodes, &self.cluster, &store, &mut journal, failure).await,
                    );
                }
            }
        }
    }
}

/// The next roll begins: every node's step starts over.
fn advance(store: &JournalStore, journal: &mut Journal, roll: RollState) -> Result<()> {
    journal.begin_roll(roll)?;
    let point = format!("next:{}:{}", roll.from.tag(), roll.to.tag());
    crate::failpoint::failpoint(&format!("{point}:before"));
    store.save(journal)?;
    crate::failpoint::failpoint(&point);
    Ok(())
}

/// The last roll is done (at TLS, or back at plain): the module goes. `failure`: why the run
/// turned back, if it did.
async fn finish(
    nodes: &[ZeroSplitNode],
    cluster: &Cluster,
    store: &JournalStore,
    journal: &mut Journal,
    failure: Option<Error>,
) -> Result<()> {
    remove_modules(nodes, cluster).await?;
    let at_plain = journal.zero_split.is_some_and(|r| r.to == Stage::Plain)
        || journal.phase == Phase::RolledBack;
    if at_plain {
        remove_plain_optfiles(nodes, cluster).await?;
        // Nothing left to resume: the next `migrate` starts a new run.
        journal.set_phase(Phase::RolledBack)?;
        journal.zero_split = None;
        journal.record(None, "rolled back to plain tcp; hybrid module removed");
    } else {
        journal.record(None, "hybrid module removed");
    }
    store.save(journal)?;
    match failure {
        Some(e) => Err(Error::StepFailed(Message::from(format!(
            "{e}\nrolled back: every node runs plain TCP again with its original vm.dist.args, and the cluster was never split"
        )))),
        None => Ok(()),
    }
}

/// Every node gets the module before a roll whose stages use it. When a node cannot get it
/// before the first roll, the modules already installed on the others go again: a refused run
/// leaves nothing behind on a node whose flags file is still plain.
async fn install_modules(
    nodes: &[ZeroSplitNode],
    cluster: &Cluster,
    roll: RollState,
) -> Result<()> {
    if !(roll.from.uses_module() || roll.to.uses_module()) {
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let (host, erl, flags) = (
            cluster.host(index).clone(),
            node.target.spec.erl.clone(),
            node.target.dist_args.clone(),
        );
        let name = node.target.name().to_owned();
        tasks.spawn(async move {
            install_module(host.as_ref(), &erl, &flags)
                .await
                .map(|()| index)
                .map_err(|why| format!("node {name}: {why}"))
        });
    }
    let mut installed = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(index)) => installed.push(index),
            Ok(Err(why)) => errors.push(why),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    if roll.from == Stage::Plain {
        for index in installed {
            let (node, host) = (&nodes[index], cluster.host(index));
            let target = &node.target;
            let plain = host.read_file(&target.dist_args).await;
            if plain.is_ok_and(|bytes| bytes == node.texts.plain.as_bytes())
                && let Err(why) = remove_module(host.as_ref(), &target.dist_args).await
            {
                errors.push(format!("node {}: {why}", target.name()));
            }
        }
    }
    errors.sort();
    Err(Error::StepFailed(Message::new(errors.join("\n"))))
}

/// Back at plain: a flavor node's optfile goes once its flags file is the plain original again
/// (the roll toward plain removes it with the edit; this covers a run killed in between).
async fn remove_plain_optfiles(nodes: &[ZeroSplitNode], cluster: &Cluster) -> Result<()> {
    for (node, host) in nodes.iter().zip(&cluster.hosts) {
        let target = &node.target;
        let Some(optfile) = &target.optfile else {
            continue;
        };
        let current = host.read_file(&target.dist_args).await?;
        if current == node.texts.plain.as_bytes() {
            host.remove_file(&optfile.path).await?;
        }
    }
    Ok(())
}

async fn remove_modules(nodes: &[ZeroSplitNode], cluster: &Cluster) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (node, host) in nodes.iter().zip(&cluster.hosts) {
        let (host, flags) = (host.clone(), node.target.dist_args.clone());
        let name = node.target.name().to_owned();
        tasks.spawn(async move {
            remove_module(host.as_ref(), &flags)
                .await
                .map_err(|why| format!("node {name}: {why}"))
        });
    }
    collect(tasks).await
}

async fn collect(mut tasks: tokio::task::JoinSet<std::result::Result<(), String>>) -> Result<()> {
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(why)) => errors.push(why),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors.sort();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::StepFailed(Message::new(errors.join("\n"))))
    }
}
