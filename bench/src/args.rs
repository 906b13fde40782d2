//! Command-line arguments shared by the benchmarks: a scratch directory
//! (`--dir DIR`, `--keep`), `--flag value` options and switches.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A benchmark's scratch directory, `--dir DIR`: each benchmark empties it
/// with [`fresh`] before use, and [`Scratch::finish`] removes it at the end
/// unless `--keep`.
pub struct Scratch {
    /// `--dir DIR`, else the [`default_dir`] of the benchmark's name; the
    /// benchmarks empty it with [`fresh`] before use.
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

/// Parses the arguments of a benchmark whose scratch directory is `name`
/// by default ([`default_dir`]): `--dir DIR`, `--keep`, and `numbers`, each
/// flag with the number its value sets. `--help` prints `help`, and any
/// other argument what is wrong with it and `help`, and exits with status 2.
pub fn scratch(help: &str, name: &str, numbers: &mut [(&str, &mut dyn Number)]) -> Scratch {
    let mut scratch = Scratch {
        dir: default_dir(name),
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

/// Removes `path`, read-only directories (store objects) included.
pub fn remove(path: &Path) {
    if std::fs::symlink_metadata(path).is_err() {
        return;
    }
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(path)
        .status();
    let _ = std::fs::remove_dir_all(path);
}

/// Empties `dir` (read-only store objects included), creating it; returns it.
pub fn fresh(dir: &Path) -> PathBuf {
    remove(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}
