//! Matrix axes: what a cell may vary in, and which values each takes.

use fruix_core::escape;

/// A matrix axis: what a cell may vary in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Axis {
    Executor,
    Kernconf,
    TargetArch,
    MakeFlag,
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
/// slashes or blanks, since values name cells and files.
pub(crate) fn check_value(axis: Axis, value: &str) -> std::result::Result<(), String> {
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
