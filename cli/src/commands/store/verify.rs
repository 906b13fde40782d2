//! `fruix store verify`: every object against its manifest, the pool
//! entries by content, and the registry against the store's directories.

use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_promote::verify::{
    check_records, check_references, check_registry, object_paths, pool_keys, repair,
    resolve_object, rewrite_records, verify_objects, verify_pool, ObjectVerification,
    RecordMismatch, ReferenceFault, ReferenceProblem, RegistryCheck,
};
use fruix_promote::Store;

use crate::args::VerifyArgs;
use crate::defaults;
use crate::display::{json_path, to_json, with_progress, Mode};
use crate::exit::{from_promote, from_promote_saying, CliError, CliResult, Status};

/// The objects named by `paths` to check, each as a whole-store check
/// sees it: one the registry does not name is no valid object, reported
/// in `registry.unregistered` and not checked; a registered one whose
/// directory is gone goes to `registry.missing`. An object named again
/// (however spelt: `paths` are resolved first) is checked and reported
/// once, where it is first named.
fn named_objects(
    store: &Store,
    paths: &[std::path::PathBuf],
    registry: &mut RegistryCheck,
) -> fruix_promote::Result<Vec<std::path::PathBuf>> {
    let registered = |object: &std::path::Path| match object.file_name() {
        Some(name) => store.is_valid(&name.to_string_lossy()),
        None => Ok(false),
    };
    let mut objects = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let object = resolve_object(store, path);
        let resolved = match &object {
            Ok(object) => object,
            Err(fruix_promote::Error::Inconsistent { object, .. }) => object,
            Err(_) => path,
        };
        if !seen.insert(resolved.clone()) {
            continue;
        }
        match object {
            Ok(object) if registered(&object)? => objects.push(object),
            Ok(object) => registry.unregistered.push(object),
            // Registered, its directory gone.
            Err(fruix_promote::Error::Inconsistent { object, .. }) => registry.missing.push(object),
            Err(e) => return Err(e),
        }
    }
    Ok(objects)
}

