//! How the node's environment (the plan's `env`) reaches the commands and processes distls starts
//! through a shell: on stdin, never in argv.

use super::Transport;
use crate::shell::shell_quote;

impl Transport {
    /// `[become] sh -c 'script'`, and what goes to its stdin first: the node's environment as
    /// `export K='V'` lines read by the shell before the script runs. Never in argv (`ps` shows
    /// argv to every user of the host), and it reaches the command even through sudo, which
    /// resets the environment.
    pub(super) fn shell_line(
        &self,
        script: &str,
        extra_env: &[(String, String)],
    ) -> (String, Vec<u8>) {
        let mut words: Vec<String> = Vec::new();
        if let Some(become_command) = &self.become_command {
            words.push(become_command.clone());
        }
        let env: Vec<&(String, String)> = self.env.iter().chain(extra_env).collect();
        let preamble = env_preamble(&env);
        words.push("sh -c".into());
        if preamble.is_empty() {
            words.push(shell_quote(script));
        } else {
            words.push(shell_quote(&format!("{ENV_READER}\n{script}")));
        }
        (words.join(" "), preamble)
    }
}

/// Reads the environment `shell_line` feeds on stdin: a byte count line, then that many bytes of
/// `export` lines. `read` and `dd bs=1` take exactly those bytes from the pipe, so whatever
/// follows (a file's bytes, a probe's requests) stays for the command.
const ENV_READER: &str = r#"IFS= read -r distls_env_bytes || exit 125
eval "$(dd bs=1 count="$distls_env_bytes" 2>/dev/null)" || exit 125
unset distls_env_bytes"#;

/// `<byte count>\nexport K='V'\n…` for [`ENV_READER`]; empty without an environment.
fn env_preamble(env: &[&(String, String)]) -> Vec<u8> {
    if env.is_empty() {
        return Vec::new();
    }
    let body: String = env
        .iter()
        .map(|(key, value)| format!("export {key}={}\n", shell_quote(value)))
        .collect();
    format!("{}\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The argv of every process between distls and the command, read from /proc.
    const ANCESTRY_ARGV: &str = r#"p=$$
while [ "$p" -gt 1 ]; do
  tr '\0' ' ' < /proc/$p/cmdline; echo
  p=$(sed -e 's/^.*) //' /proc/$p/stat | cut -d' ' -f2)
  [ "$p" = "$DISTLS_TEST_PARENT" ] && break
done"#;

    /// The plan's env reaches commands (and long-lived processes) through `become` without
    /// appearing in any argv: `ps` shows argv to every user of the host.
    #[tokio::test]
    async fn the_node_environment_never_appears_in_argv() {
        let secret = "s3cr3t value with 'quotes' and\nnewline";
        let env = vec![
            ("DISTLS_SECRET".to_string(), secret.to_string()),
            (
                "DISTLS_TEST_PARENT".to_string(),
                std::process::id().to_string(),
            ),
        ];
        for become_command in [None, Some("env".to_string())] {
            let transport = Transport::local(env.clone(), become_command.clone());
            let script = format!("printf '%s' \"$DISTLS_SECRET\" > /dev/stderr; {ANCESTRY_ARGV}");
            let out = transport
                .run(&script, Duration::from_secs(10))
                .await
                .unwrap();
            assert!(out.success(), "{out:?}");
            assert_eq!(out.stderr, secret, "become {become_command:?}");
            assert!(!out.stdout.is_empty());
            assert!(!out.stdout.contains("s3cr3t"), "{}", out.stdout);
            // With input after the environment, the command gets exactly the input.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            transport
                .write_file(&path, b"line one\nline two", 0o600)
                .await
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"line one\nline two");
            // A long-lived process: the environment first, then its own stdin.
            let mut spawned = transport
                .spawn(
                    "sh",
                    &[
                        "-c".into(),
                        format!("read -r line; printf '%s|%s|' \"$line\" \"$DISTLS_SECRET\"; {ANCESTRY_ARGV}"),
                    ],
                    &[],
                    dir.path(),
                )
                .await
                .unwrap();
            spawned.stdin.write_all(b"hello\n").await.unwrap();
            drop(spawned.stdin);
            let mut text = String::new();
            spawned.stdout.read_to_string(&mut text).await.unwrap();
            spawned.handle.finish().await;
            let expected = format!("hello|{secret}|");
            assert!(text.starts_with(&expected), "{text}");
            assert!(!text[expected.len()..].contains("s3cr3t"), "{text}");
        }
    }
}
