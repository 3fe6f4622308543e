//! The run lock on the nodes' own hosts (docs/locks.md). The journal's flock only stops a second
//! run from the same state directory; two plan copies (two directories, two laptops) would roll
//! the same nodes at once. So every run that changes nodes first creates `<flags file>.distls-lock`
//! beside each node's flags file (the real file, links resolved), exclusively (`O_EXCL`: an existing file or a planted link makes
//! the create fail), holding who runs it; it refreshes them while it runs and removes them at the
//! end. A lock whose holder died is taken over: at once when the holder ran on this operator host
//! and its pid is gone, otherwise once it has not been refreshed for [`STALE_AFTER`], or at once
//! with `--break-lock`.

use crate::error::{Error, Message, Result};
use crate::plan::Plan;
use crate::shell::shell_quote;
use crate::transport::Transport;
use std::path::PathBuf;
use std::time::Duration;

/// A lock not refreshed for this long belongs to a run that is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// How often a running distls refreshes its locks (their mtime).
const REFRESH_EVERY: Duration = Duration::from_secs(60);
pub const SUFFIX: &str = ".distls-lock";

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub run: String,
    pub host: String,
    pub pid: Option<u32>,
    pub started: String,
    pub plan: String,
    /// Seconds since it was last refreshed, by the node host's clock.
    pub age: u64,
}

impl Holder {
    pub fn describe(&self) -> String {
        format!(
            "run {} from host {}, pid {}, started {} with plan {} (last refreshed {}s ago)",
            or_unknown(&self.run),
            or_unknown(&self.host),
            self.pid.map_or("unknown".to_string(), |p| p.to_string()),
            or_unknown(&self.started),
            or_unknown(&self.plan),
            self.age
        )
    }

    /// Its run is certainly gone: it ran on this host and its pid is no distls any more, or it
    /// has not refreshed its lock for [`STALE_AFTER`].
    fn is_stale(&self, this_host: &str) -> bool {
        if self.age > STALE_AFTER.as_secs() {
            return true;
        }
        match self.pid {
            Some(pid) if self.host == this_host => !is_distls(pid),
            _ => false,
        }
    }
}

fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "unknown" } else { text }
}

fn is_distls(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "distls")
}

/// One node's lock file and the way to its host.
#[derive(Clone)]
struct NodeLock {
    node: String,
    transport: Transport,
    path: PathBuf,
}

