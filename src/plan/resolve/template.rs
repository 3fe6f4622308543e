//! Placeholders and paths: checking a template, locating a mistake inside it, expanding it
//! for one node, and resolving relative paths against the plan's directory.

use super::*;

impl Resolver<'_> {
    /// Paths and commands must be non-empty and use only known placeholders.
    pub(in crate::plan) fn check_template(&self, key: &str, text: &Text) -> Result<(), PlanError> {
        if text.value.trim().is_empty() {
            return Err(self.error(
                defined(text),
                format!("{key} is empty"),
                format!("give {key} a value, or remove the key"),
            ));
        }
        if key.starts_with("tls.") && text.value.contains(['\n', '\r', '\0']) {
            return Err(self.error(
                defined(text),
                format!("{key} contains a line break or a NUL byte"),
                "vm.dist.args cannot carry such a path: move or link the file to a path without one",
            ));
        }
        match find_bad_placeholder(&text.value) {
            None => Ok(()),
            Some(BadPlaceholder::Unclosed(range)) => Err(self.error(
                self.locate_within(text, range),
                format!("unclosed placeholder in {key}: a `{{` without `}}`"),
                format!("close it; {PLACEHOLDERS_HINT}"),
            )),
            Some(BadPlaceholder::Unknown(range)) => {
                let written = &text.value[range.clone()];
                let inner = &written[1..written.len() - 1];
                let preceded_by_dollar = text.value[..range.start].ends_with('$');
                let hint = if let Some(close) = closest(inner, &PLACEHOLDERS) {
                    format!("did you mean {{{close}}}? {PLACEHOLDERS_HINT}")
                } else if preceded_by_dollar {
                    format!(
                        "write shell variables as ${inner}: {{...}} is reserved for placeholders; {PLACEHOLDERS_HINT}"
                    )
                } else {
                    PLACEHOLDERS_HINT.to_owned()
                };
                Err(self.error(
                    self.locate_within(text, range),
                    format!("unknown placeholder {written} in {key}"),
                    hint,
                ))
            }
        }
    }

    /// The location of a part of a string value. Exact when the value is written on one
    /// line as-is (plain, or quoted without escapes); otherwise the whole value.
    pub(in crate::plan) fn locate_within(
        &self,
        text: &Text,
        range: Range<usize>,
    ) -> SourceLocation {
        let whole = defined(text);
        let span = text.defined.span();
        let (Some(offset), Some(length)) = (span.byte_offset(), span.byte_len()) else {
            return whole;
        };
        let (Ok(offset), Ok(length)) = (usize::try_from(offset), usize::try_from(length)) else {
            return whole;
        };
        let Some(written) = self.text.text.get(offset..offset + length) else {
            return whole;
        };
        let value = text.value.as_str();
        let quote_width = if written == value {
            0
        } else if written.len() == value.len() + 2
            && (written.starts_with('"') || written.starts_with('\''))
            && &written[1..written.len() - 1] == value
        {
            1
        } else {
            return whole;
        };
        if written.contains('\n') {
            return whole;
        }
        let before = u32::try_from(value[..range.start].chars().count()).unwrap_or(0);
        SourceLocation {
            line: whole.line,
            column: whole.column + quote_width + before,
            width: u32::try_from(value[range].chars().count()).unwrap_or(1),
        }
    }

    pub(in crate::plan) fn path(&self, template: &str, name: &NodeName) -> PathBuf {
        let path = PathBuf::from(expand(template, name));
        if path.is_relative() {
            self.plan_dir.join(path)
        } else {
            path
        }
    }
}

enum BadPlaceholder {
    Unclosed(Range<usize>),
    Unknown(Range<usize>),
}

/// Every `{` opens a placeholder, so a typo such as `{snmae}` or `{sname` cannot slip
/// through as literal text.
fn find_bad_placeholder(template: &str) -> Option<BadPlaceholder> {
    let mut rest_start = 0;
    while let Some(open) = template[rest_start..].find('{').map(|i| rest_start + i) {
        let Some(close) = template[open..].find('}').map(|i| open + i) else {
            return Some(BadPlaceholder::Unclosed(open..open + 1));
        };
        if !PLACEHOLDERS.contains(&&template[open + 1..close]) {
            return Some(BadPlaceholder::Unknown(open..close + 1));
        }
        rest_start = close + 1;
    }
    None
}

/// Substitutes placeholders; the template was checked by `find_bad_placeholder`.
pub(super) fn expand(template: &str, name: &NodeName) -> String {
    template
        .replace("{name}", name.full)
        .replace("{sname}", name.sname)
        .replace("{host}", name.host)
}

/// A template given outside the plan (e.g. `distls rotate --to certfile=/etc/ssl/new/{sname}.pem`)
/// for one node: the same placeholders, the same refusal of a misspelt one.
pub fn expand_for_node(template: &str, node: &crate::plan::NodeSpec) -> Result<String, String> {
    match find_bad_placeholder(template) {
        Some(BadPlaceholder::Unclosed(_)) => Err(format!(
            "unclosed placeholder in `{template}`; {PLACEHOLDERS_HINT}"
        )),
        Some(BadPlaceholder::Unknown(range)) => Err(format!(
            "unknown placeholder `{}` in `{template}`; {PLACEHOLDERS_HINT}",
            &template[range]
        )),
        None => Ok(expand(
            template,
            &NodeName {
                full: &node.name,
                sname: &node.sname,
                host: &node.host,
            },
        )),
    }
}
