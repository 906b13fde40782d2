//! `fruix store gc` and `fruix store delete`.

use std::path::PathBuf;

use fruix_core::escape;
use fruix_promote::gc::{collect_into, delete as delete_objects, GcOptions, GcReport};
use indicatif::HumanBytes;

use fruix_core::manifest::Progress;

use super::{object_names, open, open_as, print_paths, UNCHANGED};
use crate::args::{DeleteArgs, GcArgs};
use crate::display::{print_json, to_json};
use crate::display::{with_progress, Mode};
use crate::exit::{from_promote, from_promote_saying, when_cancelled, CliError, CliResult, Status};

pub fn gc(args: GcArgs) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP stops the collection between two removals:
    // what it removed is said, and the store stays consistent.
    let progress = Progress::default();
    crate::signals::cancel_work(&progress, || {})?;
    // Progress goes to stderr under --json too: stdout holds the JSON alone.
    // Quiet, it names no store either, as `store verify -q` names none.
    let mode = Mode::unless_quiet(args.quiet);
    // A dry run only reads: a user who may only read the store may run it.
    let store = open_as(
        mode,
        &args.at.store,
        Some(&args.at.state),
        !args.dry_run,
        UNCHANGED,
    )?;
    let options = GcOptions {
        state_dir: args.at.state.state_dir.clone(),
        dry_run: args.dry_run,
        max_freed: args.max_freed,
        keep_result_roots: args.keep_result_roots,
        older_than: args.older_than,
        progress: Some(&progress),
    };
    let mut report = GcReport::default();
    let collected = with_progress(mode, ("gc", "objects"), &progress, None, || {
        collect_into(&store, &options, &mut report)
    });
    warn_refused(&report);
    if let Err(e) = collected {
        let e = from_promote(e);
        if e.status != Status::Cancelled {
            return Err(e);
        }
        // What went is said: listed on stdout, or under --json in the
        // error object (`removed`: the report of a whole collection, of
        // what this one removed), with the summary in its message.
        if !args.json {
            print_removed(&report, args.quiet);
        }
        // Cancelled before it removed anything (waiting for the
        // promotions under way, say), it sums up nothing.
        if removed_nothing(&report) {
            return Err(when_cancelled(e, UNCHANGED));
        }
        let hint = format!(
            "{}; the store is consistent: run `fruix store gc` again to finish",
            summary(&report)
        );
        let e = when_cancelled(e, hint);
        return Err(match args.json {
            true => e.with_detail("removed", to_json(&report)?),
            false => e,
        });
    }
    // The work directories of builds no longer running (killed): the
    // build contract's, not the store's, so swept here beside it.
    // One that cannot be looked at is a warning: the collection is done.
    let builds = args.at.state.state_dir.join("native-builds");
    let (work_dirs, warnings) =
        match fruix_freebsd::work::remove_dead_work_dirs(&builds, args.dry_run) {
            Ok(dirs) => (dirs, Vec::new()),
            Err(e) => {
                let warning =
                    format!("the work directories of killed builds were not looked for: {e}");
                eprintln!("fruix: warning: {warning}");
                (Vec::new(), vec![warning])
            }
        };
    let collected = Collected {
        work_dirs,
        warnings,
        report,
    };
    if args.json {
        print_json(&collected)?;
    } else {
        print_report(&collected, args.quiet);
    }
    // A collection that left garbage it could not remove failed to
    // collect it all (a dry run leaves nothing: see GcReport::refused).
    match collected.report.refused.len() {
        0 => Ok(Status::Success),
        n => {
            let e = CliError::new(
                Status::SystemFailure,
                anyhow::anyhow!(
                    "left {n} object(s) or temporar(ies) it could not remove (each said above, with why); the rest was collected"
                ),
            );
            Err(if args.json { e.reported() } else { e })
        }
    }
}

/// Says on stderr each object or temporary the collection left, and why.
fn warn_refused(r: &GcReport) {
    for left in &r.refused {
        eprintln!(
            "fruix: warning: not removed: {}",
            escape::terminal(&left.reason)
        );
    }
}

/// What `store gc` reports: the store's collection, and the work
/// directories of runs no longer running it removed (or would) from
/// `STATE_DIR/native-builds` (see
/// [`fruix_freebsd::work::remove_dead_work_dirs`]).
#[derive(serde::Serialize)]
struct Collected {
    #[serde(flatten)]
    report: GcReport,
    #[serde(serialize_with = "escape::serialize_paths")]
    work_dirs: Vec<PathBuf>,
    /// What could not be done beside the collection (said on stderr too).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Every removed path (unless `quiet`), then one summary line.
fn print_report(c: &Collected, quiet: bool) {
    print_removed(&c.report, quiet);
    if !quiet {
        let verb = if c.report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for p in &c.work_dirs {
            println!("{verb} work directory {}", escape::path(p));
        }
    }
    let mut line = summary(&c.report);
    if !c.work_dirs.is_empty() {
        let n = c.work_dirs.len();
        line += &format!(
            "; {} {n} work director{} of builds no longer running",
            if c.report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            if n == 1 { "y" } else { "ies" }
        );
    }
    println!("{line}");
}

/// Whether the collection removed (or, a dry run, listed) nothing.
fn removed_nothing(r: &GcReport) -> bool {
    r.objects.is_empty()
        && r.pool_entries == 0
        && r.temporaries == 0
        && r.dead_roots.is_empty()
        && r.result_roots.is_empty()
}

/// Every removed path, unless `quiet`.
fn print_removed(r: &GcReport, quiet: bool) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if quiet {
        return;
    }
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
    ) + &match r.dead_left {
        0 => String::new(),
        n => format!("; left {n} dead object(s) past --max-freed, for the next collection"),
    } + &match r.refused.len() {
        0 => String::new(),
        n => format!("; left {n} object(s) or temporar(ies) it may not or could not remove"),
    }
}

/// `store delete`: waits for the collector's lock (exclusive), then
/// deletes, which finishes once begun.
pub fn delete(args: DeleteArgs) -> CliResult {
    const NOT_DELETED: &str = "nothing was deleted";
    crate::signals::cancel_waits()?;
    let at = &args.objects.store;
    let store = open(at, Some(&args.state), true, NOT_DELETED)?;
    let names = object_names(&store, &args.objects.paths)?;
    let removed = delete_objects(&store, &args.state.state_dir, &names)
        .map_err(from_promote_saying(NOT_DELETED))?;
    print_paths(&removed, args.json);
    Ok(Status::Success)
}
