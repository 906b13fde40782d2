//! What a walk reports as it reads (files and bytes, for a display), and
//! the cancellation it obeys: once cancelled (Ctrl-C, from another thread),
//! a walk fails with [`Error::Cancelled`] at its next entry or its next
//! piece of a file read, so that its caller's own failure path (which
//! removes what it had made) runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Counters a walk updates as it reads, for progress displays, and the
/// cancellation of the work they count.
#[derive(Debug, Default)]
pub struct Progress {
    /// Regular files read completely so far.
    pub files: AtomicU64,
    /// File content bytes read so far, counted as each piece is read (a
    /// large file moves it before it is done).
    pub bytes: AtomicU64,
    /// Set once the work is cancelled; shared by [`Progress::fresh_counters`].
    cancelled: Arc<AtomicBool>,
    /// What the work does once its reading is done, for a display.
    phase: Mutex<Option<&'static str>>,
}

impl Progress {
    /// Counts one file of `bytes` bytes.
    pub fn add(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Says what the work does now that its reading is done ("building
    /// the source object"): a display shows it beside the counts.
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(phase);
    }

    /// What [`Progress::set_phase`] said last, if anything.
    pub fn phase(&self) -> Option<&'static str> {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New counters, at zero, under the same cancellation as these: the
    /// next piece of work of one command (its promotion after its source
    /// add) counts from zero, and one Ctrl-C cancels them all.
    pub fn fresh_counters(&self) -> Progress {
        Progress {
            cancelled: Arc::clone(&self.cancelled),
            ..Progress::default()
        }
    }

    /// Cancels the work: every walk counting on these counters (or on
    /// [`fresh_counters`](Progress::fresh_counters) of them) fails with
    /// [`Error::Cancelled`] at its next entry or piece of a file.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// What [`Progress::cancel`] does, as a function that any thread (a
    /// signal handler's) may call later, once these counters are gone.
    pub fn canceller(&self) -> impl Fn() + Send + Sync + 'static {
        let cancelled = Arc::clone(&self.cancelled);
        move || cancelled.store(true, Ordering::SeqCst)
    }

    /// Whether the work was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// [`Error::Cancelled`] once the work was cancelled: the check at the
    /// boundaries of work that does not walk (a collection's removals).
    pub fn check_cancelled(&self) -> Result<()> {
        match self.is_cancelled() {
            true => Err(Error::Cancelled),
            false => Ok(()),
        }
    }
}

/// [`Progress::check_cancelled`] of `progress`, if any.
pub(super) fn check(progress: Option<&Progress>) -> Result<()> {
    progress.map_or(Ok(()), Progress::check_cancelled)
}

/// Counts `n` bytes read on `progress`, if any.
pub(super) fn count_bytes(progress: Option<&Progress>, n: usize) {
    if let Some(p) = progress {
        p.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{hash_file, walk, OpenFile, WalkOptions};
    use crate::testing::{write_files, TestDir};

    /// A tree of a few files, one of them larger than a read buffer.
    fn tree(dir: &TestDir) -> std::path::PathBuf {
        let root = dir.join("tree");
        let big = vec![7u8; 3 * crate::manifest::walk::READ_BUFFER];
        write_files(
            &root,
            &[
                ("a", b"a".as_slice(), 0o644),
                ("big", big.as_slice(), 0o644),
                ("sub/c", b"c".as_slice(), 0o644),
            ],
        )
        .unwrap();
        root
    }

    #[test]
    fn a_cancelled_walk_fails_as_cancelled_before_its_first_entry() {
        let dir = TestDir::new();
        let root = tree(&dir);
        let progress = Progress::default();
        progress.fresh_counters().cancel();
        let options = WalkOptions {
            progress: Some(&progress),
            ..WalkOptions::default()
        };
        let mut seen = 0;
        let e = walk(&root, &options, |_| {
            seen += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(seen, 0);
    }

    #[test]
    fn a_walk_cancelled_while_it_reads_a_file_stops_within_that_file() {
        let dir = TestDir::new();
        let root = tree(&dir);
        let progress = Progress::default();
        let cancel = progress.canceller();
        // Cancelled from "another thread" once the big file's first piece
        // is read: its next piece is not.
        let read = |file: &mut OpenFile<'_>| {
            if file.path == b"big" {
                let mut buf = vec![0; 16];
                file.read_piece(&mut buf, 0)?;
                cancel();
            }
            hash_file(file)
        };
        let options = WalkOptions {
            progress: Some(&progress),
            read_file: Some(&read),
            ..WalkOptions::default()
        };
        let e = walk(&root, &options, |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert!(
            progress.bytes.load(Ordering::Relaxed) < 3 * crate::manifest::walk::READ_BUFFER as u64
        );
    }

    #[test]
    fn a_walk_cancelled_between_entries_visits_no_more() {
        let dir = TestDir::new();
        let root = tree(&dir);
        let progress = Progress::default();
        let options = WalkOptions {
            progress: Some(&progress),
            ..WalkOptions::default()
        };
        let mut visited = Vec::new();
        let e = walk(&root, &options, |w| {
            visited.push(w.entry.path.clone());
            if w.entry.path == b"a" {
                progress.cancel();
            }
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(visited, [b"".to_vec(), b"a".to_vec()]);
        assert!(progress.check_cancelled().is_err());
    }
}
