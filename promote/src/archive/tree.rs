//! Reading one object's tree from an archive: its lines checked, its files
//! hashed as they are written into the pool.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    parse_line, path_order, Entry, EntryKind, ManifestBuilder, Modes, MAX_DEPTH, MAX_PATH_BYTES,
    SPECIAL_BITS,
};
use sha2::{Digest, Sha256};

use crate::error::{ArchiveProblem, Error, Result};
use crate::pool::StreamError;
use crate::store::{MANIFEST_FILE, REFERENCES_FILE};

use super::import::Importer;
use super::rules::{refuse, Claimed};
use super::*;

impl<R: BufRead> Importer<'_, R> {
    /// Reads an object's tree: writes its files into the pool with
    /// `journal` and its store-manifest lines to `manifest` (without a
    /// journal, the store has the object: the files are read and dropped).
    /// Returns the tree's signature and its files' bytes.
    pub(super) fn tree(
        &mut self,
        name: &str,
        claimed: &Claimed,
        manifest: &Path,
        journal: Option<&crate::pool::Journal>,
    ) -> Result<(fruix_core::TreeSignature, u64)> {
        let mut out = if journal.is_none() {
            None
        } else {
            Some(BufWriter::new(
                std::fs::File::create_new(manifest).with_path("create", manifest)?,
            ))
        };
        let mut builder = ManifestBuilder::new();
        let mut previous: Option<Vec<u8>> = None;
        // The directories on the current path, the root's first.
        let mut open: Vec<Vec<u8>> = Vec::new();
        let (mut entries, mut size, mut rendered) = (0u64, 0u64, String::new());
        let pool = self.store.pool();
        let bad = |message: String| refuse(Some(name), ArchiveProblem::Malformed, message);
        loop {
            let line = self.line(Some(name))?;
            if line == END_TREE {
                break;
            }
            crate::pipeline::check_cancelled(self.progress)?;
            entries += 1;
            if entries > self.limits.max_entries {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::TooLarge,
                    format!("its tree has more than {} entries", self.limits.max_entries),
                ));
            }
            let mut entry = parse_line(&line).map_err(|m| {
                bad(format!(
                    "bad tree line {}: {}",
                    fruix_core::escape::quoted(&line),
                    fruix_core::escape::text(&m)
                ))
            })?;
            check_entry(&entry, previous.as_deref(), claimed.metadata_file).map_err(bad)?;
            check_parent(&entry, &mut open).map_err(bad)?;
            check_depth(&open).map_err(|m| refuse(Some(name), ArchiveProblem::TooLarge, m))?;
            check_mode(&entry, &claimed.stripped).map_err(bad)?;
            if let EntryKind::File {
                size: file_size,
                sha256,
            } = entry.kind
            {
                // Refused as its line is read: its bytes would not fit.
                let room = self.input.max.saturating_sub(self.input.read);
                if file_size > room {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::TooLarge,
                        format!(
                            "its file {} claims {file_size} bytes, over the archive's {}-byte cap ({room} bytes of it left)",
                            fruix_core::escape::path(Path::new(OsStr::from_bytes(&entry.path))),
                            self.input.max
                        ),
                    ));
                }
                // Named where the archive has it: nothing of the object is
                // in the store.
                let display = Path::new(name).join(OsStr::from_bytes(&entry.path));
                let got = match journal {
                    // The store has the object: the bytes are dropped, but
                    // hashed all the same, so that a tampered body refuses
                    // the archive whatever the store holds.
                    None => {
                        let mut hasher = HashingSink(Sha256::new());
                        let copied = io::copy(&mut (&mut self.input).take(file_size), &mut hasher)
                            .map_err(|e| self.read_error(Some(name), e))?;
                        if copied != file_size {
                            return Err(refuse(
                                Some(name),
                                ArchiveProblem::Truncated,
                                "the archive ends in a file",
                            ));
                        }
                        hasher.0.finalize().into()
                    }
                    Some(journal) => {
                        let store_mode = entry.mode & !SPECIAL_BITS;
                        pool.ingest_stream(
                            &mut self.input,
                            file_size,
                            store_mode,
                            journal,
                            &display,
                        )
                        .map_err(|e| match e {
                            StreamError::Read(e) => self.read_error(Some(name), e),
                            StreamError::Other(Error::ArchiveRefused {
                                object: None,
                                problem,
                                message,
                            }) => refuse(Some(name), problem, message),
                            StreamError::Other(other) => other,
                        })?
                        .sha256
                    }
                };
                if got != sha256 {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::Tampered,
                        // Named in the object (nothing of it is in the store).
                        format!(
                            "its file {} does not hash to what its line says (sha256 {}, not {})",
                            fruix_core::escape::path(Path::new(OsStr::from_bytes(&entry.path))),
                            hex::encode(got),
                            hex::encode(sha256)
                        ),
                    ));
                }
                size += file_size;
                if let Some(p) = self.progress {
                    p.add(file_size);
                }
            }
            if let Some(out) = &mut out {
                rendered.clear();
                entry.render(Modes::Store, &mut rendered);
                out.write_all(rendered.as_bytes())
                    .with_path("write", manifest)?;
            }
            if let Some(mode) = claimed.stripped.get(&entry.manifest_path()) {
                entry.mode = *mode;
            }
            builder.add(&entry);
            previous = Some(entry.path);
        }
        if previous.is_none() {
            return Err(bad("its tree is empty (not even a root directory)".into()));
        }
        if let Some(mut out) = out {
            out.flush().with_path("write", manifest)?;
        }
        Ok((builder.finish().0, size))
    }
}

