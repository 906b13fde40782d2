//! The `vm` executor: for each build, a throw-away guest booted from a VM
//! machine of the machines file, the inner mode (`guest-self-hosted` or
//! `host-initiated`) run in it over SSH with its pinned host key, and the
//! guest always torn down. The result names the inner mode, which built it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::error::IoContext;
use fruix_core::executor::{Capabilities, Executor, ExecutorConfig, Run, RunContext};
use fruix_core::machines::{Machine, Machines};
use fruix_core::ssh_target::SshTarget;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{fsutil, Error, Result};

use super::bhyve::Bhyve;
use super::driver::{Host, Instance, LocalHost, VmDriver};
use super::master::SshHost;
use super::qemu::Qemu;
use super::xcpng::XcpNg;
use super::{bring_up, teardown, wait_for_ssh, Started};
use crate::guest::{GuestConfig, GuestExecutor, Mode};

/// Configuration of `vm` (JSON object; unknown keys are refused).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// a machines file (fruix-machines ...) holding the VM machine
    pub machines: Option<PathBuf>,
    /// the VM machine of the machines file: one with a (vm ...) record
    pub machine: Option<String>,
    /// how to build in the guest: guest-self-hosted (default) or
    /// host-initiated
    pub inner: Option<String>,
    /// private key file for the guest (default: the machine's private-key,
    /// then ssh-agent, then ~/.ssh/id_*)
    pub identity: Option<PathBuf>,
    /// the guest's state directory (default: the machine's, else
    /// /var/lib/fruix)
    pub guest_state_dir: Option<String>,
    /// where source objects sent to the guest go (default: the machine's
    /// store, else /frx/store)
    pub guest_store: Option<String>,
    /// the guest's fruix, for guest-self-hosted (default: the machine's
    /// helper, else fruix on the guest's PATH)
    pub guest_helper: Option<String>,
    /// make program in the guest, for host-initiated
    pub make: Option<String>,
}

impl ExecutorConfig for VmConfig {
    const NAME: &'static str = "vm";
    const DESCRIPTION: &'static str = "boots a throw-away virtual machine (QEMU, bhyve or XCP-ng) for each build, builds in it over SSH, and always tears it down";

    fn capabilities() -> Capabilities {
        Capabilities {
            boots_vms: true,
            ..Mode::SelfHosted.capabilities()
        }
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: "vm".into(),
            message,
        };
        let (Some(file), Some(name)) = (&self.machines, &self.machine) else {
            return Err(invalid(
                "no VM: give `machines` and `machine` (--machines, --machine), naming a machine with a (vm ...) record".into(),
            ));
        };
        let machines = Machines::read(file)?;
        let machine = machines.get(name)?.clone();
        let Some(spec) = machine.vm.clone() else {
            return Err(invalid(format!(
                "machine {name} of {} is not a virtual machine: give it a (vm (driver ...) ...) record, or build on it with guest-self-hosted or host-initiated",
                file.display()
            )));
        };
        let mode = match self.inner.as_deref() {
            None | Some("guest-self-hosted") => Mode::SelfHosted,
            Some("host-initiated") => Mode::HostInitiated,
            Some(other) => {
                return Err(invalid(format!(
                    "`inner` {} is not guest-self-hosted or host-initiated",
                    fruix_core::escape::quoted(other)
                )))
            }
        };
        // The inner executor, as if the machine were reachable; its
        // address and pinned host key are set once the guest is up.
        let inner = GuestConfig {
            machines: self.machines.clone(),
            machine: self.machine.clone(),
            identity: self.identity,
            guest_state_dir: self.guest_state_dir,
            guest_store: self.guest_store,
            guest_helper: self.guest_helper.filter(|_| mode == Mode::SelfHosted),
            make: self.make.filter(|_| mode == Mode::HostInitiated),
            ..GuestConfig::default()
        }
        .build_in_template(mode)?;
        let host: Arc<dyn Host> = match master_of(&machine).map_err(&invalid)? {
            Some(master) => Arc::new(master),
            None => Arc::new(LocalHost),
        };
        Ok(Arc::new(VmExecutor {
            mode,
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
        })
    }
}

/// One run's guest: its own driver, how far its life got, its instance.
struct VmRun<'a> {
    executor: &'a VmExecutor,
    driver: Box<dyn VmDriver>,
    started: Started,
    vm: Option<Instance>,
}

#[async_trait]
impl Run for VmRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let e = self.executor;
        let run_id = &ctx.request.run_id;
        let work_dir = ctx.result_root.with_file_name(format!(".{run_id}.vm"));
        std::fs::create_dir(&work_dir).map_err(|err| Error::io("create", &work_dir, err))?;
        let vm = Instance {
            name: format!("fruix-{run_id}"),
            console: work_dir.join("console.log"),
            work_dir,
        };
        self.vm = Some(vm.clone());
        let driver = &*self.driver;
        bring_up(
            driver,
            &vm,
            &mut self.started,
            &ctx.events,
            |endpoint| wait_for_ssh(driver, &e.spec, &vm, endpoint, &ctx.cancel),
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
        let e = self.executor;
        let grace = if ctx.cancel.is_cancelled() {
            std::time::Duration::ZERO
        } else {
            e.spec.shutdown_timeout
        };
        let torn = ctx
            .events
            .stage(
                "vm-teardown",
                teardown(&*self.driver, grace, vm, self.started),
            )
            .await;
        if vm.console.exists() {
            if let Err(e) = keep_console(ctx, &vm.console) {
                ctx.events
                    .warn(format!("the guest's console was not kept: {e}"));
            }
        }
        let _ = std::fs::remove_dir_all(&vm.work_dir);
        torn
    }
}

/// Copies the guest's console into the result root's `logs/console.log`.
/// The logs may be the guest's by then (guest-self-hosted moves its result
/// root in whole): a `console.log` there is replaced, never written through,
/// and a `logs` that is not a directory is refused.
pub(super) fn keep_console(ctx: &RunContext, console: &Path) -> Result<()> {
    let logs = ctx.logs_dir()?;
    let mut console = std::fs::File::open(console).with_path("open", console)?;
    fsutil::write_atomic_with(&logs.join("console.log"), |file| {
        std::io::copy(&mut console, file).map(drop)
    })
}
