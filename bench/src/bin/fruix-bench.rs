//! `fruix-bench`: measures promotion and verification against their peers.
//!
//! Generates a result root, either FreeBSD-base-sized (about 26,000 files and
//! 0.9 GB over the four artifacts, with a realistic size mix, symlinks, exec
//! and setuid bits) or, with `--files N`, N small files. It then runs side by
//! side, on the same filesystem (tmpfs by default): `cp -a` of the root,
//! `nix-store --add` of it into a private Nix store, `nix-hash --type sha256`
//! of it, `fruix native-build promote` into an empty store, the same promote
//! again and `fruix store verify`. It prints each command's time and peak
//! memory, and the ratios the targets are stated in. It is a benchmark, never
//! a test.
//!
//! Usage: `cargo build --release -p fruix --bin fruix --bin fruix-bench &&
//! target/release/fruix-bench [--dir DIR] [--scale F | --files N] [--runs R] [--keep]`

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use fruix_bench::args::{self, Scale};
use fruix_bench::measure::{self, measure};
use fruix_bench::{require, tree, verdict};

const HELP: &str = "\
usage: fruix-bench [--dir DIR] [--scale F | --files N] [--runs R] [--keep]

  --dir DIR    where the result root and every command's output go: a new
               or empty directory, or one an earlier run made (it holds a
               .fruix-bench), which is emptied first and removed at the
               end unless --keep is given (default
               /dev/shm/fruix-bench when /dev/shm exists, else
               $TMPDIR/fruix-bench; the targets are stated for tmpfs)
  --scale F    scale the FreeBSD-base-sized tree's file count (default 1.0:
               about 26,000 files, 0.9 GB)
  --files N    measure a tree of N small files instead (16 bytes to 4 KiB
               each, 1,000 to a directory), e.g. --files 1000000
  --runs R     run every command R times, alternating, and report the
               fastest run (default 3)
  --keep       keep DIR at the end
  --help       print this help

Internal: `fruix-bench --measure-child PROGRAM [ARG...]` runs one command
and prints its wall time in seconds and its peak RSS in KiB (see
`fruix_bench::measure`).";

// The table's rows, in order.
const CP: &str = "cp -a";
const NIX_ADD: &str = "nix-store --add";
const NIX_HASH: &str = "nix-hash --type sha256";
const FRESH: &str = "fruix promote (empty store)";
const AGAIN: &str = "fruix promote (already present)";
const VERIFY: &str = "fruix store verify";
const ROWS: [&str; 6] = [CP, NIX_ADD, NIX_HASH, FRESH, AGAIN, VERIFY];

/// Commands that run together in a round; each removes what it wrote.
#[derive(Clone, Copy)]
enum Group {
    Copy,
    NixAdd,
    NixHash,
    /// Fresh promote, promote again and verify, on the same store.
    Fruix,
}
const GROUPS: [Group; 4] = [Group::Copy, Group::NixAdd, Group::NixHash, Group::Fruix];

/// The tree to measure.
enum Shape {
    Base { scale: Scale },
    SmallFiles { count: u64 },
}

struct Options {
    dir: PathBuf,
    shape: Shape,
    runs: usize,
    keep: bool,
}

/// The fastest time and the highest peak memory of one command over the runs.
#[derive(Clone, Copy)]
struct Best {
    seconds: f64,
    peak_kib: u64,
}

struct Bench {
    fruix: PathBuf,
    root: PathBuf,
    /// Every command's output: cp's copy, the Nix root, the fruix store.
    out: PathBuf,
    best: HashMap<&'static str, Best>,
}

fn main() -> ExitCode {
    if let Some(code) = measure::intercept() {
        return code;
    }
    let options = parse();
    run(options);
    ExitCode::SUCCESS
}

/// Parses the arguments: `--help` prints the help and exits 0, a bad
/// argument says what is wrong and exits 2.
fn parse() -> Options {
    let mut options = Options {
        dir: args::default_dir("fruix-bench"),
        shape: Shape::Base { scale: Scale(1.0) },
        runs: 3,
        keep: false,
    };
    let parsed = args::parse(
        HELP,
        (
            &["--dir", "--scale", "--files", "--runs"],
            &["--keep", "-h"],
        ),
        |flag, value| {
            match flag {
                "--dir" => options.dir = PathBuf::from(value.unwrap_or_default()),
                "--scale" => {
                    let scale = args::number(flag, value)?;
                    options.shape = Shape::Base { scale };
                }
                "--files" => {
                    let count = args::number(flag, value)?;
                    options.shape = Shape::SmallFiles { count };
                }
                "--runs" => {
                    options.runs = args::number(flag, value)?;
                    if options.runs == 0 {
                        return Err("--runs takes a count of at least 1".into());
                    }
                }
                "--keep" => options.keep = true,
                _ => return Err(HELP.to_string()),
            }
            Ok(())
        },
    );
    args::exit_unless_parsed(HELP, parsed);
    options
}

