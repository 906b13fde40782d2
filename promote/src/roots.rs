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
//! A link made as a root ([`add_indirect`]) in `gcroots/` is a direct
//! root, as in Nix: not registered too, which listed it twice.
//!
//! Several stores may share one state directory (as root it is always
//! `/var/lib/fruix`, whatever `--store` says), so a root is only this
//! store's business when its target lies in this store (however the store's
//! path is spelt, or through a chain of links), or when it is dead: its
//! link is gone, or its target lies in this store, in an object no longer
//! there (one a repair or a deletion removed). A root whose target exists
//! outside this store belongs to another store: it is neither listed nor
//! removed here. One whose target does not exist outside this store (a
//! store on a disk not mounted now, a loop of links) **leads nowhere**:
//! it is listed, as it may be this store's, but never removed, as it may
//! be another's. Roots may be nested in directories of `gcroots/` at any
//! depth.
//!
//! Links are read, never written through: a root names the store object its
//! target lies in, or nothing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;

use crate::error::Result;
use crate::verify::is_object_name;

/// The roots directory in a state directory.
pub const GCROOTS_DIR: &str = "gcroots";
/// The directory of indirect roots in [`GCROOTS_DIR`].
pub const AUTO_DIR: &str = "auto";

/// One root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Root {
    /// The link that makes it a root: a symlink in `gcroots/`, or for an
    /// indirect root the link it points to (`/home/u/src/result`).
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub link: PathBuf,
    /// Whether it is indirect (`gcroots/auto/...` names `link`).
    pub indirect: bool,
    /// Where `link` points.
    #[serde(serialize_with = "fruix_core::escape::serialize_opt_path")]
    pub target: Option<PathBuf>,
    /// The store object it keeps alive: `None` for a dead root (its link is
    /// gone, or its target no longer exists), or for one that points into
    /// this store but at no object.
    pub object: Option<String>,
    /// For indirect roots, the entry in `gcroots/auto`.
    #[serde(skip)]
    pub auto_entry: Option<PathBuf>,
    /// Whether its link is gone or its target lies in an object no longer
    /// in this store (see [`Root::is_dead`]).
    dead: bool,
    /// Whether its target does not exist, and not in this store (see
    /// [`Root::leads_nowhere`]).
    #[serde(rename = "leads_nowhere")]
    nowhere: bool,
}

impl Root {
    /// Whether it is dead: its link is gone, or its target no longer
    /// exists. A collection removes the `gcroots/auto` entry of a dead
    /// indirect root. A root whose target exists in this store but in no
    /// object (the store directory itself, `.links`) keeps nothing alive
    /// (`object` is `None`) yet is not dead: as Nix does with such
    /// `gcroots/auto` entries, its registration is left alone.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether it leads nowhere: its target does not exist, and does not
    /// lie in this store (a store on a disk not mounted now, a loop of
    /// links). It keeps nothing alive here, but may be another store's
    /// root: a collection never removes it.
    pub fn leads_nowhere(&self) -> bool {
        self.nowhere
    }
}

/// The object of `store` that `target` lies in, if any (lexically: `target`
/// spelt from `store`'s path).
pub fn object_of(store: &Path, target: &Path) -> Option<String> {
    let rest = target.strip_prefix(store).ok()?;
    first_object(rest)
}

/// The object named by the first component of `rest`, a path inside a store.
fn first_object(rest: &Path) -> Option<String> {
    let name = rest.components().next()?.as_os_str().to_str()?;
    is_object_name(name.as_bytes()).then(|| name.to_string())
}

/// Where `rest`, a path inside the store at `store`, lies: in the object
/// its first component names, unless that object no longer exists (a
/// repair or a deletion removed it): then the root is dead.
fn in_store(store: &Path, rest: &Path) -> Place {
    match first_object(rest) {
        Some(name)
            if std::fs::symlink_metadata(store.join(&name))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            Place::Gone
        }
        object => Place::Store(object),
    }
}

/// Where a root's target lies, seen from one store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// In this store: in the object named, or in no object.
    Store(Option<String>),
    /// It lies in this store, in an object no longer there: the root is
    /// dead.
    Gone,
    /// It does not exist, and does not lie in this store (another store's,
    /// perhaps not mounted now, or a loop of links): listed, never removed.
    Nowhere,
    /// It exists outside this store (or cannot be told apart from such a
    /// path: it cannot be read): another store's root, left alone.
    Elsewhere,
}

