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
    /// Its last [`SYSTEM_FAILURES_IN_A_ROW`] attempts failed with a system
    /// failure, though it accepts connections (a missing helper, a full
    /// disk, a broken store). [`Dispatcher::finished`] tells this itself
    /// from the attempts' failures.
    FailedInARow,
}

/// How many attempts in a row must fail on a machine with a system failure
/// before it is set aside ([`Unusable::FailedInARow`]).
pub const SYSTEM_FAILURES_IN_A_ROW: usize = 2;

/// How much of a failed attempt's error the reason its machine is set
/// aside quotes.
const QUOTED_ERROR_BYTES: usize = 300;

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
        self.finished_with_error(start, outcome, None)
    }

    /// [`Dispatcher::finished`], with the failed attempt's `error`: the
    /// reason its machine is set aside, if it is, ends with it (escaped, on
    /// one line, cut short).
    pub fn finished_with_error(
        &mut self,
        start: &Start,
        outcome: AttemptOutcome,
        error: Option<&str>,
    ) -> Verdict {
        self.pool.release(&start.placement);
        if let Placement::Machine(name) = &start.placement {
            self.judge_machine(name, start, outcome, error);
        }
        let AttemptOutcome::Failed { failure, .. } = outcome else {
            return Verdict::Done;
        };
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

    /// Records on machine `name` how `start` ended there, and sets it aside
    /// when the attempt says it is [`Unusable`], or when it is the
    /// [`SYSTEM_FAILURES_IN_A_ROW`]th system failure there in a row. A
    /// cancelled attempt says nothing of its machine.
    fn judge_machine(
        &mut self,
        name: &str,
        start: &Start,
        outcome: AttemptOutcome,
        error: Option<&str>,
    ) {
        // Ids are of safe characters, but reasons are printed.
        let attempt = format!(
            "attempt {} of cell {}",
            start.attempt,
            escape::text(&self.ids[start.cell])
        );
        let (failure, unusable) = match outcome {
            AttemptOutcome::Passed => (None, None),
            AttemptOutcome::Failed { failure, unusable } => (Some(failure), unusable),
        };
        let in_a_row = match failure {
            Some(Failure::Cancelled) => Vec::new(),
            Some(Failure::System) => self.pool.record_attempt(name, Some(attempt.clone())),
            _ => self.pool.record_attempt(name, None),
        };
        let failed_in_a_row = in_a_row.len() >= SYSTEM_FAILURES_IN_A_ROW;
        let Some(why) = unusable.or(failed_in_a_row.then_some(Unusable::FailedInARow)) else {
            return;
        };
        let mut reason = match why {
            Unusable::Unreachable => format!("unreachable after {attempt}"),
            Unusable::DidNotComeUp => format!("its guest did not come up for {attempt}"),
            Unusable::FailedInARow => format!(
                "{} attempts in a row failed with a system failure on it: {}",
                in_a_row.len(),
                in_a_row.join(", ")
            ),
        };
        if let Some(error) = error {
            reason = format!(
                "{reason}: {}",
                escape::text(error).cut_at(QUOTED_ERROR_BYTES)
            );
        }
        self.pool.set_aside(name, reason);
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
    use crate::schedule::fixtures::{local, named, pinned_to, pool, remote};

    /// A system failure of a machine that no longer accepts connections.
    const UNREACHABLE: AttemptOutcome = AttemptOutcome::Failed {
        failure: Failure::System,
        unusable: Some(Unusable::Unreachable),
    };

    /// The one attempt `d` starts now; else fails, saying it expected
    /// `expected`.
    #[track_caller]
    fn starts_one(d: &mut Dispatcher, expected: &str) -> Start {
        let steps = d.dispatch();
        let [Step::Start(start)] = steps.as_slice() else {
            panic!("{expected}: {steps:?}");
        };
        start.clone()
    }

    /// Asserts that of `d`'s pool, `fast` alone is set aside, for `reason`.
    #[track_caller]
    fn only_fast_set_aside(d: &Dispatcher, reason: &str) {
        let only_fast = [("fast".to_string(), reason.to_string())];
        assert_eq!(d.pool().set_aside_machines(), only_fast);
    }

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
            Placement::Machine(m) if m == machine => UNREACHABLE,
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
        let start = starts_one(&mut d, "the cell starts");
        assert_eq!(d.finished(&start, UNREACHABLE), Verdict::Retry);
        only_fast_set_aside(&d, "unreachable after attempt 1 of cell a\\n\\033[2Jb");
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

    /// A machine that accepts connections but fails every attempt with a
    /// system failure (a missing helper): `fast` (faster, 1 slot) here.
    fn broken(machine: &'static str) -> impl Fn(usize, &Placement) -> AttemptOutcome {
        move |_, p| match p {
            Placement::Machine(m) if m == machine => AttemptOutcome::Failed {
                failure: Failure::System,
                unusable: None,
            },
            _ => AttemptOutcome::Passed,
        }
    }

    /// Regression: a machine that was broken but still accepted SSH took
    /// every cell (it is the fastest), each failing there, while the other
    /// machine idled; with retries, every cell burnt its retry there.
    #[test]
    fn a_broken_machine_that_accepts_connections_does_not_take_every_cell() {
        for retries in [0, 1] {
            let (attempts, finals, _) =
                simulate(vec![remote(); 4], retries, false, Some(1), broken("fast"));
            let on_fast: Vec<usize> = attempts
                .iter()
                .filter(|(_, s)| s.placement.name() == "fast")
                .map(|(_, s)| s.cell)
                .collect();
            assert_eq!(on_fast, [0], "retries {retries}: {attempts:?}");
            let passed = finals
                .iter()
                .filter(|f| **f == Some(AttemptOutcome::Passed))
                .count();
            assert_eq!(passed, 4 - 1 + retries as usize, "{finals:?}");
        }
    }

    /// `fast` fails every attempt; with no other slot free it takes a
    /// second cell, whose failure sets it aside, naming both attempts.
    #[test]
    fn a_machine_on_which_attempts_fail_in_a_row_is_set_aside() {
        let mut d = Dispatcher::new(pool(None), named(vec![remote(); 5]), 1, false);
        let mut on_fast = Vec::new();
        while !d.is_drained() {
            let starts: Vec<Start> = d
                .dispatch()
                .into_iter()
                .map(|step| match step {
                    Step::Start(s) => s,
                    Step::Fail { .. } => panic!("{step:?}"),
                })
                .collect();
            for s in starts {
                let outcome = broken("fast")(s.cell, &s.placement);
                if s.placement.name() == "fast" {
                    on_fast.push(s.cell);
                }
                d.finished_with_error(&s, outcome, Some("helper\n/no/fruix: not found"));
            }
        }
        // Tick 0: c0 on fast, c1 and c2 on slow. Tick 1: c0's retry and c3
        // take slow's slots; c4 has only fast left.
        assert_eq!(on_fast, [0, 4]);
        only_fast_set_aside(&d, "2 attempts in a row failed with a system failure on it: attempt 1 of cell c0, attempt 1 of cell c4: helper\\n/no/fruix: not found");
    }

    /// Only system failures in a row count: a passed attempt or a build
    /// failure starts the count again, and a cancelled attempt says nothing
    /// of the machine. The failed attempt's error ends the reason, on one
    /// line.
    #[test]
    fn only_system_failures_in_a_row_set_a_machine_aside() {
        let pinned = pinned_to("fast");
        let mut d = Dispatcher::new(pool(None), named(vec![pinned; 6]), 0, false);
        let failed = |failure| AttemptOutcome::Failed {
            failure,
            unusable: None,
        };
        let outcomes = [
            failed(Failure::System),
            AttemptOutcome::Passed,
            failed(Failure::System),
            failed(Failure::Build),
            failed(Failure::System),
            failed(Failure::Cancelled),
        ];
        for outcome in outcomes {
            let start = starts_one(&mut d, "one cell at a time on fast");
            d.finished_with_error(&start, outcome, Some("lost"));
            assert!(d.pool().set_aside_machines().is_empty(), "{outcome:?}");
        }
        let mut d = Dispatcher::new(pool(None), named(vec![remote()]), 0, false);
        let start = starts_one(&mut d, "c0 starts");
        let error = "ssh: connect to host h2 port 22: Connection refused\r\n\x1b[2J";
        d.finished_with_error(&start, UNREACHABLE, Some(error));
        only_fast_set_aside(&d, "unreachable after attempt 1 of cell c0: ssh: connect to host h2 port 22: Connection refused\\r\\n\\033[2J");
    }

    #[test]
    fn a_cell_no_machine_can_take_fails_as_a_system_failure() {
        let pinned = pinned_to("fast");
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
