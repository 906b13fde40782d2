//! Recorded plans of the bhyve and XCP-ng drivers: the exact commands, in
//! order, of a guest's whole life, and the teardown after a failure at each
//! step (prepare, boot, wait for SSH, the build, the import).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::executor::EventSink;
use fruix_core::testing::{PINNED_HOST_KEY, PINNED_MASTER_HOST_KEY};
use fruix_core::vm::{Accel, VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::bhyve::Bhyve;
use super::driver::{steps, Endpoint, Host, Instance, Output, VmDriver};
use super::executor::{driver_for_run, guest_name, sweep_beside, KEPT_LOG_MAX_BYTES};
use super::qemu::{command_line, overlay_failed, Qemu};
use super::xcpng::{address_of, XcpNg};
use super::{
    bring_up, console_quote, teardown, teardown_until, wait_for_ssh_with_logs, workdir, Started,
};
use crate::guest::GuestConfig;

/// A host that records every command and answers from a script: the
/// recorded plans of the bhyve and XCP-ng drivers.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every command run, words joined by spaces.
    pub plan: Mutex<Vec<String>>,
    /// Answers: the first whose pattern the command contains gives its
    /// output (used once when `once`); otherwise success with no output.
    pub answers: Mutex<Vec<(String, Output, bool)>>,
    /// Commands (whole lines) that never end by themselves, as a remote
    /// command that hangs: only [`Host::run_until`]'s cancel stops one
    /// (noted in the plan as `stopped: LINE`). A dropped run leaves it
    /// running, as dropping an SSH command's future does.
    pub hangs: Mutex<Vec<String>>,
    /// The hanging commands running now.
    pub running: Mutex<Vec<String>>,
    /// Each command started while a hanging one was still running, with
    /// the ones running then.
    pub overlaps: Mutex<Vec<(String, Vec<String>)>>,
}

impl Recorder {
    /// Answers commands containing `pattern` with `output` (every time).
    pub fn answer(&self, pattern: &str, output: Output) {
        self.answers
            .lock()
            .expect("answers")
            .push((pattern.to_string(), output, false));
    }

    /// Answers the next command containing `pattern` with `output`, once.
    pub fn answer_once(&self, pattern: &str, output: Output) {
        self.answers
            .lock()
            .expect("answers")
            .push((pattern.to_string(), output, true));
    }

    /// Makes the command `line` hang (see [`Recorder::hangs`]).
    pub fn hang(&self, line: &str) {
        self.hangs.lock().expect("hangs").push(line.to_string());
    }

    /// The commands run so far.
    pub fn plan(&self) -> Vec<String> {
        self.plan.lock().expect("plan").clone()
    }

    /// Records the start of `line`: in the plan, and as an overlap when a
    /// hanging command is still running. Whether `line` hangs.
    fn start(&self, line: &str) -> bool {
        self.plan.lock().expect("plan").push(line.to_string());
        let mut running = self.running.lock().expect("running");
        if !running.is_empty() {
            self.overlaps
                .lock()
                .expect("overlaps")
                .push((line.to_string(), running.clone()));
        }
        let hangs = self.hangs.lock().expect("hangs").iter().any(|h| h == line);
        if hangs {
            running.push(line.to_string());
        }
        hangs
    }

    /// The answer to `line` (see [`Recorder::answers`]).
    fn answer_to(&self, line: &str) -> Output {
        let mut answers = self.answers.lock().expect("answers");
        if let Some(i) = answers
            .iter()
            .position(|(p, _, _)| line.contains(p.as_str()))
        {
            let (_, out, once) = answers[i].clone();
            if once {
                answers.remove(i);
            }
            return out;
        }
        Output::default()
    }
}

#[async_trait]
impl Host for Recorder {
    async fn run(&self, argv: &[String]) -> Result<Output> {
        let line = argv.join(" ");
        if self.start(&line) {
            std::future::pending::<()>().await;
        }
        Ok(self.answer_to(&line))
    }

    async fn run_until(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>> {
        let line = argv.join(" ");
        if self.start(&line) {
            cancel.cancelled().await;
            self.running.lock().expect("running").retain(|r| *r != line);
            self.plan
                .lock()
                .expect("plan")
                .push(format!("stopped: {line}"));
            return Ok(None);
        }
        if cancel.is_cancelled() {
            return Ok(None);
        }
        Ok(Some(self.answer_to(&line)))
    }
}

/// A failed [`Output`] (status 1) with `stderr`.
pub fn failed(stderr: &str) -> Output {
    Output {
        status: 1,
        stdout: String::new(),
        stderr: stderr.to_string(),
    }
}

/// A successful [`Output`] with `stdout`.
pub fn printed(stdout: &str) -> Output {
    Output {
        status: 0,
        stdout: stdout.to_string(),
        stderr: String::new(),
    }
}

fn spec(driver: VmDriverSpec) -> VmSpec {
    VmSpec {
        driver,
        memory_mib: 1024,
        cpus: 2,
        boot_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_millis(10),
        host_key: PINNED_HOST_KEY.into(),
    }
}

fn instance() -> Instance {
    Instance {
        name: "fruix-20260405T213444Z".into(),
        work_dir: PathBuf::from("/var/lib/fruix/vm/fruix-20260405T213444Z"),
        console: PathBuf::from("/var/lib/fruix/vm/fruix-20260405T213444Z/console.log"),
    }
}

/// Where a scripted life fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailAt {
    Nowhere,
    Wait,
    Build,
    Import,
}

/// Runs a whole life of `driver` with a build that records `run` and
/// `import` in the plan, failing at `fail`; then the teardown. Returns the
/// build's outcome and the teardown's.
async fn life(
    driver: &dyn VmDriver,
    spec: &VmSpec,
    recorder: &Recorder,
    fail: FailAt,
) -> (Result<()>, Result<()>) {
    let vm = instance();
    let mut started = Started::default();
    let note = |what: String| recorder.plan.lock().unwrap().push(what);
    let outcome = bring_up(
        driver,
        &vm,
        &mut started,
        &EventSink::discard(),
        &CancellationToken::new(),
        |e: Endpoint| async move {
            note(format!("wait for SSH-banner at {}:{}", e.host, e.port));
            if fail == FailAt::Wait {
                return Err(Error::Timeout {
                    what: "the SSH banner".into(),
                    limit: spec.boot_timeout,
                    detail: String::new(),
                    log: None,
                });
            }
            Ok(e)
        },
        |e: Endpoint| async move {
            note(format!(
                "run the inner build over SSH at {}:{}",
                e.host, e.port
            ));
            if fail == FailAt::Build {
                return Err(Error::system("connection lost"));
            }
            note("import the result root".into());
            if fail == FailAt::Import {
                return Err(Error::system("import failed"));
            }
            Ok(())
        },
    )
    .await;
    let torn = teardown(driver, spec.shutdown_timeout, &vm, started).await;
    (outcome, torn)
}

/// A driver of the recorded plans, its recorder and its spec.
type Recorded<D> = (D, Arc<Recorder>, VmSpec);

/// Runs [`life`] on a new driver from `new`, whose recorder `script` first
/// gives its answers. Returns the build's outcome, the teardown's and the
/// plan.
async fn life_of<D: VmDriver>(
    new: fn() -> Recorded<D>,
    script: impl FnOnce(&Recorder),
    fail: FailAt,
) -> (Result<()>, Result<()>, Vec<String>) {
    let (driver, recorder, spec) = new();
    script(&recorder);
    let (outcome, torn) = life(&driver, &spec, &recorder, fail).await;
    (outcome, torn, recorder.plan())
}

/// The plan of a whole life of a new driver from `new` in which nothing
/// fails; the build and the teardown must succeed.
async fn whole_life<D: VmDriver>(new: fn() -> Recorded<D>) -> Vec<String> {
    let (outcome, torn, plan) = life_of(new, |_| {}, FailAt::Nowhere).await;
    outcome.unwrap();
    torn.unwrap();
    plan
}

/// For each step after the boot, the plan of a whole life of a new driver
/// from `new` whose build fails there; the build must fail and the teardown
/// succeed.
async fn failed_lives<D: VmDriver>(new: fn() -> Recorded<D>) -> Vec<(FailAt, Vec<String>)> {
    let mut plans = Vec::new();
    for fail in [FailAt::Wait, FailAt::Build, FailAt::Import] {
        let (outcome, torn, plan) = life_of(new, |_| {}, fail).await;
        let error = outcome.unwrap_err();
        // Until the guest answers, a failure is the machine's.
        assert_eq!(
            matches!(error, Error::MachineUnavailable(_)),
            fail == FailAt::Wait,
            "{fail:?}: {error:?}"
        );
        torn.unwrap();
        plans.push((fail, plan));
    }
    plans
}

