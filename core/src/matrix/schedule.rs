//! Where and when each cell runs: the scheduling policy over a machine pool.
//!
//! # Policy
//!
//! - A machine never runs more cells than its `parallel-builds` slots; local
//!   cells run on this host within `local-slots`; and no more than
//!   `max-parallel` cells run at once, wherever they run.
//! - A remote cell may run on the machines that build its target arch (a
//!   machine with no `systems` builds any), or only on the machine it is
//!   pinned to. Among those with a free slot, the fastest (`speed`) is
//!   chosen; ties go to the machine with fewer running cells, then to the
//!   one listed first.
//! - A retried cell avoids the machines it already failed on while another
//!   may take it (waiting for that one's slot if needed); only when none is
//!   left does it go back to one it tried.
//! - A machine that failed to connect is set aside for the rest of the run.
//!   A cell that no machine can take any more fails as a system failure,
//!   saying why.
//! - Cells start in matrix order; a cell that must wait does not hold back
//!   later cells that can start elsewhere.
//! - A system failure is retried (up to `retries` extra attempts); a build
//!   failure never is. With fail-fast, the first cell that fails for good
//!   stops the matrix: nothing more starts, and the caller cancels what runs.
//!
//! [`Dispatcher`] holds this state; it never blocks and knows nothing of
//! time or executors, so a whole run can be simulated in tests.

use std::collections::VecDeque;

use crate::error::Failure;
use crate::machines::Machine;

/// Where one attempt of a cell runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// On this host.
    Local,
    /// On the named machine of the machines file.
    Machine(String),
}

impl Placement {
    /// The machine's name, or `local`.
    pub fn name(&self) -> &str {
        match self {
            Placement::Local => "local",
            Placement::Machine(name) => name,
        }
    }
}

/// What a cell needs from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Runs on a machine of the pool (its executor takes `machines` and
    /// `machine`), rather than on this host.
    pub remote: bool,
    pub target_arch: String,
    /// The machine the cell is pinned to.
    pub pinned: Option<String>,
}

/// The decision for one waiting cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Placement),
    /// No slot is free now; one may be later.
    Wait,
    /// No machine can ever take the cell; the message says why.
    Never(String),
}

#[derive(Debug, Clone)]
struct MachineSlots {
    name: String,
    speed: f64,
    capacity: u32,
    systems: Vec<String>,
    busy: u32,
    set_aside: Option<String>,
}

/// The slots of this host and of the machines, and what runs in them.
#[derive(Debug, Clone)]
pub struct Pool {
    machines: Vec<MachineSlots>,
    local_capacity: u32,
    local_busy: u32,
    /// `None`: unlimited.
    max_parallel: Option<u32>,
}

impl Pool {
    /// A pool of `machines` (in file order), `local_slots` for local cells,
    /// and at most `max_parallel` cells at once.
    pub fn new(machines: &[Machine], local_slots: u32, max_parallel: Option<u32>) -> Pool {
        Pool {
            machines: machines
                .iter()
                .map(|m| MachineSlots {
                    name: m.name.clone(),
                    speed: m.speed,
                    capacity: m.parallel_builds,
                    systems: m.systems.clone(),
                    busy: 0,
                    set_aside: None,
                })
                .collect(),
            local_capacity: local_slots,
            local_busy: 0,
            max_parallel,
        }
    }

    /// How many cells run now.
    pub fn running(&self) -> u32 {
        self.local_busy + self.machines.iter().map(|m| m.busy).sum::<u32>()
    }

