//! Where and when each cell runs: the scheduling policy over a machine pool.
//!
//! # Policy
//!
//! - A machine never runs more cells than its `parallel-builds` slots; local
//!   cells run on this host within `local-slots`; and no more than
//!   `max-parallel` cells run at once, wherever they run. The pool counts
//!   the cells of one run; a machine's slots also hold across the fruix
//!   processes of this host that share a state directory: an attempt the
//!   pool places on a machine also takes one of its slot files
//!   ([`crate::host_slots`]), and waits there while other processes hold
//!   them all (it does not move to another machine meanwhile).
//! - A remote cell may run on the machines that build its target arch (a
//!   machine with no `systems` builds any), or only on the machine it is
//!   pinned to. Among those with a free slot, the fastest (`speed`) is
//!   chosen (but see below for machines that just failed); ties go to the
//!   machine with fewer running cells, then to the one listed first.
//! - A retried cell avoids the machines it already failed on while another
//!   may take it (waiting for that one's slot if needed); only when none is
//!   left does it go back to one it tried.
//! - A machine whose last attempt failed with a system failure comes after
//!   the others with a free slot, whatever its speed, until an attempt
//!   there does not fail so.
//! - A machine that failed to connect, whose guest did not come up, or on
//!   which [`SYSTEM_FAILURES_IN_A_ROW`] attempts in a row failed with a
//!   system failure is set aside for the rest of the run ([`Unusable`]);
//!   the reason quotes the error of the attempt that showed it. A cell
//!   that no machine can take any more fails as a system failure, saying
//!   why each machine was set aside.
//! - Cells start in matrix order; a cell that must wait does not hold back
//!   later cells that can start elsewhere.
//! - A system failure is retried (up to `retries` extra attempts); a build
//!   failure never is. With fail-fast, the first cell that fails for good
//!   stops the matrix: nothing more starts, and the caller cancels what runs.
//!
//! [`Pool`] ([`pool`]) decides where one cell can run now; [`Dispatcher`]
//! ([`dispatch`]) holds the state of a whole run over a pool. Neither blocks
//! nor knows anything of time or executors, so a whole run can be simulated
//! in tests.

pub mod dispatch;
pub mod pool;

pub use dispatch::{
    AttemptOutcome, Dispatcher, Start, Step, Unusable, Verdict, SYSTEM_FAILURES_IN_A_ROW,
};
pub use pool::{Decision, Need, Placement, Pool};

/// The pool and needs the scheduling tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;

    use fruix_core::machines::{Machine, Machines};

    use super::{Need, Pool};

    pub fn machines(text: &str) -> Vec<Machine> {
        Machines::parse(Path::new("machines.scm"), text)
            .unwrap()
            .machines
    }

    /// slow: 2 slots, speed 1; fast: 1 slot, speed 2; arm: builds aarch64 only.
    pub fn pool(max_parallel: Option<u32>) -> Pool {
        Pool::new(
            &machines(
                r#"(fruix-machines
  (machine (name "slow") (host "h1") (user "root") (parallel-builds 2) (speed 1.0))
  (machine (name "fast") (host "h2") (user "root") (parallel-builds 1) (speed 2.0))
  (machine (name "arm") (host "h3") (user "root") (systems "aarch64") (speed 9.0)))"#,
            ),
            1,
            max_parallel,
        )
    }

    pub fn remote() -> Need {
        Need {
            remote: true,
            boots_vms: false,
            target_arch: "amd64".into(),
            pinned: None,
        }
    }

    /// `needs`, the cells named `c0`, `c1`... by their index.
    pub fn named(needs: Vec<Need>) -> Vec<(String, Need)> {
        needs
            .into_iter()
            .enumerate()
            .map(|(i, need)| (format!("c{i}"), need))
            .collect()
    }

    pub fn local() -> Need {
        Need {
            remote: false,
            ..remote()
        }
    }

    /// A remote cell pinned to `machine`.
    pub fn pinned_to(machine: &str) -> Need {
        Need {
            pinned: Some(machine.into()),
            ..remote()
        }
    }
}
