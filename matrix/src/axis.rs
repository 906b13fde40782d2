//! Matrix axes: what a cell may vary in, and which values each takes.

use fruix_core::escape;

/// A matrix axis: what a cell may vary in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Axis {
    /// `executor`: the executor that builds the cell, a name of the executor
    /// registry (`local`, `host-initiated`, ...). Every cell needs one.
    Executor,
    /// `kernconf`: the kernel configuration (`KERNCONF`);
    /// [`GENERIC`](crate::expand::DEFAULT_KERNCONF) when a cell names none.
    Kernconf,
    /// `target-arch`: the `TARGET_ARCH` built for (its `TARGET` follows from
    /// it); [`amd64`](crate::expand::DEFAULT_TARGET_ARCH) when a cell names
    /// none. A remote cell runs only on machines whose `systems` list it (or
    /// list none).
    TargetArch,
    /// `make-flag`: one extra make argument (`WITH_REPRODUCIBLE_BUILD=yes`),
    /// given after the matrix's `make-flags`. The only axis whose values may
    /// hold blanks and slashes.
    MakeFlag,
    /// `machine`: pins the cell to the machine of that name in the machines
    /// file. A remote cell without one goes wherever the pool has room.
    Machine,
}

impl Axis {
    /// Every axis, in the order cells are expanded and named.
    pub const ALL: [Axis; 5] = [
        Axis::Executor,
        Axis::Kernconf,
        Axis::TargetArch,
        Axis::MakeFlag,
        Axis::Machine,
    ];

    /// The axis's name in matrix files.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Executor => "executor",
            Axis::Kernconf => "kernconf",
            Axis::TargetArch => "target-arch",
            Axis::MakeFlag => "make-flag",
            Axis::Machine => "machine",
        }
    }

    /// The axis named `name`.
    pub fn from_name(name: &str) -> Option<Axis> {
        Axis::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The axes' names, for error messages.
    pub(crate) fn known() -> String {
        Axis::ALL.map(Axis::name).join(", ")
    }
}

/// An `exclude` or `include` entry: axis values, in the order given.
pub type MatrixEntry = Vec<(Axis, String)>;

/// Checks one axis value: not empty, and (but for make flags) without
/// slashes or blanks, since values name cells and files; and without a
/// format character ([`check_shown`]).
pub(crate) fn check_value(axis: Axis, value: &str) -> std::result::Result<(), String> {
    check_shown(axis.name(), value)?;
    let bad = match axis {
        _ if value.is_empty() => true,
        Axis::Kernconf | Axis::Executor | Axis::TargetArch | Axis::Machine => {
            value.contains(['/', ' ', '\t', '\n'])
        }
        Axis::MakeFlag => false,
    };
    if bad {
        Err(format!(
            "{} is not a valid {}",
            escape::quoted(value),
            axis.name()
        ))
    } else {
        Ok(())
    }
}

/// Refuses a value of matrix file field `what` that holds a character
/// [`escape`] would show as `\ooo` (the reader refuses control
/// characters already; this adds the format characters, such as U+202E,
/// which reorders what a terminal shows, and U+2028/U+2029): the plan,
/// the live view and the reports show these values.
pub(crate) fn check_shown(what: &str, value: &str) -> std::result::Result<(), String> {
    match value.chars().find(|c| escape::is_unsafe(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{} is not a valid {what}: it holds the invisible character U+{:04X}, which would change how the plan and reports show it; remove it",
            escape::quoted(value),
            u32::from(c)
        )),
    }
}
