//! Reading and editing Erlang args files (`vm.args`, `vm.dist.args`) exactly as erlexec reads them.
//!
//! Everything here is a pure function over `&str`; callers do the file I/O.
//!
//! Tokenizer rules, checked against erlexec on OTP 25 (`erl -args_file F`):
//! * tokens are separated by space, tab, `\n`, `\r`, `\x0b` and `\x0c`; newlines are ordinary whitespace;
//! * outside quotes, `#` ends the current token and starts a comment that runs to the end of the line
//!   (`mid#comment` gives `mid`);
//! * outside quotes, `\` takes the next byte literally, whatever it is (`x\ y` gives `x y`, and `\`
//!   followed by a newline puts a literal newline into the token); a `\` at end of file ends the token;
//! * `"…"` and `'…'` group and are stripped; inside them every byte is literal (`#`, `\`, whitespace,
//!   newlines); an unterminated quote runs to the end of the file; `""` is an empty argument;
//! * no environment expansion.
//!
//! Tokens whose text starts with `-` begin a flag, and the following tokens are its values.
//! Tokens starting with `+` are emulator flags: they also begin a group here. erlexec actually
//! removes them together with their own argument, so a value after `+A 5` really belongs to the
//! flag before `+A`; this grouping is an approximation that only matters for such odd files.
//! Everything after `-extra` is plain arguments until the end of the file.

