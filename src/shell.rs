//! POSIX shell words: every command distls runs on a node's host goes through `sh -c`, locally
//! or over SSH, so every value it interpolates is quoted here. A leaf: flavors, the transport
//! and the preflight all build command lines.

/// Single-quote a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_survives_the_shell_whole() {
        let word = "it's a $HOME `x` \"y\"";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(word)))
            .output()
            .unwrap();
        assert_eq!(out.stdout, word.as_bytes());
    }
}
