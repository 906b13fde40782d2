//! A temporary file in the pool, written and hashed as it is read, then
//! published under its key ([`PoolTemp::publish`]) or removed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use fruix_core::error::IoContext;

use super::{finish_file, temp_name, Journal, Pool};
use crate::error::Result;

/// A temporary file in the pool, removed unless published.
pub(super) struct PoolTemp<'p> {
    pool: &'p Pool,
    file: File,
    /// Empty once published.
    name: String,
}

impl<'p> PoolTemp<'p> {
    pub(super) fn create(pool: &'p Pool, first: &[u8]) -> Result<PoolTemp<'p>> {
        let name = temp_name("pool");
        let fd = rfs::openat(
            &pool.dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fruix_core::Error::io("create", pool.path.join(&name), e.into()))?;
        let mut temp = PoolTemp {
            pool,
            file: File::from(fd),
            name,
        };
        temp.write(first)?;
        Ok(temp)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .with_path("write into the store pool", self.pool.path.join(&self.name))
            .map_err(Into::into)
    }

    /// Sets the store mode and time, records `key` in the journal and moves
    /// the temporary to it, never over an entry already there: another
    /// process may be linking that one into an object, and Linux fails a
    /// link to a name whose inode a rename is replacing (`ENOENT`), which
    /// failed a concurrent import of the same archive. An entry that
    /// appeared meanwhile holds the same bytes (its name is their hash) and
    /// stays, the temporary removed; a damaged one (not a regular file of
    /// `size` bytes and the key's mode, or a directory) goes first.
    pub(super) fn publish(
        mut self,
        key: &str,
        size: u64,
        store_mode: u32,
        journal: &Journal,
    ) -> Result<()> {
        let display = self.pool.path.join(&self.name);
        finish_file(self.file.as_fd(), store_mode, &display)?;
        start_writeback(&self.file);
        journal.record(key)?;
        let mut damaged_removed = false;
        loop {
            match self.move_to(key) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) if self.pool.has(key, size) => return Ok(()),
                Err(Errno::EXIST | Errno::ISDIR | Errno::NOTEMPTY) if !damaged_removed => {
                    self.pool.remove(key)?;
                    damaged_removed = true;
                }
                Err(e) => {
                    let path = self.pool.path.join(key);
                    return Err(
                        fruix_core::Error::io("add to the store pool", path, e.into()).into(),
                    );
                }
            }
        }
    }

    /// Gives the temporary the name `key`, failing with `EEXIST` when
    /// something is there: a rename that replaces nothing
    /// (`RENAME_NOREPLACE`) on Linux, else (or where the file system does
    /// not take that flag) a hard link, the temporary's name then removed
    /// when it is dropped.
    fn move_to(&mut self, key: &str) -> std::result::Result<(), Errno> {
        #[cfg(target_os = "linux")]
        {
            let (dir, name) = (&self.pool.dir, self.name.as_str());
            match rfs::renameat_with(dir, name, dir, key, rfs::RenameFlags::NOREPLACE) {
                Ok(()) => {
                    self.name.clear();
                    return Ok(());
                }
                Err(Errno::INVAL | Errno::NOSYS) => {}
                Err(e) => return Err(e),
            }
        }
        self.link_to(key)
    }

    /// Links the temporary as `key` (`EEXIST` when something is there); its
    /// own name goes when it is dropped.
    fn link_to(&self, key: &str) -> std::result::Result<(), Errno> {
        let dir = &self.pool.dir;
        rfs::linkat(dir, self.name.as_str(), dir, key, AtFlags::empty())
    }
}

impl Drop for PoolTemp<'_> {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = rfs::unlinkat(&self.pool.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Starts writing a new pool file to disk now, so that the flush before
/// publishing overlaps with the copying of other files.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on a valid, owned descriptor; failure only
        // means the data is written at the final flush instead.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::pool::key;

    /// A pool in `dir`, a journal, and the key of `content` (mode 0444).
    fn pool_in(dir: &Path, content: &[u8]) -> (Pool, Journal, String) {
        std::fs::create_dir_all(dir.join("pool")).unwrap();
        let pool = Pool::open(dir.join("pool")).unwrap();
        let journal = Journal::create(dir.join("journal")).unwrap();
        (pool, journal, key(&Sha256::digest(content).into(), 0o444))
    }

    /// Writes `bytes` at `path` as a pool entry of mode 0444.
    fn entry(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }

    /// What the pool directory holds besides entries (`.tmp-*`).
    fn temporaries(pool: &Pool) -> Vec<String> {
        std::fs::read_dir(&pool.path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(crate::pool::TEMP_PREFIX))
            .collect()
    }

    /// Regression: a temporary published under a key another process had
    /// just published replaced that entry (a rename over it), and a third
    /// linking the entry at that instant failed with `ENOENT` ("the store
    /// pool lost this entry", exit 4): two imports of one archive at once.
    /// The entry there now stays, the same inode, and the temporary goes.
    #[test]
    fn publishing_never_replaces_an_entry_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, journal, key) = pool_in(dir.path(), b"same");
        let there = pool.path.join(&key);
        let temp = PoolTemp::create(&pool, b"same").unwrap();
        entry(&there, b"same");
        let inode = std::fs::metadata(&there).unwrap().ino();
        temp.publish(&key, 4, 0o444, &journal).unwrap();
        let after = std::fs::metadata(&there).unwrap();
        assert_eq!(
            (after.ino(), after.nlink()),
            (inode, 1),
            "the entry was replaced"
        );
        assert_eq!(temporaries(&pool), Vec::<String>::new());
    }

    /// An entry that is damaged (another size), or a directory at its
    /// name, is replaced by the temporary.
    #[test]
    fn a_damaged_entry_or_a_directory_at_its_name_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, journal, key) = pool_in(dir.path(), b"right");
        let there = pool.path.join(&key);
        for damage in ["short", "directory"] {
            match damage {
                "short" => entry(&there, b"rig"),
                _ => std::fs::create_dir_all(there.join("sub")).unwrap(),
            }
            let temp = PoolTemp::create(&pool, b"right").unwrap();
            temp.publish(&key, 5, 0o444, &journal).unwrap();
            assert_eq!(std::fs::read(&there).unwrap(), b"right", "{damage}");
            assert_eq!(std::fs::metadata(&there).unwrap().nlink(), 1, "{damage}");
            assert_eq!(temporaries(&pool), Vec::<String>::new(), "{damage}");
            std::fs::remove_file(&there).unwrap();
        }
        // Linked where a rename cannot refuse to replace (not Linux): the
        // temporary's name goes when it is dropped.
        let temp = PoolTemp::create(&pool, b"right").unwrap();
        entry(&there, b"right");
        assert_eq!(temp.link_to(&key), Err(Errno::EXIST));
        std::fs::remove_file(&there).unwrap();
        assert_eq!(temp.link_to(&key), Ok(()));
        drop(temp);
        assert_eq!(std::fs::read(&there).unwrap(), b"right");
        assert_eq!(temporaries(&pool), Vec::<String>::new());
        std::fs::remove_file(&there).unwrap();
        // Nothing there: published as it is.
        let temp = PoolTemp::create(&pool, b"right").unwrap();
        temp.publish(&key, 5, 0o444, &journal).unwrap();
        assert_eq!(std::fs::read(&there).unwrap(), b"right");
        assert_eq!(temporaries(&pool), Vec::<String>::new());
    }
}
