//! The registry of executors: compiled-in registrations (through `inventory`)
//! and executors added at run time, found by name.

mod config_value;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Capabilities, Executor};
use crate::error::{Error, Result};

/// Whether an executor is compiled in, a plugin, or an external command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// Compiled in from fruix's own crates (`fruix-executors`); the default
    /// [`ExecutorConfig::KIND`].
    BuiltIn,
    /// Compiled in from a plugin crate (such as `fruix-executor-jail`),
    /// which sets [`ExecutorConfig::KIND`] to this.
    Plugin,
    /// Declared in an executors file and run as external commands; added
    /// to the registry at run time.
    External,
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutorKind::BuiltIn => "built-in",
            ExecutorKind::Plugin => "plugin",
            ExecutorKind::External => "external",
        })
    }
}

/// One configuration key an executor accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigKey {
    /// The key as given in `--config KEY=VALUE` or a matrix file: the
    /// field's serde name.
    pub name: String,
    /// The field's doc comment on one line (whitespace runs collapsed to
    /// one space); empty when the field has none.
    pub description: String,
}

/// An executor's configuration, typed: deserialised from the JSON object of
/// `--config KEY=VALUE` pairs (or a matrix file), unknown keys refused. The
/// keys an executor lists come from this struct ([`config_keys`]: names and
/// doc comments), never from a hand-written list, and its name, description
/// and capabilities are known without a configuration.
///
/// Register one with [`register_executor!`](crate::register_executor) in one line.
pub trait ExecutorConfig: serde::de::DeserializeOwned + schemars::JsonSchema + Sized {
    /// The registered name (`local`, `jail`, ...).
    const NAME: &'static str;
    /// One line for `fruix executors list`.
    const DESCRIPTION: &'static str;
    /// Built-in, or a plugin crate.
    const KIND: ExecutorKind = ExecutorKind::BuiltIn;

    /// What every executor of this kind can do, known without a configuration.
    fn capabilities() -> Capabilities;

    /// The keys `fruix executors describe` lists: every field of the struct
    /// ([`config_keys`]) unless an executor leaves some out.
    fn keys() -> Vec<ConfigKey> {
        config_keys::<Self>()
    }

    /// Checks the configuration and makes the executor.
    fn build(self) -> Result<Arc<dyn Executor>>;
}

