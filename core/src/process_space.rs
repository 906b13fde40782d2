//! Whether a failed build step ran out of room: a step (make) that fails
//! because a file system it writes to is full is a system failure (free
//! space, then retry; a matrix retries it elsewhere), not a failure of the
//! build. Judged from the file systems themselves (`statvfs`), never from
//! the step's output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// Less free space than this is nearly full: a compiler that failed on a
/// full disk removes its partial output, so the space found after the
/// step is seldom exactly none.
const NEARLY_FULL_BYTES: u64 = 16 * 1024 * 1024;

/// Fewer free inodes than this is nearly full too.
const NEARLY_FULL_INODES: u64 = 128;

/// The places a step writes to: the result root, its working directory,
/// its `TMPDIR` and `MAKEOBJDIRPREFIX`, and this process's temporary
/// directory. Noted before the step runs (it takes the command).
pub(super) fn places(command: &Command, result_root: &Path) -> Vec<PathBuf> {
    let std = command.as_std();
    let env = |name: &str| {
        std.get_envs()
            .find(|(k, _)| *k == OsStr::new(name))
            .map(|(_, v)| v.map(PathBuf::from))
            .unwrap_or_else(|| std::env::var_os(name).map(PathBuf::from))
    };
    let mut places: Vec<PathBuf> = vec![result_root.to_path_buf()];
    places.extend(std.get_current_dir().map(Path::to_path_buf));
    places.extend(["TMPDIR", "MAKEOBJDIRPREFIX"].into_iter().filter_map(env));
    places.push(std::env::temp_dir());
    places
}

/// The first of `places` on a file system that is (nearly) full, said for
/// a message: `the file system holding PATH is nearly full (...)`.
pub(super) fn nearly_full(places: &[PathBuf]) -> Option<String> {
    places.iter().find_map(|place| {
        if !crate::fsutil::short_of_room(place, NEARLY_FULL_BYTES, NEARLY_FULL_INODES) {
            return None;
        }
        let (bytes, inodes) = crate::fsutil::room_left(place)?;
        let inodes = inodes.map_or(String::new(), |i| format!(", {i} inodes free"));
        Some(format!(
            "the file system holding {} is nearly full ({} KiB free{inodes})",
            crate::escape::path(place),
            bytes / 1024
        ))
    })
}
