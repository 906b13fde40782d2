//! Errors of the promotion pipeline and the store.

use std::path::PathBuf;

use fruix_core::escape;
use fruix_core::manifest::Difference;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while promoting or checking the store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A core contract was not met (bad result root, bad metadata, I/O...).
    #[error(transparent)]
    Core(#[from] fruix_core::Error),
    /// An existing store object no longer matches its manifest.
    #[error("{}: store object is corrupt ({} difference(s): {}); run `fruix store verify --repair` (it removes the object), then try again", escape::path(object), differences.len() as u64 + more_differences, differences.iter().take(5).map(|d| escape::text(&d.to_string()).to_string()).collect::<Vec<_>>().join("; "))]
    Corrupt {
        /// The object's path in the store.
        object: PathBuf,
        /// What differs from the object's manifest, in path order: at most
        /// [`crate::check::MAX_DIFFERENCES`]. The message shows the first
        /// five and the count of all, these and `more_differences`.
        differences: Vec<Difference>,
        /// Differences found beyond those listed (only counted).
        more_differences: u64,
    },
    /// A build wrote into the source object it built from: an executor
    /// only reads its source (a FreeBSD build writes its objects under
    /// `MAKEOBJDIRPREFIX`).
    #[error("{}: the build wrote into its source object ({} difference(s): {}): an executor must only read its source (a FreeBSD build writes under MAKEOBJDIRPREFIX, outside it); nothing was promoted. Run `fruix store verify --repair` (it removes this source object, and what a root does not keep that was built from it), then add the source again", escape::path(object), differences.len() as u64 + more_differences, differences.iter().take(5).map(|d| escape::text(&d.to_string()).to_string()).collect::<Vec<_>>().join("; "))]
    SourceWritten {
        /// The source object's path in the store.
        object: PathBuf,
        /// What differs from its manifest, as for [`Error::Corrupt`].
        differences: Vec<Difference>,
        /// Differences found beyond those listed (only counted).
        more_differences: u64,
    },
    /// The source object a result root was built from, in this store, is
    /// not (or no longer) a valid object there: its artifacts would
    /// reference an object the store does not have.
    #[error("{}: the source object this result root was built from is not in the store (a `store gc` removed it since the build: a build run with --no-promote, or whose promotion failed, leaves no root on its source); add the same tree again (`fruix source add DIR`: the same tree gives the same object), then promote", escape::path(object))]
    SourceGone {
        /// The source object's path in the store.
        object: PathBuf,
    },
    /// A store path a result root's `promotion.scm` names beside its
    /// source (its builder's closure, its development profile) is in this
    /// store but no valid object there: the bundle would reference an
    /// object the store does not have.
    #[error("{}: the {field} this result root's promotion.scm names is not a valid object of this store (collected, or never added to it); make it valid here again (import or copy it), or build without it, then promote", escape::path(object))]
    ReferenceGone {
        /// The object's path in the store.
        object: PathBuf,
        /// What `promotion.scm` calls it: `closure`, `development profile`.
        field: &'static str,
    },
    /// A store object's metadata is unreadable or inconsistent with its name.
    #[error("{}: store object is inconsistent: {message}", escape::path(object))]
    Inconsistent {
        /// The object's path in the store. For a database newer than this
        /// fruix, the database file; for a registration that references an
        /// unregistered object, the referring object's bare name.
        object: PathBuf,
        /// What is inconsistent, as the message says it after
        /// `store object is inconsistent: `.
        message: String,
    },
    /// The store directory cannot be written: this user lacks permission
    /// (`EACCES`, `EPERM`), or its filesystem is mounted read-only
    /// (`EROFS`). Any other failure to write it (out of file descriptors,
    /// memory, space) is no such refusal, and names its path
    /// (`Error::store_write`).
    #[error(
        "store {} is not writable: {source}; {}",
        escape::path(store),
        not_writable_advice(source)
    )]
    StoreNotWritable {
        /// The store directory.
        store: PathBuf,
        /// Why the store directory, or what the store keeps in it (`.links`,
        /// `.locks`, `.lock`, `.fruix/`), could not be created or opened.
        #[source]
        source: std::io::Error,
    },
    /// One of the store's own entries (`.fruix`, `.lock`, the registry...)
    /// is not what fruix makes there: a symlink (never followed) or another
    /// type.
    #[error(
        "store {}: {} is a {found}, not a {expected}; {}: move it away (when it is `.fruix` or the registry: move `.fruix` away, and the next command registers the store's objects anew)",
        escape::path(store),
        escape::path(entry),
        store_entry_rule(found)
    )]
    StoreEntry {
        /// The store directory.
        store: PathBuf,
        /// The entry found.
        entry: PathBuf,
        /// What it is: `symlink`, `directory`, `regular file`, `FIFO`...
        found: &'static str,
        /// What fruix makes there: `directory` or `regular file`.
        expected: &'static str,
    },
    /// Something else than a directory is where the store was named: the
    /// path itself, or a directory above it (a regular file, a device, a
    /// symlink to nothing).
    #[error("store {0}; check --store (or FRUIX_STORE)")]
    StoreNotDirectory(crate::store::NotADirectory),
    /// There is no store directory where one was named.
    #[error("no store at {}; check --store (or FRUIX_STORE)", escape::path(path))]
    NoStore {
        /// The path named as the store, which is not a directory.
        path: PathBuf,
    },
    /// A store directory holding no more than what making a store begins
    /// with (`.fruix` without its registry, `.lock`, `.locks`, an empty
    /// `.links`): a command that was making it failed or was killed. A
    /// command that only uses a store refuses it and writes nothing; a
    /// command that adds to the store completes it.
    #[error(
        "store {} is incomplete: it holds only what a command making it left when it failed or was killed (no registry, no pool entry, no object), and was left as it was; check --store (or FRUIX_STORE), then remove that directory or run a command that adds to the store (it completes it)",
        escape::path(path)
    )]
    IncompleteStore {
        /// The directory named as the store.
        path: PathBuf,
    },
    /// A directory named as the store that holds other things but no
    /// store (`~`, `/tmp`): a store is made only in a missing or empty
    /// directory, and nothing was made in this one.
    #[error(
        "store {} is a directory that holds other things but no store (no .fruix, .links or store object), and was left as it was; check --store (or FRUIX_STORE): a store is made only in a missing or empty directory (or one holding only a new file system's lost+found, .snap or .zfs)",
        escape::path(path)
    )]
    NotAStoreDirectory {
        /// The directory named as the store.
        path: PathBuf,
    },
    /// A store whose path is not UTF-8: what names its objects by path
    /// (a result bundle's metadata, a build request) is text.
    #[error(
        "the store's path {} is not UTF-8: result bundles and build requests name store paths as text; choose a store path that is UTF-8",
        escape::path(path)
    )]
    StorePathNotText {
        /// The store's path.
        path: PathBuf,
    },
    /// A collection or deletion under a state directory that is not there:
    /// no root would keep anything, and every object would go.
    #[error(
        "state directory {} is not there, so no root could keep anything in the store; give the --state-dir (or FRUIX_STATE_DIR) whose gcroots/ keep this store's objects, or make the directory if none does",
        escape::path(state_dir)
    )]
    NoStateDir {
        /// The state directory given.
        state_dir: PathBuf,
    },
    /// A store whose path holds a control character (a line break, an
    /// escape): promotion metadata refuses such store paths, so no result
    /// could be promoted into it.
    #[error(
        "the store's path {} holds a control character, which no result bundle or build request may name; choose a store path without one",
        escape::path(path)
    )]
    StorePathControl {
        /// The store's path.
        path: PathBuf,
    },
    /// The store's database failed (locked too long, disk full, corrupt),
    /// with what to do about it when SQLite's error code tells
    /// ([`database_advice`]).
    #[error(
        "store database {}: {source}{}",
        escape::path(path),
        database_advice(source)
    )]
    Database {
        /// The database file, `STORE/.fruix/db.sqlite`.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The store's database cannot be read as it is by this user, who may
    /// only read the store (it must first be migrated, or its `-shm` file
    /// made, by its owner).
    #[error("store database {}: {message}", escape::path(path))]
    DatabaseUnreadable {
        /// The database file, `STORE/.fruix/db.sqlite`.
        path: PathBuf,
        /// Why it cannot be read, and what the store's owner must do.
        message: String,
    },
    /// An object to delete is still referenced or rooted.
    #[error(
        "{}: still in use by {}, so nothing was deleted; it can be deleted once nothing uses it (its root removed, the objects referring to it deleted with it or before it, the build or promotion using it ended), or let `fruix store gc` decide",
        escape::path(object),
        escape::text(by)
    )]
    StillReferenced {
        /// The object's path in the store.
        object: PathBuf,
        /// What keeps it, for the message: a root's link, the path of an
        /// object that references it, or a running build or promotion.
        by: String,
    },
    /// A store object (or a hidden temporary) that this process may not
    /// remove: another user owns it, and this process is not root (its
    /// read-only directories are only their owner's to open up again). It
    /// is left as it was, under its name.
    #[error(
        "{}: owned by uid {owner}, not by this user (uid {user}), who may not remove it; run the command as uid {owner} or as root",
        escape::path(object)
    )]
    NotOwner {
        /// The object's (or temporary's) path in the store.
        object: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        user: u32,
    },
    /// A file of the store pool could not be hard linked into an object
    /// (`EPERM`) because another user owns it: `fs.protected_hardlinks`
    /// (Linux) forbids linking another user's file.
    #[error(
        "failed to link from the store pool {}: its entry {} is owned by uid {owner}, not by this user (uid {user}): the store holds files of another user, which fs.protected_hardlinks forbids linking; run the command as uid {owner} or as root, or give the store to this user (`chown -R {user} STORE`)",
        escape::path(destination),
        escape::path(entry)
    )]
    ForeignPoolEntry {
        /// The pool entry, `STORE/.links/NAME`.
        entry: PathBuf,
        /// Where it was to be linked.
        destination: PathBuf,
        /// The entry's owner's uid.
        owner: u32,
        /// This process's effective uid.
        user: u32,
    },
    /// A store object that is present but not registered (not valid).
    #[error("{}: not a valid store object: it is not registered, either because a build, promotion, import or `source add` making it has not finished yet (wait for it to end), or because one was stopped before it finished (`fruix store gc` removes what it left)", escape::path(path))]
    NotValid {
        /// The object's path in the store.
        path: PathBuf,
    },
    /// An object an export (or a copy) listed was removed from the store
    /// before it was written: a `store gc` or `store delete` ran between
    /// the two (the listing holds no lock). Running the command again
    /// lists what is there then.
    #[error("{}: removed from the store by a `store gc` or `store delete` that ran since this command listed it; run the command again", escape::path(object))]
    RemovedMeanwhile {
        /// The object's path in the store.
        object: PathBuf,
    },
    /// A store holds no (valid) object by that name: a misspelt path, or an
    /// object only another store has. `remote` when that store is the
    /// other side of a copy.
    #[error("{}: not in the store {}{}; check the path", escape::path(path), escape::path(store), if *remote { " on the other machine" } else { "" })]
    NotInStore {
        /// The path asked for, `STORE/NAME`.
        path: PathBuf,
        /// The store that does not hold it.
        store: PathBuf,
        /// Whether that store is the other side of a copy (`store copy`).
        remote: bool,
    },
    /// A directory given as a source tree is a store object: of another
    /// store, or one of this store (a source object needs no adding).
    #[error("{}: is a store object, not a source tree; {}", escape::path(path), if *here {
        format!("it is in this store already: build from it as it is (`fruix build --source {}`)", escape::path(path))
    } else {
        format!("give the source tree it was added from, or a source object of this store {} (`fruix store copy` brings one from another store)", escape::path(store))
    })]
    StoreObjectAsSource {
        /// The directory given.
        path: PathBuf,
        /// The store the source was to be added to.
        store: PathBuf,
        /// Whether `path` is an object of that store.
        here: bool,
    },
    /// A path given as a store object is not one.
    #[error("{}: not a store object (a store object is a directory directly in the store {}, named <hash>-fruix-... or <hash>-freebsd-source-...); check the path", escape::path(path), escape::path(store))]
    NotAStoreObject {
        /// The path as the user gave it.
        path: PathBuf,
        /// The store it was looked for in.
        store: PathBuf,
    },
    /// A key name that its `NAME:BASE64` files could not carry: empty, or
    /// with `:` or white space (see [`crate::sign::is_key_name`]).
    #[error(
        "key name {}: give a name of 1 to {} bytes without ':', white space or control characters",
        escape::quoted(name),
        crate::sign::MAX_KEY_NAME_BYTES
    )]
    InvalidKeyName {
        /// The name refused.
        name: String,
    },
    /// A FreeBSD version a source object cannot record: a source's version
    /// is the one its builds record and name their objects with, so it
    /// must be a name a build accepts ([`fruix_core::promotion::check_name`]:
    /// 1 to 64 bytes from `A-Z a-z 0-9 . _ + -`). Anything else (a control
    /// character, which the metadata reader refuses, a bidirectional-text
    /// control, an unbounded length) is refused before anything is written.
    #[error("{message}; a source object's version is the one its builds are named with")]
    InvalidFreebsdVersion {
        /// The version refused.
        version: String,
        /// What is wrong with it, its value escaped.
        message: String,
    },
    /// A result built on a machine that signs is not signed by its key.
    #[error("{}: the result is not signed by machine {}'s key {key}: {message}; check the machine's signing-key in the machines file and its guest-signing-key on the machine", escape::path(path), escape::quoted(machine))]
    UnsignedResult {
        /// The result root's signatures file,
        /// `RESULT_ROOT/.fruix-signatures`.
        path: PathBuf,
        /// The machine that built the result, as the machines file names it.
        machine: String,
        /// The name of the machine's public key (the `NAME` of
        /// `NAME:BASE64`).
        key: String,
        /// What is wrong: no signatures file, a malformed line, or an object
        /// with no signature that verifies with the key.
        message: String,
    },
    /// A store, an archive, or the other side of a copy speaks a version
    /// of one of fruix's formats that this fruix does not: no retry gets
    /// past it, only a fruix that speaks it (`fruix --version` lists the
    /// versions each speaks). Nothing was changed.
    #[error("{}", version_message(*of, *found, place.as_deref()))]
    Version {
        /// Which format.
        of: Versioned,
        /// The version found: the registry's, the other side's, the
        /// archive's.
        found: u64,
        /// The registry file, or the archive read from (`None`: standard
        /// input, or the other side of a copy).
        place: Option<PathBuf>,
    },
    /// An archive (`store import`, `store copy`) was refused; the store did
    /// not change.
    #[error("archive refused{}: {message}; the store was not changed", object.as_deref().map(|o| format!(" at object {}", escape::text(o))).unwrap_or_default())]
    ArchiveRefused {
        /// The name of the object being read when the archive was refused,
        /// as the archive spells it; `None` when the fault is not one
        /// object's (the archive's first lines, its size, its end) or when
        /// the other store of a copy refused it.
        object: Option<String>,
        /// The kind of refusal; `store serve` sends it to its client.
        problem: ArchiveProblem,
        /// What was wrong, for people.
        message: String,
    },
}