/// A whole life of a new driver from `new` in which the first command
/// containing `pattern` fails with `stderr` (answered before the answers
/// `new` gave). The build must fail, as the machine's failure, and the
/// teardown succeed; returns the build's error and the plan.
async fn failing_command<D: VmDriver>(
    new: fn() -> Recorded<D>,
    pattern: &str,
    stderr: &str,
) -> (Error, Vec<String>) {
    let fails = |r: &Recorder| {
        r.answers
            .lock()
            .unwrap()
            .insert(0, (pattern.into(), failed(stderr), true))
    };
    let (outcome, torn, plan) = life_of(new, fails, FailAt::Nowhere).await;
    let error = outcome.unwrap_err();
    // Every command that can fail here comes before the guest answers.
    assert!(
        matches!(error, Error::MachineUnavailable(_)),
        "{pattern}: {error:?}"
    );
    torn.unwrap();
    (error, plan)
}

fn bhyve() -> Recorded<Bhyve> {
    let recorder = Arc::new(Recorder::default());
    let spec = spec(VmDriverSpec::Bhyve {
        dataset: "zroot/vm/freebsd-15".into(),
        snapshot: "approved".into(),
        tap: Some("tap3".into()),
        address: "10.0.0.2".into(),
    });
    // The guest stops at the ACPI power button (daemon then removes
    // bhyve's pid file); the clone exists.
    recorder.answer(BHYVE_RUNNING, failed(""));
    let driver = Bhyve {
        spec: spec.clone(),
        host: recorder.clone(),
    };
    (driver, recorder, spec)
}

const BHYVE_PREPARE: &str =
    "zfs clone zroot/vm/freebsd-15@approved zroot/vm/freebsd-15-fruix-20260405T213444Z";
const BHYVE_LOAD: &str = "bhyveload -m 1024M -d /dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z fruix-20260405T213444Z";
const BHYVE_RUN: &str = "daemon -f -o /var/lib/fruix/vm/fruix-20260405T213444Z/console.log -p /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid bhyve -A -H -P -c 2 -m 1024M -s 0:0,hostbridge -s 1:0,lpc -s 2:0,virtio-net,tap3 -s 3:0,virtio-blk,/dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z -l com1,stdio fruix-20260405T213444Z";
const BHYVE_RUNNING: &str = "test -e /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid";
const BHYVE_STOP: [&str; 4] = [
    "pkill -TERM -F /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid",
    BHYVE_RUNNING,
    "bhyvectl --vm=fruix-20260405T213444Z --destroy",
    // bhyve has exited, so the clone is free to destroy.
    BHYVE_RUNNING,
];
const BHYVE_DESTROY: [&str; 2] = [
    "zfs list -H -o name zroot/vm/freebsd-15-fruix-20260405T213444Z",
    "zfs destroy zroot/vm/freebsd-15-fruix-20260405T213444Z",
];

fn expected(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test]
async fn bhyve_runs_a_whole_life_in_order() {
    assert_eq!(
        whole_life(bhyve).await,
        expected(&[
            &[BHYVE_PREPARE, BHYVE_LOAD, BHYVE_RUN],
            &[
                "wait for SSH-banner at 10.0.0.2:22",
                "run the inner build over SSH at 10.0.0.2:22",
                "import the result root",
            ],
            &BHYVE_STOP,
            &BHYVE_DESTROY,
        ])
    );
}

#[tokio::test]
async fn bhyve_tears_down_after_a_failure_at_each_step() {
    let inner = |fail: FailAt| -> Vec<&'static str> {
        let mut steps = vec!["wait for SSH-banner at 10.0.0.2:22"];
        if fail != FailAt::Wait {
            steps.push("run the inner build over SSH at 10.0.0.2:22");
        }
        if fail == FailAt::Import {
            steps.push("import the result root");
        }
        steps
    };
    for (fail, plan) in failed_lives(bhyve).await {
        assert_eq!(
            plan,
            expected(&[
                &[BHYVE_PREPARE, BHYVE_LOAD, BHYVE_RUN],
                &inner(fail),
                &BHYVE_STOP,
                &BHYVE_DESTROY
            ]),
            "{fail:?}"
        );
    }
    // The clone fails: nothing booted; whatever part of the clone exists is destroyed.
    let (error, plan) = failing_command(bhyve, "zfs clone", "dataset is busy").await;
    assert!(error.to_string().contains("dataset is busy"));
    assert_eq!(plan, expected(&[&[BHYVE_PREPARE], &BHYVE_DESTROY]));
    // bhyveload fails: the (not running) guest is still stopped and freed.
    let (_, plan) = failing_command(bhyve, "bhyveload", "no such device").await;
    assert_eq!(
        plan,
        expected(&[&[BHYVE_PREPARE, BHYVE_LOAD], &BHYVE_STOP, &BHYVE_DESTROY])
    );
    // A guest that ignores the power button (running at both checks of
    // its grace period) is powered off hard.
    let ignores_power_button = |r: &Recorder| {
        r.answers.lock().unwrap().clear();
        r.answer_once(BHYVE_RUNNING, printed(""));
        r.answer_once(BHYVE_RUNNING, printed(""));
        r.answer(BHYVE_RUNNING, failed(""));
    };
    let (outcome, _, plan) = life_of(bhyve, ignores_power_button, FailAt::Nowhere).await;
    outcome.unwrap();
    let at = plan
        .iter()
        .position(|c| c == "bhyvectl --vm=fruix-20260405T213444Z --force-poweroff")
        .expect("a hard power-off");
    assert_eq!(
        plan[at + 1],
        "bhyvectl --vm=fruix-20260405T213444Z --destroy"
    );
}

/// Regression: only QEMU cut a grace period short on Ctrl-C; a bhyve guest
/// ignoring its power button was given the whole `shutdown-timeout`. A
/// cancellation during the grace stops it hard at once, then destroys it.
#[tokio::test]
async fn a_cancellation_during_bhyve_s_grace_period_powers_it_off_at_once() {
    let (driver, recorder, _) = bhyve();
    // The guest ignores its power button: it runs until powered off.
    recorder.answers.lock().unwrap().clear();
    recorder.answer(BHYVE_RUNNING, printed(""));
    let cancel = CancellationToken::new();
    let started = Started {
        prepared: true,
        booted: true,
    };
    let vm = instance();
    let torn = teardown_until(&driver, Duration::from_secs(600), &vm, started, &cancel);
    // Ctrl-C once the power button was pressed.
    let pressed = || {
        let plan = recorder.plan.lock().unwrap();
        plan.iter().any(|c| c.starts_with("pkill"))
    };
    let torn = cancelled_when(torn, pressed, &cancel, || {
        // Running still at the hard stop's check, gone once powered off.
        recorder.answers.lock().unwrap().clear();
        recorder.answer_once(BHYVE_RUNNING, printed(""));
        recorder.answer(BHYVE_RUNNING, failed(""));
    })
    .await;
    torn.unwrap();
    let plan = recorder.plan.lock().unwrap().clone();
    let at = plan
        .iter()
        .position(|c| c == "bhyvectl --vm=fruix-20260405T213444Z --force-poweroff")
        .unwrap_or_else(|| panic!("no hard power-off: {plan:?}"));
    assert!(
        plan[at..].contains(&"bhyvectl --vm=fruix-20260405T213444Z --destroy".to_string()),
        "{plan:?}"
    );
}

fn xcpng() -> Recorded<XcpNg> {
    let recorder = Arc::new(Recorder::default());
    let spec = spec(VmDriverSpec::XcpNg {
        master: "root@xcp-master.example".into(),
        template: "freebsd-15-approved".into(),
        master_key: None,
        master_host_key: None,
    });
    recorder.answer("xe vm-install", printed("5a1f-uuid\n"));
    // No address on the first ask (the guest tools are not up yet).
    recorder.answer_once("param-name=networks", printed(""));
    recorder.answer(
        "param-name=networks",
        printed("0/ip: 10.0.0.7; 0/ipv6/0: fe80::1"),
    );
    let driver = XcpNg::new(spec.clone(), recorder.clone());
    (driver, recorder, spec)
}

