//! Regressions from a review of how configuration values and SSH targets
//! are printed: a newline in a `--config` key or value, a `--kernconf`, an
//! `ssh://` user or an identity file's path reached stderr as it was (a
//! second line could read `fruix: error: ...`), a value was quoted as Rust's
//! `{:?}` does (`\u{1b}`) rather than as the README's "Escaping" says
//! (`\033`), and a long key was shown whole rather than cut at 1024 bytes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::sshd::Sshd;
use crate::util::{fixture_source, fruix, run, store_and_state};

/// The line a hostile value tries to forge.
const FORGED: &str = "\nfruix: error: FORGED";

/// Runs `fruix ARGS` (a build with its store and state directory in a
/// scratch directory, and the miniature tree), then `fruix ARGS --json`; checks that
/// each exits with `status`, that no line of stderr is the forged one, that
/// stderr and the JSON error's message show `escaped`, and that the message
/// holds no line break. Returns stderr.
fn refused(mut args: Vec<OsString>, status: i32, escaped: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    if args.iter().any(|a| a == "build") {
        args.extend(store_and_state(scratch.path()));
        args.push("--source".into());
        args.push(fixture_source().into());
    }
    let out = run(fruix().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("fruix: error: FORGED")),
        "a forged line: {stderr}"
    );
    assert!(stderr.contains(escaped), "expected {escaped} in: {stderr}");
    let out = run(fruix().args(&args).arg("--json"));
    assert_eq!(out.status.code(), Some(status), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(escaped),
        "expected {escaped} in: {message}"
    );
    assert!(!message.contains(['\n', '\u{1b}']), "{message:?}");
    stderr
}

/// `build --executor EXECUTOR ARGS`.
fn build(executor: &str, args: &[&str]) -> Vec<OsString> {
    ["build", "--executor", executor]
        .iter()
        .chain(args)
        .map(OsString::from)
        .collect()
}

/// Regression: serde's "unknown field" message held the key as it was.
#[test]
fn an_unknown_configuration_key_is_shown_escaped() {
    let key = format!("x{FORGED}=1");
    refused(
        build("local", &["-c", &key]),
        2,
        "unknown key `x\\nfruix: error: FORGED`; the keys of local are `make`, `work_dir`",
    );
}

/// Regression: a 3000-byte key was shown whole.
#[test]
fn a_long_configuration_key_is_cut() {
    let key = format!("{}=1", "k".repeat(3000));
    let stderr = refused(
        build("local", &["-c", &key]),
        2,
        "…[1976 more bytes cut]`; the keys of local are",
    );
    assert!(stderr.len() < 1300, "{stderr}");
}

/// Regression: serde's "unknown variant" message held the value as it was.
#[test]
fn an_unknown_variant_is_shown_escaped() {
    let runner = format!("runner=x{FORGED}");
    refused(
        build("jail", &["-c", &runner]),
        2,
        "unknown variant `x\\nfruix: error: FORGED`, expected `jail` or `direct`",
    );
}

/// Regression: serde quoted a mistyped value as `{:?}` does.
#[test]
fn a_mistyped_value_is_escaped_as_the_readme_says() {
    let secs = format!("connect_timeout_secs=x{FORGED}\u{1b}[2J");
    refused(
        build("guest-self-hosted", &["-c", "guest=a@b", "-c", &secs]),
        2,
        "invalid type: string \"x\\nfruix: error: FORGED\\033[2J\", expected u64",
    );
}

/// Regression: the local executor's `work_dir` was shown with `display()`.
#[test]
fn a_relative_work_dir_is_shown_escaped() {
    let work_dir = format!("work_dir=x{FORGED}");
    refused(
        build("local", &["-c", &work_dir]),
        2,
        "`work_dir` x\\nfruix: error: FORGED is relative",
    );
}

/// Regression: an external executor's undeclared key was shown as it was.
#[test]
fn an_external_executors_unknown_key_is_shown_escaped() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/external/executors.scm");
    let key = format!("bad{FORGED}=1");
    let mut args: Vec<OsString> = vec!["--executors-file".into(), file.into()];
    args.extend(build("mini-sh", &["-c", &key]));
    refused(
        args,
        2,
        "unknown key `bad\\nfruix: error: FORGED`; this executor declares:",
    );
}

/// Regression: a refused `--kernconf` was quoted as `{:?}` does.
#[test]
fn a_refused_kernconf_is_escaped_as_the_readme_says() {
    let kernconf = format!("x{FORGED}\u{1b}[2J");
    refused(
        build("local", &["--kernconf", &kernconf]),
        2,
        "kernconf \"x\\nfruix: error: FORGED\\033[2J\" is not a kernel configuration name",
    );
}

/// Regression: `SshTarget::parse` took a control character in the user, and
/// `store copy` then failed with `cannot connect to a` + newline +
/// `b@...`, exit 3; now the target is refused, naming the character.
#[test]
fn an_ssh_user_with_a_control_character_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let object = format!("/frx/store/{}-fruix-x", "0".repeat(40));
    for (user, named) in [
        ("a\nb", "\\n"),
        ("a\tb", "\\t"),
        ("a\u{1b}[2J", "\\033"),
        ("a\u{7f}", "\\177"),
        ("a\u{202e}b", "\\342\\200\\256"),
    ] {
        let url = format!("ssh://{user}@127.0.0.1:1");
        let args: Vec<OsString> = vec![
            "store".into(),
            "copy".into(),
            "--store".into(),
            scratch.path().join("store").into(),
            "--from".into(),
            url.into(),
            object.clone().into(),
        ];
        refused(
            args,
            2,
            &format!("is not [ssh://]user@host[:port]: the user name holds {named}, a control or format character"),
        );
    }
    assert!(!scratch.path().join("store").exists());
}

/// Regression: a key file that is no key was named with `display()`.
#[test]
fn an_identity_that_is_no_key_is_named_escaped() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let identity: PathBuf = host.path().join(format!("key{FORGED}"));
    std::fs::write(&identity, "not a key\n").unwrap();
    let mut args = build("host-initiated", &["--no-promote"]);
    args.extend(sshd.guest_options());
    args.push("--identity".into());
    args.push(identity.into());
    let stderr = refused(args, 2, "key\\nfruix: error: FORGED (the private key file");
    assert!(stderr.contains("cannot use identity"), "{stderr}");
}
