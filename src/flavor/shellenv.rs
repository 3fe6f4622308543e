//! Shell-sourced config files (ejabberdctl.cfg, rabbitmq-env.conf): find a variable's active
//! assignment and append words to its value, leaving every other byte alone.

use super::FlavorError;

/// One active `VAR=value` (optionally `export VAR=value`) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// 1-based line number.
    pub line: usize,
    /// Byte range of the value as written (quotes included).
    pub start: usize,
    pub end: usize,
    pub quote: Option<char>,
    /// The value without its quotes.
    pub value: String,
}

/// The last active assignment of `var` (the one the shell keeps), if any.
pub fn find_last(text: &str, var: &str) -> Result<Option<Assignment>, FlavorError> {
    let mut found = None;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        let indent = body.len() - trimmed.len();
        let (after_export, export_len) = match trimmed.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => {
                let rest_trimmed = rest.trim_start();
                (rest_trimmed, trimmed.len() - rest_trimmed.len())
            }
            _ => (trimmed, 0),
        };
        let Some(rest) = after_export
            .strip_prefix(var)
            .and_then(|r| r.strip_prefix('='))
        else {
            continue;
        };
        let value_start = line_start + indent + export_len + var.len() + 1;
        let line_no = index + 1;
        let column = indent + export_len + var.len() + 2;
        let assignment = parse_value(rest, value_start, line_no, column, var)?;
        found = Some(assignment);
    }
    Ok(found)
}

fn parse_value(
    rest: &str,
    value_start: usize,
    line: usize,
    column: usize,
    var: &str,
) -> Result<Assignment, FlavorError> {
    let unsupported = |why: &str| {
        FlavorError::at(
            line,
            column,
            format!("the value of {var} {why}; distls edits only a value written on one line"),
            format!(
                "write {var}=\"...\" on a single line (plain words inside double quotes), then run distls again"
            ),
        )
    };
    let (quote, len, value) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &rest[1..];
            let Some(close) = inner.find(q) else {
                return Err(unsupported("continues on the next line"));
            };
            let value = &inner[..close];
            if q == '"' && (value.contains('\\') || value.contains('`') || value.contains("$(")) {
                return Err(unsupported("uses backslashes or command substitution"));
            }
            let after = inner[close + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(unsupported("has more text after its closing quote"));
            }
            (Some(q), close + 2, value.to_owned())
        }
        _ => {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == ';' || c == '#')
                .unwrap_or(rest.len());
            let value = &rest[..end];
            if value.contains(['\\', '`', '"', '\'']) || value.contains("$(") {
                return Err(unsupported(
                    "uses quotes, backslashes or command substitution",
                ));
            }
            (None, end, value.to_owned())
        }
    };
    Ok(Assignment {
        line,
        start: value_start,
        end: value_start + len,
        quote,
        value,
    })
}

/// `var`'s value with `flags` appended: in place if the variable is assigned, else as a new line
/// at the end. Refuses a value that already picks a distribution protocol.
pub fn append_flags(text: &str, var: &str, flags: &str) -> Result<String, FlavorError> {
    match find_last(text, var)? {
        Some(found) => {
            if found.value.contains("-proto_dist") || found.value.contains("-ssl_dist_opt") {
                return Err(FlavorError::at(
                    found.line,
                    1,
                    format!("{var} already sets distribution flags (-proto_dist/-ssl_dist_opt*)"),
                    format!(
                        "distls starts from plain TCP: remove those flags from {var} (or restore the file from its backup) and run distls again"
                    ),
                ));
            }
            let value = if found.value.trim().is_empty() {
                flags.to_owned()
            } else {
                format!("{} {flags}", found.value)
            };
            let quote = found.quote.unwrap_or('"');
            let mut out = String::with_capacity(text.len() + flags.len() + 3);
            out.push_str(&text[..found.start]);
            out.push(quote);
            out.push_str(&value);
            out.push(quote);
            out.push_str(&text[found.end..]);
            Ok(out)
        }
        None => Ok(super::append_lines(
            text,
            &format!("# {}\n{var}=\"{flags}\"\n", super::ADDED_MARK),
        )),
    }
}

/// The value of `var`'s last active assignment; an error if it needs the shell to evaluate it.
pub fn plain_value(text: &str, var: &str) -> Result<Option<(String, usize)>, FlavorError> {
    let Some(found) = find_last(text, var)? else {
        return Ok(None);
    };
    if found.value.contains('$') || found.quote == Some('"') && found.value.contains('`') {
        return Err(FlavorError::at(
            found.line,
            1,
            format!(
                "{var} uses shell expansion ({}); distls reads it literally",
                found.value
            ),
            format!("write the literal value of {var}"),
        ));
    }
    Ok(Some((found.value.trim().to_owned(), found.line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &str = "-proto_dist inet_tls -ssl_dist_optfile /x/o.conf";

    #[test]
    fn appends_inside_double_quotes_and_keeps_the_rest() {
        let text = "# c\nexport ERL_EPMD_PORT=4371\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\" # note\nX=1\n";
        let out = append_flags(text, "ERL_OPTIONS", FLAGS).unwrap();
        assert_eq!(
            out,
            format!(
                "# c\nexport ERL_EPMD_PORT=4371\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 {FLAGS}\" # note\nX=1\n"
            )
        );
    }

    #[test]
    fn edits_the_last_assignment_only_and_ignores_comments() {
        let text = "#ERL_OPTIONS=\"\"\nERL_OPTIONS=''\nexport ERL_OPTIONS='-a b'\n";
        let out = append_flags(text, "ERL_OPTIONS", FLAGS).unwrap();
        assert_eq!(
            out,
            format!("#ERL_OPTIONS=\"\"\nERL_OPTIONS=''\nexport ERL_OPTIONS='-a b {FLAGS}'\n")
        );
    }

    #[test]
    fn unquoted_and_empty_values_get_quotes() {
        assert_eq!(
            append_flags("V=\n", "V", FLAGS).unwrap(),
            format!("V=\"{FLAGS}\"\n")
        );
        assert_eq!(
            append_flags("V=-x", "V", FLAGS).unwrap(),
            format!("V=\"-x {FLAGS}\"")
        );
    }

    #[test]
    fn appends_a_line_when_absent() {
        let out = append_flags("#V=\"\"\nOTHER=1", "V", FLAGS).unwrap();
        assert!(out.starts_with("#V=\"\"\nOTHER=1\n# added by distls"));
        assert!(out.ends_with(&format!("\nV=\"{FLAGS}\"\n")));
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        let e = append_flags("A=1\nV=\"-proto_dist inet_tcp\"\n", "V", FLAGS).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(append_flags("V=\"multi\nline\"\n", "V", FLAGS).is_err());
        assert!(append_flags("V=\"$(cat f)\"\n", "V", FLAGS).is_err());
        assert!(append_flags("V=\"a\"b\n", "V", FLAGS).is_err());
    }

    #[test]
    fn reads_plain_values() {
        assert_eq!(
            plain_value("ERLANG_NODE=ejabberd1@vm\n", "ERLANG_NODE").unwrap(),
            Some(("ejabberd1@vm".into(), 1))
        );
        assert_eq!(plain_value("X=1\n", "ERLANG_NODE").unwrap(), None);
        assert!(plain_value("N=ej@$HOST\n", "N").is_err());
    }
}
