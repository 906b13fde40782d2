//! Import of a guest's result root: guest output is untrusted input.
//!
//! # Contract
//!
//! [`fetch`] transfers the guest result root as one stream (`tar -cf - .`
//! run in it, over an exec channel) into a fresh staging directory next to
//! the host result root (`.RUN-ID.import-XXXXXX` in its parent), extracting
//! it with [`extract`] while it arrives. Extraction:
//!
//! - refuses absolute paths and `..` components, device nodes, FIFOs and any
//!   other entry type than directory, regular file, symlink and hard link;
//! - never follows a symlink: every entry's parent must be a directory the
//!   extraction itself created, so a symlink used as a directory
//!   (`etc -> /etc`, then `etc/passwd`) is refused, and files are created
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW`; symlinks are created verbatim and
//!   never resolved; a hard link must name a regular file extracted before;
//!   a path that appears twice is refused;
//! - never creates a setuid, setgid or sticky file or directory: those bits
//!   are *neutralised* (stripped) and recorded in [`Staged::special_modes`];
//! - never writes outside the staging directory, whatever the archive holds.
//!
//! A guest root that still carries the unfinished marker is refused. Any
//! failure removes the staging directory: nothing partial is left. A
//! connection that drops is [`Error::System`] recognised by
//! [`crate::ssh::is_connection_lost`], so callers retry on a new connection.
//!
//! Then [`Staged::verify`] re-hashes every artifact tree (with the recorded
//! special bits, which signatures cover) and compares it with the signature
//! the guest wrote in `promotion.scm`; a mismatch (corruption in transit, or
//! a tree changed in the guest after it was signed) is
//! [`Error::SignatureMismatch`]. [`Staged::place`] finally moves every
//! top-level entry into the result root, which must not already hold it, and
//! records the special bits found inside artifact trees whose signature was
//! checked or computed in the result root's `.fruix-special-modes` (see
//! [`fruix_core::special_modes`]): the bits are never put back on disk, and
//! promotion adds them to the signed modes. Bits found anywhere else (`logs/`,
//! for instance) are dropped.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::executor::{Event, RunContext};
use fruix_core::manifest::{walk, ManifestBuilder, WalkOptions, SPECIAL_BITS};
use fruix_core::promotion::{PromotionMetadata, PROMOTION_FILE};
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::special_modes::{self, SpecialModes};
use fruix_core::{Error, Result, TreeSignature};
use russh::ChannelMsg;

use crate::ssh::{lost, shell_quote, SshSession};

/// How many bytes between two progress events.
const PROGRESS_EVERY: u64 = 16 << 20;

/// What an archive entry was extracted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// Extracts a tar stream under the rules in the module docs.
struct Extractor {
    root: PathBuf,
    entries: HashMap<PathBuf, Kind>,
    /// Directories with their final permission bits, set at the end.
    dirs: Vec<(PathBuf, u32)>,
    special: BTreeMap<PathBuf, u32>,
    buffer: Vec<u8>,
}

/// A staged import: the extracted guest root, not yet in place.
#[derive(Debug)]
pub struct Staged {
    dir: tempfile::TempDir,
    /// Setuid, setgid and sticky bits stripped at extraction, by path
    /// relative to the staged root.
    pub special_modes: BTreeMap<PathBuf, u32>,
    /// Artifact trees (relative paths) whose bits may be restored.
    signed: Vec<PathBuf>,
}

/// Extracts the tar stream `reader` into `root` (an existing empty
/// directory) and returns the special bits it neutralised.
pub fn extract(reader: impl Read, root: &Path) -> Result<BTreeMap<PathBuf, u32>> {
    let mut x = Extractor {
        root: root.to_path_buf(),
        entries: HashMap::new(),
        dirs: Vec::new(),
        special: BTreeMap::new(),
        buffer: vec![0; 256 << 10],
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| bad_archive(root, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(root, e))?;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.special)
}

fn bad_archive(root: &Path, e: io::Error) -> Error {
    Error::system(format!(
        "the guest's archive of its result root is unreadable ({e}) while extracting into {}",
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
/// absolute paths and `..` refused. `None` for the root itself.
fn normalize(raw: &[u8]) -> Result<Option<PathBuf>> {
    if raw.starts_with(b"/") {
        return Err(unsafe_entry(
            raw,
            "absolute path; a result root archive holds relative paths only",
        ));
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

impl Extractor {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| bad_archive(&self.root, e))?;
        let Some(path) = normalize(&raw)? else {
            return match kind {
                tar::EntryType::Directory => Ok(()),
                _ => Err(unsafe_entry(&raw, "the root itself is not a directory")),
            };
        };
        match kind {
            tar::EntryType::Directory => self.dir(&raw, path, mode),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(&raw, path, mode, entry)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?
                    .into_owned();
                self.symlink(&raw, path, &target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "hard link without a target"))?
                    .into_owned();
                self.hard_link(&raw, path, &target)
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

    /// Makes sure every ancestor of `path` is a directory this extraction
    /// created (creating missing ones); refuses anything else on the way.
    fn parents(&mut self, raw: &[u8], path: &Path) -> Result<()> {
        let mut prefix = PathBuf::new();
        let parent = path.parent().unwrap_or(Path::new(""));
        for component in parent.components() {
            prefix.push(component);
            match self.entries.get(&prefix) {
                Some(Kind::Dir) => {}
                Some(other) => {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "{} is a {} in the archive but is used as a directory",
                            prefix.display(),
                            if *other == Kind::Symlink {
                                "symlink"
                            } else {
                                "file"
                            }
                        ),
                    ))
                }
                None => self.make_dir(&prefix, 0o755)?,
            }
        }
        Ok(())
    }

    fn claim(&mut self, raw: &[u8], path: &Path, kind: Kind) -> Result<()> {
        if self.entries.contains_key(path) {
            return Err(unsafe_entry(raw, "appears twice in the archive"));
        }
        self.parents(raw, path)?;
        self.entries.insert(path.to_path_buf(), kind);
        Ok(())
    }

    fn note_special(&mut self, path: &Path, mode: u32) {
        if mode & SPECIAL_BITS != 0 {
            self.special.insert(path.to_path_buf(), mode & SPECIAL_BITS);
        }
    }

    fn make_dir(&mut self, path: &Path, mode: u32) -> Result<()> {
        let full = self.root.join(path);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&full)
            .with_path("create directory", &full)?;
        self.entries.insert(path.to_path_buf(), Kind::Dir);
        self.dirs.push((path.to_path_buf(), mode & 0o777));
        Ok(())
    }

    fn dir(&mut self, raw: &[u8], path: PathBuf, mode: u32) -> Result<()> {
        self.note_special(&path, mode);
        match self.entries.get(&path) {
            // Created implicitly for an earlier entry: only the mode is new.
            Some(Kind::Dir) => {
                if let Some(d) = self.dirs.iter_mut().find(|(p, _)| *p == path) {
                    d.1 = mode & 0o777;
                }
                Ok(())
            }
            Some(_) => Err(unsafe_entry(raw, "appears twice in the archive")),
            None => {
                self.parents(raw, &path)?;
                self.make_dir(&path, mode)
            }
        }
    }

    fn file(&mut self, raw: &[u8], path: PathBuf, mode: u32, data: &mut impl Read) -> Result<()> {
        self.claim(raw, &path, Kind::File)?;
        self.note_special(&path, mode);
        let full = self.root.join(&path);
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
                Err(e) => return Err(bad_archive(&self.root, e)),
            };
            file.write_all(&self.buffer[..n])
                .with_path("write", &full)?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
            .with_path("set mode of", &full)
    }

    fn symlink(&mut self, raw: &[u8], path: PathBuf, target: &[u8]) -> Result<()> {
        if target.is_empty() {
            return Err(unsafe_entry(raw, "symlink with an empty target"));
        }
        self.claim(raw, &path, Kind::Symlink)?;
        let full = self.root.join(&path);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &full)
            .with_path("create symlink", &full)
    }

    fn hard_link(&mut self, raw: &[u8], path: PathBuf, target: &[u8]) -> Result<()> {
        let target =
            normalize(target)?.ok_or_else(|| unsafe_entry(raw, "hard link to the root"))?;
        if self.entries.get(&target) != Some(&Kind::File) {
            return Err(unsafe_entry(
                raw,
                format!(
                    "hard link to {}, which is not a regular file extracted before it",
                    target.display()
                ),
            ));
        }
        self.claim(raw, &path, Kind::File)?;
        let (from, to) = (self.root.join(&target), self.root.join(&path));
        fs::hard_link(&from, &to).with_path("create hard link", &to)
    }

    /// Sets directory permissions, deepest first (so that read-only
    /// directories do not stop the ones below them).
    fn finish_dirs(&mut self) -> Result<()> {
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, mode) in &self.dirs {
            let full = self.root.join(path);
            fs::set_permissions(&full, fs::Permissions::from_mode(*mode | 0o700))
                .with_path("set mode of", &full)?;
        }
        Ok(())
    }
}

/// Bridges channel data (async) to the extractor (a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Transfers and extracts the guest result root `remote_root` into a new
/// staging directory next to `ctx.result_root` (see the module docs).
pub async fn fetch(session: &SshSession, remote_root: &str, ctx: &RunContext) -> Result<Staged> {
    let host_root = &ctx.result_root;
    let parent = host_root.parent().unwrap_or(Path::new("."));
    let name = host_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(parent)
        .with_path("create staging directory in", parent)?;
    let mut channel = session.channel().await?;
    let script = format!("cd {} && exec tar -cf - .", shell_quote(remote_root));
    channel
        .exec(true, script)
        .await
        .map_err(|e| lost(session.target(), e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let staging = dir.path().to_path_buf();
    let extractor = tokio::task::spawn_blocking(move || {
        extract(
            ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            },
            &staging,
        )
    });
    let mut tx = Some(tx);
    let (mut stderr, mut exit, mut received, mut reported) = (Vec::new(), None, 0u64, 0u64);
    loop {
        let msg = tokio::select! {
            msg = channel.wait() => msg,
            () = ctx.cancel.cancelled() => {
                let _ = channel.close().await;
                drop(tx.take());
                let _ = extractor.await;
                return Err(Error::Cancelled);
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                received += data.len() as u64;
                if received - reported >= PROGRESS_EVERY {
                    reported = received;
                    ctx.events.emit(Event::Progress {
                        stage: "import".into(),
                        done: received,
                        total: None,
                    });
                }
                // The extractor stopped (it refused something): stop reading.
                let sent = match &tx {
                    Some(tx) => tx.send(data).await.is_ok(),
                    None => false,
                };
                if !sent {
                    drop(tx.take());
                    let _ = channel.close().await;
                    break;
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => stderr.extend_from_slice(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
            Some(ChannelMsg::ExitSignal { .. }) => exit = Some(u32::MAX),
            Some(_) => {}
            None => break,
        }
    }
    drop(tx);
    let extracted = extractor
        .await
        .map_err(|e| Error::system(format!("the import's extraction thread failed: {e}")))?;
    let special_modes = match (extracted, exit) {
        (Err(e), _) if !matches!(e, Error::System { .. }) => return Err(e),
        (_, None) => {
            return Err(lost(
                session.target(),
                format!("the transfer of {remote_root} was cut off after {received} bytes"),
            ))
        }
        (_, Some(code)) if code != 0 => {
            return Err(Error::system(format!(
                "tar of the guest result root {remote_root} on {} failed ({}): {}",
                session.target(),
                if code == u32::MAX {
                    "killed by a signal".to_string()
                } else {
                    format!("exit status {code}")
                },
                String::from_utf8_lossy(&stderr).trim()
            )))
        }
        (result, Some(_)) => result?,
    };
    if dir
        .path()
        .join(INCOMPLETE_MARKER)
        .symlink_metadata()
        .is_ok()
    {
        return Err(Error::system(format!(
            "the guest result root {remote_root} still carries {INCOMPLETE_MARKER}: the run there did not finish; it is not imported"
        )));
    }
    Ok(Staged {
        dir,
        special_modes,
        signed: Vec::new(),
    })
}

impl Staged {
    /// The staging directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The signature of artifact tree `relative` (with the neutralised
    /// special bits put back, as the build site saw it).
    pub fn signature(&self, relative: &str) -> Result<TreeSignature> {
        let dir = fruix_core::fsutil::resolve_beneath(self.path(), relative)?;
        let mut builder = ManifestBuilder::new();
        walk(&dir, &WalkOptions::default(), |w| {
            let mut entry = w.entry.clone();
            let key = Path::new(relative).join(OsStr::from_bytes(&entry.path));
            if let Some(bits) = self.special_modes.get(&key) {
                entry.mode |= bits;
            }
            builder.add(&entry);
            Ok(())
        })?;
        Ok(builder.finish().0)
    }

    /// Checks every artifact of the staged `promotion.scm` against the
    /// signature the guest declared for it; every artifact must have one.
    pub fn verify(&mut self) -> Result<PromotionMetadata> {
        let path = self.path().join(PROMOTION_FILE);
        let metadata = PromotionMetadata::read(&path)?;
        for a in &metadata.artifacts {
            let Some(declared) = &a.tree_signature else {
                return Err(Error::InvalidMetadata {
                    path: path.clone(),
                    field: format!("artifacts.{}.tree-signature", a.name),
                    line: None,
                    message: "is missing; the guest must sign every artifact it built so that the import can be checked".into(),
                });
            };
            let actual = self.signature(&a.path)?;
            if actual != *declared {
                return Err(Error::SignatureMismatch {
                    path: self.path().join(&a.path),
                    expected: declared.to_string(),
                    actual: actual.to_string(),
                });
            }
            self.signed.push(PathBuf::from(&a.path));
        }
        Ok(metadata)
    }

    /// Marks artifact tree `relative` as signed by this host.
    pub fn signed_here(&mut self, relative: &str) {
        self.signed.push(PathBuf::from(relative));
    }

    /// Moves every top-level entry into `result_root` (the staging directory
    /// goes away) and records the special bits found inside signed artifact
    /// trees in the result root's
    /// [`SPECIAL_MODES_FILE`](fruix_core::special_modes::SPECIAL_MODES_FILE): they are never put
    /// back on disk, but they stay part of the trees' signatures.
    pub fn place(self, result_root: &Path) -> Result<()> {
        let recorded: SpecialModes = self
            .special_modes
            .iter()
            .filter(|(relative, _)| self.signed.iter().any(|s| relative.starts_with(s)))
            .map(|(relative, bits)| (relative.as_os_str().as_bytes().to_vec(), *bits))
            .collect();
        let entries = fs::read_dir(self.path()).with_path("read", self.path())?;
        for entry in entries {
            let entry = entry.with_path("read", self.path())?;
            let to = result_root.join(entry.file_name());
            if to.symlink_metadata().is_ok() {
                return Err(Error::AlreadyExists {
                    path: to,
                    hint: "the result root already holds an entry the guest's result root also has; it is not overwritten".into(),
                });
            }
            fs::rename(entry.path(), &to).with_path("move into the result root", &to)?;
        }
        special_modes::write(result_root, &recorded)?;
        fruix_core::fsutil::sync_dir(result_root)
    }
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

    use tar::EntryType as T;

    fn run(entries: &[RawEntry<'_>]) -> (tempfile::TempDir, Result<BTreeMap<PathBuf, u32>>) {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        fs::create_dir(&staging).unwrap();
        let result = extract(&archive(entries)[..], &staging);
        (dir, result)
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
        assert_eq!(
            root.join("bin/sh").metadata().unwrap().mode() & 0o7777,
            0o555
        );
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
        let su = dir.path().join("staging/usr/bin/su").metadata().unwrap();
        assert_eq!(su.mode() & 0o7777, 0o555);
        assert_eq!(
            dir.path().join("staging/tmp").metadata().unwrap().mode() & 0o7000,
            0
        );
    }

    fn refused(entries: &[RawEntry<'_>], expected: &str) {
        let (dir, result) = run(entries);
        let e = result.unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
        assert!(!dir.path().join("escaped").exists());
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
            "symlink in the archive but is used as a directory",
        );
        refused(
            &[
                ("f", T::Regular, 0o644, b"x", None),
                ("f", T::Regular, 0o644, b"y", None),
            ],
            "twice",
        );
        refused(&[("l", T::Link, 0o644, b"", Some("../escaped"))], "`..`");
        refused(
            &[("l", T::Link, 0o644, b"", Some("missing"))],
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
}
