//! The executor configuration of `fruix build`: `--config KEY=VALUE`
//! pairs and the guest flags, as the JSON object the executor is made from.

use std::path::PathBuf;

use fruix_core::escape;
use fruix_core::executor::RegistryEntry;

use crate::args::GuestArgs;
use crate::exit::{CliError, CliResult};

/// Parses `KEY=VALUE` executor configuration into a JSON object. Values that
/// read as JSON numbers or booleans stay typed; everything else is a string.
pub(super) fn config_object(pairs: &[String]) -> CliResult<serde_json::Value> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "--config {}: expected KEY=VALUE",
                escape::quoted(pair)
            ))
        })?;
        let value = match serde_json::from_str::<serde_json::Value>(value) {
            // Regression: an integer past 64 bits read as a float, and the
            // executor said it expected an integer, not a float.
            Ok(serde_json::Value::Number(n)) if n.is_f64() && !value.contains(['.', 'e', 'E']) => {
                return Err(CliError::usage(format!(
                    "--config {}: the number is out of range",
                    escape::quoted(pair)
                )));
            }
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
            _ => serde_json::Value::String(value.to_string()),
        };
        map.insert(key.replace('-', "_"), value);
    }
    Ok(serde_json::Value::Object(map))
}

/// Adds the guest flags (`--guest`, `--identity`, ...) to the executor
/// configuration under their key names. A flag whose key `executor` does
/// not take (any of them, for an executor that builds on this host), or a
/// key also given with `--config` and a different value, is a usage error
/// naming the flag.
pub(super) fn with_guest_flags(
    mut config: serde_json::Value,
    guest: &GuestArgs,
    executor: &RegistryEntry,
) -> CliResult<serde_json::Value> {
    use serde_json::Value;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| Value::from(p.to_string_lossy()));
    let flags = [
        ("guest", guest.guest.clone().map(Value::from)),
        ("identity", path(&guest.auth.identity)),
        ("known_hosts", path(&guest.auth.known_hosts)),
        (
            "guest_state_dir",
            guest.guest_state_dir.clone().map(Value::from),
        ),
        ("guest_helper", guest.guest_helper.clone().map(Value::from)),
        ("machines", path(&guest.machines)),
        ("machine", guest.machine.clone().map(Value::from)),
        (
            "accept_new_host_key",
            guest.auth.accept_new_host_key.then_some(Value::Bool(true)),
        ),
    ];
    let map = config
        .as_object_mut()
        .expect("config_object returns an object");
    for (key, value) in flags {
        let Some(value) = value else { continue };
        refuse_untaken_flag(key, executor)?;
        match map.get(key) {
            Some(given) if *given != value => {
                return Err(CliError::usage(format!(
                    "--{} {value} conflicts with --config {key}={given}; give it once",
                    key.replace('_', "-")
                )))
            }
            _ => {
                map.insert(key.to_string(), value);
            }
        }
    }
    Ok(config)
}

/// Refuses the guest flag of configuration key `key` when `executor` does
/// not take that key (see `fruix executors describe`).
fn refuse_untaken_flag(key: &str, executor: &RegistryEntry) -> CliResult<()> {
    if executor.config_keys.iter().any(|k| k.name == key) {
        return Ok(());
    }
    let flag = key.replace('_', "-");
    let name = escape::text(&executor.name);
    let keys: Vec<String> = executor
        .config_keys
        .iter()
        .map(|k| escape::text(&k.name).to_string())
        .collect();
    let keys = match keys.is_empty() {
        true => "none".to_string(),
        false => keys.join(", "),
    };
    Err(CliError::usage(if executor.capabilities.remote {
        format!("--{flag}: executor `{name}` takes no `{key}` (its keys: {keys}); see `fruix executors describe {name}`")
    } else {
        format!("--{flag}: executor `{name}` builds on this host and connects to no guest (its keys: {keys})")
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::args::SshAuthArgs;
    use crate::exit::Status;

    #[test]
    fn config_values_keep_numbers_and_booleans() {
        let v = config_object(&[
            "make=bmake".into(),
            "keep-work=true".into(),
            "jobs=3".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "make": "bmake", "keep_work": true, "jobs": 3 })
        );
        assert!(config_object(&["novalue".into()]).is_err());
        let e = config_object(&["timeout=99999999999999999999".into()]).unwrap_err();
        assert_eq!(e.status, Status::Usage);
        assert!(e.error.to_string().contains("out of range"), "{e:?}");
        let float = config_object(&["ratio=1e20".into()]).unwrap();
        assert_eq!(float, serde_json::json!({ "ratio": 1e20 }));
    }

    /// An executor taking `keys`, remote or not, that makes nothing.
    fn executor(remote: bool, keys: &[&str]) -> RegistryEntry {
        RegistryEntry {
            name: "x".into(),
            description: String::new(),
            version: String::new(),
            origin: String::new(),
            kind: fruix_core::executor::ExecutorKind::BuiltIn,
            capabilities: fruix_core::executor::Capabilities {
                remote,
                ..fruix_core::executor::Capabilities::local()
            },
            config_keys: keys
                .iter()
                .map(|k| fruix_core::executor::ConfigKey {
                    name: k.to_string(),
                    description: String::new(),
                })
                .collect(),
            factory: Arc::new(|_| Err(fruix_core::Error::system("makes nothing"))),
        }
    }

    #[test]
    fn guest_flags_become_config_keys_and_conflicts_are_refused() {
        let guest = GuestArgs {
            guest: Some("root@127.0.0.1:2222".into()),
            auth: SshAuthArgs {
                known_hosts: Some("/k".into()),
                accept_new_host_key: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let ssh = executor(true, &["accept_new_host_key", "guest", "known_hosts"]);
        let v = with_guest_flags(
            config_object(&["guest=root@127.0.0.1:2222".into()]).unwrap(),
            &guest,
            &ssh,
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "guest": "root@127.0.0.1:2222", "known_hosts": "/k", "accept_new_host_key": true })
        );
        let e = with_guest_flags(
            config_object(&["guest=other@h".into()]).unwrap(),
            &guest,
            &ssh,
        )
        .unwrap_err();
        assert_eq!(e.status, Status::Usage);
        assert!(e.error.to_string().contains("conflicts"), "{}", e.error);
    }

    /// Regression: a guest flag given to an executor that does not take
    /// its key was refused by the executor's configuration parser, which
    /// named the key (`unknown field `known_hosts``), not the flag.
    #[test]
    fn a_guest_flag_the_executor_does_not_take_is_refused_by_its_name() {
        let guest = GuestArgs {
            auth: SshAuthArgs {
                known_hosts: Some("/k".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let refused = |executor: &RegistryEntry| {
            let e = with_guest_flags(config_object(&[]).unwrap(), &guest, executor).unwrap_err();
            assert_eq!(e.status, Status::Usage);
            e.error.to_string()
        };
        assert_eq!(
            refused(&executor(false, &["make", "work_dir"])),
            "--known-hosts: executor `x` builds on this host and connects to no guest (its keys: make, work_dir)"
        );
        assert_eq!(
            refused(&executor(true, &["guest"])),
            "--known-hosts: executor `x` takes no `known_hosts` (its keys: guest); see `fruix executors describe x`"
        );
    }
}
