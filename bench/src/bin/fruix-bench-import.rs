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
//! Usage: `cargo build --release && target/release/fruix-bench-import [--dir DIR] [--scale F]`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fruix_core::executor::EventSink;
use fruix_core::testing::{fixture_request, run_context};
use fruix_executors::import;
use fruix_executors::ssh::{SshOptions, SshSession, SshTarget};

#[path = "../sshd.rs"]
mod sshd;
#[path = "../tree.rs"]
mod tree;

use sshd::{run_ok, start_sshd};

fn fresh(dir: &Path) -> PathBuf {
    if dir.exists() {
        run_ok(Command::new("rm").arg("-rf").arg(dir));
    }
    fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

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

fn openssh_pipe(dir: &Path, port: u16, root: &Path, dest: &Path) -> Duration {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let script = format!(
        "ssh -q -i {d}/id_ed25519 -o UserKnownHostsFile={d}/known_hosts -o BatchMode=yes -p {port} {user}@127.0.0.1 tar -C {root} -cf - . | tar -xf - -C {dest}",
        d = dir.display(),
        root = root.display(),
        dest = dest.display()
    );
    let started = Instant::now();
    run_ok(Command::new("sh").args(["-c", &script]));
    started.elapsed()
}

fn main() {
    let mut dir = PathBuf::from("/var/tmp/fruix-bench-import");
    let mut scale = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir DIR")),
            "--scale" => scale = args.next().expect("--scale F").parse().expect("a number"),
            other => panic!(
                "unknown argument {other}; usage: fruix-bench-import [--dir DIR] [--scale F]"
            ),
        }
    }
    let work = fresh(&dir);
    let root = work.join("guest-root");
    let (files, bytes) = tree::generate(&root, scale);
    println!("result root: {files} files, {:.2} GB", bytes as f64 / 1e9);
    let keys = fresh(&work.join("ssh"));
    let (mut sshd, port) = start_sshd(&keys);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let target = SshTarget {
        user,
        host: "127.0.0.1".into(),
        port,
    };
    let options = SshOptions::with_key(target, keys.join("id_ed25519"), keys.join("known_hosts"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut best_fruix, mut best_ssh) = (Duration::MAX, Duration::MAX);
    for round in 1..=2 {
        let dest = fresh(&work.join("fruix-dest")).join("root");
        fs::create_dir(&dest).unwrap();
        let t = runtime.block_on(fruix_import(&options, &root, &dest));
        println!(
            "round {round}: fruix import          {:>7.2}s",
            t.as_secs_f64()
        );
        best_fruix = best_fruix.min(t);
        let dest = fresh(&work.join("ssh-dest"));
        let t = openssh_pipe(&keys, port, &root, &dest);
        println!(
            "round {round}: ssh tar | tar -xf     {:>7.2}s",
            t.as_secs_f64()
        );
        best_ssh = best_ssh.min(t);
    }
    let _ = sshd.kill();
    let _ = sshd.wait();
    let ratio = best_fruix.as_secs_f64() / best_ssh.as_secs_f64();
    println!(
        "best: fruix {:.2}s, openssh {:.2}s, ratio {ratio:.2}x (target <= 1.30x) {}",
        best_fruix.as_secs_f64(),
        best_ssh.as_secs_f64(),
        if ratio <= 1.3 { "OK" } else { "OVER TARGET" }
    );
    let _ = fs::remove_dir_all(&work);
}
