//! Proves (or disproves) "the cluster never split" from the link samples the rehearsal nodes write
//! with `ClusterSpec::sample_links` (ctl.sh's `var/sample-links` switch: every 200 ms one line
//! `<unix ms> <peer:tcp|tls,...>` or `<unix ms> -` into `var/links.log`).
//!
//! * A node's **running intervals**: its samples split wherever two consecutive ones are more than
//!   [`Params::gap`] apart (it was down or restarting); an interval is [first sample, last sample].
//! * Node M is **running at t** when t is inside one of its intervals, ending
//!   [`Params::stop_margin`] early (a stopping node drops its links before its last sample).
//! * A **violation** is a sample of a running node N at t that lacks a running node M, unless t is
//!   within [`Params::window`] of the start of N's or M's current interval (a (re)start).
//! * **Split seconds**: how long some pair of running nodes could not see each other, counted on a
//!   grid of [`Params::tick`], once outside the restart windows and once in all.
//! * **Rejoin** per (re)start: from its first sample to its first sample that sees every running
//!   node, and until every running node also sees it.
//! * [`CtlPinger`] runs each node's own `ctl ping` in a loop; failures count only while the node
//!   was running (outside the windows and the stop margin).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distls::rehearsal::RehearsalCluster;

/// Milliseconds since the Unix epoch (what the sampler writes: `os:system_time(millisecond)`).
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as Millis
}

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

/// How the checker reads the samples.
#[derive(Debug, Clone)]
pub struct Params {
    /// A missing link is tolerated this long after either side's (re)start.
    pub window: Duration,
    /// A node is not running during this much time before its last sample (it is stopping).
    pub stop_margin: Duration,
    /// Two consecutive samples of a node further apart than this: it was down in between.
    pub gap: Duration,
    /// Samples before this time are not checked (intervals and windows still use them).
    pub since: Option<Millis>,
    /// Resolution of the split-seconds count.
    pub tick: Duration,
}

impl Params {
    /// `window` after a restart; 0.5 s stop margin, 1 s gap, 100 ms tick, everything checked.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            stop_margin: Duration::from_millis(500),
            gap: Duration::from_secs(1),
            since: None,
            tick: Duration::from_millis(100),
        }
    }

    /// Check only samples from `since` on (e.g. when the roll started).
    pub fn since(mut self, since: Millis) -> Self {
        self.since = Some(since);
        self
    }
}

/// One line of a `links.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub t: Millis,
    /// The sampling VM's OS pid (a new pid is a restart, however short the gap); absent in the
    /// two-field form `<ms> <peers>`.
    pub vm: Option<u32>,
    /// Peer node name → `tcp` or `tls`.
    pub peers: BTreeMap<String, String>,
}

/// Parses a `links.log`; ignores lines that are not complete (a line being appended) or malformed.
pub fn parse_log(text: &str) -> Vec<Sample> {
    let mut samples: Vec<Sample> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (t, vm, peers) = match fields[..] {
                [t, vm, peers] => (t, Some(vm.parse().ok()?), peers),
                [t, peers] => (t, None, peers),
                _ => return None,
            };
            let t = t.parse().ok()?;
            let peers = if peers == "-" {
                BTreeMap::new()
            } else {
                peers
                    .split(',')
                    .map(|p| {
                        let (name, transport) = p.rsplit_once(':')?;
                        Some((name.to_owned(), transport.to_owned()))
                    })
                    .collect::<Option<_>>()?
            };
            Some(Sample { t, vm, peers })
        })
        .collect();
    samples.sort_by_key(|s| s.t);
    samples
}

/// [first sample, last sample] of one run of a node; `first..last` index its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: Millis,
    pub end: Millis,
    first: usize,
    last: usize,
}

struct Timeline {
    samples: Vec<Sample>,
    intervals: Vec<Interval>,
}

