//! What the fruix benchmarks (`src/bin`) share: their command-line
//! arguments and scratch directories ([`args`]), the generated trees
//! ([`tree`]), a loopback `sshd` ([`sshd`]), time and peak memory of a
//! command ([`measure`]), and the `fruix` built beside them.

#![warn(missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub mod args;
pub mod measure;
pub mod sshd;
pub mod tree;

/// The `fruix` built beside the running benchmark.
pub fn fruix() -> Command {
    Command::new(std::env::current_exe().unwrap().with_file_name("fruix"))
}

/// `fruix native-build promote REPORT --no-out-link --store STORE ROOT`:
/// `fruix` promoting result root `root` into `store` without leaving an
/// out-link, its report as `report` asks (`--json` or `--quiet`).
pub fn promote(mut fruix: Command, report: &str, store: &Path, root: &Path) -> Command {
    fruix
        .args([
            "native-build",
            "promote",
            report,
            "--no-out-link",
            "--store",
        ])
        .arg(store)
        .arg(root);
    fruix
}

/// Runs `cmd`, which must succeed (its output is kept, its stderr shown if
/// it fails); returns its wall time.
pub fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Fails loudly when a peer command `tool` is missing, naming the Debian
/// `package` that has it; every benchmark checks its peers before any work.
pub fn require(tool: &str, package: &str) {
    if let Err(e) = Command::new(tool).arg("--version").output() {
        panic!("{tool}: {e}: install the Debian package {package} (apt-get install {package})");
    }
}

/// The verdict on a target, met or not: `ok` or `MISSED`; or, when the
/// target does not apply (`caveat` says why), what it would be and why.
pub fn verdict(met: bool, caveat: Option<&str>) -> String {
    match (caveat, met) {
        (None, true) => "ok".into(),
        (None, false) => "MISSED".into(),
        (Some(why), true) => format!("would be ok; {why}"),
        (Some(why), false) => format!("would miss; {why}"),
    }
}

/// Whether `dir` is on tmpfs, where the targets are stated; if not, the
/// error names its filesystem's statfs type.
pub fn on_tmpfs(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statfs is a valid value for statfs to fill in.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out-pointer.
    assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut stat) }, 0);
    if stat.f_type == libc::TMPFS_MAGIC {
        Ok(())
    } else {
        Err(format!(
            "not tmpfs: f_type {:#x}; the targets are stated for tmpfs",
            stat.f_type
        ))
    }
}

/// Runs `rounds` rounds of `fruix` and `peer`, alternating which goes first
/// (fruix in odd rounds), each side a label and one run returning its time,
/// printed as `round N: LABEL TIME` with the label padded to `width`.
/// Returns the best time of each side.
pub fn head_to_head(
    rounds: u32,
    width: usize,
    (fruix_label, mut fruix): (&str, impl FnMut() -> Duration),
    (peer_label, mut peer): (&str, impl FnMut() -> Duration),
) -> (Duration, Duration) {
    let printed = |round: u32, label: &str, t: Duration| {
        println!("round {round}: {label:<width$}{:>7.2}s", t.as_secs_f64());
        t
    };
    let (mut best_fruix, mut best_peer) = (Duration::MAX, Duration::MAX);
    for round in 1..=rounds {
        if round % 2 == 1 {
            best_fruix = best_fruix.min(printed(round, fruix_label, fruix()));
            best_peer = best_peer.min(printed(round, peer_label, peer()));
        } else {
            best_peer = best_peer.min(printed(round, peer_label, peer()));
            best_fruix = best_fruix.min(printed(round, fruix_label, fruix()));
        }
    }
    (best_fruix, best_peer)
}

/// Prints the best times of a [`head_to_head`], each with its name, and
/// fruix's ratio to its peer against `target`, with its [`verdict`]
/// (`caveat`: why the target does not apply, if it does not).
pub fn print_ratio(
    (fruix, best_fruix): (&str, Duration),
    (peer, best_peer): (&str, Duration),
    target: f64,
    caveat: Option<&str>,
) {
    let ratio = best_fruix.as_secs_f64() / best_peer.as_secs_f64();
    println!(
        "best: {fruix} {:.2}s, {peer} {:.2}s, ratio {ratio:.2}x (target <= {target:.2}x: {})",
        best_fruix.as_secs_f64(),
        best_peer.as_secs_f64(),
        verdict(ratio <= target, caveat)
    );
}
