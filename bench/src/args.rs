//! Command-line arguments shared by `fruix-bench-store` and
//! `fruix-bench-source`: a scratch directory, `--flag value` options and
//! switches.

use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    T::Err: std::fmt::Display,
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