const XE_PREPARE: &str =
    "xe vm-install template=freebsd-15-approved new-name-label=fruix-20260405T213444Z";
const XE_BOOT: [&str; 3] = [
    "xe vm-start uuid=5a1f-uuid",
    "xe vm-param-get uuid=5a1f-uuid param-name=networks",
    "xe vm-param-get uuid=5a1f-uuid param-name=networks",
];
const XE_STOP: &str = "xe vm-shutdown uuid=5a1f-uuid";
const XE_DESTROY: &str = "xe vm-uninstall uuid=5a1f-uuid force=true";

#[tokio::test]
async fn xcpng_runs_a_whole_life_in_order_and_tears_down_after_each_failure() {
    assert_eq!(
        whole_life(xcpng).await,
        expected(&[
            &[XE_PREPARE],
            &XE_BOOT,
            &[
                "wait for SSH-banner at 10.0.0.7:22",
                "run the inner build over SSH at 10.0.0.7:22",
                "import the result root",
                XE_STOP,
                XE_DESTROY
            ],
        ])
    );
    for (fail, plan) in failed_lives(xcpng).await {
        assert_eq!(&plan[plan.len() - 2..], [XE_STOP, XE_DESTROY], "{fail:?}");
    }
    // The install fails: nothing to stop, and no guest of its name to
    // uninstall.
    let (error, plan) = failing_command(xcpng, "xe vm-install", "no such template").await;
    assert!(error.to_string().contains("no such template"));
    assert_eq!(
        plan,
        [
            XE_PREPARE,
            "xe vm-list name-label=fruix-20260405T213444Z --minimal"
        ]
    );
    // vm-start fails: the clone is stopped (nothing running) and uninstalled.
    let (_, plan) = failing_command(xcpng, "xe vm-start", "not enough memory").await;
    assert_eq!(
        plan,
        [
            XE_PREPARE,
            "xe vm-start uuid=5a1f-uuid",
            XE_STOP,
            XE_DESTROY
        ]
    );
    // A clean shutdown that fails is forced.
    let (_, torn, plan) = life_of(
        xcpng,
        |r| r.answer_once("xe vm-shutdown uuid=5a1f-uuid", failed("timed out")),
        FailAt::Build,
    )
    .await;
    torn.unwrap();
    assert_eq!(
        &plan[plan.len() - 3..],
        [XE_STOP, "xe vm-shutdown uuid=5a1f-uuid --force", XE_DESTROY]
    );
}

/// Regression: a clean `xe vm-shutdown` that ran past the grace period was
/// only dropped, which over SSH leaves it running on the master, and the
/// forced shutdown ran beside it. It is now stopped first.
#[tokio::test(start_paused = true)]
async fn xcpng_forces_a_shutdown_only_once_the_clean_one_past_its_grace_is_stopped() {
    let (driver, recorder, _) = xcpng();
    steps::prepared(&driver, &instance()).await;
    recorder.hang(XE_STOP);
    let grace = Duration::from_secs(30);
    let began = tokio::time::Instant::now();
    driver.stop(&instance(), grace).await.unwrap();
    assert!(began.elapsed() >= grace, "the clean shutdown had its grace");
    clean_shutdown_stopped_then_forced(&recorder);
    assert!(recorder.running.lock().unwrap().is_empty());
}

/// Runs `work`, firing `cancel` once `seen` holds (after `then`), as a
/// Ctrl-C at that moment; `work` must then end within 10 seconds, not wait
/// out its grace period (or its boot timeout).
async fn cancelled_when<T>(
    work: impl std::future::Future<Output = T>,
    seen: impl Fn() -> bool,
    cancel: &CancellationToken,
    then: impl FnOnce(),
) -> T {
    let ctrl_c = async {
        while !seen() {
            tokio::task::yield_now().await;
        }
        then();
        cancel.cancel();
    };
    let (out, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(work, ctrl_c)
    })
    .await
    .expect("it waited out the grace period");
    out
}

/// Brings up `vm` of `driver` (nothing to wait for, nothing to build),
/// firing `cancel` once `seen` holds: the bring-up must end, cancelled.
/// Returns what it started, for the teardown.
async fn up_cancelled_when(
    driver: &dyn VmDriver,
    vm: &Instance,
    seen: impl Fn() -> bool,
    cancel: &CancellationToken,
) -> Started {
    let mut started = Started::default();
    let events = EventSink::discard();
    let up = bring_up(
        driver,
        vm,
        &mut started,
        &events,
        cancel,
        |endpoint| async move { Ok(endpoint) },
        |_| async { Ok(()) },
    );
    let up = cancelled_when(up, seen, cancel, || {}).await;
    assert!(matches!(up, Err(Error::Cancelled)), "{vm:?}: {up:?}");
    started
}

/// Checks that `recorder`'s guest was made, its clean shutdown started and
/// stopped, and only then a forced one run.
fn clean_shutdown_stopped_then_forced(recorder: &Recorder) {
    assert_eq!(
        recorder.plan(),
        [
            XE_PREPARE,
            XE_STOP,
            &format!("stopped: {XE_STOP}"),
            "xe vm-shutdown uuid=5a1f-uuid --force"
        ]
    );
    assert_eq!(*recorder.overlaps.lock().unwrap(), []);
}

/// Regression: a Ctrl-C during XCP-ng's grace period was not seen until
/// it ended. The clean shutdown is then given up at once (stopped on the
/// master), and only then is the forced one started.
#[tokio::test]
async fn xcpng_gives_up_the_clean_shutdown_at_once_on_a_cancellation() {
    let (driver, recorder, _) = xcpng();
    steps::prepared(&driver, &instance()).await;
    recorder.hang(XE_STOP);
    let cancel = CancellationToken::new();
    let vm = instance();
    let stop = driver.stop_until(&vm, Duration::from_secs(600), &cancel);
    let shutting_down = || {
        recorder
            .running
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == XE_STOP)
    };
    let stopped = cancelled_when(stop, shutting_down, &cancel, || {}).await;
    stopped.unwrap();
    clean_shutdown_stopped_then_forced(&recorder);
}

/// Without a grace period (after a cancellation) the guest is stopped hard
/// at once: no clean shutdown is started only to be stopped.
#[tokio::test(start_paused = true)]
async fn xcpng_without_grace_forces_the_shutdown_at_once() {
    let (driver, recorder, _) = xcpng();
    steps::prepared(&driver, &instance()).await;
    recorder.hang(XE_STOP);
    driver.stop(&instance(), Duration::ZERO).await.unwrap();
    assert_eq!(
        recorder.plan(),
        [XE_PREPARE, "xe vm-shutdown uuid=5a1f-uuid --force"]
    );
}

/// Boots a new driver from `new` (prepared first), whose command `line`
/// hangs, firing Ctrl-C once that command runs: the boot must end at once,
/// cancelled. Returns the plan.
async fn boot_cancelled_at<D: VmDriver>(new: fn() -> Recorded<D>, line: &str) -> Vec<String> {
    let (driver, recorder, _) = new();
    recorder.hang(line);
    steps::prepared(&driver, &instance()).await;
    let cancel = CancellationToken::new();
    let vm = instance();
    let running = || recorder.running.lock().unwrap().iter().any(|c| c == line);
    let booted = cancelled_when(driver.boot(&vm, &cancel), running, &cancel, || {}).await;
    assert!(
        matches!(booted, Err(Error::Cancelled)),
        "{line}: {booted:?}"
    );
    assert!(recorder.running.lock().unwrap().is_empty(), "{line}");
    recorder.plan()
}

/// Regression: booting took no cancellation: Ctrl-C during `bhyveload`,
/// `xe vm-start` or the wait for the XCP-ng guest's address waited for
/// the command (over SSH, it ran on), and the run was dropped only after
/// the runner's grace. The command is stopped and the boot ends at once.
#[tokio::test]
async fn a_cancellation_while_a_guest_boots_stops_the_command_under_way() {
    assert_eq!(
        boot_cancelled_at(bhyve, BHYVE_LOAD).await,
        [BHYVE_PREPARE, BHYVE_LOAD, &format!("stopped: {BHYVE_LOAD}")]
    );
    let start = XE_BOOT[0];
    assert_eq!(
        boot_cancelled_at(xcpng, start).await,
        [XE_PREPARE, start, &format!("stopped: {start}")]
    );
    let address = XE_BOOT[1];
    assert_eq!(
        boot_cancelled_at(xcpng, address).await,
        [XE_PREPARE, start, address, &format!("stopped: {address}")]
    );
}

