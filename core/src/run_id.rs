//! Run ids: UTC timestamps like `20260405T213444Z`, unique per state
//! directory; and the numbered directories of one run id (`RUN-ID`,
//! `RUN-ID.1`, ...) that builds sharing a directory from several state
//! directories (a guest's, say) take, so that they never share one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, IoContext, Result};

/// The last second a run id can name, 9999-12-31T23:59:59Z, in Unix time:
/// a run id's year has four digits.
pub const LAST_RUN_ID_SECOND: u64 = 253_402_300_799;

/// Formats `time` as a run id (`YYYYMMDDTHHMMSSZ`, UTC). A time before
/// 1970 or after the year 9999 (a system clock set wrong: `time` is the
/// clock's, or a few seconds after) names no run: a system failure
/// ([`Error::System`]) that says to set the clock.
pub fn format_run_id(time: SystemTime) -> Result<String> {
    let out_of_range = |when: &str| {
        Error::system(format!(
            "the system clock is out of range: it reads a time {when}, and a run is named \
             by its UTC time from 1970 to the year 9999; set the system clock"
        ))
    };
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Err(_) => return Err(out_of_range("before 1970")),
        Ok(since) if since.as_secs() > LAST_RUN_ID_SECOND => {
            return Err(out_of_range("after the year 9999"));
        }
        Ok(_) => {}
    }
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    Ok(rfc.chars().filter(|c| *c != '-' && *c != ':').collect())
}

