//! The `local` executor end to end: real BSD make on the miniature FreeBSD
//! source tree `tests/fixtures/freebsd-src-mini`, through
//! `fruix_core::executor::run_executor`.
//!
//! These tests need BSD make (`make` on FreeBSD, `bmake` elsewhere) and a C
//! compiler; without them they fail, naming what is missing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fruix_core::executor::{base_artifacts, run_executor, BuildRequest, Event, EventSink};
use fruix_core::manifest::tree_signature;
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::testing::conformance::{Case, Suite};
use fruix_core::testing::{fixture_request, BASE_STEPS};
use fruix_core::{Error, LogRef, ResultRoot, TreeSignature};
use fruix_executors::driver::default_make;
use fruix_executors::local::LocalConfig;
use tokio_util::sync::CancellationToken;

const RUN_ID: &str = "20260405T213444Z";

fn fixture() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/freebsd-src-mini");
    path.canonicalize()
        .unwrap_or_else(|e| panic!("the fixture source tree {} is missing: {e}", path.display()))
}

/// Fails (never skips) when BSD make is not installed.
fn require_make() {
    let make = default_make();
    if let Err(e) = Command::new(make)
        .args(["-f", "/dev/null", "-V", "MAKE_VERSION"])
        .output()
    {
        panic!("these tests run BSD make `{make}`, which cannot be started ({e}); install it (apt-get install bmake, or pkg install bmake)");
    }
}

fn request(make_flags: &[&str], kernconf: &str, artifacts: Vec<String>) -> BuildRequest {
    let mut request = fixture_request(&fixture(), make_flags);
    request.run_id = RUN_ID.into();
    request.policy.kernconf = kernconf.into();
    request.artifacts = artifacts;
    request
}

/// A request for `artifacts` only.
fn wanting(artifacts: &[&str]) -> BuildRequest {
    let artifacts = artifacts.iter().map(|a| a.to_string()).collect();
    request(&[], "GENERIC", artifacts)
}

fn base_request(make_flags: &[&str]) -> BuildRequest {
    request(make_flags, "GENERIC", base_artifacts())
}

/// One run of the local executor into `dir/result`.
struct Run {
    root: PathBuf,
    result: fruix_core::Result<ResultRoot>,
    events: Vec<Event>,
}

impl Run {
    fn ok(&self) -> &ResultRoot {
        match &self.result {
            Ok(root) => root,
            Err(e) => panic!("the build failed: {e}\nevents: {:#?}", self.events),
        }
    }

    fn signatures(&self) -> BTreeMap<String, TreeSignature> {
        self.ok()
            .metadata()
            .artifacts
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.tree_signature.clone().expect("signed at the build site"),
                )
            })
            .collect()
    }

    fn work_dir(&self) -> PathBuf {
        self.root.with_file_name("result.work")
    }

    /// Stage names in the order they started.
    fn stages(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StageStarted { stage } => Some(stage.as_str()),
                _ => None,
            })
            .collect()
    }
}

async fn run_local(dir: &Path, config: LocalConfig, request: BuildRequest) -> Run {
    run_watched(dir, config, request, CancellationToken::new(), |_| {}).await
}

/// [`run_local`] with the default configuration.
async fn run_default(dir: &Path, request: BuildRequest) -> Run {
    run_local(dir, LocalConfig::default(), request).await
}

/// Runs the executor, calling `watch` on every event as it arrives.
async fn run_watched(
    dir: &Path,
    config: LocalConfig,
    request: BuildRequest,
    cancel: CancellationToken,
    mut watch: impl FnMut(&Event) + Send + 'static,
) -> Run {
    require_make();
    let root = dir.join("result");
    let executor = Arc::new(config.executor().unwrap());
    let (sink, mut rx) = EventSink::channel();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            watch(&event);
            events.push(event);
        }
        events
    });
    let result = run_executor(executor, request, &root, sink, cancel).await;
    let events = collector.await.unwrap();
    Run {
        root,
        result,
        events,
    }
}

