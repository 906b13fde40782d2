//! What a result bundle holds on disk, compared with what promotion writes.
//!
//! A bundle holds exactly:
//! - itself and `artifacts/`: directories, mode `0555`;
//! - `.fruix-native-build-result.scm` (its metadata) and `.references`:
//!   regular files, mode `0444`, timestamped [`STORE_MTIME`], with the text
//!   promotion wrote (the references are those its metadata names);
//! - `artifacts/NAME`: a symlink to each artifact's store path.
//!
//! Anything else is a difference, reported as for artifact objects: an
//! extra file, a changed `.references`, a retargeted link. Only the bundle's
//! top and `artifacts/` are read, through directory descriptors, never
//! following a symlink; what lies below an extra directory is not looked at.
//!
//! Whether each artifact the metadata names is the object at its store
//! path, an artifact object of that name and tree signature, is
//! `artifact_claim_mismatch`'s question, which an import asks of the
//! records of a bundle's references before it publishes the bundle.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use fruix_core::escape;
use fruix_core::manifest::{
    entry_changes, open_dir, path_order, stat, Difference, Entry, EntryKind, Modes,
};

use crate::bundle::BundleArtifact;
use crate::check::{MAX_DIFFERENCES, MAX_OBJECT_METADATA};
use crate::db::{Kind, ObjectRecord};
use crate::error::Result;
use crate::stage::read_small_at;
use crate::store::{REFERENCES_FILE, RESULT_METADATA_FILE, STORE_MTIME};

/// The directory of a bundle's links to its artifacts.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// What checking a bundle's tree found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleCheck {
    /// Up to [`MAX_DIFFERENCES`] missing, modified and extra entries, in
    /// path order.
    pub differences: Vec<Difference>,
    /// Differences found beyond those listed.
    pub more_differences: u64,
}

impl BundleCheck {
    /// Whether the bundle holds exactly what it should.
    pub fn is_intact(&self) -> bool {
        self.differences.is_empty() && self.more_differences == 0
    }

    fn push(&mut self, d: Difference) {
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(d);
        } else {
            self.more_differences += 1;
        }
    }
}

/// One entry as found on disk.
struct Found {
    /// `None` for what a bundle can never hold (a FIFO, a device, a socket).
    entry: Option<Entry>,
    path: Vec<u8>,
    mtime: i64,
}

/// The entries of a bundle whose metadata file holds `metadata`, whose
/// references are `references` and whose artifacts link as `links` (name,
/// store path); in path order.
fn expected(metadata: &str, references: &str, links: &[(&str, &str)]) -> Vec<Entry> {
    let dir = |path: &str| Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o555,
        kind: EntryKind::Directory,
    };
    let file = |path: &str, text: &str| Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o444,
        kind: EntryKind::File {
            size: text.len() as u64,
            sha256: Sha256::digest(text.as_bytes()).into(),
        },
    };
    let mut out = vec![
        dir(""),
        file(RESULT_METADATA_FILE, metadata),
        file(REFERENCES_FILE, references),
        dir(ARTIFACTS_DIR),
    ];
    out.extend(links.iter().map(|(name, target)| Entry {
        path: format!("{ARTIFACTS_DIR}/{name}").into_bytes(),
        mode: 0,
        kind: EntryKind::Symlink {
            target: target.as_bytes().to_vec(),
        },
    }));
    out.sort_by(|a, b| path_order(&a.path, &b.path));
    out
}

/// Compares the bundle at `bundle` with what it should hold (see the
/// module documentation).
pub(crate) fn compare(
    bundle: &Path,
    metadata: &str,
    references: &str,
    links: &[(&str, &str)],
) -> Result<BundleCheck> {
    let dir = open_dir(bundle)?;
    let root = rfs::fstat(&dir).map_err(|e| fruix_core::Error::io("inspect", bundle, e.into()))?;
    let mut found = vec![Found {
        entry: Some(Entry {
            path: Vec::new(),
            mode: stat::mode(&root),
            kind: EntryKind::Directory,
        }),
        path: Vec::new(),
        mtime: stat::mtime(&root),
    }];
    for name in names(dir.as_fd(), bundle)? {
        let item = inspect(dir.as_fd(), &name, name.as_bytes().to_vec(), bundle)?;
        let is_links = name.as_bytes() == ARTIFACTS_DIR.as_bytes()
            && matches!(
                item.entry,
                Some(Entry {
                    kind: EntryKind::Directory,
                    ..
                })
            );
        found.push(item);
        if !is_links {
            continue;
        }
        let path = bundle.join(ARTIFACTS_DIR);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let links_dir = rfs::openat(&dir, ARTIFACTS_DIR, flags, Mode::empty())
            .map_err(|e| fruix_core::Error::io("open", &path, e.into()))?;
        for link in names(links_dir.as_fd(), &path)? {
            let relative = [ARTIFACTS_DIR.as_bytes(), b"/", link.as_bytes()].concat();
            found.push(inspect(links_dir.as_fd(), &link, relative, bundle)?);
        }
    }
    found.sort_by(|a, b| path_order(&a.path, &b.path));
    Ok(merge(&expected(metadata, references, links), &found))
}

