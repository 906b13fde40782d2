//! `fruix-bench-copy`: measures `fruix store copy` over loopback SSH against
//! OpenSSH's `ssh HOST tar -cf - OBJECT | tar -xf -` of the same tree, and
//! the time `store copy` takes to find that nothing needs sending.
//!
//! 1. Generates a FreeBSD-base-sized result root (about 26,000 files and
//!    0.9 GB at scale 1), promotes it into `DIR/store` with the `fruix`
//!    binary and signs its objects.
//! 2. Starts Debian's `sshd` on 127.0.0.1 with generated keys. The other
//!    store is `DIR/remote`, seen by the serving fruix at `DIR/store`'s path
//!    through a private mount namespace (`unshare --mount` and a bind
//!    mount; run as root), as two machines both using one store path.
//! 3. In one run, three times each (after `sync`), best kept: `fruix store
//!    copy --to` of the world object into an empty remote store, and `ssh
//!    ... tar -C OBJECT -cf - . | tar -xf -` of the same object into an
//!    empty directory. Prints both and the ratio (target: at most 1.2).
//!    Then the same for `store copy --from` (the other side's `store serve`
//!    exports) into an empty store here.
//! 4. Promotes 200 small runs (200 bundles and 800 artifacts, 1,000
//!    objects), copies them over once, then times `store copy --recursive`
//!    of the 200 bundles, which finds nothing to send (target: under 1 s,
//!    connection and authentication included).
//!
//! The trees are on tmpfs (`/dev/shm`) unless `--dir` says otherwise: a
//! virtual machine's disk makes both sides' times swing by several times
//! from one round to the next. A benchmark, never a test. Usage: `cargo build --release -p fruix -p
//! fruix-bench && target/release/fruix-bench-copy [--dir DIR] [--scale F] [--keep]`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fruix_bench::args::{self, fresh, Scale};
use fruix_bench::sshd::{self, run_ok, start_sshd, Sshd};
use fruix_bench::{fruix, head_to_head, print_ratio, require, tree, verdict};
use fruix_core::testing::write_sample_result_root;
use fruix_promote::sign::{sign_object, SecretKey};
use fruix_promote::{promote_native_build_result, PromoteOptions, Store};

const HELP: &str = "\
usage: fruix-bench-copy [--dir DIR] [--scale F] [--keep]

  --dir DIR    where the stores, the tree, the keys and the copies go: a
               new or empty directory, or one an earlier run made (it
               holds a .fruix-bench), which is emptied first and removed at
               the end unless --keep (default /dev/shm/fruix-bench-copy when
               /dev/shm exists, else $TMPDIR/fruix-bench-copy)
  --scale F    the world's size, relative to a FreeBSD base (default 1:
               about 26,000 files, 0.9 GB over the four artifacts)
  --keep       keep DIR at the end
  --help       print this help

Runs as root: the other store is bind-mounted at this store's path in a
private mount namespace (unshare --mount).";

/// Bundles of the nothing-to-send closure (each with four artifacts).
const SMALL_RUNS: usize = 200;

fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything one `store copy` needs.
struct Copying {
    work: PathBuf,
    /// Killed when this is dropped, a panic included.
    sshd: Sshd,
    user: String,
    /// Why the ratios' targets do not apply, if they do not.
    caveat: Option<&'static str>,
}

impl Copying {
    fn store(&self) -> PathBuf {
        self.work.join("store")
    }

    /// `fruix store copy --to ... ARGS` through the namespace wrapper.
    fn copy(&self, args: &[&str]) -> Duration {
        self.copy_way("--to", args)
    }

    /// Runs `copy` (named `label`) and the OpenSSH `tar` pipe of `object`
    /// three times each, alternating, and prints the best of each and
    /// their ratio (target: at most 1.2).
    fn against_tar(&self, label: &str, object: &str, copy: impl FnMut() -> Duration) {
        let dest = self.work.join("tar-dest");
        let best = head_to_head(
            3,
            label.len() + 1,
            (label, copy),
            ("ssh tar | tar -xf", || {
                fresh(&dest);
                run_ok(&mut Command::new("sync"));
                sshd::tar_pipe(&self.sshd, Path::new(object), &dest)
            }),
        );
        print_ratio(
            (label, best.0),
            ("openssh tar pipe", best.1),
            1.2,
            self.caveat,
        );
    }

    /// `fruix store copy DIRECTION ... ARGS` (`--to` or `--from`).
    fn copy_way(&self, direction: &str, args: &[&str]) -> Duration {
        let started = Instant::now();
        output(
            fruix()
                .args(["store", "copy", "--json", direction])
                .arg(format!("ssh://{}@127.0.0.1:{}", self.user, self.sshd.port))
                .arg("--identity")
                .arg(self.sshd.keys.join("id_ed25519"))
                .arg("--known-hosts")
                .arg(self.sshd.keys.join("known_hosts"))
                .arg("--remote-program")
                .arg(self.work.join("remote-fruix"))
                .arg("--store")
                .arg(self.store())
                .args(args),
        );
        started.elapsed()
    }
}