/// Where `target` lies, for the store whose canonical path is `store`:
/// spelt from the store's path; spelt from another path to the store (an
/// ancestor of `target` that resolves to the store, the shortest first); or
/// resolved, through its links, into the store.
fn locate(store: &Path, target: &Path) -> Place {
    // Through `..`, a prefix may lead anywhere: such a target is only
    // ever resolved.
    let plain = !target
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    if plain {
        if let Ok(rest) = target.strip_prefix(store) {
            return in_store(store, rest);
        }
        let mut ancestors: Vec<&Path> = target.ancestors().skip(1).collect();
        ancestors.reverse();
        for ancestor in ancestors {
            if std::fs::canonicalize(ancestor).is_ok_and(|a| a == store) {
                let rest = target.strip_prefix(ancestor).unwrap_or(target);
                return in_store(store, rest);
            }
        }
    }
    // A target that does not resolve (a link into a missing object, or
    // into a store not mounted now) lies where its nearest ancestor that
    // does resolve puts it.
    let missing = match std::fs::canonicalize(target) {
        Ok(resolved) => {
            return match resolved.strip_prefix(store) {
                Ok(rest) => in_store(store, rest),
                Err(_) => Place::Elsewhere,
            }
        }
        Err(e) => {
            matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) || e.raw_os_error() == Some(libc::ELOOP)
        }
    };
    match resolved_prefix(target).map(|r| r.strip_prefix(store).map(Path::to_path_buf)) {
        Some(Ok(rest)) => in_store(store, &rest),
        _ if missing => Place::Nowhere,
        // Unreadable...: it may well exist; keep it.
        _ => Place::Elsewhere,
    }
}

/// `target`, which does not resolve, spelt from its nearest ancestor that
/// does, resolved: `None` when what follows that ancestor goes up (`..`)
/// and so cannot be told without resolving what is missing.
fn resolved_prefix(target: &Path) -> Option<PathBuf> {
    let (ancestor, resolved) = target
        .ancestors()
        .skip(1)
        .find_map(|a| Some((a, std::fs::canonicalize(a).ok()?)))?;
    let rest = target.strip_prefix(ancestor).ok()?;
    let plain = rest
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    plain.then(|| resolved.join(rest))
}

/// Reads a symlink's target, made absolute against the link's directory.
fn target_of(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    Some(match target.is_absolute() {
        true => target,
        false => link.parent()?.join(target),
    })
}

/// The root made by `link` (pointing at `target`), unless it is another
/// store's: its target exists outside `store`.
fn root(
    store: &Path,
    link: PathBuf,
    indirect: bool,
    target: Option<PathBuf>,
    auto_entry: Option<PathBuf>,
) -> Option<Root> {
    let (object, dead, nowhere) = match target.as_deref().map(|t| locate(store, t)) {
        None | Some(Place::Gone) => (None, true, false),
        Some(Place::Store(object)) => (object, false, false),
        Some(Place::Nowhere) => (None, false, true),
        Some(Place::Elsewhere) => return None,
    };
    Some(Root {
        link,
        indirect,
        target,
        object,
        auto_entry,
        dead,
        nowhere,
    })
}

