//! The Fruix store on disk: immutable objects, the `.links` pool, locks and
//! temporaries.
//!
//! ```text
//! STORE/<hash>-fruix-native-<artifact>-<version>-<executor>/   artifact objects
//! STORE/<hash>-fruix-native-build-result-<version>-<executor>/ result bundles
//! STORE/.links/<sha256>-<r|x>   one inode per distinct file content and mode
//! STORE/.locks/<object>.lock    per-object locks (flock)
//! STORE/.tmp-<object>-<pid>-<n> objects being built (hidden, removed when stale)
//! STORE/.lock                   shared by every promotion; exclusive to sweep temporaries
//! ```
//!
//! An object is built in a temporary directory inside the store, made
//! read-only with fixed timestamps, flushed to disk, and renamed into place
//! while its lock is held: it becomes visible complete or not at all.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fruix_core::error::IoContext;
use fruix_core::manifest::{self, Entry, Walked, SPECIAL_BITS};

use crate::error::{Error, Result};

/// Modification time of every store file, directory and symlink (as in Nix).
pub const STORE_MTIME: i64 = 1;

/// Name of the content pool directory.
pub const LINKS_DIR: &str = ".links";

/// The default store.
pub const DEFAULT_STORE: &str = "/frx/store";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An advisory lock (flock) released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn flock(file: &File, path: &Path, operation: libc::c_int) -> Result<bool> {
    loop {
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if operation & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(fruix_core::Error::io("lock", path, e).into()),
        }
    }
}

/// An open store directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Shared lock held for the store's lifetime (blocks temp sweeps by others).
    _shared: Lock,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes temporaries
    /// left by killed promotions when no other promotion is running.
    pub fn open(root: &Path) -> Result<Store> {
        fs::create_dir_all(root).map_err(|source| Error::StoreNotWritable {
            store: root.to_path_buf(),
            source,
        })?;
        let root = fs::canonicalize(root).with_path("resolve store", root)?;
        for dir in [LINKS_DIR, ".locks"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|source| Error::StoreNotWritable {
                store: root.clone(),
                source,
            })?;
        }
        let lock_path = root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::StoreNotWritable {
                store: root.clone(),
                source,
            })?;
        if flock(&file, &lock_path, libc::LOCK_EX | libc::LOCK_NB)? {
            sweep_temporaries(&root)?;
        }
        flock(&file, &lock_path, libc::LOCK_SH)?;
        Ok(Store {
            root,
            _shared: Lock { _file: file },
        })
    }

    /// The store directory (absolute).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Locks object `name` exclusively, waiting for other promotions.
    pub fn lock_object(&self, name: &str) -> Result<Lock> {
        let path = self.root.join(".locks").join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_path("create lock", &path)?;
        flock(&file, &path, libc::LOCK_EX)?;
        Ok(Lock { _file: file })
    }

    /// A fresh temporary directory for building object `name`.
    pub fn temp_dir(&self, name: &str) -> Result<TempObject> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(format!(".tmp-{name}-{}-{n}", std::process::id()));
        fs::create_dir(&path).with_path("create temporary object", &path)?;
        Ok(TempObject { path: Some(path) })
    }

    /// Makes sure the pool holds `source`'s content with `entry`'s store mode,
    /// and returns the pool path. The source must still be the file that was
    /// hashed (same inode, size, and change time), or the copy is refused.
    pub fn pool_insert(&self, walked: &Walked) -> Result<PathBuf> {
        let manifest::EntryKind::File { sha256, .. } = &walked.entry.kind else {
            unreachable!("only files go to the pool");
        };
        let store_mode = walked.entry.mode & !SPECIAL_BITS;
        let key = format!(
            "{}-{}",
            hex::encode(sha256),
            if store_mode & 0o111 != 0 { 'x' } else { 'r' }
        );
        let pooled = self.root.join(LINKS_DIR).join(key);
        if pooled.symlink_metadata().is_ok() {
            return Ok(pooled);
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(LINKS_DIR)
            .join(format!(".tmp-{}-{n}", std::process::id()));
        let result = copy_into_pool(walked, &tmp, store_mode).and_then(|()| {
            match fs::hard_link(&tmp, &pooled) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(fruix_core::Error::io("add to the store pool", &pooled, e).into()),
            }
        });
        let _ = fs::remove_file(&tmp);
        result.map(|()| pooled)
    }

    /// Publishes finished temporary objects under their names, all or none
    /// failing together: each root is made read-only with a fixed timestamp,
    /// everything is flushed to disk once, then each is renamed into place.
    /// The caller holds every object's lock.
    pub fn publish(&self, temps: Vec<(TempObject, String)>) -> Result<Vec<PathBuf>> {
        for (temp, _) in &temps {
            set_mode(temp.path(), 0o555)?;
            set_mtime(temp.path())?;
        }
        if temps.is_empty() {
            return Ok(Vec::new());
        }
        sync_filesystem(&self.root)?;
        let mut published = Vec::new();
        for (mut temp, name) in temps {
            let path = temp.path.take().expect("temporary object is live");
            let target = self.root.join(&name);
            if let Err(e) = fs::rename(&path, &target) {
                remove_tree(&path);
                return Err(fruix_core::Error::io("rename into place", &target, e).into());
            }
            published.push(target);
        }
        fruix_core::fsutil::sync_dir(&self.root)?;
        Ok(published)
    }
}

