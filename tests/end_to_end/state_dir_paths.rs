//! A relative `--state-dir` is made absolute: the paths fruix prints
//! beneath it can be used from any directory.

use std::path::Path;
use std::time::Duration;

use crate::util::{fixture_source, fruix, run_json, run_with_deadline, FIXTURE_BUILD_FLAGS};

/// Regression: with `--state-dir state` (relative), `store gc --json` listed
/// the result roots it removes as `state/native-builds/RUN`, a path that
/// means something else from any other directory. Each is now absolute,
/// and names the result root the build made.
#[test]
fn gc_names_result_roots_beneath_a_relative_state_dir_absolutely() {
    let dir = tempfile::tempdir().unwrap();
    let mut build = fruix();
    build
        .current_dir(dir.path())
        .args(["build", "--executor", "local", "--quiet", "--source"])
        .arg(fixture_source())
        .args(["--store", "store", "--state-dir", "state"])
        .args(FIXTURE_BUILD_FLAGS);
    let out = run_with_deadline(&mut build, Duration::from_secs(300));
    assert!(out.status.success(), "{out:?}");
    let builds = dir.path().join("state/native-builds");
    let made: Vec<_> = std::fs::read_dir(&builds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");

    let mut gc = fruix();
    gc.current_dir(dir.path()).args([
        "store",
        "gc",
        "--store",
        "store",
        "--state-dir",
        "state",
        "--older-than",
        "0s",
        "--dry-run",
        "--json",
    ]);
    let report = run_json(&mut gc);
    let roots: Vec<&Path> = report["result_roots"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|r| Path::new(r.as_str().unwrap()))
        .collect();
    assert_eq!(roots.len(), 1, "{report}");
    assert!(roots[0].is_absolute(), "{report}");
    assert_eq!(
        roots[0].canonicalize().unwrap(),
        made[0].canonicalize().unwrap(),
        "{report}"
    );
}
