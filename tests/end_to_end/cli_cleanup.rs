//! What three CLI clean-ups must keep: `store import` and `store copy
//! --from` remove a store they made when refused and keep it when they
//! succeed, and never remove a store that was there (the promote crate's
//! `Store::open_tentatively`, as promote, source add, build and matrix
//! use); `build --no-promote` refuses a `--sign-with` flag but not a key
//! from `FRUIX_SIGNING_KEY`, which only a promotion reads, and shows its
//! result root absolute; and `matrix
//! plan --json`, now printed through the one JSON path, says what the text
//! plan says.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::matrix::{external_executors, Matrix};
use crate::signing::key;
use crate::sshd::{bind_mounted_fruix, Sshd};
use crate::util::{
    fixture_build, fixture_build_into, fruix, key_values, listing, object_names, promote_report,
    require_tool, run_failing, run_json, run_ok, sample_root, ssh_store_copy, store_export,
    store_import, strings_of, verify_store, FIXTURE_BUILD_FLAGS,
};

/// A store at `store` holding a sample result root's objects, signed with
/// a new key `builder-1` (in `store`'s parent). Returns its bundle's path
/// and the key's public text.
fn signed_store(store: &Path) -> (String, String) {
    let dir = store.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (secret, public) = key(dir, "builder-1");
    let root = sample_root(dir, "root");
    let report = promote_report(store, &root, &["--sign-with", secret.to_str().unwrap()]);
    let bundle = report["result_store"].as_str().unwrap().to_string();
    (bundle, public)
}

/// Checks that nothing is left of the store a refused command made at
/// `dir/new/...`, down from `dir/new`.
fn assert_no_new_store(dir: &Path) {
    assert!(!dir.join("new").exists(), "{:?}", listing(dir));
}

#[test]
fn store_import_keeps_a_store_it_made_only_when_the_import_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // Objects move between stores at the same path: the closure is
    // exported from a store at `new/nested/store`, which is then moved
    // away.
    let new = dir.path().join("new/nested/store");
    let (bundle, public) = signed_store(&new);
    let archive = dir.path().join("closure.arc");
    run_ok(&mut store_export(&new, &archive, &["--recursive"], &bundle));
    let objects = object_names(&new);
    std::fs::rename(dir.path().join("new"), dir.path().join("original")).unwrap();
    let bad = dir.path().join("bad.arc");
    std::fs::write(&bad, "not an archive\n").unwrap();
    let trusted = ["--trusted-key", public.trim()];
    // Refused into a store path that does not exist: what the import made,
    // down from the first missing parent, goes again.
    run_failing(
        &mut store_import(&new, &bad, &trusted),
        4,
        &["the store was not changed"],
    );
    assert_no_new_store(dir.path());
    // Refused into stores that exist (an empty directory, and a store with
    // objects): each stays, as it was.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let populated = dir.path().join("other/store");
    signed_store(&populated);
    let populated_objects = object_names(&populated);
    for store in [&empty, &populated] {
        run_failing(
            &mut store_import(store, &bad, &trusted),
            4,
            &["the store was not changed"],
        );
        assert!(store.is_dir(), "{store:?} was removed");
    }
    assert_eq!(object_names(&empty), Vec::<String>::new());
    assert_eq!(object_names(&populated), populated_objects);
    verify_store(&populated);
    // Accepted into a store path that does not exist: the store it made
    // stays, holding the closure.
    run_ok(&mut store_import(&new, &archive, &trusted));
    assert_eq!(object_names(&new), objects);
    verify_store(&new);
}

