//! The scheduling state of one matrix run: what starts, what is retried,
//! what fail-fast stops (see the policy in [`super`]).

use std::collections::VecDeque;

use fruix_core::{escape, Failure};

use super::pool::{Decision, Need, Placement, Pool};

/// One attempt to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The cell's index in the matrix.
    pub cell: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Where it runs; the slot there is taken until [`Dispatcher::finished`].
    pub placement: Placement,
}

/// What [`Dispatcher::dispatch`] says about a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start this attempt; its slot is taken.
    Start(Start),
    /// The cell cannot run anywhere; it failed as a system failure.
    Fail {
        /// The cell's index in the matrix.
        cell: usize,
        /// Why no machine can take it (from [`Decision::Never`]); the runner
        /// records `cannot run: REASON`.
        reason: String,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The build succeeded.
    Passed,
    /// The attempt failed.
    Failed {
        /// How: only [`Failure::System`] is retried, and [`Failure::Cancelled`]
        /// does not trigger fail-fast.
        failure: Failure,
        /// Why the attempt's machine is no longer used, if it is not.
        unusable: Option<Unusable>,
    },
}

/// Why an attempt's machine is set aside for the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// It no longer accepts connections.
    Unreachable,
    /// Its guest did not come up (a virtual machine that did not prepare,
    /// boot or open SSH).
    DidNotComeUp,
}

/// What happens to a cell after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The cell is finished (passed, or failed for good).
    Done,
    /// The cell is queued for another attempt.
    Retry,
    /// The attempt failed in a way that is retried, but the matrix is
    /// stopped (fail-fast or Ctrl-C): the cell ends, its retry cancelled, as
    /// the cells [`Dispatcher::stop`] returns do.
    RetryCancelled,
}

#[derive(Debug, Clone)]
struct Waiting {
    cell: usize,
    attempt: u32,
}

/// The scheduling state of one matrix run (see the module docs).
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: Pool,
    /// Each cell's id, which names it in the reasons machines are set aside.
    ids: Vec<String>,
    needs: Vec<Need>,
    /// The machines each cell failed on.
    tried: Vec<Vec<String>>,
    queue: VecDeque<Waiting>,
    retries: u32,
    fail_fast: bool,
    stopped: bool,
    /// The cell whose failure stopped the matrix through fail-fast.
    stopped_by: Option<usize>,
}

impl Dispatcher {
    /// A dispatcher for `cells`, each its id and what it needs (index =
    /// cell), all waiting.
    pub fn new(
        pool: Pool,
        cells: Vec<(String, Need)>,
        retries: u32,
        fail_fast: bool,
    ) -> Dispatcher {
        let queue = (0..cells.len())
            .map(|cell| Waiting { cell, attempt: 1 })
            .collect();
        let (ids, needs): (Vec<String>, Vec<Need>) = cells.into_iter().unzip();
        Dispatcher {
            pool,
            tried: vec![Vec::new(); needs.len()],
            ids,
            needs,
            queue,
            retries,
            fail_fast,
            stopped: false,
            stopped_by: None,
        }
    }

    /// Everything that can start now (slots taken), and the cells that can
    /// never run (removed, and with fail-fast stopping the matrix).
    pub fn dispatch(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(w) = self.queue.pop_front() {
            if self.stopped {
                kept.push_back(w);
                continue;
            }
            match self.pool.decide(&self.needs[w.cell], &self.tried[w.cell]) {
                Decision::Run(placement) => {
                    self.pool.acquire(&placement);
                    steps.push(Step::Start(Start {
                        cell: w.cell,
                        attempt: w.attempt,
                        placement,
                    }));
                }
                Decision::Wait => kept.push_back(w),
                Decision::Never(reason) => {
                    self.fail_fast_after(w.cell);
                    steps.push(Step::Fail {
                        cell: w.cell,
                        reason,
                    });
                }
            }
        }
        self.queue = kept;
        steps
    }

