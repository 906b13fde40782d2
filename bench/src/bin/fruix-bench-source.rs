//! `fruix-bench-source`: measures `fruix source add` against its peers on a
//! generated FreeBSD-sized source tree (about 90,000 files, 1.5 GB): a fresh
//! add against `cp -a` (target ≤ 1.2×), and adding the unchanged tree again
//! against `nix-hash --type sha256` of it (target ≤ 0.8×). Fastest of
//! `--runs` runs, alternating; with each command's peak memory, measured as
//! `fruix-bench` does ([`fruix_bench::measure`]). A benchmark, never a test.
//!
//! Usage: `cargo build --release -p fruix --bin fruix --bin fruix-bench-source &&
//! target/release/fruix-bench-source [--dir DIR] [--files N] [--runs R] [--keep]`

use std::process::{Command, ExitCode};

use fruix_bench::measure::{self, measure};
use fruix_bench::{args, on_tmpfs, require, tree, verdict};

const HELP: &str = "\
usage: fruix-bench-source [--dir DIR] [--files N] [--runs R] [--keep]

  --dir DIR    where the tree, the copies and the store go: a new or empty
               directory, or one an earlier run made (it holds a
               .fruix-bench), which is emptied first and removed at the
               end unless --keep (default /dev/shm/fruix-bench-source when
               /dev/shm exists, else $TMPDIR/fruix-bench-source; the
               targets are stated for tmpfs)
  --files N    files in the source tree (default 90000: about 1.5 GB)
  --runs R     run every command R times, alternating, and report the
               fastest run and the highest peak memory (default 3)
  --keep       keep DIR at the end
  --help       print this help";

/// The default tree's files, for which the targets are stated.
const FILES: u64 = 90_000;

/// The fastest time (seconds) and the highest peak RSS (KiB) of a command.
#[derive(Clone, Copy)]
struct Best {
    seconds: f64,
    peak_kib: u64,
}

impl Best {
    const NONE: Best = Best {
        seconds: f64::MAX,
        peak_kib: 0,
    };

    fn keep(&mut self, (seconds, peak_kib): (f64, u64)) {
        self.seconds = self.seconds.min(seconds);
        self.peak_kib = self.peak_kib.max(peak_kib);
    }
}

fn main() -> ExitCode {
    if let Some(code) = measure::intercept() {
        return code;
    }
    let (mut files, mut runs) = (FILES, 3usize);
    let scratch = args::scratch(
        HELP,
        args::default_dir("fruix-bench-source"),
        &mut [("--files", &mut files), ("--runs", &mut runs)],
    );
    if runs == 0 {
        eprintln!("--runs takes a count of at least 1");
        return ExitCode::from(2);
    }
    require("nix-hash", "nix-bin");
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        fruix.exists(),
        "build fruix first: cargo build --release -p fruix -p fruix-bench"
    );
    let dir = args::claim(&scratch.dir);
    let caveat = match (on_tmpfs(&dir), files == FILES) {
        (Ok(()), true) => None,
        (Ok(()), false) => Some("the targets are stated for 90000 files".to_string()),
        (Err(not), _) => Some(not),
    };
    let src = dir.join("src");
    eprintln!("generating a source tree of {files} files...");
    let (files, bytes) = tree::generate_source(&src, files);
    let (copy, store) = (dir.join("copy"), dir.join("store"));
    let cp = || {
        let mut cmd = Command::new("cp");
        cmd.arg("-a").arg(&src).arg(&copy);
        cmd
    };
    // Warm-up: touch the memory every command will write into once.
    measure(&cp());
    args::remove(&copy);
    let add = || {
        let mut cmd = Command::new(&fruix);
        cmd.args(["source", "add", "--quiet", "--store"])
            .arg(&store)
            .arg(&src);
        cmd
    };
    let mut nix_hash = Command::new("nix-hash");
    nix_hash.args(["--type", "sha256"]).arg(&src);
    let floor_kib = measure::floor_kib();
    let mut best = [Best::NONE; 4];
    for run in 0..runs {
        eprintln!("run {} of {runs}...", run + 1);
        let measured = [
            measure(&cp()),
            measure(&add()),
            measure(&add()),
            measure(&nix_hash),
        ];
        for (b, m) in best.iter_mut().zip(measured) {
            b.keep(m);
        }
        args::remove(&copy);
        args::remove(&store);
    }
    let [cp, fresh, again, nix_hash] = best;
    println!(
        "source tree: {files} files, {:.2} GB ({}); peak MiB never below {:.1}, the measuring process's own",
        bytes as f64 / 1e9,
        dir.display(),
        floor_kib as f64 / 1024.0
    );
    println!("  {:<36}{:>8} {:>9}", "command", "seconds", "peak MiB");
    for (label, best) in [
        ("cp -a", cp),
        ("nix-hash --type sha256", nix_hash),
        ("fruix source add (empty store)", fresh),
        ("fruix source add (already present)", again),
    ] {
        let mib = best.peak_kib as f64 / 1024.0;
        println!("  {label:<36}{:>8.2} {mib:>9.1}", best.seconds);
    }
    let caveat = caveat.as_deref();
    let (fresh_ratio, again_ratio) = (fresh.seconds / cp.seconds, again.seconds / nix_hash.seconds);
    println!(
        "  fresh add / cp -a        {fresh_ratio:.2}  (target <= 1.20: {})",
        verdict(fresh_ratio <= 1.2, caveat)
    );
    println!(
        "  re-add / nix-hash        {again_ratio:.2}  (target <= 0.80: {})",
        verdict(again_ratio <= 0.8, caveat)
    );
    scratch.finish();
    ExitCode::SUCCESS
}
