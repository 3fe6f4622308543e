//! Probe VMs: hidden Erlang nodes started with a node's own distribution args (as its ctl would be),
//! kept alive for the whole run and asked questions over stdin/stdout. One VM per distinct args
//! text, so a roll needs two: one speaking plain TCP, one speaking TLS.

use crate::argsfile::{Cookie, NameFlag};
use crate::atomic_file::sha256_hex;
use crate::transport::{ProcessHandle, Transport, TransportError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, OnceCell, oneshot};

const PROBE_SOURCE: &str = include_str!("probe/distls_probe.erl");
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than the probe's own rpc timeout (5 s per call, three calls).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Cookies set per `cookies` request line (a line of a few kilobytes).
const COOKIES_PER_LINE: usize = 200;

/// One distribution link as the node itself reports it in `net_kernel:nodes_info()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    pub node: String,
    pub up: bool,
    pub tls: bool,
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeInfo {
    Up {
        proto_dist: String,
        os_pid: u32,
        peers: Vec<PeerLink>,
    },
    /// Registered with epmd (so its VM runs) but not answering this probe: e.g. it speaks the
    /// other protocol's peer can not reach, or its certificate is rejected.
    Unreachable { epmd_port: u16, reason: String },
    Down {
        reason: String,
        /// Where the probe looked for it (absent with an older probe reply).
        asked: Option<EpmdAsked>,
    },
}

/// Where a probe looked for a node it found down: the epmd it asked (as its `-epmd_port`
/// says, which follows the node's files and the plan's `env`), or the fixed port it dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpmdAsked {
    /// `host:port`.
    pub at: String,
    pub names: EpmdNames,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpmdNames {
    /// The names that epmd lists (nodes registered there), without their ports.
    Listed(Vec<String>),
    /// The epmd did not answer (`address`: nothing listens there).
    NoAnswer(String),
    /// No epmd: the node has a fixed distribution port (`-erl_epmd_port`) and nothing accepts there.
    FixedPort,
}

impl EpmdAsked {
    /// `epmd localhost:4371 lists ejabberd1, ejabberd2` and the like.
    pub fn describe(&self) -> String {
        self.describe_from(None)
    }

    /// [`Self::describe`] with where its port came from: `epmd localhost:4371 (ejabberdctl.cfg:1
    /// ERL_EPMD_PORT) lists …`.
    pub fn describe_from(&self, source: Option<&str>) -> String {
        let at = match source {
            Some(source) => format!("{} ({source})", self.at),
            None => self.at.clone(),
        };
        match &self.names {
            EpmdNames::Listed(names) if names.is_empty() => {
                format!("epmd {at} lists no names")
            }
            EpmdNames::Listed(names) => format!("epmd {at} lists {}", names.join(", ")),
            EpmdNames::NoAnswer(why) => format!("epmd {at} did not answer ({why})"),
            EpmdNames::FixedPort => {
                format!("nothing accepts at {at}, a fixed distribution port (no epmd)")
            }
        }
    }
}

impl NodeInfo {
    pub fn is_up(&self) -> bool {
        matches!(self, NodeInfo::Up { .. })
    }

    pub fn runs_tls(&self) -> bool {
        // Exactly the stock TLS modules: distls's hybrid module ("distls_hybrid:…") is not one.
        matches!(self, NodeInfo::Up { proto_dist, .. } if proto_dist == "inet_tls" || proto_dist == "inet6_tls")
    }

    /// Normal (non-hidden) peers with an established link, and whether it is TLS.
    pub fn live_links(&self) -> Vec<(&str, bool)> {
        match self {
            NodeInfo::Up { peers, .. } => peers
                .iter()
                .filter(|p| p.up && !p.hidden)
                .map(|p| (p.node.as_str(), p.tls))
                .collect(),
            NodeInfo::Unreachable { .. } | NodeInfo::Down { .. } => Vec::new(),
        }
    }

    /// The protocol the node runs, as the probe reports it (see `stage::Stage::signature`).
    pub fn proto_dist(&self) -> Option<&str> {
        match self {
            NodeInfo::Up { proto_dist, .. } => Some(proto_dist),
            _ => None,
        }
    }

    /// The transport of its up link to `peer`, if any (true: TLS).
    pub fn link_to(&self, peer: &str) -> Option<bool> {
        self.live_links()
            .iter()
            .find(|(n, _)| *n == peer)
            .map(|(_, tls)| *tls)
    }

