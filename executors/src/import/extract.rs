//! Extraction of a guest's tar stream into a staging directory, as untrusted
//! input: the rules are in the [`import`](super) module docs, the caps in
//! [`limits`](super::limits).
//!
//! Extended headers (pax `x`, GNU long name and long link) are read here,
//! each up to `import_max_header_bytes`, rather than by the tar crate, which
//! would read any size into memory. Everything extracted is indexed in a
//! tree of names, so an entry costs one map probe per component of its
//! path whatever came before it: extraction is linear in the size of the
//! archive, and a directory declared again and again costs each time what
//! declaring it once does.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use fruix_core::error::IoContext;
use fruix_core::manifest::SPECIAL_BITS;
use fruix_core::{Error, Result};

use super::limits::{excerpt, Cap, ImportLimits};

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

/// What an archive entry was extracted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symlink",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    id: u64,
    kind: Kind,
    /// A directory's permission bits on disk (0 for other kinds).
    mode: u32,
}

/// Everything extracted, as a tree of names. Each node is keyed by its
/// parent's id and its own name, so a path is looked up one component at a
/// time and every name is held once, however deep.
#[derive(Default)]
struct Tree {
    /// Key: the parent's id (8 bytes, little-endian), then the name.
    nodes: HashMap<Box<[u8]>, Node>,
    last_id: u64,
    /// Scratch space for lookup keys.
    key: Vec<u8>,
}

impl Tree {
    /// The staging root's id.
    const ROOT: u64 = 0;

    fn get(&mut self, parent: u64, name: &[u8]) -> Option<&mut Node> {
        self.key.clear();
        self.key.extend_from_slice(&parent.to_le_bytes());
        self.key.extend_from_slice(name);
        self.nodes.get_mut(self.key.as_slice())
    }

    /// Adds `name` under `parent` (which must not hold it yet); returns its id.
    fn insert(&mut self, parent: u64, name: &[u8], kind: Kind, mode: u32) -> u64 {
        self.last_id += 1;
        let key = [&parent.to_le_bytes()[..], name]
            .concat()
            .into_boxed_slice();
        let node = Node {
            id: self.last_id,
            kind,
            mode,
        };
        self.nodes.insert(key, node);
        self.last_id
    }

