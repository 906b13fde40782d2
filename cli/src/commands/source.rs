//! `fruix source add`, and the source object a local build uses: a
//! directory given as `--source` is added to the store first, so the
//! artifacts' identity names the source by content, not by where it sat.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_core::promotion::SourceStore;
use fruix_matrix::sources::{
    add_source_dir, check_outside_tree, source_object_leaving_out, AddedSource, OwnOutput,
};
use fruix_promote::source_identity::check_source_name;
use fruix_promote::temp_roots::TempRoots;
use fruix_promote::Store;

use crate::args::{OutputArgs, SourceAddArgs, SourceCommand};
use crate::defaults;
use crate::display::{print_json, with_progress, Mode};
use crate::exit::{from_matrix, from_promote, from_promote_saying, CliError, CliResult, Status};

pub fn run(command: SourceCommand) -> CliResult {
    match command {
        SourceCommand::Add(args) => add(args),
    }
}

/// What a cancelled `source add` left.
const NOT_ADDED: &str = "nothing was added";

fn add(args: SourceAddArgs) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP stops the reading, which then fails as any
    // failure does: what it made goes (a store it made too).
    let progress = Progress::default();
    crate::signals::cancel_work(&progress, || {})?;
    let output: OutputArgs = args.output.into();
    let mode = Mode::from_output(&output);
    defaults::announce(mode, Some(&args.store.store), None);
    check_name(&args.name)?;
    let dir = fruix_matrix::request::check_source(&args.dir).map_err(from_matrix)?;
    // The state directory a build would use, were it in the tree.
    let state_dir = std::env::var_os("FRUIX_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(defaults::state_dir, PathBuf::from);
    let own = [OwnOutput::StateDir(&state_dir)];
    check_outside_tree(&dir, &args.store.store, &own).map_err(from_matrix)?;
    // A store made for this source is removed again if adding it fails.
    let store =
        Store::open_tentatively(&args.store.store).map_err(from_promote_saying(NOT_ADDED))?;
    // The totals are only for the display (as a promotion's).
    let totals = |stop: &AtomicBool| fruix_promote::measure_tree(&dir, stop).ok();
    let added = with_progress(mode, ("source", "files"), &progress, Some(&totals), || {
        let version = args.freebsd_version.as_deref();
        add_source_dir(
            &store,
            &dir,
            &args.name,
            version,
            &own,
            Some(&progress),
            None,
        )
    })
    .map_err(from_promote_saying(NOT_ADDED))?;
    store.keep();
    note_added(mode, &dir, &added);
    let report = added.report;
    if output.json {
        print_json(&report)?;
    } else {
        if !report.new && !output.quiet {
            eprintln!(
                "fruix: source: already in the store: {}",
                escape::path(&report.store_path)
            );
        }
        println!("{}", escape::path(&report.store_path));
    }
    Ok(Status::Success)
}

/// Refuses, before anything is made, a `--name` the object's store name
/// could not hold ([`check_source_name`]).
fn check_name(name: &str) -> CliResult<()> {
    check_source_name("--name", name).map_err(CliError::usage)
}

/// Says on stderr, once and unless quiet, what fruix left out of the
/// source tree `dir` as its own output, and (quiet too) the warning of
/// symlinks that lead out of it ([`AddedSource::warning`]); under `--json`
/// too: stdout holds the JSON alone.
fn note_added(mode: Mode, dir: &Path, added: &AddedSource) {
    if let (Some(note), false) = (added.left_out.note(dir), mode == Mode::Quiet) {
        eprintln!("fruix: note: {note}");
    }
    if let Some(warning) = added.warning(dir) {
        eprintln!("fruix: warning: {warning}");
    }
}

/// The source object a local build of `source` (canonical, checked) uses
/// (see [`fruix_matrix::sources::source_object_leaving_out`]), leaving out
/// `own` (the build's state directory and out-link) and the store where
/// they lie in the tree. `temp_roots` keeps the object while the build
/// runs. Says which object, and what was left out, on stderr, unless
/// quiet. Reading is counted (and cancelled) through `progress`.
pub fn source_object(
    mode: Mode,
    store: &Store,
    source: &Path,
    version: Option<&str>,
    own: &[OwnOutput<'_>],
    temp_roots: &TempRoots,
    progress: &Progress,
) -> CliResult<SourceStore> {
    check_outside_tree(source, store.path(), own).map_err(from_matrix)?;
    let totals = |stop: &AtomicBool| fruix_promote::measure_tree(source, stop).ok();
    let (used, added) = with_progress(mode, ("source", "files"), progress, Some(&totals), || {
        source_object_leaving_out(store, source, version, own, Some(progress), temp_roots)
    })
    .map_err(from_promote)?;
    if let Some(added) = &added {
        note_added(mode, source, added);
    }
    if let (Some(AddedSource { report, .. }), false) = (added, mode == Mode::Quiet) {
        eprintln!(
            "fruix: source {} is {}{}",
            escape::path(source),
            escape::path(&report.store_path),
            if report.new {
                ""
            } else {
                " (already in the store)"
            }
        );
    }
    Ok(used)
}
