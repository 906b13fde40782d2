//! `fruix-bench-source`: measures `fruix source add` against its peers on a
//! generated FreeBSD-sized source tree (about 90,000 files, 1.5 GB): a fresh
//! add against `cp -a` (target ≤ 1.2×), and adding the unchanged tree again
//! against `nix-hash --type sha256` of it (target ≤ 0.8×). Fastest of
//! `--runs` runs, alternating. A benchmark, never a test.
//!
//! Usage: `cargo build --release -p fruix --bin fruix --bin fruix-bench-source &&
//! target/release/fruix-bench-source [--dir DIR] [--files N] [--runs R] [--keep]`

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fruix_bench::{args, tree};

const HELP: &str = "\
usage: fruix-bench-source [--dir DIR] [--files N] [--runs R] [--keep]

  --dir DIR    where the tree, the copies and the store go; emptied first,
               removed at the end unless --keep (default
               /dev/shm/fruix-bench-source when /dev/shm exists, else
               $TMPDIR/fruix-bench-source)
  --files N    files in the source tree (default 90000: about 1.5 GB)
  --runs R     run every command R times, alternating, and report the
               fastest run (default 3)
  --keep       keep DIR at the end
  --help       print this help";

/// Runs `cmd` (after flushing what earlier commands wrote) and returns its
/// wall time; it must succeed.
fn timed(cmd: &mut Command) -> Duration {
    let _ = Command::new("sync").status();
    fruix_bench::timed(cmd)
}

fn main() {
    let (mut files, mut runs) = (90_000u64, 3usize);
    let scratch = args::scratch(
        HELP,
        "fruix-bench-source",
        &mut [("--files", &mut files), ("--runs", &mut runs)],
    );
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        fruix.exists(),
        "build fruix first: cargo build --release -p fruix -p fruix-bench"
    );
    let dir = args::fresh(&scratch.dir);
    let src = dir.join("src");
    eprintln!("generating a source tree of {files} files...");
    let (files, bytes) = tree::generate_source(&src, files);
    let (copy, store) = (dir.join("copy"), dir.join("store"));
    // Warm-up: touch the memory every command will write into once.
    timed(Command::new("cp").arg("-a").arg(&src).arg(&copy));
    args::remove(&copy);
    let add = |store: &Path| {
        let mut cmd = Command::new(&fruix);
        cmd.args(["source", "add", "--quiet", "--store"])
            .arg(store)
            .arg(&src);
        cmd
    };
    let mut best = [Duration::MAX; 4];
    for run in 0..runs {
        eprintln!("run {} of {runs}...", run + 1);
        let times = [
            timed(Command::new("cp").arg("-a").arg(&src).arg(&copy)),
            timed(&mut add(&store)),
            timed(&mut add(&store)),
            timed(
                Command::new("nix-hash")
                    .args(["--type", "sha256"])
                    .arg(&src),
            ),
        ];
        for (b, t) in best.iter_mut().zip(times) {
            *b = (*b).min(t);
        }
        args::remove(&copy);
        args::remove(&store);
    }
    let [cp, fresh, again, nix_hash] = best.map(|d| d.as_secs_f64());
    println!(
        "source tree: {files} files, {:.2} GB ({})",
        bytes as f64 / 1e9,
        dir.display()
    );
    println!("  cp -a                               {cp:>8.2} s");
    println!("  nix-hash --type sha256              {nix_hash:>8.2} s");
    println!("  fruix source add (empty store)      {fresh:>8.2} s");
    println!("  fruix source add (already present)  {again:>8.2} s");
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "  fresh add / cp -a        {:.2}  (target <= 1.20) {}",
        fresh / cp,
        verdict(fresh / cp <= 1.2)
    );
    println!(
        "  re-add / nix-hash        {:.2}  (target <= 0.80) {}",
        again / nix_hash,
        verdict(again / nix_hash <= 0.8)
    );
    scratch.finish();
}
