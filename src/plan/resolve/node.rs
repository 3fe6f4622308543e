//! One node: its name, and every value merged from its entry over `defaults` (over the
//! top level and the flavor's defaults where there are some).

use super::*;

use crate::flavor::DefaultCommands;

/// A node's commands, and where in the plan each was set (a flavor default is located at
/// the node's name).
struct NodeCommands {
    commands: Commands,
    start_at: SourceLocation,
    stop_at: SourceLocation,
    ping_at: Option<SourceLocation>,
}

impl Resolver<'_> {
    pub(in crate::plan) fn node(
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
        let commands =
            self.node_commands(own, defaults, &name, name_at, defaults_for_flavor.as_ref())?;
        let (transport, ssh) = self.node_transport(own, defaults, &name)?;
        let become_command = own
            .r#become
            .as_ref()
            .or(defaults.r#become.as_ref())
            .map(|text| expand(&text.value, &name))
            .filter(|b| !b.trim().is_empty());
        let env = self.node_env(own, defaults, &name)?;
        let erl = match own.erl.as_ref().or(defaults.erl.as_ref()) {
            Some(text) => expand(&text.value, &name),
            None => "erl".to_owned(),
        };
        let timeouts = self.node_timeouts(own, defaults)?;
        let tls = self.node_tls(own, defaults, &name, top_tls);

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
            commands: commands.commands,
            timeouts,
            tls,
            origins: NodeOrigins {
                name: name_at,
                vm_dist_args: files.flags_at,
                vm_args: files.identity_at,
                start: commands.start_at,
                stop: commands.stop_at,
                ping: commands.ping_at,
            },
        })
    }

    /// Each command from the node, else from `defaults`, else the flavor's default; start
    /// and stop are required, ping and ready are not.
    fn node_commands(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
        name_at: SourceLocation,
        defaults_for_flavor: Option<&DefaultCommands>,
    ) -> Result<NodeCommands, PlanError> {
        let command = |key: &str,
                       pick: fn(&RawSettings) -> Option<&Text>,
                       fallback: Option<&String>|
         -> Result<(String, SourceLocation), PlanError> {
            match pick(own).or(pick(defaults)) {
                Some(text) => Ok((expand(&text.value, name), referenced(text))),
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
            defaults_for_flavor.map(|d| &d.start),
        )?;
        let (stop, stop_at) = command(
            "commands.stop",
            |s| s.command(|c| &c.stop),
            defaults_for_flavor.map(|d| &d.stop),
        )?;
        let optional =
            |pick: fn(&RawSettings) -> Option<&Text>, fallback: Option<&String>| match pick(own)
                .or(pick(defaults))
            {
                Some(text) => Some((expand(&text.value, name), Some(referenced(text)))),
                None => fallback.map(|d| (d.clone(), None)),
            };
        let ping = optional(
            |s| s.command(|c| &c.ping),
            defaults_for_flavor.map(|d| &d.ping),
        );
        let ready = optional(
            |s| s.command(|c| &c.ready),
            defaults_for_flavor.map(|d| &d.ready),
        );
        let before_stop = optional(
            |s| s.command(|c| &c.before_stop),
            defaults_for_flavor.and_then(|d| d.before_stop.as_ref()),
        );
        let after_start = optional(
            |s| s.command(|c| &c.after_start),
            defaults_for_flavor.and_then(|d| d.after_start.as_ref()),
        );
        // A gate the plan does not set comes from the flavor (it has no location).
        let from_flavor = |gate: &Option<(String, Option<SourceLocation>)>| {
            gate.as_ref().is_some_and(|(_, at)| at.is_none())
        };
        let gates_from_flavor = (from_flavor(&before_stop), from_flavor(&after_start));
        Ok(NodeCommands {
            ping_at: ping.as_ref().map(|(_, at)| at.unwrap_or(name_at)),
            commands: Commands {
                start,
                stop,
                ping: ping.map(|(c, _)| c),
                ready: ready.map(|(c, _)| c),
                before_stop: before_stop.map(|(c, _)| c),
                after_start: after_start.map(|(c, _)| c),
                gates_from_flavor,
            },
            start_at,
            stop_at,
        })
    }

    /// How distls reaches the node (local unless set), with the SSH settings when over ssh.
    fn node_transport(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
    ) -> Result<(TransportKind, Option<SshSpec>), PlanError> {
        let transport = match own.transport.as_ref().or(defaults.transport.as_ref()) {
            Some(text) => self.transport(text)?,
            None => TransportKind::Local,
        };
        let ssh = match transport {
            TransportKind::Local => None,
            TransportKind::Ssh => Some(self.ssh(own, defaults, name)?),
        };
        Ok((transport, ssh))
    }

    /// The node's environment: `defaults`' variables, overridden key by key by the node's.
    fn node_env(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
    ) -> Result<BTreeMap<String, String>, PlanError> {
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
                env.insert(key.clone(), expand(&value.value, name));
            }
        }
        Ok(env)
    }

    /// Each timeout from the node, else from `defaults`, else distls' built-in value.
    fn node_timeouts(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
    ) -> Result<Timeouts, PlanError> {
        let built_in = Timeouts::default();
        let timeout =
            |key: &str, pick: fn(&RawTimeouts) -> &Option<Text>, fallback: Duration| match own
                .timeout(pick)
                .or(defaults.timeout(pick))
            {
                Some(text) => self.duration(key, text),
                None => Ok(fallback),
            };
        Ok(Timeouts {
            stop: timeout("stop", |t| &t.stop, built_in.stop)?,
            start: timeout("start", |t| &t.start, built_in.start)?,
            rejoin: timeout("rejoin", |t| &t.rejoin, built_in.rejoin)?,
            ping: timeout("ping", |t| &t.ping, built_in.ping)?,
            kill_grace: timeout("kill_grace", |t| &t.kill_grace, built_in.kill_grace)?,
            ready: timeout("ready", |t| &t.ready, built_in.ready)?,
            before_stop: timeout("before_stop", |t| &t.before_stop, built_in.before_stop)?,
            after_start: timeout("after_start", |t| &t.after_start, built_in.after_start)?,
        })
    }

    /// Each TLS file from the node, else from `defaults`, else the top-level `tls` section.
    fn node_tls(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
        top_tls: &TopTls,
    ) -> TlsPaths {
        let tls_file = |pick: fn(&RawTls) -> &Option<Text>, top: &Text| {
            let text = own
                .tls_file(pick)
                .or(defaults.tls_file(pick))
                .unwrap_or(top);
            self.path(&text.value, name)
        };
        TlsPaths {
            certfile: tls_file(|t| &t.certfile, top_tls.certfile),
            keyfile: tls_file(|t| &t.keyfile, top_tls.keyfile),
            cacertfile: tls_file(|t| &t.cacertfile, top_tls.cacertfile),
        }
    }

    pub(in crate::plan) fn node_name<'t>(&self, text: &'t Text) -> Result<NodeName<'t>, PlanError> {
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
}

fn is_sname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}
