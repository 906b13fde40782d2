//! The XCP-ng driver: `xe` commands on the pool master (run over SSH).
//! `xe vm-install` makes the throw-away guest from the approved template (a
//! fast clone of its disks where the storage allows, no longer a template:
//! what `xe vm-clone` makes of a template is a template, which never
//! starts); `xe vm-start` boots it and its address is read from the guest
//! tools' `networks` parameter; `xe vm-shutdown` stops it (`--force` after
//! the grace period, once the clean `xe vm-shutdown` has been stopped, or
//! at once when there is no grace period); `xe vm-uninstall` destroys it
//! and its disks.
//!
//! `xe vm-install` and `xe vm-start` run in tasks of their own, so that a
//! run given up on while one runs (its build dropped) does not lose it: the
//! teardown first stops it, on the master too, and only then runs its own
//! commands. A guest whose uuid never came back is found by its name,
//! which is its run's own.
//!
//! The guest's console stays on the pool: nothing writes the instance's
//! console file on this machine, so none is kept and a boot failure
//! quotes none. Whatever bounds it there is XCP-ng's, not fruix's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::driver::{
    argv, must, must_until, run_until, Endpoint, Host, Instance, Output, VmDriver,
};

/// How often the guest's address is asked for while it boots.
const ADDRESS_POLL: Duration = Duration::from_secs(1);

