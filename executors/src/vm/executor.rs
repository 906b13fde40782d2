//! The `vm` executor: for each build, a throw-away guest booted from a VM
//! machine of the machines file, the inner mode (`guest-self-hosted` or
//! `host-initiated`) run in it over SSH with its pinned host key, and the
//! guest always torn down. The result names the inner mode, which built it.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::bounded::LineSplitter;
use fruix_core::error::IoContext;
use fruix_core::executor::{Capabilities, EventSink, Executor, ExecutorConfig, Run, RunContext};
use fruix_core::machines::{Machine, Machines};
use fruix_core::process::MAX_LINE_BYTES;
use fruix_core::ssh_target::SshTarget;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{escape, fsutil, Error, Result};

use super::bhyve::Bhyve;
use super::driver::{Host, Instance, LocalHost, VmDriver};
use super::master::SshHost;
use super::qemu::Qemu;
use super::xcpng::XcpNg;
use super::{bring_up, kept_name, teardown_until, wait_for_ssh_with_logs, workdir, Started};
use crate::guest::{GuestConfig, GuestExecutor, Mode};
use fruix_core::executor::{config_keys, ConfigKey};
use tokio_util::sync::CancellationToken;

/// Configuration of `vm` (JSON object; unknown keys are refused): the
/// guest executors' keys ([`GuestConfig`]), `inner` among them, but those
/// naming or trusting a running guest (`guest`, `known_hosts`,
/// `accept_new_host_key`): the guest is the one booted from `machine`, its
/// host key the machine's pinned one.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct VmConfig(pub GuestConfig);

/// The keys of [`GuestConfig`] that `vm` does not take: its guest is the one
/// it boots, trusted by the machine's pinned host key.
pub const NOT_VM_KEYS: &[&str] = &["guest", "known_hosts", "accept_new_host_key"];

impl ExecutorConfig for VmConfig {
    const NAME: &'static str = "vm";
    const DESCRIPTION: &'static str = "boots a throw-away virtual machine (QEMU, bhyve or XCP-ng) for each build, builds in it over SSH, and always tears it down; the capabilities shown are inner=guest-self-hosted's (the default): with inner=host-initiated it does not sign at the build site";

    fn capabilities() -> Capabilities {
        Capabilities {
            boots_vms: true,
            ..Mode::SelfHosted.capabilities()
        }
    }

    /// The keys of [`GuestConfig`] but [`NOT_VM_KEYS`].
    fn keys() -> Vec<ConfigKey> {
        let mut keys = config_keys::<GuestConfig>();
        keys.retain(|k| !NOT_VM_KEYS.contains(&k.name.as_str()));
        keys
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: "vm".into(),
            message,
        };
        let mut config = self.0;
        let given = [
            ("guest", config.guest.is_some()),
            ("known_hosts", config.known_hosts.is_some()),
            ("accept_new_host_key", config.accept_new_host_key),
        ];
        if let Some((key, _)) = given.into_iter().find(|(_, given)| *given) {
            return Err(invalid(format!(
                "`{key}` is not a key of vm: its guest is the one it boots from `machine`, trusted by that machine's pinned host-key; see `fruix executors describe vm`"
            )));
        }
        let (Some(file), Some(name)) = (config.machines.clone(), config.machine.clone()) else {
            return Err(invalid(
                "no VM: give `machines` and `machine` (--machines, --machine), naming a machine with a (vm ...) record".into(),
            ));
        };
        let machines = Machines::read(&file)?;
        let machine = machines.get(&name)?.clone();
        let Some(spec) = machine.vm.clone() else {
            return Err(invalid(format!(
                "machine {} of {} is not a virtual machine: give it a (vm (driver ...) ...) record, or build on it with guest-self-hosted or host-initiated",
                escape::text(&name),
                escape::path(&file)
            )));
        };
        // Files that would be found missing only after the guest booted
        // (as the machine's failure) are configuration mistakes.
        let identity = config.identity.as_ref().or(machine.private_key.as_ref());
        let key = match &config.identity {
            Some(_) => "`identity`".to_string(),
            None => format!("the `private-key` of machine {}", escape::quoted(&name)),
        };
        // The base image is a qcow2 image too: qemu-img makes an overlay
        // of nothing else.
        let files = local_files(&spec)
            .into_iter()
            .map(|(field, path)| {
                let what = format!("the `{field}` of machine {}", escape::quoted(&name));
                (what, Path::new(path), field == IMAGE)
            })
            .chain(identity.map(|path| (key, path.as_path(), false)));
        for (what, path, image) in files {
            let problem = |problem| invalid(format!("{what} {problem}"));
            let file = regular_file(path).map_err(problem)?;
            if image {
                qcow2_image(&file, path).map_err(problem)?;
            }
        }
        let mode = match config.inner.take().as_deref() {
            None | Some("guest-self-hosted") => Mode::SelfHosted,
            Some("host-initiated") => Mode::HostInitiated,
            Some(other) => {
                return Err(invalid(format!(
                    "`inner` {} is not guest-self-hosted or host-initiated",
                    fruix_core::escape::quoted(other)
                )))
            }
        };
        // A key of the other mode would be silently unused.
        let foreign = match mode {
            Mode::SelfHosted => config.make.as_ref().map(|_| ("make", "host-initiated")),
            Mode::HostInitiated => [
                ("guest_helper", config.guest_helper.is_some()),
                ("guest_signing_key", config.guest_signing_key.is_some()),
            ]
            .into_iter()
            .find(|(_, given)| *given)
            .map(|(key, _)| (key, "guest-self-hosted")),
        };
        if let Some((key, other)) = foreign {
            return Err(invalid(format!(
                "`{key}` is for inner={other}, and this build's inner mode is {}",
                mode.name()
            )));
        }
        // The inner executor, as if the machine were reachable; its
        // address and pinned host key are set once the guest is up.
        let inner = config.build_in_template(mode)?;
        let host: Arc<dyn Host> = match master_of(&machine).map_err(&invalid)? {
            Some(master) => Arc::new(master),
            None => Arc::new(LocalHost),
        };
        Ok(Arc::new(VmExecutor {
            mode,
            machine: name,
            user: machine.target.user.clone(),
            spec,
            host,
            inner,
        }))
    }
}

