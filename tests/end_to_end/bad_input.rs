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
    /// The command's arguments, separated by spaces.
    args: &'static str,
    /// Files the row writes into its directory first.
    files: &'static [(&'static str, &'static str)],
    status: i32,
    /// Whether the command takes `--json`.
    json: bool,
}

impl Case {
    /// A row refused as a usage error (exit status 2) that writes no files
    /// first and takes `--json`.
    const fn new(what: &'static str, says: &'static str, args: &'static str) -> Case {
        Case {
            what,
            says,
            args,
            files: &[],
            status: 2,
            json: true,
        }
    }

    /// This row, writing `files` into its directory first.
    const fn with_files(self, files: &'static [(&'static str, &'static str)]) -> Case {
        Case { files, ..self }
    }

    /// This row, refused with exit status `status`.
    const fn with_status(self, status: i32) -> Case {
        Case { status, ..self }
    }
}

const MATRIX_UNCLOSED: &str = "(fruix-matrix\n  (format-version 1)\n  (axes (executor \"local\")\n";
const EXECUTORS_MISSPELT: &str =
    "(fruix-executors\n  (format-version 1)\n  (executor (name \"x\") (versoin \"1\")))\n";
const NESTED: &str = "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((";

const CASES: &[Case] = &[
    Case::new(
        "an unknown flag",
        "unexpected argument '--no-such-flag'",
        "store list --store DIR/store --no-such-flag",
    ),
    Case::new(
        "an unknown executor",
        "unknown executor `locl`; did you mean `local`?",
        "build --executor locl --source SRC --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a missing source tree",
        "give an existing FreeBSD source tree",
        "build --executor local --source DIR/no-source --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a missing matrix file",
        "matrix.scm: not found; give the path of an existing matrix file",
        "matrix plan DIR/matrix.scm",
    ),
    Case::new(
        "a missing machines file",
        "machines.scm: not found; give the path of an existing machines file",
        "build --executor guest-self-hosted --machines DIR/machines.scm --machine m --source SRC --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a kernel configuration that is a path",
        "kernconf \"../../etc\" is not a kernel configuration name",
        "build --executor local --source SRC --kernconf ../../etc --store DIR/store --state-dir DIR/state",
    ),
    // Regression: a control character in what promotion.scm records was
    // found out after the whole build, when the metadata did not read back.
    Case::new(
        "a branch with a control character",
        "FreeBSD branch \"stable/15\\033[31m\" contains the control character",
        "build --executor local --source SRC --freebsd-branch stable/15\u{1b}[31m --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a source commit with a newline",
        "source commit \"abc\\ndef\" contains the control character",
        "build --executor local --source SRC --source-commit abc\ndef --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "an existing result root",
        "a result root is never overwritten",
        "build --executor local --source SRC --result-root DIR --store DIR/store --state-dir DIR/state",
    ),
    // Regression: found out after the whole build (exit 3).
    Case::new(
        "an out-link in a directory that does not exist",
        "/missing is not a directory; create it",
        "build --executor local --source SRC --out-link DIR/missing/result --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a result root that does not validate",
        "expected (fruix-native-build-promotion ...), found (not-promotion ...)",
        "native-build promote DIR --store DIR/store",
    )
    .with_files(&[("promotion.scm", "(not-promotion)\n")])
    .with_status(4),
    // Regression: exit 4, as if the root were invalid.
    Case::new(
        "a result root that does not exist",
        "none: not found; give the path of an existing result root",
        "native-build promote DIR/none --store DIR/store",
    ),
    // Regression: exit 3, as if reading had failed, without naming --from.
    Case::new(
        "a directory of cell reports that does not exist",
        "none is not a directory; give the directory the cell reports were unpacked into",
        "matrix collect DIR/matrix.scm --from DIR/none --state-dir DIR/state",
    )
    .with_files(&[("matrix.scm", MATRIX_LOCAL)]),
    Case::new(
        "metadata nested past the reader's bound",
        "nested more than 64 levels deep",
        "native-build promote DIR --store DIR/store",
    )
    .with_files(&[("promotion.scm", NESTED)])
    .with_status(4),
    Case::new(
        "a store that does not exist",
        "no store at",
        "store list --store DIR/store",
    ),
    // Regression: the refused import left the store it made (with
    // .fruix, .links and .lock) while saying the store was not changed.
    Case::new(
        "an import into a mistyped store that is refused",
        "the store was not changed",
        "store import --store DIR/mistyped/store /dev/null",
    )
    .with_status(4),
    Case::new(
        "a path that is not a store object",
        "not a store object",
        "store verify --store DIR DIR/elsewhere",
    )
    .with_files(&[(".links/.keep", "")]),
    Case::new(
        "a missing matrix file",
        "matrix.scm: not found",
        "matrix run DIR/matrix.scm --store DIR/store --state-dir DIR/state",
    ),
    Case::new(
        "a matrix file with an unclosed parenthesis",
        "this parenthesis is never closed",
        "matrix run DIR/matrix.scm --store DIR/store --state-dir DIR/state",
    )
    .with_files(&[("matrix.scm", MATRIX_UNCLOSED)]),
    Case::new(
        "an executors file with a misspelt field",
        "unknown field; did you mean `version`?",
        "--executors-file DIR/executors.scm executors list",
    )
    .with_files(&[("executors.scm", EXECUTORS_MISSPELT)]),
    Case::new(
        "an unknown executor to describe",
        "unknown executor `no-such-executor`",
        "executors describe no-such-executor",
    ),
    Case::new(
        "--executors-file for a command that uses no executor",
        "--executors-file is for the commands that use executors",
        "--executors-file DIR/x.scm store list --store DIR/store",
    ),
];

/// A matrix file of one local cell.
const MATRIX_LOCAL: &str =
    "(fruix-matrix (format-version 1) (source \"src\") (axes (executor \"local\")))\n";

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
            cmd.args(case.args.split(' ').map(|a| expand(a, dir.path())));
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
