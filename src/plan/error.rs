//! A plan error: the file, the line and column, the offending line, and how to fix it.

use super::*;

/// A problem with the plan, located in the plan file when it has a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub(super) file: PathBuf,
    pub(super) location: Option<SourceLocation>,
    pub(super) source_line: Option<String>,
    pub(super) message: String,
    pub(super) hint: String,
}

impl PlanError {
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn location(&self) -> Option<SourceLocation> {
        self.location
    }

    pub fn line(&self) -> Option<u32> {
        self.location.map(|at| at.line)
    }

    pub fn column(&self) -> Option<u32> {
        self.location.map(|at| at.column)
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The plan line the error points at, as written.
    pub fn source_line(&self) -> Option<&str> {
        self.source_line.as_deref()
    }

    pub(super) fn unlocated(
        file: &Path,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        PlanError {
            file: file.to_path_buf(),
            location: None,
            source_line: None,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub(super) fn unreadable(file: &Path, err: &std::io::Error) -> PlanError {
        use std::io::ErrorKind;
        let hint = match err.kind() {
            ErrorKind::NotFound => {
                "check the path (a relative path starts from the current directory), or write the plan file first"
            }
            ErrorKind::PermissionDenied => "make the plan file readable by the user running distls",
            ErrorKind::IsADirectory => {
                "give the path of the plan's YAML file, not of its directory"
            }
            _ => "check that the plan file exists and is readable by the user running distls",
        };
        PlanError::unlocated(file, format!("cannot read the plan file: {err}"), hint)
    }

    pub(super) fn not_utf8(file: &Path, bytes: &[u8], err: std::str::Utf8Error) -> PlanError {
        let valid = String::from_utf8_lossy(&bytes[..err.valid_up_to()]);
        let line_start = valid.rfind('\n').map_or(0, |newline| newline + 1);
        let at = SourceLocation {
            line: u32::try_from(valid.matches('\n').count() + 1).unwrap_or(u32::MAX),
            column: u32::try_from(valid[line_start..].chars().count() + 1).unwrap_or(u32::MAX),
            width: 1,
        };
        let rest = String::from_utf8_lossy(&bytes[err.valid_up_to()..]);
        let line = format!(
            "{}{}",
            &valid[line_start..],
            rest.lines().next().unwrap_or("")
        );
        PlanError {
            file: file.to_path_buf(),
            location: Some(at),
            source_line: Some(line),
            message: "the plan file is not valid UTF-8".to_owned(),
            hint: "save the plan file as UTF-8".to_owned(),
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let Some(at) = self.location else {
            writeln!(f, "error: {file}: {}", self.message)?;
            return write!(f, "  = hint: {}", self.hint);
        };
        writeln!(
            f,
            "error: {file}:{}:{}: {}",
            at.line, at.column, self.message
        )?;
        let number = at.line.to_string();
        let gutter = " ".repeat(number.len());
        let (line, at) = shown_window(self.source_line.as_deref().unwrap_or(""), at);
        let line = line.as_str();
        writeln!(f, "{gutter} |")?;
        if line.is_empty() {
            writeln!(f, "{number} |")?;
        } else {
            writeln!(f, "{number} | {line}")?;
        }
        writeln!(f, "{gutter} | {}", underline(line, at))?;
        write!(f, "{gutter} = hint: {}", self.hint)
    }
}

impl std::error::Error for PlanError {}

/// Longest source line shown whole; a longer one (a minified or hostile plan) is shown as a window
/// around the column, so an error never prints megabytes.
pub(super) const MAX_SHOWN_LINE_CHARS: usize = 160;

pub(super) fn shown_window(line: &str, at: SourceLocation) -> (String, SourceLocation) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN_LINE_CHARS {
        return (line.to_owned(), at);
    }
    let column = (at.column as usize).saturating_sub(1).min(chars.len());
    let start = column.saturating_sub(MAX_SHOWN_LINE_CHARS / 2);
    let end = (start + MAX_SHOWN_LINE_CHARS).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let shift = u32::try_from(start).unwrap_or(0);
    let marker = u32::from(start > 0);
    let moved = SourceLocation {
        column: at.column.saturating_sub(shift) + marker,
        ..at
    };
    (shown, moved)
}

/// The marker line under the source line; tabs are mirrored so the carets line up.
pub(super) fn underline(line: &str, at: SourceLocation) -> String {
    let chars: Vec<char> = line.chars().collect();
    let start = (at.column as usize).saturating_sub(1);
    let mut marker: String = (0..start)
        .map(|i| {
            if chars.get(i) == Some(&'\t') {
                '\t'
            } else {
                ' '
            }
        })
        .collect();
    let available = chars.len().saturating_sub(start).max(1);
    let width = (at.width as usize).clamp(1, available);
    marker.push_str(&"^".repeat(width));
    marker
}

/// The plan text being validated, for building located errors.
#[derive(Clone, Copy)]
pub(super) struct SourceText<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl SourceText<'_> {
    pub(super) fn error(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        let line = (at.line as usize)
            .checked_sub(1)
            .and_then(|index| self.text.lines().nth(index))
            .unwrap_or("");
        PlanError {
            file: self.path.to_path_buf(),
            location: Some(at),
            source_line: Some(line.to_owned()),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Location of `key:` written at the top level, for keys whose value is missing or
    /// empty (YAML gives no position for a value that is not there).
    pub(super) fn top_level_key(&self, key: &str) -> Option<SourceLocation> {
        self.text.lines().enumerate().find_map(|(index, line)| {
            let rest = line.strip_prefix(key)?;
            rest.trim_start().starts_with(':').then(|| SourceLocation {
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
                column: 1,
                width: u32::try_from(key.chars().count()).unwrap_or(1),
            })
        })
    }
}
