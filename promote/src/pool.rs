//! The `.links` pool: one inode per distinct file content and exec bit.
//!
//! A pool entry is named `<sha256>-<r|x>`: the SHA-256 of its bytes and
//! whether it is executable (`0555`) or not (`0444`). Store objects hard-link
//! their files to pool entries, so identical files are stored once.
//!
//! Entries are written only by [`Pool::ingest`], which hashes the bytes it
//! reads from a result root as it writes those same bytes into a temporary
//! file, then renames the temporary to the name the hash gives: an entry
//! never receives bytes that were not hashed on their way in. A file already
//! in the pool under that name is not written again. `fruix store verify`
//! re-hashes every entry ([`Pool::check_entry`]), and `--repair` removes the
//! corrupt ones.
//!
//! Every entry a promotion creates is first recorded in its [`Journal`] (before
//! it gets its name), so
//! that a promotion that fails (or is killed) can have its entries removed
//! again, when no object links them ([`Pool::remove_unlinked`]).

use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;
use fruix_core::manifest::{stat, with_buffer, FileDigest, OpenFile, SPECIAL_BITS};

use crate::error::Result;
use crate::store::STORE_MTIME;

mod foreign;
mod remove;
mod temp;
use remove::remove_at;
use temp::PoolTemp;

/// Where [`Pool::link_into`] puts an entry: `name` in directory `parent`,
/// with `display` naming it in messages.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The directory to link into, open by descriptor.
    pub parent: BorrowedFd<'a>,
    /// The new entry's name in `parent`; nothing may exist there yet.
    pub name: &'a CStr,
    /// The new entry's full path, used only in error messages.
    pub display: &'a Path,
}

/// Name of the pool directory inside the store.
pub const LINKS_DIR: &str = ".links";

/// Prefix of temporary files and directories (swept when stale).
pub const TEMP_PREFIX: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The longest file name a store's filesystem takes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The longest `what` a temporary's name keeps whole: room is left for
/// the prefix, a process id (10 digits) and a counter (20 digits).
const TEMP_WHAT_MAX: usize = NAME_MAX - TEMP_PREFIX.len() - 2 - 10 - 20;

/// A fresh name for a temporary, unique in this process:
/// `.tmp-WHAT-PID-N`, WHAT cut short (at a character) where a whole one
/// would make the name too long for a file (an object's name may take all
/// of [`NAME_MAX`]).
pub fn temp_name(what: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let what = cut(what, TEMP_WHAT_MAX);
    format!("{TEMP_PREFIX}{what}-{}-{n}", std::process::id())
}

/// The longest start of `text` of at most `max` bytes that ends at a
/// character.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The file name of object `name`'s lock (in `.locks`): `NAME.lock`, or,
/// for a name too long for that, the SHA-256 of the name in hex, then
/// `.lock`. One name always has the one lock file.
pub fn lock_file_name(name: &str) -> String {
    const SUFFIX: &str = ".lock";
    match name.len() + SUFFIX.len() <= NAME_MAX {
        true => format!("{name}{SUFFIX}"),
        false => {
            use sha2::Digest;
            format!("{}{SUFFIX}", hex::encode(sha2::Sha256::digest(name)))
        }
    }
}

/// The pool key of content `sha256` stored with mode `store_mode`.
pub fn key(sha256: &[u8; 32], store_mode: u32) -> String {
    let kind = if store_mode & 0o111 != 0 { 'x' } else { 'r' };
    format!("{}-{kind}", hex::encode(sha256))
}

/// The mode a pool entry named `key` must have, or `None` when `key` is not
/// a pool entry name.
pub fn key_mode(key: &str) -> Option<u32> {
    let (hash, kind) = key.split_once('-')?;
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    match kind {
        "r" => Some(0o444),
        "x" => Some(0o555),
        _ => None,
    }
}

