//! The rule for unfilled values: `distls plan discover` writes what it could not find as
//! `<<FILL IN: what>>`, and a plan that still holds one is refused where it stands, before
//! anything else looks at the value.

use super::*;

/// How every unfilled value starts.
pub const FILL_IN_MARK: &str = "<<FILL IN:";

/// The first placeholder outside a comment, as an error at its line and column.
pub(super) fn refuse_fill_ins(text: &SourceText) -> Result<(), PlanError> {
    for (index, line) in text.text.lines().enumerate() {
        let Some(column) = placeholder_column(line) else {
            continue;
        };
        let rest = &line[column..];
        let what = rest[FILL_IN_MARK.len()..]
            .split(">>")
            .next()
            .unwrap_or("")
            .trim();
        let key = line[..column]
            .trim()
            .trim_start_matches("- ")
            .trim_end_matches(['"', '\'', ' '])
            .trim_end_matches(':')
            .trim();
        let width = rest.find(">>").map_or(rest.len(), |end| end + 2);
        let at = SourceLocation {
            line: u32::try_from(index + 1).unwrap_or(u32::MAX),
            column: u32::try_from(line[..column].chars().count() + 1).unwrap_or(u32::MAX),
            width: u32::try_from(rest[..width].chars().count()).unwrap_or(1),
        };
        let subject = if key.is_empty() {
            "a value".to_string()
        } else {
            format!("`{key}`")
        };
        return Err(text.error(
            at,
            format!("{subject} is still a placeholder: fill in {what}"),
            "replace the whole `<<FILL IN: …>>` (quotes included) with the real value; the comment above it says where distls looked",
        ));
    }
    Ok(())
}

/// Where the mark starts on this line, unless it is inside a comment.
fn placeholder_column(line: &str) -> Option<usize> {
    let at = line.find(FILL_IN_MARK)?;
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, c) in line[..at].char_indices() {
        match (quote, c) {
            (None, '#') if index == 0 || previous.is_whitespace() => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open && previous != '\\' => quote = None,
            _ => {}
        }
        previous = c;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str) -> Result<(), PlanError> {
        refuse_fill_ins(&SourceText {
            path: Path::new("/p/plan.yaml"),
            text: source,
        })
    }

    #[test]
    fn a_placeholder_is_refused_at_its_line_with_what_to_fill_in() {
        let err = check("version: 1\ntls:\n  cacertfile: \"<<FILL IN: path of the CA bundle>>\"\n")
            .unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.column(), Some(16));
        assert_eq!(
            err.message(),
            "`cacertfile` is still a placeholder: fill in path of the CA bundle"
        );
        let shown = err.to_string();
        assert!(shown.starts_with("error: /p/plan.yaml:3:16: "), "{shown}");
        assert!(shown.contains("3 |   cacertfile: \"<<FILL IN"), "{shown}");
        assert!(shown.contains("hint: replace the whole"), "{shown}");
        let in_list = check("nodes:\n  - user: <<FILL IN: the SSH user>>\n").unwrap_err();
        assert_eq!(in_list.line(), Some(2));
        assert!(
            in_list.message().starts_with("`user` is"),
            "{}",
            in_list.message()
        );
    }

    #[test]
    fn placeholders_in_comments_and_other_text_are_left_alone() {
        assert!(check("# A value written <<FILL IN: ...>> is unknown\nversion: 1\n").is_ok());
        assert!(check("cluster: x  # was <<FILL IN: name>>\n").is_ok());
        assert!(check("cluster: \"a # b\" <<FILL IN: x>>\n").is_err());
        assert!(check("cluster: \"<<FILL IN x\"\n").is_ok(), "not the mark");
        assert!(check("commands:\n  stop: echo '#' <<FILL IN: stop>>\n").is_err());
    }
}
