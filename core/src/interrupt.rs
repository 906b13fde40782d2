//! The process's interrupt: requested once, at the first SIGINT, SIGTERM
//! or SIGHUP, by the command line's signal handling, and read by the waits
//! nothing else can wake (a lock another process holds), which then give
//! up with [`Error::Cancelled`](crate::Error::Cancelled). As Nix's
//! `checkInterrupt`, it is process-wide: a library user that never
//! requests it is unaffected.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every interruptible wait of this process to give up.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether [`request`] was called.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
