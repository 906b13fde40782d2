//! The `jail` executor against the executor conformance suite, with the
//! direct runner (the same make steps on the host, without a jail) on the
//! miniature FreeBSD source tree `tests/fixtures/freebsd-src-mini`.
//!
//! The jail runner itself needs FreeBSD and root; its commands are checked
//! as recorded command lines by the unit tests. These tests need BSD make
//! (`bmake` off FreeBSD) and a C compiler; without them they fail, naming
//! what is missing.

use std::path::Path;
use std::sync::Arc;

use fruix_core::executor::ExecutorConfig;
use fruix_core::executor::{BuildRequest, Executor};
use fruix_core::testing::conformance::{Case, Suite};
use fruix_core::testing::fixture_request;
use fruix_executor_jail::{JailConfig, RunnerKind};

fn require_tools() {
    let make = if cfg!(target_os = "freebsd") {
        "make"
    } else {
        "bmake"
    };
    for tool in [make, "cc"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "these tests run `{tool}`, which is not installed; install bmake and gcc (apt-get install bmake gcc)");
    }
}

fn request(make_flags: &[&str]) -> BuildRequest {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/freebsd-src-mini")
        .canonicalize()
        .expect("the fixture source tree exists");
    fixture_request(&source, make_flags)
}

fn direct(make: Option<&str>) -> Arc<dyn Executor> {
    let config = JailConfig {
        runner: Some(RunnerKind::Direct),
        jail_root: None,
        make: make.map(str::to_string),
    };
    config.build().unwrap()
}

#[tokio::test]
async fn the_jail_executor_passes_the_conformance_suite_with_the_direct_runner() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    Suite {
        success: Case::new(direct(None), request(&["-DNO_ROOT"])),
        build_failure: Case::new(direct(None), request(&["FAIL_STEP=buildworld"])),
        // The direct runner's "machine" is this one: a make program that
        // cannot be started stands for it being unreachable.
        system_failure: Case::new(direct(Some("fruix-no-such-make")), request(&[])),
        cancellation: Case::new(direct(None), request(&[])),
    }
    .run(dir.path())
    .await;
}