fn main() {
    let mut scale = Scale(1.0);
    let scratch = args::scratch(
        HELP,
        args::default_dir("fruix-bench-copy"),
        &mut [("--scale", &mut scale)],
    );
    require("ssh", "openssh-client");
    require("tar", "tar");
    require("unshare", "util-linux");
    let work = args::claim(&scratch.dir);
    let root = work.join("root");
    let (files, bytes) = tree::generate(&root, scale.0);
    tree::write_promotion(&root);
    println!("world and co.: {files} files, {:.2} GB", bytes as f64 / 1e9);
    let store_dir = work.join("store");
    let key = SecretKey::generate("bench-1").unwrap();
    fs::write(work.join("trusted-keys"), key.public_text()).unwrap();
    let report: serde_json::Value = serde_json::from_str(&output(&mut fruix_bench::promote(
        fruix(),
        "--json",
        &store_dir,
        &root,
    )))
    .unwrap();
    let world = report["artifacts"]["world"]["store_path"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let store = Store::open(&store_dir).unwrap();
        let name = Path::new(&world).file_name().unwrap().to_string_lossy();
        sign_object(&store, &name, &key).unwrap();
    }
    fs::create_dir(work.join("remote")).unwrap();
    fs::write(
        work.join("remote-fruix"),
        format!(
            "#!/bin/sh\nFRUIX_TRUSTED_KEYS_FILE={keys} exec unshare --mount sh -c 'mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"' sh {remote} {store} {fruix} \"$@\"\n",
            keys = work.join("trusted-keys").display(),
            remote = work.join("remote").display(),
            store = store_dir.display(),
            fruix = fruix().get_program().to_string_lossy(),
        ),
    )
    .unwrap();
    run_ok(
        Command::new("chmod")
            .arg("+x")
            .arg(work.join("remote-fruix")),
    );
    let c = Copying {
        work: work.clone(),
        sshd: start_sshd(&fresh(&work.join("ssh"))),
        user: sshd::user(),
        caveat: scale.caveat(),
    };

    // Each side starts with nothing left to write back from the last.
    c.against_tar("fruix store copy", &world, || {
        fresh(&work.join("remote"));
        run_ok(&mut Command::new("sync"));
        c.copy(&[&world])
    });

    // The other way: the other store, which holds the world object since
    // the last round, exports it (`store serve`) into an empty store here.
    // Both stores are at one path: the one here is set aside meanwhile.
    let kept = work.join("store-kept");
    fs::rename(&store_dir, &kept).unwrap();
    let trusted = key.public_text();
    c.against_tar("fruix store copy --from", &world, || {
        fresh(&store_dir);
        run_ok(&mut Command::new("sync"));
        c.copy_way("--from", &["--trusted-key", trusted.trim(), &world])
    });
    args::remove(&store_dir);
    fs::rename(&kept, &store_dir).unwrap();

    // The 1,000-object closure.
    args::remove(&work.join("tar-dest"));
    let bundles = small_runs(&work, &store_dir, &key);
    let mut args: Vec<&str> = vec!["--recursive"];
    args.extend(bundles.iter().map(String::as_str));
    let first = c.copy(&args);
    println!(
        "{} objects: first copy {:.2}s",
        SMALL_RUNS * 5,
        first.as_secs_f64()
    );
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(c.copy(&args));
    }
    println!(
        "nothing to send for {} objects: {:.3}s (target < 1s: {})",
        SMALL_RUNS * 5,
        best.as_secs_f64(),
        verdict(best < Duration::from_secs(1), None)
    );
    drop(c);
    scratch.finish();
}

/// Promotes [`SMALL_RUNS`] sample runs, each artifact with a file of its
/// own, signed; returns the bundles' paths.
fn small_runs(work: &Path, store_dir: &Path, key: &SecretKey) -> Vec<String> {
    let store = Store::open(store_dir).unwrap();
    let mut bundles = Vec::new();
    for i in 0..SMALL_RUNS {
        let root = work.join(format!("small-{i}"));
        write_sample_result_root(
            &root,
            "local",
            &format!("20260405T00{:02}{:02}Z", i / 60, i % 60),
            false,
        )
        .unwrap();
        for artifact in ["world", "kernel", "headers", "bootloader"] {
            let etc = root.join("artifacts").join(artifact).join("etc");
            fs::create_dir_all(&etc).unwrap();
            fs::write(etc.join("run"), format!("{i}\n")).unwrap();
        }
        let report = promote_native_build_result(&root, &store, &PromoteOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        let names = std::iter::once(&report.result_store)
            .chain(report.artifacts.values().map(|a| &a.store_path));
        for path in names {
            sign_object(&store, &path.file_name().unwrap().to_string_lossy(), key).unwrap();
        }
        bundles.push(report.result_store.to_string_lossy().into_owned());
        args::remove(&root);
    }
    bundles
}
