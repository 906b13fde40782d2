//! Regression tests for the second half of the command-line review: output
//! that cannot be written, refused commands that left a store behind, trust
//! flags `copy --to` ignored, cancelled exports and imports, key files and
//! names, output-file errors, and the help texts.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::sshd::Sshd;
use crate::util::{
    failed_with, fruix, generate_key, into_full_disk, key_name_refused, promoted_store, run,
    run_failing, run_ok, run_with_deadline, spawn_writing_stdin, ssh_store_copy, store_export,
    verify_store, wait_until,
};

/// A store in `dir` holding the objects of a sample result root; the
/// store's path and the bundle's.
fn populated(dir: &Path) -> (PathBuf, String) {
    let (store, report) = promoted_store(dir);
    (store, report["result_store"].as_str().unwrap().to_string())
}

/// A [`populated`] store in a new temporary directory, returned with it.
fn populated_dir() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let (store, bundle) = populated(dir.path());
    (dir, store, bundle)
}

/// Runs `cmd` with its standard output a pipe nobody reads: its read end
/// is closed before the command starts, so every write fails (EPIPE).
fn into_closed_pipe(cmd: &mut Command) -> Output {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just returned by pipe(2) and are ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    cmd.stdout(Stdio::from(write)).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_stdout_that_cannot_be_written_is_a_system_failure_said_once() {
    let (_dir, store, _) = populated_dir();
    let list = || {
        let mut cmd = fruix();
        cmd.args(["store", "list", "--json", "--store"]).arg(&store);
        cmd
    };
    let cases = [
        ("store list --json", list()),
        ("completions bash", {
            let mut cmd = fruix();
            cmd.args(["completions", "bash"]);
            cmd
        }),
        ("man", {
            let mut cmd = fruix();
            cmd.arg("man");
            cmd
        }),
    ];
    for (what, mut cmd) in cases {
        let out = into_full_disk(&mut cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert_eq!(
            err.matches("cannot write to standard output").count(),
            1,
            "{what}: said once: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    // A reader that went away is not a failure (`fruix store list | head`).
    for (what, mut cmd) in [
        ("store list --json", list()),
        ("completions bash", {
            let mut cmd = fruix();
            cmd.args(["completions", "bash"]);
            cmd
        }),
    ] {
        let out = into_closed_pipe(&mut cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{what}: {err}");
        assert!(err.is_empty(), "{what}: {err}");
    }
}

#[test]
fn store_serve_opens_an_existing_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/store");
    let out = run(fruix()
        .args(["store", "serve", "--store"])
        .arg(&missing)
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.path().join("missing").exists());
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_refused_copy_from_leaves_no_store_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new/store");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let url = format!("ssh://root@127.0.0.1:{}", closed_port());
    let copy = |path: &str| {
        let mut cmd = fruix();
        cmd.args(["store", "copy", "--from", &url, "--known-hosts"])
            .arg(&known_hosts)
            .arg("--store")
            .arg(&store)
            .arg(path);
        cmd
    };
    // Not an object's path: refused before anything is opened.
    run_failing(
        &mut copy("/x/not-an-object"),
        2,
        &["not a store object path"],
    );
    assert!(!dir.path().join("new").exists());
    // Nothing listens there: the connection fails.
    let name = format!("/x/{}-fruix-native-world-15.0-local", "a".repeat(40));
    run_failing(&mut copy(&name), 3, &[]);
    assert!(!dir.path().join("new").exists());
}

#[test]
fn copy_to_refuses_the_trust_flags_of_copy_from() {
    let (dir, store, bundle) = populated_dir();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "").unwrap();
    let url = format!("ssh://root@127.0.0.1:{}", closed_port());
    let copy = |extra: &[&std::ffi::OsStr]| {
        let mut cmd = fruix();
        cmd.args(["store", "copy", "--to", &url, "--store"])
            .arg(&store)
            .args(extra)
            .arg(&bundle);
        cmd
    };
    let key = "k:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    for extra in [
        vec!["--trusted-key".as_ref(), key.as_ref()],
        vec!["--no-check-sigs".as_ref()],
        vec!["--trusted-keys-file".as_ref(), keys.as_os_str()],
    ] {
        run_failing(&mut copy(&extra), 2, &["--from"]);
    }
    // The trusted keys file of the environment is no flag given: --to does
    // not read it (the other store decides whom it trusts), and goes on to
    // connect.
    let out = run(copy(&[]).env(
        "FRUIX_TRUSTED_KEYS_FILE",
        dir.path().join("unreadable/keys"),
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("trusted keys"), "{err}");
    let help = run_ok(fruix().args(["store", "copy", "--help"]));
    let trust_help = help
        .lines()
        .skip_while(|l| !l.contains("--trusted-key "))
        .take(6)
        .collect::<String>();
    assert!(trust_help.contains("--from"), "{help}");
}

#[test]
fn a_refusal_by_the_other_store_says_once_that_it_was_not_changed() {
    crate::util::require_tool("unshare", "util-linux");
    let (dir, store, bundle) = populated_dir();
    // The other side's store is at this store's path (an empty directory
    // mounted over this test's, in a mount namespace of its own), and
    // refuses the archive: the bundle alone (no --recursive), whose
    // artifacts it lacks.
    let shadow = dir.path().join("shadow");
    std::fs::create_dir_all(shadow.join("store")).unwrap();
    let program = dir.path().join("remote-fruix");
    crate::sshd::bind_mounted_fruix(&program, "", &shadow, dir.path());
    let sshd = Sshd::trusted();
    let out =
        run(ssh_store_copy(&sshd, &["--json"], "--to", &program, &store, &store).arg(&bundle));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    // The error's own sentence says it once; the lines after it are the
    // other side's stderr, quoted.
    let sentence = message.lines().next().unwrap();
    assert!(sentence.contains("the other store refused it"), "{message}");
    assert!(sentence.contains("--recursive"), "{message}");
    assert_eq!(
        sentence.matches("the store was not changed").count(),
        1,
        "{message}"
    );
}

/// The temporaries (`.NAME.tmp-*`) beside `target`.
fn temporaries_beside(target: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}.tmp-", target.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn terminate(child: &std::process::Child) {
    // SAFETY: the child has not been waited for: its pid is still its own.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
}

#[test]
fn a_cancelled_export_leaves_no_archive_and_a_rerun_writes_it() {
    let (dir, store, bundle) = populated_dir();
    let target = dir.path().join("out.arc");
    let export = || store_export(&store, &target, &["--recursive"], &bundle);
    let lock = crate::util::hold_gc_lock(&store);
    let child = export()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The export has made its output file and waits for the lock.
    wait_until("the export makes its output file", || {
        target.exists() || !temporaries_beside(&target).is_empty()
    });
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    drop(lock);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!target.exists(), "no archive at the final name");
    assert_eq!(temporaries_beside(&target), Vec::<PathBuf>::new());
    run_ok(&mut export());
    assert!(std::fs::metadata(&target).unwrap().len() > 0);
    assert_eq!(temporaries_beside(&target), Vec::<PathBuf>::new());
}

/// The store's temporaries (`.tmp-*`).
fn store_temporaries(store: &Path) -> usize {
    fruix_core::testing::entries_starting_with(store, ".tmp-").len()
}

#[test]
fn a_cancelled_import_removes_its_temporaries_and_the_store_it_made() {
    let (dir, store, bundle) = populated_dir();
    let archive = dir.path().join("a.arc");
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--recursive"],
        &bundle,
    ));
    let text = std::fs::read(&archive).unwrap();
    let first_line = &text[..=text.iter().position(|&b| b == b'\n').unwrap()];
    let other = dir.path().join("other");
    fruix_promote::Store::open(&other).unwrap();
    // Into a store the import makes (it must go again), then into one that
    // exists (which keeps only what it had).
    for (target, made) in [(dir.path().join("new/store"), true), (other.clone(), false)] {
        let (child, mut stdin) = spawn_writing_stdin(
            fruix()
                .args(["store", "import", "--no-check-sigs", "--store"])
                .arg(&target),
        );
        // The archive's first line, and then nothing: the import waits for more.
        stdin.write_all(first_line).unwrap();
        stdin.flush().unwrap();
        wait_until("the import starts", || store_temporaries(&target) > 0);
        terminate(&child);
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        if made {
            assert!(
                !dir.path().join("new").exists(),
                "the store it made is gone"
            );
        } else {
            assert_eq!(store_temporaries(&target), 0);
            verify_store(&target);
        }
    }
}

