//! Regression tests for the review of how fruix takes its arguments: the
//! values clap echoes in a refusal, help and version on a full disk, bad
//! environment variables, `store copy`'s direction, help text that
//! belonged to another command, and help and messages that hid or misnamed
//! what fruix does (`build`'s usage line, `--executors-file`, the
//! self-hosted helper's request).

use crate::util::{fruix, into_full_disk, run, run_failing, run_ok};

/// `text` with each run of white space made one space (help text wraps).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_value_clap_echoes_in_a_refusal_is_escaped() {
    // (arguments, what stderr shows of the value, what it must not show
    // at the start of a line)
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &[
                "store",
                "gc",
                "--older-than",
                "1\r\nfruix: gc: removed everything",
                "--store",
                "x",
            ],
            "'1\\r\\nfruix: gc: removed everything'",
            "fruix: gc",
        ),
        (
            &["store", "list", "--kind", "abc\rFAKE\x08\x07\x7f"],
            "'abc\\rFAKE\\010\\007\\177'",
            "FAKE",
        ),
        (
            &["store", "list", "--kind=x\nforged"],
            "'x\\nforged'",
            "forged",
        ),
        (&["bu\x1b[31mild"], "'bu\\033[31mild'", "build"),
        // Repeated in clap's tip too: "to pass '--x\nforged' as a value".
        (
            &["store", "verify", "--x\nforged"],
            "as a value, use '-- --x\\nforged'",
            "forged",
        ),
        (
            &["store", "gc", "--older-than", "\\\x1b", "--store", "x"],
            "'\\\\\\033'",
            "\x1b",
        ),
    ];
    for (words, shown, forged) in cases {
        let err = run_failing(fruix().args(words), 2, &[shown]);
        assert!(
            !err.chars().any(|c| c.is_control() && c != '\n'),
            "{words:?}: a control character reached stderr: {err:?}"
        );
        assert!(
            !err.lines().any(|l| l.starts_with(forged)),
            "{words:?}: a forged line: {err}"
        );
    }
    // Under --json the message escapes the value as well.
    let out = run(fruix().args(["store", "list", "--json", "--kind", "a\nb\x07"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("'a\\nb\\007'"), "{message:?}");
    assert_eq!(error["error"]["kind"], "usage");
}

#[test]
fn help_and_version_on_a_full_disk_are_a_system_failure_said_once() {
    let cases: [&[&str]; 5] = [
        &["--help"],
        &["build", "--help"],
        &["help", "store"],
        &["--version"],
        &["store", "list", "--version"],
    ];
    for words in cases {
        let out = into_full_disk(fruix().args(words));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{words:?}: {err}");
        assert_eq!(
            err.matches("cannot write to standard output").count(),
            1,
            "{words:?}: said once: {err}"
        );
    }
    // Written, they succeed as before.
    assert!(run_ok(fruix().arg("--help")).contains("Usage: fruix"));
    assert!(run_ok(fruix().arg("--version")).starts_with("fruix "));
}

#[test]
fn a_bad_environment_variable_is_named_not_blamed_on_its_flag() {
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "SOURCE_DATE_EPOCH",
            "notanumber",
            &["build", "--executor", "local", "--source", "/nonexistent"],
        ),
        (
            "FRUIX_PROGRESS_EVERY",
            "abc",
            &["store", "gc", "--store", "/nonexistent"],
        ),
        (
            "FRUIX_PROGRESS_EVERY",
            "\x1b[2J",
            &["store", "verify", "--store", "/nonexistent"],
        ),
    ];
    for (name, value, words) in cases {
        let named = format!("(from the environment variable {name})");
        let err = run_failing(fruix().env(name, value).args(words), 2, &[&named]);
        assert!(
            !err.chars().any(|c| c.is_control() && c != '\n'),
            "{name}: {err:?}"
        );
    }
    // A bad flag is the flag's, whatever the environment holds.
    let err = run_failing(
        fruix()
            .env("SOURCE_DATE_EPOCH", "notanumber")
            .args(["build", "--executor", "local", "--source", "/nonexistent"])
            .args(["--source-date-epoch", "notanumber"]),
        2,
        &["'--source-date-epoch <SECONDS>'"],
    );
    assert!(!err.contains("environment variable"), "{err}");
    let err = run_failing(
        fruix().env("FRUIX_PROGRESS_EVERY", "5min").args([
            "store",
            "gc",
            "--store",
            "/nonexistent",
            "--progress-every=abc",
        ]),
        2,
        &["'--progress-every <DURATION>'"],
    );
    assert!(!err.contains("environment variable"), "{err}");
}

#[test]
fn store_copy_without_a_direction_asks_for_to_or_from() {
    let err = run_failing(
        fruix().args(["store", "copy", "./result", "--store", "S"]),
        2,
        &["required"],
    );
    let first = err.lines().take(3).collect::<Vec<_>>().join("\n");
    assert!(
        first.contains("--to") && first.contains("--from"),
        "both directions are offered: {err}"
    );
    // Both at once are still refused.
    run_failing(
        fruix().args(["store", "copy", "--to", "ssh://a", "--from", "ssh://b", "p"]),
        2,
        &["cannot be used with"],
    );
}

