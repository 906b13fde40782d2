//! Regression tests for a command-line review: a path option naming what is
//! not a directory (a store, a state, report or man directory that is a
//! regular file) is invalid input (exit 2), not a system failure; `store
//! sign -r` signs closures; every command's help ends with its exit
//! statuses, and each man page's header names its command; flags that
//! would be ignored together are refused.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fruix_core::ExitStatus;

use crate::util::{
    fixture_source, fruix, listing, made_state, object_names, promote_report, run, run_json,
    run_ok, sample_root, snapshot, store_export, store_import, verify_store, FIXTURE_BUILD_FLAGS,
};

/// A matrix file of one `local` cell (id `local`) building the miniature
/// tree.
fn matrix_file(dir: &Path) -> PathBuf {
    let file = dir.join("m.scm");
    let text = format!(
        "(fruix-matrix (format-version 1) (source {:?}) (axes (executor \"local\")))\n",
        fixture_source().display().to_string()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// `fruix ARGS`, run in `dir` (relative paths are `dir`'s).
fn in_dir(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.args(args).current_dir(dir);
    cmd
}

/// Checks that `out` (`what`) was refused as invalid input: exit 2, each of
/// `says` in stderr, and, under `--json`, a `usage` error object saying
/// them too.
fn refused(what: &str, out: &Output, json: bool, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{what}: stderr lacks {s:?}: {stderr}");
    }
    if json {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON on stdout ({e}): {out:?}"));
        assert_eq!(v["error"]["kind"], "usage", "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        for s in says {
            assert!(message.contains(s), "{what}: {v}");
        }
    }
}

/// Regression: a `--store` that was a regular file (or under one, or a
/// device, or a symlink to nothing) made every command that writes the
/// store fail with exit 3, "not writable: File exists (os error 17)". It
/// is invalid input (exit 2), said as the commands that only read a store
/// say it, and nothing is made.
#[test]
fn a_store_that_is_no_directory_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("regfile"), "not a store\n").unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    std::fs::create_dir(dir.join("state")).unwrap();
    let root = sample_root(dir, "root");
    let matrix = matrix_file(dir);
    let archive = dir.join("archive");
    std::fs::write(&archive, "").unwrap();
    let source = fixture_source();
    let build = |store: &str| -> Vec<OsString> {
        let mut args: Vec<OsString> = ["build", "--executor", "local", "--source"]
            .map(OsString::from)
            .to_vec();
        args.push(source.clone().into());
        args.extend(FIXTURE_BUILD_FLAGS.map(OsString::from));
        args.extend(
            ["--state-dir", "state", "--no-out-link", "--store", store].map(OsString::from),
        );
        args
    };
    let before = snapshot(dir);
    for (store, kind) in [
        ("regfile", "(it is a regular file)"),
        ("/dev/null", "(it is a character device)"),
        ("regfile/sub", "(regfile is a regular file)"),
        ("dangling", "(it is a dangling symlink)"),
    ] {
        let with_store = |args: &[&str]| -> Vec<OsString> {
            args.iter()
                .map(OsString::from)
                .chain(["--store", store].map(OsString::from))
                .collect()
        };
        let root = root.to_str().unwrap();
        let matrix = matrix.to_str().unwrap();
        let archive = archive.to_str().unwrap();
        let cases: Vec<(&str, Vec<OsString>)> = vec![
            ("build", build(store)),
            (
                "native-build promote",
                with_store(&["native-build", "promote", root, "--no-out-link"]),
            ),
            ("store import", with_store(&["store", "import", archive])),
            (
                "source add",
                with_store(&["source", "add", source.to_str().unwrap()]),
            ),
            (
                "matrix run",
                with_store(&["matrix", "run", matrix, "--state-dir", "state"]),
            ),
            (
                "matrix run-cell",
                with_store(&[
                    "matrix",
                    "run-cell",
                    matrix,
                    "--cell",
                    "local",
                    "--state-dir",
                    "state",
                ]),
            ),
            ("store verify", with_store(&["store", "verify"])),
            ("store list", with_store(&["store", "list"])),
        ];
        for (what, args) in cases {
            let out = run(fruix().args(&args).arg("--json").current_dir(dir));
            let what = format!("{what} --store {store}");
            let says = format!("store {store} is not a directory {kind}");
            refused(
                &what,
                &out,
                true,
                &[&says, "check --store (or FRUIX_STORE)"],
            );
            assert_eq!(snapshot(dir), before, "{what} made something");
        }
    }
}