/// Each stage's start comes before its log lines, which come before its end,
/// and stages do not overlap.
fn assert_events_in_order(events: &[Event]) {
    let mut open: Option<&str> = None;
    for event in events {
        match event {
            Event::StageStarted { stage } => {
                assert_eq!(open, None, "stage {stage} started inside stage {open:?}");
                open = Some(stage);
            }
            Event::Log { stage, .. } => {
                assert_eq!(open, Some(stage.as_str()), "log line outside its stage")
            }
            Event::StageFinished { stage, .. } => {
                assert_eq!(
                    open,
                    Some(stage.as_str()),
                    "stage {stage} finished without starting"
                );
                open = None;
            }
            Event::Progress { .. } | Event::Warning { .. } => {}
        }
    }
}

#[tokio::test]
async fn a_full_build_validates_with_four_signed_artifacts_and_ordered_events() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_default(dir.path(), base_request(&["-DNO_ROOT"])).await;
    let root = run.ok();
    let m = root.metadata();
    assert_eq!((m.executor.as_str(), m.run_id.as_str()), ("local", RUN_ID));
    assert!(!m.guest_host_name.is_empty());
    let names: Vec<_> = m.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["world", "kernel", "headers", "bootloader"]);
    for a in &m.artifacts {
        assert_eq!(a.path, format!("artifacts/{}", a.name));
        let recomputed = tree_signature(&run.root.join(&a.path)).unwrap();
        assert_eq!(
            a.tree_signature.as_ref(),
            Some(&recomputed),
            "signature of {}",
            a.name
        );
    }
    let probes: Vec<_> = m.artifacts.iter().map(|a| a.probe.as_str()).collect();
    assert_eq!(
        probes,
        [
            "bin/sh",
            "boot/kernel/kernel",
            "usr/include/sys/param.h",
            "boot/loader"
        ]
    );

    let artifacts = run.root.join("artifacts");
    assert!(
        artifacts.join("world/METALOG").is_file(),
        "-DNO_ROOT's METALOG is at the top of world"
    );
    assert!(
        artifacts.join("kernel/METALOG").is_file(),
        "installkernel's METALOG is at the top of kernel"
    );
    let su = std::fs::metadata(artifacts.join("world/usr/bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4555, "setuid survives");
    let localtime = std::fs::read_link(artifacts.join("world/etc/localtime")).unwrap();
    assert_eq!(
        localtime,
        Path::new("/usr/share/zoneinfo/UTC"),
        "absolute symlinks are kept verbatim"
    );
    assert!(
        artifacts.join("world/etc/master.passwd").is_file(),
        "distribution ran into world"
    );
    assert!(artifacts
        .join("bootloader/boot/defaults/loader.conf")
        .is_file());
    assert!(artifacts.join("bootloader/boot/loader.efi").is_file());
    assert!(!artifacts.join("bootloader/boot/kernel").exists());
    assert!(artifacts.join("kernel/boot/kernel/zfs.ko").is_file());

    assert_eq!(
        run.stages(),
        [&BASE_STEPS[..], &["collect", "sign"]].concat()
    );
    assert_events_in_order(&run.events);
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, Event::Log { stage, .. } if stage == "buildworld")));
    for step in BASE_STEPS {
        let log = std::fs::read_to_string(run.root.join(format!("logs/{step}.log"))).unwrap();
        assert!(log.contains(">>>"), "logs/{step}.log has the step's output");
    }
    assert!(!run.root.join(INCOMPLETE_MARKER).exists());
    assert!(!run.work_dir().exists(), "the work directory is removed");
}

#[tokio::test]
async fn the_same_inputs_give_the_same_signatures_wherever_the_objects_go() {
    let (a, b, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let elsewhere = LocalConfig {
        make: None,
        work_dir: Some(work.path().to_path_buf()),
    };
    let (first, second) = tokio::join!(
        run_default(a.path(), base_request(&[])),
        run_local(b.path(), elsewhere, base_request(&[])),
    );
    assert_eq!(first.signatures(), second.signatures());
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "the configured work directory is emptied"
    );
}

#[tokio::test]
async fn kernconf_minimal_changes_the_kernel_and_nothing_else() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (generic, minimal) = tokio::join!(
        run_default(a.path(), request(&[], "GENERIC", base_artifacts())),
        run_default(b.path(), request(&[], "MINIMAL", base_artifacts())),
    );
    let (generic, minimal) = (generic.signatures(), minimal.signatures());
    assert_ne!(generic["kernel"], minimal["kernel"]);
    for name in ["world", "headers", "bootloader"] {
        assert_eq!(
            generic[name], minimal[name],
            "{name} does not depend on KERNCONF"
        );
    }
}

