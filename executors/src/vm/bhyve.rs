//! The bhyve driver (FreeBSD hosts): a ZFS clone of an approved snapshot is
//! the throw-away disk; `bhyveload` and `bhyve` (run by `daemon(8)`, which
//! keeps its pid) boot it on a tap interface; the ACPI power button (SIGTERM
//! to bhyve) stops it, `bhyvectl --force-poweroff` after the grace period,
//! `bhyvectl --destroy` frees it; `zfs destroy` removes the clone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};

use super::driver::{argv, memory, must, poll, Endpoint, Host, Instance, VmDriver};

/// How often a stopping guest is checked.
const STOP_POLL: Duration = Duration::from_millis(500);

/// The bhyve driver (see the module docs). The guest's disk is the ZFS
/// clone `DATASET-NAME` (NAME the instance's name) of `DATASET@SNAPSHOT`;
/// its pid file and console are in the instance's work directory.
#[derive(Debug)]
pub struct Bhyve {
    /// The VM machine's `(vm ...)` record: memory, CPUs, and the dataset,
    /// snapshot, tap interface (default `tap0`) and guest address of its
    /// driver, which must be [`VmDriverSpec::Bhyve`] (any other panics).
    pub spec: VmSpec,
    /// Where `zfs`, `bhyveload`, `daemon`, `bhyvectl` and `pkill` run: this
    /// machine ([`LocalHost`](super::driver::LocalHost)) for the `vm`
    /// executor.
    pub host: Arc<dyn Host>,
}

impl Bhyve {
    fn fields(&self) -> (&str, &str, Option<&str>, &str) {
        match &self.spec.driver {
            VmDriverSpec::Bhyve {
                dataset,
                snapshot,
                tap,
                address,
            } => (dataset, snapshot, tap.as_deref(), address),
            _ => unreachable!("a bhyve driver has a bhyve spec"),
        }
    }

    fn clone_name(&self, vm: &Instance) -> String {
        format!("{}-{}", self.fields().0, vm.name)
    }

    fn pid_file(vm: &Instance) -> String {
        vm.work_dir.join("bhyve.pid").to_string_lossy().into_owned()
    }
}

#[async_trait]
impl VmDriver for Bhyve {
    async fn prepare(&self, vm: &Instance) -> Result<()> {
        let (dataset, snapshot, _, _) = self.fields();
        must(
            &*self.host,
            &argv([
                "zfs",
                "clone",
                &format!("{dataset}@{snapshot}"),
                &self.clone_name(vm),
            ]),
        )
        .await
        .map(drop)
    }

    async fn boot(&self, vm: &Instance) -> Result<Endpoint> {
        let (_, _, tap, address) = self.fields();
        let disk = format!("/dev/zvol/{}", self.clone_name(vm));
        let mem = memory(&self.spec);
        must(
            &*self.host,
            &argv(["bhyveload", "-m", &mem, "-d", &disk, &vm.name]),
        )
        .await?;
        let cpus = self.spec.cpus.to_string();
        let net = format!("2:0,virtio-net,{}", tap.unwrap_or("tap0"));
        let blk = format!("3:0,virtio-blk,{disk}");
        let console = format!("com1,{}", vm.console.display());
        must(
            &*self.host,
            &argv([
                "daemon",
                "-p",
                &Self::pid_file(vm),
                "bhyve",
                "-A",
                "-H",
                "-P",
                "-c",
                &cpus,
                "-m",
                &mem,
                "-s",
                "0:0,hostbridge",
                "-s",
                "1:0,lpc",
                "-s",
                &net,
                "-s",
                &blk,
                "-l",
                &console,
                &vm.name,
            ]),
        )
        .await?;
        Ok(Endpoint {
            host: address.to_string(),
            port: 22,
        })
    }

    async fn running(&self, vm: &Instance) -> bool {
        let dev = format!("/dev/vmm/{}", vm.name);
        self.host
            .run(&argv(["test", "-e", &dev]))
            .await
            .is_ok_and(|o| o.success())
    }

    async fn stop(&self, vm: &Instance, grace: Duration) -> Result<()> {
        // The ACPI power button; a guest that is not running has nothing to stop.
        let _ = self
            .host
            .run(&argv(["pkill", "-TERM", "-F", &Self::pid_file(vm)]))
            .await?;
        let gone = poll(grace, STOP_POLL, || async { !self.running(vm).await }).await;
        let name = format!("--vm={}", vm.name);
        if !gone {
            let _ = self
                .host
                .run(&argv(["bhyvectl", &name, "--force-poweroff"]))
                .await?;
        }
        let out = self
            .host
            .run(&argv(["bhyvectl", &name, "--destroy"]))
            .await?;
        if !out.success() && self.running(vm).await {
            return Err(Error::system(format!(
                "cannot destroy bhyve guest {}: {}",
                vm.name,
                out.stderr.trim()
            )));
        }
        Ok(())
    }

    async fn destroy(&self, vm: &Instance) -> Result<()> {
        let clone = self.clone_name(vm);
        let exists = self
            .host
            .run(&argv(["zfs", "list", "-H", "-o", "name", &clone]))
            .await?
            .success();
        if exists {
            must(&*self.host, &argv(["zfs", "destroy", &clone])).await?;
        }
        Ok(())
    }
}
