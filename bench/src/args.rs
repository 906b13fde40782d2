//! Command-line arguments shared by the benchmarks: a scratch directory
//! (`--dir DIR`, `--keep`), `--flag value` options and switches.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The file a benchmark writes into the scratch directory it makes: only a
/// directory holding it (or an empty one) is ever emptied ([`claim`]).
pub const MARKER: &str = ".fruix-bench";

/// A benchmark's scratch directory, `--dir DIR`: each benchmark takes it
/// with [`claim`] before use, and [`Scratch::finish`] removes it at the end
/// unless `--keep`.
pub struct Scratch {
    /// `--dir DIR`, else the benchmark's default; the benchmarks take it
    /// with [`claim`] before use.
    pub dir: PathBuf,
    /// `--keep` was given: [`Scratch::finish`] leaves the directory for
    /// inspection.
    pub keep: bool,
}

impl Scratch {
    /// Removes the directory unless `--keep`.
    pub fn finish(&self) {
        if !self.keep {
            remove(&self.dir);
        }
    }
}

/// What a numeric flag sets: any number [`number`] parses.
pub trait Number {
    /// Parses `value`, the value given to `flag`, into `self`; the error
    /// names `flag` and says what is wrong with `value`.
    fn set(&mut self, flag: &str, value: &str) -> Result<(), String>;
}

impl<T: FromStr> Number for T
where
    T::Err: Display,
{
    fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        *self = number(flag, Some(value))?;
        Ok(())
    }
}

/// A `--scale` factor: a finite number above zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale(pub f64);

impl FromStr for Scale {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let scale: f64 = value.parse().map_err(|e| format!("{e}"))?;
        if scale.is_finite() && scale > 0.0 {
            Ok(Scale(scale))
        } else {
            Err(format!("{value}: not a scale (a number above zero)"))
        }
    }
}

impl Scale {
    /// What a verdict says when the targets, stated for scale 1, do not
    /// apply to this scale ([`crate::verdict`]).
    pub fn caveat(self) -> Option<&'static str> {
        (self.0 != 1.0).then_some("the targets are stated for scale 1")
    }
}

/// Parses the arguments of a benchmark whose scratch directory is
/// `default_dir` unless `--dir DIR`: `--dir DIR`, `--keep`, and `numbers`,
/// each flag with the number its value sets. `--help` prints `help`, and
/// any other argument what is wrong with it and `help`, and exits with
/// status 2.
pub fn scratch(
    help: &str,
    default_dir: PathBuf,
    numbers: &mut [(&str, &mut dyn Number)],
) -> Scratch {
    let mut scratch = Scratch {
        dir: default_dir,
        keep: false,
    };
    let mut flags = vec!["--dir"];
    flags.extend(numbers.iter().map(|(flag, _)| *flag));
    let parsed = parse(help, (&flags, &["--keep"]), |flag, value| {
        let value = value.unwrap_or_default();
        match numbers.iter_mut().find(|(f, _)| *f == flag) {
            Some((_, n)) => n.set(flag, value)?,
            None if flag == "--dir" => scratch.dir = value.into(),
            None => scratch.keep = true,
        }
        Ok(())
    });
    exit_unless_parsed(help, parsed);
    scratch
}

/// Exits when [`parse`] did not parse: `--help` prints `help` and exits 0,
/// anything else prints what is wrong and exits 2.
pub fn exit_unless_parsed(help: &str, parsed: Result<(), String>) {
    match parsed {
        Ok(()) => {}
        Err(message) if message == help => {
            println!("{help}");
            std::process::exit(0);
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    }
}

/// The scratch directory `name` of a benchmark: on tmpfs when `/dev/shm`
/// exists, else in `$TMPDIR`.
pub fn default_dir(name: &str) -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

/// Walks the arguments: `set(flag, value)` for each of `flags` (with the
/// next argument as its value) and `switches` (with none). `--help` gives
/// `help` as the error, and so does any other argument.
pub fn parse(
    help: &str,
    (flags, switches): (&[&str], &[&str]),
    mut set: impl FnMut(&str, Option<&str>) -> Result<(), String>,
) -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = if flags.contains(&flag.as_str()) {
            Some(args.next().ok_or(format!("{flag} needs a value"))?)
        } else if switches.contains(&flag.as_str()) {
            None
        } else if flag == "--help" {
            return Err(help.to_string());
        } else {
            return Err(format!("unknown argument {flag}\n\n{help}"));
        };
        set(&flag, value.as_deref())?;
    }
    Ok(())
}

