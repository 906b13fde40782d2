//! Recorded plans of the bhyve and XCP-ng drivers: the exact commands, in
//! order, of a guest's whole life, and the teardown after a failure at each
//! step (prepare, boot, wait for SSH, the build, the import).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::executor::EventSink;
use fruix_core::vm::{Accel, VmDriverSpec, VmSpec};
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::bhyve::Bhyve;
use super::driver::{Endpoint, Host, Instance, Output, VmDriver};
use super::executor::driver_for_run;
use super::qemu::command_line;
use super::xcpng::{address_of, XcpNg};
use super::{bring_up, console_quote, teardown, Started};

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
        host_key: "ssh-ed25519 AAAAkey".into(),
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
    // The guest stops at the ACPI power button; the clone exists.
    recorder.answer("test -e /dev/vmm/", failed(""));
    let driver = Bhyve {
        spec: spec.clone(),
        host: recorder.clone(),
    };
    (driver, recorder, spec)
}

const BHYVE_PREPARE: &str =
    "zfs clone zroot/vm/freebsd-15@approved zroot/vm/freebsd-15-fruix-20260405T213444Z";
const BHYVE_LOAD: &str = "bhyveload -m 1024M -d /dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z fruix-20260405T213444Z";
const BHYVE_RUN: &str = "daemon -p /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid bhyve -A -H -P -c 2 -m 1024M -s 0:0,hostbridge -s 1:0,lpc -s 2:0,virtio-net,tap3 -s 3:0,virtio-blk,/dev/zvol/zroot/vm/freebsd-15-fruix-20260405T213444Z -l com1,/var/lib/fruix/vm/fruix-20260405T213444Z/console.log fruix-20260405T213444Z";
const BHYVE_STOP: [&str; 3] = [
    "pkill -TERM -F /var/lib/fruix/vm/fruix-20260405T213444Z/bhyve.pid",
    "test -e /dev/vmm/fruix-20260405T213444Z",
    "bhyvectl --vm=fruix-20260405T213444Z --destroy",
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
    // A guest that ignores the power button is powered off hard.
    let ignores_power_button = |r: &Recorder| {
        r.answers.lock().unwrap().clear();
        r.answer("test -e /dev/vmm/", printed(""));
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

fn xcpng() -> Recorded<XcpNg> {
    let recorder = Arc::new(Recorder::default());
    let spec = spec(VmDriverSpec::XcpNg {
        master: "root@xcp-master.example".into(),
        template: "freebsd-15-approved".into(),
        master_key: None,
        master_host_key: None,
    });
    recorder.answer("xe vm-clone", printed("5a1f-uuid\n"));
    // No address on the first ask (the guest tools are not up yet).
    recorder.answer_once("param-name=networks", printed(""));
    recorder.answer(
        "param-name=networks",
        printed("0/ip: 10.0.0.7; 0/ipv6/0: fe80::1"),
    );
    let driver = XcpNg::new(spec.clone(), recorder.clone());
    (driver, recorder, spec)
}

const XE_PREPARE: &str = "xe vm-clone vm=freebsd-15-approved new-name-label=fruix-20260405T213444Z";
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
    // The clone fails: nothing to stop or uninstall.
    let (error, plan) = failing_command(xcpng, "xe vm-clone", "no such template").await;
    assert!(error.to_string().contains("no such template"));
    assert_eq!(plan, [XE_PREPARE]);
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
    driver.prepare(&instance()).await.unwrap();
    recorder.hang(XE_STOP);
    let grace = Duration::from_secs(30);
    let began = tokio::time::Instant::now();
    driver.stop(&instance(), grace).await.unwrap();
    assert!(began.elapsed() >= grace, "the clean shutdown had its grace");
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
    assert!(recorder.running.lock().unwrap().is_empty());
}

/// Without a grace period (after a cancellation) the guest is stopped hard
/// at once: no clean shutdown is started only to be stopped.
#[tokio::test(start_paused = true)]
async fn xcpng_without_grace_forces_the_shutdown_at_once() {
    let (driver, recorder, _) = xcpng();
    driver.prepare(&instance()).await.unwrap();
    recorder.hang(XE_STOP);
    driver.stop(&instance(), Duration::ZERO).await.unwrap();
    assert_eq!(
        recorder.plan(),
        [XE_PREPARE, "xe vm-shutdown uuid=5a1f-uuid --force"]
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
fn the_qemu_command_line_forwards_only_ssh_on_loopback_and_logs_the_console() {
    let spec = spec(VmDriverSpec::Qemu {
        image: None,
        kernel: Some("/vm/vmlinuz".into()),
        initrd: Some("/vm/initrd.img".into()),
        append: Some("console=ttyS0".into()),
        accel: Accel::Auto,
    });
    let line = command_line(&spec, &instance(), 40022, false).join(" ");
    for part in [
        "-machine q35,accel=tcg",
        "-m 1024M -smp 2",
        "-serial file:/var/lib/fruix/vm/fruix-20260405T213444Z/console.log",
        "-qmp unix:/var/lib/fruix/vm/fruix-20260405T213444Z/qmp.sock,server=on,wait=off",
        "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22",
        "-kernel /vm/vmlinuz -initrd /vm/initrd.img -append console=ttyS0",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(!line.contains("-drive"), "an initramfs guest has no disk");
    let kvm = command_line(&spec, &instance(), 40022, true).join(" ");
    assert!(kvm.contains("accel=kvm"));
}

#[test]
fn a_boot_failure_quotes_the_last_console_lines_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = instance();
    vm.console = dir.path().join("console.log");
    assert_eq!(console_quote(&vm), "; its console is empty");
    let lines: String = (0..30).map(|i| format!("line {i}\r\n")).collect();
    std::fs::write(&vm.console, format!("{lines}Kernel panic\x1b[31m\n")).unwrap();
    let quote = console_quote(&vm);
    assert!(
        quote.contains("line 29") && !quote.contains("line 10\n"),
        "{quote}"
    );
    assert!(quote.ends_with("Kernel panic\\033[31m"), "{quote}");
}

#[test]
fn the_console_replaces_a_guest_s_console_log_and_never_writes_through_one() {
    use std::fs;
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console");
    fs::write(&console, "reboot: Power down\n").unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let context = |root: &std::path::Path| {
        let request = fruix_core::testing::sample_request("vm", vec!["world".into()]);
        fruix_core::testing::run_context(request, root, EventSink::discard())
    };

    // The guest's result root came with logs/console.log -> victim.
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("logs")).unwrap();
    symlink(&victim, root.join("logs/console.log")).unwrap();
    super::executor::keep_console(&context(&root), &console).unwrap();
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
    let e = super::executor::keep_console(&context(&root), &console).unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e:?}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[tokio::test]
async fn two_runs_of_one_vm_executor_drive_two_guests() {
    // Each run gets a driver of its own: stopping and destroying one run's
    // guest never touches the other's (a shared driver kept one uuid).
    let recorder = Arc::new(Recorder::default());
    recorder.answer_once("xe vm-clone", printed("uuid-a\n"));
    recorder.answer_once("xe vm-clone", printed("uuid-b\n"));
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
    a.prepare(&vm_a).await.unwrap();
    b.prepare(&vm_b).await.unwrap();
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

    let file = r#"(fruix-machines
  (machine (name "x") (user "root") (private-key "/keys/guest")
    (vm (driver xcp-ng) (master "admin@xcp-master.example:2222") (template "freebsd-15-approved")
        (master-key "/keys/master") (master-host-key "ssh-ed25519 AAAAmaster")
        (host-key "ssh-ed25519 AAAAguest")))
  (machine (name "plain") (user "root") (private-key "/keys/guest")
    (vm (driver xcp-ng) (master "root@xcp-master.example") (template "freebsd-15-approved")
        (host-key "ssh-ed25519 AAAAguest")))
  (machine (name "q") (user "root") (private-key "/keys/guest")
    (vm (driver qemu) (image "/vm/base.qcow2") (host-key "ssh-ed25519 AAAAguest"))))"#;
    let machines = Machines::parse(std::path::Path::new("machines.scm"), file).unwrap();
    let master = |name: &str| super::executor::master_of(machines.get(name).unwrap()).unwrap();

    let own = master("x").expect("an XCP-ng machine has a master");
    let options = own.options();
    assert_eq!(options.target.to_string(), "admin@xcp-master.example:2222");
    assert_eq!(options.identity, Some(PathBuf::from("/keys/master")));
    assert_eq!(
        options.host_keys,
        HostKeyPolicy::Pinned("ssh-ed25519 AAAAmaster".into())
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