/// Every root in `state_dir` that is the business of the store at `store`
/// (dead indirect ones included; see the module documentation); sorted by
/// link. A state directory that is not there is refused
/// ([`Error::NoStateDir`](crate::error::Error::NoStateDir)): its roots
/// could keep nothing, so a mistyped `--state-dir` would make every
/// object look unrooted.
pub fn list(state_dir: &Path, store: &Path) -> Result<Vec<Root>> {
    if !std::fs::metadata(state_dir).is_ok_and(|m| m.is_dir()) {
        return Err(crate::error::Error::NoStateDir {
            state_dir: state_dir.to_path_buf(),
        });
    }
    let store = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf());
    // Absolute, so that every link listed is (a relative `--state-dir`).
    let dir = std::path::absolute(state_dir.join(GCROOTS_DIR)).with_path("resolve", state_dir)?;
    let mut roots = Vec::new();
    // Only directories are entered, never a symlink to one: no loop, and
    // a tree deeper than a path can name fails to read, loudly.
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fruix_core::Error::io("read", &d, e).into()),
        };
        for entry in entries {
            let entry = entry.with_path("read", &d)?;
            let path = entry.path();
            let kind = entry.file_type().with_path("inspect", &path)?;
            if d == dir && entry.file_name() == AUTO_DIR && !kind.is_dir() {
                return Err(auto_not_a_directory(&path).into());
            }
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_symlink() && d == dir.join(AUTO_DIR) {
                let link = target_of(&path);
                let target = link.as_deref().and_then(|l| {
                    // The indirect link itself must still be a symlink.
                    l.symlink_metadata()
                        .ok()
                        .filter(|m| m.file_type().is_symlink())
                        .and_then(|_| target_of(l))
                });
                let link = link.unwrap_or_else(|| path.clone());
                roots.extend(root(&store, link, true, target, Some(path)));
            } else if kind.is_symlink() {
                let target = target_of(&path);
                roots.extend(root(&store, path, false, target, None));
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
/// indirect root in `state_dir`, unless it lies in `gcroots/`, where it is
/// a direct root: [`prepare_indirect`], then [`PendingRoot::finish`].
pub fn add_indirect(state_dir: &Path, link: &Path, target: &Path) -> Result<PathBuf> {
    prepare_indirect(state_dir, link, target)?.finish()
}

/// A root being added ([`prepare_indirect`]): its registration in
/// `gcroots/auto/` (none for a direct root, whose link lies in `gcroots/`)
/// and its link, each made under a temporary name, which
/// [`PendingRoot::finish`] renames into place. Dropped unfinished, both
/// temporaries go: the state directory and the link are as they were.
#[derive(Debug)]
pub struct PendingRoot {
    /// `None` for a direct root.
    registration: Option<PendingRegistration>,
    /// The state directory.
    state_dir: PathBuf,
    /// The link, absolute.
    link: PathBuf,
    /// The link's temporary; `None` once renamed.
    link_temp: Option<PathBuf>,
}

/// Makes everything the root of `link` to `target` needs in `state_dir`
/// and beside `link` (which is made absolute first), under temporary
/// names: what can fail for want of room (a full state directory, one
/// with no free inode) fails here, before the caller does what the root
/// must keep (publishing the object it names). `target` need not exist
/// yet. Something other than a symlink at `link` is refused. A `link`
/// whose directory lies in `gcroots/` is a direct root: nothing is
/// registered for it ([`PendingRoot::is_indirect`]).
pub fn prepare_indirect(state_dir: &Path, link: &Path, target: &Path) -> Result<PendingRoot> {
    let link = std::path::absolute(link).with_path("resolve", link)?;
    if let Ok(m) = link.symlink_metadata() {
        if !m.file_type().is_symlink() {
            return Err(fruix_core::Error::io(
                "replace",
                &link,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "it exists and is not a symlink, which fruix never replaces; choose another path",
                ),
            )
            .into());
        }
    }
    let registration = match in_gcroots(state_dir, &link) {
        true => None,
        false => Some(prepare_registration(state_dir, &link)?),
    };
    let parent = link.parent().unwrap_or(Path::new("/"));
    let prefix = format!(
        ".{}.fruix-tmp-",
        link.file_name()
            .map_or("result".into(), |n| n.to_string_lossy())
    );
    remove_dead_temporaries(parent, &prefix);
    let temp = parent.join(format!("{prefix}{}", unique()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).with_path("create symlink", &link)?;
    Ok(PendingRoot {
        registration,
        state_dir: state_dir.to_path_buf(),
        link,
        link_temp: Some(temp),
    })
}

impl PendingRoot {
    /// Whether it is an indirect root (registered in `gcroots/auto/`), not
    /// a direct one (its link in `gcroots/`).
    pub fn is_indirect(&self) -> bool {
        self.registration.is_some()
    }

    /// Registers the root, then makes its link (renaming each temporary
    /// into place, which takes no room): a failure leaves the link as it
    /// was, never pointing at an object that no root keeps, and takes
    /// back a registration this root made. A direct root, once linked,
    /// drops the registration an earlier fruix made for its link. Returns
    /// the link.
    pub fn finish(mut self) -> Result<PathBuf> {
        if let Some(registration) = &mut self.registration {
            registration.commit()?;
        }
        let temp = self.link_temp.take().expect("finished once");
        if let Err(e) = std::fs::rename(&temp, &self.link) {
            let _ = std::fs::remove_file(&temp);
            if let Some(registration) = self.registration.as_ref().filter(|r| !r.registered) {
                let _ = std::fs::remove_file(&registration.entry);
            }
            return Err(fruix_core::Error::io("create symlink", &self.link, e).into());
        }
        if self.registration.is_none() {
            unregister(&self.state_dir, &self.link);
        }
        Ok(self.link.clone())
    }
}

/// Whether the absolute path `link` makes a direct root in `state_dir`:
/// its directory, resolved, lies in `gcroots/` (resolved: [`list`] reads
/// it through a symlink, and enters the directories below it), but not in
/// `gcroots/auto/`, whose entries are registrations.
fn in_gcroots(state_dir: &Path, link: &Path) -> bool {
    let gcroots = std::fs::canonicalize(state_dir.join(GCROOTS_DIR));
    let parent = link.parent().map(std::fs::canonicalize);
    match (gcroots, parent) {
        (Ok(gcroots), Some(Ok(parent))) => {
            parent.starts_with(&gcroots) && !parent.starts_with(gcroots.join(AUTO_DIR))
        }
        _ => false,
    }
}

/// Removes the entry in `gcroots/auto/` registering the absolute path
/// `link`, a direct root now (an earlier fruix registered links in
/// `gcroots/` too, listing each root twice). Best effort, following no
/// symlink to `auto`, and only an entry naming `link`.
fn unregister(state_dir: &Path, link: &Path) {
    use rustix::fs::{openat, readlinkat, unlinkat, AtFlags, Mode, OFlags};
    let gcroots = state_dir.join(GCROOTS_DIR);
    let flags = OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY;
    let Ok(parent) = openat(rustix::fs::CWD, &gcroots, flags, Mode::empty()) else {
        return;
    };
    let Ok(dir) = openat(&parent, AUTO_DIR, flags | OFlags::NOFOLLOW, Mode::empty()) else {
        return;
    };
    let name = registration_name(link);
    let names_link = readlinkat(&dir, name.as_str(), Vec::new())
        .is_ok_and(|target| target.as_bytes() == link.as_os_str().as_encoded_bytes());
    if names_link {
        let _ = unlinkat(&dir, name.as_str(), AtFlags::empty());
    }
}

/// The name in `gcroots/auto/` of the entry registering the absolute path
/// `link`: named after the path, so that a link registered again replaces
/// its entry.
fn registration_name(link: &Path) -> String {
    hex::encode(&Sha256::digest(link.as_os_str().as_encoded_bytes())[..16])
}

impl Drop for PendingRoot {
    fn drop(&mut self) {
        if let Some(temp) = self.link_temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Removes the symlinks in `dir` named `PREFIX<pid>-<n>` ([`unique`]) of a
/// process no longer running: the temporaries of a link that a process
/// killed before it renamed one into place left (nothing else removes
/// them). Best effort: what cannot be read or removed stays.
fn remove_dead_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<i32>().ok()))
        else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
            rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
        });
        if gone && entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Registers the absolute path `link` as an indirect root in `state_dir`:
