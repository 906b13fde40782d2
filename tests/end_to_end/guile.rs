//! Guile's reader accepts every S-expression file fruix writes.

use std::path::Path;

use fruix_core::testing::write_sample_result_root;
use fruix_core::PromotionMetadata;

use crate::util::{promote_command, require_tool, run, run_ok, sample_root_of};

/// Reads `file` with Guile's `read` and checks each `(expression,
/// expected)` of `cases`: the expression, evaluated with the datum bound to
/// `x`, `write`s as `expected`.
fn assert_guile_reads(file: &Path, cases: &[(&str, &str)]) {
    require_tool("guile", "guile-3.0");
    let writes: String = cases
        .iter()
        .map(|(expr, _)| format!(" (write {expr}) (newline)"))
        .collect();
    let program = format!(
        "(let ((x (call-with-input-file {:?} read))){writes})",
        file.to_str().unwrap()
    );
    let out = run(std::process::Command::new("guile").args(["--no-auto-compile", "-c", &program]));
    assert!(
        out.status.success(),
        "guile could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8(out.stdout).unwrap();
    let written: Vec<&str> = written.lines().collect();
    let expected: Vec<&str> = cases.iter().map(|(_, e)| *e).collect();
    assert_eq!(written, expected, "{} read by Guile", file.display());
}

#[test]
fn guile_reads_promotion_scm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut m =
        write_sample_result_root(&root, "guest-self-hosted", "20260405T213444Z", true).unwrap();
    // Quotes, backslashes and UTF-8; control characters (a tab included)
    // are refused when fruix reads metadata.
    m.guest_host_name = "builder \"one\" \\ é".into();
    m.closure_path = Some("/frx/store/abc-fruix-builder-closure".into());
    m.write_to(&root).unwrap();
    let file = root.join("promotion.scm");
    let world_signature = format!(
        "{:?}",
        m.artifacts[0].tree_signature.as_ref().unwrap().as_str()
    );
    assert_guile_reads(
        &file,
        &[
            ("(car x)", "fruix-native-build-promotion"),
            (
                "(cadr (assq 'guest-host-name (cdr x)))",
                "\"builder \\\"one\\\" \\\\ é\"",
            ),
            ("(cadr (assq 'format-version (cdr x)))", "1"),
            ("(length (cdr (assq 'artifacts (cdr x))))", "4"),
            (
                "(cdr (assq 'make-flags (cdr (assq 'build-policy (cdr x)))))",
                "(\"-DNO_ROOT\")",
            ),
            (
                "(cadr (assq 'tree-signature (cdr (cadr (assq 'artifacts (cdr x))))))",
                &world_signature,
            ),
        ],
    );
    assert_eq!(PromotionMetadata::read(&file).unwrap(), m);
}

#[test]
fn guile_reads_store_object_and_bundle_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root_of(dir.path(), "root", "local");
    let store = dir.path().join("store");
    let out = run_ok(&mut promote_command(&store, &root, &["--quiet"]));
    let kv = crate::util::key_values(&out);
    let world = Path::new(&kv["world_store"]).join(".fruix-native-build-object.scm");
    assert_guile_reads(
        &world,
        &[
            ("(car x)", "fruix-native-build-object"),
            ("(cadr (assq 'artifact (cdr x)))", "\"world\""),
            (
                "(cdr (assq 'stripped-modes (cdr x)))",
                "((mode \"./usr/bin/su\" \"4555\") (mode \"./var/tmp\" \"1555\"))",
            ),
        ],
    );
    let bundle = Path::new(&kv["result_store"]).join(".fruix-native-build-result.scm");
    let world_store = format!("{:?}", kv["world_store"]);
    assert_guile_reads(
        &bundle,
        &[
            ("(car x)", "fruix-native-build-result"),
            (
                "(cadr (assq 'store-path (cdr (cadr (assq 'artifacts (cdr x))))))",
                &world_store,
            ),
        ],
    );
}
