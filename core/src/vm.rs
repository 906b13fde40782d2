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
//!     (master-key "/root/.ssh/xcp-master") (master-host-key "ssh-ed25519 AAAA...")
//!     (host-key "ssh-ed25519 AAAA..."))
//! ```
//!
//! `driver` and `host-key` (the guest's SSH host key, always pinned: a
//! throw-away guest has no known_hosts entry worth trusting) are required.
//! `memory` (MiB, default 512, at most 1 TiB), `cpus` (1, at most 255),
//! `boot-timeout` (seconds from boot to the SSH banner, 120) and
//! `shutdown-timeout` (seconds of ACPI power-down before a hard stop, 30)
//! apply to every driver. QEMU needs
//! `image` (a qcow2 base, run on an overlay) or `kernel` (with `initrd`, and
//! `append` for the kernel command line); `accel` is `auto` (KVM only when
//! it really works), `kvm` or `tcg`; `append` without `kernel` is refused
//! (QEMU would refuse it at boot). bhyve needs `dataset` and `snapshot`
//! (a ZFS clone is the throw-away disk: `POOL/NAME` and the name after the
//! `@`, of letters, digits and `-_.:`) and the guest's `address` (an IP
//! address or host name, without user or port); `tap` is an interface name.
//! XCP-ng needs the pool `master` (`user@host[:port]`, reached over SSH to
//! run `xe`) and the `template` to clone; `master-key` (an absolute path) is
//! the private key to log into the master with (else the ssh-agent's keys,
//! then `~/.ssh/id_*`: never the machine's `private-key`, which is the
//! guest's), and `master-host-key` pins the master's host key (else it must
//! be in `~/.ssh/known_hosts`). Each of these is checked when the file is
//! read, and a refusal names the field and its line: `host-key` and
//! `master-host-key` must be OpenSSH public keys of a type fruix connects
//! with (ed25519, ecdsa, rsa), read by [`crate::host_key_text`] as a
//! machine's `host-key` is, so a key that is no key is refused before any
//! guest boots.

use std::time::Duration;

use crate::error::Result;
use crate::escape;
use crate::machines::absolute;
use crate::sexp::Record;