/// its entry in `gcroots/auto/` (named after the link's path, so that a
/// link registered again replaces its entry), made atomically. Returns the
/// entry, and whether it was there already (a caller whose link then
/// cannot be made removes an entry it made). [`add_indirect`] makes the
/// link by path; a caller making it otherwise (by descriptor) registers
/// it with this.
pub fn register_indirect(state_dir: &Path, link: &Path) -> fruix_core::Result<(PathBuf, bool)> {
    let mut registration = prepare_registration(state_dir, link)?;
    registration.commit()?;
    Ok((registration.entry.clone(), registration.registered))
}

/// The entry of an indirect root in `gcroots/auto/`, made under a
/// temporary name ([`prepare_registration`]) and renamed into place by
/// [`PendingRegistration::commit`]; dropped uncommitted, the temporary
/// goes.
#[derive(Debug)]
struct PendingRegistration {
    /// `gcroots/auto`.
    dir: rustix::fd::OwnedFd,
    /// `gcroots/auto/HASH`.
    entry: PathBuf,
    /// HASH.
    hash: String,
    /// The temporary's name in `dir`; `None` once committed.
    temp: Option<String>,
    /// Whether the entry was there before.
    registered: bool,
}

/// Makes the entry registering the absolute path `link` in `state_dir`,
/// under a temporary name in `gcroots/auto/`.
fn prepare_registration(state_dir: &Path, link: &Path) -> fruix_core::Result<PendingRegistration> {
    use rustix::fs::{statat, symlinkat, unlinkat, AtFlags};
    let gcroots = state_dir.join(GCROOTS_DIR);
    std::fs::create_dir_all(&gcroots).with_path("create", &gcroots)?;
    let auto = gcroots.join(AUTO_DIR);
    let dir = open_auto(&gcroots, &auto)?;
    let hash = registration_name(link);
    let registered = statat(&dir, hash.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok();
    let temp = format!(".tmp-{}", unique());
    let _ = unlinkat(&dir, temp.as_str(), AtFlags::empty());
    symlinkat(link, &dir, temp.as_str())
        .map_err(|e| fruix_core::Error::io("create symlink", auto.join(&temp), e.into()))?;
    Ok(PendingRegistration {
        dir,
        entry: auto.join(&hash),
        hash,
        temp: Some(temp),
        registered,
    })
}

impl PendingRegistration {
    /// Renames the entry into place (the temporary is removed if that
    /// fails).
    fn commit(&mut self) -> fruix_core::Result<()> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        if let Err(e) =
            rustix::fs::renameat(&self.dir, temp.as_str(), &self.dir, self.hash.as_str())
        {
            let _ = rustix::fs::unlinkat(&self.dir, temp.as_str(), rustix::fs::AtFlags::empty());
            return Err(fruix_core::Error::io(
                "create symlink",
                &self.entry,
                e.into(),
            ));
        }
        Ok(())
    }
}

