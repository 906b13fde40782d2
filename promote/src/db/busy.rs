//! Waiting for another process's transaction on the registry: said once
//! on stderr, given up at the process's interrupt (the first Ctrl-C,
//! SIGTERM or SIGHUP, [`fruix_core::interrupt`]) as every lock wait of the
//! store is (but by a registration, which completes a publication), and
//! after [`BUSY_TIMEOUT`] otherwise.
//!
//! SQLite's own `busy_timeout` sleeps where nothing can wake it and says
//! nothing; rusqlite's `busy_handler` takes a plain function, which could
//! not name the registry. This handler is given the connection's own
//! handle, whose file name SQLite knows.

use std::ffi::{c_int, c_void, CStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{ffi, Connection};

use super::BUSY_TIMEOUT;

/// How often a wait for the registry looks again (as the store's other
/// lock waits do).
const BUSY_POLL: Duration = Duration::from_millis(50);

/// How many looks make [`BUSY_TIMEOUT`].
const BUSY_LOOKS: u128 = BUSY_TIMEOUT.as_millis() / BUSY_POLL.as_millis();

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
    let handler = match interrupt {
        Interrupt::EndsWait => on_busy,
        Interrupt::Ignored => on_busy_to_the_end,
    };
    // SAFETY: the handle is this open connection's, used on this thread.
    // The handler is given that same handle, which lives as long as the
    // handler is installed (SQLite drops both when the connection closes).
    let rc = unsafe {
        let db = conn.handle();
        ffi::sqlite3_busy_handler(db, Some(handler), db.cast())
    };
    match rc {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None)),
    }
}

/// SQLite's busy handler of [`Interrupt::EndsWait`]: see [`wait`].
unsafe extern "C" fn on_busy(db: *mut c_void, count: c_int) -> c_int {
    // SAFETY: as SQLite calls it, with the handle `install` gave.
    unsafe { wait(db, count, Interrupt::EndsWait) }
}

/// SQLite's busy handler of [`Interrupt::Ignored`]: see [`wait`].
unsafe extern "C" fn on_busy_to_the_end(db: *mut c_void, count: c_int) -> c_int {
    // SAFETY: as SQLite calls it, with the handle `install` gave.
    unsafe { wait(db, count, Interrupt::Ignored) }
}

/// One call of a busy handler of the connection `db`: `count` is how many
/// times it was called for this wait. Says that it waits at the first
/// call, then looks again every [`BUSY_POLL`] (non-zero) until
/// [`BUSY_TIMEOUT`] has passed, or the process is interrupted when
/// `interrupt` ends the wait (zero: SQLite fails with `SQLITE_BUSY`, which
/// [`super::db_error`] reports as a cancellation when interrupted). Never
/// panics: it is called from C.
///
/// # Safety
///
/// `db` is the handle of the open connection whose statement waits.
unsafe fn wait(db: *mut c_void, count: c_int, interrupt: Interrupt) -> c_int {
    if count == 0 {
        // SAFETY: the caller's; the name returned is valid while the
        // connection is open.
        let name = unsafe { ffi::sqlite3_db_filename(db.cast(), c"main".as_ptr()) };
        let path = match name.is_null() {
            true => Path::new(""),
            // SAFETY: a non-null name is a NUL-terminated string.
            false => Path::new(std::ffi::OsStr::from_bytes(
                unsafe { CStr::from_ptr(name) }.to_bytes(),
            )),
        };
        notice(path);
    }
    let interrupted = interrupt == Interrupt::EndsWait && fruix_core::interrupt::requested();
    if interrupted || count as u128 >= BUSY_LOOKS {
        return 0;
    }
    std::thread::sleep(BUSY_POLL);
    1
}

/// Says on stderr, as the store's other lock waits do, that this process
/// waits for another one's transaction on the registry at `path`.
fn notice(path: &Path) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "fruix: waiting for the store's registry, held by another process's transaction ({} is locked; at most {} s)",
        fruix_core::escape::path(path),
        BUSY_TIMEOUT.as_secs()
    );
}
