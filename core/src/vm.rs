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
    pub driver: VmDriverSpec,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// The guest's pinned SSH host key, `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// What each driver needs.
#[derive(Debug, Clone, PartialEq)]
pub enum VmDriverSpec {
    Qemu {
        image: Option<String>,
        kernel: Option<String>,
        initrd: Option<String>,
        append: Option<String>,
        accel: Accel,
    },
    Bhyve {
        dataset: String,
        snapshot: String,
        tap: Option<String>,
        address: String,
    },
    XcpNg {
        master: String,
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
    Kvm,
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