impl Timeline {
    fn new(samples: Vec<Sample>, gap: Millis) -> Self {
        let mut intervals: Vec<Interval> = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            // With pids a new pid is a restart and a long gap a stalled sampler; without, a gap.
            let same_run = match (i.checked_sub(1).map(|p| samples[p].vm), s.vm) {
                (Some(Some(before)), Some(now)) => before == now,
                _ => intervals.last().is_some_and(|cur| s.t - cur.end <= gap),
            };
            match intervals.last_mut() {
                Some(cur) if same_run => {
                    cur.end = s.t;
                    cur.last = i;
                }
                _ => intervals.push(Interval {
                    start: s.t,
                    end: s.t,
                    first: i,
                    last: i,
                }),
            }
        }
        Self { samples, intervals }
    }

    fn interval_at(&self, t: Millis) -> Option<&Interval> {
        self.intervals.iter().find(|i| i.start <= t && t <= i.end)
    }

    /// The interval the node is running in at `t`, not counting its last `margin`.
    fn running_at(&self, t: Millis, margin: Millis) -> Option<&Interval> {
        self.interval_at(t).filter(|i| t <= i.end - margin)
    }

    /// The latest sample at or before `t`, in the interval that holds `t`.
    fn sample_at(&self, t: Millis) -> Option<&Sample> {
        let i = self.interval_at(t)?;
        self.samples[i.first..=i.last]
            .iter()
            .take_while(|s| s.t <= t)
            .last()
    }
}

/// A running node's sample that lacks a running peer outside the restart windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub t: Millis,
    pub node: String,
    pub missing: String,
}

/// One (re)start of a node (an interval that begins at or after [`Params::since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejoin {
    pub node: String,
    pub start: Millis,
    /// From its first sample to its first sample showing every node running then; `None`: never.
    pub own: Option<Millis>,
    /// Until, in addition, every node running after its start showed it; `None`: never.
    pub mesh: Option<Millis>,
}

/// One `ctl ping` of [`CtlPinger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingRecord {
    pub start: Millis,
    pub end: Millis,
    pub node: String,
    pub ok: bool,
    /// The last few hundred bytes of stdout and stderr.
    pub output: String,
}

/// What [`check`] found. `Display` is a readable summary for assertion messages.
#[derive(Debug, Clone)]
pub struct SplitReport {
    pub params: Params,
    /// The earliest sample (times in the summary are relative to it).
    pub t0: Millis,
    pub samples: usize,
    pub intervals: BTreeMap<String, Vec<Interval>>,
    pub violations: Vec<Violation>,
    /// Time during which some pair of running nodes could not see each other, outside the
    /// restart windows.
    pub split_seconds: f64,
    /// The same, windows included.
    pub split_seconds_with_windows: f64,
    pub rejoins: Vec<Rejoin>,
    /// Every node's last sample.
    pub final_links: BTreeMap<String, BTreeMap<String, String>>,
    /// Pings that counted (the node was running), and those that failed among them.
    pub pings_counted: usize,
    pub pings_excluded: usize,
    pub ping_failures: Vec<PingRecord>,
}

impl SplitReport {
    /// The longest rejoin (`mesh`, else `own`); `Err` names a (re)start that never rejoined.
    pub fn max_rejoin(&self) -> Result<Option<Duration>, String> {
        let mut max: Option<Millis> = None;
        for r in &self.rejoins {
            match r.mesh.or(r.own) {
                Some(v) => max = Some(max.map_or(v, |m| m.max(v))),
                None => {
                    return Err(format!(
                        "{} (re)started at {} never rejoined",
                        r.node,
                        self.rel(r.start)
                    ));
                }
            }
        }
        Ok(max.map(|m| Duration::from_millis(m.max(0) as u64)))
    }