/// The XCP-ng driver (see the module docs). It keeps the uuid of the
/// guest it made, so one value drives one guest (each run of the `vm`
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
    /// The guest's uuid, once `xe vm-install` printed it.
    uuid: Mutex<Option<String>>,
    /// The `xe vm-install` or `xe vm-start` under way in a task of its own:
    /// how to give up on it, and the task.
    under_way: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl XcpNg {
    /// The driver of `spec`, running `xe` on `host`; no guest made yet.
    pub fn new(spec: VmSpec, host: Arc<dyn Host>) -> Self {
        XcpNg {
            spec,
            host,
            uuid: Mutex::new(None),
            under_way: Mutex::new(None),
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

    /// Runs `argv` on the master in a task of its own, given up when
    /// `cancel` fires. Dropping this call leaves the task running, for
    /// [`XcpNg::settle`] to stop.
    async fn run_owned(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>> {
        let give_up = cancel.child_token();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (host, argv, token) = (self.host.clone(), argv.to_vec(), give_up.clone());
        let task = tokio::spawn(async move {
            let _ = answer.send(host.run_until(&argv, &token).await);
        });
        *self.under_way.lock().expect("under way") = Some((give_up, task));
        let ran = answered.await;
        self.under_way.lock().expect("under way").take();
        ran.unwrap_or_else(|_| {
            Err(Error::system(
                "an `xe` command's task ended without its outcome",
            ))
        })
    }

    /// Stops the `xe` command still under way, if any (on the master too),
    /// and waits for its end: the teardown's commands never run beside it.
    async fn settle(&self) {
        let under_way = self.under_way.lock().expect("under way").take();
        if let Some((give_up, task)) = under_way {
            give_up.cancel();
            let _ = task.await;
        }
    }

    /// The uuids of the guests named `name` (`xe vm-list`, templates not
    /// listed).
    async fn named(&self, name: &str) -> Result<Vec<String>> {
        let listed = must(
            &*self.host,
            &argv(["xe", "vm-list", &format!("name-label={name}"), "--minimal"]),
        )
        .await?;
        Ok(listed
            .split(',')
            .map(str::trim)
            .filter(|uuid| !uuid.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Powers the guest off: a clean `xe vm-shutdown` for `grace` (given
    /// up at once when `cancel` fires), then a forced one.
    async fn stop_within(&self, grace: Duration, cancel: &CancellationToken) -> Result<()> {
        // A `xe vm-start` given up on is stopped before the shutdown.
        self.settle().await;
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
            // Given up when the grace period ends, or at once on Ctrl-C.
            let ended = tokio::select! {
                biased;
                done = &mut clean => Some(done),
                () = tokio::time::sleep(grace) => None,
                () = cancel.cancelled() => None,
            };
            match ended {
                Some(done) => Some(done),
                None => {
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
}

/// The master for the commands that make or start a guest: each runs in a
/// task of its own ([`XcpNg::run_owned`]).
#[derive(Debug)]
struct Owned<'a>(&'a XcpNg);

#[async_trait]
impl Host for Owned<'_> {
    async fn run_until(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>> {
        self.0.run_owned(argv, cancel).await
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
    async fn prepare(&self, vm: &Instance, cancel: &CancellationToken) -> Result<()> {
        let out = must_until(
            &Owned(self),
            &argv([
                "xe",
                "vm-install",
                &format!("template={}", self.template()),
                &format!("new-name-label={}", vm.name),
            ]),
            cancel,
        )
        .await?;
        let uuid = out.trim().to_string();
        if uuid.is_empty() || uuid.contains(char::is_whitespace) {
            return Err(Error::system(format!(
                "xe vm-install printed {}, not a uuid",
                fruix_core::escape::quoted(&uuid)
            )));
        }
        *self.uuid.lock().expect("uuid") = Some(uuid);
        Ok(())
    }

    async fn boot(&self, _vm: &Instance, cancel: &CancellationToken) -> Result<Endpoint> {
        let uuid = self.uuid().expect("prepared before booting");
        must_until(
            &Owned(self),
            &argv(["xe", "vm-start", &format!("uuid={uuid}")]),
            cancel,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + self.spec.boot_timeout;
        loop {
            let networks = run_until(
                &*self.host,
                &argv([
                    "xe",
                    "vm-param-get",
                    &format!("uuid={uuid}"),
                    "param-name=networks",
                ]),
                cancel,
            )
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
            tokio::select! {
                () = tokio::time::sleep(ADDRESS_POLL) => {}
                () = cancel.cancelled() => return Err(Error::Cancelled),
            }
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
        self.stop_within(grace, &CancellationToken::new()).await
    }

    async fn stop_until(
        &self,
        _vm: &Instance,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let grace = if cancel.is_cancelled() {
            Duration::ZERO
        } else {
            grace
        };
        self.stop_within(grace, cancel).await
    }

    /// Uninstalls the guest made (`force=true` stops it hard first when it
    /// still runs). A guest whose uuid never came back (its `xe
    /// vm-install` given up on, or cut off with its connection) is looked
    /// for by its name; more than one guest of that name is refused, as
    /// the others are not this run's.
    async fn destroy(&self, vm: &Instance) -> Result<()> {
        // A `xe vm-install` given up on is stopped first.
        self.settle().await;
        let known = self.uuid.lock().expect("uuid").take();
        let uuid = match known {
            Some(uuid) => uuid,
            None => match self.named(&vm.name).await?.as_slice() {
                [] => return Ok(()),
                [uuid] => uuid.clone(),
                several => {
                    return Err(Error::system(format!(
                        "{} XCP-ng guests are named {}: {}; none was uninstalled, as only one can be this run's (uninstall it with `xe vm-uninstall uuid=UUID force=true`)",
                        several.len(),
                        vm.name,
                        fruix_core::escape::text(&several.join(", "))
                    )))
                }
            },
        };
        must(
            &*self.host,
            &argv(["xe", "vm-uninstall", &format!("uuid={uuid}"), "force=true"]),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    //! The XCP-ng driver's commands on a recording pool master: how the
    //! guest is made, and what the teardown does after a command given up
    //! on.

    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use fruix_core::vm::{VmDriverSpec, VmSpec};
    use tokio_util::sync::CancellationToken;

    use super::XcpNg;
    use crate::vm::driver::steps;
    use crate::vm::driver::{Instance, VmDriver};
    use crate::vm::tests::{printed, Recorder};

    const INSTALL: &str =
        "xe vm-install template=freebsd-15-approved new-name-label=fruix-20260405T213444Z";
    const START: &str = "xe vm-start uuid=5a1f-uuid";
    const LIST: &str = "xe vm-list name-label=fruix-20260405T213444Z --minimal";

    fn driver() -> (XcpNg, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        recorder.answer("xe vm-install", printed("5a1f-uuid\n"));
        let spec = VmSpec {
            driver: VmDriverSpec::XcpNg {
                master: "root@xcp-master.example".into(),
                template: "freebsd-15-approved".into(),
                master_key: None,
                master_host_key: None,
            },
            memory_mib: 1024,
            cpus: 2,
            boot_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            host_key: fruix_core::testing::PINNED_HOST_KEY.into(),
        };
        (XcpNg::new(spec, recorder.clone()), recorder)
    }

    fn instance() -> Instance {
        let work_dir = PathBuf::from("/var/lib/fruix/vm/fruix-20260405T213444Z");
        Instance {
            name: "fruix-20260405T213444Z".into(),
            console: work_dir.join("console.log"),
            work_dir,
        }
    }

    /// Drives `step` until the hanging command `line` runs, then drops it,
    /// as a cancelled run's build is dropped.
    async fn give_up_while_running<F: std::future::Future>(
        recorder: &Recorder,
        line: &str,
        step: F,
    ) {
        tokio::pin!(step);
        while !recorder.running.lock().unwrap().iter().any(|r| r == line) {
            tokio::select! {
                _ = &mut step => panic!("{line} ended by itself"),
                () = tokio::task::yield_now() => {}
            }
        }
    }

    /// Regression: `xe vm-clone` of a template makes a template, which
    /// `xe vm-start` refuses.
    #[tokio::test]
    async fn the_guest_is_installed_from_the_template_not_cloned_as_one() {
        let (driver, recorder) = driver();
        recorder.answer("param-name=networks", printed("0/ip: 10.0.0.7"));
        steps::booted(&driver, &instance()).await;
        assert_eq!(recorder.plan()[..2], [INSTALL, START]);
    }

    /// Regression: an `xe vm-clone` given up on ran on on the master; the
    /// guest it made had no recorded uuid and was never uninstalled.
    #[tokio::test]
    async fn an_install_given_up_on_is_stopped_and_its_guest_found_by_name() {
        let (driver, recorder) = driver();
        recorder.hang(INSTALL);
        recorder.answer(LIST, printed("7c3e-uuid\n"));
        give_up_while_running(
            &recorder,
            INSTALL,
            driver.prepare(&instance(), &CancellationToken::new()),
        )
        .await;
        driver.destroy(&instance()).await.unwrap();
        assert_eq!(
            recorder.plan(),
            [
                INSTALL,
                &format!("stopped: {INSTALL}"),
                LIST,
                "xe vm-uninstall uuid=7c3e-uuid force=true"
            ]
        );
        assert_eq!(*recorder.overlaps.lock().unwrap(), []);
    }

    /// Regression: an `xe vm-start` given up on ran on on the master,
    /// beside the forced shutdown.
    #[tokio::test]
    async fn a_start_given_up_on_is_stopped_before_the_forced_shutdown() {
        let (driver, recorder) = driver();
        recorder.hang(START);
        steps::prepared(&driver, &instance()).await;
        give_up_while_running(
            &recorder,
            START,
            driver.boot(&instance(), &CancellationToken::new()),
        )
        .await;
        driver.stop(&instance(), Duration::ZERO).await.unwrap();
        driver.destroy(&instance()).await.unwrap();
        assert_eq!(
            recorder.plan(),
            [
                INSTALL,
                START,
                &format!("stopped: {START}"),
                "xe vm-shutdown uuid=5a1f-uuid --force",
                "xe vm-uninstall uuid=5a1f-uuid force=true"
            ]
        );
        assert_eq!(*recorder.overlaps.lock().unwrap(), []);
    }

    /// Regression: what `xe` printed was escaped, then quoted with `{:?}`,
    /// which doubled every backslash. A guest whose uuid is unknown is still
    /// looked for by name.
    #[tokio::test]
    async fn an_answer_that_is_no_uuid_is_quoted_escaped_once() {
        let (driver, recorder) = driver();
        recorder
            .answers
            .lock()
            .unwrap()
            .insert(0, ("xe vm-install".into(), printed("a b\\c\n"), true));
        let e = driver
            .prepare(&instance(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"xe vm-install printed "a b\\c", not a uuid"#),
            "{e}"
        );
        driver.destroy(&instance()).await.unwrap();
        assert_eq!(recorder.plan(), [INSTALL, LIST]);
    }

    /// Guests of the run's name that are not one are not all this run's:
    /// none is uninstalled.
    #[tokio::test]
    async fn several_guests_of_the_run_s_name_are_not_uninstalled() {
        let (driver, recorder) = driver();
        recorder.answer(LIST, printed("u-1,u-2\n"));
        let e = driver.destroy(&instance()).await.unwrap_err();
        assert!(e.to_string().contains("u-1, u-2"), "{e}");
        assert_eq!(recorder.plan(), [LIST]);
    }
}
