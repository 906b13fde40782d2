//! The QEMU driver: a qcow2 overlay on the base image is the throw-away disk
//! (an initramfs guest needs none); `qemu-system-x86_64` runs as fruix's
//! child in its own process group, with user networking restricted to a
//! forwarded SSH port on 127.0.0.1, and a QMP socket through which
//! `system_powerdown` presses the ACPI power button. After the grace
//! period, and whenever fruix lets go of it, its whole process group is
//! killed: a `qemu-system-x86_64` that is a wrapper script running the
//! real emulator without `exec` is stopped with it. On Linux and FreeBSD
//! the process fruix started also dies with fruix (`PR_SET_PDEATHSIG`,
//! `PROC_PDEATHSIG_CTL`), so even a fruix killed with SIGKILL leaves no
//! guest running (an emulator run by such a wrapper is not covered: the
//! kernel signals the wrapper alone).
//!
//! The serial console goes to a socket QEMU inherits (`-chardev
//! socket,fd=N`, one end of a socket pair), and a thread of fruix's copies
//! it into the console file, which it keeps within a cap
//! ([`console::LIVE_CONSOLE_MAX_BYTES`](super::console::LIVE_CONSOLE_MAX_BYTES),
//! its last part kept): a guest flooding its console cannot fill this
//! machine's disk. The thread ends when QEMU does; stopping the guest
//! waits for it (at most 10 s, then ends it), so the console is whole
//! when the cleanup keeps it.
//!
//! The forwarded port is one the kernel found free just before QEMU
//! starts: another process can take it in between. QEMU is up once it
//! greets on its QMP socket, which it does only after setting up its
//! network (the forwarded port bound); a QEMU that exits before that while
//! its port is in use (binding it fails with `AddrInUse`) lost the port,
//! and is started again on a new one, [`QEMU_PORT_ATTEMPTS`] times in all.
//! Any other early exit is left to the wait for SSH, which quotes QEMU's
//! log. The boot and the wait for SSH share one deadline, the boot timeout
//! from the start of the boot ([`boot_deadline`](super::boot_deadline)): a
//! QEMU that neither greets nor exits by then is left to that wait, which
//! then fails at once. A cancellation while QEMU starts ends the boot at
//! once; the QEMU started is kept for the teardown, which kills it. One
//! while `qemu-img` makes the overlay kills it and ends the preparing at
//! once.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{Accel, VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::console::{BoundedConsole, ConsoleCopy, ConsoleSaving, LIVE_CONSOLE_MAX_BYTES};
use super::driver::{memory, run_local_until, Endpoint, Instance, VmDriver};
use super::group::GroupLeader;
use super::qmp;

/// The QEMU system emulator run.
pub const QEMU: &str = "qemu-system-x86_64";

/// How many times QEMU is started on a new port when another process took
/// the one it was given before it could listen there.
pub const QEMU_PORT_ATTEMPTS: usize = 5;

/// How long, at most, the console's copying gets to end once its QEMU is
/// gone (it ends at once: the socket closes with QEMU's processes); past
/// that it is ended, keeping what came.
const CONSOLE_DRAIN: Duration = Duration::from_secs(10);

/// Picks the port of 127.0.0.1 that QEMU forwards to the guest's SSH, once
/// per attempt to start it.
pub type PortPicker = Box<dyn Fn() -> Result<u16> + Send + Sync>;

/// The QEMU driver (see the module docs). It keeps the guest's
/// `qemu-system-x86_64` process and its console's copying, so one value
/// drives one guest (each run of the `vm` executor makes its own); the
/// overlay, QMP socket and `qemu.log` are in the instance's work
/// directory.
pub struct Qemu {
    /// The VM machine's `(vm ...)` record: memory, CPUs, and the image,
    /// kernel, initrd, kernel arguments and accelerator of its driver,
    /// which must be [`VmDriverSpec::Qemu`] (any other panics at boot).
    pub spec: VmSpec,
    emulator: PathBuf,
    console_max_bytes: u64,
    ports: PortPicker,
    child: Mutex<Option<GroupLeader>>,
    console: Mutex<Option<Console>>,
    /// How the console's file is being written (see [`ConsoleSaving`]).
    saving: Mutex<Option<ConsoleSaving>>,
}

/// The console file, between QEMU processes or while one writes to it.
#[derive(Debug)]
enum Console {
    Idle(BoundedConsole),
    Copying(ConsoleCopy),
}

