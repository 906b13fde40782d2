//! Ctrl-C, SIGTERM and SIGHUP while a command waits for a lock another
//! process holds (the collector's, or the store's own while a repair holds
//! it alone): every command that opens the store gives up the wait, exits
//! 130 and says, in its error (the JSON error object too under `--json`),
//! what it left as it was. Never a sleep: the signal goes once the command
//! said that it waits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{
    fixture_build, fixture_source, fruix, hold_gc_lock, object_names, promote_report, run_ok,
    sample_root, spawn_reading_stderr, store_export, verify_store,
};

/// How long a cancelled command may take to end.
const ENDS: Duration = Duration::from_secs(60);

/// The lock the test holds while a command waits for it.
#[derive(Clone, Copy, Debug)]
enum Held {
    /// The collector's, exclusively, as a collection does.
    Collection,
    /// The store's `.lock`, exclusively, as a repair does.
    Repair,
}

impl Held {
    fn take(self, store: &Path) -> File {
        match self {
            Held::Collection => hold_gc_lock(store),
            Held::Repair => {
                let lock = File::open(store.join(".lock")).unwrap();
                lock.lock().unwrap();
                lock
            }
        }
    }

    /// What a command waiting for it says.
    fn notice(self) -> &'static str {
        match self {
            Held::Collection => "fruix: waiting for the garbage collection",
            Held::Repair => "fruix: waiting for the store's repair",
        }
    }
}

