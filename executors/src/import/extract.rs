//! Extraction of a guest's tar stream into a staging directory, as untrusted
//! input: the rules are in the [`import`](super) module docs, the caps in
//! [`limits`](super::limits).
//!
//! Extended headers (pax `x`, GNU long name and long link) are read here,
//! each up to `import_max_header_bytes`, rather than by the tar crate, which
//! would read any size into memory; pax records are read by their length
//! (module `pax`), so a name may hold a newline. Everything extracted is indexed in a
//! tree of names (module `tree`), so an entry costs one map probe per
//! component of its path whatever came before it: extraction is linear in
//! the size of the archive, and a directory declared again and again costs
//! each time what declaring it once does.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use fruix_core::error::IoContext;
use fruix_core::manifest::SPECIAL_BITS;
use fruix_core::{Error, Result};

use super::limits::{excerpt, Cap, ImportLimits};
use super::tree::{Kind, Node, Tree};
use paths::{check_top, normalize, strip_nul, unsafe_entry};

/// The most of a guest's permission bits ever applied on the host: group and
/// world write are stripped. (Setuid, setgid and sticky bits are recorded
/// apart and never applied.)
pub const HOST_MODE_MASK: u32 = 0o755;

/// Owner bits every extracted directory keeps, so that extraction, placing
/// and removal never meet a directory they cannot write to.
const DIR_OWNER_BITS: u32 = 0o700;

/// The permission bits a guest's `mode` gets on the host (see
/// [`HOST_MODE_MASK`]): at most `0755` for directories and executables,
/// `0644` for other files.
pub fn host_mode(is_dir: bool, mode: u32) -> u32 {
    let mode = mode & HOST_MODE_MASK;
    if is_dir {
        mode | DIR_OWNER_BITS
    } else {
        mode
    }
}

/// The archive stream, counted; reading past `max` bytes fails.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than the cap may be read: that is how going over it shows.
        let room = (self.max - self.read.get().min(self.max)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read.set(self.read.get() + n as u64);
        if self.read.get() > self.max {
            return Err(io::Error::other("the import's byte cap is reached"));
        }
        Ok(n)
    }
}

/// Extended headers read for the entry that follows them.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

/// How many entries may carry setuid, setgid or sticky bits: a FreeBSD
/// world has a few dozen. Each is remembered by path until the import ends,
/// so a guest sending millions of them would hold the host's memory.
pub const MAX_SPECIAL_ENTRIES: usize = 4096;

/// Extracts a tar stream under the rules in the module docs.
struct Extractor {
    root: PathBuf,
    /// `root`, open: every entry is made relative to it (`mkdirat`,
    /// `openat`, `symlinkat`, `linkat`), so an entry's path counts against
    /// `PATH_MAX` alone, not with the staging directory's path before it
    /// (an entry within `import_max_path_bytes` is never "File name too
    /// long"). The tree of names keeps every directory on the way one that
    /// this extraction made: no component is a symlink.
    root_fd: std::os::fd::OwnedFd,
    limits: ImportLimits,
    tree: Tree,
    /// Entries counted against `import_max_entries`.
    entries: u64,
    /// Bytes read from the stream, shared with its [`Counted`] reader.
    read: Rc<Cell<u64>>,
    special: BTreeMap<PathBuf, u32>,
    buffer: Vec<u8>,
}

