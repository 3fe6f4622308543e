//! The files a node's flavor reads and edits: vm.args / vm.dist.args (mongooseim, relx),
//! or one flags file and a cookie file (ejabberd, rabbitmq, elixir). Keys for the other kind are
//! refused rather than ignored.

use super::*;

impl Resolver<'_> {
    /// The files a node's flavor reads and edits, each with the plan location that set it.
    pub(in crate::plan) fn flavor_files(
        &self,
        flavor: Flavor,
        name: &NodeName,
        name_at: SourceLocation,
        own: &RawSettings,
        defaults: &RawSettings,
    ) -> Result<FlavorFiles, PlanError> {
        match flavor {
            Flavor::MongooseIm | Flavor::Relx => {
                self.vm_args_files(flavor, name, name_at, own, defaults)
            }
            Flavor::Ejabberd | Flavor::RabbitMq | Flavor::Elixir => {
                self.flags_file_files(flavor, name, name_at, own, defaults)
            }
        }
    }

    /// mongooseim and relx: the node name and cookie are in vm.args; the flags go into
    /// vm.dist.args (mongooseim) or vm.args itself (relx).
    fn vm_args_files(
        &self,
        flavor: Flavor,
        name: &NodeName,
        name_at: SourceLocation,
        own: &RawSettings,
        defaults: &RawSettings,
    ) -> Result<FlavorFiles, PlanError> {
        let pick = |key: fn(&RawSettings) -> &Option<Text>| own_or_default(own, defaults, key);
        for (key, text) in [
            ("flags_file", pick(|s| &s.flags_file)),
            ("cookie_file", pick(|s| &s.cookie_file)),
        ] {
            if let Some(text) = text {
                return Err(self.not_for_flavor(
                    flavor,
                    key,
                    text,
                    "its flags and cookie are in vm.args / vm.dist.args",
                ));
            }
        }
        let vm_args = self.required_file(name, name_at, "vm_args", pick(|s| &s.vm_args))?;
        let dist_args = if flavor == Flavor::MongooseIm {
            self.required_file(name, name_at, "vm_dist_args", pick(|s| &s.vm_dist_args))?
        } else {
            if let Some(text) = pick(|s| &s.vm_dist_args) {
                return Err(self.not_for_flavor(
                    flavor,
                    "vm_dist_args",
                    text,
                    "relx's flags go into vm.args (`vm_args`)",
                ));
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

    /// ejabberd and rabbitmq: one flags file carries the flags and the node name, the cookie
    /// is in a file of its own; each has the product's default path when the plan names none.
    fn flags_file_files(
        &self,
        flavor: Flavor,
        name: &NodeName,
        name_at: SourceLocation,
        own: &RawSettings,
        defaults: &RawSettings,
    ) -> Result<FlavorFiles, PlanError> {
        let pick = |key: fn(&RawSettings) -> &Option<Text>| own_or_default(own, defaults, key);
        for (key, text) in [
            ("vm_dist_args", pick(|s| &s.vm_dist_args)),
            ("vm_args", pick(|s| &s.vm_args)),
        ] {
            if let Some(text) = text {
                return Err(self.not_for_flavor(
                    flavor,
                    key,
                    text,
                    "its flags, node name and cookie location are in `flags_file`",
                ));
            }
        }
        let (flags_file, flags_at) = match pick(|s| &s.flags_file) {
            Some(text) => (self.path(&text.value, name), referenced(text)),
            // A release lives anywhere: its env.sh has no default path.
            None if flavor == Flavor::Elixir => {
                let text = self.required_file(name, name_at, "flags_file", None)?;
                (self.path(&text.value, name), referenced(text))
            }
            None => (
                PathBuf::from(flavor.default_flags_file().unwrap_or_default()),
                name_at,
            ),
        };
        let cookie_file = match pick(|s| &s.cookie_file) {
            Some(text) => self.path(&text.value, name),
            None if flavor == Flavor::Elixir => {
                crate::flavor::elixir::default_cookie_file(&flags_file)
            }
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

    /// A file key the node's flavor does not use: refused rather than ignored.
    fn not_for_flavor(&self, flavor: Flavor, key: &str, text: &Text, why: &str) -> PlanError {
        self.error(
            defined(text),
            format!("`{key}` does not apply to flavor {flavor}: {why}"),
            format!("remove `{key}` for this node, or set the node's `flavor`"),
        )
    }

    /// A file key the node's flavor needs, set neither for the node nor in `defaults`.
    fn required_file<'t>(
        &self,
        name: &NodeName,
        name_at: SourceLocation,
        key: &str,
        text: Option<&'t Text>,
    ) -> Result<&'t Text, PlanError> {
        text.ok_or_else(|| {
            self.error(
                name_at,
                format!("node \"{}\" has no {key}", name.full),
                where_to_set(key),
            )
        })
    }
}