fruix_core::register_executor!(VmConfig);

/// Builds in a throw-away VM; see the module docs.
#[derive(Debug)]
pub struct VmExecutor {
    mode: Mode,
    /// The VM machine's name in the machines file.
    machine: String,
    user: String,
    spec: VmSpec,
    /// Where the driver's commands run: the XCP-ng pool master, else this
    /// machine.
    host: Arc<dyn Host>,
    /// The inner mode's executor, its address still the template's.
    inner: GuestExecutor,
}

/// The XCP-ng pool master of VM machine `machine`, where its driver's `xe`
/// commands run, reached with the record's `master-key` and
/// `master-host-key` (never with the machine's `private-key`: that is the
/// guest's); `None` for the other drivers (their commands run on this
/// machine). An unparsable `master` is refused.
pub(super) fn master_of(machine: &Machine) -> std::result::Result<Option<SshHost>, String> {
    let Some(VmDriverSpec::XcpNg {
        master,
        master_key,
        master_host_key,
        ..
    }) = machine.vm.as_ref().map(|vm| &vm.driver)
    else {
        return Ok(None);
    };
    let target = SshTarget::parse(master)?;
    Ok(Some(SshHost::new(
        target,
        master_key.clone(),
        master_host_key.clone(),
    )))
}

/// The field of a QEMU record naming its base image.
const IMAGE: &str = "image";

/// The files of this machine a guest of `spec` is made from (QEMU's
/// `image`, `kernel` and `initrd`), with their fields.
fn local_files(spec: &VmSpec) -> Vec<(&'static str, &str)> {
    let VmDriverSpec::Qemu {
        image,
        kernel,
        initrd,
        ..
    } = &spec.driver
    else {
        return Vec::new();
    };
    [(IMAGE, image), ("kernel", kernel), ("initrd", initrd)]
        .into_iter()
        .filter_map(|(field, path)| Some((field, path.as_deref()?)))
        .collect()
}

/// What is wrong with `path` as a file to read: it must be a regular file
/// (a symbolic link to one is) that this user can open. The file, opened
/// without blocking.
fn regular_file(path: &Path) -> std::result::Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = escape::path(path);
    let not_regular = || format!("{shown} is not a regular file");
    // What stat shows is not a regular file is refused unopened (opening a
    // device can have effects); the opened one's fstat is the authority.
    match std::fs::metadata(path) {
        Err(e) => return Err(format!("{shown} cannot be read: {e}")),
        Ok(meta) if !meta.is_file() => return Err(not_regular()),
        Ok(_) => {}
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| format!("{shown} cannot be read: {e}"))?;
    match file.metadata() {
        Err(e) => Err(format!("{shown} cannot be read: {e}")),
        Ok(meta) if !meta.is_file() => Err(not_regular()),
        Ok(_) => Ok(file),
    }
}