    pub fn has_link(&self, peer: &str, tls: bool) -> bool {
        self.live_links()
            .iter()
            .any(|(n, t)| *n == peer && *t == tls)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("probe VM ({proto}) failed to start: {detail}")]
    Boot { proto: String, detail: String },
    #[error("probe VM ({proto}) stopped answering: {detail}")]
    Gone { proto: String, detail: String },
    #[error("probe VM ({proto}): {detail}")]
    Failed { proto: String, detail: String },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

/// A running probe VM.
pub struct Probe {
    label: String,
    stdin: Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
    pending: Pending,
    next_id: AtomicU64,
    process: Mutex<Option<ProcessHandle>>,
}

impl Probe {
    pub fn label(&self) -> &str {
        &self.label
    }

    async fn request(&self, body: &str) -> Result<String, ProbeError> {
        let mut replies = self.requests(&[body.to_string()]).await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Several requests written at once, their replies in the same order: a thousand cookies
    /// cost one write and one wait instead of a thousand round trips.
    async fn requests(&self, bodies: &[String]) -> Result<Vec<String>, ProbeError> {
        let mut waiting = Vec::with_capacity(bodies.len());
        let mut lines = String::new();
        {
            let mut pending = self.pending.lock().await;
            for body in bodies {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                pending.insert(id, tx);
                lines.push_str(&format!("{id} {body}\n"));
                waiting.push((id, rx));
            }
        }
        self.write_line(&lines).await?;
        let mut replies = Vec::with_capacity(waiting.len());
        for (id, rx) in waiting {
            match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
                Ok(Ok(reply)) => replies.push(reply),
                Ok(Err(_)) => return Err(self.gone("the VM exited")),
                Err(_) => {
                    self.pending.lock().await.remove(&id);
                    return Err(ProbeError::Gone {
                        proto: self.label.clone(),
                        detail: format!("no answer within {REQUEST_TIMEOUT:?}"),
                    });
                }
            }
        }
        Ok(replies)
    }

    /// Tells the VM each node's cookie (over the pipe only: never argv, never a file outside
    /// the private directory).
    pub async fn set_cookies(&self, cookies: &[(String, Cookie)]) -> Result<(), ProbeError> {
        // A few hundred per line: the probe reads a line at a time, and a thousand lines (one per
        // node) kept a large preflight waiting ~0.15 s.
        let bodies: Vec<String> = cookies
            .chunks(COOKIES_PER_LINE)
            .map(|chunk| {
                let mut body = String::from("cookies");
                for (node, cookie) in chunk {
                    body.push_str(&format!(" {node} {}", cookie.expose()));
                }
                body
            })
            .collect();
        self.requests(&bodies).await.map(|_| ())
    }

    /// Where the VM would look the nodes of `host` up (the epmd it asks, with the names
    /// registered there, or the fixed port it dials): one question instead of one per node.
    pub async fn registered(&self, host: &str) -> Result<EpmdAsked, ProbeError> {
        let reply = self.request(&format!("names {host}")).await?;
        parse_names(&reply).ok_or_else(|| ProbeError::Gone {
            proto: self.label.clone(),
            detail: format!("unexpected reply to `names`: `{reply}`"),
        })
    }

    async fn write_line(&self, line: &str) -> Result<(), ProbeError> {
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(self.gone("it was stopped"));
        };
        if pipe.write_all(line.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
            return Err(self.gone("its stdin is closed"));
        }
        Ok(())
    }

    fn gone(&self, detail: &str) -> ProbeError {
        ProbeError::Gone {
            proto: self.label.clone(),
            detail: detail.to_string(),
        }
    }

    /// What `node` runs and which links it has, from the node's own point of view.
    pub async fn info(&self, node: &str) -> Result<NodeInfo, ProbeError> {
        let reply = self.request(&format!("info {node}")).await?;
        Ok(parse_info(&reply))
    }

    /// Ask `node` to dial `peers` now instead of waiting for its own reconnect logic.
    pub async fn connect(&self, node: &str, peers: &[String]) -> Result<(), ProbeError> {
        if peers.is_empty() {
            return Ok(());
        }
        self.request(&format!("connect {node} {}", peers.join(" ")))
            .await
            .map(|_| ())
    }

    /// Ask `node` to stop: `init:stop()` (orderly), or with `halt`, `erlang:halt()`.
    pub async fn stop_node(&self, node: &str, halt: bool) -> Result<(), ProbeError> {
        let how = if halt { "halt" } else { "init" };
        self.request(&format!("stop {node} {how}"))
            .await
            .map(|_| ())
    }

    /// Tells distls's hybrid module on `node` to `seal`, `unseal`, `add` or `remove` (TLS peers).
    /// `Ok(false)`: the module does not run there.
    pub async fn hybrid(&self, node: &str, op: &str, peers: &[&str]) -> Result<bool, ProbeError> {
        let mut body = format!("hybrid {node} {op}");
        for peer in peers {
            body.push(' ');
            body.push_str(peer);
        }
        let reply = self.request(&body).await?;
        match reply.as_str() {
            "hybrid ok" => Ok(true),
            "hybrid absent" => Ok(false),
            _ => Err(ProbeError::Failed {
                proto: self.label.clone(),
                detail: format!("`{op}` on {node}: {reply}"),
            }),
        }
    }

