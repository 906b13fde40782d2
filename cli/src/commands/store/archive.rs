//! `fruix store export` and `fruix store import`: archives of objects (see
//! [`fruix_promote::archive`]), and the trusted keys imports check them with.

use std::io::{BufReader, IsTerminal, Read};
use std::path::Path;

use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_promote::archive::{export, export_order, import, ArchiveLimits, ImportOptions, Trust};
use fruix_promote::query::resolve_valid;
use fruix_promote::sign::PublicKey;
use fruix_promote::Store;

use super::{open, print_json, print_moved};
use crate::args::{ExportArgs, ImportArgs, OutputArgs, TrustArgs};
use crate::defaults;
use crate::display::{with_progress, Mode};
use crate::exit::{from_promote, CliError, CliResult, Status};

/// The keys `args` trust: every `--trusted-key`, and the keys file's lines.
/// The default file may be absent; a file named otherwise must be readable.
pub fn trust(args: &TrustArgs) -> CliResult<Trust> {
    let mut keys = Vec::new();
    for key in &args.trusted_keys {
        keys.push(
            PublicKey::parse(key)
                .map_err(|m| CliError::usage(format!("--trusted-key {key:?}: {m}")))?,
        );
    }
    let file = &args.trusted_keys_file;
    match std::fs::read_to_string(file) {
        Ok(text) => {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(PublicKey::parse(line).map_err(|m| {
                    CliError::usage(format!("{}:{}: {m}", escape::path(file), n + 1))
                })?);
            }
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && file == Path::new(defaults::TRUSTED_KEYS_FILE) => {}
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read the trusted keys file {}: {e}",
                escape::path(file)
            )))
        }
    }
    Ok(Trust {
        keys,
        check_signatures: !args.no_check_sigs,
    })
}

fn mode(json: bool) -> Mode {
    Mode::from_output(&OutputArgs {
        json,
        quiet: json,
        verbose: false,
    })
}

/// Resolves the objects named on the command line to their names.
pub fn object_names(store: &Store, paths: &[std::path::PathBuf]) -> CliResult<Vec<String>> {
    paths
        .iter()
        .map(|p| resolve_valid(store, p).map_err(from_promote))
        .collect()
}

pub fn export_command(args: ExportArgs) -> CliResult {
    let store = open(&args.objects.store, None, args.json, false)?;
    let names = object_names(&store, &args.objects.paths)?;
    let order = export_order(&store, &names, args.recursive).map_err(from_promote)?;
    let progress = Progress::default();
    let report = match &args.output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                        "; archives are never overwritten"
                    } else {
                        ""
                    };
                    CliError::usage(format!("cannot create {}: {e}{why}", escape::path(path)))
                })?;
            let written = with_progress(
                mode(args.json),
                ("export", "files"),
                &progress,
                None,
                || export(&store, &order, &file, Some(&progress)),
            );
            if written.is_err() {
                let _ = std::fs::remove_file(path);
            }
            written.map_err(from_promote)?
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(CliError::usage(
                    "standard output is a terminal: redirect it to a file, or give --output FILE",
                ));
            }
            let out = std::io::stdout().lock();
            with_progress(mode(false), ("export", "files"), &progress, None, || {
                export(&store, &order, out, Some(&progress))
            })
            .map_err(from_promote)?
        }
    };
    if args.json {
        print_json(&report);
    } else if args.output.is_some() {
        println!(
            "exported {} object(s), {} bytes",
            report.objects.len(),
            report.bytes
        );
    }
    Ok(Status::Success)
}

pub fn import_command(args: ImportArgs) -> CliResult {
    let trust = trust(&args.local.trust)?;
    let mode = mode(args.json);
    defaults::announce(mode, Some(&args.local.store.store), None);
    let input: Box<dyn Read> = match args.archive.as_deref().filter(|p| *p != Path::new("-")) {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::usage(format!("cannot open {}: {e}", escape::path(path))))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    // A store is made for the first import into it, but a refused import
    // leaves none behind: "the store was not changed" must hold for a
    // mistyped --store too.
    let path = &args.local.store.store;
    // The topmost directory opening the store will make, if any.
    let made = path
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .last()
        .map(Path::to_path_buf);
    let store = Store::open(path).map_err(from_promote)?;
    let progress = Progress::default();
    let report = with_progress(mode, ("import", "files"), &progress, None, || {
        let options = ImportOptions {
            trust: &trust,
            limits: ArchiveLimits::default(),
            progress: Some(&progress),
            whole_input: true,
        };
        import(&store, BufReader::with_capacity(1 << 20, input), &options)
    })
    .map_err(|e| {
        if let Some(made) = &made {
            drop(store);
            let _ = std::fs::remove_dir_all(made);
        }
        from_promote(e)
    })?;
    let summary = format!(
        "imported {} object(s), {} already present",
        report.imported.len(),
        report.present.len()
    );
    print_moved(args.json, &report, &report.imported, summary);
    Ok(Status::Success)
}