/// The first bytes of a qcow2 image.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// What is wrong with `file` (at `path`) as a guest's base image: QEMU's
/// guest disk is a qcow2 overlay of it, which `qemu-img` makes of a qcow2
/// image only.
fn qcow2_image(mut file: &std::fs::File, path: &Path) -> std::result::Result<(), String> {
    let shown = escape::path(path);
    let mut magic = [0; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == QCOW2_MAGIC => Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            Err(format!("{shown} cannot be read: {e}"))
        }
        _ => Err(format!(
            "{shown} is not a qcow2 image (the guest's disk is a qcow2 overlay of it); convert it with `qemu-img convert -O qcow2`"
        )),
    }
}

/// The name of a run's guest: `fruix-RUN_ID-SUFFIX`, SUFFIX 16 hex digits
/// drawn at random (the run id's characters other than `A-Z a-z 0-9 . _ -`
/// made `_`: ZFS dataset names take no `+`). Run ids are timestamps, so
/// two builds started in one second on one host would otherwise boot two
/// guests of one name (one bhyve VM, one XCP-ng name label).
pub fn guest_name(run_id: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // Keys drawn from the OS's randomness, new for each hasher.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let run_id: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("fruix-{run_id}-{:016x}", hasher.finish())
}

/// Deals with what [`workdir::sweep`] finds in `parent` (the result root's
/// parent) for a VM run on machine `machine` of record `spec`, its driver's
/// commands run on `host` (see [`sweep_stale`]): a directory left alone is
/// named in a warning.
pub(super) async fn sweep_beside(
    parent: &Path,
    (machine, spec, host): (&str, &VmSpec, &Arc<dyn Host>),
    events: &EventSink,
    cancel: &CancellationToken,
) {
    for found in workdir::sweep(parent) {
        match found {
            workdir::Found::Stale(stale) => {
                sweep_stale(stale, machine, spec, host, events, cancel).await
            }
            workdir::Found::LeftAlone { path, why } => events.warn(format!(
                "{}, named like the work directory of a VM run, is left alone: {why}",
                escape::path(&path)
            )),
        }
    }
}

/// Deals with the work directory `stale` of a run whose fruix was killed,
/// for a VM run on `machine` (its record `spec`, its driver's commands run
/// on `host`): a guest of this machine that it names is torn down at once
/// (a bhyve guest and an XCP-ng VM outlive fruix), then the directory is
/// removed; a QEMU guest died with its fruix, but for one a wrapper ran
/// without `exec` ([`super::qmp::quit_left_running`]). A bhyve or XCP-ng guest of
/// another machine is left, with the directory, to a run on that machine.
/// Each outcome is a warning: the build goes on.
pub(super) async fn sweep_stale(
    stale: workdir::Stale,
    machine: &str,
    spec: &VmSpec,
    host: &Arc<dyn Host>,
    events: &EventSink,
    cancel: &CancellationToken,
) {
    let shown = escape::path(&stale.path).to_string();
    let left = "the work directory of a VM run whose fruix was killed, is left";
    if let Some(guest) = stale.guest.clone() {
        if guest.driver == "qemu" {
            match super::qmp::quit_left_running(&stale.path).await {
                Ok(false) => {}
                Ok(true) => events.warn(format!(
                    "quit QEMU of guest {}, left running by a VM run whose fruix was killed (its emulator ran under a wrapper that the kernel's death signal alone reached)",
                    guest.name
                )),
                Err(err) => {
                    events.warn(format!(
                        "{shown}, {left}: the QEMU of guest {} still running from it could not be quit: {err}",
                        guest.name
                    ));
                    return;
                }
            }
        }
        let ours = guest.machine == machine && guest.driver == spec.driver.name();
        if !ours && guest.driver != "qemu" {
            events.warn(format!(
                "{shown}, {left}: its {} guest {} may still run on machine {}; the next VM run there stops it, or remove it by hand",
                guest.driver, guest.name, guest.machine
            ));
            return;
        }
        if ours {
            let vm = Instance {
                console: stale.path.join("console.log"),
                work_dir: stale.path.clone(),
                name: guest.name.clone(),
            };
            let driver = driver_for_run(spec, host);
            let started = Started {
                prepared: true,
                booted: true,
            };
            let torn = teardown_until(&*driver, Duration::ZERO, &vm, started, cancel);
            if let Err(err) = torn.await {
                events.warn(format!(
                    "{shown}, {left}: its guest {} could not be stopped and destroyed: {err}",
                    guest.name
                ));
                return;
            }
            events.warn(format!(
                "stopped and destroyed guest {}, left by a VM run whose fruix was killed before its cleanup",
                guest.name
            ));
        }
    }
    match stale.remove() {
        Ok(_) => events.warn(format!(
            "removed {shown}, the work directory of a VM run whose fruix was killed before its cleanup"
        )),
        Err(err) => events.warn(format!("{shown}, {left}: {err}")),
    }
}