#[test]
fn output_files_that_cannot_be_made_exit_2_when_misnamed_else_3() {
    let (dir, store, bundle) = populated_dir();
    let export = |to: &Path| store_export(&store, to, &[], &bundle);
    run_failing(&mut export(&dir.path().join("missing/x.arc")), 2, &[]);
    // Not a question of the name: a directory nobody may write in.
    run_failing(&mut export(Path::new("/sys/x.arc")), 3, &[]);
    // A taken name is said one way, whoever found it taken.
    let taken = dir.path().join("taken.arc");
    std::fs::write(&taken, "mine").unwrap();
    run_failing(
        &mut export(&taken),
        2,
        &[": it already exists; archives are never overwritten"],
    );
    let generate = |secret: &Path, public: &Path| generate_key("k", secret, public);
    let err = run_failing(
        &mut generate(&dir.path().join("missing/s"), &dir.path().join("p")),
        2,
        &[],
    );
    assert!(!err.contains("never overwritten"), "{err}");
    run_failing(
        &mut generate(Path::new("/sys/s"), &dir.path().join("p")),
        3,
        &[],
    );
    assert!(!dir.path().join("p").exists());
    // Regression: one path for both halves said `File exists`.
    let both = dir.path().join("k");
    run_failing(
        &mut generate(&both, &dir.path().join(".").join("k")),
        2,
        &[
            "--secret-key and --public-key are both",
            "give each key its own file",
        ],
    );
    assert!(!both.exists());
}

