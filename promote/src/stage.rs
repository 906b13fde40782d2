//! Building a store object in a temporary directory from its manifest.
//!
//! Promotion reads a result root once ([`crate::pool::Pool::ingest`]) and
//! writes the artifact's manifest, in store modes, to its work directory.
//! Once the object's name is known and it is not in the store yet,
//! [`build_artifact_object`] creates it from that manifest alone: directories
//! with `mkdirat`, files as hard links to pool entries with `linkat`, symlinks
//! with `symlinkat`, each relative to its parent's descriptor in the new
//! object, so no path is ever resolved through a symlink the object contains.
//! The result root is not read again.
//!
//! The object's stored manifest is the same lines with entries for its own
//! metadata files merged in at their place in path order, so that
//! `mtree -f .fruix-manifest.mtree -p OBJECT` checks the whole object.

use std::cmp::Ordering;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    open_dir, parse_line, path_order, stat, Entry, EntryKind, MANIFEST_HEADER, SPECIAL_BITS,
};

use crate::error::Result;
use crate::pool::{finish_file, key, store_times, Destination};
use crate::store::{Store, TempObject, MANIFEST_FILE, OBJECT_METADATA_FILE, REFERENCES_FILE};

/// Longest manifest line read back (a 4096-byte path and link target, fully escaped).
const MAX_LINE: usize = 64 << 10;

/// Reads manifest lines one at a time: each parsed entry with its line.
pub struct ManifestLines {
    reader: BufReader<File>,
    path: PathBuf,
    number: usize,
}

impl ManifestLines {
    /// Opens manifest `path` (never following a symlink).
    pub fn open(path: &Path) -> Result<ManifestLines> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .with_path("open", path)?;
        Ok(ManifestLines {
            reader: BufReader::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
            number: 0,
        })
    }

    fn invalid(&self, message: String) -> crate::Error {
        fruix_core::Error::InvalidMetadata {
            path: self.path.clone(),
            field: "manifest".into(),
            line: Some(self.number),
            message,
        }
        .into()
    }

    /// The next entry and its line (with newline); comments, blank lines and
    /// the stored manifest's line for itself are skipped.
    pub fn next_entry(&mut self) -> Result<Option<(Entry, String)>> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .with_path("read", &self.path)?;
            if n == 0 {
                return Ok(None);
            }
            self.number += 1;
            if n > MAX_LINE {
                return Err(self.invalid(format!("line longer than {MAX_LINE} bytes")));
            }
            let text = std::str::from_utf8(&line)
                .map_err(|_| self.invalid("not UTF-8 (manifests are ASCII)".into()))?;
            let trimmed = text.trim_end_matches('\n');
            // The manifest's own line has no digest (it cannot hash itself).
            if trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed.starts_with(&format!("./{MANIFEST_FILE} "))
            {
                continue;
            }
            let entry = parse_line(trimmed).map_err(|m| self.invalid(m))?;
            let mut owned = trimmed.to_string();
            owned.push('\n');
            return Ok(Some((entry, owned)));
        }
    }
}

/// The manifest lines of an object's own metadata files, sorted in path order.
fn metadata_lines(
    (metadata_file, metadata): (&str, &str),
    references: &str,
) -> Vec<(Vec<u8>, String)> {
    let mut lines: Vec<(Vec<u8>, String)> =
        [(metadata_file, metadata), (REFERENCES_FILE, references)]
            .iter()
            .map(|(name, content)| {
                (
                    name.as_bytes().to_vec(),
                    format!(
                        "./{name} type=file mode=0444 size={} sha256digest={}\n",
                        content.len(),
                        hex::encode(Sha256::digest(content.as_bytes()))
                    ),
                )
            })
            .collect();
    lines.push((
        MANIFEST_FILE.as_bytes().to_vec(),
        format!("./{MANIFEST_FILE} type=file mode=0444\n"),
    ));
    lines.sort_by(|a, b| path_order(&a.0, &b.0));
    lines
}