    /// Where a cell with `need` that already failed on `tried` can run now.
    pub fn decide(&self, need: &Need, tried: &[String]) -> Decision {
        if !need.remote {
            return if self.local_busy < self.local_capacity && self.has_room() {
                Decision::Run(Placement::Local)
            } else {
                Decision::Wait
            };
        }
        let eligible: Vec<&MachineSlots> = self
            .machines
            .iter()
            .filter(|m| need.pinned.as_ref().is_none_or(|p| *p == m.name))
            .filter(|m| m.systems.is_empty() || m.systems.contains(&need.target_arch))
            .collect();
        if eligible.is_empty() {
            return Decision::Never(match &need.pinned {
                Some(p) => format!("machine {p:?}, which the cell is pinned to, is not in the machines file or does not build {}", need.target_arch),
                None => format!("no machine in the machines file builds {}", need.target_arch),
            });
        }
        let usable: Vec<&MachineSlots> = eligible
            .iter()
            .copied()
            .filter(|m| m.set_aside.is_none())
            .collect();
        if usable.is_empty() {
            let reasons: Vec<String> = eligible
                .iter()
                .map(|m| format!("{} ({})", m.name, m.set_aside.as_deref().unwrap_or("")))
                .collect();
            return Decision::Never(format!(
                "every machine that could build it was set aside: {}",
                reasons.join("; ")
            ));
        }
        let untried: Vec<&MachineSlots> = usable
            .iter()
            .copied()
            .filter(|m| !tried.contains(&m.name))
            .collect();
        let candidates = if untried.is_empty() { usable } else { untried };
        if !self.has_room() {
            return Decision::Wait;
        }
        candidates
            .into_iter()
            .enumerate()
            .filter(|(_, m)| m.busy < m.capacity)
            .max_by(|(i, a), (j, b)| {
                a.speed
                    .total_cmp(&b.speed)
                    .then(b.busy.cmp(&a.busy))
                    .then(j.cmp(i))
            })
            .map(|(_, m)| Decision::Run(Placement::Machine(m.name.clone())))
            .unwrap_or(Decision::Wait)
    }

    fn has_room(&self) -> bool {
        self.max_parallel.is_none_or(|max| self.running() < max)
    }

    fn slots(&mut self, placement: &Placement) -> (&mut u32, u32) {
        match placement {
            Placement::Local => (&mut self.local_busy, self.local_capacity),
            Placement::Machine(name) => {
                let m = self
                    .machines
                    .iter_mut()
                    .find(|m| m.name == *name)
                    .expect("placements name machines of the pool");
                (&mut m.busy, m.capacity)
            }
        }
    }

    /// Takes a slot at `placement` (as decided by [`Pool::decide`]).
    pub fn acquire(&mut self, placement: &Placement) {
        let (busy, capacity) = self.slots(placement);
        assert!(*busy < capacity, "no free slot at {}", placement.name());
        *busy += 1;
    }

    /// Frees a slot taken by [`Pool::acquire`].
    pub fn release(&mut self, placement: &Placement) {
        let (busy, _) = self.slots(placement);
        *busy -= 1;
    }

    /// Sets machine `name` aside for the rest of the run.
    pub fn set_aside(&mut self, name: &str, reason: impl Into<String>) {
        if let Some(m) = self.machines.iter_mut().find(|m| m.name == name) {
            m.set_aside.get_or_insert(reason.into());
        }
    }

    /// The machines set aside, with why.
    pub fn set_aside_machines(&self) -> Vec<(String, String)> {
        self.machines
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.set_aside.clone()?)))
            .collect()
    }
}

/// One attempt to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The cell's index in the matrix.
    pub cell: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub placement: Placement,
}

/// What [`Dispatcher::dispatch`] says about a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Start(Start),
    /// The cell cannot run anywhere; it failed as a system failure.
    Fail {
        cell: usize,
        reason: String,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Passed,
    Failed {
        failure: Failure,
        /// The attempt's machine no longer accepts connections.
        machine_unreachable: bool,
    },
}

/// What happens to a cell after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The cell is finished (passed, or failed for good).
    Done,
    /// The cell is queued for another attempt.
    Retry,
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
    needs: Vec<Need>,
    /// The machines each cell failed on.
    tried: Vec<Vec<String>>,
    queue: VecDeque<Waiting>,
    retries: u32,
    fail_fast: bool,
    stopped: bool,
}