/// The keys of configuration `C`: its fields as serde names them, each with
/// its doc comment, sorted by name.
pub fn config_keys<C: schemars::JsonSchema>() -> Vec<ConfigKey> {
    let schema = schemars::schema_for!(C).to_value();
    let root = match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => reference
            .strip_prefix("#/$defs/")
            .and_then(|name| schema.get("$defs")?.get(name))
            .unwrap_or(&schema),
        None => &schema,
    };
    let mut keys: Vec<ConfigKey> = root
        .get("properties")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
        .map(|(name, property)| ConfigKey {
            name: name.clone(),
            description: property
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

fn factory<C: ExecutorConfig>(config: serde_json::Value) -> Result<Arc<dyn Executor>> {
    parse_config_of::<C>(C::NAME, config, Some(&C::keys))?.build()
}

/// A compiled-in registration, submitted with `inventory` by
/// [`register_executor!`](crate::register_executor).
pub struct ExecutorRegistration {
    /// The registered name ([`ExecutorConfig::NAME`]).
    pub name: &'static str,
    /// One line for `fruix executors list` ([`ExecutorConfig::DESCRIPTION`]).
    pub description: &'static str,
    /// The registering crate's version (`CARGO_PKG_VERSION` through
    /// [`register_executor!`](crate::register_executor)), shown by
    /// `fruix executors`.
    pub version: &'static str,
    /// Who registered it (a crate name), named when two registrations clash.
    pub origin: &'static str,
    /// Built-in or plugin ([`ExecutorConfig::KIND`]).
    pub kind: ExecutorKind,
    /// [`ExecutorConfig::capabilities`], called once when the registry is
    /// built.
    pub capabilities: fn() -> Capabilities,
    /// [`ExecutorConfig::keys`], called once when the registry is built.
    pub config_keys: fn() -> Vec<ConfigKey>,
    /// Deserialises the JSON configuration object into the config struct
    /// (an [`Error::InvalidConfig`] naming the executor when it does not
    /// fit) and calls [`ExecutorConfig::build`].
    pub factory: fn(serde_json::Value) -> Result<Arc<dyn Executor>>,
}

impl ExecutorRegistration {
    /// The registration of configuration `C`, made by crate `origin` at `version`.
    pub const fn of<C: ExecutorConfig>(origin: &'static str, version: &'static str) -> Self {
        ExecutorRegistration {
            name: C::NAME,
            description: C::DESCRIPTION,
            version,
            origin,
            kind: C::KIND,
            capabilities: C::capabilities,
            config_keys: C::keys,
            factory: factory::<C>,
        }
    }
}

inventory::collect!(ExecutorRegistration);

/// Registers the executor configured by `$config` (an [`ExecutorConfig`]),
/// with the calling crate's name and version:
///
/// ```ignore
/// fruix_core::register_executor!(JailConfig);
/// ```
#[macro_export]
macro_rules! register_executor {
    ($config:ty) => {
        $crate::inventory::submit! {
            $crate::executor::ExecutorRegistration::of::<$config>(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
            )
        }
    };
}

/// Makes an executor from its configuration (a JSON object).
pub type Factory = Arc<dyn Fn(serde_json::Value) -> Result<Arc<dyn Executor>> + Send + Sync>;

/// A registry entry: a compiled registration or one added at run time
/// (external executors).
#[derive(Clone)]
pub struct RegistryEntry {
    /// The name executors are looked up by (`--executor`, matrix axes).
    pub name: String,
    /// One line for `fruix executors list`.
    pub description: String,
    /// The version `fruix executors` shows: the registering crate's for a
    /// compiled-in executor, the declared `version` of an external one.
    pub version: String,
    /// Who registered it, named when two registrations clash: a crate name,
    /// or `FILE:LINE` of an external executor's declaration.
    pub origin: String,
    /// Built-in, plugin or external.
    pub kind: ExecutorKind,
    /// Known without a configuration.
    pub capabilities: Capabilities,
    /// The configuration keys it accepts, for `fruix executors describe`.
    pub config_keys: Vec<ConfigKey>,
    /// Makes the executor from its configuration; [`Registry::create`]
    /// calls it.
    pub factory: Factory,
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The executors known to this process, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, RegistryEntry>,
}

impl Registry {
    /// Every executor registered through `inventory`; two registrations with
    /// one name are an error naming both.
    pub fn compiled() -> Result<Registry> {
        let mut registry = Registry::default();
        for r in inventory::iter::<ExecutorRegistration> {
            let factory = r.factory;
            registry.add(RegistryEntry {
                name: r.name.to_string(),
                description: r.description.to_string(),
                version: r.version.to_string(),
                origin: r.origin.to_string(),
                kind: r.kind,
                capabilities: (r.capabilities)(),
                config_keys: (r.config_keys)(),
                factory: Arc::new(factory),
            })?;
        }
        Ok(registry)
    }

    /// Adds an entry; a name already present is an error naming both origins.
    pub fn add(&mut self, entry: RegistryEntry) -> Result<()> {
        if let Some(existing) = self.entries.get(&entry.name) {
            return Err(Error::DuplicateExecutor {
                name: entry.name.clone(),
                first: format!("{} ({})", existing.origin, existing.kind),
                second: format!("{} ({})", entry.origin, entry.kind),
            });
        }
        self.entries.insert(entry.name.clone(), entry);
        Ok(())
    }

    /// The entry named `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&RegistryEntry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::UnknownExecutor {
                name: name.to_string(),
                available: self.names(),
                suggestion: self
                    .names()
                    .into_iter()
                    .find(|known| crate::sexp::is_close(name, known)),
            })
    }

    /// Makes executor `name` from `config`.
    pub fn create(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Executor>> {
        (self.get(name)?.factory)(config)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &RegistryEntry> {
        self.entries.values()
    }
}

/// Deserializes an executor's config object into its config struct, naming the
/// executor in errors (unknown keys are refused by `deny_unknown_fields`).
/// The error's message quotes each key or value it names escaped and cut
/// ([`crate::escape`]), never as serde would.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    executor: &str,
    config: serde_json::Value,
) -> Result<T> {
    parse_config_of(executor, config, None)
}

/// [`parse_config`]; a key that is no field of `T` is said with the keys
/// the executor takes (`keys`, its [`ExecutorConfig::keys`]), not with
/// every field of `T`: a struct shared by executors has fields one of them
/// refuses.
fn parse_config_of<T: serde::de::DeserializeOwned>(
    executor: &str,
    config: serde_json::Value,
    keys: Option<&dyn Fn() -> Vec<ConfigKey>>,
) -> Result<T> {
    let config = if config.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        config
    };
    config_value::from_value(config).map_err(|e| {
        let message = match (e.unknown_key(), keys) {
            (Some(key), Some(keys)) => {
                let names: Vec<String> = keys().into_iter().map(|k| format!("`{}`", k.name)).collect();
                format!(
                    "unknown key `{}`; the keys of {executor} are {} (see `fruix executors describe {executor}`)",
                    crate::escape::text(key),
                    match names.is_empty() {
                        true => "none".to_string(),
                        false => names.join(", "),
                    }
                )
            }
            _ => e.to_string(),
        };
        Error::InvalidConfig {
            executor: executor.to_string(),
            message,
        }
    })
}
