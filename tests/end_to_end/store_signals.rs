//! Ctrl-C, SIGTERM and SIGHUP while a command waits for a lock another
//! process holds (the collector's, or the store's own while a repair holds
//! it alone): every command that opens the store gives up the wait, exits
//! 130 and says, in its error (the JSON error object too under `--json`),
//! what it left as it was. Never a sleep: the signal goes once the command
//! said that it waits.

use std::ffi::OsStr;
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
            // Made: a collection refuses a state directory that is not there.
            std::fs::create_dir_all(self.path("state")).unwrap();
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

    /// [`Lab::on_bundle`] without a state directory, then `OPTION PATH`
    /// of the lab's file `name`.
    fn on_bundle_with_file(&self, words: &[&str], option: &str, name: &str) -> Command {
        let mut cmd = self.on_bundle(words, false);
        cmd.arg(option).arg(self.path(name));
        cmd
    }
}

/// A command waiting for a held lock, and what it must say (after `fruix:
/// error: `, and, given `--json` when `json`, as its JSON error's message)
/// once a signal of `signals` ended the wait.
struct Case {
    what: &'static str,
    command: fn(&Lab) -> Command,
    signals: &'static [libc::c_int],
    says: &'static str,
    json: bool,
}

const ALL: &[libc::c_int] = &[libc::SIGTERM, libc::SIGHUP, libc::SIGINT];
const TERM: &[libc::c_int] = &[libc::SIGTERM];
const UNCHANGED: &str = "cancelled; the store was not changed";

/// The usual [`Case`]: ended by SIGTERM, saying `says`, under `--json`.
fn case(what: &'static str, command: fn(&Lab) -> Command, says: &'static str) -> Case {
    Case {
        what,
        command,
        signals: TERM,
        says,
        json: true,
    }
}

/// `cmd`, then `args`.
fn with_args<S: AsRef<OsStr>>(mut cmd: Command, args: impl IntoIterator<Item = S>) -> Command {
    cmd.args(args);
    cmd
}

/// Runs `case` once a signal: the failures, described.
fn run_case(lab: &Lab, held: Held, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    for &signal in case.signals {
        let lock = held.take(&lab.path("store"));
        let mut cmd = (case.command)(lab);
        if case.json {
            cmd.arg("--json");
        }
        let mut waiting = spawn_reading_stderr(cmd.stdin(Stdio::null()));
        waiting.wait_for_line(held.notice());
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

/// Runs every case, each waiting for `held`; then the store must be as it
/// was, with no root, archive or key file the cancelled commands would have
/// made.
fn run_cases(held: Held, cases: &[Case]) {
    let lab = Lab::new();
    let objects = object_names(&lab.path("store"));
    let failures: Vec<String> = cases.iter().flat_map(|c| run_case(&lab, held, c)).collect();
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
    run_cases(
        Held::Collection,
        &[
            Case {
                signals: ALL,
                ..case("store add-root", add_root, "cancelled; no root was added")
            },
            Case {
                signals: ALL,
                ..case("store delete", delete, "cancelled; nothing was deleted")
            },
            Case {
                signals: &[libc::SIGINT],
                ..case("store verify", verify, UNCHANGED)
            },
            case("store gc", gc, UNCHANGED),
        ],
    );
}

/// `store add-root` of the sample bundle at `link`.
fn add_root(l: &Lab) -> Command {
    with_args(l.on_bundle(&["store", "add-root"], true), [l.path("link")])
}

/// `store delete` of the sample bundle.
fn delete(l: &Lab) -> Command {
    l.on_bundle(&["store", "delete"], true)
}

/// `store verify`.
fn verify(l: &Lab) -> Command {
    l.command(&["store", "verify"], false)
}

/// `store gc`.
fn gc(l: &Lab) -> Command {
    l.command(&["store", "gc"], true)
}

/// Regression: the commands opening the store while a repair held it
/// alone were killed by SIGTERM (143) when they installed no signal
/// handling (`store list`, `roots`, `info`, `query`, `delete`, `add-root`,
/// `sign`, `export`, `serve`); the others (`store verify`, `gc`, `import`,
/// `copy`, `native-build promote`, `source add`, `build`, `matrix run`)
/// said only `cancelled`, or, gc, summed up a collection that never ran.
#[test]
fn a_signal_ends_a_wait_for_a_repair_saying_what_was_left() {
    run_cases(
        Held::Repair,
        &[
            case(
                "store list",
                |l| l.command(&["store", "list"], false),
                UNCHANGED,
            ),
            case(
                "store roots",
                |l| l.command(&["store", "roots"], true),
                UNCHANGED,
            ),
            case(
                "store info",
                |l| l.on_bundle(&["store", "info"], false),
                UNCHANGED,
            ),
            case(
                "store query",
                |l| l.on_bundle(&["store", "query", "--roots"], true),
                UNCHANGED,
            ),
            case("store delete", delete, "cancelled; nothing was deleted"),
            case("store add-root", add_root, "cancelled; no root was added"),
            case(
                "store sign",
                |l| l.on_bundle_with_file(&["store", "sign"], "--secret-key", "key.sec"),
                "cancelled; nothing was signed",
            ),
            case(
                "store export --output",
                |l| l.on_bundle_with_file(&["store", "export"], "--output", "out.arc"),
                "cancelled; no archive was written",
            ),
            Case {
                json: false,
                ..case(
                    "store export",
                    |l| l.on_bundle(&["store", "export"], false),
                    "cancelled; nothing was exported",
                )
            },
            case("store verify", verify, UNCHANGED),
            case("store gc", gc, UNCHANGED),
            case(
                "store import",
                |l| with_args(l.command(&["store", "import"], false), [l.path("archive")]),
                "cancelled; nothing was imported, the store was not changed",
            ),
            case(
                "store copy --to",
                |l| {
                    let args = ["--to", "ssh://nobody@127.0.0.1:9"];
                    with_args(l.on_bundle(&["store", "copy"], false), args)
                },
                "cancelled; nothing was copied; neither store was changed",
            ),
            Case {
                json: false,
                ..case(
                    "store serve",
                    |l| l.command(&["store", "serve"], false),
                    UNCHANGED,
                )
            },
            case(
                "native-build promote",
                |l| {
                    let words = ["native-build", "promote", "--no-out-link"];
                    with_args(l.command(&words, false), [l.path("again")])
                },
                "cancelled; nothing was promoted",
            ),
            case(
                "source add",
                |l| with_args(l.command(&["source", "add"], false), [fixture_source()]),
                "cancelled; nothing was added",
            ),
            case(
                "build",
                |l| {
                    let build = fixture_build(fruix(), "local", l.dir.path(), "built");
                    with_args(build, ["--no-out-link"])
                },
                "cancelled; nothing was built",
            ),
            case(
                "matrix run",
                |l| {
                    let (report, matrix) = (l.path("report"), l.path("matrix.scm"));
                    let args = [
                        "--report-dir".as_ref(),
                        report.as_os_str(),
                        matrix.as_os_str(),
                    ];
                    with_args(l.command(&["matrix", "run"], true), args)
                },
                "cancelled; no cell was run",
            ),
        ],
    );
}
