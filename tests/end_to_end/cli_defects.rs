//! Regression tests for the defects a new user met in their first hour
//! (the command-line issue): each refused request exits with the status the
//! table says, and creates nothing.

use std::path::{Path, PathBuf};

use crate::util::{
    fixture_build_into, fixture_source, fruix, listing, run, run_failing, store_and_state,
    FIXTURE_BUILD_FLAGS,
};

/// Writes `text` to `dir/name`; returns the file's path.
fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A temporary directory holding an executors file with one executor that
/// builds for amd64 and aarch64 only; the file's path.
fn arch_bound_executors() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/external")
        .canonicalize()
        .unwrap();
    let file = write_file(
        dir.path(),
        "executors.scm",
        &format!(
            r#"(fruix-executors
  (format-version 1)
  (executor
    (name "arch-bound")
    (version "1.0.0")
    (description "builds for amd64 and aarch64 only")
    (target-arches "amd64" "aarch64")
    (build (command "{}/build.sh"))))
"#,
            fixtures.display()
        ),
    );
    (dir, file)
}

#[test]
fn a_bare_executors_file_name_is_read_from_the_current_directory() {
    let (dir, _) = arch_bound_executors();
    let out = run(fruix().current_dir(dir.path()).args([
        "--executors-file",
        "executors.scm",
        "executors",
        "list",
    ]));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("arch-bound"));
}

/// Each request here is refused with exit status 2 before anything exists:
/// no run directory, no result root, no store.
#[test]
fn refused_requests_exit_2_and_create_nothing() {
    let (dir, file) = arch_bound_executors();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let cases: [(&str, &[&str]); 5] = [
        (
            "a target architecture the executor does not build",
            &["--executor", "arch-bound", "--target-arch", "i386"],
        ),
        (
            "a make flag with a space, for an external executor",
            &["--executor", "arch-bound", "--make-flag", "CFLAGS=-O2 -g"],
        ),
        (
            "a target architecture that is not a name",
            &["--executor", "local", "--target-arch", "am d64"],
        ),
        (
            "a kernel configuration that is a path",
            &["--executor", "local", "--kernconf", "../../etc"],
        ),
        ("zero jobs", &["--executor", "local", "--jobs", "0"]),
    ];
    for (what, args) in cases {
        let out = run(fruix()
            .arg("--executors-file")
            .arg(&file)
            .arg("build")
            .args(args)
            .arg("--source")
            .arg(fixture_source())
            .args(store_and_state(&work)));
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert_eq!(
            listing(&work),
            Vec::<PathBuf>::new(),
            "{what} created something"
        );
    }
}

#[test]
fn matrix_plan_refuses_a_cell_its_executor_cannot_build() {
    let (dir, file) = arch_bound_executors();
    let matrix = write_file(
        dir.path(),
        "matrix.scm",
        &format!(
            r#"(fruix-matrix
  (format-version 1)
  (source "{}")
  (axes (executor "arch-bound") (target-arch "amd64" "i386")))
"#,
            fixture_source().display()
        ),
    );
    run_failing(
        fruix()
            .arg("--executors-file")
            .arg(&file)
            .args(["matrix", "plan"])
            .arg(&matrix),
        2,
        &["builds for amd64, aarch64, not \"i386\""],
    );
}

/// An unwritable store is found before the build, and nothing is built; a
/// promotion that fails after a build says how to promote the kept root.
#[test]
fn an_unwritable_store_is_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"a file where the store would be").unwrap();
    let state = dir.path().join("state");
    let out = run(&mut fixture_build_into(
        fruix(),
        "local",
        &blocker.join("store"),
        &state,
    ));
    // A file in the way is the user's input (exit 2), not a system failure.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was built"), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!state.exists(), "a run directory was created");
}