    /// The OTP release and ssl application version of the probe VM: those of `erl` on its host.
    pub async fn versions(&self) -> Result<RuntimeVersions, ProbeError> {
        let reply = self.request("versions").await?;
        parse_versions(&reply).ok_or_else(|| ProbeError::Gone {
            proto: self.label.clone(),
            detail: format!("unexpected reply to `versions`: `{reply}`"),
        })
    }

    /// The files `node`'s running distribution options name (as it booted): its optfile's terms,
    /// then its `-ssl_dist_opt` pairs.
    pub async fn tls_files(&self, node: &str) -> Result<TlsFiles, ProbeError> {
        let reply = self.request(&format!("tlsfiles {node}")).await?;
        parse_tls_files(&reply).map_err(|detail| ProbeError::Failed {
            proto: self.label.clone(),
            detail: format!("the TLS files of {node}: {detail}"),
        })
    }

    /// The DER leaf `node` serves right now on its distribution port (a fresh handshake with
    /// this VM's client certificate; unverified here: the caller checks it).
    pub async fn served(&self, node: &str) -> Result<Vec<u8>, ProbeError> {
        let reply = self.request(&format!("served {node}")).await?;
        let failed = |detail: String| ProbeError::Failed {
            proto: self.label.clone(),
            detail: format!("a TLS handshake with {node}: {detail}"),
        };
        match reply.strip_prefix("served ") {
            Some(rest) => match rest.strip_prefix('!') {
                Some(why) => Err(failed(why.to_string())),
                None => hex::decode(rest.trim())
                    .map_err(|_| failed(format!("unexpected reply `{reply}`"))),
            },
            None => Err(failed(format!("unexpected reply `{reply}`"))),
        }
    }

    /// Clears `node`'s distribution PEM cache (`ssl_pem_cache_dist`), so its next connection
    /// reads its certificate, key and CA files again. `Ok(false)`: that cache does not run there.
    pub async fn clear_pem(&self, node: &str) -> Result<bool, ProbeError> {
        let reply = self.request(&format!("clearpem {node}")).await?;
        match reply.as_str() {
            "clearpem ok" => Ok(true),
            "clearpem absent" => Ok(false),
            _ => Err(ProbeError::Failed {
                proto: self.label.clone(),
                detail: format!("clearing the PEM cache of {node}: {reply}"),
            }),
        }
    }

    /// Clears this VM's own PEM caches: its next links present its files as they are now.
    pub async fn refresh(&self) -> Result<(), ProbeError> {
        self.request("refresh").await.map(|_| ())
    }

    /// Drops this VM's own (hidden) link to `node` and makes it again: a new TLS link, made with
    /// this VM's files as they are now, that `node` must accept.
    pub async fn relink(&self, node: &str) -> Result<(), ProbeError> {
        let reply = self.request(&format!("relink {node}")).await?;
        if reply == "relink ok" {
            return Ok(());
        }
        Err(ProbeError::Failed {
            proto: self.label.clone(),
            detail: format!("a new link to {node}: {reply}"),
        })
    }

    /// Which of `needs` (`module:function/arity`) the probe VM's OTP does not export: the OTP of
    /// `erl` on its host.
    pub async fn lacks(&self, needs: &[String]) -> Result<Vec<String>, ProbeError> {
        let reply = self.request(&format!("lacks {}", needs.join(" "))).await?;
        parse_lacks(&reply).ok_or_else(|| ProbeError::Gone {
            proto: self.label.clone(),
            detail: format!("unexpected reply to `lacks`: `{reply}`"),
        })
    }

    /// Close its stdin (the VM halts on EOF) and reap it.
    pub async fn stop(&self) {
        self.stdin.lock().await.take();
        if let Some(process) = self.process.lock().await.take() {
            process.finish().await;
        }
    }
}

/// One file option of a node's running distribution options: `server_certfile`,
/// `client_cacertfile` and so on, and the path it names (`None`: an inline option, e.g.
/// `cacerts`, that names no file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileOption {
    pub role: String,
    pub path: Option<PathBuf>,
}

/// What a node's running distribution options name, in the order they are given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    pub options: Vec<TlsFileOption>,
}

impl TlsFiles {
    /// The paths named for `kind` (`certfile`, `keyfile`, `cacertfile`) on either side, each once.
    pub fn paths(&self, kind: &str) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = Vec::new();
        for option in &self.options {
            if option.role.ends_with(&format!("_{kind}"))
                && let Some(path) = &option.path
                && !paths.contains(path)
            {
                paths.push(path.clone());
            }
        }
        paths
    }

    /// Inline options (no file to replace): `server_cacerts` and the like.
    pub fn inline(&self) -> Vec<&str> {
        self.options
            .iter()
            .filter(|o| o.path.is_none())
            .map(|o| o.role.as_str())
            .collect()
    }
}

