//! The pool's part of a collection: the entries no object links any more,
//! found a chunk of the pool's listing at a time, so that memory does not
//! grow with the pool.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use fruix_core::error::IoContext;
use fruix_core::manifest::Progress;

use super::{GcReport, Refused};
use crate::error::Result;
use crate::pipeline::check_cancelled;
use crate::pool::TEMP_PREFIX;
use crate::store::Store;

/// Pool entries listed, stat'ed and removed together: at most this many
/// names are held at once, whatever the pool's size.
pub(super) const CHUNK: usize = 4096;

/// The links that the directories a dry run would remove hold to files
/// with more than one link: what removing them would unlink. Kept sorted,
/// one element a link, so a file's count is the length of its run: the
/// inodes of those on the pool's device (any pool entry's), 8 bytes each,
/// and the device and inode of any other (none, but where something is
/// mounted in an object).
///
/// This is the one part of a dry run whose memory grows, and it grows with
/// what would be removed, never with the pool: 8 bytes for each link to a
/// multiply-linked file in those directories. A pool entry would go when
/// every link to it but its own is among them; whether it is cannot be
/// told from the pool's side (its other links may be anywhere), and which
/// of a file's links is the pool's cannot be told from the objects' side
/// (an entry's name is its content's hash, which a directory left by a
/// killed process need not match), so the two sides meet here: the pool
/// is listed a chunk at a time, and each entry looked up in these.
#[derive(Debug, Default)]
pub(super) struct GoingLinks {
    dev: u64,
    inodes: Vec<u64>,
    others: Vec<(u64, u64)>,
}

impl GoingLinks {
    /// The links in directories `going` (links are never followed) to
    /// files `store`'s pool may hold. Cancelled through `progress`, it
    /// stops before its next directory.
    pub(super) fn of(
        store: &Store,
        going: &[PathBuf],
        progress: Option<&Progress>,
    ) -> Result<GoingLinks> {
        let pool = store.pool().path();
        let dev = fs::metadata(pool).with_path("stat", pool)?.dev();
        let mut links = GoingLinks {
            dev,
            ..GoingLinks::default()
        };
        for dir in going {
            check_cancelled(progress)?;
            let files = walkdir::WalkDir::new(dir)
                .follow_links(false)
                .follow_root_links(false)
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file());
            for m in files.filter_map(|e| e.metadata().ok()) {
                match (m.nlink() > 1, m.dev() == dev) {
                    (false, _) => {}
                    (true, true) => links.inodes.push(m.ino()),
                    (true, false) => links.others.push((m.dev(), m.ino())),
                }
            }
        }
        links.inodes.sort_unstable();
        links.inodes.shrink_to_fit();
        links.others.sort_unstable();
        Ok(links)
    }

    /// How many of the links are to the file `id` (device and inode).
    fn count(&self, id: (u64, u64)) -> u64 {
        fn run<T: Ord>(sorted: &[T], x: &T) -> u64 {
            let from = sorted.partition_point(|i| i < x);
            (sorted[from..].partition_point(|i| i <= x)) as u64
        }
        match id.0 == self.dev {
            true => run(&self.inodes, &id.1),
            false => run(&self.others, &id),
        }
    }
}

/// A file's device, inode and link count, as `u64` whatever the platform's
/// types.
#[allow(clippy::unnecessary_cast)] // u64 on some platforms only
fn identity(st: &rfs::Stat) -> (u64, u64, u64) {
    (st.st_dev as u64, st.st_ino as u64, st.st_nlink as u64)
}

/// Removes the pool entries no object links (link count 1), and the pool's
/// temporaries, counting them (entries, their bytes on disk, temporaries)
/// in `report`. A `dry_run` removes nothing and counts the entries that
/// would be left with no other link once the directories `going` counts
/// the links of (what the collection would remove) are gone. Cancelled
/// through `progress`, it stops before its next entry.
pub(super) fn collect_pool(
    store: &Store,
    dry_run: bool,
    going: &GoingLinks,
    progress: Option<&Progress>,
    report: &mut GcReport,
) -> Result<()> {
    sweep(store, CHUNK, dry_run, going, progress, report, |_, _| {})?;
    let path = store.pool().path();
    for entry in fs::read_dir(path).with_path("read", path)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            match dry_run {
                true => report.temporaries += 1,
                false => match fs::remove_file(&path) {
                    Ok(()) => report.temporaries += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        let e = fruix_core::Error::io("remove", &path, e).into();
                        report.refused.push(Refused::new(path, true, &e));
                    }
                },
            }
        }
    }
    Ok(())
}

