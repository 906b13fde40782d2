//! Build script: records the git commit the fruix command is built from,
//! when it is built from a git checkout (a worktree included), for
//! `fruix --version` (`FRUIX_COMMIT`), with `-dirty` after it when the
//! sources it is built from differ from that commit. Built from a packaged
//! crate, there is none, and `--version` names none.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the binary is built from, relative to the workspace: a change
/// under any of these (tracked or not ignored) makes the build `-dirty`,
/// and builds the script again. `tests/end_to_end/readme.rs` lists the same.
const SOURCES: [&str; 9] = [
    "Cargo.toml",
    "Cargo.lock",
    "core",
    "freebsd",
    "promote",
    "executors",
    "matrix",
    "cli",
    "plugins",
];

/// `git ARGS` run in the workspace, its output when it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir("..")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    // Only a checkout of this workspace (`.git` is a file in a worktree),
    // never a repository that merely holds a packaged copy.
    if !Path::new("../.git").exists() {
        return;
    }
    let Some(dirs) = git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-dir",
        "--git-common-dir",
    ]) else {
        return;
    };
    let mut dirs = dirs.lines().map(PathBuf::from);
    let (Some(git_dir), Some(common)) = (dirs.next(), dirs.next()) else {
        return;
    };
    // Build again when HEAD moves (a commit, a checkout, a reset each write
    // HEAD's log), a ref is rewritten, or the index or a source changes.
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("logs/HEAD"),
        git_dir.join("index"),
        common.join("packed-refs"),
    ];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(name) = head.trim().strip_prefix("ref: ") {
            watched.push(common.join(name));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for source in SOURCES {
        println!("cargo:rerun-if-changed=../{source}");
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    let commit = commit.trim();
    if commit.len() != 12 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return;
    }
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = match git(&status) {
        Some(changes) if changes.trim().is_empty() => "",
        _ => "-dirty",
    };
    println!("cargo:rustc-env=FRUIX_COMMIT={commit}{dirty}");
}
