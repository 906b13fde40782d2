//! External executors end to end: the POSIX sh executors of
//! `tests/fixtures/external` build the miniature FreeBSD source tree with
//! real BSD make, through `fruix_core::executor::run_executor`, and pass the
//! executor conformance suite.
//!
//! These tests need BSD make (`make` on FreeBSD, `bmake` elsewhere) and a C
//! compiler; without them they fail, naming what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fruix_core::executor::{BuildRequest, Executor};
use fruix_core::testing::conformance::{Case, Suite};
use fruix_core::testing::fixture_request;
use fruix_executors::driver::default_make;
use fruix_executors::external::file::{entry, read_file};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .canonicalize()
        .expect("tests/fixtures exists")
}

/// Fails (never skips) when BSD make or cc is not installed.
fn require_tools() {
    for tool in [default_make(), "cc"] {
        if let Err(e) = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                o.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| "not in PATH".to_string())
            })
        {
            panic!("these tests run `{tool}`, which cannot be found ({e}); install bmake and gcc (apt-get install bmake gcc)");
        }
    }
}

/// Executor `name` of the fixture executors file.
fn external(name: &str) -> Arc<dyn Executor> {
    let specs = read_file(&fixtures().join("external/executors.scm")).unwrap();
    let spec = specs
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("the fixture executors file declares no `{name}`"));
    (entry(spec).factory)(serde_json::Value::Null).unwrap()
}

fn request(make_flags: &[&str]) -> BuildRequest {
    fixture_request(&fixtures().join("freebsd-src-mini"), make_flags)
}

#[tokio::test]
async fn the_external_sh_executor_passes_the_conformance_suite() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    Suite {
        success: Case::new(external("mini-sh"), request(&["-DNO_ROOT"])),
        build_failure: Case::new(external("mini-sh"), request(&["FAIL_STEP=buildworld"])),
        system_failure: Case::new(external("mini-sh-system-failure"), request(&[])),
        cancellation: Case::new(external("mini-sh"), request(&[])),
    }
    .run(dir.path())
    .await;
}
