//! Stopping a node: its stop command; if that fails, the VM itself through a probe; if it
//! still runs, signals to the OS pid it reported.

use super::hooks::Hook;
use super::*;

impl Rollout<'_> {
    /// `seen`: what the node was observed to run just before (its OS pid is taken from it).
    pub(super) async fn stop(
        &mut self,
        index: usize,
        seen: &NodeInfo,
        intent: Step,
        done: Step,
    ) -> StepResult {
        if let Some(gate) = self.before_stop_gate(index, seen, intent) {
            let timeout = self.targets[index].spec.timeouts.before_stop;
            self.command_gate(index, Hook::BeforeStop, &gate, timeout)
                .await?;
        }
        let os_pid = self.stop_begins(index, seen, intent).await?;
        let spec = &self.targets[index].spec;
        let (command, timeout) = (spec.commands.stop.clone(), spec.timeouts.stop);
        let deadline = Instant::now() + timeout;
        let outcome = self.cluster.hosts[index].run(&command, timeout).await;
        self.stop_ends(index, os_pid, &outcome, deadline, done)
            .await
    }

    /// The plan's gate before this stop, if one applies: on the way to TLS, while the node runs.
    /// A rollback (and a zero-split run's rolls back to plain) goes without it: it is undoing a
    /// failure, and a quorum check could keep it from ever finishing (docs/hooks.md).
    pub(super) fn before_stop_gate(
        &self,
        index: usize,
        seen: &NodeInfo,
        intent: Step,
    ) -> Option<String> {
        let applies =
            intent == Step::Stopping && seen.is_up() && self.gate_applies(index, Hook::BeforeStop);
        applies
            .then(|| self.targets[index].spec.commands.before_stop.clone())
            .flatten()
    }

    /// Up to the stop command: the node's OS pid (from the node itself, in case the stop command
    /// does not bring it down), then `intent` journaled.
    pub(super) async fn stop_begins(
        &mut self,
        index: usize,
        seen: &NodeInfo,
        intent: Step,
    ) -> StepResult<Option<u32>> {
        self.report_node(index, NodeActivity::Stopping);
        let os_pid = match *seen {
            NodeInfo::Up { os_pid, .. } => Some(os_pid),
            // No rpc possible: the VM listening on the port epmd gives for it is the node.
            NodeInfo::Unreachable { epmd_port, .. } => {
                self.beam_listening_on(index, epmd_port).await?
            }
            NodeInfo::Down { .. } => None,
        };
        self.mark(index, intent)?;
        Ok(os_pid)
    }

    /// After the stop command (`outcome`): the node down by `deadline`, by its VM or its OS pid
    /// if the command did not do it, then `done` journaled.
    pub(super) async fn stop_ends(
        &mut self,
        index: usize,
        os_pid: Option<u32>,
        outcome: &CommandResult,
        deadline: Instant,
        done: Step,
    ) -> StepResult {
        let command = self.targets[index].spec.commands.stop.clone();
        let said = command_failure(&command, outcome).unwrap_or_default();
        if !said.is_empty() && self.targets[index].spec.flavor.stops_booting_vm() {
            self.stop_vm_directly(index, deadline).await?;
        }
        if !self.wait_running(index, Running::Down, deadline).await? {
            let Some(os_pid) = os_pid else {
                return Err(self.step_failed(
                    index,
                    &format!("it still runs after its stop command. {said}"),
                ));
            };
            self.force_stop(index, os_pid, &said).await?;
        } else if !said.is_empty() {
            self.note(Note::StoppedDespiteItsCommand {
                node: self.name(index).to_string(),
                said,
            });
        }
        self.mark(index, done)
    }

    /// The stop command did not bring the node down in time: SIGTERM to its OS pid, then SIGKILL
    /// after `timeouts.kill_grace`, the way MongooseIM's `force_stop` does, through the node's
    /// transport (so over SSH and with `become` too). Each signal is recorded in the journal first.
    pub(super) async fn force_stop(&mut self, index: usize, os_pid: u32, said: &str) -> StepResult {
        // Only the process the node itself reported, and only while it still reports it.
        match self.observe(index).await? {
            NodeInfo::Up { os_pid: now, .. } if now != os_pid => {
                return Err(self.step_failed(
                    index,
                    &format!(
                        "it still runs after its stop command (now as OS pid {now}, was {os_pid}; not signalled). {said}"
                    ),
                ));
            }
            _ => {}
        }
        let started = Instant::now();
        for signal in ["TERM", "KILL"] {
            self.send_signal(index, os_pid, signal, said).await?;
            if self.await_gone(index, os_pid, signal, started).await? {
                return Ok(());
            }
        }
        Err(self.step_failed(
            index,
            &format!("it still runs after its stop command and SIGKILL to OS pid {os_pid}. {said}"),
        ))
    }

    /// One signal of [`Self::force_stop`]: the pid checked again (it may have been reused since
    /// the last look), the fact journaled, then `kill`.
    async fn send_signal(
        &mut self,
        index: usize,
        os_pid: u32,
        signal: &str,
        said: &str,
    ) -> StepResult {
        let name = self.name(index).to_string();
        let spec = &self.targets[index].spec;
        let what = if signal == "TERM" {
            format!(
                "force stop: still running {} after its stop command; SIGTERM to OS pid {os_pid}",
                humantime::format_duration(spec.timeouts.stop)
            )
        } else {
            format!(
                "force stop: still running {} after SIGTERM; SIGKILL to OS pid {os_pid}",
                humantime::format_duration(spec.timeouts.kill_grace)
            )
        };
        let host = self.cluster.hosts[index].clone();
        let flags_file = self.targets[index].dist_args.clone();
        if let Err(why) =
            crate::signal_target::check(host.as_ref(), os_pid, &name, &flags_file).await
        {
            return Err(self.step_failed(
                index,
                &format!(
                    "it still runs after its stop command, and distls refuses to signal OS pid {os_pid}: {why}. Stop the node by hand, then rerun. {said}"
                ),
            ));
        }
        let stop_said = (signal == "TERM" && !said.is_empty()).then(|| said.to_string());
        self.note(Note::Signalling {
            node: name.clone(),
            what: what.clone(),
            stop_said,
        });
        // The journal gets the fact, not the command's output.
        self.journal.record(Some(&name), &what);
        self.store.save(&mut self.journal)?;
        let out = host
            .run(&format!("kill -{signal} {os_pid}"), Duration::from_secs(30))
            .await?;
        if !out.success() && self.os_process_alive(index, os_pid).await? {
            return Err(self.step_failed(
                index,
                &format!(
                    "cannot signal its OS pid {os_pid} (`kill -{signal} {os_pid}` on {}: {})",
                    host.describe(),
                    out.tail()
                ),
            ));
        }
        Ok(())
    }

    /// Whether the OS pid went within `timeouts.kill_grace` of `signal` (and the node with it);
    /// `started`: when the first signal went.
    async fn await_gone(
        &mut self,
        index: usize,
        os_pid: u32,
        signal: &str,
        started: Instant,
    ) -> std::result::Result<bool, Failure> {
        let name = self.name(index).to_string();
        let grace = self.targets[index].spec.timeouts.kill_grace;
        let deadline = Instant::now() + grace;
        loop {
            if !self.os_process_alive(index, os_pid).await? {
                let done = format!(
                    "force stop: OS pid {os_pid} is gone {:.1}s after SIGTERM{}",
                    started.elapsed().as_secs_f64(),
                    if signal == "KILL" {
                        " (it took SIGKILL)"
                    } else {
                        ""
                    }
                );
                self.note(Note::ForceStopped {
                    node: name.clone(),
                    what: done.clone(),
                });
                self.journal.record(Some(&name), &done);
                let deadline = Instant::now() + grace;
                if !self.wait_running(index, Running::Down, deadline).await? {
                    return Err(self.step_failed(
                        index,
                        &format!("OS pid {os_pid} is gone, but the node still answers"),
                    ));
                }
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.pause_between_polls().await?;
        }
    }

    /// The OS pid of the Erlang VM (`beam*`) listening on `port` on the node's host (Linux /proc),
    /// if there is one.
    pub(super) async fn beam_listening_on(&self, index: usize, port: u16) -> Result<Option<u32>> {
        let script = format!(
            r#"hex=$(printf ':%04X' {port})
for inode in $(awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p {{ print $10 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
  for fd in $(find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null); do
    pid=${{fd#/proc/}}; pid=${{pid%%/*}}
    case "$(cat /proc/$pid/comm 2>/dev/null)" in beam*) echo "$pid"; exit 0;; esac
  done
done
exit 1"#
        );
        let out = self.cluster.hosts[index]
            .run(&script, Duration::from_secs(30))
            .await?;
        let pid = out.stdout.trim().parse().ok().filter(|_| out.success());
        tracing::debug!(
            node = self.name(index),
            port,
            ?pid,
            "VM listening on its port"
        );
        Ok(pid)
    }

    /// Whether the OS process is alive on the node's host (a zombie counts as gone).
    pub(super) async fn os_process_alive(&self, index: usize, os_pid: u32) -> Result<bool> {
        let script = format!(
            "if [ -r /proc/{os_pid}/stat ]; then s=$(sed -e 's/^.*) //' /proc/{os_pid}/stat 2>/dev/null | cut -c1); [ -n \"$s\" ] && [ \"$s\" != Z ] && [ \"$s\" != X ]; else kill -0 {os_pid} 2>/dev/null; fi"
        );
        let out = self.cluster.hosts[index]
            .run(&script, Duration::from_secs(30))
            .await?;
        Ok(out.success())
    }

    /// The stop command failed and the node may still run (e.g. still booting): ask the VM
    /// itself, through the probe that reaches it, to stop; halt it if that does not work.
    pub(super) async fn stop_vm_directly(&self, index: usize, deadline: Instant) -> StepResult {
        let grace = Duration::from_secs(10);
        for halt in [false, true] {
            let running = self.running(&self.observe(index).await?);
            let via = match running {
                Running::Down => return Ok(()),
                // No probe reaches it: the escalation by OS pid takes over.
                Running::Unreachable | Running::Other => return Ok(()),
                Running::Tls | Running::Plain => Via::tls(self.links_tls(running)),
            };
            self.note(Note::AskingVmToStop {
                node: self.name(index).to_string(),
                halt,
            });
            self.cluster
                .observer
                .stop_node(&self.targets[index], via, halt)
                .await?;
            let until = (Instant::now() + grace).min(deadline);
            if self.wait_running(index, Running::Down, until).await? {
                return Ok(());
            }
        }
        Ok(())
    }
}
