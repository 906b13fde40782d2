//! The conformance kit checked against executors that break the contract.
use super::*;

fn start(stage: &str) -> Event {
    Event::StageStarted {
        stage: stage.into(),
    }
}
fn log(stage: &str) -> Event {
    Event::Log {
        stage: stage.into(),
        stream: crate::executor::Stream::Stdout,
        line: "x".into(),
    }
}
fn end(stage: &str) -> Event {
    Event::StageFinished {
        stage: stage.into(),
        ok: true,
        elapsed_ms: 0,
    }
}

/// Reports every failure as a system failure, and logs outside stages.
fn sloppy() -> Arc<dyn Executor> {
    crate::testing::fn_executor("sloppy", |ctx| {
        ctx.events
            .log("build", crate::executor::Stream::Stderr, "make: error 2");
        Err(Error::system("make failed"))
    })
}

fn sloppy_case() -> Case {
    Case::new(
        sloppy(),
        crate::testing::sample_request("sloppy", crate::executor::base_artifacts()),
    )
}

#[tokio::test]
#[should_panic(expected = "executor sloppy: a failing build must be reported as a build failure")]
async fn a_build_failure_reported_as_a_system_failure_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    build_failure_is_a_build_failure(&sloppy_case(), &dir.path().join("r")).await;
}

#[tokio::test]
#[should_panic(
    expected = "executor sloppy, case system-failure: events out of order: event 0: output of stage build"
)]
async fn a_log_line_outside_its_stage_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    unreachable_is_a_system_failure(&sloppy_case(), &dir.path().join("r")).await;
}

#[test]
fn ordered_and_nested_stages_pass() {
    let events = [
        start("build"),
        log("build"),
        start("buildworld"),
        log("buildworld"),
        end("buildworld"),
        Event::Warning {
            message: "w".into(),
        },
        end("build"),
        start("collect"),
        end("collect"),
    ];
    check_event_order(&events).unwrap();
}

#[test]
fn out_of_order_events_are_named() {
    let cases: [(&[Event], &str); 4] = [
        (&[log("build")], "output of stage build"),
        (&[start("a"), log("b"), end("a")], "output of stage b"),
        (
            &[start("a"), start("b"), end("a"), end("b")],
            "stage a finished",
        ),
        (&[start("a")], "never finished"),
    ];
    for (events, expected) in cases {
        let message = check_event_order(events).unwrap_err();
        assert!(message.contains(expected), "{message}");
    }
}
