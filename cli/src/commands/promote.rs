//! `fruix native-build promote`: validate a result root and promote it.

use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_core::result_root::{self, ResultRoot};
use fruix_promote::roots::{AUTO_DIR, GCROOTS_DIR};
use fruix_promote::sign::SecretKey;
use fruix_promote::{measure, promote_validated, OutLink, PromoteOptions, PromotionReport, Store};

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::args::{OutLinkArgs, OutputArgs, PromoteArgs};
use crate::commands::store::keys::{sign_promoted, signing_key};
use crate::defaults;
use crate::display::{print_json, with_progress, Mode};
use crate::exit::{self, from_promote, CliError, CliResult, Status};

/// What a cancelled promotion left.
const NOT_PROMOTED: &str = "nothing was promoted";

pub fn run(args: PromoteArgs) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP stops the promotion, which then fails as
    // any does: what it made goes, and the result root stays as it was.
    let progress = Progress::default();
    crate::signals::cancel_work(&progress, || {})?;
    let output = args.output.into();
    defaults::announce(
        Mode::from_output(&output),
        Some(&args.store.store),
        (!args.out_link.no_out_link).then_some(args.state.state_dir.as_path()),
    );
    check_out_link(&args.out_link, (&args.store.store, &args.state.state_dir))?;
    let key = signing_key(&args.out_link)?;
    // A root that is not there is a missing input (exit 2), not an invalid
    // root (exit 4).
    if let Err(e) = args.result_root.symlink_metadata() {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Err(CliError::usage(format!(
                "{}: not found; give the path of an existing result root",
                escape::path(&args.result_root)
            )));
        }
    }
    let root = result_root::validate(&args.result_root)
        .map_err(|e| CliError::new(exit::promotion(&e), e))?;
    // A store made for this promotion is removed again if it is refused.
    let store = Store::open_tentatively(&args.store.store)
        .map_err(exit::from_promote_saying(NOT_PROMOTED))?;
    let out_link = out_link(&args.out_link, &args.state.state_dir);
    let report = promote_with_progress(&root, &store, &output, out_link, &progress)
        .map_err(|e| exit::when_cancelled(e, NOT_PROMOTED))?;
    let store = store.keep();
    sign_and_print(&store, &report, key.as_ref(), &output)?;
    Ok(Status::Success)
}

/// Signs what `report` promoted with `key`, if any ([`sign_promoted`]),
/// then prints the report. A promotion that could not be signed still
/// prints its report, but for `--json`, where the error object carries it.
pub fn sign_and_print(
    store: &Store,
    report: &PromotionReport,
    key: Option<&SecretKey>,
    output: &OutputArgs,
) -> CliResult<()> {
    if let Some(Err(e)) = key.map(|key| sign_promoted(store, report, key)) {
        if !output.json {
            print_report(report, output)?;
        }
        return Err(e);
    }
    print_report(report, output)
}

/// Refuses, before anything is done, an out-link that could not be made
/// or would lie in the store or where roots are registered
/// ([`check_root_link`]).
pub fn check_out_link(args: &OutLinkArgs, place: (&Path, &Path)) -> CliResult<()> {
    if args.no_out_link {
        return Ok(());
    }
    let link = format!("--out-link {}", escape::path(&args.out_link));
    check_root_link(&args.out_link, &link, place, ", or give --no-out-link")
}

