//! Tests of process groups, timeouts, cancellation and output capture.
use super::*;
use crate::error::LogRef;
use crate::executor::{BuildRequest, Event, EventReceiver};
use crate::testing::{fixture_request, run_context};
use std::process::Command as StdCommand;

#[test]
fn statuses_are_described_for_people() {
    let exit = StdCommand::new("sh")
        .args(["-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(describe_status(exit), "exit status 3");
    let killed = StdCommand::new("sh")
        .args(["-c", "kill -9 $$"])
        .status()
        .unwrap();
    assert_eq!(describe_status(killed), "killed by signal 9");
}

/// The error of `program` not being found, with `hint`, and its message.
fn not_found(program: &str, hint: &str) -> (Error, String) {
    let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
    let e = spawn_error(program, hint, not_found);
    let text = e.to_string();
    (e, text)
}

/// Regression: a program's line break or tab (an executors file allows
/// them in a command) reached the message raw, one error read as two lines.
#[test]
fn a_program_that_cannot_start_is_named_escaped() {
    let (_, text) = not_found("./a\nb\tc", "check the build command");
    assert!(
        text.contains("program `./a\\nb\\tc` was not found"),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains('\t'), "{text}");
}

#[test]
fn a_missing_program_names_itself_and_the_hint() {
    let (e, text) = not_found("bmake", "set the executor's `make` configuration key");
    assert!(matches!(e, Error::System { .. }));
    assert!(
        text.contains("`bmake` was not found") && text.contains("`make` configuration key"),
        "{text}"
    );
}

/// A run context in a new directory, and the receiver of its events.
fn context() -> (tempfile::TempDir, RunContext, EventReceiver) {
    let dir = tempfile::tempdir().unwrap();
    let (events, rx) = EventSink::channel();
    let request = BuildRequest {
        source_dir: None,
        artifacts: vec!["world".into()],
        ..fixture_request(Path::new("/usr/src"), &[])
    };
    let ctx = run_context(request, dir.path(), events);
    (dir, ctx, rx)
}

/// The log lines waiting in `rx`.
fn logged(rx: &mut EventReceiver) -> Vec<String> {
    std::iter::from_fn(|| match rx.try_recv() {
        Ok(Event::Log { line, .. }) => Some(line),
        _ => None,
    })
    .collect()
}

fn shell(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

#[tokio::test]
async fn output_without_final_newline_and_invalid_utf8_is_logged() {
    let (dir, ctx, mut rx) = context();
    let log = dir.path().join("s.log");
    run_build_step(shell(r"printf 'a\n\377b\nlast'"), "s", &log, &ctx, "")
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\n\\377b\nlast\n");
    // Each byte that is not UTF-8 is kept as `\ooo`, as README's
    // "Escaping" says, not lost to U+FFFD.
    assert_eq!(logged(&mut rx), ["a", "\\377b", "last"]);
}

/// Regression: the log file got a build's control characters raw, so
/// `cat` of it could set the terminal's colours or title. It gets the line
/// as the terminal shows it; the events keep the text, which the display
/// makes safe.
#[tokio::test]
async fn control_characters_reach_the_log_file_escaped() {
    let (dir, ctx, mut rx) = context();
    let log = dir.path().join("s.log");
    let script = r"printf 'a\033[31mRED\033]0;TITLE\007 \t\\ x\rCR\n'";
    run_build_step(shell(script), "s", &log, &ctx, "")
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "a\\033[31mRED\\033]0;TITLE\\007 \t\\ x\\015CR\n"
    );
    assert_eq!(
        logged(&mut rx),
        ["a\u{1b}[31mRED\u{1b}]0;TITLE\u{7} \t\\ x\rCR"]
    );
}

/// Regression: the log was opened with `File::create`, which follows a
/// symlink (and writes through a hard link) that an earlier stage planted
/// at its name: fruix, as root, truncated and wrote the target.
#[tokio::test]
async fn a_link_planted_at_the_log_is_replaced_never_written_through() {
    let (dir, ctx, _rx) = context();
    let victim = dir.path().join("victim");
    let symlink: fn(&Path, &Path) -> std::io::Result<()> =
        |target, link| std::os::unix::fs::symlink(target, link);
    let hard_link: fn(&Path, &Path) -> std::io::Result<()> =
        |target, link| std::fs::hard_link(target, link);
    for plant in [symlink, hard_link] {
        std::fs::write(&victim, "precious\n").unwrap();
        let log = dir.path().join("s.log");
        let _ = std::fs::remove_file(&log);
        plant(&victim, &log).unwrap();
        run_build_step(shell("echo logged"), "s", &log, &ctx, "")
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "logged\n");
        assert!(std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_file());
    }
    // Anything but a file or a link at the name is refused, never removed
    // (a log path of /dev/null once made /dev/null a regular file).
    let fifo = dir.path().join("fifo.log");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = run_build_step(shell("echo logged"), "s", &fifo, &ctx, "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains(": is a FIFO, not a log file"), "{e}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}

#[tokio::test]
async fn a_failing_step_reports_its_last_lines_of_both_streams() {
    let (dir, ctx, _rx) = context();
    let log = dir.path().join("s.log");
    // One stream first: its order is defined, so the tail is exact.
    let script = "for i in $(seq 1 30); do echo out$i; done; echo oops; exit 2";
    let Err(Error::Build {
        step,
        status,
        log: LogRef { path, tail },
    }) = run_build_step(shell(script), "s", &log, &ctx, "").await
    else {
        panic!("expected a build error");
    };
    assert_eq!(
        (step.as_str(), status.as_deref(), path.as_deref()),
        ("s", Some("exit status 2"), Some(log.as_path()))
    );
    let expected: Vec<String> = (12..=30)
        .map(|i| format!("out{i}"))
        .chain(["oops".to_string()])
        .collect();
    assert_eq!(tail, expected);
    // Both streams: stdout and stderr come through two pipes, whose relative
    // order is not defined, so only what the tail holds is checked.
    let script = "echo out; echo err >&2; exit 2";
    let Err(e) = run_build_step(shell(script), "s", &log, &ctx, "").await else {
        panic!("expected a build error");
    };
    let mut tail = e.log().expect("a build error has its log").tail.clone();
    tail.sort();
    assert_eq!(tail, ["err", "out"]);
}

/// Runs `script` as a step whose shell writes its pid (the group id) to a
/// file first; returns the step's ending and the group id.
async fn run_recording_group(
    script: &str,
    ctx: &RunContext,
    dir: &Path,
    timeout: Option<Duration>,
) -> (Result<Finished>, libc::pid_t) {
    let pid_file = dir.join("pgid");
    let script = format!("echo $$ > {}; {script}", pid_file.display());
    let log = dir.join("s.log");
    let step = Step {
        stage: "s",
        log: &log,
        events: &ctx.events,
        cancel: &ctx.cancel,
        timeout,
        term_grace: TERM_GRACE,
        hint: "",
    };
    let result = run_step(shell(&script), &step).await;
    let pgid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (result, pgid)
}

#[tokio::test]
async fn processes_left_behind_by_a_step_are_killed() {
    let (dir, ctx, _rx) = context();
    let started = std::time::Instant::now();
    let (result, pgid) =
        run_recording_group("sleep 600 & echo started", &ctx, dir.path(), None).await;
    assert!(matches!(result.unwrap().ending, Ending::Exited(s) if s.success()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the step waited for its leftover"
    );
    assert!(group_is_gone(pgid));
}

/// The warnings waiting in `rx`.
fn warnings(rx: &mut EventReceiver) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|event| match event {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect()
}

/// Whether process `pid` is alive (not gone, not a zombie waiting for init).
fn is_alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

/// Regression: a step that started a daemon (a double fork into a session
/// of its own, out of reach of the group and session kill) still holding
/// its stdout was waited for until its time limit, reported as timed out,
/// and the daemon outlived fruix. The step now ends by its leader's status
/// shortly after the leader; the daemon is named in a warning and killed.
#[tokio::test]
async fn a_daemon_holding_the_output_of_a_finished_step_is_killed_not_waited_for() {
    let (dir, ctx, mut rx) = context();
    let daemon_file = dir.path().join("daemon");
    let script = format!(
        "perl -MPOSIX -e 'fork and exit; POSIX::setsid(); open(my $f, \">\", \"{0}.tmp\"); print $f \"$$\\n\"; close($f); rename(\"{0}.tmp\", \"{0}\"); sleep 1000' & while [ ! -f {0} ]; do :; done; echo started",
        daemon_file.display()
    );
    let started = std::time::Instant::now();
    let limit = Duration::from_secs(30);
    let (result, _) = run_recording_group(&script, &ctx, dir.path(), Some(limit)).await;
    let elapsed = started.elapsed();
    let daemon = std::fs::read_to_string(&daemon_file).unwrap();
    let daemon = daemon.trim();
    let deadline = Instant::now() + KILL_GRACE;
    while is_alive(daemon) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let survived = is_alive(daemon);
    if survived {
        // Not left running when this test fails. SAFETY: kill(2) of the
        // live process this test started.
        unsafe { libc::kill(daemon.parse().unwrap(), libc::SIGKILL) };
    }
    let finished = result.unwrap();
    assert!(
        matches!(finished.ending, Ending::Exited(s) if s.success()),
        "{:?} after {elapsed:?}",
        finished.ending
    );
    assert_eq!(finished.tail, ["started"]);
    assert!(
        elapsed < OUTPUT_GRACE + KILL_GRACE + Duration::from_secs(5),
        "took {elapsed:?}"
    );
    assert!(!survived, "daemon {daemon} survived the step");
    let warnings = warnings(&mut rx);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = &warnings[0];
    assert!(
        warning.contains("step s ")
            && warning.contains("left its session")
            && warning.contains(&format!("{daemon} `perl -MPOSIX -e "))
            && warning.contains("killed"),
        "{warning}"
    );
}

#[test]
fn a_pipe_holder_that_cannot_be_found_is_still_warned_about() {
    // As on FreeBSD, where `/proc` does not show open files.
    let (dir, ctx, mut rx) = context();
    let log = dir.path().join("s.log");
    let step = Step {
        stage: "s",
        log: &log,
        events: &ctx.events,
        cancel: &ctx.cancel,
        timeout: None,
        term_grace: TERM_GRACE,
        hint: "",
    };
    assert!(!kill_holders(&step, &[]), "nothing was found to kill");
    assert_eq!(
        warnings(&mut rx),
        ["step s exited, but its output is still held by what left its session (a daemon); fruix did not wait for it, and could not find it to kill it (it may keep running until it writes there)"]
    );
}

#[tokio::test]
async fn dropping_a_running_step_kills_its_group() {
    let (dir, ctx, mut rx) = context();
    let running = run_recording_group(
        "sleep 600 & sleep 600 & echo go; wait",
        &ctx,
        dir.path(),
        None,
    );
    // Dropped once the group is set up (it says "go"), not after a delay.
    let said_go = async {
        while let Some(event) = rx.recv().await {
            if matches!(&event, Event::Log { line, .. } if line == "go") {
                return;
            }
        }
    };
    tokio::select! {
        _ = running => panic!("the step cannot have finished"),
        () = said_go => {}
    }
    let pgid = std::fs::read_to_string(dir.path().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + KILL_GRACE;
    while !group_is_gone(pgid) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    assert!(group_is_gone(pgid), "group {pgid} survived the drop");
}

/// Cancels `ctx`'s run when a step logs the line `said`.
fn cancel_when_said(ctx: &RunContext, mut rx: crate::executor::EventReceiver, said: &'static str) {
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if matches!(&event, Event::Log { line, .. } if line == said) {
                cancel.cancel();
            }
        }
    });
}

#[tokio::test]
async fn cancelling_kills_a_group_that_ignores_sigterm() {
    let (dir, ctx, rx) = context();
    // Cancelled once the group is set up (it says "go"), not after a delay.
    cancel_when_said(&ctx, rx, "go");
    let started = std::time::Instant::now();
    let script = "trap '' TERM; sleep 600 & sleep 600 & echo go; wait";
    let (result, pgid) = run_recording_group(script, &ctx, dir.path(), None).await;
    assert_eq!(result.unwrap().ending, Ending::Cancelled);
    assert!(started.elapsed() < TERM_GRACE + KILL_GRACE + Duration::from_secs(2));
    assert!(group_is_gone(pgid));
}

#[tokio::test]
async fn a_step_past_its_time_limit_is_stopped_with_its_group() {
    let (dir, ctx, _rx) = context();
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(300);
    let (result, pgid) =
        run_recording_group("sleep 600 & echo go; wait", &ctx, dir.path(), Some(limit)).await;
    let finished = result.unwrap();
    assert_eq!(finished.ending, Ending::TimedOut(limit));
    assert_eq!(finished.tail, ["go"]);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(group_is_gone(pgid));
}

#[tokio::test]
async fn cancelling_kills_jobs_in_process_groups_of_their_own() {
    // As `make -j` does: each job's shell in a group of its own (here by
    // perl's setpgrp; perl-base is essential on Debian), within the step's
    // session, and deaf to SIGTERM.
    let (dir, ctx, rx) = context();
    cancel_when_said(&ctx, rx, "go");
    let job = dir.path().join("job");
    let script = format!(
        "perl -e '$SIG{{TERM}} = \"IGNORE\"; setpgrp(0, 0); open(my $f, \">\", \"{0}.tmp\"); print $f \"$$ \" . getpgrp() . \"\\n\"; close($f); rename(\"{0}.tmp\", \"{0}\"); sleep 600' & while [ ! -f {0} ]; do :; done; echo go; wait",
        job.display()
    );
    let (result, pgid) = run_recording_group(&script, &ctx, dir.path(), None).await;
    assert_eq!(result.unwrap().ending, Ending::Cancelled);
    let recorded = std::fs::read_to_string(&job).unwrap();
    let (job, group) = recorded.trim().split_once(' ').unwrap();
    assert_ne!(group, pgid.to_string(), "the job ran in a group of its own");
    // Gone, or a zombie waiting for init.
    let stat = std::fs::read_to_string(format!("/proc/{job}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    assert!(
        state.is_none_or(|s| s.starts_with('Z')),
        "job {job} survived: {stat}"
    );
    assert!(group_is_gone(pgid));
}

#[tokio::test]
async fn a_step_reads_no_faster_than_its_events_are_taken_and_loses_no_line() {
    use crate::executor::MAX_QUEUED_BYTES;
    let (dir, ctx, mut rx) = context();
    let log = dir.path().join("s.log");
    // Four times the queue's bound, in numbered lines of about 1 KiB.
    let lines = 4 * MAX_QUEUED_BYTES / 1024;
    let script =
        format!(r#"awk 'BEGIN {{ for (i = 0; i < {lines}; i++) printf "%d %1000s\n", i, "" }}'"#);
    let step = run_build_step(shell(&script), "s", &log, &ctx, "");
    tokio::pin!(step);
    // What the lines of one read (8 KiB: at most nine lines) cost in the
    // queue, at the most.
    let one = 9 * (64 + "s".len() + 1024);
    let within_bound = |queued: usize| {
        assert!(
            queued <= MAX_QUEUED_BYTES + one,
            "{queued} bytes of events queued, more than {MAX_QUEUED_BYTES} and a read"
        );
    };
    // Nobody reads the events: the step runs until the queue is full, then
    // stops reading the child's output (which has more to say) until there
    // is room.
    tokio::select! {
        r = &mut step => panic!("the step ended with its events unread: {r:?}"),
        () = rx.stalled() => {}
    }
    assert!(rx.queued_bytes() > MAX_QUEUED_BYTES);
    within_bound(rx.queued_bytes());
    // Read now: every line arrives, in order, and the step ends.
    let mut next = 0;
    let mut check = |event: Event| {
        if let Event::Log { line, .. } = event {
            assert_eq!(line.split(' ').next(), Some(next.to_string().as_str()));
            next += 1;
        }
    };
    loop {
        tokio::select! {
            r = &mut step => {
                r.unwrap();
                break;
            }
            Some(event) = rx.recv() => {
                within_bound(rx.queued_bytes());
                check(event);
            }
        }
    }
    while let Ok(event) = rx.try_recv() {
        check(event);
    }
    assert_eq!(next, lines);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), lines);
}

#[tokio::test]
async fn a_line_longer_than_the_cap_is_cut_saying_so() {
    let (dir, ctx, mut rx) = context();
    let log = dir.path().join("s.log");
    let script = format!(
        "head -c {} /dev/zero | tr '\\0' x; echo; echo after",
        3 * MAX_LINE_BYTES
    );
    run_build_step(shell(&script), "s", &log, &ctx, "")
        .await
        .unwrap();
    let cut = format!(
        "{} [line cut at {MAX_LINE_BYTES} bytes: {} more bytes dropped]",
        "x".repeat(MAX_LINE_BYTES),
        2 * MAX_LINE_BYTES
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("{cut}\nafter\n")
    );
    assert_eq!(logged(&mut rx), [cut, "after".to_string()]);
}

#[tokio::test]
async fn pgrep_lists_the_group_and_session_the_process_table_does() {
    // Without /proc (FreeBSD) `pgrep -s` and `-g` list a step's processes;
    // here both can be asked, and must agree, a job in a group of its own
    // (as make -j's) included.
    let (dir, ctx, mut rx) = context();
    let read_pid = |path: &Path| -> libc::pid_t {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let job_file = dir.path().join("job");
    let script = format!(
        "perl -e 'setpgrp(0, 0); open(my $f, \">\", \"{0}.tmp\"); print $f \"$$\\n\"; close($f); rename(\"{0}.tmp\", \"{0}\"); sleep 600' & while [ ! -f {0} ]; do :; done; echo go; wait",
        job_file.display()
    );
    let compare = async {
        while let Some(event) = rx.recv().await {
            if matches!(&event, Event::Log { line, .. } if line == "go") {
                break;
            }
        }
        let pgid = read_pid(&dir.path().join("pgid"));
        let (listed, mut live) = (table::listed_members(pgid), live_members(pgid));
        live.sort_unstable();
        ctx.cancel.cancel();
        (pgid, listed, live)
    };
    let ((result, _), (pgid, listed, live)) = tokio::join!(
        run_recording_group(&script, &ctx, dir.path(), None),
        compare
    );
    assert_eq!(result.unwrap().ending, Ending::Cancelled);
    let job = read_pid(&job_file);
    assert!(
        listed.contains(&pgid) && listed.contains(&job),
        "leader {pgid} and job {job} in {listed:?}"
    );
    assert_eq!(listed, live);
}

/// A script still open to write somewhere (here, by this test) cannot be
/// executed (`ETXTBSY`); a spawn tries again, [`SPAWN_TRIES`] times 10 ms
/// apart, which covers the microseconds another thread's child holds a
/// script written just before between its fork and its exec (a flake seen
/// in the external executor's tests), then fails as it must.
#[tokio::test]
async fn a_busy_script_is_tried_again_then_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sh");
    let held = std::fs::File::create(&script).unwrap();
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    let steps: &'static Steps = Box::leak(Box::new(Steps::new()));
    let Err(e) = spawn_retrying(&mut Command::new(&script), steps).await else {
        panic!("a busy script was started");
    };
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    assert!(
        started.elapsed() >= Duration::from_millis(10) * (SPAWN_TRIES - 1),
        "it was tried again: {:?}",
        started.elapsed()
    );
    drop(held);
    let (mut child, _group) = spawn_retrying(&mut Command::new(&script), steps)
        .await
        .unwrap()
        .expect("started")
        .unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success());
}