/// A driver of its own for one run of `spec`, its commands run on `host`
/// (see [`VmExecutor::host`]). A driver holds the state of the one guest it
/// drives (QEMU's process, the XCP-ng clone's uuid), so runs never share
/// one: two runs of one executor boot, stop and destroy two guests.
pub(super) fn driver_for_run(spec: &VmSpec, host: &Arc<dyn Host>) -> Box<dyn VmDriver> {
    match &spec.driver {
        VmDriverSpec::Qemu { .. } => Box::new(Qemu::new(spec.clone())),
        VmDriverSpec::Bhyve { .. } => Box::new(Bhyve {
            spec: spec.clone(),
            host: host.clone(),
        }),
        VmDriverSpec::XcpNg { .. } => Box::new(XcpNg::new(spec.clone(), host.clone())),
    }
}

impl Executor for VmExecutor {
    /// The inner mode's name: it builds, and the result names it.
    fn name(&self) -> &str {
        self.mode.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            boots_vms: true,
            ..self.mode.capabilities()
        }
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(VmRun {
            executor: self,
            driver: driver_for_run(&self.spec, &self.host),
            started: Started::default(),
            vm: None,
            work: None,
        })
    }
}

/// One run's guest: its own driver, how far its life got, its instance.
struct VmRun<'a> {
    executor: &'a VmExecutor,
    driver: Box<dyn VmDriver>,
    started: Started,
    vm: Option<Instance>,
    /// The work directory's lock, held until the cleanup removed it.
    work: Option<workdir::WorkDir>,
}

