//! The YAML layer: the plan file as written, every value with its position.

use super::*;

pub(super) type Text = Spanned<String>;

/// `[A-Za-z_][A-Za-z0-9_]*`: what `export` accepts.
pub(super) fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) version: Option<Text>,
    pub(super) cluster: Option<Text>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) defaults: Option<RawSettings>,
    pub(super) nodes: Option<Spanned<Vec<Spanned<RawNode>>>>,
    pub(super) on_failure: Option<Text>,
    pub(super) flavor: Option<Text>,
    pub(super) batch: Option<Text>,
}

impl RawPlan {
    pub(super) fn is_empty(&self) -> bool {
        self.version.is_none()
            && self.cluster.is_none()
            && self.tls.is_none()
            && self.defaults.is_none()
            && self.nodes.is_none()
            && self.on_failure.is_none()
            && self.flavor.is_none()
            && self.batch.is_none()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) certfile: Option<Text>,
    pub(super) keyfile: Option<Text>,
    pub(super) cacertfile: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommands {
    pub(super) start: Option<Text>,
    pub(super) stop: Option<Text>,
    pub(super) ping: Option<Text>,
    pub(super) ready: Option<Text>,
    pub(super) before_stop: Option<Text>,
    pub(super) after_start: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) stop: Option<Text>,
    pub(super) start: Option<Text>,
    pub(super) rejoin: Option<Text>,
    pub(super) ping: Option<Text>,
    pub(super) kill_grace: Option<Text>,
    pub(super) ready: Option<Text>,
    pub(super) before_stop: Option<Text>,
    pub(super) after_start: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) transport: Option<Text>,
    pub(super) host: Option<Text>,
    pub(super) port: Option<Text>,
    pub(super) user: Option<Text>,
    pub(super) identity_file: Option<Text>,
    pub(super) ssh_config: Option<Text>,
    pub(super) ssh_options: Option<Vec<Text>>,
    pub(super) known_hosts: Option<Text>,
    pub(super) accept_unknown_host_keys: Option<Text>,
    pub(super) r#become: Option<Text>,
    pub(super) env: Option<BTreeMap<String, Text>>,
    pub(super) flavor: Option<Text>,
    pub(super) flags_file: Option<Text>,
    pub(super) cookie_file: Option<Text>,
    pub(super) vm_dist_args: Option<Text>,
    pub(super) vm_args: Option<Text>,
    pub(super) erl: Option<Text>,
    pub(super) commands: Option<RawCommands>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) tls: Option<RawTls>,
}

// The node-level keys repeat RawSettings': `#[serde(flatten)]` would lose both the value
// positions and deny_unknown_fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: Option<Text>,
    pub(super) transport: Option<Text>,
    pub(super) host: Option<Text>,
    pub(super) port: Option<Text>,
    pub(super) user: Option<Text>,
    pub(super) identity_file: Option<Text>,
    pub(super) ssh_config: Option<Text>,
    pub(super) ssh_options: Option<Vec<Text>>,
    pub(super) known_hosts: Option<Text>,
    pub(super) accept_unknown_host_keys: Option<Text>,
    pub(super) r#become: Option<Text>,
    pub(super) env: Option<BTreeMap<String, Text>>,
    pub(super) flavor: Option<Text>,
    pub(super) flags_file: Option<Text>,
    pub(super) cookie_file: Option<Text>,
    pub(super) vm_dist_args: Option<Text>,
    pub(super) vm_args: Option<Text>,
    pub(super) erl: Option<Text>,
    pub(super) commands: Option<RawCommands>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) tls: Option<RawTls>,
}

impl RawNode {
    pub(super) fn into_parts(self) -> (Option<Text>, RawSettings) {
        let settings = RawSettings {
            transport: self.transport,
            host: self.host,
            port: self.port,
            user: self.user,
            identity_file: self.identity_file,
            ssh_config: self.ssh_config,
            ssh_options: self.ssh_options,
            known_hosts: self.known_hosts,
            accept_unknown_host_keys: self.accept_unknown_host_keys,
            r#become: self.r#become,
            env: self.env,
            flavor: self.flavor,
            flags_file: self.flags_file,
            cookie_file: self.cookie_file,
            vm_dist_args: self.vm_dist_args,
            vm_args: self.vm_args,
            erl: self.erl,
            commands: self.commands,
            timeouts: self.timeouts,
            tls: self.tls,
        };
        (self.name, settings)
    }
}

impl RawSettings {
    pub(super) fn command(&self, key: fn(&RawCommands) -> &Option<Text>) -> Option<&Text> {
        self.commands
            .as_ref()
            .and_then(|commands| key(commands).as_ref())
    }

    pub(super) fn timeout(&self, key: fn(&RawTimeouts) -> &Option<Text>) -> Option<&Text> {
        self.timeouts
            .as_ref()
            .and_then(|timeouts| key(timeouts).as_ref())
    }

    pub(super) fn tls_file(&self, key: fn(&RawTls) -> &Option<Text>) -> Option<&Text> {
        self.tls.as_ref().and_then(|tls| key(tls).as_ref())
    }
}

pub(super) fn referenced<T>(value: &Spanned<T>) -> SourceLocation {
    SourceLocation::from_yaml(value.referenced)
        .or_else(|| SourceLocation::from_yaml(value.defined))
        .unwrap_or(SourceLocation::START)
}