/// Regression: a `--state-dir`, `--report-dir` or `man --dir` that was a
/// regular file (or under one) failed with exit 3 ("failed to create state
/// directory regfile/native-builds: Not a directory"). It is refused as
/// invalid input (exit 2) naming the option, before anything runs; a
/// state directory from `FRUIX_STATE_DIR` is blamed on the variable.
#[test]
fn a_state_report_or_man_directory_that_is_no_directory_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("regfile"), "not a directory\n").unwrap();
    let store_dir = dir.join("s");
    let report = promote_report(&store_dir.join("store"), &sample_root(dir, "root"), &[]);
    let bundle = report["result_store"].as_str().unwrap();
    let store = store_dir.join("store");
    let store = store.to_str().unwrap();
    let matrix = matrix_file(dir);
    let matrix = matrix.to_str().unwrap();
    let source = fixture_source();
    let source = source.to_str().unwrap();
    let before = snapshot(dir);
    for bad in ["regfile", "regfile/x", "/dev/null/x"] {
        let state = |words: &[&str]| -> Vec<String> {
            words
                .iter()
                .map(|w| w.to_string())
                .chain(["--store", store, "--state-dir", bad].map(String::from))
                .collect()
        };
        let build = [
            &["build", "--executor", "local", "--source", source][..],
            &FIXTURE_BUILD_FLAGS,
        ]
        .concat();
        let cases: Vec<(Vec<String>, &str, bool)> = vec![
            (state(&build), "--state-dir", true),
            (
                state(&["native-build", "promote", "root"]),
                "--state-dir",
                true,
            ),
            (state(&["store", "roots"]), "--state-dir", true),
            (
                state(&["store", "add-root", bundle, "link"]),
                "--state-dir",
                true,
            ),
            (state(&["store", "gc"]), "--state-dir", true),
            (state(&["store", "delete", bundle]), "--state-dir", true),
            (
                ["matrix", "run", matrix, "--report-dir", bad]
                    .map(String::from)
                    .to_vec(),
                "--report-dir",
                true,
            ),
            (
                [
                    "matrix",
                    "run-cell",
                    matrix,
                    "--cell",
                    "local",
                    "--report-dir",
                    bad,
                ]
                .map(String::from)
                .to_vec(),
                "--report-dir",
                true,
            ),
            (
                ["matrix", "collect", matrix, "--report-dir", bad]
                    .map(String::from)
                    .to_vec(),
                "--report-dir",
                true,
            ),
            (
                ["man", "--dir", bad].map(String::from).to_vec(),
                "--dir",
                false,
            ),
        ];
        for (args, option, json) in cases {
            let mut cmd = fruix();
            cmd.args(&args).current_dir(dir);
            if json {
                cmd.arg("--json");
            }
            let out = run(&mut cmd);
            let what = args.join(" ");
            refused(
                &what,
                &out,
                json,
                &[
                    &format!("{option} <DIR>"),
                    &format!("{bad} is not a directory"),
                ],
            );
            assert_eq!(snapshot(dir), before, "{what} made something");
        }
        // The state directory of FRUIX_STATE_DIR: the message says so.
        let out = run(fruix()
            .args(state(&["store", "roots"]).iter().take(4))
            .env("FRUIX_STATE_DIR", bad)
            .current_dir(dir));
        refused(
            "FRUIX_STATE_DIR",
            &out,
            false,
            &[
                "from the environment variable FRUIX_STATE_DIR",
                "is not a directory",
            ],
        );
    }
    // A state directory that is one still does (one that is missing is
    // refused by the commands that follow roots: roots_review).
    std::fs::create_dir(dir.join("new-state")).unwrap();
    run_ok(&mut in_dir(
        dir,
        &[
            "store",
            "roots",
            "--store",
            store,
            "--state-dir",
            "new-state",
        ],
    ));
}

/// `fruix store generate-key` of a key named `name` into `dir`; the secret
/// key's path and the public key.
fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (secret, public) = crate::signing::key(dir, name);
    (secret, public.trim().to_string())
}

