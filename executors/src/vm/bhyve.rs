//! The bhyve driver (FreeBSD hosts): a ZFS clone of an approved snapshot is
//! the throw-away disk; `bhyveload` and `bhyve` boot it on a tap interface.
//! bhyve runs under `daemon(8)`, detached from fruix's pipes (`-f`), its
//! serial console on its stdio (`com1,stdio`; a plain file is no tty, which
//! bhyve refuses) written to the console file by daemon (`-o`), and its pid
//! in a pid file (`-p`) that daemon removes when bhyve exits: the guest runs
//! while that file exists. The ACPI power button (SIGTERM to bhyve) stops
//! it, `bhyvectl --force-poweroff` after the grace period, `bhyvectl
//! --destroy` frees it; `zfs destroy` removes the clone.
//!
//! The console file is not bounded, unlike QEMU's
//! ([`super::console`]): daemon appends to it for as long as the guest
//! writes, and a guest flooding its console (a panic loop) can fill the
//! disk of the host it is on. Only the copy kept in `RESULT_ROOT/logs` is
//! capped ([`KEPT_LOG_MAX_BYTES`](super::executor::KEPT_LOG_MAX_BYTES)).
//! Bounding it would take a reader of bhyve's stdio living as long as the
//! guest, where daemon's `-o` now lets bhyve run detached from fruix.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::{VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::driver::{
    argv, memory, must, must_until, poll, Endpoint, Host, Instance, Output, VmDriver,
};

/// How often a stopping guest is checked.
const STOP_POLL: Duration = Duration::from_millis(500);

/// How long bhyve gets to exit once its guest is destroyed, before the
/// clone it holds open is destroyed.
const EXIT_AFTER_DESTROY: Duration = Duration::from_secs(10);

/// The bhyve driver (see the module docs). The guest's disk is the ZFS
/// clone `DATASET-NAME` (NAME the instance's name) of `DATASET@SNAPSHOT`;
/// bhyve's pid file is in the instance's work directory, and its console
/// goes to the instance's console file.
#[derive(Debug)]
pub struct Bhyve {
    /// The VM machine's `(vm ...)` record: memory, CPUs, and the dataset,
    /// snapshot, tap interface (default `tap0`) and guest address of its
    /// driver, which must be [`VmDriverSpec::Bhyve`] (any other panics).
    pub spec: VmSpec,
    /// Where `zfs`, `bhyveload`, `daemon`, `bhyvectl`, `pkill` and `test` run: this
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

    /// Whether bhyve has exited, within `limit`.
    async fn exited_within(&self, vm: &Instance, limit: Duration) -> bool {
        poll(limit, STOP_POLL, || async { !self.running(vm).await }).await
    }

    /// Runs `argv` as a step of the teardown: a command that cannot be run
    /// is kept in `first` (unless an earlier failure is there), and the
    /// teardown goes on.
    async fn step(&self, argv: &[String], first: &mut Result<()>) -> Option<Output> {
        match self.host.run(argv).await {
            Ok(out) => Some(out),
            Err(e) => {
                keep_first(first, Err(e));
                None
            }
        }
    }
}

/// Keeps `next` in `first` unless `first` already holds a failure.
fn keep_first(first: &mut Result<()>, next: Result<()>) {
    if first.is_ok() {
        *first = next;
    }
}

#[async_trait]
impl VmDriver for Bhyve {
    async fn prepare(&self, vm: &Instance, cancel: &CancellationToken) -> Result<()> {
        let (dataset, snapshot, _, _) = self.fields();
        must_until(
            &*self.host,
            &argv([
                "zfs",
                "clone",
                &format!("{dataset}@{snapshot}"),
                &self.clone_name(vm),
            ]),
            cancel,
        )
        .await
        .map(drop)
    }

    async fn boot(&self, vm: &Instance, cancel: &CancellationToken) -> Result<Endpoint> {
        let (_, _, tap, address) = self.fields();
        let disk = format!("/dev/zvol/{}", self.clone_name(vm));
        let mem = memory(&self.spec);
        must_until(
            &*self.host,
            &argv(["bhyveload", "-m", &mem, "-d", &disk, &vm.name]),
            cancel,
        )
        .await?;
        let cpus = self.spec.cpus.to_string();
        let net = format!("2:0,virtio-net,{}", tap.unwrap_or("tap0"));
        let blk = format!("3:0,virtio-blk,{disk}");
        // daemon returns at once: `-f` leaves none of fruix's pipes open in
        // daemon or bhyve, and `-o` appends bhyve's stdout (the console)
        // and stderr (why it stopped) to the console file.
        must_until(
            &*self.host,
            &argv([
                "daemon",
                "-f",
                "-o",
                &vm.console.to_string_lossy(),
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
                "com1,stdio",
                &vm.name,
            ]),
            cancel,
        )
        .await?;
        Ok(Endpoint {
            host: address.to_string(),
            port: 22,
        })
    }

