//! Small filesystem helpers shared by fruix crates: durable atomic writes and
//! symlink-safe path resolution.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written, flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).with_path("create", &tmp)?;
        file.write_all(contents).with_path("write", &tmp)?;
        file.sync_all().with_path("flush to disk", &tmp)?;
        fs::rename(&tmp, path).with_path("rename into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory's entries to disk (after creating or renaming in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_path("flush directory to disk", dir)
}

/// Resolves `relative` under `root` without following any symlink.
///
/// Every component must exist as a real directory (the last one may be any
/// type, and is returned as is). A symlink anywhere on the way is refused,
/// because it could lead outside `root`.
pub fn resolve_beneath(root: &Path, relative: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    let components: Vec<_> = Path::new(relative).components().collect();
    for (i, component) in components.iter().enumerate() {
        let Component::Normal(name) = component else {
            return Err(Error::UnsafePath {
                path: root.join(relative),
                message: "path leaves its root (absolute or `..`); give a path inside it".into(),
            });
        };
        path.push(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.clone(),
                hint: "the result root does not contain it".into(),
            },
            _ => Error::io("inspect", &path, e),
        })?;
        let last = i + 1 == components.len();
        if meta.file_type().is_symlink() {
            return Err(Error::UnsafePath {
                path,
                message: "is a symlink; fruix never follows symlinks out of a result root".into(),
            });
        }
        if !last && !meta.is_dir() {
            return Err(Error::UnsafePath {
                path,
                message: "is not a directory".into(),
            });
        }
    }
    Ok(path)
}