#[tokio::test]
async fn only_the_requested_artifacts_are_built_and_produced() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_default(dir.path(), wanting(&["kernel", "headers"])).await;
    let names: Vec<_> = run
        .ok()
        .metadata()
        .artifacts
        .iter()
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(names, ["kernel", "headers"]);
    let mut produced: Vec<_> = std::fs::read_dir(run.root.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    produced.sort();
    assert_eq!(produced, ["headers", "kernel"]);
    assert_eq!(
        run.stages(),
        [
            "buildworld",
            "buildkernel",
            "installworld",
            "installkernel",
            "collect",
            "sign"
        ]
    );
}

#[tokio::test]
async fn a_failing_buildkernel_is_a_build_error_with_its_log_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_default(dir.path(), base_request(&["FAIL_STEP=buildkernel"])).await;
    let Err(Error::Build {
        step,
        status,
        log: LogRef { path: log, tail },
    }) = &run.result
    else {
        panic!(
            "expected a build error, got {:?}",
            run.result.as_ref().map(|r| r.path().to_path_buf())
        );
    };
    assert_eq!(step, "buildkernel");
    let status = status.as_deref().unwrap_or_default();
    assert!(
        status.starts_with("exit status ") && status != "exit status 0",
        "{status}"
    );
    let log = log.as_ref().expect("the log is named");
    assert_eq!(log, &run.root.join("logs/buildkernel.log"));
    assert!(log.is_file());
    assert!(!tail.is_empty() && tail.len() <= 20);
    assert!(
        tail.iter().any(|l| l.contains("deliberate failure")),
        "tail: {tail:#?}"
    );
    let failed = |e: &Event| matches!(e, Event::StageFinished { stage, ok: false, .. } if stage == "buildkernel");
    assert!(
        run.events.iter().any(failed),
        "buildkernel finished as failed"
    );
    assert_events_in_order(&run.events);
    assert!(run.root.join(INCOMPLETE_MARKER).exists());
    assert!(!run.root.join("promotion.scm").exists());
    assert!(
        !run.work_dir().exists(),
        "cleanup removed the work directory"
    );
}

/// Process group ids of running processes whose command line contains `tag`.
fn groups_tagged(tag: &str) -> Vec<i32> {
    ps().into_iter()
        .filter(|(_, _, args)| args.contains(tag))
        .map(|(pgid, _, _)| pgid)
        .collect()
}

/// Whether any live (not zombie) process is in group `pgid`.
fn group_alive(pgid: i32) -> bool {
    ps().into_iter()
        .any(|(g, stat, _)| g == pgid && !stat.starts_with('Z'))
}