/// A temporary object directory, removed on drop unless published.
#[derive(Debug)]
pub struct TempObject {
    path: Option<PathBuf>,
}

impl TempObject {
    /// Where the object is being built.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("temporary object is live")
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_tree(&path);
        }
    }
}

fn copy_into_pool(walked: &Walked, tmp: &Path, store_mode: u32) -> Result<()> {
    let mut source = manifest::open_regular(&walked.full_path, &walked.metadata)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_path("create", tmp)?;
    io::copy(&mut source, &mut out).map_err(|e| {
        let path = if e.raw_os_error() == Some(libc::ENOSPC) {
            tmp
        } else {
            &walked.full_path
        };
        fruix_core::Error::io("copy into the store", path, e)
    })?;
    let after = source.metadata().with_path("inspect", &walked.full_path)?;
    let before = &walked.metadata;
    if after.len() != before.len()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec()
    {
        return Err(fruix_core::Error::UnsafePath {
            path: walked.full_path.clone(),
            message:
                "changed while it was being promoted; make sure nothing writes to the result root"
                    .into(),
        }
        .into());
    }
    start_writeback(&out);
    out.set_permissions(fs::Permissions::from_mode(store_mode))
        .with_path("set mode of", tmp)?;
    let times = [libc::timespec {
        tv_sec: STORE_MTIME as libc::time_t,
        tv_nsec: 0,
    }; 2];
    // SAFETY: valid descriptor and a two-element times array.
    if unsafe { libc::futimens(out.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(fruix_core::Error::io("set time of", tmp, io::Error::last_os_error()).into());
    }
    Ok(())
}

/// Starts writing a new pool file to disk now, so that the flush before
/// publishing (see [`Store::publish`]) overlaps with the copying of other files.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range on a valid, owned descriptor; failure only means
    // the data is written at the final flush instead.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths have no NUL byte")
}

/// Sets `path`'s (and, for symlinks, the link's own) times to [`STORE_MTIME`].
pub fn set_mtime(path: &Path) -> Result<()> {
    let times = [libc::timespec {
        tv_sec: STORE_MTIME as libc::time_t,
        tv_nsec: 0,
    }; 2];
    let c = c_path(path);
    // SAFETY: valid NUL-terminated path and a two-element times array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(fruix_core::Error::io("set time of", path, io::Error::last_os_error()).into());
    }
    Ok(())
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
    {
        // SAFETY: syncfs on a valid, owned descriptor.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(
                fruix_core::Error::io("flush to disk", root, io::Error::last_os_error()).into(),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
    }
    Ok(())
}

/// Removes a tree even when its directories are read-only. Best effort.
pub fn remove_tree(path: &Path) {
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    let _ = fs::remove_dir_all(path);
}

fn sweep_temporaries(root: &Path) -> Result<()> {
    for dir in [root.to_path_buf(), root.join(LINKS_DIR)] {
        for entry in fs::read_dir(&dir).with_path("read", &dir)?.flatten() {
            if entry.file_name().as_bytes().starts_with(b".tmp-") {
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_tree(&path);
                } else {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    Ok(())
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

/// Whether `entry` is one of the reserved top-level names.
pub fn is_reserved(entry: &Entry) -> bool {
    RESERVED_NAMES.iter().any(|n| entry.path == n.as_bytes())
}

/// Bytes used on disk by `path` (blocks), counting each inode once.
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}