    /// Every node's last sample shows every other node over `transport`.
    pub fn final_links_all(&self, transport: &str) -> bool {
        let names: Vec<&String> = self.intervals.keys().collect();
        names.iter().all(|n| {
            self.final_links.get(*n).is_some_and(|peers| {
                names
                    .iter()
                    .filter(|o| *o != n)
                    .all(|o| peers.get(*o).is_some_and(|t| t == transport))
            })
        })
    }

    fn rel(&self, t: Millis) -> String {
        format!("{:+.1}s", (t - self.t0) as f64 / 1000.0)
    }
}

fn secs(ms: Millis) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "split check: {} nodes, {} samples, window {:?}, stop margin {:?}{}",
            self.intervals.len(),
            self.samples,
            self.params.window,
            self.params.stop_margin,
            self.params
                .since
                .map(|s| format!(", checked from {}", self.rel(s)))
                .unwrap_or_default()
        )?;
        for (node, intervals) in &self.intervals {
            let runs: Vec<String> = intervals
                .iter()
                .map(|i| format!("[{} .. {}]", self.rel(i.start), self.rel(i.end)))
                .collect();
            writeln!(f, "  {node} ran {}", runs.join(" "))?;
        }
        writeln!(
            f,
            "  split seconds: {:.1} outside the restart windows, {:.1} with them",
            self.split_seconds, self.split_seconds_with_windows
        )?;
        writeln!(f, "  violations: {}", self.violations.len())?;
        // Spans per (node, missing peer): consecutive violations less than a gap apart.
        let mut spans: Vec<(&str, &str, Millis, Millis, usize)> = Vec::new();
        let mut sorted: Vec<&Violation> = self.violations.iter().collect();
        sorted.sort_by(|a, b| (&a.node, &a.missing, a.t).cmp(&(&b.node, &b.missing, b.t)));
        for v in sorted {
            match spans.last_mut() {
                Some(s)
                    if s.0 == v.node && s.1 == v.missing && v.t - s.3 <= ms(self.params.gap) =>
                {
                    s.3 = v.t;
                    s.4 += 1;
                }
                _ => spans.push((&v.node, &v.missing, v.t, v.t, 1)),
            }
        }
        spans.sort_by_key(|s| s.2);
        for (node, missing, from, to, n) in spans.iter().take(12) {
            writeln!(
                f,
                "    {node} did not see {missing} from {} to {} ({n} samples, {})",
                self.rel(*from),
                self.rel(*to),
                secs(to - from)
            )?;
        }
        if spans.len() > 12 {
            writeln!(f, "    ... {} more spans", spans.len() - 12)?;
        }
        for v in self.violations.iter().take(5) {
            writeln!(
                f,
                "    first: {} at {} lacks {}",
                v.node,
                self.rel(v.t),
                v.missing
            )?;
        }
        writeln!(f, "  (re)starts:")?;
        for r in &self.rejoins {
            let show = |v: Option<Millis>| v.map_or("never".to_owned(), secs);
            writeln!(
                f,
                "    {} at {}: sees every running node after {}, seen by all after {}",
                r.node,
                self.rel(r.start),
                show(r.own),
                show(r.mesh)
            )?;
        }
        match self.max_rejoin() {
            Ok(Some(max)) => writeln!(f, "  max rejoin window: {max:.2?}")?,
            Ok(None) => writeln!(f, "  max rejoin window: no restarts")?,
            Err(e) => writeln!(f, "  max rejoin window: {e}")?,
        }
        writeln!(f, "  final links:")?;
        for (node, peers) in &self.final_links {
            let list: Vec<String> = peers.iter().map(|(p, t)| format!("{p}:{t}")).collect();
            writeln!(f, "    {node}: {}", list.join(","))?;
        }
        if self.pings_counted + self.pings_excluded > 0 {
            writeln!(
                f,
                "  ctl pings: {} counted, {} excluded (node not running), {} failed",
                self.pings_counted,
                self.pings_excluded,
                self.ping_failures.len()
            )?;
            for p in self.ping_failures.iter().take(5) {
                writeln!(
                    f,
                    "    {} {} .. {}: {}",
                    p.node,
                    self.rel(p.start),
                    self.rel(p.end),
                    p.output.trim().replace('\n', " | ")
                )?;
            }
        }
        Ok(())
    }
}

