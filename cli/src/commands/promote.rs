//! `fruix native-build promote`: validate a result root and promote it.

use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_core::result_root::{self, ResultRoot};
use fruix_promote::{measure, promote_validated, PromoteOptions, PromotionReport, Store};

use crate::args::{OutputArgs, PromoteArgs};
use crate::defaults;
use crate::display::{with_progress, Mode};
use crate::exit::{self, from_promote, CliError, CliResult, Status};

pub fn run(args: PromoteArgs) -> CliResult {
    let output = args.output.into();
    defaults::announce(Mode::from_output(&output), Some(&args.store.store), None);
    let root = result_root::validate(&args.result_root)
        .map_err(|e| CliError::new(exit::promotion(&e), e))?;
    let store = Store::open(&args.store.store).map_err(from_promote)?;
    let report = promote_with_progress(&root, &store, &output)?;
    print_report(&report, &output);
    Ok(Status::Success)
}

/// Promotes a validated root into `store`, with a progress
/// display on a terminal.
pub fn promote_with_progress(
    root: &ResultRoot,
    store: &Store,
    output: &OutputArgs,
) -> CliResult<PromotionReport> {
    let progress = Progress::default();
    let options = PromoteOptions {
        progress: Some(&progress),
    };
    // The totals are only for the display: a tree that cannot be measured
    // is refused by the promotion itself.
    let totals = || measure(root).ok();
    with_progress(
        Mode::from_output(output),
        "promote",
        &progress,
        Some(&totals),
        || promote_validated(root, store, &options),
    )
    .map_err(from_promote)
}

/// Prints the summary: key=value lines, or one JSON object with `--json`
/// (whose `new` fields say what was created). Plain output also says, on
/// stderr, which objects were already in the store.
pub fn print_report(report: &PromotionReport, output: &OutputArgs) {
    if output.json {
        println!(
            "{}",
            serde_json::to_string(report).expect("reports serialize")
        );
        return;
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
}
