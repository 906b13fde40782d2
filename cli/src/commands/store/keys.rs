//! `fruix store generate-key` and `fruix store sign`, and the signing of
//! what `build` and `native-build promote` promote (`--sign-with`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fruix_core::escape;
use fruix_promote::sign::{key_name_problem, sign_objects, SecretKey, MAX_KEY_NAME_BYTES};
use fruix_promote::{PromotionReport, Store};

use super::{object_names, open};
use crate::args::{GenerateKeyArgs, OutLinkArgs, SignArgs};
use crate::display::{print_json, to_json};
use crate::exit::{self, from_promote, CliError, CliResult, Status};

/// Creates a new file at `path` with `mode`; an existing file is never
/// overwritten.
fn create_new(path: &Path, mode: u32) -> CliResult<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| exit::output_file("create", path, e, "; keys are never overwritten"))
}

pub fn generate_key(args: GenerateKeyArgs) -> CliResult {
    if let Some(problem) = key_name_problem(&args.name) {
        return Err(CliError::usage(format!(
            "--name {}: {problem}; give a name of at most {MAX_KEY_NAME_BYTES} bytes without ':', white space, control or format characters (such as U+200E or U+FEFF)",
            escape::quoted(&args.name)
        )));
    }
    // Regression: the same path for both said `File exists` of a file that
    // did not exist before.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(&args.secret_key) == absolute(&args.public_key) {
        return Err(CliError::usage(format!(
            "--secret-key and --public-key are both {}; give each key its own file",
            escape::path(&args.secret_key)
        )));
    }
    let key = SecretKey::generate(&args.name).map_err(from_promote)?;
    // Both files are made before either is written, and a failure removes
    // what this made: a refused key leaves no half of itself behind (a
    // rerun would be refused, "never overwritten").
    let secret = create_new(&args.secret_key, 0o600)?;
    let public = match create_new(&args.public_key, 0o644) {
        Ok(public) => public,
        Err(e) => {
            remove_made(&secret, &args.secret_key);
            return Err(e);
        }
    };
    let made = [(&secret, &args.secret_key), (&public, &args.public_key)];
    let remove_both = || made.iter().for_each(|(file, path)| remove_made(file, path));
    let write = |mut file: &std::fs::File, path: &Path, text: String| {
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| exit::output_file("write", path, e, ""))
    };
    let written = write(&secret, &args.secret_key, key.to_text())
        .and_then(|()| write(&public, &args.public_key, key.public_text()));
    if let Err(e) = written {
        remove_both();
        return Err(e);
    }
    let text = match args.json {
        true => {
            let report = serde_json::json!({
                "name": key.name,
                "public_key": key.public_text().trim_end(),
            });
            format!("{}\n", to_json(&report)?)
        }
        false => key.public_text(),
    };
    // The public key never printed (stdout on a full disk), the command
    // fails, and leaves no key: run again, it is not refused for the files
    // it made. A reader that went away (a closed pipe) is no failure.
    match print_unbuffered(&text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            remove_both();
            Err(CliError::new(
                Status::SystemFailure,
                anyhow::anyhow!(
                    "cannot write the public key to standard output: {e}; {} and {} were removed",
                    escape::path(&args.secret_key),
                    escape::path(&args.public_key)
                ),
            ))
        }
        _ => Ok(Status::Success),
    }
}

/// Writes `text` to standard output at once, past its buffer (flushed
/// first): a failure is this write's, and leaves nothing buffered for the
/// exit's flush to fail on again.
fn print_unbuffered(text: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let mut buffered = stdout.lock();
    buffered.flush()?;
    let fd = buffered.as_fd().try_clone_to_owned()?;
    std::fs::File::from(fd).write_all(text.as_bytes())
}

/// Removes the file `path` this command created as `file`: only while
/// `path` still names that file (its device and inode), never another put
/// there since.
fn remove_made(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let made = file.metadata().map(id).ok();
    if made.is_some() && path.symlink_metadata().map(id).ok() == made {
        let _ = std::fs::remove_file(path);
    }
}

