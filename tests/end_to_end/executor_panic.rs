//! An executor that panics, as users see it: `fruix build` with the
//! `panicking-test` executor of `fruix_core::testing`, which `cargo test`
//! links into the `fruix` binary.

use fruix_core::testing::panicking::{MESSAGE, NAME};

use crate::util::{failed_with, fixture_build, fruix, run};

/// Regression: an executor that panicked was reported twice, Rust's panic
/// hook printing `thread '…' panicked at …` (and, under `RUST_BACKTRACE`,
/// a backtrace) before fruix's own error. fruix's error alone is shown, a
/// system failure (3) saying where the executor panicked, and under
/// `--json` stdout is one JSON object.
#[test]
fn a_panicking_executor_is_reported_by_fruix_alone() {
    let dir = tempfile::tempdir().unwrap();
    let said = format!("executor {NAME} panicked: {MESSAGE} (at core/src/testing/panicking.rs:");
    for (json, root) in [(false, "root"), (true, "root-json")] {
        let mut cmd = fixture_build(fruix(), NAME, dir.path(), root);
        cmd.env("RUST_BACKTRACE", "1");
        if json {
            cmd.arg("--json");
        }
        let out = run(&mut cmd);
        let err = failed_with(&format!("json {json}"), &out, 3, &["fruix: error: ", &said]);
        for rust_s in [
            "thread '",
            "panicked at",
            "stack backtrace",
            "RUST_BACKTRACE",
        ] {
            assert!(!err.contains(rust_s), "json {json}: {rust_s:?}: {err}");
        }
        if json {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let report: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
            assert_eq!(report["error"]["exit_status"], 3, "{report}");
            let message = report["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(&said), "{report}");
        }
    }
}
