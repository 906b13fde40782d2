//! `fruix-bench-vm`: what owning a guest's whole life costs. It compares a
//! `fruix build --executor vm` of the miniature FreeBSD tree with the same
//! build on a guest that is already running, and times the lifecycle's own
//! steps.
//!
//! 1. Uses the test guest of `scripts/vm-image.sh` (`--image`, default
//!    `target/vm-image`; QEMU under TCG unless `--accel kvm`; the image's
//!    unpacked emulator when it has one, else the installed one), with this
//!    `fruix` (stripped) appended to its initramfs as the guest-self-hosted
//!    helper, and a qcow2 overlay on its blank disk for each boot.
//! 2. `--runs` times (best kept): `fruix build --executor vm --config
//!    inner=INNER`: prepare, boot, SSH, build, import, promote, ACPI power
//!    off, destroy.
//! 3. Boots one guest with the same driver code (`fruix_executors::vm`),
//!    timing prepare + boot + the SSH banner; `--runs` times `fruix build
//!    --executor INNER` on it as a machine that is already up; then times
//!    the ACPI power-off and destroying the overlay.
//!
//! Prints each time, the VM build's overhead over the running guest's
//! build, and how much of the VM build that is. A benchmark, never a test.
//! Usage: `cargo build --release -p fruix -p fruix-bench && bash
//! scripts/vm-image.sh target/vm-image && target/release/fruix-bench-vm
//! [--image DIR] [--inner guest-self-hosted|host-initiated] [--runs R]
//! [--accel tcg|kvm|auto] [--dir DIR] [--keep]`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fruix_bench::{args, fruix, timed};
use fruix_core::machines::Machines;
use fruix_executors::vm::driver::{Instance, VmDriver};
use fruix_executors::vm::qemu::{Qemu, QEMU};
use fruix_executors::vm::{teardown, wait_for_ssh, Started};
use tokio_util::sync::CancellationToken;

const HELP: &str = "usage: fruix-bench-vm [--image DIR] [--inner guest-self-hosted|host-initiated] [--runs R] [--accel tcg|kvm|auto] [--dir DIR] [--keep]

  --dir DIR    the scratch directory: a new or empty directory, or one an
               earlier run made (it holds a .fruix-bench), which is emptied
               first and removed at the end unless --keep";

/// The guest's shutdown timeout: long, so that only an ACPI power-off the
/// guest acts on ends it in the time measured.
const SHUTDOWN_TIMEOUT: u32 = 120;

struct Options {
    image: PathBuf,
    inner: String,
    runs: usize,
    accel: String,
    dir: PathBuf,
    keep: bool,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        image: workspace().join("target/vm-image"),
        inner: "guest-self-hosted".into(),
        runs: 3,
        accel: "tcg".into(),
        dir: args::default_dir("fruix-bench-vm"),
        keep: false,
    };
    args::parse(
        HELP,
        (
            &["--image", "--inner", "--runs", "--accel", "--dir"],
            &["--keep"],
        ),
        |flag, value| {
            let value = value.unwrap_or_default();
            match flag {
                "--image" => o.image = PathBuf::from(value),
                "--inner" if ["guest-self-hosted", "host-initiated"].contains(&value) => {
                    o.inner = value.into()
                }
                "--inner" => return Err(format!("--inner {value:?}: not an inner mode\n\n{HELP}")),
                "--runs" => o.runs = args::number::<usize>(flag, Some(value))?.max(1),
                "--accel" => o.accel = value.into(),
                "--dir" => o.dir = PathBuf::from(value),
                _ => o.keep = true,
            }
            Ok(())
        },
    )?;
    if !o.image.join(".complete").is_file() {
        return Err(format!(
            "no guest image in {}: run `bash scripts/vm-image.sh {}` first",
            o.image.display(),
            o.image.display()
        ));
    }
    Ok(o)
}