#[test]
fn a_key_whose_public_half_cannot_be_written_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.sec");
    let generate = |public: &Path| generate_key("k", &secret, public);
    run_failing(&mut generate(&dir.path().join("missing/k.pub")), 2, &[]);
    assert!(!secret.exists(), "the secret key was left behind");
    // A public key file that exists: refused, and the secret key goes too.
    let taken = dir.path().join("taken.pub");
    std::fs::write(&taken, "mine").unwrap();
    run_failing(
        &mut generate(&taken),
        2,
        &[": it already exists; keys are never overwritten"],
    );
    assert!(!secret.exists(), "the secret key was left behind");
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "mine");
    // The rerun is not refused.
    let printed = run_ok(&mut generate(&dir.path().join("k.pub")));
    assert!(printed.starts_with("k:"), "{printed}");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn key_names_with_control_or_bidi_characters_are_refused() {
    for name in ["a\u{1b}[31mb", "a\u{202e}b", "a\u{7f}", "a\u{85}b"] {
        let err = key_name_refused(name, &["--name"]);
        assert!(
            !err.contains('\u{1b}') && !err.contains('\u{202e}'),
            "{err:?}"
        );
    }
    // A key file carrying such a name (written by hand) is refused too,
    // rather than signing with it and printing it raw.
    let dir = tempfile::tempdir().unwrap();
    let (store, bundle) = populated(dir.path());
    let good = dir.path().join("good.sec");
    run_ok(&mut generate_key(
        "good",
        &good,
        &dir.path().join("good.pub"),
    ));
    let text = std::fs::read_to_string(&good).unwrap();
    let forged = dir.path().join("forged.sec");
    std::fs::write(&forged, text.replacen("good", "go\u{1b}[2Jod", 1)).unwrap();
    let out = run(fruix()
        .args(["store", "sign", "--secret-key"])
        .arg(&forged)
        .arg("--store")
        .arg(&store)
        .arg(&bundle));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
}

#[test]
fn refused_values_are_shown_escaped_not_debug_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 2] = [
        &["store", "import", "--trusted-key", "x\u{202e}y", "-"],
        &["store", "gc", "--max-freed", "9\u{202e}"],
    ];
    for args in cases {
        let err = run_failing(
            fruix().args(args).arg("--store").arg(dir.path().join("s")),
            2,
            &["\\342\\200\\256"],
        );
        assert!(!err.contains("\\u{202e}"), "{err}");
    }
}

