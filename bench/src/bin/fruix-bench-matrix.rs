//! `fruix-bench-matrix`: measures the matrix runner's scheduling overhead.
//!
//! Runs `fruix matrix run` on a matrix of 16 trivially fast cells over two
//! machines (2 parallel-builds slots each, `max-parallel 4`). The cells use
//! `bench-null`, an external executor declared `(remote #t)` with the
//! `machines` and `machine` configuration keys, so the scheduler places its
//! cells on the pool exactly as it places `host-initiated` ones; its build
//! script only writes the four probe files (it never connects to the
//! machines). Each cell is still run through `run_executor`, validated,
//! signed and promoted into a fresh store.
//!
//! Overhead per cell = (wall time of the whole `fruix matrix run`, minus the
//! cells' own time spread over the 4 slots) / 16, where a cell's own time is
//! its attempt's recorded duration (the executor's run). The wall time
//! includes process start, reading the files, promotion and the reports.
//! Target: under 50 ms per cell.
//!
//! Then it reads a large pool: `fruix matrix plan` of a matrix pinned to
//! the last of `--pool` machines (default 1,500, every field given), against
//! Guile's `read` of the same machines file, both process start included,
//! best of 5 alternating rounds. Target: at most 1.0x Guile. (Reading was
//! once quadratic: 48 s for this file in a debug build.)
//!
//! It is a benchmark, never a test.
//!
//! Usage: `cargo build --release && target/release/fruix-bench-matrix [--dir DIR] [--cells N] [--pool N] [--keep]`
//! (`--dir`: the scratch directory, by default `/dev/shm/fruix-bench-matrix`
//! where there is a `/dev/shm`; new, empty or made by an earlier run;
//! emptied first, removed at the end unless `--keep`.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fruix_bench::{args, require, timed, verdict};

const HELP: &str = "\
usage: fruix-bench-matrix [--dir DIR] [--cells N] [--pool N] [--keep]

  --dir DIR    where the matrix, its store, state and report go: a new or
               empty directory, or one an earlier run made (it holds a
               .fruix-bench), which is emptied first and removed at the
               end unless --keep (default /dev/shm/fruix-bench-matrix when
               /dev/shm exists, else $TMPDIR/fruix-bench-matrix)
  --cells N    cells of the matrix run (default 16)
  --pool N     machines in the pool `fruix matrix plan` reads against
               Guile's `read` (default 1500)
  --keep       keep DIR at the end
  --help       print this help";

/// Slots: 2 machines x 2 parallel builds, and max-parallel.
const SLOTS: f64 = 4.0;

const BUILD_SCRIPT: &str = concat!(
    "#!/bin/sh\n# bench-null: the four base artifacts, one probe file each.\nset -eu\n",
    include_str!("../../../tests/fixtures/external/null-artifacts.sh")
);

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    let (mut cells, mut pool) = (16usize, 1500usize);
    let scratch = args::scratch(
        HELP,
        args::default_dir("fruix-bench-matrix"),
        &mut [("--cells", &mut cells), ("--pool", &mut pool)],
    );
    require("guile", "guile-3.0");
    let dir = args::claim(&scratch.dir);
    let d = dir.as_path();
    fs::create_dir_all(d.join("src")).unwrap();
    write(&d.join("src/Makefile"), "buildworld:\n");
    write(&d.join("build.sh"), BUILD_SCRIPT);
    fs::set_permissions(d.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &d.join("executors.scm"),
        &fruix_core::testing::remote_executor_file(
            "bench-null",
            "writes four probe files (matrix benchmark)",
            "./build.sh",
            60,
        ),
    );
    write(
        &d.join("machines.scm"),
        r#"(fruix-machines
  (machine (name "bench-1") (host "127.0.0.1") (port 9) (user "root") (parallel-builds 2) (speed 1.0))
  (machine (name "bench-2") (host "127.0.0.1") (port 9) (user "root") (parallel-builds 2) (speed 2.0)))
