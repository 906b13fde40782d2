//! The README's main command works as written.

use std::path::Path;

use crate::util::{fruix, key_values, require_tool, run_ok};

/// The shell line in the fenced block after `marker` in README.md.
fn readme_command(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let after = readme
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    after
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .nth(1)
        .expect("a command line follows the marker")
        .to_string()
}

#[test]
fn readme_main_command_builds_the_fixture_into_frx_store() {
    require_tool("bmake", "bmake");
    let line = readme_command("<!-- main-command -->");
    let (_, fruix_args) = line
        .split_once("cargo run --release -- ")
        .expect("the main command runs fruix through cargo run");
    let args: Vec<&str> = fruix_args.split_whitespace().collect();
    assert_eq!(&args[..3], ["build", "--executor", "local"], "{line}");
    // Run it from a directory shaped like a fresh clone, so that ./frx-store lands there.
    let clone = tempfile::tempdir().unwrap();
    std::fs::create_dir(clone.path().join("tests")).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .canonicalize()
        .unwrap();
    std::os::unix::fs::symlink(fixtures, clone.path().join("tests/fixtures")).unwrap();
    let kv = key_values(&run_ok(fruix().args(&args).current_dir(clone.path())));
    let store = clone.path().join("frx-store").canonicalize().unwrap();
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        assert!(
            Path::new(&kv[&format!("{artifact}_store")]).starts_with(&store),
            "{kv:?}"
        );
    }
    assert!(readme_command("<!-- test-command -->").contains("scripts/test.sh"));
}

/// The README's exit-status table and `fruix --help` both say exactly what
/// the one list in the code says.
#[test]
fn exit_statuses_in_readme_and_help_match_the_code() {
    use fruix_core::ExitStatus;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("\n## Exit statuses\n")
        .nth(1)
        .expect("README.md has an Exit statuses section");
    let rows: Vec<(u8, String)> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Some((cells.first()?.parse().ok()?, cells.get(1)?.to_string()))
        })
        .collect();
    let expected: Vec<(u8, String)> = ExitStatus::ALL
        .iter()
        .map(|s| (s.code(), s.meaning().to_string()))
        .collect();
    assert_eq!(rows, expected);
    let help = run_ok(fruix().arg("--help"));
    assert!(
        help.contains(&ExitStatus::help_table()),
        "--help does not end with the exit-status table:\n{help}"
    );
}