fn run(options: Options) {
    require("nix-store", "nix-bin");
    require("nix-hash", "nix-bin");
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        fruix.is_file(),
        "{} not found: build it first (cargo build --release -p fruix --bin fruix --bin fruix-bench)",
        fruix.display()
    );
    let dir = &args::claim(&options.dir);
    let root = dir.join("result-root");
    fs::create_dir_all(&root).unwrap();
    let (files, bytes) = match options.shape {
        Shape::Base { scale } => tree::generate(&root, scale.0),
        Shape::SmallFiles { count } => tree::generate_small_files(&root, count),
    };
    tree::write_promotion(&root);
    println!(
        "tree: {files} files, {:.2} GB, in {} ({})",
        bytes as f64 / 1e9,
        dir.display(),
        fruix_bench::on_tmpfs(dir).map_or_else(|not| not, |()| "tmpfs".into())
    );
    let mut bench = Bench {
        fruix,
        out: dir.join("out"),
        root,
        best: HashMap::new(),
    };
    bench.warm_up();
    let floor_kib = measure::floor_kib();
    for run in 0..options.runs {
        // Rotate the order, so that no command always runs first or after
        // the same neighbour.
        for group in GROUPS.iter().cycle().skip(run).take(GROUPS.len()) {
            bench.run_group(*group);
        }
    }
    println!(
        "{} runs, alternating: seconds are the fastest run's, peak MiB the highest \
         (never below {:.1} MiB, the measuring process's own; see `fruix_bench::measure`)\n",
        options.runs,
        floor_kib as f64 / 1024.0
    );
    let caveat = match options.shape {
        Shape::Base { scale } => scale.caveat(),
        Shape::SmallFiles { .. } => Some("stated for the base tree"),
    };
    bench.report(caveat);
    if !options.keep {
        fruix_promote::store::remove_tree(dir);
    }
}

impl Bench {
    /// Copies the tree once and removes the copy. The VM backs guest memory
    /// lazily: the first write into memory it never touched is about twice
    /// as slow as one into recycled pages, so without this the first command
    /// to write would lose. Every command's output is about one copy.
    fn warm_up(&self) {
        measure(Command::new("cp").arg("-a").arg(&self.root).arg(&self.out));
        fruix_promote::store::remove_tree(&self.out);
    }

    fn run_group(&mut self, group: Group) {
        match group {
            Group::Copy => {
                let mut cp = Command::new("cp");
                self.record(CP, cp.arg("-a").arg(&self.root).arg(&self.out));
            }
            Group::NixAdd => {
                // A private store under `out`, on the same filesystem, as
                // root and without a daemon; a fresh one for every run.
                let store = format!("local?root={}", self.out.display());
                let mut nix = Command::new("nix-store");
                nix.args(["--option", "build-users-group", "", "--store", &store]);
                self.record(NIX_ADD, nix.arg("--add").arg(&self.root));
            }
            Group::NixHash => {
                let mut nix = Command::new("nix-hash");
                self.record(NIX_HASH, nix.args(["--type", "sha256"]).arg(&self.root));
            }
            Group::Fruix => {
                for label in [FRESH, AGAIN] {
                    let mut promote = Command::new(&self.fruix);
                    // No `./result` in the caller's directory, and no root
                    // in the state directory, for a store removed below.
                    promote.args(["native-build", "promote", "--quiet", "--no-out-link"]);
                    promote.arg("--store");
                    self.record(label, promote.arg(&self.out).arg(&self.root));
                }
                let mut verify = Command::new(&self.fruix);
                verify.args(["store", "verify", "--quiet", "--store"]);
                self.record(VERIFY, verify.arg(&self.out));
            }
        }
        fruix_promote::store::remove_tree(&self.out);
    }

    /// Runs `cmd` once and keeps the best time and the highest peak under `label`.
    fn record(&mut self, label: &'static str, cmd: &Command) {
        let (seconds, peak_kib) = measure(cmd);
        let best = self.best.entry(label).or_insert(Best { seconds, peak_kib });
        best.seconds = best.seconds.min(seconds);
        best.peak_kib = best.peak_kib.max(peak_kib);
    }

    /// Prints the table and each target's verdict. The time ratios' targets
    /// are stated for the base tree at scale 1: for any other (`caveat`
    /// says why) they are printed for information only. The memory target
    /// holds for every tree.
    fn report(&self, caveat: Option<&str>) {
        println!("{:<32} {:>9} {:>9}", "command", "seconds", "peak MiB");
        for label in ROWS {
            let best = self.best[label];
            let mib = best.peak_kib as f64 / 1024.0;
            println!("{label:<32} {:>9.2} {mib:>9.1}", best.seconds);
        }
        println!();
        let ratio = |a: &str, b: &str| self.best[a].seconds / self.best[b].seconds;
        let (cp, nix_add) = (ratio(FRESH, CP), ratio(FRESH, NIX_ADD));
        let (again, verify) = (ratio(AGAIN, NIX_HASH), ratio(VERIFY, NIX_HASH));
        for (name, value, limit) in [
            ("fresh promote / cp -a", cp, 1.15),
            ("fresh promote / nix-store --add", nix_add, 0.6),
            ("re-promote / nix-hash", again, 0.8),
            ("verify / nix-hash", verify, 1.0),
        ] {
            let verdict = verdict(value <= limit, caveat);
            println!("ratio {name:<32} {value:>6.3}  (target <= {limit:.2}: {verdict})");
        }
        let peak_mb = self.best[FRESH].peak_kib as f64 * 1024.0 / 1e6;
        let verdict = verdict(peak_mb < 100.0, None);
        let name = "peak RSS of fresh promote, MB";
        println!("{name:<38} {peak_mb:>6.1}   (target < 100: {verdict})");
    }
}
