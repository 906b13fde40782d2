//! Garbage collector roots: symlinks in `STATE_DIR/gcroots/`, in the
//! spirit of `/nix/var/nix/gcroots`.
//!
//! - A **direct** root is a symlink in `gcroots/` (or a directory below it)
//!   to a store object, or to a path inside one.
//! - An **indirect** root is a symlink `gcroots/auto/<hash>` to a link
//!   elsewhere (`./result`, made by `fruix build` and `native-build
//!   promote`), which points into the store. Removing `./result` kills the
//!   root: it is then **dead**, listed as such, and removed by the next
//!   collection.
//!
//! Links are read, never followed past the store: a root names the store
//! object its target lies in, or nothing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;

use crate::error::Result;
use crate::verify::is_object_name;

/// The roots directory in a state directory.
pub const GCROOTS_DIR: &str = "gcroots";
/// The directory of indirect roots in [`GCROOTS_DIR`].
pub const AUTO_DIR: &str = "auto";
/// How deep direct roots may be nested in `gcroots/`.
const MAX_DEPTH: usize = 8;

/// One root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Root {
    /// The link that makes it a root: a symlink in `gcroots/`, or for an
    /// indirect root the link it points to (`/home/u/src/result`).
    pub link: PathBuf,
    /// Whether it is indirect (`gcroots/auto/...` names `link`).
    pub indirect: bool,
    /// Where `link` points.
    pub target: Option<PathBuf>,
    /// The store object it keeps alive: `None` for a dead root (its link is
    /// gone, or points outside the store).
    pub object: Option<String>,
    /// For indirect roots, the entry in `gcroots/auto`.
    #[serde(skip)]
    pub auto_entry: Option<PathBuf>,
}

impl Root {
    pub fn is_dead(&self) -> bool {
        self.object.is_none()
    }
}

/// The object of `store` that `target` lies in, if any.
pub fn object_of(store: &Path, target: &Path) -> Option<String> {
    let rest = target.strip_prefix(store).ok()?;
    let name = rest.components().next()?.as_os_str().to_str()?;
    is_object_name(name.as_bytes()).then(|| name.to_string())
}

/// Reads a symlink's target, made absolute against the link's directory.
fn target_of(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    Some(match target.is_absolute() {
        true => target,
        false => link.parent()?.join(target),
    })
}

/// Every root in `state_dir` (dead indirect ones included), for the store
/// at `store`; sorted by link.
pub fn list(state_dir: &Path, store: &Path) -> Result<Vec<Root>> {
    let dir = state_dir.join(GCROOTS_DIR);
    let mut roots = Vec::new();
    let mut todo = vec![(dir.clone(), 0)];
    while let Some((d, depth)) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fruix_core::Error::io("read", &d, e).into()),
        };
        for entry in entries {
            let entry = entry.with_path("read", &d)?;
            let path = entry.path();
            let kind = entry.file_type().with_path("inspect", &path)?;
            if kind.is_dir() && depth < MAX_DEPTH {
                todo.push((path, depth + 1));
            } else if kind.is_symlink() && d == dir.join(AUTO_DIR) {
                let link = target_of(&path);
                let target = link.as_deref().and_then(|l| {
                    // The indirect link itself must still be a symlink.
                    l.symlink_metadata()
                        .ok()
                        .filter(|m| m.file_type().is_symlink())
                        .and_then(|_| target_of(l))
                });
                roots.push(Root {
                    object: target.as_deref().and_then(|t| object_of(store, t)),
                    link: link.unwrap_or_else(|| path.clone()),
                    indirect: true,
                    target,
                    auto_entry: Some(path),
                });
            } else if kind.is_symlink() {
                let target = target_of(&path);
                roots.push(Root {
                    object: target.as_deref().and_then(|t| object_of(store, t)),
                    link: path,
                    indirect: false,
                    target,
                    auto_entry: None,
                });
            }
        }
    }
    roots.sort_by(|a, b| a.link.cmp(&b.link));
    Ok(roots)
}