/// Runs the checks on every node's `links.log` text (node name → text) and the pings.
pub fn check(
    logs: &BTreeMap<String, String>,
    pings: &[PingRecord],
    params: &Params,
) -> SplitReport {
    let gap = ms(params.gap);
    let margin = ms(params.stop_margin);
    let window = ms(params.window);
    let since = params.since.unwrap_or(Millis::MIN);
    let lines: BTreeMap<&str, Timeline> = logs
        .iter()
        .map(|(n, text)| (n.as_str(), Timeline::new(parse_log(text), gap)))
        .collect();
    let names: Vec<&str> = lines.keys().copied().collect();
    let t0 = lines
        .values()
        .filter_map(|l| l.samples.first().map(|s| s.t))
        .min()
        .unwrap_or(0);
    let t_end = lines
        .values()
        .filter_map(|l| l.samples.last().map(|s| s.t))
        .max()
        .unwrap_or(0);
    let in_window = |i: &Interval, t: Millis| t - i.start < window;

    let mut violations = Vec::new();
    for n in &names {
        let line = &lines[n];
        for s in line.samples.iter().filter(|s| s.t >= since) {
            let Some(own) = line.running_at(s.t, margin) else {
                continue; // stopping
            };
            for m in names.iter().filter(|m| *m != n) {
                let Some(theirs) = lines[m].running_at(s.t, margin) else {
                    continue;
                };
                if !s.peers.contains_key(*m) && !in_window(own, s.t) && !in_window(theirs, s.t) {
                    violations.push(Violation {
                        t: s.t,
                        node: (*n).to_owned(),
                        missing: (*m).to_owned(),
                    });
                }
            }
        }
    }
    violations.sort_by_key(|v| v.t);

    // Split seconds on a grid.
    let tick = ms(params.tick).max(1);
    let (mut split_out, mut split_all) = (0u64, 0u64);
    let mut t = t0.max(since);
    while t <= t_end {
        let (mut any, mut outside) = (false, false);
        for n in &names {
            let Some(own) = lines[n].running_at(t, margin) else {
                continue;
            };
            let Some(sample) = lines[n].sample_at(t) else {
                continue;
            };
            for m in names.iter().filter(|m| *m != n) {
                let Some(theirs) = lines[m].running_at(t, margin) else {
                    continue;
                };
                if !sample.peers.contains_key(*m) {
                    any = true;
                    outside |= !in_window(own, t) && !in_window(theirs, t);
                }
            }
        }
        split_all += u64::from(any);
        split_out += u64::from(outside);
        t += tick;
    }

    // Rejoins.
    let mut rejoins = Vec::new();
    for n in &names {
        let line = &lines[n];
        for i in line.intervals.iter().filter(|i| i.start >= since) {
            let sees_all = |s: &Sample| {
                names
                    .iter()
                    .filter(|m| *m != n && lines[*m].running_at(s.t, margin).is_some())
                    .all(|m| s.peers.contains_key(*m))
            };
            let own = line.samples[i.first..=i.last]
                .iter()
                .find(|s| sees_all(s))
                .map(|s| s.t - i.start);
            let mut mesh = own;
            for m in names.iter().filter(|m| *m != n) {
                let first_seen = lines[m]
                    .samples
                    .iter()
                    .find(|s| s.t >= i.start && s.t <= i.end && s.peers.contains_key(*n));
                match first_seen {
                    Some(s) => mesh = mesh.map(|v| v.max(s.t - i.start)),
                    // Never saw it: counts only if m was still running when n's interval ended.
                    None if lines[m].running_at(i.end, 0).is_some() => mesh = None,
                    None => {}
                }
            }
            rejoins.push(Rejoin {
                node: (*n).to_owned(),
                start: i.start,
                own,
                mesh,
            });
        }
    }
    rejoins.sort_by_key(|r| r.start);

    // Pings: count only those entirely inside a running interval, past its window.
    let (mut counted, mut excluded) = (0, 0);
    let mut ping_failures = Vec::new();
    for p in pings {
        let running = lines.get(p.node.as_str()).is_some_and(|l| {
            l.intervals
                .iter()
                .any(|i| i.start + window <= p.start && p.end <= i.end - margin)
        });
        if !running {
            excluded += 1;
            continue;
        }
        counted += 1;
        if !p.ok {
            ping_failures.push(p.clone());
        }
    }

    SplitReport {
        params: params.clone(),
        t0,
        samples: lines.values().map(|l| l.samples.len()).sum(),
        intervals: lines
            .iter()
            .map(|(n, l)| ((*n).to_owned(), l.intervals.clone()))
            .collect(),
        violations,
        split_seconds: split_out as f64 * tick as f64 / 1000.0,
        split_seconds_with_windows: split_all as f64 * tick as f64 / 1000.0,
        rejoins,
        final_links: lines
            .iter()
            .filter_map(|(n, l)| Some(((*n).to_owned(), l.samples.last()?.peers.clone())))
            .collect(),
        pings_counted: counted,
        pings_excluded: excluded,
        ping_failures,
    }
}