    /// Records how `start` ended and frees its slot.
    pub fn finished(&mut self, start: &Start, outcome: AttemptOutcome) -> Verdict {
        self.pool.release(&start.placement);
        let AttemptOutcome::Failed { failure, unusable } = outcome else {
            return Verdict::Done;
        };
        if let (Some(why), Placement::Machine(name)) = (unusable, &start.placement) {
            // Ids are of safe characters, but reasons are printed.
            let (attempt, cell) = (start.attempt, escape::text(&self.ids[start.cell]));
            let reason = match why {
                Unusable::Unreachable => {
                    format!("unreachable after attempt {attempt} of cell {cell}")
                }
                Unusable::DidNotComeUp => {
                    format!("its guest did not come up for attempt {attempt} of cell {cell}")
                }
            };
            self.pool.set_aside(name, reason);
        }
        let retried = failure == Failure::System && start.attempt <= self.retries;
        if retried && self.stopped {
            return Verdict::RetryCancelled;
        }
        if retried {
            if let Placement::Machine(name) = &start.placement {
                self.tried[start.cell].push(name.clone());
            }
            // Retries go first: they have waited longest.
            self.queue.push_front(Waiting {
                cell: start.cell,
                attempt: start.attempt + 1,
            });
            return Verdict::Retry;
        }
        if failure != Failure::Cancelled {
            self.fail_fast_after(start.cell);
        }
        Verdict::Done
    }

    /// With fail-fast, stops the matrix after `cell` failed for good
    /// (unless it is stopped already).
    fn fail_fast_after(&mut self, cell: usize) {
        if self.fail_fast && !self.stopped {
            self.stopped = true;
            self.stopped_by = Some(cell);
        }
    }

    /// Whether the matrix is stopped: by fail-fast, or by [`Dispatcher::stop`].
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The id of the cell whose failure stopped the matrix through
    /// fail-fast; `None` when fail-fast did not stop it.
    pub fn stopped_by(&self) -> Option<&str> {
        self.stopped_by.map(|cell| self.ids[cell].as_str())
    }

    /// Stops the matrix: nothing more starts. Returns the cells that were
    /// still waiting (they are cancelled): those that never started, and
    /// those whose retry was queued.
    pub fn stop(&mut self) -> Vec<usize> {
        self.stopped = true;
        self.queue.drain(..).map(|w| w.cell).collect()
    }

    /// Whether no cell waits any more.
    pub fn is_drained(&self) -> bool {
        self.queue.is_empty()
    }

    /// The pool's state (for reports).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fixtures::{local, named, pool, remote};

    /// The attempts (with their tick), each cell's final outcome, and the
    /// cells cancelled by fail-fast.
    type Simulation = (Vec<(u32, Start)>, Vec<Option<AttemptOutcome>>, Vec<usize>);

    /// Runs a whole matrix against a fake pool in which `down` machines
    /// fail every attempt with a system failure and are unreachable.
    /// Every attempt takes one tick. Returns the attempts and final results.
    fn simulate(
        needs: Vec<Need>,
        retries: u32,
        fail_fast: bool,
        max_parallel: Option<u32>,
        result: impl Fn(usize, &Placement) -> AttemptOutcome,
    ) -> Simulation {
        let mut d = Dispatcher::new(pool(max_parallel), named(needs.clone()), retries, fail_fast);
        let mut attempts = Vec::new();
        let mut finals = vec![None; needs.len()];
        let mut cancelled = Vec::new();
        for tick in 0.. {
            let mut running = Vec::new();
            for step in d.dispatch() {
                match step {
                    Step::Start(s) => running.push(s),
                    Step::Fail { cell, .. } => {
                        finals[cell] = Some(AttemptOutcome::Failed {
                            failure: Failure::System,
                            unusable: None,
                        })
                    }
                }
            }
            assert!(
                max_parallel.is_none_or(|m| running.len() as u32 <= m),
                "tick {tick}: {} running",
                running.len()
            );
            for s in &running {
                let outcome = result(s.cell, &s.placement);
                attempts.push((tick, s.clone()));
                if d.finished(s, outcome) == Verdict::Done {
                    finals[s.cell] = Some(outcome);
                }
            }
            if d.stopped() {
                cancelled.extend(d.stop());
            }
            if d.is_drained() {
                break;
            }
            assert!(tick < 100, "the matrix never finishes");
        }
        (attempts, finals, cancelled)
    }

    fn down(machine: &'static str) -> impl Fn(usize, &Placement) -> AttemptOutcome {
        move |_, p| match p {
            Placement::Machine(m) if m == machine => AttemptOutcome::Failed {
                failure: Failure::System,
                unusable: Some(Unusable::Unreachable),
            },
            _ => AttemptOutcome::Passed,
        }
    }