/// Checks, creating nothing, that [`allocate_run_dir`] may make a run
/// directory in `parent`: the nearest of it and its ancestors that is there
/// must be a directory this user may write and search. Fails as
/// [`allocate_run_dir`] would (`create state directory`), so that a command
/// refuses before it makes anything else (a store, a source object).
pub fn check_run_dir_parent(parent: &Path) -> Result<()> {
    use rustix::fs::Access;
    let refused = |e: std::io::Error| Err(Error::io("create state directory", parent, e));
    for found in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(found) {
            Ok(m) if !m.is_dir() => {
                return refused(std::io::Error::from(std::io::ErrorKind::NotADirectory));
            }
            Ok(_) => {
                return rustix::fs::access(found, Access::WRITE_OK | Access::EXEC_OK)
                    .or_else(|e| refused(e.into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return refused(e),
        }
    }
    Ok(())
}

/// Creates a fresh directory `parent/<run-id>` and returns the run id and path.
///
/// The run id is the current UTC second; when a directory for that second
/// already exists (two builds started in the same second), the next free
/// second is taken, so run ids stay timestamps and stay unique.
pub fn allocate_run_dir(parent: &Path) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(parent).with_path("create state directory", parent)?;
    let now = SystemTime::now();
    for offset in 0..3600 {
        let id = format_run_id(now + Duration::from_secs(offset))?;
        let path = parent.join(&id);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((id, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create result root", &path, e)),
        }
    }
    Err(Error::system(format!(
        "{}: no free run id within the next hour; remove old result roots",
        parent.display()
    )))
}

/// How many directories one run id may name in one parent: `RUN-ID`, then
/// `RUN-ID.1` to `RUN-ID.999`.
pub const RUN_DIR_NAMES: u32 = 1000;

/// The `n`th directory name of run `run_id`: `RUN-ID` for 0, else `RUN-ID.N`.
pub fn run_dir_name(run_id: &str, n: u32) -> String {
    match n {
        0 => run_id.to_string(),
        n => format!("{run_id}.{n}"),
    }
}

/// Which of run `run_id`'s directory names `name` is: 0 for `RUN-ID`, N for
/// `RUN-ID.N` (N in decimal without a leading zero, below
/// [`RUN_DIR_NAMES`]). Strict, since the name may come from an untrusted
/// guest: anything else, `RUN-ID.01`, `RUN-ID.0`, `RUN-ID/x` or
/// `RUN-ID.1.work`, is `None`.
pub fn run_dir_number(name: &str, run_id: &str) -> Option<u32> {
    let Some(digits) = name.strip_prefix(run_id)?.strip_prefix('.') else {
        return (name == run_id).then_some(0);
    };
    let decimal = (1..=3).contains(&digits.len())
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    let n: u32 = digits.parse().ok().filter(|_| decimal)?;
    (n < RUN_DIR_NAMES).then_some(n)
}

/// The error when every directory name of run `run_id` in `parent` is taken:
/// a system failure, since it is the state of the machine (old result roots
/// left in a directory builds share), not a fault of the request.
pub fn no_free_run_dir(parent: &Path, run_id: &str) -> Error {
    Error::system(format!(
        "{}: {run_id} and {run_id}.1 to {run_id}.{} are all taken; remove old result roots",
        parent.display(),
        RUN_DIR_NAMES - 1,
    ))
}

/// Creates the first free directory of run `run_id` in `parent` (`RUN-ID`,
/// else `RUN-ID.1`, `RUN-ID.2`, ...; [`RUN_DIR_NAMES`] names at most) and
/// returns its path. `mkdir` is atomic, so builds that share `parent` (from
/// several hosts, with the same run id) each get a directory of their own.
/// A run id that is not a name is refused ([`Error::InvalidRequest`]);
/// every name taken is a system failure ([`no_free_run_dir`]).
pub fn create_numbered_run_dir(parent: &Path, run_id: &str) -> Result<PathBuf> {
    crate::promotion::check_name("run id", run_id)
        .map_err(|message| Error::InvalidRequest { message })?;
    std::fs::create_dir_all(parent).with_path("create state directory", parent)?;
    for n in 0..RUN_DIR_NAMES {
        let path = parent.join(run_dir_name(run_id, n));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create result root", &path, e)),
        }
    }
    Err(no_free_run_dir(parent, run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_a_utc_timestamp() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_775_424_884);
        assert_eq!(format_run_id(t).unwrap(), "20260405T213444Z");
    }

    /// A clock before 1970 or after the year 9999 is refused, a system
    /// failure, rather than panicking (humantime's formatting does).
    #[test]
    fn a_time_no_run_id_can_name_is_a_system_failure() {
        let epoch = SystemTime::UNIX_EPOCH;
        let last = epoch + Duration::from_secs(LAST_RUN_ID_SECOND);
        assert_eq!(format_run_id(epoch).unwrap(), "19700101T000000Z");
        assert_eq!(format_run_id(last).unwrap(), "99991231T235959Z");
        let last_nanosecond = last + Duration::from_nanos(999_999_999);
        assert_eq!(format_run_id(last_nanosecond).unwrap(), "99991231T235959Z");
        for (time, when) in [
            (epoch - Duration::from_nanos(1), "before 1970"),
            (
                epoch - Duration::from_secs(86_400 * 365 * 30),
                "before 1970",
            ),
            (last + Duration::from_secs(1), "after the year 9999"),
            (
                epoch + Duration::from_secs(261_000_000_000),
                "after the year 9999",
            ),
        ] {
            let e = format_run_id(time).unwrap_err();
            assert!(matches!(e, Error::System { .. }), "{time:?}: {e:?}");
            assert!(e.to_string().contains(when), "{time:?}: {e}");
        }
    }

    #[test]
    fn two_runs_in_one_second_get_distinct_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (a, pa) = allocate_run_dir(dir.path()).unwrap();
        let (b, pb) = allocate_run_dir(dir.path()).unwrap();
        assert_ne!(a, b);
        assert!(pa.is_dir() && pb.is_dir());
        assert_eq!(b.len(), "20260405T213444Z".len());
    }

    #[test]
    fn numbered_run_dirs_are_taken_in_order_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = "20260405T213444Z";
        for n in 0..3 {
            let path = create_numbered_run_dir(dir.path(), id).unwrap();
            assert_eq!(path, dir.path().join(run_dir_name(id, n)));
            assert_eq!(run_dir_number(&run_dir_name(id, n), id), Some(n));
        }
        assert_eq!(run_dir_name(id, 2), "20260405T213444Z.2");
        // A file or a dangling symlink takes a name too.
        std::fs::write(dir.path().join(format!("{id}.3")), "").unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join(format!("{id}.4"))).unwrap();
        let path = create_numbered_run_dir(dir.path(), id).unwrap();
        assert_eq!(path, dir.path().join(format!("{id}.5")));
        let e = create_numbered_run_dir(dir.path(), "../x").unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
    }

    #[test]
    fn when_every_numbered_run_dir_is_taken_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..RUN_DIR_NAMES {
            std::fs::create_dir(dir.path().join(run_dir_name("r", n))).unwrap();
        }
        let e = create_numbered_run_dir(dir.path(), "r").unwrap_err();
        assert!(matches!(e, Error::System { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("r.1 to r.999"), "{text}");
        assert!(!dir.path().join("r.1000").exists());
    }

    #[test]
    fn a_run_dir_number_is_strict() {
        let id = "20260405T213444Z";
        assert_eq!(run_dir_number(id, id), Some(0));
        assert_eq!(run_dir_number(&format!("{id}.1"), id), Some(1));
        assert_eq!(run_dir_number(&format!("{id}.999"), id), Some(999));
        for bad in [
            String::new(),
            "20260405T213445Z".to_string(),
            format!("{id}."),
            format!("{id}.0"),
            format!("{id}.01"),
            format!("{id}.1000"),
            format!("{id}.+1"),
            format!("{id}.-1"),
            format!("{id}.1 "),
            format!("{id}.1.work"),
            format!("{id}.work"),
            format!("{id}1"),
            format!("{id}/1"),
            format!("{id}.1/.."),
            format!("x{id}"),
            format!("{id}.\u{661}"),
        ] {
            assert_eq!(run_dir_number(&bad, id), None, "{bad:?}");
        }
    }
}