/// A suffix no other temporary of this process or another has at once:
/// the process id and a counter (promotions run concurrently in a matrix).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Makes `link` a symlink to `target` (replacing a symlink already there,
/// atomically; anything else there is an error) and registers it as an
/// indirect root in `state_dir`. `link` is made absolute first.
pub fn add_indirect(state_dir: &Path, link: &Path, target: &Path) -> Result<PathBuf> {
    let link = std::path::absolute(link).with_path("resolve", link)?;
    if let Ok(m) = link.symlink_metadata() {
        if !m.file_type().is_symlink() {
            return Err(fruix_core::Error::io(
                "replace",
                &link,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists and is not a symlink; choose another --out-link",
                ),
            )
            .into());
        }
    }
    let parent = link.parent().unwrap_or(Path::new("/"));
    let temp = parent.join(format!(
        ".{}.fruix-tmp-{}",
        link.file_name()
            .map_or("result".into(), |n| n.to_string_lossy()),
        unique()
    ));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).with_path("create symlink", &temp)?;
    std::fs::rename(&temp, &link).with_path("create symlink", &link)?;
    let auto = state_dir.join(GCROOTS_DIR).join(AUTO_DIR);
    std::fs::create_dir_all(&auto).with_path("create", &auto)?;
    let hash = hex::encode(&Sha256::digest(link.as_os_str().as_encoded_bytes())[..16]);
    let entry = auto.join(hash);
    let temp = auto.join(format!(".tmp-{}", unique()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(&link, &temp).with_path("create symlink", &temp)?;
    std::fs::rename(&temp, &entry).with_path("create symlink", &entry)?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str =
        "0123456789abcdef0123456789abcdef01234567-fruix-native-build-result-15.0-STABLE-local";

    #[test]
    fn direct_indirect_and_dead_roots_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = (dir.path().join("state"), dir.path().join("store"));
        std::fs::create_dir_all(store.join(NAME)).unwrap();
        let gcroots = state.join(GCROOTS_DIR);
        std::fs::create_dir_all(gcroots.join("profiles")).unwrap();
        std::os::unix::fs::symlink(
            store.join(NAME).join("artifacts"),
            gcroots.join("profiles/p"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc", gcroots.join("elsewhere")).unwrap();
        let result = add_indirect(&state, &dir.path().join("result"), &store.join(NAME)).unwrap();
        let gone = add_indirect(&state, &dir.path().join("gone"), &store.join(NAME)).unwrap();
        std::fs::remove_file(&gone).unwrap();
        let roots = list(&state, &store).unwrap();
        let summary: Vec<(&Path, bool, Option<&str>)> = roots
            .iter()
            .map(|r| (r.link.as_path(), r.indirect, r.object.as_deref()))
            .collect();
        let mut expected = [
            (gcroots.join("elsewhere"), false, None),
            (gcroots.join("profiles/p"), false, Some(NAME)),
            (result.clone(), true, Some(NAME)),
            (gone.clone(), true, None),
        ];
        expected.sort();
        let expected: Vec<(&Path, bool, Option<&str>)> = expected
            .iter()
            .map(|(p, i, o)| (p.as_path(), *i, *o))
            .collect();
        assert_eq!(summary, expected);
        // Replacing the out-link keeps one root for it.
        add_indirect(&state, &result, &store.join(NAME)).unwrap();
        assert_eq!(list(&state, &store).unwrap().len(), 4);
        // Links made at once from several threads (a matrix promotes cells
        // concurrently) all become roots.
        std::thread::scope(|s| {
            for i in 0..8 {
                let (state, store) = (&state, &store);
                let link = dir.path().join(format!("cell-{i}"));
                s.spawn(move || add_indirect(state, &link, &store.join(NAME)).unwrap());
            }
        });
        assert_eq!(list(&state, &store).unwrap().len(), 12);
        // A file where the link would go is refused.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(add_indirect(&state, &dir.path().join("file"), &store.join(NAME)).is_err());
    }
}