/// `(pgid, stat, args)` of every process, from ps(1) (same options on
/// FreeBSD and Linux).
fn ps() -> Vec<(i32, String, String)> {
    let out = Command::new("ps")
        .args(["-A", "-o", "pgid=", "-o", "stat=", "-o", "args="])
        .output()
        .expect("ps(1) is needed to watch process groups");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pgid = words.next()?.parse().ok()?;
            let stat = words.next()?.to_string();
            Some((pgid, stat, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[tokio::test]
async fn cancelling_mid_build_stops_the_process_group_promptly() {
    let dir = tempfile::tempdir().unwrap();
    // make rewrites `VAR=value` in its argv in place, so look for the value.
    let tag = format!("fruix-test-cancel-{}", std::process::id());
    let cancel = CancellationToken::new();
    let (trigger, watched_tag) = (cancel.clone(), tag.clone());
    let group = Arc::new(std::sync::Mutex::new(None));
    let seen = group.clone();
    let cancelled_at = Arc::new(std::sync::Mutex::new(None));
    let when = cancelled_at.clone();
    // While it runs, a fast exit (a second Ctrl-C) would name the work
    // directory it leaves; once the run is over, it forgets it.
    let work_dir = dir.path().canonicalize().unwrap().join("result.work");
    let named = {
        let work_dir = work_dir.clone();
        move || fast_exit_names(&work_dir)
    };
    let named_while_running = Arc::new(std::sync::Mutex::new(None));
    let was_named = named_while_running.clone();
    let run = run_watched(
        dir.path(),
        LocalConfig::default(),
        base_request(&[&format!("FRUIX_TEST_TAG={tag}")]),
        cancel,
        move |event| {
            if matches!(event, Event::Log { stage, .. } if stage == "buildworld")
                && !trigger.is_cancelled()
            {
                *seen.lock().unwrap() = groups_tagged(&watched_tag).first().copied();
                *was_named.lock().unwrap() = Some(named());
                *when.lock().unwrap() = Some(Instant::now());
                trigger.cancel();
            }
        },
    )
    .await;
    assert!(
        matches!(run.result, Err(Error::Cancelled)),
        "expected cancellation, got {:?}",
        run.result.err()
    );
    let took = cancelled_at
        .lock()
        .unwrap()
        .expect("a buildworld log line arrived")
        .elapsed();
    assert!(took < Duration::from_secs(5), "cancellation took {took:?}");
    let pgid = group
        .lock()
        .unwrap()
        .expect("make was running when the first log line arrived");
    assert!(
        !group_alive(pgid),
        "a process of group {pgid} survived cancellation"
    );
    assert!(run.root.join(INCOMPLETE_MARKER).exists());
    assert!(!run.root.join("promotion.scm").exists());
    assert!(
        !run.work_dir().exists(),
        "cleanup removed the work directory"
    );
    assert_eq!(*named_while_running.lock().unwrap(), Some(true));
    assert!(!fast_exit_names(&work_dir));
    assert_events_in_order(&run.events);
}

/// Whether a fast exit now would name `work_dir` as the build's work
/// directory it leaves.
fn fast_exit_names(work_dir: &Path) -> bool {
    fruix_core::at_exit::with_registered(|files| {
        files.iter().any(|r| {
            r.path == work_dir
                && r.what == fruix_freebsd::work::WORK_DIR_AT_EXIT
                && r.fate == fruix_core::at_exit::Fate::Left
        })
    })
}

#[tokio::test]
async fn a_missing_make_program_is_a_system_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalConfig {
        make: Some("fruix-no-such-make".into()),
        work_dir: None,
    };
    let run = run_local(dir.path(), config, base_request(&[])).await;
    let Err(e @ Error::System { .. }) = &run.result else {
        panic!("expected a system error, got {:?}", run.result.err());
    };
    assert!(
        e.to_string().contains("`fruix-no-such-make` was not found"),
        "{e}"
    );
    assert!(e.to_string().contains("`make` configuration key"), "{e}");
}

#[tokio::test]
async fn an_unknown_artifact_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_default(dir.path(), wanting(&["world", "lib32"])).await;
    let Err(e @ Error::InvalidRequest { .. }) = &run.result else {
        panic!("expected an invalid request, got {:?}", run.result.err());
    };
    assert!(e.to_string().contains("unknown artifact `lib32`"), "{e}");
    assert!(run.stages().is_empty());
    assert!(!run.root.join("logs").exists() && !run.work_dir().exists());
}

#[tokio::test]
async fn a_source_tree_without_makefile_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("src");
    std::fs::create_dir(&empty).unwrap();
    let mut bad = base_request(&[]);
    bad.source.path = empty.to_str().unwrap().into();
    let run = run_default(dir.path(), bad).await;
    let Err(e @ Error::InvalidRequest { .. }) = &run.result else {
        panic!("expected an invalid request, got {:?}", run.result.err());
    };
    assert!(
        e.to_string().contains(empty.to_str().unwrap()) && e.to_string().contains("Makefile"),
        "{e}"
    );
    assert!(run.stages().is_empty());
}

#[tokio::test]
async fn the_local_executor_passes_the_conformance_suite() {
    require_make();
    let dir = tempfile::tempdir().unwrap();
    let local = |config: LocalConfig| -> Arc<dyn fruix_core::Executor> {
        Arc::new(config.executor().unwrap())
    };
    // The local executor's "machine" is this one: a make program that cannot
    // be started is its unreachable machine.
    let unreachable = LocalConfig {
        make: Some("fruix-no-such-make".into()),
        work_dir: None,
    };
    Suite {
        success: Case::new(local(LocalConfig::default()), base_request(&["-DNO_ROOT"])),
        build_failure: Case::new(
            local(LocalConfig::default()),
            base_request(&["FAIL_STEP=buildworld"]),
        ),
        system_failure: Case::new(local(unreachable), base_request(&[])),
        cancellation: Case::new(local(LocalConfig::default()), base_request(&[])),
    }
    .run(dir.path())
    .await;
}
