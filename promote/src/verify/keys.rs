//! The pool entries the objects named to `store verify` link, gathered in
//! memory that does not grow with the objects: their manifests are read
//! line by line, the keys sorted a run at a time into a temporary file and
//! merged back in order, each once, a chunk at a time ([`PoolKeys`]), as
//! the whole store's check lists the pool a chunk at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use fruix_core::manifest::{EntryKind, SPECIAL_BITS};

use crate::check::for_each_store_entry;
use crate::error::{Error, Result};

/// How many bytes a pool key takes here: the content's SHA-256, then its
/// kind (`r` or `x`), which order as the keys' names do.
const KEY_LEN: usize = 33;

/// A pool key as [`KEY_LEN`] bytes.
type Key = [u8; KEY_LEN];

/// What memory the keys may take, in keys.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Keys held before they are sorted and written out as a run.
    run: usize,
    /// Runs merged at once; more are first merged a group at a time into
    /// longer runs.
    fan_in: usize,
    /// Keys read from (or written to) a run at a time.
    block: usize,
}

/// 2 MiB of keys held, 64 runs of 4 KiB read at once.
const LIMITS: Limits = Limits {
    run: 1 << 16,
    fan_in: 64,
    block: 128,
};

/// A written run of keys, sorted and each once: where it starts in the
/// temporary file (in bytes) and how many keys it holds.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    keys: u64,
}

/// The pool keys of some objects' files ([`pool_keys`]), to be read back
/// sorted, each once ([`PoolKeys::for_each_chunk`]). At most a run of keys
/// is held in memory; the others are in an unnamed temporary file.
#[derive(Debug)]
pub struct PoolKeys {
    limits: Limits,
    held: Vec<Key>,
    file: Option<File>,
    runs: Vec<Run>,
    end: u64,
    /// The first error writing a run, returned when the keys are read.
    failed: Option<Error>,
    /// The most keys held at once, and the most runs merged at once.
    most_held: usize,
    widest_merge: usize,
}

/// A failure to `action` the unnamed temporary file the keys are sorted
/// through: it names the directory and `TMPDIR`, which chooses it.
fn temp_failed(action: &str, e: std::io::Error) -> Error {
    fruix_core::Error::system(format!(
        "failed to {action} a temporary file in {} (TMPDIR) to sort the pool entries of the objects named: {e}; set TMPDIR to a writable directory with room",
        fruix_core::escape::path(&std::env::temp_dir())
    ))
    .into()
}

/// The pool entries the files of `objects` link to (objects whose manifest
/// cannot be read to its end are left to [`super::verify_object`] to
/// report: they link none here, as when their manifests were read whole).
pub fn pool_keys(objects: &[PathBuf]) -> PoolKeys {
    gather(objects, LIMITS)
}

/// [`pool_keys`] within `limits`.
fn gather(objects: &[PathBuf], limits: Limits) -> PoolKeys {
    let mut keys = PoolKeys::new(limits);
    for object in objects {
        // Read through once before any key is taken, so that an object
        // whose manifest fails half-way gives none. The objects are
        // read-only, and the collector's lock held keeps them: the second
        // reading reads the same.
        if for_each_store_entry(object, |_| Ok(())).is_err() {
            continue;
        }
        let _ = for_each_store_entry(object, |entry| {
            if let EntryKind::File { sha256, .. } = entry.kind {
                keys.push(key(&sha256, entry.mode & !SPECIAL_BITS));
            }
            Ok(())
        });
    }
    keys
}

/// The key of content `sha256` stored with mode `store_mode`, as bytes.
fn key(sha256: &[u8; 32], store_mode: u32) -> Key {
    let name = crate::pool::key(sha256, store_mode);
    let mut key = [0; KEY_LEN];
    key[..32].copy_from_slice(sha256);
    key[32] = name.as_bytes()[name.len() - 1];
    key
}

/// The pool entry name of `key`: [`crate::pool::key`]'s.
fn name(key: &Key) -> OsString {
    let sha256: &[u8; 32] = key[..32].try_into().expect("32 bytes");
    let mode = if key[32] == b'x' { 0o555 } else { 0o444 };
    crate::pool::key(sha256, mode).into()
}