/// The pool entries of [`collect_pool`] (not its temporaries), listed
/// `chunk` names at a time, each chunk stat'ed (and its unlinked entries
/// removed) before the next is read: `seen` is shown each chunk, and the
/// report so far, as it is read.
fn sweep(
    store: &Store,
    chunk: usize,
    dry_run: bool,
    going: &GoingLinks,
    progress: Option<&Progress>,
    report: &mut GcReport,
    mut seen: impl FnMut(&[OsString], &GcReport),
) -> Result<()> {
    let path = store.pool().path();
    let dir = rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| fruix_core::Error::io("open", path, e.into()))?;
    // Removing entries already listed while the listing goes on is safe:
    // POSIX leaves unspecified only whether a name removed or added after
    // the directory was opened is read, never whether the others are.
    store.pool().try_for_each_chunk(chunk, |names| {
        seen(names, report);
        for name in names {
            check_cancelled(progress)?;
            let Ok(st) = rfs::statat(&dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let (dev, ino, nlink) = identity(&st);
            let links = nlink.saturating_sub(going.count((dev, ino)));
            if links == 1
                && (dry_run || rfs::unlinkat(&dir, name.as_os_str(), AtFlags::empty()).is_ok())
            {
                report.pool_entries += 1;
                report.pool_bytes += st.st_blocks as u64 * 512;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::TestDir;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;
    use std::path::Path;

    /// The collection's pool sweep as it was before it went a chunk at a
    /// time: the whole listing first, and a map of every multiply-linked
    /// file in `going`. Returns (entries, bytes).
    fn whole_list(store: &Store, dry_run: bool, going: &[PathBuf]) -> (usize, u64) {
        let mut links: HashMap<(u64, u64), u64> = HashMap::new();
        for dir in going.iter().filter(|_| dry_run) {
            for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
                let m = e.metadata().unwrap();
                if e.file_type().is_file() && m.nlink() > 1 {
                    *links.entry((m.dev(), m.ino())).or_insert(0) += 1;
                }
            }
        }
        let mut names = Vec::new();
        store
            .pool()
            .for_each_chunk(4096, |c| names.extend_from_slice(c))
            .unwrap();
        let (mut entries, mut bytes) = (0, 0);
        for name in names {
            let path = store.pool().path().join(name);
            let m = fs::symlink_metadata(&path).unwrap();
            let left = m.nlink() - links.get(&(m.dev(), m.ino())).copied().unwrap_or(0);
            if left == 1 {
                if !dry_run {
                    fs::remove_file(&path).unwrap();
                }
                entries += 1;
                bytes += m.blocks() * 512;
            }
        }
        (entries, bytes)
    }

    fn write(path: &Path, size: usize) {
        fs::write(path, vec![b'x'; size]).unwrap();
    }

    /// A store whose pool holds: entries no object links, stray files
    /// (one named in bytes that are not UTF-8), a temporary, entries
    /// linked once or twice by objects that would go (`going`) and entries
    /// shared between those and an object kept. Returns `going`.
    fn pool_of_every_kind(dir: &TestDir) -> (Store, Vec<PathBuf>) {
        let store = Store::open(&dir.store()).unwrap();
        let pool = store.pool().path().to_path_buf();
        let going: Vec<PathBuf> = (1..=2)
            .map(|i| store.path().join(format!("go{i}")))
            .collect();
        let kept = store.path().join("kept");
        for d in going.iter().chain([&kept]) {
            fs::create_dir(d).unwrap();
        }
        let link =
            |entry: &str, to: &Path| fs::hard_link(pool.join(entry), to.join(entry)).unwrap();
        for i in 0..7 {
            write(&pool.join(format!("unlinked-{i}")), 10 + i);
        }
        write(&pool.join("stray"), 5000);
        let not_utf8 = OsString::from_vec(b"stray-\xff".to_vec());
        write(&pool.join(not_utf8), 3);
        write(&pool.join(format!("{TEMP_PREFIX}killed")), 1);
        for i in 0..5 {
            let once = format!("once-{i}");
            write(&pool.join(&once), 100 * (i + 1));
            link(&once, &going[i % 2]);
            let twice = format!("twice-{i}");
            write(&pool.join(&twice), 9000);
            link(&twice, &going[0]);
            link(&twice, &going[1]);
            let shared = format!("shared-{i}");
            write(&pool.join(&shared), 7);
            link(&shared, &going[i % 2]);
            link(&shared, &kept);
        }
        (store, going)
    }

    /// The sweep holds at most a chunk of names, processes each chunk
    /// before it reads the next, and counts (dry run or not) exactly what
    /// the whole-list sweep it replaces counted.
    #[test]
    fn the_pool_is_swept_a_chunk_at_a_time_as_the_whole_list_was() {
        for dry_run in [true, false] {
            let (reference, swept) = (TestDir::new(), TestDir::new());
            let (store, going) = pool_of_every_kind(&reference);
            if !dry_run {
                going.iter().for_each(|d| fs::remove_dir_all(d).unwrap());
            }
            let expected = whole_list(&store, dry_run, &going);
            let (store, going) = pool_of_every_kind(&swept);
            let links = match dry_run {
                true => GoingLinks::of(&store, &going, None).unwrap(),
                false => {
                    going.iter().for_each(|d| fs::remove_dir_all(d).unwrap());
                    GoingLinks::default()
                }
            };
            let mut report = GcReport::default();
            let mut chunks = Vec::new();
            sweep(&store, 3, dry_run, &links, None, &mut report, |c, r| {
                chunks.push((c.len(), r.pool_entries))
            })
            .unwrap();
            assert_eq!((report.pool_entries, report.pool_bytes), expected);
            // 7 unlinked, 2 strays, 5 once and 5 twice go; the 5 shared
            // and the temporary stay.
            let freed = 19;
            assert_eq!(report.pool_entries, freed, "{report:?}");
            assert_eq!(chunks.iter().map(|c| c.0).sum::<usize>(), 24, "{chunks:?}");
            assert!(chunks.iter().all(|c| (1..=3).contains(&c.0)), "{chunks:?}");
            // Each chunk was counted before the next was read.
            let (last_len, before_last) = *chunks.last().unwrap();
            assert!(before_last > 0 && before_last <= freed, "{chunks:?}");
            assert!(freed - before_last <= last_len, "{chunks:?}");
            let left = fs::read_dir(store.pool().path()).unwrap().count();
            assert_eq!(left, if dry_run { 25 } else { 6 });
        }
    }

    /// Cancelled (Ctrl-C) while the first chunk is read, the sweep
    /// removes that chunk's unlinked entries at most, reads no more of the
    /// listing, and fails as cancelled.
    #[test]
    fn a_cancelled_sweep_stops_within_its_chunk_and_reads_no_more() {
        let dir = TestDir::new();
        let (store, going) = pool_of_every_kind(&dir);
        going.iter().for_each(|d| fs::remove_dir_all(d).unwrap());
        let progress = Progress::default();
        let mut report = GcReport::default();
        let mut chunks = 0;
        let going = GoingLinks::default();
        let swept = sweep(
            &store,
            3,
            false,
            &going,
            Some(&progress),
            &mut report,
            |_, _| {
                chunks += 1;
                let _ = progress.cancel();
            },
        );
        assert!(
            matches!(swept, Err(crate::Error::Core(fruix_core::Error::Cancelled))),
            "{swept:?}"
        );
        assert_eq!((chunks, report.pool_entries), (1, 0));
        assert_eq!(fs::read_dir(store.pool().path()).unwrap().count(), 25);
    }

    /// A file's links are counted by device and inode, those on the
    /// pool's device as those elsewhere (a mount in an object).
    #[test]
    fn links_are_counted_by_device_and_inode() {
        let links = GoingLinks {
            dev: 1,
            inodes: vec![5, 5, 7],
            others: vec![(2, 5), (2, 9), (2, 9)],
        };
        let counts: Vec<u64> = [(1, 5), (1, 7), (1, 6), (1, 9), (2, 5), (2, 9), (3, 5)]
            .into_iter()
            .map(|id| links.count(id))
            .collect();
        assert_eq!(counts, [2, 1, 0, 0, 1, 2, 0]);
    }
}
