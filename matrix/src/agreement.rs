//! Which cells must agree, whether they do, and where two artifacts differ.
//!
//! Cells must agree when they differ only along the matrix's `agree-across`
//! axes (by default executor and machine): same source, same policy,
//! whoever built it. For each artifact, the tree signatures of the passed
//! cells of a group are compared; cells with one signature form a class, and
//! the group agrees on the artifact when there is one class. Two
//! disagreeing artifacts are then compared file by file from their
//! manifests ([`diff_manifests`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fruix_core::manifest::{diff_entries, Difference, Entry, EntryKind, Modes};

use crate::axis::Axis;
use crate::expand::Cell;

/// Groups of cells (indexes, in matrix order) that must agree: cells equal
/// along every axis not in `across`. Groups of one cell are left out.
pub fn groups(cells: &[Cell], across: &[Axis]) -> Vec<Vec<usize>> {
    let key = |c: &Cell| -> Vec<Option<String>> {
        Axis::ALL
            .into_iter()
            .filter(|a| !across.contains(a))
            .map(|a| c.value(a).map(str::to_string))
            .collect()
    };
    // Groups in order of their first cell; each key found in one lookup
    // (a matrix of thousands of cells, each its own group, stays linear).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    for (i, cell) in cells.iter().enumerate() {
        let group = *by_key.entry(key(cell)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(i);
    }
    groups.retain(|m| m.len() > 1);
    groups
}

/// One artifact compared across the passed cells of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The artifact's name (`world`, `kernel`, ...), a key of the cells'
    /// promoted artifacts.
    pub artifact: String,
    /// The cells compared, in matrix order.
    pub cells: Vec<usize>,
    /// Cells by signature, in order of first appearance; `None` is a cell
    /// without that artifact.
    pub classes: Vec<(Option<String>, Vec<usize>)>,
}

impl Comparison {
    /// Whether every cell has the same signature.
    pub fn agrees(&self) -> bool {
        self.classes.len() <= 1
    }
}

/// Compares every artifact across `members`: each passed cell of a group
/// with its artifacts' signatures. Needs two cells or more.
pub fn compare(members: &[(usize, BTreeMap<String, String>)]) -> Vec<Comparison> {
    if members.len() < 2 {
        return Vec::new();
    }
    let artifacts: BTreeSet<&String> = members.iter().flat_map(|(_, a)| a.keys()).collect();
    artifacts
        .into_iter()
        .map(|artifact| {
            let mut classes: Vec<(Option<String>, Vec<usize>)> = Vec::new();
            for (cell, signatures) in members {
                let signature = signatures.get(artifact).cloned();
                match classes.iter_mut().find(|(s, _)| *s == signature) {
                    Some((_, cells)) => cells.push(*cell),
                    None => classes.push((signature, vec![*cell])),
                }
            }
            Comparison {
                artifact: artifact.clone(),
                cells: members.iter().map(|(c, _)| *c).collect(),
                classes,
            }
        })
        .collect()
}

/// One side of a differing path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileState {
    /// `file`, `dir` or `link`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The file's size in bytes; files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file's SHA-256, 64 lowercase hex digits; files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Octal, as in the manifest (`0444`); absent for symlinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The symlink's target, as stored (bytes that are not UTF-8 replaced);
    /// symlinks only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl FileState {
    fn of(entry: &Entry) -> FileState {
        let (size, sha256, link) = match &entry.kind {
            EntryKind::File { size, sha256 } => (Some(*size), Some(hex::encode(sha256)), None),
            EntryKind::Symlink { target } => (
                None,
                None,
                Some(String::from_utf8_lossy(target).into_owned()),
            ),
            EntryKind::Directory => (None, None, None),
        };
        FileState {
            kind: entry.type_name(),
            size,
            sha256,
            mode: (!matches!(entry.kind, EntryKind::Symlink { .. }))
                .then(|| format!("{:04o}", entry.mode)),
            link,
        }
    }
}

/// A path in which two artifact trees differ, with both sides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileDifference {
    /// The manifest path (`./usr/share/misc/build-stamp`).
    pub path: String,
    /// `modified`, `only-in-first` or `only-in-second`.
    pub change: &'static str,
    /// What the path is in the first tree; `None` (`null`) when `change` is
    /// `only-in-second`.
    pub first: Option<FileState>,
    /// What the path is in the second tree; `None` (`null`) when `change` is
    /// `only-in-first`.
    pub second: Option<FileState>,
}

