//! Run ids: UTC timestamps like `20260405T213444Z`, unique per state directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, IoContext, Result};

/// Formats `time` as a run id (`YYYYMMDDTHHMMSSZ`, UTC).
pub fn format_run_id(time: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    rfc.chars().filter(|c| *c != '-' && *c != ':').collect()
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
        let id = format_run_id(now + Duration::from_secs(offset));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_a_utc_timestamp() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_775_424_884);
        assert_eq!(format_run_id(t), "20260405T213444Z");
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
}
