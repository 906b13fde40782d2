//! `fruix store generate-key` and `fruix store sign`, and the signing of
//! what `build` and `native-build promote` promote (`--sign-with`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fruix_core::escape;
use fruix_promote::query::resolve_valid;
use fruix_promote::sign::{sign_object, SecretKey};
use fruix_promote::{PromotionReport, Store};

use super::{open, print_json};
use crate::args::{GenerateKeyArgs, OutLinkArgs, SignArgs};
use crate::exit::{from_promote, CliError, CliResult, Status};

/// Writes `text` to a new file at `path` with `mode`; an existing file is
/// never overwritten.
fn write_new(path: &Path, text: &str, mode: u32) -> CliResult<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            let status = match e.kind() {
                std::io::ErrorKind::AlreadyExists => Status::Usage,
                _ => Status::SystemFailure,
            };
            CliError::new(
                status,
                anyhow::anyhow!(
                    "cannot create {}: {e}; keys are never overwritten",
                    escape::path(path)
                ),
            )
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| CliError::new(Status::SystemFailure, e))
}

pub fn generate_key(args: GenerateKeyArgs) -> CliResult {
    if !fruix_promote::sign::is_key_name(&args.name) {
        return Err(CliError::usage(format!(
            "--name {}: give a name without ':' or white space",
            fruix_core::escape::quoted(&args.name)
        )));
    }
    let key = SecretKey::generate(&args.name).map_err(from_promote)?;
    write_new(&args.secret_key, &key.to_text(), 0o600)?;
    write_new(&args.public_key, &key.public_text(), 0o644)?;
    print!("{}", key.public_text());
    Ok(Status::Success)
}

/// Reads a secret key named on the command line (exit 2 when it cannot be
/// read: the caller's input).
pub fn read_key(path: &Path) -> CliResult<SecretKey> {
    SecretKey::read(path).map_err(|e| CliError::new(Status::Usage, e))
}

pub fn sign(args: SignArgs) -> CliResult {
    let key = read_key(&args.secret_key)?;
    let store = open(&args.objects.store, None, args.json, true)?;
    let mut signed = Vec::new();
    for path in &args.objects.paths {
        let name = resolve_valid(&store, path).map_err(from_promote)?;
        let signature = sign_object(&store, &name, &key).map_err(from_promote)?;
        signed
            .push(serde_json::json!({ "path": store.path().join(&name), "signature": signature }));
    }
    if args.json {
        print_json(&signed);
    } else {
        for s in &signed {
            println!(
                "{} {}",
                s["path"].as_str().unwrap_or_default(),
                s["signature"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(Status::Success)
}

/// The key of `--sign-with`, read before anything is built.
pub fn signing_key(args: &OutLinkArgs) -> CliResult<Option<SecretKey>> {
    args.sign_with.as_deref().map(read_key).transpose()
}

/// Signs what a promotion reported: its bundle's closure (the bundle, its
/// artifacts, and the source object they were built from), so that an
/// export of it carries a signature for every object.
pub fn sign_promoted(store: &Store, report: &PromotionReport, key: &SecretKey) -> CliResult<()> {
    let bundle = report
        .result_store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let closure = store.db().closure(&[bundle]).map_err(from_promote)?;
    for name in closure {
        sign_object(store, &name, key).map_err(from_promote)?;
    }
    Ok(())
}