/// A promotion that fails after a build (here the store's disk fills up)
/// says that the result root was kept, and the exact command that promotes
/// it later; that command works.
#[test]
fn a_promotion_failing_after_the_build_gives_the_command_to_promote_later() {
    let dir = tempfile::tempdir().unwrap();
    let small = crate::util::SmallFilesystem::mount(dir.path().join("small"), "640k");
    let store = small.path.join("store");
    let root = dir.path().join("root");
    let (state, link) = (dir.path().join("state"), dir.path().join("result"));
    let out = run(fixture_build_into(fruix(), "local", &store, &state)
        .arg("--out-link")
        .arg(&link)
        .arg("--result-root")
        .arg(&root)
        .args(FIXTURE_BUILD_FLAGS));
    assert_eq!(out.status.code(), Some(3), "disk full: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let command = format!(
        "fruix native-build promote --store {} --state-dir {} --out-link {} {}",
        store.display(),
        state.display(),
        link.display(),
        root.display()
    );
    assert!(
        stderr.contains(&format!(
            "the result root {} was kept; promote it later with: {command}",
            root.display()
        )),
        "{stderr}"
    );
    drop(small);
    // The same command, once the store has room, promotes the kept root.
    // The small filesystem went with the store in it, the build's source
    // object too: promoting is refused until the source is added again.
    std::fs::create_dir_all(&store).unwrap();
    let words: Vec<&str> = command.split(' ').skip(1).collect();
    let refused = run(fruix().args(&words));
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("fruix source add"),
        "{refused:?}"
    );
    crate::util::run_ok(&mut crate::util::source_add(&store, &["--quiet"]));
    crate::util::run_ok(fruix().args(words));
    // ... and roots the bundle where the build would have: its link, in
    // its state directory.
    let bundle = std::fs::read_link(&link).unwrap();
    assert!(bundle.starts_with(&store), "{bundle:?}");
    let roots = std::fs::read_dir(state.join("gcroots/auto"))
        .unwrap()
        .count();
    assert_eq!(roots, 1, "the indirect root is in --state-dir");
}

/// Regression: a misspelt required field (`format-versoin`) was reported as
/// the right field missing, at the wrong line; and an unclosed parenthesis
/// was reported at the end of the file, its location said twice.
#[test]
fn misspelt_fields_and_unclosed_lists_are_named_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("matrix.scm");
    let cases = [
        (
            "(fruix-matrix\n  (format-versoin 1)\n  (axes (executor \"local\")))\n",
            "matrix.scm: field `format-versoin` (line 2): unknown field; did you mean `format-version`?",
        ),
        (
            "(fruix-matrix\n  (format-version 1)\n  (axes (executor \"local\")\n",
            "matrix.scm:3:3: syntax error: this parenthesis is never closed; add its `)`",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&matrix, text).unwrap();
        let out = run(fruix().args(["matrix", "plan"]).arg(&matrix));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(
            stderr.matches("line").count(),
            usize::from(expected.contains("line")),
            "{stderr}"
        );
    }
}

/// Regression: a matrix pinning a machine its machines file does not define
/// said "not found", which reads like a missing file.
#[test]
fn an_undefined_machine_is_named_with_the_ones_the_file_defines() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "machines.scm",
        "(fruix-machines\n  (machine (name \"builder-1\") (host \"127.0.0.1\") (user \"root\")))\n",
    );
    let matrix = write_file(
        dir.path(),
        "matrix.scm",
        &format!(
            "(fruix-matrix\n  (format-version 1)\n  (source \"{}\")\n  (machines-file \"machines.scm\")\n  (axes (executor \"host-initiated\"))\n  (include ((executor \"host-initiated\") (machine \"builder-2\"))))\n",
            fixture_source().display()
        ),
    );
    let out = run(fruix().args(["matrix", "plan"]).arg(&matrix));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("defines no machine named \"builder-2\"; it defines: builder-1 (did you mean builder-1?)"),
        "{stderr}"
    );
    assert!(!stderr.contains("not found"), "{stderr}");
}

/// Subcommands offer only the flags they use, and say what a bad value must be.
#[test]
fn help_offers_only_what_a_command_uses() {
    let help = |args: &[&str]| {
        let out = run(fruix().args(args).arg("--help"));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!help(&["native-build", "promote"]).contains("--verbose"));
    assert!(!help(&["store", "verify"]).contains("--executors-file"));
    let out = run(fruix().args(["--executors-file", "x.scm", "store", "list"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("build, executors, matrix plan, run and run-cell"),
        "{out:?}"
    );
    // collect and export run no executor.
    for command in [
        &["matrix", "collect", "m.scm"][..],
        &["matrix", "export", "m.scm", "--format", "gitlab-ci"],
    ] {
        let out = run(fruix().args(["--executors-file", "x.scm"]).args(command));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("run-cell"),
            "{out:?}"
        );
    }
    for jobs in ["0", "99999999999"] {
        run_failing(
            fruix().args([
                "build",
                "--executor",
                "local",
                "--source",
                ".",
                "--jobs",
                jobs,
            ]),
            2,
            &["is not in 1..=4096"],
        );
    }
    run_failing(
        fruix().args(["build", "--executor", "locl", "--source", "."]),
        2,
        &["did you mean `local`?"],
    );
}

#[test]
fn a_user_other_than_root_gets_a_store_in_their_data_home() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let root = crate::util::sample_root(dir.path(), "root");
    let bin = crate::util::fruix_for_others();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // The result root stays root's (its owner is part of its signature);
    // the user only needs to read it.
    for path in [dir.path(), &data] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let promote = |xdg: Option<&Path>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["native-build", "promote", "--json"])
            .arg(&root)
            .current_dir(dir.path())
            .env_remove("FRUIX_STORE")
            .env_remove("FRUIX_STATE_DIR")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", dir.path())
            .uid(NOBODY)
            .gid(NOBODY);
        if let Some(xdg) = xdg {
            cmd.env("XDG_DATA_HOME", xdg);
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        PathBuf::from(report["result_store"].as_str().unwrap())
    };
    let bundle = promote(Some(&data));
    assert!(bundle.starts_with(data.join("fruix/store")), "{bundle:?}");
    let bundle = promote(None);
    assert!(
        bundle.starts_with(dir.path().join(".local/share/fruix/store")),
        "without XDG_DATA_HOME, ~/.local/share: {bundle:?}"
    );
}