/// The store's times for every file, directory and symlink.
pub fn store_times() -> Timestamps {
    let t = Timespec {
        tv_sec: STORE_MTIME as _,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The pool entries one promotion created, one name per line, appended
/// before each entry gets its name in the pool (so that a kill leaves nothing
/// unrecorded).
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Creates the journal at `path`.
    pub fn create(path: PathBuf) -> Result<Journal> {
        let file = File::options()
            .append(true)
            .create_new(true)
            .open(&path)
            .with_path("create", &path)?;
        Ok(Journal { file, path })
    }

    pub(crate) fn record(&self, key: &str) -> Result<()> {
        (&self.file)
            .write_all(format!("{key}\n").as_bytes())
            .with_path("write", &self.path)
            .map_err(Into::into)
    }

    /// The names recorded in the journal at `path`.
    pub fn read(path: &Path) -> Result<Vec<String>> {
        let file = File::open(path).with_path("open", path)?;
        let mut keys = Vec::new();
        for line in io::BufReader::new(file).lines() {
            let line = line.with_path("read", path)?;
            if key_mode(&line).is_some() {
                keys.push(line);
            }
        }
        Ok(keys)
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What [`Pool::check_entry`] found wrong with an entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolProblem {
    /// The entry's path, `STORE/.links/NAME`.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// What is wrong with it (a bad name, type or mode, unreadable, or
    /// content that does not hash to its name).
    pub message: String,
}

/// Why [`Pool::ingest_stream`] failed.
#[derive(Debug)]
pub enum StreamError {
    /// Reading the stream failed. What that means is the caller's to say:
    /// an import's archive fails to read once it is over its byte cap,
    /// which refuses the archive rather than being an I/O error.
    Read(io::Error),
    /// Anything else: the stream ended first, or the pool could not be
    /// written.
    Other(crate::Error),
}

impl From<crate::Error> for StreamError {
    fn from(e: crate::Error) -> Self {
        StreamError::Other(e)
    }
}

/// The open pool directory.
#[derive(Debug)]
pub struct Pool {
    dir: OwnedFd,
    path: PathBuf,
}

impl Pool {
    /// Opens the pool directory `path` (it must exist and be a real directory).
    pub fn open(path: PathBuf) -> Result<Pool> {
        let dir = fruix_core::manifest::open_dir(&path)?;
        Ok(Pool { dir, path })
    }

    /// The pool directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode number of entry `key`, if it exists.
    pub fn inode_of(&self, key: impl AsRef<Path>) -> Option<(u64, u64)> {
        let st = rfs::statat(&self.dir, key.as_ref(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some((stat::dev(&st), stat::ino(&st)))
    }

    /// Whether the pool holds entry `key` of `size` bytes, as far as a
    /// look at it can tell: a regular file with its key's mode and that
    /// size. One visibly damaged (a mode changed, bytes added or cut) is
    /// not reused: the caller puts a new one in its place, and the objects
    /// that link the old one stay as corrupt as they are.
    fn has(&self, key: &str, size: u64) -> bool {
        rfs::statat(&self.dir, key, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            stat::file_type(&st) == FileType::RegularFile
                && Some(stat::mode(&st)) == key_mode(key)
                && u64::try_from(st.st_size).is_ok_and(|s| s == size)
        })
    }

    /// Reads `file` once, hashing what it reads and writing the same bytes
    /// into the pool unless the pool already holds that content, and returns
    /// the digest. A new entry is recorded in `journal` before it is linked.
    pub fn ingest(&self, file: &mut OpenFile<'_>, journal: &Journal) -> Result<FileDigest> {
        let store_mode = file.mode & !SPECIAL_BITS;
        self.ingest_with(store_mode, journal, |buf, size| {
            Ok(file.read_piece(buf, size)?)
        })
    }

    /// [`Pool::ingest`] for the next `size` bytes of a stream (an archive
    /// being imported): exactly those bytes are hashed as they are written.
    /// A stream that ends first is [`Error::ArchiveRefused`](crate::Error)
    /// ([`ArchiveProblem::Truncated`](crate::error::ArchiveProblem)); a
    /// failed read is [`StreamError::Read`], for the caller to judge.
    pub fn ingest_stream(
        &self,
        reader: &mut impl io::Read,
        size: u64,
        store_mode: u32,
        journal: &Journal,
        display: &Path,
    ) -> std::result::Result<FileDigest, StreamError> {
        self.ingest_with(store_mode, journal, |buf, read| {
            let want = usize::try_from(size - read)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            if want == 0 {
                return Ok(0);
            }
            loop {
                match reader.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(StreamError::Other(crate::Error::ArchiveRefused {
                            object: None,
                            problem: crate::error::ArchiveProblem::Truncated,
                            message: format!(
                                "the archive ends {read} bytes into the {size}-byte file {}",
                                fruix_core::escape::path(display)
                            ),
                        }))
                    }
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(StreamError::Read(e)),
                }
            }
        })
    }

    /// Reads pieces with `read_piece(buffer, bytes_so_far)` (0 at the end),
    /// hashing them as they are written into a pool entry of `store_mode`.
    fn ingest_with<E: From<crate::Error>>(
        &self,
        store_mode: u32,
        journal: &Journal,
        mut read_piece: impl FnMut(&mut [u8], u64) -> Result<usize, E>,
    ) -> Result<FileDigest, E> {
        with_buffer(|buf| {
            let mut hasher = Sha256::new();
            let mut temp: Option<PoolTemp<'_>> = None;
            let (mut filled, mut size) = (0usize, 0u64);
            loop {
                if filled == buf.len() {
                    match &mut temp {
                        Some(t) => t.write(&buf[..filled])?,
                        None => temp = Some(PoolTemp::create(self, &buf[..filled])?),
                    }
                    filled = 0;
                }
                let n = read_piece(&mut buf[filled..], size)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[filled..filled + n]);
                filled += n;
                size += n as u64;
            }
            let digest = FileDigest {
                size,
                sha256: hasher.finalize().into(),
            };
            let key = key(&digest.sha256, store_mode);
            if self.has(&key, size) {
                // Already pooled: a temporary written so far is dropped (removed).
                return Ok(digest);
            }
            let temp = match temp {
                Some(mut t) => {
                    t.write(&buf[..filled])?;
                    t
                }
                None => PoolTemp::create(self, &buf[..filled])?,
            };
            temp.publish(&key, size, store_mode, journal)?;
            Ok(digest)
        })
    }

    /// Links pool entry `key` as `to.name` in directory `to.parent`. When the
    /// pool inode has too many links, a private copy is made instead.
    pub fn link_into(&self, key: &str, to: Destination<'_>) -> Result<()> {
        match rfs::linkat(&self.dir, key, to.parent, to.name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::MLINK) => self.copy_into(key, to),
            Err(rustix::io::Errno::NOENT) => Err(fruix_core::Error::NotFound {
                path: self.path.join(key),
                hint: "the store pool lost this entry while it was being used (removed by hand?); run the command again"
                    .into(),
            }
            .into()),
            Err(e) => Err(self.link_failed(key, to, e)),
        }
    }

    fn copy_into(&self, key: &str, to: Destination<'_>) -> Result<()> {
        let mode = key_mode(key).expect("pool keys are valid");
        let source = rfs::openat(
            &self.dir,
            key,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fruix_core::Error::io("open", self.path.join(key), e.into()))?;
        let target = rfs::openat(
            to.parent,
            to.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fruix_core::Error::io("create", to.display, e.into()))?;
        let (mut source, mut target) = (File::from(source), File::from(target));
        io::copy(&mut source, &mut target).with_path("copy", to.display)?;
        finish_file(target.as_fd(), mode, to.display)
    }

    /// Whether every entry among `keys` is there and linked by an object
    /// (a link count above 1).
    pub fn all_linked(&self, keys: &[String]) -> bool {
        keys.iter().all(|key| {
            matches!(
                rfs::statat(&self.dir, key.as_str(), AtFlags::SYMLINK_NOFOLLOW),
                Ok(st) if stat::nlink(&st) > 1
            )
        })
    }

    /// Removes the entries among `keys` that no object links (link count 1).
    /// The caller holds the store exclusively, so no promotion is about to
    /// link them. Returns how many were removed.
    pub fn remove_unlinked(&self, keys: &[String]) -> usize {
        keys.iter()
            .filter(|key| {
                matches!(
                    rfs::statat(&self.dir, key.as_str(), AtFlags::SYMLINK_NOFOLLOW),
                    Ok(st) if stat::nlink(&st) == 1
                ) && rfs::unlinkat(&self.dir, key.as_str(), AtFlags::empty()).is_ok()
            })
            .count()
    }

    /// Removes entry (or stray file) `name`; a directory there (no entry
    /// is one) goes with all it holds, removed beneath the pool's descriptor
    /// without following a symlink (`remove_at`).
    pub fn remove(&self, name: impl AsRef<Path>) -> Result<()> {
        let name = name.as_ref();
        remove_at(self.dir.as_fd(), name, 0)
            .map_err(|e| fruix_core::Error::io("remove", self.path.join(name), e).into())
    }

    /// Calls `f` with the pool's names (temporaries left out), `chunk` at a
    /// time, in directory order: memory does not grow with the pool. Names
    /// are as they are, byte for byte: a stray one that is not UTF-8 is
    /// named (and removed by a repair) exactly.
    pub fn for_each_chunk(&self, chunk: usize, mut f: impl FnMut(&[OsString])) -> Result<()> {
        self.try_for_each_chunk(chunk, |c| {
            f(c);
            Ok(())
        })
    }

    /// [`Pool::for_each_chunk`], stopping at the first chunk `f` fails.
    pub fn try_for_each_chunk(
        &self,
        chunk: usize,
        mut f: impl FnMut(&[OsString]) -> Result<()>,
    ) -> Result<()> {
        // A fresh open of the directory: listings never share a position.
        let listing = rfs::Dir::read_from(&self.dir)
            .map_err(|e| fruix_core::Error::io("read", &self.path, e.into()))?;
        let mut names = Vec::with_capacity(chunk);
        for item in listing {
            let item = item.map_err(|e| fruix_core::Error::io("read", &self.path, e.into()))?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." || name.starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            names.push(OsString::from_vec(name.to_vec()));
            if names.len() == chunk {
                f(&names)?;
                names.clear();
            }
        }
        match names.is_empty() {
            true => Ok(()),
            false => f(&names),
        }
    }

    /// Checks one pool entry: a well-formed name, a regular file with the
    /// name's mode, and content that hashes to the name. Returns its size.
    pub fn check_entry(&self, name: impl AsRef<OsStr>) -> std::result::Result<u64, PoolProblem> {
        let name = Path::new(name.as_ref());
        let path = self.path.join(name);
        let problem = |message: String| PoolProblem {
            path: path.clone(),
            message,
        };
        let (key, mode) = name
            .to_str()
            .and_then(|k| Some((k, key_mode(k)?)))
            .ok_or_else(|| {
                problem("is not a pool entry (its name is not <sha256>-<r|x>)".into())
            })?;
        let fd = rfs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| problem(format!("cannot be opened: {}", io::Error::from(e))))?;
        let st = rfs::fstat(&fd).map_err(|e| problem(io::Error::from(e).to_string()))?;
        if stat::file_type(&st) != FileType::RegularFile {
            return Err(problem("is not a regular file".into()));
        }
        if stat::mode(&st) != mode {
            return Err(problem(format!(
                "has mode {:04o}, not {mode:04o}",
                stat::mode(&st)
            )));
        }
        let mut file = File::from(fd);
        let (sha256, size) = with_buffer(|buf| {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                match io::Read::read(&mut file, buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        size += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(problem(format!("cannot be read: {e}"))),
                }
            }
            Ok((<[u8; 32]>::from(hasher.finalize()), size))
        })?;
        let digest = hex::encode(sha256);
        if !key.starts_with(&digest) {
            return Err(problem(format!(
                "content hashes to {digest}, not to its name: the file was changed after it entered the store"
            )));
        }
        Ok(size)
    }
}

