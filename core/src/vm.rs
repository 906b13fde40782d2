//! A machine that is a virtual machine template: the `(vm ...)` record of a
//! machines file, read into a typed [`VmSpec`]. The `vm` executor boots a
//! throw-away guest from it for each build and always tears it down.
//!
//! ```scheme
//! (vm (driver qemu) (kernel "/var/lib/fruix/vm/vmlinuz") (initrd "/var/lib/fruix/vm/initrd.img")
//!     (memory 512) (cpus 1) (accel auto) (boot-timeout 120) (shutdown-timeout 30)
//!     (host-key "ssh-ed25519 AAAA..."))
//! (vm (driver qemu) (image "/var/lib/fruix/vm/freebsd-15.qcow2") (host-key "ssh-ed25519 AAAA..."))
//! (vm (driver bhyve) (dataset "zroot/vm/freebsd-15") (snapshot "approved") (tap "tap0")
//!     (address "10.0.0.2") (host-key "ssh-ed25519 AAAA..."))
//! (vm (driver xcp-ng) (master "root@xcp-master.example") (template "freebsd-15-approved")
//!     (host-key "ssh-ed25519 AAAA..."))
//! ```
//!
//! `driver` and `host-key` (the guest's SSH host key, always pinned: a
//! throw-away guest has no known_hosts entry worth trusting) are required.
//! `memory` (MiB, default 512), `cpus` (1), `boot-timeout` (seconds from
//! boot to the SSH banner, 120) and `shutdown-timeout` (seconds of ACPI
//! power-down before a hard stop, 30) apply to every driver. QEMU needs
//! `image` (a qcow2 base, run on an overlay) or `kernel` (with `initrd`, and
//! `append` for the kernel command line); `accel` is `auto` (KVM only when
//! it really works), `kvm` or `tcg`. bhyve needs `dataset` and `snapshot`
//! (a ZFS clone is the throw-away disk) and the guest's `address`. XCP-ng
//! needs the pool `master` (`user@host[:port]`, reached over SSH to run
//! `xe`) and the `template` to clone.

use std::time::Duration;

use crate::error::Result;
use crate::escape;
use crate::sexp::Record;

/// A virtual machine template.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// The driver and what it needs.
    pub driver: VmDriverSpec,
    /// Guest memory in MiB (`memory`; positive, default 512).
    pub memory_mib: u32,
    /// Virtual CPUs (`cpus`; positive, default 1).
    pub cpus: u32,
    /// How long the guest gets from boot to answering on SSH
    /// (`boot-timeout`, whole seconds; default 120 s).
    pub boot_timeout: Duration,
    /// How long an ACPI power-down may take before the guest is stopped
    /// hard (`shutdown-timeout`, whole seconds; default 30 s). A cancelled
    /// run stops it hard at once.
    pub shutdown_timeout: Duration,
    /// The guest's pinned SSH host key, `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// What each driver needs.
#[derive(Debug, Clone, PartialEq)]
pub enum VmDriverSpec {
    /// QEMU on this machine, user-mode networking with the guest's SSH
    /// port forwarded to 127.0.0.1. [`read_vm`] requires `image` or
    /// `kernel`.
    Qemu {
        /// Absolute path of a qcow2 base image; each guest runs on a
        /// throw-away overlay of it.
        image: Option<String>,
        /// Absolute path of a kernel to boot directly (`-kernel`).
        kernel: Option<String>,
        /// Absolute path of an initial ramdisk (`-initrd`); only with `kernel`.
        initrd: Option<String>,
        /// The kernel command line (`-append`), verbatim.
        append: Option<String>,
        /// The accelerator to ask for.
        accel: Accel,
    },
    /// bhyve on a FreeBSD host, booting a ZFS clone of an approved snapshot.
    Bhyve {
        /// The ZFS dataset whose snapshot is cloned (`zroot/vm/freebsd-15`).
        dataset: String,
        /// The snapshot's name, after the `@` (`approved`).
        snapshot: String,
        /// The tap interface for the guest's network; `tap0` when `None`.
        tap: Option<String>,
        /// The guest's address, where fruix connects to its SSH port (22).
        address: String,
    },
    /// An XCP-ng pool: `xe` commands run over SSH on the pool master.
    XcpNg {
        /// The pool master, `user@host[:port]`; checked as an
        /// [`SshTarget`](crate::ssh_target::SshTarget) when the executor is
        /// made, not when the file is read.
        master: String,
        /// The template to clone for each guest, as `xe vm-clone vm=` takes it.
        template: String,
    },
}