/// Brings up a guest of a new driver from `new` whose command `line`
/// (while its disk is prepared) hangs, firing Ctrl-C once that command
/// runs: the bring-up must end at once, cancelled, the command stopped.
/// Then tears down. Returns the plan.
async fn prepare_cancelled_at<D: VmDriver>(new: fn() -> Recorded<D>, line: &str) -> Vec<String> {
    let (driver, recorder, spec) = new();
    recorder.hang(line);
    let (cancel, vm) = (CancellationToken::new(), instance());
    let running = || recorder.running.lock().unwrap().iter().any(|c| c == line);
    let started = up_cancelled_when(&driver, &vm, running, &cancel).await;
    assert!(recorder.running.lock().unwrap().is_empty(), "{line}");
    let torn = teardown_until(&driver, spec.shutdown_timeout, &vm, started, &cancel);
    torn.await.unwrap();
    recorder.plan()
}

/// Regression: preparing a guest's disk took no cancellation: Ctrl-C
/// during a slow `xe vm-install` over SSH or `zfs clone` waited for the
/// command (over SSH, it ran on), and the run was dropped only after the
/// runner's grace. The command is stopped, the bring-up ends at once, and
/// the teardown destroys what it may have made.
#[tokio::test]
async fn a_cancellation_while_a_guest_s_disk_is_prepared_stops_the_command_under_way() {
    assert_eq!(
        prepare_cancelled_at(bhyve, BHYVE_PREPARE).await,
        expected(&[
            &[BHYVE_PREPARE, &format!("stopped: {BHYVE_PREPARE}")],
            &BHYVE_DESTROY
        ])
    );
    // The guest's uuid never came back: it is looked for by its name.
    assert_eq!(
        prepare_cancelled_at(xcpng, XE_PREPARE).await,
        [
            XE_PREPARE,
            &format!("stopped: {XE_PREPARE}"),
            "xe vm-list name-label=fruix-20260405T213444Z --minimal"
        ]
    );
}

/// The pid of the process whose command line names `path` and that is
/// blocked opening a FIFO (Linux's `wait_for_partner`): a reader waiting
/// for a writer that never comes.
fn blocked_opening(path: &std::path::Path) -> Option<u32> {
    let wanted = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let names = cmdline.windows(wanted.len()).any(|w| w == wanted);
            let wchan = std::fs::read_to_string(entry.path().join("wchan")).ok()?;
            (names && wchan == "wait_for_partner").then_some(pid)
        })
}

/// Regression: QEMU's `qemu-img`, making the overlay, took no
/// cancellation either: one stuck opening its base image (here a FIFO no
/// one writes to) kept a cancelled run waiting. It is killed and reaped,
/// and the preparing ends at once, cancelled.
#[tokio::test]
async fn a_cancellation_while_qemu_img_makes_the_overlay_kills_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let fifo = rustix::fs::FileType::Fifo;
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mknodat(rustix::fs::CWD, &base, fifo, mode, 0).unwrap();
    let spec = VmSpec {
        driver: VmDriverSpec::Qemu {
            image: Some(base.to_string_lossy().into_owned()),
            kernel: None,
            initrd: None,
            append: None,
            accel: Accel::Tcg,
        },
        ..kernel_only_qemu()
    };
    let driver = Qemu::new(spec);
    let vm = Instance {
        name: "fruix-20260405T213444Z".into(),
        work_dir: dir.path().to_path_buf(),
        console: dir.path().join("console.log"),
    };
    // qemu-img blocks opening the FIFO, as long as no one opens it to
    // write (which would let it go on, and fail: a FIFO is no image).
    let stuck = std::sync::Mutex::new(None);
    let blocked = || {
        let pid = blocked_opening(&base);
        *stuck.lock().unwrap() = pid;
        pid.is_some()
    };
    let cancel = CancellationToken::new();
    let prepared = cancelled_when(driver.prepare(&vm, &cancel), blocked, &cancel, || {}).await;
    assert!(matches!(prepared, Err(Error::Cancelled)), "{prepared:?}");
    let pid = stuck.lock().unwrap().expect("qemu-img was seen");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "qemu-img {pid} was not killed and reaped"
    );
}

#[test]
fn an_xe_networks_map_gives_the_first_ipv4_address() {
    assert_eq!(
        address_of("0/ipv6/0: fe80::1; 0/ip: 10.0.0.7; 1/ip: 10.0.1.7").as_deref(),
        Some("10.0.0.7")
    );
    assert_eq!(address_of(""), None);
    assert_eq!(address_of("0/ip: not-an-address"), None);
}

#[test]
fn the_qemu_command_line_forwards_only_ssh_on_loopback_and_writes_the_console_to_its_socket() {
    let spec = spec(VmDriverSpec::Qemu {
        image: None,
        kernel: Some("/vm/vmlinuz".into()),
        initrd: Some("/vm/initrd.img".into()),
        append: Some("console=ttyS0".into()),
        accel: Accel::Auto,
    });
    let line = command_line(&spec, &instance(), 40022, 7, false).join(" ");
    for part in [
        "-machine q35,accel=tcg",
        "-m 1024M -smp 2",
        "-chardev socket,id=console,fd=7 -serial chardev:console",
        "-qmp unix:/var/lib/fruix/vm/fruix-20260405T213444Z/qmp.sock,server=on,wait=off",
        "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22",
        "-kernel /vm/vmlinuz -initrd /vm/initrd.img -append console=ttyS0",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(!line.contains("-drive"), "an initramfs guest has no disk");
    assert!(
        !line.contains("console.log"),
        "fruix writes the console file"
    );
    let kvm = command_line(&spec, &instance(), 40022, 7, true).join(" ");
    assert!(kvm.contains("accel=kvm"));
}

#[test]
fn a_boot_failure_quotes_the_last_console_lines_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = instance();
    vm.console = dir.path().join("console.log");
    let logs = std::path::Path::new("/results/r1/logs");
    let driver = Qemu::new(kernel_only_qemu());
    assert_eq!(
        console_quote(&driver, &vm, Some(logs)),
        "; its console is empty"
    );
    let lines: String = (0..30).map(|i| format!("line {i}\r\n")).collect();
    std::fs::write(&vm.console, format!("{lines}Kernel panic\x1b[31m\n")).unwrap();
    let quote = console_quote(&driver, &vm, Some(logs));
    assert!(
        quote.contains("line 29") && !quote.contains("line 10\n"),
        "{quote}"
    );
    assert!(quote.ends_with("Kernel panic\\033[31m"), "{quote}");
    // Regression: the console was named in the guest's work directory,
    // which is gone by the time anyone reads the error.
    assert!(
        quote.starts_with("; its console (/results/r1/logs/console.log) ends with:"),
        "{quote}"
    );
}

/// A run context for a result root at `root`.
fn context(root: &std::path::Path) -> fruix_core::executor::RunContext {
    let request = fruix_core::testing::sample_request("vm", vec!["world".into()]);
    fruix_core::testing::run_context(request, root, EventSink::discard())
}

#[test]
fn the_console_replaces_a_guest_s_console_log_and_never_writes_through_one() {
    use std::fs;
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    fs::write(&console, "reboot: Power down\n").unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let keep = |root: &std::path::Path| {
        super::executor::keep_log(&context(root), &console, KEPT_LOG_MAX_BYTES)
    };

    // The guest's result root came with logs/console.log -> victim.
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("logs")).unwrap();
    symlink(&victim, root.join("logs/console.log")).unwrap();
    keep(&root).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    let kept = root.join("logs/console.log");
    assert!(fs::symlink_metadata(&kept).unwrap().is_file());
    assert_eq!(fs::read_to_string(&kept).unwrap(), "reboot: Power down\n");

    // ... or with logs -> a directory elsewhere: refused.
    let root = dir.path().join("root2");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, root.join("logs")).unwrap();
    let e = keep(&root).unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Regression: the guest's console was kept raw and whole: a guest