impl PoolKeys {
    fn new(limits: Limits) -> Self {
        PoolKeys {
            limits,
            held: Vec::new(),
            file: None,
            runs: Vec::new(),
            end: 0,
            failed: None,
            most_held: 0,
            widest_merge: 0,
        }
    }

    fn push(&mut self, key: Key) {
        if self.failed.is_some() {
            return;
        }
        self.held.push(key);
        self.most_held = self.most_held.max(self.held.len());
        if self.held.len() >= self.limits.run {
            if let Err(e) = self.write_held() {
                self.failed = Some(e);
            }
        }
    }

    /// Writes the keys held as a run, sorted and each once.
    fn write_held(&mut self) -> Result<()> {
        self.held.sort_unstable();
        self.held.dedup();
        let held = std::mem::take(&mut self.held);
        let mut writer = self.writer()?;
        for key in &held {
            writer.push(key)?;
        }
        let run = writer.finish()?;
        self.runs.push(run);
        // The memory is kept for the next run.
        self.held = held;
        self.held.clear();
        Ok(())
    }

    /// A run written at the end of the temporary file, made if need be.
    fn writer(&mut self) -> Result<RunWriter<'_>> {
        if self.file.is_none() {
            let file = tempfile::tempfile().map_err(|e| temp_failed("make", e))?;
            self.file = Some(file);
        }
        Ok(RunWriter {
            file: self.file.as_ref().expect("made above"),
            end: &mut self.end,
            run: Run { start: 0, keys: 0 },
            buffer: Vec::with_capacity(self.limits.block * KEY_LEN),
        })
    }

    /// Calls `f` with the keys' names, sorted and each once, `chunk` (at
    /// least one) at a time.
    pub fn for_each_chunk(
        mut self,
        chunk: usize,
        f: impl FnMut(&[OsString]) -> Result<()>,
    ) -> Result<()> {
        self.read(chunk, f)
    }

    /// [`PoolKeys::for_each_chunk`], leaving what was read.
    fn read(&mut self, chunk: usize, mut f: impl FnMut(&[OsString]) -> Result<()>) -> Result<()> {
        let mut names = Vec::with_capacity(chunk);
        let mut emit = |key: Key| -> Result<()> {
            names.push(name(&key));
            if names.len() >= chunk.max(1) {
                f(&names)?;
                names.clear();
            }
            Ok(())
        };
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.runs.is_empty() {
            self.held.sort_unstable();
            self.held.dedup();
            for key in std::mem::take(&mut self.held) {
                emit(key)?;
            }
        } else {
            if !self.held.is_empty() {
                self.write_held()?;
            }
            self.held = Vec::new();
            // Longer runs, fewer of them, until they can be merged at once.
            let fan_in = self.limits.fan_in.max(2);
            while self.runs.len() > fan_in {
                let groups: Vec<Vec<Run>> = self.runs.chunks(fan_in).map(<[Run]>::to_vec).collect();
                self.runs.clear();
                let file = self.file.as_ref().expect("runs were written");
                for group in groups {
                    self.widest_merge = self.widest_merge.max(group.len());
                    let mut writer = RunWriter {
                        file,
                        end: &mut self.end,
                        run: Run { start: 0, keys: 0 },
                        buffer: Vec::with_capacity(self.limits.block * KEY_LEN),
                    };
                    merge(file, &group, self.limits.block, |key| writer.push(&key))?;
                    self.runs.push(writer.finish()?);
                }
            }
            self.widest_merge = self.widest_merge.max(self.runs.len());
            let file = self.file.as_ref().expect("runs were written");
            merge(file, &self.runs, self.limits.block, &mut emit)?;
        }
        if !names.is_empty() {
            f(&names)?;
        }
        Ok(())
    }
}

/// Writes a run at the end of the temporary file, a block at a time.
struct RunWriter<'a> {
    file: &'a File,
    end: &'a mut u64,
    run: Run,
    buffer: Vec<u8>,
}