pub fn verify(args: VerifyArgs) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP stops the check (a repair once it began
    // finishes), which then fails as cancelled, having reported nothing.
    let progress = Progress::default();
    crate::signals::cancel_work(&progress, || {})?;
    // Progress goes to stderr under --json too: stdout holds the JSON alone.
    let mode = Mode::unless_quiet(args.quiet);
    defaults::announce(mode, Some(&args.store.store), None);
    let store = match args.repair {
        true => Store::open_existing(&args.store.store),
        false => Store::open_for_reading(&args.store.store),
    }
    .map_err(from_promote_saying(super::UNCHANGED))?;
    // The collector's lock, shared (as promotions and exports take it, and
    // as Nix's `verifyStore` takes the GC lock) while the store is read: no
    // collection or `store delete` removes an object or pool entry being
    // read, which would look corrupt. Released before a repair, which waits
    // for every other process (a collection waiting for this lock among them).
    let gc = store
        .gc_lock(false)
        .map_err(from_promote_saying(super::UNCHANGED))?;
    // The registry against the directories, when the whole store is checked.
    let mut registry = if args.paths.is_empty() {
        check_registry(&store).map_err(from_promote)?
    } else {
        RegistryCheck::default()
    };
    let paths = if args.paths.is_empty() {
        // Unregistered directories are not valid objects: reported, not checked.
        object_paths(&store)
            .map_err(from_promote)?
            .into_iter()
            .filter(|p| !registry.unregistered.contains(p))
            .collect()
    } else {
        named_objects(&store, &args.paths, &mut registry).map_err(from_promote)?
    };
    // The pool first (every entry, or those the named objects link), then
    // the objects, whose files linked to sound pool entries are not read again.
    let (results, pool) = with_progress(mode, ("verify", "files"), &progress, None, || {
        // Gathered in bounded memory, however many files the objects hold.
        let keys = (!args.paths.is_empty()).then(|| pool_keys(&paths));
        let pool = verify_pool(&store, keys, Some(&progress))?;
        let results = verify_objects(&paths, Some(pool.verified(&store)), Some(&progress))?;
        Ok::<_, fruix_promote::Error>((results, pool))
    })
    .map_err(from_promote_saying(super::UNCHANGED))?;
    // The references of the intact objects against the registry's.
    registry.references = check_references(&store, &results).map_err(from_promote)?;
    // The registry's record of each intact object against the object.
    let records = check_records(&store, &results).map_err(from_promote)?;
    drop(gc);
    let corrupt = results.iter().filter(|r| !r.ok).count() + registry.missing.len();
    let dangling = registry
        .references
        .iter()
        .filter(|r| r.problem == ReferenceFault::NotRegistered)
        .count();
    let unrecorded = registry.references.len() - dangling;
    let mismatched = records.len();
    // A record that disagrees with its intact object is rewritten from it
    // (the object's name vouches for it), before the rest of the repair.
    let rewritten = match args.repair {
        true => rewrite_records(&store, &records).map_err(from_promote_saying(super::UNCHANGED))?,
        false => Vec::new(),
    };
    let repaired = if args.repair && (corrupt > 0 || !pool.corrupt.is_empty() || unrecorded > 0) {
        Some(
            repair(&store, &results, &pool, &registry)
                .map_err(from_promote_saying(super::UNCHANGED))?,
        )
    } else {
        None
    };
    if args.json {
        let paths = |paths: &[std::path::PathBuf]| -> Vec<_> {
            paths.iter().map(|p| json_path(p)).collect()
        };
        println!(
            "{}",
            serde_json::json!({
                "objects": objects_json(&results)?,
                "checked": results.len(),
                "corrupt": corrupt,
                "pool": { "checked": pool.checked, "corrupt": to_json(&pool.corrupt)? },
                "missing": paths(&registry.missing),
                "unregistered": paths(&registry.unregistered),
                "foreign": paths(&registry.foreign),
                "references": to_json(&registry.references)?,
                "records": to_json(&records)?,
                "repair": repair_json(repaired.as_ref(), &rewritten)?,
            })
        );
    } else {
        for r in &results {
            if r.ok {
                if !args.quiet {
                    println!("ok {}", escape::path(&r.path));
                }
                continue;
            }
            println!("CORRUPT {}", escape::path(&r.path));
            if let Some(e) = &r.error {
                println!("  {e}");
            }
            for d in &r.differences {
                println!("  {d}");
            }
            if r.more_differences > 0 {
                println!("  ... and {} more difference(s)", r.more_differences);
            }
        }
        for p in &pool.corrupt {
            println!("CORRUPT {}", escape::path(&p.path));
            println!("  {}", escape::text(&p.message));
        }
        for p in &registry.missing {
            println!("MISSING {}", escape::path(p));
            println!("  registered, but its directory is gone");
        }
        for r in &registry.references {
            print_reference(r);
        }
        for m in &records {
            println!("MISMATCH {}", escape::path(&m.object));
            println!("  the registry's {}", record_field(m));
        }
        for p in &registry.unregistered {
            if !args.quiet {
                println!("unregistered {}", escape::path(p));
                println!("  not a valid object: a promotion or import under way (which registers it), or a promotion, import or repair killed before it finished (`fruix store gc` removes what it left)");
            }
        }
        for p in &registry.foreign {
            if !args.quiet {
                println!("foreign {}", escape::path(p));
                println!("  not named as a store object: not fruix's, which leaves it alone (no repair or collection removes it); remove it by hand if it is not wanted");
            }
        }
        if !args.quiet {
            println!(
                "{} object(s) checked, {corrupt} corrupt; {} pool entr{} checked, {} corrupt{}",
                results.len(),
                pool.checked,
                if pool.checked == 1 { "y" } else { "ies" },
                pool.corrupt.len(),
                match registry.references.len() {
                    0 => String::new(),
                    n => format!("; {n} reference(s) the registry lacks"),
                }
            );
            if mismatched > 0 {
                println!("{mismatched} registry record field(s) disagree with their objects");
            }
        }
        for m in &rewritten {
            println!(
                "rewrote the registry's {} of {} from the object",
                m.field.as_str(),
                escape::path(&m.object)
            );
        }
        if let Some(r) = &repaired {
            // Recorded first, as repair does.
            for recorded in &r.recorded_references {
                println!(
                    "recorded reference {} -> {}",
                    escape::path(&recorded.object),
                    escape::path(&recorded.reference)
                );
            }
            for (what, paths) in [
                ("object", &r.removed_objects),
                ("pool entry", &r.removed_pool_entries),
                ("result bundle", &r.removed_bundles),
                ("object built from a removed object", &r.removed_referrers),
                ("missing object from the registry", &r.unregistered),
            ] {
                for p in paths {
                    println!("removed {what} {}", escape::path(p));
                }
            }
        }
    }
    let damaged = corrupt > 0 || !pool.corrupt.is_empty();
    if repaired.is_some() && damaged {
        eprintln!("fruix: removed what was corrupt; promote the affected result roots again (`fruix native-build promote RESULT_ROOT`) to recreate their objects");
    }
    // What is left to say: all of it without a repair; after one, the
    // dangling references it removes nothing for.
    let mut problems = Vec::new();
    if damaged && !args.repair {
        problems.push(format!(
            "{corrupt} corrupt or missing store object(s) and {} corrupt pool entr{}; run `fruix store verify --repair` to remove them, then promote the affected result roots again",
            pool.corrupt.len(),
            if pool.corrupt.len() == 1 { "y" } else { "ies" }
        ));
    }
    if unrecorded > 0 && !args.repair {
        problems.push(format!("{unrecorded} reference(s) between valid objects that the registry does not record; run `fruix store verify --repair` to record them"));
    }
    if mismatched > rewritten.len() {
        let fields: std::collections::BTreeSet<&str> =
            records.iter().map(|m| m.field.as_str()).collect();
        let fields: Vec<&str> = fields.into_iter().collect();
        problems.push(format!(
            "{} registry record field(s) ({}) that disagree with their intact objects; run `fruix store verify --repair` to rewrite them from the objects",
            mismatched - rewritten.len(),
            fields.join(", ")
        ));
    }
    if dangling > 0 {
        problems.push(format!("{dangling} reference(s) to objects the registry lacks, which `--repair` removes nothing for: make each object referenced valid again (promote its result root again, add its source tree again with `fruix source add`, or import or copy it), or, if its referrer is not needed, remove the referrer with `fruix store delete`"));
    }
    if problems.is_empty() {
        return Ok(Status::Success);
    }
    Err(CliError::new(
        Status::PromotionFailure,
        anyhow::anyhow!("{}", problems.join("; ")),
    )
    .reported())
}