/// Reads a secret key named on the command line (exit 2 when it cannot be
/// read: the caller's input).
pub fn read_key(path: &Path) -> CliResult<SecretKey> {
    let key = SecretKey::read(path).map_err(|e| CliError::new(Status::Usage, e))?;
    warn_if_readable_by_others(path);
    Ok(key)
}

/// Warns when the secret key file at `path` may be read by other users
/// than its owner (`generate-key` makes it 0600): signing goes on. The
/// mode is the file's, through the symlinks of its path (a link's own is
/// always 0777).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = path.metadata() else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "fruix: warning: secret key {} may be read by other users (mode {mode:04o}); make it readable by its owner alone: chmod 600 {}",
            escape::path(path),
            escape::path(path)
        );
    }
}

/// Signs the objects `names` of `store` with `key`, all or none: an object
/// that carries the most signatures an object may is refused (exit 2).
fn sign_all(store: &Store, names: &[String], key: &SecretKey) -> CliResult<Vec<String>> {
    sign_objects(store, names, key)
        .map_err(from_promote)?
        .map_err(|full| CliError::new(Status::Usage, full))
}

pub fn sign(args: SignArgs) -> CliResult {
    let key = read_key(&args.secret_key)?;
    crate::signals::cancel_waits()?;
    let store = open(&args.objects.store, None, true, "nothing was signed")?;
    let mut names = object_names(&store, &args.objects.paths)?;
    // Each object once, however often it is named (as it is in a closure).
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    if args.recursive {
        // The registry's guard goes before `sign_all` takes it again.
        let closure = store.db().closure(&names).map_err(from_promote)?;
        names = closure;
    }
    let signatures = sign_all(&store, &names, &key)?;
    let signed: Vec<_> = names
        .iter()
        .map(|name| store.path().join(name))
        .zip(signatures)
        .collect();
    if args.json {
        let signed: Vec<_> = signed
            .iter()
            .map(|(path, signature)| {
                serde_json::json!({ "path": crate::display::json_path(path), "signature": signature })
            })
            .collect();
        print_json(&signed)?;
    } else {
        for (path, signature) in &signed {
            println!("{} {}", escape::path(path), escape::text(signature));
        }
    }
    Ok(Status::Success)
}

/// The key of `--sign-with`, read before anything is built. A key the
/// environment names that cannot be read says so.
pub fn signing_key(args: &OutLinkArgs) -> CliResult<Option<SecretKey>> {
    let Some(path) = args.sign_with.as_deref() else {
        return Ok(None);
    };
    read_key(path)
        .map(Some)
        .map_err(|e| match args.sign_with_given {
            true => e,
            false => CliError::new(e.status, anyhow::anyhow!("FRUIX_SIGNING_KEY: {}", e.error)),
        })
}

/// Signs what a promotion reported: its bundle's closure (the bundle, its
/// artifacts, and the source object they were built from), so that an
/// export of it carries a signature for every object. A failure says that
/// the promotion itself stands (the result promoted, and linked), unsigned:
/// the closure is signed after it, and an object of it may be full of other
/// keys' signatures. Under `--json` its error object carries the
/// promotion's report as `promoted`.
pub fn sign_promoted(store: &Store, report: &PromotionReport, key: &SecretKey) -> CliResult<()> {
    let bundle = report
        .result_store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The registry's guard goes before `sign_all` takes it again.
    let closure = store.db().closure(&[bundle]).map_err(from_promote);
    let signed = closure.and_then(|closure| sign_all(store, &closure, key));
    signed.map(drop).map_err(|e| {
        let linked = match &report.out_link {
            Some(link) => format!(" and linked at {}", escape::path(link)),
            None => String::new(),
        };
        let promoted = format!(
            "the result was promoted as {}{linked}, but not signed",
            escape::path(&report.result_store)
        );
        let report = serde_json::to_value(report).unwrap_or_default();
        CliError::new(e.status, anyhow::anyhow!("{promoted}: {:#}", e.error))
            .with_detail("promoted", report)
    })
}
