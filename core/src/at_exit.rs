//! What a process's fast exit (a second Ctrl-C, while the first one's
//! cleanup runs) does with the files its work has made: it removes those
//! registered [`Fate::Removed`], names those registered [`Fate::Left`]
//! that are still there, and names those on another machine
//! ([`Fate::LeftOn`], a guest's), so that the user knows what to clean up
//! by hand.
//!
//! The registry is process-wide, as signals are: an executor registers its
//! work directory here, and the command's signal handler reads it
//! ([`with_registered`]) on its way out.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What a fast exit does with a registered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Removed with one unlink (a temporary file no sweep would find).
    Removed,
    /// Left as it is (a work directory, whose removal could take minutes),
    /// and named if it is there.
    Left,
    /// On another machine (a guest's work directory): left, and named
    /// with the machine, as a fast exit cannot look there.
    LeftOn {
        /// The machine, as its user sees it (`root@build1:22`).
        machine: String,
    },
}

/// One registered file: what it is (`the build's work directory`), its
/// absolute path (on its machine), and what a fast exit does with it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// What the file is, for the fast exit's message.
    pub what: &'static str,
    /// Its absolute path (on the machine of a [`Fate::LeftOn`]).
    pub path: PathBuf,
    /// What a fast exit does with it.
    pub fate: Fate,
}

struct Registry {
    next: u64,
    files: Vec<(u64, Registered)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    files: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registration: dropping it forgets the file (removing it stays its
/// owner's work).
#[must_use = "dropping it forgets the file at once"]
#[derive(Debug)]
pub struct AtExit {
    id: u64,
}

impl AtExit {
    /// Makes the file at `path` with `create`, and registers it, `what`
    /// naming it in the fast exit's message. No fast exit comes between
    /// the two (it waits, or the file is never made): a fast exit leaves no
    /// file it did not know of.
    pub fn create<T>(
        what: &'static str,
        path: &Path,
        fate: Fate,
        create: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<(T, AtExit)> {
        let path = absolute(path);
        let mut registry = registry();
        let made = create()?;
        Ok((made, registry.add(Registered { what, path, fate })))
    }

    /// Registers `path`, made or to be made by its owner, to be left and
    /// named by a fast exit ([`Fate::Left`]) if it is there then.
    pub fn left(what: &'static str, path: &Path) -> AtExit {
        let path = absolute(path);
        registry().add(Registered {
            what,
            path,
            fate: Fate::Left,
        })
    }

    /// Registers `path` (absolute) on `machine`, another machine (a
    /// guest), to be named by a fast exit as left there
    /// ([`Fate::LeftOn`]).
    pub fn left_on(what: &'static str, machine: impl std::fmt::Display, path: &str) -> AtExit {
        registry().add(Registered {
            what,
            path: PathBuf::from(path),
            fate: Fate::LeftOn {
                machine: machine.to_string(),
            },
        })
    }
}

impl Registry {
    fn add(&mut self, registered: Registered) -> AtExit {
        let id = self.next;
        self.next += 1;
        self.files.push((id, registered));
        AtExit { id }
    }
}

/// `path` made absolute, as what the process does next (changing its
/// directory) cannot change it.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Drop for AtExit {
    fn drop(&mut self) {
        registry().files.retain(|(id, _)| *id != self.id);
    }
}

/// Runs `f` on the files registered now, in the order of registration,
/// holding the registry: no file is registered or forgotten meanwhile (a
/// fast exit calls this and exits from `f`, so the registry stays held
/// until the process is gone).
pub fn with_registered<T>(f: impl FnOnce(&[Registered]) -> T) -> T {
    let registry = registry();
    let files: Vec<Registered> = registry.files.iter().map(|(_, r)| r.clone()).collect();
    f(&files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(path: &Path) -> Vec<(&'static str, Fate)> {
        with_registered(|files| {
            files
                .iter()
                .filter(|r| r.path.starts_with(path))
                .map(|r| (r.what, r.fate.clone()))
                .collect()
        })
    }

    #[test]
    fn a_registration_holds_until_it_is_dropped_and_a_failed_creation_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let work = AtExit::left("the work directory", &dir.path().join("work"));
        let (file, temporary) = AtExit::create(
            "the temporary",
            &dir.path().join("tmp"),
            Fate::Removed,
            || std::fs::File::create(dir.path().join("tmp")),
        )
        .unwrap();
        drop(file);
        assert_eq!(
            named(dir.path()),
            [
                ("the work directory", Fate::Left),
                ("the temporary", Fate::Removed)
            ]
        );
        let refused = AtExit::create(
            "a file in no directory",
            &dir.path().join("none/file"),
            Fate::Removed,
            || std::fs::File::create(dir.path().join("none/file")),
        );
        assert!(refused.is_err());
        drop(work);
        assert_eq!(named(dir.path()), [("the temporary", Fate::Removed)]);
        drop(temporary);
        assert_eq!(named(dir.path()), []);
        // A guest's path is its own: not made absolute here.
        let guest = AtExit::left_on("the guest's", "root@b1:22", "/srv/r1.work");
        let theirs = with_registered(|files| {
            files
                .iter()
                .find(|r| r.what == "the guest's")
                .map(|r| (r.path.clone(), r.fate.clone()))
        });
        let machine = "root@b1:22".to_string();
        assert_eq!(
            theirs,
            Some(("/srv/r1.work".into(), Fate::LeftOn { machine }))
        );
        drop(guest);
    }
}
