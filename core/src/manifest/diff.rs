//! Differences between an expected and an actual tree, entry by entry.

use std::cmp::Ordering;
use std::fmt;

use super::{path_order, Entry, EntryKind, Modes, SPECIAL_BITS};

/// How one path differs between an expected and an actual manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Difference {
    /// Present in both, with different attributes (`what`: type, size, sha256, mode, link).
    Modified {
        /// The entry's manifest path (`./a/b`, mtree-encoded).
        path: String,
        /// What changed, one item each, from [`entry_changes`]:
        /// `size 10 -> 12`, `sha256`, `link`, `type file -> dir`,
        /// `mode 0444 -> 0555`.
        what: Vec<String>,
    },
    /// Expected but absent.
    Missing {
        /// The expected entry's manifest path.
        path: String,
    },
    /// Present but not expected.
    Extra {
        /// The unexpected entry's manifest path.
        path: String,
    },
}

impl Difference {
    /// The manifest path the difference is about.
    pub fn path(&self) -> &str {
        match self {
            Difference::Modified { path, .. }
            | Difference::Missing { path }
            | Difference::Extra { path } => path,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Modified { path, what } => {
                write!(f, "modified: {path} ({})", what.join(", "))
            }
            Difference::Missing { path } => write!(f, "missing: {path}"),
            Difference::Extra { path } => write!(f, "extra: {path}"),
        }
    }
}

/// What differs between two entries for the same path, as words.
pub fn entry_changes(expected: &Entry, actual: &Entry, modes: Modes) -> Vec<String> {
    let mut what = Vec::new();
    let mask = if modes == Modes::Store {
        !SPECIAL_BITS
    } else {
        !0
    };
    match (&expected.kind, &actual.kind) {
        (
            EntryKind::File {
                size: s1,
                sha256: d1,
            },
            EntryKind::File {
                size: s2,
                sha256: d2,
            },
        ) => {
            if s1 != s2 {
                what.push(format!("size {s1} -> {s2}"));
            }
            if d1 != d2 {
                what.push("sha256".to_string());
            }
        }
        (EntryKind::Symlink { target: t1 }, EntryKind::Symlink { target: t2 }) => {
            if t1 != t2 {
                what.push("link".to_string());
            }
        }
        (EntryKind::Directory, EntryKind::Directory) => {}
        _ => what.push(format!(
            "type {} -> {}",
            expected.type_name(),
            actual.type_name()
        )),
    }
    if expected.mode & mask != actual.mode & mask {
        what.push(format!(
            "mode {:04o} -> {:04o}",
            expected.mode & mask,
            actual.mode & mask
        ));
    }
    what
}

/// Merges two path-ordered entry sequences and lists their differences.
pub fn diff_entries<'a>(
    expected: impl IntoIterator<Item = &'a Entry>,
    actual: impl IntoIterator<Item = &'a Entry>,
    modes: Modes,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut e = expected.into_iter().peekable();
    let mut a = actual.into_iter().peekable();
    loop {
        let order = match (e.peek(), a.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => path_order(&x.path, &y.path),
        };
        match order {
            Ordering::Less => {
                let x = e.next().expect("peeked");
                out.push(Difference::Missing {
                    path: x.manifest_path(),
                });
            }
            Ordering::Greater => {
                let y = a.next().expect("peeked");
                out.push(Difference::Extra {
                    path: y.manifest_path(),
                });
            }
            Ordering::Equal => {
                let (x, y) = (e.next().expect("peeked"), a.next().expect("peeked"));
                let what = entry_changes(x, y, modes);
                if !what.is_empty() {
                    out.push(Difference::Modified {
                        path: x.manifest_path(),
                        what,
                    });
                }
            }
        }
    }
    out
}
