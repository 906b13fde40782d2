//! The slots of this host and of the machines, and where one cell can run
//! now (see the policy in [`super`]).

use fruix_core::machines::Machine;

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
    /// Runs on a machine of the pool (its executor's capabilities say it
    /// builds remotely), rather than on this host.
    pub remote: bool,
    /// Its executor boots a throw-away guest from a virtual machine template
    /// ([`Capabilities::boots_vms`](fruix_core::executor::Capabilities::boots_vms)):
    /// it runs only on machines with a `(vm ...)` record, and a remote cell
    /// whose executor does not runs only on machines with an address.
    pub boots_vms: bool,
    /// The cell's `TARGET_ARCH`: a remote cell runs only on machines whose
    /// `systems` list it, or list none.
    pub target_arch: String,
    /// The machine the cell is pinned to.
    pub pinned: Option<String>,
}

/// The decision for one waiting cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it there now; the caller takes the slot with [`Pool::acquire`].
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
    /// A virtual machine template (a `(vm ...)` record), not an address.
    vm: bool,
    busy: u32,
    set_aside: Option<String>,
    /// The attempts (`attempt N of cell ID`) that failed on it with a
    /// system failure since its last attempt that did not: while there are
    /// any, it ranks after the machines without.
    failed_in_a_row: Vec<String>,
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
                    vm: m.vm.is_some(),
                    busy: 0,
                    set_aside: None,
                    failed_in_a_row: Vec::new(),
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
        let eligible: Vec<&MachineSlots> = self.eligible(need).collect();
        if eligible.is_empty() {
            let kind = if need.boots_vms {
                "is a virtual machine template"
            } else {
                "has an address (is no virtual machine template)"
            };
            return Decision::Never(match &need.pinned {
                Some(p) => format!("machine {p:?}, which the cell is pinned to, is not in the machines file, does not build {}, or is not of the kind its executor needs: one that {kind}", need.target_arch),
                None => format!("no machine in the machines file that {kind} builds {}", need.target_arch),
            });
        }
        let usable: Vec<&MachineSlots> = eligible
            .iter()
            .copied()
            .filter(|m| m.set_aside.is_none())
            .collect();
        if usable.is_empty() {
            return Decision::Never(all_set_aside(&eligible));
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
                // A machine whose last attempt failed with a system
                // failure comes last.
                (a.failed_in_a_row.is_empty())
                    .cmp(&b.failed_in_a_row.is_empty())
                    .then(a.speed.total_cmp(&b.speed))
                    .then(b.busy.cmp(&a.busy))
                    .then(j.cmp(i))
            })
            .map(|(_, m)| Decision::Run(Placement::Machine(m.name.clone())))
            .unwrap_or(Decision::Wait)
    }

    /// The machines a remote cell with `need` may ever run on, set aside
    /// or not: the one it is pinned to, or those that build its target
    /// arch, of the kind its executor needs (a virtual machine template
    /// or an address).
    fn eligible<'a>(&'a self, need: &'a Need) -> impl Iterator<Item = &'a MachineSlots> {
        self.machines
            .iter()
            .filter(|m| need.pinned.as_ref().is_none_or(|p| *p == m.name))
            .filter(|m| m.systems.is_empty() || m.systems.contains(&need.target_arch))
            .filter(|m| m.vm == need.boots_vms)
    }

    /// The names of the machines a cell with `need` may ever run on, in
    /// file order; none for a local cell.
    pub fn machines_for<'a>(&'a self, need: &'a Need) -> impl Iterator<Item = &'a str> {
        need.remote
            .then(|| self.eligible(need).map(|m| m.name.as_str()))
            .into_iter()
            .flatten()
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

    /// Records how an attempt on machine `name` ended: `failed` names an
    /// attempt (`attempt N of cell ID`) that failed with a system failure,
    /// `None` says it did not. Returns the attempts that failed there in a
    /// row, the last one included.
    pub fn record_attempt(&mut self, name: &str, failed: Option<String>) -> Vec<String> {
        let Some(m) = self.machines.iter_mut().find(|m| m.name == name) else {
            return Vec::new();
        };
        match failed {
            Some(attempt) => m.failed_in_a_row.push(attempt),
            None => m.failed_in_a_row.clear(),
        }
        m.failed_in_a_row.clone()
    }

    /// The machines set aside, with why.
    pub fn set_aside_machines(&self) -> Vec<(String, String)> {
        self.machines
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.set_aside.clone()?)))
            .collect()
    }
}