/// Where the text itself is written (differs from `referenced` for YAML aliases).
pub(super) fn defined<T>(value: &Spanned<T>) -> SourceLocation {
    SourceLocation::from_yaml(value.defined).unwrap_or_else(|| referenced(value))
}

pub(super) fn parse_yaml(text: &SourceText) -> Result<RawPlan, PlanError> {
    // A plan is small and flat: tight limits turn alias bombs ("billion laughs"), deep nesting
    // and event floods into a located error instead of memory or stack exhaustion.
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: DuplicateKeyPolicy::Error,
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 16,
            max_nodes: 100_000,
            max_documents: 2,
            max_total_scalar_bytes: 1024 * 1024,
        },
    };
    serde_saphyr::from_str_with_options(text.text, options).map_err(|err| {
        let (message, hint) = describe_yaml_error(&err, text);
        match err.location().and_then(SourceLocation::from_yaml) {
            Some(at) => text.error(at, message, hint),
            None => PlanError::unlocated(text.path, message, hint),
        }
    })
}

pub(super) fn describe_yaml_error(
    err: &serde_saphyr::Error,
    text: &SourceText,
) -> (String, String) {
    use serde_saphyr::Error as YamlError;
    match err {
        YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } => {
            describe_yaml_error(error, text)
        }
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => describe_unknown_key(field, expected),
        YamlError::DuplicateMappingKey { key, .. } => {
            let message = match key {
                Some(key) => format!("key \"{key}\" appears twice in the same mapping"),
                None => "the same key appears twice in one mapping".to_owned(),
            };
            (message, "keep only one of them".to_owned())
        }
        YamlError::Unexpected { expected, location } => {
            describe_wrong_shape(expected, text, *location)
        }
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => (
            format!(
                "wrong kind of value: found {unexpected}, expected {}",
                if expected.starts_with("struct ") {
                    "a mapping"
                } else {
                    expected
                }
            ),
            "see the plan format for what this key takes".to_owned(),
        ),
        YamlError::Budget { breach, .. } => (
            format!("the plan exceeds a safety limit of the YAML reader: {breach:?}"),
            "a plan is a small, flat document: remove deep nesting and repeated aliases (`*name`)"
                .to_owned(),
        ),
        YamlError::MultipleDocuments { .. } => (
            "the plan file holds more than one YAML document".to_owned(),
            "keep a single document: remove the `---` line and what follows it".to_owned(),
        ),
        other => (
            format!(
                "invalid YAML: {}",
                UserMessageFormatter.format_message(other)
            ),
            SYNTAX_HINT.to_owned(),
        ),
    }
}

/// Names the section an unknown key was found in, recognised by its list of allowed keys.
pub(super) fn describe_unknown_key(field: &str, allowed: &[&str]) -> (String, String) {
    let has = |key: &str| allowed.contains(&key);
    let section = if has("cluster") {
        "the top level of the plan"
    } else if has("name") {
        "a node entry"
    } else if has("vm_dist_args") {
        "`defaults`"
    } else if has("cacertfile") {
        "a `tls` section"
    } else if has("rejoin") {
        "a `timeouts` section"
    } else {
        "a `commands` section"
    };
    let message = format!(
        "unknown key \"{field}\" in {section}; allowed keys: {}",
        allowed.join(", ")
    );
    let settings_key = [
        "transport",
        "host",
        "port",
        "user",
        "identity_file",
        "ssh_config",
        "ssh_options",
        "known_hosts",
        "accept_unknown_host_keys",
        "become",
        "env",
        "flags_file",
        "cookie_file",
        "vm_dist_args",
        "vm_args",
        "erl",
        "commands",
        "timeouts",
    ]
    .contains(&field);
    let hint = if let Some(close) = closest(field, allowed) {
        format!("did you mean \"{close}\"?")
    } else if has("cluster") && settings_key {
        format!(
            "node settings go under `defaults:` (for every node) or on a node entry; move `{field}` there"
        )
    } else if has("vm_dist_args") && field == "name" {
        "`name` belongs on each entry under `nodes:`, not in `defaults`".to_owned()
    } else {
        "remove it, or use one of the allowed keys".to_owned()
    };
    (message, hint)
}

pub(super) fn describe_wrong_shape(
    expected: &str,
    text: &SourceText,
    location: Location,
) -> (String, String) {
    match expected {
        "mapping start" => {
            let line = usize::try_from(location.line()).unwrap_or(0);
            let is_list_entry = line > 0
                && text
                    .text
                    .lines()
                    .nth(line - 1)
                    .is_some_and(|line| line.trim_start().starts_with('-'));
            let hint = if is_list_entry {
                "each entry here is a mapping, e.g. `- name: mim1@db1`"
            } else {
                "write `key: value` lines indented under this key"
            };
            ("expected a mapping here".to_owned(), hint.to_owned())
        }
        "sequence start" => (
            "expected a list here".to_owned(),
            "write one entry per line starting with `- `, e.g. `  - name: mim1@db1`".to_owned(),
        ),
        "string scalar" => (
            "expected a single value here, not a list or a mapping".to_owned(),
            "write a plain value, in quotes if it contains `: `, `#` or starts with `[`, `{`, `*` or `&`"
                .to_owned(),
        ),
        other => (
            format!("expected {other} here"),
            SYNTAX_HINT.to_owned(),
        ),
    }
}

/// The allowed word closest to a misspelled one, if it is close enough to be a typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.min(candidate.len() / 2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}
