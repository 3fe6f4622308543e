//! The file agent: on the shell path (SSH, or `become`), the host runs distls's file operations
//! as a small Perl program, `atomic_file.pl`, fed to `perl -e`.

use super::{OUTPUT_LIMIT, RawOutcome, Transport, TransportError};
use crate::atomic_file;
use crate::shell::shell_quote;

use std::path::Path;
use std::time::Duration;

/// The file agent: the operations of atomic_file.rs, in Perl, for the shell path.
const AGENT: &str = include_str!("../atomic_file.pl");

/// A file operation on a host gets this long (a write of a few kilobytes over a slow link).
const FILE_TIMEOUT: Duration = Duration::from_secs(60);

impl Transport {
    /// Run one operation of the file agent (`atomic_file.pl`) on the host.
    pub(super) async fn agent(
        &self,
        op: &str,
        path: &Path,
        args: &[String],
        input: Option<&[u8]>,
        stdout_limit: usize,
    ) -> Result<RawOutcome, TransportError> {
        // The node's environment reaches its commands, not the agent: no module path or option
        // of the plan's env (or the host's) changes what this program does.
        let mut words = vec![
            "exec env -u PERL5LIB -u PERL5OPT -u PERLLIB -u PERLIO -u PERL_UNICODE perl -e"
                .to_owned(),
            shell_quote(AGENT),
            "--".to_owned(),
            op.to_owned(),
            shell_quote(&path.display().to_string()),
        ];
        words.extend(args.iter().map(|a| shell_quote(a)));
        let label = format!("distls file agent: {op} {}", path.display());
        self.exec_bytes(&words.join(" "), &label, input, FILE_TIMEOUT, stdout_limit)
            .await
    }

    /// An agent operation that must succeed (exit 0); its stdout.
    pub(super) async fn agent_ok(
        &self,
        op: &str,
        path: &Path,
        args: &[String],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, TransportError> {
        let out = self.agent(op, path, args, input, OUTPUT_LIMIT).await?;
        if out.status != Some(0) {
            return Err(self.agent_error(path, &out));
        }
        Ok(out.stdout)
    }

    pub(super) fn agent_error(&self, path: &Path, out: &RawOutcome) -> TransportError {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // The agent's own messages start with the path; anything else (no perl, sudo said no)
        // is shown as it came.
        let detail = match said.split_once(": ") {
            Some((first, rest)) if Path::new(first) == path => rest.to_string(),
            _ if said.is_empty() => format!("the file agent exited with {:?}", out.status),
            _ => said,
        };
        self.file_error(path, detail)
    }

    /// The agent's write: it gets the length and sha256 of `bytes` and renames nothing unless the
    /// bytes it received and wrote match both. `send` is how many bytes actually go (all of them,
    /// except in the test of a stream cut short).
    pub(super) async fn agent_write(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: &str,
        like: Option<&Path>,
        send: usize,
    ) -> Result<(), TransportError> {
        let mut args = vec![
            bytes.len().to_string(),
            atomic_file::sha256_hex(bytes),
            mode.to_owned(),
        ];
        args.extend(like.map(|l| l.display().to_string()));
        self.agent_ok("write", path, &args, Some(&bytes[..send]))
            .await
            .map(|_| ())
    }

    /// A write whose stream to the host is cut after `send` bytes, for the tests that prove it
    /// changes nothing.
    #[doc(hidden)]
    pub async fn write_file_cut_short(
        &self,
        path: &Path,
        bytes: &[u8],
        send: usize,
    ) -> Result<(), TransportError> {
        self.agent_write(path, bytes, "keep:644", None, send.min(bytes.len()))
            .await
    }
}
