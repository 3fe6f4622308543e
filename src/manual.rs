//! `distls completions SHELL` and `distls man`: generated from the command-line definition
//! itself, so they cannot drift from it. docs/distls.1 is the committed output of `distls man`
//! (a unit test keeps it current).

use crate::cli::{Cli, CompletionShell};
use crate::error::{Error, Message, Result, exit_code};
use clap::CommandFactory;
use clap_mangen::roff::{Roff, bold, roman};
use std::io::Write;

/// The completion script for `shell`.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "distls", &mut out);
    out
}

/// The manual page: clap's name, synopsis, description and options of `distls`, then one
/// subsection per command (its synopsis and options), the environment and the exit status.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let page = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    roff.to_writer(&mut out)?;
    // A command group (`plan`) is shown as its commands (`distls plan discover`).
    let commands = command.get_subcommands().flat_map(|sub| {
        let group = format!("distls {}", sub.get_name());
        if sub.has_subcommands() {
            sub.get_subcommands()
                .map(|inner| (format!("{group} {}", inner.get_name()), inner.clone()))
                .collect::<Vec<_>>()
        } else {
            vec![(group, sub.clone())]
        }
    });
    for (name, sub) in commands {
        let mut roff = Roff::default();
        roff.control("SS", [name.as_str()]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
        roff.to_writer(&mut out)?;
        // The command's own synopsis and options, as paragraphs of its subsection.
        let sub_page = clap_mangen::Man::new(sub.clone().bin_name(name.as_str()));
        let mut parts = Vec::new();
        sub_page.render_synopsis_section(&mut parts)?;
        if sub.get_arguments().next().is_some() {
            sub_page.render_options_section(&mut parts)?;
        }
        let parts = String::from_utf8_lossy(&parts)
            .replace(".SH SYNOPSIS\n", ".PP\n")
            .replace(".SH OPTIONS\n", ".PP\n");
        out.extend_from_slice(parts.as_bytes());
    }
    let mut roff = Roff::default();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", []);
    roff.text([bold("RUST_LOG")]);
    roff.text([roman(
        "log filter for stderr (e.g. distls=debug); no level shows a cookie or a key",
    )]);
    roff.control("TP", []);
    roff.text([bold("DISTLS_STATE_DIR")]);
    roff.text([roman(
        "where the journal and the state lock live (as --state-dir)",
    )]);
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_code::TABLE {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "The plan format, the rolls, preflight, locks and the exit codes in detail: the docs/ folder of distls (docs/plan-format.md, docs/zero-split.md, docs/preflight.md, docs/locks.md, docs/exit-codes.md).",
    )]);
    roff.to_writer(&mut out)?;
    page.render_version_section(&mut out)?;
    Ok(out)
}

pub fn print_completions(shell: CompletionShell) -> Result<()> {
    write_stdout(&completions(shell))
}

pub fn print_man_page() -> Result<()> {
    let page = man_page().map_err(|e| {
        Error::Internal(Message::from(format!("cannot render the manual page: {e}")))
    })?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Internal(Message::from(format!("cannot write to stdout: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_committed_man_page_is_current() {
        let page = text(man_page().unwrap());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/distls.1");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page,
            "{} is not the output of `distls man`; regenerate it: cargo run -- man > docs/distls.1",
            path.display()
        );
        for needle in [
            "EXIT STATUS",
            "distls migrate",
            "\\-\\-classic",
            "\\-\\-break\\-lock",
            "130",
        ] {
            assert!(page.contains(needle), "{needle} in the man page");
        }
    }

    #[test]
    fn completions_name_every_subcommand_and_bash_parses_them() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = text(completions(shell));
            for word in [
                "migrate", "rollback", "status", "check", "demo", "classic", "dry-run",
            ] {
                assert!(script.contains(word), "{shell:?}: {word}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("distls.bash");
        std::fs::write(&file, completions(CompletionShell::Bash)).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