/// A program with its arguments and environment changes, rebuilt into a [`Command`] per run.
struct Recipe {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
}

impl Recipe {
    fn of(cmd: &Command) -> Self {
        Self {
            program: cmd.get_program().to_owned(),
            args: cmd.get_args().map(ToOwned::to_owned).collect(),
            env: cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| text.len() - i <= max)
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Runs every node's own `ctl ping` in turn (one at a time, with `pause` in between) on a
/// background thread until stopped; stopping (or dropping) it joins the thread.
pub struct CtlPinger {
    stop: Option<mpsc::Sender<()>>,
    records: Arc<Mutex<Vec<PingRecord>>>,
    thread: Option<JoinHandle<()>>,
}

impl CtlPinger {
    pub fn start(cluster: &RehearsalCluster, pause: Duration) -> Self {
        let recipes: Vec<(String, Recipe)> = cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let cmd = cluster.ctl_command(i, &["ping"]).expect("node exists");
                (n.name.clone(), Recipe::of(&cmd))
            })
            .collect();
        let records = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        let sink = Arc::clone(&records);
        let thread = std::thread::spawn(move || {
            loop {
                for (node, recipe) in &recipes {
                    let start = now_ms();
                    let out = recipe.command().output();
                    let end = now_ms();
                    let (ok, output) = match out {
                        Ok(o) => {
                            let mut text = tail(&o.stdout, 200);
                            text.push_str(&tail(&o.stderr, 300));
                            (o.status.success(), text)
                        }
                        Err(e) => (false, format!("cannot run ctl ping: {e}")),
                    };
                    sink.lock().unwrap().push(PingRecord {
                        start,
                        end,
                        node: node.clone(),
                        ok,
                        output,
                    });
                    match rx.recv_timeout(pause) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        });
        Self {
            stop: Some(tx),
            records,
            thread: Some(thread),
        }
    }

    /// Stops the thread (after its current ping) and returns every record.
    pub fn stop(mut self) -> Vec<PingRecord> {
        self.halt();
        std::mem::take(&mut *self.records.lock().unwrap())
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CtlPinger {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a@h";
    const B: &str = "b@h";
    const C: &str = "c@h";

    /// Samples every 200 ms over `from..=to` (ms), peers from `peers(t)`.
    fn run(
        log: &mut String,
        from: Millis,
        to: Millis,
        peers: impl Fn(Millis) -> Vec<&'static str>,
    ) {
        let mut t = from;
        while t <= to {
            let p = peers(t);
            let list = if p.is_empty() {
                "-".to_owned()
            } else {
                p.iter()
                    .map(|n| format!("{n}:tls"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            log.push_str(&format!("{} {list}\n", 1_000_000 + t));
            t += 200;
        }
    }

    fn others(me: &'static str) -> impl Fn(Millis) -> Vec<&'static str> {
        move |_| [A, B, C].into_iter().filter(|n| *n != me).collect()
    }

    fn logs(a: String, b: String, c: String) -> BTreeMap<String, String> {
        [(A, a), (B, b), (C, c)]
            .into_iter()
            .map(|(n, l)| (n.to_owned(), l))
            .collect()
    }

    fn params() -> Params {
        Params::new(Duration::from_secs(5))
    }

    #[test]
    fn a_clean_restart_within_the_window_is_no_violation() {
        // b stops at 8 s (its last samples alone), restarts at 9.6 s, sees all from 10.6 s.
        let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
        let without_b = |me: &'static str| {
            move |t: Millis| {
                [A, B, C]
                    .into_iter()
                    .filter(|n| *n != me && (*n != B || !(7800..10600).contains(&t)))
                    .collect()
            }
        };
        run(&mut a, 0, 20_000, without_b(A));
        run(&mut c, 0, 20_000, without_b(C));
        run(&mut b, 0, 7_600, others(B));
        run(&mut b, 7_800, 8_000, |_| vec![]);
        run(&mut b, 9_600, 20_000, |t| {
            if t < 10_600 { vec![] } else { vec![A, C] }
        });
        let report = check(&logs(a, b, c), &[], &params());
        assert!(report.violations.is_empty(), "{report}");
        assert_eq!(report.intervals[B].len(), 2, "{report}");
        assert_eq!(report.split_seconds, 0.0, "{report}");
        assert!(report.split_seconds_with_windows > 0.5, "{report}");
        let restart = report
            .rejoins
            .iter()
            .find(|r| r.node == B && r.start > 1_005_000)
            .unwrap();
        assert_eq!(restart.own, Some(1_000), "{report}");
        assert_eq!(restart.mesh, Some(1_000), "{report}");
        assert!(report.final_links_all("tls"), "{report}");
        // A plain log line at the end (a line being appended) is ignored.
        assert_eq!(parse_log("1 a@h:tcp\n2 b@h:t").len(), 1);
    }

    #[test]
    fn a_new_os_pid_is_a_restart_even_after_a_short_gap() {
        let log = "1000 41 -\n1200 41 b@h:tcp\n1400 41 b@h:tcp\n1900 57 -\n2100 57 b@h:tls\n";
        let samples = parse_log(log);
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[3].vm, Some(57));
        let timeline = Timeline::new(samples, 1_000);
        assert_eq!(timeline.intervals.len(), 2, "0.5 s gap, new VM: a restart");
        assert_eq!(timeline.intervals[1].start, 1900);
        // The same VM after a 1.5 s stall (a loaded machine): no restart.
        let stalled = parse_log("1000 41 -\n1200 41 b@h:tcp\n2700 41 b@h:tcp\n");
        assert_eq!(Timeline::new(stalled, 1_000).intervals.len(), 1);
    }

    #[test]
    fn a_split_beyond_the_window_is_seen_and_measured() {
        // a restarts at 5 s (alone), and nobody sees a until 15 s: 10 s of split, 5 s of it
        // outside the window.
        let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
        let lose_a = |me: &'static str| {
            move |t: Millis| {
                [A, B, C]
                    .into_iter()
                    .filter(|n| *n != me && (*n != A || !(4_000..15_000).contains(&t)))
                    .collect()
            }
        };
        run(&mut b, 0, 20_000, lose_a(B));
        run(&mut c, 0, 20_000, lose_a(C));
        run(&mut a, 0, 3_800, others(A));
        run(&mut a, 5_000, 20_000, |t| {
            if t < 15_000 { vec![] } else { vec![B, C] }
        });
        let all = logs(a, b, c);
        let report = check(&all, &[], &params());
        assert!(!report.violations.is_empty(), "{report}");
        assert!(
            (4.5..=5.5).contains(&report.split_seconds),
            "{}: {report}",
            report.split_seconds
        );
        assert!(
            (9.5..=10.5).contains(&report.split_seconds_with_windows),
            "{report}"
        );
        let first = &report.violations[0];
        assert!((1_010_000..1_010_400).contains(&first.t), "{report}");
        assert!(
            report
                .violations
                .iter()
                .all(|v| v.node == A || v.missing == A)
        );
        let restart = report
            .rejoins
            .iter()
            .find(|r| r.node == A && r.start > 1_004_000)
            .unwrap();
        assert_eq!(restart.own, Some(10_000));
        assert_eq!(report.max_rejoin().unwrap(), Some(Duration::from_secs(10)));
        // Checking only from 15 s on: nothing left.
        let later = check(&all, &[], &params().since(1_015_000));
        assert!(later.violations.is_empty(), "{later}");
        let text = report.to_string();
        assert!(text.contains("a@h did not see b@h from"), "{text}");
    }

    #[test]
    fn a_stopping_node_is_no_violation_but_losing_it_earlier_is() {
        // b stops for good at 8 s; a and c lose it 0.4 s before its last sample, b loses them too.
        let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
        let drop_b = |me: &'static str, at: Millis| {
            move |t: Millis| {
                [A, B, C]
                    .into_iter()
                    .filter(|n| *n != me && (*n != B || t < at))
                    .collect()
            }
        };
        run(&mut a, 0, 20_000, drop_b(A, 7_600));
        run(&mut c, 0, 20_000, drop_b(C, 7_600));
        run(&mut b, 0, 7_400, others(B));
        run(&mut b, 7_600, 8_000, |_| vec![]);
        let report = check(&logs(a, b, c), &[], &params());
        assert!(report.violations.is_empty(), "{report}");
        assert_eq!(report.split_seconds_with_windows, 0.0, "{report}");
        assert!(report.final_links[A].keys().eq([C]));

        // Lost 2 s before b's end: b was still running, a violation.
        let (mut a, mut c) = (String::new(), String::new());
        run(&mut a, 0, 20_000, drop_b(A, 6_000));
        run(&mut c, 0, 20_000, drop_b(C, 6_000));
        let mut b = String::new();
        run(&mut b, 0, 8_000, others(B));
        let report = check(&logs(a, b, c), &[], &params());
        assert!(!report.violations.is_empty(), "{report}");
        assert!(
            report
                .violations
                .iter()
                .all(|v| v.missing == B && v.t < 1_007_600)
        );
    }

    #[test]
    fn ping_failures_count_only_while_the_node_runs() {
        let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
        run(&mut a, 0, 20_000, others(A));
        run(&mut c, 0, 20_000, others(C));
        run(&mut b, 0, 8_000, others(B));
        run(&mut b, 10_000, 20_000, others(B));
        let ping = |node: &str, start: Millis, ok: bool| PingRecord {
            start: 1_000_000 + start,
            end: 1_000_000 + start + 600,
            node: node.to_owned(),
            ok,
            output: if ok {
                "pong\n"
            } else {
                "Node not responding to pings.\n"
            }
            .to_owned(),
        };
        let pings = [
            ping(B, 6_000, true),
            ping(B, 7_600, false),  // stopping
            ping(B, 9_000, false),  // down
            ping(B, 12_000, false), // within the window after its restart
            ping(B, 16_000, false), // running: counts
            ping(A, 16_000, true),
        ];
        let report = check(&logs(a, b, c), &pings, &params());
        assert_eq!(report.pings_counted, 3, "{report}");
        assert_eq!(report.pings_excluded, 3, "{report}");
        assert_eq!(report.ping_failures, [pings[4].clone()], "{report}");
    }
}