/// How the object at an artifact's store path (whose record is `record`,
/// `None` when none is registered) differs from what a bundle's metadata
/// says of it (`claimed`): it must be an artifact object of that name and
/// tree signature. `None` when it is. Names and signatures come from the
/// metadata: escaped.
pub(crate) fn artifact_claim_mismatch(
    claimed: &BundleArtifact,
    record: Option<&ObjectRecord>,
) -> Option<String> {
    let Some(record) = record else {
        return Some("no object there is registered".into());
    };
    if record.kind != Kind::Artifact {
        return Some(format!("the object there is a {}", record.kind.as_str()));
    }
    if record.artifact.as_deref() != Some(claimed.name.as_str()) {
        return Some(format!(
            "the object there is the artifact {}",
            escape::quoted(record.artifact.as_deref().unwrap_or(""))
        ));
    }
    if record.tree_signature.as_deref() != Some(claimed.tree_signature.as_str()) {
        return Some(format!(
            "the object's tree signs as {}, not {}",
            escape::text(record.tree_signature.as_deref().unwrap_or("nothing")),
            escape::text(&claimed.tree_signature)
        ));
    }
    None
}

/// Merges the expected entries with those found (both in path order).
fn merge(expected: &[Entry], found: &[Found]) -> BundleCheck {
    let mut check = BundleCheck::default();
    let (mut e, mut f) = (expected.iter().peekable(), found.iter().peekable());
    loop {
        let order = match (e.peek(), f.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => path_order(&x.path, &y.path),
        };
        match order {
            std::cmp::Ordering::Less => {
                let x = e.next().expect("peeked");
                check.push(Difference::Missing {
                    path: x.manifest_path(),
                });
            }
            std::cmp::Ordering::Greater => {
                let y = f.next().expect("peeked");
                check.push(Difference::Extra {
                    path: manifest_path(&y.path),
                });
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (e.next().expect("peeked"), f.next().expect("peeked"));
                let what = changes(x, y);
                if !what.is_empty() {
                    check.push(Difference::Modified {
                        path: x.manifest_path(),
                        what,
                    });
                }
            }
        }
    }
    check
}

/// What differs between an expected entry and the one found, as words
/// (escaped: a link target is untrusted).
fn changes(expected: &Entry, found: &Found) -> Vec<String> {
    let Some(actual) = &found.entry else {
        return vec![format!("type {} -> special file", expected.type_name())];
    };
    let mut what = match (&expected.kind, &actual.kind) {
        (EntryKind::Symlink { target: want }, EntryKind::Symlink { target: got }) => {
            match want == got {
                true => Vec::new(),
                false => vec![format!(
                    "link {} -> {}",
                    escape::bytes(want),
                    escape::bytes(got)
                )],
            }
        }
        _ => entry_changes(expected, actual, Modes::Canonical),
    };
    let is_file = |e: &Entry| matches!(e.kind, EntryKind::File { .. });
    if is_file(expected) && is_file(actual) && found.mtime != STORE_MTIME {
        what.push(format!(
            "mtime {} (content may have been changed)",
            found.mtime
        ));
    }
    what
}

/// `path` in manifest form (`./a/b`, mtree-encoded).
fn manifest_path(path: &[u8]) -> String {
    Entry {
        path: path.to_vec(),
        mode: 0,
        kind: EntryKind::Directory,
    }
    .manifest_path()
}

/// The names in the open directory `dir` (`path` names it in messages).
fn names(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<CString>> {
    let error = |e: rustix::io::Errno| fruix_core::Error::io("read", path, e.into());
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir).map_err(error)? {
        let name = entry.map_err(error)?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// The entry `name` of the open directory `dir`, never followed; `relative`
/// is its path in the bundle. Only the bundle's own metadata files are read.
fn inspect(dir: BorrowedFd<'_>, name: &CStr, relative: Vec<u8>, bundle: &Path) -> Result<Found> {
    let display = bundle.join(OsStr::from_bytes(&relative));
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| fruix_core::Error::io("inspect", &display, e.into()))?;
    let mode = stat::mode(&st);
    let kind = match stat::file_type(&st) {
        FileType::Directory => Some(EntryKind::Directory),
        FileType::Symlink => {
            let target = rfs::readlinkat(dir, name, Vec::new())
                .map_err(|e| fruix_core::Error::io("read symlink", &display, e.into()))?;
            Some(EntryKind::Symlink {
                target: target.into_bytes(),
            })
        }
        FileType::RegularFile => {
            let metadata = [RESULT_METADATA_FILE, REFERENCES_FILE]
                .iter()
                .any(|n| relative == n.as_bytes());
            let text = match metadata {
                true => read_small_at(
                    dir,
                    &String::from_utf8_lossy(&relative),
                    &display,
                    MAX_OBJECT_METADATA,
                )
                .ok(),
                false => None,
            };
            Some(EntryKind::File {
                size: stat::size(&st),
                // Not read (or too large to be one): a digest no content has.
                sha256: text.map_or([0; 32], |t| Sha256::digest(&t).into()),
            })
        }
        _ => None,
    };
    Ok(Found {
        entry: kind.map(|kind| Entry {
            path: relative.clone(),
            mode: match kind {
                EntryKind::Symlink { .. } => 0,
                _ => mode,
            },
            kind,
        }),
        path: relative,
        mtime: stat::mtime(&st),
    })
}