#[async_trait]
impl Run for VmRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let e = self.executor;
        let run_id = &ctx.request.run_id;
        // What runs whose fruix was killed left beside this result root.
        if let Some(parent) = ctx.result_root.parent() {
            let run = (&*e.machine, &e.spec, &e.host);
            sweep_beside(parent, run, &ctx.events, &ctx.cancel).await;
        }
        let guest = workdir::Guest {
            machine: e.machine.clone(),
            driver: e.spec.driver.name().into(),
            name: guest_name(run_id),
        };
        let work = workdir::create(&ctx.result_root, &guest)?;
        let vm = Instance {
            name: guest.name,
            console: work.path.join("console.log"),
            work_dir: work.path.clone(),
        };
        self.work = Some(work);
        self.vm = Some(vm.clone());
        let driver = &*self.driver;
        // Where the cleanup keeps the guest's logs, which errors name.
        let logs = ctx.result_root.join("logs");
        bring_up(
            driver,
            &vm,
            &mut self.started,
            &ctx.events,
            &ctx.cancel,
            |endpoint| {
                wait_for_ssh_with_logs(driver, &e.spec, &vm, endpoint, Some(&logs), &ctx.cancel)
            },
            |endpoint| async move {
                let target = SshTarget {
                    user: e.user.clone(),
                    host: endpoint.host,
                    port: endpoint.port,
                };
                let inner = e.inner.clone().at(target, e.spec.host_key.clone());
                let mut run = inner.start(ctx);
                let built = run.build(ctx).await;
                let cleaned = run.cleanup(ctx).await;
                built.and(cleaned)
            },
        )
        .await
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let Some(vm) = &self.vm else {
            return Ok(());
        };
        let grace = self.executor.spec.shutdown_timeout;
        let torn = ctx
            .events
            .stage(
                "vm-teardown",
                teardown_until(&*self.driver, grace, vm, self.started, &ctx.cancel),
            )
            .await;
        let logs = std::iter::once(vm.console.clone()).chain(self.driver.own_log(vm));
        for log in logs.filter(|log| log.exists()) {
            if let Err(e) = keep_log(ctx, &log, KEPT_LOG_MAX_BYTES) {
                ctx.events.warn(format!(
                    "the guest's {} was not kept: {e}",
                    kept_name(&log).to_string_lossy()
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&vm.work_dir);
        torn
    }
}

/// The most of a guest's log (its console, QEMU's own output) kept in
/// `RESULT_ROOT/logs`: its last lines, escaped, up to 16 MiB. (QEMU's live
/// console is itself kept within
/// [`LIVE_CONSOLE_MAX_BYTES`](super::console::LIVE_CONSOLE_MAX_BYTES).)
pub const KEPT_LOG_MAX_BYTES: usize = 16 << 20;

/// Keeps the guest's log at `source` (its console, QEMU's own output) as
/// the result root's `logs/NAME` ([`kept_name`]): line by line, escaped as
/// step logs are ([`escape::line`]), so that reading it can never drive a
/// terminal, and only its last lines, at most `max_bytes` of them, after a
/// line saying that earlier ones were cut. The logs may be the guest's by
/// then (guest-self-hosted moves its result root in whole): a file there is
/// replaced, never written through, and a `logs` that is not a directory is
/// refused.
pub(super) fn keep_log(ctx: &RunContext, source: &Path, max_bytes: usize) -> Result<()> {
    let logs = ctx.logs_dir()?;
    let (tail, cut) = escaped_tail(source, max_bytes)?;
    fsutil::write_atomic_with(&logs.join(kept_name(source)), |file| {
        if cut {
            writeln!(
                file,
                "[earlier lines cut: only the last {} MiB of the guest's log are kept]",
                max_bytes >> 20
            )?;
        }
        let (front, back) = tail.as_slices();
        file.write_all(front)?;
        file.write_all(back)
    })
}

/// The last whole lines of the file at `source`, each escaped
/// ([`escape::line`], a carriage return before the newline dropped) and
/// ended by a newline, at most `max_bytes` of them; and whether earlier
/// lines were cut. Reads only the file's last `max_bytes`, and holds no
/// more than that (and one line of at most [`MAX_LINE_BYTES`]).
fn escaped_tail(source: &Path, max_bytes: usize) -> Result<(VecDeque<u8>, bool)> {
    let mut file = std::fs::File::open(source).with_path("open", source)?;
    let len = file.metadata().with_path("inspect", source)?.len();
    let start = len.saturating_sub(max_bytes as u64);
    file.seek(SeekFrom::Start(start))
        .with_path("read", source)?;
    // Reading from the middle of the file, the first line is a part of one.
    let mut partial = start > 0;
    let mut cut = start > 0;
    let mut tail = VecDeque::new();
    let mut keep = |line: &[u8]| {
        if std::mem::take(&mut partial) {
            return;
        }
        let text = escape::utf8_or_octal(line);
        tail.extend(escape::line(text.trim_end_matches('\r')).bytes());
        tail.push_back(b'\n');
        if tail.len() > max_bytes {
            // Whole lines only: the first one left is cut off entirely.
            tail.drain(..tail.len() - max_bytes);
            let first_end = tail.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            tail.drain(..first_end);
            cut = true;
        }
    };
    let mut lines = LineSplitter::new(MAX_LINE_BYTES, None);
    let mut chunk = vec![0; 64 << 10];
    let mut file = file.take(len - start);
    loop {
        let n = file.read(&mut chunk).with_path("read", source)?;
        if n == 0 {
            break;
        }
        lines.push(&chunk[..n], &mut keep);
    }
    lines.finish(&mut keep);
    Ok((tail, cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the `--machines` path was printed raw (`display()`), so
    /// a path with a terminal escape or a newline wrote it to the terminal.
    #[test]
    fn a_machines_path_is_escaped_in_the_not_a_vm_message() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m\x1b[31m\nachines");
        std::fs::write(
            &file,
            "(fruix-machines\n  (machine (name \"plain\") (host \"127.0.0.1\") (user \"root\")))\n",
        )
        .unwrap();
        let config = VmConfig(GuestConfig {
            machines: Some(file.clone()),
            machine: Some("plain".into()),
            ..GuestConfig::default()
        });
        let message = config.build().unwrap_err().to_string();
        assert!(message.contains("is not a virtual machine"), "{message}");
        assert!(
            message.contains(&escape::path(&file).to_string()),
            "{message}"
        );
        assert!(
            !message.contains('\x1b') && !message.contains('\n'),
            "{message}"
        );
    }
}