/// Gives an open file its store mode and time.
pub fn finish_file(fd: BorrowedFd<'_>, mode: u32, display: &Path) -> Result<()> {
    rfs::fchmod(fd, Mode::from_raw_mode(mode as _))
        .map_err(|e| fruix_core::Error::io("set mode of", display, e.into()))?;
    rfs::futimens(fd, &store_times())
        .map_err(|e| fruix_core::Error::io("set time of", display, e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn temporary_and_lock_names_fit_in_a_file_name_whatever_the_object_s_name() {
        for name in ["a".repeat(255), "é".repeat(127) + "a", "short".into()] {
            let temp = temp_name(&name);
            assert!(temp.len() <= NAME_MAX, "{temp}");
            assert!(temp.starts_with(TEMP_PREFIX), "{temp}");
            let lock = lock_file_name(&name);
            assert!(lock.len() <= NAME_MAX, "{lock}");
            assert_eq!(lock, lock_file_name(&name));
        }
        assert!(temp_name("short").starts_with(".tmp-short-"));
        assert_eq!(lock_file_name("short"), "short.lock");
        assert_ne!(
            lock_file_name(&"a".repeat(255)),
            lock_file_name(&"a".repeat(254))
        );
    }

    use super::*;

    /// A directory where the pool entry `key` of `content` goes, holding
    /// a read-only directory and a symlink to `outside`.
    fn directory_at_entry(pool: &Path, content: &[u8], outside: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let key = key(&Sha256::digest(content).into(), 0o444);
        let sub = pool.join(&key).join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(outside, pool.join(&key).join("link")).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
        key
    }

    /// Regression: a directory at a pool entry's name could not be
    /// removed (`store verify --repair`: "Is a directory"), nor replaced
    /// by a promotion needing that entry. Both now remove it, beneath the
    /// pool's descriptor, never following a symlink in it.
    #[test]
    fn a_directory_at_an_entry_s_name_is_removed_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (pool_dir, outside) = (dir.path().join("pool"), dir.path().join("outside"));
        std::fs::create_dir_all(&pool_dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("kept"), "mine").unwrap();
        let pool = Pool::open(pool_dir.clone()).unwrap();
        let key = directory_at_entry(&pool_dir, b"one", &outside);
        pool.remove(&key).unwrap();
        assert!(pool_dir.join(&key).symlink_metadata().is_err());
        let key = directory_at_entry(&pool_dir, b"two", &outside);
        let journal = Journal::create(dir.path().join("journal")).unwrap();
        let display = Path::new("two");
        let digest = pool.ingest_stream(&mut &b"two"[..], 3, 0o444, &journal, display);
        assert_eq!(digest.map(|d| d.size).ok(), Some(3));
        assert_eq!(pool.check_entry(&key), Ok(3));
        assert_eq!(std::fs::read(outside.join("kept")).unwrap(), b"mine");
    }

    #[test]
    fn keys_name_content_and_exec_bit() {
        let sha = [0xab; 32];
        assert_eq!(key(&sha, 0o444), format!("{}-r", "ab".repeat(32)));
        assert_eq!(key(&sha, 0o555), format!("{}-x", "ab".repeat(32)));
        assert_eq!(key_mode(&key(&sha, 0o555)), Some(0o555));
        assert_eq!(key_mode(&key(&sha, 0o444)), Some(0o444));
        for bad in ["", "x", &"AB".repeat(32), &format!("{}-y", "ab".repeat(32))] {
            assert_eq!(key_mode(bad), None, "{bad}");
        }
    }
}