/// Extracts the tar stream `reader` into `root` (an existing empty
/// directory) within `limits`, and returns the special bits it neutralised.
pub fn extract(
    reader: impl Read,
    root: &Path,
    limits: &ImportLimits,
) -> Result<BTreeMap<PathBuf, u32>> {
    let read = Rc::new(Cell::new(0));
    let root_fd = rustix::fs::open(
        root,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
    .with_path("open", root)?;
    let mut x = Extractor {
        root: root.to_path_buf(),
        root_fd,
        limits: *limits,
        tree: Tree::default(),
        entries: 0,
        read: read.clone(),
        special: BTreeMap::new(),
        buffer: vec![0; 256 << 10],
    };
    let mut archive = tar::Archive::new(Counted {
        inner: reader,
        read,
        max: limits.max_bytes,
    });
    let entries = archive.entries().map_err(|e| x.archive_error(e))?;
    let mut extensions = Extensions::default();
    for entry in entries.raw(true) {
        let mut entry = entry.map_err(|e| x.archive_error(e))?;
        x.count()?;
        x.entry(&mut entry, &mut extensions)?;
    }
    if !extensions.is_empty() {
        return Err(bad_archive(
            root,
            "it ends with an extended header that describes no entry",
        ));
    }
    // The stream is read to its end (tar pads its last record with zeros),
    // within the byte cap: the sender's last bytes then always find a
    // reader, and the end of the stream, not a closed pipe, ends the import.
    let mut rest = archive.into_inner();
    x.each_chunk(&mut rest, |chunk| {
        if chunk.iter().any(|b| *b != 0) {
            return Err(bad_archive(root, "data after the end of the archive"));
        }
        Ok(())
    })?;
    Ok(x.special)
}

fn bad_archive(root: &Path, what: impl std::fmt::Display) -> Error {
    Error::system(format!(
        "the guest's archive of its result root is unreadable ({what}) while extracting into {}",
        fruix_core::escape::path(root)
    ))
}

impl Extractor {
    /// Counts one entry against `import_max_entries`.
    fn count(&mut self) -> Result<()> {
        self.entries += 1;
        let max = self.limits.max_entries;
        self.limits.check(Cap::Entries, self.entries, || {
            format!(
                "more than {max} entries (archive entries and the directories created for them)"
            )
        })
    }

    /// The error for a failed read of the archive: going over the byte cap,
    /// or an unreadable archive.
    /// Reads `from` to its end through the buffer, handing `each` every
    /// chunk read; a read error is the archive's ([`Self::archive_error`]).
    fn each_chunk(
        &mut self,
        from: &mut impl Read,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        loop {
            let n = match from.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.archive_error(e)),
            };
            each(&self.buffer[..n])?;
        }
    }

    fn archive_error(&self, e: io::Error) -> Error {
        let max = self.limits.max_bytes;
        if self.read.get() > max {
            return self.limits.exceeded(
                Cap::Bytes,
                format!("the tar stream is longer than {max} bytes"),
            );
        }
        bad_archive(&self.root, e)
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        extensions: &mut Extensions,
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                return self.extension(entry, &mut extensions.long_name, "GNU long name")
            }
            tar::EntryType::GNULongLink => {
                return self.extension(entry, &mut extensions.long_link, "GNU long link name")
            }
            tar::EntryType::XHeader => {
                return self.extension(entry, &mut extensions.pax, "pax extended header")
            }
            // Global pax headers set defaults that nothing here uses.
            tar::EntryType::XGlobalHeader => return Ok(()),
            _ => {}
        }
        let (raw, link) = self.names(entry, std::mem::take(extensions))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| bad_archive(&self.root, e))?;
        self.check_path(&raw)?;
        let Some(path) = normalize(&raw)? else {
            return match kind {
                tar::EntryType::Directory => Ok(()),
                _ => Err(unsafe_entry(&raw, "the root itself is not a directory")),
            };
        };
        check_top(&raw, &path, kind)?;
        match kind {
            tar::EntryType::Directory => self.dir(&raw, &path, mode),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(&raw, &path, mode, entry)
            }
            tar::EntryType::Symlink => {
                let target = self.link_target(&raw, link, "symlink")?;
                self.symlink(&raw, &path, &target)
            }
            tar::EntryType::Link => {
                let target = self.link_target(&raw, link, "hard link")?;
                self.hard_link(&raw, &path, &target)
            }
            tar::EntryType::Fifo => Err(unsafe_entry(&raw, "a FIFO is not allowed in a result root")),
            tar::EntryType::Char | tar::EntryType::Block => Err(unsafe_entry(
                &raw,
                "a device node is not allowed in a result root",
            )),
            other => Err(unsafe_entry(
                &raw,
                format!("entry type {other:?} is not allowed (only directories, regular files, symlinks and hard links)"),
            )),
        }
    }

    /// Reads an extended header into `slot`, up to `import_max_header_bytes`.
    fn extension<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        slot: &mut Option<Vec<u8>>,
        what: &str,
    ) -> Result<()> {
        if slot.is_some() {
            return Err(bad_archive(
                &self.root,
                format!("two {what}s describe one entry"),
            ));
        }
        let size = entry.size();
        self.limits.check(Cap::HeaderBytes, size, || {
            format!("a {what} of {size} bytes")
        })?;
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| self.archive_error(e))?;
        *slot = Some(data);
        Ok(())
    }

    /// The entry's path and link name: from a GNU long name or link, else
    /// from the pax header, else from the tar header (the tar crate's order).
    /// A pax `size` must agree with the header's, which gives the data's
    /// length here.
    fn names<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        extensions: Extensions,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let header = entry.header();
        let (mut path, mut link) = (None, None);
        for record in pax::records(extensions.pax.as_deref().unwrap_or_default()) {
            let pax::Record { key, value } = record.map_err(|e| bad_archive(&self.root, e))?;
            match key {
                b"path" => path = Some(value.to_vec()),
                b"linkpath" => link = Some(value.to_vec()),
                b"size" if decimal(value) != Some(entry.size()) => {
                    return Err(unsafe_entry(
                        &header.path_bytes(),
                        format!(
                            "its pax size {} differs from its header's size {}",
                            excerpt(value),
                            entry.size()
                        ),
                    ))
                }
                _ => {}
            }
        }
        let path = extensions
            .long_name
            .map(strip_nul)
            .or(path)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = extensions
            .long_link
            .map(strip_nul)
            .or(link)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        Ok((path, link))
    }

    /// The target of link entry `raw`, checked against `import_max_link_bytes`.
    fn link_target(&self, raw: &[u8], link: Option<Vec<u8>>, what: &str) -> Result<Vec<u8>> {
        let link = link.ok_or_else(|| unsafe_entry(raw, format!("{what} without a target")))?;
        self.limits.check(Cap::LinkBytes, link.len() as u64, || {
            format!(
                "entry {} has a link target of {} bytes",
                excerpt(raw),
                link.len()
            )
        })?;
        Ok(link)
    }

    /// Checks the path's length and each of its components' against the caps.
    fn check_path(&self, raw: &[u8]) -> Result<()> {
        self.limits.check(Cap::PathBytes, raw.len() as u64, || {
            format!("entry {} has a path of {} bytes", excerpt(raw), raw.len())
        })?;
        let longest = raw.split(|b| *b == b'/').map(<[u8]>::len).max();
        let longest = longest.unwrap_or_default() as u64;
        self.limits.check(Cap::NameBytes, longest, || {
            format!(
                "entry {} has a name component of {longest} bytes",
                excerpt(raw)
            )
        })
    }

    /// The tree node of `path`'s parent, creating the directories the
    /// archive did not declare; refuses a parent that is not a directory the
    /// extraction created (a symlink, say).
    fn parent_of(&mut self, raw: &[u8], path: &Path) -> Result<u64> {
        let mut node = Tree::ROOT;
        let mut prefix = PathBuf::new();
        for name in path.parent().unwrap_or(Path::new("")).iter() {
            prefix.push(name);
            node = match self.tree.get(node, name.as_bytes()).copied() {
                Some(Node {
                    id,
                    kind: Kind::Dir,
                    ..
                }) => id,
                Some(Node { kind, .. }) => {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "{} is a {} in the archive but is used as a directory",
                            prefix.display(),
                            kind.noun()
                        ),
                    ))
                }
                None => {
                    self.count()?;
                    let mode = self.make_dir(&prefix, 0o755)?;
                    self.tree.insert(node, name.as_bytes(), Kind::Dir, mode)
                }
            };
        }
        Ok(node)
    }

    /// Records `path` as a new entry of `kind`; refuses a path seen before.
    fn claim(&mut self, raw: &[u8], path: &Path, kind: Kind) -> Result<()> {
        let parent = self.parent_of(raw, path)?;
        let name = file_name(path);
        if self.tree.get(parent, name).is_some() {
            return Err(unsafe_entry(raw, "appears twice in the archive"));
        }
        self.tree.insert(parent, name, kind, 0);
        Ok(())
    }

    /// Records the special bits of `path` (its last declaration wins); at
    /// most [`MAX_SPECIAL_ENTRIES`] paths carry some.
    fn note_special(&mut self, raw: &[u8], path: &Path, mode: u32) -> Result<()> {
        match mode & SPECIAL_BITS {
            0 => {
                self.special.remove(path);
            }
            bits => {
                if self.special.len() == MAX_SPECIAL_ENTRIES && !self.special.contains_key(path) {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "more than {MAX_SPECIAL_ENTRIES} entries with setuid, setgid or sticky bits (a FreeBSD world has a few dozen)"
                        ),
                    ));
                }
                self.special.insert(path.to_path_buf(), bits);
            }
        }
        Ok(())
    }

    /// Creates directory `path` with the host mode of `mode`; returns that.
    fn make_dir(&mut self, path: &Path, mode: u32) -> Result<u32> {
        rustix::fs::mkdirat(&self.root_fd, path, DIR_OWNER_BITS.into())
            .map_err(io::Error::from)
            .with_path("create directory", self.root.join(path))?;
        set_dir_mode(&self.root_fd, &self.root, path, host_mode(true, mode))
    }

    fn dir(&mut self, raw: &[u8], path: &Path, mode: u32) -> Result<()> {
        self.note_special(raw, path, mode)?;
        let parent = self.parent_of(raw, path)?;
        let name = file_name(path);
        let wanted = host_mode(true, mode);
        match self.tree.get(parent, name) {
            // Declared before, or created for an earlier entry: only the mode
            // may be new.
            Some(node) if node.kind == Kind::Dir => {
                if node.mode != wanted {
                    node.mode = set_dir_mode(&self.root_fd, &self.root, path, wanted)?;
                }
                Ok(())
            }
            Some(_) => Err(unsafe_entry(raw, "appears twice in the archive")),
            None => {
                let mode = self.make_dir(path, mode)?;
                self.tree.insert(parent, name, Kind::Dir, mode);
                Ok(())
            }
        }
    }

    fn file(&mut self, raw: &[u8], path: &Path, mode: u32, data: &mut impl Read) -> Result<()> {
        self.claim(raw, path, Kind::File)?;
        self.note_special(raw, path, mode)?;
        let full = self.root.join(path);
        use rustix::fs::OFlags;
        let mut file = rustix::fs::openat(
            &self.root_fd,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            0o600.into(),
        )
        .map(fs::File::from)
        .map_err(io::Error::from)
        .with_path("create", &full)?;
        self.each_chunk(data, |chunk| {
            file.write_all(chunk).with_path("write", &full)
        })?;
        file.set_permissions(fs::Permissions::from_mode(host_mode(false, mode)))
            .with_path("set mode of", &full)
    }

    fn symlink(&mut self, raw: &[u8], path: &Path, target: &[u8]) -> Result<()> {
        if target.is_empty() {
            return Err(unsafe_entry(raw, "symlink with an empty target"));
        }
        if target.contains(&0) {
            return Err(unsafe_entry(raw, "a NUL byte in a symlink's target"));
        }
        self.claim(raw, path, Kind::Symlink)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &self.root_fd, path)
            .map_err(io::Error::from)
            .with_path("create symlink", self.root.join(path))
    }

    fn hard_link(&mut self, raw: &[u8], path: &Path, target: &[u8]) -> Result<()> {
        let target =
            normalize(target)?.ok_or_else(|| unsafe_entry(raw, "hard link to the root"))?;
        if self.tree.kind_of(&target) != Some(Kind::File) {
            return Err(unsafe_entry(
                raw,
                format!(
                    "hard link to {}, which is not a regular file extracted before it",
                    fruix_core::escape::path(&target)
                ),
            ));
        }
        self.claim(raw, path, Kind::File)?;
        // The bits are the shared file's: the guest records every name of
        // it with them (chpass, chfn, chsh... are one setuid file).
        let bits = self.special.get(&target).copied().unwrap_or(0);
        self.note_special(raw, path, bits)?;
        let at = &self.root_fd;
        rustix::fs::linkat(at, &target, at, path, rustix::fs::AtFlags::empty())
            .map_err(io::Error::from)
            .with_path("create hard link", self.root.join(path))
    }
}

/// Sets the permission bits of directory `path`, beneath `root` (open as
/// `at`), to `mode`; returns `mode`.
fn set_dir_mode(at: &std::os::fd::OwnedFd, root: &Path, path: &Path, mode: u32) -> Result<u32> {
    rustix::fs::chmodat(at, path, mode.into(), rustix::fs::AtFlags::empty())
        .map_err(io::Error::from)
        .with_path("set mode of", root.join(path))?;
    Ok(mode)
}

/// The number `value` writes in decimal, if it is one.
fn decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The last component of a normalized, non-empty path.
fn file_name(path: &Path) -> &[u8] {
    path.file_name().map(OsStr::as_bytes).unwrap_or_default()
}

mod paths;
mod pax;
#[cfg(test)]
mod tests;