    #[test]
    fn cells_of_an_unreachable_machine_are_retried_elsewhere() {
        let (attempts, finals, _) = simulate(vec![remote(); 4], 1, false, None, down("fast"));
        assert!(
            finals.iter().all(|f| *f == Some(AttemptOutcome::Passed)),
            "{finals:?}"
        );
        let on_fast: Vec<_> = attempts
            .iter()
            .filter(|(_, s)| s.placement.name() == "fast")
            .collect();
        assert_eq!(
            on_fast.len(),
            1,
            "fast is set aside after its first failure"
        );
        let retried = &on_fast[0].1;
        let retry = attempts
            .iter()
            .find(|(_, s)| s.cell == retried.cell && s.attempt == 2)
            .unwrap();
        assert_eq!(retry.1.placement.name(), "slow");
    }

    #[test]
    fn a_machine_is_set_aside_naming_the_cell_by_its_id_escaped() {
        let mut d = Dispatcher::new(pool(None), vec![("a\n\x1b[2Jb".into(), remote())], 1, false);
        let steps = d.dispatch();
        let [Step::Start(start)] = steps.as_slice() else {
            panic!("the cell starts: {steps:?}");
        };
        let outcome = AttemptOutcome::Failed {
            failure: Failure::System,
            unusable: Some(Unusable::Unreachable),
        };
        assert_eq!(d.finished(start, outcome), Verdict::Retry);
        assert_eq!(
            d.pool().set_aside_machines(),
            [(
                "fast".to_string(),
                "unreachable after attempt 1 of cell a\\n\\033[2Jb".to_string()
            )]
        );
    }

    #[test]
    fn retries_are_bounded_and_build_failures_are_not_retried() {
        let failing = |failure| {
            move |_: usize, _: &Placement| AttemptOutcome::Failed {
                failure,
                unusable: None,
            }
        };
        let (attempts, _, _) = simulate(vec![remote()], 2, false, None, failing(Failure::System));
        let machines: Vec<&str> = attempts.iter().map(|(_, s)| s.placement.name()).collect();
        assert_eq!(
            machines,
            ["fast", "slow", "fast"],
            "avoids tried machines while it can"
        );
        let (attempts, _, _) = simulate(vec![remote()], 2, false, None, failing(Failure::Build));
        assert_eq!(attempts.len(), 1);
    }

    #[test]
    fn a_cell_no_machine_can_take_fails_as_a_system_failure() {
        let pinned = Need {
            pinned: Some("fast".into()),
            ..remote()
        };
        let (attempts, finals, _) = simulate(vec![pinned], 3, false, None, down("fast"));
        assert_eq!(
            attempts.len(),
            1,
            "fast is set aside; the pinned cell cannot move"
        );
        assert!(matches!(
            finals[0],
            Some(AttemptOutcome::Failed {
                failure: Failure::System,
                ..
            })
        ));
    }

    #[test]
    fn fail_fast_cancels_waiting_cells() {
        let build_fails_first = |cell: usize, _: &Placement| {
            if cell == 0 {
                AttemptOutcome::Failed {
                    failure: Failure::Build,
                    unusable: None,
                }
            } else {
                AttemptOutcome::Passed
            }
        };
        let (attempts, _, cancelled) = simulate(vec![local(); 4], 1, true, None, build_fails_first);
        assert_eq!(attempts.len(), 1, "one local slot: only cell 0 ran");
        assert_eq!(cancelled, [1, 2, 3]);
        let (attempts, _, cancelled) =
            simulate(vec![local(); 4], 1, false, None, build_fails_first);
        assert_eq!((attempts.len(), cancelled.len()), (4, 0));
    }

    #[test]
    fn max_parallel_caps_a_mixed_matrix_and_waiting_cells_do_not_block_others() {
        let needs = vec![local(), local(), remote(), remote(), remote()];
        let (attempts, finals, _) =
            simulate(needs, 0, false, Some(3), |_, _| AttemptOutcome::Passed);
        assert!(finals.iter().all(Option::is_some));
        let first: Vec<usize> = attempts
            .iter()
            .filter(|(t, _)| *t == 0)
            .map(|(_, s)| s.cell)
            .collect();
        assert_eq!(
            first,
            [0, 2, 3],
            "cell 1 waits for the local slot; remote cells go on"
        );
    }
}