/// printing terminal escapes in a loop gave a console.log of megabytes
/// that retitled the terminal of whoever read it.
#[test]
fn a_kept_console_is_escaped_line_by_line_and_only_its_tail_kept() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let hostile: String = (0..1000)
        .map(|i| format!("\x1b]0;pwned\x07line {i:04}\r\n"))
        .collect();
    let mut bytes = hostile.into_bytes();
    bytes.extend_from_slice(b"bad \xff byte\r\nno newline");
    std::fs::write(&console, bytes).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let cap = 1000;
    super::executor::keep_log(&context(&root), &console, cap).unwrap();
    let kept = std::fs::read(root.join("logs/console.log")).unwrap();
    let kept = String::from_utf8(kept).expect("escaped: UTF-8 alone");
    assert!(!kept.contains(['\x1b', '\x07', '\r']), "{kept:?}");
    let lines: Vec<&str> = kept.lines().collect();
    assert!(
        lines[0].starts_with("[earlier lines cut: only the last "),
        "{kept}"
    );
    // 26 bytes a line escaped: 37 of them, and the last two, fit in 1000.
    assert_eq!(
        lines[1..3],
        ["\\033]0;pwned\\007line 0963", "\\033]0;pwned\\007line 0964"]
    );
    assert_eq!(
        lines[lines.len() - 3..],
        [
            "\\033]0;pwned\\007line 0999",
            "bad \\377 byte",
            "no newline"
        ]
    );
    assert!(kept.len() <= cap + lines[0].len() + 1, "{}", kept.len());
    // A console within the cap is kept whole, with nothing said.
    super::executor::keep_log(&context(&root), &console, KEPT_LOG_MAX_BYTES).unwrap();
    let kept = std::fs::read_to_string(root.join("logs/console.log")).unwrap();
    assert!(kept.starts_with("\\033]0;pwned\\007line 0000\n"), "{kept}");
    assert_eq!(kept.lines().count(), 1002);
}

/// Regression: qemu-img's stderr was quoted raw, on several lines.
#[test]
fn a_qemu_img_failure_is_quoted_escaped_on_one_line() {
    let e = overlay_failed(
        "/vm/base\n.qcow2",
        b"qemu-img: /r/disk.qcow2: Could not open\n'/vm/base': \x1b[31mno such file\n",
    );
    let message = e.to_string();
    assert!(!message.contains(['\n', '\x1b']), "{message}");
    assert!(
        message.ends_with("on /vm/base\\n.qcow2: qemu-img: /r/disk.qcow2: Could not open\\n'/vm/base': \\033[31mno such file"),
        "{message}"
    );
}

/// Regression: a comma in the work directory's path (the result root's
/// directory) broke QEMU's option strings, or added options to them.
#[test]
fn commas_in_paths_are_doubled_inside_qemu_option_strings() {
    let spec = spec(VmDriverSpec::Qemu {
        image: Some("/vm/base.qcow2".into()),
        kernel: None,
        initrd: None,
        append: None,
        accel: Accel::Tcg,
    });
    let vm = Instance {
        name: "fruix-20260405T213444Z".into(),
        work_dir: PathBuf::from("/r/co,mma/.x.vm"),
        console: PathBuf::from("/r/co,mma/.x.vm/console.log"),
    };
    let line = command_line(&spec, &vm, 40022, 7, false);
    let after = |option: &str| {
        let at = line.iter().position(|a| a == option).unwrap();
        line[at + 1].clone()
    };
    assert_eq!(
        after("-qmp"),
        "unix:/r/co,,mma/.x.vm/qmp.sock,server=on,wait=off"
    );
    assert_eq!(
        after("-drive"),
        "file=/r/co,,mma/.x.vm/disk.qcow2,format=qcow2,if=virtio"
    );
    // The console file is fruix's to write: no path of it reaches QEMU.
    assert_eq!(after("-chardev"), "socket,id=console,fd=7");
    assert_eq!(after("-serial"), "chardev:console");
}

/// A QEMU guest booted from a kernel alone, under TCG.
fn kernel_only_qemu() -> VmSpec {
    spec(VmDriverSpec::Qemu {
        image: None,
        kernel: Some("/vm/vmlinuz".into()),
        initrd: None,
        append: None,
        accel: Accel::Tcg,
    })
}

/// A QEMU driver whose guest's emulator (`sleep`, standing in) runs and
/// never answers on its QMP socket, which accepts connections (as a
/// stopped qemu's does); the instance, in `dir`, and the socket.
fn qemu_that_never_answers(
    dir: &std::path::Path,
) -> (Qemu, Instance, std::os::unix::net::UnixListener, u32) {
    let spec = kernel_only_qemu();
    let vm = Instance {
        name: "fruix-20260405T213444Z".into(),
        work_dir: dir.to_path_buf(),
        console: dir.join("console.log"),
    };
    let qmp = std::os::unix::net::UnixListener::bind(dir.join("qmp.sock")).unwrap();
    qmp.set_nonblocking(true).unwrap();
    let child = tokio::process::Command::new("sleep")
        .arg("600")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    (Qemu::with_child(spec, child), vm, qmp, pid)
}

/// Whether the process `pid` is still there (not reaped).
fn alive(pid: u32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::test_kill_process(pid).is_ok()
}

/// Regression: after Ctrl-C (no grace) the teardown still pressed the power
/// button through QMP and awaited QEMU's answer with no time limit: a qemu
/// that never answers (stopped with SIGSTOP) hung fruix for ever. Now it is
/// stopped hard at once, without asking.
#[tokio::test]
async fn without_grace_a_qemu_that_never_answers_is_stopped_hard_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, vm, qmp, pid) = qemu_that_never_answers(dir.path());
    let began = std::time::Instant::now();
    let stopped =
        tokio::time::timeout(Duration::from_secs(10), driver.stop(&vm, Duration::ZERO)).await;
    assert!(stopped.is_ok(), "the teardown hung");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(!alive(pid), "the emulator was killed and reaped");
    let asked = qmp.accept();
    assert!(asked.is_err(), "the power button was pressed: {asked:?}");
}

/// Regression: the power button's QMP exchange was awaited before the grace
/// period began, with no limit of its own: a qemu that never answers
/// hung the teardown whatever the grace.
#[tokio::test]
async fn the_power_button_and_the_power_off_share_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, vm, _qmp, pid) = qemu_that_never_answers(dir.path());
    let grace = Duration::from_millis(500);
    let began = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(10), driver.stop(&vm, grace)).await;
    assert!(stopped.is_ok(), "the teardown hung");
    assert!(began.elapsed() >= grace, "{:?}", began.elapsed());
    assert!(!alive(pid), "the emulator was killed and reaped");
}

/// Regression: the grace period was chosen once, before the teardown: a
/// Ctrl-C while a guest ignored its power button waited out the whole
/// shutdown timeout. A cancellation during the grace now stops it hard at
/// once.
#[tokio::test]
async fn a_cancellation_during_the_grace_period_stops_the_guest_hard_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, vm, qmp, pid) = qemu_that_never_answers(dir.path());
    let qmp = tokio::net::UnixListener::from_std(qmp).unwrap();
    let cancel = CancellationToken::new();
    let started = Started {
        prepared: true,
        booted: true,
    };
    let torn = teardown_until(&driver, Duration::from_secs(600), &vm, started, &cancel);
    // Ctrl-C once the power button is being pressed.
    let ctrl_c = async {
        let pressed = qmp.accept().await;
        cancel.cancel();
        pressed
    };
    let (torn, _pressed) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(torn, ctrl_c)
    })
    .await
    .expect("the teardown waited out the grace period");
    torn.unwrap();
    assert!(!alive(pid), "the emulator was killed and reaped");
}

/// An emulator that starts and never greets on its QMP socket (as a QEMU
/// stuck starting): a script in `dir` that writes its pid to the file it
/// returns second, then sleeps. It is written by a process of its own: a
/// file this process had open for writing could be inherited by a child
/// another test forks, and then not executed (`ETXTBSY`).
fn emulator_that_never_greets(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (script, pid) = (dir.join("emulator"), dir.join("emulator.pid"));
    let text = format!(
        "#!/bin/sh\necho $$ >'{pid}.new' && mv '{pid}.new' '{pid}'\nexec sleep 600\n",
        pid = pid.display()
    );
    let written = std::process::Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" >\"$2\" && chmod +x \"$2\"", "sh"])
        .arg(text)
        .arg(&script)
        .status()
        .unwrap();
    assert!(written.success());
    (script, pid)
}