/// A store holding the sample result root's objects, and what the
/// commands use: a key, an archive, another root to promote, a matrix.
struct Lab {
    dir: tempfile::TempDir,
    bundle: String,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let report = promote_report(&d.join("store"), &sample_root(d, "root"), &[]);
        let bundle = report["result_store"].as_str().unwrap().to_string();
        run_ok(
            fruix()
                .args(["store", "generate-key", "--name", "test"])
                .args([
                    "--secret-key".as_ref(),
                    d.join("key.sec").as_os_str(),
                    "--public-key".as_ref(),
                    d.join("key.pub").as_os_str(),
                ]),
        );
        run_ok(&mut store_export(
            &d.join("store"),
            &d.join("archive"),
            &[],
            &bundle,
        ));
        sample_root(d, "again");
        std::fs::write(
            d.join("matrix.scm"),
            format!(
                "(fruix-matrix\n  (format-version 1)\n  (source {:?})\n  (axes (executor \"local\") (kernconf \"GENERIC\")))\n",
                fixture_source().display().to_string()
            ),
        )
        .unwrap();
        Lab { dir, bundle }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fruix WORDS --store STORE`, then `--state-dir STATE` when `state`.
    fn command(&self, words: &[&str], state: bool) -> Command {
        let mut cmd = fruix();
        cmd.args(words).arg("--store").arg(self.path("store"));
        if state {
            cmd.arg("--state-dir").arg(self.path("state"));
        }
        cmd
    }

    /// [`Lab::command`] on the sample bundle.
    fn on_bundle(&self, words: &[&str], state: bool) -> Command {
        let mut cmd = self.command(words, state);
        cmd.arg(&self.bundle);
        cmd
    }
}

/// A command waiting for `held`, and what it must say (after `fruix:
/// error: `, and, given `--json` when `json`, as its JSON error's message)
/// once a signal of `signals` ended the wait.
struct Case {
    what: &'static str,
    held: Held,
    command: fn(&Lab) -> Command,
    signals: &'static [libc::c_int],
    says: &'static str,
    json: bool,
}

const ALL: &[libc::c_int] = &[libc::SIGTERM, libc::SIGHUP, libc::SIGINT];
const TERM: &[libc::c_int] = &[libc::SIGTERM];
const UNCHANGED: &str = "cancelled; the store was not changed";

/// Runs `case` once a signal: the failures, described.
fn run_case(lab: &Lab, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    for &signal in case.signals {
        let lock = case.held.take(&lab.path("store"));
        let mut cmd = (case.command)(lab);
        if case.json {
            cmd.arg("--json");
        }
        let mut waiting = spawn_reading_stderr(cmd.stdin(Stdio::null()));
        waiting.wait_for_line(case.held.notice());
        waiting.signal(signal);
        let lines = std::mem::replace(&mut waiting.lines, std::sync::mpsc::channel().1);
        let out = waiting.finish(ENDS, case.what);
        drop(lock);
        // The reader of stderr ends at its end.
        let stderr: Vec<String> = lines.iter().collect();
        let mut wrong = Vec::new();
        if out.status.code() != Some(130) {
            wrong.push(format!("ended {:?}", out.status));
        }
        let said = format!("fruix: error: {}", case.says);
        if !stderr.contains(&said) {
            wrong.push(format!("no {said:?} on stderr"));
        }
        if case.json {
            let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let expected = serde_json::json!({
                "kind": "cancelled", "exit_status": 130, "message": case.says,
            });
            if error["error"] != expected {
                wrong.push(format!(
                    "JSON {:?} instead of {expected}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} (signal {signal}): {}; stderr:\n{}",
                case.what,
                wrong.join("; "),
                stderr.join("\n")
            ));
        }
    }
    failures
}

/// Runs every case; then the store must be as it was, with no root,
/// archive or key file the cancelled commands would have made.
fn run_cases(cases: &[Case]) {
    let lab = Lab::new();
    let objects = object_names(&lab.path("store"));
    let failures: Vec<String> = cases.iter().flat_map(|c| run_case(&lab, c)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(object_names(&lab.path("store")), objects);
    for made in ["link", "out.arc", "report"] {
        assert!(!lab.path(made).exists(), "{made} was made");
    }
    verify_store(&lab.path("store"));
}

/// Regression: `store add-root` and `store delete` waiting for a
/// collection were killed by SIGTERM (143) and SIGHUP (129), and died of
/// SIGINT, saying nothing; `store verify` and `store gc` cancelled then
/// said only `cancelled`, and gc summed up a collection that never ran
/// (`kept 0 live object(s)`).
#[test]
fn a_signal_ends_a_wait_for_the_collector_s_lock_saying_what_was_left() {
    run_cases(&[
        Case {
            what: "store add-root",
            held: Held::Collection,
            command: |l| {
                let mut cmd = l.on_bundle(&["store", "add-root"], true);
                cmd.arg(l.path("link"));
                cmd
            },
            signals: ALL,
            says: "cancelled; no root was added",
            json: true,
        },
        Case {
            what: "store delete",
            held: Held::Collection,
            command: |l| l.on_bundle(&["store", "delete"], true),
            signals: ALL,
            says: "cancelled; nothing was deleted",
            json: true,
        },
        Case {
            what: "store verify",
            held: Held::Collection,
            command: |l| l.command(&["store", "verify"], false),
            signals: &[libc::SIGINT],
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store gc",
            held: Held::Collection,
            command: |l| l.command(&["store", "gc"], true),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
    ]);
}

/// Regression: the commands opening the store while a repair held it
/// alone were killed by SIGTERM (143) when they installed no signal
/// handling (`store list`, `roots`, `info`, `query`, `delete`, `add-root`,
/// `sign`, `export`, `serve`); the others (`store verify`, `gc`, `import`,
/// `copy`, `native-build promote`, `source add`, `build`, `matrix run`)
/// said only `cancelled`, or, gc, summed up a collection that never ran.
#[test]
fn a_signal_ends_a_wait_for_a_repair_saying_what_was_left() {
    run_cases(&[
        Case {
            what: "store list",
            held: Held::Repair,
            command: |l| l.command(&["store", "list"], false),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store roots",
            held: Held::Repair,
            command: |l| l.command(&["store", "roots"], true),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store info",
            held: Held::Repair,
            command: |l| l.on_bundle(&["store", "info"], false),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store query",
            held: Held::Repair,
            command: |l| l.on_bundle(&["store", "query", "--roots"], true),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store delete",
            held: Held::Repair,
            command: |l| l.on_bundle(&["store", "delete"], true),
            signals: TERM,
            says: "cancelled; nothing was deleted",
            json: true,
        },
        Case {
            what: "store add-root",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.on_bundle(&["store", "add-root"], true);
                cmd.arg(l.path("link"));
                cmd
            },
            signals: TERM,
            says: "cancelled; no root was added",
            json: true,
        },
        Case {
            what: "store sign",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.on_bundle(&["store", "sign"], false);
                cmd.arg("--secret-key").arg(l.path("key.sec"));
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was signed",
            json: true,
        },
        Case {
            what: "store export --output",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.on_bundle(&["store", "export"], false);
                cmd.arg("--output").arg(l.path("out.arc"));
                cmd
            },
            signals: TERM,
            says: "cancelled; no archive was written",
            json: true,
        },
        Case {
            what: "store export",
            held: Held::Repair,
            command: |l| l.on_bundle(&["store", "export"], false),
            signals: TERM,
            says: "cancelled; nothing was exported",
            json: false,
        },
        Case {
            what: "store verify",
            held: Held::Repair,
            command: |l| l.command(&["store", "verify"], false),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store gc",
            held: Held::Repair,
            command: |l| l.command(&["store", "gc"], true),
            signals: TERM,
            says: UNCHANGED,
            json: true,
        },
        Case {
            what: "store import",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.command(&["store", "import"], false);
                cmd.arg(l.path("archive"));
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was imported, the store was not changed",
            json: true,
        },
        Case {
            what: "store copy --to",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.on_bundle(&["store", "copy"], false);
                cmd.args(["--to", "ssh://nobody@127.0.0.1:9"]);
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was copied; neither store was changed",
            json: true,
        },
        Case {
            what: "store serve",
            held: Held::Repair,
            command: |l| l.command(&["store", "serve"], false),
            signals: TERM,
            says: UNCHANGED,
            json: false,
        },
        Case {
            what: "native-build promote",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.command(&["native-build", "promote", "--no-out-link"], false);
                cmd.arg(l.path("again"));
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was promoted",
            json: true,
        },
        Case {
            what: "source add",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.command(&["source", "add"], false);
                cmd.arg(fixture_source());
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was added",
            json: true,
        },
        Case {
            what: "build",
            held: Held::Repair,
            command: |l| {
                let mut cmd = fixture_build(fruix(), "local", l.dir.path(), "built");
                cmd.arg("--no-out-link");
                cmd
            },
            signals: TERM,
            says: "cancelled; nothing was built",
            json: true,
        },
        Case {
            what: "matrix run",
            held: Held::Repair,
            command: |l| {
                let mut cmd = l.command(&["matrix", "run"], true);
                cmd.arg("--report-dir")
                    .arg(l.path("report"))
                    .arg(l.path("matrix.scm"));
                cmd
            },
            signals: TERM,
            says: "cancelled; no cell was run",
            json: true,
        },
    ]);
}