/// Regression: the guest executors described themselves with
/// `"capabilities": null`, and each listed the other's keys.
#[test]
fn guest_executors_describe_their_capabilities_and_only_their_keys() {
    let describe = |name: &str| -> serde_json::Value {
        let out = crate::util::run_ok(fruix().args(["executors", "describe", name, "--json"]));
        serde_json::from_str(&out).unwrap()
    };
    let host = describe("host-initiated");
    let guest = describe("guest-self-hosted");
    for (d, own, other) in [
        (&host, "make", "guest_helper"),
        (&guest, "guest_helper", "make"),
    ] {
        assert_eq!(d["capabilities"]["remote"], true, "{d:#}");
        let keys = crate::util::strings_of(&d["config_keys"], "name");
        assert!(keys.contains(&own) && !keys.contains(&other), "{keys:?}");
        assert!(!keys.contains(&"inner"), "the vm executor's own: {keys:?}");
    }
}

/// Regression: the README's host-initiated example was refused before
/// connecting, because `--source` (a path in the guest) was checked on the
/// host. A checkout in the guest is now `--guest-source`, never checked on
/// the host; what the host cannot read from it, `--freebsd-version`, must
/// be given, and the error says so. `--source` is a tree on this host.
#[test]
fn a_guest_checkout_is_a_guest_source_not_checked_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let build = |extra: &[&str]| {
        run(fruix()
            .args(["build", "--executor", "host-initiated"])
            .args(["--guest-source", "/nonexistent-on-this-host/usr/src"])
            .args(["--guest", "root@127.0.0.1:1", "--known-hosts", "/dev/null"])
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra))
    };
    let out = build(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --freebsd-version"),
        "{out:?}"
    );
    // With it, fruix goes on to connect (port 1: refused, a system failure).
    let out = build(&["--freebsd-version", "15.0-STABLE"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to root@127.0.0.1:1"),
        "{stderr}"
    );
    // A --source this host does not have is refused, pointing to --guest-source.
    let out = run(fruix()
        .args(["build", "--executor", "host-initiated"])
        .args(["--source", "/nonexistent-on-this-host/usr/src"])
        .args(["--guest", "root@127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --guest-source PATH"));
    // And --guest-source is for guest executors only.
    let out = run(fruix().args(["build", "--executor", "local", "--guest-source", "/usr/src"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("builds on this host; give --source"));
}

#[test]
fn a_guest_executor_refuses_a_virtual_machine_template_as_its_machine() {
    // The template's address is a placeholder until the `vm` executor
    // boots a guest from it: connecting there would reach this host's own
    // sshd. The build is refused before anything is made.
    let dir = tempfile::tempdir().unwrap();
    let machines = write_file(
        dir.path(),
        "machines.scm",
        &format!(
            "(fruix-machines (machine (name \"vm1\") (user \"root\")\n  (vm (driver qemu) (kernel \"/vm/vmlinuz\") (host-key \"{}\"))))\n",
            fruix_core::testing::PINNED_HOST_KEY
        ),
    );
    let before = listing(dir.path());
    for executor in ["host-initiated", "guest-self-hosted"] {
        run_failing(
            fruix()
                .args(["build", "--executor", executor, "--machines"])
                .arg(&machines)
                .args(["--machine", "vm1", "--source"])
                .arg(fixture_source())
                .args(store_and_state(dir.path())),
            2,
            &["\"vm1\" is a virtual machine template", "--executor vm"],
        );
    }
    assert_eq!(listing(dir.path()), before);
}
