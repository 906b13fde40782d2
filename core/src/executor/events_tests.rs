//! Tests of the event channel: its bound, its order, and what a watched sink records.
use super::*;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Polls `f` once, without waiting.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// Logs 64 KiB lines until the sink has no room; returns how many.
fn fill(sink: &EventSink) -> usize {
    let line = "x".repeat(1 << 16);
    let mut sent = 0;
    while poll_once(std::pin::pin!(sink.room())).is_ready() {
        sink.log("s", Stream::Stdout, format!("{sent} {line}"));
        sent += 1;
    }
    sent
}

#[tokio::test]
async fn a_full_queue_holds_readers_until_it_is_read_and_loses_no_event() {
    let (sink, mut rx) = EventSink::channel();
    let sent = fill(&sink);
    let one = cost(&Event::Log {
        stage: "s".into(),
        stream: Stream::Stdout,
        line: format!("{sent} {}", "x".repeat(1 << 16)),
    });
    assert!(rx.queued_bytes() > MAX_QUEUED_BYTES);
    assert!(rx.queued_bytes() <= MAX_QUEUED_BYTES + one);
    // While full, progress is dropped; everything else is kept.
    sink.emit(Event::Progress {
        stage: "s".into(),
        done: 1,
        total: None,
    });
    sink.warn("kept");
    {
        let mut room = std::pin::pin!(sink.room());
        assert!(poll_once(room.as_mut()).is_pending());
        // Taking one event makes room, and wakes the waiting reader.
        let Some(Event::Log { line, .. }) = rx.recv().await else {
            panic!("a log line first")
        };
        assert!(line.starts_with("0 "), "in order");
        assert!(poll_once(room.as_mut()).is_ready());
    }
    for i in 1..sent {
        match rx.recv().await {
            Some(Event::Log { line, .. }) => assert!(line.starts_with(&format!("{i} "))),
            other => panic!("line {i} expected, got {other:?}"),
        }
    }
    drop(sink);
    let rest: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(
        rest,
        [Event::Warning {
            message: "kept".into()
        }]
    );
    assert_eq!(rx.queued_bytes(), 0);
}

#[tokio::test]
async fn the_receiver_sees_a_reader_stall_until_it_has_room() {
    let (sink, mut rx) = EventSink::channel();
    fill(&sink);
    let waiter = {
        let mut stalled = std::pin::pin!(rx.stalled());
        assert!(poll_once(stalled.as_mut()).is_pending(), "nobody waits yet");
        let sink = sink.clone();
        let waiter = tokio::spawn(async move { sink.room().await });
        stalled.await;
        waiter
    };
    assert!(!waiter.is_finished());
    rx.recv().await.unwrap();
    waiter.await.unwrap();
    // A wait given up (dropped) is no longer counted.
    fill(&sink);
    assert!(poll_once(std::pin::pin!(rx.stalled())).is_pending());
}

#[tokio::test]
async fn a_reader_waiting_for_room_is_freed_when_the_receiver_goes() {
    let (sink, rx) = EventSink::channel();
    fill(&sink);
    let mut room = std::pin::pin!(sink.room());
    assert!(poll_once(room.as_mut()).is_pending());
    drop(rx);
    assert!(poll_once(room.as_mut()).is_ready());
    // Nobody listens: nothing waits, nothing is kept.
    fill_never_waits(&sink);
}

fn fill_never_waits(sink: &EventSink) {
    for _ in 0..(2 * MAX_QUEUED_BYTES) >> 16 {
        sink.log("s", Stream::Stdout, "x".repeat(1 << 16));
        assert!(poll_once(std::pin::pin!(sink.room())).is_ready());
    }
}

