//! Waiting for another process's transaction on the registry: said once
//! (through the process's lock-wait notice, [`LockWait::Registry`]), given
//! up at the process's interrupt (the first Ctrl-C, SIGTERM or SIGHUP,
//! [`fruix_core::interrupt`]) as every lock wait of the store is (but by a
//! registration, which completes a publication), and after
//! [`BUSY_TIMEOUT`] otherwise.
//!
//! SQLite's own `busy_timeout` sleeps where nothing can wake it and says
//! nothing. rusqlite's `busy_handler` takes a plain function: the registry
//! it names is the one [`install`] last set the handler of on this thread
//! (SQLite calls the handler on the thread whose statement waits, and each
//! write transaction installs it first).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::BUSY_TIMEOUT;
use crate::store::LockWait;

/// How often a wait for the registry looks again (as the store's other
/// lock waits do).
const BUSY_POLL: Duration = Duration::from_millis(50);

/// How many looks make [`BUSY_TIMEOUT`].
const BUSY_LOOKS: u128 = BUSY_TIMEOUT.as_millis() / BUSY_POLL.as_millis();

/// How many looks (a second) pass before a wait says so. SQLite is busy
/// for a moment, without any transaction of another process, while
/// another connection opens the registry (its WAL recovery) or closes it
/// last (its checkpoint): a reader waits through that silently, and only
/// a wait that lasts, for another process's transaction, is said.
const QUIET_LOOKS: i32 = (1000 / BUSY_POLL.as_millis()) as i32;

thread_local! {
    /// The registry whose wait a handler on this thread says it waits for.
    static REGISTRY: RefCell<PathBuf> = RefCell::default();
}

/// Whether a wait for the registry ends at the process's interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    /// The wait gives up at the first Ctrl-C, SIGTERM or SIGHUP: the
    /// transaction waiting has changed nothing yet, nor has its command.
    EndsWait,
    /// The wait goes on (up to [`BUSY_TIMEOUT`]): a registration completes
    /// the publication of objects already in place, past the point where a
    /// promotion says it is too late to cancel it (a second signal still
    /// ends the process at once).
    Ignored,
}

/// Makes `conn` wait for other processes' transactions through
/// [`on_busy`] or [`on_busy_to_the_end`], as `interrupt` says (instead of
/// SQLite's silent timeout, which rusqlite sets).
pub(super) fn install(conn: &Connection, interrupt: Interrupt) -> rusqlite::Result<()> {
    let path = conn.path().map(PathBuf::from).unwrap_or_default();
    REGISTRY.with(|registry| *registry.borrow_mut() = path);
    conn.busy_handler(Some(match interrupt {
        Interrupt::EndsWait => on_busy,
        Interrupt::Ignored => on_busy_to_the_end,
    }))
}

/// The busy handler of [`Interrupt::EndsWait`]: see [`wait`].
fn on_busy(count: i32) -> bool {
    wait(count, Interrupt::EndsWait)
}

/// The busy handler of [`Interrupt::Ignored`]: see [`wait`].
fn on_busy_to_the_end(count: i32) -> bool {
    wait(count, Interrupt::Ignored)
}

/// One call of a busy handler: `count` is how many times it was called for
/// this wait. Says that it waits once it has for [`QUIET_LOOKS`] looks
/// (see [`says_it_waits`]), and looks again every
/// [`BUSY_POLL`] (true) until [`BUSY_TIMEOUT`] has passed, or the process
/// is interrupted when `interrupt` ends the wait (false: SQLite fails with
/// `SQLITE_BUSY`, which [`super::db_error`] reports as a cancellation when
/// interrupted).
fn wait(count: i32, interrupt: Interrupt) -> bool {
    if says_it_waits(count) {
        REGISTRY.with(|registry| notice(&registry.borrow()));
    }
    let interrupted = interrupt == Interrupt::EndsWait && fruix_core::interrupt::requested();
    if interrupted || count.max(0) as u128 >= BUSY_LOOKS {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

/// Whether the busy handler's call `count` of a wait is the one that says
/// it waits: once, after [`QUIET_LOOKS`] looks.
fn says_it_waits(count: i32) -> bool {
    count == QUIET_LOOKS
}

/// Tells the process's lock-wait notice
/// ([`set_lock_notice`](crate::store::set_lock_notice)) that this process
/// waits for another one's transaction on the registry at `path`
/// ([`LockWait::Registry`]), as the store's other lock waits do.
fn notice(path: &Path) {
    crate::store::notice_lock_wait(LockWait::Registry, path);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: readers said `waiting for the store's registry, held by
    /// another process's transaction` at SQLite's first busy call, which
    /// comes while another connection merely opens or closes the registry
    /// (no transaction at all). The notice waits for a second of looks,
    /// and is said once.
    #[test]
    fn a_wait_says_so_once_after_a_second_not_at_the_first_busy_call() {
        let said: Vec<i32> = (0..BUSY_LOOKS as i32)
            .filter(|&c| says_it_waits(c))
            .collect();
        assert_eq!(said, [QUIET_LOOKS]);
        assert_eq!(
            Duration::from_millis(50) * QUIET_LOOKS as u32,
            Duration::from_secs(1)
        );
        assert!((QUIET_LOOKS as u128) < BUSY_LOOKS);
    }
}
