//! What the command-line help and the README promise, as the commands do
//! it: `--quiet` on `store import`, `export` and `copy` (and what `-q`
//! leaves out on a terminal, `store gc` alike), `--progress-every` in bare
//! seconds, `--older-than` and `--max-freed` read strictly and refused
//! plainly, `--json`'s help saying what it replaces, and `store query
//! --state-dir`'s help saying it is for `--roots` only.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sshd::{bind_mounted_fruix, Sshd};
use crate::util::{
    fruix, made_state, object_names, promoted_store, require_tool, run_failing, run_ok,
    ssh_store_copy, store_export, store_import, wait_until,
};

/// A detached tmux session on a private server (a real terminal), killed
/// when dropped.
struct Pane {
    socket: PathBuf,
}

impl Pane {
    /// Runs `cmd` (its program, arguments, environment and working
    /// directory) in a 200×50 pane, waits until it exits, and returns the
    /// screen: the command's output, then `exited STATUS`.
    fn run(dir: &Path, cmd: &Command) -> String {
        require_tool("tmux", "tmux");
        // A server of its own each time: a new one on the socket of one
        // just killed may find it still going away.
        static PANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PANES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pane = Pane {
            socket: dir.join(format!("tmux-{n}.sock")),
        };
        let env = cmd.get_envs().filter_map(|(name, value)| {
            let mut set = name.to_os_string();
            set.push("=");
            set.push(value?);
            Some(quote(&set))
        });
        let words: Vec<String> = std::iter::once("env".to_string())
            .chain(env)
            .chain(std::iter::once(quote(cmd.get_program())))
            .chain(cmd.get_args().map(quote))
            .collect();
        let cwd = cmd.get_current_dir().unwrap_or(dir);
        let line = format!(
            "cd {} && {}; echo \"exited $?\"; exec cat",
            quote(cwd.as_os_str()),
            words.join(" ")
        );
        run_ok(
            pane.tmux()
                .args(["new-session", "-d", "-x", "200", "-y", "50", &line]),
        );
        let mut screen = String::new();
        wait_until("the command exits", || {
            screen = run_ok(pane.tmux().args(["capture-pane", "-p", "-J"]));
            screen.contains("exited ")
        });
        screen
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-f").arg("/dev/null").arg("-S").arg(&self.socket);
        cmd
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// Single-quotes `arg` for the shell.
fn quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// Checks that `screen` (of a command run on a terminal) shows `exited 0`
/// and no line naming the store: the first thing a command says on a
/// terminal, unless quiet (then its live line, with the progress, is not
/// shown either).
fn quiet_on_the_terminal(screen: &str, what: &str) {
    assert!(screen.contains("exited 0"), "{what}: {screen}");
    assert!(
        !screen.lines().any(|l| l.starts_with("fruix: store ")),
        "{what}: -q names the store: {screen}"
    );
}

/// Regression: `store export`, `import` and `copy` had no `--quiet`,
/// though they show the same progress as `verify` and `gc`, which take it.
/// With `-q`, on a terminal (where the progress shows unless quiet), they
/// say nothing of their work (neither which store, nor a live line), and
/// still do it; without it, they name the store first.
#[test]
fn store_export_import_and_copy_take_quiet_and_show_no_progress() {
    require_tool("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let bundle = report["result_store"].as_str().unwrap();
    let objects = object_names(&store);
    // Not quiet: the store is named first.
    let archive = dir.path().join("archive");
    let screen = Pane::run(dir.path(), &store_export(&store, &archive, &["-r"], bundle));
    assert!(screen.contains("exited 0"), "{screen}");
    assert!(
        screen.starts_with(&format!("fruix: store {}\n", store.display())),
        "{screen}"
    );
    std::fs::remove_file(&archive).unwrap();
    // Quiet: the archive is written all the same.
    let screen = Pane::run(
        dir.path(),
        &store_export(&store, &archive, &["-r", "-q"], bundle),
    );
    quiet_on_the_terminal(&screen, "export -q");
    assert!(
        screen.contains(&format!("exported {} object(s)", objects.len())),
        "{screen}"
    );
    // Objects move between stores at one path: the import's store is new,
    // at the exported one's path.
    let exported = dir.path().join("exported");
    std::fs::rename(&store, &exported).unwrap();
    let screen = Pane::run(
        dir.path(),
        &store_import(&store, &archive, &["--no-check-sigs", "--quiet"]),
    );
    quiet_on_the_terminal(&screen, "import --quiet");
    assert_eq!(object_names(&store), objects, "{screen}");
    // The other side's store, the exported one, is at this store's path
    // (mounted over this test's directory in a mount namespace of its
    // own); here the store is new again.
    let shadow = dir.path().join("shadow");
    std::fs::create_dir(&shadow).unwrap();
    std::fs::rename(&exported, shadow.join("store")).unwrap();
    std::fs::rename(&store, dir.path().join("imported")).unwrap();
    let program = dir.path().join("remote-fruix");
    bind_mounted_fruix(&program, "", &shadow, dir.path());
    let sshd = Sshd::trusted();
    let flags = ["-q", "-r", "--no-check-sigs"];
    let mut copy = ssh_store_copy(&sshd, &flags, "--from", &program, &store, &store);
    copy.arg(bundle);
    let screen = Pane::run(dir.path(), &copy);
    quiet_on_the_terminal(&screen, "copy -q");
    assert_eq!(object_names(&store), objects, "{screen}");
}

/// Regression: `store gc -q` named the store and state directory on a
/// terminal (`fruix: store …, state …`), while `verify -q` and `source add
/// -q` name nothing: `-q` is quiet alike.
#[test]
fn store_gc_quiet_names_no_store_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let mut gc = fruix();
    gc.args(["store", "gc", "-q"]).args(made_state(dir.path()));
    let screen = Pane::run(dir.path(), &gc);
    quiet_on_the_terminal(&screen, "gc -q");
    assert!(screen.contains("removed "), "{screen}");
    assert_eq!(object_names(&store), Vec::<String>::new(), "{screen}");
}

/// Regression: `--progress-every 30` was refused ("time unit needed"),
/// though `0` was taken and every time limit takes bare seconds.
#[test]
fn progress_every_takes_bare_seconds_from_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let verify = |flags: &[&str]| {
        let mut cmd = fruix();
        cmd.args(["store", "verify", "-q", "--store"])
            .arg(&store)
            .args(flags);
        cmd
    };
    run_ok(&mut verify(&["--progress-every", "30"]));
    run_ok(&mut verify(&["--progress-every=0"]));
    run_ok(verify(&[]).env("FRUIX_PROGRESS_EVERY", "45"));
    // A bad one's examples are its own (not gc's `7d`).
    let err = run_failing(
        &mut verify(&["--progress-every", "often"]),
        2,
        &["--progress-every", "a bare number is seconds", "0: never"],
    );
    assert!(!err.contains("7d"), "{err}");
}

/// `fruix store gc --dry-run FLAGS` of the store and state directory
/// [`promoted_store`] made in `dir`.
fn gc_dry_run(dir: &Path, flags: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", "gc", "--dry-run"])
        .args(flags)
        .args(made_state(dir));
    cmd
}

/// `store gc --older-than` keeps its unit (a bare `7` could be days or
/// seconds), and its refusal says so; a duration with none, with its own
/// examples.
#[test]
fn older_than_refuses_a_bare_number_saying_a_unit_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let objects = object_names(&store);
    let gc = |older: &str| gc_dry_run(dir.path(), &["--older-than", older]);
    run_failing(
        &mut gc("7"),
        2,
        &["has no unit", "days (7d) or seconds (7s)"],
    );
    run_failing(&mut gc("soon"), 2, &["--older-than", "e.g. 7d, 12h"]);
    run_ok(&mut gc("12h"));
    assert_eq!(object_names(&store), objects);
}

