//! `fruix-bench`: measures promotion and verification against their peers.
//!
//! Generates a FreeBSD-base-sized result root (about 26,000 files and 0.9 GB
//! over the four artifacts, with a realistic size mix, symlinks, exec and
//! setuid bits), then runs side by side, on the same filesystem:
//! `fruix native-build promote` into an empty store, the same promote again,
//! `fruix store verify`, `cp -a` of the same tree and `nix-hash --type sha256`
//! of it. It prints each time, the peak memory of each fruix run, and the
//! ratios the targets are stated in. It is a benchmark, never a test.
//!
//! Usage: `cargo build --release && target/release/fruix-bench [--dir DIR] [--scale F] [--keep]`

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../bench/tree.rs"]
mod tree;

/// Runs `cmd`, returning wall time and peak resident memory of the child (KiB).
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(label: &str, cmd: &mut Command) -> (Duration, u64) {
    // Start every contender from a clean page cache state: no other
    // command's dirty data left to flush on its time.
    let _ = Command::new("sync").status();
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(rc, pid, "{label}: wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{label}: {cmd:?} failed"
    );
    (elapsed, usage.ru_maxrss as u64)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut scale, mut keep) = (std::env::temp_dir().join("fruix-bench"), 1.0f64, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir DIR")),
            "--keep" => keep = true,
            "--scale" => {
                scale = args
                    .next()
                    .expect("--scale F")
                    .parse()
                    .expect("--scale takes a number")
            }
            "--help" | "-h" => {
                println!("usage: fruix-bench [--dir DIR] [--scale F] [--keep]\n\nDIR (default $TMPDIR/fruix-bench) is emptied first and removed at the end unless --keep is given;\nF scales the file count (1.0: about 26,000 files, 0.9 GB).");
                return;
            }
            other => panic!("unknown argument {other:?}; see --help"),
        }
    }
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        fruix.is_file(),
        "{} not found: build it first (cargo build --release)",
        fruix.display()
    );
    if dir.exists() {
        fruix_promote::store::remove_tree(&dir);
    }
    let root = dir.join("result-root");
    let store = dir.join("store");
    let copy = dir.join("copy");
    fs::create_dir_all(&root).unwrap();
    let (files, bytes) = tree::generate(&root, scale);
    tree::write_promotion(&root);
    println!(
        "tree: {files} files, {:.2} GB, in {}",
        bytes as f64 / 1e9,
        dir.display()
    );
    // Warm the page cache once so that every contender reads from memory.
    let _ = Command::new("cat").arg(root.join("promotion.scm")).output();
    let (t_nix, _) = measure(
        "nix-hash",
        Command::new("nix-hash")
            .args(["--type", "sha256"])
            .arg(root.join("artifacts"))
            .stdout(std::process::Stdio::null()),
    );
    let (t_cp, _) = measure("cp -a", Command::new("cp").arg("-a").arg(&root).arg(&copy));
    let (t_fresh, m_fresh) = measure(
        "promote (empty store)",
        Command::new(&fruix)
            .args(["native-build", "promote", "--quiet", "--store"])
            .arg(&store)
            .arg(&root)
            .stdout(std::process::Stdio::null()),
    );
    let (t_again, m_again) = measure(
        "promote (already present)",
        Command::new(&fruix)
            .args(["native-build", "promote", "--quiet", "--store"])
            .arg(&store)
            .arg(&root)
            .stdout(std::process::Stdio::null()),
    );
    let (t_verify, m_verify) = measure(
        "store verify",
        Command::new(&fruix)
            .args(["store", "verify", "--quiet", "--store"])
            .arg(&store)
            .stdout(std::process::Stdio::null()),
    );
    let (t_nix2, _) = measure(
        "nix-hash (again)",
        Command::new("nix-hash")
            .args(["--type", "sha256"])
            .arg(root.join("artifacts"))
            .stdout(std::process::Stdio::null()),
    );
    let t_nix = t_nix.min(t_nix2);
    let s = |d: Duration| d.as_secs_f64();
    println!("{:<28} {:>9} {:>12}", "command", "seconds", "peak MiB");
    println!("{:<28} {:>9.2} {:>12}", "cp -a", s(t_cp), "-");
    println!(
        "{:<28} {:>9.2} {:>12}",
        "nix-hash --type sha256",
        s(t_nix),
        "-"
    );
    for (label, t, m) in [
        ("promote (empty store)", t_fresh, m_fresh),
        ("promote (already present)", t_again, m_again),
        ("store verify", t_verify, m_verify),
    ] {
        println!("{label:<28} {:>9.2} {:>12.1}", s(t), m as f64 / 1024.0);
    }
    println!();
    let check = |ok: bool| if ok { "ok" } else { "MISSED" };
    let r_fresh = s(t_fresh) / s(t_cp);
    let r_again = s(t_again) / s(t_nix);
    let r_verify = s(t_verify) / s(t_nix);
    let peak = m_fresh.max(m_again).max(m_verify) as f64 / 1024.0;
    println!(
        "ratio promote/cp -a          {r_fresh:.2}  (target <= 1.30: {})",
        check(r_fresh <= 1.3)
    );
    println!(
        "ratio re-promote/nix-hash    {r_again:.2}  (target <= 0.80: {})",
        check(r_again <= 0.8)
    );
    println!(
        "ratio verify/nix-hash        {r_verify:.2}  (target <= 0.80: {})",
        check(r_verify <= 0.8)
    );
    println!(
        "peak memory                  {peak:.1} MiB (target < 150: {})",
        check(peak < 150.0)
    );
    if !keep {
        fruix_promote::store::remove_tree(&dir);
    }
}