"#,
    );
    let flags: Vec<String> = (1..=cells).map(|i| format!("\"CELL={i}\"")).collect();
    write(
        &d.join("matrix.scm"),
        &format!(
            r#"(fruix-matrix
  (format-version 1)
  (source "src")
  (freebsd-version "15.0-STABLE")
  (machines-file "machines.scm")
  (axes (executor "bench-null") (make-flag {}))
  (jobs 1)
  (source-date-epoch 1775420084)
  (max-parallel 4))
"#,
            flags.join(" ")
        ),
    );
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    let started = Instant::now();
    // Its table is not wanted here; its errors go to the terminal.
    let status = Command::new(&fruix)
        .arg("--executors-file")
        .arg(d.join("executors.scm"))
        .args(["matrix", "run", "--quiet"])
        .arg(d.join("matrix.scm"))
        .arg("--store")
        .arg(d.join("store"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--report-dir")
        .arg(d.join("report"))
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", fruix.display()));
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "fruix matrix run failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("report/report.json")).unwrap()).unwrap();
    let mut own = 0.0;
    let mut per_machine = std::collections::BTreeMap::<String, usize>::new();
    for c in report["cells"].as_array().unwrap() {
        for a in c["attempts"].as_array().unwrap() {
            own += a["finished_at"].as_f64().unwrap() - a["started_at"].as_f64().unwrap();
            *per_machine
                .entry(a["machine"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let n = cells as f64;
    let overhead = (wall - own / SLOTS) / n;
    println!("cells                      {cells}");
    println!("cells per machine          {per_machine:?}");
    println!("wall time                  {:.3} s", wall);
    println!(
        "cells' own time (sum)      {:.3} s ({:.1} ms per cell)",
        own,
        own / n * 1000.0
    );
    println!(
        "overhead per cell          {:.1} ms (target < 50 ms: {})",
        overhead * 1000.0,
        verdict(overhead < 0.05, None)
    );
    read_a_pool(d, pool);
    if scratch.keep {
        println!("kept {}", dir.display());
    }
    scratch.finish();
}

/// Times `fruix matrix plan` over a pool of `machines` machines against
/// Guile reading the machines file.
fn read_a_pool(d: &Path, machines: usize) {
    // The plan checks that the key of the machine its cell uses opens.
    let key = d.join("pool-key");
    write(&key, "a key\n");
    let machine = |i: usize| {
        format!(
            "  (machine (name \"m-{i}\") (host \"10.{}.{}.{}\") (port 22) (user \"root\")\n    (private-key {:?}) (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA{i:0>42}\")\n    (systems \"amd64\") (parallel-builds 2) (speed 1.0) (state-dir \"/var/lib/fruix\")\n    (helper \"/usr/local/bin/fruix\") (store \"/frx/store\"))\n",
            i / 65536,
            i / 256 % 256,
            i % 256,
            key.display().to_string()
        )
    };
    let text: String = (1..=machines).map(machine).collect();
    write(&d.join("pool.scm"), &format!("(fruix-machines\n{text})\n"));
    write(
        &d.join("pool-matrix.scm"),
        &format!(
            "(fruix-matrix\n  (format-version 1)\n  (source \"src\")\n  (freebsd-version \"15.0-STABLE\")\n  (machines-file \"pool.scm\")\n  (axes (executor \"host-initiated\") (machine \"m-{machines}\")))\n"
        ),
    );
    let plan = || {
        timed(
            fruix_bench::fruix()
                .args(["matrix", "plan", "--json"])
                .arg(d.join("pool-matrix.scm")),
        )
    };
    let guile = || {
        timed(Command::new("guile").arg("-c").arg(format!(
            "(call-with-input-file {:?} read)",
            d.join("pool.scm").display().to_string()
        )))
    };
    let kib = fs::metadata(d.join("pool.scm")).unwrap().len() / 1024;
    println!("pool of {machines} machines ({kib} KiB):");
    let (best_fruix, best_guile): (Duration, Duration) =
        fruix_bench::head_to_head(5, 22, ("fruix matrix plan", plan), ("guile read", guile));
    fruix_bench::print_ratio(
        ("fruix matrix plan", best_fruix),
        ("guile read", best_guile),
        1.0,
        (machines != 1500).then_some("the target is stated for a pool of 1500"),
    );
}