/// The paths in which two manifests differ (store modes), in path order.
pub fn diff_manifests(first: &[Entry], second: &[Entry]) -> Vec<FileDifference> {
    let by_path = |entries: &[Entry]| -> HashMap<String, FileState> {
        entries
            .iter()
            .map(|e| (e.manifest_path(), FileState::of(e)))
            .collect()
    };
    let (a, b) = (by_path(first), by_path(second));
    diff_entries(first, second, Modes::Store)
        .into_iter()
        .map(|d| {
            let change = match d {
                Difference::Modified { .. } => "modified",
                Difference::Missing { .. } => "only-in-first",
                Difference::Extra { .. } => "only-in-second",
            };
            let path = d.path().to_string();
            FileDifference {
                first: a.get(&path).cloned(),
                second: b.get(&path).cloned(),
                change,
                path,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::cells;
    use crate::file::MatrixFile;
    use std::path::Path;

    fn matrix(text: &str) -> Vec<Cell> {
        cells(&MatrixFile::parse(Path::new("/m.scm"), text).unwrap()).unwrap()
    }

    #[test]
    fn cells_agree_across_executors_and_machines_by_default() {
        let cells = matrix(crate::file::EXAMPLE);
        // local-GENERIC, host-initiated-GENERIC, host-initiated-MINIMAL,
        // guest-self-hosted-GENERIC-builder-2, guest-self-hosted-MINIMAL
        assert_eq!(
            groups(&cells, &[Axis::Executor, Axis::Machine]),
            [vec![0, 1, 3], vec![2, 4]]
        );
        assert_eq!(
            groups(&cells, &[Axis::Executor]),
            [vec![0, 1], vec![2, 4]],
            "the pinned cell stands alone when machines need not agree"
        );
        assert!(groups(&cells, &[]).is_empty());
    }

    fn signatures(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, s)| (a.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn signatures_are_grouped_into_classes() {
        let members = [
            (0, signatures(&[("kernel", "k"), ("world", "w1")])),
            (1, signatures(&[("kernel", "k"), ("world", "w2")])),
            (3, signatures(&[("kernel", "k"), ("world", "w1")])),
        ];
        let out = compare(&members);
        assert_eq!(out[0].artifact, "kernel");
        assert!(out[0].agrees());
        assert!(!out[1].agrees());
        assert_eq!(
            out[1].classes,
            [
                (Some("w1".into()), vec![0, 3]),
                (Some("w2".into()), vec![1])
            ]
        );
        assert!(compare(&members[..1]).is_empty());
        let missing = compare(&[members[0].clone(), (4, signatures(&[("kernel", "k")]))]);
        assert!(
            !missing[1].agrees(),
            "an artifact one cell lacks is a disagreement"
        );
    }

    fn file(path: &str, content: &[u8], mode: u32) -> Entry {
        use sha2::Digest;
        Entry {
            path: path.as_bytes().to_vec(),
            mode,
            kind: EntryKind::File {
                size: content.len() as u64,
                sha256: sha2::Sha256::digest(content).into(),
            },
        }
    }

    #[test]
    fn manifest_differences_show_both_sides() {
        let root = Entry {
            path: Vec::new(),
            mode: 0o555,
            kind: EntryKind::Directory,
        };
        let first = [
            root.clone(),
            file("bin/sh", b"sh", 0o555),
            file("stamp", b"one", 0o444),
            file("x", b"x", 0o444),
        ];
        let second = [
            root,
            file("bin/sh", b"sh", 0o555),
            file("stamp", b"three", 0o555),
            file("y", b"y", 0o444),
        ];
        let d = diff_manifests(&first, &second);
        let paths: Vec<(&str, &str)> = d.iter().map(|d| (d.path.as_str(), d.change)).collect();
        assert_eq!(
            paths,
            [
                ("./stamp", "modified"),
                ("./x", "only-in-first"),
                ("./y", "only-in-second")
            ]
        );
        let (a, b) = (d[0].first.as_ref().unwrap(), d[0].second.as_ref().unwrap());
        assert_eq!((a.size, b.size), (Some(3), Some(5)));
        assert_eq!(
            (a.mode.as_deref(), b.mode.as_deref()),
            (Some("0444"), Some("0555"))
        );
        assert_ne!(a.sha256, b.sha256);
        assert!(d[1].second.is_none() && d[2].first.is_none());
        let json = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(json["first"]["type"], "file");
    }
}