fn parse_tls_files(reply: &str) -> Result<TlsFiles, String> {
    use std::os::unix::ffi::OsStringExt;
    let rest = reply
        .strip_prefix("tlsfiles ")
        .ok_or_else(|| format!("unexpected reply `{reply}`"))?;
    if let Some(why) = rest.strip_prefix('!') {
        return Err(why.to_string());
    }
    let mut options = Vec::new();
    for entry in rest.split(',').filter(|e| !e.is_empty() && *e != "-") {
        let (role, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("unexpected entry `{entry}`"))?;
        let path = match value {
            "!" => None,
            hex_path => Some(PathBuf::from(std::ffi::OsString::from_vec(
                hex::decode(hex_path).map_err(|_| format!("unexpected path `{hex_path}`"))?,
            ))),
        };
        options.push(TlsFileOption {
            role: role.to_string(),
            path,
        });
    }
    Ok(TlsFiles { options })
}

/// What Erlang/OTP a host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersions {
    /// `erlang:system_info(otp_release)`, e.g. `25`.
    pub otp_release: String,
    /// The ssl application's version; `None` when it is not installed.
    pub ssl: Option<String>,
    /// `code:root_dir()`: where this OTP is installed (`/usr/lib/erlang` for Debian's).
    pub root_dir: Option<String>,
}

impl RuntimeVersions {
    pub fn otp_major(&self) -> Option<u32> {
        self.otp_release.split('.').next()?.parse().ok()
    }
}

fn parse_versions(reply: &str) -> Option<RuntimeVersions> {
    let mut words = reply.split_whitespace();
    if words.next()? != "versions" {
        return None;
    }
    let otp_release = words.next()?.to_string();
    let ssl = words.next().filter(|v| *v != "missing").map(str::to_string);
    let root_dir = Some(words.collect::<Vec<_>>().join(" ")).filter(|dir| !dir.is_empty());
    Some(RuntimeVersions {
        otp_release,
        ssl,
        root_dir,
    })
}

fn parse_lacks(reply: &str) -> Option<Vec<String>> {
    let mut words = reply.split_whitespace();
    if words.next()? != "lacks" {
        return None;
    }
    Some(words.map(str::to_string).collect())
}

fn parse_info(reply: &str) -> NodeInfo {
    let mut words = reply.split_whitespace();
    match words.next() {
        Some("up") => {
            let proto_dist = words.next().unwrap_or("inet_tcp").to_string();
            let os_pid = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let peers = words.next().map(parse_peers).unwrap_or_default();
            NodeInfo::Up {
                proto_dist,
                os_pid,
                peers,
            }
        }
        Some("unreachable") => match words.next().and_then(|p| p.parse().ok()) {
            Some(epmd_port) => NodeInfo::Unreachable {
                epmd_port,
                reason: words.next().unwrap_or("unknown").to_string(),
            },
            None => unexpected(reply),
        },
        Some("down") => NodeInfo::Down {
            reason: words.next().unwrap_or("unknown").to_string(),
            asked: parse_asked(words),
        },
        _ => unexpected(reply),
    }
}

fn unexpected(reply: &str) -> NodeInfo {
    NodeInfo::Down {
        reason: format!("unexpected probe reply `{reply}`"),
        asked: None,
    }
}

/// `epmd <host>:<port> <names>` or `noepmd <host>:<port>` after a `down` reply's reason.
fn parse_asked<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<EpmdAsked> {
    let kind = words.next()?;
    let at = words.next()?.to_string();
    let names = match (kind, words.next()) {
        ("noepmd", _) => EpmdNames::FixedPort,
        ("epmd", Some("-")) => EpmdNames::Listed(Vec::new()),
        ("epmd", Some(list)) => match list.strip_prefix('!') {
            Some(why) => EpmdNames::NoAnswer(why.to_string()),
            None => EpmdNames::Listed(
                list.split(',')
                    .filter_map(|entry| entry.rsplit_once(':').map(|(name, _port)| name))
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        },
        _ => return None,
    };
    Some(EpmdAsked { at, names })
}

/// A `names` reply: `names epmd <host>:<port> <names>` or `names noepmd <host>:<port>`.
fn parse_names(reply: &str) -> Option<EpmdAsked> {
    let mut words = reply.split_whitespace();
    match words.next() {
        Some("names") => parse_asked(words),
        _ => None,
    }
}

fn parse_peers(list: &str) -> Vec<PeerLink> {
    list.split(',')
        .filter(|e| *e != "-" && !e.is_empty())
        .filter_map(|entry| {
            let mut parts = entry.rsplitn(4, ':');
            let kind = parts.next()?;
            let transport = parts.next()?;
            let state = parts.next()?;
            let node = parts.next()?;
            Some(PeerLink {
                node: node.to_string(),
                up: state == "up",
                tls: transport == "tls",
                hidden: kind == "hidden",
            })
        })
        .collect()
}

/// What a probe VM is started with: an args-file text and, when the node's ctl gets
/// `-ssl_dist_optfile F`, the text of F (the probe gets a private copy, so it can run before distls
/// writes the real one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeArgs {
    pub text: String,
    pub optfile: Option<String>,
}

