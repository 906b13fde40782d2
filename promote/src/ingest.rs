//! Reading one tree into the store's pool: every file hashed as its bytes
//! are written into the pool, the manifest written as the walk goes, and
//! the tree signature computed from what was written (see
//! [`crate::pipeline`] for what promotion and `source add` build from it).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    walk_fd, EntryKind, Exclude, ManifestBuilder, Modes, OpenFile, Progress, WalkOptions,
    SPECIAL_BITS,
};

use fruix_core::TreeSignature;

use crate::error::{Error, Result};
use crate::store::Promotion;
pub(crate) use crate::tree_reader::{owner_of, reader_of, Reader};

/// One tree as read into the store's pool, its object not built yet.
pub(crate) struct Ingested {
    pub(crate) signature: TreeSignature,
    pub(crate) probe_sha256: Option<String>,
    /// Manifest paths whose special bits the store strips, with their modes.
    pub(crate) stripped: Vec<(String, u32)>,
    /// The tree's manifest lines in store modes, in the promotion's work directory.
    pub(crate) manifest: PathBuf,
    /// The sizes of its files, added up.
    pub(crate) size: u64,
    /// The symlinks [`Tree::leave_out_link`] left out, in path order.
    pub(crate) links_left_out: Vec<Vec<u8>>,
}

/// Tells, from a symlink's target, whether to leave the link out.
pub(crate) type LinkTargetFilter<'a> = dyn Fn(&[u8]) -> bool + 'a;

/// A tree to read into the pool, and how.
pub(crate) struct Tree<'a> {
    /// Names the tree in messages.
    pub(crate) display: &'a Path,
    /// Where its store-mode manifest lines go.
    pub(crate) manifest: PathBuf,
    /// Special bits recorded for entries instead of carried on disk.
    pub(crate) extra_modes: Option<&'a std::collections::HashMap<Vec<u8>, u32>>,
    /// Top-level names the object's own metadata takes: refused in the tree.
    pub(crate) reserved: [&'static str; 3],
    /// A file whose SHA-256 is reported.
    pub(crate) probe: Option<&'a str>,
    /// Entries left out of the tree (see [`WalkOptions::exclude`]).
    pub(crate) exclude: Option<&'a Exclude<'a>>,
    /// Symlinks to leave out, by their target (a source tree's links into
    /// the store): found by the reading walk itself, with no walk of its
    /// own, and reported in [`Ingested::links_left_out`].
    pub(crate) leave_out_link: Option<&'a LinkTargetFilter<'a>>,
    /// Read for this user: what they could not read is refused (root
    /// adding a user's tree, in which a hard link to another user's file
    /// would otherwise enter the world-readable store); see
    /// [`crate::tree_reader`].
    pub(crate) reader: Option<Reader>,
}

/// Reads the tree open at `dir` once (see `pipeline::ingest_artifact`).
pub(crate) fn ingest_tree(
    promotion: &Promotion<'_>,
    dir: std::os::fd::OwnedFd,
    tree: Tree<'_>,
    progress: Option<&Progress>,
) -> Result<Ingested> {
    let Tree {
        display,
        manifest,
        extra_modes,
        reserved,
        probe,
        exclude,
        leave_out_link,
        reader,
    } = tree;
    let mut out = BufWriter::with_capacity(
        256 << 10,
        File::create_new(&manifest).with_path("create", &manifest)?,
    );
    let pool = promotion.store().pool();
    let read = |file: &mut OpenFile<'_>| {
        if let Some(reader) = &reader {
            reader.check(file)?;
        }
        pool.ingest(file, promotion.journal()).map_err(|e| match e {
            Error::Core(c) => c,
            other => fruix_core::Error::system(other.to_string()),
        })
    };
    let check_dir = |fd: BorrowedFd<'_>, st: &rustix::fs::Stat, path: &[u8]| match &reader {
        Some(reader) => reader.check_dir(fd, st, path, display),
        None => Ok(()),
    };
    let mut builder = ManifestBuilder::new();
    let (mut stripped, mut probe_sha256, mut line) = (Vec::new(), None, String::new());
    let (mut size, mut links_left_out) = (0, Vec::new());
    walk_fd(
        dir,
        display,
        &WalkOptions {
            progress,
            extra_modes,
            read_file: Some(&read),
            exclude,
            check_dir: Some(&check_dir),
            ..WalkOptions::default()
        },
        |w| {
            let entry = &w.entry;
            if let (EntryKind::Symlink { target }, Some(leave_out)) = (&entry.kind, leave_out_link)
            {
                if leave_out(target) {
                    links_left_out.push(entry.path.clone());
                    return Ok(());
                }
            }
            if reserved.iter().any(|n| entry.path == n.as_bytes()) {
                return Err(fruix_core::Error::UnsafePath {
                    path: display.join(OsStr::from_bytes(&entry.path)),
                    message: "uses a name reserved for store object metadata; rename or remove it"
                        .into(),
                });
            }
            builder.add(entry);
            if entry.mode & SPECIAL_BITS != 0 {
                stripped.push((entry.manifest_path(), entry.mode));
            }
            if let EntryKind::File { sha256, .. } = &entry.kind {
                size += entry.size();
                if probe.is_some_and(|p| entry.path == p.as_bytes()) {
                    probe_sha256 = Some(hex::encode(sha256));
                }
            }
            line.clear();
            entry.render(Modes::Store, &mut line);
            out.write_all(line.as_bytes()).with_path("write", &manifest)
        },
    )?;
    out.flush().with_path("write", &manifest)?;
    Ok(Ingested {
        signature: builder.finish().0,
        probe_sha256,
        stripped,
        manifest,
        size,
        links_left_out,
    })
}
