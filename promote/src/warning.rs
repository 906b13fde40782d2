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
    /// The space kept for the garbage collector (`STORE/.fruix/reserved`)
    /// could not be made whole again when a collection, a deletion or a
    /// repair ended: the disk is nearly full. What it holds stays.
    ReserveShort {
        /// The reserve's file.
        file: PathBuf,
        /// The bytes it holds.
        held: u64,
        /// The bytes it is meant to hold.
        wanted: u64,
    },
    /// A promoted result root that `store gc` would collect was modified
    /// after now, by this system's clock (a clock set back, or a root
    /// copied from a machine whose clock is ahead): its age is taken as 0,
    /// so only `--older-than 0s` removes it until the clock passes that
    /// time.
    ResultRootInFuture {
        /// The result root.
        root: PathBuf,
        /// How far after now it was modified.
        ahead: std::time::Duration,
    },
    /// A promoted result root that `store gc` collects could not be
    /// removed (an immutable directory, a mount point in it, a filesystem
    /// error): what is left of it stays, and it is not counted as removed.
    ResultRootLeft {
        /// The result root.
        root: PathBuf,
        /// Why it could not be removed.
        reason: String,
    },
    /// The registration of a dead root (`STATE_DIR/gcroots/auto/NAME`,
    /// whose link is gone) that `store gc` removes could not be removed: it
    /// stays, and is not counted as removed.
    DeadRootLeft {
        /// The registration.
        entry: PathBuf,
        /// Why it could not be removed.
        reason: String,
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
            Warning::ReserveShort { file, held, wanted } => write!(
                f,
                "{} holds {} KiB of the {} KiB kept so that store gc, store delete and store verify --repair have room: the disk is nearly full; free space (a later command makes the rest once there is room)",
                escape::path(file),
                held >> 10,
                wanted >> 10
            ),
            Warning::ResultRootInFuture { root, ahead } => write!(
                f,
                "the result root {} was modified {} s after now by this system's clock (set back, or the root copied from a machine ahead): its age is taken as 0 s, so only --older-than 0s removes it until the clock passes that time (`touch` it to date it now)",
                escape::path(root),
                ahead.as_secs().max(1)
            ),
            Warning::ResultRootLeft { root, reason } => write!(
                f,
                "the result root {} could not be removed ({}): it stays (what is left of it), and is not counted as removed",
                escape::path(root),
                escape::line(reason)
            ),
            Warning::DeadRootLeft { entry, reason } => write!(
                f,
                "the dead root's registration {} could not be removed ({}): it stays, and is not counted as removed",
                escape::path(entry),
                escape::line(reason)
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

    /// A reserve short of its size says what it holds, of how much, and
    /// why (the disk nearly full), on one line.
    #[test]
    fn a_short_reserve_says_what_it_holds() {
        let shown = Warning::ReserveShort {
            file: PathBuf::from("/store/.fruix/reserved"),
            held: 7 << 20,
            wanted: 8 << 20,
        }
        .to_string();
        assert!(
            shown.starts_with("/store/.fruix/reserved holds 7168 KiB of the 8192 KiB"),
            "{shown}"
        );
        assert!(shown.contains("the disk is nearly full"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }

    /// A root modified in the future says where, how far ahead, and what
    /// the collection makes of it, on one line.
    #[test]
    fn a_root_in_the_future_says_its_age_counts_as_0() {
        let shown = Warning::ResultRootInFuture {
            root: PathBuf::from("/state/native-builds/odd\nname"),
            ahead: std::time::Duration::from_secs(90),
        }
        .to_string();
        assert!(shown.contains("modified 90 s after now"), "{shown}");
        assert!(shown.contains("its age is taken as 0 s"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }
}
