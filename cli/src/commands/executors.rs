//! `fruix executors list|describe`: every executor this fruix knows, built-in,
//! plugin (compiled in through a cargo feature) or external (from executors
//! files), with its configuration keys and capabilities.

use fruix_core::executor::{Registry, RegistryEntry};

use crate::args::ExecutorsCommand;
use crate::exit::{self, CliError, CliResult, Status};

/// `s` escaped for the terminal.
fn shown(s: &str) -> String {
    fruix_core::escape::text(s).to_string()
}

pub fn run(command: ExecutorsCommand, registry: &Registry) -> CliResult {
    match command {
        ExecutorsCommand::List { json, .. } => {
            if json {
                let rows: Vec<_> = registry
                    .entries()
                    .map(|e| serde_json::json!({ "name": e.name, "version": e.version, "kind": e.kind, "origin": e.origin, "description": e.description }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(Status::Success);
            }
            // An executors file is the user's, but what it says is still
            // escaped (a bidi control in a description, say).
            let width = |column: fn(&RegistryEntry) -> String, title: &str| {
                registry
                    .entries()
                    .map(|e| column(e).len())
                    .chain([title.len()])
                    .max()
                    .unwrap_or_default()
            };
            let name_width = width(|e| shown(&e.name), "NAME");
            let version_width = width(|e| shown(&e.version), "VERSION");
            let kind_width = width(|e| e.kind.to_string(), "KIND");
            println!(
                "{:<name_width$}  {:<version_width$}  {:<kind_width$}  DESCRIPTION",
                "NAME", "VERSION", "KIND"
            );
            for e in registry.entries() {
                println!(
                    "{:<name_width$}  {:<version_width$}  {:<kind_width$}  {}",
                    shown(&e.name),
                    shown(&e.version),
                    e.kind.to_string(),
                    shown(&e.description)
                );
            }
            Ok(Status::Success)
        }
        ExecutorsCommand::Describe { name, json, .. } => {
            let entry = registry
                .get(&name)
                .map_err(|e| CliError::new(exit::before_run(&e), e))?;
            // Known without a configuration (see `ExecutorConfig`).
            let c = &entry.capabilities;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": entry.name, "version": entry.version, "kind": entry.kind,
                        "origin": entry.origin, "description": entry.description,
                        "config_keys": entry.config_keys, "capabilities": c,
                    })
                );
                return Ok(Status::Success);
            }
            println!(
                "name:        {}\nversion:     {}\nkind:        {}\norigin:      {}\ndescription: {}",
                shown(&entry.name),
                shown(&entry.version),
                entry.kind,
                shown(&entry.origin),
                shown(&entry.description)
            );
            println!("configuration keys (fruix build --config KEY=VALUE):");
            if entry.config_keys.is_empty() {
                println!("  (none)");
            }
            let width = entry.config_keys.iter().map(|k| shown(&k.name).len()).max();
            let width = width.unwrap_or_default();
            for key in &entry.config_keys {
                println!("  {:<width$} {}", shown(&key.name), shown(&key.description));
            }
            println!("capabilities:");
            println!("  remote:              {}", c.remote);
            println!("  signs at build site: {}", c.signs_at_build_site);
            println!("  cancellable:         {}", c.cancellable);
            println!("  boots VMs:           {}", c.boots_vms);
            let arches = if c.target_arches.is_empty() {
                "any".to_string()
            } else {
                shown(&c.target_arches.join(", "))
            };
            println!("  target arches:       {arches}");
            Ok(Status::Success)
        }
    }
}
