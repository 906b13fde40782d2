//! One table of bad input, one row per class the README documents: each is
//! refused with the status the exit-status table gives it, creates nothing
//! (no store, no state directory, no report, no result root), and under
//! `--json` still prints one JSON object naming the error's kind, message
//! and exit status.

use std::path::Path;

use crate::util::{fixture_source, fruix, run, snapshot};

/// How a row's command is run: `DIR` in an argument is the row's scratch
/// directory, where its store, state directory and files live.
struct Case {
    what: &'static str,
    /// What the error message says (on stderr, and in the JSON's message).
    says: &'static str,
    args: &'static [&'static str],
    /// Files the row writes into its directory first.
    files: &'static [(&'static str, &'static str)],
    status: i32,
    /// Whether the command takes `--json`.
    json: bool,
}

const MATRIX_UNCLOSED: &str = "(fruix-matrix\n  (format-version 1)\n  (axes (executor \"local\")\n";
const EXECUTORS_MISSPELT: &str =
    "(fruix-executors\n  (format-version 1)\n  (executor (name \"x\") (versoin \"1\")))\n";
const NESTED: &str = "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((";

const CASES: &[Case] = &[
    Case {
        what: "an unknown flag",
        says: "unexpected argument '--no-such-flag'",
        args: &["store", "list", "--store", "DIR/store", "--no-such-flag"],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "an unknown executor",
        says: "unknown executor `locl`; did you mean `local`?",
        args: &[
            "build",
            "--executor",
            "locl",
            "--source",
            "SRC",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "a missing source tree",
        says: "give an existing FreeBSD source tree",
        args: &[
            "build",
            "--executor",
            "local",
            "--source",
            "DIR/no-source",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "a kernel configuration that is a path",
        says: "kernconf \"../../etc\" is not a kernel configuration name",
        args: &[
            "build",
            "--executor",
            "local",
            "--source",
            "SRC",
            "--kernconf",
            "../../etc",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "an existing result root",
        says: "a result root is never overwritten",
        args: &[
            "build",
            "--executor",
            "local",
            "--source",
            "SRC",
            "--result-root",
            "DIR",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "a result root that does not validate",
        says: "expected (fruix-native-build-promotion ...), found (not-promotion ...)",
        args: &["native-build", "promote", "DIR", "--store", "DIR/store"],
        files: &[("promotion.scm", "(not-promotion)\n")],
        status: 4,
        json: true,
    },
    Case {
        what: "metadata nested past the reader's bound",
        says: "nested more than 64 levels deep",
        args: &["native-build", "promote", "DIR", "--store", "DIR/store"],
        files: &[("promotion.scm", NESTED)],
        status: 4,
        json: true,
    },
    Case {
        what: "a store that does not exist",
        says: "no store at",
        args: &["store", "list", "--store", "DIR/store"],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "a path that is not a store object",
        says: "not a store object",
        args: &["store", "verify", "--store", "DIR", "DIR/elsewhere"],
        files: &[(".links/.keep", "")],
        status: 2,
        json: true,
    },
    Case {
        what: "a missing matrix file",
        says: "matrix.scm: not found",
        args: &[
            "matrix",
            "run",
            "DIR/matrix.scm",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "a matrix file with an unclosed parenthesis",
        says: "this parenthesis is never closed",
        args: &[
            "matrix",
            "run",
            "DIR/matrix.scm",
            "--store",
            "DIR/store",
            "--state-dir",
            "DIR/state",
        ],
        files: &[("matrix.scm", MATRIX_UNCLOSED)],
        status: 2,
        json: true,
    },
    Case {
        what: "an executors file with a misspelt field",
        says: "unknown field; did you mean `version`?",
        args: &["--executors-file", "DIR/executors.scm", "executors", "list"],
        files: &[("executors.scm", EXECUTORS_MISSPELT)],
        status: 2,
        json: true,
    },
    Case {
        what: "an unknown executor to describe",
        says: "unknown executor `no-such-executor`",
        args: &["executors", "describe", "no-such-executor"],
        files: &[],
        status: 2,
        json: true,
    },
    Case {
        what: "--executors-file for a command that uses no executor",
        says: "--executors-file is for the commands that use executors",
        args: &[
            "--executors-file",
            "DIR/x.scm",
            "store",
            "list",
            "--store",
            "DIR/store",
        ],
        files: &[],
        status: 2,
        json: true,
    },
];

/// `arg` with `DIR` and `SRC` replaced.
fn expand(arg: &str, dir: &Path) -> String {
    arg.replace("DIR", &dir.display().to_string())
        .replace("SRC", &fixture_source().display().to_string())
}

#[test]
fn every_class_of_bad_input_is_refused_with_its_status_and_creates_nothing() {
    for case in CASES {
        for json in [false, true].into_iter().filter(|j| !j || case.json) {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in case.files {
                let path = dir.path().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let before = snapshot(dir.path());
            let mut cmd = fruix();
            cmd.args(case.args.iter().map(|a| expand(a, dir.path())));
            if json {
                cmd.arg("--json");
            }
            let out = run(&mut cmd);
            let what = format!("{} (--json: {json})", case.what);
            assert_eq!(out.status.code(), Some(case.status), "{what}: {out:?}");
            assert_eq!(snapshot(dir.path()), before, "{what} created something");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(case.says), "{what}: {stderr}");
            if !json {
                assert_eq!(out.stdout, b"", "{what}: no result on stdout");
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON object ({e}): {out:?}"));
            let error = &v["error"];
            assert_eq!(error["exit_status"], case.status, "{what}: {v}");
            let kind = fruix_core::ExitStatus::from_code(case.status as u32)
                .unwrap()
                .name();
            assert_eq!(error["kind"], kind, "{what}: {v}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(case.says),
                "{what}: {v}"
            );
        }
    }
}
