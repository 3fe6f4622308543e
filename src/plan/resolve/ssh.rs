//! A node's SSH settings, for nodes reached with `transport: ssh`.

use super::*;

impl Resolver<'_> {
    /// The SSH settings of one node: each key from the node, else from `defaults`.
    pub(in crate::plan) fn ssh(
        &self,
        own: &RawSettings,
        defaults: &RawSettings,
        name: &NodeName,
    ) -> Result<SshSpec, PlanError> {
        let pick = |key: fn(&RawSettings) -> &Option<Text>| own_or_default(own, defaults, key);
        let port = match pick(|s| &s.port) {
            Some(text) => Some(self.ssh_port(text)?),
            None => None,
        };
        let accept_unknown_host_keys = match pick(|s| &s.accept_unknown_host_keys) {
            Some(text) => self.accept_unknown_host_keys(text)?,
            None => false,
        };
        let options = own.ssh_options.as_ref().or(defaults.ssh_options.as_ref());
        self.check_ssh_options(options.into_iter().flatten())?;
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

    /// A TCP port: 1 to 65535.
    fn ssh_port(&self, text: &Text) -> Result<u16, PlanError> {
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
            })
    }

    /// Only an explicit `true` turns off strict host key checking.
    fn accept_unknown_host_keys(&self, text: &Text) -> Result<bool, PlanError> {
        match text.value.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.error(
                defined(text),
                format!("accept_unknown_host_keys must be true or false, not \"{other}\""),
                "host keys are checked strictly unless this is `true`",
            )),
        }
    }

    /// Options are written as `ssh -o` takes them, `Key=Value`; a flag or a bare word is refused.
    fn check_ssh_options<'t>(
        &self,
        options: impl IntoIterator<Item = &'t Text>,
    ) -> Result<(), PlanError> {
        for option in options {
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
        Ok(())
    }
}
