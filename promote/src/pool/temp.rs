//! A temporary file in the pool, written and hashed as it is read, then
//! published under its key ([`PoolTemp::publish`]) or removed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

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

    /// Sets the store mode and time, records `key` in the journal and renames
    /// the temporary to it. An entry that appeared meanwhile holds the same
    /// bytes (its name is their hash), so replacing it is harmless, and costs
    /// one directory operation less than linking and unlinking.
    pub(super) fn publish(mut self, key: &str, store_mode: u32, journal: &Journal) -> Result<()> {
        let display = self.pool.path.join(&self.name);
        finish_file(self.file.as_fd(), store_mode, &display)?;
        start_writeback(&self.file);
        journal.record(key)?;
        let rename = || rfs::renameat(&self.pool.dir, self.name.as_str(), &self.pool.dir, key);
        let renamed = match rename() {
            // A directory is where the entry goes: no entry is one, and a
            // damaged entry is replaced (`has`), so it goes first.
            Err(rustix::io::Errno::ISDIR) => {
                self.pool.remove(key)?;
                rename()
            }
            other => other,
        };
        renamed.map_err(|e| {
            fruix_core::Error::io("add to the store pool", self.pool.path.join(key), e.into())
        })?;
        self.name.clear();
        Ok(())
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