/// Regression: `--max-freed` trimmed every trailing B, b and i, so that
/// `5ibi`, `1bbb`, `1KiiB` and `1Mb` (a megabit) were taken. A size is
/// digits, then K, M, G or T (either case) alone or as KB or KiB, or B
/// alone; anything else is refused, saying what is taken.
#[test]
fn max_freed_takes_exactly_bytes_or_k_m_g_t_alone_or_as_kb_or_kib() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let objects = object_names(&store);
    let gc = |size: &str| gc_dry_run(dir.path(), &["-q", "--max-freed", size]);
    for refused in [
        "5ibi", "1bbb", "1KiiB", "1Mb", "1iB", "1i", "1kb", "1Ki", "M", "1 M",
    ] {
        run_failing(
            &mut gc(refused),
            2,
            &["--max-freed", "is not a size", "powers of 1024"],
        );
    }
    for taken in ["512", "512B", "10K", "10k", "10KB", "3GiB", "1t", "2MiB"] {
        run_ok(&mut gc(taken));
    }
    assert_eq!(object_names(&store), objects);
    let help = run_ok(fruix().args(["store", "gc", "--help"]));
    assert!(help.contains("powers of 1024"), "{help}");
}

/// Regression: `source add --json`'s help said "instead of key=value
/// lines", but without it `source add` prints a store path. Each
/// command's `--json` help says what it replaces.
#[test]
fn json_help_says_what_json_replaces() {
    let json_line = |words: &[&str]| {
        let help = run_ok(fruix().args(words).arg("--help"));
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("--json"))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("{words:?}: {help}"))
    };
    let source = json_line(&["source", "add"]);
    assert!(!source.contains("key=value"), "{source}");
    assert!(source.contains("store path"), "{source}");
    let promote = json_line(&["native-build", "promote"]);
    assert!(promote.contains("key=value"), "{promote}");
}