/// The image's initramfs with this fruix appended (`DIR/initrd.img`).
fn initrd_with_fruix(o: &Options) -> PathBuf {
    let root = o.dir.join("initrd-root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    let fruix = std::env::current_exe().unwrap().with_file_name("fruix");
    timed(
        Command::new("strip")
            .arg("-o")
            .arg(root.join("usr/bin/fruix"))
            .arg(fruix),
    );
    let archive = Command::new("sh")
        .current_dir(&root)
        .args(["-c", "find . -mindepth 1 | sort | cpio -o -H newc --quiet"])
        .output()
        .expect("cpio runs");
    assert!(archive.status.success(), "cpio failed");
    let mut bytes = fs::read(o.image.join("initrd.img")).unwrap();
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend_from_slice(&archive.stdout);
    let initrd = o.dir.join("initrd.img");
    fs::write(&initrd, bytes).unwrap();
    initrd
}

/// The pinned host key of the image's guest.
fn host_key(o: &Options) -> String {
    let text = fs::read_to_string(o.image.join("host_ed25519.pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `DIR/machines.scm`: the VM machine `vm`, and the guest it boots when it
/// is already up at `port` as machine `running`.
fn machines(o: &Options, initrd: &Path, port: Option<u16>) -> PathBuf {
    let key = o.image.join("id_ed25519");
    let mut text = format!(
        "(fruix-machines\n  (machine (name \"vm\") (user \"root\") (private-key {:?})\n    (vm (driver qemu) (kernel {:?}) (initrd {:?}) (image {:?}) (append \"console=ttyS0 quiet\")\n        (memory 1024) (cpus 2) (accel {}) (boot-timeout 120) (shutdown-timeout {SHUTDOWN_TIMEOUT})\n        (host-key {:?})))\n",
        key.display().to_string(),
        o.image.join("vmlinuz").display().to_string(),
        initrd.display().to_string(),
        o.image.join("disk.qcow2").display().to_string(),
        o.accel,
        host_key(o),
    );
    if let Some(port) = port {
        text.push_str(&format!(
            "  (machine (name \"running\") (host \"127.0.0.1\") (port {port}) (user \"root\") (private-key {:?})\n    (host-key {:?}))\n",
            key.display().to_string(),
            host_key(o),
        ));
    }
    text.push_str(")\n");
    let file = o.dir.join("machines.scm");
    fs::write(&file, text).unwrap();
    file
}

/// `fruix build` of the miniature tree with `executor` on `machine`, into
/// result root `name`.
fn build(o: &Options, file: &Path, executor: &str, machine: &str, name: &str) -> Command {
    let mut cmd = fruix();
    // No `./result` in the caller's directory.
    cmd.args(["build", "--no-out-link", "--executor", executor, "--source"])
        .arg(workspace().join("tests/fixtures/freebsd-src-mini"))
        .arg("--store")
        .arg(o.dir.join("store"))
        .arg("--state-dir")
        .arg(o.dir.join("state"))
        .arg("--result-root")
        .arg(o.dir.join(name))
        .args(["--source-date-epoch", "1775420084", "--make-flag=-DNO_ROOT"])
        .arg("--machines")
        .arg(file)
        .args(["--machine", machine]);
    if executor == "vm" {
        cmd.arg(format!("--config=inner={}", o.inner));
        // fruix runs the QEMU found on PATH.
        if let Some(bin) = unpacked_emulator(o).as_deref().and_then(Path::parent) {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
    }
    cmd
}

/// The image's emulator (`IMAGE/bin/qemu-system-x86_64`), when
/// `scripts/vm-image.sh` had to unpack one.
fn unpacked_emulator(o: &Options) -> Option<PathBuf> {
    Some(o.image.join("bin").join(QEMU)).filter(|path| path.is_file())
}

/// The emulator the driver here runs: the image's unpacked one, else the
/// installed [`QEMU`] on PATH.
fn emulator(o: &Options) -> PathBuf {
    unpacked_emulator(o).unwrap_or_else(|| QEMU.into())
}

fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap()
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(message) => {
            args::exit_unless_parsed(HELP, Err(message));
            unreachable!("exit_unless_parsed exits on an error")
        }
    };
    args::claim(&o.dir);
    let initrd = initrd_with_fruix(&o);
    let file = machines(&o, &initrd, None);

    eprintln!("VM builds ({} run(s), inner {})...", o.runs, o.inner);
    let vm_builds: Vec<Duration> = (0..o.runs)
        .map(|i| timed(&mut build(&o, &file, "vm", "vm", &format!("vm-{i}"))))
        .collect();

    eprintln!("one guest, booted once, builds {} time(s)...", o.runs);
    let spec = Machines::read(&file)
        .unwrap()
        .get("vm")
        .unwrap()
        .vm
        .clone()
        .unwrap();
    let driver = Qemu::new(spec.clone()).with_emulator(emulator(&o));
    let work_dir = o.dir.join("guest");
    fs::create_dir_all(&work_dir).unwrap();
    let vm = Instance {
        name: "fruix-bench-vm".into(),
        console: work_dir.join("console.log"),
        work_dir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut started = Started::default();
    let boot = Instant::now();
    let up = runtime.block_on(async {
        let cancel = CancellationToken::new();
        started.prepared = true;
        driver.prepare(&vm, &cancel).await?;
        started.booted = true;
        let endpoint = driver.boot(&vm, &cancel).await?;
        wait_for_ssh(&driver, &spec, &vm, endpoint, &cancel).await
    });
    let boot_to_ssh = boot.elapsed();
    let running_builds = up.as_ref().ok().map(|endpoint| {
        let file = machines(&o, &initrd, Some(endpoint.port));
        (0..o.runs)
            .map(|i| {
                timed(&mut build(
                    &o,
                    &file,
                    &o.inner,
                    "running",
                    &format!("running-{i}"),
                ))
            })
            .collect::<Vec<_>>()
    });
    let stop = Instant::now();
    let torn = runtime.block_on(teardown(
        &driver,
        Duration::from_secs(SHUTDOWN_TIMEOUT.into()),
        &vm,
        started,
    ));
    let shutdown = stop.elapsed();
    if let Err(e) = up.map(|_| ()).and(torn) {
        eprintln!("the guest failed: {e}");
        std::process::exit(1);
    }
    let running = best(&running_builds.expect("the guest was up"));
    let whole = best(&vm_builds);
    let overhead = whole.saturating_sub(running);

    println!(
        "vm lifecycle (inner {}, accel {}, best of {}):",
        o.inner, o.accel, o.runs
    );
    println!(
        "  boot to SSH banner (prepare, boot, wait)   {}",
        seconds(boot_to_ssh)
    );
    println!(
        "  shutdown (ACPI) and teardown (overlay)     {}",
        seconds(shutdown)
    );
    println!(
        "  build on the running guest                 {}",
        seconds(running)
    );
    println!(
        "  build with --executor vm (whole life)      {}",
        seconds(whole)
    );
    println!(
        "  lifecycle overhead                         {} ({:.0}% of the VM build; {:.2}x the running guest's build)",
        seconds(overhead),
        100.0 * overhead.as_secs_f64() / whole.as_secs_f64(),
        whole.as_secs_f64() / running.as_secs_f64(),
    );
    if !o.keep {
        args::remove(&o.dir);
    }
}
