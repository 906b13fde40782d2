//! Regression tests for the command-line review: what a guest or the
//! registry says cannot forge output lines, names and flags that cannot be
//! honoured are refused before anything is made, a refused command leaves
//! no store (or report directory) it made behind, and paths print escaped.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ssh_import::{answering_helper, build_exiting};
use crate::sshd::Sshd;
use crate::util::{
    failed_with, fixture_build_into, fixture_source, fruix, json_error, key_values, listing,
    on_store, promote_command, promote_linked_quietly, run, run_json, run_ok, sample_root,
    source_add,
};

/// An empty scratch directory inside a new temporary directory.
fn work() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    (dir, work)
}

/// The lines of `text` that start with `prefix`.
fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn a_guest_warning_cannot_forge_a_line_on_the_hosts_stderr() {
    let sshd = Sshd::trusted();
    let warning = r#"printf '%s\n' '{"v":1,"event":{"event":"warning","message":"harmless\nfruix: error: FORGED by the guest"}}'"#;
    let helper = answering_helper(&sshd, "forging-fruix", &format!("{warning}\nexit 3"));
    let stderr = build_exiting(&sshd, &helper, 3, "the forging helper");
    assert!(
        stderr.contains("in the guest: harmless\\nfruix: error: FORGED by the guest"),
        "the warning is shown, its newline escaped: {stderr}"
    );
    assert_eq!(
        lines_starting(&stderr, "fruix: error: FORGED"),
        Vec::<&str>::new(),
        "a guest's warning began a line of its own: {stderr}"
    );
}

#[test]
fn source_add_refuses_a_name_unusable_in_a_store_name_and_creates_nothing() {
    let (_dir, work) = work();
    for name in ["a/b", "", "a\tb", "a\u{1b}[31mb", "a\u{202e}b"] {
        let out = run(&mut source_add(&work.join("store"), &["--name", name]));
        failed_with(&format!("--name {name:?}"), &out, 2, &["--name"]);
        assert_eq!(listing(&work), Vec::<PathBuf>::new(), "--name {name:?}");
    }
}

#[test]
fn store_list_escapes_what_the_registry_holds() {
    let (_dir, work) = work();
    let store = work.join("store");
    // `source add` refuses such a version now; a registry written by an
    // older fruix, or edited by hand, can still hold one.
    run_ok(&mut source_add(
        &store,
        &["--quiet", "--freebsd-version", "15.0-STABLE"],
    ));
    let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    let changed = db
        .execute(
            "UPDATE objects SET freebsd_version = ?1",
            ["15.0-STABLE\u{1b}[31m\nforged line"],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let out = run_ok(fruix().args(["store", "list", "--store"]).arg(&store));
    assert!(
        !out.contains('\u{1b}'),
        "an escape sequence reached stdout: {out:?}"
    );
    assert_eq!(lines_starting(&out, "forged"), Vec::<&str>::new(), "{out}");
    assert!(out.contains("15.0-STABLE\\033[31m\\nforged line"), "{out}");
    // The columns line up on the escaped text: PATH starts at the same
    // column in the header and in the row.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let column = |line: &str, of: &str| line.find(of).unwrap();
    assert_eq!(
        column(lines[0], "PATH"),
        column(lines[1], store.to_str().unwrap()),
        "{out}"
    );
}

/// A directory whose name is not UTF-8, inside `work`.
fn non_utf8_dir(work: &Path) -> PathBuf {
    let dir = work.join(OsStr::from_bytes(b"dir\xff"));
    std::fs::create_dir(&dir).unwrap();
    dir
}

#[test]
fn json_output_shows_a_path_that_is_not_utf8_escaped_instead_of_panicking() {
    let (_dir, work) = work();
    let store = work.join("store");
    let state = work.join("state");
    let root = sample_root(&work, "root");
    let odd = non_utf8_dir(&work);
    let link = odd.join("result");
    promote_linked_quietly(&store, &state, &link, &root);
    let roots = run_json(
        on_store(&["store", "roots"], &["--json"], &store)
            .arg("--state-dir")
            .arg(&state),
    );
    let links: Vec<&str> = roots
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["link"].as_str())
        .collect();
    assert!(
        links.iter().any(|t| t.ends_with("dir\\377/result")),
        "{roots:#}"
    );
    // A JSON error shows such a path escaped too: a store there is
    // refused (its bundles would name it as text).
    let out = run(&mut source_add(&odd.join("store"), &["--json"]));
    json_error(&out, 2, "dir\\377/store is not UTF-8");
}