impl ProbeArgs {
    fn key(&self) -> String {
        let optfile = self.optfile.as_deref().unwrap_or("");
        sha256_hex(format!("{}\0{optfile}", self.text).as_bytes())
    }
}

/// Where a probe runs: the node's host (through its transport), that host's erl, and the host
/// name probe nodes are named after (the node names' host part).
pub struct ProbeSite<'a> {
    pub transport: &'a Transport,
    pub erl: &'a str,
    pub host: &'a str,
}

/// A private directory for probe files on one site: the source, the args copies, a HOME.
enum Workdir {
    Local(tempfile::TempDir),
    Remote { transport: Transport, path: PathBuf },
}

impl Workdir {
    fn path(&self) -> PathBuf {
        match self {
            Workdir::Local(dir) => dir.path().to_path_buf(),
            Workdir::Remote { path, .. } => path.clone(),
        }
    }
}

/// An unguessable cookie that no node uses (the probes never listen; see `probe_args`).
pub(crate) fn throwaway_cookie() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness, once per process and then per instance.
    (0..4)
        .map(|_| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(0);
            format!("{:016X}", hasher.finish())
        })
        .collect()
}

/// Probe VMs keyed by site and the args text they were started with.
pub struct ProbePool {
    name_flag: NameFlag,
    cookies: Vec<(String, Cookie)>,
    /// One cell per site and args text, so that different probes boot concurrently while two
    /// askers of the same probe share one boot.
    probes: Mutex<HashMap<String, Arc<OnceCell<Arc<Probe>>>>>,
    workdirs: Mutex<HashMap<String, Arc<Workdir>>>,
    started: AtomicU64,
}

impl ProbePool {
    pub fn new(name_flag: NameFlag, cookies: Vec<(String, Cookie)>) -> Self {
        ProbePool {
            name_flag,
            cookies,
            probes: Mutex::new(HashMap::new()),
            workdirs: Mutex::new(HashMap::new()),
            started: AtomicU64::new(0),
        }
    }

    /// The probe that speaks what `dist_args` (a vm.dist.args text) says on `site`; started on first use.
    pub async fn probe_for(
        &self,
        site: &ProbeSite<'_>,
        dist_args: &ProbeArgs,
        label: &str,
    ) -> Result<Arc<Probe>, ProbeError> {
        let args_key = dist_args.key();
        let key = format!(
            "{} {} {} {args_key}",
            site.transport.site(),
            site.erl,
            site.host
        );
        let cell = self.probes.lock().await.entry(key).or_default().clone();
        cell.get_or_try_init(|| async {
            Ok(Arc::new(
                self.boot(site, &args_key, dist_args, label).await?,
            ))
        })
        .await
        .cloned()
    }

    async fn workdir(&self, transport: &Transport) -> Result<Arc<Workdir>, ProbeError> {
        let mut workdirs = self.workdirs.lock().await;
        if let Some(dir) = workdirs.get(&transport.site()) {
            return Ok(dir.clone());
        }
        let workdir = if transport.is_direct() {
            let dir = tempfile::Builder::new()
                .prefix("distls-probe-")
                .tempdir()
                .map_err(|e| ProbeError::Boot {
                    proto: "-".into(),
                    detail: format!("cannot create a private directory: {e}"),
                })?;
            Workdir::Local(dir)
        } else {
            let out = transport
                .run(
                    r#"d=$(mktemp -d "${TMPDIR:-/tmp}/distls-probe.XXXXXX") && printf '%s' "$d""#,
                    Duration::from_secs(30),
                )
                .await?;
            if !out.success() {
                return Err(ProbeError::Boot {
                    proto: "-".into(),
                    detail: format!(
                        "cannot create a private directory on {}: {}",
                        transport.describe(),
                        out.tail()
                    ),
                });
            }
            Workdir::Remote {
                transport: transport.clone(),
                path: PathBuf::from(out.stdout.trim()),
            }
        };
        let path = workdir.path();
        transport
            .write_file(
                &path.join("distls_probe.erl"),
                PROBE_SOURCE.as_bytes(),
                0o600,
            )
            .await?;
        // The probe VMs of a host share this HOME and boot concurrently: left to itself, each
        // would create ~/.erlang.cookie, and one could read it while another is still writing it
        // (auth crashes on an empty file). A throwaway default cookie, written before any boot;
        // the nodes' real cookies only ever reach a probe over its pipe.
        transport
            .write_file(
                &path.join(".erlang.cookie"),
                throwaway_cookie().as_bytes(),
                0o400,
            )
            .await?;
        let workdir = Arc::new(workdir);
        workdirs.insert(transport.site(), workdir.clone());
        Ok(workdir)
    }