use crate::spelling::edit_distance;
use std::ops::Range;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What an [`ArgsFileError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file's content is the problem (line 0 when no position applies, e.g. a missing flag).
    File,
    /// An `-ssl_dist_opt` key that `inet_tls_dist` does not accept (a typo, or a server-only key
    /// given to the client); preflight reports these per key with its own check.
    UnknownOption,
    /// A requested certificate path cannot be written into an args file.
    Path,
    /// distls produced text that failed its own verification; nothing should be written.
    Internal,
}

/// A problem with an args file, located by 1-based line and column (both 0 when not tied to a position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_error(self))]
pub struct ArgsFileError {
    pub kind: ErrorKind,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What the operator should do about it.
    pub hint: String,
}

fn render_error(error: &ArgsFileError) -> String {
    if error.line == 0 {
        error.message.clone()
    } else {
        format!(
            "line {}, column {}: {}",
            error.line, error.column, error.message
        )
    }
}

impl ArgsFileError {
    fn new(kind: ErrorKind, (line, column): (usize, usize), message: String, hint: String) -> Self {
        Self {
            kind,
            line,
            column,
            message,
            hint,
        }
    }

    fn in_file(at: (usize, usize), message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(ErrorKind::File, at, message.into(), hint.into())
    }

    fn bad_path(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(ErrorKind::Path, (0, 0), message.into(), hint.into())
    }

    fn internal(at: (usize, usize), message: impl Into<String>) -> Self {
        let message = format!("internal error: {}", message.into());
        let hint = "the file was not changed; please report this as a distls bug".to_string();
        Self::new(ErrorKind::Internal, at, message, hint)
    }

    pub fn hint(&self) -> &str {
        &self.hint
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// One argument as erlexec sees it, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The argument after quote removal and escape processing.
    pub text: String,
    /// 1-based line of the token's first byte.
    pub line: usize,
    /// 1-based column (in characters) of the token's first byte.
    pub column: usize,
    /// Byte range in the source, including quotes and backslashes.
    pub span: Range<usize>,
}

impl Token {
    pub fn is_flag(&self) -> bool {
        self.text.starts_with('-') || self.text.starts_with('+')
    }

    pub fn located(&self) -> Located<String> {
        Located {
            value: self.text.clone(),
            line: self.line,
            column: self.column,
            span: self.span.clone(),
        }
    }

    fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

/// A value together with the place in the source it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
    pub span: Range<usize>,
}

impl<T> Located<T> {
    fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

fn is_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an args file into arguments the way erlexec's `read_args_file` does (see module docs).
pub fn tokenize(source: &str) -> Vec<Token> {
    let lines = LineIndex::new(source);
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    while let Some(&byte) = bytes.get(pos) {
        if is_separator(byte) {
            pos += 1;
        } else if byte == b'#' {
            pos = end_of_comment(bytes, pos);
        } else {
            let (text, end) = read_token(bytes, pos);
            tokens.push(lines.token(text, pos..end));
            pos = end;
        }
    }
    tokens
}

fn end_of_comment(bytes: &[u8], start: usize) -> usize {
    match bytes[start..].iter().position(|&b| b == b'\n') {
        Some(offset) => start + offset + 1,
        None => bytes.len(),
    }
}

fn read_token(bytes: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut text = Vec::new();
    let mut pos = start;
    while let Some(&byte) = bytes.get(pos) {
        if is_separator(byte) || byte == b'#' {
            break;
        }
        pos += 1;
        match byte {
            b'\\' => {
                if let Some(&escaped) = bytes.get(pos) {
                    text.push(escaped);
                    pos += 1;
                }
            }
            b'"' | b'\'' => pos = read_quoted(bytes, pos, byte, &mut text),
            _ => text.push(byte),
        }
    }
    (text, pos)
}

/// Reads up to the closing `quote`; returns the position after it (or the end of input).
fn read_quoted(bytes: &[u8], start: usize, quote: u8, text: &mut Vec<u8>) -> usize {
    let rest = &bytes[start..];
    let length = rest.iter().position(|&b| b == quote).unwrap_or(rest.len());
    text.extend_from_slice(&rest[..length]);
    (start + length + 1).min(bytes.len())
}

/// Maps byte offsets to 1-based line and character column.
struct LineIndex<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let newlines = source.match_indices('\n').map(|(at, _)| at + 1);
        Self {
            source,
            line_starts: std::iter::once(0).chain(newlines).collect(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let line_index = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let column = match self.source.get(line_start..offset) {
            Some(prefix) => prefix.chars().count() + 1,
            None => offset - line_start + 1,
        };
        (line_index + 1, column)
    }

    fn token(&self, text: Vec<u8>, span: Range<usize>) -> Token {
        let (line, column) = self.position(span.start);
        // Only ASCII bytes are ever removed, so valid UTF-8 input stays valid.
        let text = String::from_utf8_lossy(&text).into_owned();
        Token {
            text,
            line,
            column,
            span,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flags and distribution settings
// ---------------------------------------------------------------------------------------------

/// A flag such as `-proto_dist` with the arguments that follow it, on any line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: Token,
    pub values: Vec<Token>,
}

impl Flag {
    fn last_token(&self) -> &Token {
        self.values.last().unwrap_or(&self.name)
    }
}

/// Groups the file's arguments into flags. Arguments before the first flag are plain arguments
/// to erlexec and are not returned.
pub fn parse_flags(source: &str) -> Vec<Flag> {
    let mut flags: Vec<Flag> = Vec::new();
    for token in tokenize(source) {
        let after_extra = flags.last().is_some_and(|flag| flag.name.text == "-extra");
        match flags.last_mut() {
            Some(flag) if after_extra || !token.is_flag() => flag.values.push(token),
            _ if token.is_flag() => flags.push(Flag {
                name: token,
                values: Vec::new(),
            }),
            _ => {}
        }
    }
    flags
}

/// One `-ssl_dist_opt` key/value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslDistOpt {
    pub key: Located<String>,
    pub value: Located<String>,
}

/// The distribution-related flags of one args file, interpreted like erlexec and `inet_tls_dist` do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistSettings {
    /// The first value of the first `-proto_dist`: the one erlexec uses. A `-proto_dist` without a
    /// value yields an empty string located at the flag.
    pub proto_dist: Option<Located<String>>,
    /// Every other `-proto_dist` value: later values of the first flag and all later flags.
    pub extra_proto_dist: Vec<Located<String>>,
    /// All `-ssl_dist_opt` values concatenated in order, then paired, as `inet_tls_dist` does.
    pub ssl_dist_opts: Vec<SslDistOpt>,
    /// For each `-ssl_dist_opt` flag with an odd number of values, its last value: the one left
    /// without a partner (pairing across flags is then shifted).
    pub unpaired_ssl_dist_opts: Vec<Located<String>>,
    /// The first `-ssl_dist_optfile` value.
    pub ssl_dist_optfile: Option<Located<String>>,
}

impl DistSettings {
    /// The key/value pairs, as `(key, value)` strings.
    pub fn ssl_dist_opt_pairs(&self) -> Vec<(String, String)> {
        self.ssl_dist_opts
            .iter()
            .map(|opt| (opt.key.value.clone(), opt.value.value.clone()))
            .collect()
    }

    /// Every value given for `key`, in file order.
    pub fn ssl_dist_opt_values<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = &'a Located<String>> {
        self.ssl_dist_opts
            .iter()
            .filter(move |opt| opt.key.value == key)
            .map(|opt| &opt.value)
    }

    /// True when the protocol erlexec will use is TLS.
    pub fn uses_tls(&self) -> bool {
        self.proto_dist
            .as_ref()
            .is_some_and(|proto| is_tls_protocol(&proto.value))
    }
}

fn is_tls_protocol(protocol: &str) -> bool {
    matches!(protocol, "inet_tls" | "inet6_tls")
}

/// Reads the distribution flags of one args file (only active text; comments are ignored).
pub fn dist_settings(source: &str) -> DistSettings {
    settings_from_flags(&parse_flags(source))
}

fn settings_from_flags(flags: &[Flag]) -> DistSettings {
    let mut settings = DistSettings::default();
    let mut ssl_values = Vec::new();
    for flag in flags {
        match flag.name.text.as_str() {
            "-proto_dist" => add_proto_dist(&mut settings, flag),
            "-ssl_dist_opt" => {
                if flag.values.len() % 2 == 1 {
                    settings
                        .unpaired_ssl_dist_opts
                        .push(flag.last_token().located());
                }
                ssl_values.extend(flag.values.iter());
            }
            "-ssl_dist_optfile" if settings.ssl_dist_optfile.is_none() => {
                settings.ssl_dist_optfile = Some(flag_value(flag));
            }
            _ => {}
        }
    }
    settings.ssl_dist_opts = ssl_values
        .chunks_exact(2)
        .map(|pair| SslDistOpt {
            key: pair[0].located(),
            value: pair[1].located(),
        })
        .collect();
    settings
}

fn add_proto_dist(settings: &mut DistSettings, flag: &Flag) {
    let mut values: Vec<Located<String>> = flag.values.iter().map(Token::located).collect();
    if values.is_empty() {
        values.push(flag_value(flag));
    }
    let mut values = values.into_iter();
    if settings.proto_dist.is_none() {
        settings.proto_dist = values.next();
    }
    settings.extra_proto_dist.extend(values);
}

/// The flag's first value, or an empty value located at the flag itself.
fn flag_value(flag: &Flag) -> Located<String> {
    match flag.values.first() {
        Some(value) => value.located(),
        None => Located {
            value: String::new(),
            ..flag.name.located()
        },
    }
}

/// True when the first `-proto_dist` in the file is `inet_tls` or `inet6_tls`.
pub fn is_tls_enabled(source: &str) -> bool {
    dist_settings(source).uses_tls()
}

// ---------------------------------------------------------------------------------------------
// vm.args: node identity
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFlag {
    /// `-sname`
    Short,
    /// `-name`
    Long,
}

impl NameFlag {
    /// The vm.args flag itself: `-sname` or `-name`.
    pub fn flag(self) -> &'static str {
        match self {
            NameFlag::Short => "-sname",
            NameFlag::Long => "-name",
        }
    }
}

/// The distribution cookie. It is a secret: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

impl Cookie {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for passing to `-setcookie`. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl std::fmt::Display for Cookie {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name_flag: NameFlag,
    pub node_name: String,
    pub cookie: Option<Cookie>,
}

/// Reads the node name and cookie from `vm.args`, insisting on the layout MongooseIM's scripts
/// rely on: they `grep '^-s?name'` and `grep '^-setcookie'` and let the shell split the line.
pub fn node_identity(vm_args: &str) -> Result<NodeIdentity, ArgsFileError> {
    let flags = parse_flags(vm_args);
    let name = single_flag(&flags, &["-sname", "-name"])?.ok_or_else(|| {
        ArgsFileError::in_file(
            (0, 0),
            "no -sname or -name flag",
            "add a line such as `-sname mongooseim@localhost` at the start of a line in vm.args",
        )
    })?;
    let name_flag = if name.name.text == "-sname" {
        NameFlag::Short
    } else {
        NameFlag::Long
    };
    let node_name = script_visible_value(vm_args, name)?;
    let cookie = match single_flag(&flags, &["-setcookie"])? {
        Some(flag) => Some(Cookie(script_visible_value(vm_args, flag)?)),
        None => None,
    };
    Ok(NodeIdentity {
        name_flag,
        node_name,
        cookie,
    })
}

fn single_flag<'a>(flags: &'a [Flag], names: &[&str]) -> Result<Option<&'a Flag>, ArgsFileError> {
    let mut found = flags
        .iter()
        .filter(|flag| names.contains(&flag.name.text.as_str()));
    let first = found.next();
    match (first, found.next()) {
        (Some(first), Some(second)) => Err(ArgsFileError::in_file(
            second.name.position(),
            format!(
                "second {} flag (the first is on line {})",
                second.name.text, first.name.line
            ),
            "keep exactly one of these flags in vm.args",
        )),
        _ => Ok(first),
    }
}

/// The flag's single value, provided the scripts' grep-and-split reading gives the same result.
/// Messages never include the value, because for `-setcookie` it is the secret.
fn script_visible_value(source: &str, flag: &Flag) -> Result<String, ArgsFileError> {
    let name = &flag.name.text;
    if flag.name.column != 1 {
        return Err(ArgsFileError::in_file(
            flag.name.position(),
            format!("{name} does not start its line"),
            format!(
                "MongooseIM's scripts find it with `grep '^{name}'`; remove what precedes it on the line"
            ),
        ));
    }
    let [value] = flag.values.as_slice() else {
        return Err(ArgsFileError::in_file(
            flag.name.position(),
            format!(
                "{name} needs exactly one value, found {}",
                flag.values.len()
            ),
            format!("write `{name} VALUE` on one line"),
        ));
    };
    if value.line != flag.name.line {
        return Err(ArgsFileError::in_file(
            value.position(),
            format!("the value of {name} is not on the same line as the flag"),
            format!(
                "MongooseIM's scripts read only the `{name}` line; put the value right after the flag"
            ),
        ));
    }
    if source.get(value.span.clone()) != Some(value.text.as_str()) {
        return Err(ArgsFileError::in_file(
            value.position(),
            format!("the value of {name} uses quotes or backslashes"),
            "MongooseIM's scripts pass this line through the shell unquoted; use a plain value",
        ));
    }
    Ok(value.text.clone())
}

/// The `-proto_dist` erlexec would take from vm.args. vm.args is read before vm.dist.args, so
/// any value found here silently overrides the TLS setting in vm.dist.args.
pub fn proto_dist_in_vm_args(vm_args: &str) -> Option<Located<String>> {
    dist_settings(vm_args).proto_dist
}

// ---------------------------------------------------------------------------------------------
// Enabling TLS in vm.dist.args
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub certfile: String,
    pub keyfile: String,
    pub cacertfile: String,
}

/// The six `-ssl_dist_opt` keys distls manages.
const MANAGED_KEYS: [&str; 6] = [
    "server_certfile",
    "client_certfile",
    "server_keyfile",
    "client_keyfile",
    "server_cacertfile",
    "client_cacertfile",
];

impl TlsPaths {
    /// The path a managed `-ssl_dist_opt` key should have; `None` for keys distls does not manage.
    fn for_key(&self, key: &str) -> Option<&str> {
        let suffix = key
            .strip_prefix("server_")
            .or_else(|| key.strip_prefix("client_"))?;
        match suffix {
            "certfile" => Some(&self.certfile),
            "keyfile" => Some(&self.keyfile),
            "cacertfile" => Some(&self.cacertfile),
            _ => None,
        }
    }

    /// Each managed key with its wanted path.
    fn managed_options(&self) -> impl Iterator<Item = (&'static str, &str)> {
        MANAGED_KEYS
            .into_iter()
            .filter_map(|key| Some((key, self.for_key(key)?)))
    }

    /// The same paths written in args-file syntax.
    fn escaped(&self) -> Result<TlsPaths, ArgsFileError> {
        Ok(TlsPaths {
            certfile: escape_path("certfile", &self.certfile)?,
            keyfile: escape_path("keyfile", &self.keyfile)?,
            cacertfile: escape_path("cacertfile", &self.cacertfile)?,
        })
    }
}

/// What [`enable_tls`] did. Line numbers refer to the returned text and span the `-proto_dist`
/// and `-ssl_dist_opt` flags with their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditOutcome {
    /// A commented-out TLS block (or the commented rest of a half-enabled one) was uncommented.
    UncommentedBlock { first_line: usize, last_line: usize },
    /// TLS was already active; certificate paths were changed or missing keys added.
    UpdatedActiveBlock { first_line: usize, last_line: usize },
    /// No TLS block existed; one was added at the end of the file.
    AppendedBlock,
    /// TLS was already active with exactly these paths; the text is unchanged.
    AlreadyEnabled,
}

impl std::fmt::Display for EditOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditOutcome::UncommentedBlock {
                first_line,
                last_line,
            } => write!(
                f,
                "uncomment the TLS block (lines {first_line}-{last_line}) and point it at the plan's certificates"
            ),
            EditOutcome::UpdatedActiveBlock {
                first_line,
                last_line,
            } => write!(
                f,
                "complete the active TLS block (lines {first_line}-{last_line}) and point it at the plan's certificates"
            ),
            EditOutcome::AppendedBlock => {
                write!(f, "append a TLS block (the file has none to uncomment)")
            }
            EditOutcome::AlreadyEnabled => write!(f, "nothing to change: TLS is already on"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEdit {
    pub text: String,
    pub outcome: EditOutcome,
}

/// Turns on TLS distribution in a `vm.dist.args` text, pointing all six certificate options at `paths`.
///
/// In order of preference: uncomment the template's commented TLS block (all of it, continuation
/// lines included), or update an active TLS configuration, or append a new block. Every byte outside
/// the edited places is preserved. The result is re-parsed and checked before it is returned.
/// An active `-ssl_dist_optfile` (or one in the block) is refused: its options would be merged with
/// ours and distls cannot verify them.
pub fn enable_tls(source: &str, paths: &TlsPaths) -> Result<TlsEdit, ArgsFileError> {
    let escaped = paths.escaped()?;
    let original = dist_settings(source);
    reject_conflicting_protocol(&original)?;
    check_file_ending(source)?;
    let (hashes, view) = enabled_view(source, &original)?;
    check_file_ending(&view)?;
    reject_multiline_arguments(&view)?;
    let settings = dist_settings(&view);
    validate(&settings)?;
    let eol = line_ending(source);
    let mut edits: Vec<Edit> = hashes
        .iter()
        .map(|&at| Edit {
            range: at..at + 1,
            text: String::new(),
        })
        .collect();
    let appended = plan_setting_edits(&view, &settings, paths, &escaped, eol, &mut edits)?;
    if edits.is_empty() {
        verify_enabled(source, paths)?;
        return Ok(TlsEdit {
            text: source.to_string(),
            outcome: EditOutcome::AlreadyEnabled,
        });
    }
    let text = apply_edits(source, edits)?;
    verify_enabled(&text, paths)?;
    let outcome = describe_outcome(&text, appended, !hashes.is_empty());
    Ok(TlsEdit { text, outcome })
}

/// The `#`s to delete and the text as erlexec would read it once they are gone.
fn enabled_view(
    source: &str,
    settings: &DistSettings,
) -> Result<(Vec<usize>, String), ArgsFileError> {
    let hashes = hashes_to_remove(source, settings.uses_tls())?;
    let view = activated_view(source, &hashes);
    Ok((hashes, view))
}

/// The distribution settings a `vm.dist.args` text has once its TLS block is enabled, before any
/// validation: what preflight inspects, so that it can report every bad option, not just the first.
pub fn settings_once_enabled(source: &str) -> Result<DistSettings, ArgsFileError> {
    let (_, view) = enabled_view(source, &dist_settings(source))?;
    Ok(dist_settings(&view))
}

fn reject_conflicting_protocol(settings: &DistSettings) -> Result<(), ArgsFileError> {
    match &settings.proto_dist {
        Some(proto) if !is_tls_protocol(&proto.value) => Err(ArgsFileError::in_file(
            proto.position(),
            format!(
                "-proto_dist {} is active; erlexec uses the first -proto_dist, so TLS would be ignored",
                proto.value
            ),
            "remove this -proto_dist (every node of the cluster must use inet_tls), then run distls again",
        )),
        _ => Ok(()),
    }
}

fn describe_outcome(text: &str, appended: bool, uncommented: bool) -> EditOutcome {
    let (first_line, last_line) = tls_line_extent(text);
    match (appended, uncommented) {
        (true, _) => EditOutcome::AppendedBlock,
        (false, true) => EditOutcome::UncommentedBlock {
            first_line,
            last_line,
        },
        (false, false) => EditOutcome::UpdatedActiveBlock {
            first_line,
            last_line,
        },
    }
}

fn tls_line_extent(text: &str) -> (usize, usize) {
    let flags = parse_flags(text);
    let tls_flags: Vec<&Flag> = flags
        .iter()
        .filter(|flag| matches!(flag.name.text.as_str(), "-proto_dist" | "-ssl_dist_opt"))
        .collect();
    let first_line = tls_flags.first().map_or(0, |flag| flag.name.line);
    let last_line = tls_flags
        .iter()
        .map(|flag| flag.last_token().line)
        .max()
        .unwrap_or(0);
    (first_line, last_line)
}

// --- Paths -------------------------------------------------------------------------------------

fn escape_path(what: &str, path: &str) -> Result<String, ArgsFileError> {
    if path.is_empty() {
        return Err(ArgsFileError::bad_path(
            format!("the {what} path is empty"),
            "give the full path of the file",
        ));
    }
    if path.contains(['\n', '\r', '\0']) {
        return Err(ArgsFileError::bad_path(
            format!("the {what} path contains a line break or NUL byte"),
            "args files cannot carry such a path; move or link the file to a plain path",
        ));
    }
    if path.starts_with(['-', '+']) {
        return Err(ArgsFileError::bad_path(
            format!(
                "the {what} path starts with `{}`, which erlexec would read as a new flag",
                &path[..1]
            ),
            "use an absolute path",
        ));
    }
    Ok(escape_value(path))
}

/// Escapes a value so that erlexec reads it back unchanged as one argument (any value without NUL).
/// [`enable_tls`] still refuses line breaks: line-based tools and scripts would mangle them.
pub fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(
            character,
            ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '#' | '"' | '\'' | '\\'
        ) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

// --- Finding the TLS block -----------------------------------------------------------------------

/// How a line can take part in a TLS block.
struct LineShape {
    /// The line starts with values that continue the previous line's flag.
    continues_previous: bool,
    /// Whether values on the following line would still belong to `-ssl_dist_opt`;
    /// `None` when the line has no flag and so keeps the previous line's answer.
    accepts_continuation: Option<bool>,
}

/// A run of consecutive lines forming a TLS block, some of which may be commented out.
struct BlockRun {
    first_line: usize,
    hash_offsets: Vec<usize>,
    has_active_line: bool,
    /// Whether a following line of bare values would still belong to `-ssl_dist_opt`.
    accepts_continuation: bool,
}

impl BlockRun {
    fn starting_at(first_line: usize) -> Self {
        Self {
            first_line,
            hash_offsets: Vec::new(),
            has_active_line: false,
            accepts_continuation: false,
        }
    }

    fn takes(&self, shape: &LineShape) -> bool {
        !shape.continues_previous || self.accepts_continuation
    }

    fn add(&mut self, shape: &LineShape, hash_offset: Option<usize>) {
        match hash_offset {
            Some(offset) => self.hash_offsets.push(offset),
            None => self.has_active_line = true,
        }
        self.accepts_continuation = shape
            .accepts_continuation
            .unwrap_or(self.accepts_continuation);
    }
}

/// The offsets of the `#` characters to delete: those of the one commented TLS block to enable.
/// When TLS is already active, only a half-enabled block (active lines mixed with commented
/// ones) is completed; a fully commented leftover block is left alone.
fn hashes_to_remove(source: &str, tls_active: bool) -> Result<Vec<usize>, ArgsFileError> {
    let runs = block_runs(source);
    let mut candidates = runs
        .into_iter()
        .filter(|run| !run.hash_offsets.is_empty() && (run.has_active_line || !tls_active));
    let first = candidates.next();
    match (first, candidates.next()) {
        (Some(first), Some(second)) => Err(ArgsFileError::in_file(
            (second.first_line, 1),
            format!(
                "a second commented-out TLS block (the first starts on line {})",
                first.first_line
            ),
            "delete one of the two blocks so that distls knows which one to enable",
        )),
        (first, _) => Ok(first.map(|run| run.hash_offsets).unwrap_or_default()),
    }
}

fn block_runs(source: &str) -> Vec<BlockRun> {
    let mut runs = Vec::new();
    let mut current: Option<BlockRun> = None;
    let tokens = tokenize(source);
    for (number, start, text) in source_lines(source) {
        let commented = single_hash_body(text);
        let shape = line_shape(commented.unwrap_or(text)).filter(|_| starts_fresh(&tokens, start));
        let joins = shape
            .as_ref()
            .zip(current.as_ref())
            .is_some_and(|(shape, run)| run.takes(shape));
        if !joins {
            runs.extend(current.take());
            current = shape
                .as_ref()
                .filter(|shape| !shape.continues_previous)
                .map(|_| BlockRun::starting_at(number));
        }
        if let (Some(run), Some(shape)) = (current.as_mut(), shape.as_ref()) {
            run.add(shape, commented.map(|_| start));
        }
    }
    runs.extend(current);
    runs
}

/// False when the line begins inside an argument that a quoted or escaped newline carried over
/// from the previous line; such a line cannot be judged (or uncommented) on its own.
/// Tokens come in source order and do not overlap, so only the last one starting before the line
/// can reach into it: a binary search keeps this linear-time overall (a file of many short lines
/// used to take minutes).
fn starts_fresh(tokens: &[Token], line_start: usize) -> bool {
    let before = tokens.partition_point(|token| token.span.start < line_start);
    before
        .checked_sub(1)
        .is_none_or(|last| tokens[last].span.end < line_start)
}

/// `(1-based line number, byte offset of the line, line text without its `\n`)`.
fn source_lines(source: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    source
        .split('\n')
        .scan(0, |start, text| {
            let line_start = *start;
            *start += text.len() + 1;
            Some((line_start, text))
        })
        .enumerate()
        .map(|(index, (start, text))| (index + 1, start, text))
}

/// The text after a single leading `#`; `##` lines are prose, not commented-out settings.
fn single_hash_body(line: &str) -> Option<&str> {
    line.strip_prefix('#').filter(|body| !body.starts_with('#'))
}

fn line_shape(text: &str) -> Option<LineShape> {
    let tokens = tokenize(text);
    let first = tokens.first()?;
    let mut accepts_continuation = None;
    for (index, token) in tokens
        .iter()
        .enumerate()
        .filter(|(_, token)| token.is_flag())
    {
        let next_is_tls = tokens
            .get(index + 1)
            .is_some_and(|value| is_tls_protocol(&value.text));
        accepts_continuation = match token.text.as_str() {
            "-ssl_dist_opt" => Some(true),
            "-ssl_dist_optfile" => Some(false),
            "-proto_dist" if next_is_tls => Some(false),
            _ => return None,
        };
    }
    Some(LineShape {
        continues_previous: !first.is_flag(),
        accepts_continuation,
    })
}

/// The source with the given `#`s turned into spaces: tokenizes like the uncommented text while
/// keeping every byte offset, line and column of the original.
fn activated_view(source: &str, hash_offsets: &[usize]) -> String {
    let mut view = String::with_capacity(source.len());
    let mut cursor = 0;
    for &offset in hash_offsets {
        view.push_str(&source[cursor..offset]);
        view.push(' ');
        cursor = offset + 1;
    }
    view.push_str(&source[cursor..]);
    view
}

// --- Validation ----------------------------------------------------------------------------------

const SSL_DIST_OPT_SUFFIXES: [&str; 15] = [
    "certfile",
    "keyfile",
    "password",
    "cacertfile",
    "verify",
    "verify_fun",
    "crl_check",
    "crl_cache",
    "reuse_sessions",
    "secure_renegotiate",
    "depth",
    "hibernate_after",
    "ciphers",
    "versions",
    "ktls",
];
const SERVER_ONLY_SUFFIXES: [&str; 2] = ["dhfile", "fail_if_no_peer_cert"];

/// Whether `inet_tls_dist` accepts this `-ssl_dist_opt` key (OTP's `ssl_option/2`).
pub fn is_known_ssl_dist_opt(key: &str) -> bool {
    if let Some(suffix) = key.strip_prefix("client_") {
        SSL_DIST_OPT_SUFFIXES.contains(&suffix)
    } else if let Some(suffix) = key.strip_prefix("server_") {
        SSL_DIST_OPT_SUFFIXES.contains(&suffix) || SERVER_ONLY_SUFFIXES.contains(&suffix)
    } else {
        false
    }
}

fn known_ssl_dist_opts() -> impl Iterator<Item = String> {
    let client = SSL_DIST_OPT_SUFFIXES
        .iter()
        .map(|suffix| format!("client_{suffix}"));
    let server = SSL_DIST_OPT_SUFFIXES
        .iter()
        .chain(&SERVER_ONLY_SUFFIXES)
        .map(|suffix| format!("server_{suffix}"));
    client.chain(server)
}

/// Rejects settings that would not give a working, verifiable TLS configuration.
fn validate(settings: &DistSettings) -> Result<(), ArgsFileError> {
    reject_conflicting_protocol(settings)?;
    if let Some(extra) = settings.extra_proto_dist.first() {
        return Err(ArgsFileError::in_file(
            extra.position(),
            format!("additional -proto_dist value `{}`", extra.value),
            "keep a single `-proto_dist inet_tls`: erlexec uses only the first, and a second protocol fails to register",
        ));
    }
    if let Some(optfile) = &settings.ssl_dist_optfile {
        return Err(ArgsFileError::in_file(
            optfile.position(),
            "-ssl_dist_optfile would be merged with the -ssl_dist_opt options distls manages",
            "remove the -ssl_dist_optfile line (distls writes the certificate paths as -ssl_dist_opt)",
        ));
    }
    if let Some(unpaired) = settings.unpaired_ssl_dist_opts.first() {
        return Err(ArgsFileError::in_file(
            unpaired.position(),
            format!(
                "-ssl_dist_opt has an odd number of values; `{}` is left without a partner",
                unpaired.value
            ),
            "give every key exactly one value (a space inside a value needs a backslash); \
             a prose comment next to the block must start with `##`",
        ));
    }
    settings
        .ssl_dist_opts
        .iter()
        .try_for_each(|opt| check_ssl_dist_opt_key(&opt.key))
}

fn check_ssl_dist_opt_key(key: &Located<String>) -> Result<(), ArgsFileError> {
    if is_known_ssl_dist_opt(&key.value) {
        return Ok(());
    }
    let hint = match closest_known_key(&key.value) {
        Some(suggestion) => format!("did you mean `{suggestion}`? OTP only reports this when a connection is attempted"),
        None => "use a client_/server_ option that inet_tls_dist accepts; a prose comment next to the block \
                 must start with `##`"
            .to_string(),
    };
    Err(ArgsFileError::new(
        ErrorKind::UnknownOption,
        key.position(),
        format!("unknown -ssl_dist_opt key `{}`", key.value),
        hint,
    ))
}

/// The accepted key nearest to a misspelt one (at most two edits away).
pub fn closest_known_key(key: &str) -> Option<String> {
    known_ssl_dist_opts()
        .map(|known| (edit_distance(key, &known), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

// --- Planning and applying edits -----------------------------------------------------------------

struct Edit {
    range: Range<usize>,
    text: String,
}

const SSL_DIST_OPT_INDENT: &str = "              ";
const KEY_COLUMN_WIDTH: usize = 18;

fn line_ending(source: &str) -> &'static str {
    match source.find('\n') {
        Some(at) if source[..at].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

/// Adds the edits that set `-proto_dist` and the certificate options. Returns whether a whole
/// block was appended.
fn plan_setting_edits(
    view: &str,
    settings: &DistSettings,
    paths: &TlsPaths,
    escaped: &TlsPaths,
    eol: &str,
    edits: &mut Vec<Edit>,
) -> Result<bool, ArgsFileError> {
    let flags = parse_flags(view);
    let ssl_flags: Vec<&Flag> = flags
        .iter()
        .filter(|flag| flag.name.text == "-ssl_dist_opt")
        .collect();
    if settings.proto_dist.is_none() && ssl_flags.is_empty() {
        edits.push(append_block(view, escaped, eol));
        return Ok(true);
    }
    let tokens = tokenize(view);
    if let (None, Some(first_ssl)) = (&settings.proto_dist, ssl_flags.first()) {
        edits.push(insert_before(
            view,
            &tokens,
            &first_ssl.name,
            "-proto_dist inet_tls",
            eol,
        ));
    }
    edits.extend(value_replacements(settings, paths, escaped));
    let missing = missing_option_lines(settings, escaped);
    match (ssl_flags.last(), &settings.proto_dist) {
        (Some(last_ssl), _) if !missing.is_empty() => {
            edits.push(insert_after(
                view,
                &tokens,
                last_ssl.last_token(),
                &missing,
                eol,
            ));
        }
        (None, Some(proto)) => {
            edits.push(insert_after_offset(
                view,
                &tokens,
                proto.span.end,
                &default_ssl_dist_opt_lines(escaped),
                eol,
            ));
        }
        _ => {}
    }
    Ok(false)
}

fn value_replacements<'a>(
    settings: &'a DistSettings,
    paths: &'a TlsPaths,
    escaped: &'a TlsPaths,
) -> impl Iterator<Item = Edit> + 'a {
    settings.ssl_dist_opts.iter().filter_map(move |opt| {
        let wanted = paths.for_key(&opt.key.value)?;
        let text = escaped.for_key(&opt.key.value)?.to_string();
        (opt.value.value != wanted).then(|| Edit {
            range: opt.value.span.clone(),
            text,
        })
    })
}

fn missing_option_lines(settings: &DistSettings, escaped: &TlsPaths) -> Vec<String> {
    escaped
        .managed_options()
        .filter(|(key, _)| settings.ssl_dist_opt_values(key).next().is_none())
        .map(|(key, value)| continuation_line(key, value))
        .collect()
}

fn continuation_line(key: &str, value: &str) -> String {
    format!(
        "{SSL_DIST_OPT_INDENT}{key:<width$} {value}",
        width = KEY_COLUMN_WIDTH - 1
    )
}

/// The `-ssl_dist_opt` lines of a new block, laid out like MongooseIM's template.
fn default_ssl_dist_opt_lines(escaped: &TlsPaths) -> Vec<String> {
    let TlsPaths {
        certfile,
        keyfile,
        cacertfile,
    } = escaped;
    let width = [certfile, keyfile, cacertfile]
        .iter()
        .map(|path| path.chars().count())
        .max()
        .unwrap_or(0);
    vec![
        format!("-ssl_dist_opt server_certfile   {certfile:<width$} client_certfile   {certfile}"),
        format!(
            "{SSL_DIST_OPT_INDENT}server_keyfile    {keyfile:<width$} client_keyfile    {keyfile}"
        ),
        format!(
            "{SSL_DIST_OPT_INDENT}server_cacertfile {cacertfile:<width$} client_cacertfile {cacertfile}"
        ),
        continuation_line("client_verify", "verify_peer"),
        continuation_line("server_verify", "verify_peer"),
        continuation_line("server_fail_if_no_peer_cert", "true"),
    ]
}

/// Refuses arguments containing a line break: distls edits line by line, and such an argument is
/// almost always a mistake (an unclosed quote, or a backslash meant as a line continuation).
fn reject_multiline_arguments(view: &str) -> Result<(), ArgsFileError> {
    match tokenize(view)
        .into_iter()
        .find(|token| token.text.contains('\n'))
    {
        Some(token) => Err(ArgsFileError::in_file(
            token.position(),
            "this argument contains a line break (from an open quote or a backslash at the end of a line)",
            "close the quote or remove the trailing backslash: erlexec has no line continuation and \
             would pass a literal newline",
        )),
        None => Ok(()),
    }
}

/// Refuses a file that ends inside a quote or right after a backslash: erlexec would join
/// anything inserted after that point (or at the end) to that argument.
fn check_file_ending(source: &str) -> Result<(), ArgsFileError> {
    let texts = |tokens: Vec<Token>| {
        tokens
            .into_iter()
            .map(|token| token.text)
            .collect::<Vec<_>>()
    };
    let last = tokenize(source).pop();
    match last {
        Some(last) if texts(tokenize(source)) != texts(tokenize(&format!("{source}\n"))) => {
            Err(ArgsFileError::in_file(
                last.position(),
                "the file ends inside a quote or with a backslash, so this argument swallows the end of the file",
                "close the quote (or remove the trailing backslash) and end the file with a newline",
            ))
        }
        _ => Ok(()),
    }
}

fn append_block(source: &str, escaped: &TlsPaths, eol: &str) -> Edit {
    let mut lines = vec![
        "## TLS distribution (enabled by distls)".to_string(),
        "-proto_dist inet_tls".to_string(),
    ];
    lines.extend(default_ssl_dist_opt_lines(escaped));
    let separator = if source.is_empty() || source.ends_with('\n') {
        ""
    } else {
        eol
    };
    let text = format!("{separator}{}{eol}", lines.join(eol));
    Edit {
        range: source.len()..source.len(),
        text,
    }
}

/// Inserts `line` on its own line before `anchor`, or inline when `anchor` is not first on its line
/// (an argument reaching into the line, through a quoted or escaped newline, counts as before it).
fn insert_before(view: &str, tokens: &[Token], anchor: &Token, line: &str, eol: &str) -> Edit {
    let line_start = view[..anchor.span.start].rfind('\n').map_or(0, |at| at + 1);
    let first_on_line = !tokens
        .iter()
        .any(|token| token.span.end >= line_start && token.span.start < anchor.span.start);
    match first_on_line {
        true => Edit {
            range: line_start..line_start,
            text: format!("{line}{eol}"),
        },
        false => Edit {
            range: anchor.span.start..anchor.span.start,
            text: format!("{line} "),
        },
    }
}

fn insert_after(view: &str, tokens: &[Token], anchor: &Token, lines: &[String], eol: &str) -> Edit {
    insert_after_offset(view, tokens, anchor.span.end, lines, eol)
}

/// Inserts `lines` after the line containing `offset`, or inline right at `offset` when more
/// arguments follow on that line (they would otherwise end up before our values).
fn insert_after_offset(
    view: &str,
    tokens: &[Token],
    offset: usize,
    lines: &[String],
    eol: &str,
) -> Edit {
    let line_end = view[offset..].find('\n').map(|at| offset + at);
    let more_on_line = tokens.iter().any(|token| {
        token.span.start >= offset && line_end.is_none_or(|end| token.span.start < end)
    });
    if more_on_line {
        let inline: Vec<&str> = lines.iter().map(|line| line.trim()).collect();
        return Edit {
            range: offset..offset,
            text: format!(" {}", inline.join(" ")),
        };
    }
    match line_end {
        Some(end) => {
            let separator = if commented_block_line_follows(view, end + 1) {
                eol
            } else {
                ""
            };
            Edit {
                range: end + 1..end + 1,
                text: format!("{}{eol}{separator}", lines.join(eol)),
            }
        }
        None => Edit {
            range: view.len()..view.len(),
            text: format!("{eol}{}", lines.join(eol)),
        },
    }
}

/// Whether the line at `line_start` is a still-commented line that looks like part of a TLS block.
/// Right after inserted `-ssl_dist_opt` lines it would join their block, and a later run would
/// uncomment it, so an empty line is put in between.
fn commented_block_line_follows(view: &str, line_start: usize) -> bool {
    let line = view[line_start..].split('\n').next().unwrap_or_default();
    single_hash_body(line).and_then(line_shape).is_some()
}

fn apply_edits(source: &str, mut edits: Vec<Edit>) -> Result<String, ArgsFileError> {
    edits.sort_by_key(|edit| (edit.range.start, edit.range.end));
    let mut text = String::with_capacity(source.len() + 512);
    let mut cursor = 0;
    for edit in edits {
        let kept = source
            .get(cursor..edit.range.start)
            .ok_or_else(|| ArgsFileError::internal((0, 0), "overlapping or misaligned edits"))?;
        text.push_str(kept);
        text.push_str(&edit.text);
        cursor = edit.range.end;
    }
    let rest = source
        .get(cursor..)
        .ok_or_else(|| ArgsFileError::internal((0, 0), "edit past the end of the file"))?;
    text.push_str(rest);
    Ok(text)
}

// --- Self-check --------------------------------------------------------------------------------

/// Re-reads `text` as erlexec would and confirms that TLS is on with exactly the wanted paths.
fn verify_enabled(text: &str, paths: &TlsPaths) -> Result<(), ArgsFileError> {
    let settings = dist_settings(text);
    validate(&settings)
        .map_err(|error| ArgsFileError::internal((error.line, error.column), error.message))?;
    if !settings.uses_tls() {
        return Err(ArgsFileError::internal(
            (0, 0),
            "the edited text does not select inet_tls first",
        ));
    }
    for (key, wanted) in paths.managed_options() {
        let mut values = settings.ssl_dist_opt_values(key).peekable();
        if values.peek().is_none() {
            return Err(ArgsFileError::internal(
                (0, 0),
                format!("the edited text has no {key}"),
            ));
        }
        if let Some(wrong) = values.find(|value| value.value != wanted) {
            return Err(ArgsFileError::internal(
                wrong.position(),
                format!("{key} reads back as `{}`", wrong.value),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(source: &str) -> Vec<String> {
        tokenize(source)
            .into_iter()
            .map(|token| token.text)
            .collect()
    }

    fn paths() -> TlsPaths {
        TlsPaths {
            certfile: "/etc/distls/cert.pem".into(),
            keyfile: "/etc/distls/key.pem".into(),
            cacertfile: "/etc/distls/ca.pem".into(),
        }
    }

    fn error_of(result: Result<TlsEdit, ArgsFileError>) -> ArgsFileError {
        match result {
            Ok(edit) => panic!("expected an error, got {:?}", edit.outcome),
            Err(error) => error,
        }
    }

    // ---- tokenizer, each case checked against erlexec on OTP 25 ----

    #[test]
    fn newlines_are_plain_whitespace() {
        let flags = parse_flags("-ssl_dist_opt a\n   b\n\tc d\n-x y\n");
        assert_eq!(flags.len(), 2);
        let values: Vec<&str> = flags[0].values.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(values, ["a", "b", "c", "d"]);
    }

    #[test]
    fn hash_starts_a_comment_even_mid_token() {
        assert_eq!(
            texts("-baz mid#comment rest\n-y z\n"),
            ["-baz", "mid", "-y", "z"]
        );
        assert_eq!(texts("-x \"a\"#x b\n"), ["-x", "a"]);
        assert_eq!(texts("-x a #c"), ["-x", "a"]);
        assert_eq!(texts("-x a #\\\n-y z\n"), ["-x", "a", "-y", "z"]);
    }

    #[test]
    fn backslash_quotes_the_next_byte() {
        assert_eq!(
            texts("-x x\\ y z\\#w a\\\\b \\\"q\\\"\n"),
            ["-x", "x y", "z#w", "a\\b", "\"q\""]
        );
        assert_eq!(texts("-x a\\  b\n"), ["-x", "a ", "b"]);
        assert_eq!(texts("-x a\\\tb\n"), ["-x", "a\tb"]);
        assert_eq!(texts("-x v\\"), ["-x", "v"]);
        assert_eq!(texts("-x \\"), ["-x", ""]);
    }

    #[test]
    fn backslash_newline_is_a_literal_newline_not_a_continuation() {
        assert_eq!(
            texts("-cont line1 \\\n  line2\n"),
            ["-cont", "line1", "\n", "line2"]
        );
        assert_eq!(
            texts("-cont line1 \\\nline2\n"),
            ["-cont", "line1", "\nline2"]
        );
        assert_eq!(texts("-x a\\\r\n-y z\r\n"), ["-x", "a\r", "-y", "z"]);
    }

    #[test]
    fn quotes_group_and_are_stripped() {
        assert_eq!(
            texts("-bar \"quoted value\" 'single q'\n"),
            ["-bar", "quoted value", "single q"]
        );
        assert_eq!(texts("-x \"a#b\" 'c#d' q\n"), ["-x", "a#b", "c#d", "q"]);
        assert_eq!(
            texts("-x ab\"c d\"ef \"\" 'a\"b' \"it's\"\n"),
            ["-x", "abc def", "", "a\"b", "it's"]
        );
        assert_eq!(texts("-x \"a\\ b\" \"a   b\"\n"), ["-x", "a\\ b", "a   b"]);
        assert_eq!(texts("-x \"a\nb\"\n"), ["-x", "a\nb"]);
        assert_eq!(
            texts("-x \"unterminated\n-y z\n"),
            ["-x", "unterminated\n-y z\n"]
        );
    }

    #[test]
    fn no_environment_expansion() {
        assert_eq!(texts("-x ${HOME} $HOME\n"), ["-x", "${HOME}", "$HOME"]);
    }

    #[test]
    fn crlf_and_other_whitespace_separate_tokens() {
        assert_eq!(texts("-x a\r\n-y b\r\n"), ["-x", "a", "-y", "b"]);
        assert_eq!(texts("-x a\x0cb\x0bc\n"), ["-x", "a", "b", "c"]);
    }

    #[test]
    fn tokens_record_line_column_and_span() {
        let source = "# c\n-x  \"a b\"\n  é\\ z\n";
        let tokens = tokenize(source);
        assert_eq!(
            (tokens[1].line, tokens[1].column, tokens[1].span.clone()),
            (2, 5, 8..13)
        );
        assert_eq!(&source[tokens[1].span.clone()], "\"a b\"");
        assert_eq!(
            (tokens[2].text.as_str(), tokens[2].line, tokens[2].column),
            ("é z", 3, 3)
        );
    }

    #[test]
    fn quoted_dash_token_is_a_flag_and_extra_ends_flag_parsing() {
        let flags = parse_flags("-x \"-y\" z\n-extra -proto_dist inet_tcp\n");
        let names: Vec<&str> = flags.iter().map(|flag| flag.name.text.as_str()).collect();
        assert_eq!(names, ["-x", "-y", "-extra"]);
        assert_eq!(
            dist_settings("-x a -extra -proto_dist inet_tcp\n").proto_dist,
            None
        );
    }

    // ---- distribution settings ----

    #[test]
    fn first_proto_dist_wins_and_ssl_opts_concatenate() {
        let settings = dist_settings(
            "-proto_dist inet_tcp\n-ssl_dist_opt a 1 b 2\n-proto_dist inet_tls x\n-ssl_dist_opt c 3\n",
        );
        assert_eq!(
            settings.proto_dist.as_ref().map(|p| p.value.as_str()),
            Some("inet_tcp")
        );
        let extra: Vec<&str> = settings
            .extra_proto_dist
            .iter()
            .map(|p| p.value.as_str())
            .collect();
        assert_eq!(extra, ["inet_tls", "x"]);
        let pairs = settings.ssl_dist_opt_pairs();
        assert_eq!(
            pairs,
            [
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into())
            ]
        );
        assert!(!is_tls_enabled(
            "-proto_dist inet_tcp\n-proto_dist inet_tls\n"
        ));
        assert!(is_tls_enabled("-proto_dist inet6_tls\n"));
        assert!(!is_tls_enabled("#-proto_dist inet_tls\n"));
    }

    // ---- vm.args ----

    const VM_ARGS: &str =
        "-sname mim1@localhost\n-setcookie mongooseim\n+K true\n-env ERL_FULLSWEEP_AFTER 2\n";

    #[test]
    fn node_identity_reads_sname_and_cookie() {
        let identity = node_identity(VM_ARGS).expect("valid vm.args");
        assert_eq!(identity.name_flag, NameFlag::Short);
        assert_eq!(identity.name_flag.flag(), "-sname");
        assert_eq!(identity.node_name, "mim1@localhost");
        assert_eq!(
            identity.cookie.as_ref().map(Cookie::expose),
            Some("mongooseim")
        );
    }

    #[test]
    fn node_identity_reads_long_name_without_cookie() {
        let identity = node_identity("-name a@127.0.0.1\n-env X 1\n").expect("valid vm.args");
        assert_eq!(
            (identity.name_flag, identity.node_name.as_str()),
            (NameFlag::Long, "a@127.0.0.1")
        );
        assert_eq!(identity.cookie, None);
    }

    #[test]
    fn indented_setcookie_is_an_error() {
        let error =
            node_identity("-sname mim1\n  -setcookie secret123\n").expect_err("indented cookie");
        assert_eq!((error.line, error.column), (2, 3));
        assert!(
            error.hint().contains("grep '^-setcookie'"),
            "{}",
            error.hint()
        );
        assert!(!error.to_string().contains("secret123"));
    }

    #[test]
    fn name_problems_are_reported() {
        assert_eq!(node_identity("-env X 1\n").expect_err("no name").line, 0);
        let twice = node_identity("-sname a\n-name b@h\n").expect_err("two names");
        assert_eq!((twice.line, twice.column), (2, 1));
        let quoted =
            node_identity("-sname a\n-setcookie \"sec ret\"\n").expect_err("quoted cookie");
        assert_eq!(quoted.line, 2);
        assert!(!quoted.to_string().contains("sec"));
        let next_line = node_identity("-sname\na\n").expect_err("value on next line");
        assert_eq!(next_line.line, 2);
    }

    #[test]
    fn cookie_is_redacted_in_debug_and_display() {
        let identity = node_identity(VM_ARGS).expect("valid vm.args");
        let debug = format!("{identity:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("mongooseim"),
            "{debug}"
        );
        assert_eq!(Cookie::new("s3cret").to_string(), "<redacted>");
    }

    #[test]
    fn proto_dist_in_vm_args_is_located() {
        let found = proto_dist_in_vm_args("-sname a\n## x\n-proto_dist inet_tcp\n").expect("found");
        assert_eq!(
            (found.value.as_str(), found.line, found.column),
            ("inet_tcp", 3, 13)
        );
        assert_eq!(proto_dist_in_vm_args(VM_ARGS), None);
        assert_eq!(proto_dist_in_vm_args("#-proto_dist inet_tls\n"), None);
    }

    // ---- enabling TLS ----

    const PORT_RANGE_COMMENTS: &str = "\
## Define what port range the Erlang VM should
## listen on for Distributed Erlang connectivity,
## aka communication within an Erlang cluster.
## By default a random port in the ephemeral port range is used.
## If you want to open specific ports on your firewall,
## you have to explicitly set (uncomment) these ports here, too.
#-kernel inet_dist_listen_min 30000
#-kernel inet_dist_listen_max 30100
";

    const TEMPLATE_BLOCK: &str = "\
## Use TLS for connections between Erlang cluster members.
#-proto_dist inet_tls
#-ssl_dist_opt server_certfile   /opt/mim/priv/ssl/fake_cert.pem client_certfile   /opt/mim/priv/ssl/fake_cert.pem
#              server_keyfile    /opt/mim/priv/ssl/fake_key.pem  client_keyfile    /opt/mim/priv/ssl/fake_key.pem
#              server_cacertfile /opt/mim/priv/ssl/cacert.pem    client_cacertfile /opt/mim/priv/ssl/cacert.pem
#              client_verify     verify_peer
#              server_verify     verify_peer
#              server_fail_if_no_peer_cert true
";

    const ENABLED_BLOCK: &str = "\
## Use TLS for connections between Erlang cluster members.
-proto_dist inet_tls
-ssl_dist_opt server_certfile   /etc/distls/cert.pem client_certfile   /etc/distls/cert.pem
              server_keyfile    /etc/distls/key.pem  client_keyfile    /etc/distls/key.pem
              server_cacertfile /etc/distls/ca.pem    client_cacertfile /etc/distls/ca.pem
              client_verify     verify_peer
              server_verify     verify_peer
              server_fail_if_no_peer_cert true
";

    fn template() -> String {
        format!("{PORT_RANGE_COMMENTS}\n{TEMPLATE_BLOCK}")
    }

    #[test]
    fn template_block_is_fully_uncommented() {
        let edit = enable_tls(&template(), &paths()).expect("template enables");
        assert_eq!(edit.text, format!("{PORT_RANGE_COMMENTS}\n{ENABLED_BLOCK}"));
        assert_eq!(
            edit.outcome,
            EditOutcome::UncommentedBlock {
                first_line: 11,
                last_line: 17
            }
        );
        assert!(edit.text.contains(
            "\n#-kernel inet_dist_listen_min 30000\n#-kernel inet_dist_listen_max 30100\n"
        ));
    }

    #[test]
    fn enabling_twice_is_already_enabled() {
        let first = enable_tls(&template(), &paths()).expect("enables");
        let second = enable_tls(&first.text, &paths()).expect("idempotent");
        assert_eq!(second.outcome, EditOutcome::AlreadyEnabled);
        assert_eq!(second.text, first.text);
    }

    #[test]
    fn active_block_with_other_paths_is_rewritten() {
        let first = enable_tls(&template(), &paths()).expect("enables");
        let other = TlsPaths {
            keyfile: "/srv/new key.pem".into(),
            ..paths()
        };
        let second = enable_tls(&first.text, &other).expect("rewrites");
        assert_eq!(
            second.outcome,
            EditOutcome::UpdatedActiveBlock {
                first_line: 11,
                last_line: 17
            }
        );
        assert!(second.text.contains(
            "server_keyfile    /srv/new\\ key.pem  client_keyfile    /srv/new\\ key.pem\n"
        ));
        let settings = dist_settings(&second.text);
        assert_eq!(
            settings
                .ssl_dist_opt_values("client_keyfile")
                .next()
                .map(|v| v.value.as_str()),
            Some("/srv/new key.pem")
        );
    }

    #[test]
    fn documentation_variant_with_prose_and_long_paths() {
        let long = "/Users/erszcz/work/esl/mongooseim/_build/mim1/rel/mongooseim/priv/ssl";
        let source = format!(
            "## Use TLS for connections between Erlang cluster members.\n\
             ## Don't forget to override the paths to point to your certificate(s) and key(s)!\n\
             ## Once a connection is established, Erlang doesn't differentiate between\n\
             ## a client and a server - the same certs/keys can be used on both sides.\n\
             #-proto_dist inet_tls\n\
             #-ssl_dist_opt server_certfile   {long}/fake_cert.pem client_certfile   {long}/fake_cert.pem\n\
             #              server_keyfile    {long}/fake_key.pem  client_keyfile    {long}/fake_key.pem\n\
             #              server_cacertfile {long}/cacert.pem    client_cacertfile {long}/cacert.pem\n\
             #              client_verify     verify_peer\n\
             #              server_verify     verify_peer\n\
             #              server_fail_if_no_peer_cert true\n"
        );
        let edit = enable_tls(&source, &paths()).expect("enables");
        assert_eq!(
            edit.outcome,
            EditOutcome::UncommentedBlock {
                first_line: 5,
                last_line: 11
            }
        );
        let lines: Vec<&str> = edit.text.lines().collect();
        assert!(lines[..4].iter().all(|line| line.starts_with("## ")));
        assert!(lines[4..].iter().all(|line| !line.starts_with('#')));
        assert_eq!(lines[10], "              server_fail_if_no_peer_cert true");
        assert!(!edit.text.contains(long));
    }

    #[test]
    fn upstream_template_with_verify_options_on_one_line() {
        let source = "#-proto_dist inet_tls\n\
                      #-ssl_dist_opt server_certfile   priv/ssl/fake_cert.pem client_certfile   priv/ssl/fake_cert.pem\n\
                      #              server_keyfile    priv/ssl/fake_key.pem  client_keyfile    priv/ssl/fake_key.pem\n\
                      #              server_cacertfile priv/ssl/cacert.pem    client_cacertfile priv/ssl/cacert.pem\n\
                      #              server_verify     verify_peer            client_verify     verify_peer\n\
                      #              server_fail_if_no_peer_cert true\n";
        let edit = enable_tls(source, &paths()).expect("enables");
        assert!(edit.text.contains("\n              server_verify     verify_peer            client_verify     verify_peer\n"));
        assert_eq!(edit.text.matches('#').count(), 0);
    }

    #[test]
    fn file_without_block_gets_one_appended() {
        let source = "-kernel inet_dist_listen_min 30000\n";
        let edit = enable_tls(source, &paths()).expect("appends");
        assert_eq!(edit.outcome, EditOutcome::AppendedBlock);
        let expected = "\
-kernel inet_dist_listen_min 30000
## TLS distribution (enabled by distls)
-proto_dist inet_tls
-ssl_dist_opt server_certfile   /etc/distls/cert.pem client_certfile   /etc/distls/cert.pem
              server_keyfile    /etc/distls/key.pem  client_keyfile    /etc/distls/key.pem
              server_cacertfile /etc/distls/ca.pem   client_cacertfile /etc/distls/ca.pem
              client_verify     verify_peer
              server_verify     verify_peer
              server_fail_if_no_peer_cert true
";
        assert_eq!(edit.text, expected);
    }

    #[test]
    fn append_to_file_without_trailing_newline_and_to_empty_file() {
        let edit = enable_tls("## only a comment", &paths()).expect("appends");
        assert!(edit.text.starts_with(
            "## only a comment\n## TLS distribution (enabled by distls)\n-proto_dist inet_tls\n"
        ));
        let empty = enable_tls("", &paths()).expect("appends");
        assert!(
            empty
                .text
                .starts_with("## TLS distribution (enabled by distls)\n")
        );
        assert!(is_tls_enabled(&empty.text));
    }

    #[test]
    fn uncommenting_keeps_missing_trailing_newline() {
        let source = TEMPLATE_BLOCK.trim_end_matches('\n');
        let edit = enable_tls(source, &paths()).expect("enables");
        assert_eq!(edit.text, ENABLED_BLOCK.trim_end_matches('\n'));
    }

    #[test]
    fn active_conflicting_protocol_is_an_error() {
        let source = format!("-proto_dist inet6_tcp\n{TEMPLATE_BLOCK}");
        let error = error_of(enable_tls(&source, &paths()));
        assert_eq!(
            (error.kind, error.line, error.column),
            (ErrorKind::File, 1, 13)
        );
        assert!(
            error
                .to_string()
                .starts_with("line 1, column 13: -proto_dist inet6_tcp"),
            "{error}"
        );
        assert!(error.hint().contains("remove this -proto_dist"));
        let plain = error_of(enable_tls("## x\n  -proto_dist inet_tcp\n", &paths()));
        assert_eq!((plain.line, plain.column), (2, 15));
    }

    #[test]
    fn two_commented_blocks_are_an_error() {
        let source = format!("{TEMPLATE_BLOCK}\n{TEMPLATE_BLOCK}");
        let error = error_of(enable_tls(&source, &paths()));
        assert_eq!((error.line, error.column), (11, 1));
        assert!(
            error.message.contains("first starts on line 2"),
            "{}",
            error.message
        );
    }

    #[test]
    fn typo_in_key_is_reported_with_suggestion() {
        let source = TEMPLATE_BLOCK.replace(
            "#              server_verify ",
            "#              server_verfy  ",
        );
        let error = error_of(enable_tls(&source, &paths()));
        assert_eq!((error.line, error.column), (7, 16));
        assert!(error.message.contains("server_verfy"));
        assert!(error.hint().contains("server_verify"), "{}", error.hint());
        let certfle = error_of(enable_tls(
            "-proto_dist inet_tls\n-ssl_dist_opt server_certfle /x\n",
            &paths(),
        ));
        assert_eq!((certfle.line, certfle.column), (2, 15));
    }

    #[test]
    fn odd_number_of_values_is_an_error() {
        let error = error_of(enable_tls(
            "#-proto_dist inet_tls\n#-ssl_dist_opt server_certfile a b\n",
            &paths(),
        ));
        assert_eq!((error.line, error.column), (2, 34));
        assert!(error.message.contains("`b`"), "{}", error.message);
    }

    #[test]
    fn single_hash_prose_after_the_block_is_caught() {
        let source = format!("{TEMPLATE_BLOCK}# remember to copy the certs\n");
        let error = error_of(enable_tls(&source, &paths()));
        assert_eq!(error.line, 9);
        assert!(error.hint().contains("##"), "{}", error.hint());
    }

    #[test]
    fn optfile_is_refused() {
        let error = error_of(enable_tls(
            "-proto_dist inet_tls\n-ssl_dist_optfile /etc/x.conf\n",
            &paths(),
        ));
        assert_eq!((error.line, error.column), (2, 19));
    }

    #[test]
    fn paths_with_spaces_and_hash_are_escaped() {
        let tricky = TlsPaths {
            certfile: "/opt/my certs/#1 cert.pem".into(),
            keyfile: "/opt/it's\\key\t.pem".into(),
            cacertfile: "/opt/\"ca\".pem".into(),
        };
        let edit = enable_tls(&template(), &tricky).expect("enables");
        assert!(
            edit.text
                .contains("server_certfile   /opt/my\\ certs/\\#1\\ cert.pem"),
            "{}",
            edit.text
        );
        let settings = dist_settings(&edit.text);
        for (key, wanted) in tricky.managed_options() {
            let values: Vec<&str> = settings
                .ssl_dist_opt_values(key)
                .map(|v| v.value.as_str())
                .collect();
            assert_eq!(values, [wanted]);
        }
        if let Some(seen) = erl_ssl_dist_opts(&edit.text) {
            let expected: Vec<String> = settings
                .ssl_dist_opt_pairs()
                .into_iter()
                .flat_map(|(key, value)| [key, value])
                .collect();
            assert_eq!(seen, expected);
        }
    }

    /// The `-ssl_dist_opt` values the real erlexec reads from `text`, or `None` when `erl` is absent.
    fn erl_ssl_dist_opts(text: &str) -> Option<Vec<String>> {
        let eval = "{ok, L} = init:get_argument(ssl_dist_opt), \
                    [io:format(\"~s~n\", [binary:encode_hex(unicode:characters_to_binary(V))]) || V <- lists:append(L)], halt().";
        erl_with_args_files("ssl", &[text.to_string()], eval)
    }

    /// Runs `erl -eval EVAL` with each text as an `-args_file`; returns the lines it printed,
    /// hex-decoded, or `None` when `erl` is not on PATH.
    fn erl_with_args_files(tag: &str, texts: &[String], eval: &str) -> Option<Vec<String>> {
        let directory = std::env::temp_dir();
        let files: Vec<_> = (0..texts.len())
            .map(|index| {
                directory.join(format!(
                    "distls-argsfile-{}-{tag}-{index}.args",
                    std::process::id()
                ))
            })
            .collect();
        let mut command = std::process::Command::new("erl");
        command.arg("-noshell").env(
            "ERL_CRASH_DUMP",
            directory.join(format!(
                "distls-argsfile-{}.erl_crash.dump",
                std::process::id()
            )),
        );
        for (file, text) in files.iter().zip(texts) {
            std::fs::write(file, text).expect("write temp args file");
            command.arg("-args_file").arg(file);
        }
        let output = command.args(["-eval", eval]).output();
        files
            .iter()
            .for_each(|file| drop(std::fs::remove_file(file)));
        let output = output.ok()?;
        assert!(
            output.status.success(),
            "erl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let decode = |line: &str| {
            String::from_utf8(hex::decode(line).expect("hex from erl")).expect("utf-8")
        };
        Some(stdout.lines().map(decode).collect())
    }

    const TOKENIZER_CASES: [&str; 16] = [
        "-x a\n   b\n\tc d\n-y z\n",
        "-baz mid#comment rest\n-y z\n",
        "-x \"a\"#x b\n-y\n",
        "-x x\\ y z\\#w a\\\\b \\\"q\\\"\n",
        "-x a\\  b a\\\tb v\\",
        "-x \\",
        "-cont line1 \\\n  line2\n-cont line1 \\\nline2\n",
        "-x a\\\r\n-y z\r\n",
        "-bar \"quoted value\" 'single q' \"a#b\" 'c#d'\n",
        "-x ab\"c d\"ef \"\" 'a\"b' \"it's\" \"a\\ b\" \"a   b\"\n",
        "-x \"a\nb\" \"unterminated\n-y z\n",
        "-x ${HOME} a\x0cb\x0bc\n",
        "# c\n-x  \"a b\"\n  \u{e9}\\ z #\\\n-y",
        "",
        "#only comment",
        "-x a\\\n#c\n-y z\n",
    ];

    #[test]
    fn tokenizer_agrees_with_real_erlexec() {
        // After `-extra`, erlexec passes a file's arguments on verbatim, followed by "--".
        let files: Vec<String> = TOKENIZER_CASES
            .iter()
            .map(|case| format!("-extra {case}"))
            .collect();
        let eval = "[io:format(\"~s~n\", [binary:encode_hex(unicode:characters_to_binary(A))]) || A <- init:get_plain_arguments()], halt().";
        let Some(seen) = erl_with_args_files("tokens", &files, eval) else {
            return;
        };
        let per_file: Vec<&[String]> = seen.split(|argument| argument == "--").collect();
        assert_eq!(per_file.len(), TOKENIZER_CASES.len() + 1, "{seen:?}");
        for (index, case) in TOKENIZER_CASES.iter().enumerate() {
            assert_eq!(texts(case), per_file[index], "case {case:?}");
        }
    }

    #[test]
    fn unusable_paths_are_rejected() {
        for bad in ["/a\nb", "/a\0b", "", "-cert.pem", "/a\rb"] {
            let wanted = TlsPaths {
                certfile: bad.into(),
                ..paths()
            };
            let error = error_of(enable_tls(&template(), &wanted));
            assert_eq!((error.kind, error.line), (ErrorKind::Path, 0), "{bad:?}");
        }
    }

    #[test]
    fn continuation_with_trailing_comment() {
        let source = TEMPLATE_BLOCK.replace(
            "server_fail_if_no_peer_cert true\n",
            "server_fail_if_no_peer_cert true # mutual TLS\n",
        );
        let edit = enable_tls(&source, &paths()).expect("enables");
        assert!(
            edit.text
                .ends_with("\n              server_fail_if_no_peer_cert true # mutual TLS\n")
        );
        assert!(is_tls_enabled(&edit.text));
    }

    #[test]
    fn crlf_file_stays_crlf() {
        let source = template().replace('\n', "\r\n");
        let edit = enable_tls(&source, &paths()).expect("enables");
        assert_eq!(
            edit.text,
            format!("{PORT_RANGE_COMMENTS}\n{ENABLED_BLOCK}").replace('\n', "\r\n")
        );
        let appended = enable_tls("-kernel a b\r\n", &paths()).expect("appends");
        assert_eq!(
            appended.text.matches('\n').count(),
            appended.text.matches("\r\n").count()
        );
    }

    #[test]
    fn missing_keys_are_added_as_continuation_lines() {
        let source = "#-proto_dist inet_tls\n#-ssl_dist_opt server_certfile /old/c.pem client_certfile /old/c.pem\n## end\n";
        let edit = enable_tls(source, &paths()).expect("enables");
        let expected = "-proto_dist inet_tls\n\
                        -ssl_dist_opt server_certfile /etc/distls/cert.pem client_certfile /etc/distls/cert.pem\n              \
                        server_keyfile    /etc/distls/key.pem\n              \
                        client_keyfile    /etc/distls/key.pem\n              \
                        server_cacertfile /etc/distls/ca.pem\n              \
                        client_cacertfile /etc/distls/ca.pem\n\
                        ## end\n";
        assert_eq!(edit.text, expected);
        assert_eq!(
            edit.outcome,
            EditOutcome::UncommentedBlock {
                first_line: 1,
                last_line: 6
            }
        );
    }

    #[test]
    fn half_enabled_block_is_completed() {
        let half = ENABLED_BLOCK.replace("\n              ", "\n#              ");
        let edit = enable_tls(&half, &paths()).expect("completes");
        assert_eq!(edit.text, ENABLED_BLOCK);
        assert_eq!(
            edit.outcome,
            EditOutcome::UncommentedBlock {
                first_line: 2,
                last_line: 8
            }
        );
    }

    #[test]
    fn commented_leftover_next_to_active_block_is_left_alone() {
        let source = format!("{ENABLED_BLOCK}\n{TEMPLATE_BLOCK}");
        let edit = enable_tls(&source, &paths()).expect("already enabled");
        assert_eq!(edit.outcome, EditOutcome::AlreadyEnabled);
        assert_eq!(edit.text, source);
    }

    #[test]
    fn proto_dist_only_block_gets_ssl_options() {
        let edit = enable_tls(
            "#-proto_dist inet_tls\n#-kernel inet_dist_listen_min 1\n",
            &paths(),
        )
        .expect("enables");
        assert!(edit.text.starts_with(
            "-proto_dist inet_tls\n-ssl_dist_opt server_certfile   /etc/distls/cert.pem "
        ));
        assert!(
            edit.text
                .ends_with("server_fail_if_no_peer_cert true\n#-kernel inet_dist_listen_min 1\n")
        );
    }

    #[test]
    fn ssl_options_without_proto_dist_get_one_inserted() {
        let source = "#-ssl_dist_opt server_certfile /c client_certfile /c server_keyfile /k client_keyfile /k\n\
                      #  server_cacertfile /a client_cacertfile /a\n";
        let edit = enable_tls(source, &paths()).expect("enables");
        assert!(edit.text.starts_with(
            "-proto_dist inet_tls\n-ssl_dist_opt server_certfile /etc/distls/cert.pem"
        ));
        assert!(edit.text.contains(
            "\n  server_cacertfile /etc/distls/ca.pem client_cacertfile /etc/distls/ca.pem\n"
        ));
    }

    #[test]
    fn other_flag_on_the_last_line_gets_values_inline() {
        let source = "-proto_dist inet_tls -ssl_dist_opt server_certfile /c -kernel a b\n";
        let edit = enable_tls(source, &paths()).expect("updates");
        assert!(edit.text.starts_with("-proto_dist inet_tls -ssl_dist_opt server_certfile /etc/distls/cert.pem client_certfile"));
        assert!(edit.text.ends_with(" -kernel a b\n"));
    }

    #[test]
    fn inet6_tls_counts_as_enabled() {
        let source = ENABLED_BLOCK.replace("inet_tls", "inet6_tls");
        let edit = enable_tls(&source, &paths()).expect("already enabled");
        assert_eq!(
            (edit.outcome, edit.text),
            (EditOutcome::AlreadyEnabled, source)
        );
    }

    #[test]
    fn adjacent_kernel_lines_stay_commented() {
        let source = "#-kernel inet_dist_listen_min 30000\n#-proto_dist inet_tls\n\
                      #-ssl_dist_opt server_certfile /c client_certfile /c\n\
                      #-kernel inet_dist_listen_max 30100\n";
        let edit = enable_tls(source, &paths()).expect("enables");
        assert!(edit.text.starts_with(
            "#-kernel inet_dist_listen_min 30000\n-proto_dist inet_tls\n-ssl_dist_opt "
        ));
        assert!(edit.text.ends_with(
            "client_cacertfile /etc/distls/ca.pem\n#-kernel inet_dist_listen_max 30100\n"
        ));
    }

    #[test]
    fn appending_after_an_open_quote_or_backslash_is_refused() {
        let quote = error_of(enable_tls("-x a\n-y \"unterminated\n", &paths()));
        assert_eq!(
            (quote.kind, quote.line, quote.column),
            (ErrorKind::File, 2, 4)
        );
        let backslash = error_of(enable_tls("-x a\\", &paths()));
        assert_eq!((backslash.line, backslash.column), (1, 4));
    }

    #[test]
    fn self_check_rejects_text_that_reads_back_wrong() {
        let wrong = "-proto_dist inet_tls\n-ssl_dist_opt server_certfile /etc/distls/cert.pem\n";
        let error = verify_enabled(wrong, &paths()).expect_err("missing keys");
        assert_eq!(error.kind, ErrorKind::Internal);
        let swallowed = ENABLED_BLOCK.replace("/ca.pem    client", "/ca.pem#   client");
        let error = verify_enabled(&swallowed, &paths()).expect_err("comment swallowed a key");
        assert_eq!(
            error.to_string(),
            "internal error: the edited text has no client_cacertfile"
        );
        let stale = ENABLED_BLOCK.replace(
            "client_keyfile    /etc/distls/key.pem",
            "client_keyfile    /old.pem",
        );
        let error = verify_enabled(&stale, &paths()).expect_err("wrong value");
        assert_eq!(
            (error.kind, error.line, error.column),
            (ErrorKind::Internal, 4, 72)
        );
    }

    #[test]
    fn arguments_spanning_lines_are_refused() {
        let source = format!("-kernel x \\\n  y\n{TEMPLATE_BLOCK}");
        let error = error_of(enable_tls(&source, &paths()));
        assert_eq!((error.line, error.column), (1, 11));
        assert!(error.hint().contains("no line continuation"));
    }

    #[test]
    fn prose_after_a_lone_proto_dist_stays_a_comment() {
        let source = "#-proto_dist inet_tls\n# see the TLS docs\n";
        let edit = enable_tls(source, &paths()).expect("enables");
        assert!(
            edit.text
                .ends_with("server_fail_if_no_peer_cert true\n\n# see the TLS docs\n")
        );
        let again = enable_tls(&edit.text, &paths()).expect("idempotent");
        assert_eq!(again.outcome, EditOutcome::AlreadyEnabled);
    }

    #[test]
    fn escape_value_round_trips() {
        for value in [
            "plain",
            "a b",
            "#x",
            "it's",
            "\"q\"",
            "back\\slash",
            "tab\there",
            "ünï cödé",
            "line\nbreak\r",
        ] {
            assert_eq!(texts(&escape_value(value)), [value]);
        }
    }

    #[test]
    fn known_keys_follow_inet_tls_dist() {
        assert!(is_known_ssl_dist_opt("server_fail_if_no_peer_cert"));
        assert!(is_known_ssl_dist_opt("client_ktls"));
        assert!(!is_known_ssl_dist_opt("client_fail_if_no_peer_cert"));
        assert!(!is_known_ssl_dist_opt("certfile"));
        assert_eq!(
            closest_known_key("server_certfle").as_deref(),
            Some("server_certfile")
        );
    }
}