/// A virtual machine template.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// The driver and what it needs.
    pub driver: VmDriverSpec,
    /// Guest memory in MiB (`memory`; 1 to [`MAX_MEMORY_MIB`], default
    /// 512).
    pub memory_mib: u32,
    /// Virtual CPUs (`cpus`; 1 to [`MAX_CPUS`], default 1).
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
        /// The kernel command line (`-append`), verbatim; [`read_vm`]
        /// allows it only with `kernel`.
        append: Option<String>,
        /// The accelerator to ask for.
        accel: Accel,
    },
    /// bhyve on a FreeBSD host, booting a ZFS clone of an approved snapshot.
    Bhyve {
        /// The ZFS dataset whose snapshot is cloned (`zroot/vm/freebsd-15`);
        /// [`read_vm`] checks it is one (no `@`, no option).
        dataset: String,
        /// The snapshot's name, after the `@` (`approved`); checked by
        /// [`read_vm`].
        snapshot: String,
        /// The tap interface for the guest's network; `tap0` when `None`.
        /// [`read_vm`] checks it is an interface name (no comma: bhyve takes
        /// it inside an option).
        tap: Option<String>,
        /// The guest's address, where fruix connects to its SSH port (22):
        /// an IP address or host name, checked by [`read_vm`].
        address: String,
    },
    /// An XCP-ng pool: `xe` commands run over SSH on the pool master.
    XcpNg {
        /// The pool master, `user@host[:port]`: [`read_vm`] checks that it
        /// parses as an [`SshTarget`](crate::ssh_target::SshTarget).
        master: String,
        /// The template to clone for each guest, as `xe vm-clone vm=` takes
        /// it; not empty.
        template: String,
        /// The private key fruix logs into the master with (`master-key`,
        /// an absolute path on this machine, checked by [`read_vm`]). When
        /// `None`: the keys of a running ssh-agent, then the user's default
        /// keys (`~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`); never the
        /// machine's `private-key`, which is the guest's.
        master_key: Option<std::path::PathBuf>,
        /// The master's pinned SSH host key (`master-host-key`,
        /// `ssh-ed25519 AAAA...`): when given it is the only key accepted
        /// and known_hosts is not consulted; when `None` the master's key
        /// must be in `~/.ssh/known_hosts`.
        master_host_key: Option<String>,
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
    if let Some(refusal) = crate::host_key_text::refusal("host-key", &host_key) {
        return Err(r.invalid("host-key", refusal));
    }
    let memory_mib = at_most(&mut r, "memory", MAX_MEMORY_MIB, "a size in MiB")?.unwrap_or(512);
    let cpus = at_most(&mut r, "cpus", MAX_CPUS, "a CPU count")?.unwrap_or(1);
    let boot_timeout = Duration::from_secs(positive(&mut r, "boot-timeout")?.unwrap_or(120).into());
    let shutdown_timeout =
        Duration::from_secs(positive(&mut r, "shutdown-timeout")?.unwrap_or(30).into());
    let driver = match driver.as_str() {
        "qemu" => {
            let image = absolute(&mut r, "image")?;
            let kernel = absolute(&mut r, "kernel")?;
            let initrd = absolute(&mut r, "initrd")?;
            let append_line = r.field_line("append");
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
            // QEMU refuses `-append` without `-kernel` when it starts.
            if append.is_some() && kernel.is_none() {
                return Err(r.error(
                    "append",
                    append_line,
                    "is a kernel command line, so it needs a `kernel`; an `image` boots with its own",
                ));
            }
            VmDriverSpec::Qemu {
                image,
                kernel,
                initrd,
                append,
                accel,
            }
        }
        "bhyve" => {
            let dataset = checked(&mut r, "dataset", dataset_problem)?;
            let snapshot_line = r.field_line("snapshot");
            let snapshot = checked(&mut r, "snapshot", snapshot_problem)?;
            if dataset.len() + 1 + snapshot.len() > MAX_ZFS_NAME_BYTES {
                return Err(r.error(
                    "snapshot",
                    snapshot_line,
                    format!("makes `{dataset}@{snapshot}`, longer than ZFS's {MAX_ZFS_NAME_BYTES} bytes"),
                ));
            }
            let tap = opt_checked(&mut r, "tap", tap_problem)?;
            let address = checked(&mut r, "address", address_problem)?;
            VmDriverSpec::Bhyve {
                dataset,
                snapshot,
                tap,
                address,
            }
        }
        "xcp-ng" => VmDriverSpec::XcpNg {
            master: checked(&mut r, "master", |v| {
                crate::ssh_target::SshTarget::parse(v).err()
            })?,
            template: checked(&mut r, "template", |v| {
                v.trim()
                    .is_empty()
                    .then(|| "is empty; name the template to clone".to_string())
            })?,
            master_key: opt_checked(&mut r, "master-key", |v| {
                (!v.starts_with('/'))
                    .then(|| format!("{} is relative; give an absolute path", escape::quoted(v)))
            })?
            .map(std::path::PathBuf::from),
            master_host_key: opt_checked(&mut r, "master-host-key", |key| {
                crate::host_key_text::refusal("master-host-key", key)
            })?,
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

/// The longest ZFS dataset or snapshot name, in bytes (`ZFS_MAX_DATASET_NAME_LEN`
/// less its NUL).
const MAX_ZFS_NAME_BYTES: usize = 255;

/// The longest network interface name (`IFNAMSIZ` less its NUL).
const MAX_INTERFACE_BYTES: usize = 15;

/// A required string field that `problem` finds nothing wrong with; what it
/// finds is refused at the field's line.
fn checked(
    r: &mut Record<'_>,
    field: &str,
    problem: impl FnOnce(&str) -> Option<String>,
) -> Result<String> {
    let line = r.field_line(field);
    let value = r.string(field)?;
    match problem(&value) {
        Some(message) => Err(r.error(field, line, message)),
        None => Ok(value),
    }
}

/// An optional string field, checked like [`checked`].
fn opt_checked(
    r: &mut Record<'_>,
    field: &str,
    problem: impl FnOnce(&str) -> Option<String>,
) -> Result<Option<String>> {
    match r.field_line(field) {
        Some(_) => checked(r, field, problem).map(Some),
        None => Ok(None),
    }
}

/// A character ZFS takes in a name component, less the space (which it
/// takes, but which fruix refuses as a likely mistake).
fn zfs_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// What is wrong with `dataset` as the name of a ZFS dataset to clone:
/// `POOL/NAME...`, the pool starting with a letter, every component
/// non-empty, not `.` or `..`, of letters, digits and `-_.:`.
fn dataset_problem(dataset: &str) -> Option<String> {
    let good = dataset.len() <= MAX_ZFS_NAME_BYTES
        && dataset.starts_with(|c: char| c.is_ascii_alphabetic())
        && dataset
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.chars().all(zfs_char));
    (!good).then(|| {
        format!(
            "{} is not a ZFS dataset: give POOL/NAME (letters, digits and -_.: between slashes, the pool starting with a letter), without @SNAPSHOT",
            escape::quoted(dataset)
        )
    })
}

/// What is wrong with `snapshot` as a ZFS snapshot name (after the `@`).
fn snapshot_problem(snapshot: &str) -> Option<String> {
    let good = !snapshot.is_empty() && snapshot.chars().all(zfs_char);
    (!good).then(|| {
        format!(
            "{} is not a ZFS snapshot name: give the name after the @ (letters, digits and -_.:)",
            escape::quoted(snapshot)
        )
    })
}

/// What is wrong with `tap` as a network interface name, which bhyve's
/// `-s SLOT,virtio-net,TAP` option takes (a comma there would add options).
fn tap_problem(tap: &str) -> Option<String> {
    let good = !tap.is_empty()
        && tap.len() <= MAX_INTERFACE_BYTES
        && tap.starts_with(|c: char| c.is_ascii_alphabetic())
        && tap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!good).then(|| {
        format!(
            "{} is not a network interface name (a letter, then letters, digits and -_., at most {MAX_INTERFACE_BYTES} bytes), such as tap0",
            escape::quoted(tap)
        )
    })
}

/// What is wrong with `address` as the guest's address, where fruix
/// connects to port 22: an IP address, or a host name of dot-separated
/// labels of letters, digits, `-` and `_`, none starting with `-`.
fn address_problem(address: &str) -> Option<String> {
    let ip = address.parse::<std::net::IpAddr>().is_ok();
    let host_name = address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
    (!ip && !host_name).then(|| {
        format!(
            "{} is not a host name or IP address; give the guest's address alone (fruix connects to its port 22, as `user`)",
            escape::quoted(address)
        )
    })
}

/// The most memory a guest may be given, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u32 = 1 << 20;

/// The most virtual CPUs a guest may be given: QEMU's x86 machines take no
/// more without x2APIC.
pub const MAX_CPUS: u32 = 255;

/// An optional field of a whole number from 1 to `max`, `what` naming such
/// a number in a refusal (`a CPU count` (1 to 255)): a number past `max`
/// would be refused only when the guest boots, as the machine's failure.
fn at_most(r: &mut Record<'_>, field: &str, max: u32, what: &str) -> Result<Option<u32>> {
    let what = format!("{what} (1 to {max})");
    let line = r.field_line(field);
    match r.opt_count::<u32>(field, true, &what)? {
        Some(n) if n > max => Err(r.error(field, line, format!("{n} is out of range for {what}"))),
        n => Ok(n),
    }
}

fn positive(r: &mut Record<'_>, field: &str) -> Result<Option<u32>> {
    r.opt_count(field, true, "a positive number")
}

#[cfg(test)]
mod tests {
    use super::VmDriverSpec;
    use crate::machines::Machines;
    use crate::testing::{PINNED_HOST_KEY, PINNED_MASTER_HOST_KEY};
    use std::path::{Path, PathBuf};

    /// A machine of each driver, one field a line.
    fn valid() -> String {
        format!(
            r#"(fruix-machines
  (machine (name "b") (user "root")
    (vm (driver bhyve)
        (dataset "zroot/vm/freebsd-15")
        (snapshot "approved")
        (tap "tap0")
        (address "10.0.0.2")
        (host-key "{PINNED_HOST_KEY}")))
  (machine (name "x") (user "root")
    (vm (driver xcp-ng)
        (master "root@xcp-master.example:2222")
        (template "freebsd-15-approved")
        (host-key "{PINNED_HOST_KEY}")))
  (machine (name "q") (user "root")
    (vm (driver qemu)
        (image "/vm/base.qcow2")
        (host-key "{PINNED_HOST_KEY}"))))"#
        )
    }

    fn parse(text: &str) -> crate::Result<Machines> {
        Machines::parse(Path::new("machines.scm"), text)
    }

    #[test]
    fn the_valid_drivers_read() {
        let m = parse(&valid()).unwrap();
        let names: Vec<_> = m
            .machines
            .iter()
            .map(|m| m.vm.as_ref().unwrap().driver.name())
            .collect();
        assert_eq!(names, ["bhyve", "xcp-ng", "qemu"]);
        // IPv6 addresses and host names are addresses too; a tap name may
        // have a dot; a snapshot may hold `:`.
        for (replace, with) in [
            ("\"10.0.0.2\"", "\"fd00::2\""),
            ("\"10.0.0.2\"", "\"builder-vm.example\""),
            ("\"tap0\"", "\"tap0.12\""),
            ("\"approved\"", "\"approved:2026-04-05\""),
            ("\"root@xcp-master.example:2222\"", "\"root@[fd00::1]:22\""),
        ] {
            parse(&valid().replace(replace, with)).unwrap_or_else(|e| panic!("{with}: {e}"));
        }
    }

    /// Regression: QEMU refuses `-append` without `-kernel` when the guest
    /// boots; the record was accepted and the run failed only then.
    /// Likewise an XCP-ng `master` was checked only when the executor was
    /// made (without a line), and bhyve's `dataset`, `snapshot`, `tap` and
    /// `address` never: a comma in `tap` reached bhyve's option string.
    #[test]
    fn what_each_driver_needs_is_checked_when_read_naming_field_and_line() {
        let long_snapshot = format!("\"{}\"", "a".repeat(240));
        let mistakes = [
            (
                "\"approved\"",
                long_snapshot.as_str(),
                "machine[0].vm.snapshot",
                5,
                "longer than ZFS's 255 bytes",
            ),
            (
                "(image \"/vm/base.qcow2\")",
                "(image \"/vm/base.qcow2\") (append \"console=ttyS0\")",
                "machine[2].vm.append",
                16,
                "needs a `kernel`",
            ),
            (
                "\"root@xcp-master.example:2222\"",
                "\"xcp-master.example\"",
                "machine[1].vm.master",
                11,
                "not [ssh://]user@host[:port]",
            ),
            (
                "\"root@xcp-master.example:2222\"",
                "\"root@xcp-master.example:0\"",
                "machine[1].vm.master",
                11,
                "not [ssh://]user@host[:port]",
            ),
            (
                "\"freebsd-15-approved\"",
                "\"\"",
                "machine[1].vm.template",
                12,
                "empty",
            ),
            (
                "\"zroot/vm/freebsd-15\"",
                "\"zroot/vm/\"",
                "machine[0].vm.dataset",
                4,
                "not a ZFS dataset",
            ),
            (
                "\"zroot/vm/freebsd-15\"",
                "\"-o/vm\"",
                "machine[0].vm.dataset",
                4,
                "not a ZFS dataset",
            ),
            (
                "\"zroot/vm/freebsd-15\"",
                "\"zroot/../vm\"",
                "machine[0].vm.dataset",
                4,
                "not a ZFS dataset",
            ),
            (
                "\"zroot/vm/freebsd-15\"",
                "\"zroot/vm@old\"",
                "machine[0].vm.dataset",
                4,
                "not a ZFS dataset",
            ),
            (
                "\"approved\"",
                "\"a/b\"",
                "machine[0].vm.snapshot",
                5,
                "not a ZFS snapshot name",
            ),
            (
                "\"approved\"",
                "\"\"",
                "machine[0].vm.snapshot",
                5,
                "not a ZFS snapshot name",
            ),
            (
                "\"tap0\"",
                "\"tap0,mac=00:a0:98:00:00:01\"",
                "machine[0].vm.tap",
                6,
                "not a network interface name",
            ),
            (
                "\"10.0.0.2\"",
                "\"10.0.0.2:2222\"",
                "machine[0].vm.address",
                7,
                "not a host name or IP address",
            ),
            (
                "\"10.0.0.2\"",
                "\"root@10.0.0.2\"",
                "machine[0].vm.address",
                7,
                "not a host name or IP address",
            ),
            (
                "\"10.0.0.2\"",
                "\"-oProxyCommand=x\"",
                "machine[0].vm.address",
                7,
                "not a host name or IP address",
            ),
        ];
        crate::testing::assert_mistakes_refused(&valid(), parse, &mistakes);
    }

    /// Regression: `(memory 4294967295)` and `(cpus 100000)` were read, and
    /// QEMU refused them only when the guest booted (a failure of the
    /// machine, exit 3, without a reason); a number too large for the field
    /// was said to be "not a positive number".
    #[test]
    fn memory_and_cpus_past_their_bounds_are_out_of_range_when_read() {
        let valid = valid().replace(
            "(image \"/vm/base.qcow2\")",
            "(image \"/vm/base.qcow2\")\n        (memory 1024)\n        (cpus 2)",
        );
        let m = parse(&valid).unwrap();
        let q = m.machines[2].vm.as_ref().unwrap();
        assert_eq!((q.memory_mib, q.cpus), (1024, 2));
        let bounds = parse(
            &valid
                .replace("(memory 1024)", "(memory 1048576)")
                .replace("(cpus 2)", "(cpus 255)"),
        )
        .unwrap();
        let q = bounds.machines[2].vm.as_ref().unwrap();
        assert_eq!((q.memory_mib, q.cpus), (1 << 20, 255));
        let mistakes = [
            (
                "(memory 1024)",
                "(memory 4294967295)",
                "machine[2].vm.memory",
                17,
                "4294967295 is out of range for a size in MiB (1 to 1048576)",
            ),
            (
                "(memory 1024)",
                "(memory 99999999999999)",
                "machine[2].vm.memory",
                17,
                "99999999999999 is out of range for a size in MiB (1 to 1048576)",
            ),
            (
                "(memory 1024)",
                "(memory 0)",
                "machine[2].vm.memory",
                17,
                "0 is not a size in MiB (1 to 1048576)",
            ),
            (
                "(cpus 2)",
                "(cpus 100000)",
                "machine[2].vm.cpus",
                18,
                "100000 is out of range for a CPU count (1 to 255)",
            ),
            (
                "(cpus 2)",
                "(cpus 256)",
                "machine[2].vm.cpus",
                18,
                "out of range",
            ),
        ];
        crate::testing::assert_mistakes_refused(&valid, parse, &mistakes);
    }

    /// An XCP-ng machine whose pool master has a key and host key of its
    /// own, one field a line.
    fn xcp_ng() -> String {
        format!(
            r#"(fruix-machines
  (machine (name "x") (user "root") (private-key "/root/.ssh/guest")
    (vm (driver xcp-ng)
        (master "root@xcp-master.example")
        (template "freebsd-15-approved")
        (master-key "/root/.ssh/xcp-master")
        (master-host-key "{PINNED_MASTER_HOST_KEY}")
        (host-key "{PINNED_HOST_KEY}"))))"#
        )
    }

    /// The `master-key` and `master-host-key` of the one XCP-ng machine of
    /// `text`.
    fn master_keys(text: &str) -> (Option<PathBuf>, Option<String>) {
        let m = parse(text).unwrap();
        match &m.machines[0].vm.as_ref().unwrap().driver {
            VmDriverSpec::XcpNg {
                master_key,
                master_host_key,
                ..
            } => (master_key.clone(), master_host_key.clone()),
            other => panic!("not XCP-ng: {other:?}"),
        }
    }

    /// Regression: the pool master was logged into with the machine's
    /// `private-key` (the guest's) and only through known_hosts; it now
    /// has a key and a pinned host key of its own, both optional.
    #[test]
    fn an_xcp_ng_master_has_its_own_key_and_host_key_checked_when_read() {
        assert_eq!(
            master_keys(&xcp_ng()),
            (
                Some(PathBuf::from("/root/.ssh/xcp-master")),
                Some(PINNED_MASTER_HOST_KEY.to_string())
            )
        );
        let without = xcp_ng()
            .replace("(master-key \"/root/.ssh/xcp-master\")", "")
            .replace(
                &format!("(master-host-key \"{PINNED_MASTER_HOST_KEY}\")"),
                "",
            );
        assert_eq!(master_keys(&without), (None, None));
        let master_host_key = format!("\"{PINNED_MASTER_HOST_KEY}\"");
        let mistakes = [
            (
                "\"/root/.ssh/xcp-master\"",
                "\".ssh/xcp-master\"",
                "machine[0].vm.master-key",
                6,
                "relative; give an absolute path",
            ),
            (
                master_host_key.as_str(),
                "\"AAAAmaster\"",
                "machine[0].vm.master-host-key",
                7,
                "not a public key",
            ),
        ];
        crate::testing::assert_mistakes_refused(&xcp_ng(), parse, &mistakes);
        // The master's fields belong to XCP-ng alone.
        let qemu = valid().replace(
            "(image \"/vm/base.qcow2\")",
            "(image \"/vm/base.qcow2\") (master-key \"/root/.ssh/xcp-master\")",
        );
        let e = parse(&qemu).unwrap_err().to_string();
        assert!(
            e.contains("master-key") && e.contains("unknown field"),
            "{e}"
        );
    }

    /// Keys that are no key of a type fruix connects with, each refused
    /// when read wherever a key is pinned.
    const NO_KEYS: [&str; 6] = [
        "ssh-ed25519 notakey",
        "ssh-ed25519 AAAAkey",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        // A type other than the key's own.
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIFUOoRX4j9il/gNQNi5YLDOpS08JHT29RaMjx4+UnYud",
        // A key of a type fruix does not connect with.
        "x-unknown AAAACXgtdW5rbm93bgAAAAR0ZXN0",
        "notakey",
    ];

    /// `text` with its `n`th (from 0) `from` made `to`.
    fn replace_nth(text: &str, from: &str, to: &str, n: usize) -> String {
        let (at, _) = text.match_indices(from).nth(n).expect("no such occurrence");
        format!("{}{to}{}", &text[..at], &text[at + from.len()..])
    }

    /// Regression: a `(vm ...)` record's `host-key` (of every driver) and
    /// an XCP-ng `master-host-key` were only checked to be two words, so
    /// `"ssh-ed25519 notakey"` was read and refused only when fruix
    /// connected, after booting the guest. They are parsed as a machine's
    /// `host-key` is, and refused when read, naming the field and line.
    #[test]
    fn a_vm_host_key_or_master_host_key_that_is_no_key_is_refused_when_read() {
        let guest = format!("\"{PINNED_HOST_KEY}\"");
        let master = format!("\"{PINNED_MASTER_HOST_KEY}\"");
        for bad in NO_KEYS {
            let quoted = format!("{:?}", bad);
            for (n, field, line) in [
                (0, "machine[0].vm.host-key", 8),
                (1, "machine[1].vm.host-key", 13),
                (2, "machine[2].vm.host-key", 17),
            ] {
                let text = replace_nth(&valid(), &guest, &quoted, n);
                let (got_field, got_line, message) = crate::testing::invalid_metadata(parse(&text));
                assert_eq!(
                    (got_field.as_str(), got_line),
                    (field, Some(line)),
                    "{message}"
                );
                assert!(
                    message.contains(&format!(
                        "pinned host-key {} is not a public key",
                        crate::escape::quoted(bad)
                    )),
                    "{message}"
                );
            }
            let refused = format!(
                "pinned master-host-key {} is not a public key",
                crate::escape::quoted(bad)
            );
            let mistakes = [(
                master.as_str(),
                quoted.as_str(),
                "machine[0].vm.master-host-key",
                7,
                refused.as_str(),
            )];
            crate::testing::assert_mistakes_refused(&xcp_ng(), parse, &mistakes);
        }
    }

    /// A key of each type fruix connects with, comment or not, is read as
    /// a `(vm ...)` record's `host-key` and as a `master-host-key`.
    #[test]
    fn a_vm_host_key_and_master_host_key_of_each_type_are_read() {
        let keys = [
            PINNED_HOST_KEY.to_string(),
            format!("{PINNED_HOST_KEY} root@vm1"),
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHz8pYUeFa2ueU1gRqTZgBB8/dfRVSJryLbTwFxHQxUBRNsYg7qTMFeXTsAQjHgZasJTgGFq2ThM6Pq0MQQ5spA=".into(),
            "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBKfSa5nSfArjCNpDreeT8fgWsUI+vmWMohSFX3i+agtDW/L/Iox6pv8TbvAzrRro2sDMS3Aus8v4PxxRUl+ZAGeDu2vUsrfAXRnlWIGlVMvfwCDYGYIA1b0vUYyO9n+97Q==".into(),
            "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADac/tVpxegJxiU5Ymgxb5qTChrFO/UkgC9I2AuWOSygH2bBoL74nuJ4S5CL40sbqV27C6Df3OWpjgb2FtTYZENsAE3aHvYah3uo/yR2XwC3rCh9WlIsBsO+hlegMZ8J/3kAF46Y3uRL6A40qud32xGT46rTfTeoFNwKuqHCCnFCwwCoQ==".into(),
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQClYX6rOIj7YqHLtlnGYZ/Z4v07V7EMhGdIIvfXaWK+B0ozfCmwRPIm6GDWxMZwSslxgao3kpSEOP0UP3uuFECxdpO0TeuFQA148XBSvNGePhrI+pkeTJEr3TMjYFE1eD7LoW37cVPksXNhuXBT0T7iSvdNvsqhdazlwY/ghsRev9zWoJspnClXgdCRTOMPuOL80+8xs4mJ1N9xsu/ehbQzjhUR0f79O2H+u4jcsfWmty2E0Osbokyt+mYimohDV20+lp87Nl03E8HG/ya11BA3BthvS5H5TK49kd3oe1oi2TlRKsnrq6A5/W0Oz/Ono45S+GcbEyxtfDqEbgoZyOlf".into(),
        ];
        for key in keys {
            let m = parse(&valid().replace(PINNED_HOST_KEY, &key))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            for machine in &m.machines {
                assert_eq!(machine.vm.as_ref().unwrap().host_key, key);
            }
            let text = xcp_ng().replace(PINNED_MASTER_HOST_KEY, &key);
            assert_eq!(master_keys(&text).1.as_deref(), Some(key.as_str()));
        }
    }
}