impl RunWriter<'_> {
    fn push(&mut self, key: &Key) -> Result<()> {
        if self.run.keys == 0 && self.buffer.is_empty() {
            self.run.start = *self.end;
        }
        self.buffer.extend_from_slice(key);
        self.run.keys += 1;
        if self.buffer.len() >= self.buffer.capacity() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buffer, *self.end)
            .map_err(|e| temp_failed("write", e))?;
        *self.end += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Run> {
        self.flush()?;
        Ok(self.run)
    }
}

/// Reads a run back, a block at a time.
struct RunReader<'a> {
    file: &'a File,
    /// The next key not yet in `block`, and the run's end, in keys.
    next: u64,
    run: Run,
    block: Vec<Key>,
    at: usize,
    block_len: usize,
}

impl RunReader<'_> {
    fn next(&mut self) -> Result<Option<Key>> {
        if self.at == self.block.len() {
            let count = (self.run.keys - self.next).min(self.block_len as u64) as usize;
            if count == 0 {
                return Ok(None);
            }
            let mut bytes = vec![0; count * KEY_LEN];
            let offset = self.run.start + self.next * KEY_LEN as u64;
            self.file
                .read_exact_at(&mut bytes, offset)
                .map_err(|e| temp_failed("read", e))?;
            self.block.clear();
            for key in bytes.chunks_exact(KEY_LEN) {
                self.block.push(key.try_into().expect("KEY_LEN bytes"));
            }
            self.next += count as u64;
            self.at = 0;
        }
        self.at += 1;
        Ok(Some(self.block[self.at - 1]))
    }
}

