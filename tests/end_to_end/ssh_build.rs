//! Both SSH executors against a real sshd, end to end: build in the guest,
//! import, promote; and Ctrl-C during a guest build.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fruix_core::testing::conformance::processes_mentioning;

use crate::ssh_import::{answering_helper, build_exiting};
use crate::sshd::{guest_build, guest_build_with, Sshd};
use crate::util::{
    fixture_build, fixture_source, fruix, promote_command, require_tool, run, run_ok, wait_until,
};

fn signatures(report: &serde_json::Value) -> Vec<(String, String)> {
    ["world", "kernel", "headers", "bootloader"]
        .iter()
        .map(|a| {
            (
                a.to_string(),
                report["artifacts"][a]["tree_signature"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no signature for {a}: {report}"))
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn both_guest_executors_build_import_promote_and_agree_on_signatures() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for executor in ["host-initiated", "guest-self-hosted"] {
        let mut cmd = guest_build(&sshd, executor, host.path(), executor);
        cmd.arg("--json");
        let report: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        let root = host.path().join(executor);
        let promotion = std::fs::read_to_string(root.join("promotion.scm")).unwrap();
        assert!(
            promotion.contains(&format!("(executor \"{executor}\")")),
            "{promotion}"
        );
        assert!(
            promotion.contains("(tree-signature \"sha256:"),
            "{promotion}"
        );
        assert!(!root.join(".fruix-incomplete").exists());
        // The guest's result root stays in its state directory.
        assert!(
            std::fs::read_dir(sshd.state_dir().join("native-builds"))
                .unwrap()
                .flatten()
                .any(|e| e.path().join("artifacts/world/bin/sh").is_file()),
            "no guest result root in the guest state directory"
        );
        // su's setuid bit is recorded, not created on the host, and the store
        // records it as stripped.
        let world =
            std::path::Path::new(report["artifacts"]["world"]["store_path"].as_str().unwrap());
        assert!(world.join("usr/bin/su").is_file());
        reports.push(report);
    }
    assert_eq!(
        signatures(&reports[0]),
        signatures(&reports[1]),
        "host-initiated and guest-self-hosted give the same tree signatures"
    );
    let local: serde_json::Value = serde_json::from_str(&run_ok(
        fruix()
            .args(["build", "--executor", "local", "--source"])
            .arg(fixture_source())
            .arg("--store")
            .arg(host.path().join("store"))
            .arg("--result-root")
            .arg(host.path().join("local"))
            .args([
                "--source-date-epoch",
                "1775420084",
                "--make-flag=-DNO_ROOT",
                "--json",
            ]),
    ))
    .unwrap();
    assert_eq!(
        signatures(&local),
        signatures(&reports[0]),
        "the guest executors agree with the local one"
    );
    let logs = host.path().join("host-initiated/logs");
    for step in ["buildworld", "buildkernel", "installworld", "installkernel"] {
        assert!(
            logs.join(format!("{step}.log")).is_file(),
            "{step}.log missing"
        );
    }
    assert!(host
        .path()
        .join("guest-self-hosted/logs/buildworld.log")
        .is_file());
    run_ok(
        fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(host.path().join("store")),
    );
    // Nothing is left in staging next to the result roots.
    let leftovers: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".import-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `fruix` pinned to one CPU (`taskset`), the first this test may use:
/// this host then counts 1 CPU, while the guest (this machine's sshd, not
/// pinned) has them all.
fn fruix_on_one_cpu() -> Command {
    require_tool("taskset", "util-linux");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("/proc/self/status has Cpus_allowed_list");
    let first = allowed.trim().split([',', '-']).next().unwrap().to_string();
    let fruix = fruix();
    let mut cmd = Command::new("taskset");
    cmd.arg("--cpu-list").arg(first).arg(fruix.get_program());
    for (key, value) in fruix.get_envs() {
        cmd.env(key, value.expect("fruix() sets variables"));
    }
    cmd.current_dir(fruix.get_current_dir().expect("fruix() sets a directory"));
    cmd
}

/// The `jobs` that `promotion.scm` at `root` records.
fn recorded_jobs(root: &Path) -> u32 {
    let promotion = std::fs::read_to_string(root.join("promotion.scm")).unwrap();
    let (_, rest) = promotion
        .split_once("(jobs ")
        .unwrap_or_else(|| panic!("no jobs: {promotion}"));
    rest.split_once(')').unwrap().0.parse().unwrap()
}

/// The guest's `nproc`, answering with `answer` (a `printf` format).
fn guest_nproc(sshd: &Sshd, answer: &str) {
    sshd.guest_program("nproc", &format!("#!/bin/sh\nprintf '{answer}\\n'\n"));
}

/// A guest without `nproc` (FreeBSD before 13.2) whose `sysctl -n hw.ncpu`
/// says `answer`.
fn guest_without_nproc(sshd: &Sshd, answer: u32) {
    sshd.guest_program(
        "nproc",
        "#!/bin/sh\necho 'nproc: not found' >&2\nexit 127\n",
    );
    sshd.guest_program(
        "sysctl",
        &format!("#!/bin/sh\n[ \"$*\" = \"-n hw.ncpu\" ] || exit 1\necho {answer}\n"),
    );
}

/// Without `--jobs`, a guest build uses the guest's CPUs, not the host's:
/// host-initiated asks the guest (here one without `nproc`, whose `sysctl
/// -n hw.ncpu` says 7),
/// and the self-hosted helper counts its own. fruix is pinned to one CPU,
/// so this host counts 1.
#[test]
fn without_jobs_a_guest_build_uses_the_guest_s_cpus() {
    let usable = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(
        usable >= 2,
        "this test needs 2 CPUs or more, to tell the self-hosted helper's count from the pinned host's ({usable})"
    );
    let sshd = Sshd::trusted_with_bin();
    guest_without_nproc(&sshd, 7);
    let host = tempfile::tempdir().unwrap();
    for (executor, guest_count) in [("host-initiated", 7), ("guest-self-hosted", usable)] {
        run_ok(&mut guest_build_with(
            fruix_on_one_cpu(),
            &sshd,
            executor,
            host.path(),
            executor,
        ));
        assert_eq!(
            recorded_jobs(&host.path().join(executor)),
            guest_count,
            "{executor}"
        );
    }
    // The local executor builds on this host: its one CPU.
    let mut local = fixture_build(fruix_on_one_cpu(), "local", host.path(), "local");
    run_ok(&mut local);
    assert_eq!(recorded_jobs(&host.path().join("local")), 1);
    // A count given is the count used, whatever the guest has.
    let mut given = guest_build(&sshd, "host-initiated", host.path(), "given");
    run_ok(given.args(["--jobs", "3"]));
    assert_eq!(recorded_jobs(&host.path().join("given")), 3);
}

/// A guest whose CPU count is no number (its `nproc` prints a terminal
/// escape) is warned about, its answer escaped, and the build uses this
/// host's count.
#[test]
fn a_guest_cpu_count_that_is_no_number_is_warned_about_and_not_used() {
    let sshd = Sshd::trusted_with_bin();
    guest_nproc(&sshd, "\\033[2J");
    let host = tempfile::tempdir().unwrap();
    let out = run(&mut guest_build_with(
        fruix_on_one_cpu(),
        &sshd,
        "host-initiated",
        host.path(),
        "r1",
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: cannot tell how many CPUs the guest ")
            && stderr.contains(r#"has (it said "\033[2J"); building with -j1, this host's count"#),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "escaped: {stderr}");
    assert_eq!(recorded_jobs(&host.path().join("r1")), 1);
}

fn interrupt_mid_build(executor: &str) {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let mut child = guest_build(&sshd, executor, host.path(), "r1")
        .args(["--jobs", "1", "--verbose", "--make-flag=HOLD_BUILD=yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let needle = sshd.state_dir();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("fruix printed its stages").unwrap();
        // With --verbose, every build log line is shown; the fixture's
        // world build says when it waits to be interrupted.
        if line.contains("HOLD_BUILD=yes: waiting to be interrupted") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no held build");
    }
    wait_until("the guest build runs", || {
        !processes_mentioning(&needle).is_empty()
    });
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let stopped = Instant::now();
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(stopped.elapsed() < Duration::from_secs(30));
    let left = processes_mentioning(&needle);
    assert!(
        left.is_empty(),
        "processes still running in the guest: {left:?}"
    );
    let promote = run(&mut promote_command(
        &host.path().join("store"),
        &host.path().join("r1"),
        &[],
    ));
    assert_ne!(promote.status.code(), Some(0));
}

#[test]
fn ctrl_c_during_a_host_initiated_build_leaves_no_make_in_the_guest() {
    interrupt_mid_build("host-initiated");
}

#[test]
fn ctrl_c_during_a_self_hosted_build_leaves_no_make_in_the_guest() {
    interrupt_mid_build("guest-self-hosted");
}

/// Regression: the host found a guest's failed build step by parsing
/// "build step `...`" out of the helper's prose. Now the helper speaks JSON
/// Lines: prose on its stdout is a protocol error (a system failure), and a
/// failure is what the helper's outcome line says, typed.
#[test]
fn the_host_reads_the_helper_protocol_never_its_prose() {
    let sshd = Sshd::trusted();
    let cases = [
        (
            "prose",
            "echo 'build step `buildworld` failed'; exit 1".to_string(),
            3,
            "broke its protocol",
        ),
        (
            "a typed build failure",
            r#"echo '{"v":1,"outcome":{"result":"failed","failure":"build","step":"buildkernel","status":"exit status 2","tail":["cc: error"],"message":"x"}}'; exit 1"#.to_string(),
            1,
            "build step `buildkernel` failed (in the guest: exit status 2)",
        ),
        (
            "another protocol version",
            r#"echo '{"v":2,"outcome":{"result":"succeeded","result_root":"/x"}}'"#.to_string(),
            3,
            "protocol version 2",
        ),
    ];
    for (what, body, status, expected) in cases {
        let name = format!("helper-{}", what.replace(' ', "-"));
        let helper = answering_helper(&sshd, &name, &body);
        let stderr = build_exiting(&sshd, &helper, status, what);
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }
}

/// Regression: a remote command cancelled before its session id line had been
/// read was left running in the guest (the kill loop needs the id). Cancelled
/// even before it starts, it is stopped now: nothing is left.
#[test]
fn a_remote_command_cancelled_as_it_starts_leaves_nothing_running() {
    use fruix_core::executor::EventSink;
    let sshd = Sshd::trusted();
    let marker = sshd.dir.path().join("cancelled-as-it-starts");
    let options = sshd.ssh_options();
    let runtime = runtime();
    let ended = runtime.block_on(async {
        let session = connect(&options).await;
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel.cancel();
        // The shell's command line names the marker; it waits for its sleep.
        let script = format!("exec sh -c 'sleep 600 & wait' {}", marker.display());
        session
            .stream(&script, None, &cancel, &EventSink::discard(), |_, _| {})
            .await
    });
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "still running in the guest: {left:?}");
}

/// A short command that never ends (a guest whose disk hangs, answering
/// keepalives all the while) is stopped at the session's command timeout:
/// a typed timeout naming the command, nothing left running. The same
/// command with no limit is stopped by its cancel token, typed cancelled.
#[test]
fn a_short_command_that_never_ends_is_stopped_at_its_timeout() {
    use fruix_core::Error;
    use fruix_executors::ssh::SshOptions;
    let sshd = Sshd::trusted();
    let options = SshOptions {
        command_timeout: Duration::from_secs(1),
        ..sshd.ssh_options()
    };
    let hung = |name: &str| {
        let marker = sshd.dir.path().join(name);
        // A loop rather than one `sleep 600 & wait`: it ends only when its
        // shell is stopped, never because a sleep ended.
        let script = format!(
            "exec sh -c 'while :; do sleep 1; done' {}",
            marker.display()
        );
        (script, marker)
    };
    let runtime = runtime();
    runtime.block_on(async {
        let session = connect(&options).await;
        let (script, marker) = hung("timed-out");
        let ended = session.output(&script, None).await;
        match ended {
            Err(Error::Timeout { what, limit, .. }) => {
                assert_eq!(limit, Duration::from_secs(1));
                assert!(what.contains("while :; do sleep 1; done"), "{what}");
            }
            other => panic!("not a timeout: {other:?}"),
        }
        let left = processes_mentioning(&marker);
        assert!(left.is_empty(), "still running in the guest: {left:?}");

        let (script, marker) = hung("cancelled");
        let cancel = tokio_util::sync::CancellationToken::new();
        let run = session.output_within(&script, None::<&[u8]>, &cancel, None);
        tokio::pin!(run);
        // Cancelled once the command runs in the guest.
        tokio::select! {
            r = &mut run => panic!("ended by itself: {r:?}"),
            started = tokio::task::spawn_blocking({
                let marker = marker.clone();
                move || wait_until("the command runs in the guest", || {
                    !processes_mentioning(&marker).is_empty()
                })
            }) => {
                started.unwrap();
                cancel.cancel();
            }
        }
        assert!(matches!(run.await, Err(Error::Cancelled)));
        let left = processes_mentioning(&marker);
        assert!(left.is_empty(), "still running in the guest: {left:?}");
    });
}

/// How far past the event queue's bound one read of a guest's output may
/// take it: one SSH packet (32 KiB) of 1 KiB lines, each with its overhead.
const ONE_PACKET_OF_EVENTS: usize = 64 << 10;

/// Drives `run` while nobody reads `rx`, until it stops reading the guest's
/// output for want of room: the queue is then past its bound by no more
/// than a packet, and `run` must not have ended.
async fn held_at_the_bound<F: std::future::Future>(
    run: std::pin::Pin<&mut F>,
    rx: &fruix_core::executor::EventReceiver,
) where
    F::Output: std::fmt::Debug,
{
    use fruix_core::executor::MAX_QUEUED_BYTES;
    tokio::select! {
        r = run => panic!("ended with its events unread: {r:?}"),
        () = rx.stalled() => {}
    }
    let queued = rx.queued_bytes();
    assert!(
        queued > MAX_QUEUED_BYTES && queued <= MAX_QUEUED_BYTES + ONE_PACKET_OF_EVENTS,
        "{queued} bytes of events queued"
    );
}

/// A guest command that floods its output is read no faster than the host
/// takes the events it makes: unread, they stay at the queue's bound (and
/// the guest waits); read, every line arrives, in order; cancelled while
/// held, the command is still stopped, and nothing is left running.
#[test]
fn a_flooding_remote_command_is_held_at_the_event_bound_and_still_cancels() {
    use fruix_core::executor::{Event, EventSink, MAX_QUEUED_BYTES};
    use fruix_executors::ssh::RemoteExit;
    let sshd = Sshd::trusted();
    let options = sshd.ssh_options();
    let lines = 4 * MAX_QUEUED_BYTES / 1024;
    // Numbered lines of about 1 KiB. The cancelled one then sleeps: only
    // the kill loop stops it (not the end of its channel, as for awk).
    let flood = format!(
        "awk 'BEGIN {{ for (i = 0; i < {lines}; i++) printf \"%d %1000s\\n\", i, \"\" }}'\n"
    );
    let script = |name: &str, text: String| {
        let path = sshd.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (format!("exec sh {}", path.display()), path)
    };
    let runs = [
        (false, script("flood", flood.clone())),
        (true, script("flood-then-sleep", flood + "sleep 600\n")),
    ];
    let runtime = runtime();
    runtime.block_on(async {
        let session = connect(&options).await;
        for (cancelled, (script, marker)) in runs {
            let (sink, mut rx) = EventSink::channel();
            let cancel = tokio_util::sync::CancellationToken::new();
            let run = session.stream(&script, None, &cancel, &sink, |stream, line| {
                sink.log("flood", stream, line)
            });
            tokio::pin!(run);
            held_at_the_bound(run.as_mut(), &rx).await;
            if cancelled {
                cancel.cancel();
                assert_eq!(run.await.unwrap(), None);
                let left = processes_mentioning(&marker);
                assert!(left.is_empty(), "still running in the guest: {left:?}");
                continue;
            }
            let mut next = 0;
            let mut check = |event: Event| {
                let Event::Log { line, .. } = event else {
                    panic!("only log lines: {event:?}")
                };
                assert_eq!(line.split(' ').next(), Some(next.to_string().as_str()));
                next += 1;
            };
            let exit = loop {
                tokio::select! {
                    r = &mut run => break r.unwrap(),
                    Some(event) = rx.recv() => check(event),
                }
            };
            assert_eq!(exit, Some(RemoteExit::Code(0)));
            while let Ok(event) = rx.try_recv() {
                check(event);
            }
            assert_eq!(next, lines);
        }
    });
}

/// A runtime for the tests that drive an [`SshSession`] directly.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A session to the test guest `options` name.
pub(crate) async fn connect(
    options: &fruix_executors::ssh::SshOptions,
) -> std::sync::Arc<fruix_executors::ssh::SshSession> {
    use fruix_core::executor::EventSink;
    fruix_executors::ssh::SshSession::connect(options, &EventSink::discard())
        .await
        .unwrap()
}
