//! The plan's top-level keys that hold one value each: `version`, `cluster`, `on_failure`, `batch`
//! and the `tls` section every node starts from.

use super::*;

impl Resolver<'_> {
    pub(in crate::plan) fn check_version(&self, version: &Text) -> Result<(), PlanError> {
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

    pub(in crate::plan) fn cluster(&self, cluster: Option<&Text>) -> Result<String, PlanError> {
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

    /// The failure policy; without `on_failure` the default (rollback).
    pub(super) fn on_failure(&self, on_failure: Option<&Text>) -> Result<OnFailure, PlanError> {
        match on_failure {
            None => Ok(OnFailure::default()),
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
            }),
        }
    }

    /// How many nodes a roll may restart at once; without `batch` one at a time.
    pub(super) fn batch(&self, batch: Option<&Text>) -> Result<Batch, PlanError> {
        match batch {
            None => Ok(Batch::default()),
            Some(text) => text
                .value
                .parse()
                .map_err(|why: BadBatch| self.error(defined(text), why.0, BATCH_HINT)),
        }
    }

    pub(in crate::plan) fn top_tls<'r>(
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
}