    async fn boot(
        &self,
        site: &ProbeSite<'_>,
        args_key: &str,
        dist_args: &ProbeArgs,
        label: &str,
    ) -> Result<Probe, ProbeError> {
        let workdir = self.workdir(site.transport).await?.path();
        let args_path = workdir.join(format!("{}.args", &args_key[..16]));
        let mut args_text = dist_args.text.clone();
        if let Some(optfile) = &dist_args.optfile {
            let optfile_path = workdir.join(format!("{}.optfile", &args_key[..16]));
            site.transport
                .write_file(&optfile_path, optfile.as_bytes(), 0o600)
                .await?;
            args_text.push_str(&format!("\n-ssl_dist_optfile {}\n", optfile_path.display()));
        }
        site.transport
            .write_file(&args_path, args_text.as_bytes(), 0o600)
            .await?;
        let serial = self.started.fetch_add(1, Ordering::Relaxed);
        let name = format!("distls_probe_{}_{serial}@{}", std::process::id(), site.host);
        let source = workdir.join("distls_probe.erl");
        let args = probe_args(self.name_flag, &name, &args_path, &source);
        // A private HOME: the VM would otherwise create ~/.erlang.cookie for the operator. It
        // holds every node's cookie as atoms: no crash dump at all, and any dump (or other file it
        // writes) lands in its private directory, never in the operator's working directory.
        let env = private_vm_env(&workdir);
        let spawned = site
            .transport
            .spawn(site.erl, &args, &env, &workdir)
            .await?;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let noise = Arc::new(Mutex::new(Vec::<String>::new()));
        tokio::spawn(read_replies(spawned.stdout, pending.clone(), noise.clone()));
        tokio::spawn(collect_stderr(spawned.stderr, noise.clone()));
        let probe = Probe {
            label: format!("{label} on {}", site.transport.describe()),
            stdin: Mutex::new(Some(spawned.stdin)),
            pending,
            next_id: AtomicU64::new(1),
            process: Mutex::new(Some(spawned.handle)),
        };
        let handshake = async {
            probe.set_cookies(&self.cookies).await?;
            probe.request("self").await
        };
        match tokio::time::timeout(BOOT_TIMEOUT, handshake).await {
            Ok(Ok(_)) => Ok(probe),
            outcome => {
                probe.stop().await;
                let said = noise.lock().await.join("\n");
                let detail = match outcome {
                    Err(_) => format!("no answer within {BOOT_TIMEOUT:?}. {said}"),
                    _ => said,
                };
                Err(ProbeError::Boot {
                    proto: probe.label.clone(),
                    detail,
                })
            }
        }
    }

    /// Stop every probe VM and remove the remote working directories, all at once: each remote
    /// probe may take up to its reap timeout, and there are two per host.
    pub async fn shutdown(&self) {
        let started = std::time::Instant::now();
        let probes: Vec<Arc<Probe>> = self
            .probes
            .lock()
            .await
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect();
        let count = probes.len();
        let mut stopping = tokio::task::JoinSet::new();
        for probe in probes {
            stopping.spawn(async move {
                let started = std::time::Instant::now();
                probe.stop().await;
                tracing::debug!(probe = %probe.label, took = ?started.elapsed(), "probe stopped");
            });
        }
        while stopping.join_next().await.is_some() {}
        let workdirs: Vec<Arc<Workdir>> = self.workdirs.lock().await.values().cloned().collect();
        let mut removing = tokio::task::JoinSet::new();
        for workdir in workdirs {
            removing.spawn(async move {
                if let Workdir::Remote { transport, path } = workdir.as_ref() {
                    let script = format!(
                        "rm -rf -- {}",
                        crate::shell::shell_quote(&path.display().to_string())
                    );
                    let _ = transport.run(&script, Duration::from_secs(30)).await;
                }
            });
        }
        while removing.join_next().await.is_some() {}
        tracing::debug!(probes = count, took = ?started.elapsed(), "probe pool shut down");
    }
}

/// The environment of a VM distls starts for itself (probes, handshake VMs): HOME and any crash
/// dump in its private directory `dir`, and no crash dump written (`ERL_CRASH_DUMP_SECONDS=0`).
pub fn private_vm_env(dir: &std::path::Path) -> Vec<(String, String)> {
    vec![
        ("HOME".to_string(), dir.display().to_string()),
        (
            "ERL_CRASH_DUMP".to_string(),
            dir.join("erl_crash.dump").display().to_string(),
        ),
        ("ERL_CRASH_DUMP_SECONDS".to_string(), "0".to_string()),
    ]
}