/// Regression: an event with a field of no event (from a guest) was
/// read, the field dropped; only the protocol's top level was strict.
#[test]
fn an_event_with_a_field_of_its_own_only_is_read() {
    let read = |json: &str| serde_json::from_str::<Event>(json);
    assert_eq!(
        read(r#"{"event":"stage-started","stage":"x"}"#).unwrap(),
        Event::StageStarted { stage: "x".into() }
    );
    let extra = read(r#"{"event":"stage-started","stage":"x","extra":1}"#);
    assert!(extra.is_err(), "{extra:?}");
}

#[test]
fn a_discarding_sink_never_waits() {
    fill_never_waits(&EventSink::discard());
}

/// Waits until `activity`'s clock has moved past its last stamp, so
/// that the next stamp is later.
fn a_moment_after(activity: &Activity) -> std::time::Instant {
    let last = activity.last();
    crate::testing::wait_until("a millisecond passes", || {
        last.elapsed() >= std::time::Duration::from_millis(2)
    });
    last
}

#[test]
fn every_event_and_alive_count_as_activity_on_a_watched_sink_and_its_clones() {
    let (sink, activity) = EventSink::discard().watched();
    let clone = sink.clone();
    let mut stamps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| clone.log("s", Stream::Stdout, "a line")),
        Box::new(|| sink.warn("a warning")),
        Box::new(|| {
            sink.emit(Event::Progress {
                stage: "s".into(),
                done: 1,
                total: None,
            })
        }),
        Box::new(|| sink.alive()),
    ];
    for (i, stamp) in stamps.drain(..).enumerate() {
        let before = a_moment_after(&activity);
        stamp();
        assert!(activity.last() > before, "stamp {i}");
    }
    // The sink it was watched from is not watched.
    let (unwatched, activity) = {
        let plain = EventSink::discard();
        let (_, activity) = plain.watched();
        (plain, activity)
    };
    let before = a_moment_after(&activity);
    unwatched.log("s", Stream::Stdout, "unseen");
    assert_eq!(activity.last(), before);
}

#[test]
fn the_activity_log_is_the_last_lines_cut_and_the_last_stage_s_file_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/buildworld.log"), "").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("logs/evil.log")).unwrap();
    let (sink, activity) = EventSink::discard().watched();
    for n in 0..25 {
        sink.log("buildworld", Stream::Stdout, format!("line {n}"));
    }
    sink.log("buildworld", Stream::Stderr, "é".repeat(3000));
    let log = activity.log(dir.path());
    assert_eq!(log.path, Some(dir.path().join("logs/buildworld.log")));
    assert_eq!(log.tail.len(), crate::process::TAIL_LINES);
    assert_eq!(log.tail[0], "line 6");
    // 4096 bytes at most, cut at a character.
    assert_eq!(log.tail.last().unwrap(), &"é".repeat(2048));
    // A stage without a log file, a symlink, or a name that is no one
    // path component: no file.
    for stage in ["kernel", "evil", "../logs/buildworld", "..", ""] {
        sink.emit(Event::StageStarted {
            stage: stage.into(),
        });
        assert_eq!(activity.log(dir.path()).path, None, "{stage:?}");
    }
}

#[tokio::test]
async fn events_of_a_cleanup_sink_and_its_clones_arrive_marked_as_cleanup() {
    let (sink, mut rx) = EventSink::channel();
    let cleaning = sink.in_cleanup();
    sink.warn("build");
    cleaning.warn("cleanup");
    cleaning.clone().watched().0.warn("cleanup, watched");
    sink.warn("build again");
    drop((sink, cleaning));
    let mut seen = Vec::new();
    while let Some((event, phase)) = rx.recv_with_phase().await {
        let Event::Warning { message } = event else {
            panic!("{event:?}")
        };
        seen.push((message, phase));
    }
    let expected = [
        ("build", Phase::Build),
        ("cleanup", Phase::Cleanup),
        ("cleanup, watched", Phase::Cleanup),
        ("build again", Phase::Build),
    ]
    .map(|(m, p)| (m.to_string(), p));
    assert_eq!(seen, expected);
}

/// Regression: a stage whose future was dropped before its work ended (a
/// build the runner drops once its cancel grace has passed) never ended:
/// `==> build` had no end line. It ends, failed, after the stages it
/// started.
#[test]
fn a_stage_dropped_before_its_end_ends_failed_after_its_inner_stages() {
    let (sink, mut rx) = EventSink::channel();
    {
        let inner = sink.stage("inner", std::future::pending::<Result<()>>());
        let mut outer = std::pin::pin!(sink.stage("outer", inner));
        assert!(poll_once(outer.as_mut()).is_pending());
    }
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(match event {
            Event::StageStarted { stage } => format!("start {stage}"),
            Event::StageFinished { stage, ok, .. } => format!("end {stage} {ok}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "start outer",
            "start inner",
            "end inner false",
            "end outer false"
        ]
    );
}
