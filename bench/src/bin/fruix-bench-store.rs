//! `fruix-bench-store`: measures the store's lifecycle: a garbage collection
//! of a store of 1,000 small unrooted objects (each with content of its own,
//! counted in the registry, and all checked gone after), the latency of `store query
//! --referrers`, and what registering a promotion's objects costs next to
//! the fresh promotion of a FreeBSD-base-sized tree. It prints each time and
//! the targets (under 2 s, under 50 ms, under 5 %). A benchmark, never a test.
//!
//! Usage: `cargo build --release -p fruix --bin fruix --bin fruix-bench-store &&
//! target/release/fruix-bench-store [--dir DIR] [--objects N] [--scale F] [--keep]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fruix_bench::args::{self, Scale};
use fruix_bench::{timed, tree, verdict};
use fruix_core::result_root;
use fruix_core::testing::write_sample_result_root;
use fruix_promote::{promote_validated, PromoteOptions, Store};

const HELP: &str = "\
usage: fruix-bench-store [--dir DIR] [--objects N] [--scale F] [--keep]

  --dir DIR      where the stores and trees go: a new or empty directory,
                 or one an earlier run made (it holds a .fruix-bench),
                 which is emptied first and removed at the end unless
                 --keep (default /dev/shm/fruix-bench-store when /dev/shm
                 exists, else $TMPDIR/fruix-bench-store)
  --objects N    objects in the store collected (default 1000, rounded up
                 to a multiple of five: each promotion adds four artifacts
                 and a bundle, every one with content of its own)
  --scale F      scale of the FreeBSD-base-sized tree whose promotion the
                 registration is compared with (default 1.0: 0.9 GB)
  --keep         keep DIR at the end
  --help         print this help";

/// The `fruix` built beside this benchmark.
fn fruix() -> Command {
    let bin = std::env::current_exe().unwrap().with_file_name("fruix");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p fruix -p fruix-bench",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.stdout(Stdio::null());
    cmd
}

/// The objects in the registry of the store at `store`.
fn registered(store: &Path) -> usize {
    Store::open(store)
        .unwrap()
        .db()
        .list(&Default::default())
        .unwrap()
        .len()
}

/// The store's entries that are objects or temporaries (not dot files such
/// as `.links` and `.fruix`).
fn object_dirs(store: &Path) -> usize {
    std::fs::read_dir(store)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .as_encoded_bytes()
                .starts_with(b".")
        })
        .count()
}

/// A store of `objects` small objects rounded up to a multiple of five
/// (promotions of unsigned sample roots, every artifact with content of
/// its own), none rooted; returns the world object of the first promotion.
fn small_store(dir: &Path, objects: usize) -> PathBuf {
    let store = Store::open(&dir.join("store")).unwrap();
    let mut first_world = None;
    for i in 0..objects.div_ceil(5) {
        let root = dir.join(format!("roots/{i}"));
        write_sample_result_root(&root, "local", &format!("2026{i:011}Z"), false).unwrap();
        for artifact in ["world", "kernel", "headers", "bootloader"] {
            let etc = root.join("artifacts").join(artifact).join("etc");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("unique"), format!("{i}")).unwrap();
        }
        let root = result_root::validate(&root).unwrap();
        let report = promote_validated(&root, &store, &PromoteOptions::default()).unwrap();
        first_world.get_or_insert(report.artifacts["world"].store_path.clone());
    }
    first_world.unwrap()
}

fn main() {
    let (mut objects, mut scale) = (1000usize, Scale(1.0));
    let scratch = args::scratch(
        HELP,
        args::default_dir("fruix-bench-store"),
        &mut [("--objects", &mut objects), ("--scale", &mut scale)],
    );
    let dir = args::claim(&scratch.dir);
    let store = dir.join("small/store");
    // No root: gc may take every object.
    let state = args::fresh(&dir.join("small/state"));

    eprintln!("building a store of {objects} small objects...");
    let world = small_store(&dir.join("small"), objects);
    let objects = registered(&store);
    assert_eq!(
        objects,
        object_dirs(&store),
        "the registry and the store's directory disagree"
    );
    // Latency of one query, as a user sees it (process start included):
    // the median of 21 runs.
    let mut times: Vec<Duration> = (0..21)
        .map(|_| {
            timed(
                fruix()
                    .args(["store", "query", "--referrers"])
                    .arg(&world)
                    .arg("--store")
                    .arg(&store)
                    .arg("--state-dir")
                    .arg(&state),
            )
        })
        .collect();
    times.sort();
    let query = times[times.len() / 2];
    let gc = timed(
        fruix()
            .args(["store", "gc", "--quiet", "--store"])
            .arg(&store)
            .arg("--state-dir")
            .arg(&state),
    );
    assert_eq!(
        (registered(&store), object_dirs(&store)),
        (0, 0),
        "store gc left unrooted objects in {}",
        store.display()
    );

    eprintln!(
        "generating a FreeBSD-base-sized tree (scale {})...",
        scale.0
    );
    let big = dir.join("base");
    let (files, bytes) = tree::generate(&big, scale.0);
    tree::write_promotion(&big);
    let promote = timed(&mut fruix_bench::promote(
        fruix(),
        "--quiet",
        &dir.join("base-store"),
        &big,
    ));
    // What registration adds to that promotion: creating the registry of an
    // empty store, and registering the same five objects (four artifacts and
    // the bundle) once more into a fresh one.
    let registry_dir = dir.join("registry");
    std::fs::create_dir_all(&registry_dir).unwrap();
    let records = Store::open(&dir.join("base-store"))
        .unwrap()
        .db()
        .list(&Default::default())
        .unwrap();
    let started = Instant::now();
    let (mut db, _) = fruix_promote::db::Database::open(&registry_dir, || Ok(Vec::new())).unwrap();
    let registrations: Vec<fruix_promote::db::Registration> = records
        .into_iter()
        .map(|record| fruix_promote::db::Registration {
            record,
            references: Vec::new(),
        })
        .collect();
    db.register(&registrations).unwrap();
    let register = started.elapsed();

    println!(
        "store lifecycle ({objects} objects; base tree {files} files, {:.2} GB):",
        bytes as f64 / 1e9
    );
    let gc_caveat = (objects != 1000).then_some("the target is stated for 1000 objects");
    println!(
        "  store gc of {objects} unrooted small objects   {:>9.3} s   (target under 2 s: {})",
        gc.as_secs_f64(),
        verdict(gc.as_secs_f64() < 2.0, gc_caveat)
    );
    println!(
        "  store query --referrers (median of 21)   {:>9.1} ms  (target under 50 ms: {})",
        query.as_secs_f64() * 1000.0,
        verdict(query.as_secs_f64() < 0.05, None)
    );
    let share = 100.0 * register.as_secs_f64() / promote.as_secs_f64();
    println!(
        "  registering a promotion's 5 objects      {:>9.1} ms  = {share:.2} % of the fresh promote ({:.2} s; target under 5 %: {})",
        register.as_secs_f64() * 1000.0,
        promote.as_secs_f64(),
        verdict(share < 5.0, scale.caveat())
    );
    scratch.finish();
}