fn probe_args(
    name_flag: NameFlag,
    name: &str,
    args_path: &std::path::Path,
    source: &std::path::Path,
) -> Vec<String> {
    // noenv: an ERL_COMPILER_OPTIONS in the node's environment does not reach distls's own code.
    // no_ssa_opt: the probe waits on its peers, not on its CPU; the optimisation passes were
    // two thirds of its compile (0.13 s → 0.05 s), which the dry run of a large plan waits for.
    let boot = format!(
        "{{ok,M,B}}=compile:noenv_file(\"{}\",[binary,report,no_ssa_opt]),{{module,M}}=code:load_binary(M,\"distls_probe.erl\",B),distls_probe:main().",
        source.display()
    );
    vec![
        "-noshell".into(),
        "-hidden".into(),
        // No listener: the probe only dials out, and a port pinned in the args file stays free.
        "-dist_listen".into(),
        "false".into(),
        // Never leave an epmd daemon behind: with none running there is no node to ask anyway.
        "-start_epmd".into(),
        "false".into(),
        name_flag.flag().into(),
        name.into(),
        "-args_file".into(),
        args_path.display().to_string(),
        "-eval".into(),
        boot,
    ]
}

async fn read_replies(
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    pending: Pending,
    noise: Arc<Mutex<Vec<String>>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(rest) = line.strip_prefix("DISTLS ") else {
            remember(&noise, line).await;
            continue;
        };
        let (id, body) = rest.split_once(' ').unwrap_or((rest, ""));
        let Ok(id) = id.parse::<u64>() else { continue };
        if let Some(tx) = pending.lock().await.remove(&id) {
            let _ = tx.send(body.to_string());
        }
    }
    // Dropping the senders wakes every waiter with an error.
    pending.lock().await.clear();
}

async fn collect_stderr(
    mut stderr: Box<dyn AsyncRead + Send + Unpin>,
    noise: Arc<Mutex<Vec<String>>>,
) {
    let mut text = String::new();
    let _ = stderr.read_to_string(&mut text).await;
    for line in text.lines() {
        remember(&noise, line.to_string()).await;
    }
}