/// Regression: booting took no cancellation: Ctrl-C while QEMU had not
/// greeted on its QMP socket yet waited for the greeting (up to the boot
/// timeout), and the run was dropped only after the runner's grace. The
/// boot now ends at once, cancelled, and the teardown kills the emulator.
#[tokio::test]
async fn a_cancellation_while_qemu_starts_ends_the_boot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, pid_file) = emulator_that_never_greets(dir.path());
    let spec = VmSpec {
        boot_timeout: Duration::from_secs(600),
        ..kernel_only_qemu()
    };
    let driver = Qemu::new(spec).with_emulator(emulator);
    let vm = Instance {
        name: "fruix-20260405T213444Z".into(),
        work_dir: dir.path().to_path_buf(),
        console: dir.path().join("console.log"),
    };
    let cancel = CancellationToken::new();
    // Ctrl-C once the emulator runs.
    let started = up_cancelled_when(&driver, &vm, || pid_file.exists(), &cancel).await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let torn = teardown_until(&driver, Duration::from_secs(600), &vm, started, &cancel);
    tokio::time::timeout(Duration::from_secs(10), torn)
        .await
        .expect("the teardown waited out the grace period")
        .unwrap();
    assert!(!alive(pid), "the emulator was killed and reaped");
}

/// A driver whose guest is running (or has stopped) with QEMU's log
/// `log`.
#[derive(Debug)]
struct Booting {
    running: bool,
    log: PathBuf,
}

#[async_trait]
impl VmDriver for Booting {
    async fn prepare(&self, _vm: &Instance, _cancel: &CancellationToken) -> Result<()> {
        Ok(())
    }
    async fn boot(&self, _vm: &Instance, _cancel: &CancellationToken) -> Result<Endpoint> {
        unreachable!()
    }
    async fn running(&self, _vm: &Instance) -> bool {
        self.running
    }
    async fn stop(&self, _vm: &Instance, _grace: Duration) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _vm: &Instance) -> Result<()> {
        Ok(())
    }
    fn own_log(&self, _vm: &Instance) -> Option<PathBuf> {
        Some(self.log.clone())
    }
}

/// Regression: a guest whose QEMU refused to start (a missing kernel, more
/// memory than the host has) failed with "its console is empty" alone:
/// QEMU's reason went to a log nobody read. It is quoted, escaped, naming
/// where the log is kept.
#[tokio::test]
async fn a_guest_that_stops_while_booting_quotes_its_emulator_s_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("qemu.log");
    std::fs::write(
        &log,
        "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\x1b[2J\n",
    )
    .unwrap();
    let driver = Booting {
        running: false,
        log,
    };
    let mut vm = instance();
    vm.console = dir.path().join("console.log");
    // Nothing listens there: no banner.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port,
    };
    let logs = std::path::Path::new("/results/r1/logs");
    let spec = kernel_only_qemu();
    let e = wait_for_ssh_with_logs(
        &driver,
        &spec,
        &vm,
        endpoint,
        Some(logs),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("stopped while booting; its log (/results/r1/logs/qemu.log) ends with:\n  qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\\033[2J\n; its console is empty"),
        "{message}"
    );
}

/// Regression: a cancellation while the SSH banner was awaited took effect
/// only once that attempt ended (up to 2 s; against a stopped qemu, whose
/// forwarded port accepts and never answers, every time).
#[tokio::test]
async fn a_cancellation_while_the_banner_is_awaited_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Booting {
        running: true,
        log: dir.path().join("qemu.log"),
    };
    // Accepts, never says anything.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: silent.local_addr().unwrap().port(),
    };
    let spec = kernel_only_qemu();
    let cancel = CancellationToken::new();
    let vm = instance();
    let wait = super::wait_for_ssh(&driver, &spec, &vm, endpoint, &cancel);
    let ctrl_c = async {
        let connection = silent.accept().await.unwrap();
        cancel.cancel();
        (connection, std::time::Instant::now())
    };
    let (waited, (_connection, cancelled_at)) = tokio::join!(wait, ctrl_c);
    assert!(matches!(waited, Err(Error::Cancelled)), "{waited:?}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "{:?} after the cancellation",
        cancelled_at.elapsed()
    );
}

#[tokio::test]
async fn two_runs_of_one_vm_executor_drive_two_guests() {
    // Each run gets a driver of its own: stopping and destroying one run's
    // guest never touches the other's (a shared driver kept one uuid).
    let recorder = Arc::new(Recorder::default());
    recorder.answer_once("xe vm-install", printed("uuid-a\n"));
    recorder.answer_once("xe vm-install", printed("uuid-b\n"));
    let spec = spec(VmDriverSpec::XcpNg {
        master: "root@xcp-master.example".into(),
        template: "freebsd-15-approved".into(),
        master_key: None,
        master_host_key: None,
    });
    let host: Arc<dyn super::driver::Host> = recorder.clone();
    let (a, b) = (driver_for_run(&spec, &host), driver_for_run(&spec, &host));
    let (vm_a, vm_b) = (
        instance(),
        Instance {
            name: "fruix-20260405T213445Z".into(),
            ..instance()
        },
    );
    a.prepare(&vm_a, &CancellationToken::new()).await.unwrap();
    b.prepare(&vm_b, &CancellationToken::new()).await.unwrap();
    a.stop(&vm_a, Duration::ZERO).await.unwrap();
    a.destroy(&vm_a).await.unwrap();
    let plan = recorder.plan();
    let touched = |uuid: &str| {
        plan.iter()
            .filter(|c| c.contains(&format!("uuid={uuid}")))
            .count()
    };
    assert!(touched("uuid-a") >= 2, "{plan:#?}");
    assert_eq!(touched("uuid-b"), 0, "{plan:#?}");
    b.destroy(&vm_b).await.unwrap();
    assert!(
        recorder
            .plan()
            .contains(&"xe vm-uninstall uuid=uuid-b force=true".to_string()),
        "{:#?}",
        recorder.plan()
    );
}

/// Regression: the XCP-ng pool master was logged into with the machine's
/// `private-key`, the guest's, and its host key could not be pinned.
#[test]
fn the_xcp_ng_master_is_reached_with_its_own_key_and_host_key() {
    use crate::ssh::HostKeyPolicy;
    use fruix_core::machines::Machines;

    let file = &format!(
        r#"(fruix-machines
  (machine (name "x") (user "root") (private-key "/keys/guest")
    (vm (driver xcp-ng) (master "admin@xcp-master.example:2222") (template "freebsd-15-approved")
        (master-key "/keys/master") (master-host-key "{PINNED_MASTER_HOST_KEY}")
        (host-key "{PINNED_HOST_KEY}")))
  (machine (name "plain") (user "root") (private-key "/keys/guest")
    (vm (driver xcp-ng) (master "root@xcp-master.example") (template "freebsd-15-approved")
        (host-key "{PINNED_HOST_KEY}")))
  (machine (name "q") (user "root") (private-key "/keys/guest")
    (vm (driver qemu) (image "/vm/base.qcow2") (host-key "{PINNED_HOST_KEY}"))))"#
    );
    let machines = Machines::parse(std::path::Path::new("machines.scm"), file).unwrap();
    let master = |name: &str| super::executor::master_of(machines.get(name).unwrap()).unwrap();

    let own = master("x").expect("an XCP-ng machine has a master");
    let options = own.options();
    assert_eq!(options.target.to_string(), "admin@xcp-master.example:2222");
    assert_eq!(options.identity, Some(PathBuf::from("/keys/master")));
    assert_eq!(
        options.host_keys,
        HostKeyPolicy::Pinned(PINNED_MASTER_HOST_KEY.into())
    );

    // Without them: the agent's keys, then ~/.ssh/id_* (never the guest's
    // key), and the master's key must be in ~/.ssh/known_hosts.
    let plain = master("plain").expect("an XCP-ng machine has a master");
    assert_eq!(plain.options().identity, None);
    assert_eq!(
        plain.options().host_keys,
        HostKeyPolicy::known_hosts(None, false)
    );

    // The other drivers run their commands here.
    assert!(master("q").is_none());
}