/// Builds artifact object `name` in a temporary directory from the store-mode
/// manifest lines at `tree_manifest`, with its metadata files, ready for
/// [`Store::publish`]. Every file's content must be in the pool. The caller
/// holds the object's lock and has checked it does not exist.
pub fn build_artifact_object(
    store: &Store,
    name: &str,
    tree_manifest: &Path,
    metadata: &str,
    references: &str,
) -> Result<TempObject> {
    build_object(
        store,
        name,
        tree_manifest,
        (OBJECT_METADATA_FILE, metadata),
        references,
    )
}

/// [`build_artifact_object`] for any kind of object: `metadata_file` names
/// the file holding `metadata` (`.fruix-source.scm` for sources).
pub fn build_object(
    store: &Store,
    name: &str,
    tree_manifest: &Path,
    (metadata_file, metadata): (&str, &str),
    references: &str,
) -> Result<TempObject> {
    let temp = store.temp_dir(name)?;
    let root_path = temp.path().to_path_buf();
    let root = open_dir(&root_path)?;
    let manifest_path = root_path.join(MANIFEST_FILE);
    let manifest_fd = create_at(root.as_fd(), MANIFEST_FILE, &manifest_path)?;
    let mut out = BufWriter::with_capacity(
        256 << 10,
        File::from(manifest_fd.try_clone().with_path("open", &manifest_path)?),
    );
    let write = |out: &mut BufWriter<File>, line: &str| {
        out.write_all(line.as_bytes())
            .with_path("write", &manifest_path)
    };
    write(&mut out, MANIFEST_HEADER)?;
    let mut meta = metadata_lines((metadata_file, metadata), references)
        .into_iter()
        .peekable();
    let mut lines = ManifestLines::open(tree_manifest)?;
    let mut builder = Builder {
        store,
        root_path: &root_path,
        root: &root,
        dirs: Vec::new(),
    };
    while let Some((entry, line)) = lines.next_entry()? {
        while let Some((_, meta_line)) =
            meta.next_if(|(p, _)| path_order(p, &entry.path) == Ordering::Less)
        {
            write(&mut out, &meta_line)?;
        }
        write(&mut out, &line)?;
        builder.add(&entry)?;
    }
    for (_, meta_line) in meta {
        write(&mut out, &meta_line)?;
    }
    builder.finish()?;
    out.flush().with_path("write", &manifest_path)?;
    drop(out);
    for (file, content) in [(metadata_file, metadata), (REFERENCES_FILE, references)] {
        let path = root_path.join(file);
        let fd = create_at(root.as_fd(), file, &path)?;
        let mut f = File::from(fd);
        f.write_all(content.as_bytes()).with_path("write", &path)?;
        finish_file(f.as_fd(), 0o444, &path)?;
    }
    finish_file(manifest_fd.as_fd(), 0o444, &manifest_path)?;
    Ok(temp)
}

fn create_at(dir: BorrowedFd<'_>, name: &str, display: &Path) -> Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| fruix_core::Error::io("create", display, e.into()).into())
}

/// Creates the entries of one object, in path order, through directory
/// descriptors.
struct Builder<'a> {
    store: &'a Store,
    root_path: &'a Path,
    root: &'a OwnedFd,
    /// Open directories below the root on the current path, by depth:
    /// each with its path for messages and its path in the object.
    dirs: Vec<(OwnedFd, PathBuf, Vec<u8>)>,
}

