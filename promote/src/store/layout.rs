//! The names inside store objects, and the file operations that give an
//! object its fixed form (times, modes, flushing, removal, disk usage).

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fruix_core::error::IoContext;

use crate::error::{Error, Result};
use crate::pool::temp_name;

mod owner;

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("paths have no NUL byte")
}

/// Sets `path`'s (and, for symlinks, the link's own) times to [`STORE_MTIME`](super::STORE_MTIME).
pub fn set_mtime(path: &Path) -> Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        c_path(path).as_c_str(),
        &crate::pool::store_times(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| fruix_core::Error::io("set time of", path, e.into()).into())
}

/// Sets a directory's or file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_path("set mode of", path)
        .map_err(Into::into)
}

/// Flushes everything written under `root` to disk.
pub fn sync_filesystem(root: &Path) -> Result<()> {
    let dir = File::open(root).with_path("open", root)?;
    #[cfg(target_os = "linux")]
    rustix::fs::syncfs(&dir).map_err(|e| fruix_core::Error::io("flush to disk", root, e.into()))?;
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        rustix::fs::sync();
    }
    Ok(())
}

/// Removes `path` and everything below it, best effort (see
/// [`fruix_core::remove`]): what cannot be removed is found again by the
/// next `store gc`.
pub fn remove_tree(path: &Path) {
    let _ = fruix_core::remove::remove_tree(path);
}

impl super::Store {
    /// Removes the object directory `path` of this store: first renamed to
    /// a hidden temporary, `.tmp-WHAT-NAME-PID-N` (`what` says who removes
    /// it: `gc`, `repair`, `promote`), so that it leaves its name at once
    /// and whole, then removed ([`remove_tree`]). A process killed meanwhile
    /// leaves only that temporary, which the next sweep ([`Store::open`]
    /// alone in the store) or `store gc` removes: never part of an object
    /// under an object's name. An object already gone is fine; one this
    /// process may not remove (another user's: [`Self::may_remove`]), or
    /// that cannot be renamed, stays as it was, and the error says why.
    ///
    /// [`Store::open`]: super::Store::open
    pub fn remove_object(&self, path: &Path, what: &str) -> Result<()> {
        self.may_remove(path)?;
        let name = path
            .file_name()
            .map_or("object".into(), |n| n.to_string_lossy());
        let hidden = self.path().join(temp_name(&format!("{what}-{name}")));
        match fs::rename(path, &hidden) {
            Ok(()) => {
                remove_tree(&hidden);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fruix_core::Error::io("remove", path, e).into()),
        }
    }

    /// Takes back objects [`Self::publish`] published that could not be
    /// registered (the registry full, say), renamed away first
    /// ([`Self::remove_object`]): a failure leaves no published but
    /// unregistered object behind. The caller still holds their locks.
    pub fn unpublish(&self, published: &[std::path::PathBuf]) {
        for path in published {
            let _ = self.remove_object(path, "unpublish");
        }
    }
}

/// Names at the top of an artifact object that are metadata, not artifact content.
pub const OBJECT_METADATA_FILE: &str = ".fruix-native-build-object.scm";
/// The manifest file inside an object.
pub const MANIFEST_FILE: &str = ".fruix-manifest.mtree";
/// The references file inside an object.
pub const REFERENCES_FILE: &str = ".references";
/// The metadata file inside a result bundle.
pub const RESULT_METADATA_FILE: &str = ".fruix-native-build-result.scm";
/// Top-level names reserved in artifact objects.
pub const RESERVED_NAMES: [&str; 3] = [OBJECT_METADATA_FILE, MANIFEST_FILE, REFERENCES_FILE];
/// Top-level names reserved in source objects.
pub const SOURCE_RESERVED_NAMES: [&str; 3] = [
    crate::source_identity::SOURCE_METADATA_FILE,
    MANIFEST_FILE,
    REFERENCES_FILE,
];

/// Whether `name` is a source object's name (`<hash>-freebsd-source-...`).
pub fn is_source_name(name: &str) -> bool {
    name.get(40..)
        .is_some_and(|rest| rest.starts_with(crate::source_identity::SOURCE_INFIX))
}

/// The metadata names at the top of `object`, by its kind.
pub fn reserved_names(object: &Path) -> [&'static str; 3] {
    match object.file_name().and_then(|n| n.to_str()) {
        Some(name) if is_source_name(name) => SOURCE_RESERVED_NAMES,
        _ => RESERVED_NAMES,
    }
}

/// Bytes used on disk by `path` (blocks), counting each inode once.
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(path)
        .follow_root_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Refuses a store whose path (made absolute, or resolved) is not UTF-8,
/// before anything is made: [`Error::StorePathNotText`]. What names its
/// objects by path as text (a result bundle's metadata, a build request)
/// would name other paths, and `store verify` would find its bundles
/// corrupt. Nor may it hold a control character
/// ([`Error::StorePathControl`]), which that metadata refuses.
pub(super) fn text_path(root: &Path) -> Result<()> {
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    match absolute.to_str() {
        Some(text) if text.chars().any(char::is_control) => {
            Err(Error::StorePathControl { path: absolute })
        }
        Some(_) => Ok(()),
        None => Err(Error::StorePathNotText { path: absolute }),
    }
}
