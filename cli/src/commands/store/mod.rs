//! `fruix store ...`: verify, list, info, query, roots, gc and delete; keys,
//! archives, copy and serve in their own modules.
//!
//! Every command installs its Ctrl-C, SIGTERM and SIGHUP handling before it
//! opens the store: a wait for a lock another process holds (a repair, a
//! collection) gives up at the first signal, and the command fails as
//! cancelled (exit 130), saying what it left as it was. Those that only
//! read, or make one small change (`list`, `info`, `query`, `roots`,
//! `add-root`, `delete`, `sign`), finish what they do once they hold
//! their locks ([`crate::signals::cancel_waits`]).

mod archive;
mod copy;
mod gc;
mod idle;
pub mod keys;
mod serve;
mod verify;

use std::path::PathBuf;

use fruix_core::escape;
use fruix_promote::db::Filter;
use fruix_promote::query::{info, list_store, query, resolve_valid, Question};
use fruix_promote::roots;
use fruix_promote::Store;
use indicatif::HumanBytes;

use crate::args::{
    AddRootArgs, InfoArgs, ListArgs, QueryArgs, RootsArgs, StateDirArg, StoreArg, StoreCommand,
};
use crate::defaults;
use crate::display::{self, json_path, Mode};
use crate::exit::{from_promote, from_promote_saying, CliResult, Status};
use crate::signals::cancel_waits;

/// What a command cancelled before it changed anything says it left.
const UNCHANGED: &str = "the store was not changed";

pub fn run(command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Verify(args) => verify::verify(args),
        StoreCommand::List(args) => list(args),
        StoreCommand::Info(args) => show_info(args),
        StoreCommand::Query(args) => ask(args),
        StoreCommand::Roots(args) => show_roots(args),
        StoreCommand::AddRoot(args) => add_root(args),
        StoreCommand::Gc(args) => gc::gc(args),
        StoreCommand::Delete(args) => gc::delete(args),
        StoreCommand::GenerateKey(args) => keys::generate_key(args),
        StoreCommand::Sign(args) => keys::sign(args),
        StoreCommand::Export(args) => archive::export_command(args),
        StoreCommand::Import(args) => archive::import_command(args),
        StoreCommand::Copy(args) => copy::copy(args),
        StoreCommand::Serve(args) => serve::serve(args),
    }
}

/// Says which store (and state directory) is used, on a terminal, and
/// opens the existing store: to change it when `writes`, else to read it
/// (a store this user cannot write, such as the system store for a user,
/// can still be read). Cancelled while it waits (for a repair), it says
/// `cancelled` what the command left as it was.
fn open(
    store: &StoreArg,
    state: Option<&StateDirArg>,
    writes: bool,
    cancelled: &'static str,
) -> CliResult<Store> {
    // Said on a terminal under --json too, as by every command: on stderr.
    open_as(Mode::unless_quiet(false), store, state, writes, cancelled)
}

/// [`open`], saying which store as `mode` says things: nothing when quiet
/// (`store gc -q`, `store export -q`), as `store verify -q` says nothing.
fn open_as(
    mode: Mode,
    store: &StoreArg,
    state: Option<&StateDirArg>,
    writes: bool,
    cancelled: &'static str,
) -> CliResult<Store> {
    let state_dir = state.map(|s| s.state_dir.as_path());
    defaults::announce(mode, Some(&store.store), state_dir);
    let store = match writes {
        true => Store::open_existing(&store.store),
        false => Store::open_for_reading(&store.store),
    }
    .map_err(from_promote_saying(cancelled))?;
    Ok(store)
}

/// Resolves the objects named on the command line to their names, every
/// one before any is used: a refused path leaves the store as it was.
pub fn object_names(store: &Store, paths: &[std::path::PathBuf]) -> CliResult<Vec<String>> {
    paths
        .iter()
        .map(|p| resolve_valid(store, p).map_err(from_promote))
        .collect()
}

/// Prints `report` as one line of JSON, or else the store paths it moved,
/// one a line (escaped), with `summary` on standard error.
fn print_moved(
    json: bool,
    report: &impl serde::Serialize,
    paths: &[PathBuf],
    summary: String,
) -> crate::exit::CliResult<()> {
    if json {
        display::print_json(report)?;
    } else {
        for path in paths {
            println!("{}", escape::path(path));
        }
        eprintln!("{summary}");
    }
    Ok(())
}

/// A registration time as RFC 3339 (UTC, seconds). The registry is read
/// as untrusted: a time RFC 3339 cannot write (after the year 9999) is
/// shown as its number of seconds, never a panic.
fn registered(seconds: i64) -> String {
    use std::fmt::Write;
    let time =
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds.max(0) as u64));
    let mut text = String::new();
    match time.map(|t| write!(text, "{}", humantime::format_rfc3339_seconds(t))) {
        Some(Ok(())) => text,
        _ => format!("{seconds} s after 1970-01-01T00:00:00Z"),
    }
}