/// The locks this run holds; [`NodeLocks::release`] removes them.
pub struct NodeLocks {
    run: String,
    held: Vec<NodeLock>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

/// What the operator sees of this run in every lock file.
fn lock_text(run: &str, plan: &Plan) -> String {
    format!(
        "distls-lock 1\nrun {run}\nhost {}\npid {}\nstarted {}\nplan {}\n",
        this_host(),
        std::process::id(),
        crate::journal::now(),
        plan.path.display()
    )
}

pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

pub fn lock_path(flags_file: &std::path::Path) -> PathBuf {
    let mut path = flags_file.as_os_str().to_owned();
    path.push(SUFFIX);
    PathBuf::from(path)
}

/// The lock of the file the plan names, keyed on the real file on the node's host (trusted links
/// followed, docs/security.md): two plans that reach one file by different paths (a linked
/// release directory, `..`) share one lock. A path that cannot be resolved keeps the plan's name;
/// the run's first read of it then fails with the reason.
pub async fn lock_path_on_host(transport: &Transport, flags_file: &std::path::Path) -> PathBuf {
    match transport.canonicalize(flags_file).await {
        Ok(real) => lock_path(&real),
        Err(_) => lock_path(flags_file),
    }
}

enum Attempt {
    Acquired,
    Held(Holder),
}

/// Take every node's lock, in plan order, before the first change. On any refusal the locks
/// already taken are released and nothing else was done.
pub async fn acquire(plan: &Plan, transports: &[Transport], break_lock: bool) -> Result<NodeLocks> {
    let run = crate::probe::throwaway_cookie()[..16].to_lowercase();
    let text = lock_text(&run, plan);
    let mut locks = NodeLocks {
        run: run.clone(),
        held: Vec::new(),
        refresher: None,
    };
    let here = this_host();
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        let lock = NodeLock {
            node: spec.name.clone(),
            transport: transport.clone(),
            path: lock_path_on_host(transport, &spec.vm_dist_args).await,
        };
        if locks
            .held
            .iter()
            .any(|h| h.path == lock.path && h.transport.site() == lock.transport.site())
        {
            continue;
        }
        let mut outcome = try_create(&lock, &text).await;
        if let Ok(Attempt::Held(holder)) = &outcome
            && (break_lock || holder.is_stale(&here))
        {
            let why = if break_lock {
                "--break-lock"
            } else {
                "its run is gone"
            };
            eprintln!(
                "warning: node {}: taking over the lock {} ({why}): it was held by {}",
                lock.node,
                lock.path.display(),
                holder.describe()
            );
            outcome = match remove_if_run(&lock, &holder.run).await {
                Ok(()) => try_create(&lock, &text).await,
                Err(e) => Err(e),
            };
        }
        match outcome {
            Ok(Attempt::Acquired) => locks.held.push(lock),
            Ok(Attempt::Held(holder)) => {
                locks.release().await;
                return Err(Error::Locked(Message::new(format!("node {}: another distls run holds its lock {} on {}: {}", lock.node, lock.path.display(), lock.transport.describe(), holder.describe())).hint(format!("wait for that run to finish. A run that died is taken over automatically: at once from the same operator host once its pid is gone, from anywhere once its lock is {} without refresh; if you are sure it is gone, rerun with --break-lock", humantime::format_duration(STALE_AFTER)))));
            }
            Err(e) => {
                locks.release().await;
                return Err(e);
            }
        }
    }
    locks.start_refreshing();
    Ok(locks)
}

/// Create the lock exclusively; if it exists, read who holds it (only the expected fields: the
/// file may have been replaced by something else, whose content is never shown).
async fn try_create(lock: &NodeLock, text: &str) -> Result<Attempt> {
    let script = format!(
        r#"lock={path}
if err=$( (set -C; umask 077; printf '%s' {text} > "$lock") 2>&1 ); then echo acquired; exit 0; fi
if [ ! -e "$lock" ] && [ ! -L "$lock" ]; then printf 'cannot create it: %s\n' "$err"; exit 4; fi
if [ -L "$lock" ] || [ ! -f "$lock" ]; then echo "it exists and is not a regular file (a link or a directory)"; exit 3; fi
echo "age $(( $(date +%s) - $(stat -c %Y -- "$lock") ))"
grep -E '^(run|host|pid|started|plan) [^[:cntrl:]]{{1,300}}$' -- "$lock" | head -n 5
exit 2"#,
        path = shell_quote(&lock.path.display().to_string()),
        text = shell_quote(text),
    );
    let out = lock.transport.run(&script, Duration::from_secs(30)).await?;
    match out.status {
        Some(0) => Ok(Attempt::Acquired),
        Some(2) => Ok(Attempt::Held(parse_holder(&out.stdout))),
        _ => Err(Error::Refused(Message::new(format!("node {}: cannot take the run lock {} on {}: {}", lock.node, lock.path.display(), lock.transport.describe(), out.tail())).hint("distls (or `become`) creates this file beside the flags file; make that directory writable for it, or remove what is at that path"))),
    }
}

/// Who holds each node's lock, if anyone, and the lock's path (for `distls status`; read only,
/// the expected fields only).
pub async fn holders(plan: &Plan, transports: &[Transport]) -> Vec<(PathBuf, Option<Holder>)> {
    let mut found = Vec::with_capacity(plan.nodes.len());
    for (spec, transport) in plan.nodes.iter().zip(transports) {
        let lock = lock_path_on_host(transport, &spec.vm_dist_args).await;
        let script = format!(
            r#"lock={path}
[ -f "$lock" ] && [ ! -L "$lock" ] || exit 1
echo "age $(( $(date +%s) - $(stat -c %Y -- "$lock") ))"
grep -E '^(run|host|pid|started|plan) [^[:cntrl:]]{{1,300}}$' -- "$lock" | head -n 5"#,
            path = shell_quote(&lock.display().to_string()),
        );
        let holder = match transport.run(&script, Duration::from_secs(30)).await {
            Ok(out) if out.success() => Some(parse_holder(&out.stdout)),
            _ => None,
        };
        found.push((lock, holder));
    }
    found
}

