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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use fruix_bench::tree;

const HELP: &str = "\
usage: fruix-bench [--dir DIR] [--scale F | --files N] [--runs R] [--keep]

  --dir DIR    where the result root and every command's output go; emptied
               first, removed at the end unless --keep is given (default
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
and prints its wall time in seconds and its peak RSS in KiB (see `measure`).";

/// The hidden mode in which the bench re-executes itself to run one command.
const MEASURE_CHILD: &str = "--measure-child";

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
    Base { scale: f64 },
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(MEASURE_CHILD) {
        return measure_child(&args[1..]);
    }
    let options = parse();
    run(options);
    ExitCode::SUCCESS
}

/// Parses the arguments: `--help` prints the help and exits 0, a bad
/// argument says what is wrong and exits 2.
fn parse() -> Options {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let mut options = Options {
        dir: base.join("fruix-bench"),
        shape: Shape::Base { scale: 1.0 },
        runs: 3,
        keep: false,
    };
    let parsed = fruix_bench::args::parse(
        HELP,
        (
            &["--dir", "--scale", "--files", "--runs"],
            &["--keep", "-h"],
        ),
        |flag, value| {
            match flag {
                "--dir" => options.dir = PathBuf::from(value.unwrap_or_default()),
                "--scale" => {
                    let scale = fruix_bench::args::number(flag, value)?;
                    options.shape = Shape::Base { scale };
                }
                "--files" => {
                    let count = fruix_bench::args::number(flag, value)?;
                    options.shape = Shape::SmallFiles { count };
                }
                "--runs" => {
                    options.runs = fruix_bench::args::number(flag, value)?;
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
    fruix_bench::args::exit_unless_parsed(HELP, parsed);
    options
}

fn run(options: Options) {
    require("nix-store");
    require("nix-hash");
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        fruix.is_file(),
        "{} not found: build it first (cargo build --release -p fruix --bin fruix --bin fruix-bench)",
        fruix.display()
    );
    let dir = &options.dir;
    fruix_promote::store::remove_tree(dir);
    let root = dir.join("result-root");
    fs::create_dir_all(&root).unwrap();
    let (files, bytes) = match options.shape {
        Shape::Base { scale } => tree::generate(&root, scale),
        Shape::SmallFiles { count } => tree::generate_small_files(&root, count),
    };
    tree::write_promotion(&root);
    println!(
        "tree: {files} files, {:.2} GB, in {} ({})",
        bytes as f64 / 1e9,
        dir.display(),
        filesystem(dir)
    );
    let mut bench = Bench {
        fruix,
        out: dir.join("out"),
        root,
        best: HashMap::new(),
    };
    bench.warm_up();
    let (_, floor_kib) = measure(&Command::new("true"));
    for run in 0..options.runs {
        // Rotate the order, so that no command always runs first or after
        // the same neighbour.
        for group in GROUPS.iter().cycle().skip(run).take(GROUPS.len()) {
            bench.run_group(*group);
        }
    }
    println!(
        "{} runs, alternating: seconds are the fastest run's, peak MiB the highest \
         (never below {:.1} MiB, the measuring process's own; see `measure`)\n",
        options.runs,
        floor_kib as f64 / 1024.0
    );
    bench.report(matches!(options.shape, Shape::SmallFiles { .. }));
    if !options.keep {
        fruix_promote::store::remove_tree(dir);
    }
}

/// Fails loudly when a peer command is missing, naming the Debian package.
fn require(tool: &str) {
    if let Err(e) = Command::new(tool).arg("--version").output() {
        panic!("{tool}: {e}: install the Debian package nix-bin (apt-get install nix-bin)");
    }
}

/// Names the filesystem `dir` is on: tmpfs, or its statfs type.
fn filesystem(dir: &Path) -> String {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statfs is a valid value for statfs to fill in.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out-pointer.
    assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut stat) }, 0);
    if stat.f_type == libc::TMPFS_MAGIC {
        "tmpfs".into()
    } else {
        format!(
            "not tmpfs: f_type {:#x}; the targets are stated for tmpfs",
            stat.f_type
        )
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
    /// are stated for the base tree: for `--files` they are printed for
    /// information only. The memory target holds for every tree.
    fn report(&self, small_files: bool) {
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
        let verdict = |met: bool, applies: bool| match (applies, met) {
            (true, true) => "ok",
            (true, false) => "MISSED",
            (false, true) => "would be ok; stated for the base tree",
            (false, false) => "would miss; stated for the base tree",
        };
        for (name, value, limit) in [
            ("fresh promote / cp -a", cp, 1.15),
            ("fresh promote / nix-store --add", nix_add, 0.6),
            ("re-promote / nix-hash", again, 0.8),
            ("verify / nix-hash", verify, 1.0),
        ] {
            let verdict = verdict(value <= limit, !small_files);
            println!("ratio {name:<32} {value:>6.3}  (target <= {limit:.2}: {verdict})");
        }
        let peak_mb = self.best[FRESH].peak_kib as f64 * 1024.0 / 1e6;
        let verdict = verdict(peak_mb < 100.0, true);
        let name = "peak RSS of fresh promote, MB";
        println!("{name:<38} {peak_mb:>6.1}   (target < 100: {verdict})");
    }
}

/// Runs `cmd` and returns its wall time (seconds) and peak RSS (KiB).
///
/// Linux's `ru_maxrss` (from `wait4`) is not the child's own peak: a
/// child inherits its parent's high-water mark through `fork` (the
/// memory descriptor is copied with it) and `exec` folds the old memory's
/// peak into it (with `posix_spawn`, the parent's own memory). Spawned
/// from this process, after it generated the tree, every command would
/// show the bench's peak. Reading `VmHWM` at exit does not work either:
/// a zombie's `/proc/PID/status` (after `waitid(WNOWAIT)`) has no `Vm*`
/// lines, and at a ptrace exit stop (`PTRACE_O_TRACEEXIT`) of the main
/// thread `VmHWM` read 16 kB when another thread had called
/// `exit_group` (tried on Linux 6.18). So the bench re-executes
/// itself (`--measure-child`): a fresh exec that starts small, spawns
/// the command and reports its `wait4` time and `ru_maxrss`. The command's
/// peak is then exact whenever it exceeds that small process's own peak
/// (printed as the floor, measured on `true`).
fn measure(cmd: &Command) -> (f64, u64) {
    // Leave no dirty data of a previous command to flush on this one's time.
    let _ = Command::new("sync").status();
    let output = Command::new(std::env::current_exe().unwrap())
        .arg(MEASURE_CHILD)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        // Never a Nix daemon: nix-store runs on its private store.
        .env_remove("NIX_REMOTE")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{cmd:?} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let (seconds, kib) = text.trim().split_once(' ').unwrap();
    (seconds.parse().unwrap(), kib.parse().unwrap())
}

/// `--measure-child PROGRAM [ARG...]`: runs the command with its output
/// discarded, then prints its wall time in seconds and peak RSS in KiB.
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure_child(argv: &[String]) -> ExitCode {
    let started = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4 failed");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        eprintln!("{argv:?} failed (wait status {status:#x})");
        return ExitCode::FAILURE;
    }
    println!("{seconds} {}", usage.ru_maxrss);
    ExitCode::SUCCESS
}