/// A format of fruix's that has a version ([`Error::Version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioned {
    /// A store's registry schema ([`crate::db::SCHEMA_VERSION`]), newer
    /// than this fruix's (an older one is migrated).
    Registry,
    /// The store protocol ([`crate::serve::VERSION`]) that the `fruix store
    /// serve` on the other machine speaks, as `store copy` finds it.
    ServingSide,
    /// The store protocol that the client of a `fruix store serve` (a
    /// `store copy` on the other machine) speaks, as the server finds it.
    CopyingSide,
    /// An archive's format ([`crate::archive::FORMAT_VERSION`]).
    Archive,
}

impl Versioned {
    /// The version of the format this fruix speaks.
    pub fn ours(self) -> u64 {
        match self {
            Versioned::Registry => crate::db::SCHEMA_VERSION as u64,
            Versioned::ServingSide | Versioned::CopyingSide => u64::from(crate::serve::VERSION),
            Versioned::Archive => u64::from(crate::archive::FORMAT_VERSION),
        }
    }
}

/// What [`Error::Version`] says: what was found where, and what to do.
fn version_message(of: Versioned, found: u64, place: Option<&std::path::Path>) -> String {
    let ours = of.ours();
    let this = format!("this fruix ({}) version {ours}", env!("CARGO_PKG_VERSION"));
    let same = "`fruix --version` lists the versions a fruix speaks";
    match of {
        Versioned::Registry => format!(
            "store database {}: its schema version {found} is newer than {this}; use the fruix that made it, or a newer one ({same})",
            place.map(escape::path).map(|p| p.to_string()).unwrap_or_default()
        ),
        Versioned::ServingSide => format!(
            "the `fruix store serve` on the other machine speaks store protocol version {found}, {this}; run a fruix that speaks one protocol on both machines ({same}), naming the other machine's with --remote-program when it is not the `fruix` on its PATH; nothing was copied"
        ),
        Versioned::CopyingSide => format!(
            "the client (a `fruix store copy` on the other machine) speaks store protocol version {found}, {this}; run a fruix that speaks one protocol on both machines ({same}); nothing was copied"
        ),
        Versioned::Archive => format!(
            "archive{}: format version {found}, {this}; import it with a fruix that reads that version ({same}), or export it again with this one; the store was not changed",
            place.map(|p| format!(" {}", escape::path(p))).unwrap_or_default()
        ),
    }
}

