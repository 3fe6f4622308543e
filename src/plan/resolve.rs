//! The semantic layer: from the plan as written to resolved nodes (defaults merged,
//! placeholders expanded, paths resolved), every mistake located.

use super::*;

pub(super) struct Resolver<'a> {
    pub(super) text: SourceText<'a>,
    pub(super) plan_dir: PathBuf,
}

/// A node name split into the parts placeholders expand to.
pub(super) struct NodeName<'a> {
    pub(super) full: &'a str,
    pub(super) sname: &'a str,
    pub(super) host: &'a str,
}

/// A node's files as its flavor uses them.
pub(super) struct FlavorFiles {
    pub(super) flags_file: PathBuf,
    pub(super) flags_at: SourceLocation,
    pub(super) identity_file: PathBuf,
    pub(super) identity_at: SourceLocation,
    pub(super) cookie_file: Option<PathBuf>,
}

/// The top-level `tls` section, complete.
pub(super) struct TopTls<'r> {
    pub(super) certfile: &'r Text,
    pub(super) keyfile: &'r Text,
    pub(super) cacertfile: &'r Text,
}

impl Resolver<'_> {
    pub(super) fn error(
        &self,
        at: SourceLocation,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        self.text.error(at, message, hint)
    }

    pub(super) fn missing_top_level(&self, key: &str, message: &str, hint: &str) -> PlanError {
        let at = self
            .text
            .top_level_key(key)
            .unwrap_or(SourceLocation::START);
        self.error(at, message, hint)
    }

    pub(super) fn resolve(
        &self,
        raw: RawPlan,
    ) -> Result<(String, OnFailure, Vec<NodeSpec>), PlanError> {
        if raw.is_empty() {
            return Err(self.error(
                SourceLocation::START,
                "the plan file is empty",
                "write a plan: version: 1, cluster, tls, defaults and nodes",
            ));
        }
        let version = raw.version.as_ref().ok_or_else(|| {
            self.missing_top_level(
                "version",
                "the plan has no `version`",
                "add `version: 1` as the first line",
            )
        })?;
        self.check_version(version)?;
        let cluster = self.cluster(raw.cluster.as_ref())?;
        let on_failure = match &raw.on_failure {
            None => OnFailure::default(),
            Some(text) => text.value.parse().map_err(|_| {
                self.error(
                    defined(text),
                    format!(
                        "on_failure \"{}\" is not a failure policy; expected one of: {}",
                        text.value,
                        OnFailure::NAMES.join(", ")
                    ),
                    "write `on_failure: rollback` (the default) or `on_failure: pause`",
                )
            })?,
        };
        let top_tls = self.top_tls(raw.tls.as_ref())?;
        let top_flavor = match &raw.flavor {
            Some(text) => self.flavor(text)?,
            None => Flavor::default(),
        };
        let defaults = raw.defaults.unwrap_or_default();
        self.check_settings(&defaults)?;

        let nodes = raw.nodes.ok_or_else(|| {
            self.missing_top_level(
                "nodes",
                "the plan has no nodes",
                "add a `nodes:` list with one `- name: NAME@HOST` entry per node",
            )
        })?;
        if nodes.value.is_empty() {
            return Err(self.error(
                referenced(&nodes),
                "the `nodes` list is empty",
                "add one `- name: NAME@HOST` entry per node, e.g. `- name: mim1@db1`",
            ));
        }

        let mut resolved: Vec<NodeSpec> = Vec::with_capacity(nodes.value.len());
        let mut first_seen: HashMap<String, SourceLocation> = HashMap::new();
        for node in nodes.value {
            let entry = referenced(&node);
            let (name, settings) = node.value.into_parts();
            let name = name.ok_or_else(|| {
                self.error(
                    entry,
                    "this node entry has no `name`",
                    "add `name: NAME@HOST`, e.g. `- name: mim1@db1`",
                )
            })?;
            let spec = self.node(&name, &settings, &defaults, &top_tls, top_flavor)?;
            if let Some(first) = first_seen.get(&spec.name) {
                return Err(self.error(
                    defined(&name),
                    format!(
                        "node \"{}\" is listed twice (first at line {})",
                        spec.name, first.line
                    ),
                    "remove one of the two entries; each node is migrated once",
                ));
            }
            first_seen.insert(spec.name.clone(), defined(&name));
            resolved.push(spec);
        }
        self.check_distinct_dist_args(&resolved)?;
        Ok((cluster, on_failure, resolved))
    }

    pub(super) fn check_version(&self, version: &Text) -> Result<(), PlanError> {
        match version.value.trim().parse::<u64>() {
            Ok(PLAN_FORMAT_VERSION) => Ok(()),
            Ok(other) => Err(self.error(
                defined(version),
                format!(
                    "plan format {other} is not supported: this distls reads plan format {PLAN_FORMAT_VERSION}"
                ),
                format!(
                    "use a distls release that reads format {other}, or rewrite the plan for format {PLAN_FORMAT_VERSION}"
                ),
            )),
            Err(_) => Err(self.error(
                defined(version),
                format!("version \"{}\" is not a number", version.value),
                format!("write `version: {PLAN_FORMAT_VERSION}`"),
            )),
        }
    }

    pub(super) fn cluster(&self, cluster: Option<&Text>) -> Result<String, PlanError> {
        let hint = "write e.g. `cluster: mim-prod` (letters, digits, _ . and -)";
        let cluster = cluster.ok_or_else(|| {
            self.missing_top_level("cluster", "the plan has no `cluster` name", hint)
        })?;
        let value = &cluster.value;
        if value.is_empty() {
            return Err(self.error(defined(cluster), "the cluster name is empty", hint));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(self.error(
                defined(cluster),
                format!("cluster name \"{value}\" contains {bad:?}"),
                hint,
            ));
        }
        Ok(value.clone())
    }

    pub(super) fn top_tls<'r>(
        &self,
        tls: Option<&'r Spanned<RawTls>>,
    ) -> Result<TopTls<'r>, PlanError> {
        let Some(tls) = tls else {
            return Err(self.missing_top_level(
                "tls",
                "the plan has no top-level `tls` section",
                "add `tls:` with certfile, keyfile and cacertfile: the PEM files every node uses",
            ));
        };
        let require = |key: &str, value: &'r Option<Text>| {
            value.as_ref().ok_or_else(|| {
                let at = self.text.top_level_key("tls").unwrap_or_else(|| referenced(tls));
                self.error(
                    at,
                    format!("the top-level `tls` section has no `{key}`"),
                    format!("add `{key}: /path/to/file.pem` under `tls:`; certfile, keyfile and cacertfile are all required there"),
                )
            })
        };
        let top = TopTls {
            certfile: require("certfile", &tls.value.certfile)?,
            keyfile: require("keyfile", &tls.value.keyfile)?,
            cacertfile: require("cacertfile", &tls.value.cacertfile)?,
        };
        for (key, value) in [
            ("tls.certfile", top.certfile),
            ("tls.keyfile", top.keyfile),
            ("tls.cacertfile", top.cacertfile),
        ] {
            self.check_template(key, value)?;
        }
        Ok(top)
    }

    /// Checks what can be checked on settings alone, before any node is known.
    pub(super) fn check_settings(&self, settings: &RawSettings) -> Result<(), PlanError> {
        if let Some(transport) = &settings.transport {
            self.transport(transport)?;
        }
        if let Some(flavor) = &settings.flavor {
            self.flavor(flavor)?;
        }
        let templates = [
            ("flags_file", settings.flags_file.as_ref()),
            ("cookie_file", settings.cookie_file.as_ref()),
            ("commands.ready", settings.command(|c| &c.ready)),
            ("vm_dist_args", settings.vm_dist_args.as_ref()),
            ("vm_args", settings.vm_args.as_ref()),
            ("erl", settings.erl.as_ref()),
            ("commands.start", settings.command(|c| &c.start)),
            ("commands.stop", settings.command(|c| &c.stop)),
            ("commands.ping", settings.command(|c| &c.ping)),
            ("tls.certfile", settings.tls_file(|t| &t.certfile)),
            ("tls.keyfile", settings.tls_file(|t| &t.keyfile)),
            ("tls.cacertfile", settings.tls_file(|t| &t.cacertfile)),
        ];
        for (key, value) in templates {
            if let Some(value) = value {
                self.check_template(key, value)?;
            }
        }
        let timeouts = [
            ("stop", settings.timeout(|t| &t.stop)),
            ("start", settings.timeout(|t| &t.start)),
            ("rejoin", settings.timeout(|t| &t.rejoin)),
            ("ping", settings.timeout(|t| &t.ping)),
            ("kill_grace", settings.timeout(|t| &t.kill_grace)),
            ("ready", settings.timeout(|t| &t.ready)),
        ];
        for (key, value) in timeouts {
            if let Some(value) = value {
                self.duration(key, value)?;
            }
        }
        Ok(())
    }

    pub(super) fn node(
        &self,
        name_text: &Text,
        own: &RawSettings,
        defaults: &RawSettings,
        top_tls: &TopTls,
        top_flavor: Flavor,
    ) -> Result<NodeSpec, PlanError> {
        let name = self.node_name(name_text)?;
        self.check_settings(own)?;
        let name_at = defined(name_text);
        let flavor = match own.flavor.as_ref().or(defaults.flavor.as_ref()) {
            Some(text) => self.flavor(text)?,
            None => top_flavor,
        };
        let files = self.flavor_files(flavor, &name, name_at, own, defaults)?;
        let defaults_for_flavor = flavor.default_commands(&files.flags_file);
        let command = |key: &str,
                       pick: fn(&RawSettings) -> Option<&Text>,
                       fallback: Option<&String>|
         -> Result<(String, SourceLocation), PlanError> {
            match pick(own).or(pick(defaults)) {
                Some(text) => Ok((expand(&text.value, &name), referenced(text))),
                None => match fallback {
                    Some(default) => Ok((default.clone(), name_at)),
                    None => Err(self.error(
                        name_at,
                        format!("node \"{}\" has no {key}", name.full),
                        where_to_set(key),
                    )),
                },
            }
        };
        let (start, start_at) = command(
            "commands.start",
            |s| s.command(|c| &c.start),
            defaults_for_flavor.as_ref().map(|d| &d.start),
        )?;
        let (stop, stop_at) = command(
            "commands.stop",
            |s| s.command(|c| &c.stop),
            defaults_for_flavor.as_ref().map(|d| &d.stop),
        )?;
        let optional =
            |pick: fn(&RawSettings) -> Option<&Text>, fallback: Option<&String>| match pick(own)
                .or(pick(defaults))
            {
                Some(text) => Some((expand(&text.value, &name), Some(referenced(text)))),
                None => fallback.map(|d| (d.clone(), None)),
            };
        let ping = optional(
            |s| s.command(|c| &c.ping),
            defaults_for_flavor.as_ref().map(|d| &d.ping),
        );
        let ready = optional(
            |s| s.command(|c| &c.ready),
            defaults_for_flavor.as_ref().map(|d| &d.ready),
        );

        let transport = match own.transport.as_ref().or(defaults.transport.as_ref()) {
            Some(text) => self.transport(text)?,
            None => TransportKind::Local,
        };
        let ssh = match transport {
            TransportKind::Local => None,
            TransportKind::Ssh => Some(self.ssh(own, defaults, &name)?),
        };
        let become_command = own
            .r#become
            .as_ref()
            .or(defaults.r#become.as_ref())
            .map(|text| expand(&text.value, &name))
            .filter(|b| !b.trim().is_empty());
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for source in [defaults, own] {
            for (key, value) in source.env.iter().flatten() {
                // The environment reaches remote commands as `export KEY=...` on stdin (never
                // argv), so a key must be a name the shell can export.
                if !is_env_name(key) {
                    return Err(self.error(
                        referenced(value),
                        format!("env key \"{key}\" is not an environment variable name"),
                        "use letters, digits and underscores, not starting with a digit (e.g. ERL_EPMD_PORT)",
                    ));
                }
                env.insert(key.clone(), expand(&value.value, &name));
            }
        }
        let erl = match own.erl.as_ref().or(defaults.erl.as_ref()) {
            Some(text) => expand(&text.value, &name),
            None => "erl".to_owned(),
        };

        let built_in = Timeouts::default();
        let timeout =
            |key: &str, pick: fn(&RawTimeouts) -> &Option<Text>, fallback: Duration| match own
                .timeout(pick)
                .or(defaults.timeout(pick))
            {
                Some(text) => self.duration(key, text),
                None => Ok(fallback),
            };
        let timeouts = Timeouts {
            stop: timeout("stop", |t| &t.stop, built_in.stop)?,
            start: timeout("start", |t| &t.start, built_in.start)?,
            rejoin: timeout("rejoin", |t| &t.rejoin, built_in.rejoin)?,
            ping: timeout("ping", |t| &t.ping, built_in.ping)?,
            kill_grace: timeout("kill_grace", |t| &t.kill_grace, built_in.kill_grace)?,
            ready: timeout("ready", |t| &t.ready, built_in.ready)?,
        };

        let tls_file = |pick: fn(&RawTls) -> &Option<Text>, top: &Text| {
            let text = own
                .tls_file(pick)
                .or(defaults.tls_file(pick))
                .unwrap_or(top);
            self.path(&text.value, &name)
        };
        let tls = TlsPaths {
            certfile: tls_file(|t| &t.certfile, top_tls.certfile),
            keyfile: tls_file(|t| &t.keyfile, top_tls.keyfile),
            cacertfile: tls_file(|t| &t.cacertfile, top_tls.cacertfile),
        };

        Ok(NodeSpec {
            name: name.full.to_owned(),
            sname: name.sname.to_owned(),
            host: name.host.to_owned(),
            transport,
            flavor,
            cookie_file: files.cookie_file,
            ssh,
            become_command,
            env: env.into_iter().collect(),
            vm_dist_args: files.flags_file,
            vm_args: files.identity_file,
            erl,
            commands: Commands {
                start,
                stop,
                ping: ping.as_ref().map(|(c, _)| c.clone()),
                ready: ready.map(|(c, _)| c),
            },
            timeouts,
            tls,
            origins: NodeOrigins {
                name: name_at,
                vm_dist_args: files.flags_at,
                vm_args: files.identity_at,
                start: start_at,
                stop: stop_at,
                ping: ping.map(|(_, at)| at.unwrap_or(name_at)),
            },
        })
    }

    pub(super) fn node_name<'t>(&self, text: &'t Text) -> Result<NodeName<'t>, PlanError> {
        let value = text.value.as_str();
        let at = defined(text);
        let example_sname = match value.split('@').next() {
            Some(sname) if !sname.is_empty() && sname.chars().all(is_sname_char) => sname,
            _ => "mim1",
        };
        let hint = format!("write it as name@host, e.g. {example_sname}@db1");
        let fail = |message: String| Err(self.error(at, message, hint.as_str()));
        if value.is_empty() {
            return fail("the node name is empty".to_owned());
        }
        let Some((sname, host)) = value.split_once('@') else {
            return fail(format!("node name \"{value}\" has no host part"));
        };
        if sname.is_empty() {
            return fail(format!("node name \"{value}\" has nothing before the @"));
        }
        if host.is_empty() {
            return fail(format!(
                "node name \"{value}\" has no host part after the @"
            ));
        }
        if let Some(bad) = sname.chars().find(|c| !is_sname_char(*c)) {
            return fail(format!(
                "node name \"{value}\": the part before @ may hold only letters, digits, _ and -, not {bad:?}"
            ));
        }
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            || host.parse::<Ipv6Addr>().is_ok();
        if !host_ok {
            let bad = host
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
                .unwrap_or('?');
            return fail(format!(
                "node name \"{value}\": the host part may hold only letters, digits, . and - (or be an IP address), not {bad:?}"
            ));
        }
        Ok(NodeName {
            full: value,
            sname,
            host,
        })
    }

    /// The SSH settings of one node: each key from the node, else from `defaults`.
    pub(super) fn ssh(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
    ) -> Result<SshSpec, PlanError> {
        let pick =
            |key: fn(&RawSettings) -> &Option<Text>| key(own).as_ref().or(key(defaults).as_ref());
        let port = match pick(|s| &s.port) {
            Some(text) => Some(
                text.value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        self.error(
                            defined(text),
                            format!("port \"{}\" is not a TCP port number", text.value),
                            "write a number from 1 to 65535, e.g. `port: 22`",
                        )
                    })?,
            ),
            None => None,
        };
        let accept_unknown_host_keys = match pick(|s| &s.accept_unknown_host_keys) {
            Some(text) => match text.value.trim() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(self.error(
                        defined(text),
                        format!("accept_unknown_host_keys must be true or false, not \"{other}\""),
                        "host keys are checked strictly unless this is `true`",
                    ));
                }
            },
            None => false,
        };
        let options = own.ssh_options.as_ref().or(defaults.ssh_options.as_ref());
        for option in options.into_iter().flatten() {
            if !option.value.contains('=') || option.value.starts_with('-') {
                return Err(self.error(
                    defined(option),
                    format!(
                        "ssh option \"{}\" is not of the form Key=Value",
                        option.value
                    ),
                    "write options as ssh -o takes them, e.g. `ServerAliveInterval=10`",
                ));
            }
        }
        let path = |key: fn(&RawSettings) -> &Option<Text>| {
            pick(key).map(|text| self.path(&text.value, name))
        };
        Ok(SshSpec {
            host: pick(|s| &s.host)
                .map_or_else(|| name.host.to_owned(), |text| expand(&text.value, name)),
            port,
            user: pick(|s| &s.user).map(|text| expand(&text.value, name)),
            identity_file: path(|s| &s.identity_file),
            config_file: path(|s| &s.ssh_config),
            known_hosts: path(|s| &s.known_hosts),
            accept_unknown_host_keys,
            options: options
                .into_iter()
                .flatten()
                .map(|o| o.value.clone())
                .collect(),
        })
    }

    pub(super) fn flavor(&self, text: &Text) -> Result<Flavor, PlanError> {
        text.value.parse().map_err(|message: String| {
            self.error(
                defined(text),
                message,
                "write `flavor: mongooseim` (the default), `ejabberd`, `rabbitmq` or `relx`",
            )
        })
    }

    /// The files a node's flavor reads and edits, each with the plan location that set it.
    pub(super) fn flavor_files<'r>(
        &self,
        flavor: Flavor,
        name: &NodeName,
        name_at: SourceLocation,
        own: &'r RawSettings,
        defaults: &'r RawSettings,
    ) -> Result<FlavorFiles, PlanError> {
        let pick = |key: fn(&'r RawSettings) -> &'r Option<Text>| -> Option<&'r Text> {
            key(own).as_ref().or(key(defaults).as_ref())
        };
        let refuse = |key: &str, text: &Text, why: &str| {
            Err(self.error(
                defined(text),
                format!("`{key}` does not apply to flavor {flavor}: {why}"),
                format!("remove `{key}` for this node, or set the node's `flavor`"),
            ))
        };
        fn require<'t>(
            resolver: &Resolver,
            name: &NodeName,
            name_at: SourceLocation,
            key: &str,
            text: Option<&'t Text>,
        ) -> Result<&'t Text, PlanError> {
            text.ok_or_else(|| {
                resolver.error(
                    name_at,
                    format!("node \"{}\" has no {key}", name.full),
                    where_to_set(key),
                )
            })
        }
        let required = |key: &str, text: Option<&'r Text>| require(self, name, name_at, key, text);
        match flavor {
            Flavor::MongooseIm | Flavor::Relx => {
                for key in ["flags_file", "cookie_file"] {
                    let text = if key == "flags_file" {
                        pick(|s| &s.flags_file)
                    } else {
                        pick(|s| &s.cookie_file)
                    };
                    if let Some(text) = text {
                        return refuse(
                            key,
                            text,
                            "its flags and cookie are in vm.args / vm.dist.args",
                        );
                    }
                }
                let vm_args = required("vm_args", pick(|s| &s.vm_args))?;
                let dist_args = if flavor == Flavor::MongooseIm {
                    required("vm_dist_args", pick(|s| &s.vm_dist_args))?
                } else {
                    if let Some(text) = pick(|s| &s.vm_dist_args) {
                        return refuse(
                            "vm_dist_args",
                            text,
                            "relx's flags go into vm.args (`vm_args`)",
                        );
                    }
                    vm_args
                };
                Ok(FlavorFiles {
                    flags_file: self.path(&dist_args.value, name),
                    flags_at: referenced(dist_args),
                    identity_file: self.path(&vm_args.value, name),
                    identity_at: referenced(vm_args),
                    cookie_file: None,
                })
            }
            Flavor::Ejabberd | Flavor::RabbitMq => {
                for (key, text) in [
                    ("vm_dist_args", pick(|s| &s.vm_dist_args)),
                    ("vm_args", pick(|s| &s.vm_args)),
                ] {
                    if let Some(text) = text {
                        return refuse(
                            key,
                            text,
                            "its flags, node name and cookie location are in `flags_file`",
                        );
                    }
                }
                let (flags_file, flags_at) = match pick(|s| &s.flags_file) {
                    Some(text) => (self.path(&text.value, name), referenced(text)),
                    None => (
                        PathBuf::from(flavor.default_flags_file().unwrap_or_default()),
                        name_at,
                    ),
                };
                let cookie_file = match pick(|s| &s.cookie_file) {
                    Some(text) => self.path(&text.value, name),
                    None => PathBuf::from(flavor.default_cookie_file().unwrap_or_default()),
                };
                Ok(FlavorFiles {
                    flags_file: flags_file.clone(),
                    flags_at,
                    identity_file: flags_file,
                    identity_at: flags_at,
                    cookie_file: Some(cookie_file),
                })
            }
        }
    }

    pub(super) fn transport(&self, text: &Text) -> Result<TransportKind, PlanError> {
        match text.value.as_str() {
            "local" => Ok(TransportKind::Local),
            "ssh" => Ok(TransportKind::Ssh),
            other => Err(self.error(
                defined(text),
                format!("unknown transport \"{other}\""),
                "use `transport: local` or `transport: ssh`",
            )),
        }
    }

    pub(super) fn duration(&self, key: &str, text: &Text) -> Result<Duration, PlanError> {
        match humantime::parse_duration(text.value.trim()) {
            Ok(duration) if duration.is_zero() => Err(self.error(
                defined(text),
                format!("timeouts.{key} must be longer than zero"),
                DURATION_HINT,
            )),
            Ok(duration) => Ok(duration),
            Err(err) => Err(self.error(
                defined(text),
                format!("timeouts.{key} \"{}\" is not a duration: {err}", text.value),
                DURATION_HINT,
            )),
        }
    }

    /// Paths and commands must be non-empty and use only known placeholders.
    pub(super) fn check_template(&self, key: &str, text: &Text) -> Result<(), PlanError> {
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
    pub(super) fn locate_within(&self, text: &Text, range: Range<usize>) -> SourceLocation {
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

    pub(super) fn path(&self, template: &str, name: &NodeName) -> PathBuf {
        let path = PathBuf::from(expand(template, name));
        if path.is_relative() {
            self.plan_dir.join(path)
        } else {
            path
        }
    }

    pub(super) fn check_distinct_dist_args(&self, nodes: &[NodeSpec]) -> Result<(), PlanError> {
        // The same path on two different hosts is two different files.
        let host_of = |node: &NodeSpec| {
            node.ssh
                .as_ref()
                .map_or_else(String::new, |s| format!("{}:{:?}", s.host, s.port))
        };
        let mut first_user: HashMap<(String, &Path), &NodeSpec> = HashMap::new();
        for node in nodes {
            let key = (host_of(node), node.vm_dist_args.as_path());
            let Some(first) = first_user.get(&key) else {
                first_user.insert(key, node);
                continue;
            };
            let key = match node.flavor {
                Flavor::MongooseIm => "vm_dist_args",
                Flavor::Relx => "vm_args",
                Flavor::Ejabberd | Flavor::RabbitMq => "flags_file",
            };
            let message = format!(
                "nodes \"{}\" and \"{}\" both use {} as {key}",
                first.name,
                node.name,
                node.vm_dist_args.display()
            );
            let hint = if node.flavor != Flavor::MongooseIm {
                format!(
                    "each node needs its own {}: set `{key}` per node or put {{sname}} in its path",
                    node.flavor.file_label()
                )
            } else if first.origins.vm_dist_args == node.origins.vm_dist_args {
                "each node needs its own vm.dist.args: put {sname} in the path, e.g. /opt/mim/{sname}/etc/vm.dist.args".to_owned()
            } else {
                format!(
                    "each node needs its own vm.dist.args; fix this path or the one at line {}",
                    first.origins.vm_dist_args.line
                )
            };
            return Err(self.error(node.origins.vm_dist_args, message, hint));
        }
        Ok(())
    }
}

pub(super) fn where_to_set(key: &str) -> String {
    match key.split_once('.') {
        Some((section, leaf)) => format!(
            "set `{leaf}` under `{section}:` in `defaults:` (for every node) or in this node's entry"
        ),
        None => format!("set `{key}` under `defaults:` (for every node) or in this node's entry"),
    }
}

pub(super) fn is_sname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

pub(super) enum BadPlaceholder {
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
fn expand(template: &str, name: &NodeName) -> String {
    template
        .replace("{name}", name.full)
        .replace("{sname}", name.sname)
        .replace("{host}", name.host)
}