fn list(args: ListArgs) -> CliResult {
    cancel_waits()?;
    let store = open(&args.store, None, false, UNCHANGED)?;
    let filter = Filter {
        kind: args.kind.map(Into::into),
        artifact: args.artifact,
        executor: args.executor,
        run_id: args.run_id,
    };
    let objects = list_store(&store, &filter).map_err(from_promote)?;
    if args.json {
        display::print_json(&objects)?;
        return Ok(Status::Success);
    }
    // Registry metadata is untrusted text: escaped, and the columns are as
    // wide as what is shown.
    let dash = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "-".into(), |v| escape::text(v).to_string())
    };
    let header = [
        "KIND",
        "ARTIFACT",
        "VERSION",
        "EXECUTOR",
        "KERNCONF",
        "RUN-ID",
        "REGISTERED",
        "SIZE",
        "PATH",
    ]
    .map(String::from);
    let rows: Vec<[String; 9]> = objects
        .iter()
        .map(|o| {
            let r = &o.record;
            [
                r.kind.as_str().to_string(),
                dash(&r.artifact),
                dash(&r.freebsd_version),
                dash(&r.executor),
                dash(&r.kernconf),
                dash(&r.run_id),
                registered(r.registered_at),
                match &r.invalid_size {
                    Some(held) => invalid_size(held),
                    None => HumanBytes(r.size).to_string(),
                },
                escape::path(&o.path).to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..9)
        .map(|k| {
            rows.iter()
                .chain([&header])
                .map(|r| r[k].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(Status::Success)
}

/// What `store list` and `info` show for `held`, what the registry holds
/// in place of a size (negative, or not a number: a hand edit).
fn invalid_size(held: &str) -> String {
    format!(
        "invalid ({} in the registry; run `fruix store verify`)",
        escape::line(held)
    )
}

/// `size` as `store info` shows it: `1.5 KiB (1536 bytes)`; unknown
/// (`None`) as [`invalid_size`] of what the registry holds (`held`), if
/// it is the object's own.
fn size_shown(size: Option<u64>, held: &Option<String>) -> String {
    match (size, held) {
        (Some(s), _) => format!("{} ({s} bytes)", HumanBytes(s)),
        (None, Some(held)) => invalid_size(held),
        (None, None) => {
            "unknown: a size in the closure is invalid (run `fruix store verify`)".into()
        }
    }
}

fn show_info(args: InfoArgs) -> CliResult {
    cancel_waits()?;
    let store = open(&args.objects.store, None, false, UNCHANGED)?;
    let mut infos = Vec::new();
    for name in object_names(&store, &args.objects.paths)? {
        infos.push(info(&store, &name).map_err(from_promote)?);
    }
    if args.json {
        display::print_json(&infos)?;
        return Ok(Status::Success);
    }
    for (i, o) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let r = &o.record;
        println!("{}", escape::path(&o.path));
        let fields = [
            ("kind", Some(r.kind.as_str().to_string())),
            ("artifact", r.artifact.clone()),
            ("size", Some(size_shown(r.valid_size(), &r.invalid_size))),
            ("closure size", Some(size_shown(o.closure_size, &None))),
            ("tree signature", r.tree_signature.clone()),
            ("registered", Some(registered(r.registered_at))),
            ("executor", r.executor.clone()),
            ("run id", r.run_id.clone()),
            ("version", r.freebsd_version.clone()),
            ("kernconf", r.kernconf.clone()),
            ("commit", o.commit.clone()),
            ("dirty", o.dirty.map(|d| d.to_string())),
        ];
        let signatures = o.signatures.iter().map(|s| ("signature", Some(s.clone())));
        let fields: Vec<_> = fields.into_iter().chain(signatures).collect();
        for (key, value) in fields {
            if let Some(v) = value {
                println!("  {key:<15} {}", escape::text(&v));
            }
        }
        for reference in &o.references {
            println!("  {:<15} {}", "references", escape::path(reference));
        }
    }
    Ok(Status::Success)
}

fn ask(args: QueryArgs) -> CliResult {
    cancel_waits()?;
    let at = &args.at;
    let store = open(&at.store, Some(&at.state), false, UNCHANGED)?;
    let name = resolve_valid(&store, &args.path).map_err(from_promote)?;
    let q = &args.question;
    let question = match (q.references, q.referrers, q.requisites) {
        (true, _, _) => Question::References,
        (_, true, _) => Question::Referrers,
        (_, _, true) => Question::Requisites,
        _ => Question::Roots,
    };
    let answer = query(&store, &args.at.state.state_dir, &name, question).map_err(from_promote)?;
    print_paths(&answer, args.json);
    Ok(Status::Success)
}

/// Prints paths one per line (escaped), or as a JSON array of
/// [`json_path`]s.
fn print_paths(paths: &[PathBuf], json: bool) {
    if json {
        let paths: Vec<_> = paths.iter().map(|p| json_path(p)).collect();
        println!("{}", serde_json::Value::from(paths));
    } else {
        for p in paths {
            println!("{}", escape::path(p));
        }
    }
}

/// `store add-root`: under the collector's lock (shared), so that no
/// collection runs between finding the object valid and the root being
/// registered: a symlink made by hand in `gcroots/` while a collection
/// runs may be missed by it, and its object removed.
fn add_root(args: AddRootArgs) -> CliResult {
    const NO_ROOT: &str = "no root was added";
    cancel_waits()?;
    let at = &args.at;
    let store = open(&at.store, Some(&at.state), false, NO_ROOT)?;
    let named = format!("LINK {}", escape::path(&args.link));
    let place = (store.path(), at.state.state_dir.as_path());
    crate::commands::promote::check_root_link(&args.link, &named, place, "")?;
    let _gc = store.gc_lock(false).map_err(from_promote_saying(NO_ROOT))?;
    let [name] =
        <[String; 1]>::try_from(object_names(&store, &[args.path])?).expect("one path, one name");
    let object = store.path().join(&name);
    // A link in `gcroots/` is a direct root: nothing is registered for it.
    let link =
        roots::add_indirect(&args.at.state.state_dir, &args.link, &object).map_err(from_promote)?;
    if args.json {
        display::print_json(&serde_json::json!({
            "link": json_path(&link),
            "object": json_path(&object),
        }))?;
    } else {
        println!("{} -> {}", escape::path(&link), escape::path(&object));
    }
    Ok(Status::Success)
}

fn show_roots(args: RootsArgs) -> CliResult {
    cancel_waits()?;
    let at = &args.at;
    let store = open(&at.store, Some(&at.state), false, UNCHANGED)?;
    let roots = roots::list(&args.at.state.state_dir, store.path()).map_err(from_promote)?;
    if args.json {
        let rows: Vec<serde_json::Value> = roots
            .iter()
            .map(|r| {
                serde_json::json!({
                    "link": json_path(&r.link),
                    "indirect": r.indirect,
                    "target": r.target.as_deref().map(json_path),
                    "object": r.object.as_ref().map(|o| json_path(&store.path().join(o))),
                    "dead": r.is_dead(),
                    "leads_nowhere": r.leads_nowhere(),
                })
            })
            .collect();
        display::print_json(&rows)?;
        return Ok(Status::Success);
    }
    if roots.is_empty() {
        // Said on stderr: stdout stays the list (empty) for scripts.
        eprintln!(
            "fruix: no root in {} names this store's objects: a collection would remove them all",
            escape::path(&at.state.state_dir.join("gcroots"))
        );
    }
    for r in &roots {
        let how = if r.indirect { " (indirect)" } else { "" };
        let target = r.target.as_deref().map(escape::path);
        let target = target.map(|t| t.to_string()).unwrap_or_default();
        match &r.object {
            Some(o) => println!(
                "{}{how} -> {}",
                escape::path(&r.link),
                escape::path(&store.path().join(o))
            ),
            None if r.is_dead() && r.indirect => {
                println!("{}{how}: dead", escape::path(&r.link))
            }
            // It may be another store's, whose disk is not mounted now.
            None if r.leads_nowhere() => println!(
                "{}{how} -> {target}: leads nowhere (its target does not exist; `store gc` leaves it, as it may be another store's)",
                escape::path(&r.link),
            ),
            // A collection removes dead indirect roots only: a link in
            // gcroots/ is the user's.
            None if r.is_dead() => println!(
                "{}: dead (a direct root: `store gc` leaves it; remove it by hand)",
                escape::path(&r.link)
            ),
            None => println!(
                "{}{how} -> {target}: keeps no object (its target is no store object)",
                escape::path(&r.link),
            ),
        }
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a registration time after the year 9999 (a registry
    /// from elsewhere, or edited) made `store list` and `store info`
    /// panic (exit 101): humantime's RFC 3339 display fails there.
    #[test]
    fn a_registration_time_rfc_3339_cannot_write_is_shown_as_seconds() {
        assert_eq!(registered(0), "1970-01-01T00:00:00Z");
        assert_eq!(registered(253402300799), "9999-12-31T23:59:59Z");
        for seconds in [253402300800, i64::MAX] {
            assert_eq!(
                registered(seconds),
                format!("{seconds} s after 1970-01-01T00:00:00Z")
            );
        }
        assert_eq!(registered(-5), "1970-01-01T00:00:00Z");
    }
}
