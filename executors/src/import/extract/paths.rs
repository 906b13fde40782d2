//! The paths of a guest archive's entries: normalized (relative, no `..`),
//! checked at the result root's top, and the refusal of an unsafe one.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use fruix_core::{Error, Result};

/// The refusal of the entry at `path` (its archive bytes): `message` says why.
pub(super) fn unsafe_entry(path: &[u8], message: impl Into<String>) -> Error {
    Error::UnsafePath {
        path: PathBuf::from(OsStr::from_bytes(path)),
        message: format!("guest archive entry refused: {}", message.into()),
    }
}

/// The directory of a result root the host writes its own logs into.
const LOGS_DIR: &str = "logs";

/// Refuses entry `raw` (normalized: `path`) of type `kind` at the top of
/// the result root when it is a symlink, or a `logs` that is not a
/// directory: the host reads and writes names there (`logs/`,
/// `.fruix-signatures`, `promotion.scm`), and a result root holds only
/// files and directories at its top.
pub(super) fn check_top(raw: &[u8], path: &Path, kind: tar::EntryType) -> Result<()> {
    if path.components().nth(1).is_some() {
        return Ok(());
    }
    match kind {
        tar::EntryType::Symlink => Err(unsafe_entry(
            raw,
            "a symlink at the top of a result root; only files and directories belong there",
        )),
        tar::EntryType::Directory => Ok(()),
        _ if path == Path::new(LOGS_DIR) => Err(unsafe_entry(
            raw,
            "`logs` that is not a directory; a result root's logs are a directory",
        )),
        _ => Ok(()),
    }
}

/// A relative, normal path from archive bytes: `./` prefixes dropped,
/// absolute paths, `..` and NUL bytes refused. `None` for the root itself.
pub(super) fn normalize(raw: &[u8]) -> Result<Option<PathBuf>> {
    if raw.starts_with(b"/") {
        return Err(unsafe_entry(
            raw,
            "absolute path; a result root archive holds relative paths only",
        ));
    }
    if raw.contains(&0) {
        return Err(unsafe_entry(raw, "a NUL byte in a path"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(unsafe_entry(
                    raw,
                    "`..` component; it could write outside the staging directory",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(raw, "absolute path"))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// `bytes` without the NUL bytes a GNU long name or link ends with.
pub(super) fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}
