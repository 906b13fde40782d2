//! `fruix store gc` and `fruix store delete`.

use fruix_core::escape;
use fruix_promote::gc::{collect, delete as delete_objects, GcOptions, GcReport};
use indicatif::HumanBytes;

use fruix_core::manifest::Progress;

use super::{object_names, open, print_paths};
use crate::args::{DeleteArgs, GcArgs, OutputArgs};
use crate::display::print_json;
use crate::display::{with_progress, Mode};
use crate::exit::{from_promote, CliResult, Status};

pub fn gc(args: GcArgs) -> CliResult {
    let store = open(&args.at.store, Some(&args.at.state), args.json, true)?;
    let progress = Progress::default();
    let options = GcOptions {
        state_dir: args.at.state.state_dir.clone(),
        dry_run: args.dry_run,
        max_freed: args.max_freed,
        keep_result_roots: args.keep_result_roots,
        older_than: args.older_than,
        progress: Some(&progress),
    };
    let mode = Mode::from_output(&OutputArgs {
        json: args.json,
        quiet: args.quiet || args.json,
        verbose: false,
    });
    let report = with_progress(mode, ("gc", "objects"), &progress, None, || {
        collect(&store, &options)
    })
    .map_err(from_promote)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report, args.quiet);
    }
    Ok(Status::Success)
}

/// Every removed path (unless `quiet`), then one summary line.
fn print_report(r: &GcReport, quiet: bool) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if !quiet {
        for o in &r.objects {
            println!("{verb} {}", escape::path(&o.path));
        }
        for p in &r.dead_roots {
            println!("{verb} dead root {}", escape::path(p));
        }
        for p in &r.result_roots {
            println!("{verb} result root {}", escape::path(p));
        }
    }
    println!("{}", summary(r));
}

/// The line that sums up a collection: what it removed (or would), and what
/// it kept.
fn summary(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    format!(
        "{verb} {} object(s) ({}), {} pool entr{} ({} on disk), {} temporar{}, {} dead root{}, {} result root{}; kept {} live object(s)",
        r.objects.len(),
        HumanBytes(r.object_bytes),
        r.pool_entries,
        plural(r.pool_entries, "y", "ies"),
        HumanBytes(r.pool_bytes),
        r.temporaries,
        plural(r.temporaries, "y", "ies"),
        r.dead_roots.len(),
        plural(r.dead_roots.len(), "", "s"),
        r.result_roots.len(),
        plural(r.result_roots.len(), "", "s"),
        r.kept
    )
}

pub fn delete(args: DeleteArgs) -> CliResult {
    let store = open(&args.objects.store, Some(&args.state), args.json, true)?;
    let names = object_names(&store, &args.objects.paths)?;
    let removed = delete_objects(&store, &args.state.state_dir, &names).map_err(from_promote)?;
    print_paths(&removed, args.json);
    Ok(Status::Success)
}
