//! Build script: records the git commit the fruix command is built from,
//! when it is built from a git checkout, for `fruix --version`
//! (`FRUIX_COMMIT`). Built from a packaged crate, there is none, and
//! `--version` names none.

use std::path::Path;
use std::process::Command;

fn main() {
    let git = Path::new("../.git");
    if !git.is_dir() {
        return;
    }
    // Build again when HEAD moves: a commit, a checkout, a reset (each
    // writes HEAD's log), or a ref rewritten.
    for watched in ["HEAD", "logs/HEAD", "packed-refs"] {
        if git.join(watched).exists() {
            println!("cargo:rerun-if-changed=../.git/{watched}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(name) = head.trim().strip_prefix("ref: ") {
            if git.join(name).exists() {
                println!("cargo:rerun-if-changed=../.git/{name}");
            }
        }
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir("..")
        .output();
    if let Ok(out) = commit {
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let plain = commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if out.status.success() && plain {
            println!("cargo:rustc-env=FRUIX_COMMIT={commit}");
        }
    }
}