/// Refuses (usage, 2), before anything is done, a root's link `link`
/// (`named` so in messages) that could not be made, or would lie in the
/// store or where roots are registered (`place`: the store and the state
/// directory): something other than a symlink is there, its directory is
/// missing, gone (a relative link in a removed current directory) or not
/// writable by this user, or its directory is in the store, which holds objects only (no
/// collection keeps a link there, and one in an object changes it), or in
/// `STATE_DIR/gcroots/auto` (the collector takes each symlink there for a
/// registration, and removes this one as a dead root). `or` ends the
/// advice.
pub fn check_root_link(
    link: &Path,
    named: &str,
    (store, state_dir): (&Path, &Path),
    or: &str,
) -> CliResult<()> {
    if let Ok(m) = link.symlink_metadata() {
        if !m.file_type().is_symlink() {
            return Err(CliError::usage(format!(
                "{named} exists and is not a symlink; choose another path{or}"
            )));
        }
    }
    let parent = link
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        let advice = match or {
            "" => "create it or choose another path".to_string(),
            or => format!("create it, choose another path{or}"),
        };
        return Err(CliError::usage(format!(
            "{named}: {} is not a directory; {advice}",
            escape::path(parent)
        )));
    }
    if link.is_relative() && std::env::current_dir().is_err() {
        return Err(CliError::usage(format!(
            "{named}: the current directory is gone (removed since fruix was started in it); change to an existing directory or give an absolute path{or}"
        )));
    }
    use rustix::fs::{access, Access};
    if let Err(e) = access(parent, Access::WRITE_OK | Access::EXEC_OK) {
        return Err(CliError::usage(format!(
            "{named}: the link cannot be made in {} ({}); choose another path{or}",
            escape::path(parent),
            std::io::Error::from(e)
        )));
    }
    let parent = parent.canonicalize();
    if let (Ok(parent), Ok(store)) = (&parent, store.canonicalize()) {
        if parent.starts_with(&store) {
            return Err(CliError::usage(format!(
                "{named} lies in the store {}, which holds store objects only; choose a path outside it{or}",
                escape::path(&store)
            )));
        }
    }
    let auto = state_dir.join(GCROOTS_DIR).join(AUTO_DIR);
    if let (Ok(parent), Ok(auto)) = (&parent, auto.canonicalize()) {
        if parent.starts_with(&auto) {
            return Err(CliError::usage(format!(
                "{named} lies in {}, where fruix registers roots (a collection would take the link for a dead registration and remove it); choose a path outside it{or}",
                escape::path(&auto)
            )));
        }
    }
    Ok(())
}

/// The `fruix native-build promote` command that promotes `root` later
/// as this command would have: same store, state directory, link and key.
pub fn promote_later(store: &Path, state_dir: &Path, link: &OutLinkArgs, root: &Path) -> String {
    let mut command = format!(
        "fruix native-build promote --store {} --state-dir {}",
        escape::path(store),
        escape::path(state_dir)
    );
    if link.no_out_link {
        command.push_str(" --no-out-link");
    } else {
        command.push_str(&format!(" --out-link {}", escape::path(&link.out_link)));
    }
    if let Some(key) = &link.sign_with {
        command.push_str(&format!(" --sign-with {}", escape::path(key)));
    }
    format!("{command} {}", escape::path(root))
}

/// The out-link of `args` (none with `--no-out-link`), rooted in
/// `state_dir`.
pub fn out_link<'a>(args: &'a OutLinkArgs, state_dir: &'a Path) -> Option<OutLink<'a>> {
    (!args.no_out_link).then_some(OutLink {
        state_dir,
        link: &args.out_link,
    })
}

/// Promotes a validated root into `store`, with a progress display on a
/// terminal of what `progress` counts, linking the bundle at `out_link` (a
/// root) when given. Cancelling `progress` stops it (it fails, cancelled,
/// having published nothing).
pub fn promote_with_progress(
    root: &ResultRoot,
    store: &Store,
    output: &OutputArgs,
    out_link: Option<OutLink<'_>>,
    progress: &Progress,
) -> CliResult<PromotionReport> {
    let options = PromoteOptions {
        progress: Some(progress),
        out_link,
    };
    // The totals are only for the display: a tree that cannot be measured
    // is refused by the promotion itself.
    let totals = |stop: &AtomicBool| measure(root, stop).ok();
    with_progress(
        Mode::from_output(output),
        ("promote", "files"),
        progress,
        Some(&totals),
        || promote_validated(root, store, &options),
    )
    .map_err(from_promote)
}

/// Prints the summary: key=value lines (`out_link=` last, when a link was
/// made; paths escaped), or one JSON object with `--json` (whose `new`
/// fields say what was created). Plain output also says, on stderr, which
/// objects were already in the store.
pub fn print_report(report: &PromotionReport, output: &OutputArgs) -> CliResult<()> {
    if output.json {
        return print_json(report);
    }
    if !output.quiet {
        let existing = report
            .order
            .iter()
            .map(|name| (name.as_str(), &report.artifacts[name]))
            .filter(|(_, a)| !a.new)
            .map(|(name, a)| (name, &a.store_path));
        let bundle = (!report.result_new).then_some(("result bundle", &report.result_store));
        for (what, path) in existing.chain(bundle) {
            eprintln!(
                "fruix: {what}: already in the store: {}",
                escape::path(path)
            );
        }
    }
    print!("{}", report.to_key_values());
    if let Some(link) = &report.out_link {
        println!("out_link={}", escape::path(link));
    }
    Ok(())
}