impl std::fmt::Debug for Qemu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qemu")
            .field("spec", &self.spec)
            .field("emulator", &self.emulator)
            .field("console_max_bytes", &self.console_max_bytes)
            .field("child", &self.child)
            .field("console", &self.console)
            .finish_non_exhaustive()
    }
}

impl Qemu {
    /// The driver of `spec`, no guest started yet: it runs [`QEMU`] (found
    /// on PATH) on ports the kernel finds free, and keeps the console
    /// within [`LIVE_CONSOLE_MAX_BYTES`].
    pub fn new(spec: VmSpec) -> Self {
        Qemu {
            spec,
            emulator: QEMU.into(),
            console_max_bytes: LIVE_CONSOLE_MAX_BYTES,
            ports: Box::new(free_port),
            child: Mutex::new(None),
            console: Mutex::new(None),
            saving: Mutex::new(None),
        }
    }

    /// This driver running `program` as [`QEMU`] (an emulator unpacked
    /// off PATH, as the tests' guest image's may be).
    pub fn with_emulator(mut self, program: impl Into<PathBuf>) -> Self {
        self.emulator = program.into();
        self
    }

    /// This driver keeping the live console within `max_bytes` (at least
    /// [`MIN_CONSOLE_MAX_BYTES`](super::console::MIN_CONSOLE_MAX_BYTES)).
    pub fn with_console_limit(mut self, max_bytes: u64) -> Self {
        self.console_max_bytes = max_bytes;
        self
    }

    /// This driver forwarding SSH from the ports `pick` gives, one for each
    /// attempt to start QEMU, instead of ports the kernel finds free (a
    /// test hands it a port it holds).
    pub fn with_ports(mut self, pick: impl Fn() -> Result<u16> + Send + Sync + 'static) -> Self {
        self.ports = Box::new(pick);
        self
    }

    /// The driver of `spec` with `child` as its guest's emulator, for
    /// tests of the teardown.
    #[cfg(test)]
    pub(super) fn with_child(spec: VmSpec, child: tokio::process::Child) -> Self {
        let qemu = Qemu::new(spec);
        *qemu.child.lock().expect("child") = Some(GroupLeader::new(child));
        qemu
    }

    fn overlay(vm: &Instance) -> PathBuf {
        vm.work_dir.join("disk.qcow2")
    }

    fn qmp(vm: &Instance) -> PathBuf {
        vm.work_dir.join(qmp::SOCKET)
    }

    /// QEMU's own stdout and stderr.
    fn log(vm: &Instance) -> PathBuf {
        vm.work_dir.join("qemu.log")
    }

    /// Starts QEMU for `vm` with SSH forwarded from `port` (`kvm`: whether
    /// to use KVM), its console copied into the console file.
    async fn start(&self, vm: &Instance, port: u16, kvm: bool) -> Result<GroupLeader> {
        let console = match self.finish_console().await {
            Some(console) => console,
            None => BoundedConsole::create(&vm.console, self.console_max_bytes)?,
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| {
            Error::system(format!(
                "cannot make a socket for the console of guest {}: {e}",
                vm.name
            ))
        })?;
        *self.saving.lock().expect("saving") = Some(console.saving());
        let copy = ConsoleCopy::start(ours, console)?;
        *self.console.lock().expect("console") = Some(Console::Copying(copy));
        let console_fd = theirs.as_raw_fd();
        let args = command_line(&self.spec, vm, port, console_fd, kvm);
        let log = std::fs::File::create(Self::log(vm))
            .map_err(|e| Error::io("create", Self::log(vm), e))?;
        let mut command = tokio::process::Command::new(&self.emulator);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes system calls alone, fcntl(2) and prctl(2) or procctl(2),
        // which are async-signal-safe; `console_fd` is open until the
        // spawn returns (`theirs` lives until then).
        unsafe {
            command.pre_exec(move || {
                // QEMU's end of the console socket stays open across exec
                // (in this child only: fruix's copy stays close-on-exec, so
                // no other child holds it and it closes with QEMU).
                let fd = std::os::fd::BorrowedFd::borrow_raw(console_fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                // The guest dies with fruix even when fruix cannot tear it
                // down (killed with SIGKILL): the kernel sends it SIGKILL
                // then (Linux's PR_SET_PDEATHSIG, FreeBSD's
                // PROC_PDEATHSIG_CTL).
                #[cfg(any(target_os = "linux", target_os = "freebsd"))]
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let child = command
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("open", Self::log(vm), e))?,
            )
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::system(format!(
                    "cannot run {}: {e}; install qemu-system-x86",
                    self.emulator.display()
                ))
            })?;
        drop(theirs);
        Ok(GroupLeader::new(child))
    }