/// `store sign` had no `-r/--recursive`, unlike `store export` and `store
/// copy`: signing a result's closure took `$(fruix store query --requisites
/// ./result)`. `sign -r` signs the closures of the objects named, each
/// object once; exported with `export -r`, the closure is accepted by a
/// fresh store that trusts the key, and refused by one that trusts a key
/// that signed the bundle alone.
#[test]
fn store_sign_recursive_signs_each_object_of_the_closures_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Objects move between stores at the same path: the closure is
    // exported from `new/store`, which is then moved away.
    let store = dir.join("new/store");
    let report = promote_report(&store, &sample_root(dir, "root"), &[]);
    let bundle = report["result_store"].as_str().unwrap().to_string();
    let (closure_key, closure_public) = key(dir, "closure-key");
    let (bundle_key, bundle_public) = key(dir, "bundle-key");
    let sign = |key: &Path, flags: &[&str]| {
        let mut cmd = fruix();
        cmd.args(["store", "sign", "--json", "--secret-key"])
            .arg(key)
            .args(flags)
            .arg("--store")
            .arg(&store)
            .args([&bundle, &bundle]);
        run_json(&mut cmd)
    };
    let mut requisites: Vec<String> = serde_json::from_value(run_json(
        fruix()
            .args(["store", "query", "--requisites", "--json", "--store"])
            .arg(&store)
            .arg(&bundle),
    ))
    .unwrap();
    requisites.sort();
    assert!(requisites.len() > 1, "{requisites:?}");
    let signed = |v: &serde_json::Value| -> Vec<String> {
        let signed: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_string())
            .collect();
        signed
    };
    assert_eq!(signed(&sign(&bundle_key, &[])), vec![bundle.clone()]);
    for flag in ["-r", "--recursive"] {
        assert_eq!(signed(&sign(&closure_key, &[flag])), requisites, "{flag}");
    }
    let archive = dir.join("closure.arc");
    run_ok(&mut store_export(&store, &archive, &["-r"], &bundle));
    let objects = object_names(&store);
    std::fs::rename(dir.join("new"), dir.join("original")).unwrap();
    // Trusting the key that signed the bundle alone: its artifacts are
    // signed by no key the store trusts.
    let out = run(&mut store_import(
        &store,
        &archive,
        &["--trusted-key", &bundle_public],
    ));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(!dir.join("new").exists(), "{:?}", listing(dir));
    run_ok(&mut store_import(
        &store,
        &archive,
        &["--trusted-key", &closure_public],
    ));
    assert_eq!(object_names(&store), objects);
    verify_store(&store);
    let help = run_ok(fruix().args(["store", "sign", "--help"]));
    assert!(help.contains("-r, --recursive"), "{help}");
}

/// The commands of `fruix WORDS` (`fruix WORDS --help`'s "Commands:"
/// section), `help` left out.
fn subcommands(words: &[String]) -> Vec<String> {
    let help = run_ok(fruix().args(words).arg("--help"));
    help.split("\nCommands:\n")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .take_while(|l| l.starts_with("  "))
                // A description's wrapped lines are indented further.
                .filter(|l| !l.starts_with("   "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|name| *name != "help")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Every command, `fruix` itself left out.
fn every_command() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(words) = todo.pop() {
        for name in subcommands(&words) {
            let mut command = words.clone();
            command.push(name);
            todo.push(command.clone());
            found.push(command);
        }
    }
    found.sort();
    found
}

/// Regression: only `fruix --help` said the exit statuses. Every command's
/// help ends with the statuses it can end with, as the one table
/// (`fruix_core::ExitStatus`) numbers and names them, or points at `fruix
/// --help`: `store verify` exits 4 on corruption, `matrix run` and
/// `matrix collect` 5, 6 and 130.
#[test]
fn every_commands_help_says_its_exit_statuses() {
    let commands = every_command();
    assert!(commands.len() > 25, "{commands:?}");
    for words in &commands {
        let help = run_ok(fruix().args(words).arg("--help"));
        let line = help
            .split("\nExit statuses: ")
            .nth(1)
            .unwrap_or_else(|| panic!("fruix {words:?} --help: no exit statuses: {help}"))
            .replace('\n', " ");
        let listed = line.split(';').next().unwrap();
        if listed.starts_with("see `fruix --help`") {
            continue;
        }
        for status in listed.split(", ") {
            let mut parts = status.split(' ');
            let code: u32 = parts.next().unwrap().parse().unwrap();
            let name = parts.next().unwrap();
            let known = ExitStatus::from_code(code)
                .unwrap_or_else(|| panic!("{words:?}: {code} is no exit status"));
            assert_eq!(known.name(), name, "{words:?}: {line}");
        }
    }
    let line = |words: &[&str]| {
        let help = run_ok(fruix().args(words).arg("--help"));
        help.split("\nExit statuses: ")
            .nth(1)
            .unwrap()
            .replace('\n', " ")
    };
    assert!(
        line(&["store", "verify"]).contains("4 promotion-failure (corruption found)"),
        "{}",
        line(&["store", "verify"])
    );
    for words in [["matrix", "run"], ["matrix", "collect"]] {
        let line = line(&words);
        for said in ["5 matrix-failure", "6 divergence", "130 cancelled"] {
            assert!(line.contains(said), "{words:?}: {line}");
        }
    }
}

/// Regression: the `.TH` line of every page but fruix(1) gave its source
/// as the command's last word (`"verify 0.1.0"`). Each names its command
/// (`"fruix-store-verify 0.1.0"`), and ends with its exit statuses.
#[test]
fn each_man_page_names_its_command_and_its_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(fruix().arg("man").arg("--dir").arg(dir.path()));
    let version = env!("CARGO_PKG_VERSION");
    for page in [
        "fruix",
        "fruix-store",
        "fruix-store-verify",
        "fruix-matrix-run",
    ] {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.1"))).unwrap();
        let header = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert_eq!(
            header,
            format!(".TH {page} 1  \"{page} {version}\" "),
            "{page}"
        );
        if page != "fruix" {
            assert!(text.contains("Exit statuses: "), "{page}: {text}");
        }
    }
}