#[test]
fn trust_flags_help_says_from_only_in_store_copy_alone() {
    for words in [["store", "import"], ["store", "serve"]] {
        let help = one_line(&run_ok(fruix().args(words).arg("--help")));
        assert!(help.contains("--trusted-key <KEY>"), "{words:?}: {help}");
        assert!(
            !help.contains("--from"),
            "{words:?} has no --from, its help mentions one: {help}"
        );
    }
    let help = one_line(&run_ok(fruix().args(["store", "copy", "--help"])));
    // --trusted-key, --trusted-keys-file and --no-check-sigs each say so.
    assert_eq!(help.matches("with --from only").count(), 3, "{help}");
}

#[test]
fn help_never_shows_an_environment_variable_holding_a_control_character() {
    let help = run_ok(
        fruix()
            .env("FRUIX_STORE", "x\x1b[31my\nforged")
            .args(["store", "list", "--help"]),
    );
    assert!(
        !help.chars().any(|c| c.is_control() && c != '\n'),
        "{help:?}"
    );
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("forged")),
        "{help}"
    );
    assert!(help.contains("[env: FRUIX_STORE]"), "{help}");
    // A value that is safe to show still is.
    let help = run_ok(
        fruix()
            .env("FRUIX_STORE", "/s")
            .args(["store", "list", "--help"]),
    );
    assert!(help.contains("[env: FRUIX_STORE=/s]"), "{help}");
}

/// Regression: `fruix build --help`'s usage line was `fruix build [OPTIONS]
/// --executor <NAME>`, hiding the source a build requires.
#[test]
fn build_usage_names_the_source_it_requires() {
    let usage = "fruix build [OPTIONS] --executor <NAME> <--source <DIR>|--guest-source <PATH>>";
    let help = one_line(&run_ok(fruix().args(["build", "--help"])));
    assert!(help.contains(&format!("Usage: {usage}")), "{help}");
    // Without either, the refusal names both.
    run_failing(
        fruix().args(["build", "--executor", "local"]),
        2,
        &["required", "--source <DIR>|--guest-source <PATH>"],
    );
    // Both at once are still refused.
    run_failing(
        fruix().args(["build", "--executor", "local"]).args([
            "--source",
            "/nonexistent",
            "--guest-source",
            "/usr/src",
        ]),
        2,
        &["cannot be used with"],
    );
}

/// Regression: `fruix --help` offered `--executors-file` as if every
/// command took it; it says which do.
#[test]
fn executors_file_help_names_the_commands_that_use_it() {
    let help = one_line(&run_ok(fruix().arg("--help")));
    assert!(
        help.contains(
            "Only build, executors list and describe, and matrix plan, run and run-cell use it; any other command refuses it"
        ),
        "{help}"
    );
}

/// Regression: a request that is JSON but no build request (`{}`) was
/// refused as "not valid JSON".
#[test]
fn the_self_hosted_helper_does_not_call_valid_json_invalid_json() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, "{}").unwrap();
    let mut cmd = fruix();
    cmd.args(["native-build", "self-hosted", "--request"])
        .arg(&request)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let out = run(&mut cmd);
    let said = "is JSON, but not a valid build request: missing field `run_id`";
    let err = crate::util::failed_with("{}", &out, 2, &[said]);
    assert!(!err.contains("not valid JSON"), "{err}");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["outcome"]["failure"], "input", "{outcome}");
    assert!(
        outcome["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains(said),
        "{outcome}"
    );
}

/// Regression: `SOURCE_DATE_EPOCH` took any i64, from `--source-date-epoch`
/// or the environment; a negative one, or one past the year 9999, failed
/// late inside make. The reproducible-builds specification wants a
/// non-negative integer: anything else is refused as the arguments are
/// read (exit 2), before a store or state directory is made.
#[test]
fn a_source_date_epoch_that_is_negative_or_past_the_year_9999_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (state, store) = (dir.path().join("state"), dir.path().join("store"));
    let build = || {
        let mut cmd = fruix();
        cmd.args(["build", "--executor", "local", "--source"])
            .arg(crate::util::fixture_source())
            .arg("--state-dir")
            .arg(&state)
            .arg("--store")
            .arg(&store)
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    };
    for value in ["-1", "253402300800", &i64::MAX.to_string(), "+5", "1e3"] {
        for from_env in [false, true] {
            let mut cmd = build();
            if from_env {
                cmd.env("SOURCE_DATE_EPOCH", value);
            } else {
                cmd.args(["--source-date-epoch", value]);
            }
            let err = run_failing(
                &mut cmd,
                2,
                &["SOURCE_DATE_EPOCH", "from 0 to 253402300799"],
            );
            assert!(err.contains(&format!("'{value}'")), "{value}: {err}");
            assert!(!state.exists() && !store.exists(), "{value}: made nothing");
        }
    }
    // `--source-date-epoch=-1`, too.
    let mut cmd = build();
    cmd.arg("--source-date-epoch=-1");
    run_failing(&mut cmd, 2, &["SOURCE_DATE_EPOCH", "'-1'"]);
    assert!(!state.exists() && !store.exists(), "made nothing");
}
