//! `fruix store verify` and `fruix store list`.

use fruix_core::manifest::Progress;
use fruix_promote::verify::{list_store, object_paths, verify_objects};
use fruix_promote::Store;

use crate::args::{ListArgs, OutputArgs, StoreCommand, VerifyArgs};
use crate::display::{with_progress, Mode};
use crate::exit::{from_promote, CliError, CliResult, Status};

pub fn run(command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Verify(args) => verify(args),
        StoreCommand::List(args) => list(args),
    }
}

fn verify(args: VerifyArgs) -> CliResult {
    let store = Store::open(&args.store.store).map_err(from_promote)?;
    let paths = if args.paths.is_empty() {
        object_paths(&store).map_err(from_promote)?
    } else {
        args.paths.clone()
    };
    let progress = Progress::default();
    let mode = Mode::from_output(&OutputArgs {
        json: args.json,
        quiet: args.quiet || args.json,
        verbose: false,
    });
    let results = with_progress(mode, "verify", &progress, || {
        verify_objects(&paths, Some(&progress))
    });
    let corrupt = results.iter().filter(|r| !r.ok).count();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "objects": results, "checked": results.len(), "corrupt": corrupt })
        );
    } else {
        for r in &results {
            if r.ok {
                if !args.quiet {
                    println!("ok {}", r.path.display());
                }
                continue;
            }
            println!("CORRUPT {}", r.path.display());
            if let Some(e) = &r.error {
                println!("  {e}");
            }
            for d in &r.differences {
                println!("  {d}");
            }
        }
        if !args.quiet {
            println!("{} object(s) checked, {corrupt} corrupt", results.len());
        }
    }
    if corrupt > 0 {
        return Err(CliError::new(
            Status::PromotionFailure,
            anyhow::anyhow!("{corrupt} corrupt store object(s); remove them (chmod -R u+w first) and promote again"),
        ));
    }
    Ok(Status::Success)
}

fn list(args: ListArgs) -> CliResult {
    let store = Store::open(&args.store.store).map_err(from_promote)?;
    let objects = list_store(&store).map_err(from_promote)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&objects).expect("lists serialize")
        );
        return Ok(Status::Success);
    }
    for o in &objects {
        println!(
            "{:<10} {:<12} {:<18} {:>12}  {}",
            o.artifact,
            o.version,
            o.executor,
            o.size,
            o.path.display()
        );
    }
    Ok(Status::Success)
}