#[test]
fn help_names_every_subcommand_and_generate_key_takes_json() {
    // What `fruix store --help` says before its usage line: the summary
    // `fruix --help` shows too.
    let store_help = run_ok(fruix().args(["store", "--help"]));
    let store_line = store_help.split("Usage:").next().unwrap();
    for sub in [
        "verify",
        "list",
        "info",
        "query",
        "roots",
        "gc",
        "delete",
        "generate-key",
        "sign",
        "export",
        "import",
        "copy",
        "serve",
    ] {
        assert!(store_line.contains(sub), "{sub}: {store_line}");
    }
    let native_help = run_ok(fruix().args(["native-build", "--help"]));
    let native = native_help.split("Usage:").next().unwrap();
    assert!(native.contains("self-hosted"), "{native}");
    let dir = tempfile::tempdir().unwrap();
    // `store generate-key --json --name k` writing k.sec and `public`.
    let generate = |public: &str| {
        let mut cmd = fruix();
        cmd.args(["store", "generate-key", "--json", "--name", "k"])
            .arg("--secret-key")
            .arg(dir.path().join("k.sec"))
            .arg("--public-key")
            .arg(dir.path().join(public));
        cmd
    };
    let out = run_ok(&mut generate("k.pub"));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["public_key"].as_str().unwrap(),
        std::fs::read_to_string(dir.path().join("k.pub"))
            .unwrap()
            .trim_end()
    );
    assert_eq!(json["name"], "k");
    // A refusal under --json is a JSON error too.
    let out = run(&mut generate("k2.pub"));
    crate::util::json_error(&out, 2, "never overwritten");
}

/// Regression: key files were read whole, by path: a FIFO named as one
/// hung the command, and `/dev/zero` grew its memory without bound. They
/// are read as every file fruix is named is: a regular file of at most
/// 1 MiB, its type checked before a byte is read.
#[test]
fn key_files_that_are_no_regular_files_or_too_large_are_refused_at_once() {
    let (dir, store, bundle) = populated_dir();
    let fifo = dir.path().join("fifo");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'a'; (1 << 20) + 1]).unwrap();
    let cases = [
        (fifo.as_path(), "is a FIFO"),
        (large.as_path(), "larger than"),
        (Path::new("/dev/zero"), "character device"),
    ];
    // `fruix store SUBCOMMAND FLAG KEY --store STORE OPERAND`, within a
    // minute (a FIFO hung it).
    let with_key = |subcommand: &str, flag: &str, key: &Path, operand: &Path| {
        let mut cmd = fruix();
        cmd.args(["store", subcommand, flag]).arg(key);
        cmd.arg("--store").arg(&store).arg(operand);
        run_with_deadline(&mut cmd, Duration::from_secs(60))
    };
    let no_archive = dir.path().join("no-archive");
    for (key, says) in cases {
        let sign = with_key("sign", "--secret-key", key, Path::new(&bundle));
        failed_with("store sign", &sign, 2, &[says]);
        let import = with_key("import", "--trusted-keys-file", key, &no_archive);
        failed_with("store import", &import, 2, &["trusted keys file", says]);
    }
}

/// Regression: the guest helper read its request whole, however large,
/// from stdin or `--request` (a FIFO hung it). It is bounded as every
/// metadata file is, and refused in the protocol's outcome.
#[test]
fn the_self_hosted_helper_bounds_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut stdin) = spawn_writing_stdin(
        fruix()
            .args(["native-build", "self-hosted", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    // The helper stops reading past the bound: a write it refuses is fine.
    let _ = stdin.write_all(&vec![b' '; (1 << 20) + 1]);
    drop(stdin);
    let out = crate::util::wait_with_deadline(child, Duration::from_secs(60), "self-hosted");
    failed_with("a large request", &out, 2, &["larger than 1048576 bytes"]);
    let outcome: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(outcome["outcome"]["failure"], "input", "{outcome}");
    let fifo = dir.path().join("request");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    let out = run_with_deadline(
        fruix()
            .args(["native-build", "self-hosted", "--request"])
            .arg(&fifo)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
        Duration::from_secs(60),
    );
    failed_with("a FIFO request", &out, 2, &["is a FIFO"]);
}

/// Regression: clap names the program as argv[0] says, and a newline there
/// (a symlink to fruix named so) started a line of its own, forging an
/// error line; its escape byte was only octal-escaped. The name is shown
/// escaped as every value is, on the usage line.
#[test]
fn a_program_name_with_control_characters_is_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("fr\nfruix: error: forged\u{1b}[31m");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fruix"), &link).unwrap();
    for args in [&["--bogus"][..], &["build"], &["store", "gc", "--bogus"]] {
        let stderr = run_failing(Command::new(&link).args(args), 2, &["Usage: "]);
        assert!(
            stderr.contains(r"Usage: fr\nfruix: error: forged\033[31m "),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr
                .lines()
                .any(|l| l.starts_with("fruix: error: forged")),
            "{args:?}: {stderr}"
        );
    }
}