#[test]
fn store_copy_from_keeps_a_store_it_made_only_when_the_copy_succeeds() {
    require_tool("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::trusted();
    // Objects move between stores at the same path: the other side's
    // store is promoted at `new/store`, then moved to `shadow/new/store`,
    // and the other side's fruix runs with `shadow` mounted over the
    // test's directory (in a mount namespace of its own), where it finds
    // it at `new/store` again.
    let new = dir.path().join("new/store");
    let (bundle, public) = signed_store(&new);
    let objects = object_names(&new);
    let shadow = dir.path().join("shadow");
    std::fs::create_dir(&shadow).unwrap();
    std::fs::rename(dir.path().join("new"), shadow.join("new")).unwrap();
    let remote_program = dir.path().join("remote-fruix");
    bind_mounted_fruix(&remote_program, "", &shadow, dir.path());
    let (_, stranger) = key(dir.path(), "stranger");
    let copy = |store: &Path, trusted: &str| {
        let mut cmd = ssh_store_copy(
            &sshd,
            &["--recursive"],
            "--from",
            &remote_program,
            &new,
            store,
        );
        cmd.args(["--trusted-key", trusted.trim()]).arg(&bundle);
        cmd
    };
    // Signed by no key it trusts: refused, and the store it made is gone.
    run_failing(
        &mut copy(&new, &stranger),
        4,
        &["does not trust", "the store was not changed"],
    );
    assert_no_new_store(dir.path());
    // A store that was there stays, without what was refused (objects of
    // another store's path).
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    run_failing(
        &mut copy(&existing, &public),
        2,
        &["serves the store at", "nothing was copied"],
    );
    assert!(existing.is_dir(), "the existing store was removed");
    assert_eq!(object_names(&existing), Vec::<String>::new());
    // Trusted: the store it made stays, holding the closure.
    run_ok(&mut copy(&new, &public));
    assert_eq!(object_names(&new), objects);
    verify_store(&new);
}

/// `fruix build --executor local --no-promote` of the miniature tree, in
/// `dir`, into the result root `dir/root`.
fn unpromoted_build(dir: &Path) -> Command {
    let mut cmd = fixture_build(fruix(), "local", dir, "root");
    cmd.arg("--no-promote").current_dir(dir);
    cmd
}

/// Regression: `build --no-promote --result-root rel` printed `rel` as
/// given, in text and JSON. The result root is shown absolute, as every
/// path fruix prints, whether given relative or allocated in a relative
/// `--state-dir`.
#[test]
fn build_no_promote_shows_the_result_root_absolute() {
    require_tool("bmake", "bmake");
    require_tool("cc", "gcc");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The store and state directory relative to `dir`, its working directory.
    let relative = || {
        let mut cmd = fixture_build_into(fruix(), "local", "store".as_ref(), "state".as_ref());
        cmd.args(FIXTURE_BUILD_FLAGS)
            .arg("--no-promote")
            .current_dir(dir);
        cmd
    };
    let text = run_ok(relative().args(["--result-root", "rel"]));
    let shown = key_values(&text);
    assert_eq!(
        shown["result_root"],
        dir.join("rel").to_str().unwrap(),
        "{text}"
    );
    let json = run_json(relative().arg("--json"));
    let root = Path::new(json["result_root"].as_str().unwrap());
    assert!(root.is_absolute(), "{json}");
    assert!(root.starts_with(dir.join("state/native-builds")), "{json}");
    assert!(root.join("promotion.scm").is_file(), "{json}");
}

#[test]
fn build_no_promote_refuses_sign_with_given_as_a_flag_whatever_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = "/nonexistent/key.sec";
    for (what, flags, environment) in [
        ("--sign-with K", &["--sign-with", key][..], None),
        (
            "--sign-with=K",
            &["--sign-with=/nonexistent/key.sec"][..],
            None,
        ),
        (
            "--sign-with K with FRUIX_SIGNING_KEY set too",
            &["--sign-with", key][..],
            Some("/nonexistent/other.sec"),
        ),
    ] {
        let mut cmd = unpromoted_build(dir.path());
        cmd.args(flags);
        if let Some(environment) = environment {
            cmd.env("FRUIX_SIGNING_KEY", environment);
        }
        let stderr = run_failing(&mut cmd, 2, &["--sign-with", "--no-promote"]);
        assert_eq!(
            listing(dir.path()),
            Vec::<PathBuf>::new(),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn build_no_promote_ignores_a_signing_key_from_the_environment() {
    require_tool("bmake", "bmake");
    require_tool("cc", "gcc");
    let dir = tempfile::tempdir().unwrap();
    // A key that cannot be read: a promotion would refuse it before the
    // build (so the variable is read), ...
    let mut promoting = fixture_build(fruix(), "local", dir.path(), "promoted");
    promoting
        .arg("--no-out-link")
        .env("FRUIX_SIGNING_KEY", "/nonexistent/key.sec");
    run_failing(&mut promoting, 2, &["/nonexistent/key.sec"]);
    assert!(!dir.path().join("promoted").exists());
    // ... but without promotion nothing is signed: the build runs.
    let report = run_json(
        unpromoted_build(dir.path())
            .arg("--json")
            .env("FRUIX_SIGNING_KEY", "/nonexistent/key.sec"),
    );
    let root = dir.path().join("root");
    assert_eq!(report["result_root"], root.to_str().unwrap(), "{report}");
    assert!(root.join("promotion.scm").is_file(), "{report}");
}

#[test]
fn help_says_where_sign_with_defaults_from() {
    for command in [&["build"][..], &["native-build", "promote"][..]] {
        let help = run_ok(fruix().args(command).arg("--help"));
        let line = help
            .lines()
            .skip_while(|l| !l.contains("--sign-with"))
            .take_while(|l| !l.trim_start().starts_with("--out-link"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(line.contains("FRUIX_SIGNING_KEY"), "{command:?}: {help}");
    }
}

#[test]
fn matrix_plan_json_says_what_the_text_plan_says() {
    let m = Matrix::new(
        r#"  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL"))
  (retries 2)
  (max-parallel 3)"#,
    );
    let fruix = || {
        let mut cmd = fruix();
        cmd.arg("--executors-file").arg(external_executors());
        cmd
    };
    let text = run_ok(fruix().args(["matrix", "plan"]).arg(m.path("matrix.scm")));
    let plan = m.plan(&mut fruix());
    let cells = plan["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "{plan:#}");
    let mut kernconfs: Vec<&str> = strings_of(&plan["cells"], "kernconf");
    kernconfs.sort();
    assert_eq!(kernconfs, ["GENERIC", "GENERIC", "MINIMAL", "MINIMAL"]);
    for cell in cells {
        let id = cell["id"].as_str().unwrap();
        // The text plan's line of the cell: `ID  EXECUTOR KERNCONF ARCH
        // [FLAGS] on PLACEMENT`.
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no line for {id}: {text}"));
        let (_, placement) = line.rsplit_once(" on ").unwrap();
        assert_eq!(cell["runs_on"], placement, "{plan:#}");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cell["executor"], words[1], "{plan:#}");
        assert_eq!(cell["kernconf"], words[2], "{plan:#}");
        assert_eq!(cell["target_arch"], words[3], "{plan:#}");
        assert!(
            cell["make_flag"].is_null() && cell["machine"].is_null(),
            "{plan:#}"
        );
    }
    let agree: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("must agree: "))
        .map(|ids| ids.split(", ").collect())
        .collect();
    assert_eq!(agree.len(), 2, "{text}");
    assert_eq!(plan["must_agree"], serde_json::json!(agree), "{plan:#}");
    assert!(
        text.contains(&format!(
            "fail-fast {}; retries {}",
            plan["fail_fast"], plan["retries"]
        )),
        "{plan:#}\n{text}"
    );
    assert!(
        text.contains(&format!("max-parallel {};", plan["max_parallel"])),
        "{plan:#}\n{text}"
    );
}