/// How many machines set aside a cell that none can take lists, with why.
const LISTED_SET_ASIDE: usize = 5;

/// Why a cell none of whose `eligible` machines is left cannot run: each
/// machine set aside (the first [`LISTED_SET_ASIDE`]) with its reason, one
/// after another.
fn all_set_aside(eligible: &[&MachineSlots]) -> String {
    let mut reasons: Vec<String> = eligible
        .iter()
        .take(LISTED_SET_ASIDE)
        .map(|m| format!("{} ({})", m.name, m.set_aside.as_deref().unwrap_or("")))
        .collect();
    if let Some(more) = eligible
        .len()
        .checked_sub(LISTED_SET_ASIDE)
        .filter(|n| *n > 0)
    {
        reasons.push(format!(
            "and {more} more (the report's machines_set_aside lists them)"
        ));
    }
    format!(
        "every machine that could build it was set aside: {}",
        reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fixtures::{local, machines, pinned_to, pool, remote};

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
        assert_eq!(p.decide(&pinned_to("slow"), &[]), on("slow"));
        let unknown = pinned_to("nowhere");
        assert!(matches!(p.decide(&unknown, &[]), Decision::Never(m) if m.contains("\"nowhere\"")));
    }

    #[test]
    fn vm_cells_take_vm_templates_and_other_remote_cells_machines_with_an_address() {
        let p = Pool::new(
            &machines(&format!(
                r#"(fruix-machines
  (machine (name "template") (user "root") (speed 9.0)
           (vm (driver qemu) (kernel "/vm/vmlinuz") (host-key "{}")))
  (machine (name "real") (host "h1") (user "root")))"#,
                fruix_core::testing::PINNED_HOST_KEY
            )),
            1,
            None,
        );
        let vm = Need {
            boots_vms: true,
            ..remote()
        };
        assert_eq!(p.decide(&vm, &[]), on("template"));
        assert_eq!(
            p.decide(&remote(), &[]),
            on("real"),
            "never the faster template"
        );
        let pinned = |machine: &str, boots_vms: bool| Need {
            boots_vms,
            ..pinned_to(machine)
        };
        assert!(
            matches!(p.decide(&pinned("template", false), &[]), Decision::Never(m) if m.contains("virtual machine template")),
            "{:?}",
            p.decide(&pinned("template", false), &[])
        );
        assert!(
            matches!(p.decide(&pinned("real", true), &[]), Decision::Never(m) if m.contains("virtual machine template")),
            "{:?}",
            p.decide(&pinned("real", true), &[])
        );
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

    #[test]
    fn a_machine_whose_last_attempt_failed_comes_after_the_others_with_a_free_slot() {
        let mut p = pool(None);
        let failed = p.record_attempt("fast", Some("attempt 1 of cell c0".into()));
        assert_eq!(failed, ["attempt 1 of cell c0"]);
        assert_eq!(p.decide(&remote(), &[]), on("slow"), "fast failed last");
        p.acquire(&Placement::Machine("slow".into()));
        p.acquire(&Placement::Machine("slow".into()));
        assert_eq!(p.decide(&remote(), &[]), on("fast"), "the only free slot");
        assert!(p.record_attempt("fast", None).is_empty());
        p.release(&Placement::Machine("slow".into()));
        assert_eq!(p.decide(&remote(), &[]), on("fast"), "it passed since");
    }

    /// Regression: a cell no machine could take any more said only that
    /// every machine was set aside, not why (the machines' errors were in
    /// the attempts of other cells). Now each reason is listed, up to
    /// [`LISTED_SET_ASIDE`] machines.
    #[test]
    fn a_cell_no_machine_can_take_says_why_each_was_set_aside_up_to_a_few() {
        let entries: String = (0..7)
            .map(|i| format!(r#"(machine (name "m{i}") (host "h{i}") (user "root"))"#))
            .collect();
        let mut p = Pool::new(&machines(&format!("(fruix-machines {entries})")), 1, None);
        for i in 0..7 {
            p.set_aside(&format!("m{i}"), format!("unreachable: refused {i}"));
        }
        let Decision::Never(why) = p.decide(&remote(), &[]) else {
            panic!("every machine is set aside");
        };
        let listed: Vec<String> = (0..LISTED_SET_ASIDE)
            .map(|i| format!("m{i} (unreachable: refused {i})"))
            .collect();
        assert_eq!(
            why,
            format!(
                "every machine that could build it was set aside: {}; and 2 more (the report's machines_set_aside lists them)",
                listed.join("; ")
            )
        );
    }
}
