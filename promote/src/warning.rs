//! Warnings the store gives its user while it works (a leftover it
//! removes), told to the process's warning hook ([`set_warning_hook`]): a
//! command shows them where its live progress line lets it. Without a
//! hook (a library user), they go to stderr.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use fruix_core::escape;

/// A warning of the store's, typed: a hook decides from the variant, and
/// shows it with its `Display` (one line, paths escaped, without the
/// `fruix: warning: ` a command puts before it).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A directory under an object's name that the registry does not name
    /// (what a repair, promotion or import killed half-way left, or a hand
    /// edit) failed its check, and is removed, so that the object is made
    /// anew.
    LeftoverRemoved {
        /// The directory, in the store.
        object: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::LeftoverRemoved { object, problem } => write!(
                f,
                "{} is not registered (what a repair, promotion or import killed half-way left, or a hand edit) and does not hold what its name says ({}): removing it, to make the object anew",
                escape::path(object),
                escape::line(problem)
            ),
        }
    }
}

/// The process's warning hook.
static HOOK: OnceLock<fn(&Warning)> = OnceLock::new();

/// Sets, for the whole process and once (later calls change nothing),
/// what the store calls with each of its warnings, in place of printing
/// them on stderr: a command shows them above its live line.
pub fn set_warning_hook(hook: fn(&Warning)) {
    let _ = HOOK.set(hook);
}

/// Tells the process's warning hook `warning`; without one, prints it on
/// stderr (`fruix: warning: ...`).
pub(crate) fn warn(warning: Warning) {
    match HOOK.get() {
        Some(hook) => hook(&warning),
        None => eprintln!("fruix: warning: {warning}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hook of these tests was told.
    static TOLD: std::sync::Mutex<Vec<Warning>> = std::sync::Mutex::new(Vec::new());

    fn record(warning: &Warning) {
        TOLD.lock().unwrap().push(warning.clone());
    }

    /// Regression: the store printed its warning (a leftover removed) on
    /// stderr itself, through the command's live progress line. Once a hook
    /// is set, a warning goes to it, typed, and only to it.
    #[test]
    fn a_warning_goes_to_the_hook_once_set() {
        set_warning_hook(record);
        let warning = Warning::LeftoverRemoved {
            object: PathBuf::from("/store/odd\nname"),
            problem: "a file\nchanged".into(),
        };
        warn(warning.clone());
        let told = TOLD.lock().unwrap();
        assert_eq!(told.iter().filter(|w| **w == warning).count(), 1);
        let shown = warning.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("removing it"), "{shown}");
    }
}
