//! The XCP-ng driver: `xe` commands on the pool master (run over SSH). A
//! fast clone of the approved template is the throw-away guest; `xe
//! vm-start` boots it and its address is read from the guest tools'
//! `networks` parameter; `xe vm-shutdown` stops it (`--force` after the
//! grace period, once the clean `xe vm-shutdown` has been stopped, or at
//! once when there is no grace period); `xe vm-uninstall` destroys it and
//! its disks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::driver::{argv, must, Endpoint, Host, Instance, VmDriver};

/// How often the guest's address is asked for while it boots.
const ADDRESS_POLL: Duration = Duration::from_secs(1);

/// The XCP-ng driver (see the module docs). It keeps the uuid of the
/// clone it made, so one value drives one guest (each run of the `vm`
/// executor makes its own).
#[derive(Debug)]
pub struct XcpNg {
    /// The VM machine's `(vm ...)` record: its boot timeout (also the limit
    /// on waiting for the guest's address) and the template of its driver,
    /// which must be [`VmDriverSpec::XcpNg`] (any other panics). The pool
    /// master it names is reached through `host`.
    pub spec: VmSpec,
    /// The pool master.
    pub host: Arc<dyn Host>,
    /// The clone's uuid, once made.
    uuid: Mutex<Option<String>>,
}

impl XcpNg {
    /// The driver of `spec`, running `xe` on `host`; no clone made yet.
    pub fn new(spec: VmSpec, host: Arc<dyn Host>) -> Self {
        XcpNg {
            spec,
            host,
            uuid: Mutex::new(None),
        }
    }

    fn template(&self) -> &str {
        match &self.spec.driver {
            VmDriverSpec::XcpNg { template, .. } => template,
            _ => unreachable!("an XCP-ng driver has an XCP-ng spec"),
        }
    }

    fn uuid(&self) -> Option<String> {
        self.uuid.lock().expect("uuid").clone()
    }
}

/// The first IPv4 address in an `xe` `networks` map (`0/ip: 10.0.0.5; ...`).
pub fn address_of(networks: &str) -> Option<String> {
    networks.split(';').find_map(|entry| {
        let (key, value) = entry.split_once(':')?;
        let value = value.trim();
        (key.trim().ends_with("/ip") && value.parse::<std::net::Ipv4Addr>().is_ok())
            .then(|| value.to_string())
    })
}

#[async_trait]
impl VmDriver for XcpNg {
    async fn prepare(&self, vm: &Instance) -> Result<()> {
        let out = must(
            &*self.host,
            &argv([
                "xe",
                "vm-clone",
                &format!("vm={}", self.template()),
                &format!("new-name-label={}", vm.name),
            ]),
        )
        .await?;
        let uuid = out.trim().to_string();
        if uuid.is_empty() || uuid.contains(char::is_whitespace) {
            return Err(Error::system(format!(
                "xe vm-clone printed {:?}, not a uuid",
                fruix_core::escape::text(&uuid)
            )));
        }
        *self.uuid.lock().expect("uuid") = Some(uuid);
        Ok(())
    }

    async fn boot(&self, _vm: &Instance) -> Result<Endpoint> {
        let uuid = self.uuid().expect("prepared before booting");
        must(
            &*self.host,
            &argv(["xe", "vm-start", &format!("uuid={uuid}")]),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + self.spec.boot_timeout;
        loop {
            let networks = self
                .host
                .run(&argv([
                    "xe",
                    "vm-param-get",
                    &format!("uuid={uuid}"),
                    "param-name=networks",
                ]))
                .await?;
            if let Some(host) = address_of(&networks.stdout) {
                return Ok(Endpoint { host, port: 22 });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the address of XCP-ng guest {uuid}"),
                    limit: self.spec.boot_timeout,
                    detail: "; are the guest tools installed in the template?".into(),
                    log: None,
                });
            }
            tokio::time::sleep(ADDRESS_POLL).await;
        }
    }

    async fn running(&self, _vm: &Instance) -> bool {
        let Some(uuid) = self.uuid() else {
            return false;
        };
        self.host
            .run(&argv([
                "xe",
                "vm-param-get",
                &format!("uuid={uuid}"),
                "param-name=power-state",
            ]))
            .await
            .is_ok_and(|o| o.stdout.trim() == "running")
    }

    async fn stop(&self, _vm: &Instance, grace: Duration) -> Result<()> {
        let Some(uuid) = self.uuid() else {
            return Ok(());
        };
        // Without a grace period (a cancelled run) the guest is stopped
        // hard at once. Otherwise a clean shutdown still running when the
        // grace period ends is stopped (on the master too) before the
        // forced one starts: the two never run together.
        let clean = if grace.is_zero() {
            None
        } else {
            let give_up = CancellationToken::new();
            let command = argv(["xe", "vm-shutdown", &format!("uuid={uuid}")]);
            let clean = self.host.run_until(&command, &give_up);
            tokio::pin!(clean);
            match tokio::time::timeout(grace, &mut clean).await {
                Ok(done) => Some(done),
                Err(_) => {
                    give_up.cancel();
                    Some(clean.await)
                }
            }
        };
        if !matches!(clean, Some(Ok(Some(ref o))) if o.success()) {
            let _ = self
                .host
                .run(&argv([
                    "xe",
                    "vm-shutdown",
                    &format!("uuid={uuid}"),
                    "--force",
                ]))
                .await?;
        }
        Ok(())
    }

    async fn destroy(&self, _vm: &Instance) -> Result<()> {
        let Some(uuid) = self.uuid.lock().expect("uuid").take() else {
            return Ok(());
        };
        must(
            &*self.host,
            &argv(["xe", "vm-uninstall", &format!("uuid={uuid}"), "force=true"]),
        )
        .await
        .map(drop)
    }
}
