//! `flavor.release`: what an Elixir release needs on disk before distls touches it, read from the
//! release's own files: the release script the default commands call (`bin/NAME`, NAME from the
//! one `NAME.rel` beside env.sh), and `lib/ssl-*` (a release without `:ssl` in
//! `extra_applications` ships no ssl, and its VM dies at boot with `Protocol 'inet_tls': not
//! supported`).

use super::{COMMAND_TIMEOUT, Verdict};
use crate::flavor::{Flavor, elixir};
use crate::plan::NodeSpec;
use crate::shell::shell_quote;
use crate::transport::Transport;

pub const CHECK: &str = "flavor.release";

/// The verdict for an elixir node; None for the other flavors.
pub async fn verdict(transport: &Transport, spec: &NodeSpec) -> Option<Verdict> {
    if spec.flavor != Flavor::Elixir {
        return None;
    }
    let root = elixir::release_root(&spec.vm_dist_args);
    let vsn_dir = spec.vm_dist_args.parent()?.display().to_string();
    // One line per finding: the release's name, whether its script runs, whether ssl is there.
    let script = format!(
        "cd {} || exit 3; set -- *.rel; [ -f \"$1\" ] || exit 4; n=$(basename \"$1\" .rel); echo \"$n\"; if [ -x {root}/bin/\"$n\" ]; then echo script; fi; for d in {root}/lib/ssl-*; do [ -d \"$d\" ] && echo ssl; break; done",
        shell_quote(&vsn_dir),
        root = shell_quote(&root.display().to_string())
    );
    let outcome = transport.run(&script, COMMAND_TIMEOUT).await;
    let lines: Vec<String> = match &outcome {
        Ok(o) if o.success() => o.stdout.lines().map(str::to_owned).collect(),
        _ => {
            return Some(Verdict::fail(
                CHECK,
                format!(
                    "{vsn_dir} has no NAME.rel: it is not the releases/VSN directory of a mix release"
                ),
                "point `flags_file` at the release's releases/VSN/env.sh",
            ));
        }
    };
    let name = lines.first().cloned().unwrap_or_default();
    let bin = root.join("bin").join(&name);
    if !lines.iter().any(|l| l == "script") {
        return Some(Verdict::fail(
            CHECK,
            format!(
                "the release script {} is missing or not executable",
                bin.display()
            ),
            "the flavor's default commands call it: restore the release (or give the node's commands in the plan)",
        ));
    }
    if !lines.iter().any(|l| l == "ssl") {
        return Some(Verdict::fail(
            CHECK,
            format!(
                "the release {} has no lib/ssl-*: its VM cannot run TLS distribution (it would die at boot with \"Protocol 'inet_tls': not supported\")",
                root.display()
            ),
            "add :ssl to extra_applications in the app's mix.exs, rebuild and deploy the release, then run distls again",
        ));
    }
    Some(Verdict::ok(
        CHECK,
        format!("release {name}: {} runs, lib/ssl-* is there", bin.display()),
    ))
}