/// Prints a reference the registry lacks, as the other problems are.
fn print_reference(r: &ReferenceProblem) {
    let (label, lacks) = match r.problem {
        ReferenceFault::NotRegistered => (
            "DANGLING",
            "which the registry lacks (not a valid object); `--repair` removes nothing for it",
        ),
        ReferenceFault::NotRecorded => (
            "UNRECORDED",
            "a valid object, but the registry does not record the reference; `--repair` records it",
        ),
    };
    println!("{label} {}", escape::path(&r.object));
    println!("  references {}, {lacks}", escape::path(&r.reference));
}

/// What the registry records in `m`'s field, and what the object says.
fn record_field(m: &RecordMismatch) -> String {
    let shown = |v: &Option<String>| match v {
        Some(v) => escape::quoted(v).to_string(),
        None => "nothing".to_string(),
    };
    format!(
        "{} is {}, the object's {}",
        m.field.as_str(),
        shown(&m.registered),
        shown(&m.actual)
    )
}

/// The objects' JSON report: each difference's `path` is the file's own
/// path (as JSON shows paths), and its `manifest_path` the entry's path as
/// the object's `.fruix-manifest.mtree` spells it (mtree-encoded, ASCII,
/// what the text output shows), which tells apart two files whose paths
/// JSON would show alike (`\377x`, valid UTF-8, and the byte 0xff then `x`).
fn objects_json(results: &[ObjectVerification]) -> CliResult<serde_json::Value> {
    let mut json = to_json(&results)?;
    let objects = json.as_array_mut().into_iter().flatten().zip(results);
    for (object, result) in objects {
        let shown = object["differences"].as_array_mut().into_iter().flatten();
        for (shown, difference) in shown.zip(&result.differences) {
            shown["manifest_path"] = difference.path().into();
        }
    }
    Ok(json)
}

/// The repair's JSON report: what [`repair`] did (all empty when it had
/// nothing to remove), and the records it rewrote (`rewritten_records`);
/// `null` without `--repair`.
fn repair_json(
    repaired: Option<&fruix_promote::verify::Repair>,
    rewritten: &[RecordMismatch],
) -> CliResult<serde_json::Value> {
    let mut json = match (repaired, rewritten.is_empty()) {
        (None, true) => return Ok(serde_json::Value::Null),
        (r, _) => to_json(&r.cloned().unwrap_or_default())?,
    };
    if let Some(report) = json.as_object_mut() {
        report.insert("rewritten_records".into(), to_json(&rewritten)?);
    }
    Ok(json)
}