    /// What normalized `path` was extracted as, looked up through
    /// directories only (never through a symlink).
    fn kind_of(&mut self, path: &Path) -> Option<Kind> {
        let (mut id, mut kind) = (Tree::ROOT, Kind::Dir);
        for name in path.iter() {
            if kind != Kind::Dir {
                return None;
            }
            let node = self.get(id, name.as_bytes())?;
            (id, kind) = (node.id, node.kind);
        }
        Some(kind)
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

/// Extracts a tar stream under the rules in the module docs.
struct Extractor {
    root: PathBuf,
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
    let mut x = Extractor {
        root: root.to_path_buf(),
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
    Ok(x.special)
}

fn bad_archive(root: &Path, what: impl std::fmt::Display) -> Error {
    Error::system(format!(
        "the guest's archive of its result root is unreadable ({what}) while extracting into {}",
        root.display()
    ))
}

fn unsafe_entry(path: &[u8], message: impl Into<String>) -> Error {
    Error::UnsafePath {
        path: PathBuf::from(OsStr::from_bytes(path)),
        message: format!("guest archive entry refused: {}", message.into()),
    }
}

/// A relative, normal path from archive bytes: `./` prefixes dropped,
/// absolute paths, `..` and NUL bytes refused. `None` for the root itself.
fn normalize(raw: &[u8]) -> Result<Option<PathBuf>> {
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
fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
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
        for field in tar::PaxExtensions::new(extensions.pax.as_deref().unwrap_or_default()) {
            let field = field.map_err(|e| bad_archive(&self.root, e))?;
            match field.key_bytes() {
                b"path" => path = Some(field.value_bytes().to_vec()),
                b"linkpath" => link = Some(field.value_bytes().to_vec()),
                b"size"
                    if field.value().ok().and_then(|v| v.parse().ok()) != Some(entry.size()) =>
                {
                    return Err(unsafe_entry(
                        &header.path_bytes(),
                        format!(
                            "its pax size {} differs from its header's size {}",
                            excerpt(field.value_bytes()),
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

    /// Records the special bits of `path` (its last declaration wins).
    fn note_special(&mut self, path: &Path, mode: u32) {
        match mode & SPECIAL_BITS {
            0 => self.special.remove(path),
            bits => self.special.insert(path.to_path_buf(), bits),
        };
    }

    /// Creates directory `path` with the host mode of `mode`; returns that.
    fn make_dir(&mut self, path: &Path, mode: u32) -> Result<u32> {
        let full = self.root.join(path);
        fs::DirBuilder::new()
            .mode(DIR_OWNER_BITS)
            .create(&full)
            .with_path("create directory", &full)?;
        set_dir_mode(&full, host_mode(true, mode))
    }

    fn dir(&mut self, raw: &[u8], path: &Path, mode: u32) -> Result<()> {
        self.note_special(path, mode);
        let parent = self.parent_of(raw, path)?;
        let name = file_name(path);
        let wanted = host_mode(true, mode);
        match self.tree.get(parent, name) {
            // Declared before, or created for an earlier entry: only the mode
            // may be new.
            Some(node) if node.kind == Kind::Dir => {
                if node.mode != wanted {
                    node.mode = set_dir_mode(&self.root.join(path), wanted)?;
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
        self.note_special(path, mode);
        let full = self.root.join(path);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .with_path("create", &full)?;
        loop {
            let n = match data.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.archive_error(e)),
            };
            file.write_all(&self.buffer[..n])
                .with_path("write", &full)?;
        }
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
        let full = self.root.join(path);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &full)
            .with_path("create symlink", &full)
    }

    fn hard_link(&mut self, raw: &[u8], path: &Path, target: &[u8]) -> Result<()> {
        let target =
            normalize(target)?.ok_or_else(|| unsafe_entry(raw, "hard link to the root"))?;
        if self.tree.kind_of(&target) != Some(Kind::File) {
            return Err(unsafe_entry(
                raw,
                format!(
                    "hard link to {}, which is not a regular file extracted before it",
                    target.display()
                ),
            ));
        }
        self.claim(raw, path, Kind::File)?;
        let (from, to) = (self.root.join(&target), self.root.join(path));
        fs::hard_link(&from, &to).with_path("create hard link", &to)
    }
}

/// Sets directory `full`'s permission bits to `mode`; returns `mode`.
fn set_dir_mode(full: &Path, mode: u32) -> Result<u32> {
    fs::set_permissions(full, fs::Permissions::from_mode(mode)).with_path("set mode of", full)?;
    Ok(mode)
}

/// The last component of a normalized, non-empty path.
fn file_name(path: &Path) -> &[u8] {
    path.file_name().map(OsStr::as_bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// One raw tar entry: name, type, mode, content, link target.
    type RawEntry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

    /// A tar archive built entry by entry, hostile ones included.
    fn archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // Write the name bytes directly: set_path refuses `..` and absolute paths.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A GNU header of `kind`, `mode` and `size`, for the builder's
    /// `append_data` and `append_link` (which write long names as GNU long
    /// name and long link entries).
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h
    }

    use tar::EntryType as T;

    fn run(entries: &[RawEntry<'_>]) -> (tempfile::TempDir, Result<BTreeMap<PathBuf, u32>>) {
        run_bytes(&archive(entries)[..], &ImportLimits::default())
    }

    /// Extracts `tar` into `staging` in a new directory, within `limits`.
    fn run_bytes(
        tar: impl Read,
        limits: &ImportLimits,
    ) -> (tempfile::TempDir, Result<BTreeMap<PathBuf, u32>>) {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        fs::DirBuilder::new().mode(0o700).create(&staging).unwrap();
        let result = extract(tar, &staging, limits);
        (dir, result)
    }

    fn mode_of(path: &Path) -> u32 {
        path.symlink_metadata().unwrap().mode() & 0o7777
    }

    #[test]
    fn a_normal_tree_is_extracted_with_modes_links_and_symlinks() {
        let (dir, result) = run(&[
            ("./", T::Directory, 0o755, b"", None),
            ("./artifacts/world/bin/", T::Directory, 0o555, b"", None),
            ("./artifacts/world/bin/sh", T::Regular, 0o555, b"#!", None),
            (
                "./artifacts/world/bin/[",
                T::Symlink,
                0o777,
                b"",
                Some("test"),
            ),
            (
                "./artifacts/world/etc/localtime",
                T::Symlink,
                0o777,
                b"",
                Some("/usr/share/zoneinfo/UTC"),
            ),
            (
                "./artifacts/world/bin/rsh",
                T::Link,
                0o555,
                b"",
                Some("./artifacts/world/bin/sh"),
            ),
        ]);
        let special = result.unwrap();
        assert!(special.is_empty());
        let root = dir.path().join("staging/artifacts/world");
        assert_eq!(fs::read(root.join("bin/sh")).unwrap(), b"#!");
        assert_eq!(mode_of(&root.join("bin/sh")), 0o555);
        assert_eq!(
            fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        assert_eq!(
            root.join("bin/rsh").metadata().unwrap().ino(),
            root.join("bin/sh").metadata().unwrap().ino()
        );
    }

    #[test]
    fn setuid_bits_are_neutralised_and_recorded() {
        let (dir, result) = run(&[
            ("usr/bin/su", T::Regular, 0o4555, b"x", None),
            ("tmp/", T::Directory, 0o1777, b"", None),
        ]);
        let special = result.unwrap();
        assert_eq!(special.get(Path::new("usr/bin/su")), Some(&0o4000));
        assert_eq!(special.get(Path::new("tmp")), Some(&0o1000));
        assert_eq!(mode_of(&dir.path().join("staging/usr/bin/su")), 0o555);
        assert_eq!(mode_of(&dir.path().join("staging/tmp")), 0o755);
    }

    #[test]
    fn guest_modes_never_give_group_or_world_write_on_the_host() {
        let (dir, result) = run(&[
            ("./", T::Directory, 0o777, b"", None),
            ("open/", T::Directory, 0o777, b"", None),
            ("open/all", T::Regular, 0o777, b"x", None),
            ("open/rw", T::Regular, 0o666, b"x", None),
            ("open/group", T::Regular, 0o664, b"x", None),
            ("open/private", T::Regular, 0o640, b"x", None),
            ("open/setuid", T::Regular, 0o4777, b"x", None),
            ("closed/", T::Directory, 0o555, b"", None),
            ("closed/mail/", T::Directory, 0o775, b"", None),
            ("implicit/below/file", T::Regular, 0o644, b"x", None),
        ]);
        let special = result.unwrap();
        let staging = dir.path().join("staging");
        assert_eq!(mode_of(&staging), 0o700, "the staging root keeps its mode");
        for (path, mode) in [
            ("open", 0o755),
            ("open/all", 0o755),
            ("open/rw", 0o644),
            ("open/group", 0o644),
            ("open/private", 0o640),
            ("open/setuid", 0o755),
            ("closed", 0o755),
            ("closed/mail", 0o755),
            ("implicit", 0o755),
            ("implicit/below", 0o755),
            ("implicit/below/file", 0o644),
        ] {
            assert_eq!(mode_of(&staging.join(path)), mode, "{path}");
        }
        assert_eq!(special.get(Path::new("open/setuid")), Some(&0o4000));
    }

    #[test]
    fn host_modes_strip_group_and_world_write() {
        assert_eq!(host_mode(false, 0o666), 0o644);
        assert_eq!(host_mode(false, 0o777), 0o755);
        assert_eq!(host_mode(false, 0o4777), 0o755);
        assert_eq!(host_mode(false, 0o444), 0o444);
        assert_eq!(host_mode(true, 0o777), 0o755);
        assert_eq!(host_mode(true, 0o1777), 0o755);
        assert_eq!(host_mode(true, 0o500), 0o700);
    }

    fn refused(entries: &[RawEntry<'_>], expected: &str) {
        let (dir, result) = run(entries);
        let e = result.unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
        nothing_outside_staging(&dir);
    }

    fn nothing_outside_staging(dir: &tempfile::TempDir) {
        let outside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(outside, ["staging"], "nothing is written next to staging");
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_escapes() {
        refused(&[("../escaped", T::Regular, 0o644, b"x", None)], "`..`");
        refused(
            &[("a/../../escaped", T::Regular, 0o644, b"x", None)],
            "`..`",
        );
        refused(
            &[("/tmp/escaped-fruix-test", T::Regular, 0o644, b"x", None)],
            "absolute",
        );
        refused(&[("fifo", T::Fifo, 0o644, b"", None)], "FIFO");
        refused(&[("null", T::Char, 0o644, b"", None)], "device");
        refused(
            &[
                ("etc", T::Symlink, 0o777, b"", Some("..")),
                ("etc/escaped", T::Regular, 0o644, b"x", None),
            ],
            "etc is a symlink in the archive but is used as a directory",
        );
        refused(
            &[
                ("f", T::Regular, 0o644, b"x", None),
                ("f", T::Regular, 0o644, b"y", None),
            ],
            "twice",
        );
        refused(
            &[
                ("d/", T::Directory, 0o755, b"", None),
                ("d", T::Regular, 0o644, b"y", None),
            ],
            "twice",
        );
        refused(
            &[
                ("f", T::Regular, 0o644, b"x", None),
                ("f/", T::Directory, 0o755, b"", None),
            ],
            "twice",
        );
        refused(&[("l", T::Link, 0o644, b"", Some("../escaped"))], "`..`");
        refused(
            &[("l", T::Link, 0o644, b"", Some("missing"))],
            "not a regular file extracted before",
        );
        refused(
            &[
                ("s", T::Symlink, 0o777, b"", Some("/etc")),
                ("l", T::Link, 0o644, b"", Some("s/passwd")),
            ],
            "not a regular file extracted before",
        );
    }

    #[test]
    fn symlink_to_etc_passwd_used_as_a_directory_never_touches_it() {
        let before = fs::read("/etc/passwd").unwrap();
        refused(
            &[
                ("p", T::Symlink, 0o777, b"", Some("/etc/passwd")),
                ("p/x", T::Regular, 0o644, b"x", None),
            ],
            "used as a directory",
        );
        assert_eq!(fs::read("/etc/passwd").unwrap(), before);
    }

    /// Asserts that `result` went over `cap` of `limits`, typed.
    fn over(result: Result<BTreeMap<PathBuf, u32>>, cap: Cap, limits: &ImportLimits) -> String {
        let e = result.unwrap_err();
        match &e {
            Error::LimitExceeded { key, limit, .. } => {
                assert_eq!((*key, *limit), (cap.key(), limits.get(cap)), "{e}");
            }
            other => panic!("expected the {} cap, got {other:?}", cap.key()),
        }
        let text = e.to_string();
        assert!(
            text.contains(&format!("over the cap {} = {}", cap.key(), limits.get(cap))),
            "{text}"
        );
        text
    }

    /// A path of `len` bytes in components of 200 bytes.
    fn long_path(len: usize) -> String {
        let mut path = String::new();
        while path.len() < len {
            let left = len - path.len();
            if left > 201 {
                path.push_str(&"d".repeat(200));
                path.push('/');
            } else {
                path.push_str(&"f".repeat(left));
            }
        }
        path
    }

    #[test]
    fn an_over_long_name_is_refused_by_the_path_cap() {
        let limits = ImportLimits::default();
        let path = long_path(4096);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(T::Regular, 0o644, 1), &path, &b"x"[..])
            .unwrap();
        let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        let text = over(result, Cap::PathBytes, &limits);
        assert!(text.contains("has a path of 4096 bytes"), "{text}");
        assert!(text.len() < 600, "the name is not printed whole: {text}");
        nothing_outside_staging(&dir);

        // A path just under the cap is fine.
        let path = long_path(4000);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(T::Regular, 0o644, 1), &path, &b"x"[..])
            .unwrap();
        let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        result.unwrap();
        assert_eq!(
            fs::read(dir.path().join("staging").join(&path)).unwrap(),
            b"x"
        );
    }

    #[test]
    fn a_pax_path_counts_against_the_same_caps() {
        let limits = ImportLimits::default();
        let mut b = tar::Builder::new(Vec::new());
        let path = long_path(4500);
        b.append_pax_extensions([("path", path.as_bytes())])
            .unwrap();
        b.append_data(&mut header(T::Regular, 0o644, 1), "short", &b"x"[..])
            .unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        over(result, Cap::PathBytes, &limits);

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", b"from/pax".as_slice())])
            .unwrap();
        b.append_data(&mut header(T::Regular, 0o644, 1), "short", &b"x"[..])
            .unwrap();
        let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        result.unwrap();
        assert!(dir.path().join("staging/from/pax").is_file());
        assert!(!dir.path().join("staging/short").exists());
    }

    #[test]
    fn an_over_long_component_is_refused_by_the_name_cap() {
        let limits = ImportLimits::default();
        let path = format!("dir/{}", "n".repeat(256));
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(T::Regular, 0o644, 1), &path, &b"x"[..])
            .unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        let text = over(result, Cap::NameBytes, &limits);
        assert!(text.contains("name component of 256 bytes"), "{text}");
    }

    #[test]
    fn an_over_long_link_target_is_refused_by_the_link_cap() {
        let limits = ImportLimits::default();
        let target = long_path(4096);
        let mut b = tar::Builder::new(Vec::new());
        b.append_link(&mut header(T::Symlink, 0o777, 0), "l", &target)
            .unwrap();
        let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        let text = over(result, Cap::LinkBytes, &limits);
        assert!(text.contains("link target of 4096 bytes"), "{text}");
        assert!(!dir.path().join("staging/l").exists());

        let target = long_path(4095);
        let mut b = tar::Builder::new(Vec::new());
        b.append_link(&mut header(T::Symlink, 0o777, 0), "l", &target)
            .unwrap();
        let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        result.unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("staging/l")).unwrap(),
            Path::new(&target)
        );
    }

    #[test]
    fn an_extended_header_over_its_cap_is_refused_before_it_is_read() {
        let limits = ImportLimits {
            max_header_bytes: 4096,
            ..ImportLimits::default()
        };
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(T::GNULongName, 0o644, 1 << 20);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        b.append(&h, io::repeat(b'a').take(1 << 20)).unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
        let text = over(result, Cap::HeaderBytes, &limits);
        assert!(text.contains("a GNU long name of 1048576 bytes"), "{text}");
    }

    #[test]
    fn malformed_extended_headers_are_refused() {
        // A pax size that the header does not agree with.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", b"2".as_slice())])
            .unwrap();
        b.append_data(&mut header(T::Regular, 0o644, 1), "f", &b"x"[..])
            .unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &ImportLimits::default());
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("pax size \"2\" differs from its header's size 1"),
            "{e}"
        );

        // A NUL byte inside a name.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", b"a\0b".as_slice())])
            .unwrap();
        b.append_data(&mut header(T::Regular, 0o644, 1), "f", &b"x"[..])
            .unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &ImportLimits::default());
        let e = result.unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");

        // An extended header with nothing after it.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", b"a".as_slice())])
            .unwrap();
        let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &ImportLimits::default());
        let e = result.unwrap_err().to_string();
        assert!(e.contains("describes no entry"), "{e}");
    }

    #[test]
    fn too_many_entries_are_refused_by_the_entry_cap() {
        let limits = ImportLimits {
            max_entries: 10,
            ..ImportLimits::default()
        };
        let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let entries: Vec<RawEntry<'_>> = names
            .iter()
            .map(|n| (n.as_str(), T::Regular, 0o644, &b"x"[..], None))
            .collect();
        let (_dir, result) = run_bytes(&archive(&entries)[..], &limits);
        result.unwrap();
        let mut eleven = entries.clone();
        eleven.push(("one-more", T::Regular, 0o644, b"x", None));
        let (_dir, result) = run_bytes(&archive(&eleven)[..], &limits);
        let text = over(result, Cap::Entries, &limits);
        assert!(text.contains("more than 10 entries"), "{text}");

        // Directories created for an entry the archive did not declare count too.
        let (dir, result) = run_bytes(
            &archive(&[("a/b/c/d/e/f/g/h/i/j/k", T::Regular, 0o644, b"x", None)])[..],
            &limits,
        );
        over(result, Cap::Entries, &limits);
        assert!(!dir.path().join("staging/a/b/c/d/e/f/g/h/i/j").exists());
    }

    #[test]
    fn too_many_bytes_are_refused_by_the_byte_cap_and_no_more_is_written() {
        let limits = ImportLimits {
            max_bytes: 64 << 10,
            ..ImportLimits::default()
        };
        let big = vec![b'x'; 1 << 20];
        let (dir, result) = run_bytes(
            &archive(&[("big", T::Regular, 0o644, &big, None)])[..],
            &limits,
        );
        let text = over(result, Cap::Bytes, &limits);
        assert!(text.contains("longer than 65536 bytes"), "{text}");
        let written = dir.path().join("staging/big").metadata().unwrap().len();
        assert!(written <= 64 << 10, "{written} bytes written");

        // An archive of exactly the cap passes.
        let tar = archive(&[("small", T::Regular, 0o644, b"x", None)]);
        let limits = ImportLimits {
            max_bytes: tar.len() as u64,
            ..ImportLimits::default()
        };
        let (_dir, result) = run_bytes(&tar[..], &limits);
        result.unwrap();
    }

    /// A tar stream of `count` copies of one header block, then the end of
    /// the archive, generated as it is read.
    struct Repeated {
        block: [u8; 512],
        count: usize,
        pos: usize,
    }

    impl Read for Repeated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let (index, offset) = (self.pos / 512, self.pos % 512);
            let block = match index {
                i if i < self.count => &self.block,
                i if i < self.count + 2 => &[0; 512],
                _ => return Ok(0),
            };
            let n = buf.len().min(512 - offset);
            buf[..n].copy_from_slice(&block[offset..offset + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Each re-declaration is one map probe per component (it used to be a
    /// scan of every directory extracted so far); the last one's mode wins.
    #[test]
    fn a_directory_declared_200000_times_is_extracted_once() {
        let mut entries = Vec::new();
        let names: Vec<String> = (0..100).map(|i| format!("d{i}/")).collect();
        for name in &names {
            entries.push((name.as_str(), T::Directory, 0o500, &b""[..], None));
        }
        let mut tar = archive(&entries);
        // Without its end-of-archive blocks, so that the re-declarations follow.
        tar.truncate(tar.len() - 1024);
        let mut h = header(T::Directory, 0o777, 0);
        h.set_path("d99/").unwrap();
        h.set_cksum();
        let mut block = [0u8; 512];
        block.copy_from_slice(h.as_bytes());
        let stream = (&tar[..]).chain(Repeated {
            block,
            count: 200_000,
            pos: 0,
        });
        let (dir, result) = run_bytes(stream, &ImportLimits::default());
        result.unwrap();
        assert_eq!(mode_of(&dir.path().join("staging/d98")), 0o700);
        assert_eq!(mode_of(&dir.path().join("staging/d99")), 0o755);
        assert_eq!(
            fs::read_dir(dir.path().join("staging")).unwrap().count(),
            100
        );
    }

    #[test]
    fn the_tree_indexes_each_name_once_under_its_parent() {
        let mut tree = Tree::default();
        let a = tree.insert(Tree::ROOT, b"a", Kind::Dir, 0o755);
        tree.insert(a, b"b", Kind::File, 0);
        tree.insert(Tree::ROOT, b"s", Kind::Symlink, 0);
        assert_eq!(tree.kind_of(Path::new("a/b")), Some(Kind::File));
        assert_eq!(tree.kind_of(Path::new("a")), Some(Kind::Dir));
        assert_eq!(
            tree.kind_of(Path::new("s/b")),
            None,
            "never through a symlink"
        );
        assert_eq!(tree.kind_of(Path::new("b")), None);
        assert_eq!(tree.nodes.len(), 3);
    }
}