    /// Whether bhyve's pid file exists: daemon creates it before it returns
    /// (empty until bhyve's pid is written) and removes it once bhyve has
    /// exited. `/dev/vmm/NAME` would not do: it stays until `bhyvectl
    /// --destroy`, whether bhyve runs or not.
    async fn running(&self, vm: &Instance) -> bool {
        self.host
            .run(&argv(["test", "-e", &Self::pid_file(vm)]))
            .await
            .is_ok_and(|o| o.success())
    }

    /// Every step runs whatever the one before did (a command that cannot
    /// be run included); the first failure is returned.
    async fn stop(&self, vm: &Instance, grace: Duration) -> Result<()> {
        let mut first = Ok(());
        let pid_file = Self::pid_file(vm);
        // The ACPI power button; a guest that is not running has nothing to
        // stop (pkill then fails, finding no pid).
        self.step(&argv(["pkill", "-TERM", "-F", &pid_file]), &mut first)
            .await;
        let name = format!("--vm={}", vm.name);
        if !self.exited_within(vm, grace).await {
            self.step(&argv(["bhyvectl", &name, "--force-poweroff"]), &mut first)
                .await;
        }
        // Always: a guest holds its memory until it is destroyed, even once
        // bhyve has exited.
        let destroyed = self
            .step(&argv(["bhyvectl", &name, "--destroy"]), &mut first)
            .await;
        if let Some(out) = destroyed.filter(|out| !out.success()) {
            let gone = matches!(
                self.host.run(&argv(["test", "-e", &format!("/dev/vmm/{}", vm.name)])).await,
                Ok(test) if !test.success()
            );
            if !gone {
                keep_first(
                    &mut first,
                    Err(Error::system(format!(
                        "cannot destroy bhyve guest {}: {}",
                        vm.name,
                        fruix_core::escape::text(out.stderr.trim())
                    ))),
                );
            }
        }
        // bhyve exits once its guest is destroyed; until then it holds the
        // clone open, and the clone cannot be destroyed.
        if !self.exited_within(vm, EXIT_AFTER_DESTROY).await {
            keep_first(
                &mut first,
                Err(Error::system(format!(
                    "bhyve still runs guest {} {}s after `bhyvectl --destroy` (its pid is in {}); stop it, then destroy its clone {}",
                    vm.name,
                    EXIT_AFTER_DESTROY.as_secs(),
                    fruix_core::escape::text(&pid_file),
                    self.clone_name(vm)
                ))),
            );
        }
        first
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

#[cfg(test)]
mod tests {
    //! The bhyve driver against a simulated FreeBSD host: the exact
    //! commands, in order, and what they leave behind.

    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use fruix_core::vm::{VmDriverSpec, VmSpec};
    use fruix_core::{Error, Result};
    use tokio_util::sync::CancellationToken;

    use crate::vm::driver::steps;

    use super::Bhyve;
    use crate::vm::driver::{Host, Instance, Output, VmDriver};

    const NAME: &str = "fruix-20260405T213444Z";
    const PID_FILE: &str = "/var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid";
    const CLONE_CMD: &str =
        "zfs clone zroot/vm/freebsd-15@approved zroot/vm/freebsd-15-fruix-20260405T213444Z";
    const LOAD: &str = "bhyveload -m 1024M -d /dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z fruix-20260405T213444Z";
    const RUN: &str = "daemon -f -o /var/lib/fruix/vm/fruix-20260405T213444Z/console.log -p /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid bhyve -A -H -P -c 2 -m 1024M -s 0:0,hostbridge -s 1:0,lpc -s 2:0,virtio-net,tap3 -s 3:0,virtio-blk,/dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z -l com1,stdio fruix-20260405T213444Z";
    const BUTTON: &str = "pkill -TERM -F /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid";
    const RUNNING: &str = "test -e /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid";
    const POWEROFF: &str = "bhyvectl --vm=fruix-20260405T213444Z --force-poweroff";
    const DESTROY: &str = "bhyvectl --vm=fruix-20260405T213444Z --destroy";
    const VMM: &str = "test -e /dev/vmm/fruix-20260405T213444Z";
    const LIST: &str = "zfs list -H -o name zroot/vm/freebsd-15-fruix-20260405T213444Z";
    const ZFS_DESTROY: &str = "zfs destroy zroot/vm/freebsd-15-fruix-20260405T213444Z";

    /// What the simulated host holds now.
    #[derive(Debug, Default)]
    struct State {
        clone: bool,
        /// `/dev/vmm/NAME`: from bhyveload to `bhyvectl --destroy`.
        vmm: bool,
        /// bhyve runs (its pid file exists: daemon removes it when bhyve exits).
        bhyve: bool,
    }

    /// A FreeBSD host as far as the driver sees it, recording each command.
    #[derive(Debug, Default)]
    struct FreeBsd {
        state: Mutex<State>,
        plan: Mutex<Vec<String>>,
        /// bhyve exits at once after it starts (a bad option, a missing tap).
        crashes: bool,
        /// The guest powers off at the ACPI power button.
        obeys_button: bool,
        /// `bhyvectl --destroy` fails with this stderr.
        destroy_fails: Option<&'static str>,
        /// Commands starting with one of these cannot be run.
        broken: Vec<&'static str>,
    }

    impl FreeBsd {
        fn plan(&self) -> Vec<String> {
            self.plan.lock().unwrap().clone()
        }

        fn answer(&self, line: &str) -> Output {
            let mut s = self.state.lock().unwrap();
            let done = |ok: bool| Output {
                status: if ok { 0 } else { 1 },
                ..Output::default()
            };
            match line {
                CLONE_CMD => {
                    s.clone = true;
                    done(true)
                }
                LOAD => {
                    s.vmm = true;
                    done(true)
                }
                RUN => {
                    s.bhyve = !self.crashes;
                    done(true)
                }
                RUNNING => done(s.bhyve),
                VMM => done(s.vmm),
                BUTTON => {
                    let found = s.bhyve;
                    s.bhyve &= !self.obeys_button;
                    done(found)
                }
                POWEROFF => {
                    s.bhyve = false;
                    done(s.vmm)
                }
                DESTROY => match self.destroy_fails {
                    Some(stderr) => Output {
                        status: 1,
                        stderr: stderr.into(),
                        ..Output::default()
                    },
                    None => {
                        let found = s.vmm;
                        (s.vmm, s.bhyve) = (false, false);
                        done(found)
                    }
                },
                LIST => done(s.clone),
                ZFS_DESTROY => {
                    let free = s.clone && !s.bhyve;
                    s.clone &= !free;
                    done(free)
                }
                other => panic!("unexpected command {other}"),
            }
        }
    }

    #[async_trait]
    impl Host for FreeBsd {
        async fn run_until(
            &self,
            argv: &[String],
            _cancel: &CancellationToken,
        ) -> Result<Option<Output>> {
            let line = argv.join(" ");
            self.plan.lock().unwrap().push(line.clone());
            if self.broken.iter().any(|b| line.starts_with(b)) {
                return Err(Error::system(format!("cannot run {}", argv[0])));
            }
            Ok(Some(self.answer(&line)))
        }
    }

    fn driver(host: FreeBsd) -> (Bhyve, Arc<FreeBsd>) {
        let host = Arc::new(host);
        let spec = VmSpec {
            driver: VmDriverSpec::Bhyve {
                dataset: "zroot/vm/freebsd-15".into(),
                snapshot: "approved".into(),
                tap: Some("tap3".into()),
                address: "10.0.0.2".into(),
            },
            memory_mib: 1024,
            cpus: 2,
            boot_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            host_key: fruix_core::testing::PINNED_HOST_KEY.into(),
        };
        let driver = Bhyve {
            spec,
            host: host.clone(),
        };
        (driver, host)
    }

    fn instance() -> Instance {
        let work_dir = PathBuf::from(PID_FILE).parent().unwrap().to_path_buf();
        Instance {
            name: NAME.into(),
            console: work_dir.join("console.log"),
            work_dir,
        }
    }

    /// Boots a guest of `host` (prepared first); returns its driver.
    async fn booted(host: FreeBsd) -> (Bhyve, Arc<FreeBsd>) {
        let (driver, host) = driver(host);
        steps::booted(&driver, &instance()).await;
        (driver, host)
    }

    /// Regression: bhyve got `-l com1,CONSOLE_FILE`, which it refuses (not
    /// a tty), and daemon kept fruix's pipes open, so `daemon` returned only
    /// when bhyve exited.
    #[tokio::test]
    async fn bhyve_boots_under_a_detached_daemon_with_its_console_on_stdio_into_the_file() {
        let (driver, host) = driver(FreeBsd::default());
        let endpoint = steps::booted(&driver, &instance()).await;
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("10.0.0.2", 22));
        assert_eq!(host.plan(), [CLONE_CMD, LOAD, RUN]);
        assert!(driver.running(&instance()).await);
    }

    /// Regression: `/dev/vmm/NAME` stays after bhyve exits, so a guest whose
    /// bhyve died at once was waited on for the whole boot timeout.
    #[tokio::test]
    async fn a_bhyve_that_exits_while_booting_is_not_running() {
        let (driver, host) = booted(FreeBsd {
            crashes: true,
            ..FreeBsd::default()
        })
        .await;
        assert!(!driver.running(&instance()).await);
        assert_eq!(host.plan().last().unwrap(), RUNNING);
    }

    /// Regression: after the power button the guest was still "running"
    /// (`/dev/vmm/NAME`), so every stop waited its whole grace period.
    #[tokio::test(start_paused = true)]
    async fn a_guest_that_powers_off_at_the_button_is_not_waited_for() {
        let (driver, host) = booted(FreeBsd {
            obeys_button: true,
            ..FreeBsd::default()
        })
        .await;
        let grace = Duration::from_secs(300);
        let began = tokio::time::Instant::now();
        driver.stop(&instance(), grace).await.unwrap();
        assert!(began.elapsed() < grace, "waited {:?}", began.elapsed());
        assert_eq!(host.plan()[3..], [BUTTON, RUNNING, DESTROY, RUNNING]);
        driver.destroy(&instance()).await.unwrap();
        assert_eq!(host.plan()[7..], [LIST, ZFS_DESTROY]);
        assert!(!host.state.lock().unwrap().clone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_that_ignores_the_button_is_powered_off_after_the_grace() {
        let (driver, host) = booted(FreeBsd::default()).await;
        let grace = Duration::from_secs(30);
        let began = tokio::time::Instant::now();
        driver.stop(&instance(), grace).await.unwrap();
        assert!(began.elapsed() >= grace);
        let plan = host.plan();
        let stop = &plan[3..];
        assert_eq!(stop.first().unwrap(), BUTTON);
        assert!(stop[1..stop.len() - 3].iter().all(|c| c == RUNNING));
        assert_eq!(stop[stop.len() - 3..], [POWEROFF, DESTROY, RUNNING]);
    }

    /// Regression: a command of the teardown that could not be run returned
    /// at once, skipping `bhyvectl --destroy` and the clone's destroy.
    #[tokio::test(start_paused = true)]
    async fn every_teardown_step_runs_when_a_command_cannot_be_run() {
        for broken in [BUTTON, POWEROFF, DESTROY] {
            let (driver, host) = booted(FreeBsd {
                broken: vec![broken],
                ..FreeBsd::default()
            })
            .await;
            // As the lifecycle's teardown does: stop, then destroy the clone.
            let e = driver.stop(&instance(), Duration::ZERO).await.unwrap_err();
            assert!(e.to_string().contains("cannot run"), "{broken}: {e}");
            driver.destroy(&instance()).await.unwrap();
            let plan = host.plan();
            for step in [DESTROY, ZFS_DESTROY] {
                assert!(plan.iter().any(|c| c == step), "{broken}: {plan:#?}");
            }
            if broken != DESTROY {
                let s = host.state.lock().unwrap();
                assert!(!s.vmm && !s.bhyve && !s.clone, "{broken}: {s:?}");
            }
        }
    }

    /// A guest that cannot be destroyed is reported, its stderr escaped on
    /// one line; the clone's destroy is still tried (bhyve still holds it).
    #[tokio::test(start_paused = true)]
    async fn a_failed_guest_destroy_is_reported_on_one_line() {
        let (driver, host) = booted(FreeBsd {
            obeys_button: true,
            destroy_fails: Some("vm_destroy: Device busy\nforged line\n"),
            ..FreeBsd::default()
        })
        .await;
        let e = driver.stop(&instance(), Duration::ZERO).await.unwrap_err();
        let message = e.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.contains(&format!(
                "cannot destroy bhyve guest {NAME}: vm_destroy: Device busy\\nforged line"
            )),
            "{message}"
        );
        assert_eq!(host.plan()[3..], [BUTTON, RUNNING, DESTROY, VMM, RUNNING]);
    }

    /// A guest that never booted (bhyveload failed) is torn down without
    /// waiting: no bhyve runs.
    #[tokio::test(start_paused = true)]
    async fn a_guest_that_never_ran_is_torn_down_at_once() {
        let (driver, host) = driver(FreeBsd::default());
        steps::prepared(&driver, &instance()).await;
        let began = tokio::time::Instant::now();
        driver
            .stop(&instance(), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(began.elapsed(), Duration::ZERO);
        // bhyvectl --destroy fails (no such VM), and /dev/vmm says so.
        assert_eq!(host.plan()[1..], [BUTTON, RUNNING, DESTROY, VMM, RUNNING]);
    }
}