/// Why an archive was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveProblem {
    /// Not in the archive format.
    Malformed,
    /// It ends before its end.
    Truncated,
    /// Content, metadata or references differ from what they claim to be.
    Tampered,
    /// No signature by a trusted key.
    Untrusted,
    /// An object references one that neither the store nor the archive has.
    MissingReference,
    /// It names objects of a store at another path.
    ForeignStore,
    /// Over one of the import's caps.
    TooLarge,
}

/// What [`Error::StoreEntry`] says of fruix's rule for an entry that is a
/// `found` (a [`fruix_core::fsutil::file_type_name`]): a symlink is never
/// followed; anything else is not what fruix made.
fn store_entry_rule(found: &str) -> &'static str {
    match found {
        "symlink" => "fruix never follows a symlink among its store's own files",
        _ => "fruix did not make it, and uses no other kind of file in its place",
    }
}

/// Whether `e` refuses a write for want of permission (`EACCES`, `EPERM`)
/// or on a filesystem mounted read-only (`EROFS`): told from its error
/// number, never its text.
pub(crate) fn is_write_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

/// What to do about a store [`Error::StoreNotWritable`] for `source`.
fn not_writable_advice(source: &std::io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EROFS) => {
            "its filesystem is mounted read-only: choose another --store, or mount it read-write"
        }
        _ => "choose another --store or fix its permissions",
    }
}

