//! Questions about the registered objects: `store list`, `store info` and
//! `store query`, answered from the registry (never by walking objects).

use std::path::{Path, PathBuf};

use crate::bundle::read_bundle;
use crate::check::Identity;
use crate::db::{Filter, Kind, ObjectRecord};
use crate::error::{Error, Result};
use crate::roots::{self, Root};
use crate::store::Store;
use crate::verify::resolve_object;

/// One object, with its path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The object's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// What the registry records about it.
    #[serde(flatten)]
    pub record: ObjectRecord,
}

/// The valid objects matching `filter`, by name.
pub fn list_store(store: &Store, filter: &Filter) -> Result<Vec<Listed>> {
    Ok(store
        .db()
        .list(filter)?
        .into_iter()
        .map(|record| Listed {
            path: store.path().join(&record.name),
            record,
        })
        .collect())
}

/// The name of the valid object `path` (as a user gave it) names: a store
/// object ([`Error::NotAStoreObject`] otherwise) that is registered
/// ([`Error::NotValid`] otherwise). A symlink the user names (such as
/// `./result`) is read once: its target must be the object.
pub fn resolve_valid(store: &Store, path: &Path) -> Result<String> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path)
            .ok()
            .map(|t| path.parent().unwrap_or(Path::new(".")).join(t)),
        _ => None,
    };
    let object = resolve_object(store, target.as_deref().unwrap_or(path)).map_err(|e| match e {
        Error::NotAStoreObject { store, .. } => Error::NotAStoreObject {
            path: path.to_path_buf(),
            store,
        },
        other => other,
    })?;
    let name = object
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if store.is_valid(&name)? {
        Ok(name)
    } else {
        Err(Error::NotValid { path: object })
    }
}

/// What `store info` says about one object, in the spirit of
/// `nix path-info --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// The object's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// What the registry records about it.
    #[serde(flatten)]
    pub record: ObjectRecord,
    /// Its size and that of everything it references, transitively;
    /// `None` when one of those sizes is invalid in the registry.
    pub closure_size: Option<u64>,
    /// The store paths of the objects it references directly, sorted.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub references: Vec<PathBuf>,
    /// For a source object, its git commit and whether the worktree was
    /// dirty; for a bundle, the commit of the source it built.
    pub commit: Option<String>,
    /// For a source object, whether its worktree differed from `commit`
    /// when it was added; `None` for other objects, or when not recorded.
    pub dirty: Option<bool>,
    /// Its signatures (`name:BASE64`), see [`crate::sign`].
    pub signatures: Vec<String>,
}

/// [`Info`] of the valid object `name`.
pub fn info(store: &Store, name: &str) -> Result<Info> {
    let db = store.db();
    let record = db.get(name)?.ok_or_else(|| Error::NotValid {
        path: store.path().join(name),
    })?;
    // Unknown when a size in the closure is invalid.
    let mut closure_size = Some(0u64);
    for n in db.closure(&[name.to_string()])? {
        let size = db.get(&n)?.map_or(Some(0), |r| r.valid_size());
        closure_size = closure_size.zip(size).map(|(a, b)| a.saturating_add(b));
    }
    let references = db
        .neighbours(name, false)?
        .into_iter()
        .map(|n| store.path().join(n))
        .collect();
    let signatures = db.signatures(name)?;
    drop(db);
    let path = store.path().join(name);
    let (commit, dirty) = match record.kind {
        Kind::Source => match Identity::read(&path)? {
            Identity::Source(s) => (s.facts.commit, s.facts.dirty),
            Identity::Artifact(_) => (None, None),
        },
        Kind::Bundle => (read_bundle(&path)?.source.commit, None),
        Kind::Artifact => (None, None),
    };
    Ok(Info {
        path,
        record,
        closure_size,
        references,
        commit,
        dirty,
        signatures,
    })
}

/// What `store query` asks about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// The objects it references directly.
    References,
    /// The objects that reference it directly.
    Referrers,
    /// Its closure: it and everything it references, transitively.
    Requisites,
    /// The roots that keep it alive.
    Roots,
}

/// The answer to `question` about the valid object `name`: store paths, or
/// for [`Question::Roots`] the roots' links.
pub fn query(
    store: &Store,
    state_dir: &Path,
    name: &str,
    question: Question,
) -> Result<Vec<PathBuf>> {
    let in_store = |names: Vec<String>| names.into_iter().map(|n| store.path().join(n)).collect();
    Ok(match question {
        Question::References => in_store(store.db().neighbours(name, false)?),
        Question::Referrers => in_store(store.db().neighbours(name, true)?),
        Question::Requisites => in_store(store.db().closure(&[name.to_string()])?),
        Question::Roots => {
            let mut out = Vec::new();
            for root in roots::list(state_dir, store.path())? {
                if keeps(store, &root, name)? {
                    out.push(root.link);
                }
            }
            out
        }
    })
}

/// Whether `root` keeps object `name` alive.
fn keeps(store: &Store, root: &Root, name: &str) -> Result<bool> {
    let Some(object) = &root.object else {
        return Ok(false);
    };
    Ok(store
        .db()
        .closure(std::slice::from_ref(object))?
        .iter()
        .any(|n| n == name))
}
