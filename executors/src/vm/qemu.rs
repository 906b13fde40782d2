//! The QEMU driver: a qcow2 overlay on the base image is the throw-away disk
//! (an initramfs guest needs none); `qemu-system-x86_64` runs as fruix's
//! child in its own process group, with user networking restricted to a
//! forwarded SSH port on 127.0.0.1, its serial console in a file, and a QMP
//! socket through which `system_powerdown` presses the ACPI power button.
//! After the grace period, and whenever fruix lets go of it, the process is
//! killed; on Linux and FreeBSD it also dies with fruix (`PR_SET_PDEATHSIG`,
//! `PROC_PDEATHSIG_CTL`), so even a fruix killed with SIGKILL leaves no
//! guest running.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{Accel, VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::driver::{memory, Endpoint, Instance, VmDriver};

/// The QEMU system emulator run.
pub const QEMU: &str = "qemu-system-x86_64";

/// The QEMU driver (see the module docs). It keeps the guest's
/// `qemu-system-x86_64` process, so one value drives one guest (each run
/// of the `vm` executor makes its own);
/// the overlay, QMP socket and `qemu.log` are in the instance's work
/// directory.
#[derive(Debug)]
pub struct Qemu {
    /// The VM machine's `(vm ...)` record: memory, CPUs, and the image,
    /// kernel, initrd, kernel arguments and accelerator of its driver,
    /// which must be [`VmDriverSpec::Qemu`] (any other panics at boot).
    pub spec: VmSpec,
    child: Mutex<Option<tokio::process::Child>>,
}

impl Qemu {
    /// The driver of `spec`, no guest started yet.
    pub fn new(spec: VmSpec) -> Self {
        Qemu {
            spec,
            child: Mutex::new(None),
        }
    }

    /// The driver of `spec` with `child` as its guest's emulator, for
    /// tests of the teardown.
    #[cfg(test)]
    pub(super) fn with_child(spec: VmSpec, child: tokio::process::Child) -> Self {
        Qemu {
            spec,
            child: Mutex::new(Some(child)),
        }
    }

    fn overlay(vm: &Instance) -> PathBuf {
        vm.work_dir.join("disk.qcow2")
    }

    fn qmp(vm: &Instance) -> PathBuf {
        vm.work_dir.join("qmp.sock")
    }

    /// QEMU's own stdout and stderr.
    fn log(vm: &Instance) -> PathBuf {
        vm.work_dir.join("qemu.log")
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
/// 127.0.0.1:`port` and `kvm` saying whether to use KVM. Paths inside
/// option strings have their commas doubled ([`option_value`]); the
/// serial console's `file:` takes the rest of its argument verbatim.
pub fn command_line(spec: &VmSpec, vm: &Instance, port: u16, kvm: bool) -> Vec<String> {
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
        "-serial".into(),
        format!("file:{}", vm.console.display()),
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

/// A free TCP port on 127.0.0.1 (the kernel's pick).
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::system(format!("cannot find a free port on 127.0.0.1: {e}")))
}

#[async_trait]
impl VmDriver for Qemu {
    async fn prepare(&self, vm: &Instance) -> Result<()> {
        let VmDriverSpec::Qemu {
            image: Some(image), ..
        } = &self.spec.driver
        else {
            return Ok(()); // an initramfs guest has no disk
        };
        let out = tokio::process::Command::new("qemu-img")
            .args(["create", "-f", "qcow2", "-F", "qcow2", "-b", image])
            .arg(Self::overlay(vm))
            .output()
            .await
            .map_err(|e| Error::system(format!("cannot run qemu-img: {e}; install qemu-utils")))?;
        if !out.status.success() {
            return Err(overlay_failed(image, &out.stderr));
        }
        Ok(())
    }

    async fn boot(&self, vm: &Instance) -> Result<Endpoint> {
        let kvm = match &self.spec.driver {
            VmDriverSpec::Qemu { accel, .. } => match accel {
                Accel::Kvm => true,
                Accel::Tcg => false,
                Accel::Auto => kvm_works(),
            },
            _ => unreachable!("a qemu driver has a qemu spec"),
        };
        let port = free_port()?;
        let args = command_line(&self.spec, vm, port, kvm);
        let log = std::fs::File::create(Self::log(vm))
            .map_err(|e| Error::io("create", Self::log(vm), e))?;
        let mut command = tokio::process::Command::new(&args[0]);
        // The guest dies with fruix even when fruix cannot tear it down
        // (killed with SIGKILL): the kernel sends it SIGKILL then (Linux's
        // PR_SET_PDEATHSIG, FreeBSD's PROC_PDEATHSIG_CTL).
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one system call, prctl(2) or procctl(2), which is
        // async-signal-safe.
        unsafe {
            use rustix::process::{set_parent_process_death_signal, Signal};
            command.pre_exec(|| {
                set_parent_process_death_signal(Some(Signal::KILL)).map_err(std::io::Error::from)
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
                Error::system(format!("cannot run {QEMU}: {e}; install qemu-system-x86"))
            })?;
        *self.child.lock().expect("child") = Some(child);
        Ok(Endpoint {
            host: "127.0.0.1".into(),
            port,
        })
    }

    async fn running(&self, _vm: &Instance) -> bool {
        let mut child = self.child.lock().expect("child");
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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
        let Some(mut child) = self.child.lock().expect("child").take() else {
            return Ok(());
        };
        // The ACPI power button through QMP, then the guest's own power-off:
        // all within the grace period, which a cancellation cuts short. A
        // qemu that does not answer on QMP (stopped, or hung) is waited for
        // no longer than that; without grace it is not asked at all.
        if matches!(child.try_wait(), Ok(None)) && !grace.is_zero() && !cancel.is_cancelled() {
            let clean = async {
                let _ = powerdown(&Self::qmp(vm)).await;
                let _ = child.wait().await;
            };
            tokio::select! {
                _ = tokio::time::timeout(grace, clean) => {}
                () = cancel.cancelled() => {}
            }
        }
        // A no-op for a guest that is gone; killing also reaps it.
        let _ = child.kill().await;
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
}

/// Sends `system_powerdown` on the QMP socket at `path`.
async fn powerdown(path: &Path) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await?; // the greeting
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .await?;
    lines.next_line().await?;
    write
        .write_all(b"{\"execute\":\"system_powerdown\"}\n")
        .await?;
    lines.next_line().await?;
    Ok(())
}