/// What to do about a database error, from SQLite's error code (never its
/// message): `; ...` to follow it, or nothing.
pub fn database_advice(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) => {
            "; another process kept the registry locked for as long as fruix waits (`fuser -v` on it names the processes that have it open): end its transaction (an open `sqlite3` session's, a fruix stopped with Ctrl-Z), then try again"
        }
        Some(ErrorCode::DiskFull) => "; free space on that filesystem and try again",
        Some(ErrorCode::SystemIoFailure) => {
            "; the filesystem failed to read or write it (is it full, or failing?)"
        }
        // A refusal by permissions or a read-only filesystem is told apart
        // before (`db_error`): what is left is the system's.
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            "; its permissions let this user read and write it, so the system failed to open it (is the process out of file descriptors, or the system out of memory?)"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            "; the registry is damaged: move the store's .fruix directory away, and the next store command registers the store's objects anew from what is in the store (their registration times, signatures and promoted runs are lost), then run `fruix store verify`"
        }
        _ => "",
    }
}

impl Error {
    /// The error of writing (`action`: `create`, `open`) the store's own
    /// entry `path` in the store `store`, which failed with `source`:
    /// [`Error::StoreNotWritable`] when it is refused for permission or a
    /// read-only filesystem ([`is_write_refusal`]), else what it is (out of
    /// file descriptors, memory, space), naming `path`: a system failure.
    pub(crate) fn store_write(
        store: &std::path::Path,
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Error {
        match is_write_refusal(&source) {
            true => Error::StoreNotWritable {
                store: store.to_path_buf(),
                source,
            },
            false => fruix_core::Error::io(action, path, source).into(),
        }
    }

    /// `Ok` when a check of `object` found no `differences` (listed, and
    /// `more_differences` beyond them), else [`Error::Corrupt`].
    pub fn corrupt_unless_intact(
        object: &std::path::Path,
        differences: Vec<Difference>,
        more_differences: u64,
    ) -> Result<()> {
        if differences.is_empty() && more_differences == 0 {
            return Ok(());
        }
        Err(Error::Corrupt {
            object: object.to_path_buf(),
            differences,
            more_differences,
        })
    }

    /// The exit status a command ends with on this error.
    pub fn exit_status(&self) -> fruix_core::ExitStatus {
        self.classify().1
    }

    /// Classifies the error (see [`fruix_core::Failure`]).
    pub fn failure(&self) -> fruix_core::Failure {
        self.classify().0
    }

    /// The one table of each variant's [`fruix_core::Failure`] and exit
    /// status, which [`Error::failure`] and [`Error::exit_status`] read.
    fn classify(&self) -> (fruix_core::Failure, fruix_core::ExitStatus) {
        use fruix_core::{ExitStatus, Failure};
        match self {
            Error::Core(e) => (
                e.failure(),
                ExitStatus::of_failure(e.failure(), ExitStatus::PromotionFailure),
            ),
            Error::StoreNotWritable { .. }
            | Error::StoreEntry { .. }
            | Error::Database { .. }
            | Error::DatabaseUnreadable { .. }
            | Error::NotOwner { .. }
            | Error::RemovedMeanwhile { .. }
            | Error::ForeignPoolEntry { .. } => (Failure::System, ExitStatus::SystemFailure),
            Error::NoStore { .. }
            | Error::IncompleteStore { .. }
            | Error::NotAStoreDirectory { .. }
            | Error::StoreNotDirectory(_)
            | Error::StorePathNotText { .. }
            | Error::StorePathControl { .. }
            | Error::NoStateDir { .. }
            | Error::NotAStoreObject { .. }
            | Error::NotInStore { .. }
            | Error::StoreObjectAsSource { .. }
            | Error::StillReferenced { .. }
            | Error::InvalidKeyName { .. }
            | Error::InvalidFreebsdVersion { .. }
            | Error::NotValid { .. }
            | Error::SourceGone { .. }
            | Error::ReferenceGone { .. }
            | Error::Version { .. } => (Failure::Input, ExitStatus::Usage),
            Error::Corrupt { .. } | Error::Inconsistent { .. } => {
                (Failure::System, ExitStatus::PromotionFailure)
            }
            Error::SourceWritten { .. } => (Failure::Build, ExitStatus::BuildFailure),
            Error::ArchiveRefused { .. } | Error::UnsignedResult { .. } => {
                (Failure::Input, ExitStatus::PromotionFailure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `store delete` of an object a running promotion had not
    /// registered yet said it `was killed before it finished`.
    #[test]
    fn an_unregistered_object_is_not_said_to_be_left_by_a_kill_alone() {
        let text = Error::NotValid {
            path: "/s/x".into(),
        }
        .to_string();
        assert!(text.contains("has not finished yet"), "{text}");
        assert!(!text.contains("was killed"), "{text}");
    }

    /// Regression: an object a running build keeps (a temporary root) was
    /// to be deleted after `that`, the temporary root.
    #[test]
    fn an_object_in_use_is_not_deleted_after_what_uses_it_is_deleted() {
        let text = Error::StillReferenced {
            object: "/s/x".into(),
            by: "a running build or promotion (a temporary root)".into(),
        }
        .to_string();
        assert!(!text.contains("delete that first"), "{text}");
        assert!(
            text.contains("the build or promotion using it ended"),
            "{text}"
        );
    }

    /// Regression: any failure to write the store's own files was "not
    /// writable ... fix its permissions", running out of file descriptors
    /// too, and a read-only filesystem was a matter of permissions. Only
    /// `EACCES`/`EPERM` are, `EROFS` is said for what it is, and anything
    /// else names its path, a system failure.
    #[test]
    fn only_a_refusal_to_write_is_said_to_be_one() {
        let said = |errno| {
            let source = std::io::Error::from_raw_os_error(errno);
            let e = Error::store_write("/s".as_ref(), "open", "/s/.lock".as_ref(), source);
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::SystemFailure);
            e.to_string()
        };
        for errno in [libc::EACCES, libc::EPERM] {
            assert!(
                said(errno).contains("fix its permissions"),
                "{}",
                said(errno)
            );
        }
        assert!(said(libc::EROFS).contains("mounted read-only"));
        assert!(!said(libc::EROFS).contains("permissions"));
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            let text = said(errno);
            assert!(text.starts_with("failed to open /s/.lock: "), "{text}");
            assert!(!text.contains("writable"), "{text}");
        }
    }

    /// Regression: a FIFO or a directory among the store's own files was
    /// refused with fruix's rule for symlinks.
    #[test]
    fn a_store_entry_of_the_wrong_type_is_refused_for_what_it_is() {
        let refused = |found| {
            Error::StoreEntry {
                store: "/s".into(),
                entry: "/s/.fruix/db.sqlite".into(),
                found,
                expected: "regular file",
            }
            .to_string()
        };
        for found in ["FIFO", "directory"] {
            let text = refused(found);
            assert!(text.contains(&format!("is a {found}, not a regular file")));
            assert!(!text.contains("symlink"), "{text}");
        }
        assert!(refused("symlink").contains("never follows a symlink"));
    }
}
