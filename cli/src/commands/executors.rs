//! `fruix executors list|describe`.

use fruix_core::executor::Registry;

use crate::args::ExecutorsCommand;
use crate::exit::{self, CliError, CliResult, Status};

pub fn run(command: ExecutorsCommand, registry: &Registry) -> CliResult {
    match command {
        ExecutorsCommand::List { json } => {
            let rows: Vec<_> = registry
                .entries()
                .map(|e| serde_json::json!({ "name": e.name, "version": e.version, "kind": e.kind, "description": e.description }))
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for e in registry.entries() {
                    println!(
                        "{:<20} {:<8} {:<9} {}",
                        e.name,
                        e.version,
                        e.kind.to_string(),
                        e.description
                    );
                }
            }
            Ok(Status::Success)
        }
        ExecutorsCommand::Describe { name, json } => {
            let entry = registry
                .get(&name)
                .map_err(|e| CliError::new(exit::before_run(&e), e))?;
            let capabilities = (entry.factory)(serde_json::Value::Null)
                .map(|e| e.capabilities())
                .ok();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": entry.name, "version": entry.version, "kind": entry.kind,
                        "origin": entry.origin, "description": entry.description,
                        "config_keys": entry.config_keys, "capabilities": capabilities,
                    })
                );
                return Ok(Status::Success);
            }
            println!("name:        {}\nversion:     {}\nkind:        {}\norigin:      {}\ndescription: {}", entry.name, entry.version, entry.kind, entry.origin, entry.description);
            println!("configuration keys (fruix build --config KEY=VALUE):");
            if entry.config_keys.is_empty() {
                println!("  (none)");
            }
            for key in &entry.config_keys {
                println!("  {:<16} {}", key.name, key.description);
            }
            if let Some(c) = capabilities {
                println!("capabilities:");
                println!("  remote:              {}", c.remote);
                println!("  signs at build site: {}", c.signs_at_build_site);
                println!("  cancellable:         {}", c.cancellable);
                let arches = if c.target_arches.is_empty() {
                    "any".to_string()
                } else {
                    c.target_arches.join(", ")
                };
                println!("  target arches:       {arches}");
            }
            Ok(Status::Success)
        }
    }
}
