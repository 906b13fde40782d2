//! The index of an extraction: everything extracted, as a tree of names.
//!
//! Each node is keyed by its parent's id and its own name, so a path is
//! looked up one component at a time: an entry costs one map probe per
//! component of its path, whatever the archive held before it, and every name
//! is held once however deep it is.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What an archive entry was extracted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
}

impl Kind {
    pub(super) fn noun(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symlink",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Node {
    pub(super) id: u64,
    pub(super) kind: Kind,
    /// A directory's permission bits on disk (0 for other kinds).
    pub(super) mode: u32,
}

/// Everything extracted, as a tree of names (see the module docs).
#[derive(Default)]
pub(super) struct Tree {
    /// Key: the parent's id (8 bytes, little-endian), then the name.
    nodes: HashMap<Box<[u8]>, Node>,
    last_id: u64,
    /// Scratch space for lookup keys.
    key: Vec<u8>,
}

impl Tree {
    /// The staging root's id.
    pub(super) const ROOT: u64 = 0;

    pub(super) fn get(&mut self, parent: u64, name: &[u8]) -> Option<&mut Node> {
        self.key.clear();
        self.key.extend_from_slice(&parent.to_le_bytes());
        self.key.extend_from_slice(name);
        self.nodes.get_mut(self.key.as_slice())
    }

    /// Adds `name` under `parent` (which must not hold it yet); returns its id.
    pub(super) fn insert(&mut self, parent: u64, name: &[u8], kind: Kind, mode: u32) -> u64 {
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
    pub(super) fn kind_of(&mut self, path: &Path) -> Option<Kind> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
