//! Before distls signals an OS pid (force stop): the pid comes from the node itself (or from the
//! socket its epmd port points at), so it is checked on the host first. Signalling pid 0 or -1
//! would hit a whole process group or every process; a reused pid or another user's process is
//! not the node.

use crate::host::Host;
use crate::shell::shell_quote;
use std::path::Path;
use std::time::Duration;

/// Whether `pid` on the node's host is an Erlang VM (`beam*`) running `node` (its
/// `-sname`/`-name` argument), owned by the user distls acts as there or by the owner of the
/// node's flags file. `Err` says why not, for the operator.
pub async fn check(host: &dyn Host, pid: u32, node: &str, flags_file: &Path) -> Result<(), String> {
    if pid <= 1 {
        return Err(format!(
            "OS pid {pid} is not a process distls may signal (0 and 1 stand for a process group or init)"
        ));
    }
    let short = node.split('@').next().unwrap_or(node);
    // The command line is only matched, never printed: it may hold `-setcookie`.
    let script = format!(
        r#"pid={pid}; node={node}; short={short}; file={file}
[ -r /proc/$pid/cmdline ] || {{ echo "no process $pid on this host"; exit 1; }}
comm=$(cat /proc/$pid/comm 2>/dev/null)
case "$comm" in beam*) ;; *) echo "OS pid $pid is \`$comm\`, not an Erlang VM (beam)"; exit 1;; esac
uid=$(awk '/^Uid:/ {{ print $2 }}' /proc/$pid/status)
me=$(id -u)
owner=$(stat -L -c %u -- "$file" 2>/dev/null)
if [ "$uid" != "$me" ] && [ "$uid" != "$owner" ]; then
  echo "OS pid $pid belongs to uid $uid, neither the user distls acts as (uid $me) nor the owner of $file (uid ${{owner:-unknown}})"; exit 1
fi
tr '\0' '\n' < /proc/$pid/cmdline | awk -v a="$node" -v b="$short" '(prev == "-sname" || prev == "-name") && ($0 == a || $0 == b) {{ found = 1 }} {{ prev = $0 }} END {{ exit !found }}' \
  || {{ echo "OS pid $pid is an Erlang VM, but not node $node (no -sname/-name $node in its command line)"; exit 1; }}"#,
        node = shell_quote(node),
        short = shell_quote(short),
        file = shell_quote(&flags_file.display().to_string()),
    );
    let out = host
        .run(&script, Duration::from_secs(30))
        .await
        .map_err(|e| format!("cannot inspect OS pid {pid}: {e}"))?;
    if out.success() {
        Ok(())
    } else {
        let said = out.stdout.trim();
        Err(if said.is_empty() {
            format!("cannot inspect OS pid {pid}: {}", out.tail())
        } else {
            said.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;
    use std::process::{Command, Stdio};

    /// A process the test starts and stops by pid.
    struct Started(std::process::Child);

    impl Drop for Started {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start(program: &str, args: &[&str], dir: &Path) -> Started {
        Started(
            Command::new(program)
                .args(args)
                .current_dir(dir)
                .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
                .env("ERL_CRASH_DUMP_SECONDS", "0")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    async fn wait_for_comm(pid: u32, prefix: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.starts_with(prefix))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} never became {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn only_the_nodes_own_vm_may_be_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let flags = dir.path().join("vm.dist.args");
        std::fs::write(&flags, "").unwrap();
        let transport = Transport::local(vec![], None);
        let node = "sigtest@localhost";
        for pid in [0, 1] {
            let err = check(&transport, pid, node, &flags).await.unwrap_err();
            assert!(err.contains(&format!("OS pid {pid} is not")), "{err}");
        }
        let sleeper = start("sleep", &["60"], dir.path());
        let err = check(&transport, sleeper.0.id(), node, &flags)
            .await
            .unwrap_err();
        assert!(err.contains("`sleep`, not an Erlang VM"), "{err}");
        // A VM, but another node's (the name only as a plain argument after -extra: no
        // distribution, so no epmd needed).
        let other = start(
            "erl",
            &["-noshell", "-extra", "-sname", "othernode@localhost"],
            dir.path(),
        );
        let ours = start("erl", &["-noshell", "-extra", "-sname", node], dir.path());
        wait_for_comm(other.0.id(), "beam").await;
        wait_for_comm(ours.0.id(), "beam").await;
        let err = check(&transport, other.0.id(), node, &flags)
            .await
            .unwrap_err();
        assert!(err.contains("not node sigtest@localhost"), "{err}");
        check(&transport, ours.0.id(), node, &flags).await.unwrap();
        let gone = sleeper.0.id();
        drop(sleeper);
        let err = check(&transport, gone, node, &flags).await.unwrap_err();
        assert!(err.contains("no process"), "{err}");
    }
}