    /// Waits for the copying of the last QEMU's console to end (it ends
    /// with that QEMU): the console, when there is one to write on.
    async fn finish_console(&self) -> Option<BoundedConsole> {
        let state = self.console.lock().expect("console").take();
        match state? {
            Console::Idle(console) => Some(console),
            Console::Copying(copy) => copy.finish(CONSOLE_DRAIN).await,
        }
    }
}

/// Whether KVM really works here: `/dev/kvm` opens, and it is not backed by
/// `kvm_pvm`, which cannot run stock guest kernels.
pub fn kvm_works() -> bool {
    Path::new("/sys/module/kvm_pvm")
        .exists()
        .then_some(())
        .is_none()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// `value` as one value inside a QEMU option string (`key=value,...`): each
/// comma doubled, QEMU's escape, so that a comma in a path can neither
/// break the option nor add one (`file=/a,b` would read `b` as an option).
pub fn option_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// The QEMU command line of `vm` for `spec`, with SSH forwarded from
/// 127.0.0.1:`port`, the serial console written to the connected socket
/// QEMU inherits as `console_fd`, and `kvm` saying whether to use KVM.
/// Paths inside option strings have their commas doubled
/// ([`option_value`]).
pub fn command_line(
    spec: &VmSpec,
    vm: &Instance,
    port: u16,
    console_fd: RawFd,
    kvm: bool,
) -> Vec<String> {
    let VmDriverSpec::Qemu {
        image,
        kernel,
        initrd,
        append,
        ..
    } = &spec.driver
    else {
        unreachable!("a qemu driver has a qemu spec");
    };
    let mut args: Vec<String> = vec![
        QEMU.into(),
        "-name".into(),
        option_value(&vm.name),
        "-machine".into(),
        format!("q35,accel={}", if kvm { "kvm" } else { "tcg" }),
        "-m".into(),
        memory(spec),
        "-smp".into(),
        spec.cpus.to_string(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-chardev".into(),
        format!("socket,id=console,fd={console_fd}"),
        "-serial".into(),
        "chardev:console".into(),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            option_value(&Qemu::qmp(vm).to_string_lossy())
        ),
        "-netdev".into(),
        format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-no-reboot".into(),
    ];
    if image.is_some() {
        args.push("-drive".into());
        args.push(format!(
            "file={},format=qcow2,if=virtio",
            option_value(&Qemu::overlay(vm).to_string_lossy())
        ));
    }
    if let Some(kernel) = kernel {
        args.push("-kernel".into());
        args.push(kernel.clone());
    }
    if let Some(initrd) = initrd {
        args.push("-initrd".into());
        args.push(initrd.clone());
    }
    if let Some(append) = append {
        args.push("-append".into());
        args.push(append.clone());
    }
    args
}

/// `qemu-img` could not make an overlay on `image`, saying `stderr`: a
/// system failure quoting it escaped, on one line.
pub fn overlay_failed(image: &str, stderr: &[u8]) -> Error {
    Error::system(format!(
        "qemu-img could not make an overlay on {}: {}",
        fruix_core::escape::text(image),
        fruix_core::escape::bytes(stderr.trim_ascii())
    ))
}

/// A free TCP port on 127.0.0.1 (the kernel's pick), free only until
/// another process takes it: see the module docs.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::system(format!("cannot find a free port on 127.0.0.1: {e}")))
}

