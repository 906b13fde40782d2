//! What a walk reports as it reads (files and bytes, for a display), and
//! the cancellation it obeys: once cancelled (Ctrl-C, from another thread),
//! a walk fails with [`Error::Cancelled`] at its next entry or its next
//! piece of a file read, so that its caller's own failure path (which
//! removes what it had made) runs.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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
    /// [`RUNNING`], then [`CANCELLED`] or [`COMMITTED`], whichever came
    /// first; shared by [`Progress::fresh_counters`].
    state: Arc<AtomicU8>,
    /// What the work does once its reading is done, for a display.
    phase: Mutex<Option<&'static str>>,
}

/// The work runs: a cancellation stops it.
const RUNNING: u8 = 0;
/// The work was cancelled: it fails with [`Error::Cancelled`].
const CANCELLED: u8 = 1;
/// The work passed its point of no return ([`Progress::commit`]): it
/// finishes.
const COMMITTED: u8 = 2;

/// What a cancellation did ([`Progress::cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The work stops (now, or already had).
    Stopping,
    /// Too late: the work had committed ([`Progress::commit`]), and
    /// finishes.
    TooLate,
}

/// What the state `previous` (before a cancellation's attempt) makes of it.
fn cancelled(previous: u8) -> Cancelled {
    match previous {
        COMMITTED => Cancelled::TooLate,
        _ => Cancelled::Stopping,
    }
}

/// Cancels the work whose state is `state`, unless it committed.
fn cancel_state(state: &AtomicU8) -> Cancelled {
    match state.compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Cancelled::Stopping,
        Err(previous) => cancelled(previous),
    }
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
            state: Arc::clone(&self.state),
            ..Progress::default()
        }
    }

    /// Cancels the work: every walk counting on these counters (or on
    /// [`fresh_counters`](Progress::fresh_counters) of them) fails with
    /// [`Error::Cancelled`] at its next entry or piece of a file. Once the
    /// work has committed ([`Progress::commit`]) it is too late: nothing
    /// changes, and this says so.
    pub fn cancel(&self) -> Cancelled {
        cancel_state(&self.state)
    }

    /// What [`Progress::cancel`] does, as a function that any thread (a
    /// signal handler's) may call later, once these counters are gone.
    pub fn canceller(&self) -> impl Fn() -> Cancelled + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        move || cancel_state(&state)
    }

    /// Whether the work was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::SeqCst) == CANCELLED
    }

    /// Passes the work's point of no return (a promotion about to publish
    /// its objects): [`Error::Cancelled`] if it was cancelled first;
    /// otherwise a later cancellation is too late ([`Cancelled::TooLate`])
    /// and the work finishes. The one check and mark is atomic: no
    /// cancellation comes between them. It holds for every counter of
    /// [`Progress::fresh_counters`], so only a command's last piece of work
    /// commits.
    pub fn commit(&self) -> Result<()> {
        match self
            .state
            .compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Err(CANCELLED) => Err(Error::Cancelled),
            _ => Ok(()),
        }
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

    #[test]
    fn a_cancellation_after_the_commit_is_too_late_and_one_before_it_refuses_the_commit() {
        let progress = Progress::default();
        let cancel = progress.canceller();
        progress.fresh_counters().commit().unwrap();
        assert_eq!(cancel(), Cancelled::TooLate);
        assert!(!progress.is_cancelled());
        progress.check_cancelled().unwrap();

        let progress = Progress::default();
        assert_eq!(progress.cancel(), Cancelled::Stopping);
        assert_eq!(progress.cancel(), Cancelled::Stopping);
        assert!(matches!(progress.commit(), Err(Error::Cancelled)));
        assert!(progress.is_cancelled());
    }
}