impl Builder<'_> {
    fn add(&mut self, entry: &Entry) -> Result<()> {
        if entry.path.is_empty() {
            return Ok(()); // the object root is the temporary directory
        }
        let components: Vec<&[u8]> = entry.path.split(|b| *b == b'/').collect();
        let depth = components.len();
        while self.dirs.len() >= depth {
            let (fd, path, _) = self.dirs.pop().expect("non-empty");
            finish_dir(&fd, &path)?;
        }
        // The directory open last must be the entry's own, not merely one
        // at its depth: `./b/y` after `./a/x` is no entry of `./a`.
        let parent_path = &entry.path[..entry.path.len() - components[depth - 1].len()];
        let in_parent = match self.dirs.last() {
            None => depth == 1,
            Some((_, _, dir)) => {
                self.dirs.len() + 1 == depth
                    && parent_path.strip_suffix(b"/") == Some(dir.as_slice())
            }
        };
        if !in_parent {
            return Err(fruix_core::Error::UnsafePath {
                path: self.root_path.join(OsStr::from_bytes(&entry.path)),
                message: "manifest entry comes before its directory".into(),
            }
            .into());
        }
        let parent = self
            .dirs
            .last()
            .map_or(self.root.as_fd(), |(fd, _, _)| fd.as_fd());
        let name =
            CString::new(components[depth - 1]).map_err(|_| fruix_core::Error::UnsafePath {
                path: self.root_path.join(OsStr::from_bytes(&entry.path)),
                message: "name contains a NUL byte".into(),
            })?;
        let display = self.root_path.join(OsStr::from_bytes(&entry.path));
        match &entry.kind {
            EntryKind::Directory => {
                rfs::mkdirat(parent, &name, Mode::from_raw_mode(0o700))
                    .map_err(|e| fruix_core::Error::io("create", &display, e.into()))?;
                let fd = rfs::openat(
                    parent,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fruix_core::Error::io("open", &display, e.into()))?;
                self.dirs.push((fd, display, entry.path.clone()));
            }
            EntryKind::File { sha256, .. } => {
                let key = key(sha256, entry.mode & !SPECIAL_BITS);
                let to = Destination {
                    parent,
                    name: &name,
                    display: &display,
                };
                self.store.pool().link_into(&key, to)?;
            }
            EntryKind::Symlink { target } => {
                rfs::symlinkat(target.as_slice(), parent, &name)
                    .map_err(|e| fruix_core::Error::io("create symlink", &display, e.into()))?;
                rfs::utimensat(parent, &name, &store_times(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| fruix_core::Error::io("set time of", &display, e.into()))?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        while let Some((fd, path, _)) = self.dirs.pop() {
            finish_dir(&fd, &path)?;
        }
        Ok(())
    }
}

fn finish_dir(fd: &OwnedFd, path: &Path) -> Result<()> {
    finish_file(fd.as_fd(), 0o555, path)
}

/// Reads `name` in the open directory `dir`: a regular file, never followed,
/// at most `cap` bytes.
pub fn read_small_at(dir: BorrowedFd<'_>, name: &str, display: &Path, cap: u64) -> Result<Vec<u8>> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fruix_core::Error::io("open", display, e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| fruix_core::Error::io("inspect", display, e.into()))?;
    if stat::file_type(&st) != rfs::FileType::RegularFile {
        return Err(fruix_core::Error::UnsafePath {
            path: display.to_path_buf(),
            message: "is not a regular file".into(),
        }
        .into());
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .with_path("read", display)?;
    if bytes.len() as u64 > cap {
        return Err(fruix_core::Error::UnsafePath {
            path: display.to_path_buf(),
            message: format!("is larger than {cap} bytes"),
        }
        .into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an object from manifest `lines` (links and directories only).
    fn build(lines: &str) -> (tempfile::TempDir, Result<TempObject>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let manifest = dir.path().join("tree.mtree");
        std::fs::write(&manifest, format!("{MANIFEST_HEADER}{lines}")).unwrap();
        let name = format!("{}-fruix-native-x-1-local", "0".repeat(40));
        let built = build_object(&store, &name, &manifest, ("m", "m"), "");
        (dir, built)
    }

    #[test]
    fn an_entry_is_created_only_in_the_directory_its_path_names() {
        let (_dir, built) = build(
            ". type=dir mode=0555\n./a type=dir mode=0555\n./a/x type=link link=t\n\
             ./b type=dir mode=0555\n./b/y type=link link=t\n",
        );
        let temp = built.unwrap();
        assert!(temp.path().join("b/y").symlink_metadata().is_ok());
        for lines in [
            // ./b never declared: ./b/y is no entry of ./a.
            ". type=dir mode=0555\n./a type=dir mode=0555\n./a/x type=link link=t\n./b/y type=link link=t\n",
            ". type=dir mode=0555\n./a type=dir mode=0555\n./a/b/c type=link link=t\n",
        ] {
            let (_dir, built) = build(lines);
            let e = built.map(|_| ()).unwrap_err();
            assert!(
                matches!(e, crate::Error::Core(fruix_core::Error::UnsafePath { .. })),
                "{lines}: {e:?}"
            );
        }
    }
}