/// Whether `port` of 127.0.0.1 is in use now: binding it fails with
/// `AddrInUse`.
fn port_in_use(port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind(("127.0.0.1", port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// How the start of a QEMU ended ([`got_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// It greeted on its QMP socket, or neither greeted nor exited by the
    /// deadline.
    Up,
    /// It exited first.
    Exited,
    /// The run was cancelled first; it may still run.
    Cancelled,
}

/// Whether the starting QEMU `child` got up, greeting on its QMP socket at
/// `qmp` (which it does only past setting up its network), before it
/// exited or `cancel` fired. A QEMU neither up nor gone by `deadline` (the
/// boot's) counts as up: nothing says it failed, and the wait for SSH,
/// past the same deadline, fails at once quoting the console.
async fn got_up(
    child: &mut GroupLeader,
    qmp: &Path,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Start {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Start::Cancelled,
        () = qmp::greeting(qmp) => Start::Up,
        () = child.wait() => Start::Exited,
        () = tokio::time::sleep_until(deadline) => Start::Up,
    }
}

#[async_trait]
impl VmDriver for Qemu {
    /// Stops `qemu-img` at once when `cancel` fires (it may wait on a slow
    /// base image).
    async fn prepare(&self, vm: &Instance, cancel: &CancellationToken) -> Result<()> {
        let VmDriverSpec::Qemu {
            image: Some(image), ..
        } = &self.spec.driver
        else {
            return Ok(()); // an initramfs guest has no disk
        };
        let mut command = tokio::process::Command::new("qemu-img");
        command
            .args(["create", "-f", "qcow2", "-F", "qcow2", "-b", image])
            .arg(Self::overlay(vm));
        let out = run_local_until(command, cancel, |e| {
            Error::system(format!("cannot run qemu-img: {e}; install qemu-utils"))
        })
        .await?
        .ok_or(Error::Cancelled)?;
        if !out.success() {
            return Err(overlay_failed(image, out.stderr.as_bytes()));
        }
        Ok(())
    }

    /// Stops at once when `cancel` fires, keeping a QEMU started for the
    /// teardown to kill.
    async fn boot(&self, vm: &Instance, cancel: &CancellationToken) -> Result<Endpoint> {
        let kvm = match &self.spec.driver {
            VmDriverSpec::Qemu { accel, .. } => match accel {
                Accel::Kvm => true,
                Accel::Tcg => false,
                Accel::Auto => kvm_works(),
            },
            _ => unreachable!("a qemu driver has a qemu spec"),
        };
        // One deadline for every attempt, and for the wait for SSH after.
        let deadline = super::boot_deadline(self.spec.boot_timeout);
        let mut taken = Vec::new();
        while taken.len() < QEMU_PORT_ATTEMPTS {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let port = (self.ports)()?;
            let mut child = self.start(vm, port, kvm).await?;
            let start = got_up(&mut child, &Self::qmp(vm), deadline, cancel).await;
            if start == Start::Exited && port_in_use(port) {
                // Another process took the port before QEMU listened there.
                taken.push(port.to_string());
                continue;
            }
            *self.child.lock().expect("child") = Some(child);
            if start == Start::Cancelled {
                return Err(Error::Cancelled);
            }
            return Ok(Endpoint {
                host: "127.0.0.1".into(),
                port,
            });
        }
        Err(Error::system(format!(
            "QEMU of guest {} exited before it was up {QEMU_PORT_ATTEMPTS} times, each time because another process took the port of 127.0.0.1 it was to forward to the guest's SSH (ports {}); find what takes ports of 127.0.0.1, then retry",
            vm.name,
            taken.join(", ")
        )))
    }

    async fn running(&self, _vm: &Instance) -> bool {
        let mut child = self.child.lock().expect("child");
        child.as_mut().is_some_and(GroupLeader::running)
    }

    async fn stop(&self, vm: &Instance, grace: Duration) -> Result<()> {
        self.stop_until(vm, grace, &CancellationToken::new()).await
    }

    async fn stop_until(
        &self,
        vm: &Instance,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let child = self.child.lock().expect("child").take();
        if let Some(mut child) = child {
            // The ACPI power button through QMP, then the guest's own
            // power-off: all within the grace period, which a cancellation
            // cuts short. A qemu that does not answer on QMP (stopped, or
            // hung) is waited for no longer than that; without grace it is
            // not asked at all.
            if child.running() && !grace.is_zero() && !cancel.is_cancelled() {
                let clean = async {
                    let _ = qmp::powerdown(&Self::qmp(vm)).await;
                    child.wait().await;
                };
                tokio::select! {
                    _ = tokio::time::timeout(grace, clean) => {}
                    () = cancel.cancelled() => {}
                }
            }
            // Its whole process group: a wrapper's emulator too.
            child.kill().await;
        }
        // QEMU is gone: the copying of its console ends, the file whole.
        if let Some(console) = self.finish_console().await {
            *self.console.lock().expect("console") = Some(Console::Idle(console));
        }
        Ok(())
    }

    async fn destroy(&self, vm: &Instance) -> Result<()> {
        match std::fs::remove_file(Self::overlay(vm)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", Self::overlay(vm), e)),
        }
    }

    fn own_log(&self, vm: &Instance) -> Option<PathBuf> {
        Some(Self::log(vm))
    }

    fn console_lost(&self) -> Option<super::console::ConsoleLost> {
        self.saving.lock().expect("saving").as_ref()?.lost()
    }
}