/// A writer that only hashes what it is given: a file's body read from the
/// archive and dropped (the store has its object).
struct HashingSink(Sha256);

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks one tree entry against the one before it.
pub(super) fn check_entry(
    entry: &Entry,
    previous: Option<&[u8]>,
    metadata_file: &str,
) -> std::result::Result<(), String> {
    let Some(previous) = previous else {
        return if entry.path.is_empty() && entry.kind == EntryKind::Directory {
            Ok(())
        } else {
            Err("its tree does not start with its root directory".into())
        };
    };
    // The path's own faults first: a `..` is not merely out of order.
    for component in entry.path.split(|b| *b == b'/') {
        if component.is_empty()
            || component == b"."
            || component == b".."
            || component.len() > 255
            || component.contains(&0)
        {
            return Err(format!(
                "{} is not a plain relative path",
                entry.manifest_path()
            ));
        }
    }
    if path_order(previous, &entry.path) != std::cmp::Ordering::Less {
        return Err(format!(
            "{} is out of order or repeated",
            entry.manifest_path()
        ));
    }
    if [metadata_file, REFERENCES_FILE, MANIFEST_FILE]
        .iter()
        .any(|n| entry.path == n.as_bytes())
    {
        return Err(format!(
            "{} uses a name reserved for the object's metadata",
            entry.manifest_path()
        ));
    }
    // The cap of the walk that promoted and verifies the object: one it
    // took, export gave and import refused could never be copied.
    if entry.path.len() > MAX_PATH_BYTES {
        let shown: String = entry.manifest_path().chars().take(64).collect();
        return Err(format!(
            "{shown}... is a path longer than {MAX_PATH_BYTES} bytes ({} bytes)",
            entry.path.len()
        ));
    }
    if let EntryKind::Symlink { target } = &entry.kind {
        // No system creates one: it would fail only as the object is built.
        if target.is_empty() {
            return Err(format!(
                "the symlink {} has an empty target",
                entry.manifest_path()
            ));
        }
        if target.contains(&0) {
            return Err(format!(
                "the symlink {} has a target with a NUL byte",
                entry.manifest_path()
            ));
        }
        if target.len() > MAX_LINK_TARGET {
            return Err(format!(
                "the symlink {} has a target longer than {MAX_LINK_TARGET} bytes",
                entry.manifest_path()
            ));
        }
    }
    Ok(())
}

/// Longest symlink target this system can create (`PATH_MAX` less its NUL).
const MAX_LINK_TARGET: usize = libc::PATH_MAX as usize - 1;

/// Checks that `entry` (path-checked by [`check_entry`]) is placed in the
/// directory declared last on its path: `open` holds the directories on the
/// current path, the root's first, and gains `entry` when it is one. Path
/// order alone would let `./b/y` follow `./a/x` without `./b`, or put an
/// entry below a file or symlink.
pub(super) fn check_parent(
    entry: &Entry,
    open: &mut Vec<Vec<u8>>,
) -> std::result::Result<(), String> {
    if entry.path.is_empty() {
        // The root, first (check_entry saw to it).
        open.push(Vec::new());
        return Ok(());
    }
    let parent = match entry.path.iter().rposition(|b| *b == b'/') {
        Some(slash) => &entry.path[..slash],
        None => &[][..],
    };
    let contains = |dir: &[u8]| {
        dir.is_empty() || (entry.path.starts_with(dir) && entry.path.get(dir.len()) == Some(&b'/'))
    };
    // Directories left behind are never entered again (path order).
    while open.last().is_some_and(|dir| !contains(dir)) {
        open.pop();
    }
    if open.last().map(Vec::as_slice) != Some(parent) {
        return Err(format!(
            "{} comes without its directory: no directory line for ./{} precedes it",
            entry.manifest_path(),
            fruix_core::escape::text(&String::from_utf8_lossy(parent))
        ));
    }
    if entry.kind == EntryKind::Directory {
        open.push(entry.path.clone());
    }
    Ok(())
}