/// Regression: a second Ctrl-C's `kill_running_steps` killed only the
/// steps noted so far, and a step's group was noted after its spawn
/// returned: one being started then (a cleanup step) outlived fruix. A
/// step is started and noted under one lock now, so once the steps are
/// killed none starts any more (nothing of it runs), and every step noted
/// before is killed. (Steps of their own: the process's are for good.)
#[tokio::test]
async fn once_the_steps_are_killed_none_starts_and_every_one_noted_is_killed() {
    let steps: &'static Steps = Box::leak(Box::new(Steps::new()));
    let dir = tempfile::tempdir().unwrap();
    let mut running = Command::new("sh");
    // A group of its own, as every step's (`setsid`).
    running.args(["-c", "exec sleep 600"]).process_group(0);
    let (mut child, group) = spawn_retrying(&mut running, steps)
        .await
        .unwrap()
        .expect("started")
        .unwrap();
    assert_eq!(steps.lock().groups, vec![group.pgid]);
    steps.kill_all();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the step noted was not killed")
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let marker = dir.path().join("started");
    let mut late = Command::new("sh");
    late.arg("-c").arg(format!("touch {}", marker.display()));
    assert!(spawn_retrying(&mut late, steps).await.unwrap().is_none());
    assert!(
        !marker.exists(),
        "a step started after the steps were killed"
    );
    drop(group);
}
