//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Panics with a clear message when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("this test needs `{tool}` (Debian package {package}); install it, or run scripts/test.sh, which installs every tool the tests use")
    })
}

/// A `fruix` command.
pub fn fruix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fruix"))
}

/// The miniature FreeBSD source tree.
pub fn fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/freebsd-src-mini")
        .canonicalize()
        .expect("tests/fixtures/freebsd-src-mini exists")
}

/// Runs `cmd`, returning its output; panics when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and expects success, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("fruix prints UTF-8")
}

/// Parses `key=value` lines.
pub fn key_values(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every path under `dir` with its type, mode and size, sorted: a snapshot to
/// prove that a failed command changed nothing. A store's locks and its
/// (empty) pool directory are left out: opening a store creates them.
pub fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if e.file_name() == ".locks" || e.file_name() == ".lock" {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
            // An empty store has its pool directory: only pool entries count.
            if e.file_name() == ".links" {
                continue;
            }
            out.push(format!("{} {:o} {}", e.path().display(), m.mode(), m.len()));
        }
    }
    out.sort();
    out
}

/// Waits until `condition` holds, checking it again every few milliseconds,
/// and fails the test naming `what` after a minute. A bound on a condition,
/// never a delay: the test goes on as soon as the condition holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