/// Regression: a missing or unreadable kernel, initrd, image or private key
/// was found only once the guest had booted (or not), as the machine's
/// failure (exit 3), which a matrix sets the machine aside for. Each is
/// a configuration error now, before anything boots.
#[test]
fn missing_guest_files_are_configuration_errors_before_anything_boots() {
    use super::executor::VmConfig;
    use fruix_core::executor::ExecutorConfig;

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, name).unwrap();
        path.display().to_string()
    };
    let (kernel, initrd, image, key) = (
        file("vmlinuz"),
        file("initrd.img"),
        file("base.qcow2"),
        file("id_ed25519"),
    );
    // A qcow2 image starts so.
    std::fs::write(&image, b"QFI\xfb\0\0\0\x03").unwrap();
    let machines = |kernel: &str, key: &str| {
        let path = dir.path().join("machines.scm");
        std::fs::write(
            &path,
            format!(
                "(fruix-machines (machine (name \"q\") (user \"root\") (private-key {key:?})\n  (vm (driver qemu) (kernel {kernel:?}) (initrd {initrd:?}) (image {image:?}) (host-key \"{PINNED_HOST_KEY}\"))))"
            ),
        )
        .unwrap();
        path
    };
    let build = |machines: PathBuf, identity: Option<&str>| {
        VmConfig(GuestConfig {
            machines: Some(machines),
            machine: Some("q".into()),
            identity: identity.map(PathBuf::from),
            ..GuestConfig::default()
        })
        .build()
    };
    build(machines(&kernel, &key), None).unwrap();
    let refused = |machines: PathBuf, identity: Option<&str>, says: &str| {
        let e = build(machines, identity).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { .. }) && e.to_string().contains(says),
            "{says}: {e}"
        );
    };
    let missing = dir.path().join("missing").display().to_string();
    let directory = dir.path().display().to_string();
    let cases = [
        (
            (&missing, &key),
            None,
            format!("the `kernel` of machine \"q\" {missing} cannot be read: No such file"),
        ),
        (
            (&directory, &key),
            None,
            format!("the `kernel` of machine \"q\" {directory} is not a regular file"),
        ),
        (
            (&kernel, &missing),
            None,
            format!("the `private-key` of machine \"q\" {missing} cannot be read"),
        ),
        (
            (&kernel, &key),
            Some("/nonexistent"),
            "`identity` /nonexistent cannot be read".to_string(),
        ),
    ];
    // Each machines file written just before it is read.
    for ((kernel, key), identity, says) in cases {
        refused(machines(kernel, key), identity, &says);
    }
    // An identity given replaces the machine's key, which is not read.
    build(machines(&kernel, &missing), Some(&key)).unwrap();
    // Regression: a base image that is not qcow2 (a raw disk) failed only
    // once qemu-img could not make an overlay of it, as the machine's
    // failure. It is refused before anything boots, and so is one too
    // short to say.
    for raw in [&[0u8; 512][..], b"QFI"] {
        std::fs::write(&image, raw).unwrap();
        refused(
            machines(&kernel, &key),
            None,
            &format!("the `image` of machine \"q\" {image} is not a qcow2 image"),
        );
    }
}

/// A machines file in `dir` of one QEMU machine `q` booting an empty
/// kernel file there.
fn kernel_only_machines(dir: &std::path::Path) -> PathBuf {
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, "").unwrap();
    let machines = dir.join("machines.scm");
    std::fs::write(
        &machines,
        format!(
            "(fruix-machines (machine (name \"q\") (user \"root\")\n  (vm (driver qemu) (kernel {:?}) (host-key \"{}\"))))",
            kernel.display().to_string(),
            PINNED_HOST_KEY
        ),
    )
    .unwrap();
    machines
}

/// Regression: a key of the other inner mode (`guest_helper` with
/// inner=host-initiated, `make` with the default guest-self-hosted) was
/// silently dropped, and the build went on without it. It is refused.
#[test]
fn a_key_of_the_other_inner_mode_is_refused() {
    use super::executor::VmConfig;
    use fruix_core::executor::ExecutorConfig;

    let dir = tempfile::tempdir().unwrap();
    let machines = kernel_only_machines(dir.path());
    let config = |inner: Option<&str>, helper: Option<&str>, make: Option<&str>| {
        VmConfig(GuestConfig {
            machines: Some(machines.clone()),
            machine: Some("q".into()),
            inner: inner.map(String::from),
            guest_helper: helper.map(String::from),
            make: make.map(String::from),
            ..GuestConfig::default()
        })
    };
    for (inner, helper, make, says) in [
        (
            Some("host-initiated"),
            Some("/x"),
            None,
            "`guest_helper` is for inner=guest-self-hosted",
        ),
        (
            None,
            None,
            Some("gmake"),
            "`make` is for inner=host-initiated",
        ),
    ] {
        let e = config(inner, helper, make).build().unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { .. }) && e.to_string().contains(says),
            "{says}: {e}"
        );
    }
    config(Some("host-initiated"), None, Some("gmake"))
        .build()
        .unwrap();
    config(None, Some("/x"), None).build().unwrap();
}

/// Regression: `vm` took none of the guest executors' caps and timeouts
/// (`import_max_*`, `output_max_line_bytes`, `connect_timeout_secs`,
/// `command_timeout_secs`) nor `guest_signing_key`: a VM build could not
/// be tuned as the same build on a running guest. It takes every key of
/// theirs but those naming or trusting a running guest, and passes them
/// to the inner mode.
#[test]
fn vm_takes_the_guest_keys_but_those_of_a_running_guest() {
    use super::executor::VmConfig;
    use fruix_core::executor::ExecutorConfig;

    let keys: Vec<String> = VmConfig::keys().into_iter().map(|k| k.name).collect();
    for key in [
        "import_max_bytes",
        "import_max_header_bytes",
        "output_max_line_bytes",
        "connect_timeout_secs",
        "command_timeout_secs",
        "guest_signing_key",
        "inner",
        "machines",
    ] {
        assert!(keys.contains(&key.to_string()), "{key}: {keys:?}");
    }
    for key in ["guest", "known_hosts", "accept_new_host_key"] {
        assert!(!keys.contains(&key.to_string()), "{key}: {keys:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let machines = kernel_only_machines(dir.path());
    let config = |tune: fn(&mut GuestConfig)| {
        let mut config = GuestConfig {
            machines: Some(machines.clone()),
            machine: Some("q".into()),
            ..GuestConfig::default()
        };
        tune(&mut config);
        VmConfig(config).build()
    };
    config(|c| c.import_max_bytes = Some(1 << 20)).unwrap();
    type Tune = fn(&mut GuestConfig);
    let refused: [(Tune, &str); 5] = [
        // Checked by the inner mode's own checks: the key reaches it.
        (
            |c| c.import_max_bytes = Some(0),
            "`import_max_bytes` must be at least 1",
        ),
        (
            |c| c.guest_signing_key = Some("key".into()),
            "`guest_signing_key` \"key\" is relative",
        ),
        (
            |c| c.guest = Some("root@h".into()),
            "`guest` is not a key of vm",
        ),
        (
            |c| c.accept_new_host_key = true,
            "`accept_new_host_key` is not a key of vm",
        ),
        (
            |c| {
                c.inner = Some("host-initiated".into());
                c.guest_signing_key = Some("/k".into());
            },
            "`guest_signing_key` is for inner=guest-self-hosted",
        ),
    ];
    for (tune, says) in refused {
        let e = config(tune).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { .. }) && e.to_string().contains(says),
            "{says}: {e}"
        );
    }
}

/// Makes the work directory of run `r1` in `dir` for `guest` (machine,
/// driver, name) and abandons it, as a fruix killed outright does; then
/// sweeps `dir` as a run on machine `machine` of `spec` does, its commands
/// recorded. The warnings.
async fn sweep_after_a_kill(
    dir: &std::path::Path,
    guest: [&str; 3],
    machine: &str,
    (spec, recorder): (&VmSpec, &Arc<Recorder>),
) -> Vec<String> {
    let [machine_of, driver, name] = guest.map(String::from);
    let guest = workdir::Guest {
        machine: machine_of,
        driver,
        name,
    };
    drop(workdir::create(&dir.join("r1"), &guest).unwrap());
    sweep_as(dir, machine, (spec, recorder)).await
}

/// [`sweep_after_a_kill`] of a killed run whose bhyve guest `name` ran
/// on `bhyve-1`, by a run there.
async fn sweep_a_killed_bhyve_guest(
    dir: &std::path::Path,
    name: &str,
    run: (&VmSpec, &Arc<Recorder>),
) -> Vec<String> {
    sweep_after_a_kill(dir, ["bhyve-1", "bhyve", name], "bhyve-1", run).await
}