/// Checks that the directories open on the current path (`open`, as
/// [`check_parent`] keeps it: the root's first) are nested at most
/// [`MAX_DEPTH`] below the root, as deep as a walk of the store accepts: a
/// deeper object would be imported, then found corrupt by `store verify`.
pub(super) fn check_depth(open: &[Vec<u8>]) -> std::result::Result<(), String> {
    // The root is not below itself.
    let depth = open.len().saturating_sub(1);
    if depth <= MAX_DEPTH {
        return Ok(());
    }
    Err(format!(
        "./{} is nested deeper than {MAX_DEPTH} directories below the object's root; fruix refuses deeper trees",
        fruix_core::escape::text(&String::from_utf8_lossy(&open[depth]))
    ))
}

/// Checks `entry`'s mode as its line states it: a store mode (directories
/// `0555`, files `0444` or `0555`, symlinks none), as exports write them,
/// or, where the metadata's stripped modes list the entry, that mode with
/// or without its special bits. Anything else would sign other bits than
/// the store keeps, or make a file the store would hold with those bits.
pub(super) fn check_mode(
    entry: &Entry,
    stripped: &HashMap<String, u32>,
) -> std::result::Result<(), String> {
    let path = entry.manifest_path();
    let store_mode = entry.mode & !SPECIAL_BITS;
    let plain = match entry.kind {
        EntryKind::Directory => store_mode == 0o555,
        EntryKind::File { .. } => store_mode == 0o444 || store_mode == 0o555,
        EntryKind::Symlink { .. } => entry.mode == 0,
    };
    let special = entry.mode & SPECIAL_BITS;
    let fits = match stripped.get(&path) {
        // Stripped modes are canonical modes with special bits, and the
        // store mode is what is left without them (see promotion).
        Some(&listed) => {
            !matches!(entry.kind, EntryKind::Symlink { .. })
                && listed & SPECIAL_BITS != 0
                && listed & !SPECIAL_BITS == store_mode
                && (special == 0 || entry.mode == listed)
        }
        None => special == 0,
    };
    if plain && fits {
        return Ok(());
    }
    Err(format!(
        "{} has mode {:04o}, which is no store mode{}",
        path,
        entry.mode,
        if special != 0 {
            " (its setuid, setgid or sticky bits are not the ones its metadata lists as stripped)"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::manifest::EntryKind;

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o755,
            kind: EntryKind::Directory,
        }
    }

    #[test]
    fn a_path_s_own_fault_is_named_before_its_order() {
        let refused = |path: &str| check_entry(&dir(path), Some(b"zzz"), "m").unwrap_err();
        for path in ["usr/../../paths.h", "./x", "a//b", ".."] {
            assert!(
                refused(path).ends_with("is not a plain relative path"),
                "{path}: {}",
                refused(path)
            );
        }
        assert!(refused("bin").ends_with("is out of order or repeated"));
        assert!(check_entry(&dir("zzz/bin"), Some(b"zzz"), "m").is_ok());
    }

    /// Regression: a path was escaped twice (`./\\033\\13331mREADM`): its
    /// manifest spelling is already plain ASCII, and is shown as it is.
    #[test]
    fn a_path_is_named_as_its_manifest_line_spells_it() {
        let e = check_entry(&dir("\x1b[31mREADM"), Some(b"zzz"), "m").unwrap_err();
        assert_eq!(e, "./\\033\\13331mREADM is out of order or repeated");
    }

    /// Directories nested as deep as a walk of the store accepts, and one
    /// deeper: `store verify` found such an object corrupt after the
    /// import took it.
    #[test]
    fn a_directory_deeper_than_a_store_walk_accepts_is_refused() {
        let mut open = Vec::new();
        check_parent(&dir(""), &mut open).unwrap();
        let mut path = "d".to_string();
        // `d`, `d/d`... down to MAX_DEPTH directories below the root.
        for _ in 0..MAX_DEPTH {
            check_parent(&dir(&path), &mut open).unwrap();
            path.push_str("/d");
        }
        check_depth(&open).unwrap();
        check_parent(&dir(&path), &mut open).unwrap();
        let e = check_depth(&open).unwrap_err();
        assert!(e.contains("nested deeper than 256 directories"), "{e}");
    }

    /// Regression: import refused a path of exactly 4096 bytes, which the
    /// walk that promoted, verified and exported the object took: such an
    /// object could never be copied. The caps are the same now.
    #[test]
    fn a_path_as_long_as_a_walk_takes_is_taken_and_one_longer_is_refused() {
        // 16 directories of 250-byte names, then a file name filling it up.
        let file = |len: usize| Entry {
            path: format!(
                "{}{}",
                format!("{}/", "a".repeat(250)).repeat(16),
                "z".repeat(len - 4016)
            )
            .into_bytes(),
            mode: 0o444,
            kind: EntryKind::File {
                size: 0,
                sha256: [0; 32],
            },
        };
        check_entry(&file(MAX_PATH_BYTES), Some(b""), "m").unwrap();
        let e = check_entry(&file(MAX_PATH_BYTES + 1), Some(b""), "m").unwrap_err();
        assert!(
            e.ends_with("is a path longer than 4096 bytes (4097 bytes)"),
            "{e}"
        );
        assert!(e.len() < 200, "the path is cut: {e}");
    }

    /// No system creates a symlink with an empty target: refused before
    /// the object is built, where it failed as an I/O error.
    #[test]
    fn a_symlink_with_an_empty_target_is_refused() {
        let link = |target: &str| Entry {
            path: b"l".to_vec(),
            mode: 0,
            kind: EntryKind::Symlink {
                target: target.as_bytes().to_vec(),
            },
        };
        let e = check_entry(&link(""), Some(b""), "m").unwrap_err();
        assert!(e.ends_with("has an empty target"), "{e}");
        check_entry(&link("t"), Some(b""), "m").unwrap();
    }

    /// Going over the archive's byte cap inside a file's body refuses the
    /// archive as too large, as going over it anywhere else does: read
    /// into the pool, it was an I/O error (exit 3).
    #[test]
    fn going_over_the_byte_cap_inside_a_file_refuses_the_archive_as_too_large() {
        let (_dir, store, archive) = exported_sample();
        let body = fruix_core::testing::find_bytes(&archive, b"\x7fELF").expect("a file's body");
        let trust = Trust::default();
        let options = ImportOptions {
            trust: &trust,
            limits: ArchiveLimits {
                max_bytes: body as u64 + 3,
                ..ArchiveLimits::default()
            },
            progress: None,
            whole_input: true,
        };
        let e = import(&store, &archive[..], &options).unwrap_err();
        assert!(too_large(&e), "{e}");
    }

    /// Regression: a file line claiming more bytes than the archive's byte
    /// cap leaves was read until the input ended, then reported as an
    /// archive cut short. It is refused as over the cap as soon as the line
    /// is read: no read follows it.
    #[test]
    fn a_file_line_over_the_byte_cap_is_refused_before_its_bytes_are_read() {
        let (_dir, store, archive) = exported_sample();
        let text = String::from_utf8_lossy(&archive);
        let file = text.find(" type=file ").expect("a file line");
        let (start, end) = (
            text[..file].rfind('\n').unwrap() + 1,
            file + text[file..].find('\n').unwrap() + 1,
        );
        let line = &text[start..end];
        let size = line.split(' ').find(|w| w.starts_with("size=")).unwrap();
        let claimed = line.replace(size, "size=99999999999999");
        let sent = [&archive[..start], claimed.as_bytes()].concat();
        /// Fails every read: what the import must not need.
        struct Unread;
        impl Read for Unread {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("read past the file line"))
            }
        }
        let input = io::BufReader::new(sent.as_slice().chain(Unread));
        let trust = Trust::default();
        let e = import(&store, input, &ImportOptions::new(&trust)).unwrap_err();
        assert!(too_large(&e), "{e}");
        assert!(
            e.to_string()
                .contains("claims 99999999999999 bytes, over the archive's 274877906944-byte cap"),
            "{e}"
        );
    }

    /// Whether `e` refuses an archive as too large, at an object.
    fn too_large(e: &Error) -> bool {
        matches!(
            e,
            Error::ArchiveRefused {
                object: Some(_),
                problem: ArchiveProblem::TooLarge,
                ..
            }
        )
    }

    /// The sample result root's bundle promoted and exported with its
    /// closure, then the store moved away: an empty store at its path, and
    /// the archive.
    fn exported_sample() -> (fruix_core::testing::TestDir, Store, Vec<u8>) {
        use crate::{promote_native_build_result, PromoteOptions};
        let dir = fruix_core::testing::TestDir::new();
        let root = dir.root("r1", "local", "20260405T213444Z", true);
        let store = Store::open(&dir.store()).unwrap();
        let report =
            promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        let bundle = report.result_store.file_name().unwrap().to_str().unwrap();
        let order = export_order(&store, &[bundle.to_string()], true).unwrap();
        let mut archive = Vec::new();
        export(&store, &order, &mut archive, None).unwrap();
        drop(store);
        std::fs::rename(dir.store(), dir.join("exported")).unwrap();
        let store = Store::open(&dir.store()).unwrap();
        (dir, store, archive)
    }
}