impl Drop for PendingRegistration {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = rustix::fs::unlinkat(&self.dir, temp.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// Opens `gcroots/auto` (`auto`) in `gcroots`, made if missing, as a
/// directory and following no symlink: [`list`] reads it the same way, so
/// that no root is written where the collector does not look.
fn open_auto(gcroots: &Path, auto: &Path) -> fruix_core::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let parent = openat(
        rustix::fs::CWD,
        gcroots,
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| fruix_core::Error::io("open", gcroots, e.into()))?;
    match mkdirat(&parent, AUTO_DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(fruix_core::Error::io("create", auto, e.into())),
    }
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    openat(&parent, AUTO_DIR, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => auto_not_a_directory(auto),
        e => fruix_core::Error::io("open", auto, e.into()),
    })
}

/// A `gcroots/auto` that is not a directory of its own (a symlink, a
/// file): refused, by those who write roots there and by the collector.
fn auto_not_a_directory(auto: &Path) -> fruix_core::Error {
    fruix_core::Error::io(
        "open",
        auto,
        std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it is not a directory (fruix follows no symlink there, so that no root is written \
             where the collector does not look); make it a directory of its own",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str =
        "0123456789abcdef0123456789abcdef01234567-fruix-native-build-result-15.0-STABLE-local";

    /// A state directory (its `gcroots` made) and a store holding [`NAME`],
    /// in `dir`.
    fn state_and_store(dir: &Path) -> (PathBuf, PathBuf) {
        let (state, store) = (dir.join("state"), dir.join("store"));
        std::fs::create_dir_all(store.join(NAME)).unwrap();
        std::fs::create_dir_all(state.join(GCROOTS_DIR)).unwrap();
        (state, store)
    }

    /// Regression: the link was made before its root was registered, so a
    /// state directory that could take no root (full, its `auto` not a
    /// directory) left `./result` pointing at an object no root kept, which
    /// the next collection removed.
    #[test]
    fn a_root_that_cannot_be_registered_leaves_the_link_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state_and_store(dir.path());
        std::fs::write(state.join(GCROOTS_DIR).join(AUTO_DIR), "").unwrap();
        let link = dir.path().join("result");
        std::os::unix::fs::symlink("/old", &link).unwrap();
        add_indirect(&state, &link, &store.join(NAME)).unwrap_err();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/old"));
        // A link that cannot be made takes its new registration back.
        std::fs::remove_file(state.join(GCROOTS_DIR).join(AUTO_DIR)).unwrap();
        let nowhere = dir.path().join("no-such-dir/result");
        add_indirect(&state, &nowhere, &store.join(NAME)).unwrap_err();
        let auto = state.join(GCROOTS_DIR).join(AUTO_DIR);
        assert_eq!(
            std::fs::read_dir(&auto).unwrap().count(),
            0,
            "no entry, no temporary"
        );
        add_indirect(&state, &link, &store.join(NAME)).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), store.join(NAME));
        assert_eq!(list(&state, &store).unwrap().len(), 1);
    }

    /// Regression: a promotion made its root after it had published its
    /// objects, and one that could not (a full state directory) failed
    /// with them published. A root is prepared first now: dropped
    /// unfinished, it leaves the state directory and the link as they
    /// were; finished, it is registered and linked.
    #[test]
    fn a_root_prepared_then_dropped_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state_and_store(dir.path());
        let link = dir.path().join("result");
        std::os::unix::fs::symlink("/old", &link).unwrap();
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        drop(prepare_indirect(&state, &link, &store.join(NAME)).unwrap());
        let auto = state.join(GCROOTS_DIR).join(AUTO_DIR);
        assert_eq!(std::fs::read_dir(&auto).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/old"));
        let pending = prepare_indirect(&state, &link, &store.join(NAME)).unwrap();
        assert_eq!(pending.finish().unwrap(), link);
        assert_eq!(std::fs::read_link(&link).unwrap(), store.join(NAME));
        assert_eq!(std::fs::read_dir(&auto).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    }

    /// Regression: a link made in `gcroots/` was registered in `auto/`
    /// too, and listed twice. It is a direct root (at any depth); one in a
    /// directory a symlink in `gcroots/` leads to outside it is not, and
    /// is registered.
    #[test]
    fn a_link_in_gcroots_is_a_direct_root_registered_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state_and_store(dir.path());
        let gcroots = state.join(GCROOTS_DIR);
        std::fs::create_dir_all(gcroots.join("profiles")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, gcroots.join("out")).unwrap();
        let direct = [gcroots.join("mine"), gcroots.join("profiles/p")];
        for link in &direct {
            let pending = prepare_indirect(&state, link, &store.join(NAME)).unwrap();
            assert!(!pending.is_indirect(), "{}", link.display());
            assert_eq!(pending.finish().unwrap(), *link);
        }
        let auto = gcroots.join(AUTO_DIR);
        assert!(!auto.exists(), "registered");
        let through = gcroots.join("out/r");
        let pending = prepare_indirect(&state, &through, &store.join(NAME)).unwrap();
        assert!(pending.is_indirect());
        pending.finish().unwrap();
        let roots = list(&state, &store).unwrap();
        let summary: Vec<(&Path, bool)> = roots
            .iter()
            .map(|r| (r.link.as_path(), r.indirect))
            .collect();
        let expected = [
            (direct[0].as_path(), false),
            (through.as_path(), true),
            (direct[1].as_path(), false),
        ];
        assert_eq!(summary, expected);
        // A registration an earlier fruix made for a direct root's link
        // goes when the link is made again; another entry stays.
        let (stale, other) = (auto.join(registration_name(&direct[0])), auto.join("x"));
        std::os::unix::fs::symlink(&direct[0], &stale).unwrap();
        std::os::unix::fs::symlink(&direct[1], &other).unwrap();
        add_indirect(&state, &direct[0], &store.join(NAME)).unwrap();
        assert!(stale.symlink_metadata().is_err(), "stale registration kept");
        assert!(other.symlink_metadata().is_ok());
    }

    /// Regression: roots were written through a `gcroots/auto` that is a
    /// symlink, while the collector took that symlink for another store's
    /// direct root and never read them: it removed what they kept. Neither
    /// follows it now: both refuse it, naming it.
    #[test]
    fn an_auto_directory_that_is_a_symlink_is_refused_by_writers_and_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state_and_store(dir.path());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let auto = state.join(GCROOTS_DIR).join(AUTO_DIR);
        std::os::unix::fs::symlink(&elsewhere, &auto).unwrap();
        let refused = |e: crate::Error| {
            let shown = e.to_string();
            assert!(
                shown.contains(&auto.display().to_string()) && shown.contains("not a directory"),
                "{shown}"
            );
        };
        let link = dir.path().join("result");
        refused(add_indirect(&state, &link, &store.join(NAME)).unwrap_err());
        assert!(link.symlink_metadata().is_err(), "no link made");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        refused(list(&state, &store).unwrap_err());
    }

    /// Regression: a link's temporary (`.result.fruix-tmp-PID-N`) that a
    /// process killed before renaming it left stayed forever, pointing at
    /// an object that a collection then removed. Making the link again
    /// removes those of processes no longer running, and no other file.
    #[test]
    fn a_link_s_temporaries_left_by_killed_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = (dir.path().join("state"), dir.path().join("store"));
        std::fs::create_dir_all(store.join(NAME)).unwrap();
        let path = |name: &str| dir.path().join(name);
        // pid_max is at most 2^22: no process has this pid.
        let dead = path(".result.fruix-tmp-4194305-0");
        let alive = path(&format!(".result.fruix-tmp-{}-7", std::process::id()));
        let other = path(".other.fruix-tmp-4194305-0");
        for temp in [&dead, &alive, &other] {
            std::os::unix::fs::symlink(store.join(NAME), temp).unwrap();
        }
        let file = path(".result.fruix-tmp-4194305-1");
        std::fs::write(&file, "not a link").unwrap();
        add_indirect(&state, &path("result"), &store.join(NAME)).unwrap();
        assert!(
            dead.symlink_metadata().is_err(),
            "a dead process's temporary stayed"
        );
        for kept in [&alive, &other, &file] {
            assert!(
                kept.symlink_metadata().is_ok(),
                "{} removed",
                kept.display()
            );
        }
    }

    #[test]
    fn direct_indirect_and_dead_roots_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state_and_store(dir.path());
        let gcroots = state.join(GCROOTS_DIR);
        std::fs::create_dir_all(gcroots.join("profiles")).unwrap();
        std::os::unix::fs::symlink(
            store.join(NAME).join("artifacts"),
            gcroots.join("profiles/p"),
        )
        .unwrap();
        // Another store's root (its target exists outside this store) is
        // not listed; one whose target does not exist leads nowhere.
        std::os::unix::fs::symlink("/etc", gcroots.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), gcroots.join("dangling")).unwrap();
        // Regression: a loop of links was taken for another store's root,
        // and listed by none. It leads nowhere.
        std::os::unix::fs::symlink("loop", gcroots.join("loop")).unwrap();
        let result = add_indirect(&state, &dir.path().join("result"), &store.join(NAME)).unwrap();
        let gone = add_indirect(&state, &dir.path().join("gone"), &store.join(NAME)).unwrap();
        std::fs::remove_file(&gone).unwrap();
        // Regression: a link into an object no longer in the store (`store
        // verify --repair` removed it) kept a live root to nothing.
        const REMOVED: &str =
            "fedcba9876543210fedcba9876543210fedcba98-fruix-native-build-result-15.0-STABLE-local";
        let removed =
            add_indirect(&state, &dir.path().join("removed"), &store.join(REMOVED)).unwrap();
        let roots = list(&state, &store).unwrap();
        let summary: Vec<(&Path, bool, Option<&str>)> = roots
            .iter()
            .map(|r| (r.link.as_path(), r.indirect, r.object.as_deref()))
            .collect();
        let mut expected = [
            (gcroots.join("dangling"), false, None),
            (gcroots.join("loop"), false, None),
            (gcroots.join("profiles/p"), false, Some(NAME)),
            (result.clone(), true, Some(NAME)),
            (gone.clone(), true, None),
            (removed.clone(), true, None),
        ];
        expected.sort();
        let expected: Vec<(&Path, bool, Option<&str>)> = expected
            .iter()
            .map(|(p, i, o)| (p.as_path(), *i, *o))
            .collect();
        assert_eq!(summary, expected);
        let dead: Vec<&Path> = roots
            .iter()
            .filter(|r| r.is_dead())
            .map(|r| r.link.as_path())
            .collect();
        assert_eq!(dead, [gone.as_path(), removed.as_path()]);
        let nowhere: Vec<&Path> = roots
            .iter()
            .filter(|r| r.leads_nowhere())
            .map(|r| r.link.as_path())
            .collect();
        assert_eq!(nowhere, [gcroots.join("dangling"), gcroots.join("loop")]);
        // Replacing the out-link keeps one root for it.
        add_indirect(&state, &result, &store.join(NAME)).unwrap();
        assert_eq!(list(&state, &store).unwrap().len(), 6);
        // Links made at once from several threads (a matrix promotes cells
        // concurrently) all become roots.
        std::thread::scope(|s| {
            for i in 0..8 {
                let (state, store) = (&state, &store);
                let link = dir.path().join(format!("cell-{i}"));
                s.spawn(move || add_indirect(state, &link, &store.join(NAME)).unwrap());
            }
        });
        assert_eq!(list(&state, &store).unwrap().len(), 14);
        // A file where the link would go is refused.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(add_indirect(&state, &dir.path().join("file"), &store.join(NAME)).is_err());
    }

    /// Regression: a root nested more than 8 directories deep in
    /// `gcroots/` was passed over unsaid, and a collection removed what it
    /// kept. A state directory that is not there is refused: it has no
    /// roots to keep anything.
    #[test]
    fn roots_are_found_at_any_depth_in_a_state_directory_that_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = (dir.path().join("state"), dir.path().join("store"));
        std::fs::create_dir_all(store.join(NAME)).unwrap();
        let deep = (1..=40).fold(state.join(GCROOTS_DIR), |d, i| d.join(format!("p{i}")));
        std::fs::create_dir_all(&deep).unwrap();
        std::os::unix::fs::symlink(store.join(NAME), deep.join("root")).unwrap();
        let roots = list(&state, &store).unwrap();
        let found: Vec<(&Path, Option<&str>)> = roots
            .iter()
            .map(|r| (r.link.as_path(), r.object.as_deref()))
            .collect();
        assert_eq!(found, [(deep.join("root").as_path(), Some(NAME))]);
        let missing = dir.path().join("no-state");
        match list(&missing, &store) {
            Err(crate::error::Error::NoStateDir { state_dir }) => assert_eq!(state_dir, missing),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn roots_into_another_store_are_left_to_it() {
        use std::os::unix::fs::symlink;
        const OTHER: &str =
            "89abcdef0123456789abcdef0123456789abcdef-fruix-native-build-result-15.0-STABLE-local";
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (state, ours, theirs) = (path("state"), path("ours"), path("theirs"));
        std::fs::create_dir_all(ours.join(NAME)).unwrap();
        std::fs::create_dir_all(theirs.join(OTHER)).unwrap();
        // Theirs: an indirect and a direct root, both alive.
        let their_result =
            add_indirect(&state, &path("their-result"), &theirs.join(OTHER)).unwrap();
        symlink(
            theirs.join(OTHER),
            state.join(GCROOTS_DIR).join("their-profile"),
        )
        .unwrap();
        // Ours: spelt through another path to the store, and through a chain
        // of links.
        symlink(&ours, path("alias")).unwrap();
        let alias = add_indirect(&state, &path("alias-result"), &path("alias").join(NAME)).unwrap();
        symlink(ours.join(NAME), path("result-1")).unwrap();
        let chain = add_indirect(&state, &path("chain-result"), &path("result-1")).unwrap();
        // Leads nowhere for everyone: its target does not exist at all.
        let gone = add_indirect(&state, &path("gone-result"), &path("removed").join(NAME)).unwrap();
        let summary = |store: &Path| -> Vec<(PathBuf, Option<String>)> {
            let roots = list(&state, store).unwrap();
            assert!(roots.iter().all(|r| !r.is_dead()), "{roots:?}");
            roots.into_iter().map(|r| (r.link, r.object)).collect()
        };
        let mut expected = vec![
            (alias.clone(), Some(NAME.to_string())),
            (chain.clone(), Some(NAME.to_string())),
            (gone.clone(), None),
        ];
        expected.sort();
        assert_eq!(summary(&ours), expected);
        let mut expected = vec![
            (their_result.clone(), Some(OTHER.to_string())),
            (
                state.join(GCROOTS_DIR).join("their-profile"),
                Some(OTHER.to_string()),
            ),
            (gone.clone(), None),
        ];
        expected.sort();
        assert_eq!(summary(&theirs), expected);
        // A store that holds neither sees only the one leading nowhere.
        std::fs::create_dir_all(path("empty")).unwrap();
        assert_eq!(summary(&path("empty")), [(gone.clone(), None)]);
        // Regression: with their store away (a disk not mounted now), their
        // roots were dead to ours, and a collection of ours removed their
        // indirect one; the next collection of theirs removed its objects.
        // They lead nowhere, and are never dead.
        std::fs::rename(&theirs, path("theirs.away")).unwrap();
        let roots = list(&state, &ours).unwrap();
        let away: Vec<(&Path, bool, bool)> = roots
            .iter()
            .filter(|r| r.object.is_none())
            .map(|r| (r.link.as_path(), r.is_dead(), r.leads_nowhere()))
            .collect();
        let profile = state.join(GCROOTS_DIR).join("their-profile");
        let mut expected = vec![
            (gone.as_path(), false, true),
            (their_result.as_path(), false, true),
            (profile.as_path(), false, true),
        ];
        expected.sort();
        assert_eq!(away, expected);
    }
}
