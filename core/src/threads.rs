//! The threads fruix's work runs on, started up front: a limit on
//! processes (`ulimit -u`, `RLIMIT_NPROC`, which counts threads) or too
//! little memory is then a system failure that says so, where rayon
//! panicked on its first parallel walk and tokio's runtime hung while
//! starting.

use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::error::{Error, Result};

/// What a failure to start threads adds, for the person who must act.
const HINT: &str = "; the limit on processes and threads (ulimit -u) or on memory may be too low";

/// The outcome of starting rayon's global pool, kept: it starts once.
static POOL: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Starts rayon's global thread pool (one thread per CPU), once; the
/// parallel walks and hashing run on it. A pool that cannot start is a
/// system failure naming why, never a panic at the first walk.
pub fn start_pool() -> Result<()> {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("fruix-pool-{i}"))
            .build_global()
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::system(format!("cannot start fruix's worker threads: {e}{HINT}")))
}

/// Checks that `n` more threads can run at once in this process: starts
/// them, each waiting until all have started (or one failed to), then ends
/// them. For what cannot recover from a thread that fails to start
/// (tokio's runtime, whose start then hangs): a system failure naming how
/// many `what` needs.
pub fn can_start(n: usize, what: &str) -> Result<()> {
    let go = Arc::new((Mutex::new(false), Condvar::new()));
    let mut started = Vec::with_capacity(n);
    let mut failed = None;
    for _ in 0..n {
        let go = Arc::clone(&go);
        let wait = move || {
            let (lock, cvar) = &*go;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            drop(cvar.wait_while(guard, |go| !*go));
        };
        let spawned = std::thread::Builder::new()
            .name("fruix-probe".into())
            .stack_size(64 * 1024)
            .spawn(wait);
        match spawned {
            Ok(t) => started.push(t),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let (lock, cvar) = &*go;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cvar.notify_all();
    for t in started {
        let _ = t.join();
    }
    match failed {
        None => Ok(()),
        Some(e) => Err(Error::system(format!(
            "cannot start the {n} threads {what} needs: {e}{HINT}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_that_can_start_are_started_and_ended() {
        can_start(8, "this test").unwrap();
        can_start(0, "nothing").unwrap();
    }
}