fn parse_holder(text: &str) -> Holder {
    let mut holder = Holder::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key {
            "age" => holder.age = value.trim().parse().unwrap_or(0),
            "run" => holder.run = value.to_string(),
            "host" => holder.host = value.to_string(),
            "pid" => holder.pid = value.trim().parse().ok(),
            "started" => holder.started = value.to_string(),
            "plan" => holder.plan = value.to_string(),
            _ => {}
        }
    }
    holder
}

/// Remove the lock only while it still belongs to `run` (another run may have taken it over).
/// `rm` removes a link itself, never its target.
async fn remove_if_run(lock: &NodeLock, run: &str) -> Result<()> {
    let check = if run.is_empty() {
        // A lock without a run line (hand-made, or cut short): removed as it is.
        String::from("true")
    } else {
        format!(
            "grep -qx {} -- \"$lock\"",
            shell_quote(&format!("run {run}"))
        )
    };
    let script = format!(
        "lock={}\nif [ -L \"$lock\" ] || {check}; then rm -f -- \"$lock\"; fi",
        shell_quote(&lock.path.display().to_string())
    );
    let out = lock.transport.run(&script, Duration::from_secs(30)).await?;
    if !out.success() {
        return Err(Error::Refused(
            Message::new(format!(
                "node {}: cannot remove the lock {} on {}: {}",
                lock.node,
                lock.path.display(),
                lock.transport.describe(),
                out.tail()
            ))
            .hint("remove it by hand once you are sure its run is gone"),
        ));
    }
    Ok(())
}

impl NodeLocks {
    /// Touch every lock (mtime, not following links) every [`REFRESH_EVERY`] while the run lasts.
    fn start_refreshing(&mut self) {
        let held = self.held.clone();
        let run = self.run.clone();
        self.refresher = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                for lock in &held {
                    let script = format!(
                        "lock={}\ngrep -qx {} -- \"$lock\" && touch -h -c -- \"$lock\"",
                        shell_quote(&lock.path.display().to_string()),
                        shell_quote(&format!("run {run}"))
                    );
                    match lock.transport.run(&script, Duration::from_secs(30)).await {
                        Ok(out) if out.success() => {}
                        outcome => tracing::warn!(
                            node = lock.node,
                            lock = %lock.path.display(),
                            ?outcome,
                            "could not refresh the run lock"
                        ),
                    }
                }
            }
        }));
    }

    /// Remove every lock this run holds (only those still holding its run id).
    pub async fn release(mut self) {
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        for lock in std::mem::take(&mut self.held) {
            if let Err(e) = remove_if_run(&lock, &self.run).await {
                eprintln!("warning: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_holder_and_decides_staleness() {
        let holder = parse_holder(
            "age 12\nrun abc\nhost laptop-1\npid 4242\nstarted 2026-01-01T00:00:00Z\nplan /p/plan.yaml\n",
        );
        assert_eq!(holder.run, "abc");
        assert_eq!(holder.pid, Some(4242));
        assert_eq!(holder.age, 12);
        assert!(!holder.is_stale("another-host"), "fresh and remote");
        let old = Holder {
            age: STALE_AFTER.as_secs() + 1,
            ..holder.clone()
        };
        assert!(old.is_stale("another-host"));
        // Same host: stale once its pid is no distls (this test's own pid is not `distls`).
        let here = Holder {
            host: "h".into(),
            pid: Some(std::process::id()),
            ..holder
        };
        assert!(here.is_stale("h"));
    }

    #[test]
    fn the_lock_sits_beside_the_flags_file() {
        assert_eq!(
            lock_path(std::path::Path::new("/opt/mim/etc/vm.dist.args")),
            PathBuf::from("/opt/mim/etc/vm.dist.args.distls-lock")
        );
    }
}
