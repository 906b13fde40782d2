//! What a person sees on a real terminal: `fruix` runs in a tmux pane, keys
//! are typed with `send-keys`, and the screen is read with `capture-pane`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{fixture_build, fruix, require_tool, run_ok, wait_until};

/// A detached tmux session on a private server, killed when dropped.
struct Pane {
    socket: PathBuf,
}

impl Pane {
    /// Starts `command` (a shell command line) in a 160×40 pane. When it
    /// exits the pane says `exited STATUS` and stays open.
    fn start(dir: &Path, command: &str) -> Pane {
        require_tool("tmux", "tmux");
        let pane = Pane {
            socket: dir.join("tmux.sock"),
        };
        run_ok(pane.tmux().args([
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "40",
            &format!("{command}; echo \"exited $?\"; exec cat"),
        ]));
        pane
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-f").arg("/dev/null").arg("-S").arg(&self.socket);
        cmd
    }

    /// The screen, as a person sees it.
    fn screen(&self) -> String {
        run_ok(self.tmux().args(["capture-pane", "-p"]))
    }

    /// Waits until the screen shows `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let mut screen = String::new();
        wait_until(&format!("the screen shows {text:?}"), || {
            screen = self.screen();
            screen.contains(text)
        });
        screen
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// Single-quotes `arg` for the shell.
fn quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

#[test]
fn ctrl_c_on_a_terminal_clears_the_live_line_and_says_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut build = fixture_build(fruix(), "local", dir.path(), "root");
    build.arg("--make-flag=HOLD_BUILD=yes");
    let line: Vec<String> = std::iter::once(build.get_program())
        .chain(build.get_args())
        .map(quote)
        .collect();
    let pane = Pane::start(dir.path(), &line.join(" "));
    pane.wait_for("waiting to be interrupted");
    run_ok(pane.tmux().args(["send-keys", "C-c"]));
    let screen = pane.wait_for("exited ");
    assert!(screen.contains("exited 130"), "{screen}");
    assert!(
        screen.contains("==> buildworld cancelled in "),
        "the stage says cancelled: {screen}"
    );
    assert!(!screen.contains("FAILED"), "{screen}");
    assert_eq!(
        screen.matches("fruix: cancelling").count(),
        1,
        "said once, on a line of its own: {screen}"
    );
    assert!(
        !screen.contains("waiting to be interrupted"),
        "the live line (with the last log line) is cleared: {screen}"
    );
    assert!(
        screen.lines().all(|l| !l.contains("buildworld [")),
        "no stale live line is left: {screen}"
    );
}

#[test]
fn a_command_names_its_store_first_on_a_terminal_and_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A store (an empty directory is none to a command that reads one).
    fruix_promote::Store::open(&store).unwrap();
    let line = [
        quote(env!("CARGO_BIN_EXE_fruix").as_ref()),
        "store list --store".into(),
        quote(store.as_os_str()),
    ];
    let pane = Pane::start(dir.path(), &line.join(" "));
    let screen = pane.wait_for("exited ");
    assert_eq!(
        screen.lines().next(),
        Some(format!("fruix: store {}", store.display()).as_str()),
        "{screen}"
    );
    assert!(screen.contains("exited 0"), "{screen}");
    // Not on a terminal: nothing but the results.
    let out = crate::util::run(fruix().args(["store", "list", "--store"]).arg(&store));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn an_escape_sequence_in_a_refused_argument_never_reaches_the_terminal() {
    // clap shows a refused value as it was given; in colour, an escape
    // sequence in it would clear this screen.
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "echo shown-before; {} build --jobs \"$(printf '\\033[2J\\033[Hforged')\"",
        quote(env!("CARGO_BIN_EXE_fruix").as_ref())
    );
    let pane = Pane::start(dir.path(), &line);
    let screen = pane.wait_for("exited ");
    assert!(screen.contains("exited 2"), "{screen}");
    assert!(
        screen.starts_with("shown-before\n"),
        "the screen was not cleared: {screen}"
    );
    assert!(screen.contains("invalid value"), "{screen}");
}

/// Regression: on a terminal, once no live line was left, `fruix matrix
/// run` left the cursor at the end of the line it had said last, two
/// columns short of the edge (the live lines stop there, so that a `^C`
/// cannot wrap them), where indicatif's padding no longer wraps: the next
/// line said, and then the table's header, went on that same line.
#[test]
fn every_line_a_matrix_run_says_on_a_terminal_starts_a_line_of_its_own() {
    // Two attempts that fail (a retry), each said with no live line left.
    let m =
        crate::matrix::Matrix::new("  (axes (executor \"mini-sh-system-failure\"))\n  (retries 1)");
    let mut run = fruix();
    run.arg("--executors-file")
        .arg(crate::matrix::external_executors())
        .args(["matrix", "run"])
        .arg(m.path("matrix.scm"))
        .args(crate::util::store_and_state(m.dir.path()))
        .arg("--report-dir")
        .arg(m.path("report"));
    let line: Vec<String> = std::iter::once(run.get_program())
        .chain(run.get_args())
        .map(quote)
        .collect();
    let pane = Pane::start(m.dir.path(), &line.join(" "));
    let screen = pane.wait_for("exited ");
    assert!(screen.contains("exited 5"), "{screen}");
    let said: Vec<&str> = screen.lines().filter(|l| l.contains("==> ")).collect();
    assert!(said.len() >= 3, "{screen}");
    assert!(
        said.iter().all(|l| l.starts_with("==> ")),
        "each line said starts a line: {screen}"
    );
    let header: Vec<&str> = screen.lines().filter(|l| l.contains("CELL")).collect();
    assert!(
        matches!(header[..], [h] if h.starts_with("CELL ")),
        "the table's header starts a line: {screen}"
    );
}
