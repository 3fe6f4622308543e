//! Settings values on their own, checked wherever they are written (`defaults`, a node's
//! entry, the top level): transport, flavor, durations, and every template.

use super::*;

impl Resolver<'_> {
    /// Checks what can be checked on settings alone, before any node is known.
    pub(in crate::plan) fn check_settings(&self, settings: &RawSettings) -> Result<(), PlanError> {
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
            ("commands.before_stop", settings.command(|c| &c.before_stop)),
            ("commands.after_start", settings.command(|c| &c.after_start)),
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
            ("before_stop", settings.timeout(|t| &t.before_stop)),
            ("after_start", settings.timeout(|t| &t.after_start)),
        ];
        for (key, value) in timeouts {
            if let Some(value) = value {
                self.duration(key, value)?;
            }
        }
        Ok(())
    }

    pub(in crate::plan) fn flavor(&self, text: &Text) -> Result<Flavor, PlanError> {
        text.value.parse().map_err(|message: String| {
            self.error(
                defined(text),
                message,
                "write `flavor: mongooseim` (the default), `ejabberd`, `rabbitmq` or `relx`",
            )
        })
    }

    pub(in crate::plan) fn transport(&self, text: &Text) -> Result<TransportKind, PlanError> {
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

    pub(in crate::plan) fn duration(&self, key: &str, text: &Text) -> Result<Duration, PlanError> {
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
}
