//! Waiting on the cluster: nothing sleeps to synchronise, every wait polls a condition under a
//! deadline.

use super::{RehearsalCluster, RehearsalError};

use std::thread;
use std::time::{Duration, Instant};

/// Poll interval of [`RehearsalCluster::wait_until`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);

impl RehearsalCluster {
    /// Waits until `ctl started` succeeds on every node (status `started` and answering pings).
    pub fn wait_started(&self, deadline: Duration) -> Result<(), RehearsalError> {
        poll_until("every rehearsal node to be started", deadline, &mut || {
            let problems: Vec<String> = thread::scope(|s| {
                let handles: Vec<_> = (0..self.nodes.len())
                    .map(|i| s.spawn(move || self.ctl(i, &["started"])))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("ctl started thread panicked"))
                    .zip(&self.nodes)
                    .filter(|(out, _)| !out.status.success())
                    .map(|(out, node)| {
                        let why = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                        format!("{}: {why}", node.name)
                    })
                    .collect()
            });
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    }

    /// Waits until every node has every other node as an `up` peer, whatever the protocol.
    pub fn wait_meshed(&self, deadline: Duration) -> Result<(), RehearsalError> {
        poll_until(
            "the rehearsal cluster to be fully meshed",
            deadline,
            &mut || {
                let problems: Vec<String> = self
                    .links_all()
                    .into_iter()
                    .zip(&self.nodes)
                    .filter_map(|(links, node)| match links {
                        Err(err) => Some(format!("{}: {err}", node.name)),
                        Ok(links) => {
                            let missing: Vec<&str> = self
                                .nodes
                                .iter()
                                .filter(|n| {
                                    n.name != node.name && !links.peers.contains_key(&n.name)
                                })
                                .map(|n| n.name.as_str())
                                .collect();
                            (!missing.is_empty())
                                .then(|| format!("{} misses {}", node.name, missing.join(", ")))
                        }
                    })
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            },
        )
    }

    /// Polls `cond` every ~100 ms until it holds, or fails with [`RehearsalError::Timeout`]
    /// once `deadline` has passed. `cond` is always tried at least once.
    pub fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<(), RehearsalError> {
        poll_until(what, deadline, &mut || {
            if cond() { Ok(()) } else { Err(String::new()) }
        })
    }
}

pub fn poll_until(
    what: &str,
    deadline: Duration,
    check: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), RehearsalError> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(RehearsalError::Timeout {
                what: what.to_owned(),
                after: deadline,
                last: (!last.is_empty()).then_some(last),
            });
        }
        thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_times_out_with_what_and_last_observation() {
        let mut calls = 0;
        let err = poll_until("the moon", Duration::from_millis(250), &mut || {
            calls += 1;
            Err(format!("try {calls}"))
        })
        .unwrap_err();
        assert!(calls >= 2, "{calls}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("timed out after 250ms waiting for the moon (last seen: try "),
            "{msg}"
        );
        assert!(poll_until("now", Duration::ZERO, &mut || Ok(())).is_ok());
    }
}