impl Dispatcher {
    /// A dispatcher for cells with `needs` (index = cell), all waiting.
    pub fn new(pool: Pool, needs: Vec<Need>, retries: u32, fail_fast: bool) -> Dispatcher {
        let queue = (0..needs.len())
            .map(|cell| Waiting { cell, attempt: 1 })
            .collect();
        Dispatcher {
            pool,
            tried: vec![Vec::new(); needs.len()],
            needs,
            queue,
            retries,
            fail_fast,
            stopped: false,
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
                    self.stopped |= self.fail_fast;
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
        let AttemptOutcome::Failed {
            failure,
            machine_unreachable,
        } = outcome
        else {
            return Verdict::Done;
        };
        if let (true, Placement::Machine(name)) = (machine_unreachable, &start.placement) {
            self.pool.set_aside(
                name,
                format!(
                    "unreachable after attempt {} of cell {}",
                    start.attempt, start.cell
                ),
            );
        }
        if failure == Failure::System && start.attempt <= self.retries && !self.stopped {
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
            self.stopped |= self.fail_fast;
        }
        Verdict::Done
    }

    /// Whether fail-fast stopped the matrix.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Stops the matrix: nothing more starts. Returns the cells that were
    /// still waiting (they are cancelled).
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
    use std::path::Path;

    fn machines(text: &str) -> Vec<Machine> {
        crate::machines::Machines::parse(Path::new("machines.scm"), text)
            .unwrap()
            .machines
    }

    /// slow: 2 slots, speed 1; fast: 1 slot, speed 2; arm: builds aarch64 only.
    fn pool(max_parallel: Option<u32>) -> Pool {
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

    fn remote() -> Need {
        Need {
            remote: true,
            target_arch: "amd64".into(),
            pinned: None,
        }
    }

    fn local() -> Need {
        Need {
            remote: false,
            ..remote()
        }
    }

    fn on(name: &str) -> Decision {
        Decision::Run(Placement::Machine(name.into()))
    }

    #[test]
    fn fastest_free_machine_first_then_slots_are_respected() {
        let mut p = pool(None);
        assert_eq!(p.decide(&remote(), &[]), on("fast"));
        p.acquire(&Placement::Machine("fast".into()));
        assert_eq!(p.decide(&remote(), &[]), on("slow"));
        p.acquire(&Placement::Machine("slow".into()));
        assert_eq!(p.decide(&remote(), &[]), on("slow"));
        p.acquire(&Placement::Machine("slow".into()));
        assert_eq!(p.decide(&remote(), &[]), Decision::Wait);
        p.release(&Placement::Machine("fast".into()));
        assert_eq!(p.decide(&remote(), &[]), on("fast"));
    }

    #[test]
    fn systems_and_pins_restrict_machines() {
        let p = pool(None);
        let arm = Need {
            target_arch: "aarch64".into(),
            ..remote()
        };
        assert_eq!(p.decide(&arm, &[]), on("arm"));
        let riscv = Need {
            target_arch: "riscv64".into(),
            ..remote()
        };
        assert_eq!(p.decide(&riscv, &[]), on("fast"), "no systems: builds any");
        let only_arm = Pool::new(
            &machines(
                r#"(fruix-machines (machine (name "arm") (host "h3") (user "root") (systems "aarch64")))"#,
            ),
            1,
            None,
        );
        assert!(
            matches!(only_arm.decide(&riscv, &[]), Decision::Never(m) if m.contains("builds riscv64"))
        );
        let pinned = Need {
            pinned: Some("slow".into()),
            ..remote()
        };
        assert_eq!(p.decide(&pinned, &[]), on("slow"));
        let unknown = Need {
            pinned: Some("nowhere".into()),
            ..remote()
        };
        assert!(matches!(p.decide(&unknown, &[]), Decision::Never(m) if m.contains("\"nowhere\"")));
    }

    #[test]
    fn max_parallel_and_local_slots_hold() {
        let mut p = pool(Some(2));
        assert_eq!(p.decide(&local(), &[]), Decision::Run(Placement::Local));
        p.acquire(&Placement::Local);
        assert_eq!(p.decide(&local(), &[]), Decision::Wait, "one local slot");
        p.acquire(&Placement::Machine("fast".into()));
        assert_eq!(p.decide(&remote(), &[]), Decision::Wait, "max-parallel 2");
    }

    #[test]
    fn set_aside_machines_are_never_chosen_and_retries_avoid_tried_machines() {
        let mut p = pool(None);
        assert_eq!(p.decide(&remote(), &["fast".into()]), on("slow"));
        p.set_aside("slow", "connection refused");
        assert_eq!(
            p.decide(&remote(), &["fast".into()]),
            on("fast"),
            "back to a tried one"
        );
        p.set_aside("fast", "connection refused");
        assert!(
            matches!(p.decide(&remote(), &[]), Decision::Never(m) if m.contains("set aside") && m.contains("slow (connection refused)"))
        );
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
        let mut d = Dispatcher::new(pool(max_parallel), needs.clone(), retries, fail_fast);
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
                            machine_unreachable: false,
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
                machine_unreachable: true,
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
    fn retries_are_bounded_and_build_failures_are_not_retried() {
        let failing = |failure| {
            move |_: usize, _: &Placement| AttemptOutcome::Failed {
                failure,
                machine_unreachable: false,
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
                    machine_unreachable: false,
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