/// `value` of `flag`, parsed.
pub fn number<T: FromStr>(flag: &str, value: Option<&str>) -> Result<T, String>
where
    T::Err: Display,
{
    value
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{flag}: {e}"))
}

/// Removes `path`, read-only directories (store objects) included, never
/// following a symlink (one at `path` is unlinked itself).
pub fn remove(path: &Path) {
    if let Err(e) = fruix_core::remove::remove_tree(path) {
        panic!("cannot remove {}: {e}", path.display());
    }
}

/// Empties `path`, a directory inside a [`claim`]ed scratch directory
/// (read-only store objects included), creating it; returns it.
pub fn fresh(path: &Path) -> PathBuf {
    remove(path);
    std::fs::create_dir_all(path).unwrap();
    path.to_path_buf()
}

/// Why `dir` may not be a benchmark's scratch directory, if it may not: it
/// is a symlink or not a directory, or it holds something but not the
/// [`MARKER`] of an earlier run. A directory not there, empty or marked
/// may be.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("--dir {shown}: {e}")),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "--dir {shown} is a symlink: give the directory itself, which the benchmark empties"
        ));
    }
    if !meta.is_dir() {
        return Err(format!("--dir {shown} is not a directory"));
    }
    let marked = std::fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file());
    let mut entries = std::fs::read_dir(dir).map_err(|e| format!("--dir {shown}: {e}"))?;
    if marked || entries.next().is_none() {
        Ok(())
    } else {
        Err(format!(
            "--dir {shown} holds files no benchmark made (it has no {MARKER}): give a new or \
             empty directory, which the benchmark empties and removes"
        ))
    }
}

/// Takes `dir` as the scratch directory: refuses (exit status 2, nothing
/// removed) one [`check_dir`] refuses, else empties it, creating it, and
/// marks it as the benchmark's ([`MARKER`]); returns it.
pub fn claim(dir: &Path) -> PathBuf {
    if let Err(message) = check_dir(dir) {
        eprintln!("{message}");
        std::process::exit(2);
    }
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        remove(&entry.unwrap().path());
    }
    std::fs::write(dir.join(MARKER), "a fruix benchmark's scratch directory\n").unwrap();
    dir.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fruix-bench-args-{name}-{}", std::process::id()));
        remove(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn dir_holding_user_files_is_refused_and_kept() {
        let dir = temp("user");
        std::fs::write(dir.join("precious"), "x").unwrap();
        assert!(check_dir(&dir).is_err());
        assert!(dir.join("precious").is_file());
        remove(&dir);
    }

    #[test]
    fn dir_new_empty_or_marked_is_taken() {
        let dir = temp("ours");
        assert_eq!(check_dir(&dir.join("new")), Ok(()));
        assert_eq!(check_dir(&dir), Ok(()));
        std::fs::write(dir.join(MARKER), "").unwrap();
        std::fs::write(dir.join("old-run"), "x").unwrap();
        assert_eq!(check_dir(&dir), Ok(()));
        remove(&dir);
    }

    #[test]
    fn symlinked_dir_is_refused_even_to_a_marked_dir() {
        let dir = temp("link");
        let target = dir.join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join(MARKER), "").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        assert!(check_dir(&dir.join("link")).is_err());
        remove(&dir);
    }

    #[test]
    fn remove_of_a_symlink_leaves_what_it_names_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("chmod");
        let victim = dir.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
        remove(&dir.join("link"));
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        remove(&dir);
    }

    #[test]
    fn scale_must_be_a_number_above_zero() {
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
        assert_eq!("0.02".parse::<Scale>(), Ok(Scale(0.02)));
    }
}