/// Regression: `store query --references P --state-dir /missing` ran,
/// exit 0, the state directory unused, and its help did not say so: only
/// `--roots` reads it, and its help says "with --roots only". (It is still
/// taken with the other questions, unused, as `FRUIX_STATE_DIR` is: the
/// README's examples name the store and state directory alike for every
/// store command.)
#[test]
fn store_query_says_its_state_dir_is_for_roots_only() {
    let help = run_ok(fruix().args(["store", "query", "--help"]));
    let state_dir: String = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--state-dir"))
        .take_while(|l| !l.trim_start().starts_with("--json"))
        .collect();
    assert!(state_dir.contains("(with --roots only)"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let bundle = report["result_store"].as_str().unwrap();
    let query = |question: &str| {
        let mut cmd = fruix();
        cmd.args(["store", "query", question, "--store"])
            .arg(&store)
            .arg(bundle)
            .arg("--state-dir")
            .arg(dir.path().join("missing"));
        cmd
    };
    run_ok(&mut query("--references"));
    // --roots reads it: one that is not there is refused.
    run_failing(&mut query("--roots"), 2, &["is not there"]);
}

/// Regression: `--target arm64` alone built for TARGET_ARCH amd64 (the
/// default whatever `--target` said): the source was added, make ran, and
/// FreeBSD's make failed it as a build failure (exit 1, "Unknown target
/// arm64:amd64"). A `--target` alone now builds what FreeBSD builds for it,
/// and one that does not go with `--target-arch` is refused before anything
/// is made.
#[test]
fn a_target_alone_builds_its_arch_and_a_mismatched_pair_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut mismatched = crate::util::fixture_build(fruix(), "local", d, "mismatched");
    mismatched.args([
        "--target",
        "arm64",
        "--target-arch",
        "amd64",
        "--no-promote",
    ]);
    let err = run_failing(
        &mut mismatched,
        2,
        &[
            "TARGET \"arm64\" does not go with TARGET_ARCH \"amd64\"",
            "\"aarch64\"",
        ],
    );
    for made in ["store", "state", "mismatched"] {
        assert!(!d.join(made).exists(), "{made} was made: {err}");
    }
    let mut alone = crate::util::fixture_build(fruix(), "local", d, "alone");
    alone.args(["--target", "arm64", "--no-promote", "--quiet"]);
    run_ok(&mut alone);
    let promotion = std::fs::read_to_string(d.join("alone/promotion.scm")).unwrap();
    assert!(
        promotion.contains("(target \"arm64\") (target-arch \"aarch64\")"),
        "{promotion}"
    );
}

/// Regression: a subcommand's `-V` named it as clap does its man page
/// (`fruix-store-list 0.1.0`): every `--version` is fruix's own.
#[test]
fn every_version_flag_says_fruix_s_version() {
    let version = run_ok(fruix().arg("--version"));
    assert!(version.starts_with("fruix "), "{version}");
    for words in [
        &["store", "list", "-V"][..],
        &["store", "list", "--version"],
        &["matrix", "run", "--version"],
        &["build", "-V"],
        &["native-build", "promote", "--version"],
    ] {
        assert_eq!(run_ok(fruix().args(words)), version, "{words:?}");
    }
}

/// Regression: a build that failed (a step's exit status) printed a JSON
/// error naming neither the result root it kept nor its logs, which a
/// cancelled build's names: a CI job had to parse the message for them.
#[test]
fn a_failed_build_s_json_error_names_the_root_and_logs_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut build = crate::util::fixture_build(fruix(), "local", d, "root");
    build.args(["--kernconf", "NO-SUCH-CONFIG", "--no-promote", "--json"]);
    let out = crate::util::run(&mut build);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "build-failure", "{error:#}");
    let root = d.join("root");
    assert_eq!(
        error["error"]["result_root"],
        root.to_str().unwrap(),
        "{error:#}"
    );
    assert_eq!(error["error"]["logs"], root.join("logs").to_str().unwrap());
    assert!(root.join("logs/buildkernel.log").is_file());
}
