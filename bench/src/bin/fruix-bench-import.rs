//! `fruix-bench-import`: measures fruix's import of a guest result root over
//! SSH against OpenSSH's `ssh HOST tar -cf - ROOT | tar -xf -`.
//!
//! Generates a FreeBSD-base-sized result root (about 26,000 files and 0.9 GB,
//! log-uniform sizes, symlinks, exec bits), starts Debian's `sshd` on
//! 127.0.0.1 and a free port with generated keys (all inside the work
//! directory), then in one run: fruix's import (russh exec channel, tar
//! stream, safe extraction into a staging directory, moved into place) and
//! the OpenSSH client pipe into an empty directory, each twice, best time
//! kept. Prints both times and the ratio (target: at most 1.3). A benchmark,
//! never a test.
//!
//! sshd sets `SHLVL=1` for its sessions so that a bash login shell skips
//! `~/.bashrc`: the account's shell setup is the same cost for both sides
//! but is not what is measured.
//!
//! Both sides start after `sync`, and they alternate which goes first.
//!
//! Usage: `cargo build --release && target/release/fruix-bench-import [--dir DIR] [--scale F] [--keep]`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fruix_bench::args::{self, fresh, Scale};
use fruix_bench::sshd::{self, run_ok, start_sshd};
use fruix_bench::{head_to_head, print_ratio, require, tree};
use fruix_core::executor::EventSink;
use fruix_core::testing::{fixture_request, run_context};
use fruix_executors::import;
use fruix_executors::ssh::{SshOptions, SshSession, SshTarget};

const HELP: &str = "\
usage: fruix-bench-import [--dir DIR] [--scale F] [--keep]

  --dir DIR    where the result root, the keys and the copies go: a new or
               empty directory, or one an earlier run made (it holds a
               .fruix-bench), which is emptied first and removed at the
               end unless --keep (default /var/tmp/fruix-bench-import)
  --scale F    the result root's size, relative to a FreeBSD base (default 1:
               about 26,000 files, 0.9 GB)
  --keep       keep DIR at the end
  --help       print this help";

async fn fruix_import(options: &SshOptions, root: &Path, dest: &Path) -> Duration {
    let request = fixture_request(Path::new("/usr/src"), &[]);
    let ctx = run_context(request, dest, EventSink::discard());
    let started = Instant::now();
    let session = SshSession::connect(options, &ctx.events).await.unwrap();
    let staged = import::fetch(
        &session,
        &root.display().to_string(),
        &ctx,
        &import::ImportLimits::default(),
    )
    .await
    .unwrap();
    staged.place(dest).unwrap();
    session.disconnect().await;
    started.elapsed()
}

fn main() {
    let mut scale = Scale(1.0);
    let scratch = args::scratch(
        HELP,
        PathBuf::from("/var/tmp/fruix-bench-import"),
        &mut [("--scale", &mut scale)],
    );
    require("ssh", "openssh-client");
    require("tar", "tar");
    let work = args::claim(&scratch.dir);
    let root = work.join("guest-root");
    let (files, bytes) = tree::generate(&root, scale.0);
    println!("result root: {files} files, {:.2} GB", bytes as f64 / 1e9);
    let sshd = start_sshd(&fresh(&work.join("ssh")));
    let target = SshTarget {
        user: sshd::user(),
        host: "127.0.0.1".into(),
        port: sshd.port,
    };
    let options = SshOptions::with_key(
        target,
        sshd.keys.join("id_ed25519"),
        sshd.keys.join("known_hosts"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let best = head_to_head(
        2,
        22,
        ("fruix import", || {
            let dest = fresh(&work.join("fruix-dest")).join("root");
            fs::create_dir(&dest).unwrap();
            run_ok(&mut Command::new("sync"));
            runtime.block_on(fruix_import(&options, &root, &dest))
        }),
        ("ssh tar | tar -xf", || {
            let dest = fresh(&work.join("ssh-dest"));
            run_ok(&mut Command::new("sync"));
            sshd::tar_pipe(&sshd, &root, &dest)
        }),
    );
    drop(sshd);
    print_ratio(("fruix", best.0), ("openssh", best.1), 1.3, scale.caveat());
    scratch.finish();
}
