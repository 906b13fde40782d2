//! Regression tests for a review of the CLI surface: `fruix man --dir`
//! writing through a symlink planted in its directory, guest flags given
//! to an executor that builds on this host, the stage lines a build shows
//! on a terminal, and empty environment variables.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{fixture_build, fixture_source, fruix, require_tool, run, run_failing, run_ok};

/// Regression: `fruix man --dir DIR` created each page with
/// `File::create`, which follows a symlink: a link planted in DIR (as
/// anyone may in `/tmp/man1`) made fruix overwrite the file it points to,
/// or create the file a dangling one names. A page's name is now replaced
/// as install(1) replaces it: the link itself goes, its target is left
/// alone.
#[test]
fn man_dir_replaces_a_planted_symlink_never_writing_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let (pages, victim) = (dir.path().join("man1"), dir.path().join("victim"));
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(&victim, "victim\n").unwrap();
    std::os::unix::fs::symlink("../victim", pages.join("fruix-build.1")).unwrap();
    std::os::unix::fs::symlink("../nowhere", pages.join("fruix.1")).unwrap();
    run_ok(fruix().args(["man", "--dir"]).arg(&pages));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert!(
        dir.path().join("nowhere").symlink_metadata().is_err(),
        "a dangling link's target is not made"
    );
    for page in ["fruix-build.1", "fruix.1"] {
        let meta = pages.join(page).symlink_metadata().unwrap();
        assert!(meta.is_file(), "{page} is a page of its own: {meta:?}");
    }
    assert_eq!(
        std::fs::read_to_string(pages.join("fruix.1")).unwrap(),
        run_ok(fruix().arg("man")),
        "the page in place of the link is fruix(1)"
    );
    let build = std::fs::read_to_string(pages.join("fruix-build.1")).unwrap();
    assert!(build.starts_with(".ie"), "{build}");
    let left: Vec<_> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "no temporary is left: {left:?}");
    // DIR itself may be a link to a directory: the user named it.
    let via = dir.path().join("via");
    std::os::unix::fs::symlink(&pages, &via).unwrap();
    std::fs::remove_file(pages.join("fruix.1")).unwrap();
    run_ok(fruix().args(["man", "--dir"]).arg(&via));
    assert!(pages.join("fruix.1").symlink_metadata().unwrap().is_file());
}

/// Regression: a guest flag given to an executor that builds on this host
/// was refused by that executor's configuration parser, which named a key
/// the user never typed (`unknown field `known_hosts``); `--machines`
/// even had its file read first, and its absence said instead. The flag
/// is now refused by its own name, from the keys the executor declares,
/// before anything is read or made.
#[test]
fn a_guest_flag_given_to_a_local_executor_is_refused_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let cases: [(&str, &[&str]); 7] = [
        ("--known-hosts", &["--known-hosts", missing]),
        ("--accept-new-host-key", &["--accept-new-host-key"]),
        ("--guest-state-dir", &["--guest-state-dir", "/var/db/fruix"]),
        (
            "--guest-helper",
            &["--guest-helper", "/usr/local/bin/fruix"],
        ),
        ("--identity", &["--identity", missing]),
        ("--guest", &["--guest", "root@127.0.0.1:2222"]),
        ("--machines", &["--machines", missing, "--machine", "a"]),
    ];
    for (flag, args) in cases {
        let stderr = run_failing(
            fixture_build(fruix(), "local", dir.path(), "root").args(args),
            2,
            &[&format!(
                "{flag}: executor `local` builds on this host and connects to no guest (its keys: make, work_dir)"
            )],
        );
        assert!(!stderr.contains("unknown field"), "{flag}: {stderr}");
        assert!(!stderr.contains("not found"), "{flag}: {stderr}");
        assert!(!dir.path().join("store").exists(), "{flag}: no store made");
    }
}