async fn remember(noise: &Arc<Mutex<Vec<String>>>, line: String) {
    let mut noise = noise.lock().await;
    if noise.len() < 20 {
        noise.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_up_reply_with_peers() {
        let info = parse_info(
            "up inet_tls 4242 mim2@localhost:up:tls:normal,distls_probe_1_0@localhost:up:tls:hidden,mim3@localhost:pending:tls:normal",
        );
        let NodeInfo::Up {
            proto_dist,
            os_pid,
            peers,
        } = &info
        else {
            panic!("{info:?}")
        };
        assert_eq!(proto_dist, "inet_tls");
        assert_eq!(*os_pid, 4242);
        assert_eq!(peers.len(), 3);
        assert_eq!(info.live_links(), vec![("mim2@localhost", true)]);
        assert!(info.has_link("mim2@localhost", true));
        assert!(
            !info.has_link("mim3@localhost", true),
            "pending links do not count"
        );
    }

    /// A VM distls starts for itself that crashes leaves no dump anywhere (the operator's working
    /// directory included): `erlang:halt(Slogan)` writes one into its working directory otherwise.
    #[tokio::test]
    async fn a_crashing_private_vm_writes_no_crash_dump() {
        let crash = vec![
            "-noshell".to_string(),
            "-eval".to_string(),
            "erlang:halt(\"distls test crash\")".to_string(),
        ];
        let run = |env: Vec<(String, String)>, dir: PathBuf, transport: Transport| {
            let crash = crash.clone();
            async move {
                let mut vm = transport.spawn("erl", &crash, &env, &dir).await.unwrap();
                let mut out = String::new();
                let _ = vm.stderr.read_to_string(&mut out).await;
                vm.handle.finish().await;
                std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            }
        };
        // The control: without the private environment, the dump lands in the working directory.
        let control = tempfile::tempdir().unwrap();
        let left = run(
            vec![("ERL_CRASH_DUMP_SECONDS".into(), "-1".into())],
            control.path().to_path_buf(),
            Transport::local(vec![], None),
        )
        .await;
        assert_eq!(left, ["erl_crash.dump"]);
        for transport in [
            Transport::local(vec![], None),
            Transport::local(vec![], Some("env".into())),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let left = run(
                private_vm_env(dir.path()),
                dir.path().to_path_buf(),
                transport,
            )
            .await;
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn parses_versions() {
        let versions = parse_versions("versions 25 10.8.7 /usr/lib/erlang").unwrap();
        assert_eq!(versions.otp_major(), Some(25));
        assert_eq!(versions.ssl.as_deref(), Some("10.8.7"));
        assert_eq!(versions.root_dir.as_deref(), Some("/usr/lib/erlang"));
        assert_eq!(parse_versions("versions 25 10.8.7").unwrap().root_dir, None);
        assert_eq!(parse_versions("versions 26 missing").unwrap().ssl, None);
        assert_eq!(parse_versions("up inet_tcp 1 -"), None);
    }

    #[test]
    fn parses_the_files_a_node_runs_with() {
        let files = parse_tls_files(
            "tlsfiles server_certfile=2f612e70656d,server_cacerts=!,client_certfile=2f612e70656d,client_keyfile=2f6b",
        )
        .unwrap();
        assert_eq!(files.paths("certfile"), vec![PathBuf::from("/a.pem")]);
        assert_eq!(files.paths("keyfile"), vec![PathBuf::from("/k")]);
        assert!(files.paths("cacertfile").is_empty());
        assert_eq!(files.inline(), vec!["server_cacerts"]);
        assert_eq!(parse_tls_files("tlsfiles -").unwrap(), TlsFiles::default());
        assert_eq!(
            parse_tls_files("tlsfiles !nodedown").unwrap_err(),
            "nodedown"
        );
    }

    #[test]
    fn parses_lacks() {
        assert_eq!(parse_lacks("lacks"), Some(vec![]));
        assert_eq!(
            parse_lacks("lacks inet_tls_dist:gen_accept/2"),
            Some(vec!["inet_tls_dist:gen_accept/2".to_string()])
        );
        assert_eq!(parse_lacks("versions 25"), None);
    }

    #[test]
    fn parses_down_and_empty_peer_lists() {
        assert_eq!(
            parse_info("down nodedown"),
            NodeInfo::Down {
                reason: "nodedown".into(),
                asked: None,
            }
        );
        let info = parse_info("up inet_tcp 1 -");
        assert!(info.is_up() && !info.runs_tls() && info.live_links().is_empty());
        assert_eq!(
            parse_info("unreachable 40123 nodedown"),
            NodeInfo::Unreachable {
                epmd_port: 40123,
                reason: "nodedown".into()
            }
        );
        assert!(matches!(
            parse_info("unreachable x nodedown"),
            NodeInfo::Down { .. }
        ));
    }

    #[test]
    fn parses_the_names_an_epmd_lists() {
        let listed =
            |names: &[&str]| EpmdNames::Listed(names.iter().map(|n| n.to_string()).collect());
        let asked = parse_names("names epmd localhost:4369 mim1:40001,mim2:40002").unwrap();
        assert_eq!(asked.at, "localhost:4369");
        assert_eq!(asked.names, listed(&["mim1", "mim2"]));
        let none = parse_names("names epmd localhost:4369 -").unwrap();
        assert_eq!(none.names, listed(&[]));
        let silent = parse_names("names epmd localhost:4369 !econnrefused").unwrap();
        assert_eq!(silent.names, EpmdNames::NoAnswer("econnrefused".into()));
        let fixed = parse_names("names noepmd localhost:4370").unwrap();
        assert_eq!(fixed.names, EpmdNames::FixedPort);
        assert_eq!(parse_names("error unknown_request 2"), None);
    }

    #[test]
    fn parses_where_a_down_node_was_looked_for() {
        let info = parse_info("down nodedown epmd localhost:4371 ejabberd1:41001,ejabberd2:41002");
        let NodeInfo::Down {
            reason,
            asked: Some(asked),
        } = &info
        else {
            panic!("{info:?}")
        };
        assert_eq!(reason, "nodedown");
        assert_eq!(
            asked.describe(),
            "epmd localhost:4371 lists ejabberd1, ejabberd2"
        );
        let none = parse_info("down nodedown epmd db1:4369 -");
        assert!(
            matches!(&none, NodeInfo::Down { asked: Some(a), .. } if a.describe() == "epmd db1:4369 lists no names"),
            "{none:?}"
        );
        let silent = parse_info("down nodedown epmd db1:4370 !address");
        assert!(
            matches!(&silent, NodeInfo::Down { asked: Some(a), .. } if a.describe() == "epmd db1:4370 did not answer (address)"),
            "{silent:?}"
        );
        let fixed = parse_info("down nodedown noepmd db1:5210");
        assert!(
            matches!(&fixed, NodeInfo::Down { asked: Some(a), .. } if a.names == EpmdNames::FixedPort && a.at == "db1:5210"),
            "{fixed:?}"
        );
        assert!(matches!(
            parse_info("down nodedown epmd"),
            NodeInfo::Down { asked: None, .. }
        ));
    }
}