impl VmDriverSpec {
    /// The driver's name, as the machines file writes it.
    pub fn name(&self) -> &'static str {
        match self {
            VmDriverSpec::Qemu { .. } => "qemu",
            VmDriverSpec::Bhyve { .. } => "bhyve",
            VmDriverSpec::XcpNg { .. } => "xcp-ng",
        }
    }
}

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when it really works, else TCG.
    Auto,
    /// KVM, unconditionally (QEMU fails if it does not work).
    Kvm,
    /// TCG, QEMU's software emulation: slow, but works anywhere.
    Tcg,
}

/// Reads a `(vm ...)` record.
pub fn read_vm(mut r: Record<'_>) -> Result<VmSpec> {
    let driver = r.name("driver")?;
    let host_key = r.string("host-key")?;
    if host_key.split_whitespace().count() < 2 {
        return Err(r.invalid(
            "host-key",
            format!(
                "{} is not a public key; give it as in known_hosts: \"ssh-ed25519 AAAA...\"",
                escape::quoted(&host_key)
            ),
        ));
    }
    let memory_mib = positive(&mut r, "memory")?.unwrap_or(512);
    let cpus = positive(&mut r, "cpus")?.unwrap_or(1);
    let boot_timeout = Duration::from_secs(positive(&mut r, "boot-timeout")?.unwrap_or(120).into());
    let shutdown_timeout =
        Duration::from_secs(positive(&mut r, "shutdown-timeout")?.unwrap_or(30).into());
    let driver = match driver.as_str() {
        "qemu" => {
            let image = absolute(&mut r, "image")?;
            let kernel = absolute(&mut r, "kernel")?;
            let initrd = absolute(&mut r, "initrd")?;
            let append = r.opt_string("append")?;
            let accel = match r
                .field_line("accel")
                .map(|_| r.name("accel"))
                .transpose()?
                .as_deref()
            {
                None | Some("auto") => Accel::Auto,
                Some("kvm") => Accel::Kvm,
                Some("tcg") => Accel::Tcg,
                Some(other) => {
                    return Err(r.invalid(
                        "accel",
                        format!("{} is not auto, kvm or tcg", escape::quoted(other)),
                    ))
                }
            };
            if image.is_none() && kernel.is_none() {
                return Err(r.invalid("image", "is missing: a qemu machine boots an `image` (qcow2) or a `kernel` (with `initrd`)",
                ));
            }
            if initrd.is_some() && kernel.is_none() {
                return Err(r.invalid("kernel", "is missing: `initrd` needs a `kernel`"));
            }
            VmDriverSpec::Qemu {
                image,
                kernel,
                initrd,
                append,
                accel,
            }
        }
        "bhyve" => VmDriverSpec::Bhyve {
            dataset: r.string("dataset")?,
            snapshot: r.string("snapshot")?,
            tap: r.opt_string("tap")?,
            address: r.string("address")?,
        },
        "xcp-ng" => VmDriverSpec::XcpNg {
            master: r.string("master")?,
            template: r.string("template")?,
        },
        other => {
            return Err(r.invalid(
                "driver",
                format!(
                    "{} is not a VM driver; use qemu, bhyve or xcp-ng",
                    escape::quoted(other)
                ),
            ))
        }
    };
    r.finish()?;
    Ok(VmSpec {
        driver,
        memory_mib,
        cpus,
        boot_timeout,
        shutdown_timeout,
        host_key,
    })
}

fn positive(r: &mut Record<'_>, field: &str) -> Result<Option<u32>> {
    r.opt_count(field, true, "a positive number")
}

fn absolute(r: &mut Record<'_>, field: &str) -> Result<Option<String>> {
    match r.opt_string(field)? {
        Some(v) if !v.starts_with('/') => Err(r.invalid(
            field,
            format!("{} is relative; give an absolute path", escape::quoted(&v)),
        )),
        other => Ok(other),
    }
}