/// Single-quotes `arg` for the shell.
fn quoted(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// Runs `cmd` on a terminal (a pseudo-terminal of script(1)) from `dir`,
/// and returns all it wrote there, escape sequences included.
fn on_a_terminal(cmd: &Command, dir: &Path) -> Vec<u8> {
    require_tool("script", "bsdutils");
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quoted)
        .collect();
    let out = run(Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .current_dir(dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// The stage names live lines showed (bold, as `{prefix:.bold}` draws
/// them), each with where in `screen` it was drawn last.
fn live_stages(screen: &str) -> Vec<(String, usize)> {
    let (bold, plain) = ("\u{1b}[1m", "\u{1b}[0m");
    let mut stages: Vec<(String, usize)> = Vec::new();
    for (at, _) in screen.match_indices(bold) {
        let name = &screen[at + bold.len()..];
        let Some(end) = name.find(plain) else {
            continue;
        };
        let name = name[..end].to_string();
        match stages.iter_mut().find(|(n, _)| *n == name) {
            Some(stage) => stage.1 = at,
            None => stages.push((name, at)),
        }
    }
    stages
}

/// Regression: on a terminal, a build's stages left a line when they ended
/// (`==> buildworld done in 0.8s`), but the work fruix does itself (adding
/// the source, promoting) showed only a live line and left none; the live
/// line of a stage that had ended stayed on screen (`collect`, then `sign`,
/// beneath their `done` lines) until the next began; and the promotion's
/// live line was first drawn before its name was set, showing a stage with
/// no name. Every stage shown live now ends with its line, its live line
/// gone, and none is ever nameless.
#[test]
fn every_stage_a_build_shows_on_a_terminal_ends_with_a_line_and_has_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let build = fixture_build(fruix(), "local", dir.path(), "root");
    let screen = String::from_utf8_lossy(&on_a_terminal(&build, dir.path())).into_owned();
    let stages = live_stages(&screen);
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains(&""),
        "a live line without a stage: {screen:?}"
    );
    // (A stage that ends within a few milliseconds, such as `collect`, may
    // end before its live line is first drawn.)
    for stage in ["source", "buildworld", "promote"] {
        assert!(names.contains(&stage), "{stage} in {names:?}");
    }
    for (stage, drawn_last) in &stages {
        let ended = format!("==> {stage} done in ");
        let Some(at) = screen.find(&ended) else {
            panic!("{stage} shows live, but no {ended:?} line: {screen:?}")
        };
        assert!(
            *drawn_last < at,
            "{stage}'s live line is drawn again after it ended: {screen:?}"
        );
    }
}

/// `fruix ARGS` with `variable` empty, then with it unset.
fn empty_and_unset(variable: &str, args: &[&std::ffi::OsStr]) -> (Output, Output) {
    let empty = run(fruix().env(variable, "").args(args));
    let unset = run(fruix().env_remove(variable).args(args));
    (empty, unset)
}

/// Regression: an empty environment variable (as CI templates export
/// them) was a value, refused as missing (`a value is required for
/// '--store <DIR>'`, exit 2). It is now unset: the option keeps its
/// default, as a flag that was not given does.
#[test]
fn an_empty_environment_variable_is_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fruix_promote::Store::open(&store).unwrap();
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let source = fixture_source();
    let build = [
        os("build"),
        os("--executor"),
        os("nonexistent"),
        os("--source"),
        source.as_os_str(),
    ];
    let verify = [os("store"), os("verify"), os("--store"), store.as_os_str()];
    let import = [
        os("store"),
        os("import"),
        os("--store"),
        store.as_os_str(),
        os("/nonexistent/archive"),
    ];
    let cases: [(&str, &[&std::ffi::OsStr]); 7] = [
        ("FRUIX_STORE", &[os("store"), os("list")]),
        ("FRUIX_STATE_DIR", &build),
        ("FRUIX_SIGNING_KEY", &build),
        ("SOURCE_DATE_EPOCH", &build),
        ("FRUIX_PROGRESS_EVERY", &build),
        ("FRUIX_PROGRESS_EVERY", &verify),
        ("FRUIX_TRUSTED_KEYS_FILE", &import),
    ];
    for (variable, args) in cases {
        let (empty, unset) = empty_and_unset(variable, args);
        let said = String::from_utf8_lossy(&empty.stderr);
        assert!(!said.contains("environment variable"), "{variable}: {said}");
        assert_eq!(
            empty.status.code(),
            unset.status.code(),
            "{variable}: {said}"
        );
        assert_eq!(empty.stdout, unset.stdout, "{variable}");
        assert_eq!(said, String::from_utf8_lossy(&unset.stderr), "{variable}");
    }
    // The default is the one used: an empty store verifies.
    let (empty, _) = empty_and_unset("FRUIX_PROGRESS_EVERY", &verify);
    assert!(empty.status.success(), "{empty:?}");
}

/// Regression: on a terminal that cannot redraw a line (`TERM=dumb`, an
/// editor's shell buffer), a build drew its live line all the same
/// (`ESC[2K`, a spinner). It says plain lines there now.
#[test]
fn a_dumb_terminal_gets_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let build = fixture_build(fruix(), "local", dir.path(), "root");
    let mut dumb = Command::new("env");
    dumb.arg("TERM=dumb")
        .arg(build.get_program())
        .args(build.get_args());
    let screen = String::from_utf8_lossy(&on_a_terminal(&dumb, dir.path())).into_owned();
    assert!(screen.contains("==> buildworld done in"), "{screen}");
    assert!(!screen.contains('\u{1b}'), "{screen:?}");
}