/// Sweeps `dir` as a run on machine `machine` of `spec` does, its commands
/// recorded. The warnings.
async fn sweep_as(
    dir: &std::path::Path,
    machine: &str,
    (spec, recorder): (&VmSpec, &Arc<Recorder>),
) -> Vec<String> {
    let host: Arc<dyn Host> = recorder.clone();
    let (events, mut received) = EventSink::channel();
    let run = (machine, spec, &host);
    sweep_beside(dir, run, &events, &CancellationToken::new()).await;
    drop(events);
    let mut warnings = Vec::new();
    while let Ok(event) = received.try_recv() {
        if let fruix_core::executor::Event::Warning { message } = event {
            warnings.push(message);
        }
    }
    warnings
}

/// Regression: a bhyve guest started by a fruix killed outright ran on
/// (bhyve runs under daemon), and its clone stayed: the next run removed
/// only the work directory, which held the pid file that could stop it.
/// The next run on that machine now stops and destroys the guest its
/// `guest` file names, then removes the directory.
#[tokio::test]
async fn a_killed_runs_bhyve_guest_is_torn_down_by_the_next_run_on_its_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (_, recorder, spec) = bhyve();
    // The guest stops at the power button.
    recorder.answer("test -e ", failed(""));
    let name = "fruix-r1-00000000000000aa";
    let warnings = sweep_a_killed_bhyve_guest(dir.path(), name, (&spec, &recorder)).await;
    let work = dir.path().join(".r1.vm");
    let pid_file = work.join("bhyve.pid").display().to_string();
    assert_eq!(
        recorder.plan(),
        [
            format!("pkill -TERM -F {pid_file}"),
            format!("test -e {pid_file}"),
            format!("bhyvectl --vm={name} --destroy"),
            format!("test -e {pid_file}"),
            format!("zfs list -H -o name zroot/vm/freebsd-15-{name}"),
            format!("zfs destroy zroot/vm/freebsd-15-{name}"),
        ]
    );
    assert!(!work.exists(), "removed once its guest is gone");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains(&format!("destroyed guest {name}")));
    assert!(warnings[1].starts_with("removed "), "{warnings:?}");
}

/// A killed run's XCP-ng VM, whose uuid died with that fruix, is found by
/// its name and uninstalled.
#[tokio::test]
async fn a_killed_runs_xcpng_vm_is_uninstalled_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, recorder, spec) = xcpng();
    let name = "fruix-r1-00000000000000bb";
    recorder.answer("xe vm-list", printed("77-uuid\n"));
    sweep_after_a_kill(
        dir.path(),
        ["xcp-1", "xcp-ng", name],
        "xcp-1",
        (&spec, &recorder),
    )
    .await;
    assert_eq!(
        recorder.plan(),
        [
            format!("xe vm-list name-label={name} --minimal"),
            "xe vm-uninstall uuid=77-uuid force=true".to_string(),
        ]
    );
    assert!(!dir.path().join(".r1.vm").exists());
}

/// A killed run's bhyve guest on another machine (or another driver) is
/// not this run's to stop: its directory, and the pid file in it, stay for
/// a run there; a guest it cannot stop keeps its directory too. A QEMU
/// guest died with its fruix: its directory goes whichever machine it was.
#[tokio::test]
async fn a_sweep_leaves_what_it_cannot_tear_down() {
    let (_, recorder, spec) = bhyve();
    let dir = tempfile::tempdir().unwrap();
    let other = ["bhyve-2", "bhyve", "fruix-r1-00000000000000c1"];
    let warnings = sweep_after_a_kill(dir.path(), other, "bhyve-1", (&spec, &recorder)).await;
    assert_eq!(recorder.plan(), Vec::<String>::new());
    assert!(dir.path().join(".r1.vm").is_dir());
    assert!(
        warnings[0]
            .contains("bhyve guest fruix-r1-00000000000000c1 may still run on machine bhyve-2"),
        "{warnings:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    recorder.answer("test -e ", failed(""));
    recorder.answer("zfs destroy", failed("dataset is busy"));
    let ours = ["bhyve-1", "bhyve", "fruix-r1-00000000000000c2"];
    let warnings = sweep_after_a_kill(dir.path(), ours, "bhyve-1", (&spec, &recorder)).await;
    assert!(dir.path().join(".r1.vm").is_dir(), "kept for the next run");
    assert!(
        warnings[0].contains("could not be stopped and destroyed")
            && warnings[0].contains("dataset is busy"),
        "{warnings:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let before = recorder.plan().len();
    let qemu = ["vm-linux", "qemu", "fruix-r1-00000000000000c3"];
    sweep_after_a_kill(dir.path(), qemu, "bhyve-1", (&spec, &recorder)).await;
    assert_eq!(recorder.plan().len(), before, "nothing to stop");
    assert!(!dir.path().join(".r1.vm").exists());
}

/// Regression: run as root, the sweep took directories another user
/// planted beside the result root (in a directory of mode 1777) for work
/// directories of killed runs: it removed them, and stopped and destroyed
/// the guests they named, whatever the name (`prod-db`, on bhyve by
/// `pkill -F` on a pid file of theirs). Only this user's own work
/// directories are swept now, and only guests named as fruix names them
/// are torn down; a directory of ours naming another guest is left alone,
/// named in a warning.
#[tokio::test]
async fn a_sweep_tears_down_nothing_another_user_planted() {
    use std::os::unix::fs::{lchown, PermissionsExt};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test gives files to another user: run it as root (scripts/test.sh)"
    );
    let (_, recorder, spec) = bhyve();
    recorder.answer("test -e ", failed(""));
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let plant = |name: &str, guest: &str, owner: Option<u32>| {
        let work = dir.path().join(name);
        std::fs::create_dir(&work).unwrap();
        for (file, text) in [(".lock", ""), ("precious", "x"), ("guest", guest)] {
            std::fs::write(work.join(file), text).unwrap();
            lchown(work.join(file), owner, owner).unwrap();
        }
        lchown(&work, owner, owner).unwrap();
        work
    };
    let nobody = Some(65534);
    let planted = [
        plant(".other.vm", "m\nqemu\nnot-a-fruix-guest\n", nobody),
        plant(".planted.vm", "bhyve-1\nbhyve\nprod-db\n", nobody),
        plant(
            ".theirs.vm",
            "bhyve-1\nbhyve\nfruix-r1-00000000000000d1\n",
            nobody,
        ),
    ];
    let ours = plant(".ours.vm", "bhyve-1\nbhyve\nprod-db\n", None);
    let warnings = sweep_as(dir.path(), "bhyve-1", (&spec, &recorder)).await;
    assert_eq!(recorder.plan(), Vec::<String>::new(), "nothing stopped");
    for work in planted.iter().chain([&ours]) {
        assert!(work.join("precious").is_file(), "{}", work.display());
    }
    assert_eq!(
        warnings,
        [format!(
            "{}, named like the work directory of a VM run, is left alone: its guest file names guest \"prod-db\", not a name fruix gives a guest",
            ours.display()
        )]
    );
    // A work directory of ours, of a killed run, is still swept.
    std::fs::remove_dir_all(&ours).unwrap();
    let name = "fruix-r2-00000000000000d2";
    let warnings = sweep_a_killed_bhyve_guest(dir.path(), name, (&spec, &recorder)).await;
    assert!(
        recorder
            .plan()
            .iter()
            .any(|line| line == &format!("bhyvectl --vm={name} --destroy")),
        "{:?}",
        recorder.plan()
    );
    assert!(
        recorder.plan().iter().all(|line| !line.contains("prod-db")
            && !line.contains("not-a-fruix-guest")
            && !line.contains("d1")),
        "{:?}",
        recorder.plan()
    );
    assert!(!dir.path().join(".r1.vm").exists());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for work in planted {
        assert!(work.join("precious").is_file(), "{}", work.display());
    }
}

#[test]
fn guest_names_differ_for_one_run_id() {
    let (a, b) = (
        guest_name("20260405T213444Z"),
        guest_name("20260405T213444Z"),
    );
    assert_ne!(a, b);
    assert!(
        a.starts_with("fruix-20260405T213444Z-") && a.len() == 39,
        "{a}"
    );
    assert!(guest_name("r+1").starts_with("fruix-r_1-"), "no + for ZFS");
}