/// Calls `out` with the keys of `runs`, sorted and each once.
fn merge(
    file: &File,
    runs: &[Run],
    block: usize,
    mut out: impl FnMut(Key) -> Result<()>,
) -> Result<()> {
    let mut readers: Vec<RunReader<'_>> = runs
        .iter()
        .map(|&run| RunReader {
            file,
            next: 0,
            run,
            block: Vec::with_capacity(block),
            at: 0,
            block_len: block.max(1),
        })
        .collect();
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, reader) in readers.iter_mut().enumerate() {
        if let Some(key) = reader.next()? {
            heap.push(Reverse((key, i)));
        }
    }
    let mut last = None;
    while let Some(Reverse((key, i))) = heap.pop() {
        if last != Some(key) {
            out(key)?;
            last = Some(key);
        }
        if let Some(key) = readers[i].next()? {
            heap.push(Reverse((key, i)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    use fruix_core::testing::TestDir;
    use sha2::Digest;

    use super::*;
    use crate::check::read_store_manifest;
    use crate::verify::verify_pool;
    use crate::{promote_native_build_result, PromoteOptions, Store};

    /// Small limits, so that a few keys make many runs, merged in levels.
    const SMALL: Limits = Limits {
        run: 16,
        fan_in: 3,
        block: 4,
    };

    /// The keys `keys` gives, each chunk at most `chunk` long.
    fn read_back(keys: &mut PoolKeys, chunk: usize) -> Vec<String> {
        let mut names = Vec::new();
        keys.read(chunk, |c| {
            assert!(!c.is_empty() && c.len() <= chunk, "{}", c.len());
            names.extend(c.iter().map(|n| n.to_string_lossy().into_owned()));
            Ok(())
        })
        .unwrap();
        names
    }

    /// Keys in a run at a time, merged three runs at a time, come back as
    /// the whole set of their names gave them: sorted, each once. Never
    /// more than a run of keys is held, nor more runs read at once.
    #[test]
    fn keys_come_back_sorted_once_each_holding_a_run_at_most() {
        for count in [0, 5, 16, 17, 1000] {
            let mut keys = PoolKeys::new(SMALL);
            let mut set = BTreeSet::new();
            for i in 0..count {
                let sha256: [u8; 32] = sha2::Sha256::digest((i % 300).to_string()).into();
                let mode = if i % 7 == 0 { 0o555 } else { 0o444 };
                keys.push(key(&sha256, mode));
                set.insert(crate::pool::key(&sha256, mode));
            }
            assert_eq!(keys.runs.len() > SMALL.fan_in, count == 1000, "{count}");
            let names = read_back(&mut keys, 10);
            assert_eq!(names, set.into_iter().collect::<Vec<_>>(), "{count}");
            assert!(keys.most_held <= SMALL.run, "{}", keys.most_held);
            assert!(keys.widest_merge <= SMALL.fan_in, "{}", keys.widest_merge);
        }
    }

    /// Every pool entry of the promoted objects named (several times: their
    /// keys repeat), as the whole set of their manifests' keys gave them, and
    /// the pool check of them, one entry corrupt and one missing, as it was.
    #[test]
    fn pool_keys_and_their_check_are_the_whole_sets() {
        let dir = TestDir::new();
        let root = dir.root("r1", "local", "20260405T213444Z", true);
        let store = Store::open(&dir.store()).unwrap();
        let report =
            promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        let mut objects: Vec<PathBuf> = report
            .artifacts
            .values()
            .map(|a| a.store_path.clone())
            .collect();
        objects.push(report.result_store.clone());
        objects.extend(objects.clone());
        // No manifest: links nothing.
        objects.push(dir.store().join(".fruix"));
        let mut whole = BTreeSet::new();
        for object in &objects {
            for e in read_store_manifest(object).into_iter().flatten() {
                if let EntryKind::File { sha256, .. } = e.kind {
                    whole.insert(crate::pool::key(&sha256, e.mode & !SPECIAL_BITS));
                }
            }
        }
        // Smaller still: the fixture's objects link a few entries.
        let tiny = Limits {
            run: 2,
            fan_in: 2,
            block: 1,
        };
        assert!(whole.len() > 2 * tiny.fan_in * tiny.run, "{}", whole.len());
        let mut keys = gather(&objects, tiny);
        assert!(keys.runs.len() > tiny.fan_in, "{:?}", keys.runs);
        assert_eq!(
            read_back(&mut keys, 3),
            whole.iter().cloned().collect::<Vec<_>>()
        );
        assert!(keys.most_held <= tiny.run, "{}", keys.most_held);
        assert!(keys.widest_merge <= tiny.fan_in, "{}", keys.widest_merge);

        let pool = dir.store().join(".links");
        let mut entries = whole.iter().map(|k| pool.join(k));
        let corrupt = entries.next().unwrap();
        let missing = entries.next().unwrap();
        std::fs::set_permissions(&corrupt, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&corrupt, "tampered").unwrap();
        std::fs::remove_file(&missing).unwrap();
        // What the pool check of the whole set found.
        let (mut checked, mut problems) = (0, Vec::new());
        for name in &whole {
            match store.pool().check_entry(name) {
                Ok(_) => checked += 1,
                Err(p) if store.pool().inode_of(name).is_some() => {
                    checked += 1;
                    problems.push((p.path, p.message));
                }
                Err(_) => {}
            }
        }
        assert_eq!((checked, problems.len()), (whole.len() - 1, 1));
        assert_eq!(problems[0].0, corrupt);
        let found = verify_pool(&store, Some(gather(&objects, tiny)), None).unwrap();
        let found_problems: Vec<_> = found
            .corrupt
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect();
        assert_eq!((found.checked, found_problems), (checked, problems));
    }
    /// Regression: a TMPDIR that cannot take the temporary file was said as
    /// `failed to create /nonexistent-dir`, naming neither the temporary
    /// file nor TMPDIR. (A system failure: exit 3.)
    #[test]
    fn a_temporary_file_that_cannot_be_made_names_tmpdir() {
        let e = temp_failed("make", std::io::Error::from_raw_os_error(libc::ENOENT));
        let text = e.to_string();
        assert!(text.contains("a temporary file in"), "{text}");
        assert!(
            text.contains("(TMPDIR)") && text.contains("set TMPDIR"),
            "{text}"
        );
        assert_eq!(e.exit_status(), fruix_core::ExitStatus::SystemFailure);
    }
}