#[test]
fn refused_commands_leave_no_store_they_made() {
    let (dir, work) = work();
    let store = work.join("new").join("store");
    // A promotion refused after the store was opened.
    let root = sample_root(dir.path(), "changed");
    std::fs::write(root.join("artifacts/world/etc/motd"), "changed").unwrap();
    let out = run(&mut promote_command(
        &store,
        &root,
        &["--quiet", "--no-out-link"],
    ));
    failed_with("a changed root", &out, 4, &["tree signature mismatch"]);
    assert_eq!(listing(&work), Vec::<PathBuf>::new(), "promote");
    // A source without sys/conf/newvers.sh and no --freebsd-version.
    let empty = dir.path().join("empty-source");
    std::fs::create_dir(&empty).unwrap();
    let out = run(fruix()
        .args(["source", "add", "--store"])
        .arg(&store)
        .arg(&empty));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(listing(&work), Vec::<PathBuf>::new(), "source add");
    // A build whose run directory cannot be made: the state directory is
    // a file.
    let state = dir.path().join("state-file");
    std::fs::write(&state, "").unwrap();
    let out = run(fixture_build_into(fruix(), "local", &store, &state)
        .args(["--freebsd-version", "15.0-STABLE"]));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(listing(&work), Vec::<PathBuf>::new(), "build");
    // matrix collect of a matrix file that does not exist.
    let out = run(fruix()
        .args(["matrix", "collect"])
        .arg(dir.path().join("missing.scm"))
        .arg("--state-dir")
        .arg(work.join("state")));
    failed_with("a missing matrix file", &out, 2, &["missing.scm"]);
    assert_eq!(listing(&work), Vec::<PathBuf>::new(), "matrix collect");
}

#[test]
fn build_no_promote_refuses_out_link_and_sign_with_given_on_the_command_line() {
    let (_dir, work) = work();
    for flags in [
        &["--out-link", "elsewhere"][..],
        &["--sign-with", "/nonexistent/key.sec"][..],
    ] {
        let out = run(fruix()
            .args(["build", "--executor", "local", "--no-promote", "--source"])
            .arg(fixture_source())
            .args(["--store", "s", "--state-dir", "st"])
            .args(flags)
            .current_dir(&work));
        failed_with(&format!("{flags:?}"), &out, 2, &[flags[0], "--no-promote"]);
        assert_eq!(listing(&work), Vec::<PathBuf>::new(), "{flags:?}");
    }
    // A key from the environment is no request to sign: the build goes on
    // to the next check (here a refused target architecture).
    let out = run(fruix()
        .args(["build", "--executor", "local", "--no-promote", "--source"])
        .arg(fixture_source())
        .args([
            "--store",
            "s",
            "--state-dir",
            "st",
            "--target-arch",
            "am d64",
        ])
        .env("FRUIX_SIGNING_KEY", "/nonexistent/key.sec")
        .current_dir(&work));
    let stderr = failed_with("FRUIX_SIGNING_KEY", &out, 2, &["am d64"]);
    assert!(!stderr.contains("--sign-with"), "{stderr}");
}

#[test]
fn printed_paths_cannot_forge_key_value_lines() {
    let (_dir, work) = work();
    let root = sample_root(&work, "root");
    let link_dir = work.join("d\nforged_link=");
    std::fs::create_dir(&link_dir).unwrap();
    let out = promote_linked_quietly(
        &work.join("store"),
        &work.join("state"),
        &link_dir.join("x"),
        &root,
    );
    assert_eq!(lines_starting(&out, "forged"), Vec::<&str>::new(), "{out}");
    assert!(
        key_values(&out)["out_link"].ends_with("d\\nforged_link=/x"),
        "{out}"
    );
    // A store path with a control character is refused (exit 2) before
    // anything is made, named escaped, nothing on stdout (source add took
    // one, though no promotion could go into it).
    let store = work.join("s\nforged_store=1");
    let out = run(&mut source_add(&store, &["--quiet"]));
    failed_with(
        "a store path with a line break",
        &out,
        2,
        &["s\\nforged_store=1", "control character"],
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!store.exists());
}