/// Regression: `store gc --keep-result-roots --older-than 1d` was accepted,
/// the limit ignored; `build --no-promote --no-out-link` was accepted while
/// `--no-promote --out-link X` was refused. Both are refused (exit 2),
/// naming both flags, before anything is done.
#[test]
fn flags_that_would_be_ignored_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let store = dir.join("store");
    promote_report(&store, &sample_root(dir, "root"), &[]);
    let at = made_state(dir);
    let before = snapshot(dir);
    let out = run(fruix()
        .args([
            "store",
            "gc",
            "--keep-result-roots",
            "--older-than",
            "1d",
            "--json",
        ])
        .args(&at));
    refused("gc", &out, true, &["--keep-result-roots", "--older-than"]);
    let source = fixture_source();
    let out = run(fruix()
        .args([
            "build",
            "--executor",
            "local",
            "--no-promote",
            "--no-out-link",
            "--source",
        ])
        .arg(&source)
        .args(FIXTURE_BUILD_FLAGS)
        .args(&at)
        .arg("--json")
        .current_dir(dir));
    refused("build", &out, true, &["--no-promote", "--no-out-link"]);
    assert_eq!(snapshot(dir), before, "a refused command changed something");
    // Each alone is still taken.
    for flags in [["--keep-result-roots"], ["--older-than=1d"]] {
        run_ok(
            fruix()
                .args(["store", "gc", "--dry-run"])
                .args(flags)
                .args(&at),
        );
    }
}

/// Regression: `store lst --json` (a misspelt subcommand) and `store list
/// --json=true` (a value for the flag) printed nothing on stdout: a script
/// reading the JSON got nothing to parse. Each gets its JSON usage error:
/// a subcommand that is none counts as one of its siblings, which take
/// `--json`; a command line without `--json` still gets none, nor does a
/// word that is no command of fruix itself (`help`'s words included).
#[test]
fn a_misspelt_subcommand_or_a_json_value_still_gets_a_json_error() {
    for (words, says) in [
        (&["store", "lst", "--json"][..], "'lst'"),
        (&["executors", "lst", "--json"][..], "'lst'"),
        (&["store", "list", "--json=true"][..], "'true'"),
    ] {
        let out = run(fruix().args(words));
        refused(&format!("{words:?}"), &out, true, &[says]);
    }
    for words in [
        &["store", "lst"][..],
        &["bogus", "--json"],
        &["help", "--json"],
        &["help", "stor", "--json"],
    ] {
        let out = run(fruix().args(words));
        refused(&format!("{words:?}"), &out, false, &[]);
        assert!(out.stdout.is_empty(), "{words:?}: {out:?}");
    }
}

/// Regression: a refused command line printed a JSON error whenever a word
/// of it was `--json`, even for a command that takes no `--json` (`store
/// serve`, `completions`, `fruix` alone), whose stdout is then not JSON
/// (serve's is its protocol). A command that takes `--json` and got it
/// still gets its JSON error.
#[test]
fn a_refused_command_line_is_json_only_where_the_command_takes_json() {
    let json = run(fruix().args(["store", "list", "--json", "--bogus"]));
    assert_eq!(json.status.code(), Some(2), "{json:?}");
    let said: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(said["error"]["kind"], "usage", "{said}");
    for words in [
        &["store", "serve", "--json"][..],
        &["completions", "bash", "--json"][..],
        &["--json"][..],
    ] {
        let out = run(fruix().args(words));
        assert_eq!(out.status.code(), Some(2), "{words:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{words:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{words:?}: {out:?}");
    }
}
